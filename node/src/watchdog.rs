//! Fast detection of a crashed leader.
//!
//! openraft 0.9 lets a follower that knows a leader campaign only after the leader's lease
//! (the maximum election timeout) plus its own election timeout: 450-600 ms with the loopback
//! timing. When the leader's *process* is gone, its Raft port refuses connections at once; this
//! watchdog notices the silence (two heartbeats without AppendEntries), confirms the refusal,
//! and starts elections itself (`raft.trigger().elect()`). A leader that is merely slow or
//! unreachable (a timeout, not a refusal) is left to Raft's own timers. Followers are staggered
//! by their rank among the voters, with jitter, so that they do not split the vote.
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
            if now.current_leader.is_some_and(|l| l != leader) || now.state == ServerState::Leader {
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
