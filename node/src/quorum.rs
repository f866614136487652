//! A leader cut off from its quorum answers at once instead of holding its clients.
//!
//! openraft 0.9 has no check-quorum: a leader that no majority hears any more (its site cut
//! off by a firewall) goes on leading until it hears of a higher term, and every proposal it
//! holds waits for the outcome bound (`--outcome-timeout-ms`, 2 s and more) although the other
//! sites elect a new leader within a few hundred milliseconds. So, as the Raft thesis' leader
//! does when an election timeout passes without a successful round of heartbeats to a
//! majority (§6.2), a leader on which no majority of each configuration has accepted an
//! AppendEntries sent in the last maximum election timeout gives up on its quorum (imports
//! excepted: see `propose`):
//!
//! - a proposal it holds is answered `outcome_unknown` at once: it is in the log and may still
//!   commit (if the cut heals before another leader overwrites it), so nothing more is known;
//! - a new proposal is refused before it is appended ([`ProposeError::NoQuorum`], 503
//!   `no_quorum`): nothing of it was applied and it is safe to send again, at another node.
//!
//! It does not step down (openraft 0.9 has no way to): the first AppendEntries a majority
//! accepts again makes it whole, and the first higher term it hears deposes it, as before.
//! The followers' watchdog may elect a new leader after the vote promise (two heartbeats) of
//! silence already; giving up after the election timeout keeps a leader whose followers are
//! only briefly slow to answer from turning its clients away. Everything it answers here is
//! an answer the client had to handle anyway.
//!
//! [`ProposeError::NoQuorum`]: crate::propose::ProposeError::NoQuorum

use std::time::Duration;

use openraft::ServerState;

use crate::Node;

/// How often a held proposal looks whether its leader lost its quorum.
const CHECK_EVERY: Duration = Duration::from_millis(10);

impl Node {
    /// How long ago this leader sent the newest AppendEntries that a majority of each
    /// configuration accepted; `None` when it does not lead or none was accepted in its term
    /// yet (a new leader is given the benefit of the doubt).
    pub fn quorum_silence(&self) -> Option<Duration> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        if m.state != ServerState::Leader {
            return None;
        }
        let configs: Vec<Vec<u64>> = m
            .membership_config
            .membership()
            .get_joint_config()
            .iter()
            .map(|c| c.iter().copied().collect())
            .collect();
        let acks = self.reads.acks();
        let since = acks.quorum_acked_since(&m.vote, &configs, self.id)?;
        Some(Duration::from_micros(acks.now_us().saturating_sub(since)))
    }

    /// Whether this leader has heard from no quorum for longer than the maximum election
    /// timeout (the minimum left too little room on a busy machine: a follower slow for 150 ms
    /// made writes fail that nothing prevented).
    pub fn lost_quorum(&self) -> Option<Duration> {
        let limit = Duration::from_millis(self.config.election_max_ms);
        self.quorum_silence().filter(|s| *s > limit)
    }

    /// Resolves once [`Node::lost_quorum`] says so.
    pub async fn until_quorum_lost(&self) -> Duration {
        loop {
            if let Some(silence) = self.lost_quorum() {
                return silence;
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }
}
