//! Removal of purged log entries in the background, a few at a time.
//!
//! openraft purges the log behind every snapshot, and waits for the purge on its core's path.
//! The first snapshot after a national import purges ~4,500 import parts of 240–430 KB, each a
//! file of its own in sled (a value over a quarter of a segment). Removed in one batch, they
//! were all unlinked inside the next sled flush, and the sync of the blob directory after it
//! took 185–248 ms: every Raft log sync of the node waited, followers answered appends
//! 450–510 ms late, and the leader lost its quorum (an election, change sets answered
//! "outcome unknown").
//!
//! So [`crate::LogStore::purge`] only makes the purged id durable, as before, and hands the
//! removal to a [`Purger`]: its thread removes [`CHUNK`] entries at a time, from the oldest,
//! with a [`PAUSE`] between. Entries at or before the purged id that are still there are
//! never read: the log store skips them, counts the purged id in its last log id, and a restart
//! removes any left (`log_store::cut_at_first_hole`).
//!
//! The thread holds the tree only while it removes a chunk: a store dropped without being
//! closed is released as soon as any chunk under way is done.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

/// Entries removed in one sled batch (sled's process-wide batch lock stops log appends for
/// as long: a few dozen removals is microseconds).
pub(crate) const CHUNK: u64 = 16;

/// The pause after each chunk: at most `CHUNK` blob files for each sled flush to unlink.
/// A national import's ~5,000 entries go in about 16 s.
pub(crate) const PAUSE: Duration = Duration::from_millis(50);

/// The handle of the purge thread: the tree it removes from, and what to remove.
pub(crate) struct Purger(Arc<Owner>);

/// What the thread upgrades to while it removes a chunk; dropping the last handle stops it.
struct Owner {
    log: sled::Tree,
    signal: Arc<Signal>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.signal.update(|s| s.stop = true);
    }
}

#[derive(Default)]
struct Signal {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Remove every entry up to this index (inclusive).
    upto: Option<u64>,
    /// The first index that may still be in the tree, once known.
    next: Option<u64>,
    /// Every entry up to `upto` is gone.
    done: bool,
    stop: bool,
}

impl Signal {
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_all();
    }
}

impl Purger {
    /// Starts the thread that removes purged entries from `log`.
    pub(crate) fn start(log: sled::Tree) -> std::io::Result<Purger> {
        let signal = Arc::new(Signal {
            state: Mutex::new(State {
                done: true,
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let owner = Arc::new(Owner {
            log,
            signal: signal.clone(),
        });
        let weak = Arc::downgrade(&owner);
        std::thread::Builder::new()
            .name("sonraft-purge".into())
            .spawn(move || run(weak, signal))?;
        Ok(Purger(owner))
    }

    /// Has every entry up to `index` (inclusive) removed, soon; the purged id must already be
    /// durable.
    pub(crate) fn purge_to(&self, index: u64) {
        self.0.signal.update(|s| {
            s.upto = Some(s.upto.map_or(index, |u| u.max(index)));
            s.done = false;
        });
    }

    /// Blocks until every entry handed over so far is removed (tests).
    #[cfg(test)]
    pub(crate) fn wait_done(&self) {
        let signal = &self.0.signal;
        let mut s = signal.state.lock().unwrap_or_else(|p| p.into_inner());
        while !s.done && !s.stop {
            s = signal.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The thread: waits for work, removes one chunk, pauses, again.
fn run(owner: Weak<Owner>, signal: Arc<Signal>) {
    loop {
        let (upto, next) = {
            let mut s = signal.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if s.stop {
                    return;
                }
                match s.upto {
                    Some(u) if !s.done => break (u, s.next),
                    _ => s = signal.changed.wait(s).unwrap_or_else(|p| p.into_inner()),
                }
            }
        };
        let Some(owner) = owner.upgrade() else { return };
        let removed = remove_chunk(&owner.log, next, upto);
        drop(owner);
        let mut s = signal.state.lock().unwrap_or_else(|p| p.into_inner());
        match removed {
            Ok(Some(next)) => s.next = Some(next),
            Ok(None) => {
                s.next = Some(upto + 1);
                s.done = s.upto == Some(upto);
            }
            // Left for the next purge or the next start to remove; nothing reads them.
            Err(e) => {
                tracing::warn!(error = %e, upto, "could not remove purged log entries");
                s.done = s.upto == Some(upto);
            }
        }
        signal.changed.notify_all();
        if !s.done {
            let (s, _) = signal
                .changed
                .wait_timeout_while(s, PAUSE, |s| !s.stop)
                .unwrap_or_else(|p| p.into_inner());
            if s.stop {
                return;
            }
        }
    }
}

/// Removes up to [`CHUNK`] entries from `next` (or the first in the tree) on, none after
/// `upto`. Returns where the next chunk starts, or `None` when nothing up to `upto` is left.
fn remove_chunk(log: &sled::Tree, next: Option<u64>, upto: u64) -> sled::Result<Option<u64>> {
    let first = match next {
        Some(n) => n,
        // One read, at the start only: the tree's first value may be a file of its own.
        None => match log.first()? {
            Some((k, _)) => index_of(&k),
            None => return Ok(None),
        },
    };
    if first > upto {
        return Ok(None);
    }
    let end = upto.min(first.saturating_add(CHUNK - 1));
    let mut batch = sled::Batch::default();
    for index in first..=end {
        batch.remove(&index.to_be_bytes());
    }
    log.apply_batch(batch)?;
    Ok((end < upto).then_some(end + 1))
}

fn index_of(k: &[u8]) -> u64 {
    <[u8; 8]>::try_from(k).map_or(0, u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(indexes: std::ops::RangeInclusive<u64>) -> (tempfile::TempDir, sled::Db, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let log = db.open_tree("log").unwrap();
        for i in indexes {
            log.insert(i.to_be_bytes(), vec![0u8; 16]).unwrap();
        }
        (dir, db, log)
    }

    fn first(log: &sled::Tree) -> Option<u64> {
        log.first().unwrap().map(|(k, _)| index_of(&k))
    }

    #[test]
    fn purged_entries_go_in_chunks_up_to_the_highest_index_asked_for() {
        let (_dir, _db, log) = log_of(5..=200);
        let purger = Purger::start(log.clone()).unwrap();
        purger.purge_to(100);
        purger.purge_to(40);
        purger.wait_done();
        assert_eq!(
            first(&log),
            Some(101),
            "everything up to 100, nothing after"
        );
        purger.purge_to(150);
        purger.wait_done();
        assert_eq!(first(&log), Some(151));
        assert_eq!(log.len(), 50);
        purger.purge_to(500);
        purger.wait_done();
        assert_eq!(first(&log), None, "past the end: all");
    }

    /// A store dropped in the middle of a long purge is released at once (its next start
    /// removes the rest), not once the purge is done.
    #[test]
    fn a_dropped_purger_lets_go_of_the_store_before_its_purge_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("sled"))
            .open()
            .unwrap();
        let log = db.open_tree("log").unwrap();
        let entries = 200 * CHUNK; // four seconds of pauses
        for i in 1..=entries {
            log.insert(i.to_be_bytes(), vec![0u8; 16]).unwrap();
        }
        let purger = Purger::start(log.clone()).unwrap();
        purger.purge_to(entries);
        drop((purger, log, db));
        crate::wait_released(dir.path(), Duration::from_secs(2)).unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("sled"))
            .open()
            .unwrap();
        let left = db.open_tree("log").unwrap().len() as u64;
        assert!(
            left > 0,
            "all {entries} gone: the purge went on after the drop"
        );
    }
}
