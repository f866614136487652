//! When followers last accepted this node's leadership, for reads that need proof of it.
//!
//! Every AppendEntries a follower accepts (it answers success, partial success or conflict, all
//! of which mean it took our vote) is recorded with the time the request was *sent*. If a
//! majority of voters accepted requests sent after some instant `t`, then at `t` no other
//! leader could have been elected — the read-index proof, obtained from replication traffic
//! that flows anyway instead of from extra heartbeats.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use openraft::Vote;
use tokio::sync::Notify;

use crate::NodeId;

/// The vote the acknowledgements belong to, and per follower the latest send time accepted.
type VoteAcks = (Option<Vote<NodeId>>, BTreeMap<NodeId, u64>);

/// Send times of accepted AppendEntries, per follower, for one vote (term and leader).
#[derive(Debug)]
pub struct AckClock {
    base: Instant,
    acks: Mutex<VoteAcks>,
    changed: Notify,
}

impl Default for AckClock {
    fn default() -> Self {
        AckClock {
            base: Instant::now(),
            acks: Mutex::new((None, BTreeMap::new())),
            changed: Notify::new(),
        }
    }
}

impl AckClock {
    /// Microseconds since this clock started (monotonic).
    pub fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    /// Records that `target` accepted a request of `vote` sent at `sent_us`.
    pub fn record(&self, target: NodeId, vote: &Vote<NodeId>, sent_us: u64) {
        let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        if acks.0.as_ref() != Some(vote) {
            if acks.0.as_ref().is_some_and(|v| v > vote) {
                return;
            }
            *acks = (Some(*vote), BTreeMap::new());
        }
        let t = acks.1.entry(target).or_insert(0);
        *t = (*t).max(sent_us);
        drop(acks);
        self.changed.notify_waiters();
    }

    /// The latest instant `t` such that, in each of `configs` (one, or two while a membership
    /// change is under way), a majority of voters accepted requests of `vote` sent at or after
    /// `t` (`me`, the leader, always counts). A majority of the union is not enough: Raft
    /// commits, and elects, with a majority of each configuration.
    pub fn quorum_acked_since(
        &self,
        vote: &Vote<NodeId>,
        configs: &[Vec<NodeId>],
        me: NodeId,
    ) -> Option<u64> {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        if acks.0.as_ref() != Some(vote) || configs.is_empty() {
            return None;
        }
        let mut since = u64::MAX;
        for voters in configs {
            if voters.is_empty() {
                return None;
            }
            let mut times: Vec<u64> = voters
                .iter()
                .map(|v| {
                    if *v == me {
                        u64::MAX
                    } else {
                        acks.1.get(v).copied().unwrap_or(0)
                    }
                })
                .collect();
            times.sort_unstable_by(|a, b| b.cmp(a));
            let majority = voters.len() / 2 + 1;
            since = since.min(times.get(majority - 1).copied().filter(|t| *t > 0)?);
        }
        Some(since)
    }

    /// The send time (this clock's microseconds) of the newest request of `vote` that `target`
    /// accepted: when this leader last heard from it. `None`: none in this vote.
    pub fn last_accepted(&self, vote: &Vote<NodeId>, target: NodeId) -> Option<u64> {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        if acks.0.as_ref() != Some(vote) {
            return None;
        }
        acks.1.get(&target).copied()
    }

    /// Resolves on the next recorded acceptance.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_is_needed_and_the_oldest_of_it_counts() {
        let c = AckClock::default();
        let v = Vote::new_committed(3, 1);
        assert_eq!(c.quorum_acked_since(&v, &[vec![1, 2, 3]], 1), None);
        c.record(2, &v, 100);
        assert_eq!(c.quorum_acked_since(&v, &[vec![1, 2, 3]], 1), Some(100));
        assert_eq!(
            c.quorum_acked_since(&v, &[vec![1, 2, 3, 4, 5]], 1),
            None,
            "1 of 4 followers is not a majority of 5"
        );
        c.record(3, &v, 50);
        c.record(4, &v, 70);
        assert_eq!(
            c.quorum_acked_since(&v, &[vec![1, 2, 3, 4, 5]], 1),
            Some(70)
        );
    }

    #[test]
    fn the_last_acceptance_of_a_follower_is_per_vote() {
        let c = AckClock::default();
        let v = Vote::new_committed(3, 1);
        assert_eq!(c.last_accepted(&v, 2), None);
        c.record(2, &v, 100);
        c.record(2, &v, 90);
        assert_eq!(
            c.last_accepted(&v, 2),
            Some(100),
            "the newest send time counts"
        );
        assert_eq!(c.last_accepted(&v, 3), None);
        assert_eq!(c.last_accepted(&Vote::new_committed(4, 1), 2), None);
    }

    #[test]
    fn acceptances_of_another_vote_do_not_count() {
        let c = AckClock::default();
        c.record(2, &Vote::new_committed(3, 1), 100);
        assert_eq!(
            c.quorum_acked_since(&Vote::new_committed(4, 1), &[vec![1, 2, 3]], 1),
            None
        );
        c.record(2, &Vote::new_committed(2, 1), 500);
        assert_eq!(
            c.quorum_acked_since(&Vote::new_committed(3, 1), &[vec![1, 2, 3]], 1),
            Some(100),
            "an older vote is ignored"
        );
    }

    /// Moving from {1,2,3} to {1,4,5}: node 1 leads, 2 and 3 accepted, 4 and 5 did not. That
    /// is 3 of the 5 in the union, but no majority of the new configuration, which could elect
    /// a leader of its own.
    #[test]
    fn in_a_joint_configuration_a_majority_of_each_configuration_is_needed() {
        let c = AckClock::default();
        let v = Vote::new_committed(3, 1);
        c.record(2, &v, 100);
        c.record(3, &v, 100);
        let joint = [vec![1, 2, 3], vec![1, 4, 5]];
        assert_eq!(c.quorum_acked_since(&v, &joint, 1), None);
        c.record(4, &v, 80);
        assert_eq!(c.quorum_acked_since(&v, &joint, 1), Some(80));
    }
}
