//! When to build a snapshot: by entry count and by log size, both here (openraft's own policy
//! is off).
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
//!
//! The count bounds how many entries a restart replays. It used to be openraft's policy, which
//! fires whatever the image's size: at 100,000 cells (a 70 MB snapshot, each built by cloning
//! the image and writing it out) a 1 s period's KPI entries reached 2,000 every two seconds,
//! and building snapshots took half the node's CPU. A snapshot by count now also waits until
//! the log since the last one holds a quarter of that snapshot's bytes
//! ([`COUNT_SNAPSHOT_SHARE`]): with a small image nothing changes, and with a large one
//! snapshots cost at most four times the bytes of the log they replace.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::Node;

/// A snapshot by entry count waits until the log since the last snapshot holds this share of
/// the last snapshot's bytes (1/4).
pub const COUNT_SNAPSHOT_SHARE: u64 = 4;

/// How often the log's growth is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A snapshot asked for but not seen by then is asked for again.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(60);
/// An import staged in parts holds snapshots back until no part has come for this long (then
/// it counts as abandoned, and the log must not grow for ever).
const IMPORT_QUIET: Duration = Duration::from_secs(60);

/// An import staged in the image: its id and the parts staged so far.
type Staging = (u64, u32);

/// Whether a snapshot due now waits for the import being staged: while parts keep coming (a
/// new part within [`IMPORT_QUIET`]). `seen` is the staging last looked at and since when.
///
/// Why: every snapshot during an import captures the parts staged so far and writes them out
/// (hundreds of megabytes for a national import, at the lowest CPU priority beside the import:
/// 42 s to 1 min 46 s in bench scale), and a capture still in flight at the import's last part
/// kept all the parts alive beside the image built from them (3.9-4.1 GB on a node).
fn waits_for_import(
    seen: &mut Option<(Staging, Instant)>,
    now: Option<Staging>,
    at: Instant,
) -> bool {
    let Some(staging) = now else {
        *seen = None;
        return false;
    };
    match seen {
        Some((was, since)) if *was == staging => at.duration_since(*since) < IMPORT_QUIET,
        _ => {
            *seen = Some((staging, at));
            true
        }
    }
}

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
    let every = node.config.snapshot_every;
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
    let mut staging = None;
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
        let snapshot_bytes = largest_snapshot_bytes(&dir);
        let entries = {
            let m = node.raft.metrics().borrow().clone();
            let applied = m.last_applied.map_or(0, |l| l.index);
            applied.saturating_sub(m.snapshot.map_or(0, |l| l.index))
        };
        if !due(since, entries, snapshot_bytes, floor, every) {
            continue;
        }
        let staged = {
            let state = sonraft_storage::read(node.store.state());
            state.image.staged.as_ref().map(|s| (s.import_id, s.parts))
        };
        if waits_for_import(&mut staging, staged, Instant::now()) {
            continue;
        }
        tracing::debug!(
            log_bytes = since,
            entries,
            snapshot_bytes,
            "the log grew past its budget since the last snapshot; building one"
        );
        if node.raft.trigger().snapshot().await.is_err() {
            return; // the Raft core stopped
        }
        asked = Some(Instant::now());
    }
}

/// Whether a snapshot is due, `since` bytes and `entries` entries after the last one (of
/// `snapshot_bytes`): by size (`floor` bytes, or the snapshot's own size if larger), or by
/// count (`every` entries, once the log holds a share of the snapshot's bytes).
fn due(since: u64, entries: u64, snapshot_bytes: u64, floor: u64, every: u64) -> bool {
    let by_size = since >= floor.max(snapshot_bytes);
    let by_count = entries >= every && since.saturating_mul(COUNT_SNAPSHOT_SHARE) >= snapshot_bytes;
    by_size || by_count
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_snapshot_waits_while_import_parts_keep_coming_and_not_for_an_abandoned_import() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut seen = None;
        assert!(!waits_for_import(&mut seen, None, t0), "no import staged");
        assert!(waits_for_import(&mut seen, Some((7, 1)), t0));
        assert!(waits_for_import(&mut seen, Some((7, 1)), t0 + s(59)));
        assert!(
            waits_for_import(&mut seen, Some((7, 2)), t0 + s(70)),
            "a new part"
        );
        assert!(waits_for_import(&mut seen, Some((7, 2)), t0 + s(129)));
        assert!(
            !waits_for_import(&mut seen, Some((7, 2)), t0 + s(130)),
            "no part for a minute: abandoned"
        );
        assert!(
            waits_for_import(&mut seen, Some((8, 1)), t0 + s(131)),
            "a new import"
        );
        assert!(!waits_for_import(&mut seen, None, t0 + s(132)), "applied");
    }

    #[test]
    fn a_small_image_snapshots_every_so_many_entries_a_large_one_once_the_log_is_a_quarter_of_it() {
        // 2,000 entries of change sets beside a 1 MiB snapshot: by count, as before.
        assert!(due(600_000, 2_000, MIB, 4 * MIB, 2_000));
        assert!(!due(600_000, 1_999, MIB, 4 * MIB, 2_000));
        // 2,000 KPI entries (14 MB) beside the 70 MB snapshot of 100,000 cells: not yet.
        assert!(!due(14 * MIB, 2_000, 70 * MIB, 4 * MIB, 2_000));
        // A quarter of it: now.
        assert!(due(18 * MIB, 2_500, 70 * MIB, 4 * MIB, 2_000));
        // By size, whatever the count.
        assert!(due(70 * MIB, 10, 70 * MIB, 4 * MIB, 2_000));
        assert!(due(4 * MIB, 10, 0, 4 * MIB, 2_000));
        assert!(!due(4 * MIB - 1, 10, 0, 4 * MIB, 2_000));
    }
}
