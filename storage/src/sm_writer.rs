//! Write-behind of the state machine to sled, in checkpoints.
//!
//! The state machine's answer to openraft is the in-memory image; sled's copy (tree `sm`) is
//! a checkpoint for restarts, and openraft re-applies the committed log after `m/applied`
//! anyway: the durable Raft log is the write-ahead log. So `apply` hands each batch's key
//! operations to this writer and returns. One thread gathers them for up to [`CHECKPOINT`]
//! (later writes of a key replace earlier ones; a waiting reader cuts the wait short) and
//! writes the result as one checkpoint:
//!
//! 1. insert [`TORN`];
//! 2. insert or remove every key gathered, `m/applied` among them;
//! 3. remove [`TORN`].
//!
//! These are plain sled operations, not an `apply_batch`: sled guards every batch with one
//! process-wide lock that also stops Raft log appends and reads while the batch is written, so
//! a batch of a few hundred keys stalled the log on every node. Crash safety comes instead from
//! sled recovering a prefix of the operations (in the order one thread made them): if any key
//! of a checkpoint survived a crash, so did the `TORN` insert before it, and `TORN` is absent
//! only when the whole checkpoint survived. A store found with `TORN` set is rebuilt by
//! [`crate::state_machine`] from the newest snapshot (or from empty) and the log.
//!
//! Readers of sled (history, snapshots) first wait until everything submitted is written.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Present in tree `sm` while a checkpoint is being written.
pub(crate) const TORN: &[u8] = b"m/torn";

/// Key operations of one applied batch, in order (`None`: remove).
#[derive(Default, Debug)]
pub(crate) struct Ops(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Ops {
    pub(crate) fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.0
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }
    pub(crate) fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.0.push((key.as_ref().to_vec(), None));
    }
}

struct Progress {
    written: Mutex<u64>,
    advanced: Condvar,
    failure: Mutex<Option<String>>,
}

/// Longest time applied changes wait before they are written (bounds how much of the log a
/// restart re-applies).
pub(crate) const CHECKPOINT: Duration = Duration::from_millis(100);

enum Msg {
    Ops(u64, Ops),
    /// A reader waits: write what is queued now.
    Kick,
}

/// The write-behind thread and its queue.
pub(crate) struct SmWriter {
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    submitted: AtomicU64,
    progress: Arc<Progress>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Writes `pending` as one checkpoint (see the module docs).
fn checkpoint(
    tree: &sled::Tree,
    pending: HashMap<Vec<u8>, Option<Vec<u8>>>,
) -> Result<(), sled::Error> {
    tree.insert(TORN, &[])?;
    for (k, v) in pending {
        match v {
            Some(v) => tree.insert(k, v)?,
            None => tree.remove(k)?,
        };
    }
    tree.remove(TORN)?;
    Ok(())
}

impl SmWriter {
    pub(crate) fn start(tree: sled::Tree) -> std::io::Result<SmWriter> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let progress = Arc::new(Progress {
            written: Mutex::new(0),
            advanced: Condvar::new(),
            failure: Mutex::new(None),
        });
        let p = progress.clone();
        let thread = std::thread::Builder::new()
            .name("sonraft-sm-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut pending = HashMap::new();
                    let mut seq = None;
                    let mut take = |m: Msg, pending: &mut HashMap<_, _>| match m {
                        Msg::Ops(s, ops) => {
                            pending.extend(ops.0);
                            seq = Some(s);
                            false
                        }
                        Msg::Kick => true,
                    };
                    let mut now = take(first, &mut pending);
                    let until = Instant::now() + CHECKPOINT;
                    while !now {
                        let left = until.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(m) => now = take(m, &mut pending),
                            Err(_) => break,
                        }
                    }
                    for m in rx.try_iter() {
                        take(m, &mut pending);
                    }
                    let Some(seq) = seq else { continue };
                    if let Err(e) = checkpoint(&tree, pending) {
                        tracing::error!(error = %e, "the state machine could not be written to sled");
                        *p.failure.lock().unwrap_or_else(|x| x.into_inner()) = Some(e.to_string());
                    }
                    *p.written.lock().unwrap_or_else(|x| x.into_inner()) = seq;
                    p.advanced.notify_all();
                }
            })?;
        Ok(SmWriter {
            tx: Mutex::new(Some(tx)),
            submitted: AtomicU64::new(0),
            progress,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues one batch of operations.
    pub(crate) fn submit(&self, ops: Ops) -> Result<(), String> {
        if let Some(f) = self.failure() {
            return Err(f);
        }
        let tx = self.tx.lock().unwrap_or_else(|x| x.into_inner());
        let seq = self.submitted.fetch_add(1, Ordering::SeqCst) + 1;
        tx.as_ref()
            .ok_or("the state machine writer has stopped")?
            .send(Msg::Ops(seq, ops))
            .map_err(|_| "the state machine writer has stopped".to_string())
    }

    /// Blocks until everything submitted so far is in sled.
    pub(crate) fn wait_written(&self) {
        let target = self.submitted.load(Ordering::SeqCst);
        if let Some(tx) = self.tx.lock().unwrap_or_else(|x| x.into_inner()).as_ref() {
            let _ = tx.send(Msg::Kick);
        }
        let mut written = self
            .progress
            .written
            .lock()
            .unwrap_or_else(|x| x.into_inner());
        while *written < target {
            written = self
                .progress
                .advanced
                .wait(written)
                .unwrap_or_else(|x| x.into_inner());
        }
    }

    /// The first write error, if any (the state machine stops applying after it).
    pub(crate) fn failure(&self) -> Option<String> {
        self.progress
            .failure
            .lock()
            .unwrap_or_else(|x| x.into_inner())
            .clone()
    }
}

impl Drop for SmWriter {
    fn drop(&mut self) {
        drop(self.tx.lock().unwrap_or_else(|x| x.into_inner()).take());
        if let Some(t) = self.thread.lock().unwrap_or_else(|x| x.into_inner()).take() {
            let _ = t.join();
        }
    }
}
