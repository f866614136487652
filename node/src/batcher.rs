//! Group commit of change sets: concurrent proposals on the leader are collected into one log
//! entry (`Command::ChangeSets`), so that one append, one replication round, one fsync per node
//! and one apply serve many clients. Up to [`IN_FLIGHT`] entries are in flight at once; while
//! they are, new proposals queue and form the next entry.
//!
//! `ChangeSets` is command format 2: until every voter advertises format 2 (the cluster's
//! effective format), the batcher commits each change set as its own format-1 entry instead, so
//! a cluster in the middle of a rolling upgrade from 0.1.0 keeps working.

use std::future::Future;
use std::sync::Arc;

use sonraft_raft::changeset::{ChangeSet, Outcome};
use sonraft_raft::command::{Command, Response};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::Node;
use crate::propose::ProposeError;

/// Most change sets in one entry.
pub const MAX_BATCH: usize = sonraft_raft::command::MAX_CHANGE_SETS_PER_ENTRY;
/// Entries in flight at once.
pub const IN_FLIGHT: usize = 1;

type Reply = oneshot::Sender<Result<(u64, Outcome), ProposeError>>;

/// What the batcher needs of its node: the cluster's effective command format now, and a way
/// to commit one command and learn its index and response.
pub trait Committer: Send + Sync + 'static {
    fn effective_format(&self) -> u16;
    fn commit(
        &self,
        command: Command,
    ) -> impl Future<Output = Result<(u64, Response), ProposeError>> + Send;
}

impl Committer for Node {
    fn effective_format(&self) -> u16 {
        self.store().effective_format(&self.voters())
    }

    async fn commit(&self, command: Command) -> Result<(u64, Response), ProposeError> {
        self.propose(&command).await
    }
}

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
                .map_err(|_| ProposeError::ShuttingDown)
                .and_then(|r| r),
            Err(_) => Err(ProposeError::ShuttingDown),
        };
        self.pending
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        result
    }
}

/// Runs the batcher of `node` until the node stops.
pub async fn run<C: Committer>(node: Arc<C>, mut rx: mpsc::Receiver<(ChangeSet, Reply)>) {
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

async fn commit<C: Committer>(node: Arc<C>, batch: Vec<(ChangeSet, Reply)>) {
    // A change set of a format not every voter reads yet (a function of a newer release,
    // during a rolling upgrade) is refused on its own: in a batch it would take the whole
    // entry's format, and the batch's other change sets would fail with it.
    let effective = node.effective_format();
    let (batch, too_new): (Vec<_>, Vec<_>) = batch.into_iter().partition(|(cs, _)| {
        let format = sonraft_raft::command::proposed_format(cs);
        format <= 1 || format <= effective
    });
    for (cs, reply) in too_new {
        let format = sonraft_raft::command::proposed_format(&cs);
        let _ = reply.send(Err(ProposeError::FormatTooNew { format, effective }));
    }
    if batch.is_empty() {
        return;
    }
    if batch.len() == 1 || effective < 2 {
        // One entry per change set (format 1), still concurrently.
        let mut set = tokio::task::JoinSet::new();
        for (cs, reply) in batch {
            let command = Command::ChangeSet(cs);
            let n = node.clone();
            set.spawn(async move {
                let r = match n.commit(command).await {
                    Ok((index, Response::ChangeSet(o))) => Ok((index, o)),
                    Ok((_, other)) => Err(ProposeError::UnexpectedAnswer(format!(
                        "unexpected answer {other:?}"
                    ))),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            });
        }
        while set.join_next().await.is_some() {}
        return;
    }
    let (sets, replies): (Vec<ChangeSet>, Vec<Reply>) = batch.into_iter().unzip();
    match node.commit(Command::ChangeSets(sets)).await {
        Ok((index, Response::ChangeSets(outcomes))) if outcomes.len() == replies.len() => {
            for (reply, o) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok((index, o)));
            }
        }
        Ok((_, other)) => {
            for reply in replies {
                let _ = reply.send(Err(ProposeError::UnexpectedAnswer(format!(
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use sonraft_raft::changeset::{Function, Origin};
    use tokio::sync::Notify;

    use super::*;

    /// How the fake node answers a command committed at an index.
    type Answer = fn(&Command, u64) -> Result<(u64, Response), ProposeError>;

    /// A node that records what it is asked to commit; the first commit waits for `release`, so
    /// that proposals made meanwhile queue up behind it.
    struct FakeNode {
        format: u16,
        committed: Mutex<Vec<Command>>,
        release: Notify,
        hold_first: bool,
        answer: Answer,
    }

    impl Committer for FakeNode {
        fn effective_format(&self) -> u16 {
            self.format
        }

        async fn commit(&self, command: Command) -> Result<(u64, Response), ProposeError> {
            let index = {
                let mut c = self.committed.lock().unwrap();
                c.push(command.clone());
                c.len() as u64
            };
            if self.hold_first && index == 1 {
                self.release.notified().await;
            }
            (self.answer)(&command, index)
        }
    }

    /// Every change set applied, at the entry's index.
    fn apply_all(command: &Command, index: u64) -> Result<(u64, Response), ProposeError> {
        let applied = || Outcome::Applied {
            index,
            versions: Default::default(),
        };
        Ok(match command {
            Command::ChangeSet(_) => (index, Response::ChangeSet(applied())),
            Command::ChangeSets(sets) => (
                index,
                Response::ChangeSets(sets.iter().map(|_| applied()).collect()),
            ),
            _ => (index, Response::None),
        })
    }

    fn change_set(reason: &str) -> ChangeSet {
        ChangeSet {
            origin: Origin {
                node: 1,
                function: Function::Operator,
            },
            reason: reason.into(),
            read_set: vec![],
            writes: vec![],
            proposed_at_ms: 0,
        }
    }

    fn start(format: u16, hold_first: bool, answer: Answer) -> (Arc<FakeNode>, Batcher) {
        let node = Arc::new(FakeNode {
            format,
            committed: Mutex::default(),
            release: Notify::new(),
            hold_first,
            answer,
        });
        let (batcher, rx) = Batcher::new();
        tokio::spawn(run(node.clone(), rx));
        (node, batcher)
    }

    /// Proposes `n` change sets (`r0`..) behind a first one held in flight, then releases it;
    /// returns every answer, the first's last.
    async fn behind_a_held_entry(
        node: &Arc<FakeNode>,
        batcher: &Batcher,
        n: usize,
    ) -> Vec<Result<(u64, Outcome), ProposeError>> {
        let first = tokio::spawn({
            let b = batcher.clone();
            async move { b.propose(change_set("first")).await }
        });
        while node.committed.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut rest = Vec::new();
        for i in 0..n {
            let b = batcher.clone();
            rest.push(tokio::spawn(async move {
                b.propose(change_set(&format!("r{i}"))).await
            }));
        }
        while batcher.pending() < n + 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        node.release.notify_one();
        let mut answers = Vec::new();
        for r in rest {
            answers.push(r.await.unwrap());
        }
        answers.push(first.await.unwrap());
        answers
    }

    #[tokio::test]
    async fn proposals_made_while_an_entry_is_in_flight_form_the_next_entry_in_order() {
        let (node, batcher) = start(2, true, apply_all);
        let answers = behind_a_held_entry(&node, &batcher, 5).await;
        let committed = node.committed.lock().unwrap().clone();
        assert_eq!(
            committed.len(),
            2,
            "one held entry, then one batch: {committed:?}"
        );
        let Command::ChangeSets(sets) = &committed[1] else {
            panic!("the second entry is not a batch: {:?}", committed[1]);
        };
        let reasons: Vec<&str> = sets.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(reasons, ["r0", "r1", "r2", "r3", "r4"]);
        for a in &answers[..5] {
            assert!(
                matches!(a, Ok((2, Outcome::Applied { index: 2, .. }))),
                "{a:?}"
            );
        }
        assert!(matches!(answers[5], Ok((1, _))), "{:?}", answers[5]);
        assert_eq!(batcher.pending(), 0);
    }

    #[tokio::test]
    async fn until_every_voter_reads_format_2_each_change_set_is_its_own_entry() {
        let (node, batcher) = start(1, true, apply_all);
        let answers = behind_a_held_entry(&node, &batcher, 3).await;
        let committed = node.committed.lock().unwrap().clone();
        assert_eq!(committed.len(), 4, "{committed:?}");
        assert!(
            committed.iter().all(|c| matches!(c, Command::ChangeSet(_))),
            "a format-2 entry before the cluster reads it: {committed:?}"
        );
        assert!(answers.iter().all(|a| a.is_ok()), "{answers:?}");
    }

    #[tokio::test]
    async fn a_change_set_of_a_format_the_cluster_does_not_read_yet_fails_alone() {
        /// Refuses a command newer than format 6, as `Node::propose` does.
        fn format_6(command: &Command, index: u64) -> Result<(u64, Response), ProposeError> {
            match command.format() {
                f if f > 6 => Err(ProposeError::FormatTooNew {
                    format: f,
                    effective: 6,
                }),
                _ => apply_all(command, index),
            }
        }
        let (node, batcher) = start(6, true, format_6);
        let first = tokio::spawn({
            let b = batcher.clone();
            async move { b.propose(change_set("first")).await }
        });
        while node.committed.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut queued = Vec::new();
        for i in 0..4 {
            let mut cs = change_set(&format!("r{i}"));
            if i == 2 {
                cs.origin.function = Function::AnrAdd;
            }
            let b = batcher.clone();
            queued.push(tokio::spawn(async move { b.propose(cs).await }));
        }
        while batcher.pending() < 5 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        node.release.notify_one();
        let mut answers = Vec::new();
        for q in queued {
            answers.push(q.await.unwrap());
        }
        assert!(first.await.unwrap().is_ok());
        for (i, a) in answers.iter().enumerate() {
            if i == 2 {
                assert!(
                    matches!(a, Err(ProposeError::FormatTooNew { format: 7, .. })),
                    "{a:?}"
                );
            } else {
                assert!(a.is_ok(), "r{i} failed with the newer change set: {a:?}");
            }
        }
    }

    #[tokio::test]
    async fn an_entry_that_fails_fails_every_change_set_in_it() {
        fn fail_batches(command: &Command, index: u64) -> Result<(u64, Response), ProposeError> {
            match command {
                Command::ChangeSets(_) => Err(ProposeError::OutcomeUnknown(Duration::from_secs(2))),
                other => apply_all(other, index),
            }
        }
        let (node, batcher) = start(2, true, fail_batches);
        let answers = behind_a_held_entry(&node, &batcher, 4).await;
        for a in &answers[..4] {
            assert!(matches!(a, Err(ProposeError::OutcomeUnknown(_))), "{a:?}");
        }
        assert!(answers[4].is_ok());
    }

    #[tokio::test]
    async fn an_answer_that_does_not_match_the_batch_is_an_error_for_each_not_a_guess() {
        fn one_short(command: &Command, index: u64) -> Result<(u64, Response), ProposeError> {
            match command {
                Command::ChangeSets(sets) => Ok((
                    index,
                    Response::ChangeSets(
                        sets.iter()
                            .skip(1)
                            .map(|_| Outcome::Rejected { reason: "x".into() })
                            .collect(),
                    ),
                )),
                other => apply_all(other, index),
            }
        }
        let (node, batcher) = start(2, true, one_short);
        let answers = behind_a_held_entry(&node, &batcher, 3).await;
        for a in &answers[..3] {
            assert!(matches!(a, Err(ProposeError::UnexpectedAnswer(_))), "{a:?}");
        }
    }
}
