//! What an operator reads about a peer the Raft traffic cannot reach: one WARN when it stops
//! answering (after [`QUIET`] of failures, so a single late heartbeat on a busy machine is not
//! news), a reminder every [`REMIND`] while it stays away, and one INFO when it answers again.
//!
//! openraft logs every failed RPC itself, at ERROR for a 50 ms heartbeat timeout, dozens a
//! second for a peer that is down for an upgrade: the nodes' default log filter silences its
//! replication module, and these lines say the same once, at the level it deserves.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::NodeId;

/// Failures for this long in a row before a peer is reported unreachable.
pub const QUIET: Duration = Duration::from_secs(1);
/// How often a peer still unreachable is reported again.
pub const REMIND: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Failing {
    since: Instant,
    /// When it was last reported (`None`: not yet).
    reported: Option<Instant>,
}

/// The failing peers of this node's Raft traffic.
#[derive(Debug, Default)]
pub struct PeerHealth {
    failing: Mutex<HashMap<NodeId, Failing>>,
    /// How many peers `failing` holds: while none fails, an answered RPC (every heartbeat)
    /// takes no lock.
    count: AtomicUsize,
}

/// What to log after an RPC's outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Note {
    Nothing,
    /// Failing since this long (first report, or a reminder).
    Unreachable(Duration),
    /// Answers again after this long.
    Back(Duration),
}

impl PeerHealth {
    /// Records an RPC to `target` that got an answer (`ok`) or not, at `now`; what to log.
    pub fn record(&self, target: NodeId, ok: bool, now: Instant) -> Note {
        if ok && self.count.load(Ordering::Acquire) == 0 {
            return Note::Nothing;
        }
        let mut failing = self
            .failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ok {
            let back = failing.remove(&target);
            if back.is_some() {
                self.count.fetch_sub(1, Ordering::Release);
            }
            return match back {
                Some(f) if f.reported.is_some() => Note::Back(now - f.since),
                _ => Note::Nothing,
            };
        }
        let f = failing.entry(target).or_insert_with(|| {
            self.count.fetch_add(1, Ordering::Release);
            Failing {
                since: now,
                reported: None,
            }
        });
        let due = match f.reported {
            None => now - f.since >= QUIET,
            Some(at) => now - at >= REMIND,
        };
        if due {
            f.reported = Some(now);
            Note::Unreachable(now - f.since)
        } else {
            Note::Nothing
        }
    }

    /// Records and logs.
    pub fn observe(&self, target: NodeId, error: Option<&str>) {
        match self.record(target, error.is_none(), Instant::now()) {
            Note::Nothing => {}
            Note::Unreachable(for_) => tracing::warn!(
                peer = target,
                failing_ms = for_.as_millis() as u64,
                error = error.unwrap_or_default(),
                "Raft traffic cannot reach node {target}; retrying"
            ),
            Note::Back(after) => tracing::info!(
                peer = target,
                after_ms = after.as_millis() as u64,
                "node {target} answers Raft traffic again"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_reported_once_after_a_quiet_second_then_every_minute_and_when_back() {
        let h = PeerHealth::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // A late heartbeat or two on a busy machine: nothing to say.
        assert_eq!(h.record(2, false, at(0)), Note::Nothing);
        assert_eq!(h.record(2, false, at(500)), Note::Nothing);
        assert_eq!(h.record(2, true, at(600)), Note::Nothing);
        // Down for good: one report after a second, then a reminder a minute later.
        assert_eq!(h.record(2, false, at(1_000)), Note::Nothing);
        assert_eq!(
            h.record(2, false, at(2_000)),
            Note::Unreachable(Duration::from_secs(1))
        );
        for ms in (2_050..62_000).step_by(50) {
            assert_eq!(h.record(2, false, at(ms)), Note::Nothing, "{ms}");
        }
        assert_eq!(
            h.record(2, false, at(62_000)),
            Note::Unreachable(Duration::from_secs(61))
        );
        // Another peer is counted apart.
        assert_eq!(h.record(3, false, at(62_000)), Note::Nothing);
        assert_eq!(
            h.record(2, true, at(63_000)),
            Note::Back(Duration::from_secs(62))
        );
        assert_eq!(h.record(2, true, at(63_050)), Note::Nothing);
    }
}
