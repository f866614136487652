//! Command format 4: the operator's SON controls and coordination by parameter group, one
//! behaviour per test.

mod common;

use common::*;
use sonraft_model::changeset::{ChangeSet, Function, Outcome};
use sonraft_model::command::{Command, Envelope, Response};
use sonraft_model::model::image::{Changes, NetworkImage};
use sonraft_model::model::{Param, Policy, RelationOrigin, Value};
use sonraft_model::son::{
    Controls, Decision, KpiDelta, MAX_PENDING, Mode, SonPolicy, TrialEnd, Verdict, Window,
};

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;
/// A day at 00:00 UTC, far from the epoch.
const DAY: u64 = 20_000 * 24 * HOUR;

/// Applies `command` in an entry of `format` at log time `now_ms`.
fn apply_in(
    img: &mut NetworkImage,
    index: u64,
    now_ms: u64,
    format: u16,
    command: Command,
) -> (Response, Changes) {
    let env = Envelope::in_format(&command, now_ms, format).expect("encode");
    let mut changes = Changes::default();
    let r = img.apply_entry(index, &env, &mut changes).expect("apply");
    (r, changes)
}

/// Applies a change set in an entry written in exactly `format` (as an older leader would).
fn apply_exact(
    img: &mut NetworkImage,
    index: u64,
    now_ms: u64,
    format: u16,
    cs: ChangeSet,
) -> Outcome {
    let env = Envelope {
        format,
        log_time_ms: now_ms,
        body: sonraft_model::codec::encode(&Command::ChangeSet(cs)).expect("encode"),
    };
    match img
        .apply_entry(index, &env, &mut Changes::default())
        .expect("apply")
    {
        Response::ChangeSet(o) => o,
        other => panic!("unexpected {other:?}"),
    }
}

/// Applies a change set in a format-4 entry.
fn apply4(img: &mut NetworkImage, index: u64, now_ms: u64, cs: impl Into<Proposal>) -> Outcome {
    let cs = cs.into().0(img);
    match apply_in(img, index, now_ms, 4, Command::ChangeSet(cs)).0 {
        Response::ChangeSet(o) => o,
        other => panic!("unexpected {other:?}"),
    }
}

/// A change set, or how to compute one from the image it will be applied to.
struct Proposal(Box<dyn FnOnce(&NetworkImage) -> ChangeSet>);

impl From<ChangeSet> for Proposal {
    fn from(cs: ChangeSet) -> Self {
        Proposal(Box::new(move |_| cs))
    }
}

fn from_image(f: impl FnOnce(&NetworkImage) -> ChangeSet + 'static) -> Proposal {
    Proposal(Box::new(f))
}

fn decide(img: &mut NetworkImage, index: u64, now_ms: u64, id: u64, approve: bool) -> Outcome {
    let d = Decision {
        id,
        approve,
        note: "by alice".into(),
    };
    match apply_in(img, index, now_ms, 4, Command::Decide(d)).0 {
        Response::ChangeSet(o) => o,
        other => panic!("unexpected {other:?}"),
    }
}

fn set_policy(img: &mut NetworkImage, function: Function, controls: Controls) {
    let mut policy = img.son.policy.clone();
    policy.functions.insert(function, controls);
    let (r, changes) = apply_in(img, 1, DAY, 4, Command::SonPolicy(policy));
    assert_eq!(r, Response::SonPolicy(Ok(())));
    assert!(changes.son);
}

fn tilt(function: Function, img: &NetworkImage, cell: &str, value: i64) -> ChangeSet {
    change_set(
        function,
        img,
        vec![write(
            &format!("cell/{cell}"),
            Param::ElectricalTilt,
            Value::Int(value),
        )],
    )
}

fn cio(function: Function, img: &NetworkImage, rel: &str, value: i64) -> ChangeSet {
    change_set(
        function,
        img,
        vec![write(
            &format!("relation/{rel}"),
            Param::CioDb,
            Value::Int(value),
        )],
    )
}

fn reason(o: &Outcome) -> &str {
    match o {
        Outcome::Rejected { reason } | Outcome::Invalid { reason } => reason,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn an_entry_of_an_older_format_is_judged_by_the_old_rules_even_with_a_policy_set() {
    let mut img = image();
    set_policy(
        &mut img,
        Function::LoadBalancing,
        Controls {
            mode: Mode::Off,
            ..Controls::default()
        },
    );
    let cs = cio(Function::LoadBalancing, &img, "A-1/A-2", 2);
    let (r, _) = apply_in(&mut img, 2, DAY, 3, Command::ChangeSet(cs));
    assert!(
        matches!(r, Response::ChangeSet(Outcome::Applied { .. })),
        "{r:?}"
    );
}

#[test]
fn a_function_switched_off_changes_nothing_but_the_operator_still_does() {
    let mut img = image();
    set_policy(
        &mut img,
        Function::LoadBalancing,
        Controls {
            mode: Mode::Off,
            ..Controls::default()
        },
    );
    let out = apply4(
        &mut img,
        2,
        DAY,
        from_image(move |i: &NetworkImage| cio(Function::LoadBalancing, i, "A-1/A-2", 2)),
    );
    assert!(reason(&out).contains("switched off"), "{out:?}");
    let out = apply4(
        &mut img,
        3,
        DAY,
        from_image(move |i: &NetworkImage| cio(Function::Operator, i, "A-1/A-2", 2)),
    );
    assert_eq!(out.kind(), "applied");
}

#[test]
fn an_excluded_cell_site_or_region_is_not_touched_by_that_function() {
    for (exclude, rel) in [
        (("cells", "A-2"), "A-1/A-2"),
        (("cells", "A-1"), "A-1/A-2"),
        (("sites", "A"), "A-1/A-2"),
        (("regions", "south"), "A-1/A-2"),
    ] {
        let mut img = image();
        let mut controls = Controls::default();
        match exclude.0 {
            "cells" => controls.exclude.cells.insert(exclude.1.into()),
            "sites" => controls.exclude.sites.insert(exclude.1.to_string()),
            _ => controls.exclude.regions.insert(exclude.1.to_string()),
        };
        set_policy(&mut img, Function::LoadBalancing, controls);
        let before = img.relations.clone();
        let out = apply4(
            &mut img,
            2,
            DAY,
            from_image(move |i: &NetworkImage| cio(Function::LoadBalancing, i, rel, 2)),
        );
        assert!(
            reason(&out).contains("excluded") && reason(&out).contains(exclude.1),
            "{exclude:?}: {out:?}"
        );
        assert_eq!(img.relations, before);
        // Another function, and the operator, are not bound by it.
        let out = apply4(
            &mut img,
            3,
            DAY,
            from_image(move |i: &NetworkImage| cio(Function::MobilityRobustness, i, rel, 1)),
        );
        assert_eq!(out.kind(), "applied", "{exclude:?}");
    }
}

#[test]
fn a_function_with_a_change_window_changes_the_network_only_inside_it() {
    let mut img = image();
    set_policy(
        &mut img,
        Function::PciConflict,
        Controls {
            window: Some(Window {
                from_minute: 60,
                to_minute: 300,
            }),
            ..Controls::default()
        },
    );
    let pci = |img: &NetworkImage, v| {
        change_set(
            Function::PciConflict,
            img,
            vec![write("cell/A-1", Param::Pci, Value::Int(v))],
        )
    };
    let out = apply4(
        &mut img,
        2,
        DAY + 14 * HOUR,
        from_image(move |i: &NetworkImage| pci(i, 99)),
    );
    assert!(reason(&out).contains("01:00-05:00 UTC"), "{out:?}");
    assert_eq!(img.cells["A-1"].pci, 10);
    let out = apply4(
        &mut img,
        3,
        DAY + 24 * HOUR + 2 * HOUR,
        from_image(move |i: &NetworkImage| pci(i, 99)),
    );
    assert_eq!(out.kind(), "applied");
    assert_eq!(img.cells["A-1"].pci, 99);
}

#[test]
fn an_open_loop_proposal_waits_and_applies_only_when_an_operator_approves_it() {
    let mut img = image();
    set_policy(
        &mut img,
        Function::LoadBalancing,
        Controls {
            mode: Mode::OpenLoop,
            ..Controls::default()
        },
    );
    let cs = cio(Function::LoadBalancing, &img, "A-1/A-2", 2);
    let (r, changes) = apply_in(&mut img, 7, DAY, 4, Command::ChangeSet(cs));
    let Response::ChangeSet(Outcome::Pending { id }) = r else {
        panic!("{r:?}")
    };
    assert!(changes.son);
    assert_eq!(changes.history[0].outcome, Outcome::Pending { id });
    assert_eq!(img.relations[&("A-1".into(), "A-2".into())].cio_db, 0);
    assert_eq!(
        img.son.pending[&id].change_set.origin.function,
        Function::LoadBalancing
    );

    let out = decide(&mut img, 8, DAY + MINUTE, id, true);
    assert_eq!(out.kind(), "applied", "{out:?}");
    let rel = &img.relations[&("A-1".into(), "A-2".into())];
    assert_eq!(rel.cio_db, 2);
    assert_eq!(rel.last_change[&Param::CioDb].by, Function::LoadBalancing);
    assert_eq!(rel.last_change[&Param::CioDb].index, 8);
    assert!(img.son.pending.is_empty());
    let again = decide(&mut img, 9, DAY + MINUTE, id, true);
    assert!(reason(&again).contains("no proposal"), "{again:?}");
}

#[test]
fn a_rejected_or_expired_proposal_never_applies() {
    let mut img = image();
    set_policy(
        &mut img,
        Function::LoadBalancing,
        Controls {
            mode: Mode::OpenLoop,
            ..Controls::default()
        },
    );
    let first = apply4(
        &mut img,
        2,
        DAY,
        from_image(move |i: &NetworkImage| cio(Function::LoadBalancing, i, "A-1/A-2", 2)),
    );
    let second = apply4(
        &mut img,
        3,
        DAY,
        from_image(move |i: &NetworkImage| cio(Function::LoadBalancing, i, "A-2/A-3", 2)),
    );
    let (Outcome::Pending { id: a }, Outcome::Pending { id: b }) = (first, second) else {
        panic!("not pending")
    };
    assert_ne!(a, b);
    let out = decide(&mut img, 4, DAY, a, false);
    assert!(
        reason(&out).contains("rejected by the operator: by alice"),
        "{out:?}"
    );

    // Any entry past the time to live drops the other one, into that entry's history.
    let ttl = img.son.policy.pending_ttl_ms;
    let later = Command::Kpis(sonraft_model::command::KpiBatch {
        site: "A".into(),
        summaries: vec![],
    });
    let (_, changes) = apply_in(&mut img, 5, DAY + ttl, 4, later);
    assert_eq!(
        changes.son_items,
        [sonraft_model::son::SonItem::Pending(b)].into()
    );
    assert!(reason(&changes.history[0].outcome).contains("expired"));
    assert!(img.son.pending.is_empty());
    let out = decide(&mut img, 6, DAY + ttl, b, true);
    assert!(reason(&out).contains("no proposal"), "{out:?}");
    assert!(img.relations.values().all(|r| r.cio_db == 0));
}

#[test]
fn an_approved_proposal_computed_from_a_stale_view_conflicts() {
    let mut img = image();
    set_policy(
        &mut img,
        Function::LoadBalancing,
        Controls {
            mode: Mode::OpenLoop,
            ..Controls::default()
        },
    );
    let Outcome::Pending { id } = apply4(
        &mut img,
        2,
        DAY,
        from_image(move |i: &NetworkImage| cio(Function::LoadBalancing, i, "A-1/A-2", 2)),
    ) else {
        panic!("not pending")
    };
    assert_eq!(
        apply4(
            &mut img,
            3,
            DAY,
            from_image(move |i: &NetworkImage| cio(Function::Operator, i, "A-1/A-2", -2))
        )
        .kind(),
        "applied"
    );
    assert_eq!(decide(&mut img, 4, DAY, id, true).kind(), "conflict");
    assert_eq!(img.relations[&("A-1".into(), "A-2".into())].cio_db, -2);
}

#[test]
fn pending_proposals_are_bounded_and_the_same_proposal_is_kept_once() {
    let mut img = image();
    set_policy(
        &mut img,
        Function::MobilityRobustness,
        Controls {
            mode: Mode::OpenLoop,
            ..Controls::default()
        },
    );
    let relations: Vec<String> = img
        .relations
        .keys()
        .map(|(s, t)| format!("relation/{s}/{t}"))
        .collect();
    let cells: Vec<String> = img.cells.keys().map(|c| format!("cell/{c}")).collect();
    // Distinct proposals: a CIO on one relation and a hysteresis on one cell.
    let proposal = |img: &NetworkImage, i: usize| {
        change_set(
            Function::MobilityRobustness,
            img,
            vec![
                write(
                    &relations[i % relations.len()],
                    Param::CioDb,
                    Value::Int((i / relations.len()) as i64 % 7 - 3),
                ),
                write(
                    &cells[(i / (7 * relations.len())) % cells.len()],
                    Param::Hysteresis,
                    Value::Int(2 + (i / (7 * relations.len() * cells.len())) as i64 % 5),
                ),
            ],
        )
    };
    for i in 0..MAX_PENDING {
        let cs = proposal(&img, i);
        let out = apply4(&mut img, 10 + i as u64, DAY, cs);
        assert_eq!(out, Outcome::Pending { id: 10 + i as u64 });
    }
    let again = proposal(&img, 3);
    assert_eq!(
        apply4(&mut img, 4999, DAY, again),
        Outcome::Pending { id: 13 },
        "the one already pending"
    );
    let one_more = proposal(&img, MAX_PENDING);
    let out = apply4(&mut img, 5000, DAY, one_more);
    assert!(reason(&out).contains("waiting for an operator"), "{out:?}");
    assert_eq!(img.son.pending.len(), MAX_PENDING);
}

#[test]
fn a_bad_policy_is_refused_and_changes_nothing() {
    let mut img = image();
    let mut policy = SonPolicy::default();
    policy.functions.insert(
        Function::PciConflict,
        Controls {
            window: Some(Window {
                from_minute: 0,
                to_minute: 0,
            }),
            ..Controls::default()
        },
    );
    let (r, changes) = apply_in(&mut img, 2, DAY, 4, Command::SonPolicy(policy));
    assert!(
        matches!(r, Response::SonPolicy(Err(ref e)) if e.contains("window")),
        "{r:?}"
    );
    assert!(!changes.son);
    assert_eq!(img.son.policy, SonPolicy::default());
}

#[test]
fn a_tuning_is_set_whole_and_a_bad_one_changes_nothing() {
    use sonraft_model::son::Tuning;
    let mut img = image();
    let mut tuning = Tuning::default();
    tuning.anr.idle_prune_ms = 3 * 24 * HOUR;
    tuning.pci.reserved = [0, 1, 2].into();
    let (r, changes) = apply_in(&mut img, 2, DAY, 5, Command::SonTuning(tuning.v1()));
    assert_eq!(r, Response::SonTuning(Ok(())));
    assert!(changes.son_tuning);
    assert_eq!(img.son.tuning, tuning);

    for bad in [
        serde_json::json!({"load_balancing": {"high_pct": 50, "low_pct": 60}}),
        serde_json::json!({"mobility_robustness": {"max_late_permille": 0}}),
        serde_json::json!({"pci": {"reserved": [1008]}}),
        serde_json::json!({"anr": {"failing_periods": 0}}),
    ] {
        let t: Tuning = serde_json::from_value(bad.clone()).expect("parses");
        let (r, changes) = apply_in(&mut img, 3, DAY, 5, Command::SonTuning(t.v1()));
        assert!(matches!(r, Response::SonTuning(Err(_))), "{bad}: {r:?}");
        assert!(!changes.son_tuning, "{bad}");
        assert_eq!(img.son.tuning, tuning, "{bad}");
    }
    // A misspelt threshold is refused, not silently ignored.
    let typo = serde_json::from_value::<Tuning>(serde_json::json!({"anr": {"idle_prune": 1}}));
    assert!(typo.is_err());
}

#[test]
fn a_format_9_tuning_sets_the_availability_sections_and_a_bad_one_changes_nothing() {
    use sonraft_model::son::Tuning;
    let mut img = image();
    let mut tuning = Tuning::default();
    tuning.outage.hard_periods = 3;
    tuning.outage_compensation.withdraw_load_pct = 90;
    tuning.energy_saving.sleep_ceiling_pct = 40;
    let (r, changes) = apply_in(&mut img, 2, DAY, 9, Command::SonTuningV2(tuning.clone()));
    assert_eq!(r, Response::SonTuning(Ok(())));
    assert!(changes.son_tuning);
    assert_eq!(img.son.tuning, tuning);

    for bad in [
        serde_json::json!({"outage": {"hard_periods": 0}}),
        serde_json::json!({"outage": {"min_reporting_pct": 101}}),
        serde_json::json!({"outage_compensation": {"max_compensators": 0}}),
        serde_json::json!({"outage_compensation": {"max_compensator_load_pct": 90, "withdraw_load_pct": 80}}),
        serde_json::json!({"energy_saving": {"sleep_ceiling_pct": 70, "wake_ceiling_pct": 65}}),
        serde_json::json!({"energy_saving": {"sleep_periods": 0}}),
        serde_json::json!({"energy_saving": {"lead_periods": 25}}),
    ] {
        let t: Tuning = serde_json::from_value(bad.clone()).expect("parses");
        let (r, changes) = apply_in(&mut img, 3, DAY, 9, Command::SonTuningV2(t));
        assert!(matches!(r, Response::SonTuning(Err(_))), "{bad}: {r:?}");
        assert!(!changes.son_tuning, "{bad}");
        assert_eq!(img.son.tuning, tuning, "{bad}");
    }
}

#[test]
fn a_format_5_tuning_resets_the_availability_sections_to_their_defaults() {
    use sonraft_model::son::{AvailabilityTuning, Tuning};
    let mut img = image();
    let mut tuning = Tuning::default();
    tuning.outage.hard_periods = 3;
    apply_in(&mut img, 2, DAY, 9, Command::SonTuningV2(tuning.clone()));
    let mut older = Tuning::default();
    older.anr.failing_periods = 5;
    let (r, _) = apply_in(&mut img, 3, DAY, 8, Command::SonTuning(older.v1()));
    assert_eq!(r, Response::SonTuning(Ok(())));
    assert_eq!(img.son.tuning.anr.failing_periods, 5);
    assert_eq!(img.son.tuning.availability(), AvailabilityTuning::default());
}

#[test]
fn a_tuning_is_proposed_in_format_5_until_it_sets_an_availability_section() {
    use sonraft_model::son::Tuning;
    let mut tuning = Tuning::default();
    tuning.anr.failing_periods = 5;
    let plain = Command::set_tuning(tuning.clone(), 8).expect("format 5 suffices");
    assert!(matches!(plain, Command::SonTuning(_)));
    assert_eq!(plain.format(), 5);
    assert!(matches!(
        Command::set_tuning(tuning.clone(), 9),
        Ok(Command::SonTuning(_))
    ));
    tuning.energy_saving.sleep_periods = 4;
    let err = Command::set_tuning(tuning.clone(), 8).expect_err("a format-8 cluster cannot");
    assert!(err.to_string().contains("format 9"), "{err}");
    let v2 = Command::set_tuning(tuning, 9).expect("a format-9 cluster can");
    assert_eq!(v2.format(), 9);
}

fn with_cooldown(mut img: NetworkImage) -> NetworkImage {
    img.policy = Policy {
        cooldown_ms: 10 * MINUTE,
        priority_hold_ms: 10 * MINUTE,
        ..Policy::default()
    };
    img
}

#[test]
fn a_cio_is_left_alone_while_another_function_tunes_the_cells_hysteresis() {
    let mut img = with_cooldown(image());
    let mro = change_set(
        Function::MobilityRobustness,
        &img,
        vec![write("cell/A-1", Param::Hysteresis, Value::Int(6))],
    );
    assert_eq!(apply4(&mut img, 2, DAY, mro).kind(), "applied");
    let out = apply4(
        &mut img,
        3,
        DAY + MINUTE,
        from_image(move |i: &NetworkImage| cio(Function::LoadBalancing, i, "A-1/A-2", 2)),
    );
    assert!(
        reason(&out).contains("coupled with hysteresis of cell/A-1"),
        "{out:?}"
    );
    // Other cells are free; the same function goes on once its change has a verdict.
    let other = cio(Function::LoadBalancing, &img, "A-2/A-3", 2);
    assert_eq!(apply4(&mut img, 4, DAY + MINUTE, other).kind(), "applied");
    assert_eq!(
        verdict(&mut img, 5, DAY + MINUTE, 2, None),
        Ok(TrialEnd::Kept)
    );
    let own = cio(Function::MobilityRobustness, &img, "A-1/A-2", 1);
    assert_eq!(apply4(&mut img, 6, DAY + MINUTE, own).kind(), "applied");
}

fn verdict(
    img: &mut NetworkImage,
    index: u64,
    now_ms: u64,
    trial: u64,
    degraded: Option<&str>,
) -> Result<TrialEnd, String> {
    verdict_in(img, index, now_ms, 4, trial, degraded)
}

/// A verdict in an entry of `format`.
fn verdict_in(
    img: &mut NetworkImage,
    index: u64,
    now_ms: u64,
    format: u16,
    trial: u64,
    degraded: Option<&str>,
) -> Result<TrialEnd, String> {
    let v = Verdict {
        trial,
        kpis: vec![KpiDelta {
            kpi: "ho_too_late_permille".into(),
            before: 10.0,
            after: if degraded.is_some() { 80.0 } else { 9.0 },
        }],
        degraded: degraded.map(str::to_string),
    };
    match apply_in(img, index, now_ms, format, Command::Verdict(v)).0 {
        Response::Trial(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

fn hysteresis(function: Function, img: &NetworkImage, cell: &str, value: i64) -> ChangeSet {
    change_set(
        function,
        img,
        vec![write(
            &format!("cell/{cell}"),
            Param::Hysteresis,
            Value::Int(value),
        )],
    )
}

#[test]
fn a_function_does_not_step_again_on_a_cell_before_its_change_there_has_a_verdict() {
    let mut img = image();
    let first = hysteresis(Function::MobilityRobustness, &img, "A-1", 5);
    assert_eq!(apply4(&mut img, 2, DAY, first).kind(), "applied");
    assert_eq!(
        img.son.trials[&2].writes[0].1,
        Value::Int(4),
        "the value before"
    );
    let again = hysteresis(Function::MobilityRobustness, &img, "A-1", 6);
    let out = apply4(&mut img, 3, DAY + MINUTE, again);
    assert!(
        reason(&out).contains("waits for the verification of its change 2 on cell A-1"),
        "{out:?}"
    );
    assert_eq!(
        verdict(&mut img, 4, DAY + MINUTE, 2, None),
        Ok(TrialEnd::Kept)
    );
    assert_eq!(img.son.journal[&2].end, TrialEnd::Kept);
    let again = hysteresis(Function::MobilityRobustness, &img, "A-1", 6);
    assert_eq!(apply4(&mut img, 5, DAY + MINUTE, again).kind(), "applied");
    // A trial without a verdict closes as unverified and frees the cell.
    let within = img.son.policy.verification.verdict_within_ms;
    let later = hysteresis(Function::MobilityRobustness, &img, "A-1", 7);
    assert_eq!(
        apply4(&mut img, 6, DAY + MINUTE + within, later).kind(),
        "applied"
    );
    assert!(
        img.son
            .journal
            .get(&5)
            .is_some_and(|r| r.end == TrialEnd::Unverified)
    );
    // The operator's changes are not trials.
    let op = tilt(Function::Operator, &img, "A-2", 45);
    assert_eq!(apply4(&mut img, 7, DAY + 2 * within, op).kind(), "applied");
    assert!(!img.son.trials.contains_key(&7));
}

#[test]
fn a_degraded_verdict_restores_the_old_values_and_holds_the_function_off_the_cell() {
    let mut img = image();
    let before = img.cells["A-1"].clone();
    let mro = change_set(
        Function::MobilityRobustness,
        &img,
        vec![
            write("cell/A-1", Param::Hysteresis, Value::Int(2)),
            write("relation/A-1/A-2", Param::CioDb, Value::Int(3)),
        ],
    );
    assert_eq!(apply4(&mut img, 2, DAY, mro).kind(), "applied");
    let (r, changes) = apply_in(
        &mut img,
        3,
        DAY + 2 * MINUTE,
        4,
        Command::Verdict(Verdict {
            trial: 2,
            kpis: vec![],
            degraded: Some("ho_too_late_permille 10 -> 80".into()),
        }),
    );
    assert_eq!(
        r,
        Response::Trial(Ok(TrialEnd::Undone {
            reason: "ho_too_late_permille 10 -> 80".into(),
            restored: 2
        }))
    );
    let cell = &img.cells["A-1"];
    assert_eq!(cell.hysteresis, before.hysteresis);
    assert_eq!(cell.last_change[&Param::Hysteresis].by, Function::Fallback);
    assert_eq!(img.relations[&("A-1".into(), "A-2".into())].cio_db, 0);
    let record = changes.history.last().unwrap();
    assert_eq!(record.origin.function, Function::Fallback);
    assert!(
        record
            .reason
            .contains("undoes change 2 of mobility_robustness: ho_too_late")
    );
    // Held off the cell for the hold (past the fallback's priority hold), then free again.
    let again = hysteresis(Function::MobilityRobustness, &img, "A-1", 5);
    let out = apply4(&mut img, 4, DAY + 2 * HOUR, again);
    assert!(reason(&out).contains("leaves cell A-1 alone"), "{out:?}");
    let hold = img.son.policy.verification.hold_ms;
    let again = hysteresis(Function::MobilityRobustness, &img, "A-1", 5);
    assert_eq!(
        apply4(&mut img, 5, DAY + 2 * MINUTE + hold, again).kind(),
        "applied"
    );
}

#[test]
fn an_undo_leaves_alone_what_the_operator_changed_since() {
    let mut img = image();
    let mro = change_set(
        Function::MobilityRobustness,
        &img,
        vec![
            write("cell/A-1", Param::Hysteresis, Value::Int(2)),
            write("cell/A-1", Param::TimeToTriggerMs, Value::Int(480)),
        ],
    );
    assert_eq!(apply4(&mut img, 2, DAY, mro).kind(), "applied");
    let op = hysteresis(Function::Operator, &img, "A-1", 3);
    assert_eq!(apply4(&mut img, 3, DAY + MINUTE, op).kind(), "applied");
    let end = verdict(&mut img, 4, DAY + 2 * MINUTE, 2, Some("drops"));
    assert_eq!(
        end,
        Ok(TrialEnd::Undone {
            reason: "drops".into(),
            restored: 1
        })
    );
    assert_eq!(img.cells["A-1"].hysteresis, 3, "the operator's value stays");
    assert_eq!(img.cells["A-1"].time_to_trigger_ms, 320, "restored");
}

#[test]
fn an_undone_pruning_brings_the_relation_back_with_a_version_no_reader_saw() {
    let mut img = image();
    let old_version = img.relations[&("A-1".into(), "A-2".into())].version;
    let prune = change_set(
        Function::AnrPruning,
        &img,
        vec![write("relation/A-1/A-2", Param::Exists, Value::Bool(false))],
    );
    assert_eq!(apply4(&mut img, 2, DAY, prune).kind(), "applied");
    assert!(!img.relations.contains_key(&("A-1".into(), "A-2".into())));
    let end = verdict(&mut img, 3, DAY + MINUTE, 2, Some("ho_success dropped"));
    assert!(
        matches!(end, Ok(TrialEnd::Undone { restored: 1, .. })),
        "{end:?}"
    );
    let back = &img.relations[&("A-1".into(), "A-2".into())];
    assert!(back.version > old_version);
}

#[test]
fn a_verdict_on_no_open_trial_is_refused_and_nobody_proposes_as_fallback() {
    let mut img = image();
    assert!(
        verdict(&mut img, 2, DAY, 99, Some("x"))
            .unwrap_err()
            .contains("no change 99")
    );
    let mut cs = hysteresis(Function::Operator, &img, "A-1", 3);
    cs.origin.function = Function::Fallback;
    for format in [4, 5] {
        let out = apply_exact(&mut img, 3, DAY, format, cs.clone());
        assert!(reason(&out).contains("nobody proposes them"), "{out:?}");
    }
    assert!("fallback".parse::<Function>().is_err());
}

#[test]
fn a_hysteresis_is_left_alone_while_another_function_tunes_a_cio_of_the_cell() {
    let mut img = with_cooldown(image());
    let mlb = cio(Function::LoadBalancing, &img, "A-1/A-2", 2);
    assert_eq!(apply4(&mut img, 2, DAY, mlb).kind(), "applied");
    let mro = change_set(
        Function::MobilityRobustness,
        &img,
        vec![write("cell/A-1", Param::TimeToTriggerMs, Value::Int(480))],
    );
    let out = apply4(&mut img, 3, DAY + MINUTE, mro.clone());
    assert!(
        reason(&out).contains("coupled with cio_db of relation/A-1/A-2"),
        "{out:?}"
    );
    // The old rules did not couple them.
    let (r, _) = apply_in(&mut img, 4, DAY + MINUTE, 3, Command::ChangeSet(mro));
    assert!(
        matches!(r, Response::ChangeSet(Outcome::Applied { .. })),
        "{r:?}"
    );
}

#[test]
fn a_cio_is_left_alone_while_the_operator_moves_the_cells_tilt() {
    let mut img = with_cooldown(image());
    assert_eq!(
        apply4(
            &mut img,
            2,
            DAY,
            from_image(move |i: &NetworkImage| tilt(Function::Operator, i, "A-1", 45))
        )
        .kind(),
        "applied"
    );
    let out = apply4(
        &mut img,
        3,
        DAY + MINUTE,
        from_image(move |i: &NetworkImage| cio(Function::LoadBalancing, i, "A-1/A-2", 2)),
    );
    assert!(
        reason(&out).contains("coupled with electrical_tilt of cell/A-1"),
        "{out:?}"
    );
    let later = cio(Function::LoadBalancing, &img, "A-1/A-2", 2);
    assert_eq!(
        apply4(&mut img, 4, DAY + 11 * MINUTE, later).kind(),
        "applied"
    );
}

#[test]
fn pruning_leaves_a_relation_another_function_just_tuned_or_the_operator_created() {
    let mut img = with_cooldown(image());
    let prune = |img: &NetworkImage, rel: &str| {
        change_set(
            Function::AnrPruning,
            img,
            vec![write(
                &format!("relation/{rel}"),
                Param::Exists,
                Value::Bool(false),
            )],
        )
    };
    assert_eq!(
        apply4(
            &mut img,
            2,
            DAY,
            from_image(move |i: &NetworkImage| cio(Function::LoadBalancing, i, "A-1/A-2", 2))
        )
        .kind(),
        "applied"
    );
    let out = apply4(
        &mut img,
        3,
        DAY + MINUTE,
        from_image(move |i: &NetworkImage| prune(i, "A-1/A-2")),
    );
    assert!(
        reason(&out).contains("cio_db of relation/A-1/A-2"),
        "{out:?}"
    );

    img.relations
        .get_mut(&("A-2".into(), "A-3".into()))
        .unwrap()
        .origin = RelationOrigin::Operator;
    let out = apply4(
        &mut img,
        4,
        DAY + HOUR,
        from_image(move |i: &NetworkImage| prune(i, "A-2/A-3")),
    );
    assert!(reason(&out).contains("created by the operator"), "{out:?}");
    // Format 3 removed it.
    let old = Command::ChangeSet(prune(&img, "A-2/A-3"));
    let (r, _) = apply_in(&mut img, 5, DAY + HOUR, 3, old);
    assert!(
        matches!(r, Response::ChangeSet(Outcome::Applied { .. })),
        "{r:?}"
    );
    assert_eq!(
        apply4(
            &mut img,
            6,
            DAY + HOUR,
            from_image(move |i: &NetworkImage| prune(i, "A-1/A-2"))
        )
        .kind(),
        "applied",
        "after the cool-down"
    );
}

#[test]
fn coupled_parameters_follow_the_two_groups() {
    use sonraft_model::rules::coupled;
    let c = |p| coupled(p).collect::<Vec<_>>();
    assert_eq!(
        c(Param::CioDb),
        vec![
            Param::ElectricalTilt,
            Param::MaxTxPowerDbm,
            Param::Hysteresis,
            Param::TimeToTriggerMs,
            Param::A3Offset
        ]
    );
    assert_eq!(
        c(Param::ElectricalTilt),
        vec![Param::MaxTxPowerDbm, Param::CioDb]
    );
    assert_eq!(
        c(Param::Hysteresis),
        vec![Param::TimeToTriggerMs, Param::A3Offset, Param::CioDb]
    );
    assert!(c(Param::Pci).is_empty());
}

#[test]
fn a_function_can_ask_whether_the_controls_would_refuse_a_change() {
    use sonraft_model::rules::controls_refusal;
    let mut img = image();
    let first = hysteresis(Function::MobilityRobustness, &img, "A-1", 5);
    assert_eq!(apply4(&mut img, 2, DAY, first).kind(), "applied");
    let again = hysteresis(Function::MobilityRobustness, &img, "A-1", 6);
    let why = controls_refusal(&img, &again, DAY, 4).expect("refused");
    assert!(why.contains("waits for the verification"), "{why}");
    assert_eq!(
        controls_refusal(&img, &again, DAY, 3),
        None,
        "format 3 has no controls"
    );
    let op = hysteresis(Function::Operator, &img, "A-1", 6);
    assert_eq!(controls_refusal(&img, &op, DAY, 4), None);
}

/// Applies a change set in a format-6 entry.
fn apply6(img: &mut NetworkImage, index: u64, now_ms: u64, cs: ChangeSet) -> Outcome {
    match apply_in(img, index, now_ms, 6, Command::ChangeSet(cs)).0 {
        Response::ChangeSet(o) => o,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn outage_compensation_needs_format_6_and_every_entry_naming_it_says_so() {
    let img = image();
    let oc = tilt(Function::OutageCompensation, &img, "A-1", 30);
    assert_eq!(Command::ChangeSet(oc.clone()).format(), 6);
    let mlb = cio(Function::LoadBalancing, &img, "A-1/A-2", 2);
    assert_eq!(Command::ChangeSet(mlb.clone()).format(), 1);
    assert_eq!(Command::ChangeSets(vec![mlb.clone()]).format(), 2);
    assert_eq!(Command::ChangeSets(vec![mlb, oc.clone()]).format(), 6);
    let mut policy = img.son.policy.clone();
    assert_eq!(Command::SonPolicy(policy.clone()).format(), 4);
    policy
        .functions
        .insert(Function::OutageCompensation, Controls::default());
    assert_eq!(Command::SonPolicy(policy).format(), 6);
    // An entry holding it says format 6 whatever the cluster's effective format (a node
    // refuses to propose it before every voter applies format 6).
    assert_eq!(
        Envelope::in_format(&Command::ChangeSet(oc), DAY, 5)
            .unwrap()
            .format,
        6
    );
    assert_eq!(
        "outage_compensation".parse::<Function>(),
        Ok(Function::OutageCompensation)
    );
}

#[test]
fn outage_compensation_does_not_wait_for_cool_downs_opens_no_trial_and_is_held_against_optimisers()
{
    let mut img = with_cooldown(image());
    // Energy saving just set A-1's power.
    let es = change_set(
        Function::EnergySaving,
        &img,
        vec![write("cell/A-1", Param::MaxTxPowerDbm, Value::Int(44))],
    );
    assert_eq!(apply6(&mut img, 3, DAY, es).kind(), "applied");
    let trials = img.son.trials.len();
    let oc = change_set(
        Function::OutageCompensation,
        &img,
        vec![
            write("cell/A-1", Param::ElectricalTilt, Value::Int(30)),
            write("cell/A-1", Param::MaxTxPowerDbm, Value::Int(46)),
        ],
    );
    assert_eq!(apply6(&mut img, 4, DAY + MINUTE, oc).kind(), "applied");
    assert_eq!(img.son.trials.len(), trials, "no trial for a compensation");
    // The optimisers leave the compensating cell alone: its power, and the CIOs coupled with
    // its tilt.
    let es = change_set(
        Function::EnergySaving,
        &img,
        vec![write("cell/A-1", Param::MaxTxPowerDbm, Value::Int(45))],
    );
    let out = apply6(&mut img, 5, DAY + 2 * MINUTE, es);
    assert!(reason(&out).contains("outage_compensation"), "{out:?}");
    let mlb = cio(Function::LoadBalancing, &img, "A-1/A-2", 2);
    let out = apply6(&mut img, 5, DAY + 2 * MINUTE, mlb);
    assert!(reason(&out).contains("outage_compensation"), "{out:?}");
    // It may not write outside its domain.
    let oc = cio(Function::OutageCompensation, &img, "A-1/A-2", 2);
    let out = apply6(&mut img, 6, DAY + 2 * MINUTE, oc);
    assert!(reason(&out).contains("may not write"), "{out:?}");
}

#[test]
fn from_format_6_a_site_may_propose_a_fallback_and_the_functions_controls_do_not_hold_it() {
    let mut img = with_cooldown(image());
    set_policy(
        &mut img,
        Function::OutageCompensation,
        Controls {
            mode: Mode::Off,
            ..Controls::default()
        },
    );
    let revert = tilt(Function::Fallback, &img, "A-1", 30);
    assert_eq!(Command::ChangeSet(revert.clone()).format(), 6);
    let out = apply_exact(&mut img, 2, DAY, 5, revert.clone());
    assert!(reason(&out).contains("nobody proposes them"), "{out:?}");
    let trials = img.son.trials.len();
    assert_eq!(apply6(&mut img, 3, DAY, revert).kind(), "applied");
    assert_eq!(img.son.trials.len(), trials, "a fallback opens no trial");
}

// ---- command format 7: relations created by ANR and the operator ----

/// `anr_add` creating `source -> target`, having read the source cell.
fn add_relation(img: &NetworkImage, function: Function, source: &str, target: &str) -> ChangeSet {
    let mut cs = change_set(
        function,
        img,
        vec![write(
            &format!("relation/{source}/{target}"),
            Param::Exists,
            Value::Bool(true),
        )],
    );
    cs.read_set = vec![sonraft_model::changeset::ReadVersion {
        entity: entity(&format!("cell/{source}")),
        version: img.cells[source].version,
    }];
    cs
}

#[test]
fn anr_adds_a_relation_from_format_7_and_its_undo_removes_it_again() {
    let mut img = image();
    let key = ("A-1".into(), "B-1".into());
    let cs = add_relation(&img, Function::AnrAdd, "A-1", "B-1");
    // Format 6 has no way to create a relation: every node refuses it alike.
    let mut op = cs.clone();
    op.origin.function = Function::Operator;
    let out = apply_exact(&mut img, 2, DAY, 6, op);
    assert!(
        reason(&out).contains("creating a relation needs command format 7"),
        "{out:?}"
    );
    let out = apply_exact(&mut img, 3, DAY, 7, cs.clone());
    assert_eq!(out.kind(), "applied", "{out:?}");
    let rel = &img.relations[&key];
    assert_eq!(rel.origin, RelationOrigin::Anr);
    assert!(rel.ho_allowed && rel.remove_allowed);
    // Its version is above any the pair could have had.
    assert!(rel.version > 3 * 1024);
    // Twice is refused: it exists.
    let again = add_relation(&img, Function::AnrAdd, "A-1", "B-1");
    let out = apply_exact(&mut img, 4, DAY, 7, again);
    assert!(reason(&out).contains("exists already"), "{out:?}");
    // A degraded verdict removes it again.
    let end = verdict(&mut img, 5, DAY + MINUTE, 3, Some("ho_success dropped"));
    assert!(
        matches!(end, Ok(TrialEnd::Undone { restored: 1, .. })),
        "{end:?}"
    );
    assert!(!img.relations.contains_key(&key));
}

#[test]
fn only_the_operator_and_anr_add_create_relations_and_anr_add_never_removes() {
    let mut img = image();
    for f in [Function::AnrPruning, Function::LoadBalancing] {
        let out = {
            let cs = add_relation(&img, f, "A-1", "B-1");
            apply_exact(&mut img, 2, DAY, 7, cs)
        };
        assert!(!matches!(out, Outcome::Applied { .. }), "{f}: {out:?}");
    }
    let out = {
        let cs = add_relation(&img, Function::Operator, "A-1", "B-1");
        apply_exact(&mut img, 3, DAY, 7, cs)
    };
    assert_eq!(out.kind(), "applied", "{out:?}");
    assert_eq!(
        img.relations[&("A-1".into(), "B-1".into())].origin,
        RelationOrigin::Operator
    );
    let prune = change_set(
        Function::AnrAdd,
        &img,
        vec![write("relation/A-1/A-2", Param::Exists, Value::Bool(false))],
    );
    let out = apply_exact(&mut img, 4, DAY, 7, prune);
    assert!(reason(&out).contains("only adds relations"), "{out:?}");
    for (s, t, why) in [
        ("A-1", "A-1", "its own neighbour"),
        ("A-1", "Z-9", "both cells must exist"),
    ] {
        let mut cs = add_relation(&img, Function::AnrAdd, "A-1", "A-2");
        cs.writes[0].entity = entity(&format!("relation/{s}/{t}"));
        let out = apply_exact(&mut img, 5, DAY, 7, cs);
        assert!(reason(&out).contains(why), "{out:?}");
    }
}

#[test]
fn anr_add_respects_exclusions_and_the_neighbour_limit_per_carrier() {
    let mut img = image();
    let mut policy = SonPolicy::default();
    let mut controls = Controls::default();
    controls.exclude.cells.insert("B-1".into());
    policy.functions.insert(Function::AnrAdd, controls);
    let (r, _) = apply_in(&mut img, 2, DAY, 7, Command::SonPolicy(policy));
    assert!(matches!(r, Response::SonPolicy(Ok(()))), "{r:?}");
    let out = {
        let cs = add_relation(&img, Function::AnrAdd, "A-1", "B-1");
        apply_exact(&mut img, 3, DAY, 7, cs)
    };
    assert!(reason(&out).contains("excluded cell B-1"), "{out:?}");
    // Fill A-1's list on its carrier to the limit with the operator's relations.
    let import_cells: Vec<_> = (0..40)
        .map(|i| cell(&format!("N-{i}"), "B", 100 + i as u16))
        .collect();
    for (i, c) in import_cells.iter().enumerate() {
        img.cells.insert(c.id.clone(), c.clone());
        if i < sonraft_model::rules::MAX_NEIGHBOURS_PER_CARRIER - 2 {
            let op = add_relation(&img, Function::Operator, "A-1", &c.id);
            let out = apply_exact(&mut img, 10 + i as u64, DAY, 7, op);
            assert_eq!(out.kind(), "applied", "{out:?}");
        }
    }
    let on_carrier = img.relations_from("A-1").count();
    assert_eq!(on_carrier, sonraft_model::rules::MAX_NEIGHBOURS_PER_CARRIER);
    let out = {
        let cs = add_relation(&img, Function::AnrAdd, "A-1", "N-39");
        apply_exact(&mut img, 100, DAY, 7, cs)
    };
    assert!(reason(&out).contains("adds at most 32"), "{out:?}");
}

#[test]
fn several_son_change_sets_in_one_entry_each_open_their_own_trial() {
    // Before format 10 a trial was named by its entry's index, so the second SON change set
    // of a `ChangeSets` entry replaced the first one's trial: that change went unverified.
    let mut img = image();
    let batch = vec![
        hysteresis(Function::MobilityRobustness, &img, "A-1", 5),
        hysteresis(Function::MobilityRobustness, &img, "A-2", 5),
        hysteresis(Function::MobilityRobustness, &img, "B-1", 5),
    ];
    let (r, changes) = apply_in(&mut img, 2, DAY, 10, Command::ChangeSets(batch));
    match r {
        Response::ChangeSets(outcomes) => {
            assert!(
                outcomes.iter().all(|o| o.kind() == "applied"),
                "{outcomes:?}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(changes.son, "the next free id is stored");
    let ids: Vec<u64> = img.son.trials.keys().copied().collect();
    assert_eq!(
        ids,
        vec![2, 3, 4],
        "one trial each, from the entry's index on"
    );
    for (id, cell) in [(2, "A-1"), (3, "A-2"), (4, "B-1")] {
        let trial = &img.son.trials[&id];
        assert_eq!((trial.index, trial.cells.clone()), (id, vec![cell.into()]));
    }
    // The next entry's trial takes the next free id, above the entry's own index.
    let next = hysteresis(Function::MobilityRobustness, &img, "B-2", 5);
    let (r, _) = apply_in(&mut img, 3, DAY, 10, Command::ChangeSet(next));
    assert!(
        matches!(r, Response::ChangeSet(Outcome::Applied { index: 3, .. })),
        "{r:?}"
    );
    assert_eq!(img.son.trials[&5].cells, vec!["B-2".to_string()]);
    // Each verdict closes its own trial, and a degraded one undoes its own change, though
    // the trial's id (4) is not the index of the entry that made it (2).
    let before = img.cells["A-1"].hysteresis;
    assert_eq!(
        verdict_in(&mut img, 4, DAY + MINUTE, 10, 3, None),
        Ok(TrialEnd::Kept)
    );
    assert_eq!(img.son.journal[&3].end, TrialEnd::Kept);
    let undone = verdict_in(
        &mut img,
        5,
        DAY + MINUTE,
        10,
        4,
        Some("ho_too_late_permille"),
    );
    assert!(
        matches!(undone, Ok(TrialEnd::Undone { restored: 1, .. })),
        "{undone:?}"
    );
    assert_eq!(img.cells["B-1"].hysteresis, 4, "restored");
    assert_eq!(img.cells["A-1"].hysteresis, before, "another trial's cell");
    assert_eq!(
        img.son.trials.keys().copied().collect::<Vec<_>>(),
        vec![2, 5]
    );
    // A format-9 entry keeps format 9's naming (every node must apply it as it did).
    let old = vec![
        hysteresis(Function::MobilityRobustness, &img, "B-3", 5),
        hysteresis(Function::MobilityRobustness, &img, "A-3", 5),
    ];
    let (_, _) = apply_in(&mut img, 9, DAY, 9, Command::ChangeSets(old));
    assert_eq!(img.son.trials[&9].cells, vec!["A-3".to_string()]);
}

#[test]
fn several_verdicts_in_one_entry_each_close_their_own_trial() {
    let mut img = image();
    let batch = vec![
        hysteresis(Function::MobilityRobustness, &img, "A-1", 5),
        hysteresis(Function::MobilityRobustness, &img, "A-2", 5),
    ];
    apply_in(&mut img, 2, DAY, 10, Command::ChangeSets(batch));
    let judged = |trial, degraded: Option<&str>| Verdict {
        trial,
        kpis: Vec::new(),
        degraded: degraded.map(str::to_string),
    };
    let verdicts = vec![
        judged(2, None),
        judged(3, Some("ho_too_late_permille")),
        judged(9, None),
    ];
    let (r, _) = apply_in(&mut img, 3, DAY + MINUTE, 10, Command::Verdicts(verdicts));
    let Response::Trials(ends) = r else {
        panic!("unexpected {r:?}")
    };
    assert_eq!(ends[0], Ok(TrialEnd::Kept));
    assert!(
        matches!(ends[1], Ok(TrialEnd::Undone { restored: 1, .. })),
        "{ends:?}"
    );
    assert!(
        ends[2].as_ref().is_err_and(|e| e.contains("no change 9")),
        "{ends:?}"
    );
    assert!(img.son.trials.is_empty());
    assert_eq!(
        (img.cells["A-1"].hysteresis, img.cells["A-2"].hysteresis),
        (5, 4)
    );
    // More than an entry may carry: the rest are refused, on every node alike.
    let many = (0..sonraft_model::command::MAX_CHANGE_SETS_PER_ENTRY as u64 + 1)
        .map(|t| judged(1000 + t, None))
        .collect();
    let (r, _) = apply_in(&mut img, 4, DAY + MINUTE, 10, Command::Verdicts(many));
    let Response::Trials(ends) = r else {
        panic!("unexpected {r:?}")
    };
    assert!(
        ends.last()
            .unwrap()
            .as_ref()
            .is_err_and(|e| e.contains("at most 1024"))
    );
}
