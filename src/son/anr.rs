//! ANR pruning: a relation with no handover attempts, or with fewer than half of at least ten
//! attempts succeeding, for three periods in a row is removed — unless `remove_allowed` is
//! false, which no SON function ever overrides.

use sonraft_raft::changeset::{ChangeSet, Function, Origin, Write};
use sonraft_raft::model::{EntityRef, Param, Value};

use super::view::{FastMap, RadioView};
use super::{PeriodInput, Proposal};
use crate::antennas::protocol::relation_counter as rc;

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
