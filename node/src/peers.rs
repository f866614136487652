//! This node among its peers: what it answers them on `POST /peer` (its facts, commands to
//! commit, campaigns to run) and what it last learned of each of them.
//!
//! Every node asks every other member for its [`NodeFacts`] each [`FACTS_EVERY`]. The answers
//! serve three purposes:
//! - a leader's read lease may not outlast the vote promise of any voter (see
//!   [`crate::reads`]); a voter whose facts are unknown disables lease reads;
//! - membership changes refuse a node that does not answer, answers with another id, or runs
//!   other election timing (see [`crate::membership`]); `/cluster/health` reports who answers;
//! - a node that a newer membership no longer lists learns that it was removed, and stops.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sonraft_raft::NodeId;
use sonraft_raft::codec;
use sonraft_raft::command::{COMMAND_FORMAT, Command};
use sonraft_raft::transport::{NodeFacts, PeerReply, PeerRpc, PeerService, SubmitError};

use crate::Node;
use crate::propose::ProposeError;

/// How often a node asks each peer for its facts.
pub const FACTS_EVERY: Duration = Duration::from_secs(1);

/// A node forces no election during its first this long: every leader has fetched its facts
/// (its vote promise, which may differ from its predecessor's) by then.
pub const WARM_UP: Duration = Duration::from_secs(3);

/// What this node last learned of one peer.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The last facts it answered, and when.
    pub facts: Option<(NodeFacts, Instant)>,
    /// Why the last request failed, if it did.
    pub error: Option<String>,
    /// When it was last asked.
    pub asked: Instant,
}

impl Seen {
    /// Whether the last request was answered.
    pub fn answers(&self) -> bool {
        self.error.is_none() && self.facts.is_some()
    }
}

/// The facts of the other members, as last fetched.
#[derive(Default)]
pub struct KnownPeers {
    seen: Mutex<BTreeMap<NodeId, Seen>>,
}

impl KnownPeers {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is known of `id`.
    pub fn get(&self, id: NodeId) -> Option<Seen> {
        self.lock().get(&id).cloned()
    }

    /// The vote promise of `id`, if it answered in the last few rounds.
    pub fn promise_of(&self, id: NodeId) -> Option<Duration> {
        let seen = self.lock();
        let (facts, at) = seen.get(&id)?.facts.as_ref()?;
        (at.elapsed() < 5 * FACTS_EVERY).then(|| Duration::from_millis(facts.vote_promise_ms))
    }

    fn record(&self, id: NodeId, result: Result<NodeFacts, String>) {
        let mut seen = self.lock();
        let now = Instant::now();
        let entry = seen.entry(id).or_insert(Seen {
            facts: None,
            error: None,
            asked: now,
        });
        entry.asked = now;
        match result {
            Ok(f) => {
                entry.facts = Some((f, now));
                entry.error = None;
            }
            Err(e) => entry.error = Some(e),
        }
    }

    fn retain(&self, members: &[NodeId]) {
        self.lock().retain(|id, _| members.contains(id));
    }
}

impl Node {
    /// After accepting an AppendEntries from a leader, this node votes for no other candidate
    /// (itself included) for at least this long: openraft refuses votes for the maximum
    /// election timeout, and this node forces an election (watchdog, hand-over) only after
    /// this much silence from the leader ([`Node::force_election`]).
    pub fn vote_promise(&self) -> Duration {
        vote_promise(self.config.heartbeat_ms, self.config.election_max_ms)
    }

    /// This node's facts, as peers get them.
    pub fn facts(&self) -> NodeFacts {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        NodeFacts {
            id: self.id,
            release: crate::RELEASE.to_string(),
            heartbeat_ms: self.config.heartbeat_ms,
            election_min_ms: self.config.election_min_ms,
            election_max_ms: self.config.election_max_ms,
            vote_promise_ms: self.vote_promise().as_millis() as u64,
            membership_index: m.membership_config.log_id().map_or(0, |l| l.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    /// Asks node `id` at `raft_addr` for its facts (a node with another id there refuses).
    pub async fn ask_facts(
        &self,
        id: NodeId,
        raft_addr: &str,
        within: Duration,
    ) -> Result<NodeFacts, String> {
        match self
            .peer_client
            .call(Some(id), raft_addr, &PeerRpc::Facts, within)
            .await
        {
            Ok(PeerReply::Facts(f)) => Ok(f),
            Ok(other) => Err(format!("answered {other:?} to a facts request")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether this node may force an election now: only once the vote promise it made to the
    /// leader it last heard from has run out, so that no leader can still be serving reads
    /// from a lease that counted on it. On its own initiative (`asked_by_leader` false, the
    /// watchdog) also not while warming up after a start, as the leader may not know its
    /// promise yet; a leader handing over has given its lease up before it asks.
    pub fn may_force_election(&self, asked_by_leader: bool) -> bool {
        (asked_by_leader || self.started.elapsed() >= WARM_UP)
            && self.contact.silence() >= self.vote_promise()
    }

    /// Calls `trigger().elect()` if [`Node::may_force_election`]; returns whether it did.
    pub async fn force_election(&self, asked_by_leader: bool) -> bool {
        if !self.may_force_election(asked_by_leader) {
            return false;
        }
        match self.raft.trigger().elect().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start an election");
                false
            }
        }
    }
}

/// The vote promise of a node with this timing: openraft refuses votes for others for the
/// maximum election timeout after an AppendEntries, and the watchdog forces an election after
/// [`WATCHDOG_SILENCE_HEARTBEATS`] heartbeats of silence at the earliest.
pub fn vote_promise(heartbeat_ms: u64, election_max_ms: u64) -> Duration {
    Duration::from_millis(election_max_ms.min(WATCHDOG_SILENCE_HEARTBEATS * heartbeat_ms))
}

/// The fewest heartbeat intervals of silence after which the watchdog forces an election.
pub const WATCHDOG_SILENCE_HEARTBEATS: u64 = 2;

impl Node {
    /// Asks again, now, every member whose last facts request failed (a health check must not
    /// report a member that just came back as unreachable).
    pub async fn recheck_unanswered(&self, within: Duration) {
        let m = self.raft.metrics().borrow().clone();
        let stale: Vec<(NodeId, String)> = m
            .membership_config
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .filter(|(id, _)| self.known_peers.get(**id).is_none_or(|s| !s.answers()))
            .map(|(id, info)| (*id, info.raft_addr.clone()))
            .collect();
        let asks = stale.into_iter().map(|(id, addr)| async move {
            let r = self.ask_facts(id, &addr, within).await;
            self.known_peers.record(id, r);
        });
        let mut all = std::pin::pin!(futures_join_ordered(asks));
        (&mut all).await;
    }
}

/// Runs the futures concurrently on this task, until all are done.
async fn futures_join_ordered<F: Future<Output = ()>>(futs: impl IntoIterator<Item = F>) {
    let mut pending: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// Answers peer requests for a node.
pub struct PeerHandler(pub Arc<Node>);

impl PeerService for PeerHandler {
    fn handle(&self, rpc: PeerRpc) -> Pin<Box<dyn Future<Output = PeerReply> + Send + '_>> {
        Box::pin(async move {
            let node = &self.0;
            match rpc {
                PeerRpc::Facts => PeerReply::Facts(node.facts()),
                PeerRpc::Submit { format, command } => {
                    if format > COMMAND_FORMAT {
                        return PeerReply::Refused(format!(
                            "command format {format} is newer than this node understands ({COMMAND_FORMAT}); upgrade it"
                        ));
                    }
                    let command: Command = match codec::decode(&command) {
                        Ok(c) => c,
                        Err(e) => return PeerReply::Refused(format!("undecodable command: {e}")),
                    };
                    PeerReply::Submitted(node.propose(&command).await.map_err(submit_error))
                }
                PeerRpc::Elect { timeout_ms } => {
                    let within = Duration::from_millis(timeout_ms.min(60_000));
                    PeerReply::Elected(node.elect_self(within).await.unwrap_or(false))
                }
            }
        })
    }
}

fn submit_error(e: ProposeError) -> SubmitError {
    match e {
        ProposeError::NotLeader(l) => SubmitError::NotLeader(l.map(|(id, _)| id)),
        ProposeError::FormatTooNew { format, effective } => {
            SubmitError::FormatTooNew { format, effective }
        }
        ProposeError::OutcomeUnknown(after) => SubmitError::OutcomeUnknown {
            after_ms: after.as_millis() as u64,
        },
        // The peer format has no variant of its own for it; both mean "not appended, send it
        // again later".
        ProposeError::NoQuorum(_) => SubmitError::NotLeader(None),
        e @ (ProposeError::Invalid(_)
        | ProposeError::ShuttingDown
        | ProposeError::RaftStopped(_)
        | ProposeError::LeaderFailed(_)
        | ProposeError::LeaderUnreachable(_)
        | ProposeError::UnexpectedAnswer(_)) => SubmitError::Failed(e.to_string()),
    }
}

impl From<SubmitError> for ProposeError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::NotLeader(_) => ProposeError::NotLeader(None),
            SubmitError::FormatTooNew { format, effective } => {
                ProposeError::FormatTooNew { format, effective }
            }
            SubmitError::OutcomeUnknown { after_ms } => {
                ProposeError::OutcomeUnknown(Duration::from_millis(after_ms))
            }
            SubmitError::Failed(r) => ProposeError::LeaderFailed(r),
        }
    }
}

/// Asks every other member for its facts, every [`FACTS_EVERY`], for the life of the node; stops
/// the node when a newer membership no longer lists it.
pub async fn run(node: Arc<Node>, removed: tokio::sync::mpsc::Sender<String>) {
    loop {
        tokio::time::sleep(FACTS_EVERY).await;
        let m = node.raft.metrics().borrow().clone();
        let members: Vec<(NodeId, String)> = m
            .membership_config
            .nodes()
            .filter(|(id, _)| **id != node.id)
            .map(|(id, info)| (*id, info.raft_addr.clone()))
            .collect();
        let ids: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
        node.known_peers.retain(&ids);
        let asks = members.into_iter().map(|(id, addr)| {
            let node = node.clone();
            async move {
                let r = node.ask_facts(id, &addr, FACTS_EVERY).await;
                node.known_peers.record(id, r.clone());
                r.ok()
            }
        });
        let answers = futures_join_all(asks).await;
        node.export_health_metrics();
        let mine = m.membership_config.log_id().map_or(0, |l| l.index);
        let was_member = m.membership_config.nodes().any(|(id, _)| *id == node.id);
        if let Some(f) = answers
            .into_iter()
            .flatten()
            .find(|f| was_member && f.membership_index > mine && !lists(f, node.id))
        {
            let why = format!(
                "node {} no longer lists this node (membership at log index {}, this node knew {}): it was removed from the cluster",
                f.id, f.membership_index, mine
            );
            let _ = removed.send(why).await;
            return;
        }
    }
}

fn lists(f: &NodeFacts, id: NodeId) -> bool {
    f.voters.contains(&id) || f.learners.contains(&id)
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join_all<F: Future + Send + 'static>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The read lease of a leader ends before any voter may vote for another candidate:
        /// before openraft's vote lease runs out and before the watchdog may force an election,
        /// whatever (valid) timing the voters run with.
        #[test]
        fn a_read_lease_never_outlasts_what_any_voter_promised(
            timings in proptest::collection::vec((10u64..500, 1u64..10, 1u64..10), 1..6),
            leader_min in 20u64..5000,
        ) {
            let promises: Vec<Option<Duration>> = timings
                .iter()
                .map(|(hb, a, b)| {
                    let emin = hb * (1 + a);
                    let emax = emin + hb * b;
                    Some(vote_promise(*hb, emax))
                })
                .collect();
            let lease = crate::reads::lease_for(leader_min, promises.iter().copied())
                .expect("every promise known");
            for (hb, a, b) in &timings {
                let emax = hb * (1 + a) + hb * b;
                prop_assert!(lease < Duration::from_millis(emax));
                prop_assert!(lease < Duration::from_millis(WATCHDOG_SILENCE_HEARTBEATS * hb));
            }
        }
    }

    #[test]
    fn an_unknown_promise_means_no_lease() {
        assert_eq!(
            crate::reads::lease_for(150, [Some(Duration::from_millis(100)), None]),
            None
        );
    }
}
