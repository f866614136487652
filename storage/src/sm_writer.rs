//! Write-behind of the state machine to sled, in checkpoints.
//!
//! The state machine's answer to openraft is the in-memory image; sled's copy (tree `sm`) is
//! a checkpoint for restarts, and openraft re-applies the committed log after `m/applied`
//! anyway: the durable Raft log is the write-ahead log. So `apply` hands each batch's key
//! operations to this writer and returns. One thread gathers them for up to [`CHECKPOINT`]
//! (later writes of a key replace earlier ones; a waiting reader cuts the wait short) and
//! writes the result as one checkpoint:
//!
//! 1. insert [`TORN`], and sync;
//! 2. insert or remove every key gathered, `m/applied` among them, in key order, and sync;
//! 3. remove [`TORN`].
//!
//! These are plain sled operations, not an `apply_batch`: sled guards every batch with one
//! process-wide lock that also stops Raft log appends and reads while the batch is written, so
//! a batch of a few hundred keys stalled the log on every node. The syncs make the marker
//! durable before any key of the checkpoint can be, and every key before the marker goes, also
//! across a power loss (sled alone counts data as stable after `sync_file_range`, which leaves
//! the drive's cache unflushed, so the drive may keep a later write and lose an earlier one).
//! A store found with `TORN` set is rebuilt by [`crate::state_machine`] from the newest
//! snapshot (or from empty) and the log.
//!
//! After a failed checkpoint the writer stops, leaving `TORN` set; submitting and waiting then
//! fail, and the state machine with them. Readers of sled wait until everything submitted is
//! written ([`SmWriter::wait_written`]); readers of the history read the state's copy of it
//! ([`crate::history::HeldHistory`]), which is never behind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::durable::Durability;

/// Present in tree `sm` while a checkpoint is being written.
pub(crate) const TORN: &[u8] = b"m/torn";

/// Longest time applied changes wait before they are written (bounds how much of the log a
/// restart re-applies; each checkpoint costs two syncs).
pub(crate) const CHECKPOINT: Duration = Duration::from_millis(500);

/// Key operations of one applied batch, in order.
///
/// Keys and values are copied into shared buffers (growing to 1 MiB) rather than two
/// allocations an operation: a national import hands the writer nine million of them in one
/// batch, which it holds until they are in sled (a minute and a half), and one
/// `(Vec<u8>, Option<Vec<u8>>)` each took ~120 B of memory for ~45 B of bytes.
#[derive(Default, Debug)]
pub(crate) struct Ops {
    /// Buffers of up to [`Ops::BUFFER`] bytes (each twice the last); an operation's key and
    /// value lie in one.
    buffers: Vec<Vec<u8>>,
    ops: Vec<Op>,
}

/// Where one operation's key and value are: buffer `buffer` holds the key at `at`, the value
/// right after it.
#[derive(Debug, Clone, Copy)]
struct Op {
    buffer: u32,
    at: u32,
    key_len: u32,
    /// [`REMOVE`] for a removal.
    value_len: u32,
}

const REMOVE: u32 = u32::MAX;

impl Ops {
    const FIRST_BUFFER: usize = 512;
    const BUFFER: usize = 1 << 20;

    pub(crate) fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.push(key.as_ref(), Some(value.as_ref()));
    }

    pub(crate) fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.push(key.as_ref(), None);
    }

    fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        let len = key.len() + value.map_or(0, <[u8]>::len);
        let fits = self
            .buffers
            .last()
            .is_some_and(|b| b.capacity() - b.len() >= len);
        if !fits {
            // Twice the last buffer, up to `BUFFER`: most batches are a change set of a few
            // hundred bytes, and a fresh megabyte for each (allocated, faulted in and given
            // back a thousand times a second) cost every apply. A value larger than a buffer
            // (an import part) gets one of its own.
            let next = self
                .buffers
                .last()
                .map_or(Self::FIRST_BUFFER, |b| (b.capacity() * 2).min(Self::BUFFER));
            self.buffers.push(Vec::with_capacity(len.max(next)));
        }
        let buffer = self.buffers.len() - 1;
        let b = &mut self.buffers[buffer];
        let op = Op {
            buffer: buffer as u32,
            at: b.len() as u32,
            key_len: key.len() as u32,
            value_len: value.map_or(REMOVE, |v| v.len() as u32),
        };
        b.extend_from_slice(key);
        if let Some(v) = value {
            b.extend_from_slice(v);
        }
        self.ops.push(op);
    }

    /// Each operation in order: its key, and its value (`None`: remove).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.ops.iter().map(|op| (self.key(op), self.value(op)))
    }

    fn key(&self, op: &Op) -> &[u8] {
        let at = op.at as usize;
        &self.buffers[op.buffer as usize][at..at + op.key_len as usize]
    }

    fn value(&self, op: &Op) -> Option<&[u8]> {
        if op.value_len == REMOVE {
            return None;
        }
        let at = (op.at + op.key_len) as usize;
        Some(&self.buffers[op.buffer as usize][at..at + op.value_len as usize])
    }

    /// How many operations.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.ops.len()
    }
}

/// The operations of a checkpoint's batches in key order, each key once with its last
/// operation: the batches and, per key, which batch and operation to write.
pub(crate) struct InKeyOrder {
    batches: Vec<Ops>,
    order: Vec<(u32, Op)>,
}

impl InKeyOrder {
    /// Each key once with its last operation (`None`: remove), in key order.
    fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.order.iter().map(|(batch, op)| {
            let ops = &self.batches[*batch as usize];
            (ops.key(op), ops.value(op))
        })
    }
}

#[derive(Default)]
struct Written {
    /// Sequence number of the last batch in sled.
    upto: u64,
    /// Why the writer stopped writing, if it did.
    stopped: Option<String>,
}

struct Progress {
    written: Mutex<Written>,
    advanced: Condvar,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, Written> {
        self.written.lock().unwrap_or_else(|x| x.into_inner())
    }

    fn stop(&self, reason: String) {
        self.lock().stopped.get_or_insert(reason);
        self.advanced.notify_all();
    }

    /// Records how the write of everything submitted up to `seq` went; false when it failed,
    /// and the writer stops.
    fn wrote(&self, seq: u64, result: Result<(), String>) -> bool {
        match result {
            Ok(()) => {
                self.lock().upto = seq;
                self.advanced.notify_all();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "the state machine could not be written to sled; it stops applying");
                self.stop(e);
                false
            }
        }
    }
}

/// Marks the writer stopped when its thread ends, however it ends.
struct OnExit(Arc<Progress>);

impl Drop for OnExit {
    fn drop(&mut self) {
        self.0
            .stop("the state machine writer has stopped".to_string());
    }
}

enum Msg {
    Ops(u64, Ops),
    /// A reader waits: write what is queued now.
    Kick,
    /// Write what was queued before, then this write of its own (counted as submitted, as a
    /// batch is), before anything queued after.
    Job(u64, Job),
}

/// A write of its own in the writer's order: a snapshot's install. A failure stops the writer
/// as a failed checkpoint does.
pub(crate) type Job = Box<dyn FnOnce(&sled::Tree, &Durability) -> Result<(), String> + Send>;

/// What one round of the writer gathered: the batches to write as one checkpoint, the last
/// one's sequence number, and a job to run once they are written. A job ends the gathering:
/// what was queued after it waits for the next round.
#[derive(Default)]
struct Round {
    pending: Vec<Ops>,
    seq: Option<u64>,
    job: Option<(u64, Job)>,
}

impl Round {
    /// Takes one message; whether to stop gathering and write now.
    fn take(&mut self, m: Msg) -> bool {
        match m {
            Msg::Ops(seq, ops) => {
                self.pending.push(ops);
                self.seq = Some(seq);
                false
            }
            Msg::Kick => true,
            Msg::Job(seq, job) => {
                self.job = Some((seq, job));
                true
            }
        }
    }

    /// Whether gathering stopped at a job.
    fn ended(&self) -> bool {
        self.job.is_some()
    }
}

/// The write-behind thread and its queue.
pub(crate) struct SmWriter {
    /// Opened on drop, so that a store closed while a test holds its syncs is not stuck.
    #[cfg(feature = "fault-injection")]
    gate: Arc<crate::durable::SyncGate>,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    submitted: AtomicU64,
    progress: Arc<Progress>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The operations of `batches` in key order, each key once, with its last operation.
///
/// A sorted `Vec` of where each operation lies rather than a map built an operation at a
/// time: a large import hands over millions of keys in one batch, for which a `BTreeMap` took
/// seconds of this thread and about half as much memory again as the operations themselves,
/// for the whole checkpoint.
fn in_key_order(mut batches: Vec<Ops>) -> InKeyOrder {
    let mut order = Vec::with_capacity(batches.iter().map(|b| b.ops.len()).sum());
    for (n, batch) in batches.iter_mut().enumerate() {
        order.extend(
            std::mem::take(&mut batch.ops)
                .into_iter()
                .map(|op| (n as u32, op)),
        );
    }
    let key = |(batch, op): &(u32, Op)| batches[*batch as usize].key(op);
    sonraft_raft::model::sort_keeping_last(&mut order, |a, b| key(a).cmp(key(b)));
    InKeyOrder { batches, order }
}

/// A checkpoint syncs after each this many bytes of keys and values it wrote.
///
/// `fdatasync` waits for every dirty page of the file, and a disk's cache flush for every write
/// queued before it: a checkpoint that syncs only at its end (a national import's is ~450 MB
/// of keys) leaves all of it to whichever Raft log sync comes next (sled keeps the log in the
/// same file). sled writes 13-16 times the bytes it is given while it inserts keys in order
/// (`/proc/self/io`: 2.4 GB written for 3 million 60-byte keys), so this counts the given bytes
/// small: a log sync waits for ~15 MB of checkpoint at most. (A log appending every ms beside
/// a writer of 1.5 GB syncing only at its end: worst append 479 ms; syncing every 8 MB: 57 ms.)
/// The syncs between are harmless: the keys are not counted until [`TORN`] is removed.
pub(crate) const CHECKPOINT_SYNC_BYTES: usize = 1 << 20;

/// Writes `pending` as one checkpoint (see the module docs).
fn checkpoint(
    tree: &sled::Tree,
    durability: &Durability,
    pending: InKeyOrder,
) -> Result<(), String> {
    write_marked(tree, durability, pending.iter().map(Ok))
}

/// Writes `ops` (insert, or remove when the value is `None`) as a checkpoint does: [`TORN`]
/// inserted and synced first, the operations synced every [`CHECKPOINT_SYNC_BYTES`] and at the
/// end, then [`TORN`] removed. A crash part way leaves [`TORN`] set, and the store is rebuilt
/// from the newest snapshot and the log. An operation that fails to be made (`Err`) stops the
/// write there, [`TORN`] left set.
pub(crate) fn write_marked<K, V>(
    tree: &sled::Tree,
    durability: &Durability,
    ops: impl IntoIterator<Item = Result<(K, Option<V>), String>>,
) -> Result<(), String>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let sled = |e: sled::Error| e.to_string();
    let sync = || durability.sync_checkpoint().map_err(|e| e.to_string());
    tree.insert(TORN, &[]).map_err(sled)?;
    sync()?;
    let mut unsynced = 0;
    for op in ops {
        let (k, v) = op?;
        let k = k.as_ref();
        unsynced += k.len();
        match v {
            Some(v) => {
                unsynced += v.as_ref().len();
                tree.insert(k, v.as_ref()).map_err(sled)?
            }
            None => tree.remove(k).map_err(sled)?,
        };
        if unsynced >= CHECKPOINT_SYNC_BYTES {
            sync()?;
            unsynced = 0;
        }
    }
    sync()?;
    tree.remove(TORN).map_err(sled)?;
    Ok(())
}

impl SmWriter {
    pub(crate) fn start(
        tree: sled::Tree,
        durability: Arc<Durability>,
    ) -> std::io::Result<SmWriter> {
        #[cfg(feature = "fault-injection")]
        let gate = durability.gate.clone();
        let (tx, rx) = mpsc::channel::<Msg>();
        let progress = Arc::new(Progress {
            written: Mutex::new(Written::default()),
            advanced: Condvar::new(),
        });
        let p = progress.clone();
        let thread = std::thread::Builder::new()
            .name("sonraft-sm-writer".into())
            .spawn(move || {
                let _exit = OnExit(p.clone());
                while let Ok(first) = rx.recv() {
                    let mut round = Round::default();
                    let mut now = round.take(first);
                    let until = Instant::now() + CHECKPOINT;
                    while !now {
                        let left = until.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(m) => now = round.take(m),
                            Err(_) => break,
                        }
                    }
                    while !round.ended() {
                        let Ok(m) = rx.try_recv() else { break };
                        round.take(m);
                    }
                    if let Some(seq) = round.seq {
                        let written = checkpoint(&tree, &durability, in_key_order(round.pending));
                        if !p.wrote(seq, written) {
                            return;
                        }
                    }
                    if let Some((seq, job)) = round.job
                        && !p.wrote(seq, job(&tree, &durability))
                    {
                        return;
                    }
                }
            })?;
        Ok(SmWriter {
            #[cfg(feature = "fault-injection")]
            gate,
            tx: Mutex::new(Some(tx)),
            submitted: AtomicU64::new(0),
            progress,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues the message `make` builds, under the queue's lock (a batch takes its sequence
    /// number there, so that the numbers follow the queue's order); fails if the writer stopped.
    fn queue(&self, make: impl FnOnce() -> Msg) -> Result<(), String> {
        if let Some(reason) = self.failure() {
            return Err(reason);
        }
        let stopped = || "the state machine writer has stopped".to_string();
        let tx = self.tx.lock().unwrap_or_else(|x| x.into_inner());
        let msg = make();
        tx.as_ref()
            .ok_or_else(stopped)?
            .send(msg)
            .map_err(|_| stopped())
    }

    /// Queues one batch of operations.
    pub(crate) fn submit(&self, ops: Ops) -> Result<(), String> {
        self.queue(|| Msg::Ops(self.submitted.fetch_add(1, Ordering::SeqCst) + 1, ops))
    }

    /// Queues a write of its own, to run once everything submitted so far is in sled and before
    /// anything submitted later; waiting for what is written waits for it too.
    pub(crate) fn submit_job(&self, job: Job) -> Result<(), String> {
        self.queue(|| Msg::Job(self.submitted.fetch_add(1, Ordering::SeqCst) + 1, job))
    }

    /// Batches and jobs submitted and not yet in sled.
    pub(crate) fn pending(&self) -> u64 {
        let submitted = self.submitted.load(Ordering::SeqCst);
        submitted.saturating_sub(self.progress.lock().upto)
    }

    /// Blocks until everything submitted so far is in sled; fails if the writer stopped first.
    pub(crate) fn wait_written(&self) -> Result<(), String> {
        let target = self.submitted.load(Ordering::SeqCst);
        if self.progress.lock().upto < target
            && let Some(tx) = self.tx.lock().unwrap_or_else(|x| x.into_inner()).as_ref()
        {
            let _ = tx.send(Msg::Kick);
        }
        let mut written = self.progress.lock();
        loop {
            if written.upto >= target {
                return Ok(());
            }
            if let Some(reason) = &written.stopped {
                return Err(reason.clone());
            }
            written = self
                .progress
                .advanced
                .wait(written)
                .unwrap_or_else(|x| x.into_inner());
        }
    }

    /// Why the writer stopped, if it did (the state machine stops applying then).
    pub(crate) fn failure(&self) -> Option<String> {
        self.progress.lock().stopped.clone()
    }
}

impl Drop for SmWriter {
    fn drop(&mut self) {
        drop(self.tx.lock().unwrap_or_else(|x| x.into_inner()).take());
        #[cfg(feature = "fault-injection")]
        self.gate.open();
        if let Some(t) = self.thread.lock().unwrap_or_else(|x| x.into_inner()).take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_writes_each_key_once_in_order_with_its_last_operation() {
        let ops = |list: &[(&str, Option<&str>)]| {
            let mut o = Ops::default();
            for (k, v) in list {
                match v {
                    Some(v) => o.insert(k, v),
                    None => o.remove(k),
                }
            }
            o
        };
        let batches = vec![
            ops(&[("r/b", Some("1")), ("c/a", Some("1")), ("r/b", Some("2"))]),
            ops(&[("r/a", Some("1")), ("c/a", None), ("m/applied", Some("7"))]),
            ops(&[
                ("r/b", Some("3")),
                ("c/z", Some("1")),
                ("m/applied", Some("8")),
            ]),
        ];
        let pending = in_key_order(batches);
        let written: Vec<(String, Option<String>)> = pending
            .iter()
            .map(|(k, v)| {
                let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                (text(k), v.map(text))
            })
            .collect();
        let want = |k: &str, v: Option<&str>| (k.to_string(), v.map(str::to_string));
        assert_eq!(
            written,
            [
                want("c/a", None),
                want("c/z", Some("1")),
                want("m/applied", Some("8")),
                want("r/a", Some("1")),
                want("r/b", Some("3")),
            ]
        );
    }

    #[test]
    fn operations_spread_over_many_buffers_come_back_whole() {
        let mut ops = Ops::default();
        let big = vec![7u8; Ops::BUFFER + 5];
        for n in (0..60_000u32).rev() {
            ops.insert(format!("r/{n:06}"), n.to_be_bytes());
            if n == 30_000 {
                ops.insert(b"p/big", &big);
                ops.insert(b"p/empty", b"");
                ops.remove(b"p/gone");
            }
        }
        assert_eq!(ops.len(), 60_003);
        assert!(ops.buffers.len() > 2, "the operations fill several buffers");
        assert!(
            ops.buffers
                .iter()
                .all(|b| b.capacity() <= Ops::BUFFER.max(b"p/big".len() + big.len())),
            "none larger than a buffer but the one value that is"
        );
        let mut small = Ops::default();
        small.insert(b"c/C1", [0u8; 100]);
        assert!(
            small.buffers[0].capacity() < 1024,
            "a change set's batch stays small"
        );
        let pending = in_key_order(vec![ops]);
        let written: Vec<_> = pending.iter().collect();
        assert_eq!(written.len(), 60_003);
        assert_eq!(written[0], (b"p/big".as_slice(), Some(big.as_slice())));
        assert_eq!(written[1], (b"p/empty".as_slice(), Some(b"".as_slice())));
        assert_eq!(written[2], (b"p/gone".as_slice(), None));
        for (n, (k, v)) in written[3..].iter().enumerate() {
            assert_eq!(*k, format!("r/{n:06}").as_bytes());
            assert_eq!(*v, Some((n as u32).to_be_bytes().as_slice()));
        }
    }

    /// A store's sled, its durability and a writer of tree `sm`, in `dir`.
    fn writer_in(dir: &std::path::Path) -> (sled::Db, Arc<Durability>, SmWriter) {
        let sled_dir = dir.join("sled");
        let db = sled::Config::new().path(&sled_dir).open().unwrap();
        let durability = Arc::new(Durability::new(db.clone(), &sled_dir).unwrap());
        let writer = SmWriter::start(db.open_tree("sm").unwrap(), durability.clone()).unwrap();
        (db, durability, writer)
    }

    /// A checkpoint is synced as it goes: a national import's (~450 MB of keys, many times
    /// that as sled writes them) left dirty until its closing sync is what any Raft log sync
    /// of the same file would have to write out first.
    #[test]
    fn a_large_checkpoint_is_synced_as_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let (db, durability, writer) = writer_in(dir.path());
        let mut ops = Ops::default();
        let value = vec![3u8; 4096];
        let keys = 4 * CHECKPOINT_SYNC_BYTES / value.len() + 10;
        assert!(keys > 1_000, "enough keys to fill several syncs");
        for n in 0..keys {
            ops.insert(format!("r/{n:08}"), &value);
        }
        let before = durability.stats.checkpoint_syncs.load(Ordering::Relaxed);
        writer.submit(ops).unwrap();
        writer.wait_written().unwrap();
        let syncs = durability.stats.checkpoint_syncs.load(Ordering::Relaxed) - before;
        assert!(
            syncs >= 2 + 4,
            "{syncs} syncs for four times CHECKPOINT_SYNC_BYTES"
        );
        let tree = db.open_tree("sm").unwrap();
        assert_eq!(tree.len(), keys, "every key written, the marker removed");
    }

    #[test]
    fn a_job_runs_after_what_was_submitted_before_it_and_before_what_comes_after() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _durability, writer) = writer_in(dir.path());
        let put = |k: &str, v: &str| {
            let mut ops = Ops::default();
            ops.insert(k, v);
            ops
        };
        let text = |v: Option<sled::IVec>| v.map(|v| String::from_utf8(v.to_vec()).unwrap());
        writer.submit(put("a", "1")).unwrap();
        // The job sees "a" written, and writes "a" and "b" itself.
        let (seen_tx, seen) = mpsc::channel();
        writer
            .submit_job(Box::new(move |tree, _| {
                let _ = seen_tx.send(text(tree.get("a").unwrap()));
                tree.insert("a", "job").unwrap();
                tree.insert("b", "job").unwrap();
                Ok(())
            }))
            .unwrap();
        writer.submit(put("b", "2")).unwrap();
        // Waiting for what was written waits for the job too.
        writer.wait_written().unwrap();
        assert_eq!(seen.recv().unwrap().as_deref(), Some("1"));
        let tree = db.open_tree("sm").unwrap();
        assert_eq!(text(tree.get("a").unwrap()).as_deref(), Some("job"));
        assert_eq!(text(tree.get("b").unwrap()).as_deref(), Some("2"));

        // A job that fails stops the writer, as a failed checkpoint does.
        writer
            .submit_job(Box::new(|_, _| Err("the disk is gone".into())))
            .unwrap();
        assert_eq!(writer.wait_written(), Err("the disk is gone".to_string()));
        assert!(writer.submit(put("c", "3")).is_err());
    }
}
