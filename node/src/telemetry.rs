//! Logging and Prometheus metrics.

use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use openraft::ServerState;

use crate::Node;
use crate::config::{LogFormat, NodeConfig};

/// The log filter unless `RUST_LOG` says otherwise: INFO, and of openraft only its errors but
/// none of its replication module's. That module logs each failed RPC, at ERROR for one late
/// heartbeat and dozens a second for a peer down for an upgrade; the transport reports an
/// unreachable peer itself, once, at WARN (`sonraft_raft::transport`'s peer health). A healthy
/// cluster logs no ERROR.
pub const DEFAULT_LOG_FILTER: &str = "info,openraft=error,openraft::replication=off,sled=warn";

/// Structured logs on stderr, coloured only on a terminal; `RUST_LOG` filters (default:
/// [`DEFAULT_LOG_FILTER`]).
pub fn init_logging(config: &NodeConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
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

/// Buckets of the histograms that count things per batch (appends per sync, change sets per
/// entry).
const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Every metric this node exports, with its `# HELP` text: (name, kind, help). A test scrapes
/// a running node and checks that every `sonraft_` family it sees is here, typed as here, with
/// its help (`tests/metrics.rs`); alert rules and the dashboard under `deploy/` use these names.
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        "sonraft_build_info",
        Kind::Gauge,
        "Always 1; labels: the release (version) and the newest command format it applies",
    ),
    ("sonraft_raft_term", Kind::Gauge, "Current Raft term"),
    (
        "sonraft_raft_leader_id",
        Kind::Gauge,
        "Node id of the leader this node knows (0: none)",
    ),
    (
        "sonraft_raft_is_leader",
        Kind::Gauge,
        "1 while this node is the Raft leader",
    ),
    (
        "sonraft_raft_last_log_index",
        Kind::Gauge,
        "Index of the last entry in this node's log",
    ),
    (
        "sonraft_raft_last_applied_index",
        Kind::Gauge,
        "Index of the last entry this node applied to its image",
    ),
    (
        "sonraft_raft_purged_index",
        Kind::Gauge,
        "Index up to which the log was compacted into a snapshot",
    ),
    (
        "sonraft_raft_voters",
        Kind::Gauge,
        "Voters in the membership this node knows",
    ),
    (
        "sonraft_raft_rpc_seconds",
        Kind::Histogram,
        "Raft RPCs this node sent, round trip",
    ),
    (
        "sonraft_raft_rpc_handle_seconds",
        Kind::Histogram,
        "Raft RPCs this node received, time to answer",
    ),
    (
        "sonraft_peer_rpc_handle_seconds",
        Kind::Histogram,
        "Node-to-node requests (forwarding, hand-over) this node received, time to answer",
    ),
    (
        "sonraft_log_syncs_total",
        Kind::Counter,
        "fdatasync calls made durable for the Raft log",
    ),
    (
        "sonraft_log_synced_appends_total",
        Kind::Counter,
        "Log appends made durable by those syncs (group commit: several per sync)",
    ),
    (
        "sonraft_log_sync_seconds",
        Kind::Histogram,
        "Duration of one log sync (flush and fdatasync)",
    ),
    (
        "sonraft_log_sync_batch_appends",
        Kind::Histogram,
        "Appends made durable by one log sync",
    ),
    (
        "sonraft_log_appends_reported_early_total",
        Kind::Counter,
        "A leader's own appends reported before their sync, synced while they replicate",
    ),
    (
        "sonraft_checkpoint_sync_seconds",
        Kind::Histogram,
        "Duration of one sync of the state machine's store",
    ),
    (
        "sonraft_applied_entries_total",
        Kind::Counter,
        "Log entries applied to the image",
    ),
    (
        "sonraft_apply_seconds",
        Kind::Histogram,
        "Time to apply one log entry",
    ),
    (
        "sonraft_runtime_late_total",
        Kind::Counter,
        "Times this node's runtime ran a 20 ms timer 100 ms or more late",
    ),
    (
        "sonraft_capture_hold_seconds",
        Kind::Histogram,
        "Time a snapshot's or backup's capture held the applied state (no entry applies meanwhile)",
    ),
    (
        "sonraft_apply_wait_sync_seconds",
        Kind::Histogram,
        "Time applying waited for the leader's own append to be synced",
    ),
    (
        "sonraft_commit_seconds",
        Kind::Histogram,
        "Proposal to applied, on the node that proposed",
    ),
    (
        "sonraft_batch_change_sets",
        Kind::Histogram,
        "Change sets in one log entry",
    ),
    (
        "sonraft_proposals_total",
        Kind::Counter,
        "Change sets proposed through the admin API, by outcome and dry run",
    ),
    (
        "sonraft_proposals_outcome_unknown_total",
        Kind::Counter,
        "Proposals whose commit could not be confirmed in time (they may still apply)",
    ),
    (
        "sonraft_forward_outcome_unknown_total",
        Kind::Counter,
        "Forwarded requests whose outcome the leader did not report in time",
    ),
    (
        "sonraft_read_proofs_total",
        Kind::Counter,
        "Linearizable reads proved by a quorum round",
    ),
    (
        "sonraft_read_proof_rounds_failed_total",
        Kind::Counter,
        "Quorum rounds for linearizable reads that failed",
    ),
    (
        "sonraft_http_requests_total",
        Kind::Counter,
        "Admin API requests, by route, method and status",
    ),
    (
        "sonraft_http_request_seconds",
        Kind::Histogram,
        "Admin API request duration",
    ),
    (
        "sonraft_cluster_fault_tolerance",
        Kind::Gauge,
        "Voters the cluster can lose and still commit, as this node sees them",
    ),
    (
        "sonraft_member_reachable",
        Kind::Gauge,
        "1 while this node reaches the member (id, role)",
    ),
    (
        "sonraft_member_lag_entries",
        Kind::Gauge,
        "Entries a member is behind the leader's log (on the leader)",
    ),
    (
        "sonraft_antenna_sessions",
        Kind::Gauge,
        "Antenna sessions this node holds (one per base station, or per cell)",
    ),
    (
        "sonraft_antenna_sessions_connected",
        Kind::Gauge,
        "Cells served by a connected session",
    ),
    (
        "sonraft_antenna_session_failures_total",
        Kind::Counter,
        "Antenna sessions that failed or were refused",
    ),
    (
        "sonraft_antenna_bad_frames_total",
        Kind::Counter,
        "Frames from antennas refused as malformed",
    ),
    (
        "sonraft_antenna_pushes_total",
        Kind::Counter,
        "Configurations pushed to antennas",
    ),
    (
        "sonraft_antenna_push_seconds",
        Kind::Histogram,
        "Configuration push to its acknowledgement",
    ),
    (
        "sonraft_antenna_diverged_total",
        Kind::Counter,
        "Acknowledgements with other values than pushed (re-pushed)",
    ),
    (
        "sonraft_antenna_sessions_fenced_total",
        Kind::Counter,
        "Sessions an antenna refused for a stale control epoch (another node controls the cells)",
    ),
    (
        "sonraft_control_lease",
        Kind::Gauge,
        "1 while this node may push to its antennas (it can prove it belongs to the majority)",
    ),
    (
        "sonraft_control_moves_total",
        Kind::Counter,
        "Cell sites whose control this leader moved to another site",
    ),
    (
        "sonraft_periods_closed_total",
        Kind::Counter,
        "Counter periods closed and handed to the SON functions",
    ),
    (
        "sonraft_raw_measurement_bytes",
        Kind::Gauge,
        "Bytes of raw counters kept on this node's disk",
    ),
    (
        "sonraft_raw_measurement_periods",
        Kind::Gauge,
        "Counter periods kept on this node's disk",
    ),
    (
        "sonraft_raw_measurement_periods_dropped_total",
        Kind::Counter,
        "Counter periods dropped past the retention or the disk cap",
    ),
    (
        "sonraft_pm_files_ingested_total",
        Kind::Counter,
        "PM files (TS 32.435) taken from --pm-dir",
    ),
    (
        "sonraft_pm_files_bad_total",
        Kind::Counter,
        "PM files refused (left in place)",
    ),
    (
        "sonraft_pm_reports_total",
        Kind::Counter,
        "Cell reports taken from PM files",
    ),
    (
        "sonraft_son_cycle_seconds",
        Kind::Histogram,
        "One SON cycle: analysis of a closed period and its proposals",
    ),
    (
        "sonraft_son_proposals_total",
        Kind::Counter,
        "SON change sets proposed, by function and outcome",
    ),
    (
        "sonraft_son_proposals_skipped_total",
        Kind::Counter,
        "SON change sets not proposed because the controls would refuse them, by function",
    ),
    (
        "sonraft_son_verdicts_total",
        Kind::Counter,
        "Verdicts on SON changes, by outcome (kept, undone, unverified)",
    ),
    (
        "sonraft_son_close_to_ack_seconds",
        Kind::Histogram,
        "Counter period ended at the antennas to the resulting change acknowledged by the antenna",
    ),
    (
        "sonraft_son_received_to_ack_seconds",
        Kind::Histogram,
        "Counter period closed by this node (every report in) to the resulting change acknowledged by the antenna",
    ),
    (
        "sonraft_son_acks_forgotten_total",
        Kind::Counter,
        "SON change sets no longer awaited for the close-to-ack latency: beyond the bound, unacknowledged",
    ),
    (
        "sonraft_son_outages_detected_total",
        Kind::Counter,
        "Cell outages detected, by kind (hard, sleeping)",
    ),
    (
        "sonraft_son_cells_in_outage",
        Kind::Gauge,
        "Own cells in outage now, by kind",
    ),
    (
        "sonraft_watch_streams",
        Kind::Gauge,
        "GET /watch streams this node serves now",
    ),
    (
        "sonraft_watch_slow_clients_total",
        Kind::Counter,
        "GET /watch streams dropped because the client did not take events as fast as they came",
    ),
];

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Installs the process-wide Prometheus recorder (histograms with buckets for every one),
/// describes every metric and sets `sonraft_build_info`.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .context("bad histogram buckets")?
        .set_buckets_for_metric(Matcher::Suffix("_appends".into()), COUNT_BUCKETS)
        .context("bad histogram buckets")?
        .set_buckets_for_metric(Matcher::Suffix("_change_sets".into()), COUNT_BUCKETS)
        .context("bad histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    for (name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
    metrics::gauge!(
        "sonraft_build_info",
        "version" => crate::RELEASE,
        "command_format" => sonraft_raft::command::COMMAND_FORMAT.to_string()
    )
    .set(1.0);
    Ok(handle)
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
                let what = match (m.state, m.current_leader) {
                    (ServerState::Leader, _) => "this node became the leader".to_string(),
                    (ServerState::Candidate, _) => "this node stands for election".to_string(),
                    (_, Some(l)) => format!("following leader {l}"),
                    (_, None) => "no leader known".to_string(),
                };
                tracing::info!(
                    state = ?m.state,
                    term = m.current_term,
                    leader = ?m.current_leader,
                    vote = %m.vote,
                    "{what} (term {})",
                    m.current_term
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
            // Totals the store keeps: exported as counters at their absolute value (the time
            // spent syncing is `sonraft_log_sync_seconds_sum`).
            let stats = node.store.sync_stats();
            metrics::counter!("sonraft_log_syncs_total")
                .absolute(stats.syncs.load(std::sync::atomic::Ordering::Relaxed));
            metrics::counter!("sonraft_log_synced_appends_total")
                .absolute(stats.appends.load(std::sync::atomic::Ordering::Relaxed));
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

/// How often [`watch_runtime`] looks at the clock, and how late a look must come to be told.
const RUNTIME_TICK: std::time::Duration = std::time::Duration::from_millis(20);
const RUNTIME_LATE: std::time::Duration = std::time::Duration::from_millis(100);

/// Tells when this node's runtime ran its tasks late: a task that blocks a worker thread, or a
/// machine too busy to give the runtime a core, delays heartbeats and their answers alike, and
/// the cluster sees it only as a leader that heard from no majority. Logs each pause of 100 ms
/// or more and counts it (`sonraft_runtime_late_total`).
pub async fn watch_runtime() {
    // Exported from the start, at zero.
    metrics::counter!("sonraft_runtime_late_total").increment(0);
    let mut last = std::time::Instant::now();
    loop {
        tokio::time::sleep(RUNTIME_TICK).await;
        let late = last.elapsed().saturating_sub(RUNTIME_TICK);
        if late >= RUNTIME_LATE {
            metrics::counter!("sonraft_runtime_late_total").increment(1);
            tracing::warn!(
                late_ms = late.as_millis() as u64,
                "this node's runtime ran a timer late: a worker thread was blocked or the machine gave it no core"
            );
        }
        last = std::time::Instant::now();
    }
}
