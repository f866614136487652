//! Group commit of change sets: concurrent proposals on the leader are collected into one log
//! entry (`Command::ChangeSets`), so that one append, one replication round, one fsync per node
//! and one apply serve many clients. Up to [`IN_FLIGHT`] entries are in flight at once; while
//! they are, new proposals queue and form the next entry.
//!
//! `ChangeSets` is command format 2: until every voter advertises format 2 (the cluster's
//! effective format), the batcher commits each change set as its own format-1 entry instead, so
//! a cluster in the middle of a rolling upgrade from 0.1.0 keeps working.

use std::sync::Arc;

use sonraft_raft::changeset::{ChangeSet, Outcome};
use sonraft_raft::command::{Command, Response};
use sonraft_storage::read;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::Node;
use super::propose::ProposeError;

/// Most change sets in one entry.
pub const MAX_BATCH: usize = sonraft_raft::command::MAX_CHANGE_SETS_PER_ENTRY;
/// Entries in flight at once.
pub const IN_FLIGHT: usize = 1;

type Reply = oneshot::Sender<Result<(u64, Outcome), ProposeError>>;

/// The queue into the batcher.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<(ChangeSet, Reply)>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl Batcher {
    /// A batcher and the receiving end its task runs on.
    pub fn new() -> (Batcher, mpsc::Receiver<(ChangeSet, Reply)>) {
        let (tx, rx) = mpsc::channel(16 * MAX_BATCH);
        (
            Batcher {
                tx,
                pending: Arc::default(),
            },
            rx,
        )
    }

    /// Change sets queued or in flight: while there are, replication traffic will follow.
    pub fn pending(&self) -> usize {
        self.pending.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commits `cs` with others; returns its log index and outcome.
    pub async fn propose(&self, cs: ChangeSet) -> Result<(u64, Outcome), ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sent = self.tx.send((cs, tx)).await;
        let result = match sent {
            Ok(()) => rx
                .await
                .map_err(|_| ProposeError::Raft("the node is stopping".into()))
                .and_then(|r| r),
            Err(_) => Err(ProposeError::Raft("the node is stopping".into())),
        };
        self.pending
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        result
    }
}

/// Runs the batcher of `node` until the node stops.
pub async fn run(node: Arc<Node>, mut rx: mpsc::Receiver<(ChangeSet, Reply)>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        // Whatever queued while we waited for a slot joins this entry.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        metrics::histogram!("sonraft_batch_change_sets").record(batch.len() as f64);
        let node = node.clone();
        tokio::spawn(async move {
            commit(node, batch).await;
            drop(permit);
        });
    }
}

async fn commit(node: Arc<Node>, batch: Vec<(ChangeSet, Reply)>) {
    let voters = node.voters();
    let effective = read(node.store.state()).image.effective_format(voters);
    if batch.len() == 1 || effective < 2 {
        // One entry per change set (format 1), still concurrently.
        let mut set = tokio::task::JoinSet::new();
        for (cs, reply) in batch {
            let command = Command::ChangeSet(cs);
            let n = node.clone();
            set.spawn(async move {
                let r = match n.propose(&command).await {
                    Ok((index, Response::ChangeSet(o))) => Ok((index, o)),
                    Ok((_, other)) => {
                        Err(ProposeError::Raft(format!("unexpected answer {other:?}")))
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            });
        }
        while set.join_next().await.is_some() {}
        return;
    }
    let (sets, replies): (Vec<ChangeSet>, Vec<Reply>) = batch.into_iter().unzip();
    match node.propose(&Command::ChangeSets(sets)).await {
        Ok((index, Response::ChangeSets(outcomes))) if outcomes.len() == replies.len() => {
            for (reply, o) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok((index, o)));
            }
        }
        Ok((_, other)) => {
            for reply in replies {
                let _ = reply.send(Err(ProposeError::Raft(format!(
                    "unexpected answer {other:?}"
                ))));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
