//! Snapshot files: round trip, damage detection, restore of a state machine that fell behind.

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
