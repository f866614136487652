//! Write-behind of the state machine to sled.
//!
//! The state machine's answer to openraft is the in-memory image; persisting it is only for
//! restarts, and openraft re-applies the committed log after `m/applied` anyway. So `apply`
//! hands each batch's key operations to this writer and returns; one thread applies them to
//! sled in order, merging whatever queued up within [`LINGER`] into one atomic `apply_batch`
//! (later writes of a key win; a waiting reader cuts the linger short). sled then always holds the state after some prefix of applied batches, with the
//! matching `m/applied`. Readers of sled (history, snapshots) first wait until everything
//! submitted is written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};

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
    pub(crate) fn into_batch(self, batch: &mut sled::Batch) {
        for (k, v) in self.0 {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
    }
}

struct Progress {
    written: Mutex<u64>,
    advanced: Condvar,
    failure: Mutex<Option<String>>,
}

/// How long the writer gathers applied batches into one sled batch.
const LINGER: std::time::Duration = std::time::Duration::from_millis(20);

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

impl SmWriter {
    pub(crate) fn start(tree: sled::Tree) -> std::io::Result<SmWriter> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let progress = Arc::new(Progress {
            written: Mutex::new(0),
            advanced: Condvar::new(),
            failure: Mutex::new(None),
        });
        let p = progress.clone();
        let thread = std::thread::Builder::new().name("sonraft-sm-writer".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = sled::Batch::default();
                let mut seq = None;
                let mut take = |m: Msg, batch: &mut sled::Batch| match m {
                    Msg::Ops(s, ops) => {
                        ops.into_batch(batch);
                        seq = Some(s);
                        false
                    }
                    Msg::Kick => true,
                };
                let mut now = take(first, &mut batch);
                // Linger: each sled batch costs disk waits of its own (sled writes it between
                // IO buffers), so gather what the next LINGER brings, unless a reader waits.
                let until = std::time::Instant::now() + LINGER;
                while !now {
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(m) => now = take(m, &mut batch),
                        Err(_) => break,
                    }
                }
                for m in rx.try_iter() {
                    take(m, &mut batch);
                }
                let Some(seq) = seq else { continue };
                if let Err(e) = tree.apply_batch(batch) {
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
