//! The change-set rules, one behaviour per test.

mod common;

use common::*;
use sonraft_model::changeset::{Function, Outcome};
use sonraft_model::command::ImageImport;
use sonraft_model::command::{Command, Envelope, Response};
use sonraft_model::model::image::{Changes, NetworkImage};
use sonraft_model::model::import::{ImportOutcome, ImportPart};
use sonraft_model::model::{Param, Policy, Value};

fn apply(
    img: &mut NetworkImage,
    index: u64,
    now_ms: u64,
    cs: sonraft_model::changeset::ChangeSet,
) -> Outcome {
    let env = Envelope::new(&Command::ChangeSet(cs), now_ms).expect("encode");
    match img
        .apply_entry(index, &env, &mut Changes::default())
        .expect("apply")
    {
        Response::ChangeSet(o) => o,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_change_set_from_a_current_read_applies_and_bumps_the_version() {
    let mut img = image();
    let cs = change_set(
        Function::Operator,
        &img,
        vec![write("cell/A-1", Param::ElectricalTilt, Value::Int(45))],
    );
    let out = apply(&mut img, 2, 1_000, cs);
    assert_eq!(
        out,
        Outcome::Applied {
            index: 2,
            versions: [("cell/A-1".into(), 2)].into()
        }
    );
    assert_eq!(img.cells["A-1"].electrical_tilt, 45);
    assert_eq!(
        img.cells["A-1"].last_change[&Param::ElectricalTilt].by,
        Function::Operator
    );
}

#[test]
fn two_change_sets_from_the_same_read_one_applies_the_other_conflicts() {
    let mut img = image();
    let a = change_set(
        Function::Operator,
        &img,
        vec![write("cell/A-1", Param::ElectricalTilt, Value::Int(45))],
    );
    let b = change_set(
        Function::Operator,
        &img,
        vec![write("cell/A-1", Param::ElectricalTilt, Value::Int(35))],
    );
    assert_eq!(apply(&mut img, 2, 1_000, a).kind(), "applied");
    let out = apply(&mut img, 3, 1_000, b);
    assert_eq!(
        out,
        Outcome::Conflict {
            current: [("cell/A-1".into(), Some(2))].into()
        }
    );
    assert_eq!(img.cells["A-1"].electrical_tilt, 45);
}

#[test]
fn an_illegal_value_is_invalid_and_changes_nothing() {
    let mut img = image();
    let before = img.clone();
    let cs = change_set(
        Function::Operator,
        &img,
        vec![
            write("cell/A-1", Param::Hysteresis, Value::Int(5)),
            write("cell/A-2", Param::Pci, Value::Int(504)),
        ],
    );
    let out = apply(&mut img, 2, 1_000, cs);
    assert_eq!(out.kind(), "invalid", "{out:?}");
    assert_eq!(img.cells, before.cells);
}

#[test]
fn an_unknown_entity_is_invalid() {
    let mut img = image();
    let mut cs = change_set(
        Function::Operator,
        &img,
        vec![write("cell/Z-9", Param::Pci, Value::Int(3))],
    );
    cs.read_set.clear();
    let out = apply(&mut img, 2, 1_000, cs);
    assert!(
        matches!(&out, Outcome::Invalid { reason } if reason.contains("unknown entity cell/Z-9")),
        "{out:?}"
    );
}

#[test]
fn a_relation_parameter_on_a_cell_is_invalid() {
    let mut img = image();
    let cs = change_set(
        Function::Operator,
        &img,
        vec![write("cell/A-1", Param::CioDb, Value::Int(3))],
    );
    assert_eq!(apply(&mut img, 2, 1_000, cs).kind(), "invalid");
}

#[test]
fn tilt_moves_at_most_one_degree_per_change_set() {
    let mut img = image();
    let cs = change_set(
        Function::Operator,
        &img,
        vec![write("cell/A-1", Param::ElectricalTilt, Value::Int(51))],
    );
    let out = apply(&mut img, 2, 1_000, cs);
    assert!(
        matches!(&out, Outcome::Invalid { reason } if reason.contains("at most 10")),
        "{out:?}"
    );
}

#[test]
fn cio_moves_at_most_three_db_and_only_to_q_offset_values() {
    let mut img = image();
    let too_far = change_set(
        Function::LoadBalancing,
        &img,
        vec![write("relation/A-1/A-2", Param::CioDb, Value::Int(4))],
    );
    assert_eq!(apply(&mut img, 2, 1_000, too_far).kind(), "invalid");
    let not_q = change_set(
        Function::Operator,
        &img,
        vec![write("relation/A-1/A-2", Param::CioDb, Value::Int(7))],
    );
    assert_eq!(apply(&mut img, 3, 1_000, not_q).kind(), "invalid");
    let ok = change_set(
        Function::LoadBalancing,
        &img,
        vec![write("relation/A-1/A-2", Param::CioDb, Value::Int(3))],
    );
    assert_eq!(apply(&mut img, 4, 1_000, ok).kind(), "applied");
}

#[test]
fn only_the_operator_may_leave_the_tilt_box() {
    let mut img = image();
    img.cells.get_mut("A-1").unwrap().electrical_tilt = 150;
    let son = change_set(
        Function::LoadBalancing,
        &img,
        vec![write("cell/A-1", Param::ElectricalTilt, Value::Int(155))],
    );
    let out = apply(&mut img, 2, 1_000, son);
    assert!(
        matches!(&out, Outcome::Invalid { reason } if reason.contains("operator box")),
        "{out:?}"
    );
    let op = change_set(
        Function::Operator,
        &img,
        vec![write("cell/A-1", Param::ElectricalTilt, Value::Int(155))],
    );
    assert_eq!(apply(&mut img, 3, 1_000, op).kind(), "applied");
}

#[test]
fn a_function_may_not_write_outside_its_domain() {
    let mut img = image();
    let cs = change_set(
        Function::LoadBalancing,
        &img,
        vec![write("cell/A-1", Param::Pci, Value::Int(7))],
    );
    let out = apply(&mut img, 2, 1_000, cs);
    assert!(
        matches!(&out, Outcome::Rejected { reason } if reason.contains("may not write pci")),
        "{out:?}"
    );
}

#[test]
fn another_function_inside_the_cool_down_is_rejected_and_the_operator_overrides() {
    let mut img = image();
    let mro = change_set(
        Function::MobilityRobustness,
        &img,
        vec![write("relation/A-1/A-2", Param::CioDb, Value::Int(2))],
    );
    assert_eq!(apply(&mut img, 2, 1_000, mro).kind(), "applied");
    let mlb = change_set(
        Function::LoadBalancing,
        &img,
        vec![write("relation/A-1/A-2", Param::CioDb, Value::Int(4))],
    );
    let out = apply(&mut img, 3, 61_000, mlb.clone());
    assert!(
        matches!(&out, Outcome::Rejected { reason } if reason.contains("cool-down")),
        "{out:?}"
    );
    let op = change_set(
        Function::Operator,
        &img,
        vec![write("relation/A-1/A-2", Param::CioDb, Value::Int(0))],
    );
    assert_eq!(apply(&mut img, 4, 62_000, op).kind(), "applied");
}

#[test]
fn a_higher_priority_function_holds_its_parameter_past_the_cool_down() {
    let mut img = image();
    img.policy = Policy {
        cooldown_ms: 10_000,
        priority_hold_ms: 100_000,
        ..Policy::default()
    };
    let mro = change_set(
        Function::MobilityRobustness,
        &img,
        vec![write("relation/A-1/A-2", Param::CioDb, Value::Int(2))],
    );
    assert_eq!(apply(&mut img, 2, 1_000, mro).kind(), "applied");
    let mlb = change_set(
        Function::LoadBalancing,
        &img,
        vec![write("relation/A-1/A-2", Param::CioDb, Value::Int(4))],
    );
    let out = apply(&mut img, 3, 20_000, mlb.clone());
    assert!(
        matches!(&out, Outcome::Rejected { reason } if reason.contains("higher-priority")),
        "{out:?}"
    );
    let mlb = change_set(
        Function::LoadBalancing,
        &img,
        vec![write("relation/A-1/A-2", Param::CioDb, Value::Int(4))],
    );
    assert_eq!(
        apply(&mut img, 4, 200_000, mlb).kind(),
        "applied",
        "after the hold"
    );
}

#[test]
fn rules_use_log_time_which_never_runs_backwards() {
    let mut img = image();
    let mro = change_set(
        Function::MobilityRobustness,
        &img,
        vec![write("relation/A-1/A-2", Param::CioDb, Value::Int(2))],
    );
    assert_eq!(apply(&mut img, 2, 5_000_000, mro).kind(), "applied");
    // A new leader with a clock one hour behind: the log clock stays at 5_000 s.
    let mlb = change_set(
        Function::LoadBalancing,
        &img,
        vec![write("relation/A-1/A-2", Param::CioDb, Value::Int(4))],
    );
    let out = apply(&mut img, 3, 1_400_000, mlb);
    assert!(
        matches!(&out, Outcome::Rejected { reason } if reason.contains("0 s ago")),
        "{out:?}"
    );
    assert_eq!(img.log_time_ms, 5_000_000);
}

#[test]
fn a_relation_with_remove_allowed_false_is_never_pruned() {
    let mut img = image();
    img.relations
        .get_mut(&("A-1".into(), "A-2".into()))
        .unwrap()
        .remove_allowed = false;
    let cs = change_set(
        Function::AnrPruning,
        &img,
        vec![write("relation/A-1/A-2", Param::Exists, Value::Bool(false))],
    );
    assert_eq!(apply(&mut img, 2, 1_000, cs).kind(), "rejected");
    let cs = change_set(
        Function::AnrPruning,
        &img,
        vec![write("relation/A-1/A-3", Param::Exists, Value::Bool(false))],
    );
    assert_eq!(apply(&mut img, 3, 1_000, cs).kind(), "applied");
    assert!(!img.relations.contains_key(&("A-1".into(), "A-3".into())));
    assert_eq!(img.version_of(&entity("relation/A-1/A-3")), None);
}

#[test]
fn a_command_of_a_newer_format_is_refused_with_a_clear_message() {
    let mut img = image();
    let env = Envelope {
        format: 99,
        log_time_ms: 0,
        body: vec![1, 2, 3],
    };
    let err = img
        .apply_entry(5, &env, &mut Changes::default())
        .unwrap_err();
    assert!(err.to_string().contains("upgrade this node"), "{err}");
}

#[test]
fn garbage_in_a_command_body_is_an_error_not_a_panic() {
    let mut img = image();
    let env = Envelope {
        format: 1,
        log_time_ms: 0,
        body: vec![0xff; 40],
    };
    assert!(img.apply_entry(5, &env, &mut Changes::default()).is_err());
}

#[test]
fn the_effective_format_is_the_lowest_among_voters() {
    let mut img = image();
    for (id, f) in [(1, 1), (2, 2), (3, 2)] {
        let r = sonraft_model::model::NodeRelease {
            node_id: id,
            release: "x".into(),
            max_command_format: f,
        };
        img.apply(9, &Command::Release(r), &mut Changes::default());
    }
    assert_eq!(img.effective_format([2, 3]), 2);
    assert_eq!(img.effective_format([1, 2, 3]), 1);
    assert_eq!(
        img.effective_format([2, 3, 4]),
        1,
        "a voter that never advertised counts as 1"
    );
}

#[test]
fn an_import_with_a_dangling_relation_is_refused_whole() {
    let mut img = NetworkImage::default();
    let import = sonraft_model::command::ImageImport {
        sites: vec![site("A")],
        cells: vec![cell("A-1", "A", 1)],
        relations: vec![relation("A-1", "X-9")],
        policy: None,
    };
    let r = img.apply(1, &Command::Import(import), &mut Changes::default());
    assert!(
        matches!(r, Response::Imported(Err(ref e)) if e.contains("unknown cell")),
        "{r:?}"
    );
    assert!(img.cells.is_empty() && img.sites.is_empty());
}

/// A change set that read version 1 or 2 of a relation must not apply to the relation
/// re-created after a prune (ABA): an entity's versions never repeat (issue 11, finding 6).
#[test]
fn versions_of_a_pruned_and_re_created_relation_never_repeat() {
    let mut img = image();
    let key = "relation/A-1/A-3";
    let first = change_set(
        Function::Operator,
        &img,
        vec![write(key, Param::CioDb, Value::Int(2))],
    );
    let read_before_prune = change_set(
        Function::Operator,
        &img,
        vec![write(key, Param::CioDb, Value::Int(-2))],
    );
    assert_eq!(apply(&mut img, 2, 1_000, first).kind(), "applied");
    let old_version = img.version_of(&entity(key)).unwrap();
    let prune = change_set(
        Function::Operator,
        &img,
        vec![write(key, Param::Exists, Value::Bool(false))],
    );
    assert_eq!(apply(&mut img, 3, 1_000, prune).kind(), "applied");
    let again = sonraft_model::command::ImageImport {
        relations: vec![relation("A-1", "A-3")],
        ..Default::default()
    };
    img.apply(4, &import_part(7, 0, true, again), &mut Changes::default());
    let new_version = img.version_of(&entity(key)).unwrap();
    assert!(
        new_version > old_version,
        "re-created at version {new_version}; the old relation had reached {old_version}"
    );
    assert_eq!(
        apply(&mut img, 5, 1_000, read_before_prune).kind(),
        "conflict",
        "a change computed from the old relation applied to the new one"
    );
}

fn import_part(id: u64, part: u32, last: bool, data: ImageImport) -> Command {
    Command::ImportPart(ImportPart {
        import_id: id,
        part,
        last,
        origin: sonraft_model::changeset::Origin {
            node: 1,
            function: Function::Operator,
        },
        reason: "test import".into(),
        data,
    })
}

fn import_outcome(
    img: &mut NetworkImage,
    index: u64,
    cmd: &Command,
    changes: &mut Changes,
) -> ImportOutcome {
    match img.apply(index, cmd, changes) {
        Response::Import(o) => o,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn an_import_in_parts_is_visible_only_with_its_last_part() {
    let mut img = image();
    let before = img.clone();
    let parts = [
        ImageImport {
            sites: vec![site("C")],
            ..Default::default()
        },
        ImageImport {
            cells: vec![cell("C-1", "C", 40)],
            ..Default::default()
        },
        ImageImport {
            relations: vec![relation("C-1", "A-1")],
            ..Default::default()
        },
    ];
    for (i, data) in parts.iter().take(2).enumerate() {
        let o = import_outcome(
            &mut img,
            10 + i as u64,
            &import_part(5, i as u32, false, data.clone()),
            &mut Changes::default(),
        );
        assert_eq!(
            o,
            ImportOutcome::Staged {
                parts: i as u32 + 1
            }
        );
        assert_eq!(
            (&img.sites, &img.cells, &img.relations),
            (&before.sites, &before.cells, &before.relations),
            "nothing visible before the last part"
        );
    }
    let mut changes = Changes::default();
    let o = import_outcome(
        &mut img,
        12,
        &import_part(5, 2, true, parts[2].clone()),
        &mut changes,
    );
    let ImportOutcome::Applied { diff, .. } = o else {
        panic!("{o:?}")
    };
    assert_eq!(
        (
            diff.sites.created,
            diff.cells.created,
            diff.relations.created
        ),
        (1, 1, 1)
    );
    assert!(
        img.cells.contains_key("C-1") && img.relations.contains_key(&("C-1".into(), "A-1".into()))
    );
    assert!(img.staged.is_none());
    assert_eq!(changes.history.len(), 1, "the import is in the history");
}

#[test]
fn an_import_whose_whole_does_not_check_applies_nothing_and_says_why() {
    let mut img = image();
    let before = img.clone();
    let ok = ImageImport {
        cells: vec![cell("A-9", "A", 41)],
        ..Default::default()
    };
    let dangling = ImageImport {
        relations: vec![relation("A-9", "X-1")],
        ..Default::default()
    };
    import_outcome(
        &mut img,
        10,
        &import_part(6, 0, false, ok),
        &mut Changes::default(),
    );
    let mut changes = Changes::default();
    let o = import_outcome(
        &mut img,
        11,
        &import_part(6, 1, true, dangling),
        &mut changes,
    );
    assert!(
        matches!(&o, ImportOutcome::Refused { reason } if reason.contains("unknown cell")),
        "{o:?}"
    );
    assert_eq!(
        img.cells, before.cells,
        "the valid first part did not land either"
    );
    assert!(img.staged.is_none());
    assert_eq!(changes.history.len(), 1);
    assert_eq!(changes.history[0].outcome.kind(), "invalid");
}

#[test]
fn a_part_out_of_order_is_refused_and_a_new_first_part_drops_an_unfinished_import() {
    let mut img = image();
    let data = ImageImport {
        cells: vec![cell("A-8", "A", 42)],
        ..Default::default()
    };
    let o = import_outcome(
        &mut img,
        10,
        &import_part(1, 1, true, data.clone()),
        &mut Changes::default(),
    );
    assert!(matches!(o, ImportOutcome::Refused { .. }), "{o:?}");
    import_outcome(
        &mut img,
        11,
        &import_part(1, 0, false, data.clone()),
        &mut Changes::default(),
    );
    // A new import starts: the unfinished one is dropped, never applied.
    import_outcome(
        &mut img,
        12,
        &import_part(2, 0, false, ImageImport::default()),
        &mut Changes::default(),
    );
    let o = import_outcome(
        &mut img,
        13,
        &import_part(1, 1, true, ImageImport::default()),
        &mut Changes::default(),
    );
    assert!(matches!(o, ImportOutcome::Refused { .. }), "{o:?}");
    let o = import_outcome(
        &mut img,
        14,
        &import_part(2, 1, true, ImageImport::default()),
        &mut Changes::default(),
    );
    assert!(matches!(o, ImportOutcome::Applied { .. }), "{o:?}");
    assert!(
        !img.cells.contains_key("A-8"),
        "the dropped import's cell never landed"
    );
}

#[test]
fn an_import_over_live_changes_lists_what_it_overwrites_in_the_history() {
    let mut img = image();
    let tilt = change_set(
        Function::Operator,
        &img,
        vec![write("cell/A-1", Param::ElectricalTilt, Value::Int(45))],
    );
    assert_eq!(apply(&mut img, 2, 1_000, tilt).kind(), "applied");
    // The planning tool's file still has the old tilt (40) for as it is.
    let data = ImageImport {
        cells: vec![cell("A-1", "A", 10), img.cells["A-2"].clone()],
        ..Default::default()
    };
    let diff = img.import_diff(&data);
    assert_eq!((diff.cells.updated, diff.cells.unchanged), (1, 1));
    assert_eq!(diff.changed_params, 1);
    assert_eq!(diff.changes[0].param, Param::ElectricalTilt);
    assert_eq!(
        (diff.changes[0].from.clone(), diff.changes[0].to.clone()),
        (Value::Int(45), Value::Int(40))
    );
    let mut changes = Changes::default();
    import_outcome(&mut img, 3, &import_part(3, 0, true, data), &mut changes);
    let record = &changes.history[0];
    assert_eq!(record.writes.len(), 1);
    assert_eq!(record.writes[0].param, Param::ElectricalTilt);
    assert_eq!(record.writes[0].value, Value::Int(40));
    assert!(
        record.reason.contains("1 updated, 1 unchanged"),
        "{}",
        record.reason
    );
    assert_eq!(img.cells["A-1"].electrical_tilt, 40);
    assert_eq!(
        img.cells["A-2"].version, 1,
        "an unchanged cell keeps its version"
    );
}

#[test]
fn an_import_stripped_of_stamps_decodes_on_a_node_that_knows_only_older_functions() {
    // A backup of an upgraded cluster: its cells carry stamps of format-7 functions.
    let mut cell = cell("A-1", "A", 10);
    cell.last_change.insert(
        Param::ElectricalTilt,
        sonraft_model::model::Stamp {
            by: Function::CoverageCapacity,
            at_ms: 1,
            index: 1,
        },
    );
    let mut import = ImageImport {
        sites: vec![site("A")],
        cells: vec![cell],
        relations: vec![],
        policy: None,
    };
    let stamped = sonraft_model::codec::encode(&Command::Import(import.clone())).unwrap();
    import.strip_stamps();
    let stripped = sonraft_model::codec::encode(&Command::Import(import.clone())).unwrap();
    // The function's variant index is what an older build cannot decode: it is gone.
    assert!(stripped.len() < stamped.len());
    assert!(import.cells[0].last_change.is_empty());
    let mut img = NetworkImage::default();
    let r = img.apply(1, &Command::Import(import), &mut Changes::default());
    assert!(matches!(r, Response::Imported(Ok(_))), "{r:?}");
}

/// Every relation names its cells by the very ids the image's cells hold (one allocation per
/// cell, not four per relation), however it came: imported, created by a change set, or
/// decoded whole and shared after.
#[test]
fn relations_share_their_cells_ids() {
    let mut img = NetworkImage::default();
    let import = ImageImport {
        sites: vec![site("A")],
        cells: vec![
            cell("A-1", "A", 1),
            cell("A-2", "A", 2),
            cell("A-3", "A", 3),
        ],
        relations: vec![relation("A-1", "A-2"), relation("A-2", "A-1")],
        policy: None,
    };
    let r = img.apply(1, &Command::Import(import), &mut Changes::default());
    assert!(matches!(r, Response::Imported(Ok(_))), "{r:?}");
    let shared = |img: &NetworkImage| {
        img.relations.iter().all(|((s, t), r)| {
            let (cs, _) = img.cells.get_key_value(s.as_str()).unwrap();
            let (ct, _) = img.cells.get_key_value(t.as_str()).unwrap();
            s.shares(cs) && t.shares(ct) && r.source.shares(cs) && r.target.shares(ct)
        })
    };
    assert!(shared(&img));

    // A relation is created having read its source cell.
    let mut add = change_set(
        Function::Operator,
        &img,
        vec![write("relation/A-1/A-3", Param::Exists, Value::Bool(true))],
    );
    add.read_set = change_set(
        Function::Operator,
        &img,
        vec![write("cell/A-1", Param::ElectricalTilt, Value::Int(0))],
    )
    .read_set;
    let env = Envelope {
        format: 7,
        log_time_ms: 1_000,
        body: sonraft_model::codec::encode(&Command::ChangeSet(add)).expect("encode"),
    };
    let out = img.apply_entry(2, &env, &mut Changes::default());
    assert!(
        matches!(out, Ok(Response::ChangeSet(Outcome::Applied { .. }))),
        "{out:?}"
    );
    assert_eq!(img.relations.len(), 3);
    assert!(shared(&img));

    let bytes = sonraft_model::codec::encode(&img).unwrap();
    let mut decoded: NetworkImage = sonraft_model::codec::decode(&bytes).unwrap();
    assert!(!shared(&decoded));
    decoded.share_ids();
    assert!(shared(&decoded));
    assert!(decoded.cells.iter().all(|(id, c)| id.shares(&c.id)));
    assert_eq!(decoded, {
        let mut i = img.clone();
        i.share_ids();
        i
    });
}

/// Packing rebuilds the cell map without changing what it holds, or the ids relations share
/// with their cells.
#[test]
fn a_packed_image_holds_the_same_entries_and_shared_ids() {
    let mut img = NetworkImage::default();
    let cells: Vec<_> = (0..40)
        .map(|i| cell(&format!("A-{i:02}"), "A", i))
        .collect();
    let relations = (0..40)
        .flat_map(|i| (1..4).map(move |d| (i, (i + d) % 40)))
        .map(|(a, b)| relation(&format!("A-{a:02}"), &format!("A-{b:02}")))
        .collect();
    let import = ImageImport {
        sites: vec![site("A")],
        cells,
        relations,
        policy: None,
    };
    let r = img.apply(1, &Command::Import(import), &mut Changes::default());
    assert!(matches!(r, Response::Imported(Ok(_))), "{r:?}");
    let before = img.clone();
    img.pack_cells();
    assert_eq!(img, before);
    assert_eq!(img.relations_from("A-07").count(), 3);
    assert!(img.relations.iter().all(|((s, t), r)| {
        let (cs, _) = img.cells.get_key_value(s.as_str()).unwrap();
        let (ct, _) = img.cells.get_key_value(t.as_str()).unwrap();
        s.shares(cs) && t.shares(ct) && r.source.shares(cs) && r.target.shares(ct)
    }));
}

/// A relation decoded with borrowed ids (a store's load) is the relation encoded, field for
/// field, and names its cells with the ids it is given.
#[test]
fn a_relation_decodes_with_the_ids_it_is_given() {
    use sonraft_model::model::{CellId, Relation, RelationOrigin, Stamp};
    let mut rel = relation("A-1", "B-22");
    rel.cio_db = -4;
    rel.ho_allowed = false;
    rel.remove_allowed = false;
    rel.origin = RelationOrigin::Operator;
    rel.version = 77;
    rel.last_change.insert(
        Param::CioDb,
        Stamp {
            by: Function::LoadBalancing,
            at_ms: 1_234,
            index: 9,
        },
    );
    let bytes = sonraft_model::codec::encode(&rel).unwrap();
    let shared = CellId::from("B-22");
    let decoded = Relation::decode_with_ids(&bytes, |id| {
        if id == "B-22" {
            shared.clone()
        } else {
            CellId::from(id)
        }
    })
    .unwrap();
    assert_eq!(decoded, rel);
    assert!(decoded.target.shares(&shared));
    assert_eq!(
        sonraft_model::codec::decode::<Relation>(&bytes).unwrap(),
        decoded
    );
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Relation::decode_with_ids(&longer, |id| CellId::from(id)).is_err());
    assert!(Relation::decode_with_ids(&bytes[..bytes.len() - 1], |id| CellId::from(id)).is_err());
}

/// A large import (10,000 relations or more, a quarter of the image) builds the relation map
/// in one go, merging it with the relations it leaves alone: the outcome is what putting the
/// relations one at a time gives, relation for relation.
#[test]
fn a_large_import_puts_its_relations_as_one_at_a_time_would() {
    use sonraft_model::command::VERSION_SPAN;
    use sonraft_model::model::{CellId, Stamp};
    let name = |i: usize| format!("A-{i:03}");
    let key = |a: usize, b: usize| {
        (
            CellId::from(name(a).as_str()),
            CellId::from(name(b).as_str()),
        )
    };
    // Every cell's relations to the cells 1..=60 after it: 12,000.
    let ring = |offsets: std::ops::RangeInclusive<usize>| {
        (0..200).flat_map(move |i| offsets.clone().map(move |d| (i, (i + d) % 200)))
    };
    let first = ImageImport {
        sites: vec![site("A")],
        cells: (0..200).map(|i| cell(&name(i), "A", i as u16)).collect(),
        relations: ring(1..=60)
            .map(|(a, b)| relation(&name(a), &name(b)))
            .collect(),
        policy: None,
    };
    let mut img = NetworkImage::default();
    let mut changes = Changes::default();
    let out = import_outcome(&mut img, 1, &import_part(1, 0, true, first), &mut changes);
    assert!(matches!(out, ImportOutcome::Applied { .. }), "{out:?}");
    assert_eq!(img.relations.len(), 12_000);
    assert!(
        changes.relations_in_bulk && changes.relations.is_empty(),
        "changed in bulk, not listed one by one"
    );
    assert!(img.relations.values().all(|r| r.version == VERSION_SPAN));

    // One relation was changed since, by load balancing.
    let stamp = Stamp {
        by: Function::LoadBalancing,
        at_ms: 9,
        index: 3,
    };
    let tuned = img.relations.get_mut(&key(0, 1)).unwrap();
    tuned.version += 1;
    tuned.last_change.insert(Param::CioDb, stamp.clone());
    let before = img.clone();

    // The planning tool's file: offsets 1..=40 (odd ones with a new CIO, even ones as they
    // are), 41..=60 left out, and 61..=70 new: 10,000 relations.
    let relations = ring(1..=40)
        .map(|(a, b)| {
            let mut r = relation(&name(a), &name(b));
            if (b + 200 - a) % 200 % 2 == 1 {
                r.cio_db = 2;
            }
            r
        })
        .chain(ring(61..=70).map(|(a, b)| relation(&name(a), &name(b))))
        .collect();
    let second = ImageImport {
        relations,
        ..Default::default()
    };
    let mut changes = Changes::default();
    let out = import_outcome(&mut img, 5, &import_part(5, 0, true, second), &mut changes);
    assert!(matches!(out, ImportOutcome::Applied { .. }), "{out:?}");

    assert_eq!(img.relations.len(), 14_000);
    for (a, b) in ring(1..=70) {
        let k = key(a, b);
        let d = (b + 200 - a) % 200;
        let got = &img.relations[&k];
        let was = before.relations.get(&k);
        match d {
            1..=40 if d % 2 == 1 => {
                let was = was.unwrap();
                assert_eq!((got.cio_db, got.version), (2, was.version + 1), "{k:?}");
                assert_eq!(got.last_change, was.last_change, "{k:?}");
            }
            1..=60 => {
                assert_eq!(got, was.unwrap(), "{k:?}");
            }
            _ => {
                assert!(was.is_none());
                assert_eq!((got.cio_db, got.version), (0, VERSION_SPAN * 5), "{k:?}");
            }
        }
    }
    assert!(changes.relations_in_bulk && changes.relations.is_empty());
    assert_eq!(img.relations[&key(0, 1)].last_change[&Param::CioDb], stamp);
    assert!(img.relations.iter().all(|((s, t), r)| {
        let (cs, _) = img.cells.get_key_value(s.as_str()).unwrap();
        let (ct, _) = img.cells.get_key_value(t.as_str()).unwrap();
        s.shares(cs) && t.shares(ct) && r.source.shares(cs) && r.target.shares(ct)
    }));
    // The history lists the 4,000 relations it updated among its changes (up to its limit).
    let record = &changes.history[0];
    assert!(record.reason.contains("4000 updated"), "{}", record.reason);
}

/// A large import staged in parts applies as the same import in one part: in order (each
/// part's relations put and freed as it goes), with the parts' keys interleaved, and with the
/// relations of a part out of order. The image, the changed keys, the history and the
/// encoding are the same.
#[test]
fn a_large_import_in_parts_applies_as_in_one_part_whatever_the_parts_order() {
    use sonraft_model::model::{Cell, Relation};
    let name = |i: usize| format!("A-{i:03}");
    let cells: Vec<Cell> = (0..200).map(|i| cell(&name(i), "A", i as u16)).collect();
    let pairs: Vec<(usize, usize)> = (0..200)
        .flat_map(|i| (1..=60).map(move |d| (i, (i + d) % 200)))
        .collect();
    let rel = |&(a, b): &(usize, usize)| {
        let mut r = relation(&name(a), &name(b));
        r.cio_db = ((a + b) % 5) as i8;
        r
    };
    let whole = ImageImport {
        sites: vec![site("A")],
        cells: cells.clone(),
        relations: pairs.iter().map(rel).collect(),
        policy: None,
    };
    let apply = |parts: Vec<ImageImport>| {
        let mut img = NetworkImage::default();
        let mut changes = Changes::default();
        let last = parts.len() - 1;
        let mut copy = None;
        for (i, data) in parts.into_iter().enumerate() {
            if i == last {
                // A snapshot's capture holds a copy of the image, sharing the staged parts.
                copy = Some(img.clone());
            }
            let cmd = import_part(4, i as u32, i == last, data);
            let out = import_outcome(&mut img, 10 + i as u64, &cmd, &mut changes);
            if i == last {
                assert!(matches!(out, ImportOutcome::Applied { .. }), "{out:?}");
            }
        }
        let copy = copy.unwrap();
        let staged = copy.staged.as_ref().unwrap();
        assert_eq!(staged.parts, last as u32, "the copy keeps what was staged");
        assert_eq!(staged.relations().count(), 2 * 4_001, "two parts of 4,001");
        (img, changes)
    };
    let one = {
        let mut img = NetworkImage::default();
        let mut changes = Changes::default();
        let cmd = import_part(4, 0, true, whole.clone());
        // At the index of the parts' last, for the same versions.
        let out = import_outcome(&mut img, 12, &cmd, &mut changes);
        assert!(matches!(out, ImportOutcome::Applied { .. }), "{out:?}");
        (img, changes)
    };
    let cut = |relations: Vec<Relation>| -> Vec<ImageImport> {
        let third = relations.len() / 3 + 1;
        let mut parts: Vec<ImageImport> = relations
            .chunks(third)
            .map(|c| ImageImport {
                relations: c.to_vec(),
                ..Default::default()
            })
            .collect();
        parts[0].sites = vec![site("A")];
        parts[0].cells = cells.clone();
        parts
    };
    let in_order = cut(pairs.iter().map(rel).collect());
    let interleaved = cut(pairs
        .iter()
        .step_by(2)
        .chain(pairs.iter().skip(1).step_by(2))
        .map(rel)
        .collect());
    let reversed = cut(pairs.iter().rev().map(rel).collect());
    for (what, parts) in [
        ("in order", in_order),
        ("interleaved", interleaved),
        ("reversed", reversed),
    ] {
        assert_eq!(parts.len(), 3);
        let (img, changes) = apply(parts);
        assert_eq!(img.relations.len(), 12_000, "{what}");
        assert!(
            img.relations.iter().eq(one.0.relations.iter()),
            "{what}: the relations differ"
        );
        assert_eq!(img.cells, one.0.cells, "{what}");
        assert!(
            changes.relations_in_bulk && one.1.relations_in_bulk,
            "{what}"
        );
        assert_eq!(
            sonraft_model::codec::encode(&img.relations).unwrap(),
            sonraft_model::codec::encode(&one.0.relations).unwrap(),
            "{what}: encodes differently"
        );
    }
}
