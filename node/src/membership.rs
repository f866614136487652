//! Membership changes and leader hand-over.
//!
//! Membership changes refuse what would cost the cluster its fault tolerance or cannot work,
//! unless the operator says `force`: a node that does not answer on its Raft address (or
//! answers with another id, or runs other election timing), a voter set of even size, a voter
//! that does not answer or trails the log, a removal that leaves too few voters.
//!
//! openraft 0.9 has no leader transfer. A hand-over therefore runs in three steps:
//! 1. the leader gives up its read lease and stops sending heartbeats and campaigning itself;
//! 2. it asks the target (a peer request, [`PeerRpc::Elect`]) to force elections until it
//!    leads. The target forces one only once its own vote promise to the leader has run out,
//!    and the other voters refuse it while theirs run, so it wins once they lapse, before any
//!    other node's election timer fires;
//! 3. the old leader re-enables heartbeats and campaigning, now as a follower.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use openraft::error::{ChangeMembershipError, ClientWriteError, Fatal, InitializeError, RaftError};
use sonraft_raft::transport::{PeerCallError, PeerReply, PeerRpc};
use sonraft_raft::{NodeId, NodeInfo};

use crate::Node;

/// The largest node id: ids travel in JSON, whose numbers are exact only up to 2^53 - 1.
pub const MAX_NODE_ID: NodeId = (1 << 53) - 1;

/// Checks that `id` can be a node id: positive and exact in JSON.
pub fn check_node_id(id: NodeId) -> Result<(), String> {
    if id == 0 || id > MAX_NODE_ID {
        Err(format!(
            "node id {id} is out of range: ids are 1 to {MAX_NODE_ID} (2^53 - 1, exact in JSON)"
        ))
    } else {
        Ok(())
    }
}

/// How far (in log entries) a node may trail the leader and still be made a voter.
pub const VOTER_MAX_LAG: u64 = 1000;

/// How long adding a learner waits for it to catch up.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(120);

/// Why a membership operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Membership changes go through the leader, and this node does not lead.
    #[error("this node is not the leader")]
    NotLeader,
    /// The node list of a new cluster leaves out the node asked to initialise it.
    #[error("the node list must include this node ({0})")]
    InitWithoutSelf(NodeId),
    /// This node already has a log or a vote: it is, or was, part of a cluster.
    #[error("the cluster is already initialised: {0}")]
    AlreadyInitialized(openraft::error::NotAllowed<NodeId>),
    /// Node `id` is a member at another Raft address.
    #[error("node {id} is already a member at {raft_addr}; remove it first (or pass force=true)")]
    AlreadyMember { id: NodeId, raft_addr: String },
    /// The node is neither a voter nor a learner.
    #[error("node {0} is not a member")]
    NotMember(NodeId),
    /// Refused because it would cost the cluster its fault tolerance or could not work; the
    /// text says why, and whether `force` overrides it.
    #[error("{0}")]
    Refused(String),
    /// openraft refused the change: another one is in progress, the voter set is empty, or a
    /// voter is not a learner yet.
    #[error(transparent)]
    Change(ChangeMembershipError<NodeId>),
    /// The learner was added but did not catch up within the bound; it stays a learner.
    #[error(
        "node {id} was added as a learner but did not catch up within {} s; see /cluster/health",
        .within.as_secs()
    )]
    CatchUpTimeout { id: NodeId, within: Duration },
    /// The hand-over target did not win an election in time; this node may still lead.
    #[error("node {target} did not win an election within {timeout_ms} ms")]
    NotElected { target: NodeId, timeout_ms: u64 },
    /// The hand-over target was not reached or answered something else than the outcome of
    /// its campaign.
    #[error("{0}")]
    TargetUnreachable(String),
    /// This node's Raft core stopped (the node is stopping) or failed (see its log).
    #[error(transparent)]
    RaftStopped(Box<Fatal<NodeId>>),
}

/// Classifies a failed membership write by openraft's error type.
impl From<crate::propose::WriteError> for MembershipError {
    fn from(e: crate::propose::WriteError) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => MembershipError::NotLeader,
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                MembershipError::Change(e)
            }
            RaftError::Fatal(f) => MembershipError::RaftStopped(Box::new(f)),
        }
    }
}

/// Classifies a failed initialisation by openraft's error type.
impl From<RaftError<NodeId, InitializeError<NodeId, NodeInfo>>> for MembershipError {
    fn from(e: RaftError<NodeId, InitializeError<NodeId, NodeInfo>>) -> Self {
        match e {
            RaftError::APIError(InitializeError::NotAllowed(n)) => {
                MembershipError::AlreadyInitialized(n)
            }
            RaftError::APIError(InitializeError::NotInMembers(n)) => {
                MembershipError::InitWithoutSelf(n.node_id)
            }
            RaftError::Fatal(f) => MembershipError::RaftStopped(Box::new(f)),
        }
    }
}

impl Node {
    /// Makes `nodes` the initial voters. Only valid on a node that was never initialised.
    pub async fn init_cluster(
        &self,
        nodes: BTreeMap<NodeId, NodeInfo>,
    ) -> Result<(), MembershipError> {
        if !nodes.contains_key(&self.id) {
            return Err(MembershipError::InitWithoutSelf(self.id));
        }
        Ok(self.raft.initialize(nodes).await?)
    }

    /// Checks that the node at `info.raft_addr` answers as node `id` with this node's election
    /// timing (a mixed timing would break the read lease's assumptions and the failover
    /// times).
    async fn check_answers_as(&self, id: NodeId, info: &NodeInfo) -> Result<(), MembershipError> {
        let facts = self
            .ask_facts(id, &info.raft_addr, Duration::from_secs(2))
            .await
            .map_err(|e| {
                MembershipError::Refused(format!(
                    "node {id} does not answer on its Raft address {}: {e}; start it first (or pass force=true)",
                    info.raft_addr
                ))
            })?;
        if facts.id != id {
            return Err(MembershipError::Refused(format!(
                "the node at {} is node {}, not node {id}",
                info.raft_addr, facts.id
            )));
        }
        let mine = self.facts();
        let timing = |f: &sonraft_raft::transport::NodeFacts| {
            (f.heartbeat_ms, f.election_min_ms, f.election_max_ms)
        };
        if timing(&facts) != timing(&mine) {
            return Err(MembershipError::Refused(format!(
                "node {id} runs with heartbeat/election timing {:?} ms, this cluster with {:?} ms; start it with the same --timing (or pass force=true)",
                timing(&facts),
                timing(&mine)
            )));
        }
        Ok(())
    }

    /// Adds a learner and waits until it has caught up with the log. Unless `force`, the node
    /// must answer on its Raft address as node `id`, with this cluster's election timing.
    pub async fn add_learner(
        &self,
        id: NodeId,
        info: NodeInfo,
        force: bool,
    ) -> Result<(), MembershipError> {
        check_node_id(id).map_err(MembershipError::Refused)?;
        if !self.is_leader() {
            return Err(MembershipError::NotLeader);
        }
        let known = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .nodes()
            .find(|(n, _)| **n == id)
            .map(|(_, i)| i.clone());
        if let Some(known) = known
            && known.raft_addr != info.raft_addr
            && !force
        {
            return Err(MembershipError::AlreadyMember {
                id,
                raft_addr: known.raft_addr,
            });
        }
        if !force {
            self.check_answers_as(id, &info).await?;
        }
        match tokio::time::timeout(CATCH_UP_WITHIN, self.raft.add_learner(id, info, true)).await {
            Ok(r) => {
                r?;
                tracing::info!(learner = id, "added a learner; it has caught up");
                Ok(())
            }
            Err(_) => Err(MembershipError::CatchUpTimeout {
                id,
                within: CATCH_UP_WITHIN,
            }),
        }
    }

    /// Replaces the voter set. Demoted voters stay as learners; remove them explicitly. Unless
    /// `force`: the set has an odd size and keeps the cluster's fault tolerance, and every new
    /// voter answers and has (nearly) caught up.
    pub async fn change_voters(
        &self,
        ids: BTreeSet<NodeId>,
        force: bool,
    ) -> Result<(), MembershipError> {
        if ids.is_empty() {
            return Err(MembershipError::Refused(
                "the voter set cannot be empty".into(),
            ));
        }
        for id in &ids {
            check_node_id(*id).map_err(MembershipError::Refused)?;
        }
        if !self.is_leader() {
            return Err(MembershipError::NotLeader);
        }
        let m = self.raft.metrics().borrow().clone();
        let known: BTreeMap<NodeId, NodeInfo> = m
            .membership_config
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        if let Some(unknown) = ids.iter().find(|id| !known.contains_key(id)) {
            return Err(MembershipError::Refused(format!(
                "node {unknown} is not a member; add it as a learner first"
            )));
        }
        if !force {
            let current = m.membership_config.membership().voter_ids().count();
            refuse_weaker_voter_set(current, ids.len())?;
            let last = m.last_log_index.unwrap_or(0);
            let replication = m.replication.clone().unwrap_or_default();
            for id in ids.iter().filter(|id| **id != self.id) {
                self.check_answers_as(*id, &known[id]).await?;
                let matched = replication
                    .get(id)
                    .cloned()
                    .flatten()
                    .map_or(0, |l| l.index);
                if matched + VOTER_MAX_LAG < last {
                    return Err(MembershipError::Refused(format!(
                        "node {id} trails the log (has {matched} of {last} entries); wait until it caught up (or pass force=true)"
                    )));
                }
            }
        }
        self.raft.change_membership(ids.clone(), true).await?;
        tracing::info!(voters = ?ids, "changed the voter set");
        Ok(())
    }

    /// Removes a node (voter or learner) from the cluster. Unless `force`, a voter is removed
    /// only if the voters left keep an odd number and the cluster's fault tolerance.
    pub async fn remove_node(&self, id: NodeId, force: bool) -> Result<(), MembershipError> {
        if !self.is_leader() {
            return Err(MembershipError::NotLeader);
        }
        let membership = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters.contains(&id) {
            let rest: BTreeSet<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
            if rest.is_empty() {
                return Err(MembershipError::Refused(
                    "cannot remove the last voter".into(),
                ));
            }
            if !force {
                refuse_weaker_voter_set(voters.len(), rest.len()).map_err(|e| {
                    MembershipError::Refused(format!(
                        "{e}. To replace a lost site, add the new node as a learner and make it a voter in the old one's place (POST /cluster/voters), then remove the old one"
                    ))
                })?;
            }
            self.raft.change_membership(rest, false).await?;
        } else if membership.learner_ids().any(|l| l == id) {
            let remove = ChangeMembers::RemoveNodes([id].into());
            self.raft.change_membership(remove, false).await?;
        } else {
            return Err(MembershipError::NotMember(id));
        }
        tracing::info!(node = id, "removed a node from the cluster");
        Ok(())
    }

    /// Campaigns until this node leads or `timeout` passes. Used as the target of a hand-over.
    ///
    /// A forced election bypasses the vote this node promised the current leader, so elections
    /// are forced only once that promise ran out ([`Node::force_election`]).
    pub async fn elect_self(&self, timeout: Duration) -> Result<bool, MembershipError> {
        let deadline = Instant::now() + timeout;
        // A campaign needs its votes persisted on the others (an fsync each): re-campaigning
        // sooner than an election timeout discards the answers on their way back.
        let retry = Duration::from_millis(self.config.election_max_ms.max(20));
        while Instant::now() < deadline {
            if self.is_leader() {
                return Ok(true);
            }
            // Only once this node's promise to the leader ran out (the leader, quiet, sends
            // nothing that would renew it): a lease read there may still count on it.
            if !self.force_election(true).await {
                tokio::time::sleep(Duration::from_millis(self.config.heartbeat_ms / 2)).await;
                continue;
            }
            let mut metrics = self.raft.metrics();
            let _ = tokio::time::timeout(retry, async {
                while metrics.changed().await.is_ok() {
                    if metrics.borrow().current_leader == Some(self.id) {
                        break;
                    }
                }
            })
            .await;
        }
        Ok(self.is_leader())
    }

    /// Hands leadership to voter `target`. Returns how long leadership was in transit.
    pub async fn hand_over(&self, target: NodeId) -> Result<Duration, MembershipError> {
        if !self.is_leader() {
            return Err(MembershipError::NotLeader);
        }
        if target == self.id {
            return Ok(Duration::ZERO);
        }
        let info = {
            let m = self.raft.metrics().borrow().clone();
            if !m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == target)
            {
                return Err(MembershipError::Refused(format!(
                    "node {target} is not a voter"
                )));
            }
            m.membership_config
                .nodes()
                .find(|(id, _)| **id == target)
                .map(|(_, i)| i.clone())
        };
        let Some(info) = info else {
            return Err(MembershipError::Refused(format!(
                "node {target} has no address"
            )));
        };
        let started = Instant::now();
        self.reads.release_lease(Duration::from_millis(
            4 * self.config.election_max_ms + 1000,
        ));
        // No new entries while the successor campaigns: their AppendEntries would renew the
        // followers' leases on this leader and make them refuse their votes.
        let quiet = Quiet::begin(self);
        // Proposals already past the gate reach the log first.
        let drained = Instant::now() + Duration::from_millis(self.config.election_max_ms);
        while self.hand_over_gate.in_flight() > 0 && Instant::now() < drained {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The successor must hold every entry this leader has, or the others (whose logs may
        // be longer) refuse it their votes and only this quiet leader could win.
        let caught_up = self
            .raft
            .wait(Some(Duration::from_millis(self.config.election_max_ms)))
            .metrics(
                |m| {
                    let matched = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&target).copied().flatten())
                        .map(|l| l.index);
                    matched.is_some() && matched >= m.last_log_index
                },
                "successor caught up",
            )
            .await;
        if let Err(e) = caught_up {
            tracing::warn!(target, error = %e, "the successor did not catch up; asking it to campaign anyway");
        }
        let timeout_ms = 3 * self.config.election_max_ms + 1000;
        let asked = self.ask_to_elect(target, &info, timeout_ms).await;
        drop(quiet);
        match asked {
            Ok(true) => {
                tracing::info!(
                    target,
                    took_ms = started.elapsed().as_millis() as u64,
                    "leadership handed over"
                );
                Ok(started.elapsed())
            }
            Ok(false) => Err(MembershipError::NotElected { target, timeout_ms }),
            Err(e) => Err(MembershipError::TargetUnreachable(e)),
        }
    }

    /// Asks `target` to campaign until it leads (a peer request; the admin route of a release
    /// before peer requests otherwise).
    async fn ask_to_elect(
        &self,
        target: NodeId,
        info: &NodeInfo,
        timeout_ms: u64,
    ) -> Result<bool, String> {
        let rpc = PeerRpc::Elect { timeout_ms };
        let within = Duration::from_millis(timeout_ms + 2000);
        match self
            .peer_client
            .call(Some(target), &info.raft_addr, &rpc, within)
            .await
        {
            Ok(PeerReply::Elected(won)) => Ok(won),
            Ok(other) => Err(format!(
                "node {target} answered {other:?} to an election request"
            )),
            Err(PeerCallError::NotSupported { .. }) => {
                let body = serde_json::json!({ "timeout_ms": timeout_ms });
                match self
                    .peers
                    .post(&info.api_addr, "/cluster/elect", &body)
                    .await
                {
                    Ok(r) => Ok(r.status.is_success()),
                    Err(e) => Err(format!("node {target} not reached: {e}")),
                }
            }
            Err(e) => Err(format!("node {target} not reached: {e}")),
        }
    }

    /// The voter best placed to take over: the one whose replicated log is furthest ahead.
    pub fn best_successor(&self) -> Option<NodeId> {
        let m = self.raft.metrics().borrow().clone();
        let replication = m.replication.clone().unwrap_or_default();
        m.membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != self.id)
            .max_by_key(|v| replication.get(v).cloned().flatten().map(|l| l.index))
    }
}

/// Refuses going from `current` voters to `next`: an even number of voters tolerates no more
/// failures than one fewer, and fewer voters must not tolerate fewer failures.
fn refuse_weaker_voter_set(current: usize, next: usize) -> Result<(), MembershipError> {
    let tolerance = |n: usize| n.saturating_sub(1) / 2;
    if next.is_multiple_of(2) {
        return Err(MembershipError::Refused(format!(
            "{next} voters tolerate no more failed voters than {} would ({}); keep an odd number of voters (or pass force=true)",
            next - 1,
            tolerance(next)
        )));
    }
    if tolerance(next) < tolerance(current) {
        return Err(MembershipError::Refused(format!(
            "going from {current} to {next} voters lowers the number of voters that may fail from {} to {} (pass force=true to do it anyway)",
            tolerance(current),
            tolerance(next)
        )));
    }
    Ok(())
}

/// A leader keeping quiet while its successor campaigns: no heartbeats, no elections of its
/// own, no new proposals. Dropping it (also when the hand-over is cancelled) ends it.
struct Quiet<'a> {
    node: &'a Node,
    _gate: crate::gate::Closed<'a>,
}

impl<'a> Quiet<'a> {
    fn begin(node: &'a Node) -> Self {
        let closed = node.hand_over_gate.close();
        let runtime = node.raft.runtime_config();
        runtime.heartbeat(false);
        runtime.elect(false);
        Quiet {
            node,
            _gate: closed,
        }
    }
}

impl Drop for Quiet<'_> {
    fn drop(&mut self) {
        let runtime = self.node.raft.runtime_config();
        runtime.heartbeat(true);
        runtime.elect(true);
        // The gate opens when `_gate` drops, right after this.
    }
}

#[cfg(test)]
mod tests {
    use openraft::error::{ForwardToLeader, InProgress, NotAllowed};

    use super::*;
    use crate::propose::WriteError;

    #[test]
    fn a_follower_refusing_a_membership_write_is_not_leader() {
        let e = WriteError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader::empty()));
        assert!(matches!(
            MembershipError::from(e),
            MembershipError::NotLeader
        ));
    }

    #[test]
    fn a_change_while_another_is_in_progress_is_a_change_error() {
        let e = WriteError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(InProgress {
                committed: None,
                membership_log_id: None,
            }),
        ));
        assert!(matches!(
            MembershipError::from(e),
            MembershipError::Change(ChangeMembershipError::InProgress(_))
        ));
    }

    #[test]
    fn initialising_a_node_with_a_log_or_vote_is_already_initialized() {
        let e = RaftError::APIError(InitializeError::NotAllowed(NotAllowed {
            last_log_id: None,
            vote: openraft::Vote::new(3, 1),
        }));
        let e = MembershipError::from(e);
        assert!(matches!(e, MembershipError::AlreadyInitialized(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("the cluster is already initialised: not allowed to initialize"),
            "{e}"
        );
    }

    #[test]
    fn a_failed_raft_core_is_raft_stopped() {
        let e = MembershipError::from(WriteError::Fatal(Fatal::Panicked));
        assert!(matches!(e, MembershipError::RaftStopped(ref f) if **f == Fatal::Panicked));
    }
}
