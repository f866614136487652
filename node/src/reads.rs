//! Linearizable reads, batched: every read needs proof that this node still leads and must see
//! everything committed before it arrived. Concurrent reads share one proof: readers take a
//! ticket; one task produces proofs back to back, each covering every ticket taken before it
//! started. Proofs, cheapest first:
//!
//! 1. **Leader lease.** A voter that accepted AppendEntries from this leader votes for no other
//!    candidate, itself included, for its *vote promise* after receiving it (openraft's vote
//!    lease covers votes for others; this node forces elections only after that much silence,
//!    see [`Node::force_election`]). Every voter tells its promise in its facts
//!    ([`crate::peers`]). So while a majority of each configuration accepted requests *sent*
//!    less than the shortest promise ago (less 10% for clock rates), no other leader can
//!    exist: the read is served locally. While some voter's promise is unknown, there are no
//!    lease reads. A hand-over also gives the lease up first ([`ReadBarrier::release_lease`]).
//! 2. **Replication acknowledgements.**
//!    Replication traffic flows anyway under write load, and the transport
//!    records when followers accepted AppendEntries ([`AckClock`]): a majority of each
//!    configuration accepting requests sent after the read arrived proves leadership at that
//!    time (read index).
//! 3. **Heartbeats.** When no change set is queued or in flight (so no AppendEntries is
//!    coming), or no acceptance arrives within [`PIGGYBACK_WAIT`], the task asks openraft for
//!    an explicit round of heartbeats (`ensure_linearizable`) instead.
//!
//! The first two proofs are used only once the leader committed an entry of its own term:
//! before that its commit index may lag what earlier leaders committed (openraft's own
//! `ensure_linearizable` covers that case by waiting for the leader's first entry).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::ServerState;
use sonraft_client::v1::Consistency;
use sonraft_raft::transport::AckClock;
use tokio::sync::{Notify, watch};

use crate::Node;

/// How long a proof waits for replication traffic before sending heartbeats of its own.
pub const PIGGYBACK_WAIT: Duration = Duration::from_millis(3);

/// Why a linearizable read cannot be served here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("this node is not the leader")]
    NotLeader,
    #[error("{0}")]
    Unavailable(String),
}

/// Where a read of a given consistency is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAt {
    /// Here, from this node's applied image.
    Here,
    /// At the leader: forward the read.
    Leader,
}

impl Node {
    /// Makes this node fit to answer a read of consistency `c` (for a linearizable one on the
    /// leader: proves its leadership and applies what was committed), or says that the leader
    /// must answer it.
    pub async fn ready_to_read(&self, c: Consistency) -> Result<ReadAt, ReadError> {
        match c {
            Consistency::Local => Ok(ReadAt::Here),
            Consistency::Leader if self.is_leader() => Ok(ReadAt::Here),
            Consistency::Leader => Ok(ReadAt::Leader),
            // A follower sends the read on at once. Its read barrier would only find out,
            // through its Raft core, that it does not lead; and a follower's core may be busy
            // for hundreds of milliseconds (syncing its log on a loaded disk), which every read
            // through it then waited for (issue 19). The leader it reaches proves the read; if
            // this node has just become the leader, its metrics say so a moment later and the
            // read comes back to it.
            Consistency::Linearizable if !self.is_leader() => Ok(ReadAt::Leader),
            Consistency::Linearizable => match self.reads.wait().await {
                Ok(()) => Ok(ReadAt::Here),
                Err(ReadError::NotLeader) => Ok(ReadAt::Leader),
                Err(e) => Err(e),
            },
        }
    }
}

/// Shared state of the read proofs.
pub struct ReadBarrier {
    requested: AtomicU64,
    kick: Notify,
    done: watch::Sender<(u64, Result<(), ReadError>)>,
    acks: Arc<AckClock>,
    /// No lease reads before this instant (on the ack clock).
    lease_off_until: AtomicU64,
}

impl ReadBarrier {
    pub fn new(acks: Arc<AckClock>) -> Self {
        ReadBarrier {
            requested: AtomicU64::new(0),
            kick: Notify::new(),
            done: watch::channel((0, Ok(()))).0,
            acks,
            lease_off_until: AtomicU64::new(0),
        }
    }

    /// When followers accepted this node's AppendEntries.
    pub fn acks(&self) -> &AckClock {
        &self.acks
    }

    /// Stops serving reads from the lease for `period` (an election is about to be forced).
    pub fn release_lease(&self, period: Duration) {
        let until = self.acks.now_us() + period.as_micros() as u64;
        self.lease_off_until.fetch_max(until, Ordering::SeqCst);
        tracing::info!(off_ms = period.as_millis() as u64, "read lease released");
    }

    /// Returns once this node proved its leadership after this call began and applied
    /// everything committed at that point.
    pub async fn wait(&self) -> Result<(), ReadError> {
        let mut rx = self.done.subscribe();
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        self.kick.notify_one();
        match rx.wait_for(|(served, _)| *served >= ticket).await {
            Ok(v) => v.1.clone(),
            Err(_) => Err(ReadError::Unavailable("the node is stopping".into())),
        }
    }
}

/// Produces proofs for the life of the node.
pub async fn run(node: Arc<Node>, barrier: Arc<ReadBarrier>) {
    let mut served = 0;
    loop {
        let wanted = barrier.requested.load(Ordering::SeqCst);
        if wanted == served {
            barrier.kick.notified().await;
            continue;
        }
        // Every ticket up to `wanted` was taken before this instant.
        let started = barrier.acks.now_us();
        let mut trace = ProofTrace::default();
        let result = prove(&node, &barrier, started, &mut trace).await;
        trace.log(wanted - served, started, barrier.acks.now_us(), &result);
        served = wanted;
        let _previous = barrier.done.send_replace((served, result));
    }
}

/// What one proof did and waited for, for the debug log (`sonraft::node::reads=debug`).
#[derive(Default)]
struct ProofTrace {
    /// `not_leader`, `lease`, `replication` or `heartbeats`.
    by: &'static str,
    term: u64,
    /// Whether an entry of this leader's term was committed when the proof began.
    own_commit: bool,
    /// When the leadership confirmation was done and the wait for the state machine began
    /// (ack clock, microseconds).
    confirmed_us: u64,
    /// The log index the read waited to see applied.
    read_index: Option<u64>,
}

impl ProofTrace {
    fn log(&self, tickets: u64, started_us: u64, done_us: u64, result: &Result<(), ReadError>) {
        let ms = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1000.0;
        // Confirming and applying are told apart only when leadership was confirmed.
        let confirmed = (self.confirmed_us > 0).then_some(self.confirmed_us);
        tracing::debug!(
            tickets,
            by = self.by,
            term = self.term,
            own_commit = self.own_commit,
            took_ms = ms(started_us, done_us),
            confirm_ms = ?confirmed.map(|c| ms(started_us, c)),
            apply_ms = ?confirmed.map(|c| ms(c, done_us)),
            read_index = ?self.read_index,
            error = result.as_ref().err().map(|e| e.to_string()),
            "read proof"
        );
    }
}

async fn prove(
    node: &Node,
    barrier: &ReadBarrier,
    since: u64,
    trace: &mut ProofTrace,
) -> Result<(), ReadError> {
    let acks = &*barrier.acks;
    let state = raft_state(node).await?;
    trace.term = state.vote.leader_id().term;
    if state.role != ServerState::Leader {
        trace.by = "not_leader";
        return Err(ReadError::NotLeader);
    }
    trace.own_commit = state.committed_in_term().is_some();
    if let Some(committed) = state.committed_in_term() {
        let lease_held = lease_holds(
            acks.now_us(),
            barrier.lease_off_until.load(Ordering::SeqCst),
            lease_us(node, &state.voters),
            acks.quorum_acked_since(&state.vote, &state.configs, node.id),
        );
        if lease_held {
            metrics::counter!("sonraft_read_proofs_total", "by" => "lease").increment(1);
            (trace.by, trace.confirmed_us, trace.read_index) =
                ("lease", acks.now_us(), Some(committed));
            return wait_applied(node, committed).await;
        }
        // With change sets queued or in flight, AppendEntries will go out after `since` (the
        // entries themselves, or the commit index that follows them).
        if node.batcher.pending() > 0
            && let Some(proof) = prove_by_replication(node, acks, since, trace).await
        {
            return proof;
        }
    }
    metrics::counter!("sonraft_read_proofs_total", "by" => "heartbeats").increment(1);
    trace.by = "heartbeats";
    // openraft's `ensure_linearizable`, in its two steps so that the trace can tell them apart:
    // a round of heartbeats answered by a quorum, then the state machine reaching the read
    // index (this leader's first entry at least).
    //
    // openraft gives each heartbeat of the round one heartbeat interval to come back. On a busy
    // machine a live follower can miss that (a new leader's first rounds especially), and one
    // failed round says nothing about the quorum: rounds are tried again while this node leads,
    // for up to the maximum election timeout — after which a leader that really lost its quorum
    // knows it anyway (see `quorum`).
    let give_up = tokio::time::Instant::now() + Duration::from_millis(node.config.election_max_ms);
    loop {
        match node.raft.get_read_log_id().await {
            Ok((read_log_id, _applied)) => {
                trace.confirmed_us = acks.now_us();
                trace.read_index = read_log_id.map(|l| l.index);
                return match read_log_id {
                    Some(l) => wait_applied(node, l.index).await,
                    None => Ok(()),
                };
            }
            Err(e) if e.forward_to_leader::<sonraft_raft::NodeInfo>().is_some() => {
                return Err(ReadError::NotLeader);
            }
            Err(e) if tokio::time::Instant::now() >= give_up || node.lost_quorum().is_some() => {
                return Err(ReadError::Unavailable(format!(
                    "cannot confirm leadership with a quorum: {e}"
                )));
            }
            Err(e) => {
                metrics::counter!("sonraft_read_proof_rounds_failed_total").increment(1);
                tracing::debug!(error = %e, "a heartbeat round confirmed no quorum; trying again");
                tokio::time::sleep(Duration::from_millis(node.config.heartbeat_ms.max(1) / 2))
                    .await;
            }
        }
    }
}

/// Waits up to [`PIGGYBACK_WAIT`] for a majority to accept AppendEntries sent after `since`;
/// `None` when none came in time.
async fn prove_by_replication(
    node: &Node,
    acks: &AckClock,
    since: u64,
    trace: &mut ProofTrace,
) -> Option<Result<(), ReadError>> {
    let deadline = tokio::time::Instant::now() + PIGGYBACK_WAIT;
    loop {
        let changed = acks.changed().notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let state = match raft_state(node).await {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        if state.role != ServerState::Leader {
            return Some(Err(ReadError::NotLeader));
        }
        let committed = state.committed_in_term()?;
        if acks
            .quorum_acked_since(&state.vote, &state.configs, node.id)
            .is_some_and(|t| t >= since)
        {
            metrics::counter!("sonraft_read_proofs_total", "by" => "replication").increment(1);
            (trace.by, trace.confirmed_us, trace.read_index) =
                ("replication", acks.now_us(), Some(committed));
            return Some(wait_applied(node, committed).await);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        let _ = tokio::time::timeout_at(deadline, changed).await;
    }
}

/// Whether a read at `now` may be served from the lease: it was not released until after
/// `now`, every voter's promise is known (`lease`), and a quorum accepted requests this leader
/// sent less than `lease` before `now` (`quorum_acked_at`: when the oldest acceptance of the
/// quorum was sent). All on the ack clock, in microseconds.
fn lease_holds(now: u64, off_until: u64, lease: Option<u64>, quorum_acked_at: Option<u64>) -> bool {
    now >= off_until
        && lease
            .zip(quorum_acked_at)
            .is_some_and(|(lease, at)| at.saturating_add(lease) > now)
}

/// How long after a majority's acceptance this leader may serve reads from its lease: 90% of
/// the shortest vote promise among the other voters (clock rates differ by far less), and no
/// more than this node's minimum election timeout. `None` while a voter's promise is unknown.
fn lease_us(node: &Node, voters: &[u64]) -> Option<u64> {
    let promises = voters
        .iter()
        .filter(|v| **v != node.id)
        .map(|v| node.known_peers.promise_of(*v));
    lease_for(node.config.election_min_ms, promises).map(|d| d.as_micros() as u64)
}

/// 90% of the shortest of `promises`, and at most `election_min_ms`; `None` if one is unknown.
pub fn lease_for(
    election_min_ms: u64,
    promises: impl IntoIterator<Item = Option<Duration>>,
) -> Option<Duration> {
    let mut shortest = Duration::from_millis(election_min_ms);
    for p in promises {
        shortest = shortest.min(p?);
    }
    Some(shortest * 9 / 10)
}

/// What a proof needs from the Raft core.
struct LeaderState {
    role: ServerState,
    vote: openraft::Vote<u64>,
    committed: Option<openraft::LogId<u64>>,
    /// Every voter, of both configurations while a change is under way.
    voters: Vec<u64>,
    /// The voters of each configuration (two while a change is under way): a quorum is a
    /// majority of each.
    configs: Vec<Vec<u64>>,
}

impl LeaderState {
    /// The commit index, if an entry of the current term is committed (only then does it cover
    /// everything earlier leaders committed).
    fn committed_in_term(&self) -> Option<u64> {
        self.committed
            .filter(|l| l.leader_id.term == self.vote.leader_id().term)
            .map(|l| l.index)
    }
}

/// The leader's state as its Raft core sees it now: role, vote, commit point and voters.
async fn raft_state(node: &Node) -> Result<LeaderState, ReadError> {
    node.raft
        .with_raft_state(|s| LeaderState {
            role: s.server_state,
            vote: *s.vote_ref(),
            committed: s.committed,
            voters: s
                .membership_state
                .effective()
                .membership()
                .voter_ids()
                .collect(),
            configs: s
                .membership_state
                .effective()
                .membership()
                .get_joint_config()
                .iter()
                .map(|c| c.iter().copied().collect())
                .collect(),
        })
        .await
        .map_err(|e| ReadError::Unavailable(e.to_string()))
}

/// Waits until the state machine applied `committed` (read after the read arrived, so it
/// covers every write acknowledged before).
async fn wait_applied(node: &Node, committed: u64) -> Result<(), ReadError> {
    node.raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(committed), "read index")
        .await
        .map(|_| ())
        .map_err(|e| ReadError::Unavailable(format!("not applied in time: {e}")))
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, Vote};

    use super::*;

    const MS: u64 = 1000;

    #[test]
    fn the_lease_holds_only_within_its_length_after_the_quorum_accepted() {
        let lease = Some(135 * MS);
        assert!(lease_holds(1_000 * MS, 0, lease, Some(900 * MS)));
        assert!(lease_holds(1_034 * MS, 0, lease, Some(900 * MS)));
        // At and after the end of the lease: no.
        assert!(!lease_holds(1_035 * MS, 0, lease, Some(900 * MS)));
        assert!(!lease_holds(5_000 * MS, 0, lease, Some(900 * MS)));
        // No quorum acceptance yet, or a voter's promise unknown: no.
        assert!(!lease_holds(1_000 * MS, 0, lease, None));
        assert!(!lease_holds(1_000 * MS, 0, None, Some(999 * MS)));
    }

    #[test]
    fn a_released_lease_serves_nothing_until_the_release_ends() {
        let lease = Some(135 * MS);
        // Released until 1 100 ms: a fresh acceptance does not bring it back earlier.
        assert!(!lease_holds(1_000 * MS, 1_100 * MS, lease, Some(999 * MS)));
        assert!(!lease_holds(
            1_099 * MS,
            1_100 * MS,
            lease,
            Some(1_090 * MS)
        ));
        assert!(lease_holds(1_100 * MS, 1_100 * MS, lease, Some(1_090 * MS)));
    }

    #[test]
    fn the_lease_is_ninety_percent_of_the_shortest_promise_and_none_while_one_is_unknown() {
        let ms = Duration::from_millis;
        assert_eq!(lease_for(150, [Some(ms(100)), Some(ms(300))]), Some(ms(90)));
        // Never longer than this node's own minimum election timeout.
        assert_eq!(
            lease_for(150, [Some(ms(1000)), Some(ms(2000))]),
            Some(ms(135))
        );
        assert_eq!(lease_for(150, [Some(ms(100)), None]), None);
        assert_eq!(lease_for(150, []), Some(ms(135)));
    }

    fn state(term: u64, committed: Option<(u64, u64)>) -> LeaderState {
        LeaderState {
            role: ServerState::Leader,
            vote: Vote::new_committed(term, 1),
            committed: committed.map(|(t, i)| LogId::new(CommittedLeaderId::new(t, 1), i)),
            voters: vec![1, 2, 3],
            configs: vec![vec![1, 2, 3]],
        }
    }

    #[test]
    fn only_a_commit_of_the_leaders_own_term_is_a_read_index() {
        // Right after an election the commit index may be an earlier leader's, and lag what
        // that leader committed: no read index from it (Raft's read-only rule, §6.4).
        assert_eq!(state(5, Some((4, 10))).committed_in_term(), None);
        assert_eq!(state(5, None).committed_in_term(), None);
        assert_eq!(state(5, Some((5, 11))).committed_in_term(), Some(11));
    }
}
