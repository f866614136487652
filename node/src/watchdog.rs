//! Fast detection of a crashed leader.
//!
//! openraft 0.9 lets a follower that knows a leader campaign only after the leader's lease
//! (the maximum election timeout) plus its own election timeout: 450-600 ms with the loopback
//! timing. When the leader's *process* is gone, its Raft port refuses connections at once; this
//! watchdog notices the silence (two heartbeats without AppendEntries), confirms the refusal,
//! and starts elections itself (`raft.trigger().elect()`). A leader that is merely slow or
//! unreachable (a timeout, not a refusal) is left to Raft's own timers. Followers are staggered
//! by their rank among the voters, with jitter, so that they do not split the vote; a follower
//! goes on forcing elections only until it leads, knows the new leader or voted for another
//! candidate (see [`keep_forcing`]).
//!
//! A refusal does not prove the leader is gone: a firewall may answer for it with RST while it
//! lives and serves reads from its lease. A forced election makes this node vote for itself,
//! breaking the promise it made the leader not to vote for anyone else for a while, which the
//! leader's lease counts on. So elections are forced only once that promise has run out
//! ([`Node::force_election`]), and the leader's lease never outlasts the promise of any voter
//! (see `reads`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{RaftMetrics, ServerState};
use rand::Rng;
use sonraft_raft::{NodeId, NodeInfo};

use crate::Node;

/// Whether a TCP connection to `addr` is refused (the process is gone) within `within`.
async fn refused(addr: &str, within: Duration) -> bool {
    match tokio::time::timeout(within, tokio::net::TcpStream::connect(addr)).await {
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    }
}

/// Runs for the life of the node.
pub async fn watch_leader(node: Arc<Node>) {
    let contact = node.contact.clone();
    let hb = Duration::from_millis(node.config.heartbeat_ms);
    loop {
        tokio::time::sleep(hb / 2).await;
        let m = node.raft.metrics().borrow().clone();
        let Some(leader) = m.current_leader else {
            continue;
        };
        let membership = m.membership_config.membership();
        if m.state != ServerState::Follower
            || leader == node.id
            || !membership.voter_ids().any(|v| v == node.id)
        {
            continue;
        }
        let rank = membership
            .voter_ids()
            .filter(|v| *v != leader && *v < node.id)
            .count() as u32;
        let silence = contact.silence();
        let first = crate::peers::WATCHDOG_SILENCE_HEARTBEATS as u32;
        if silence < hb * (first + rank) || !node.may_force_election(false) {
            continue;
        }
        let Some(addr) = m
            .membership_config
            .nodes()
            .find(|(id, _)| **id == leader)
            .map(|(_, n)| n.raft_addr.clone())
        else {
            continue;
        };
        if !refused(&addr, hb).await {
            continue;
        }
        tracing::info!(
            leader,
            silent_ms = silence.as_millis() as u64,
            "the leader's Raft port refuses connections; starting an election"
        );
        let deadline = Instant::now() + Duration::from_millis(node.config.election_max_ms * 4);
        while Instant::now() < deadline {
            let now = node.raft.metrics().borrow().clone();
            if !keep_forcing(node.id, leader, &now) {
                break;
            }
            if !node.force_election(false).await {
                break;
            }
            let pause =
                rand::rng().random_range(hb.as_millis() as u64 / 2..=hb.as_millis() as u64 * 3 / 2);
            tokio::time::sleep(Duration::from_millis(pause.max(1))).await;
        }
    }
}

/// Whether a follower that started elections because `leader` refuses connections should
/// force one more, seeing `now`: not once it leads or knows of a leader other than `leader`,
/// and not once it voted for another candidate. That candidate may already have won with this
/// vote, its first AppendEntries still on the way: a forced election would depose it, and
/// then fail, for a leader of a moment ago refuses votes for its lease (openraft's, the
/// maximum election timeout), and a candidate that saw a longer log than its own waits two
/// more maximum election timeouts before it campaigns again: nobody led for up to a second
/// (issue 19). If that candidate does not win after all, Raft's own election timer starts the
/// next election.
fn keep_forcing(me: NodeId, leader: NodeId, now: &RaftMetrics<NodeId, NodeInfo>) -> bool {
    let new_leader_known = now.current_leader.is_some_and(|l| l != leader);
    let voted_for_another = now
        .vote
        .leader_id()
        .voted_for()
        .is_some_and(|v| v != me && v != leader);
    now.state != ServerState::Leader && !new_leader_known && !voted_for_another
}

/// A restarted voter stays out of elections until it hears from a leader (or for a grace
/// period when none speaks up, as after a whole-cluster restart). openraft 0.9 has no
/// pre-vote: a node that comes back and times out before the leader's replication reaches it
/// would campaign with a higher term and depose a healthy leader, costing the cluster an
/// election at every restart of a rolling upgrade.
pub async fn startup_grace(node: Arc<Node>) {
    let contact = node.contact.clone();
    let voters = node
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .count();
    if voters < 2 {
        return;
    }
    let runtime = node.raft.runtime_config();
    runtime.elect(false);
    let grace = Duration::from_millis(3 * node.config.election_max_ms + 500);
    let started = Instant::now();
    while !contact.heard() && started.elapsed() < grace {
        tokio::time::sleep(Duration::from_millis(node.config.heartbeat_ms / 2)).await;
    }
    runtime.elect(true);
    tracing::info!(
        heard_leader = contact.heard(),
        after_ms = started.elapsed().as_millis() as u64,
        "elections enabled"
    );
}

#[cfg(test)]
mod tests {
    use openraft::{Membership, StoredMembership, Vote};

    use super::*;

    /// Metrics of node `me` in a three-node cluster whose leader of term 5, node 1, was cut off:
    /// its role, vote and the leader it knows.
    fn seen(me: NodeId, state: ServerState, vote: Vote<NodeId>) -> RaftMetrics<NodeId, NodeInfo> {
        let mut m = RaftMetrics::new_initial(me);
        let voters = std::collections::BTreeSet::from([1, 2, 3]);
        m.membership_config = Arc::new(StoredMembership::new(
            None,
            Membership::new(vec![voters], None),
        ));
        m.state = state;
        m.current_term = vote.leader_id().term;
        m.current_leader = (vote.is_committed()).then(|| vote.leader_id().node_id);
        m.vote = vote;
        m
    }

    #[test]
    fn a_follower_forces_elections_while_it_knows_only_the_cut_off_leader_or_a_split_vote() {
        // Still following the cut-off leader of term 5.
        let following = seen(2, ServerState::Follower, Vote::new_committed(5, 1));
        assert!(keep_forcing(2, 1, &following));
        // Its own candidacy of term 6 is undecided (the other follower may have voted for
        // itself): try again.
        let candidate = seen(2, ServerState::Candidate, Vote::new(6, 2));
        assert!(keep_forcing(2, 1, &candidate));
    }

    #[test]
    fn a_follower_stops_forcing_elections_once_it_leads_or_knows_the_new_leader() {
        assert!(!keep_forcing(
            2,
            1,
            &seen(2, ServerState::Leader, Vote::new_committed(6, 2))
        ));
        assert!(!keep_forcing(
            2,
            1,
            &seen(2, ServerState::Follower, Vote::new_committed(6, 3))
        ));
    }

    /// The race seen in the failover bench: node 2 voted for node 3 in term 6; node 3 wins
    /// and leads before its first AppendEntries reaches node 2. Another forced election (term
    /// 7) would depose it, and fail: node 3, a leader a moment ago, refuses votes for its
    /// lease. Nobody would lead until an election timer fires, hundreds of milliseconds later.
    #[test]
    fn a_follower_that_voted_for_another_candidate_forces_no_election_against_it() {
        let voted_for_3 = seen(2, ServerState::Follower, Vote::new(6, 3));
        assert!(!keep_forcing(2, 1, &voted_for_3));
    }
}
