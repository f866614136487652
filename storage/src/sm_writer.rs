//! Write-behind of the state machine to sled.
//!
//! The state machine's answer to openraft is the in-memory image; persisting it is only for
//! restarts, and openraft re-applies the committed log after `m/applied` anyway. So `apply`
//! hands each batch's key operations to this writer and returns; one thread applies them to
//! sled in order, merging whatever queued up into one atomic `apply_batch` (later writes of a
//! key win). sled then always holds the state after some prefix of applied batches, with the
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

/// The write-behind thread and its queue.
pub(crate) struct SmWriter {
    tx: Mutex<Option<mpsc::Sender<(u64, Ops)>>>,
    submitted: AtomicU64,
    progress: Arc<Progress>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SmWriter {
    pub(crate) fn start(tree: sled::Tree) -> std::io::Result<SmWriter> {
        let (tx, rx) = mpsc::channel::<(u64, Ops)>();
        let progress = Arc::new(Progress {
            written: Mutex::new(0),
            advanced: Condvar::new(),
            failure: Mutex::new(None),
        });
        let p = progress.clone();
        let thread = std::thread::Builder::new().name("sonraft-sm-writer".into()).spawn(move || {
            while let Ok((mut seq, ops)) = rx.recv() {
                let mut batch = sled::Batch::default();
                ops.into_batch(&mut batch);
                for (s, more) in rx.try_iter() {
                    more.into_batch(&mut batch);
                    seq = s;
                }
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
            .send((seq, ops))
            .map_err(|_| "the state machine writer has stopped".to_string())
    }

    /// Blocks until everything submitted so far is in sled.
    pub(crate) fn wait_written(&self) {
        let target = self.submitted.load(Ordering::SeqCst);
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
