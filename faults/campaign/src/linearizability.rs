//! Is one cell's history linearizable as a compare-and-set register with versions?
//!
//! A cell is modelled as a register holding `(version, value)`. A read returns the whole
//! register; a change set with `read_set = [cell@v]` writing `x` is a compare-and-set: it
//! applies iff the version is `v` and then yields version `v + 1` with value `x`; otherwise it
//! is a conflict that reports the version it met. The checker is the Wing–Gong search with
//! Lowe's memoization, as Porcupine implements it: walk the calls in real-time order, try to
//! linearize each call whose return has not been passed, backtrack at a return whose call
//! could not be placed, and never revisit a (set of linearized operations, register state)
//! pair. Operations whose response was lost (timeouts, resets, 5xx) have no return: an
//! unknown write may take effect at any time after its call, or never; a write known (from
//! the final history) to have applied must take effect, at any time after its call.
//!
//! It is written from the model alone and shares no code with sonraft, so that a mistake in
//! the node cannot hide in the checker too. A budget of steps and time turns a search that
//! would take too long into [`Verdict::Undecided`] rather than a hang.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Microseconds since the campaign started, on the campaign's monotonic clock.
pub type Micros = u64;

/// The state of one cell as the checker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Register {
    pub version: u64,
    pub value: i64,
}

/// What a client asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    Read,
    /// Write `value` if the register is at version `expect`.
    Cas {
        expect: u64,
        value: i64,
    },
}

/// What the client was told (or, for `Applied` without a completion, what the final history
/// says happened).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ret", rename_all = "snake_case")]
pub enum Return {
    Read {
        version: u64,
        value: i64,
    },
    Applied {
        version: u64,
    },
    Conflict {
        current: u64,
    },
    /// The response was lost: the write may or may not have taken effect.
    Unknown,
}

/// One operation of one cell's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The campaign's id of the operation, for reports.
    pub id: u64,
    pub invoke: Micros,
    /// `None`: no response arrived; the operation may take effect any time after `invoke`.
    pub complete: Option<Micros>,
    pub call: Call,
    pub ret: Return,
}

impl Operation {
    /// Whether a linearization must contain this operation (an unknown write need not).
    fn required(&self) -> bool {
        !matches!(self.ret, Return::Unknown)
    }

    /// Whether the operation says anything at all: a read without an answer does not.
    fn meaningful(&self) -> bool {
        !matches!((self.call, self.ret), (Call::Read, Return::Unknown))
    }
}

/// The register's sequential specification: the state after `op` from `state`, or `None` if
/// `op` cannot take effect (with its observed return) in that state. An unknown write is only
/// ever tried as having taken effect; that it had no effect is covered by leaving it out.
pub fn step(state: Register, op: &Operation) -> Option<Register> {
    match (op.call, op.ret) {
        (Call::Read, Return::Read { version, value }) => {
            (state == Register { version, value }).then_some(state)
        }
        (Call::Cas { expect, value }, Return::Applied { version }) => (state.version == expect
            && version == expect + 1)
            .then_some(Register { version, value }),
        (Call::Cas { expect, value }, Return::Unknown) => {
            (state.version == expect).then_some(Register {
                version: expect + 1,
                value,
            })
        }
        (Call::Cas { expect, .. }, Return::Conflict { current }) => {
            (state.version != expect && state.version == current).then_some(state)
        }
        _ => None,
    }
}

/// How much search one check may spend.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub steps: u64,
    pub time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            steps: 50_000_000,
            time: Duration::from_secs(120),
        }
    }
}

/// Where the search got stuck: the longest sequence it could linearize, and the operation
/// whose return it could not get past.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Ids of the operations of the longest linearization found, in order.
    pub longest_prefix: Vec<u64>,
    /// The register after that prefix.
    pub state_after_prefix: Register,
    /// The operation whose response could not be explained after that prefix.
    pub stuck_on: u64,
}

/// The answer of a check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Linearizable,
    NotLinearizable(Violation),
    /// The budget ran out; `steps` were spent.
    Undecided {
        steps: u64,
    },
}

/// A call or return event in the doubly linked list the search walks.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_return: bool,
}

/// The events in real-time order, with removal and reinsertion in O(1).
struct Events {
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For a call event, the index of its return event.
    return_of: Vec<usize>,
}

/// Index of the list's head sentinel (one past the last event).
fn head(events: &Events) -> usize {
    events.events.len()
}

impl Events {
    fn new(ops: &[Operation]) -> Events {
        // Calls before returns at equal times (touching operations count as concurrent); among
        // returns that never came, required ones first, so that reaching an optional one means
        // every required operation has been placed.
        let mut keyed: Vec<((Micros, bool, bool), Event)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            keyed.push((
                (op.invoke, false, false),
                Event {
                    op: i,
                    is_return: false,
                },
            ));
            keyed.push((
                (op.complete.unwrap_or(Micros::MAX), true, !op.required()),
                Event {
                    op: i,
                    is_return: true,
                },
            ));
        }
        keyed.sort_by_key(|(k, _)| *k);
        let events: Vec<Event> = keyed.into_iter().map(|(_, e)| e).collect();
        let n = events.len();
        let mut return_of = vec![usize::MAX; n];
        let mut call_at = vec![usize::MAX; ops.len()];
        for (i, e) in events.iter().enumerate() {
            if e.is_return {
                return_of[call_at[e.op]] = i;
            } else {
                call_at[e.op] = i;
            }
        }
        // Sentinel at index n: next[n] is the first event, prev[n] the last.
        let next = (0..=n).map(|i| if i == n { 0 } else { i + 1 }).collect();
        let prev = (0..=n).map(|i| if i == 0 { n } else { i - 1 }).collect();
        let mut list = Events {
            events,
            next,
            prev,
            return_of,
        };
        if n == 0 {
            list.next[0] = 0;
            list.prev[0] = 0;
        }
        list
    }

    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        self.prev[n] = i;
    }

    /// Removes a call and its return.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.return_of[call]);
    }

    /// Puts back what [`Events::lift`] removed (in reverse order).
    fn unlift(&mut self, call: usize) {
        self.relink(self.return_of[call]);
        self.relink(call);
    }
}

/// A set of operation indexes.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Checks `ops` against a register that starts as `initial`.
pub fn check(initial: Register, ops: &[Operation], budget: Budget) -> Verdict {
    let ops: Vec<Operation> = ops.iter().copied().filter(Operation::meaningful).collect();
    let mut list = Events::new(&ops);
    let head = head(&list);
    let started = Instant::now();
    let mut required_left = ops.iter().filter(|o| o.required()).count();
    let mut linearized = Bits::new(ops.len());
    let mut seen: HashSet<(Bits, Register)> = HashSet::new();
    let mut stack: Vec<(usize, Register)> = Vec::new();
    let mut state = initial;
    let mut entry = list.next[head];
    let mut steps: u64 = 0;
    let mut deepest: Option<Violation> = None;
    while required_left > 0 {
        steps += 1;
        if steps > budget.steps || (steps.is_multiple_of(4096) && started.elapsed() > budget.time) {
            return Verdict::Undecided { steps };
        }
        let event = list.events[entry];
        let op = &ops[event.op];
        if !event.is_return {
            if let Some(after) = step(state, op) {
                linearized.set(event.op);
                if seen.insert((linearized.clone(), after)) {
                    stack.push((entry, state));
                    state = after;
                    if op.required() {
                        required_left -= 1;
                    }
                    list.lift(entry);
                    entry = list.next[head];
                    continue;
                }
                linearized.clear(event.op);
            }
            entry = list.next[entry];
            continue;
        }
        if !op.required() {
            // Only optional operations are left unplaced (see `Events::new`).
            break;
        }
        if deepest
            .as_ref()
            .is_none_or(|d| stack.len() > d.longest_prefix.len())
        {
            deepest = Some(Violation {
                longest_prefix: stack
                    .iter()
                    .map(|(e, _)| ops[list.events[*e].op].id)
                    .collect(),
                state_after_prefix: state,
                stuck_on: op.id,
            });
        }
        let Some((call, before)) = stack.pop() else {
            return Verdict::NotLinearizable(deepest.unwrap_or(Violation {
                longest_prefix: Vec::new(),
                state_after_prefix: initial,
                stuck_on: op.id,
            }));
        };
        let undone = &ops[list.events[call].op];
        linearized.clear(list.events[call].op);
        if undone.required() {
            required_left += 1;
        }
        state = before;
        list.unlift(call);
        entry = list.next[call];
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: Register = Register {
        version: 1,
        value: 40,
    };

    fn op(id: u64, invoke: Micros, complete: Option<Micros>, call: Call, ret: Return) -> Operation {
        Operation {
            id,
            invoke,
            complete,
            call,
            ret,
        }
    }
    fn read(id: u64, t: (Micros, Micros), version: u64, value: i64) -> Operation {
        op(
            id,
            t.0,
            Some(t.1),
            Call::Read,
            Return::Read { version, value },
        )
    }
    fn cas(id: u64, t: (Micros, Micros), expect: u64, value: i64, ret: Return) -> Operation {
        op(id, t.0, Some(t.1), Call::Cas { expect, value }, ret)
    }
    fn lost(id: u64, invoke: Micros, expect: u64, value: i64, ret: Return) -> Operation {
        op(id, invoke, None, Call::Cas { expect, value }, ret)
    }
    fn applied(version: u64) -> Return {
        Return::Applied { version }
    }
    fn verdict(ops: &[Operation]) -> Verdict {
        check(START, ops, Budget::default())
    }
    fn stuck_on(v: Verdict) -> u64 {
        match v {
            Verdict::NotLinearizable(violation) => violation.stuck_on,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_history_is_linearizable() {
        assert_eq!(verdict(&[]), Verdict::Linearizable);
    }

    #[test]
    fn sequential_writes_and_reads_are_linearizable() {
        let h = [
            read(1, (0, 10), 1, 40),
            cas(2, (20, 30), 1, 50, applied(2)),
            read(3, (40, 50), 2, 50),
            cas(4, (60, 70), 2, 40, applied(3)),
            cas(5, (80, 90), 2, 30, Return::Conflict { current: 3 }),
            read(6, (100, 110), 3, 40),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_state() {
        let h = [
            cas(1, (0, 100), 1, 50, applied(2)),
            read(2, (10, 20), 1, 40),
            read(3, (30, 40), 2, 50),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_writes_on_one_version_one_wins_one_conflicts() {
        let h = [
            cas(1, (0, 100), 1, 50, Return::Conflict { current: 2 }),
            cas(2, (10, 90), 1, 30, applied(2)),
            read(3, (120, 130), 2, 30),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_a_violation() {
        let h = [cas(1, (0, 10), 1, 50, applied(2)), read(2, (20, 30), 1, 40)];
        assert_eq!(stuck_on(verdict(&h)), 2);
    }

    #[test]
    fn two_writes_acknowledged_on_the_same_version_are_a_violation() {
        let h = [
            cas(1, (0, 50), 1, 50, applied(2)),
            cas(2, (10, 60), 1, 30, applied(2)),
        ];
        assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn a_lost_acknowledged_write_is_a_violation() {
        // Write 1 was acknowledged as version 2, but later reads and writes build on version 1.
        let h = [
            cas(1, (0, 10), 1, 50, applied(2)),
            cas(2, (20, 30), 1, 30, applied(2)),
            read(3, (40, 50), 2, 30),
        ];
        assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn an_applied_write_must_report_the_next_version() {
        let h = [cas(1, (0, 10), 1, 50, applied(3))];
        assert_eq!(stuck_on(verdict(&h)), 1);
    }

    #[test]
    fn a_conflict_must_report_the_version_it_met() {
        let h = [
            cas(1, (0, 10), 1, 50, applied(2)),
            cas(2, (20, 30), 1, 30, Return::Conflict { current: 1 }),
        ];
        assert_eq!(stuck_on(verdict(&h)), 2);
    }

    #[test]
    fn an_unknown_write_may_have_taken_effect() {
        let h = [
            lost(1, 0, 1, 50, Return::Unknown),
            read(2, (100, 110), 2, 50),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn an_unknown_write_may_have_had_no_effect() {
        let h = [
            lost(1, 0, 1, 50, Return::Unknown),
            read(2, (100, 110), 1, 40),
            cas(3, (120, 130), 1, 30, applied(2)),
            read(4, (140, 150), 2, 30),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn an_unknown_write_cannot_take_effect_before_it_was_sent() {
        let h = [read(1, (0, 10), 2, 50), lost(2, 20, 1, 50, Return::Unknown)];
        assert_eq!(stuck_on(verdict(&h)), 1);
    }

    #[test]
    fn an_unknown_write_does_not_explain_a_value_it_did_not_write() {
        let h = [
            lost(1, 0, 1, 50, Return::Unknown),
            read(2, (100, 110), 2, 60),
        ];
        assert_eq!(stuck_on(verdict(&h)), 2);
    }

    #[test]
    fn a_write_known_to_have_applied_must_take_effect() {
        // Known from the history to have applied as version 2, but a later write built on 1.
        let h = [
            lost(1, 0, 1, 50, Return::Applied { version: 2 }),
            cas(2, (100, 110), 1, 30, applied(2)),
        ];
        assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn a_write_known_to_have_applied_may_take_effect_late() {
        let h = [
            lost(1, 0, 1, 50, Return::Applied { version: 2 }),
            read(2, (100, 110), 1, 40),
            read(3, (200, 210), 2, 50),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn unanswered_reads_are_ignored() {
        let h = [
            op(1, 0, None, Call::Read, Return::Unknown),
            read(2, (10, 20), 1, 40),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn the_longest_prefix_is_reported() {
        let h = [
            read(1, (0, 10), 1, 40),
            cas(2, (20, 30), 1, 50, applied(2)),
            read(3, (40, 50), 1, 40),
        ];
        let Verdict::NotLinearizable(v) = verdict(&h) else {
            panic!("expected a violation");
        };
        assert_eq!(v.longest_prefix, vec![1, 2]);
        assert_eq!(
            v.state_after_prefix,
            Register {
                version: 2,
                value: 50
            }
        );
        assert_eq!(v.stuck_on, 3);
    }

    #[test]
    fn many_concurrent_unknown_writes_are_checked_within_budget() {
        // 200 lost writes all on version 1, then a chain of acknowledged writes: the search must
        // not blow up trying subsets of the lost ones.
        let mut h: Vec<Operation> = (0..200)
            .map(|i| lost(i, i, 1, 50 + i as i64, Return::Unknown))
            .collect();
        for k in 0..300u64 {
            let t = 1_000 + k * 100;
            h.push(cas(1_000 + k, (t, t + 50), 1 + k, 7, applied(2 + k)));
        }
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    /// Histories made by running a real register, with each operation's interval spread
    /// around the moment it took effect, and some answers lost.
    #[test]
    fn histories_of_a_real_register_are_linearizable() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..300 {
            let mut state = START;
            let mut h = Vec::new();
            for i in 0..60u64 {
                let at = 1_000 + i * 10;
                let invoke = at - rng.random_range(0..80);
                let complete = at + rng.random_range(0..80);
                let o = if rng.random_bool(0.4) {
                    read(i, (invoke, complete), state.version, state.value)
                } else {
                    let expect = if rng.random_bool(0.7) {
                        state.version
                    } else {
                        state.version.saturating_sub(rng.random_range(1..3))
                    };
                    let value = rng.random_range(0..16) * 10;
                    let ret = if expect == state.version {
                        state = Register {
                            version: expect + 1,
                            value,
                        };
                        applied(expect + 1)
                    } else {
                        Return::Conflict {
                            current: state.version,
                        }
                    };
                    match rng.random_range(0..10) {
                        0 => lost(i, invoke, expect, value, Return::Unknown),
                        1 if matches!(ret, Return::Applied { .. }) => {
                            lost(i, invoke, expect, value, ret)
                        }
                        _ => cas(i, (invoke, complete), expect, value, ret),
                    }
                };
                h.push(o);
            }
            assert_eq!(verdict(&h), Verdict::Linearizable, "{h:?}");
        }
    }

    #[test]
    fn a_search_over_budget_is_undecided() {
        let h = [
            cas(1, (0, 100), 1, 50, applied(2)),
            read(2, (10, 20), 1, 40),
        ];
        let v = check(
            START,
            &h,
            Budget {
                steps: 1,
                time: Duration::from_secs(1),
            },
        );
        assert!(matches!(v, Verdict::Undecided { .. }));
    }
}
