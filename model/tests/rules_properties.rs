//! Property tests over random sequences of change sets — from every function, alone or
//! several to a log entry — against a small image of LTE and NR cells with operator tilt boxes
//! and protected relations.
//!
//! The rules are restated here, independently of the implementation ([`predict`]), and every
//! change set must get the predicted outcome:
//! - `conflict` iff some read version is not the entity's current one (stale reads name older
//!   and newer versions, and pruned relations);
//! - else `invalid` iff some write names an unknown entity, a parameter of the other kind of
//!   entity, a value of the wrong type or outside its legal range, a step over its limit, a
//!   tilt outside the cell's operator box or a |CIO| over the policy bound (SON functions),
//!   `exists = true`, or the same parameter of an entity twice;
//! - else `rejected` iff some write is outside its function's domain, prunes a relation with
//!   `remove_allowed = false`, or (SON functions) touches a parameter another function changed
//!   inside the cool-down or a higher-priority function inside the priority hold;
//! - else `applied`.
//!
//! And after every change set: an applied one changes exactly the written parameters, raises
//! each written entity's version by one, removes pruned relations and stamps each written
//! parameter with its function, log time and index; a refused one leaves the image as it was;
//! the image never holds an illegal value.

use std::collections::BTreeMap;

use proptest::prelude::*;
use sonraft_model::changeset::{ChangeSet, Function, Origin, Outcome, ReadVersion, Write};
use sonraft_model::command::{Command, Envelope, ImageImport, Response};
use sonraft_model::model::image::{Changes, NetworkImage};
use sonraft_model::model::param::{check_cell, check_relation};
use sonraft_model::model::{
    AdminState, Cell, CellId, EnergySaving, EntityRef, Param, Q_OFFSET_RANGE_DB, Rat, Relation,
    TIME_TO_TRIGGER_MS, Value,
};

const COOLDOWN_MS: u64 = 600_000;
const HOLD_MS: u64 = 1_800_000;
const SON_CIO_BOUND: i64 = 6;

/// Cells: three LTE per site, two NR on site B; have narrow tilt boxes.
const CELLS: [&str; 8] = ["A-1", "A-2", "A-3", "B-1", "B-2", "B-3", "N-1", "N-2"];

fn image() -> NetworkImage {
    let cells: Vec<serde_json::Value> = CELLS
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let nr = id.starts_with('N');
            let mut c = serde_json::json!({
                "id": id, "site": if id.starts_with('A') { "A" } else { "B" },
                "rat": if nr { "NR" } else { "LTE" }, "pci": if nr { 900 + i } else { 10 + i },
                "arfcn": if nr { 632_628 } else { 1300 }, "azimuth": 120,
            });
            match *id {
                "A-1" => c["tilt_box"] = serde_json::json!({"min": 38, "max": 42}),
                "A-2" => c["tilt_box"] = serde_json::json!({"min": 40, "max": 48}),
                _ => {}
            }
            c
        })
        .collect();
    let mut relations = Vec::new();
    for (i, s) in CELLS.iter().enumerate() {
        for step in [1, 2] {
            let t = CELLS[(i + step) % CELLS.len()];
            // Every fourth relation, and A-1 -> A-3, are protected from pruning.
            let protected = (i + step) % 4 == 0 || (*s, t) == ("A-1", "A-3");
            relations
                .push(serde_json::json!({"source": s, "target": t, "remove_allowed": !protected}));
        }
    }
    let import: ImageImport = serde_json::from_value(serde_json::json!({
        "sites": [{"id": "A", "name": "a", "lat": 48.1, "lon": 11.5}, {"id": "B", "name": "b", "lat": 48.2, "lon": 11.6}],
        "cells": cells,
        "relations": relations,
        "policy": {"cooldown_ms": COOLDOWN_MS, "priority_hold_ms": HOLD_MS, "max_son_cio_db": SON_CIO_BOUND},
    }))
    .expect("import json");
    let mut img = NetworkImage::default();
    let r = img.apply(1, &Command::Import(import), &mut Changes::default());
    assert!(matches!(r, Response::Imported(Ok(_))), "{r:?}");
    assert!(img.relations.values().any(|r| !r.remove_allowed));
    assert_eq!(img.cells["N-1"].rat, Rat::Nr);
    img
}

/// Every relation the image started with (a pruned one stays a target: writing it is invalid,
/// reading it a conflict).
fn relation_keys() -> &'static [(CellId, CellId)] {
    static KEYS: std::sync::OnceLock<Vec<(CellId, CellId)>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| image().relations.keys().cloned().collect())
}

/// Whether `e` is a relation with `remove_allowed = false`.
fn protected(img: &NetworkImage, e: &EntityRef) -> bool {
    matches!(e, EntityRef::Relation(s, t) if img.relations.get(&(s.clone(), t.clone())).is_some_and(|r| !r.remove_allowed))
}

// ---- the generated steps: raw numbers, interpreted against the image of the moment ----

#[derive(Debug, Clone)]
struct WriteSpec {
    /// Pick the parameter from the function's own domain (else from all parameters).
    in_domain: bool,
    param: usize,
    /// Pick an entity of the parameter's kind (else of the other kind).
    right_kind: bool,
    entity: usize,
    /// 0..15: a step from the current value (a legal boolean or text where the parameter
    /// takes one); 15..18: any number; 18: a boolean; 19: text.
    how: u8,
    delta: i64,
    raw: i64,
    flag: bool,
    text: usize,
}

#[derive(Debug, Clone)]
enum ReadSpec {
    /// The current version of every written entity.
    Fresh,
    /// No read set.
    Blind,
    /// One read version off by `offset` (older or newer than current).
    Stale { which: usize, offset: i64 },
}

#[derive(Debug, Clone)]
struct CsSpec {
    function: usize,
    writes: Vec<WriteSpec>,
    read: ReadSpec,
}

#[derive(Debug, Clone)]
struct Step {
    /// Applied as one log entry (several: a group-committed `ChangeSets` command).
    change_sets: Vec<CsSpec>,
    advance_ms: u64,
}

fn write_spec() -> impl Strategy<Value = WriteSpec> {
    (
        prop::bool::weighted(0.7),
        0usize..64,
        prop::bool::weighted(0.9),
        // Mostly the first few cells and relations, so that functions meet each other's
        // recent changes (cool-down, priority hold).
        prop_oneof![3 => 0usize..3, 1 => 0usize..64],
        0u8..20,
        prop_oneof![3 => -3i64..=3, 1 => -12i64..=12],
        -1100i64..=1100,
        prop::bool::weighted(0.3),
        0usize..TEXTS.len(),
    )
        .prop_map(
            |(in_domain, param, right_kind, entity, how, delta, raw, flag, text)| WriteSpec {
                in_domain,
                param,
                right_kind,
                entity,
                how,
                delta,
                raw,
                flag,
                text,
            },
        )
}

fn read_spec() -> impl Strategy<Value = ReadSpec> {
    prop_oneof![
        14 => Just(ReadSpec::Fresh),
        3 => Just(ReadSpec::Blind),
        3 => (0usize..4, prop_oneof![-3i64..=-1, 1i64..=2])
            .prop_map(|(which, offset)| ReadSpec::Stale { which, offset }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let cs = (
        0usize..FUNCTIONS.len(),
        prop::collection::vec(write_spec(), 1..3),
        read_spec(),
    )
        .prop_map(|(function, writes, read)| CsSpec {
            function,
            writes,
            read,
        });
    (
        prop::collection::vec(cs, 1..4),
        prop_oneof![0u64..120_000, 0u64..2_400_000],
    )
        .prop_map(|(change_sets, advance_ms)| Step {
            change_sets,
            advance_ms,
        })
}

/// The proposers whose change sets travel in entries of format 1 and 2, whose rules are the
/// ones restated here (outage compensation needs format 6, judged with the SON controls:
/// `tests/son_controls.rs`).
const FUNCTIONS: [Function; 6] = [
    Function::Operator,
    Function::PciConflict,
    Function::MobilityRobustness,
    Function::LoadBalancing,
    Function::EnergySaving,
    Function::AnrPruning,
];

const TEXTS: [&str; 6] = [
    "unlocked",
    "locked",
    "shutting_down",
    "normal",
    "dormant",
    "asleep",
];

/// The parameters a function writes, restated from README ("each SON function writes only its
/// own parameters").
fn domain(f: Function) -> &'static [Param] {
    match f {
        Function::Operator => &Param::ALL,
        Function::PciConflict => &[Param::Pci],
        Function::MobilityRobustness => &[
            Param::Hysteresis,
            Param::TimeToTriggerMs,
            Param::A3Offset,
            Param::CioDb,
        ],
        Function::LoadBalancing => &[Param::CioDb],
        Function::EnergySaving => &[Param::EnergySaving, Param::MaxTxPowerDbm],
        Function::AnrPruning => &[Param::Exists, Param::HoAllowed],
        Function::Fallback => unreachable!("nobody proposes as fallback"),
        Function::OutageCompensation => unreachable!("not generated: format 6"),
        Function::CoverageCapacity | Function::AnrAdd => unreachable!("not generated: format 7"),
    }
}

/// Higher wins the priority hold.
fn priority(f: Function) -> u8 {
    match f {
        Function::Operator => 100,
        Function::PciConflict => 50,
        Function::MobilityRobustness => 40,
        Function::LoadBalancing => 30,
        Function::EnergySaving => 20,
        Function::AnrPruning => 10,
        Function::Fallback => unreachable!("nobody proposes as fallback"),
        Function::OutageCompensation => unreachable!("not generated: format 6"),
        Function::CoverageCapacity | Function::AnrAdd => unreachable!("not generated: format 7"),
    }
}

fn is_relation_param(p: Param) -> bool {
    matches!(p, Param::CioDb | Param::HoAllowed | Param::Exists)
}

fn ttt_position(v: i64) -> Option<usize> {
    TIME_TO_TRIGGER_MS.iter().position(|t| i64::from(*t) == v)
}

fn admin_text(s: AdminState) -> &'static str {
    match s {
        AdminState::Unlocked => "unlocked",
        AdminState::Locked => "locked",
        AdminState::ShuttingDown => "shutting_down",
    }
}

fn energy_text(s: EnergySaving) -> &'static str {
    match s {
        EnergySaving::Normal => "normal",
        EnergySaving::Dormant => "dormant",
    }
}

/// The current value of a parameter of an entity, as a change set would write it.
fn current(img: &NetworkImage, e: &EntityRef, p: Param) -> Option<Value> {
    match e {
        EntityRef::Cell(id) => {
            let c = img.cells.get(id)?;
            Some(match p {
                Param::Pci => Value::Int(c.pci.into()),
                Param::ElectricalTilt => Value::Int(c.electrical_tilt.into()),
                Param::MaxTxPowerDbm => Value::Int(c.max_tx_power_dbm.into()),
                Param::Hysteresis => Value::Int(c.hysteresis.into()),
                Param::TimeToTriggerMs => Value::Int(c.time_to_trigger_ms.into()),
                Param::A3Offset => Value::Int(c.a3_offset.into()),
                Param::AdminState => Value::Text(admin_text(c.admin_state).into()),
                Param::EnergySaving => Value::Text(energy_text(c.energy_saving).into()),
                _ => return None,
            })
        }
        EntityRef::Relation(s, t) => {
            let r = img.relations.get(&(s.clone(), t.clone()))?;
            Some(match p {
                Param::CioDb => Value::Int(r.cio_db.into()),
                Param::HoAllowed => Value::Bool(r.ho_allowed),
                Param::Exists => Value::Bool(true),
                _ => return None,
            })
        }
    }
}

fn build_write(img: &NetworkImage, function: Function, w: &WriteSpec) -> Write {
    let param = if w.in_domain {
        let d = domain(function);
        d[w.param % d.len()]
    } else {
        Param::ALL[w.param % Param::ALL.len()]
    };
    let on_relation = is_relation_param(param) == w.right_kind;
    let entity = if on_relation {
        let keys = relation_keys();
        let (s, t) = &keys[w.entity % keys.len()];
        EntityRef::relation(s.clone(), t.clone())
    } else if w.entity % 16 == 15 {
        EntityRef::cell("X-9")
    } else {
        EntityRef::cell(CELLS[w.entity % CELLS.len()])
    };
    let now = match current(img, &entity, param) {
        Some(Value::Int(v)) => v,
        _ => 0,
    };
    let numeric = !matches!(
        param,
        Param::AdminState | Param::EnergySaving | Param::HoAllowed | Param::Exists
    );
    let value = match (numeric, w.how) {
        (true, 0..15) if param == Param::TimeToTriggerMs => {
            let i = ttt_position(now).unwrap_or(0) as i64;
            let j = (i + w.delta.clamp(-3, 3)).clamp(0, TIME_TO_TRIGGER_MS.len() as i64 - 1);
            Value::Int(TIME_TO_TRIGGER_MS[j as usize].into())
        }
        (true, 0..15) => Value::Int(now + w.delta),
        (true, 15..18) => Value::Int(w.raw),
        // `exists = false` prunes for good: rarer than the other values.
        (false, 0..18) if param == Param::Exists => Value::Bool(!w.flag),
        (false, 0..18) if param == Param::HoAllowed => Value::Bool(w.flag),
        (false, 0..18) => Value::Text(TEXTS[w.text].into()),
        (_, 18) => Value::Bool(w.flag),
        (_, 19) => Value::Text(TEXTS[w.text].into()),
        _ => Value::Int(w.raw),
    };
    Write {
        entity,
        param,
        value,
    }
}

fn build(img: &NetworkImage, spec: &CsSpec) -> ChangeSet {
    let function = FUNCTIONS[spec.function];
    let writes: Vec<Write> = spec
        .writes
        .iter()
        .map(|w| build_write(img, function, w))
        .collect();
    let mut read_set: Vec<ReadVersion> = Vec::new();
    if !matches!(spec.read, ReadSpec::Blind) {
        for w in &writes {
            if !read_set.iter().any(|r| r.entity == w.entity) {
                read_set.push(ReadVersion {
                    entity: w.entity.clone(),
                    version: img.version_of(&w.entity).unwrap_or(1),
                });
            }
        }
    }
    if let ReadSpec::Stale { which, offset } = spec.read {
        let n = read_set.len();
        let r = &mut read_set[which % n];
        r.version = r.version.saturating_add_signed(offset).max(1);
        if img.version_of(&r.entity) == Some(r.version) {
            r.version += 3;
        }
    }
    ChangeSet {
        origin: Origin { node: 1, function },
        reason: "prop".into(),
        read_set,
        writes,
        proposed_at_ms: 0,
    }
}

// ---- the rules, restated ----

/// The outcome kinds, in the order the rules are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Conflict,
    Invalid,
    Rejected,
    Applied,
}

fn kind(o: &Outcome) -> Kind {
    match o {
        Outcome::Conflict { .. } => Kind::Conflict,
        Outcome::Invalid { .. } => Kind::Invalid,
        Outcome::Rejected { .. } => Kind::Rejected,
        Outcome::Applied { .. } => Kind::Applied,
        Outcome::Pending { .. } => panic!("no open-loop function in these properties: {o:?}"),
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

/// Whether `w` is a legal value within the step limit for `function`, on an existing entity of
/// the right kind.
fn legal(img: &NetworkImage, function: Function, w: &Write) -> bool {
    let son = function != Function::Operator;
    match &w.entity {
        EntityRef::Cell(id) => {
            let Some(c) = img.cells.get(id) else {
                return false;
            };
            cell_value_legal(c, son, w.param, &w.value)
        }
        EntityRef::Relation(s, t) => {
            let Some(r) = img.relations.get(&(s.clone(), t.clone())) else {
                return false;
            };
            relation_value_legal(r, son, w.param, &w.value)
        }
    }
}

fn cell_value_legal(c: &Cell, son: bool, p: Param, v: &Value) -> bool {
    let step = |from: i64, to: i64, limit: i64| (to - from).abs() <= limit;
    match (p, v) {
        (Param::Pci, Value::Int(to)) => {
            let max = if c.rat == Rat::Nr { 1007 } else { 503 };
            (0..=max).contains(to)
        }
        (Param::ElectricalTilt, Value::Int(to)) => {
            (-900..=900).contains(to)
                && step(c.electrical_tilt.into(), *to, 10)
                && (!son || (i64::from(c.tilt_box.min)..=i64::from(c.tilt_box.max)).contains(to))
        }
        (Param::MaxTxPowerDbm, Value::Int(to)) => {
            (0..=60).contains(to) && step(c.max_tx_power_dbm.into(), *to, 3)
        }
        (Param::Hysteresis, Value::Int(to)) => {
            (0..=30).contains(to) && step(c.hysteresis.into(), *to, 2)
        }
        (Param::A3Offset, Value::Int(to)) => {
            (-30..=30).contains(to) && step(c.a3_offset.into(), *to, 4)
        }
        (Param::TimeToTriggerMs, Value::Int(to)) => {
            match (ttt_position(c.time_to_trigger_ms.into()), ttt_position(*to)) {
                (Some(a), Some(b)) => a.abs_diff(b) <= 2,
                _ => false,
            }
        }
        (Param::AdminState, Value::Text(t)) => {
            ["unlocked", "locked", "shutting_down"].contains(&t.as_str())
        }
        (Param::EnergySaving, Value::Text(t)) => ["normal", "dormant"].contains(&t.as_str()),
        _ => false,
    }
}

fn relation_value_legal(r: &Relation, son: bool, p: Param, v: &Value) -> bool {
    match (p, v) {
        (Param::CioDb, Value::Int(to)) => {
            let bound = if son { SON_CIO_BOUND } else { 24 };
            Q_OFFSET_RANGE_DB.iter().any(|q| i64::from(*q) == *to)
                && to.abs() <= bound
                && (to - i64::from(r.cio_db)).abs() <= 3
        }
        (Param::HoAllowed, Value::Bool(_)) => true,
        (Param::Exists, Value::Bool(false)) => true,
        _ => false,
    }
}

/// Why a write is refused by coordination, if it is.
fn coordination_refuses(img: &NetworkImage, f: Function, w: &Write, now_ms: u64) -> bool {
    if !domain(f).contains(&w.param) {
        return true;
    }
    let stamps = match &w.entity {
        EntityRef::Cell(id) => img.cells.get(id).map(|c| &c.last_change),
        EntityRef::Relation(s, t) => {
            let r = img.relations.get(&(s.clone(), t.clone()));
            if w.param == Param::Exists && r.is_some_and(|r| !r.remove_allowed) {
                return true;
            }
            r.map(|r| &r.last_change)
        }
    };
    if f == Function::Operator {
        return false;
    }
    let Some(stamp) = stamps.and_then(|s| s.get(&w.param)) else {
        return false;
    };
    let age = now_ms.saturating_sub(stamp.at_ms);
    (stamp.by != f && age < COOLDOWN_MS) || (priority(stamp.by) > priority(f) && age < HOLD_MS)
}

/// The outcome the rules give `cs` on `img` at log time `now_ms`.
fn predict(img: &NetworkImage, cs: &ChangeSet, now_ms: u64) -> Kind {
    if cs
        .read_set
        .iter()
        .any(|r| img.version_of(&r.entity) != Some(r.version))
    {
        return Kind::Conflict;
    }
    let f = cs.origin.function;
    for (i, w) in cs.writes.iter().enumerate() {
        let twice = cs.writes[..i]
            .iter()
            .any(|x| x.entity == w.entity && x.param == w.param);
        let right_kind = matches!(w.entity, EntityRef::Relation(..)) == is_relation_param(w.param);
        if twice || !right_kind || !legal(img, f, w) {
            return Kind::Invalid;
        }
    }
    if cs
        .writes
        .iter()
        .any(|w| coordination_refuses(img, f, w, now_ms))
    {
        return Kind::Rejected;
    }
    Kind::Applied
}

fn assert_legal(img: &NetworkImage) {
    for c in img.cells.values() {
        check_cell(c).unwrap_or_else(|e| panic!("illegal cell: {e}"));
    }
    for r in img.relations.values() {
        check_relation(r).unwrap_or_else(|e| panic!("illegal relation: {e}"));
    }
}

/// Checks what one change set did to the image (`before` -> `img`) against its outcome.
fn check_effect(
    before: &NetworkImage,
    img: &NetworkImage,
    cs: &ChangeSet,
    outcome: &Outcome,
    index: u64,
    now_ms: u64,
) -> Result<(), TestCaseError> {
    match outcome {
        Outcome::Applied { index: i, versions } => {
            prop_assert_eq!(*i, index);
            let mut expected: BTreeMap<String, u64> = BTreeMap::new();
            for w in &cs.writes {
                let pruned = cs
                    .writes
                    .iter()
                    .any(|x| x.entity == w.entity && x.param == Param::Exists);
                if pruned {
                    prop_assert_eq!(img.version_of(&w.entity), None, "{} not pruned", w.entity);
                    continue;
                }
                prop_assert_eq!(
                    current(img, &w.entity, w.param),
                    Some(w.value.clone()),
                    "{} of {} not written",
                    w.param,
                    w.entity
                );
                let stamp = match &w.entity {
                    EntityRef::Cell(id) => img.cells[id].last_change.get(&w.param).cloned(),
                    EntityRef::Relation(s, t) => img.relations[&(s.clone(), t.clone())]
                        .last_change
                        .get(&w.param)
                        .cloned(),
                };
                let stamp = stamp.expect("a written parameter is stamped");
                prop_assert_eq!(
                    (stamp.by, stamp.at_ms, stamp.index),
                    (cs.origin.function, now_ms, index)
                );
                let v = before.version_of(&w.entity).map(|v| v + 1);
                prop_assert_eq!(img.version_of(&w.entity), v);
                expected.insert(w.entity.to_string(), v.unwrap_or(0));
            }
            prop_assert_eq!(versions, &expected);
            let written = |e: &EntityRef| cs.writes.iter().any(|w| &w.entity == e);
            for (id, c) in &before.cells {
                if !written(&EntityRef::cell(id.clone())) {
                    prop_assert_eq!(Some(c), img.cells.get(id), "{} changed unwritten", id);
                }
            }
            for ((s, t), r) in &before.relations {
                if !written(&EntityRef::relation(s.clone(), t.clone())) {
                    prop_assert_eq!(Some(r), img.relations.get(&(s.clone(), t.clone())));
                }
            }
            prop_assert_eq!(
                img.relations.len()
                    + cs.writes
                        .iter()
                        .filter(|w| w.param == Param::Exists)
                        .count(),
                before.relations.len()
            );
        }
        refused => {
            prop_assert_eq!(
                &img.cells,
                &before.cells,
                "refused ({:?}) but cells changed",
                refused
            );
            prop_assert_eq!(&img.relations, &before.relations);
            if let Outcome::Conflict { current } = refused {
                let reported: BTreeMap<String, Option<u64>> = cs
                    .read_set
                    .iter()
                    .map(|r| (r.entity.to_string(), before.version_of(&r.entity)))
                    .collect();
                prop_assert_eq!(current, &reported);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_change_set_gets_the_outcome_the_rules_give_and_only_its_effect(steps in prop::collection::vec(step(), 1..40)) {
        let mut img = image();
        let mut now = 1_000_000u64;
        for (i, s) in steps.iter().enumerate() {
            now += s.advance_ms;
            let index = 10 + i as u64;
            // Every change set of an entry was computed from the same image (group commit).
            let before_entry = img.clone();
            let sets: Vec<ChangeSet> = s.change_sets.iter().map(|spec| build(&before_entry, spec)).collect();
            let command = if sets.len() == 1 {
                Command::ChangeSet(sets[0].clone())
            } else {
                Command::ChangeSets(sets.clone())
            };
            let env = Envelope::new(&command, now).expect("encode");
            let outcomes = match img.apply_entry(index, &env, &mut Changes::default()).expect("apply") {
                Response::ChangeSet(o) => vec![o],
                Response::ChangeSets(os) => os,
                other => panic!("unexpected {other:?}"),
            };
            prop_assert_eq!(outcomes.len(), sets.len());
            assert_legal(&img);
            // One at a time: each is judged against the image its predecessors left.
            let mut replay = before_entry;
            for (cs, outcome) in sets.iter().zip(&outcomes) {
                let before = replay.clone();
                let predicted = predict(&before, cs, now);
                prop_assert_eq!(kind(outcome), predicted, "got {:?} for {:?}", outcome, cs);
                let env = Envelope::new(&Command::ChangeSet(cs.clone()), now).expect("encode");
                let single = match replay.apply_entry(index, &env, &mut Changes::default()).expect("apply") {
                    Response::ChangeSet(o) => o,
                    other => panic!("unexpected {other:?}"),
                };
                prop_assert_eq!(&single, outcome, "alone and in one entry differ");
                check_effect(&before, &replay, cs, outcome, index, now)?;
            }
            prop_assert_eq!(&replay.cells, &img.cells);
            prop_assert_eq!(&replay.relations, &img.relations);
        }
    }
}

/// The generator reaches every outcome, for SON functions too, and every rule that refuses:
/// without this the property above could pass by never exercising a rule.
#[test]
fn the_generated_change_sets_reach_every_rule() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut reached: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..64 {
        let steps = prop::collection::vec(step(), 30..40)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut img = image();
        let mut now = 1_000_000u64;
        for (i, s) in steps.iter().enumerate() {
            now += s.advance_ms;
            for spec in &s.change_sets {
                let cs = build(&img, spec);
                let son = cs.origin.function != Function::Operator;
                let k = predict(&img, &cs, now);
                let mut note = |what: &'static str| *reached.entry(what).or_default() += 1;
                match (k, son) {
                    (Kind::Applied, true) => note("applied, SON"),
                    (Kind::Applied, false) => note("applied, operator"),
                    (Kind::Conflict, _) if cs.read_set.iter().any(|r| img.version_of(&r.entity).is_some_and(|v| r.version < v)) => note("conflict, older read"),
                    (Kind::Conflict, _) => note("conflict, newer or pruned read"),
                    (Kind::Invalid, true) if cs.writes.iter().any(|w| w.param == Param::ElectricalTilt && matches!(&w.entity, EntityRef::Cell(id) if img.cells.get(id).is_some_and(|c| cell_value_legal(c, false, w.param, &w.value) && !cell_value_legal(c, true, w.param, &w.value)))) => note("invalid, tilt box"),
                    (Kind::Invalid, true) if cs.writes.iter().any(|w| w.param == Param::CioDb && matches!(&w.value, Value::Int(v) if v.abs() > SON_CIO_BOUND && v.abs() <= 24)) => note("invalid, SON CIO bound"),
                    (Kind::Invalid, _) => note("invalid"),
                    (Kind::Rejected, _) if cs.writes.iter().any(|w| w.param == Param::Exists && protected(&img, &w.entity)) => note("rejected, remove_allowed"),
                    (Kind::Rejected, true) if cs.writes.iter().all(|w| domain(cs.origin.function).contains(&w.param)) => note("rejected, cool-down or hold"),
                    (Kind::Rejected, _) => note("rejected, domain"),
                }
                for w in &cs.writes {
                    if k == Kind::Applied {
                        match w.param {
                            Param::Exists => note("applied, relation pruned"),
                            Param::AdminState => note("applied, admin_state"),
                            Param::HoAllowed => note("applied, boolean"),
                            Param::Pci
                                if matches!(&w.entity, EntityRef::Cell(id) if id.starts_with('N'))
                                    && int(&w.value).is_some_and(|v| v > 503) =>
                            {
                                note("applied, NR PCI above 503")
                            }
                            _ => {}
                        }
                    }
                }
                let env = Envelope::new(&Command::ChangeSet(cs), now).unwrap();
                img.apply_entry(10 + i as u64, &env, &mut Changes::default())
                    .unwrap();
            }
        }
    }
    for what in [
        "applied, SON",
        "applied, operator",
        "conflict, older read",
        "conflict, newer or pruned read",
        "invalid, tilt box",
        "invalid, SON CIO bound",
        "invalid",
        "rejected, cool-down or hold",
        "rejected, domain",
        "rejected, remove_allowed",
        "applied, relation pruned",
        "applied, admin_state",
        "applied, boolean",
        "applied, NR PCI above 503",
    ] {
        assert!(
            reached.get(what).copied().unwrap_or(0) > 0,
            "never reached: {what} ({reached:?})"
        );
    }
}
