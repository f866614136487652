//! The replicated network image and the deterministic application of commands to it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::entity::valid_id;
use super::param::{check_cell, check_relation};
use super::{
    Cell, CellId, EntityRef, KpiSummary, NodeRelease, Policy, Relation, RelationKey, Site, SiteId,
};
use crate::changeset::{ChangeSet, Origin, Outcome, Write};
use crate::command::{
    Command, CommandError, Envelope, ImageImport, ImportCounts, KpiBatch, Response,
};
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
    /// The highest version ever given to any cell or relation. An entity created, or created
    /// again after it was pruned, starts above it, so that the versions of one entity never
    /// repeat: a change set computed from an old incarnation conflicts instead of applying to
    /// a new one (ABA). Not part of this struct's encoding (which snapshots and fixtures of
    /// earlier formats hold): the state machine and snapshots since format 2 store it beside
    /// the image.
    #[serde(skip)]
    pub versions_issued: u64,
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
            && self.history.is_empty()
    }
}

impl NetworkImage {
    /// A bound on the versions an image restored from `self` (whose `versions_issued` was not
    /// stored, as in snapshots of format 1) may have given: the highest version of any entity
    /// still there or named in `history`. Versions of entities pruned before the history's
    /// oldest record are beyond its reach.
    pub fn versions_issued_bound<'a>(&self, history: impl IntoIterator<Item = &'a HistoryRecord>) -> u64 {
        let live = self
            .cells
            .values()
            .map(|c| c.version)
            .chain(self.relations.values().map(|r| r.version));
        let recorded = history.into_iter().flat_map(|h| match &h.outcome {
            Outcome::Applied { versions, .. } => versions.values().copied().collect::<Vec<_>>(),
            _ => Vec::new(),
        });
        live.chain(recorded).max().unwrap_or(0).max(self.versions_issued)
    }

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
            Command::Import(import) => Response::Imported(self.import(import, changes)),
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
                if let Outcome::Applied { versions, .. } = &outcome {
                    let highest = versions.values().copied().max().unwrap_or(0);
                    self.versions_issued = self.versions_issued.max(highest);
                }
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

    /// Upserts sites, cells and relations; all-or-nothing.
    fn import(
        &mut self,
        import: &ImageImport,
        changes: &mut Changes,
    ) -> Result<ImportCounts, String> {
        self.check_import(import)?;
        for site in &import.sites {
            self.sites.insert(site.id.clone(), site.clone());
            changes.sites.insert(site.id.clone());
        }
        // Every entity this import creates starts above every version given so far.
        let created = self.versions_issued + 1;
        let mut highest = self.versions_issued;
        for cell in &import.cells {
            let mut cell = cell.clone();
            let old = self.cells.get(&cell.id);
            cell.version = old.map_or(created, |c| c.version + 1);
            cell.last_change = old.map(|c| c.last_change.clone()).unwrap_or_default();
            highest = highest.max(cell.version);
            changes.cells.insert(cell.id.clone());
            self.cells.insert(cell.id.clone(), cell);
        }
        for rel in &import.relations {
            let mut rel = rel.clone();
            let key = (rel.source.clone(), rel.target.clone());
            let old = self.relations.get(&key);
            rel.version = old.map_or(created, |r| r.version + 1);
            rel.last_change = old.map(|r| r.last_change.clone()).unwrap_or_default();
            highest = highest.max(rel.version);
            changes.relations.insert(key.clone());
            self.relations.insert(key, rel);
        }
        self.versions_issued = highest;
        if let Some(policy) = &import.policy {
            self.policy = policy.clone();
            changes.policy = true;
        }
        Ok(ImportCounts {
            sites: import.sites.len() as u64,
            cells: import.cells.len() as u64,
            relations: import.relations.len() as u64,
        })
    }

    fn check_import(&self, import: &ImageImport) -> Result<(), String> {
        let mut sites = BTreeSet::new();
        for site in &import.sites {
            if !valid_id(&site.id) {
                return Err(format!(
                    "site id {:?} is empty, too long or contains '/'",
                    site.id
                ));
            }
            if !sites.insert(site.id.as_str()) {
                return Err(format!("site {} appears twice", site.id));
            }
            if !(-90.0..=90.0).contains(&site.lat) || !(-180.0..=180.0).contains(&site.lon) {
                return Err(format!(
                    "site {}: lat/lon {}/{} out of range",
                    site.id, site.lat, site.lon
                ));
            }
        }
        let mut cells = BTreeSet::new();
        for cell in &import.cells {
            if !valid_id(&cell.id) {
                return Err(format!(
                    "cell id {:?} is empty, too long or contains '/'",
                    cell.id
                ));
            }
            if !cells.insert(cell.id.as_str()) {
                return Err(format!("cell {} appears twice", cell.id));
            }
            if !sites.contains(cell.site.as_str()) && !self.sites.contains_key(&cell.site) {
                return Err(format!("cell/{}: unknown site {:?}", cell.id, cell.site));
            }
            check_cell(cell)?;
        }
        let mut rels = BTreeSet::new();
        for rel in &import.relations {
            for end in [&rel.source, &rel.target] {
                if !cells.contains(end.as_str()) && !self.cells.contains_key(end) {
                    return Err(format!(
                        "relation/{}/{}: unknown cell {:?}",
                        rel.source, rel.target, end
                    ));
                }
            }
            if !rels.insert((rel.source.as_str(), rel.target.as_str())) {
                return Err(format!(
                    "relation/{}/{} appears twice",
                    rel.source, rel.target
                ));
            }
            check_relation(rel)?;
        }
        if let Some(p) = &import.policy
            && !(0..=24).contains(&p.max_son_cio_db)
        {
            return Err(format!(
                "policy.max_son_cio_db {} is outside 0..=24",
                p.max_son_cio_db
            ));
        }
        Ok(())
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
