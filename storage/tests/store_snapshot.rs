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

/// A relation pruned and then imported again must start above every version it had, also on a
/// node that restarted or was restored from a snapshot in between (issue 11, finding 6).
#[tokio::test]
async fn the_highest_version_issued_survives_a_restart_and_a_snapshot() {
    use sonraft_raft::command::{Command, ImageImport};
    let dir = tempfile::tempdir().unwrap();
    let prune = |version| {
        Command::ChangeSet(sonraft_raft::changeset::ChangeSet {
            origin: sonraft_raft::changeset::Origin {
                node: 0,
                function: sonraft_raft::changeset::Function::Operator,
            },
            reason: "prune".into(),
            read_set: vec![sonraft_raft::changeset::ReadVersion {
                entity: "relation/C0/C1".parse().unwrap(),
                version,
            }],
            writes: vec![sonraft_raft::changeset::Write {
                entity: "relation/C0/C1".parse().unwrap(),
                param: sonraft_raft::model::Param::Exists,
                value: sonraft_raft::model::Value::Bool(false),
            }],
            proposed_at_ms: 0,
        })
    };
    let mut store = Store::open(dir.path()).unwrap();
    common::apply_demo(&mut store, 4).await;
    // Bump C0's tilt a few times so that versions have moved on.
    for (i, tilt) in [50, 40, 50].into_iter().enumerate() {
        let v = read(store.reader.state()).image.cells["C0"].version;
        store
            .sm
            .apply([common::entry(
                3 + i as u64,
                &common::tilt_change("C0", v, tilt),
            )])
            .await
            .unwrap();
    }
    let relation_version =
        read(store.reader.state()).image.relations[&("C0".into(), "C1".into())].version;
    store
        .sm
        .apply([common::entry(6, &prune(relation_version))])
        .await
        .unwrap();
    let issued = read(store.reader.state()).image.versions_issued;
    assert!(issued >= 4, "{issued}");
    store.close().unwrap();

    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(
        read(store.reader.state()).image.versions_issued,
        issued,
        "kept across a restart"
    );
    let snap = common::build_snapshot(&mut store).await;
    let other = tempfile::tempdir().unwrap();
    let mut restored = Store::open(other.path()).unwrap();
    restored
        .sm
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert_eq!(
        read(restored.reader.state()).image.versions_issued,
        issued,
        "kept in a snapshot"
    );
    let again = ImageImport {
        sites: vec![],
        cells: vec![],
        relations: vec![
            serde_json::from_value(serde_json::json!({"source": "C0", "target": "C1"})).unwrap(),
        ],
        policy: None,
    };
    restored
        .sm
        .apply([common::entry(7, &Command::Import(again))])
        .await
        .unwrap();
    let new_version =
        read(restored.reader.state()).image.relations[&("C0".into(), "C1".into())].version;
    assert!(
        new_version > issued,
        "re-created at {new_version}, {issued} were issued before"
    );
}
