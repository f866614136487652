//! Snapshot files: round trip, damage detection, restore of a state machine that fell behind.

use openraft::storage::RaftStateMachine;
use sonraft_storage::snapshot::{decode_snapshot, encode_snapshot};
use sonraft_storage::{Store, read};

mod common;

#[tokio::test]
async fn a_snapshot_round_trips_and_damage_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    common::apply_demo(&mut store, 50).await;
    let snap = common::build_snapshot(&mut store).await;
    let path = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = std::fs::read(&path).unwrap();
    let (meta, body) = decode_snapshot(&bytes[..]).unwrap();
    assert_eq!(meta, snap.meta);
    assert_eq!(body.image, read(store.reader.state()).image);

    let reencoded = encode_snapshot(Vec::new(), &meta, &body).unwrap();
    assert_eq!(decode_snapshot(&reencoded[..]).unwrap().1, body);

    for at in [0, 9, bytes.len() / 2, bytes.len() - 1] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5a;
        assert!(
            decode_snapshot(&damaged[..]).is_err(),
            "a flipped byte at {at} went unnoticed"
        );
    }
    assert!(
        decode_snapshot(&bytes[..bytes.len() - 2]).is_err(),
        "truncation went unnoticed"
    );
}

#[tokio::test]
async fn a_state_machine_behind_its_snapshot_is_restored_from_it_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let mut store = Store::open(dir.path()).unwrap();
        common::apply_demo(&mut store, 20).await;
        common::build_snapshot(&mut store).await;
        let image = read(store.reader.state()).image.clone();
        store.close().unwrap();
        image
    };
    // Simulate sled having lost the state machine's unsynced writes.
    common::with_raw_sled(dir.path(), |db| {
        db.drop_tree("sm").unwrap();
    });
    let store = Store::open(dir.path()).unwrap();
    let state = read(store.reader.state()).clone();
    assert_eq!(state.image, expected);
    assert_eq!(state.last_applied.map(|l| l.index), Some(2));
}

/// An import staged in parts survives a restart and travels in snapshots: a node that restarted
/// or installed a snapshot between the parts applies the last part like the others.
#[tokio::test]
async fn an_import_staged_in_parts_survives_a_restart_and_a_snapshot() {
    use sonraft_raft::command::{ImageImport, Response};
    use sonraft_raft::model::import::ImportOutcome;
    let part = |n: u32, last: bool, data: ImageImport| import_part(42, n, last, data);
    let cell: sonraft_raft::model::Cell = serde_json::from_value(serde_json::json!({
        "id": "N-1", "site": "S1", "rat": "NR", "pci": 900, "arfcn": 632628, "azimuth": 0
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    common::apply_demo(&mut store, 4).await;
    let first = ImageImport {
        cells: vec![cell],
        ..Default::default()
    };
    store
        .sm
        .apply([common::entry(3, &part(0, false, first))])
        .await
        .unwrap();
    assert!(read(store.reader.state()).image.staged.is_some());
    assert!(!read(store.reader.state()).image.cells.contains_key("N-1"));
    store.close().unwrap();

    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(
        read(store.reader.state())
            .image
            .staged
            .as_ref()
            .map(|s| s.parts),
        Some(1),
        "kept across a restart"
    );
    let snap = common::build_snapshot(&mut store).await;
    let (_other, mut restored) = common::install_fresh(snap).await;
    for s in [&mut store, &mut restored] {
        let r =
            s.sm.apply([common::entry(4, &part(1, true, ImageImport::default()))])
                .await
                .unwrap();
        assert!(
            matches!(r[0], Response::Import(ImportOutcome::Applied { .. })),
            "{:?}",
            r[0]
        );
    }
    let (a, b) = (
        read(store.reader.state()).image.clone(),
        read(restored.reader.state()).image.clone(),
    );
    assert_eq!(a, b);
    assert_eq!(
        a.cells["N-1"].version,
        sonraft_raft::command::VERSION_SPAN * 4,
        "created at the span of its log index"
    );
}

/// The SON controls and a proposal waiting for an operator survive a restart and travel in
/// snapshots (format 3): a node that restarted or installed a snapshot decides like the others.
#[tokio::test]
async fn son_controls_and_pending_proposals_survive_a_restart_and_a_snapshot() {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    use sonraft_raft::Entry;
    use sonraft_raft::changeset::{ChangeSet, Function, Origin, Outcome, ReadVersion, Write};
    use sonraft_raft::command::{Command, Envelope, Response};
    use sonraft_raft::model::{EntityRef, Param, Value};
    use sonraft_raft::son::{Controls, Decision, Mode, SonPolicy};
    use sonraft_storage::snapshot::{SnapshotBody, decode_snapshot, encode_snapshot};
    // Format-4 entries, as a cluster whose voters all understand format 4 writes them.
    let entry4 = |index: u64, command: &Command| Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Envelope::in_format(command, 1_000 + index, 4).unwrap()),
    };
    let mut policy = SonPolicy::default();
    policy.functions.insert(
        Function::LoadBalancing,
        Controls {
            mode: Mode::OpenLoop,
            ..Controls::default()
        },
    );
    let cs = ChangeSet {
        origin: Origin {
            node: 1,
            function: Function::LoadBalancing,
        },
        reason: "move load".into(),
        read_set: vec![ReadVersion {
            entity: EntityRef::relation("C0", "C1"),
            version: 1,
        }],
        writes: vec![Write {
            entity: EntityRef::relation("C0", "C1"),
            param: Param::CioDb,
            value: Value::Int(2),
        }],
        proposed_at_ms: 0,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    common::apply_demo(&mut store, 4).await;
    let r = store
        .sm
        .apply([
            entry4(3, &Command::SonPolicy(policy.clone())),
            entry4(4, &Command::ChangeSet(cs)),
        ])
        .await
        .unwrap();
    let Response::ChangeSet(Outcome::Pending { id }) = r[1] else {
        panic!("not pending: {:?}", r[1])
    };
    store.close().unwrap();

    let mut store = Store::open(dir.path()).unwrap();
    {
        let state = read(store.reader.state());
        assert_eq!(state.image.son.policy, policy, "kept across a restart");
        assert!(state.image.son.pending.contains_key(&id));
    }
    let snap = common::build_snapshot(&mut store).await;
    let (_other, mut restored) = common::install_fresh(snap).await;
    let approve = Command::Decide(Decision {
        id,
        approve: true,
        note: "ok".into(),
    });
    for s in [&mut store, &mut restored] {
        let r = s.sm.apply([entry4(5, &approve)]).await.unwrap();
        assert!(
            matches!(r[0], Response::ChangeSet(Outcome::Applied { .. })),
            "{:?}",
            r[0]
        );
    }
    let (a, b) = (
        read(store.reader.state()).image.clone(),
        read(restored.reader.state()).image.clone(),
    );
    assert_eq!(a, b);
    assert_eq!(a.son, b.son);
    assert!(a.son.pending.is_empty());
    assert_eq!(a.relations[&("C0".into(), "C1".into())].cio_db, 2);
    assert!(
        a.son.trials.contains_key(&5),
        "the approved change is a trial"
    );
    // Each item under its own key: the open trial and the gone pending one survive a restart.
    store.close().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(read(store.reader.state()).image.son, a.son);
    store.close().unwrap();

    // A body without SON controls is written in format 2, which the previous release reads.
    let plain = SnapshotBody {
        image: sonraft_raft::model::image::NetworkImage::default(),
        history: vec![],
    };
    let meta = sonraft_raft::SnapshotMeta::default();
    let bytes = encode_snapshot(Vec::new(), &meta, &plain).unwrap();
    assert_eq!(u16::from_be_bytes([bytes[8], bytes[9]]), 2);
    assert_eq!(decode_snapshot(&bytes[..]).unwrap().1, plain);
}

/// An entry at `index` carrying `command` in an entry of command format `format`.
fn tuning_entry(
    index: u64,
    format: u16,
    command: &sonraft_raft::command::Command,
) -> sonraft_raft::Entry {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    sonraft_raft::Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(
            sonraft_raft::command::Envelope::in_format(command, 1_000 + index, format).unwrap(),
        ),
    }
}

/// Sets `tuning` with `command` in an entry of `format` on a fresh store of the demo image,
/// checks that it is kept across a restart and a snapshot of `snapshot_format` (and its
/// install), and returns the store with its directory.
async fn tuning_round_trip(
    command: sonraft_raft::command::Command,
    format: u16,
    snapshot_format: u16,
    tuning: &sonraft_raft::son::Tuning,
) -> (Store, tempfile::TempDir) {
    use sonraft_raft::command::Response;
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    common::apply_demo(&mut store, 4).await;
    let r = store
        .sm
        .apply([tuning_entry(3, format, &command)])
        .await
        .unwrap();
    assert_eq!(r[0], Response::SonTuning(Ok(())));
    store.close().unwrap();

    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(
        &read(store.reader.state()).image.son.tuning,
        tuning,
        "kept across a restart"
    );
    let body = common::snapshot_round_trip(&mut store, dir.path(), snapshot_format, |r, when| {
        assert_eq!(&read(r.state()).image.son.tuning, tuning, "{when}");
    })
    .await;
    assert_eq!(&body.image.son.tuning, tuning);
    (store, dir)
}

#[tokio::test]
async fn the_son_tuning_survives_a_restart_and_a_snapshot_of_format_4() {
    use sonraft_raft::command::Command;
    use sonraft_raft::son::Tuning;
    let mut tuning = Tuning::default();
    tuning.load_balancing.high_pct = 85;
    tuning.pci.reserved = [0, 1007].into();
    let (store, _dir) = tuning_round_trip(Command::SonTuning(tuning.v1()), 5, 4, &tuning).await;
    store.close().unwrap();
}

#[tokio::test]
async fn the_availability_tuning_survives_a_restart_and_a_snapshot_of_format_8_and_a_format_5_tuning_clears_it()
 {
    use sonraft_raft::command::{Command, Response};
    use sonraft_raft::son::{AvailabilityTuning, Tuning};
    let mut tuning = Tuning::default();
    tuning.pci.reserved = [0, 1007].into();
    tuning.outage.hard_periods = 3;
    tuning.energy_saving.wake_ceiling_pct = 70;
    let (mut store, dir) =
        tuning_round_trip(Command::SonTuningV2(tuning.clone()), 9, 8, &tuning).await;

    // A format-5 tuning sets the sections it carries and the others back to their defaults,
    // in memory and on disk.
    let r = store
        .sm
        .apply([tuning_entry(4, 9, &Command::SonTuning(tuning.v1()))])
        .await
        .unwrap();
    assert_eq!(r[0], Response::SonTuning(Ok(())));
    store.close().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let after = read(store.reader.state()).image.son.tuning.clone();
    assert_eq!(after.v1(), tuning.v1());
    assert_eq!(after.availability(), AvailabilityTuning::default());
    store.close().unwrap();
}

#[tokio::test]
async fn control_moves_survive_a_restart_and_a_snapshot_of_format_7() {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    use sonraft_raft::Entry;
    use sonraft_raft::command::{Command, Envelope, Response};
    use sonraft_raft::model::control::{ControlMove, ControlMoves};
    let entry = |index: u64, command: &Command| Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Envelope::new(command, 1_000 + index).unwrap()),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    common::apply_demo(&mut store, 4).await;
    let (cell_site, home) = {
        let state = read(store.reader.state());
        let site = state.image.sites.values().next().unwrap();
        (site.id.clone(), site.region.clone())
    };
    let moves = ControlMoves {
        moves: vec![ControlMove {
            cell_site: cell_site.clone(),
            from: home.clone(),
            epoch: 0,
            to: "elsewhere".into(),
        }],
        reason: "test".into(),
    };
    let r = store
        .sm
        .apply([entry(5, &Command::Control(moves))])
        .await
        .unwrap();
    assert_eq!(r[0], Response::Control(vec![Ok(5)]));
    store.close().unwrap();

    let mut store = Store::open(dir.path()).unwrap();
    let controller = |s: &sonraft_storage::StoreReader| {
        read(s.state())
            .image
            .controller(&cell_site)
            .map(|(site, epoch)| (site.to_string(), epoch))
    };
    assert_eq!(
        controller(&store.reader),
        Some(("elsewhere".into(), 5)),
        "kept across a restart"
    );
    let body = common::snapshot_round_trip(&mut store, dir.path(), 7, |r, when| {
        let state = read(r.state());
        let got = state
            .image
            .controller(&cell_site)
            .map(|(s, e)| (s.to_string(), e));
        assert_eq!(got, Some(("elsewhere".into(), 5)), "{when}");
    })
    .await;
    assert_eq!(body.image.control.len(), 1);
}

/// Part `n` of import `import_id`.
fn import_part(
    import_id: u64,
    n: u32,
    last: bool,
    data: sonraft_raft::command::ImageImport,
) -> sonraft_raft::command::Command {
    use sonraft_raft::changeset::{Function, Origin};
    use sonraft_raft::command::Command;
    use sonraft_raft::model::import::ImportPart;
    Command::ImportPart(ImportPart {
        import_id,
        part: n,
        last,
        origin: Origin {
            node: 1,
            function: Function::Operator,
        },
        reason: "staged".into(),
        data,
    })
}

/// Part `n` of import `import_id` with a new cell of each id.
fn cells_part(import_id: u64, n: u32, last: bool, ids: &[&str]) -> sonraft_raft::command::Command {
    let cells = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            serde_json::from_value(serde_json::json!({
                "id": id, "site": "S1", "rat": "NR", "pci": 800 + i, "arfcn": 632628, "azimuth": 0
            }))
            .unwrap()
        })
        .collect();
    import_part(
        import_id,
        n,
        last,
        sonraft_raft::command::ImageImport {
            cells,
            ..Default::default()
        },
    )
}

/// The staged parts in tree `sm`: each `m/staged/<n>` value's cell ids, by key.
fn stored_parts(dir: &std::path::Path) -> Vec<Vec<String>> {
    use sonraft_raft::model::import::StagedPart;
    common::with_raw_sled(dir, |db| {
        let sm = db.open_tree("sm").unwrap();
        assert!(
            sm.get(b"m/staged").unwrap().is_none(),
            "the whole-import key of format 9"
        );
        sm.scan_prefix(b"m/staged/")
            .map(|kv| {
                let (_, v) = kv.unwrap();
                let part: StagedPart = sonraft_raft::codec::decode(&v).unwrap();
                part.data
                    .cells
                    .into_iter()
                    .map(|c| c.id.to_string())
                    .collect()
            })
            .collect()
    })
}

fn staged_cells(store: &Store) -> Option<(u64, u32, Vec<String>)> {
    read(store.reader.state()).image.staged.as_ref().map(|s| {
        (
            s.import_id,
            s.parts,
            s.cells().map(|c| c.id.to_string()).collect(),
        )
    })
}

/// Staging part n writes part n only (data format 10), not the whole import again: the store
/// holds one value per part, a new import's first part removes the values of an unfinished
/// longer one, and the last part removes them all.
#[tokio::test]
async fn an_import_is_stored_one_value_per_staged_part() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    common::apply_demo(&mut store, 4).await;
    stage(
        &mut store,
        &[
            (3, cells_part(42, 0, false, &["N-0"])),
            (4, cells_part(42, 1, false, &["N-1"])),
            (5, cells_part(42, 2, false, &["N-2"])),
        ],
    )
    .await;
    stage(&mut store, &[(6, cells_part(42, 3, false, &["N-3"]))]).await;
    store.close().unwrap();
    assert_eq!(
        stored_parts(dir.path()),
        [["N-0"], ["N-1"], ["N-2"], ["N-3"]]
    );
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(
        staged_cells(&store),
        Some((42, 4, ids(&["N-0", "N-1", "N-2", "N-3"])))
    );

    // A new import replaces the unfinished one; its parts land in one batch.
    stage(
        &mut store,
        &[
            (7, cells_part(43, 0, false, &["M-0"])),
            (8, cells_part(43, 1, false, &["M-1"])),
        ],
    )
    .await;
    store.close().unwrap();
    assert_eq!(stored_parts(dir.path()), [["M-0"], ["M-1"]]);
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(staged_cells(&store), Some((43, 2, ids(&["M-0", "M-1"]))));

    // From a snapshot the staged parts are one value; a later part goes in beside it.
    let snap = common::build_snapshot(&mut store).await;
    let (other, mut restored) = common::install_fresh(snap).await;
    stage(&mut restored, &[(9, cells_part(43, 2, false, &["M-2"]))]).await;
    restored.close().unwrap();
    assert_eq!(
        stored_parts(other.path()),
        [ids(&["M-0", "M-1"]), ids(&["M-2"])]
    );
    let restored = Store::open(other.path()).unwrap();
    assert_eq!(
        staged_cells(&restored),
        Some((43, 3, ids(&["M-0", "M-1", "M-2"])))
    );

    for (mut s, d, index, last) in [(store, dir.path(), 9, 2), (restored, other.path(), 10, 3)] {
        stage(&mut s, &[(index, cells_part(43, last, true, &["M-3"]))]).await;
        s.close().unwrap();
        assert!(
            stored_parts(d).is_empty(),
            "the last part removes every part"
        );
    }
    for d in [dir.path(), other.path()] {
        let store = Store::open(d).unwrap();
        assert_eq!(staged_cells(&store), None);
        let image = read(store.reader.state()).image.clone();
        for id in ["M-0", "M-1", "M-3"] {
            assert!(image.cells.contains_key(id), "{id} imported");
        }
        assert!(
            !image.cells.contains_key("N-0"),
            "the replaced import is dropped"
        );
    }
}

/// Applies import parts, each at its log index.
async fn stage(store: &mut Store, parts: &[(u64, sonraft_raft::command::Command)]) {
    store
        .sm
        .apply(
            parts
                .iter()
                .map(|(i, c)| common::entry(*i, c))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// A data directory of format 9 keeps a staged import whole in `m/staged`; opened, it is
/// migrated to one value and the import carries on from its next part.
#[tokio::test]
async fn a_staged_import_of_data_format_9_is_migrated_and_carries_on() {
    use sonraft_raft::command::Response;
    use sonraft_raft::model::import::{ImportOutcome, StagedImport};
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    common::apply_demo(&mut store, 4).await;
    store
        .sm
        .apply([
            common::entry(3, &cells_part(42, 0, false, &["N-0"])),
            common::entry(4, &cells_part(42, 1, false, &["N-1"])),
        ])
        .await
        .unwrap();
    let staged: StagedImport = read(store.reader.state()).image.staged.clone().unwrap();
    store.close().unwrap();
    // Rewrite it as release 9 left it.
    common::with_raw_sled(dir.path(), |db| {
        let sm = db.open_tree("sm").unwrap();
        for k in sm.scan_prefix(b"m/staged/").keys() {
            sm.remove(k.unwrap()).unwrap();
        }
        sm.insert(b"m/staged", sonraft_raft::codec::encode(&staged).unwrap())
            .unwrap();
    });
    std::fs::write(dir.path().join("FORMAT"), "sonraft data format 9\n").unwrap();

    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("FORMAT")).unwrap(),
        "sonraft data format 10\n"
    );
    assert_eq!(
        read(store.reader.state()).image.staged.as_ref(),
        Some(&staged)
    );
    let r = store
        .sm
        .apply([common::entry(5, &cells_part(42, 2, true, &["N-2"]))])
        .await
        .unwrap();
    assert!(
        matches!(r[0], Response::Import(ImportOutcome::Applied { .. })),
        "{:?}",
        r[0]
    );
    store.close().unwrap();
    assert!(stored_parts(dir.path()).is_empty());
    let store = Store::open(dir.path()).unwrap();
    let image = read(store.reader.state()).image.clone();
    for id in ["N-0", "N-1", "N-2"] {
        assert!(image.cells.contains_key(id), "{id} imported");
    }
}

/// An image of tens of thousands of keys installs whole, and is whole after a restart.
#[tokio::test]
async fn a_snapshot_of_thirty_thousand_keys_installs_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    common::apply_demo(&mut store, 15_000).await;
    store
        .sm
        .apply([common::entry(3, &common::tilt_change("C7", 0, 45))])
        .await
        .unwrap();
    let expected = read(store.reader.state()).clone();
    let snap = common::build_snapshot(&mut store).await;
    let (other, installed) = common::install_fresh(snap).await;
    let state = read(installed.reader.state()).clone();
    assert_eq!(state.image, expected.image);
    assert_eq!(state.last_applied, expected.last_applied);
    installed.close().unwrap();
    let restarted = Store::open(other.path()).unwrap();
    let state = read(restarted.reader.state()).clone();
    assert_eq!(state.image, expected.image);
    assert_eq!(state.last_applied, expected.last_applied);
    assert_eq!(restarted.reader.history(10, None).unwrap().len(), 1);
}

/// A store of the demo network after 2,000 entries (kept while its directory is), its state,
/// and a snapshot of it.
async fn a_snapshot_of_the_demo() -> (
    tempfile::TempDir,
    Store,
    sonraft_storage::ImageState,
    openraft::Snapshot<sonraft_raft::TypeConfig>,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    common::apply_demo(&mut store, 2_000).await;
    let expected = read(store.reader.state()).clone();
    let snap = common::build_snapshot(&mut store).await;
    (dir, store, expected, snap)
}

/// A snapshot installs over what a store held before (nothing of it left, after a restart
/// too), written as a checkpoint is (marked torn, synced as it goes: the syncs are counted),
/// not as one sled batch: a batch of a national image's 9.4 million keys grew a learner to
/// 18 GB.
#[tokio::test]
async fn a_snapshot_installs_over_an_older_state_as_a_checkpoint() {
    let (_dir, store, expected, snap) = a_snapshot_of_the_demo().await;
    let other = tempfile::tempdir().unwrap();
    let mut older = Store::open(other.path()).unwrap();
    common::apply_demo(&mut older, 20).await;
    // A cell the snapshot's image lacks, and a staged part of an import it knows nothing of.
    older
        .sm
        .apply([
            common::entry(3, &cells_part(7, 0, true, &["STALE-1"])),
            common::entry(4, &cells_part(8, 0, false, &["STAGED-1"])),
        ])
        .await
        .unwrap();
    let held = read(older.reader.state()).clone();
    assert!(held.image.cells.contains_key("STALE-1") && held.image.staged.is_some());
    let syncs = || {
        older
            .reader
            .sync_stats()
            .checkpoint_syncs
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = syncs();
    older
        .sm
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    let state = read(older.reader.state()).clone();
    assert_eq!(state.image, expected.image);
    // Written behind the install, by the checkpoint writer.
    older.reader.sync().unwrap();
    assert!(syncs() - before >= 2, "{} syncs", syncs() - before);
    older.close().unwrap();
    let restarted = Store::open(other.path()).unwrap();
    let state = read(restarted.reader.state()).clone();
    assert_eq!(state.image, expected.image);
    assert_eq!(state.last_applied, expected.last_applied);
    assert!(state.image.staged.is_none());
    assert_eq!(
        restarted.reader.history(10, None).unwrap().len(),
        store.reader.history(10, None).unwrap().len(),
        "the older store's own history is gone"
    );
}

/// An install returns once the new state is in memory, without waiting for sled's copy (a
/// national image's took 50 s, the state locked throughout) nor for what the checkpoint writer
/// still had to write before it (here held at its sync; after a national import, a minute and
/// a half); a node that loses power before that copy is synced is restored from the installed
/// snapshot when it starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_returns_before_sled_holds_it_and_a_power_cut_meanwhile_restores_the_snapshot() {
    let (_dir, _store, expected, snap) = a_snapshot_of_the_demo().await;
    let other = tempfile::tempdir().unwrap();
    let mut older = Store::open(other.path()).unwrap();
    older.reader.sync_gate().hold();
    common::apply_demo(&mut older, 20).await;
    assert!(older.reader.checkpoint_pending() > 0);
    let reader = older.reader.clone();
    // On a task of its own: an install that waits for the held syncs blocks its thread.
    let install = tokio::spawn(async move {
        let r = older.sm.install_snapshot(&snap.meta, snap.snapshot).await;
        (older, r)
    });
    let Ok(done) = tokio::time::timeout(std::time::Duration::from_secs(30), install).await else {
        reader.sync_gate().open();
        panic!("the install waited for sled's syncs");
    };
    let (older, installed) = done.unwrap();
    installed.unwrap();
    let state = read(older.reader.state()).clone();
    assert_eq!(state.image, expected.image);
    assert_eq!(state.last_applied, expected.last_applied);

    // The power cut: nothing of the install's write to sled is synced.
    older.reader.sync_gate().cut();
    drop(reader);
    older.close().unwrap();
    let restarted = Store::open(other.path()).unwrap();
    let state = read(restarted.reader.state()).clone();
    assert_eq!(state.image, expected.image);
    assert_eq!(state.last_applied, expected.last_applied);
}

/// A capture (a snapshot's, a backup's) and the history's pages read the state's own copy of
/// the history, never sled's: with the checkpoint writer stuck behind (here its syncs held; after
/// a national import, a minute and a half of writing), they answer at once, with the change sets
/// applied meanwhile. A backup right after a national import waited 80 s for the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_and_the_history_do_not_wait_for_the_checkpoint_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    common::apply_demo(&mut store, 20).await;
    store.reader.sync().unwrap();
    store.reader.sync_gate().hold();
    for (n, index) in (3..13).enumerate() {
        let change = common::tilt_change("C1", 2 + n as u64, n as i64 % 5);
        store
            .sm
            .apply([common::entry(index, &change)])
            .await
            .unwrap();
    }
    assert!(
        store.reader.checkpoint_pending() > 0,
        "the change sets are not in sled yet"
    );
    let reader = store.reader.clone();
    let read = tokio::task::spawn_blocking(move || (reader.capture(), reader.history(100, None)));
    let Ok(done) = tokio::time::timeout(std::time::Duration::from_secs(30), read).await else {
        store.reader.sync_gate().open();
        panic!("the capture or the history waited for the checkpoint writer");
    };
    let (captured, page) = done.unwrap();
    let (meta, body) = captured.unwrap();
    assert_eq!(meta.last_log_id.map(|l| l.index), Some(12));
    let indexes: Vec<u64> = body.history.iter().map(|r| r.index).collect();
    assert_eq!(
        indexes,
        (3..13).collect::<Vec<_>>(),
        "each change set's record"
    );
    let page: Vec<u64> = page.unwrap().iter().map(|(c, _)| c.index).collect();
    assert_eq!(page, (3..13).rev().collect::<Vec<_>>());

    // Once the writer catches up, sled holds the same history: a restart reads it back.
    store.reader.sync_gate().open();
    store.reader.sync().unwrap();
    assert_eq!(store.reader.checkpoint_pending(), 0);
    store.close().unwrap();
    let restarted = Store::open(dir.path()).unwrap();
    let (_, again) = restarted.reader.capture().unwrap();
    assert_eq!(again.history, body.history);
}

/// A large import's last part is checkpointed in bulk, by the checkpoint writer from a copy of
/// the image (every relation, with the rest of the batch, under one torn marker) instead of
/// through the apply's batch: once synced, sled holds exactly the applied state, and a restart
/// loads it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_import_checkpointed_in_bulk_is_loaded_whole_after_a_restart() {
    use sonraft_raft::command::ImageImport;
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    common::apply_demo(&mut store, 20).await;
    let cells = (0..600)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "id": format!("D{i}"), "site": "S1", "rat": "NR", "pci": i, "arfcn": 632628, "azimuth": 0
            }))
            .unwrap()
        })
        .collect();
    let mut index = 3;
    let data = ImageImport {
        cells,
        ..Default::default()
    };
    store
        .sm
        .apply([common::entry(index, &import_part(4, 0, false, data))])
        .await
        .unwrap();
    // 600 cells x 200 targets: 120,000 relations, 2,000 a part.
    let relations: Vec<_> = (0..600)
        .flat_map(|s| (1..=200).map(move |d| (s, (s + d) % 600)))
        .map(|(s, t)| {
            serde_json::from_value(serde_json::json!({"source": format!("D{s}"), "target": format!("D{t}"), "cio_db": (s % 5) as i8}))
                .unwrap()
        })
        .collect();
    let parts = relations.chunks(2_000).count() as u32;
    for (n, chunk) in relations.chunks(2_000).enumerate() {
        index += 1;
        let n = n as u32 + 1;
        let data = ImageImport {
            relations: chunk.to_vec(),
            ..Default::default()
        };
        store
            .sm
            .apply([common::entry(index, &import_part(4, n, n == parts, data))])
            .await
            .unwrap();
    }
    let applied = store.reader.digest().unwrap();
    assert_eq!(applied.relations, 120_020, "the import's and the demo's");
    store.reader.sync().unwrap();
    store.close().unwrap();

    let restarted = Store::open(dir.path()).unwrap();
    assert_eq!(restarted.reader.digest().unwrap(), applied);
}

/// A decoded snapshot names each cell by one id, shared by the cell, the relations and the
/// maps' keys, as a load from sled does (decoded as one allocation an occurrence, a national
/// image's restore took 22 s and twice the memory until shared).
#[tokio::test]
async fn a_decoded_snapshot_holds_each_cell_id_once() {
    let (_dir, _store, expected, snap) = a_snapshot_of_the_demo().await;
    let file = snap.snapshot.into_std().await;
    let (_, body) = decode_snapshot(file).unwrap();
    let image = &body.image;
    assert_eq!(image.relations, expected.image.relations);
    assert!(image.cells.iter().all(|(k, c)| k.shares(&c.id)));
    assert!(image.relations.iter().all(|((s, t), r)| {
        let (cs, _) = image.cells.get_key_value(s.as_str()).unwrap();
        let (ct, _) = image.cells.get_key_value(t.as_str()).unwrap();
        s.shares(cs) && t.shares(ct) && r.source.shares(cs) && r.target.shares(ct)
    }));
}
