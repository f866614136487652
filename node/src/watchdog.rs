//! Fast detection of a crashed leader.
//!
//! openraft 0.9 lets a follower that knows a leader campaign only after the leader's lease
//! (the maximum election timeout) plus its own election timeout: 450-600 ms with the loopback
//! timing. When the leader's *process* is gone, its Raft port refuses connections at once; this
//! watchdog notices the silence (two heartbeats without AppendEntries), confirms the refusal,
//! and starts elections itself (`raft.trigger().elect()`). A leader that is merely slow or
//! unreachable (a timeout, not a refusal) is left to Raft's own timers. Followers are staggered
//! by their rank among the voters, with jitter, so that they do not split the vote; a follower
//! goes on forcing elections until it leads or knows the new leader, and holds off for a moment
//! while it votes for another candidate (see [`Step`]).
//!
//! A refusal does not prove the leader is gone: a firewall may answer for it with RST while it
//! lives and serves reads from its lease. A forced election makes this node vote for itself,
//! breaking the promise it made the leader not to vote for anyone else for a while, which the
//! leader's lease counts on. So elections are forced only once that promise has run out
//! ([`Node::force_election`]), and the leader's lease never outlasts the promise of any voter
//! (see `reads`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
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
        let grace = hb * WINNER_GRACE_HEARTBEATS;
        let mut deferral = Deferral::default();
        let mut forced = 0;
        while Instant::now() < deadline {
            // Asked of the Raft core itself, not of its metrics, which are published after
            // the vote a moment ago was granted, so that the window for the race below stays
            // as short as can be.
            let Ok(now) = node.raft.with_raft_state(Ballot::of).await else {
                break;
            };
            match next_step(node.id, leader, &now, forced) {
                Step::Stop => break,
                Step::Defer => {
                    if !deferral.expired(now.vote, Instant::now(), grace) {
                        tokio::time::sleep(hb / 5).await;
                        continue;
                    }
                }
                Step::Force => {}
            }
            deferral = Deferral::default();
            if !node.force_election(false).await {
                break;
            }
            forced += 1;
            let pause =
                rand::rng().random_range(hb.as_millis() as u64 / 2..=hb.as_millis() as u64 * 3 / 2);
            tokio::time::sleep(Duration::from_millis(pause.max(1))).await;
        }
    }
}

/// How long a follower that votes for another candidate waits for it to win before it forces
/// elections again: a vote and an AppendEntries on their way, with room for a busy machine.
const WINNER_GRACE_HEARTBEATS: u32 = 2;

/// The most elections one follower forces for one cut-off leader. A candidate whose log is
/// shorter than the other follower's cannot win, and each election it forces raises the term
/// past the one the other follower campaigns in: forcing them back to back for the whole
/// deadline kept the cluster without a leader for 1.7 s (issue 19). Raft's own election timers
/// take over after these.
const MAX_FORCED_ELECTIONS: u32 = 3;

/// How long this node has deferred to the candidate it votes for. The grace is counted from
/// the vote itself: a candidate that lost one term and won the next gets a new grace with the
/// new vote. Counted from the first deferral instead, a follower that had voted for node 2 in
/// a lost term forced two more elections 90 and 200 ms after node 2 won the next one, before
/// its first AppendEntries crossed a 25 ms WAN link, and nobody led for 5.7 s (`bench wan`).
#[derive(Default)]
struct Deferral {
    since: Option<(openraft::Vote<NodeId>, Instant)>,
}

impl Deferral {
    /// Whether the grace for `vote` ran out at `now`.
    fn expired(&mut self, vote: openraft::Vote<NodeId>, now: Instant, grace: Duration) -> bool {
        match self.since {
            Some((v, since)) if v == vote => now.duration_since(since) >= grace,
            _ => {
                self.since = Some((vote, now));
                false
            }
        }
    }
}

/// What the watchdog decides from: this node's role and vote, as its Raft core has them.
struct Ballot {
    state: ServerState,
    vote: openraft::Vote<NodeId>,
}

impl Ballot {
    fn of(s: &openraft::RaftState<NodeId, NodeInfo, tokio::time::Instant>) -> Ballot {
        Ballot {
            state: s.server_state,
            vote: *s.vote_ref(),
        }
    }
}

/// What a follower that started elections because its leader refuses connections does next.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Force another election: it still follows the cut-off leader, or its own candidacy is
    /// undecided (the other follower may have voted for itself in the same term).
    Force,
    /// Wait: it votes for another candidate, which may have won already, its first
    /// AppendEntries still on the way. Another election now would depose it, and then fail:
    /// a leader of a moment ago refuses votes for its lease (openraft's, the maximum election
    /// timeout), and a candidate that saw a longer log than its own waits two more maximum
    /// election timeouts before it campaigns again, so nobody led for up to a second (issue
    /// 19). Its vote may also only have been taken from a candidate's rejection (openraft
    /// adopts a higher vote it sees), for a candidate with a shorter log that cannot win: so
    /// it waits [`WINNER_GRACE_HEARTBEATS`] for a leader, then forces elections again.
    Defer,
    /// Stop: it leads, knows a leader other than the cut-off one, or forced
    /// [`MAX_FORCED_ELECTIONS`] already.
    Stop,
}

/// The next step of a follower that forced `forced` elections so far.
fn next_step(me: NodeId, cut_off: NodeId, now: &Ballot, forced: u32) -> Step {
    let voted_for = now.vote.leader_id().voted_for();
    let new_leader_known = now.vote.is_committed() && voted_for.is_some_and(|l| l != cut_off);
    if now.state == ServerState::Leader || new_leader_known || forced >= MAX_FORCED_ELECTIONS {
        Step::Stop
    } else if voted_for.is_some_and(|v| v != me && v != cut_off) {
        Step::Defer
    } else {
        Step::Force
    }
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
    use openraft::Vote;

    use super::*;

    /// Node 2's ballot after node 1, leader of term 5, was cut off.
    fn ballot(state: ServerState, vote: Vote<NodeId>) -> Ballot {
        Ballot { state, vote }
    }

    #[test]
    fn a_follower_forces_elections_while_it_knows_only_the_cut_off_leader_or_a_split_vote() {
        let following = ballot(ServerState::Follower, Vote::new_committed(5, 1));
        assert_eq!(next_step(2, 1, &following, 0), Step::Force);
        let candidate = ballot(ServerState::Candidate, Vote::new(6, 2));
        assert_eq!(next_step(2, 1, &candidate, 1), Step::Force);
    }

    #[test]
    fn a_follower_stops_forcing_elections_once_it_leads_or_knows_the_new_leader() {
        let leads = ballot(ServerState::Leader, Vote::new_committed(6, 2));
        assert_eq!(next_step(2, 1, &leads, 1), Step::Stop);
        let follows_3 = ballot(ServerState::Follower, Vote::new_committed(6, 3));
        assert_eq!(next_step(2, 1, &follows_3, 1), Step::Stop);
    }

    /// Seen in the failover bench: node 2's log was shorter than node 3's, so node 3 refused
    /// it every vote, and took the higher vote it saw in the refusals as its own. Had node 2
    /// gone on forcing elections, each would have raised the term past node 3's campaign.
    #[test]
    fn a_follower_forces_a_bounded_number_of_elections() {
        let candidate = ballot(ServerState::Candidate, Vote::new(9, 2));
        assert_eq!(
            next_step(2, 1, &candidate, MAX_FORCED_ELECTIONS - 1),
            Step::Force
        );
        assert_eq!(
            next_step(2, 1, &candidate, MAX_FORCED_ELECTIONS),
            Step::Stop
        );
    }

    /// The race seen in the failover bench: node 2 voted for node 3 in term 6; node 3 wins
    /// and leads before its first AppendEntries reaches node 2. An election of term 7 now
    /// would depose it, and fail.
    #[test]
    fn a_follower_that_voted_for_another_candidate_forces_no_election_against_it() {
        let voted_for_3 = ballot(ServerState::Follower, Vote::new(6, 3));
        assert_eq!(next_step(2, 1, &voted_for_3, 1), Step::Defer);
    }

    /// The slow kill of `bench wan`: node 1 voted for node 2 in term 5, node 2 lost that
    /// term and won term 6; node 1's grace must start again with its term-6 vote.
    #[test]
    fn the_grace_starts_again_when_the_vote_changes() {
        let grace = Duration::from_millis(200);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut d = Deferral::default();
        assert!(!d.expired(Vote::new(5, 2), at(0), grace));
        assert!(!d.expired(Vote::new(5, 2), at(150), grace));
        assert!(
            !d.expired(Vote::new(6, 2), at(210), grace),
            "a new vote, a new grace"
        );
        assert!(!d.expired(Vote::new(6, 2), at(400), grace));
        assert!(d.expired(Vote::new(6, 2), at(410), grace));
    }
}
