//! Snapshots by log size, beside openraft's snapshots by entry count.
//!
//! Entries differ in size by two orders of magnitude: an operator's change set is a few hundred
//! bytes, a site's KPI summary for its cells every period is ~30 bytes a cell (30 KB at 1 000
//! cells). A count alone (`--snapshot-every`) bounds the log on disk badly: at the 500 ms demo
//! period 2 000 entries were 60 MB, swinging with every snapshot. So a snapshot is also built
//! once the bytes appended to this node's log since its last snapshot reach the larger of
//! `--snapshot-log-bytes` and the last snapshot's own size. The log then stays within about
//! the image's size (plus the entries kept behind a snapshot, `LOG_KEPT_BEHIND_SNAPSHOT`), and
//! snapshots never cost more bytes written than the log they replace. Each node counts its own
//! log: followers compact on their own, as with the count.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::Node;

/// How often the log's growth is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A snapshot asked for but not seen by then is asked for again.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(60);

impl Node {
    /// Builds a snapshot now (and purges the log behind it); returns the last applied index
    /// it will cover.
    pub async fn snapshot_now(&self) -> Result<u64, openraft::error::Fatal<sonraft_raft::NodeId>> {
        self.raft.trigger().snapshot().await?;
        Ok(self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index))
    }
}

/// Runs for the life of the node.
pub async fn snapshot_by_size(node: Arc<Node>) {
    let floor = node.config.snapshot_log_bytes;
    let dir = node.store.dir().join("snapshots");
    let appended = || {
        node.store
            .sync_stats()
            .appended_bytes
            .load(Ordering::Relaxed)
    };
    let mut last_snapshot = node.raft.metrics().borrow().snapshot;
    let mut bytes_at_snapshot = appended();
    let mut asked: Option<Instant> = None;
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let snapshot = node.raft.metrics().borrow().snapshot;
        if snapshot != last_snapshot {
            last_snapshot = snapshot;
            bytes_at_snapshot = appended();
            asked = None;
            continue;
        }
        if asked.is_some_and(|at| at.elapsed() < ASK_AGAIN_AFTER) {
            continue;
        }
        let since = appended().saturating_sub(bytes_at_snapshot);
        let budget = floor.max(largest_snapshot_bytes(&dir));
        if since < budget {
            continue;
        }
        tracing::debug!(
            log_bytes = since,
            budget,
            "the log grew past its budget since the last snapshot; building one"
        );
        if node.raft.trigger().snapshot().await.is_err() {
            return; // the Raft core stopped
        }
        asked = Some(Instant::now());
    }
}

/// Size of the largest snapshot file in `dir` (0 if none or unreadable): about the image's size.
fn largest_snapshot_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "snap"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}
