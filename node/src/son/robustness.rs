//! Mobility robustness (MRO): the handover parameters from the mobility failures of a cell's
//! outgoing handovers (TS 32.425 too late, too early, to the wrong cell; ping-pongs).
//!
//! The numbers are the replicated tuning's ([`MroTuning`]; defaults in brackets). Evidence
//! first: a cell or relation is judged only with at least `min_attempts` (20) attempts and
//! `min_events` (3) failures of the kind that moves it, so one unlucky period does not step.
//! A direction follows from weighing both sides: more than 3 % too-late handovers ask to hand
//! over sooner; more than 3 % too-early (wrong-cell handovers count as early, unless the
//! target's PCI clashes, which is the PCI function's to fix) or 5 % ping-pongs ask for later.
//! When both ask, the side with at least `dominance` (twice) the other's events wins;
//! otherwise the two are balanced and nothing changes (a step either way would trade one
//! failure for the other).
//!
//! Per relation before per cell: when the relations leaning towards the cell's direction carry
//! at least `cell_wide_permille` (half) of its attempts, the problem is the cell's — sooner: time-to-trigger one step down
//! while above 100 ms, else hysteresis −0.5 dB; later: hysteresis +0.5 dB up to 5 dB, else
//! time-to-trigger one step up. Otherwise only the relations that ask move, by their cell
//! individual offset (one Q-OffsetRange step, within the policy's bound), in one change set.
//!
//! An offset load balancing holds for a loaded cell is its own ([`load_balancing_holds`]): the
//! early handovers out of the cell, and the late ones back into it, are what it was set for, and
//! do not count here while the load lasts.

use sonraft_protocol::relation_counter as rc;
use sonraft_raft::changeset::{ChangeSet, Function, Origin, ReadVersion, Write};
use sonraft_raft::model::{EntityRef, Param, Q_OFFSET_RANGE_DB, TIME_TO_TRIGGER_MS, Value};
use sonraft_raft::son::MroTuning;

use super::view::RadioView;
use super::{PeriodInput, Proposal};

/// Which way a cell's or relation's handovers should move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Sooner,
    Later,
}

/// The mobility failures of one period, over one relation or a cell's relations.
#[derive(Debug, Default, Clone, Copy)]
struct Failures {
    att: u64,
    late: u64,
    /// Too early plus wrong cell (the handover went, but not to where the user stays).
    early: u64,
    ping_pong: u64,
}

impl Failures {
    fn add(&mut self, o: Failures) {
        self.att += o.att;
        self.late += o.late;
        self.early += o.early;
        self.ping_pong += o.ping_pong;
    }

    /// `n` of the attempts, per mille.
    fn permille(&self, n: u64) -> f64 {
        n as f64 * 1000.0 / self.att.max(1) as f64
    }

    fn ratio(&self, n: u64) -> f64 {
        n as f64 / self.att.max(1) as f64
    }

    /// The direction the evidence asks for, if it is enough and not balanced.
    fn direction(&self, t: &MroTuning) -> Option<Direction> {
        if self.att < u64::from(t.min_attempts) {
            return None;
        }
        let events = u64::from(t.min_events);
        let over = |n: u64, limit: u16| n >= events && self.permille(n) > f64::from(limit);
        let sooner = over(self.late, t.max_late_permille);
        let later = over(self.early, t.max_early_permille)
            || over(self.ping_pong, t.max_ping_pong_permille);
        let against_late = self.early + self.ping_pong;
        let dominance = u64::from(t.dominance);
        if sooner && self.late >= dominance * against_late {
            Some(Direction::Sooner)
        } else if later && against_late >= dominance * self.late {
            Some(Direction::Later)
        } else {
            None
        }
    }

    /// Whether its ratios ask for `d`, however few its events: to place a cell's problem.
    fn leans(&self, d: Direction, t: &MroTuning) -> bool {
        match d {
            Direction::Sooner => self.permille(self.late) > f64::from(t.max_late_permille),
            Direction::Later => {
                self.permille(self.early) > f64::from(t.max_early_permille)
                    || self.permille(self.ping_pong) > f64::from(t.max_ping_pong_permille)
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "{:.1} % too late, {:.1} % too early or to a wrong cell, {:.1} % ping-pong over {} attempts",
            self.ratio(self.late) * 100.0,
            self.ratio(self.early) * 100.0,
            self.ratio(self.ping_pong) * 100.0,
            self.att
        )
    }
}

fn ttt_step(ttt: u16, up: bool) -> Option<u16> {
    let i = TIME_TO_TRIGGER_MS.iter().position(|t| *t == ttt)?;
    if up {
        TIME_TO_TRIGGER_MS.get(i + 1).copied()
    } else {
        i.checked_sub(1).map(|j| TIME_TO_TRIGGER_MS[j])
    }
}

/// The next Q-OffsetRange value from `cio` in `direction` (a higher offset hands over sooner),
/// within `bound`.
fn cio_step(cio: i8, direction: Direction, bound: i8) -> Option<i8> {
    let i = Q_OFFSET_RANGE_DB.iter().position(|q| *q == cio)?;
    let next = match direction {
        Direction::Sooner => Q_OFFSET_RANGE_DB.get(i + 1).copied()?,
        Direction::Later => Q_OFFSET_RANGE_DB[i.checked_sub(1)?],
    };
    (next.abs() <= bound || next.abs() < cio.abs()).then_some(next)
}

/// Whether load balancing holds the offset of `source -> target`, and if so the direction
/// that would undo it: a raised offset out of a cell that is still above load balancing's
/// release threshold (it moves edge users out early: stepping it *later* undoes it), or a
/// lowered one into such a cell (it keeps them out: *sooner* undoes it). Load balancing owns
/// an offset it set for load as long as the load lasts (3GPP MLB/MRO coordination); mobility
/// robustness may still move the offset the other way, or the cell's hysteresis and
/// time-to-trigger for the failures load balancing did not cause.
///
/// The view does not say who last wrote an offset; its sign and the load do. An offset that
/// mobility robustness raised itself on a loaded cell is held too, until the load falls.
fn load_balancing_holds(
    view: &RadioView,
    input: &PeriodInput,
    source: u32,
    target: u32,
) -> Option<Direction> {
    let release = f64::from(view.tuning.load_balancing.release_pct);
    let loaded = |c: u32| input.prb_pct(view, c).is_some_and(|l| l >= release);
    let cio = view.relation(source, target)?.cio_db;
    if cio > 0 && loaded(source) {
        Some(Direction::Later)
    } else if cio < 0 && loaded(target) {
        Some(Direction::Sooner)
    } else {
        None
    }
}

/// The cell-wide step: which parameter, from what, to what.
fn cell_step(hysteresis: u8, ttt: u16, direction: Direction) -> Option<(Param, i64, i64)> {
    let (h, t) = (i64::from(hysteresis), i64::from(ttt));
    match direction {
        Direction::Sooner => match ttt_step(ttt, false) {
            Some(to) if ttt > 100 => Some((Param::TimeToTriggerMs, t, i64::from(to))),
            _ if hysteresis > 0 => Some((Param::Hysteresis, h, h - 1)),
            _ => None,
        },
        Direction::Later if hysteresis < 10 => Some((Param::Hysteresis, h, h + 1)),
        Direction::Later => {
            ttt_step(ttt, true).map(|to| (Param::TimeToTriggerMs, t, i64::from(to)))
        }
    }
}

/// Proposals for this period: at most one change set per cell.
pub fn propose(view: &RadioView, input: &PeriodInput, node: u64, now_ms: u64) -> Vec<Proposal> {
    let bound = view.policy.max_son_cio_db;
    let tuning = &view.tuning.mobility_robustness;
    let mut out = Vec::new();
    for &c in &view.own {
        let Some(rels) = input.relations.get(&c) else {
            continue;
        };
        if input.outage.contains(&c) {
            continue;
        }
        let mut cell = Failures::default();
        // Handovers into a cell in outage fail for the outage's sake, not the mobility's.
        let per_relation: Vec<(u32, Failures)> = rels
            .iter()
            .filter(|(t, _)| !input.outage.contains(t) && !view.seems_in_outage(*t))
            .map(|(t, v)| {
                let held = load_balancing_holds(view, input, c, *t);
                // A wrong-cell handover towards a target whose PCI clashes is the PCI's fault
                // (looked up only when there are some: it lists the cell's neighbours).
                let wrong = v[rc::WRONG_CELL];
                let wrong = if wrong > 0 && view.pci_clash(c, *t).is_some() {
                    0
                } else {
                    wrong
                };
                let mut f = Failures {
                    att: v[rc::ATT],
                    late: v[rc::TOO_LATE],
                    early: v[rc::TOO_EARLY] + wrong,
                    ping_pong: v[rc::PING_PONG],
                };
                // What load balancing's offset was set to cause is no failure of mobility's:
                // counted, it would step the offset back (or move the cell's timing against
                // it) only for load balancing to set it again.
                match held {
                    Some(Direction::Later) => (f.early, f.ping_pong) = (0, 0),
                    Some(Direction::Sooner) => f.late = 0,
                    None => {}
                }
                cell.add(f);
                (*t, f)
            })
            .collect();
        let wanted = cell.direction(tuning);
        // The share of the attempts, on relations with enough attempts of their own, whose
        // ratios lean towards `d`; without any such relation the problem cannot be placed and
        // is the cell's.
        let share = |d: Direction| {
            let judged = per_relation
                .iter()
                .filter(|(_, f)| f.att >= u64::from(tuning.min_attempts));
            let (asking, all) = judged.fold((0, 0), |(a, n), (_, f)| {
                (a + if f.leans(d, tuning) { f.att } else { 0 }, n + f.att)
            });
            if all == 0 {
                1.0
            } else {
                asking as f64 / all as f64
            }
        };
        let me = view.cell(c);
        let cell_wide = f64::from(tuning.cell_wide_permille) / 1000.0;
        if let Some(d) = wanted.filter(|d| share(*d) >= cell_wide) {
            // A cell-wide problem with nothing left to step is left alone: offsets are for
            // relations (and load balancing's), not a cell's whole timing.
            let Some((param, from, to)) = cell_step(me.hysteresis, me.time_to_trigger_ms, d) else {
                continue;
            };
            out.push(Proposal {
                change_set: ChangeSet {
                    origin: Origin {
                        node,
                        function: Function::MobilityRobustness,
                    },
                    reason: format!(
                        "{} has {} (cell-wide): {param} {from} -> {to}",
                        view.id(c),
                        cell.describe()
                    ),
                    read_set: vec![view.read_cell(c)],
                    writes: vec![Write {
                        entity: EntityRef::cell(view.id(c)),
                        param,
                        value: Value::Int(to),
                    }],
                    proposed_at_ms: now_ms,
                },
                cells: vec![view.id(c).to_string()],
            });
            continue;
        }
        // The problem is on some relations only: move their offsets.
        let mut read_set: Vec<ReadVersion> = Vec::new();
        let mut writes = Vec::new();
        let mut why = Vec::new();
        for (t, f) in &per_relation {
            let (Some(d), Some(rel)) = (f.direction(tuning), view.relation(c, *t)) else {
                continue;
            };
            let Some(to) = rel
                .ho_allowed
                .then(|| cio_step(rel.cio_db, d, bound))
                .flatten()
            else {
                continue;
            };
            read_set.push(view.read_relation(c, rel));
            writes.push(Write {
                entity: EntityRef::relation(view.id(c), view.id(*t)),
                param: Param::CioDb,
                value: Value::Int(to.into()),
            });
            why.push(format!(
                "-> {} has {}: CIO {} -> {to} dB",
                view.id(*t),
                f.describe(),
                rel.cio_db
            ));
        }
        if writes.is_empty() {
            continue;
        }
        out.push(Proposal {
            change_set: ChangeSet {
                origin: Origin {
                    node,
                    function: Function::MobilityRobustness,
                },
                reason: format!("{} per relation: {}", view.id(c), why.join("; ")),
                read_set,
                writes,
                proposed_at_ms: now_ms,
            },
            cells: vec![view.id(c).to_string()],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use sonraft_raft::changeset::Function;
    use sonraft_raft::model::{EntityRef, Value};

    use super::super::testing::{cell, counters, image, period, relation, view};
    use super::*;

    /// A1 (hysteresis `hyst`, time-to-trigger `ttt`) with handovers towards A2 and Z1.
    fn one_cell(hyst: u8, ttt: u16) -> sonraft_raft::model::image::NetworkImage {
        let mut a1 = cell("A1", 1, 1300);
        a1["hysteresis"] = hyst.into();
        a1["time_to_trigger_ms"] = ttt.into();
        image(
            vec![a1, cell("A2", 2, 1300), cell("Z1", 3, 1300)],
            vec![relation("A1", "A2"), relation("A1", "Z1")],
        )
    }

    /// `(param, new value)` of each proposal, after checking its function and read set.
    fn moves(img: &sonraft_raft::model::image::NetworkImage, p: &[Proposal]) -> Vec<(Param, i64)> {
        p.iter()
            .map(|p| {
                let cs = &p.change_set;
                assert_eq!(cs.origin.function, Function::MobilityRobustness);
                assert_eq!(cs.read_set.len(), 1);
                assert_eq!(cs.read_set[0].entity, EntityRef::cell("A1"));
                assert_eq!(cs.read_set[0].version, img.cells["A1"].version);
                let w = &cs.writes[0];
                assert_eq!(w.entity, EntityRef::cell("A1"));
                let Value::Int(v) = w.value else {
                    panic!("{w:?}")
                };
                (w.param, v)
            })
            .collect()
    }

    /// Proposals for A1's relations reporting `(early, late, ping-pong)` out of `att` each.
    fn run(hyst: u8, ttt: u16, att: u64, early: u64, late: u64, pp: u64) -> Vec<(Param, i64)> {
        let img = one_cell(hyst, ttt);
        let v = view(&img);
        let c = counters(att, att - early - late, early, late, pp);
        let input = period(&v, &[("A1", "A2", c), ("A1", "Z1", c)]);
        moves(&img, &propose(&v, &input, 1, 0))
    }

    #[test]
    fn too_many_late_handovers_shorten_time_to_trigger_by_one_step() {
        assert_eq!(run(4, 320, 50, 0, 5, 0), [(Param::TimeToTriggerMs, 256)]);
    }

    #[test]
    fn late_handovers_at_the_shortest_useful_time_to_trigger_lower_hysteresis() {
        assert_eq!(run(4, 100, 50, 0, 5, 0), [(Param::Hysteresis, 3)]);
        assert!(run(0, 100, 50, 0, 5, 0).is_empty(), "nothing left to lower");
    }

    #[test]
    fn too_many_early_or_ping_pong_handovers_raise_hysteresis() {
        assert_eq!(run(4, 320, 50, 5, 0, 0), [(Param::Hysteresis, 5)]);
        assert_eq!(run(4, 320, 50, 0, 0, 6), [(Param::Hysteresis, 5)]);
    }

    #[test]
    fn with_hysteresis_at_its_ceiling_early_handovers_lengthen_time_to_trigger() {
        assert_eq!(run(10, 320, 50, 5, 0, 0), [(Param::TimeToTriggerMs, 480)]);
        assert!(
            run(10, 5120, 50, 5, 0, 0).is_empty(),
            "nothing left to raise"
        );
    }

    #[test]
    fn balanced_late_and_early_handovers_change_nothing() {
        // A step either way would trade one failure for the other.
        assert!(run(4, 320, 50, 5, 5, 0).is_empty());
        assert!(
            run(4, 320, 50, 3, 5, 0).is_empty(),
            "late 5, early 3: not twice"
        );
    }

    #[test]
    fn late_handovers_at_twice_the_early_ones_win() {
        assert_eq!(run(4, 320, 50, 2, 5, 0), [(Param::TimeToTriggerMs, 256)]);
        assert_eq!(run(4, 320, 50, 5, 2, 0), [(Param::Hysteresis, 5)]);
    }

    #[test]
    fn fewer_than_three_failures_are_noise_whatever_their_ratio() {
        // 2 x 30 attempts, one too late each: 3.3 %, but two events.
        assert!(run(4, 320, 30, 0, 1, 0).is_empty());
        assert_eq!(run(4, 320, 30, 0, 2, 0), [(Param::TimeToTriggerMs, 256)]);
    }

    /// A1 -> A2 (`a2` counters) and A1 -> Z1 (`z1`), with PCIs `pci_a2` and `pci_z1` and the
    /// offset A1 -> A2 at `cio`: the CIO writes proposed, `(target, new offset)`.
    fn per_relation(
        a2: [u64; 6],
        z1: [u64; 6],
        pci_a2: u16,
        pci_z1: u16,
        cio: i8,
    ) -> Vec<(String, i64)> {
        let mut r = relation("A1", "A2");
        r["cio_db"] = cio.into();
        let img = image(
            vec![
                cell("A1", 1, 1300),
                cell("A2", pci_a2, 1300),
                cell("Z1", pci_z1, 1300),
            ],
            vec![r, relation("A1", "Z1")],
        );
        let v = view(&img);
        let input = period(&v, &[("A1", "A2", a2), ("A1", "Z1", z1)]);
        let mut out = Vec::new();
        for p in propose(&v, &input, 1, 0) {
            let cs = &p.change_set;
            assert_eq!(
                cs.writes.len(),
                cs.read_set.len(),
                "it reads what it writes"
            );
            for (w, read) in cs.writes.iter().zip(&cs.read_set) {
                assert_eq!(w.entity, read.entity);
                let EntityRef::Relation(_, t) = &w.entity else {
                    return vec![(w.entity.to_string(), -99)];
                };
                assert_eq!(w.param, Param::CioDb);
                let Value::Int(to) = w.value else {
                    panic!("{w:?}")
                };
                out.push((t.to_string(), to));
            }
        }
        out
    }

    /// `[att, succ, early, late, wrong, ping-pong]`.
    const fn rel(att: u64, early: u64, late: u64, wrong: u64) -> [u64; 6] {
        [att, att - early - late - wrong, early, late, wrong, 0]
    }

    #[test]
    fn a_problem_on_one_relation_moves_only_its_offset() {
        // A1 -> A2 carries a third of the attempts and all the late handovers.
        let clean = rel(80, 0, 0, 0);
        assert_eq!(
            per_relation(rel(40, 0, 6, 0), clean, 2, 3, 0),
            [("A2".to_string(), 1)]
        );
        assert_eq!(
            per_relation(rel(40, 6, 0, 0), clean, 2, 3, 0),
            [("A2".to_string(), -1)]
        );
        // When the late relation carries half of the attempts, the problem is the cell's.
        assert_eq!(
            per_relation(rel(80, 0, 12, 0), clean, 2, 3, 0),
            [("cell/A1".to_string(), -99)]
        );
    }

    #[test]
    fn offsets_stay_within_the_policys_bound_but_may_always_come_back() {
        let clean = rel(80, 0, 0, 0);
        assert!(per_relation(rel(40, 0, 6, 0), clean, 2, 3, 6).is_empty());
        assert_eq!(
            per_relation(rel(40, 6, 0, 0), clean, 2, 3, 6),
            [("A2".to_string(), 5)]
        );
        assert_eq!(
            per_relation(rel(40, 6, 0, 0), clean, 2, 3, 10),
            [("A2".to_string(), 8)]
        );
    }

    /// Proposals for A1 with the offsets A1 -> A2 at `out` and A2 -> A1 at `back`, A1 at
    /// `load` % of its PRBs, and the handovers `a1_a2` and `a2_a1` on those relations (each
    /// beside a clean relation to Z1 that carries most of the attempts): `(relation, new
    /// offset)` per write.
    fn with_load(
        out: i8,
        back: i8,
        load: f64,
        a1_a2: [u64; 6],
        a2_a1: [u64; 6],
    ) -> Vec<(String, i64)> {
        let (mut r, mut b) = (relation("A1", "A2"), relation("A2", "A1"));
        r["cio_db"] = out.into();
        b["cio_db"] = back.into();
        let img = image(
            vec![
                cell("A1", 1, 1300),
                cell("A2", 2, 1300),
                cell("Z1", 3, 1300),
            ],
            vec![r, b, relation("A1", "Z1"), relation("A2", "Z1")],
        );
        let v = view(&img);
        let clean = rel(80, 0, 0, 0);
        let mut input = period(
            &v,
            &[
                ("A1", "A2", a1_a2),
                ("A1", "Z1", clean),
                ("A2", "A1", a2_a1),
                ("A2", "Z1", clean),
            ],
        );
        input.prb_pct.insert(v.index["A1"], load);
        input.prb_pct.insert(v.index["A2"], 30.0);
        propose(&v, &input, 1, 0)
            .iter()
            .flat_map(|p| p.change_set.writes.iter())
            .map(|w| {
                let Value::Int(to) = w.value else {
                    panic!("{w:?}")
                };
                (w.entity.to_string(), to)
            })
            .collect()
    }

    #[test]
    fn offsets_load_balancing_holds_for_a_loaded_cell_are_not_stepped_back() {
        let clean = rel(40, 0, 0, 0);
        // Load balancing raised A1 -> A2 to 6 dB to move A1's edge users out early: the early
        // handovers are what it set the offset for while A1 stays loaded.
        let early = rel(40, 6, 0, 0);
        assert!(with_load(6, 0, 75.0, early, clean).is_empty());
        // ... and lowered A2 -> A1 to -6 dB to keep them out: late handovers back into A1 too.
        let late = rel(40, 0, 6, 0);
        assert!(with_load(0, -6, 75.0, clean, late).is_empty());
        // Once A1 is under load balancing's release threshold the offsets are anyone's again.
        assert_eq!(
            with_load(6, 0, 40.0, early, clean),
            [("relation/A1/A2".to_string(), 5)]
        );
        assert_eq!(
            with_load(0, -6, 40.0, clean, late),
            [("relation/A2/A1".to_string(), -5)]
        );
        // A failure the offset was not set to cause still counts: late handovers on a raised
        // offset ask for more of it.
        assert_eq!(
            with_load(4, 0, 75.0, late, clean),
            [("relation/A1/A2".to_string(), 5)]
        );
    }

    #[test]
    fn wrong_cell_handovers_count_as_early_unless_the_targets_pci_clashes() {
        let clean = rel(80, 0, 0, 0);
        assert_eq!(
            per_relation(rel(40, 0, 0, 6), clean, 2, 3, 0),
            [("A2".to_string(), -1)]
        );
        // A2 and Z1 share PCI 2: from A1 they are confused, which the PCI function fixes.
        assert!(per_relation(rel(40, 0, 0, 6), clean, 2, 2, 0).is_empty());
    }

    #[test]
    fn ratios_at_the_thresholds_change_nothing() {
        // 3 of 100 too late, 3 of 100 too early, 5 of 100 ping-pong: exactly at the limits.
        assert!(run(4, 320, 100, 0, 0, 0).is_empty());
        assert!(run(4, 320, 100, 3, 0, 0).is_empty(), "early at 3 %");
        assert!(run(4, 320, 100, 0, 3, 0).is_empty(), "late at 3 %");
        assert!(run(4, 320, 100, 0, 0, 5).is_empty(), "ping-pong at 5 %");
        assert_eq!(
            run(4, 320, 100, 4, 0, 0),
            [(Param::Hysteresis, 5)],
            "just above"
        );
    }

    #[test]
    fn fewer_than_twenty_attempts_are_no_evidence() {
        // 2 x 9 attempts, a third of them too late.
        assert!(run(4, 320, 9, 0, 3, 0).is_empty());
        assert_eq!(run(4, 320, 10, 0, 3, 0), [(Param::TimeToTriggerMs, 256)]);
    }

    #[test]
    fn another_sites_cells_are_left_to_that_site() {
        let img = one_cell(4, 320);
        let v = view(&img);
        let input = period(&v, &[("Z1", "A1", counters(50, 40, 0, 10, 0))]);
        assert!(propose(&v, &input, 1, 0).is_empty());
    }
}
