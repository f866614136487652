//! Making sled's writes durable, and group commit for log appends.
//!
//! sled 0.34's `flush` ends in `sync_file_range`, which writes the pages but does not flush the
//! drive's cache or the file's metadata (sled issue #1452): after a power loss an "flushed"
//! append can be gone. [`Durability::sync`] therefore follows `flush` with `fdatasync` on
//! sled's data file and on any blob files sled wrote for large values (sled writes those
//! without syncing them), and syncs the blob directory when new blobs appeared.
//!
//! [`GroupCommit`] runs those syncs on one dedicated thread: appends queue their completion
//! callbacks, and each sync completes every callback queued before it began, so N concurrent
//! appends cost one `fdatasync`, not N. After each sync it advances the log's synced end
//! ([`DurableLog`]) before it completes any callback.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::storage::LogFlushed;
use sonraft_raft::durable::DurableLog;
use sonraft_raft::{LogId, TypeConfig};

/// Hands the garbage sled deferred on this thread (sealed IO buffers among it) to the epoch
/// collector now, so that it is freed within a few epochs.
///
/// A sled 0.34 `flush` seals the current IO buffer and drops the sealed one through
/// `crossbeam_epoch::Guard::defer`, which puts it in the calling thread's own bag of deferred
/// functions; a bag goes to the collector only once 64 functions fill it (or the thread
/// exits). The sealed buffer keeps its whole segment's 512 KiB allocated. A thread that does
/// little but an occasional sync (a tokio blocking thread running the log store's vote,
/// truncate and purge syncs, kept alive by other blocking work) thus kept one segment per
/// sync until 64 syncs later: soaks saw that as a linear leak of about 1 MB/min per node.
pub fn release_sled_garbage() {
    crossbeam_epoch::pin().flush();
}

/// `fsync` on a directory, so that a new or renamed entry in it survives a power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Counters of the syncs done, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Number of `Durability::sync` calls that succeeded.
    pub syncs: AtomicU64,
    /// Log appends made durable by those syncs.
    pub appends: AtomicU64,
    /// Total time spent in syncs, in microseconds.
    pub sync_micros: AtomicU64,
    /// Bytes of log entries written (as stored), since the store was opened: what a snapshot
    /// by size counts.
    pub appended_bytes: AtomicU64,
    /// Number of `Durability::sync_checkpoint` calls that succeeded.
    pub checkpoint_syncs: AtomicU64,
}

/// A sync at least this long is logged, with where its time went.
const SLOW_SYNC: std::time::Duration = std::time::Duration::from_millis(100);

/// Turns "sled has the bytes" into "the bytes are on disk".
pub struct Durability {
    db: sled::Db,
    sled_dir: PathBuf,
    data_file: File,
    synced_blobs: Mutex<HashSet<OsString>>,
    pub stats: SyncStats,
    /// Test control over the log and checkpoint syncs.
    #[cfg(feature = "fault-injection")]
    pub gate: Arc<SyncGate>,
}

/// Test control over a store's background syncs (feature `fault-injection`, never in a
/// release): hold them, to keep a leader's own appends unsynced while they replicate, or cut
/// them, as a power cut does.
///
/// Only the group-commit syncs of log appends and the state machine's checkpoint syncs pass
/// the gate; a vote, truncation or purge syncs at once (openraft waits on those in line). So a
/// test that simulates a power cut by dropping the log after [`DurableLog::synced_log_id`]
/// must not have had such a sync after the appends it drops.
#[cfg(feature = "fault-injection")]
#[derive(Default)]
pub struct SyncGate {
    state: Mutex<GateState>,
    changed: std::sync::Condvar,
}

#[cfg(feature = "fault-injection")]
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum GateState {
    #[default]
    Open,
    Held,
    Cut,
}

#[cfg(feature = "fault-injection")]
impl SyncGate {
    fn set(&self, to: GateState) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *s != GateState::Cut {
            *s = to;
        }
        self.changed.notify_all();
    }

    /// Syncs wait from now on.
    pub fn hold(&self) {
        self.set(GateState::Held);
    }

    /// Syncs go ahead again.
    pub fn open(&self) {
        self.set(GateState::Open);
    }

    /// Nothing is synced any more, as after a power cut: waiting and later syncs fail, and the
    /// sync thread stops without completing what it holds.
    pub fn cut(&self) {
        self.set(GateState::Cut);
    }

    /// Waits while held; false once cut.
    fn pass(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while *s == GateState::Held {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        *s == GateState::Open
    }
}

/// What one sync of the blob files did: for the log line of a slow sync.
#[derive(Default)]
struct BlobSync {
    /// New blob files synced, and the time their syncs took.
    new: usize,
    files: std::time::Duration,
    /// The time the directory's sync took.
    dir: std::time::Duration,
}

impl Durability {
    pub fn new(db: sled::Db, sled_dir: &Path) -> io::Result<Self> {
        let data_file = File::open(sled_dir.join("db"))?;
        // sled's `conf` file and the directory entries were written without fsync at creation.
        if let Ok(conf) = File::open(sled_dir.join("conf")) {
            conf.sync_all()?;
        }
        sync_dir(sled_dir)?;
        Ok(Durability {
            db,
            sled_dir: sled_dir.to_path_buf(),
            data_file,
            synced_blobs: Mutex::new(HashSet::new()),
            stats: SyncStats::default(),
            #[cfg(feature = "fault-injection")]
            gate: Arc::default(),
        })
    }

    /// Returns once everything written to sled before the call is on stable storage (counted
    /// as a log sync in [`SyncStats`] and `sonraft_log_sync_seconds`).
    pub fn sync(&self) -> io::Result<()> {
        let started = Instant::now();
        self.sync_files()?;
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("sonraft_log_sync_seconds").record(started.elapsed().as_secs_f64());
        self.stats
            .sync_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Like [`Durability::sync`], for the state machine's checkpoints (counted apart, in
    /// `sonraft_checkpoint_sync_seconds`).
    pub fn sync_checkpoint(&self) -> io::Result<()> {
        #[cfg(feature = "fault-injection")]
        if !self.gate.pass() {
            return Err(io::Error::other("power cut (fault injection)"));
        }
        let started = Instant::now();
        self.sync_files()?;
        self.stats.checkpoint_syncs.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("sonraft_checkpoint_sync_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn sync_files(&self) -> io::Result<()> {
        let started = Instant::now();
        let flushed = self.db.flush().map_err(io::Error::other);
        // The flush sealed the current IO buffer here, deferring its drop to this thread.
        release_sled_garbage();
        flushed?;
        let flushed = started.elapsed();
        self.data_file.sync_data()?;
        let synced = started.elapsed();
        let blobs = self.sync_blobs()?;
        let took = started.elapsed();
        // A witness: a Raft log sync this slow makes followers answer appends late.
        if took >= SLOW_SYNC {
            tracing::info!(
                took_ms = took.as_millis() as u64,
                flush_ms = flushed.as_millis() as u64,
                fdatasync_ms = (synced - flushed).as_millis() as u64,
                blobs_ms = (took - synced).as_millis() as u64,
                new_blobs = blobs.new,
                blob_files_ms = blobs.files.as_millis() as u64,
                blob_dir_ms = blobs.dir.as_millis() as u64,
                "a sync of sled's files took long"
            );
        }
        Ok(())
    }

    /// Syncs the blob files sled wrote since the last sync, and then their directory.
    fn sync_blobs(&self) -> io::Result<BlobSync> {
        let mut done = BlobSync::default();
        let dir = self.sled_dir.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(done),
            Err(e) => return Err(e),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = HashSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                let started = Instant::now();
                match File::open(entry.path()) {
                    Ok(f) => f.sync_data()?,
                    // sled may have garbage-collected it between listing and opening.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                done.files += started.elapsed();
                done.new += 1;
                new = true;
            }
            present.insert(name);
        }
        if new {
            let started = Instant::now();
            sync_dir(&dir)?;
            done.dir = started.elapsed();
        }
        *synced = present;
        Ok(done)
    }
}

/// One append waiting for a sync.
pub struct PendingSync {
    /// Completed after the sync; `None` when the append was already reported (a leader's own
    /// append, see [`sonraft_raft::durable`]).
    pub callback: Option<LogFlushed<TypeConfig>>,
    /// The last entry the append wrote, and the [`DurableLog`] epoch it was written in.
    pub last: Option<(LogId, u64)>,
}

/// The group-commit thread's inbox. When the last clone is dropped the thread finishes the
/// queued syncs and is joined, so that the sled database is closed when the store is.
#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inbox>,
}

struct Inbox {
    tx: Option<mpsc::Sender<PendingSync>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Opened on drop, so that a store closed while a test holds its syncs is not stuck.
    #[cfg(feature = "fault-injection")]
    gate: Arc<SyncGate>,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        drop(self.tx.take());
        #[cfg(feature = "fault-injection")]
        self.gate.open();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the sync thread panicked");
        }
    }
}

impl GroupCommit {
    /// Starts the sync thread. It ends when every `GroupCommit` clone is dropped.
    pub fn start(durability: Arc<Durability>, log: Arc<DurableLog>) -> io::Result<Self> {
        #[cfg(feature = "fault-injection")]
        let gate = durability.gate.clone();
        let (tx, rx) = mpsc::channel::<PendingSync>();
        let thread = std::thread::Builder::new().name("sonraft-fsync".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                #[cfg(feature = "fault-injection")]
                if !durability.gate.pass() {
                    // A simulated power cut: nothing queued becomes durable or is reported,
                    // and whoever waits for a sync gives up.
                    log.failed("power cut (fault injection)");
                    return;
                }
                batch.extend(rx.try_iter());
                let result = durability.sync();
                match &result {
                    Ok(()) => {
                        for (last, epoch) in batch.iter().filter_map(|p| p.last) {
                            log.synced(last, epoch);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "log sync failed; the appends are not acknowledged and nothing after them is applied");
                        log.failed(&e.to_string());
                    }
                }
                durability.stats.appends.fetch_add(batch.len() as u64, Ordering::Relaxed);
                metrics::histogram!("sonraft_log_sync_batch_appends").record(batch.len() as f64);
                for callback in batch.into_iter().filter_map(|p| p.callback) {
                    let r = match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    };
                    callback.log_io_completed(r);
                }
            }
        })?;
        Ok(GroupCommit {
            inner: Arc::new(Inbox {
                tx: Some(tx),
                thread: Some(thread),
                #[cfg(feature = "fault-injection")]
                gate,
            }),
        })
    }

    /// Queues an append to be synced (and its callback completed) by the next sync.
    pub fn submit(&self, pending: PendingSync) -> io::Result<()> {
        self.inner
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("the sync thread has stopped"))?
            .send(pending)
            .map_err(|_| io::Error::other("the sync thread has stopped"))
    }
}
