//! The change-set rules, as pure functions of the image, the change set and the log time.
//!
//! Applying a change set is deterministic and all-or-nothing (docs/DESIGN.md, "Change sets"):
//! 1. every entity in the read set still has the version that was read, else `Conflict`;
//! 2. every write names a known entity and parameter, its value is legal and within the
//!    per-step limit, else `Invalid`;
//! 3. coordination: a function writes only its own parameters, leaves alone a parameter that
//!    another function changed inside the cool-down or that a higher-priority function holds,
//!    and never removes a relation with `remove_allowed = false`, else `Rejected`;
//! 4. otherwise [`Plan`] holds the new state of every written entity.
//!
//! Entries of command format 4 and later add, for SON functions (never the operator):
//! - the operator's controls ([`crate::son`]): a function switched `off`, an excluded cell,
//!   site or region (at either end of a relation), or a log time outside the function's change
//!   window is `Rejected`;
//! - verification ([`crate::son::Trial`]): a function does not step again on a cell before its
//!   last change there has a verdict, nor on a cell where its change was undone, for the hold;
//! - coordination by parameter group ([`coupled`]): a parameter is also left alone while
//!   another writer changed a coupled one on the same cell, or on the cell's relations,
//!   inside the cool-down;
//! - pruning is coordinated like any write: a relation that another writer changed inside the
//!   cool-down is not removed, and one the operator created is never removed by a function.
//!
//! Which rules judge an entry is fixed by the format written in the entry, so every node,
//! old or new, judges it the same way.

use std::collections::BTreeMap;

use crate::changeset::{ChangeSet, Function, Outcome};
use crate::model::image::NetworkImage;
use crate::model::param::{set_cell, set_relation};
use crate::model::{
    Cell, CellId, EntityRef, Param, Relation, RelationKey, RelationOrigin, Stamp, Value,
};
use crate::son::{MAX_TRIALS, Mode};

/// Most writes one change set may carry.
pub const MAX_WRITES: usize = 1000;

/// The accepted effect of a change set, ready to be committed to the image.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub cells: Vec<Cell>,
    pub relations: Vec<Relation>,
    pub removed: Vec<RelationKey>,
}

/// The first command format whose entries are judged with the operator's SON controls and
/// coordination by parameter group.
pub const CONTROLS_FORMAT: u16 = 4;

/// From command format 10 a trial is named by the next free id at or above its entry's index
/// (`SonState::next_id`, which pending proposals already drew from), so that every SON change
/// set of a `ChangeSets` entry opens its own trial. Before, a trial was named by its entry's
/// index, and a second SON change set in the same entry replaced the first one's trial: a SON
/// cycle could only propose its change sets one entry each.
pub const TRIAL_IDS_FORMAT: u16 = 10;

/// Parameters that act on the same handover decision: a change to one changes what the
/// others do (A3 entry condition: offset, hysteresis, time to trigger, and the CIO per
/// neighbour).
pub const MOBILITY_GROUP: [Param; 4] = [
    Param::CioDb,
    Param::Hysteresis,
    Param::TimeToTriggerMs,
    Param::A3Offset,
];
/// Parameters that move a cell's border: tilt and power move the coverage, CIO the
/// handover border.
pub const COVERAGE_GROUP: [Param; 3] = [Param::ElectricalTilt, Param::MaxTxPowerDbm, Param::CioDb];

/// The parameters coupled with `param` (sharing a group with it), `param` excluded.
pub fn coupled(param: Param) -> impl Iterator<Item = Param> {
    let groups: [&[Param]; 2] = [&MOBILITY_GROUP, &COVERAGE_GROUP];
    let mut out: Vec<Param> = groups
        .into_iter()
        .filter(|g| g.contains(&param))
        .flat_map(|g| g.iter().copied())
        .filter(|p| *p != param)
        .collect();
    out.sort();
    out.dedup();
    out.into_iter()
}

/// How a change set is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judge {
    /// Command format of the entry carrying the change set.
    pub format: u16,
    /// An operator approved this open-loop proposal: the function's mode is not consulted.
    pub approved: bool,
}

impl Judge {
    pub fn format(format: u16) -> Judge {
        Judge {
            format,
            approved: false,
        }
    }

    fn controls(&self) -> bool {
        self.format >= CONTROLS_FORMAT
    }
}

/// Evaluates `cs` against `image` at log time `now_ms` for log index `index`, with the rules
/// of command format 1-3. `Ok` carries the plan and the `Applied` outcome; `Err` the outcome
/// that refuses it.
pub fn evaluate(
    image: &NetworkImage,
    cs: &ChangeSet,
    index: u64,
    now_ms: u64,
) -> Result<(Plan, Outcome), Outcome> {
    evaluate_with(image, cs, index, now_ms, Judge::format(1))
}

/// Evaluates `cs` with the rules `judge` names. An open-loop function's change set that passes
/// every rule is still refused here unless approved: the caller records it as pending.
pub fn evaluate_with(
    image: &NetworkImage,
    cs: &ChangeSet,
    index: u64,
    now_ms: u64,
    judge: Judge,
) -> Result<(Plan, Outcome), Outcome> {
    check_read_set(image, cs)?;
    let work = check_writes(image, cs, judge)?;
    check_coordination(image, cs, now_ms)?;
    if judge.controls() {
        check_controls(image, cs, now_ms, judge)?;
        check_groups(image, cs, now_ms)?;
    }
    Ok(commit_plan(work, cs, index, now_ms))
}

/// Why the operator's controls (mode, window, exclusions, holds, the self cool-down) refuse
/// `cs` at log time `now_ms` under format `format`, if they do: lets a SON function skip what
/// would only be refused.
pub fn controls_refusal(
    image: &NetworkImage,
    cs: &ChangeSet,
    now_ms: u64,
    format: u16,
) -> Option<String> {
    let judge = Judge::format(format);
    if !judge.controls() {
        return None;
    }
    match check_controls(image, cs, now_ms, judge) {
        Ok(()) => None,
        Err(Outcome::Rejected { reason }) | Err(Outcome::Invalid { reason }) => Some(reason),
        Err(other) => Some(other.kind().to_string()),
    }
}

/// The mode a change set's function runs in under `judge` (always closed loop before format 4
/// and for the operator).
pub fn mode_of(image: &NetworkImage, cs: &ChangeSet, judge: Judge) -> Mode {
    let function = cs.origin.function;
    if !judge.controls() || !function.is_son() {
        return Mode::ClosedLoop;
    }
    image.son.policy.controls(function).mode
}

/// Rule 1: every read version is current.
fn check_read_set(image: &NetworkImage, cs: &ChangeSet) -> Result<(), Outcome> {
    let stale = cs
        .read_set
        .iter()
        .any(|r| image.version_of(&r.entity) != Some(r.version));
    if !stale {
        return Ok(());
    }
    let current = cs
        .read_set
        .iter()
        .map(|r| (r.entity.to_string(), image.version_of(&r.entity)))
        .collect();
    Err(Outcome::Conflict { current })
}

/// Working copies of the entities a change set writes, in first-written order.
#[derive(Default)]
struct Work {
    cells: BTreeMap<CellId, Cell>,
    relations: BTreeMap<RelationKey, Relation>,
    removed: Vec<RelationKey>,
    /// Relations this change set creates (format 7).
    added: Vec<RelationKey>,
}

fn invalid(reason: String) -> Outcome {
    Outcome::Invalid { reason }
}

/// Rule 2: entities exist, parameters fit the entity, values are legal and within the step.
/// From format 7, `exists = true` on a relation the image lacks creates it ([`created`]).
fn check_writes(image: &NetworkImage, cs: &ChangeSet, judge: Judge) -> Result<Work, Outcome> {
    if cs.writes.is_empty() {
        return Err(invalid(
            "a change set must write at least one parameter".into(),
        ));
    }
    if cs.writes.len() > MAX_WRITES {
        return Err(invalid(format!(
            "{} writes in one change set; at most {MAX_WRITES}",
            cs.writes.len()
        )));
    }
    // The operator, and a fallback restoring what was there before a SON change, use the
    // whole legal range; SON functions stay inside the operator's bounds.
    let operator = !cs.origin.function.is_son();
    let max_cio = if operator {
        24
    } else {
        image.policy.max_son_cio_db
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut work = Work::default();
    for w in &cs.writes {
        if !seen.insert((&w.entity, w.param)) {
            return Err(invalid(format!(
                "{} of {} is written twice",
                w.param, w.entity
            )));
        }
        match &w.entity {
            EntityRef::Cell(id) => {
                if w.param.on_relation() {
                    return Err(invalid(format!("{} is not a parameter of a cell", w.param)));
                }
                let cell = match work.cells.get_mut(id) {
                    Some(c) => c,
                    None => {
                        let c = image
                            .cells
                            .get(id)
                            .ok_or_else(|| invalid(format!("unknown entity {}", w.entity)))?;
                        work.cells.entry(id.clone()).or_insert_with(|| c.clone())
                    }
                };
                set_cell(cell, w.param, &w.value, !operator)
                    .map_err(|e| invalid(format!("{}: {e}", w.entity)))?;
            }
            EntityRef::Relation(s, t) => {
                if !w.param.on_relation() {
                    return Err(invalid(format!(
                        "{} is not a parameter of a relation",
                        w.param
                    )));
                }
                let key = (s.clone(), t.clone());
                let creates = judge.format >= RELATION_ADD_FORMAT
                    && w.param == Param::Exists
                    && w.value == Value::Bool(true);
                if creates {
                    let rel = created(image, &work, cs, s, t)?;
                    work.added.push(key.clone());
                    work.relations.insert(key, rel);
                    continue;
                }
                let rel = match work.relations.get_mut(&key) {
                    Some(r) => r,
                    None => {
                        let r = image.relations.get(&key).ok_or_else(|| {
                            if w.param == Param::Exists && w.value == Value::Bool(true) {
                                invalid(format!(
                                    "unknown entity {}: creating a relation needs command format {RELATION_ADD_FORMAT} (every voter upgraded); import it instead",
                                    w.entity
                                ))
                            } else {
                                invalid(format!("unknown entity {}", w.entity))
                            }
                        })?;
                        work.relations
                            .entry(key.clone())
                            .or_insert_with(|| r.clone())
                    }
                };
                set_relation(rel, w.param, &w.value, max_cio)
                    .map_err(|e| invalid(format!("{}: {e}", w.entity)))?;
                if w.param == Param::Exists {
                    if cs.origin.function == Function::AnrAdd {
                        return Err(rejected(format!(
                            "{} only adds relations; removing {} is anr_pruning's",
                            Function::AnrAdd,
                            w.entity
                        )));
                    }
                    work.removed.push(key);
                }
            }
        }
    }
    Ok(work)
}

/// The first command format in which `exists = true` creates a relation (and the functions
/// `coverage_capacity` and `anr_add` exist).
pub const RELATION_ADD_FORMAT: u16 = 7;

/// Most relations a SON function lets one cell have towards one carrier: the neighbour cells
/// one measurement object can list (`maxCellMeas`, TS 36.331 and TS 38.331). The operator
/// may go beyond it.
pub const MAX_NEIGHBOURS_PER_CARRIER: usize = 32;

/// The relation `s -> t` that `cs` creates (format 7), if it may: only the operator and
/// [`Function::AnrAdd`] create relations; both cells exist and differ; the relation does not
/// exist yet (an operator's block is a relation kept with `ho_allowed = false` and
/// `remove_allowed = false`, so a blocked pair always exists and is never added again); and a
/// SON function stays within [`MAX_NEIGHBOURS_PER_CARRIER`] of the source towards the
/// target's carrier.
fn created(
    image: &NetworkImage,
    work: &Work,
    cs: &ChangeSet,
    s: &str,
    t: &str,
) -> Result<Relation, Outcome> {
    let function = cs.origin.function;
    let name = EntityRef::relation(s, t);
    if !matches!(function, Function::Operator | Function::AnrAdd) {
        return Err(rejected(format!(
            "{function} may not create relations; {name} does not exist"
        )));
    }
    let key = (CellId::from(s), CellId::from(t));
    if image.relations.contains_key(&key) || work.relations.contains_key(&key) {
        return Err(invalid(format!("{name} exists already")));
    }
    if s == t {
        return Err(invalid(format!("{name}: a cell is not its own neighbour")));
    }
    let (Some(_), Some(target)) = (image.cells.get(s), image.cells.get(t)) else {
        return Err(invalid(format!("{name}: both cells must exist")));
    };
    if function.is_son() {
        let carrier = |id: &str| image.cells.get(id).map(|c| c.arfcn);
        let on_carrier = image
            .relations_from(s)
            .filter(|r| !work.removed.contains(&(r.source.clone(), r.target.clone())))
            .chain(work.added.iter().filter_map(|k| work.relations.get(k)))
            .filter(|r| carrier(&r.target) == Some(target.arfcn))
            .count();
        if on_carrier >= MAX_NEIGHBOURS_PER_CARRIER {
            return Err(rejected(format!(
                "cell {s} has {on_carrier} relations on ARFCN {} already; {function} adds at most {MAX_NEIGHBOURS_PER_CARRIER}",
                target.arfcn
            )));
        }
    }
    Ok(Relation {
        source: s.into(),
        target: t.into(),
        cio_db: 0,
        ho_allowed: true,
        remove_allowed: true,
        origin: if function.is_son() {
            RelationOrigin::Anr
        } else {
            RelationOrigin::Operator
        },
        version: 0,
        last_change: BTreeMap::new(),
    })
}

/// Rule 3: function domains, cool-downs, priorities and removal permission.
fn check_coordination(image: &NetworkImage, cs: &ChangeSet, now_ms: u64) -> Result<(), Outcome> {
    let function = cs.origin.function;
    let policy = &image.policy;
    for w in &cs.writes {
        if !function.may_write(w.param) {
            return Err(Outcome::Rejected {
                reason: format!("{function} may not write {}", w.param),
            });
        }
        let (stamps, removable) = match &w.entity {
            EntityRef::Cell(id) => (image.cells.get(id).map(|c| &c.last_change), true),
            EntityRef::Relation(s, t) => {
                let rel = image.relations.get(&(s.clone(), t.clone()));
                (
                    rel.map(|r| &r.last_change),
                    rel.is_none_or(|r| r.remove_allowed),
                )
            }
        };
        if w.param == Param::Exists && !removable {
            return Err(Outcome::Rejected {
                reason: format!(
                    "{} has remove_allowed = false; it is never removed",
                    w.entity
                ),
            });
        }
        if !function.is_son() {
            continue;
        }
        let Some(stamp) = stamps.and_then(|s| s.get(&w.param)) else {
            continue;
        };
        let age = now_ms.saturating_sub(stamp.at_ms);
        // Compensating an outage does not wait for another function's cool-down: users have
        // lost their cell (format 6; only the priority hold of the operator and fallbacks
        // stands).
        if stamp.by != function && age < policy.cooldown_ms && !function.is_urgent() {
            return Err(Outcome::Rejected {
                reason: format!(
                    "{} of {} was changed by {} {} s ago; the cool-down is {} s",
                    w.param,
                    w.entity,
                    stamp.by,
                    age / 1000,
                    policy.cooldown_ms / 1000
                ),
            });
        }
        if stamp.by.priority() > function.priority() && age < policy.priority_hold_ms {
            return Err(Outcome::Rejected {
                reason: format!(
                    "{} of {} is held by higher-priority {} for another {} s",
                    w.param,
                    w.entity,
                    stamp.by,
                    (policy.priority_hold_ms - age).div_ceil(1000)
                ),
            });
        }
    }
    Ok(())
}

fn rejected(reason: String) -> Outcome {
    Outcome::Rejected { reason }
}

/// Format 4: the operator's controls of the function: mode, exclusions, change window.
fn check_controls(
    image: &NetworkImage,
    cs: &ChangeSet,
    now_ms: u64,
    judge: Judge,
) -> Result<(), Outcome> {
    let function = cs.origin.function;
    if !function.is_son() {
        return Ok(());
    }
    let controls = image.son.policy.controls(function);
    if controls.mode == Mode::Off && !judge.approved {
        return Err(rejected(format!(
            "{function} is switched off by the operator"
        )));
    }
    if let Some(window) = controls.window
        && !window.contains(now_ms)
    {
        return Err(rejected(format!(
            "{function} may change the network only in its window {window}"
        )));
    }
    // A change that opens no trial is not held back by the trials open.
    if image.son.trials.len() >= MAX_TRIALS && !function.is_urgent() {
        return Err(rejected(format!(
            "{MAX_TRIALS} changes are under verification already; wait for their verdicts"
        )));
    }
    for cell in reconfigured_cells(cs) {
        if let Some(until) = image.son.held_until(function, &cell, now_ms) {
            return Err(rejected(format!(
                "{function} leaves cell {cell} alone for another {} s: its change there was undone",
                (until - now_ms).div_ceil(1000)
            )));
        }
        if let Some(trial) = image.son.open_trial(function, &cell) {
            return Err(rejected(format!(
                "{function} waits for the verification of its change {} on cell {cell}",
                trial.index
            )));
        }
    }
    for w in &cs.writes {
        if let Some(why) = excluded(image, function, &w.entity) {
            return Err(rejected(format!(
                "{} of {} is not {function}'s to change: the operator excluded {why}",
                w.param, w.entity
            )));
        }
    }
    Ok(())
}

/// What of `entity` (a cell, or either end of a relation) the operator excluded from
/// `function`, if anything: "cell X", "site S of cell X" or "region R of cell X".
pub fn excluded(image: &NetworkImage, function: Function, entity: &EntityRef) -> Option<String> {
    let exclude = &image.son.policy.controls(function).exclude;
    if exclude.is_empty() {
        return None;
    }
    let cells: Vec<&str> = match entity {
        EntityRef::Cell(id) => vec![id],
        EntityRef::Relation(s, t) => vec![s, t],
    };
    cells.into_iter().find_map(|id| {
        let site = image.cells.get(id).map(|c| c.site.as_str());
        let region = site
            .and_then(|s| image.sites.get(s))
            .map(|s| s.region.as_str());
        if exclude.cells.contains(id) {
            Some(format!("cell {id}"))
        } else if let Some(s) = site.filter(|s| exclude.sites.contains(*s)) {
            Some(format!("site {s} of cell {id}"))
        } else {
            region
                .filter(|r| exclude.regions.contains(*r))
                .map(|r| format!("region {r} of cell {id}"))
        }
    })
}

/// The cells a change set reconfigures (a relation belongs to its source cell), sorted.
pub fn reconfigured_cells(cs: &ChangeSet) -> Vec<CellId> {
    let mut cells: Vec<CellId> = cs
        .writes
        .iter()
        .map(|w| match &w.entity {
            EntityRef::Cell(id) => id.clone(),
            EntityRef::Relation(source, _) => source.clone(),
        })
        .collect();
    cells.sort();
    cells.dedup();
    cells
}

/// Format 4: coordination by parameter group, and pruning coordinated like any write.
fn check_groups(image: &NetworkImage, cs: &ChangeSet, now_ms: u64) -> Result<(), Outcome> {
    let function = cs.origin.function;
    if !function.is_son() {
        return Ok(());
    }
    let cooldown = image.policy.cooldown_ms;
    if function.is_urgent() {
        return Ok(());
    }
    // A stamp by another writer inside the cool-down refuses the write.
    let fresh =
        |stamp: &Stamp| stamp.by != function && now_ms.saturating_sub(stamp.at_ms) < cooldown;
    let refuse = |w: &crate::changeset::Write, what: String, stamp: &Stamp| {
        rejected(format!(
            "{} of {} is coupled with {what}, which {} changed {} s ago; the cool-down is {} s",
            w.param,
            w.entity,
            stamp.by,
            now_ms.saturating_sub(stamp.at_ms) / 1000,
            cooldown / 1000
        ))
    };
    for w in &cs.writes {
        match &w.entity {
            EntityRef::Cell(id) => {
                let Some(cell) = image.cells.get(id) else {
                    continue;
                };
                for q in coupled(w.param) {
                    if q.on_relation() {
                        for rel in image.relations_from(id) {
                            if let Some(s) = rel.last_change.get(&q).filter(|s| fresh(s)) {
                                let what = format!("{q} of relation/{}/{}", rel.source, rel.target);
                                return Err(refuse(w, what, s));
                            }
                        }
                    } else if let Some(s) = cell.last_change.get(&q).filter(|s| fresh(s)) {
                        return Err(refuse(w, format!("{q} of cell/{id}"), s));
                    }
                }
            }
            EntityRef::Relation(source, target) => {
                let Some(rel) = image.relations.get(&(source.clone(), target.clone())) else {
                    continue;
                };
                if w.param == Param::Exists {
                    if rel.origin == RelationOrigin::Operator {
                        return Err(rejected(format!(
                            "{} was created by the operator; no SON function removes it",
                            w.entity
                        )));
                    }
                    if let Some((q, s)) = rel.last_change.iter().find(|(_, s)| fresh(s)) {
                        return Err(refuse(w, format!("{q} of {}", w.entity), s));
                    }
                    continue;
                }
                let Some(cell) = image.cells.get(source) else {
                    continue;
                };
                for q in coupled(w.param).filter(|q| !q.on_relation()) {
                    if let Some(s) = cell.last_change.get(&q).filter(|s| fresh(s)) {
                        return Err(refuse(w, format!("{q} of cell/{source}"), s));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Rule 4: bump versions once per entity and stamp every written parameter.
fn commit_plan(mut work: Work, cs: &ChangeSet, index: u64, now_ms: u64) -> (Plan, Outcome) {
    let stamp = Stamp {
        by: cs.origin.function,
        at_ms: now_ms,
        index,
    };
    for w in &cs.writes {
        match &w.entity {
            EntityRef::Cell(id) => {
                if let Some(c) = work.cells.get_mut(id) {
                    c.last_change.insert(w.param, stamp.clone());
                }
            }
            EntityRef::Relation(s, t) => {
                if let Some(r) = work.relations.get_mut(&(s.clone(), t.clone())) {
                    r.last_change.insert(w.param, stamp.clone());
                }
            }
        }
    }
    let mut versions = BTreeMap::new();
    let mut plan = Plan::default();
    for (_, mut cell) in work.cells {
        cell.version += 1;
        versions.insert(EntityRef::Cell(cell.id.clone()).to_string(), cell.version);
        plan.cells.push(cell);
    }
    for (key, mut rel) in work.relations {
        if work.removed.contains(&key) {
            continue;
        }
        if work.added.contains(&key) {
            // Above every version the pair ever had: a read of an earlier relation stays stale.
            rel.version = crate::command::VERSION_SPAN.saturating_mul(index);
        }
        rel.version += 1;
        versions.insert(EntityRef::Relation(key.0, key.1).to_string(), rel.version);
        plan.relations.push(rel);
    }
    plan.removed = work.removed;
    (plan, Outcome::Applied { index, versions })
}
