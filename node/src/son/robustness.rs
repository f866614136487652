//! Mobility robustness: hysteresis and time-to-trigger from the too-late, too-early and
//! ping-pong ratios of a cell's outgoing handovers.
//!
//! More than 3 % too-late handovers: hand over sooner (time-to-trigger one step down while it is
//! above 100 ms, else hysteresis −0.5 dB). More than 3 % too-early or 5 % ping-pong: hand over
//! later (hysteresis +0.5 dB up to 5 dB, else time-to-trigger one step up). At least 20
//! attempts are needed to judge.

use sonraft_protocol::relation_counter as rc;
use sonraft_raft::changeset::{ChangeSet, Function, Origin, Write};
use sonraft_raft::model::{EntityRef, Param, TIME_TO_TRIGGER_MS, Value};

use super::view::RadioView;
use super::{PeriodInput, Proposal};

pub const MAX_LATE: f64 = 0.03;
pub const MAX_EARLY: f64 = 0.03;
pub const MAX_PING_PONG: f64 = 0.05;
pub const MIN_ATTEMPTS: u64 = 20;

fn ttt_step(ttt: u16, up: bool) -> Option<u16> {
    let i = TIME_TO_TRIGGER_MS.iter().position(|t| *t == ttt)?;
    if up {
        TIME_TO_TRIGGER_MS.get(i + 1).copied()
    } else {
        i.checked_sub(1).map(|j| TIME_TO_TRIGGER_MS[j])
    }
}

/// Proposals for this period.
pub fn propose(view: &RadioView, input: &PeriodInput, node: u64, now_ms: u64) -> Vec<Proposal> {
    let mut out = Vec::new();
    for &c in &view.own {
        let Some(rels) = input.relations.get(&c) else {
            continue;
        };
        let sum = |k: usize| rels.iter().map(|(_, v)| v[k]).sum::<u64>();
        let att = sum(rc::ATT);
        if att < MIN_ATTEMPTS {
            continue;
        }
        let ratio = |k: usize| sum(k) as f64 / att as f64;
        let (late, early, pp) = (
            ratio(rc::TOO_LATE),
            ratio(rc::TOO_EARLY),
            ratio(rc::PING_PONG),
        );
        let cell = view.cell(c);
        let (param, to, why) = if late > MAX_LATE {
            match ttt_step(cell.time_to_trigger_ms, false) {
                Some(t) if cell.time_to_trigger_ms > 100 => (
                    Param::TimeToTriggerMs,
                    i64::from(t),
                    format!("{:.1} % too-late handovers", late * 100.0),
                ),
                _ if cell.hysteresis > 0 => (
                    Param::Hysteresis,
                    i64::from(cell.hysteresis) - 1,
                    format!("{:.1} % too-late handovers", late * 100.0),
                ),
                _ => continue,
            }
        } else if early > MAX_EARLY || pp > MAX_PING_PONG {
            let why = format!(
                "{:.1} % too-early, {:.1} % ping-pong handovers",
                early * 100.0,
                pp * 100.0
            );
            if cell.hysteresis < 10 {
                (Param::Hysteresis, i64::from(cell.hysteresis) + 1, why)
            } else if let Some(t) = ttt_step(cell.time_to_trigger_ms, true) {
                (Param::TimeToTriggerMs, i64::from(t), why)
            } else {
                continue;
            }
        } else {
            continue;
        };
        let from = if param == Param::Hysteresis {
            i64::from(cell.hysteresis)
        } else {
            i64::from(cell.time_to_trigger_ms)
        };
        out.push(Proposal {
            change_set: ChangeSet {
                origin: Origin {
                    node,
                    function: Function::MobilityRobustness,
                },
                reason: format!(
                    "{} has {why} over {att} attempts: {param} {from} -> {to}",
                    view.id(c)
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
    fn late_handovers_are_fixed_before_early_ones() {
        assert_eq!(run(4, 320, 50, 5, 5, 0), [(Param::TimeToTriggerMs, 256)]);
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
