//! Golden JSON of the admin API v1: one fixture per request and answer type in
//! `tests/fixtures/v1/<name>.json`, like the binary formats' `storage/tests/golden_formats.rs`.
//!
//! For each, a fixed sample value must serialize to exactly the fixture, and the fixture must
//! deserialize back to the sample. A renamed, retyped, added or dropped field fails here, so a
//! change to the contract is a deliberate change to a fixture that shows in review (and, for
//! clients of older releases, probably a new API version instead).
//!
//! To record the fixture of a new type: add its sample below and run
//! `SONRAFT_BLESS=1 cargo test -p sonraft-client --test golden_v1`. Blessing only writes
//! fixtures that do not exist; to change one on purpose, delete it and bless again.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use sonraft_client::v1::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

/// Checks `sample` against `tests/fixtures/v1/<name>.json` both ways; returns a failure, if
/// any, so that one run reports every fixture that differs.
fn check<T>(name: &str, sample: T) -> Option<String>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let path = fixtures().join(format!("{name}.json"));
    let mut text = serde_json::to_string_pretty(&sample).expect("a sample serializes");
    text.push('\n');
    let fixture = match std::fs::read_to_string(&path) {
        Ok(f) => f,
        Err(_) if std::env::var_os("SONRAFT_BLESS").is_some() => {
            std::fs::create_dir_all(fixtures()).expect("fixtures directory");
            std::fs::write(&path, &text).expect("fixture written");
            return None;
        }
        Err(e) => {
            return Some(format!(
                "{name}: no fixture at {} ({e}); record it with SONRAFT_BLESS=1",
                path.display()
            ));
        }
    };
    if text != fixture {
        return Some(format!(
            "{name}: the sample serializes differently from its fixture\n--- fixture\n{fixture}--- now\n{text}"
        ));
    }
    match serde_json::from_str::<T>(&fixture) {
        Ok(back) if back == sample => None,
        Ok(back) => Some(format!(
            "{name}: the fixture reads back as {back:?}, not the sample"
        )),
        Err(e) => Some(format!("{name}: the fixture does not read back: {e}")),
    }
}

fn status() -> Status {
    Status {
        id: 1,
        site: "site-a".into(),
        this: Addresses {
            raft_addr: "10.0.1.5:7001".into(),
            api_addr: "10.0.1.5:8001".into(),
        },
        role: Role::Leader,
        term: 7,
        leader_id: Some(1),
        last_log_index: 1200,
        last_applied_index: 1199,
        purged_index: 1000,
        snapshot_index: 1100,
        voters: vec![1, 2, 3],
        learners: vec![4],
        nodes: (1..=4)
            .map(|i| {
                let addresses = MemberAddresses {
                    site: format!("site-{i}"),
                    raft_addr: format!("10.0.1.{i}:7001"),
                    api_addr: format!("10.0.1.{i}:8001"),
                };
                (i, addresses)
            })
            .collect(),
        version: "0.2.0".into(),
        data_format: 3,
        command_format: 3,
        effective_command_format: 3,
        releases: BTreeMap::from([(
            1,
            AdvertisedRelease {
                release: "0.2.0".into(),
                max_command_format: 3,
            },
        )]),
        millis_since_quorum_ack: Some(12),
        now_ms: Some(1_764_000_000_000),
        checkpoint_pending: Some(0),
    }
}

fn cluster_health() -> ClusterHealth {
    ClusterHealth {
        from: 1,
        leader: Some(1),
        term: 7,
        voters: vec![1, 2, 3],
        learners: vec![],
        members: vec![
            MemberHealth {
                id: 1,
                site: "site-1".into(),
                raft_addr: "10.0.1.1:7001".into(),
                api_addr: "10.0.1.1:8001".into(),
                role: MemberRole::Voter,
                answers: true,
                error: None,
                release: Some("0.2.0".into()),
                lag: Some(0),
            },
            MemberHealth {
                id: 3,
                site: "site-3".into(),
                raft_addr: "10.0.1.3:7001".into(),
                api_addr: "10.0.1.3:8001".into(),
                role: MemberRole::Voter,
                answers: false,
                error: Some("connection refused".into()),
                release: None,
                lag: Some(1500),
            },
        ],
        fault_tolerance: 0,
        problems: vec![
            Problem {
                kind: ProblemKind::FaultTolerance,
                detail: "2 of 3 voters answer".into(),
            },
            Problem {
                kind: ProblemKind::Lag,
                detail: "voter 3 trails the leader by 1500 entries".into(),
            },
        ],
        healthy: false,
    }
}

fn import_changes(listed: bool) -> ImportChanges {
    let counts = |created, updated, unchanged| KindCounts {
        created,
        updated,
        unchanged,
    };
    let changes = vec![ParamChange {
        entity: "cell/S1-1".into(),
        param: "electrical_tilt".into(),
        from: ParamValue::Int(40),
        to: ParamValue::Int(45),
    }];
    ImportChanges {
        sites: counts(1, 0, 2),
        cells: counts(3, 1, 5),
        relations: counts(0, 0, 9),
        policy_changed: true,
        changed_params: 1,
        changes_listed: listed.then_some(1),
        changes: listed.then_some(changes),
    }
}

fn site() -> Site {
    Site {
        id: "S1".into(),
        name: "North Hill".into(),
        lat: 47.3769,
        lon: 8.5417,
        region: "north".into(),
    }
}

fn stamp(by: Function) -> Stamp {
    Stamp {
        by,
        at_ms: 1_764_000_000_000,
        index: 1180,
    }
}

fn cell() -> Cell {
    Cell {
        id: "S1-1".into(),
        site: "S1".into(),
        rat: Rat::Lte,
        pci: 101,
        arfcn: 1850,
        azimuth: 120,
        electrical_tilt: 40,
        tilt_box: TiltBox { min: 20, max: 80 },
        max_tx_power_dbm: 46,
        hysteresis: 4,
        time_to_trigger_ms: 320,
        a3_offset: 6,
        admin_state: AdminState::Unlocked,
        energy_saving: EnergySaving::Normal,
        version: 3,
        last_change: BTreeMap::from([
            (Param::Pci, stamp(Function::PciConflict)),
            (Param::ElectricalTilt, stamp(Function::Operator)),
        ]),
    }
}

fn relation() -> Relation {
    Relation {
        source: "S1-1".into(),
        target: "S2-3".into(),
        cio_db: -2,
        ho_allowed: true,
        remove_allowed: false,
        origin: RelationOrigin::Operator,
        version: 2,
        last_change: BTreeMap::from([(Param::CioDb, stamp(Function::MobilityRobustness))]),
    }
}

#[test]
fn every_v1_type_matches_its_golden_json_both_ways() {
    let failures: Vec<String> = [
        check(
            "error",
            ErrorBody {
                error: "bad_limit".into(),
                detail: "limit: invalid digit found in string".into(),
            },
        ),
        check(
            "health",
            Health {
                status: "ok".into(),
            },
        ),
        check(
            "readyz-ready",
            Readiness {
                ready: true,
                leader_id: Some(2),
                last_applied_index: Some(1199),
                reason: None,
            },
        ),
        check(
            "readyz-not-ready",
            Readiness {
                ready: false,
                leader_id: None,
                last_applied_index: None,
                reason: Some("no leader is known (election in progress or no quorum)".into()),
            },
        ),
        check("status", status()),
        check("cluster-health", cluster_health()),
        check(
            "cluster-health-query",
            ClusterHealthQuery { max_lag: Some(50) },
        ),
        check(
            "cluster-init-request",
            InitRequest {
                nodes: vec![NodeSpec {
                    id: 1,
                    site: "site-a".into(),
                    raft_addr: "10.0.1.5:7001".into(),
                    api_addr: "10.0.1.5:8001".into(),
                }],
            },
        ),
        check(
            "cluster-init",
            Initialized {
                initialized: true,
                voters: vec![1, 2, 3],
            },
        ),
        check(
            "cluster-learners-request",
            NodeSpec {
                id: 4,
                site: "site-d".into(),
                raft_addr: "10.0.1.8:7001".into(),
                api_addr: "10.0.1.8:8001".into(),
            },
        ),
        check("cluster-learners", LearnerAdded { learner: 4 }),
        check("force-query", ForceQuery { force: true }),
        check(
            "cluster-voters-request",
            VotersRequest { ids: vec![1, 2, 4] },
        ),
        check(
            "cluster-voters",
            VotersChanged {
                voters: vec![1, 2, 4],
            },
        ),
        check("cluster-nodes-delete", NodeRemoved { removed: 3 }),
        check("cluster-leader-request", LeaderRequest { id: 2 }),
        check(
            "cluster-leader",
            LeaderHandedOver {
                leader: 2,
                took_ms: 340,
            },
        ),
        check(
            "read-query",
            ReadQuery {
                consistency: Some(Consistency::Local),
            },
        ),
        check(
            "cells-query",
            CellsQuery {
                consistency: Some(Consistency::Leader),
                site: Some("North Hill".into()),
                limit: Some(10),
            },
        ),
        check(
            "relations-query",
            RelationsQuery {
                consistency: Some(Consistency::Linearizable),
                source: Some("S1-1".into()),
                limit: Some(10),
            },
        ),
        check(
            "digest",
            Digest {
                applied_index: 1199,
                applied_term: 7,
                digest: "00c0ffee12345678".into(),
                cells: 900,
                relations: 7200,
                history_records: 55,
            },
        ),
        check(
            "changeset-request",
            ChangeSetRequest {
                origin: OriginSpec {
                    function: "operator".into(),
                    node: None,
                },
                reason: "tilt down to cut overshoot".into(),
                read_set: vec![ReadVersion {
                    entity: "cell/S00001-1".into(),
                    version: 3,
                }],
                writes: vec![
                    WriteSpec {
                        entity: "cell/S00001-1".into(),
                        param: "electrical_tilt".into(),
                        value: json!(45),
                    },
                    WriteSpec {
                        entity: "relation/S00001-1/S00002-1".into(),
                        param: "ho_allowed".into(),
                        value: json!(false),
                    },
                ],
                proposed_at_ms: Some(1_764_000_000_000),
            },
        ),
        check("changeset-query", ProposeQuery { dry_run: true }),
        check(
            "changeset-applied",
            ChangeSetAnswer {
                outcome: Outcome::Applied {
                    index: Some(1200),
                    versions: BTreeMap::from([("cell/S00001-1".into(), 4)]),
                },
                dry_run: false,
                trial: None,
            },
        ),
        check(
            "changeset-dry-run-applied",
            ChangeSetAnswer {
                outcome: Outcome::Applied {
                    index: None,
                    versions: BTreeMap::from([("cell/S00001-1".into(), 4)]),
                },
                dry_run: true,
                trial: None,
            },
        ),
        check(
            "changeset-conflict",
            ChangeSetAnswer {
                outcome: Outcome::Conflict {
                    current: BTreeMap::from([
                        ("cell/S00001-1".into(), Some(5)),
                        ("relation/S00001-1/S00002-1".into(), None),
                    ]),
                },
                dry_run: false,
                trial: None,
            },
        ),
        check(
            "changeset-rejected",
            ChangeSetAnswer {
                outcome: Outcome::Rejected {
                    reason: "electrical_tilt was changed by mobility_robustness 3 min ago".into(),
                },
                dry_run: false,
                trial: None,
            },
        ),
        check(
            "changeset-invalid",
            ChangeSetAnswer {
                outcome: Outcome::Invalid {
                    reason: "electrical_tilt moves at most 10 per change set".into(),
                },
                dry_run: false,
                trial: None,
            },
        ),
        check(
            "changeset-pending",
            ChangeSetAnswer {
                outcome: Outcome::Pending { id: 1207 },
                dry_run: false,
                trial: None,
            },
        ),
        check(
            "history-query",
            HistoryQuery {
                limit: Some(20),
                before: Some("1200.3".into()),
                consistency: None,
                ..Default::default()
            },
        ),
        check(
            "history-query-filtered",
            HistoryQuery {
                limit: Some(20),
                cell: Some("S00012-2".into()),
                function: Some("load_balancing".into()),
                outcome: Some("rejected".into()),
                since_ms: Some(1_764_000_000_000),
                ..Default::default()
            },
        ),
        check(
            "history",
            vec![HistoryRecord {
                index: 1200,
                log_time_ms: 1_764_000_000_100,
                proposed_at_ms: 1_764_000_000_000,
                origin: Origin {
                    node: 2,
                    function: "load_balancing".into(),
                },
                reason: "offload S00001-1".into(),
                writes: vec![
                    Written {
                        entity: "relation/S00001-1/S00002-1".into(),
                        param: "cio_db".into(),
                        value: ParamValue::Int(2),
                    },
                    Written {
                        entity: "cell/S00001-1".into(),
                        param: "admin_state".into(),
                        value: ParamValue::Text("locked".into()),
                    },
                ],
                outcome: Outcome::Applied {
                    index: Some(1200),
                    versions: BTreeMap::from([("relation/S00001-1/S00002-1".into(), 8)]),
                },
                cursor: "1200.0".into(),
            }],
        ),
        check(
            "import-query",
            ImportQuery {
                dry_run: true,
                reason: Some("quarterly planning".into()),
            },
        ),
        check(
            "import-dry-run",
            ImportAnswer::DryRun(ImportDryRun {
                dry_run: true,
                valid: true,
                would_change: Some(import_changes(true)),
                reason: None,
            }),
        ),
        check(
            "import-dry-run-refused",
            ImportAnswer::DryRun(ImportDryRun {
                dry_run: true,
                valid: false,
                would_change: None,
                reason: Some("cell S9-1 names unknown site S9".into()),
            }),
        ),
        check(
            "import",
            ImportAnswer::Imported(Imported {
                imported: ImportCounts {
                    sites: 3,
                    cells: 9,
                    relations: 9,
                },
                index: 1300,
                changed: Some(import_changes(false)),
            }),
        ),
        check(
            "import-format-1",
            ImportAnswer::Imported(Imported {
                imported: ImportCounts {
                    sites: 3,
                    cells: 9,
                    relations: 9,
                },
                index: 1300,
                changed: None,
            }),
        ),
        check(
            "snapshot",
            SnapshotStarted {
                snapshot: "started".into(),
                up_to_index: 1199,
            },
        ),
        check("antennas-query", AntennasQuery { limit: Some(0) }),
        check(
            "antennas",
            Antennas {
                site: "site-a".into(),
                antenna_addresses: vec!["127.0.0.1:9100".into()],
                summary: AntennasSummary {
                    sessions: 2,
                    connections: None,
                    connected: Some(2),
                    in_sync: Some(1),
                    diverged: Some(0),
                    reports: Some(40),
                    counter_values: Some(4000),
                    late_reports: Some(0),
                    close_to_ack_ms: Some(Latencies {
                        count: 3,
                        p50: 12.5,
                        p99: 30.0,
                        max: Some(30.0),
                    }),
                    received_to_ack_ms: None,
                    awaiting_acks: Some(1),
                },
                sessions: vec![AntennaSession {
                    cell: "S1-1".into(),
                    connected: true,
                    connects: 1,
                    failures: 0,
                    last_error: None,
                    reports: 20,
                    last_period_end_ms: 1_764_000_000_000,
                    lag_ms: Some(800),
                    pushes: 2,
                    acks: 2,
                    diverged: false,
                    in_sync: true,
                    acked_index: 1199,
                    epoch: None,
                    fenced: None,
                    station: None,
                }],
                pm_dir: None,
                control: None,
            },
        ),
        check(
            "antennas-control",
            Antennas {
                site: "site-b".into(),
                summary: AntennasSummary {
                    sessions: 6,
                    connections: Some(1),
                    ..Default::default()
                },
                sessions: vec![AntennaSession {
                    cell: "S7-1".into(),
                    station: Some("S7".into()),
                    connected: false,
                    last_error: Some("the antenna refused: stale epoch (code 4)".into()),
                    epoch: Some(0),
                    fenced: Some("epoch 0 is older than epoch 412, which this antenna has seen".into()),
                    ..Default::default()
                }],
                control: Some(AntennaControl {
                    lease: false,
                    lease_lost: Some("no leader heard for 2.1 s".into()),
                    cell_sites: 40,
                    taken_over: 20,
                    fenced_sessions: 1,
                }),
                ..Default::default()
            },
        ),
        check(
            "control",
            ControlSummary {
                sites: [
                    ("site-a".to_string(), SiteControl { cell_sites: 60, taken_over: 20 }),
                    ("site-c".to_string(), SiteControl { cell_sites: 40, taken_over: 0 }),
                ]
                .into(),
                away_from_home: 20,
                moved: vec![MovedCellSite {
                    cell_site: "S00007".into(),
                    home: "site-b".into(),
                    controller: "site-a".into(),
                    epoch: 412,
                    since_ms: 1_764_000_000_000,
                }],
            },
        ),
        check("control-hand-back-request", HandBackRequest { site: "site-b".into() }),
        check(
            "control-hand-back",
            HandBackOutcome {
                moved: 19,
                refused: vec!["S00007: cell site S00007 is controlled by site-b at epoch 415, not by site-a at epoch 412".into()],
            },
        ),
        check("image-sites", vec![site()]),
        check("image-cell", cell()),
        check("image-relations", vec![relation()]),
        check(
            "import-request",
            ImageImport {
                sites: vec![site()],
                cells: vec![cell()],
                relations: vec![relation()],
                policy: Some(Policy::default()),
            },
        ),
        check("son-policy", son_policy()),
        // The document of command format 5 (what `GET /son/tuning` answered before the
        // outage, compensation and energy-saving sections), and the whole one.
        check("son-tuning", son_tuning().v1()),
        check("son-tuning-availability", son_tuning_availability()),
        check(
            "son-pending",
            vec![PendingProposal {
                id: 1207,
                recorded_at_ms: 1_764_000_000_000,
                expires_at_ms: 1_764_086_400_000,
                origin: Origin {
                    node: 2,
                    function: "pci_conflict".into(),
                },
                reason: "PCI 12 collides with S00002-1".into(),
                writes: vec![Written {
                    entity: "cell/S00001-1".into(),
                    param: "pci".into(),
                    value: ParamValue::Int(31),
                }],
            }],
        ),
        check(
            "son-decision-request",
            DecisionRequest {
                note: "checked by alice".into(),
            },
        ),
        check(
            "son-decision",
            DecisionAnswer {
                id: 1207,
                outcome: Outcome::Applied {
                    index: Some(1300),
                    versions: [("cell/S00001-1".to_string(), 5)].into(),
                },
            },
        ),
        check("son-trials", son_trials()),
        check("son-trials-query", TrialsQuery { limit: Some(50) }),
        check(
            "antennas-none",
            Antennas {
                site: "site-a".into(),
                ..Default::default()
            },
        ),
        check(
            "antennas-pm-dir",
            Antennas {
                site: "site-a".into(),
                pm_dir: Some(PmDirStatus {
                    dir: "/var/lib/pm/site-a".into(),
                    files_ingested: 12,
                    newest_ingested: Some("A20261202.2200+0000-2215+0000_site-a.xml".into()),
                    reports: 1200,
                    foreign_reports: 0,
                    late_reports: 0,
                    bad_files: vec![BadPmFile {
                        file: "A20261202.2145+0000-2200+0000_site-a.xml".into(),
                        error: "A20261202.2145+0000-2200+0000_site-a.xml line 31: ManagedElement=S00001,EUtranCellFDD=S00001-1: RRU.PrbUsedDl = `-1` is not a non-negative whole number".into(),
                    }],
                }),
                ..Default::default()
            },
        ),
        check(
            "kpi-summaries",
            vec![KpiSummary {
                cell: "S1-1".into(),
                period_end_ms: 1_764_000_000_000,
                prb_dl_permille: 420,
                rrc_conn_mean: 37,
                thp_dl_kbps: 21_000,
                ho_att: 120,
                ho_succ: 118,
            }],
        ),
        check(
            "watch-query",
            WatchQuery {
                from_index: Some(1200),
                kpis: Some(false),
            },
        ),
        check(
            "watch-gap",
            WatchGap {
                asked_from: "10.0".into(),
                oldest_held: 5000,
                detail: "this node holds the history from log entry 5000 on".into(),
            },
        ),
        check(
            "watch-caught-up",
            WatchCaughtUp {
                node: 2,
                applied_index: 1234,
            },
        ),
        check(
            "watch-cluster",
            WatchCluster {
                node: 2,
                role: Role::Follower,
                term: 7,
                leader_id: Some(1),
                voters: vec![1, 2, 3],
                learners: vec![4],
            },
        ),
        check(
            "watch-kpis",
            WatchKpis {
                fields: KPI_FIELDS.iter().map(|f| f.to_string()).collect(),
                cells: BTreeMap::from([(
                    "S1-1".to_string(),
                    vec![1_764_000_000_000, 420, 37, 21_000, 120, 118],
                )]),
            },
        ),
        check(
            "watch-closed",
            WatchClosed {
                reason: "slow_client".into(),
                detail: "the client left 256 events untaken for 10 s".into(),
                resume_after: Some("1234.2".into()),
            },
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn son_tuning() -> Tuning {
    let mut tuning = Tuning::default();
    tuning.mobility_robustness.max_late_permille = 40;
    tuning.load_balancing.high_pct = 85;
    tuning.anr.idle_prune_ms = 3 * 24 * 60 * 60 * 1000;
    tuning.pci.reserved = [0, 1, 2].into();
    tuning
}

fn son_tuning_availability() -> Tuning {
    let mut tuning = son_tuning();
    tuning.outage.hard_periods = 3;
    tuning.outage_compensation.withdraw_load_pct = 90;
    tuning.energy_saving.sleep_ceiling_pct = 40;
    tuning
}

#[test]
fn a_tuning_without_the_availability_sections_reads_with_them_at_their_defaults() {
    let text = std::fs::read_to_string(fixtures().join("son-tuning.json")).expect("fixture");
    let tuning: Tuning = serde_json::from_str(&text).expect("reads as today's tuning");
    assert_eq!(tuning, Tuning::from(son_tuning().v1()));
    assert!(!tuning.needs_format_9());
}

fn son_policy() -> SonPolicy {
    let mut policy = SonPolicy::default();
    policy.functions.insert(
        Function::PciConflict,
        Controls {
            mode: Mode::OpenLoop,
            exclude: Exclusions::default(),
            window: Some(Window {
                from_minute: 60,
                to_minute: 300,
            }),
        },
    );
    let mut exclude = Exclusions::default();
    exclude.cells.insert("S00001-1".into());
    exclude.sites.insert("S00002".into());
    exclude.regions.insert("north".into());
    policy.functions.insert(
        Function::LoadBalancing,
        Controls {
            exclude,
            ..Controls::default()
        },
    );
    policy
}

fn son_trials() -> Trials {
    let trial = |state: &str| Trial {
        index: 1300,
        function: "mobility_robustness".into(),
        applied_at_ms: 1_764_000_000_000,
        cells: vec!["S00001-1".into()],
        writes: vec![TrialWrite {
            entity: "cell/S00001-1".into(),
            param: "hysteresis".into(),
            before: ParamValue::Int(4),
            after: ParamValue::Int(6),
        }],
        removed: vec![],
        state: state.into(),
        reason: None,
        restored: None,
        kpis: vec![],
        closed_at_ms: None,
    };
    Trials {
        open: vec![trial("open")],
        closed: vec![Trial {
            reason: Some("ho_success_permille 990.0 -> 920.0 over cells S00001-1".into()),
            restored: Some(1),
            kpis: vec![KpiDelta {
                kpi: "ho_success_permille".into(),
                before: 990.0,
                after: 920.0,
            }],
            closed_at_ms: Some(1_764_000_003_000),
            removed: vec!["relation/S00001-1/S00002-1".into()],
            ..trial("undone")
        }],
        holds: vec![Hold {
            cell: "S00001-1".into(),
            function: "mobility_robustness".into(),
            until_ms: 1_764_021_603_000,
        }],
    }
}

#[test]
fn an_answer_of_a_newer_release_with_fields_unknown_here_still_reads() {
    let mut v = serde_json::to_value(status()).unwrap();
    v["a_field_of_a_later_release"] = json!({"nested": true});
    v["role"] = json!("observer");
    let read: Status = serde_json::from_value(v).unwrap();
    assert_eq!(read.role, Role::Unknown);
    assert_eq!(read.voters, [1, 2, 3]);
}

#[test]
fn a_status_of_release_0_1_0_without_now_ms_still_reads() {
    let mut v = serde_json::to_value(status()).unwrap();
    v.as_object_mut().unwrap().remove("now_ms");
    v.as_object_mut().unwrap().remove("checkpoint_pending");
    let read: Status = serde_json::from_value(v).unwrap();
    assert_eq!(read.now_ms, None);
    assert_eq!(read.checkpoint_pending, None);
}

#[test]
fn a_request_with_a_misspelt_field_is_refused() {
    let err = serde_json::from_value::<LeaderRequest>(json!({"id": 2, "force": true}));
    assert!(err.is_err());
}
