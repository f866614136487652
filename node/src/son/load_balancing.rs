//! Mobility load balancing through the relations' cell individual offsets (CIO).
//!
//! A cell using more than 80 % of its downlink PRBs steps up the CIO (+2 dB, along the
//! Q-OffsetRange values) towards neighbours under 60 % whose handovers succeed at least 95 % of
//! the time, at most three per period, so that edge users move there. When the cell falls under
//! 50 % (a wide band, so that it does not oscillate), or a neighbour it offloads to rises over
//! 80 %, it steps back towards 0 dB. |CIO| stays
//! within the policy's bound.

use sonraft_raft::changeset::{ChangeSet, Function, Origin, Write};
use sonraft_raft::model::{EntityRef, Param, Q_OFFSET_RANGE_DB, Value};

use super::view::RadioView;
use super::{PeriodInput, Proposal};

pub const HIGH_PCT: f64 = 80.0;
pub const LOW_PCT: f64 = 60.0;
pub const RELEASE_PCT: f64 = 50.0;
pub const MIN_SUCCESS: f64 = 0.95;

fn next_q(cio: i8, up: bool, bound: i8) -> Option<i8> {
    let pos = Q_OFFSET_RANGE_DB.iter().position(|q| *q == cio)?;
    let next = if up {
        Q_OFFSET_RANGE_DB
            .iter()
            .skip(pos + 1)
            .find(|q| **q - cio >= 2 || **q == 24)
            .copied()?
    } else if cio > 0 {
        Q_OFFSET_RANGE_DB[..pos]
            .iter()
            .rev()
            .find(|q| cio - **q >= 1)
            .copied()?
            .max(0)
    } else {
        return None;
    };
    (next.abs() <= bound && (next - cio).abs() <= 3).then_some(next)
}

fn change(
    view: &RadioView,
    node: u64,
    now_ms: u64,
    c: u32,
    t: u32,
    to: i8,
    reason: String,
) -> Option<Proposal> {
    let rel = view.relation(c, t)?;
    Some(Proposal {
        change_set: ChangeSet {
            origin: Origin {
                node,
                function: Function::LoadBalancing,
            },
            reason,
            read_set: vec![view.read_relation(c, rel)],
            writes: vec![Write {
                entity: EntityRef::relation(view.id(c), view.id(t)),
                param: Param::CioDb,
                value: Value::Int(to.into()),
            }],
            proposed_at_ms: now_ms,
        },
        cells: vec![view.id(c).to_string()],
    })
}

/// Proposals for this period.
pub fn propose(view: &RadioView, input: &PeriodInput, node: u64, now_ms: u64) -> Vec<Proposal> {
    let bound = view.policy.max_son_cio_db;
    let mut out = Vec::new();
    for &c in &view.own {
        let Some(load) = input.prb_pct(view, c) else {
            continue;
        };
        let rels = &view.out[c as usize];
        if load > HIGH_PCT {
            let mut candidates: Vec<(f64, u32, i8)> = rels
                .iter()
                .filter(|r| r.ho_allowed)
                .filter_map(|r| {
                    let target_load = input.prb_pct(view, r.target)?;
                    let success = input.ho_success(c, r.target)?;
                    (target_load < LOW_PCT && success >= MIN_SUCCESS).then_some((
                        target_load,
                        r.target,
                        r.cio_db,
                    ))
                })
                .collect();
            candidates.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (target_load, t, cio) in candidates.into_iter().take(3) {
                let Some(to) = next_q(cio, true, bound) else {
                    continue;
                };
                let reason = format!(
                    "{} uses {load:.0} % of its DL PRBs; {} uses {target_load:.0} %: CIO {cio} -> {to} dB to move edge users",
                    view.id(c),
                    view.id(t)
                );
                out.extend(change(view, node, now_ms, c, t, to, reason));
            }
        } else {
            for r in rels.iter().filter(|r| r.cio_db > 0) {
                let target_load = input.prb_pct(view, r.target).unwrap_or(0.0);
                if load < RELEASE_PCT || target_load > HIGH_PCT {
                    let Some(to) = next_q(r.cio_db, false, 24) else {
                        continue;
                    };
                    let reason = format!(
                        "{} is at {load:.0} %, {} at {target_load:.0} %: CIO {} -> {to} dB (backing off)",
                        view.id(c),
                        view.id(r.target),
                        r.cio_db
                    );
                    out.extend(change(view, node, now_ms, c, r.target, to, reason));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::next_q;

    #[test]
    fn cio_steps_along_q_offset_values_within_the_bound() {
        assert_eq!(next_q(0, true, 6), Some(2));
        assert_eq!(next_q(4, true, 6), Some(6));
        assert_eq!(next_q(6, true, 6), None);
        assert_eq!(next_q(6, false, 24), Some(5));
        assert_eq!(next_q(1, false, 24), Some(0));
        assert_eq!(next_q(0, false, 24), None);
    }
}
