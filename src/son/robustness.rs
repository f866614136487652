//! Mobility robustness: hysteresis and time-to-trigger from the too-late, too-early and
//! ping-pong ratios of a cell's outgoing handovers.
//!
//! More than 3 % too-late handovers: hand over sooner (time-to-trigger one step down while it is
//! above 100 ms, else hysteresis −0.5 dB). More than 3 % too-early or 5 % ping-pong: hand over
//! later (hysteresis +0.5 dB up to 5 dB, else time-to-trigger one step up). At least 20
//! attempts are needed to judge.

use sonraft_raft::changeset::{ChangeSet, Function, Origin, Write};
use sonraft_raft::model::{EntityRef, Param, TIME_TO_TRIGGER_MS, Value};

use super::view::RadioView;
use super::{PeriodInput, Proposal};
use crate::antennas::protocol::relation_counter as rc;

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
