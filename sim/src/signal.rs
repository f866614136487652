//! When to stop: the simulator runs until SIGTERM or SIGINT.
//!
//! Its own few lines rather than the node's graceful-shutdown module: the simulator has nothing
//! to drain, and depending on the node for this would let the two ends of the antenna protocol
//! share more than the wire.

/// Resolves on the first SIGTERM or SIGINT (on other systems, Ctrl-C).
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received; stopping"),
                    _ = int.recv() => tracing::info!("SIGINT received; stopping"),
                }
            }
            _ => {
                tracing::warn!("cannot install signal handlers; stop with SIGKILL only");
                std::future::pending::<()>().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
