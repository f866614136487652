//! ANR: relations that carry no handovers are pruned, relations whose handovers fail are barred.
//!
//! The numbers are the replicated tuning's ([`AnrTuning`]; defaults in brackets).
//!
//! - A relation without handover attempts for `idle_prune_ms` (7 days: traffic has weekly
//!   cycles) and at least `min_idle_periods` (3) periods in a row is removed
//!   (`exists = false`) — unless `remove_allowed` is false, its handovers are barred already
//!   (an operator's or this function's decision, kept), or its target is down or dormant
//!   (a locked or energy-saving cell has no traffic to hand over to; it comes back).
//! - A relation on which fewer than `failing_success_permille` (half) of at least
//!   `failing_min_attempts` (10) attempts succeed for `failing_periods` (3) periods in a row is
//!   not removed: its handovers are barred
//!   (`ho_allowed = false`, TS 32.511's "no HO" attribute) with the suspected cause in the
//!   reason, so the operator sees why and can allow them again. A relation whose target's PCI
//!   clashes with the source or with another of its neighbours is left to the PCI function:
//!   its handovers fail for a reason that function fixes.
//!
//! Relations the operator created are never pruned (the apply-time rules refuse it).

use sonraft_protocol::relation_counter as rc;
use sonraft_raft::changeset::{ChangeSet, Function, Origin, Write};
use sonraft_raft::model::{EntityRef, Param, Value};
use sonraft_raft::son::AnrTuning;

use super::view::{FastMap, RadioView};
use super::{PeriodInput, Proposal};

/// One relation's evidence so far.
#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    /// Consecutive periods without attempts, and since when (this node's clock).
    idle: u8,
    idle_since_ms: u64,
    /// Consecutive failing periods.
    failing: u8,
}

/// Per relation (keyed by a hash of source and target id): its idle and failing streaks.
#[derive(Debug, Default)]
pub struct Streaks {
    bad: FastMap<u64, Streak>,
}

/// The likeliest cause of a relation's failed handovers, from its mobility counters.
fn suspected_cause(v: &[u64]) -> String {
    let failed = v[rc::ATT].saturating_sub(v[rc::SUCC]).max(1);
    let (late, early, wrong) = (v[rc::TOO_LATE], v[rc::TOO_EARLY], v[rc::WRONG_CELL]);
    let named = [
        (late, "too late (a coverage gap towards the target)"),
        (early, "too early (the target's coverage does not hold)"),
        (
            wrong,
            "to the wrong cell (an overshooting or missing neighbour)",
        ),
    ];
    match named.iter().max_by_key(|(n, _)| *n) {
        Some((n, what)) if 2 * n >= failed => format!("most failures are {what}"),
        _ => "the failures have no mobility cause (admission or radio link at the target)".into(),
    }
}

impl Streaks {
    /// Counts this period's evidence and proposes the relations that were bad long enough.
    pub fn propose(
        &mut self,
        view: &RadioView,
        input: &PeriodInput,
        node: u64,
        now_ms: u64,
    ) -> Vec<Proposal> {
        let tuning: &AnrTuning = &view.tuning.anr;
        let mut out = Vec::new();
        // Sized for last period's relations: grown from empty, it rehashed ~20 times a period.
        let mut seen = FastMap::with_capacity_and_hasher(self.bad.len(), Default::default());
        for (&c, rels) in &input.relations {
            for (t, v) in rels {
                let Some(rel) = view.relation(c, *t) else {
                    continue;
                };
                let before = self.bad.get(&rel.key).copied().unwrap_or_default();
                // An outage at either end says nothing about the relation: its streaks wait.
                // Another site's target is judged by its replicated summary.
                if input.outage.contains(&c) || input.outage.contains(t) || view.seems_in_outage(*t)
                {
                    seen.insert(rel.key, before);
                    continue;
                }
                let is_idle = v[rc::ATT] == 0;
                let is_failing = v[rc::ATT] >= u64::from(tuning.failing_min_attempts)
                    && v[rc::SUCC] * 1000 < u64::from(tuning.failing_success_permille) * v[rc::ATT];
                let next = Streak {
                    idle: if is_idle {
                        before.idle.saturating_add(1)
                    } else {
                        0
                    },
                    idle_since_ms: match (is_idle, before.idle) {
                        (true, 0) => now_ms,
                        (true, _) => before.idle_since_ms,
                        (false, _) => 0,
                    },
                    failing: if is_failing {
                        before.failing.saturating_add(1)
                    } else {
                        0
                    },
                };
                seen.insert(rel.key, next);
                if !rel.ho_allowed {
                    continue;
                }
                // Built only for a proposal: this loop sees every reported relation a period.
                let text = || format!("relation {} -> {}", view.id(c), view.id(*t));
                let idle_for = now_ms.saturating_sub(next.idle_since_ms);
                let (param, value, reason) = if next.idle >= tuning.min_idle_periods
                    && idle_for >= tuning.idle_prune_ms
                {
                    if !rel.remove_allowed || view.cell(*t).down {
                        continue;
                    }
                    (
                        Param::Exists,
                        false,
                        format!(
                            "{}: no handover attempts for {} s ({} periods); pruning",
                            text(),
                            idle_for / 1000,
                            next.idle
                        ),
                    )
                } else if next.failing >= tuning.failing_periods {
                    if let Some(clash) = view.pci_clash(c, *t) {
                        tracing::trace!(
                            relation = %text(),
                            clash = view.id(clash),
                            "failing relation left to the PCI function"
                        );
                        continue;
                    }
                    (
                        Param::HoAllowed,
                        false,
                        format!(
                            "{}: {} of {} handovers succeeded, failing for {} periods; {}; handovers barred",
                            text(),
                            v[rc::SUCC],
                            v[rc::ATT],
                            next.failing,
                            suspected_cause(v)
                        ),
                    )
                } else {
                    continue;
                };
                out.push(Proposal {
                    change_set: ChangeSet {
                        origin: Origin {
                            node,
                            function: Function::AnrPruning,
                        },
                        reason,
                        read_set: vec![view.read_relation(c, rel)],
                        writes: vec![Write {
                            entity: EntityRef::relation(view.id(c), view.id(*t)),
                            param,
                            value: Value::Bool(value),
                        }],
                        proposed_at_ms: now_ms,
                    },
                    cells: vec![view.id(c).to_string()],
                });
            }
        }
        self.bad = seen;
        out
    }
}

#[cfg(test)]
mod tests {
    use sonraft_raft::model::image::NetworkImage;

    use super::super::testing::{cell, image, period, relation, view};
    use super::*;

    /// A1 with relations to A2 (removable), A3 (`remove_allowed = false`), A4 (handovers
    /// barred).
    fn img() -> NetworkImage {
        let mut protected = relation("A1", "A3");
        protected["remove_allowed"] = false.into();
        let mut barred = relation("A1", "A4");
        barred["ho_allowed"] = false.into();
        image(
            vec![
                cell("A1", 1, 1300),
                cell("A2", 2, 1300),
                cell("A3", 3, 1300),
                cell("A4", 4, 1300),
            ],
            vec![relation("A1", "A2"), protected, barred],
        )
    }

    /// Runs the periods (each the counters of A1's relations to A2, A3 and A4) and returns
    /// after which period (1-based) each write was proposed: `(period, target, param)`.
    fn decisions(img: &NetworkImage, periods: &[Option<[u64; 6]>]) -> Vec<(usize, String, Param)> {
        let mut v = view(img);
        // Periods of a second: a relation idle for three of them has been idle long enough.
        v.tuning.anr.idle_prune_ms = 2_000;
        let mut streaks = Streaks::default();
        let mut out = Vec::new();
        for (n, c) in periods.iter().enumerate() {
            let reports: Vec<(&str, &str, [u64; 6])> = match c {
                Some(c) => ["A2", "A3", "A4"]
                    .into_iter()
                    .filter(|t| v.index.contains_key(*t))
                    .map(|t| ("A1", t, *c))
                    .collect(),
                None => Vec::new(),
            };
            let now = 1_000 * n as u64;
            for p in streaks.propose(&v, &period(&v, &reports), 1, now) {
                let cs = &p.change_set;
                assert_eq!(cs.origin.function, Function::AnrPruning);
                let w = &cs.writes[0];
                assert_eq!(w.value, Value::Bool(false));
                let EntityRef::Relation(s, t) = &w.entity else {
                    panic!("{w:?}")
                };
                assert_eq!(cs.read_set[0].entity, w.entity, "it reads what it prunes");
                assert_eq!(
                    cs.read_set[0].version,
                    img.relations[&(s.clone(), t.clone())].version
                );
                out.push((n + 1, t.to_string(), w.param));
            }
        }
        out
    }

    /// After which period each relation would be removed, `(period, target)`.
    fn prunings(periods: &[Option<[u64; 6]>]) -> Vec<(usize, String)> {
        writes_of(Param::Exists, &img(), periods)
    }

    /// After which period each relation's handovers would be barred, `(period, target)`.
    fn barrings(periods: &[Option<[u64; 6]>]) -> Vec<(usize, String)> {
        writes_of(Param::HoAllowed, &img(), periods)
    }

    fn writes_of(
        param: Param,
        img: &NetworkImage,
        periods: &[Option<[u64; 6]>],
    ) -> Vec<(usize, String)> {
        decisions(img, periods)
            .into_iter()
            .filter(|(_, _, p)| *p == param)
            .map(|(n, t, _)| (n, t))
            .collect()
    }

    const DEAD: Option<[u64; 6]> = Some([0, 0, 0, 0, 0, 0]);
    const FAILING: Option<[u64; 6]> = Some([20, 9, 0, 0, 0, 0]);
    const GOOD: Option<[u64; 6]> = Some([20, 19, 0, 0, 0, 0]);

    #[test]
    fn a_relation_without_handovers_for_three_periods_is_pruned_on_the_third() {
        assert_eq!(prunings(&[DEAD, DEAD, DEAD]), [(3, "A2".to_string())]);
    }

    #[test]
    fn an_idle_relation_is_pruned_only_after_the_idle_window() {
        let img = img();
        let mut v = view(&img);
        v.tuning.anr.idle_prune_ms = 60_000;
        let mut streaks = Streaks::default();
        let dead = [0; 6];
        // A period every 10 s: idle since the first, pruned once 60 s have passed.
        let mut pruned_at = None;
        for n in 0..10u64 {
            let p = streaks.propose(&v, &period(&v, &[("A1", "A2", dead)]), 1, n * 10_000);
            if !p.is_empty() && pruned_at.is_none() {
                pruned_at = Some(n);
            }
        }
        assert_eq!(pruned_at, Some(6));
        // The default window is a week: a day of idle periods prunes nothing.
        let v = view(&img);
        let mut streaks = Streaks::default();
        for n in 0..=24u64 {
            let p = streaks.propose(&v, &period(&v, &[("A1", "A2", dead)]), 1, n * 3_600_000);
            assert!(p.is_empty(), "pruned after {n} hours");
        }
    }

    #[test]
    fn a_relation_failing_for_three_periods_has_its_handovers_barred_not_removed() {
        assert!(barrings(&[FAILING, FAILING]).is_empty());
        assert_eq!(
            barrings(&[FAILING, FAILING, FAILING]),
            [(3, "A2".to_string()), (3, "A3".to_string())],
            "a protected relation may be barred: it stays"
        );
        assert!(
            prunings(&[FAILING; 6]).is_empty(),
            "a failing relation is never removed"
        );
    }

    #[test]
    fn a_barred_relation_says_the_suspected_cause() {
        let img = img();
        let v = view(&img);
        let mut streaks = Streaks::default();
        // 20 attempts, 8 succeed, 9 too late.
        let late = [20, 8, 1, 9, 2, 0];
        let mut last = Vec::new();
        for _ in 0..3 {
            last = streaks.propose(&v, &period(&v, &[("A1", "A2", late)]), 1, 0);
        }
        assert_eq!(last.len(), 1);
        let reason = &last[0].change_set.reason;
        assert!(reason.contains("most failures are too late"), "{reason}");
        assert!(reason.contains("8 of 20"), "{reason}");
    }

    #[test]
    fn a_failing_relation_into_a_pci_clash_is_left_to_the_pci_function() {
        // A2 and A3 share PCI 2: from A1, handovers to A2 may reach A3 (a confusion).
        let img = image(
            vec![
                cell("A1", 1, 1300),
                cell("A2", 2, 1300),
                cell("A3", 2, 1300),
            ],
            vec![relation("A1", "A2"), relation("A1", "A3")],
        );
        let v = view(&img);
        let mut streaks = Streaks::default();
        for _ in 0..4 {
            let p = streaks.propose(&v, &period(&v, &[("A1", "A2", FAILING.unwrap())]), 1, 0);
            assert!(p.is_empty(), "{p:?}");
        }
    }

    #[test]
    fn an_idle_relation_into_a_locked_or_dormant_cell_is_kept() {
        for (param, value) in [("admin_state", "locked"), ("energy_saving", "dormant")] {
            let mut down = cell("A2", 2, 1300);
            down[param] = value.into();
            let img = image(vec![cell("A1", 1, 1300), down], vec![relation("A1", "A2")]);
            assert!(
                writes_of(Param::Exists, &img, &[DEAD; 5]).is_empty(),
                "pruned into a {value} cell"
            );
        }
    }

    #[test]
    fn relations_into_a_cell_in_outage_are_neither_pruned_nor_barred() {
        let img = img();
        let mut v = view(&img);
        v.tuning.anr.idle_prune_ms = 2_000;
        let mut streaks = Streaks::default();
        for n in 0..6u64 {
            let mut input = period(
                &v,
                &[("A1", "A2", [0; 6]), ("A1", "A3", [20, 2, 0, 0, 0, 0])],
            );
            input.outage.insert(v.index["A2"]);
            input.outage.insert(v.index["A3"]);
            assert!(streaks.propose(&v, &input, 1, 1_000 * n).is_empty());
        }
        // Back from the outage: the count starts where it stood, not six periods on.
        let input = period(&v, &[("A1", "A2", [0; 6])]);
        assert!(streaks.propose(&v, &input, 1, 7_000).is_empty());
    }

    #[test]
    fn relations_into_another_sites_cell_that_serves_nobody_are_not_barred() {
        // Z1 is site-b's: site-a cannot run detection on it, but the KPI summary site-b
        // replicates says it has no user and no PRB in use while it is unlocked: the signature
        // of a sleeping cell, into which handovers fail. Barring those relations would outlive
        // the outage; their streaks wait instead.
        let mut img = image(
            vec![cell("A1", 1, 1300), cell("Z1", 11, 1300)],
            vec![relation("A1", "Z1")],
        );
        let summary = |rrc: u32, prb: u16| sonraft_raft::model::KpiSummary {
            cell: "Z1".into(),
            period_end_ms: 1_000,
            prb_dl_permille: prb,
            rrc_conn_mean: rrc,
            thp_dl_kbps: 0,
            ho_att: 0,
            ho_succ: 0,
        };
        img.kpis.insert("Z1".into(), summary(0, 0));
        let v = view(&img);
        let mut streaks = Streaks::default();
        for _ in 0..4 {
            let p = streaks.propose(&v, &period(&v, &[("A1", "Z1", FAILING.unwrap())]), 1, 0);
            assert!(p.is_empty(), "{p:?}");
        }
        // Serving again, and the handovers still fail: barred after the usual three periods.
        img.kpis.insert("Z1".into(), summary(12, 300));
        let v = view(&img);
        let mut barred = Vec::new();
        for _ in 0..3 {
            barred = streaks.propose(&v, &period(&v, &[("A1", "Z1", FAILING.unwrap())]), 1, 0);
        }
        assert_eq!(barred.len(), 1, "{barred:?}");
    }

    #[test]
    fn a_good_or_missing_period_restarts_the_count() {
        assert!(prunings(&[DEAD, DEAD, GOOD, DEAD, DEAD]).is_empty());
        assert!(prunings(&[DEAD, DEAD, None, DEAD, DEAD]).is_empty());
        assert_eq!(
            barrings(&[FAILING, FAILING, GOOD, FAILING, FAILING, FAILING])[0],
            (6, "A2".to_string())
        );
    }

    #[test]
    fn dead_and_failing_periods_are_counted_apart() {
        assert!(prunings(&[DEAD, FAILING, DEAD]).is_empty());
    }

    #[test]
    fn under_ten_attempts_a_relation_is_not_failing() {
        assert!(barrings(&[Some([9, 0, 0, 0, 0, 0]); 4]).is_empty());
    }

    #[test]
    fn relations_with_remove_allowed_false_or_barred_handovers_are_never_pruned() {
        let pruned: Vec<String> = prunings(&[DEAD; 6]).into_iter().map(|(_, t)| t).collect();
        assert!(!pruned.contains(&"A3".to_string()), "{pruned:?}");
        assert!(!pruned.contains(&"A4".to_string()), "{pruned:?}");
        assert!(pruned.contains(&"A2".to_string()), "{pruned:?}");
    }
}
