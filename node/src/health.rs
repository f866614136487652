//! The cluster's health as an operator needs it: who is a member, who answers, who trails, and
//! above all how many voters may fail before the cluster stops taking writes.
//!
//! A node judges from its own position: the members it reaches (their facts, asked each second,
//! see [`crate::peers`]) and, when it leads, how far each follower's log matches its own. Only
//! the leader knows the lags; the API forwards `/cluster/health` to it.

use std::collections::BTreeSet;

use openraft::ServerState;
use sonraft_client::v1::{ClusterHealth, MemberHealth, MemberRole, Problem, ProblemKind};
use sonraft_raft::NodeId;

use crate::Node;

/// How many of `answering` may fail with a majority of each of `configs` left: the smallest,
/// over the configurations, of the answering voters beyond a majority (0 when short of one).
pub fn fault_tolerance(configs: &[BTreeSet<NodeId>], answering: &BTreeSet<NodeId>) -> u64 {
    configs
        .iter()
        .map(|c| {
            let up = c.intersection(answering).count() as u64;
            let majority = c.len() as u64 / 2 + 1;
            up.saturating_sub(majority)
        })
        .min()
        .unwrap_or(0)
}

impl Node {
    /// The cluster's health from here, judging lags against `max_lag` entries.
    pub fn cluster_health(&self, max_lag: u64) -> ClusterHealth {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let learners: Vec<NodeId> = membership.learner_ids().collect();
        let leads = m.state == ServerState::Leader;
        let last = m.last_log_index.unwrap_or(0);
        let replication = m.replication.clone().unwrap_or_default();
        let mut members = Vec::new();
        let mut answering = BTreeSet::new();
        for (id, info) in membership.nodes() {
            let role = if voters.contains(id) {
                MemberRole::Voter
            } else {
                MemberRole::Learner
            };
            let (answers, error, release) = if *id == self.id {
                (true, None, Some(crate::RELEASE.to_string()))
            } else {
                match self.known_peers.get(*id) {
                    Some(seen) if seen.answers() => {
                        (true, None, seen.facts.map(|(f, _)| f.release))
                    }
                    Some(seen) => (
                        false,
                        Some(seen.error.unwrap_or_else(|| "no answer yet".into())),
                        None,
                    ),
                    None => (false, Some("not asked yet".into()), None),
                }
            };
            if answers {
                answering.insert(*id);
            }
            let lag = if !leads {
                None
            } else if *id == self.id {
                Some(0)
            } else {
                Some(
                    last.saturating_sub(
                        replication
                            .get(id)
                            .cloned()
                            .flatten()
                            .map_or(0, |l| l.index),
                    ),
                )
            };
            members.push(MemberHealth {
                id: *id,
                site: info.site.clone(),
                raft_addr: info.raft_addr.clone(),
                api_addr: info.api_addr.clone(),
                role,
                answers,
                error,
                release,
                lag,
            });
        }
        let configs: Vec<BTreeSet<NodeId>> = membership.get_joint_config().clone();
        let tolerance = fault_tolerance(&configs, &answering);
        let mut problems = Vec::new();
        if m.current_leader.is_none() {
            problems.push(Problem {
                kind: ProblemKind::NoLeader,
                detail: "no leader is known (an election is under way, or no quorum)".into(),
            });
        }
        if tolerance == 0 {
            let up = voters.iter().filter(|v| answering.contains(v)).count();
            problems.push(Problem {
                kind: ProblemKind::FaultTolerance,
                detail: format!(
                    "{up} of {} voters answer: the cluster cannot lose another one and keep taking writes",
                    voters.len()
                ),
            });
        }
        for mh in members.iter().filter(|mh| !mh.answers) {
            problems.push(Problem {
                kind: ProblemKind::Unreachable,
                detail: format!(
                    "{} {} ({} at {}) does not answer: {}",
                    role_name(mh.role),
                    mh.id,
                    mh.site,
                    mh.raft_addr,
                    mh.error.as_deref().unwrap_or("?")
                ),
            });
        }
        for mh in members.iter().filter(|mh| mh.role == MemberRole::Voter) {
            if let Some(lag) = mh.lag
                && lag > max_lag
            {
                problems.push(Problem {
                    kind: ProblemKind::Lag,
                    detail: format!("voter {} trails the leader by {lag} entries", mh.id),
                });
            }
        }
        ClusterHealth {
            from: self.id,
            leader: m.current_leader,
            term: m.current_term,
            voters,
            learners,
            members,
            fault_tolerance: tolerance,
            healthy: problems.is_empty(),
            problems,
        }
    }

    /// Exports the fault tolerance and who answers as metrics (on the leader, which sees lags).
    pub fn export_health_metrics(&self) {
        let h = self.cluster_health(u64::MAX);
        metrics::gauge!("sonraft_cluster_fault_tolerance").set(h.fault_tolerance as f64);
        for mh in &h.members {
            metrics::gauge!("sonraft_member_reachable", "id" => mh.id.to_string(), "role" => role_name(mh.role))
                .set(if mh.answers { 1.0 } else { 0.0 });
            if let Some(lag) = mh.lag {
                metrics::gauge!("sonraft_member_lag_entries", "id" => mh.id.to_string())
                    .set(lag as f64);
            }
        }
    }
}

/// `voter` or `learner`, as the API and the metrics name it.
fn role_name(role: MemberRole) -> &'static str {
    match role {
        MemberRole::Voter => "voter",
        MemberRole::Learner => "learner",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn three_voters_tolerate_one_failure_and_two_none() {
        assert_eq!(fault_tolerance(&[set(&[1, 2, 3])], &set(&[1, 2, 3])), 1);
        assert_eq!(fault_tolerance(&[set(&[1, 2, 3])], &set(&[1, 2])), 0);
        assert_eq!(fault_tolerance(&[set(&[1, 2])], &set(&[1, 2])), 0);
        assert_eq!(
            fault_tolerance(&[set(&[1, 2, 3, 4, 5])], &set(&[1, 2, 3, 4, 5])),
            2
        );
        assert_eq!(
            fault_tolerance(&[set(&[1, 2, 3, 4])], &set(&[1, 2, 3, 4])),
            1,
            "four voters tolerate no more than three"
        );
    }

    #[test]
    fn during_a_change_the_weaker_configuration_counts() {
        let joint = [set(&[1, 2, 3]), set(&[1, 4, 5])];
        assert_eq!(fault_tolerance(&joint, &set(&[1, 2, 3, 4, 5])), 1);
        assert_eq!(fault_tolerance(&joint, &set(&[1, 2, 3, 4])), 0);
    }
}
