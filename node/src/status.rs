//! What a node says about itself: `/status` and `/readyz`, from its Raft metrics and its
//! applied state.

use openraft::ServerState;
use sonraft_client::v1;
use sonraft_raft::command::COMMAND_FORMAT;
use sonraft_storage::format::DATA_FORMAT;

use crate::Node;

impl Node {
    /// Role, term, indexes, membership and versions of this node (`GET /status`).
    pub fn status(&self) -> v1::Status {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        let role = match m.state {
            ServerState::Leader => v1::Role::Leader,
            ServerState::Candidate => v1::Role::Candidate,
            ServerState::Learner => v1::Role::Learner,
            ServerState::Follower if learners.contains(&self.id) => v1::Role::Learner,
            ServerState::Follower if !voters.contains(&self.id) => v1::Role::Learner,
            ServerState::Follower => v1::Role::Follower,
            ServerState::Shutdown => v1::Role::Shutdown,
        };
        let nodes = membership
            .nodes()
            .map(|(id, n)| {
                let addresses = v1::MemberAddresses {
                    site: n.site.clone(),
                    raft_addr: n.raft_addr.clone(),
                    api_addr: n.api_addr.clone(),
                };
                (*id, addresses)
            })
            .collect();
        let (releases, effective) = self.store.releases(&voters);
        v1::Status {
            id: self.id,
            site: self.site.clone(),
            this: v1::Addresses {
                raft_addr: self.advertised.raft_addr.clone(),
                api_addr: self.advertised.api_addr.clone(),
            },
            role,
            term: m.current_term,
            leader_id: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied_index: m.last_applied.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            voters,
            learners,
            nodes,
            version: crate::RELEASE.to_string(),
            data_format: DATA_FORMAT,
            command_format: COMMAND_FORMAT,
            effective_command_format: effective,
            releases: releases
                .into_iter()
                .map(|r| {
                    let advertised = v1::AdvertisedRelease {
                        release: r.release,
                        max_command_format: r.max_command_format,
                    };
                    (r.node_id, advertised)
                })
                .collect(),
            // From the node's own clock of accepted AppendEntries rather than openraft's, which
            // also counts the heartbeats the transport answers without waiting (see
            // sonraft_raft's transport client).
            millis_since_quorum_ack: self.quorum_silence().map(|d| d.as_millis() as u64),
            now_ms: Some(crate::propose::now_ms()),
            checkpoint_pending: Some(self.store.checkpoint_pending()),
        }
    }

    /// Ready when the node knows a leader and has applied what was committed when it started
    /// (`GET /readyz`); otherwise why not.
    pub fn readiness(&self) -> v1::Readiness {
        let m = self.raft.metrics().borrow().clone();
        let applied = m.last_applied.map_or(0, |l| l.index);
        let reason = if let Err(e) = &m.running_state {
            format!("the Raft core stopped: {e}")
        } else if m.membership_config.membership().nodes().next().is_none() {
            "the node is not part of a cluster yet (POST /cluster/init or add it as a learner)"
                .to_string()
        } else if m.current_leader.is_none() {
            "no leader is known (election in progress or no quorum)".to_string()
        } else if applied < self.committed_at_start {
            format!(
                "catching up: applied {applied} of the {} entries committed when the node started",
                self.committed_at_start
            )
        } else {
            return v1::Readiness {
                ready: true,
                leader_id: m.current_leader,
                last_applied_index: Some(applied),
                reason: None,
            };
        };
        v1::Readiness {
            ready: false,
            leader_id: None,
            last_applied_index: None,
            reason: Some(reason),
        }
    }
}
