//! The replicated network image and the deterministic application of commands to it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::control::{Control, ControlMoves};
use super::import::{StagedImport, StagedPart};
use super::{
    Cell, CellId, CowMap, EntityRef, KpiSummary, NodeRelease, Policy, Relation, RelationKey, Site,
    SiteId,
};
use crate::changeset::{ChangeSet, Function, Origin, Outcome, Write};
use crate::command::{Command, CommandError, Envelope, KpiBatch, Response};
use crate::rules::{self, Judge};
use crate::son::{
    Decision, MAX_PENDING, Mode, Pending, SonItem, SonPolicy, SonState, Trial, TrialEnd,
    TrialRecord, Tuning, Verdict,
};

/// Every site, cell and relation with its configuration, the latest KPI summary per cell, the
/// coordination policy and what each node advertised about its release.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct NetworkImage {
    // Maps a copy shares (see [`CowMap`]): a snapshot's capture copies the image under the
    // state lock.
    pub sites: CowMap<SiteId, Site>,
    pub cells: CowMap<CellId, Cell>,
    pub relations: CowMap<RelationKey, Relation>,
    pub kpis: CowMap<CellId, KpiSummary>,
    pub policy: Policy,
    pub releases: BTreeMap<u64, NodeRelease>,
    /// The log clock: the largest log time applied so far, so that time never runs backwards
    /// across leader changes.
    pub log_time_ms: u64,
    /// The parts of an import waiting for its last part (see [`super::import`]). Not part of
    /// this struct's encoding either: stored beside it.
    #[serde(skip)]
    pub staged: Option<StagedImport>,
    /// The operator's SON controls and the proposals waiting for an operator (format 4). Not
    /// part of this struct's encoding either: stored beside it.
    #[serde(skip)]
    pub son: SonState,
    /// Cell sites whose control left their home, or came back to it (format 8; see
    /// [`super::control`]). Not part of this struct's encoding either: stored beside it. Never
    /// shrinks: an epoch, once given, must stay (cell sites are never removed).
    #[serde(skip)]
    pub control: BTreeMap<SiteId, Control>,
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
    /// Any relation of the image may have changed (a large import put them all in one go);
    /// `relations` then lists only others the batch changed, if any.
    pub relations_in_bulk: bool,
    pub kpis: BTreeSet<CellId>,
    pub policy: bool,
    pub releases: bool,
    /// The staged import changed.
    pub staged: bool,
    /// The parts it staged, in order, from the last part 0 of the batch on (a store writes
    /// those of the import still staged at the end).
    pub staged_parts: Vec<StagedPart>,
    /// The SON state's policy, next pending id or holds changed.
    pub son: bool,
    /// The pending proposals, open trials and closed trials that changed.
    pub son_items: BTreeSet<SonItem>,
    /// The SON tuning changed.
    pub son_tuning: bool,
    /// Cell sites whose control moved.
    pub control: BTreeSet<SiteId>,
    pub history: Vec<HistoryRecord>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
            && self.cells.is_empty()
            && self.relations.is_empty()
            && !self.relations_in_bulk
            && self.kpis.is_empty()
            && !self.policy
            && !self.releases
            && !self.staged
            && !self.son
            && self.son_items.is_empty()
            && !self.son_tuning
            && self.control.is_empty()
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

    /// `id` as the image's cells hold it, so that every relation naming a cell shares one
    /// allocation of its id (see [`super::CellId`]); `id` itself for a cell the image lacks.
    pub fn shared_id(&self, id: &CellId) -> CellId {
        self.cells
            .get_key_value(id.as_str())
            .map_or_else(|| id.clone(), |(k, _)| k.clone())
    }

    /// Puts `rel` under its key, naming its cells as the image's cells do; returns the key.
    pub fn put_relation(&mut self, mut rel: Relation) -> RelationKey {
        rel.source = self.shared_id(&rel.source);
        rel.target = self.shared_id(&rel.target);
        let key = (rel.source.clone(), rel.target.clone());
        self.relations.insert(key.clone(), rel);
        key
    }

    /// Makes every cell, relation and KPI summary name cells by the ids the cells map holds,
    /// after the image was decoded whole (a snapshot): decoding gives every occurrence of an
    /// id an allocation of its own.
    pub fn share_ids(&mut self) {
        for (id, cell) in self.cells.iter_mut() {
            cell.id = id.clone();
        }
        let relations = std::mem::take(&mut self.relations);
        self.relations = relations
            .into_values()
            .map(|mut r| {
                r.source = self.shared_id(&r.source);
                r.target = self.shared_id(&r.target);
                ((r.source.clone(), r.target.clone()), r)
            })
            .collect();
        let kpis = std::mem::take(&mut self.kpis);
        self.kpis = kpis
            .into_values()
            .map(|mut k| {
                k.cell = self.shared_id(&k.cell);
                (k.cell.clone(), k)
            })
            .collect();
    }

    /// The cells' ids, to name cells by in bulk (see [`super::SharedIds`]).
    pub fn shared_ids(&self) -> super::SharedIds {
        super::SharedIds::new(self.cells.keys())
    }

    /// Rebuilds the cell map with every B-tree node full. A map built an insert at a time keeps
    /// its nodes about two-thirds full (a split leaves two halves); built in one go from its
    /// sorted entries it holds the same in about two-thirds of the memory. Later inserts split
    /// nodes as they would anyway. (A large import builds its relation map in one go.)
    pub fn pack_cells(&mut self) {
        self.cells = std::mem::take(&mut self.cells).into_iter().collect();
    }

    /// Relations whose source is `cell`.
    pub fn relations_from<'a>(&'a self, cell: &'a str) -> impl Iterator<Item = &'a Relation> + 'a {
        let start = (CellId::from(cell), CellId::default());
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
        self.expire_pending(index, changes);
        changes
            .son_items
            .extend(self.son.expire_trials(self.log_time_ms));
        Ok(self.apply_in_format(index, &command, changes, entry.format))
    }

    /// Applies a decoded command at the current log clock, in its own format.
    pub fn apply(&mut self, index: u64, command: &Command, changes: &mut Changes) -> Response {
        self.apply_in_format(index, command, changes, command.format())
    }

    /// Applies a decoded command carried in an entry of `format`: change sets are judged by
    /// that format's rules.
    fn apply_in_format(
        &mut self,
        index: u64,
        command: &Command,
        changes: &mut Changes,
        format: u16,
    ) -> Response {
        let judge = Judge::format(format);
        match command {
            Command::ChangeSet(cs) => {
                Response::ChangeSet(self.apply_proposed(index, cs, changes, judge))
            }
            Command::Import(import) => Response::Imported(self.import_v1(import, changes)),
            Command::ImportPart(part) => Response::Import(self.import_part(index, part, changes)),
            Command::Kpis(batch) => {
                self.record_kpis(batch, changes);
                Response::Recorded
            }
            Command::ChangeSets(list) => Response::ChangeSets(
                list.iter()
                    .map(|cs| self.apply_proposed(index, cs, changes, judge))
                    .collect(),
            ),
            Command::Release(release) => {
                self.releases.insert(release.node_id, release.clone());
                changes.releases = true;
                Response::Recorded
            }
            Command::SonPolicy(policy) => Response::SonPolicy(self.set_son_policy(policy, changes)),
            Command::SonTuning(v1) => {
                Response::SonTuning(self.set_son_tuning(&Tuning::from(v1.clone()), changes))
            }
            Command::SonTuningV2(tuning) => {
                Response::SonTuning(self.set_son_tuning(tuning, changes))
            }
            Command::Control(moves) => Response::Control(self.move_control(index, moves, changes)),
            Command::Decide(decision) => {
                Response::ChangeSet(self.decide(index, decision, changes, judge))
            }
            Command::Verdict(verdict) => {
                Response::Trial(self.apply_verdict(index, verdict, changes, judge))
            }
            Command::Verdicts(list) => Response::Trials(
                list.iter()
                    .enumerate()
                    .map(|(i, verdict)| {
                        if i < crate::command::MAX_CHANGE_SETS_PER_ENTRY {
                            self.apply_verdict(index, verdict, changes, judge)
                        } else {
                            Err(format!(
                                "at most {} verdicts go in one entry",
                                crate::command::MAX_CHANGE_SETS_PER_ENTRY
                            ))
                        }
                    })
                    .collect(),
            ),
        }
    }

    /// Evaluates a change set without applying it (dry run), with the rules of the newest
    /// command format.
    pub fn dry_run(&self, cs: &ChangeSet, now_ms: u64) -> Outcome {
        self.dry_run_in_format(cs, now_ms, crate::command::COMMAND_FORMAT)
    }

    /// Evaluates a change set without applying it, with the rules of command format `format`
    /// (the cluster's effective format: the one its entry would carry).
    pub fn dry_run_in_format(&self, cs: &ChangeSet, now_ms: u64, format: u16) -> Outcome {
        let judge = Judge::format(format);
        match rules::evaluate_with(self, cs, 0, now_ms.max(self.log_time_ms), judge) {
            Ok(_) if rules::mode_of(self, cs, judge) == Mode::OpenLoop => {
                Outcome::Pending { id: 0 }
            }
            Ok((_, outcome)) | Err(outcome) => outcome,
        }
    }

    /// Applies a change set someone proposed. Before format 6 nobody proposes as `fallback`;
    /// from format 6 a site does, to put back what its outage compensation changed once the
    /// outage is over (restoring is not an experiment: the function's controls do not hold it
    /// back, and it opens no trial). Operators cannot: the API parses only proposers' names.
    fn apply_proposed(
        &mut self,
        index: u64,
        cs: &ChangeSet,
        changes: &mut Changes,
        judge: Judge,
    ) -> Outcome {
        if cs.origin.function == Function::Fallback && judge.format < 6 {
            let outcome = Outcome::Invalid {
                reason: "fallback changes are made by the cluster when a verdict undoes a change; nobody proposes them".into(),
            };
            self.record(index, cs, &outcome, changes);
            return outcome;
        }
        self.apply_change_set(index, cs, changes, judge)
    }

    fn apply_change_set(
        &mut self,
        index: u64,
        cs: &ChangeSet,
        changes: &mut Changes,
        judge: Judge,
    ) -> Outcome {
        let open_loop = !judge.approved && rules::mode_of(self, cs, judge) == Mode::OpenLoop;
        let outcome = match rules::evaluate_with(self, cs, index, self.log_time_ms, judge) {
            Ok(_) if open_loop => self.record_pending(index, cs, changes),
            Ok((plan, outcome)) => {
                if judge.format >= rules::CONTROLS_FORMAT
                    && cs.origin.function.is_son()
                    && !cs.origin.function.is_urgent()
                {
                    let id = self.trial_id(index, judge, changes);
                    let trial = self.trial_of(id, cs);
                    self.son.trials.insert(id, trial);
                    changes.son_items.insert(SonItem::Trial(id));
                }
                for cell in plan.cells {
                    changes.cells.insert(cell.id.clone());
                    self.cells.insert(cell.id.clone(), cell);
                }
                for rel in plan.relations {
                    let key = self.put_relation(rel);
                    changes.relations.insert(key);
                }
                for key in plan.removed {
                    self.relations.remove(&key);
                    changes.relations.insert(key);
                }
                outcome
            }
            Err(outcome) => outcome,
        };
        self.record(index, cs, &outcome, changes);
        outcome
    }

    /// The id of the trial a change set applied by the entry at `index` opens: the index
    /// itself before [`rules::TRIAL_IDS_FORMAT`], the next free id from there on.
    fn trial_id(&mut self, index: u64, judge: Judge, changes: &mut Changes) -> u64 {
        if judge.format < rules::TRIAL_IDS_FORMAT {
            return index;
        }
        let id = self.son.next_id.max(index);
        self.son.next_id = id + 1;
        changes.son = true;
        id
    }

    /// The trial a SON change set opens: what it writes, with the values it replaces (read
    /// before its plan is applied).
    fn trial_of(&self, id: u64, cs: &ChangeSet) -> Trial {
        use super::param::{cell_value, relation_value};
        let mut writes = Vec::new();
        let mut removed = Vec::new();
        for w in &cs.writes {
            let before = match &w.entity {
                EntityRef::Cell(id) => self.cells.get(id).and_then(|c| cell_value(c, w.param)),
                EntityRef::Relation(s, t) => {
                    let rel = self.relations.get(&(s.clone(), t.clone()));
                    match rel {
                        Some(r) if w.param == super::Param::Exists => removed.push(r.clone()),
                        // A relation this change set creates (format 7): undone by removing it.
                        None if w.param == super::Param::Exists => {
                            writes.push((w.clone(), super::Value::Bool(false)));
                            continue;
                        }
                        _ => {}
                    }
                    rel.and_then(|r| relation_value(r, w.param))
                }
            };
            if let Some(before) = before {
                writes.push((w.clone(), before));
            }
        }
        Trial {
            index: id,
            function: cs.origin.function,
            applied_at_ms: self.log_time_ms,
            writes,
            cells: rules::reconfigured_cells(cs),
            removed,
        }
    }

    /// Applies a site's verdict on an open trial: a degraded change is undone where nobody
    /// changed it since, and its function held off its cells.
    fn apply_verdict(
        &mut self,
        index: u64,
        verdict: &Verdict,
        changes: &mut Changes,
        judge: Judge,
    ) -> Result<TrialEnd, String> {
        let Some(trial) = self.son.trials.remove(&verdict.trial) else {
            return Err(format!(
                "no change {} is under verification: it had its verdict, it expired, or it never was",
                verdict.trial
            ));
        };
        let now = self.log_time_ms;
        let holds = self.son.holds.len();
        self.son.prune_holds(now);
        changes.son |= holds != self.son.holds.len();
        let end = match &verdict.degraded {
            None => TrialEnd::Kept,
            Some(reason) => {
                let restored = self.undo(index, &trial, reason, changes, judge);
                let until = now.saturating_add(self.son.policy.verification.hold_ms);
                for cell in &trial.cells {
                    self.son.holds.insert((cell.clone(), trial.function), until);
                }
                changes.son = true;
                TrialEnd::Undone {
                    reason: reason.clone(),
                    restored,
                }
            }
        };
        changes.son_items.extend(self.son.close(TrialRecord {
            trial,
            kpis: verdict.kpis.clone(),
            end: end.clone(),
            closed_at_ms: now,
        }));
        Ok(end)
    }

    /// Restores what `trial` changed and nobody changed since (a parameter whose last change
    /// is still the trial's; a removed relation nobody re-created), as one change set of origin
    /// `fallback`; returns how many parameters and relations it restored.
    fn undo(
        &mut self,
        index: u64,
        trial: &Trial,
        reason: &str,
        changes: &mut Changes,
        judge: Judge,
    ) -> usize {
        // Whether the parameter still holds the trial's write. Before format 10 a trial's id
        // is its entry's index, which stamps the write. From format 10 the id may lie above
        // that index (several trials in one entry): the last write is the trial's when it was
        // made by the trial's function at the trial's log time, no later than its id. (No
        // other write of that function can come between: the function waits for the trial's
        // verdict before it writes the cell again.)
        let untouched = |stamps: &BTreeMap<super::Param, super::Stamp>, param| {
            stamps.get(&param).is_some_and(|s| {
                if judge.format >= rules::TRIAL_IDS_FORMAT {
                    s.by == trial.function
                        && s.at_ms == trial.applied_at_ms
                        && s.index <= trial.index
                } else {
                    s.index == trial.index
                }
            })
        };
        let mut writes = Vec::new();
        for (w, before) in &trial.writes {
            let still = match &w.entity {
                EntityRef::Cell(id) => self
                    .cells
                    .get(id)
                    .is_some_and(|c| untouched(&c.last_change, w.param)),
                EntityRef::Relation(s, t) => self
                    .relations
                    .get(&(s.clone(), t.clone()))
                    .is_some_and(|r| {
                        // A removal is undone below, from `trial.removed`; a creation here.
                        let created = w.value == super::Value::Bool(true);
                        (w.param != super::Param::Exists || created)
                            && untouched(&r.last_change, w.param)
                    }),
            };
            if still {
                writes.push(Write {
                    entity: w.entity.clone(),
                    param: w.param,
                    value: before.clone(),
                });
            }
        }
        let fallback = ChangeSet {
            origin: Origin {
                node: 0,
                function: Function::Fallback,
            },
            reason: format!(
                "undoes change {} of {}: {reason}",
                trial.index, trial.function
            ),
            read_set: Vec::new(),
            writes,
            proposed_at_ms: self.log_time_ms,
        };
        let mut restored = 0;
        if !fallback.writes.is_empty() {
            let judge = Judge {
                approved: true,
                ..judge
            };
            let outcome = self.apply_change_set(index, &fallback, changes, judge);
            if let Outcome::Applied { .. } = outcome {
                restored += fallback.writes.len();
            }
        }
        for rel in &trial.removed {
            let key = (rel.source.clone(), rel.target.clone());
            let ends = self.cells.contains_key(&rel.source) && self.cells.contains_key(&rel.target);
            if self.relations.contains_key(&key) || !ends {
                continue;
            }
            let mut back = rel.clone();
            // Above every version it had: a read of the removed relation stays stale.
            back.version = crate::command::VERSION_SPAN.saturating_mul(index);
            back.last_change.insert(
                super::Param::Exists,
                super::Stamp {
                    by: Function::Fallback,
                    at_ms: self.log_time_ms,
                    index,
                },
            );
            let key = self.put_relation(back);
            changes.relations.insert(key);
            restored += 1;
        }
        restored
    }

    /// Adds a change set's outcome to the history of entry `index`.
    fn record(&self, index: u64, cs: &ChangeSet, outcome: &Outcome, changes: &mut Changes) {
        changes.history.push(HistoryRecord {
            index,
            log_time_ms: self.log_time_ms,
            proposed_at_ms: cs.proposed_at_ms,
            origin: cs.origin.clone(),
            reason: cs.reason.clone(),
            writes: cs.writes.clone(),
            outcome: outcome.clone(),
        });
    }

    /// Keeps an open-loop proposal that passed every rule for an operator to decide on. The
    /// same proposal again (same function and writes, as a function proposes each period
    /// until it is decided) is the one already pending.
    fn record_pending(&mut self, index: u64, cs: &ChangeSet, changes: &mut Changes) -> Outcome {
        if let Some(p) = self.son.pending.values().find(|p| {
            p.change_set.origin.function == cs.origin.function && p.change_set.writes == cs.writes
        }) {
            return Outcome::Pending { id: p.id };
        }
        if self.son.pending.len() >= MAX_PENDING {
            return Outcome::Rejected {
                reason: format!(
                    "{MAX_PENDING} proposals are waiting for an operator already; approve or reject some"
                ),
            };
        }
        let id = self.son.next_id.max(index);
        self.son.next_id = id + 1;
        self.son.pending.insert(
            id,
            Pending {
                id,
                recorded_at_ms: self.log_time_ms,
                expires_at_ms: self
                    .log_time_ms
                    .saturating_add(self.son.policy.pending_ttl_ms),
                change_set: cs.clone(),
            },
        );
        changes.son = true;
        changes.son_items.insert(SonItem::Pending(id));
        Outcome::Pending { id }
    }

    /// Applies an operator's decision on a pending proposal: an approved one is judged now,
    /// by every rule but its function's mode.
    fn decide(
        &mut self,
        index: u64,
        decision: &Decision,
        changes: &mut Changes,
        judge: Judge,
    ) -> Outcome {
        let Some(pending) = self.son.pending.remove(&decision.id) else {
            return Outcome::Invalid {
                reason: format!(
                    "no proposal {} is pending: it was decided, it expired, or it never was",
                    decision.id
                ),
            };
        };
        changes.son_items.insert(SonItem::Pending(decision.id));
        let cs = &pending.change_set;
        if !decision.approve {
            let outcome = Outcome::Rejected {
                reason: format!("rejected by the operator: {}", decision.note),
            };
            self.record(index, cs, &outcome, changes);
            return outcome;
        }
        let judge = Judge {
            approved: true,
            ..judge
        };
        self.apply_change_set(index, cs, changes, judge)
    }

    /// Drops the pending proposals whose time ran out, into the history of entry `index`.
    fn expire_pending(&mut self, index: u64, changes: &mut Changes) {
        if self.son.pending.is_empty() {
            return;
        }
        for p in self.son.expire(self.log_time_ms) {
            let outcome = Outcome::Rejected {
                reason: format!(
                    "expired: no operator decided within {} s",
                    p.expires_at_ms.saturating_sub(p.recorded_at_ms) / 1000
                ),
            };
            self.record(index, &p.change_set, &outcome, changes);
            changes.son_items.insert(SonItem::Pending(p.id));
        }
    }

    /// Replaces the SON policy, if it is valid.
    fn set_son_policy(&mut self, policy: &SonPolicy, changes: &mut Changes) -> Result<(), String> {
        policy.validate().map_err(|e| e.to_string())?;
        self.son.policy = policy.clone();
        changes.son = true;
        Ok(())
    }

    /// Replaces the SON functions' thresholds, if they are valid (a format-5 tuning arrives
    /// with the sections format 9 added at their defaults).
    fn set_son_tuning(&mut self, tuning: &Tuning, changes: &mut Changes) -> Result<(), String> {
        tuning.validate().map_err(|e| e.to_string())?;
        self.son.tuning = tuning.clone();
        changes.son_tuning = true;
        Ok(())
    }

    /// A copy holding only the cell sites, the cells and who controls them (the maps share
    /// their shards, the control entries are copied): for the walks over every cell site or
    /// cell that need no lock on the image meanwhile — the leader's look at the sites, the
    /// sessions a node should hold, the control summary. At a national image's 300,000 cells
    /// each walk takes tens of milliseconds, and every apply waits for a walk under the lock.
    pub fn control_copy(&self) -> NetworkImage {
        NetworkImage {
            sites: self.sites.clone(),
            cells: self.cells.clone(),
            control: self.control.clone(),
            ..NetworkImage::default()
        }
    }

    /// The sonraft site controlling `cell_site`'s antennas and its epoch: its home region at
    /// epoch 0 unless control moved (`None` for an unknown cell site).
    pub fn controller(&self, cell_site: &str) -> Option<(&str, u64)> {
        match self.control.get(cell_site) {
            Some(c) => Some((c.site.as_str(), c.epoch)),
            None => self.sites.get(cell_site).map(|s| (s.region.as_str(), 0)),
        }
    }

    /// Whether the node of sonraft site `site` controls `cell`'s antennas.
    pub fn controls(&self, site: &str, cell: &Cell) -> bool {
        self.controller(&cell.site).is_some_and(|(s, _)| s == site)
    }

    /// Moves control of cell sites, each move judged on its own: it applies only if the
    /// controller and epoch it names are still current. Answers each move's new epoch (this
    /// entry's index) or why it was refused.
    fn move_control(
        &mut self,
        index: u64,
        command: &ControlMoves,
        changes: &mut Changes,
    ) -> Vec<Result<u64, String>> {
        if let Err(e) = command.validate() {
            return vec![Err(e.to_string()); command.moves.len()];
        }
        command
            .moves
            .iter()
            .map(|m| {
                let Some((site, epoch)) = self.controller(&m.cell_site) else {
                    return Err(format!("no cell site {}", m.cell_site));
                };
                if (site, epoch) != (m.from.as_str(), m.epoch) {
                    return Err(format!(
                        "cell site {} is controlled by {site} at epoch {epoch}, not by {} at epoch {}",
                        m.cell_site, m.from, m.epoch
                    ));
                }
                if m.to == site {
                    return Err(format!("cell site {} is already controlled by {site}", m.cell_site));
                }
                self.control.insert(
                    m.cell_site.clone(),
                    Control {
                        site: m.to.clone(),
                        epoch: index,
                        since_ms: self.log_time_ms,
                    },
                );
                changes.control.insert(m.cell_site.clone());
                Ok(index)
            })
            .collect()
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
