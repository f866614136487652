//! ANR pruning: a relation with no handover attempts, or with fewer than half of at least ten
//! attempts succeeding, for three periods in a row is removed — unless `remove_allowed` is
//! false, which no SON function ever overrides.

use sonraft_protocol::relation_counter as rc;
use sonraft_raft::changeset::{ChangeSet, Function, Origin, Write};
use sonraft_raft::model::{EntityRef, Param, Value};

use super::view::{FastMap, RadioView};
use super::{PeriodInput, Proposal};

/// Consecutive bad periods before a relation is pruned.
pub const PERIODS: u8 = 3;

/// Per relation (keyed by a hash of source and target id): consecutive periods without
/// attempts, and failing.
#[derive(Debug, Default)]
pub struct Streaks {
    bad: FastMap<u64, (u8, u8)>,
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
        let mut out = Vec::new();
        let mut seen = FastMap::default();
        for (&c, rels) in &input.relations {
            for (t, v) in rels {
                let Some(rel) = view.relation(c, *t) else {
                    continue;
                };
                let key = rel.key;
                let (dead, failing) = self.bad.get(&key).copied().unwrap_or_default();
                let is_dead = v[rc::ATT] == 0;
                let is_failing = v[rc::ATT] >= 10 && (v[rc::SUCC] as f64) < 0.5 * v[rc::ATT] as f64;
                let next = (
                    if is_dead { dead.saturating_add(1) } else { 0 },
                    if is_failing {
                        failing.saturating_add(1)
                    } else {
                        0
                    },
                );
                seen.insert(key, next);
                let Some(rel) = view.relation(c, *t) else {
                    continue;
                };
                if !rel.remove_allowed || !rel.ho_allowed || (next.0 < PERIODS && next.1 < PERIODS)
                {
                    continue;
                }
                let why = if next.0 >= PERIODS {
                    format!("no handover attempts for {} periods", next.0)
                } else {
                    format!(
                        "{} of {} handovers succeeded, failing for {} periods",
                        v[rc::SUCC],
                        v[rc::ATT],
                        next.1
                    )
                };
                out.push(Proposal {
                    change_set: ChangeSet {
                        origin: Origin {
                            node,
                            function: Function::AnrPruning,
                        },
                        reason: format!(
                            "relation {} -> {}: {why}; pruning",
                            view.id(c),
                            view.id(*t)
                        ),
                        read_set: vec![view.read_relation(c, rel)],
                        writes: vec![Write {
                            entity: EntityRef::relation(view.id(c), view.id(*t)),
                            param: Param::Exists,
                            value: Value::Bool(false),
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
    /// after which period (1-based) each pruning was proposed: `(period, target)`.
    fn prunings(periods: &[Option<[u64; 6]>]) -> Vec<(usize, String)> {
        let img = img();
        let v = view(&img);
        let mut streaks = Streaks::default();
        let mut out = Vec::new();
        for (n, c) in periods.iter().enumerate() {
            let reports: Vec<(&str, &str, [u64; 6])> = match c {
                Some(c) => vec![("A1", "A2", *c), ("A1", "A3", *c), ("A1", "A4", *c)],
                None => Vec::new(),
            };
            for p in streaks.propose(&v, &period(&v, &reports), 1, 0) {
                let cs = &p.change_set;
                assert_eq!(cs.origin.function, Function::AnrPruning);
                let w = &cs.writes[0];
                assert_eq!((w.param, &w.value), (Param::Exists, &Value::Bool(false)));
                let EntityRef::Relation(s, t) = &w.entity else {
                    panic!("{w:?}")
                };
                assert_eq!(cs.read_set[0].entity, w.entity, "it reads what it prunes");
                assert_eq!(
                    cs.read_set[0].version,
                    img.relations[&(s.clone(), t.clone())].version
                );
                out.push((n + 1, t.clone()));
            }
        }
        out
    }

    const DEAD: Option<[u64; 6]> = Some([0, 0, 0, 0, 0, 0]);
    const FAILING: Option<[u64; 6]> = Some([20, 9, 0, 0, 0, 0]);
    const GOOD: Option<[u64; 6]> = Some([20, 19, 0, 0, 0, 0]);

    #[test]
    fn a_relation_without_handovers_for_three_periods_is_pruned_on_the_third() {
        assert_eq!(prunings(&[DEAD, DEAD, DEAD]), [(3, "A2".to_string())]);
    }

    #[test]
    fn a_relation_failing_for_three_periods_is_pruned_on_the_third() {
        assert!(prunings(&[FAILING, FAILING]).is_empty());
        assert_eq!(
            prunings(&[FAILING, FAILING, FAILING]),
            [(3, "A2".to_string())]
        );
    }

    #[test]
    fn a_good_or_missing_period_restarts_the_count() {
        assert!(prunings(&[DEAD, DEAD, GOOD, DEAD, DEAD]).is_empty());
        assert!(prunings(&[DEAD, DEAD, None, DEAD, DEAD]).is_empty());
        assert_eq!(
            prunings(&[FAILING, FAILING, GOOD, FAILING, FAILING, FAILING]),
            [(6, "A2".to_string())]
        );
    }

    #[test]
    fn dead_and_failing_periods_are_counted_apart() {
        assert!(prunings(&[DEAD, FAILING, DEAD]).is_empty());
    }

    #[test]
    fn under_ten_attempts_a_relation_is_not_failing() {
        assert!(prunings(&[Some([9, 0, 0, 0, 0, 0]); 4]).is_empty());
    }

    #[test]
    fn relations_with_remove_allowed_false_or_barred_handovers_are_never_pruned() {
        let pruned: Vec<String> = prunings(&[DEAD; 6]).into_iter().map(|(_, t)| t).collect();
        assert!(!pruned.contains(&"A3".to_string()), "{pruned:?}");
        assert!(!pruned.contains(&"A4".to_string()), "{pruned:?}");
        assert!(pruned.contains(&"A2".to_string()), "{pruned:?}");
    }
}
