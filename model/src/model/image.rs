//! The replicated network image and the deterministic application of commands to it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::import::StagedImport;
use super::{
    Cell, CellId, EntityRef, KpiSummary, NodeRelease, Policy, Relation, RelationKey, Site, SiteId,
};
use crate::changeset::{ChangeSet, Origin, Outcome, Write};
use crate::command::{Command, CommandError, Envelope, KpiBatch, Response};
use crate::rules;

/// Every site, cell and relation with its configuration, the latest KPI summary per cell, the
/// coordination policy and what each node advertised about its release.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct NetworkImage {
    pub sites: BTreeMap<SiteId, Site>,
    pub cells: BTreeMap<CellId, Cell>,
    pub relations: BTreeMap<RelationKey, Relation>,
    pub kpis: BTreeMap<CellId, KpiSummary>,
    pub policy: Policy,
    pub releases: BTreeMap<u64, NodeRelease>,
    /// The log clock: the largest log time applied so far, so that time never runs backwards
    /// across leader changes.
    pub log_time_ms: u64,
    /// The parts of an import waiting for its last part (see [`super::import`]). Not part of
    /// this struct's encoding either: stored beside it.
    #[serde(skip)]
    pub staged: Option<StagedImport>,
}

/// One applied or refused change set, as kept in the history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct HistoryRecord {
    pub index: u64,
    pub log_time_ms: u64,
    pub proposed_at_ms: u64,
    pub origin: Origin,
    pub reason: String,
    pub writes: Vec<Write>,
    pub outcome: Outcome,
}

/// What one command changed, so that a store can persist exactly that.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    pub sites: BTreeSet<SiteId>,
    pub cells: BTreeSet<CellId>,
    pub relations: BTreeSet<RelationKey>,
    pub kpis: BTreeSet<CellId>,
    pub policy: bool,
    pub releases: bool,
    /// The staged import changed.
    pub staged: bool,
    pub history: Vec<HistoryRecord>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
            && self.cells.is_empty()
            && self.relations.is_empty()
            && self.kpis.is_empty()
            && !self.policy
            && !self.releases
            && !self.staged
            && self.history.is_empty()
    }
}

impl NetworkImage {
    /// Current version of an entity, `None` if it does not exist.
    pub fn version_of(&self, entity: &EntityRef) -> Option<u64> {
        match entity {
            EntityRef::Cell(id) => self.cells.get(id).map(|c| c.version),
            EntityRef::Relation(s, t) => self
                .relations
                .get(&(s.clone(), t.clone()))
                .map(|r| r.version),
        }
    }

    /// The newest command format every voter understands: the cluster's effective version.
    /// A voter that never advertised counts as format 1.
    pub fn effective_format(&self, voters: impl IntoIterator<Item = u64>) -> u16 {
        voters
            .into_iter()
            .map(|id| self.releases.get(&id).map_or(1, |r| r.max_command_format))
            .min()
            .unwrap_or(1)
    }

    /// Relations whose source is `cell`.
    pub fn relations_from<'a>(&'a self, cell: &'a str) -> impl Iterator<Item = &'a Relation> + 'a {
        let start = (cell.to_string(), String::new());
        self.relations
            .range(start..)
            .map(|(_, r)| r)
            .take_while(move |r| r.source == cell)
    }

    /// Applies one log entry at `index`. Advances the log clock, decodes the command and
    /// applies it; records into `changes` what changed. An entry this build cannot understand
    /// is an error and changes nothing.
    pub fn apply_entry(
        &mut self,
        index: u64,
        entry: &Envelope,
        changes: &mut Changes,
    ) -> Result<Response, CommandError> {
        let command = entry.command()?;
        self.log_time_ms = self.log_time_ms.max(entry.log_time_ms);
        Ok(self.apply(index, &command, changes))
    }

    /// Applies a decoded command at the current log clock.
    pub fn apply(&mut self, index: u64, command: &Command, changes: &mut Changes) -> Response {
        match command {
            Command::ChangeSet(cs) => {
                Response::ChangeSet(self.apply_change_set(index, cs, changes))
            }
            Command::Import(import) => Response::Imported(self.import_v1(import, changes)),
            Command::ImportPart(part) => Response::Import(self.import_part(index, part, changes)),
            Command::Kpis(batch) => {
                self.record_kpis(batch, changes);
                Response::Recorded
            }
            Command::ChangeSets(list) => Response::ChangeSets(
                list.iter()
                    .map(|cs| self.apply_change_set(index, cs, changes))
                    .collect(),
            ),
            Command::Release(release) => {
                self.releases.insert(release.node_id, release.clone());
                changes.releases = true;
                Response::Recorded
            }
        }
    }

    /// Evaluates a change set without applying it (dry run).
    pub fn dry_run(&self, cs: &ChangeSet, now_ms: u64) -> Outcome {
        match rules::evaluate(self, cs, 0, now_ms.max(self.log_time_ms)) {
            Ok((_, outcome)) | Err(outcome) => outcome,
        }
    }

    fn apply_change_set(&mut self, index: u64, cs: &ChangeSet, changes: &mut Changes) -> Outcome {
        let outcome = match rules::evaluate(self, cs, index, self.log_time_ms) {
            Ok((plan, outcome)) => {
                for cell in plan.cells {
                    changes.cells.insert(cell.id.clone());
                    self.cells.insert(cell.id.clone(), cell);
                }
                for rel in plan.relations {
                    let key = (rel.source.clone(), rel.target.clone());
                    changes.relations.insert(key.clone());
                    self.relations.insert(key, rel);
                }
                for key in plan.removed {
                    self.relations.remove(&key);
                    changes.relations.insert(key);
                }
                outcome
            }
            Err(outcome) => outcome,
        };
        changes.history.push(HistoryRecord {
            index,
            log_time_ms: self.log_time_ms,
            proposed_at_ms: cs.proposed_at_ms,
            origin: cs.origin.clone(),
            reason: cs.reason.clone(),
            writes: cs.writes.clone(),
            outcome: outcome.clone(),
        });
        outcome
    }

    /// Keeps the newest summary per known cell.
    fn record_kpis(&mut self, batch: &KpiBatch, changes: &mut Changes) {
        for s in &batch.summaries {
            if !self.cells.contains_key(&s.cell) {
                continue;
            }
            let newer = self
                .kpis
                .get(&s.cell)
                .is_none_or(|old| old.period_end_ms < s.period_end_ms);
            if newer {
                self.kpis.insert(s.cell.clone(), s.clone());
                changes.kpis.insert(s.cell.clone());
            }
        }
    }
}
