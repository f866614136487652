//! Logging and Prometheus metrics.

use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use openraft::ServerState;

use crate::Node;
use crate::config::{LogFormat, NodeConfig};

/// Structured logs on stderr, coloured only on a terminal; `RUST_LOG` filters (default: info,
/// quieter openraft and sled).
pub fn init_logging(config: &NodeConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,sled=warn"));
    // Colour only on a terminal: log files and journals get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder (histograms for every `*_seconds` metric).
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .context("bad histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")
}

impl Node {
    /// This node's metrics in the Prometheus text format (draining the histograms' samples).
    pub fn render_metrics(&self) -> String {
        self.prometheus.render()
    }
}

/// Mirrors Raft's metrics into gauges whenever they change, and logs every change of role,
/// term or known leader (when this node learned of a new leader is what a client forwarded
/// through it waits for).
pub async fn watch_raft(node: Arc<Node>) {
    let mut rx = node.raft.metrics();
    let mut seen = None;
    loop {
        {
            let m = rx.borrow_and_update().clone();
            let now = (m.state, m.current_term, m.current_leader);
            if seen != Some(now) {
                tracing::info!(
                    state = ?m.state,
                    term = m.current_term,
                    leader = ?m.current_leader,
                    vote = %m.vote,
                    "Raft role, term or leader changed"
                );
                seen = Some(now);
            }
            metrics::gauge!("sonraft_raft_term").set(m.current_term as f64);
            metrics::gauge!("sonraft_raft_leader_id").set(m.current_leader.unwrap_or(0) as f64);
            metrics::gauge!("sonraft_raft_is_leader")
                .set(f64::from(u8::from(m.state == ServerState::Leader)));
            metrics::gauge!("sonraft_raft_last_log_index")
                .set(m.last_log_index.unwrap_or(0) as f64);
            metrics::gauge!("sonraft_raft_last_applied_index")
                .set(m.last_applied.map_or(0, |l| l.index) as f64);
            metrics::gauge!("sonraft_raft_purged_index")
                .set(m.purged.map_or(0, |l| l.index) as f64);
            metrics::gauge!("sonraft_raft_voters")
                .set(m.membership_config.membership().voter_ids().count() as f64);
            let stats = node.store.sync_stats();
            let syncs = stats.syncs.load(std::sync::atomic::Ordering::Relaxed);
            metrics::gauge!("sonraft_log_syncs").set(syncs as f64);
            metrics::gauge!("sonraft_log_synced_appends")
                .set(stats.appends.load(std::sync::atomic::Ordering::Relaxed) as f64);
            metrics::gauge!("sonraft_log_sync_seconds_total")
                .set(stats.sync_micros.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Ends the process when the Raft core stopped on its own (a panic, a storage error): a node
/// whose core is gone would keep answering its admin API, and look ready, while it takes part
/// in nothing. Crash-only: a supervisor restarts it from its data directory, which holds
/// everything it acknowledged. A core stopped by a graceful stop is left alone.
pub async fn exit_when_raft_fails(node: Arc<Node>) {
    let mut metrics = node.raft.metrics();
    loop {
        let failed = match &metrics.borrow().running_state {
            Err(openraft::error::Fatal::Stopped) | Ok(()) => None,
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = failed {
            tracing::error!(
                error = %why,
                "the Raft core stopped; exiting with status 70 so that a supervisor restarts this node from its data"
            );
            std::process::exit(70);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
