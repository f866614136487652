//! A small sub-history that still shows a linearizability violation, for the report.
//!
//! Thousands of operations prove nothing to a reader; the engineer fixing the node needs the
//! few that contradict each other. Two reductions keep the witness sound (non-linearizable
//! only if the whole history is):
//!
//! 1. **Cut at the first moment it goes wrong.** The history as observed at time `t` (what
//!    had returned by then; calls still in flight become writes of unknown outcome, reads in
//!    flight are dropped) is non-linearizable for every `t` after some first `t*`, so a
//!    binary search over completion times finds it; the operation completing at `t*` is the
//!    one the system should not have answered as it did.
//! 2. **Drop observers.** Removing a read or a conflicting write from a linearizable history
//!    leaves it linearizable (neither changes the register), so if the history stays
//!    non-linearizable without one, the smaller one is still a witness. Applied and unknown
//!    writes stay: removing one could turn a sound witness into a false one.

use serde::Serialize;

use crate::linearizability::{Budget, Call, Micros, Operation, Register, Return, Verdict, check};

/// The reduced history and the operation at which it first goes wrong.
#[derive(Clone, Debug, Serialize)]
pub struct Witness {
    /// The operation whose completion made the observed history non-linearizable.
    pub first_bad: u64,
    /// When it completed (campaign microseconds).
    pub at: Micros,
    /// Every operation of the reduced witness, in call order.
    pub operations: Vec<Operation>,
}

/// The history as observed at time `t`.
fn observed_at(ops: &[Operation], t: Micros) -> Vec<Operation> {
    ops.iter()
        .filter(|o| o.invoke <= t)
        .filter_map(|o| match o.complete {
            Some(c) if c <= t => Some(*o),
            _ => match o.call {
                Call::Read => None,
                Call::Cas { .. } => Some(Operation {
                    complete: None,
                    ret: Return::Unknown,
                    ..*o
                }),
            },
        })
        .collect()
}

fn violated(initial: Register, ops: &[Operation], budget: Budget) -> bool {
    matches!(check(initial, ops, budget), Verdict::NotLinearizable(_))
}

/// Reduces a non-linearizable history; `None` if the reductions could not decide (budget).
pub fn reduce(initial: Register, ops: &[Operation], budget: Budget) -> Option<Witness> {
    let mut times: Vec<(Micros, u64)> = ops
        .iter()
        .filter_map(|o| o.complete.map(|c| (c, o.id)))
        .collect();
    times.sort_unstable();
    // The whole history may only go wrong through writes that never returned: then the cut
    // is the full history.
    let (at, first_bad) = if violated(initial, &observed_at(ops, Micros::MAX - 1), budget)
        && times
            .last()
            .is_some_and(|&(t, _)| violated(initial, &observed_at(ops, t), budget))
    {
        let (mut lo, mut hi) = (0, times.len() - 1);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if violated(initial, &observed_at(ops, times[mid].0), budget) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        times[lo]
    } else {
        (Micros::MAX - 1, 0)
    };
    let mut witness = observed_at(ops, at);
    if !violated(initial, &witness, budget) {
        return None;
    }
    let observer = |o: &Operation| {
        o.id != first_bad && matches!(o.ret, Return::Read { .. } | Return::Conflict { .. })
    };
    // First all observers at once, then one at a time.
    let without: Vec<Operation> = witness.iter().copied().filter(|o| !observer(o)).collect();
    if violated(initial, &without, budget) {
        witness = without;
    } else {
        let candidates: Vec<u64> = witness
            .iter()
            .filter(|o| observer(o))
            .map(|o| o.id)
            .collect();
        for id in candidates {
            let smaller: Vec<Operation> = witness.iter().copied().filter(|o| o.id != id).collect();
            if violated(initial, &smaller, budget) {
                witness = smaller;
            }
        }
    }
    witness.sort_by_key(|o| (o.invoke, o.id));
    Some(Witness {
        first_bad,
        at,
        operations: witness,
    })
}

/// The operations of a witness worth printing: the first bad one, every remaining observer,
/// and the writes whose versions lie within `radius` of the versions the first bad one names.
pub fn excerpt(w: &Witness, radius: u64) -> Vec<Operation> {
    let versions = |o: &Operation| -> Vec<u64> {
        let mut v = Vec::new();
        if let Call::Cas { expect, .. } = o.call {
            v.push(expect);
        }
        match o.ret {
            Return::Read { version, .. }
            | Return::Applied { version }
            | Return::Conflict { current: version } => v.push(version),
            Return::Unknown => {}
        }
        v
    };
    let focus: Vec<u64> = w
        .operations
        .iter()
        .filter(|o| o.id == w.first_bad)
        .flat_map(versions)
        .collect();
    let near = |o: &Operation| {
        versions(o)
            .iter()
            .any(|v| focus.iter().any(|f| v.abs_diff(*f) <= radius))
    };
    w.operations
        .iter()
        .copied()
        .filter(|o| {
            o.id == w.first_bad
                || matches!(o.ret, Return::Read { .. } | Return::Conflict { .. })
                || near(o)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(id: u64, t: (Micros, Micros), version: u64, value: i64) -> Operation {
        Operation {
            id,
            invoke: t.0,
            complete: Some(t.1),
            call: Call::Read,
            ret: Return::Read { version, value },
        }
    }
    fn write(id: u64, t: (Micros, Micros), expect: u64, value: i64, version: u64) -> Operation {
        Operation {
            id,
            invoke: t.0,
            complete: Some(t.1),
            call: Call::Cas { expect, value },
            ret: Return::Applied { version },
        }
    }

    #[test]
    fn the_witness_ends_at_the_stale_read_and_keeps_only_what_contradicts_it() {
        let start = Register {
            version: 1,
            value: 40,
        };
        let h = [
            read(1, (0, 10), 1, 40),
            write(2, (20, 30), 1, 50, 2),
            read(3, (40, 50), 2, 50),
            write(4, (60, 70), 2, 40, 3),
            read(5, (80, 90), 2, 50),
            write(6, (100, 110), 3, 30, 4),
            read(7, (120, 130), 4, 30),
        ];
        let w = reduce(start, &h, Budget::default()).expect("a witness");
        assert_eq!(w.first_bad, 5);
        let ids: Vec<u64> = w.operations.iter().map(|o| o.id).collect();
        assert_eq!(ids, vec![2, 4, 5]);
    }

    #[test]
    fn writes_in_flight_at_the_cut_become_unknown() {
        let h = [
            write(1, (0, 100), 1, 50, 2),
            read(2, (10, 20), 2, 50),
            read(3, (30, 40), 1, 40),
        ];
        let observed = observed_at(&h, 40);
        assert_eq!(observed.len(), 3);
        assert_eq!(observed[0].ret, Return::Unknown);
        assert_eq!(observed[0].complete, None);
    }
}
