//! # sonraft-storage: the network image on disk
//!
//! One sled database per node holds both halves openraft needs:
//!
//! - [`LogStore`] (`log_store.rs`): the Raft log, vote, committed and purged ids. Appends are
//!   acknowledged only once durable; [`durable`] adds the `fdatasync` sled 0.34 leaves out
//!   and batches syncs of concurrent appends (group commit). Purged entries are removed in the
//!   background, a few at a time (`purge.rs`).
//! - [`StateMachine`] (`state_machine.rs`): the network image in memory for reads and rule
//!   checks, checkpointed to sled behind the apply path (`sm_writer.rs`), with snapshots to files
//!   ([`snapshot`]).
//!
//! [`Store::open`] checks the data directory's format marker ([`format`]) before it opens
//! anything, so that data written by a newer release is refused, never misread.
#![forbid(unsafe_code)]
// openraft's `StorageError` is large by design and is what its storage traits return.
#![allow(clippy::result_large_err)]

pub mod background;
pub mod durable;
pub mod error;
pub mod format;
mod history;
mod log_store;
mod purge;
mod sm_writer;
pub mod snapshot;
mod state_machine;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{Damaged, OpenError};
pub use history::{BadCursor, HeldHistory, HistoryCursor};
pub use log_store::{LogStore, decode_entry, encode_entry};
pub use state_machine::{
    AppliedChanges, FEED_KEYS_AT_MOST, ImageState, SharedImage, SnapshotBuilder, StateMachine, read,
};

use durable::{Durability, GroupCommit, SyncStats};
use snapshot::SnapshotDir;
use sonraft_raft::NodeId;
use sonraft_raft::durable::DurableLog;
use sonraft_raft::model::image::{HistoryRecord, NetworkImage};
use sonraft_raft::model::{Cell, NodeRelease};

/// An opened data directory: hand `log` and `sm` to openraft, keep `reader` for reads.
pub struct Store {
    pub log: LogStore,
    pub sm: StateMachine,
    pub reader: StoreReader,
}

/// Read access to the applied state, the history and the sync counters.
#[derive(Clone)]
pub struct StoreReader {
    shared: SharedImage,
    writer: Arc<sm_writer::SmWriter>,
    feed: tokio::sync::broadcast::Sender<std::sync::Arc<AppliedChanges>>,
    durability: Arc<Durability>,
    synced: Arc<DurableLog>,
    dir: PathBuf,
}

impl StoreReader {
    /// The applied state (image, last-applied id, membership) and its lock: for this crate's
    /// tests and tools. The node reads through the queries below, which never hand the lock out.
    pub fn state(&self) -> &SharedImage {
        &self.shared
    }

    /// Runs `f` on the applied image. `f` runs under the state's read lock, which the apply
    /// path waits for: keep it to reading and copying out (it cannot await).
    pub fn with_image<R>(&self, f: impl FnOnce(&NetworkImage) -> R) -> R {
        f(&read(&self.shared).image)
    }

    /// [`StoreReader::with_image`], also given the last applied log index (0: none) the image
    /// reflects.
    pub fn with_applied_image<R>(&self, f: impl FnOnce(&NetworkImage, u64) -> R) -> R {
        let state = read(&self.shared);
        f(&state.image, state.last_applied.map_or(0, |l| l.index))
    }

    /// One cell of the applied image.
    pub fn cell(&self, id: &str) -> Option<Cell> {
        self.with_image(|image| image.cells.get(id).cloned())
    }

    /// The cluster's effective command format among `voters`: the lowest any of them
    /// advertised (see [`NetworkImage::effective_format`]).
    pub fn effective_format(&self, voters: &[NodeId]) -> u16 {
        self.with_image(|image| image.effective_format(voters.iter().copied()))
    }

    /// Every release advertised to the cluster, by node, and the effective command format
    /// among `voters`.
    pub fn releases(&self, voters: &[NodeId]) -> (Vec<NodeRelease>, u16) {
        self.with_image(|image| {
            let releases = image.releases.values().cloned().collect();
            (releases, image.effective_format(voters.iter().copied()))
        })
    }

    /// The release `node` advertised, if it did.
    pub fn release_of(&self, node: NodeId) -> Option<NodeRelease> {
        self.with_image(|image| image.releases.get(&node).cloned())
    }

    /// The effective command format among `voters`, and whether every one of them advertised
    /// its release yet.
    pub fn effective_format_known(&self, voters: &[NodeId]) -> (u16, bool) {
        self.with_image(|image| {
            let known = voters.iter().all(|v| image.releases.contains_key(v));
            (image.effective_format(voters.iter().copied()), known)
        })
    }

    /// Up to `limit` history records, newest first, each with its cursor: those older than
    /// `before` if given. The last record's cursor, passed as the next `before`, continues the
    /// listing without skipping or repeating a record (several may share one log entry).
    pub fn history(
        &self,
        limit: usize,
        before: Option<HistoryCursor>,
    ) -> Result<Vec<(HistoryCursor, HistoryRecord)>, Damaged> {
        state_machine::history_newest_first(&self.shared, limit, before)
    }

    /// Up to `limit` history records, oldest first, each with its cursor: the record at `from`
    /// and those after it. The cursor after the last one returned (its position plus one)
    /// continues the listing without skipping or repeating a record.
    pub fn history_from(
        &self,
        limit: usize,
        from: HistoryCursor,
    ) -> Result<Vec<(HistoryCursor, HistoryRecord)>, Damaged> {
        state_machine::history_oldest_first(&self.shared, limit, from)
    }

    /// Applied batches not yet in sled's checkpoint: a stop waits for them (for a minute and a
    /// half after a national import), or a start after a stop that gave up restores from the
    /// newest snapshot.
    pub fn checkpoint_pending(&self) -> u64 {
        self.writer.pending()
    }

    /// What history this node holds: the log index of its oldest entry with records (none when
    /// empty), how many records it holds, and how many the policy keeps (beyond that the
    /// oldest entries are dropped).
    pub fn history_span(&self) -> HistorySpan {
        let state = read(&self.shared);
        HistorySpan {
            oldest: state.history.oldest(),
            records: state.history.len(),
            keep: state.image.policy.history_keep,
        }
    }

    /// A consistent copy of the applied state and history, as a snapshot would hold it.
    pub fn capture(&self) -> Result<(sonraft_raft::SnapshotMeta, snapshot::SnapshotBody), Damaged> {
        state_machine::capture(&self.shared)
    }

    /// A digest of the whole applied state (image, policy, KPI summaries, history) at the
    /// last-applied entry: two replicas at the same applied entry must have the same digest.
    pub fn digest(&self) -> Result<StateDigest, Damaged> {
        let (meta, body) = self.capture()?;
        let mut bytes = Vec::new();
        body.encode_into(&mut bytes)
            .map_err(|e| Damaged::new("state digest", e))?;
        Ok(StateDigest {
            applied: meta.last_log_id,
            digest: fnv1a64(&bytes),
            cells: body.image.cells.len(),
            relations: body.image.relations.len(),
            history_records: body.history.len(),
        })
    }

    /// Subscribes to the configuration changes of every applied batch (a lagging receiver
    /// should re-read everything it cares about).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<AppliedChanges>> {
        self.feed.subscribe()
    }

    /// Counters of the durable syncs done so far.
    pub fn sync_stats(&self) -> &SyncStats {
        &self.durability.stats
    }

    /// Makes every write so far durable, the state machine's checkpoint of everything applied
    /// among them (at shutdown: a checkpoint left half written is found torn at the next start
    /// and rebuilt from the newest snapshot, which takes as long as writing the whole image).
    /// Waits as long as the checkpoint writer is behind: seconds after a large import.
    pub fn sync(&self) -> std::io::Result<()> {
        self.writer.wait_written().map_err(std::io::Error::other)?;
        self.durability.sync()
    }

    /// Test control over this store's background syncs (see [`durable::SyncGate`]).
    #[cfg(feature = "fault-injection")]
    pub fn sync_gate(&self) -> &durable::SyncGate {
        &self.durability.gate
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How far the Raft log is on disk; the transport caps the commits a leader announces at
    /// it (see [`sonraft_raft::durable`]).
    pub fn durable_log(&self) -> Arc<DurableLog> {
        self.synced.clone()
    }
}

/// What [`StoreReader::history_span`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySpan {
    /// The log index of the oldest entry with records held.
    pub oldest: Option<u64>,
    pub records: u64,
    /// The policy's `history_keep`.
    pub keep: u64,
}

/// What [`StoreReader::digest`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDigest {
    pub applied: Option<sonraft_raft::LogId>,
    /// FNV-1a (64 bits) of the state's bincode encoding: stable across processes and builds
    /// of the same data format.
    pub digest: u64,
    pub cells: usize,
    pub relations: usize,
    pub history_records: usize,
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// How a [`Store`] is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Bytes of sled's page cache. The image is served from memory and the state checkpoint is
    /// only written, so the cache mostly holds the Raft log's tail (entries on their way to
    /// followers) and index pages; sled counts pages at roughly their serialized size, and
    /// the memory they take is somewhat more.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    /// A 64 MiB cache: the tail of the log a lagging follower still needs, with room to spare.
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 << 20,
        }
    }
}

impl Store {
    /// Opens (creating if empty) the data directory `dir` with the default [`StoreOptions`].
    /// Fails with [`OpenError::InUse`] if another process, or a store of this process not yet
    /// closed, has it open.
    pub fn open(dir: &Path) -> Result<Store, OpenError> {
        Store::open_with(dir, &StoreOptions::default())
    }

    /// Opens (creating if empty) the data directory `dir` with `options`; otherwise as
    /// [`Store::open`].
    pub fn open_with(dir: &Path, options: &StoreOptions) -> Result<Store, OpenError> {
        let found = format::check_or_create(dir)?;
        // sled reports a lock held by someone else only as a message; ask the lock first.
        wait_released(dir, std::time::Duration::ZERO)?;
        let sled_dir = dir.join("sled");
        let db = sled::Config::new()
            .path(&sled_dir)
            .cache_capacity(options.cache_bytes)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|source| match source {
                sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
                    OpenError::InUse {
                        dir: dir.to_path_buf(),
                    }
                }
                source => OpenError::Sled {
                    dir: sled_dir.clone(),
                    source,
                },
            })?;
        let io = |what: &'static str| {
            let dir = dir.to_path_buf();
            move |source| OpenError::Io { what, dir, source }
        };
        let durability = Arc::new(
            Durability::new(db.clone(), &sled_dir).map_err(io("cannot sync the sled files"))?,
        );
        let trees = LogStore::trees(&db).map_err(|source| OpenError::Sled {
            dir: sled_dir.clone(),
            source,
        })?;
        let corrupt = |reason: String| OpenError::Corrupt {
            dir: dir.to_path_buf(),
            reason,
        };
        log_store::cut_at_first_hole(&trees.0, &trees.1).map_err(|e| corrupt(e.to_string()))?;
        log_store::lower_committed_to_log(&trees.0, &trees.1)
            .map_err(|e| corrupt(e.to_string()))?;
        // What a crashed process wrote may still be only in the page cache: make it durable
        // before the log is counted as on disk (the DurableLog below starts at its end).
        durability
            .sync()
            .map_err(io("cannot sync the store on opening it"))?;
        let last =
            log_store::last_log_id(&trees.0, &trees.1).map_err(|e| corrupt(e.to_string()))?;
        let synced = Arc::new(DurableLog::new(last));
        let group = GroupCommit::start(durability.clone(), synced.clone())
            .map_err(io("cannot start the sync thread"))?;
        let log = LogStore::new(trees, durability.clone(), group, synced.clone())
            .map_err(|e| corrupt(e.to_string()))?;
        if found < format::DATA_FORMAT {
            migrate(&db, &durability, dir, found)?;
        }
        let snapshots = Arc::new(
            SnapshotDir::open(&dir.join("snapshots"))
                .map_err(io("cannot open the snapshot directory"))?,
        );
        let sm = StateMachine::open(&db, snapshots, synced.clone(), durability.clone()).map_err(
            |e| OpenError::Corrupt {
                dir: dir.to_path_buf(),
                reason: e.to_string(),
            },
        )?;
        let reader = StoreReader {
            shared: sm.shared(),
            writer: sm.writer(),
            feed: sm.feed(),
            durability,
            synced,
            dir: dir.to_path_buf(),
        };
        Ok(Store { log, sm, reader })
    }
}

impl Store {
    /// Closes the store: its sync and checkpoint threads finish what was queued and are
    /// joined, sled is released, and this returns only once the data directory can be opened
    /// again. Every [`StoreReader`] clone must be dropped first (a live one keeps sled open, and
    /// this then fails after [`RELEASE_WITHIN`] saying so).
    pub fn close(self) -> Result<(), OpenError> {
        let dir = self.reader.dir.clone();
        drop(self);
        wait_released(&dir, RELEASE_WITHIN)
    }
}

/// How long [`Store::close`] waits for sled to let go of a directory.
pub const RELEASE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Returns once nothing holds the sled database of data directory `dir` open (or it has none).
///
/// Dropping the last handle of a sled 0.34 database does not close it at once: jobs of sled's
/// process-wide thread pool (segment writes, log buffer flushes) hold it, and its file lock,
/// until they finish. A store dropped by one part of a process can therefore not be reopened
/// at once by another (openraft's tasks after `Raft::shutdown`, tests, offline tools). This
/// waits on the lock itself: sled takes an exclusive `flock` on `sled/db` and holds it as long
/// as any of its handles lives, so once we can take it, sled has closed everything.
pub fn wait_released(dir: &Path, within: std::time::Duration) -> Result<(), OpenError> {
    let path = dir.join("sled").join("db");
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(OpenError::Io {
                what: "cannot open the sled data file to see whether it is released",
                dir: dir.to_path_buf(),
                source,
            });
        }
    };
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                return Ok(());
            }
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < within => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::InUse {
                    dir: dir.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(OpenError::Io {
                    what: "cannot lock the sled data file to see whether it is released",
                    dir: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// Brings a directory of data format `found` to the current format: rewrites what changed,
/// makes it durable, and only then marks the directory with the new format (a crash in between
/// leaves the old marker, and the migration, which is idempotent, runs again).
fn migrate(
    db: &sled::Db,
    durability: &Durability,
    dir: &Path,
    found: u32,
) -> Result<(), OpenError> {
    let corrupt = |reason: String| OpenError::Corrupt {
        dir: dir.to_path_buf(),
        reason,
    };
    let tree = db.open_tree("sm").map_err(|source| OpenError::Sled {
        dir: dir.join("sled"),
        source,
    })?;
    // Format 1 -> 2: history regrouped one value per log entry.
    let moved = if found < 2 {
        history::migrate_v1(&tree).map_err(|e| corrupt(e.to_string()))?
    } else {
        0
    };
    // Format 2 -> 3 only adds a key (`m/staged`), absent until an import is staged; 3 -> 4
    // likewise (`m/son`, absent until the SON controls are set), and 4 -> 5 (`m/tuning`); 5 -> 6
    // changes nothing stored (values naming outage compensation appear only after it), nor
    // does 6 -> 7 (values naming coverage_capacity or anr_add); 7 -> 8 only adds keys (`o/…`,
    // absent until control of a cell site moves), and 8 -> 9 (`m/tuning/availability`, absent
    // until a tuning sets the outage, compensation or energy-saving sections).
    // Format 9 -> 10: a staged import kept whole in `m/staged` becomes one value per part.
    if found < 10 {
        state_machine::migrate_staged_v9(&tree).map_err(|e| corrupt(e.to_string()))?;
    }
    durability.sync().map_err(|source| OpenError::Io {
        what: "cannot sync the migrated store",
        dir: dir.to_path_buf(),
        source,
    })?;
    format::write_marker(dir, format::DATA_FORMAT)?;
    tracing::info!(
        dir = %dir.display(),
        from = found,
        to = format::DATA_FORMAT,
        history_records = moved,
        "migrated the data directory to the current data format"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership};
    use sonraft_raft::{NodeInfo, TypeConfig};

    use super::*;

    fn membership(index: u64) -> Entry<TypeConfig> {
        let nodes = [(1u64, NodeInfo::default())]
            .into_iter()
            .collect::<BTreeMap<_, _>>();
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Membership(Membership::new(vec![[1u64].into()], nodes)),
        }
    }

    /// A stopping node syncs and then exits without closing the store (its Raft tasks may
    /// still hold it): what it applied must be whole in sled by then, not in a checkpoint still
    /// gathering or half written, which the next start would find torn and rebuild from a
    /// snapshot (half a minute at 3 million relations).
    #[tokio::test]
    async fn after_a_sync_the_checkpoint_in_sled_holds_everything_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .sm
            .apply([membership(1), membership(2)])
            .await
            .unwrap();
        store.reader.sync().unwrap();
        // Looked at as the next start finds it after a power cut now.
        store.reader.sync_gate().cut();
        store.close().unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("sled"))
            .open()
            .unwrap();
        let tree = db.open_tree("sm").unwrap();
        assert!(!tree.contains_key(sm_writer::TORN).unwrap());
        let in_sled = state_machine::load_checkpoint(&tree).unwrap();
        assert_eq!(in_sled.map(|l| l.index), Some(2));
    }
}
