//! Golden fixtures of every format sonraft writes.
//!
//! - `fixtures/released/<version>/`: a data directory and a backup written by that release's
//!   own binary (`scripts/make-format-fixtures.sh`). The current code must open and read
//!   them: every log entry decodes, the image holds what the release wrote.
//! - `fixtures/current/`: the exact bytes the current code writes for fixed samples, one file
//!   per format *and version* (`command-v2.hex`, `wire-v1.hex`, ...). A change to any encoding
//!   without a new version number fails here; a new version number without a fixture fails
//!   too. To record the fixtures of a new version: `SONRAFT_BLESS=1 cargo test -p
//!   sonraft-storage --test golden_formats` (it never overwrites an existing file: the old
//!   version's bytes stay, and stay readable).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, StoredMembership, Vote};
use sonraft_raft::changeset::Outcome;
use sonraft_raft::changeset::{Function, Write};
use sonraft_raft::command::{COMMAND_FORMAT, Command, Envelope, Response};
use sonraft_raft::model::image::{Changes, NetworkImage};
use sonraft_raft::model::import::{StagedImport, StagedPart};
use sonraft_raft::model::{EntityRef, Param, Value};
use sonraft_raft::son::{
    AvailabilityTuning, KpiDelta, Pending, SonMeta, SonState, Trial, TrialEnd, TrialRecord, Tuning,
    TuningV1,
};
use sonraft_raft::transport::{
    NodeFacts, PEER_FORMAT, PeerReply, PeerRpc, RaftReply, RaftRpc, SubmitError, WIRE_FORMAT,
    decode_frame, decode_peer_frame, encode_frame, encode_peer_frame,
};
use sonraft_raft::{Entry, NodeInfo, SnapshotMeta};
use sonraft_storage::format::{DATA_FORMAT, LOG_ENTRY_FORMAT};
use sonraft_storage::snapshot::{
    SNAPSHOT_FORMAT, SnapshotBody, StreamCheck, decode_snapshot, encode_snapshot,
};
use sonraft_storage::{Store, decode_entry, encode_entry};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

// ---- samples: fixed values covering every command kind and every stored type ----

const SAMPLE_COMMANDS: &str = r#"[
  {"Import": {"sites": [{"id": "F", "name": "fixture", "lat": 48.1, "lon": 11.5}],
              "cells": [{"id": "F-1", "site": "F", "rat": "LTE", "pci": 7, "arfcn": 1300, "azimuth": 0},
                        {"id": "F-2", "site": "F", "rat": "NR", "pci": 8, "arfcn": 632628, "azimuth": 120}],
              "relations": [{"source": "F-1", "target": "F-2"}]}},
  {"ChangeSet": {"origin": {"node": 1, "function": "operator"}, "reason": "fixture",
                 "read_set": [{"entity": "cell/F-1", "version": 1}],
                 "writes": [{"entity": "cell/F-1", "param": "electrical_tilt", "value": {"Int": 35}}],
                 "proposed_at_ms": 1764000000000}},
  {"Kpis": {"site": "F", "summaries": [{"cell": "F-1", "period_end_ms": 1764000000000,
            "prb_dl_permille": 512, "rrc_conn_mean": 40, "thp_dl_kbps": 25000,
            "ho_att": 100, "ho_succ": 97}]}},
  {"Release": {"node_id": 1, "release": "0.2.0", "max_command_format": 2}},
  {"ChangeSets": [{"origin": {"node": 2, "function": "load_balancing"}, "reason": "fixture",
                   "read_set": [{"entity": "relation/F-1/F-2", "version": 1}],
                   "writes": [{"entity": "relation/F-1/F-2", "param": "cio_db", "value": {"Int": 2}}],
                   "proposed_at_ms": 1764000000001},
                  {"origin": {"node": 1, "function": "operator"}, "reason": "stale on purpose",
                   "read_set": [{"entity": "cell/F-2", "version": 9}],
                   "writes": [{"entity": "cell/F-2", "param": "hysteresis", "value": {"Int": 6}}],
                   "proposed_at_ms": 1764000000002}]}
]"#;

/// Commands of formats newer than the samples the log, snapshot and data fixtures were made of
/// (those must stay as they are); the command fixture holds them too.
const SAMPLE_COMMANDS_SINCE_3: &str = r#"[
  {"ImportPart": {"import_id": 11, "part": 0, "last": true,
                  "origin": {"node": 1, "function": "operator"}, "reason": "fixture",
                  "data": {"cells": [{"id": "F-3", "site": "F", "rat": "LTE", "pci": 9, "arfcn": 1300,
                                      "azimuth": 240, "electrical_tilt": 30}],
                           "relations": [{"source": "F-3", "target": "F-1", "cio_db": 2}]}}}
]"#;

/// Commands of format 4: the SON controls and an operator's decision.
const SAMPLE_COMMANDS_SINCE_4: &str = r#"[
  {"SonPolicy": {"functions": {"pci_conflict": {"mode": "open_loop",
                                                "exclude": {"cells": ["F-2"], "sites": ["G"], "regions": ["north"]},
                                                "window": {"from_minute": 60, "to_minute": 300}},
                               "anr_pruning": {"mode": "off"}},
                 "pending_ttl_ms": 86400000,
                 "verification": {"periods": 2, "verdict_within_ms": 7200000, "hold_ms": 21600000,
                                  "degrade_permille": 30, "throughput_drop_permille": 100,
                                  "min_attempts": 50}}},
  {"Decide": {"id": 12, "approve": true, "note": "fixture"}},
  {"Verdict": {"trial": 6, "kpis": [{"kpi": "ho_too_late_permille", "before": 10.5, "after": 80.25}],
               "degraded": "ho_too_late_permille rose by 69.75 per mille"}}
]"#;

/// Commands of format 5: the SON functions' thresholds.
const SAMPLE_COMMANDS_SINCE_5: &str = r#"[
  {"SonTuning": {"mobility_robustness": {"max_late_permille": 40, "max_early_permille": 25,
                                         "max_ping_pong_permille": 60, "min_attempts": 30,
                                         "min_events": 4, "dominance": 3, "cell_wide_permille": 600},
                 "load_balancing": {"high_pct": 85, "low_pct": 55, "release_pct": 45,
                                    "min_success_permille": 900, "max_targets": 2,
                                    "smoothing_periods": 4, "shift_permille_per_db": 25},
                 "anr": {"idle_prune_ms": 259200000, "min_idle_periods": 5, "failing_periods": 4,
                         "failing_min_attempts": 12, "failing_success_permille": 400},
                 "pci": {"reserved": [0, 1, 2, 1007]}}}
]"#;

/// Commands of format 6: outage compensation, a site's fallback reverting it, and a policy
/// naming it.
const SAMPLE_COMMANDS_SINCE_6: &str = r#"[
  {"ChangeSet": {"origin": {"node": 3, "function": "outage_compensation"},
                 "reason": "fixture: compensating F-2 (hard outage)",
                 "read_set": [{"entity": "cell/F-1", "version": 2}],
                 "writes": [{"entity": "cell/F-1", "param": "electrical_tilt", "value": {"Int": 30}},
                            {"entity": "cell/F-1", "param": "max_tx_power_dbm", "value": {"Int": 46}}],
                 "proposed_at_ms": 1764000000000}},
  {"ChangeSet": {"origin": {"node": 3, "function": "fallback"},
                 "reason": "fixture: F-2 is back: reverting its compensation",
                 "read_set": [{"entity": "cell/F-1", "version": 3}],
                 "writes": [{"entity": "cell/F-1", "param": "electrical_tilt", "value": {"Int": 40}}],
                 "proposed_at_ms": 1764000000000}},
  {"SonPolicy": {"functions": {"outage_compensation": {"mode": "open_loop"}},
                 "pending_ttl_ms": 86400000,
                 "verification": {"periods": 2, "verdict_within_ms": 7200000, "hold_ms": 21600000,
                                  "degrade_permille": 30, "throughput_drop_permille": 100,
                                  "min_attempts": 50}}}
]"#;

/// Commands of format 7: coverage and capacity optimisation, and ANR adding a relation.
const SAMPLE_COMMANDS_SINCE_7: &str = r#"[
  {"ChangeSet": {"origin": {"node": 2, "function": "coverage_capacity"},
                 "reason": "fixture: F-1 overshoots",
                 "read_set": [{"entity": "cell/F-1", "version": 2}],
                 "writes": [{"entity": "cell/F-1", "param": "electrical_tilt", "value": {"Int": 50}}],
                 "proposed_at_ms": 1764000000000}},
  {"ChangeSet": {"origin": {"node": 2, "function": "anr_add"},
                 "reason": "fixture: users of F-1 measure F-2",
                 "read_set": [{"entity": "cell/F-1", "version": 3}],
                 "writes": [{"entity": "relation/F-1/F-2", "param": "exists", "value": {"Bool": true}}],
                 "proposed_at_ms": 1764000000000}}
]"#;

/// Commands of format 8: control of cell sites' antennas moves to another node.
const SAMPLE_COMMANDS_SINCE_8: &str = r#"[
  {"Control": {"moves": [{"cell_site": "F", "from": "site-1", "epoch": 0, "to": "site-2"},
                         {"cell_site": "G", "from": "site-2", "epoch": 77, "to": "site-1"}],
               "reason": "fixture: site-1 unheard for 30 s"}}
]"#;

/// Commands of format 9: the tuning with the outage, compensation and energy-saving sections.
const SAMPLE_COMMANDS_SINCE_9: &str = r#"[
  {"SonTuningV2": {"mobility_robustness": {"max_late_permille": 40},
                   "load_balancing": {"high_pct": 85},
                   "anr": {"idle_prune_ms": 259200000},
                   "pci": {"reserved": [0, 1007]},
                   "outage": {"hard_periods": 3, "sleeping_periods": 4, "min_reporting_pct": 60},
                   "outage_compensation": {"max_compensators": 3, "max_compensator_load_pct": 65,
                                           "withdraw_load_pct": 90},
                   "energy_saving": {"sleep_ceiling_pct": 40, "wake_ceiling_pct": 60,
                                     "lead_periods": 2, "sleep_periods": 4, "silent_periods": 3}}}
]"#;

/// Commands of format 10: several verdicts in one entry.
const SAMPLE_COMMANDS_SINCE_10: &str = r#"[
  {"Verdicts": [{"trial": 41, "kpis": [{"kpi": "ho_too_late_permille", "before": 12.5, "after": 3.0}],
                 "degraded": null},
                {"trial": 57, "kpis": [{"kpi": "prb_dl_pct", "before": 40.0, "after": 71.5}],
                 "degraded": "prb_dl_pct rose 31.5 points"}]}
]"#;

fn commands_since_9() -> Vec<Command> {
    serde_json::from_str(SAMPLE_COMMANDS_SINCE_9).expect("sample commands parse")
}

/// The sample tuning of command format 9 (data format 9, snapshot format 8).
fn tuning_v2() -> Tuning {
    match &commands_since_9()[0] {
        Command::SonTuningV2(t) => t.clone(),
        other => panic!("the format-9 sample is a tuning, not {other:?}"),
    }
}

fn commands_since_8() -> Vec<Command> {
    serde_json::from_str(SAMPLE_COMMANDS_SINCE_8).expect("sample commands parse")
}

/// A cell site whose control moved (data format 8, snapshot format 7).
fn moved_control() -> (String, sonraft_raft::model::control::Control) {
    let (image, _) = image();
    let cell_site = image.sites.keys().next().expect("a site").clone();
    let control = sonraft_raft::model::control::Control {
        site: "site-2".into(),
        epoch: 42,
        since_ms: 1_764_000_300_000,
    };
    (cell_site, control)
}

fn commands_since_7() -> Vec<Command> {
    serde_json::from_str(SAMPLE_COMMANDS_SINCE_7).expect("sample commands parse")
}

fn commands_since_6() -> Vec<Command> {
    serde_json::from_str(SAMPLE_COMMANDS_SINCE_6).expect("sample commands parse")
}

fn commands_since_5() -> Vec<Command> {
    serde_json::from_str(SAMPLE_COMMANDS_SINCE_5).expect("sample commands parse")
}

/// The sample tuning (the format-5 command's).
fn tuning() -> Tuning {
    match &commands_since_5()[0] {
        Command::SonTuning(t) => Tuning::from(t.clone()),
        other => panic!("the format-5 sample is a tuning, not {other:?}"),
    }
}

/// A SON state with one of each: the policy, a pending PCI change, an open trial, a hold and
/// a closed trial in the journal.
fn son_state() -> SonState {
    let policy = match &commands_since_4()[0] {
        Command::SonPolicy(p) => p.clone(),
        other => panic!("the first format-4 sample is a policy, not {other:?}"),
    };
    let change_set = match &commands()[1] {
        Command::ChangeSet(cs) => cs.clone(),
        other => panic!("the second sample is a change set, not {other:?}"),
    };
    let trial = Trial {
        index: 6,
        function: Function::LoadBalancing,
        applied_at_ms: 1_764_000_000_006,
        writes: vec![(
            Write {
                entity: EntityRef::relation("F-1", "F-2"),
                param: Param::CioDb,
                value: Value::Int(2),
            },
            Value::Int(0),
        )],
        cells: vec!["F-1".into()],
        removed: vec![
            serde_json::from_value(
                serde_json::json!({"source": "F-2", "target": "F-1", "cio_db": -2}),
            )
            .expect("relation"),
        ],
    };
    SonState {
        policy,
        pending: [(
            12,
            Pending {
                id: 12,
                recorded_at_ms: 1_764_000_000_012,
                expires_at_ms: 1_764_086_400_012,
                change_set,
            },
        )]
        .into(),
        next_id: 13,
        trials: [(6, trial.clone())].into(),
        holds: [(("F-1".into(), Function::LoadBalancing), 1_764_021_600_000)].into(),
        journal: [(
            5,
            TrialRecord {
                trial: Trial { index: 5, ..trial },
                kpis: vec![KpiDelta {
                    kpi: "ho_too_late_permille".into(),
                    before: 10.5,
                    after: 80.25,
                }],
                end: TrialEnd::Undone {
                    reason: "fixture".into(),
                    restored: 1,
                },
                closed_at_ms: 1_764_000_000_020,
            },
        )]
        .into(),
        tuning: Tuning::default(),
    }
}

fn commands_since_4() -> Vec<Command> {
    serde_json::from_str(SAMPLE_COMMANDS_SINCE_4).expect("sample commands parse")
}

/// An import waiting for its last part, as the state machine stores it.
fn staged_import() -> StagedImport {
    let data = match &commands()[0] {
        Command::Import(i) => i.clone(),
        other => panic!("the first sample is an import, not {other:?}"),
    };
    StagedImport::with_data(7, 1, data)
}

fn commands() -> Vec<Command> {
    serde_json::from_str(SAMPLE_COMMANDS).expect("sample commands parse")
}

fn every_command() -> Vec<Command> {
    let mut all = commands();
    let newer: Vec<Command> =
        serde_json::from_str(SAMPLE_COMMANDS_SINCE_3).expect("sample commands parse");
    all.extend(newer);
    all.extend(commands_since_4());
    all.extend(commands_since_5());
    all.extend(commands_since_6());
    all.extend(commands_since_7());
    all.extend(commands_since_8());
    all.extend(commands_since_9());
    all.extend(
        serde_json::from_str::<Vec<Command>>(SAMPLE_COMMANDS_SINCE_10)
            .expect("sample commands parse"),
    );
    all
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn membership() -> Membership<u64, NodeInfo> {
    let nodes: BTreeMap<u64, NodeInfo> = (1..=3)
        .map(|id| {
            (
                id,
                NodeInfo {
                    site: format!("site-{id}"),
                    raft_addr: format!("10.0.0.{id}:7001"),
                    api_addr: format!("10.0.0.{id}:8001"),
                },
            )
        })
        .collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

fn entries() -> Vec<Entry> {
    let mut out = vec![Entry {
        log_id: log_id(1, 1),
        payload: EntryPayload::Membership(membership()),
    }];
    out.push(Entry {
        log_id: log_id(1, 2),
        payload: EntryPayload::Blank,
    });
    for (i, c) in commands().iter().enumerate() {
        let index = 3 + i as u64;
        out.push(Entry {
            log_id: log_id(2, index),
            payload: EntryPayload::Normal(
                Envelope::new(c, 1_764_000_000_000 + index).expect("encode"),
            ),
        });
    }
    out
}

/// The image and history the sample entries produce.
fn image() -> (NetworkImage, SnapshotBody) {
    let mut image = NetworkImage::default();
    let mut history = Vec::new();
    for e in entries() {
        if let EntryPayload::Normal(env) = &e.payload {
            let mut changes = Changes::default();
            image
                .apply_entry(e.log_id.index, env, &mut changes)
                .expect("sample entries apply");
            history.extend(changes.history);
        }
    }
    let body = SnapshotBody {
        image: image.clone(),
        history,
    };
    (image, body)
}

fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id(2, 7)),
        last_membership: StoredMembership::new(Some(log_id(1, 1)), membership()),
        snapshot_id: "fixture-2-7".into(),
    }
}

fn rpcs() -> (Vec<RaftRpc>, Vec<RaftReply>) {
    let vote = Vote::new_committed(2, 1);
    let requests = vec![
        RaftRpc::Append(AppendEntriesRequest {
            vote,
            prev_log_id: Some(log_id(1, 2)),
            entries: entries().split_off(2),
            leader_commit: Some(log_id(2, 5)),
        }),
        RaftRpc::Vote(VoteRequest::new(Vote::new(3, 2), Some(log_id(2, 7)))),
    ];
    let replies = vec![
        RaftReply::Append(Ok(AppendEntriesResponse::Success)),
        RaftReply::Append(Ok(AppendEntriesResponse::HigherVote(Vote::new(4, 3)))),
        RaftReply::Vote(Ok(VoteResponse::new(
            Vote::new(3, 2),
            Some(log_id(2, 7)),
            true,
        ))),
    ];
    (requests, replies)
}

fn peer_messages() -> (Vec<PeerRpc>, Vec<PeerReply>) {
    let change = &commands()[1];
    let requests = vec![
        PeerRpc::Facts,
        PeerRpc::Submit {
            format: change.format(),
            command: sonraft_raft::codec::encode(change).expect("encode"),
        },
        PeerRpc::Elect { timeout_ms: 1900 },
    ];
    let replies = vec![
        PeerReply::Facts(NodeFacts {
            id: 2,
            release: "0.2.0".into(),
            heartbeat_ms: 50,
            election_min_ms: 150,
            election_max_ms: 300,
            vote_promise_ms: 100,
            membership_index: 1,
            voters: vec![1, 2, 3],
            learners: vec![4],
        }),
        PeerReply::Submitted(Ok((
            9,
            Response::ChangeSet(Outcome::Applied {
                index: 9,
                versions: BTreeMap::from([("cell/F-1".to_string(), 2)]),
            }),
        ))),
        PeerReply::Submitted(Err(SubmitError::NotLeader(Some(3)))),
        PeerReply::Submitted(Err(SubmitError::OutcomeUnknown { after_ms: 2000 })),
        PeerReply::Elected(true),
        PeerReply::Refused("command format 9 is newer".into()),
    ];
    (requests, replies)
}

// ---- current formats: bytes must match the fixture of the current version ----

/// Compares `lines` with `fixtures/current/<name>`; writes the file when blessing a version
/// that has none yet.
fn check_current(name: &str, what: &str, lines: Vec<String>) {
    let path = fixtures().join("current").join(name);
    let text = lines.join("\n") + "\n";
    match std::fs::read_to_string(&path) {
        Ok(stored) => assert!(
            stored == text,
            "the {what} encoding changed, but its version number did not: the current code \
             writes different bytes than {} records. Give the format a new version (and keep \
             reading the old one), then record the new fixture with SONRAFT_BLESS=1.",
            path.display()
        ),
        Err(_) if std::env::var_os("SONRAFT_BLESS").is_some() => {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            eprintln!("recorded {}", path.display());
        }
        Err(e) => panic!(
            "no fixture {} for the current {what} version ({e}); record it with \
             SONRAFT_BLESS=1 cargo test -p sonraft-storage --test golden_formats",
            path.display()
        ),
    }
}

#[test]
fn command_envelopes_match_the_fixture_of_the_current_command_format() {
    let lines = every_command()
        .iter()
        .map(|c| {
            let env = Envelope::new(c, 1_764_000_000_000).unwrap();
            assert!(env.format <= COMMAND_FORMAT);
            format!(
                "{} {}",
                env.format,
                hex(&sonraft_raft::codec::encode(&env).unwrap())
            )
        })
        .collect();
    check_current(&format!("command-v{COMMAND_FORMAT}.hex"), "command", lines);
}

#[test]
fn log_entries_match_the_fixture_of_the_current_log_entry_format() {
    let lines = entries()
        .iter()
        .map(|e| hex(&encode_entry(e).unwrap()))
        .collect();
    check_current(
        &format!("log-entry-v{LOG_ENTRY_FORMAT}.hex"),
        "log entry",
        lines,
    );
}

#[test]
fn rpc_bodies_match_the_fixture_of_the_current_wire_format() {
    let (requests, replies) = rpcs();
    let mut lines: Vec<String> = requests
        .iter()
        .map(|r| hex(&encode_frame(r).unwrap()))
        .collect();
    lines.extend(replies.iter().map(|r| hex(&encode_frame(r).unwrap())));
    check_current(&format!("wire-v{WIRE_FORMAT}.hex"), "RPC wire", lines);
}

#[test]
fn peer_bodies_match_the_fixture_of_the_current_peer_format() {
    let (requests, replies) = peer_messages();
    let mut lines: Vec<String> = requests
        .iter()
        .map(|r| hex(&encode_peer_frame(r).unwrap()))
        .collect();
    lines.extend(replies.iter().map(|r| hex(&encode_peer_frame(r).unwrap())));
    check_current(&format!("peer-v{PEER_FORMAT}.hex"), "peer request", lines);
}

/// The sample snapshot body of snapshot format `format`: from format 3 it holds SON controls,
/// from 5 a cell that outage compensation changed.
fn snapshot_body(format: u16) -> SnapshotBody {
    let (_, mut body) = image();
    if format >= 3 {
        body.image.son = son_state();
    }
    if format >= 4 {
        body.image.son.tuning = tuning();
    }
    if format >= 5 {
        let cell = compensated_cell();
        body.image.cells.insert(cell.id.clone(), cell);
    }
    if format >= 6 {
        let rel = added_relation();
        body.image
            .relations
            .insert((rel.source.clone(), rel.target.clone()), rel);
    }
    if format >= 7 {
        let (cell_site, control) = moved_control();
        body.image.control.insert(cell_site, control);
    }
    if format >= 8 {
        body.image.son.tuning = tuning_v2();
    }
    body
}

/// A relation ANR added between the sample image's first two cells (data format 7, snapshot
/// format 6: a value naming `anr_add`).
fn added_relation() -> sonraft_raft::model::Relation {
    let (image, _) = image();
    let mut ids = image.cells.keys().rev();
    let (source, target) = (ids.next().unwrap().clone(), ids.next().unwrap().clone());
    let mut rel = sonraft_raft::model::Relation {
        source,
        target,
        cio_db: 0,
        ho_allowed: true,
        remove_allowed: true,
        origin: sonraft_raft::model::RelationOrigin::Anr,
        version: 41 * 1025 + 1,
        last_change: Default::default(),
    };
    rel.last_change.insert(
        sonraft_raft::model::Param::Exists,
        sonraft_raft::model::Stamp {
            by: sonraft_raft::changeset::Function::AnrAdd,
            at_ms: 1_764_000_200_000,
            index: 41,
        },
    );
    rel
}

/// The sample image's first cell as outage compensation left it (data format 6, snapshot
/// format 5: a value naming the function).
fn compensated_cell() -> sonraft_raft::model::Cell {
    let (image, _) = image();
    let mut cell = image.cells.values().next().expect("a cell").clone();
    cell.electrical_tilt -= 10;
    cell.version += 1;
    cell.last_change.insert(
        sonraft_raft::model::Param::ElectricalTilt,
        sonraft_raft::model::Stamp {
            by: sonraft_raft::changeset::Function::OutageCompensation,
            at_ms: 1_764_000_100_000,
            index: 40,
        },
    );
    cell
}

/// A download is checked as it comes (`ctl backup`): a whole copy passes in any chunking; one
/// cut short, damaged, or not a snapshot does not.
#[test]
fn a_snapshot_checked_as_it_streams_passes_whole_and_fails_cut_or_damaged() {
    let bytes = encode_snapshot(
        Vec::new(),
        &snapshot_meta(),
        &snapshot_body(SNAPSHOT_FORMAT),
    )
    .unwrap();
    let check = |data: &[u8], chunk: usize| {
        let mut c = StreamCheck::default();
        for part in data.chunks(chunk) {
            c.update(part);
        }
        c.finish()
    };
    for chunk in [1, 3, 5, 8, 4096, bytes.len()] {
        check(&bytes, chunk).unwrap_or_else(|e| panic!("chunks of {chunk}: {e}"));
    }
    for cut in [0, 4, 8, 11, bytes.len() / 2, bytes.len() - 1] {
        assert!(check(&bytes[..cut], 7).is_err(), "cut at {cut} passed");
    }
    let mut damaged = bytes.clone();
    damaged[bytes.len() / 2] ^= 0x40;
    assert!(check(&damaged, 7).is_err(), "a flipped bit passed");
    let mut not_ours = bytes.clone();
    not_ours[0] = b'X';
    assert!(check(&not_ours, 7).is_err(), "a bad magic passed");
}

#[test]
fn snapshots_match_the_fixture_of_the_current_snapshot_format() {
    let body = snapshot_body(SNAPSHOT_FORMAT);
    assert_eq!(body.format(), SNAPSHOT_FORMAT);
    // Each body is written in the oldest format that holds it, so a node of the previous
    // release installs it until something it cannot decode appears.
    // ... in the bytes that release wrote.
    for f in 2..SNAPSHOT_FORMAT {
        assert_eq!(snapshot_body(f).format(), f);
        let older = encode_snapshot(Vec::new(), &snapshot_meta(), &snapshot_body(f)).unwrap();
        check_current(&format!("snapshot-v{f}.hex"), "snapshot", vec![hex(&older)]);
    }
    let bytes = encode_snapshot(Vec::new(), &snapshot_meta(), &body).unwrap();
    check_current(
        &format!("snapshot-v{SNAPSHOT_FORMAT}.hex"),
        "snapshot",
        vec![hex(&bytes)],
    );
}

#[test]
fn a_staged_import_naming_a_newer_function_raises_the_snapshot_format() {
    let mut body = snapshot_body(4);
    assert_eq!(body.format(), 4);
    let mut cell = compensated_cell();
    cell.last_change.values_mut().for_each(|s| {
        s.by = sonraft_raft::changeset::Function::CoverageCapacity;
    });
    body.image.staged = Some(StagedImport::with_data(
        7,
        1,
        sonraft_raft::command::ImageImport {
            cells: vec![cell],
            ..Default::default()
        },
    ));
    assert_eq!(body.format(), 6);
}

#[test]
fn stored_image_values_match_the_fixture_of_the_current_data_format() {
    // The state machine stores sites, cells, relations, KPI summaries and the policy one value
    // per key, and the history one value per log entry (data format 2), with the same codec.
    let (image, body) = image();
    fn enc<T: serde::Serialize>(v: &T) -> String {
        hex(&sonraft_raft::codec::encode(v).expect("encodes"))
    }
    let mut lines = Vec::new();
    lines.extend(image.sites.values().map(enc));
    lines.extend(image.cells.values().map(enc));
    lines.extend(image.relations.values().map(enc));
    lines.extend(image.kpis.values().map(enc));
    lines.extend(
        body.history
            .chunk_by(|a, b| a.index == b.index)
            .map(|run| enc(&run)),
    );
    lines.push(enc(&image.policy));
    lines.push(enc(&image.releases));
    // From data format 10, one value per staged part (formats 3 to 9: the staged import whole).
    lines.push(enc(&staged_import().as_part()));
    // From data format 4, the SON state: its small rest, then one value per pending proposal,
    // open trial and closed trial.
    let son = son_state();
    lines.push(enc(&son.meta()));
    lines.extend(son.pending.values().map(enc));
    lines.extend(son.trials.values().map(enc));
    lines.extend(son.journal.values().map(enc));
    // From data format 5, the SON tuning (its sections up to PCI).
    lines.push(enc(&tuning().v1()));
    // From data format 6, values may name outage compensation.
    lines.push(enc(&compensated_cell()));
    // From data format 7, values may name coverage_capacity and anr_add.
    lines.push(enc(&added_relation()));
    // From data format 8, who controls a cell site whose control moved.
    lines.push(enc(&moved_control().1));
    // From data format 9, the tuning's outage, compensation and energy-saving sections.
    lines.push(enc(&tuning_v2().availability()));
    check_current(&format!("data-v{DATA_FORMAT}.hex"), "stored image", lines);
}

#[test]
fn recorded_fixtures_of_every_version_still_decode() {
    let dir = fixtures().join("current");
    let mut seen = 0;
    for f in std::fs::read_dir(&dir).expect("fixtures/current exists") {
        let path = f.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Vec<u8>> = text
            .lines()
            .map(|l| unhex(l.rsplit(' ').next().unwrap()))
            .collect();
        if name.starts_with("command-v") {
            for bytes in &lines {
                let env: Envelope = sonraft_raft::codec::decode(bytes).expect(&name);
                env.command().unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        } else if name.starts_with("log-entry-v") {
            for bytes in &lines {
                decode_entry(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        } else if name.starts_with("wire-v") {
            let (requests, _) = rpcs();
            for (i, bytes) in lines.iter().enumerate() {
                if i < requests.len() {
                    decode_frame::<RaftRpc>(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                } else {
                    decode_frame::<RaftReply>(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                }
            }
        } else if name.starts_with("peer-v") {
            let (requests, replies) = peer_messages();
            for (i, bytes) in lines.iter().enumerate() {
                if i < requests.len() {
                    decode_peer_frame::<PeerRpc>(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                } else {
                    let reply = decode_peer_frame::<PeerReply>(bytes)
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(reply, replies[i - requests.len()], "{name}");
                }
            }
        } else if name.starts_with("snapshot-v") {
            let (meta, body) =
                decode_snapshot(&lines[0][..]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(meta, snapshot_meta(), "{name}");
            let format: u16 = name
                .strip_prefix("snapshot-v")
                .and_then(|v| v.strip_suffix(".hex"))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name}: not snapshot-v<number>.hex"));
            assert_eq!(body, snapshot_body(format), "{name}");
        } else if let Some(version) = name
            .strip_prefix("data-v")
            .and_then(|v| v.strip_suffix(".hex"))
        {
            let version: u32 = version
                .parse()
                .unwrap_or_else(|_| panic!("{name}: not data-v<number>.hex"));
            check_stored_values(&name, version, &lines);
        } else {
            panic!("{name}: a fixture this test does not know how to decode");
        }
        seen += 1;
    }
    assert!(seen >= 10, "too few fixtures in {}", dir.display());
}

/// Decodes each line of `data-v<version>.hex` as the type the state machine stores at that
/// place and compares it with the sample it was made from. The lines of every data format:
/// sites, cells, relations, KPI summaries; the history (format 1: one record per line, from
/// format 2: one line per log entry); the policy and the releases; from format 3 the staged
/// import. Values of an older format decode with today's types or the migration would misread
/// them.
fn check_stored_values(name: &str, version: u32, lines: &[Vec<u8>]) {
    use serde::de::DeserializeOwned;
    use sonraft_raft::model::image::HistoryRecord;
    use sonraft_raft::model::{Cell, KpiSummary, NodeRelease, Policy, Relation, Site};

    fn decoded<T: DeserializeOwned>(name: &str, what: &str, bytes: Option<&Vec<u8>>) -> T {
        let bytes = bytes.unwrap_or_else(|| panic!("{name}: the file ends before {what}"));
        sonraft_raft::codec::decode(bytes)
            .unwrap_or_else(|e| panic!("{name}: {what} does not decode: {e}"))
    }
    let (image, body) = image();
    let mut lines = lines.iter();
    for site in image.sites.values() {
        assert_eq!(
            &decoded::<Site>(name, "a site", lines.next()),
            site,
            "{name}"
        );
    }
    for cell in image.cells.values() {
        assert_eq!(
            &decoded::<Cell>(name, "a cell", lines.next()),
            cell,
            "{name}"
        );
    }
    for rel in image.relations.values() {
        let got: Relation = decoded(name, "a relation", lines.next());
        assert_eq!(&got, rel, "{name}");
    }
    for kpi in image.kpis.values() {
        let got: KpiSummary = decoded(name, "a KPI summary", lines.next());
        assert_eq!(&got, kpi, "{name}");
    }
    if version == 1 {
        for record in &body.history {
            let got: HistoryRecord = decoded(name, "a history record", lines.next());
            assert_eq!(&got, record, "{name}");
        }
    } else {
        for run in body.history.chunk_by(|a, b| a.index == b.index) {
            let got: Vec<HistoryRecord> = decoded(name, "an entry's history", lines.next());
            assert_eq!(got, run, "{name}");
        }
    }
    let policy: Policy = decoded(name, "the policy", lines.next());
    assert_eq!(policy, image.policy, "{name}");
    let releases: BTreeMap<u64, NodeRelease> = decoded(name, "the releases", lines.next());
    assert_eq!(releases, image.releases, "{name}");
    if version >= 10 {
        let part: StagedPart = decoded(name, "a staged import's part", lines.next());
        assert_eq!(part, staged_import().as_part(), "{name}");
    } else if version >= 3 {
        let staged: StagedImport = decoded(name, "the staged import", lines.next());
        assert_eq!(staged, staged_import(), "{name}");
    }
    if version >= 4 {
        let son = son_state();
        let meta: SonMeta = decoded(name, "the SON state", lines.next());
        assert_eq!(meta, son.meta(), "{name}");
        for p in son.pending.values() {
            let got: Pending = decoded(name, "a pending proposal", lines.next());
            assert_eq!(&got, p, "{name}");
        }
        for t in son.trials.values() {
            let got: Trial = decoded(name, "an open trial", lines.next());
            assert_eq!(&got, t, "{name}");
        }
        for r in son.journal.values() {
            let got: TrialRecord = decoded(name, "a closed trial", lines.next());
            assert_eq!(&got, r, "{name}");
        }
    }
    if version >= 5 {
        let got: TuningV1 = decoded(name, "the SON tuning", lines.next());
        assert_eq!(got, tuning().v1(), "{name}");
    }
    if version >= 6 {
        let got: Cell = decoded(name, "a cell outage compensation changed", lines.next());
        assert_eq!(got, compensated_cell(), "{name}");
    }
    if version >= 7 {
        let got: Relation = decoded(name, "a relation ANR added", lines.next());
        assert_eq!(got, added_relation(), "{name}");
    }
    if version >= 8 {
        let got: sonraft_raft::model::control::Control =
            decoded(name, "a cell site's control", lines.next());
        assert_eq!(got, moved_control().1, "{name}");
    }
    if version >= 9 {
        let got: AvailabilityTuning =
            decoded(name, "the tuning's availability sections", lines.next());
        assert_eq!(got, tuning_v2().availability(), "{name}");
    }
    assert_eq!(
        lines.count(),
        0,
        "{name}: more lines than data format {version} stores"
    );
}

// ---- released data directories and backups ----

/// Rebuilds a data directory from a `store_dump` text dump.
fn restore_dump(dump: &Path, dir: &Path) {
    let text = std::fs::read_to_string(dump).unwrap();
    let mut db = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["marker", m] => std::fs::write(dir.join("FORMAT"), unhex(m)).unwrap(),
            ["kv", tree, k, v] => {
                let db = db.get_or_insert_with(|| {
                    sled::Config::new().path(dir.join("sled")).open().unwrap()
                });
                db.open_tree(unhex(tree))
                    .unwrap()
                    .insert(unhex(k), unhex(v))
                    .unwrap();
            }
            ["file", name, data] => {
                let p = dir.join(name);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, unhex(data)).unwrap();
            }
            other => panic!("bad dump line {other:?}"),
        }
    }
    if let Some(db) = db {
        db.flush().unwrap();
        drop(db);
        // sled's background jobs hold the directory a little longer than the handle.
        sonraft_storage::wait_released(dir, sonraft_storage::RELEASE_WITHIN).unwrap();
    }
}

/// `cell version electrical_tilt` lines.
fn expectations(dir: &Path) -> Vec<(String, u64, i64)> {
    std::fs::read_to_string(dir.join("expect.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn data_directories_and_backups_of_released_versions_open_with_the_current_code() {
    use openraft::storage::RaftLogReader;
    let released = fixtures().join("released");
    let mut versions = 0;
    for v in std::fs::read_dir(&released).expect("fixtures/released exists") {
        let vdir = v.unwrap().path();
        let version = vdir.file_name().unwrap().to_string_lossy().into_owned();
        let expect = expectations(&vdir);

        let tmp = tempfile::tempdir().unwrap();
        restore_dump(&vdir.join("store.dump"), tmp.path());
        let mut store = Store::open(tmp.path())
            .unwrap_or_else(|e| panic!("{version}: the data directory does not open: {e}"));
        // Every log entry still there decodes (the reader refuses what it cannot read).
        let entries = store
            .log
            .try_get_log_entries(0..u64::MAX)
            .await
            .unwrap_or_else(|e| panic!("{version}: log entries: {e}"));
        assert!(!entries.is_empty(), "{version}: no log entries");
        for e in &entries {
            if let EntryPayload::Normal(env) = &e.payload {
                env.command()
                    .unwrap_or_else(|err| panic!("{version}: entry {}: {err}", e.log_id));
            }
        }
        // The image holds what that release wrote.
        let state = sonraft_storage::read(store.reader.state()).clone();
        for (cell, version_no, tilt) in &expect {
            let c = state
                .image
                .cells
                .get(cell.as_str())
                .unwrap_or_else(|| panic!("{version}: no cell {cell}"));
            assert_eq!(c.version, *version_no, "{version}: {cell}");
            assert_eq!(i64::from(c.electrical_tilt), *tilt, "{version}: {cell}");
        }
        assert!(state.last_applied.is_some(), "{version}: nothing applied");

        // Its backup (the snapshot file format) decodes to the same cells.
        let f = std::fs::File::open(vdir.join("backup.snapshot")).unwrap();
        let (_, body) = decode_snapshot(f)
            .unwrap_or_else(|e| panic!("{version}: the backup does not decode: {e}"));
        for (cell, version_no, tilt) in &expect {
            let c = &body.image.cells[cell.as_str()];
            assert_eq!(
                (c.version, i64::from(c.electrical_tilt)),
                (*version_no, *tilt)
            );
        }
        // Its history, migrated to the current layout, reads as that release recorded it.
        let mut history: Vec<_> = store
            .reader
            .history(usize::MAX, None)
            .unwrap()
            .into_iter()
            .map(|(_, record)| record)
            .collect();
        history.reverse();
        assert!(!history.is_empty(), "{version}: no history");
        assert_eq!(
            history, body.history,
            "{version}: history differs from its backup"
        );
        let marker = std::fs::read_to_string(tmp.path().join("FORMAT")).unwrap();
        assert_eq!(marker, format!("sonraft data format {DATA_FORMAT}\n"));
        versions += 1;
    }
    assert!(
        versions >= 1,
        "no released fixtures in {}",
        released.display()
    );
}
