//! Property tests over random sequences of change sets against a small image.
//!
//! Invariants checked after every change set:
//! - the image never holds an illegal value;
//! - a change set applies iff every read version matched and every rule held (the legal
//!   ranges and step limits are restated here independently of the implementation);
//! - application is all-or-nothing: a refused change set leaves every entity as it was, an
//!   applied one changes exactly the written entities, each version by one.

mod common;

use common::*;
use proptest::prelude::*;
use sonraft_raft::changeset::{ChangeSet, Function, Outcome, ReadVersion, Write};
use sonraft_raft::command::{Command, Envelope, Response};
use sonraft_raft::model::image::{Changes, NetworkImage};
use sonraft_raft::model::param::{check_cell, check_relation};
use sonraft_raft::model::{EntityRef, Param, Q_OFFSET_RANGE_DB, TIME_TO_TRIGGER_MS, Value};

const CELLS: [&str; 6] = ["A-1", "A-2", "A-3", "B-1", "B-2", "B-3"];

#[derive(Debug, Clone)]
struct WriteSpec {
    entity: usize,
    on_relation: bool,
    param: usize,
    /// Either a small move from the current value or an arbitrary number.
    small: bool,
    delta: i64,
    raw: i64,
}

#[derive(Debug, Clone)]
struct Step {
    function: usize,
    writes: Vec<WriteSpec>,
    stale: bool,
    advance_ms: u64,
}

fn step() -> impl Strategy<Value = Step> {
    let write = (
        0usize..12,
        any::<bool>(),
        0usize..6,
        any::<bool>(),
        -12i64..=12,
        -1100i64..=1100,
    )
        .prop_map(
            |(entity, on_relation, param, small, delta, raw)| WriteSpec {
                entity,
                on_relation,
                param,
                small,
                delta,
                raw,
            },
        );
    (
        0usize..6,
        prop::collection::vec(write, 1..4),
        prop::bool::weighted(0.15),
        0u64..2_000_000,
    )
        .prop_map(|(function, writes, stale, advance_ms)| Step {
            function,
            writes,
            stale,
            advance_ms,
        })
}

const CELL_PARAMS: [Param; 6] = [
    Param::Pci,
    Param::ElectricalTilt,
    Param::MaxTxPowerDbm,
    Param::Hysteresis,
    Param::TimeToTriggerMs,
    Param::A3Offset,
];

fn current_int(img: &NetworkImage, e: &EntityRef, p: Param) -> Option<i64> {
    match e {
        EntityRef::Cell(id) => {
            let c = img.cells.get(id)?;
            Some(match p {
                Param::Pci => c.pci.into(),
                Param::ElectricalTilt => c.electrical_tilt.into(),
                Param::MaxTxPowerDbm => c.max_tx_power_dbm.into(),
                Param::Hysteresis => c.hysteresis.into(),
                Param::TimeToTriggerMs => c.time_to_trigger_ms.into(),
                Param::A3Offset => c.a3_offset.into(),
                _ => return None,
            })
        }
        EntityRef::Relation(s, t) => img
            .relations
            .get(&(s.clone(), t.clone()))
            .map(|r| r.cio_db.into()),
    }
}

/// The entity a spec names: a cell, or one of the relations of the ring.
fn entity_of(img: &NetworkImage, w: &WriteSpec) -> EntityRef {
    if w.on_relation {
        let keys: Vec<_> = img.relations.keys().cloned().collect();
        if keys.is_empty() {
            return EntityRef::relation("A-1", "A-2");
        }
        let (s, t) = &keys[w.entity % keys.len()];
        EntityRef::relation(s.clone(), t.clone())
    } else {
        EntityRef::cell(CELLS[w.entity % CELLS.len()])
    }
}

/// Independent statement of the legal values and step limits, for the operator
/// (no box, full CIO range). `None` when the write is not a clean operator write.
fn operator_legal(p: Param, from: i64, to: i64) -> bool {
    match p {
        Param::Pci => (0..=503).contains(&to),
        Param::ElectricalTilt => (-900..=900).contains(&to) && (to - from).abs() <= 10,
        Param::MaxTxPowerDbm => (0..=60).contains(&to) && (to - from).abs() <= 3,
        Param::Hysteresis => (0..=30).contains(&to) && (to - from).abs() <= 2,
        Param::A3Offset => (-30..=30).contains(&to) && (to - from).abs() <= 4,
        Param::TimeToTriggerMs => {
            let pos = |v: i64| TIME_TO_TRIGGER_MS.iter().position(|t| i64::from(*t) == v);
            matches!((pos(from), pos(to)), (Some(a), Some(b)) if a.abs_diff(b) <= 2)
        }
        Param::CioDb => {
            Q_OFFSET_RANGE_DB.iter().any(|q| i64::from(*q) == to) && (to - from).abs() <= 3
        }
        _ => false,
    }
}

fn build(img: &NetworkImage, s: &Step) -> (ChangeSet, bool) {
    let function = Function::ALL[s.function];
    let mut writes: Vec<Write> = Vec::new();
    let mut clean = true;
    for w in &s.writes {
        let entity = entity_of(img, w);
        let param = if w.on_relation {
            Param::CioDb
        } else {
            CELL_PARAMS[w.param]
        };
        let from = current_int(img, &entity, param).unwrap_or(0);
        let to = if w.small {
            if param == Param::TimeToTriggerMs {
                let i = TIME_TO_TRIGGER_MS
                    .iter()
                    .position(|t| i64::from(*t) == from)
                    .unwrap_or(0) as i64;
                i64::from(TIME_TO_TRIGGER_MS[(i + w.delta.signum()).clamp(0, 15) as usize])
            } else {
                from + w.delta
            }
        } else {
            w.raw
        };
        if writes
            .iter()
            .any(|x| x.entity == entity && x.param == param)
        {
            continue;
        }
        clean &= operator_legal(param, from, to);
        writes.push(Write {
            entity,
            param,
            value: Value::Int(to),
        });
    }
    let mut read_set: Vec<ReadVersion> = Vec::new();
    for w in &writes {
        if !read_set.iter().any(|r| r.entity == w.entity) {
            let v = img.version_of(&w.entity).unwrap_or(0);
            read_set.push(ReadVersion {
                entity: w.entity.clone(),
                version: if s.stale { v + 1 } else { v },
            });
        }
    }
    let cs = ChangeSet {
        origin: sonraft_raft::changeset::Origin { node: 1, function },
        reason: "prop".into(),
        read_set,
        writes,
        proposed_at_ms: 0,
    };
    (cs, clean && function == Function::Operator && !s.stale)
}

fn assert_legal(img: &NetworkImage) {
    for c in img.cells.values() {
        check_cell(c).unwrap_or_else(|e| panic!("illegal cell: {e}"));
    }
    for r in img.relations.values() {
        check_relation(r).unwrap_or_else(|e| panic!("illegal relation: {e}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn change_sets_apply_iff_fresh_and_legal_and_all_or_nothing(steps in prop::collection::vec(step(), 1..40)) {
        let mut img = image();
        let mut now = 1_000_000u64;
        for (i, s) in steps.iter().enumerate() {
            now += s.advance_ms;
            let index = 10 + i as u64;
            let (cs, clean_operator_write) = build(&img, s);
            let before = img.clone();
            let fresh = cs.read_set.iter().all(|r| img.version_of(&r.entity) == Some(r.version));
            let env = Envelope::new(&Command::ChangeSet(cs.clone()), now).expect("encode");
            let outcome = match img.apply_entry(index, &env, &mut Changes::default()).expect("apply") {
                Response::ChangeSet(o) => o,
                other => panic!("unexpected {other:?}"),
            };
            assert_legal(&img);
            match &outcome {
                Outcome::Applied { versions, .. } => {
                    prop_assert!(fresh, "applied from a stale read: {cs:?}");
                    for w in &cs.writes {
                        let from = current_int(&before, &w.entity, w.param).unwrap_or(0);
                        let Value::Int(to) = w.value else { unreachable!() };
                        prop_assert!(operator_legal(w.param, from, to), "applied an illegal or too large step {from} -> {to} of {}", w.param);
                        prop_assert_eq!(current_int(&img, &w.entity, w.param), match &w.value { Value::Int(v) => Some(*v), _ => None });
                        prop_assert_eq!(img.version_of(&w.entity), before.version_of(&w.entity).map(|v| v + 1));
                        prop_assert_eq!(versions.get(&w.entity.to_string()).copied(), img.version_of(&w.entity));
                    }
                    let written: Vec<&EntityRef> = cs.writes.iter().map(|w| &w.entity).collect();
                    for (id, c) in &img.cells {
                        if !written.contains(&&EntityRef::cell(id.clone())) {
                            prop_assert_eq!(Some(c), before.cells.get(id));
                        }
                    }
                    for ((s2, t), r) in &img.relations {
                        if !written.contains(&&EntityRef::relation(s2.clone(), t.clone())) {
                            prop_assert_eq!(Some(r), before.relations.get(&(s2.clone(), t.clone())));
                        }
                    }
                }
                refused => {
                    prop_assert_eq!(&img.cells, &before.cells, "refused ({:?}) but cells changed", refused);
                    prop_assert_eq!(&img.relations, &before.relations);
                    if !fresh {
                        prop_assert!(matches!(refused, Outcome::Conflict { .. }), "stale read gave {refused:?}");
                    }
                    prop_assert!(!clean_operator_write, "a fresh, legal operator write was refused: {refused:?} for {cs:?}");
                }
            }
        }
    }
}
