//! Graceful stop: on SIGTERM or SIGINT a node stops taking admin requests, hands leadership to
//! another voter if it leads, lets in-flight requests finish, shuts Raft down, syncs the store
//! and exits 0.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Node;

/// A one-shot stop signal that any number of tasks can wait on.
#[derive(Clone)]
pub struct Signal(watch::Sender<bool>);

impl Signal {
    fn new() -> Self {
        Signal(watch::channel(false).0)
    }

    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once [`Signal::fire`] was called.
    pub async fn wait(self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

/// The stop signals of a node's two listeners.
pub struct Stop {
    pub api: Signal,
    pub raft: Signal,
    /// The Raft listener's flag: set, it answers RPCs 503 (see `RaftServer::closing`).
    pub raft_closing: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Stop {
    pub fn new() -> Self {
        Stop {
            api: Signal::new(),
            raft: Signal::new(),
            raft_closing: None,
        }
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

/// Resolves on the first SIGTERM or SIGINT.
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
                    _ = term.recv() => tracing::info!("SIGTERM received; stopping gracefully"),
                    _ = int.recv() => tracing::info!("SIGINT received; stopping gracefully"),
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

/// Longest wait at stop for the state machine's checkpoint (systemd's default stop timeout is
/// 90 s; the steps before this one take up to 31 s).
const SYNC_AT_STOP: Duration = Duration::from_secs(50);

/// The stop sequence. Every step is bounded in time so that a stuck peer cannot keep the
/// process alive.
pub async fn graceful(
    node: Arc<Node>,
    stop: Stop,
    api: JoinHandle<()>,
    raft_server: JoinHandle<()>,
) -> anyhow::Result<()> {
    stop.api.fire();
    // Streams never finish by themselves: end them, or the API would wait its 10 s for them.
    node.watchers().close();
    if node.is_leader() {
        match node.best_successor() {
            Some(target) => match node.hand_over(target).await {
                Ok(took) => tracing::info!(
                    target,
                    took_ms = took.as_millis() as u64,
                    "leadership handed over before stopping"
                ),
                Err(e) => {
                    tracing::warn!(target, error = %e, "leadership not handed over; the cluster will elect after the timeout")
                }
            },
            None => tracing::info!("no other voter to hand leadership to"),
        }
    }
    if tokio::time::timeout(Duration::from_secs(10), api)
        .await
        .is_err()
    {
        tracing::warn!("admin requests still running after 10 s; stopping anyway");
    }
    // RPCs that would reach a stopping Raft core are answered 503 from here on: openraft logs
    // each one that does as an ERROR. The listener itself stays up until Raft is down, so this
    // node never goes without a leader's heartbeats long enough to start an election.
    if let Some(closing) = &stop.raft_closing {
        closing.store(true, std::sync::atomic::Ordering::Release);
    }
    // The node's own proposals likewise (its SON cycle, its KPI summaries); those already on
    // their way are answered first.
    node.stop_proposals(Duration::from_secs(5)).await;
    if let Err(e) = tokio::time::timeout(Duration::from_secs(10), node.raft.shutdown()).await {
        tracing::warn!(error = %e, "Raft did not stop within 10 s");
    }
    stop.raft.fire();
    let _ = tokio::time::timeout(Duration::from_secs(6), raft_server).await;
    // The state machine's checkpoint is written behind the applies: after a large import it
    // may be tens of seconds behind. A process that exits part way through it leaves it torn,
    // and the next start rebuilds it from the newest snapshot, which takes longer still; so it
    // is finished first, for as long as a service manager's stop timeout commonly allows.
    let store = node.store.clone();
    let mut syncing = tokio::task::spawn_blocking(move || store.sync());
    let synced = match tokio::time::timeout(Duration::from_secs(1), &mut syncing).await {
        Ok(synced) => Some(synced),
        Err(_) => {
            tracing::info!("finishing the state machine's checkpoint in sled before stopping");
            tokio::time::timeout(SYNC_AT_STOP, syncing).await.ok()
        }
    };
    match synced {
        Some(synced) => synced??,
        None => tracing::warn!(
            "the state machine's checkpoint is still being written after {} s; stopping anyway (the next start rebuilds it from the newest snapshot and the log)",
            SYNC_AT_STOP.as_secs() + 1
        ),
    }
    tracing::info!("stopped");
    Ok(())
}
