//! Membership changes and leader hand-over.
//!
//! openraft 0.9 has no leader transfer. A hand-over therefore runs in three steps:
//! 1. the leader stops sending heartbeats and stops campaigning itself;
//! 2. it asks the target (over the admin API, `POST /cluster/elect`) to call
//!    `raft.trigger().elect()`, repeatedly, until the target leads. Voters refuse a candidate
//!    while the old leader's lease (the maximum election timeout) still runs, so the target
//!    wins once that lease has lapsed, before any other node's election timer fires;
//! 3. the old leader re-enables heartbeats and campaigning, now as a follower.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use openraft::error::ClientWriteError;
use sonraft_raft::{NodeId, NodeInfo};

use super::Node;

/// Why a membership operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("{0}")]
    Refused(String),
    #[error("this node is not the leader")]
    NotLeader,
    #[error("{0}")]
    Raft(String),
}

type WriteError = openraft::error::RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>;

fn raft_err(e: WriteError) -> MembershipError {
    match e {
        openraft::error::RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            MembershipError::NotLeader
        }
        other => MembershipError::Raft(other.to_string()),
    }
}

impl Node {
    /// Makes `nodes` the initial voters. Only valid on a node that was never initialised.
    pub async fn init_cluster(
        &self,
        nodes: BTreeMap<NodeId, NodeInfo>,
    ) -> Result<(), MembershipError> {
        if !nodes.contains_key(&self.id) {
            return Err(MembershipError::Refused(format!(
                "the node list must include this node ({})",
                self.id
            )));
        }
        self.raft.initialize(nodes).await.map_err(|e| match e {
            openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(
                n,
            )) => MembershipError::Refused(format!("the cluster is already initialised: {n}")),
            other => MembershipError::Raft(other.to_string()),
        })
    }

    /// Adds a learner and waits until it has caught up with the log.
    pub async fn add_learner(&self, id: NodeId, info: NodeInfo) -> Result<(), MembershipError> {
        self.raft
            .add_learner(id, info, true)
            .await
            .map_err(raft_err)?;
        Ok(())
    }

    /// Replaces the voter set. Demoted voters stay as learners; remove them explicitly.
    pub async fn change_voters(&self, ids: BTreeSet<NodeId>) -> Result<(), MembershipError> {
        if ids.is_empty() {
            return Err(MembershipError::Refused(
                "the voter set cannot be empty".into(),
            ));
        }
        let known: BTreeSet<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        if let Some(unknown) = ids.iter().find(|id| !known.contains(id)) {
            return Err(MembershipError::Refused(format!(
                "node {unknown} is not a member; add it as a learner first"
            )));
        }
        self.raft
            .change_membership(ids, true)
            .await
            .map_err(raft_err)?;
        Ok(())
    }

    /// Removes a node (voter or learner) from the cluster.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), MembershipError> {
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
            self.raft
                .change_membership(rest, false)
                .await
                .map_err(raft_err)?;
        } else if membership.learner_ids().any(|l| l == id) {
            let remove = ChangeMembers::RemoveNodes([id].into());
            self.raft
                .change_membership(remove, false)
                .await
                .map_err(raft_err)?;
        } else {
            return Err(MembershipError::Refused(format!(
                "node {id} is not a member"
            )));
        }
        Ok(())
    }

    /// Campaigns until this node leads or `timeout` passes. Used as the target of a hand-over.
    ///
    /// A forced election bypasses the vote lease this node granted the current leader, so the
    /// leader must first stop serving reads from its lease: this asks it to (the leader also
    /// does so itself when it initiates a hand-over). If the leader cannot be told and is not
    /// known to be gone, no election is forced.
    pub async fn elect_self(&self, timeout: Duration) -> Result<bool, MembershipError> {
        if let Some((leader, info)) = self.leader()
            && leader != self.id
        {
            let body = serde_json::json!({ "for_ms": 3 * self.config.election_max_ms + timeout.as_millis() as u64 });
            match self
                .peers
                .post(&info.api_addr, "/internal/lease-release", &body)
                .await
            {
                Ok(r) if r.status.is_success() => {}
                // A leader of a release before 0.2.0 serves no lease reads: nothing to release.
                Ok(r) if r.status == hyper::StatusCode::NOT_FOUND => {}
                Err(crate::client::ClientError::Unreachable { reason, .. })
                    if reason.contains("refused") => {}
                Ok(r) => {
                    return Err(MembershipError::Refused(format!(
                        "the leader (node {leader}) did not release its read lease: {}",
                        r.status
                    )));
                }
                Err(e) => {
                    return Err(MembershipError::Refused(format!(
                        "the leader (node {leader}) could not be asked to release its read lease: {e}"
                    )));
                }
            }
        }
        let deadline = Instant::now() + timeout;
        // A campaign needs its votes persisted on the others (an fsync each): re-campaigning
        // sooner than an election timeout discards the answers on their way back.
        let retry = Duration::from_millis(self.config.election_max_ms.max(20));
        while Instant::now() < deadline {
            if self.is_leader() {
                return Ok(true);
            }
            if let Err(e) = self.raft.trigger().elect().await {
                tracing::warn!(error = %e, "cannot start an election");
                return Ok(false);
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
        while self
            .proposals_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
            && Instant::now() < drained
        {
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
        let body = serde_json::json!({ "timeout_ms": timeout_ms });
        let asked = self
            .peers
            .post(&info.api_addr, "/cluster/elect", &body)
            .await;
        drop(quiet);
        match asked {
            Ok(r) if r.status.is_success() => {
                tracing::info!(
                    target,
                    took_ms = started.elapsed().as_millis() as u64,
                    "leadership handed over"
                );
                Ok(started.elapsed())
            }
            Ok(r) => Err(MembershipError::Raft(format!(
                "node {target} did not take over: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ))),
            Err(e) => Err(MembershipError::Raft(format!(
                "node {target} not reached: {e}"
            ))),
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

/// A leader keeping quiet while its successor campaigns: no heartbeats, no elections of its
/// own, no new proposals. Dropping it (also when the hand-over is cancelled) ends it.
struct Quiet<'a>(&'a Node);

impl<'a> Quiet<'a> {
    fn begin(node: &'a Node) -> Self {
        let _ = node.proposals_paused.send_replace(true);
        let runtime = node.raft.runtime_config();
        runtime.heartbeat(false);
        runtime.elect(false);
        Quiet(node)
    }
}

impl Drop for Quiet<'_> {
    fn drop(&mut self) {
        let runtime = self.0.raft.runtime_config();
        runtime.heartbeat(true);
        runtime.elect(true);
        let _ = self.0.proposals_paused.send_replace(false);
    }
}
