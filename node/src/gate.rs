//! The hand-over gate. While a leader hands leadership over, it must append nothing: each
//! AppendEntries would renew the followers' vote leases on it and make them refuse their votes
//! to the successor. So new proposals wait at this gate, and the hand-over waits for those
//! already past it to reach the log. A proposal counts itself in flight *before* it looks at
//! the gate: a hand-over that closed the gate and then saw nothing in flight cannot be
//! overtaken by a proposal that slipped through.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;
use tokio::time::Instant;

/// Open, or closed by a hand-over; counts the proposals past it.
pub struct HandOverGate {
    closed: watch::Sender<bool>,
    in_flight: AtomicUsize,
}

/// A proposal past the gate; counted in flight until dropped.
pub struct Passed<'a>(&'a HandOverGate);

impl Drop for Passed<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The gate closed by a hand-over; dropping it opens the gate again.
pub struct Closed<'a>(&'a HandOverGate);

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        let _ = self.0.closed.send_replace(false);
    }
}

impl Default for HandOverGate {
    fn default() -> Self {
        HandOverGate {
            closed: watch::channel(false).0,
            in_flight: AtomicUsize::new(0),
        }
    }
}

impl HandOverGate {
    /// Waits while the gate is closed, but never past `deadline` (a hand-over that hangs must
    /// not stop writes for good).
    pub async fn pass(&self, deadline: Instant) -> Passed<'_> {
        loop {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let passed = Passed(self);
            if !*self.closed.borrow() || Instant::now() >= deadline {
                return passed;
            }
            drop(passed);
            let mut closed = self.closed.subscribe();
            let _ = tokio::time::timeout_at(deadline, closed.wait_for(|c| !*c)).await;
        }
    }

    /// Closes the gate until the returned guard is dropped.
    pub fn close(&self) -> Closed<'_> {
        let _ = self.closed.send_replace(true);
        Closed(self)
    }

    /// Proposals past the gate and not yet answered by Raft.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test]
    async fn an_open_gate_lets_proposals_through_and_counts_them_until_they_end() {
        let gate = HandOverGate::default();
        let a = gate.pass(far()).await;
        let b = gate.pass(far()).await;
        assert_eq!(gate.in_flight(), 2);
        drop(a);
        assert_eq!(gate.in_flight(), 1);
        drop(b);
        assert_eq!(gate.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_closed_gate_holds_new_proposals_uncounted_until_it_opens() {
        let gate = Arc::new(HandOverGate::default());
        let before = gate.pass(far()).await;
        let closed = gate.close();
        // The hand-over sees the proposal that passed before it closed the gate.
        assert_eq!(gate.in_flight(), 1);
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move {
                let _passed = gate.pass(far()).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a proposal passed a closed gate");
        drop(before);
        assert_eq!(gate.in_flight(), 0, "a held proposal is not in flight");
        drop(closed);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the held proposal passes once the gate opens")
            .unwrap();
    }

    #[tokio::test]
    async fn a_gate_left_closed_lets_proposals_through_at_their_deadline() {
        let gate = HandOverGate::default();
        let _closed = gate.close();
        let deadline = Instant::now() + Duration::from_millis(100);
        let passed = gate.pass(deadline).await;
        assert!(Instant::now() >= deadline);
        assert_eq!(gate.in_flight(), 1);
        drop(passed);
    }
}
