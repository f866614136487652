//! The state machine's checkpoints in sled: what a restart finds after a clean stop, and after
//! a crash that cut a checkpoint short (simulated by leaving its `m/torn` marker and part of
//! its writes behind).

use openraft::storage::RaftStateMachine;
use sonraft_storage::{Store, read};

mod common;

/// Leaves behind what a crash in the middle of a checkpoint leaves: the marker, and a newer
/// value of one key than the last complete checkpoint holds.
fn tear_last_checkpoint(dir: &std::path::Path) {
    common::with_raw_sled(dir, |db| {
        let sm = db.open_tree("sm").unwrap();
        let cell = sm.get(b"c/C0").unwrap().expect("cell C0 was checkpointed");
        sm.insert(b"m/torn", &[]).unwrap();
        let mut newer = cell.to_vec();
        *newer.last_mut().unwrap() ^= 1;
        sm.insert(b"c/C0", newer).unwrap();
    });
}

#[tokio::test]
async fn after_a_clean_stop_the_checkpoint_holds_everything_applied() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let mut store = Store::open(dir.path()).unwrap();
        common::apply_demo(&mut store, 20).await;
        store
            .sm
            .apply([common::entry(3, &common::tilt_change("C3", 0, 45))])
            .await
            .unwrap();
        let state = read(store.reader.state()).clone();
        store.close().unwrap();
        state
    };
    let store = Store::open(dir.path()).unwrap();
    let state = read(store.reader.state()).clone();
    assert_eq!(state.image, expected.image);
    assert_eq!(state.last_applied.map(|l| l.index), Some(3));
    assert_eq!(store.reader.history(10, None).unwrap().len(), 1);
}

#[tokio::test]
async fn a_checkpoint_cut_short_is_discarded_for_the_newest_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let at_snapshot = {
        let mut store = Store::open(dir.path()).unwrap();
        common::apply_demo(&mut store, 20).await;
        common::build_snapshot(&mut store).await;
        let at_snapshot = read(store.reader.state()).image.clone();
        store
            .sm
            .apply([common::entry(3, &common::tilt_change("C0", 0, 45))])
            .await
            .unwrap();
        store.close().unwrap();
        at_snapshot
    };
    tear_last_checkpoint(dir.path());

    let store = Store::open(dir.path()).unwrap();
    let state = read(store.reader.state()).clone();
    assert_eq!(
        state.image, at_snapshot,
        "the torn checkpoint's values are gone; the log re-applies entry 3"
    );
    assert_eq!(state.last_applied.map(|l| l.index), Some(2));
    assert!(store.reader.history(10, None).unwrap().is_empty());
    store.close().unwrap();
    common::with_raw_sled(dir.path(), |db| {
        assert!(!db.open_tree("sm").unwrap().contains_key(b"m/torn").unwrap());
    });
}

#[tokio::test]
async fn a_checkpoint_cut_short_without_a_snapshot_is_rebuilt_from_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        common::apply_demo(&mut store, 20).await;
        store
            .sm
            .apply([common::entry(3, &common::tilt_change("C0", 0, 45))])
            .await
            .unwrap();
        store.close().unwrap();
    }
    tear_last_checkpoint(dir.path());

    let store = Store::open(dir.path()).unwrap();
    let state = read(store.reader.state()).clone();
    assert!(
        state.image.cells.is_empty(),
        "nothing kept from the torn store"
    );
    assert_eq!(
        state.last_applied, None,
        "openraft re-applies from the start"
    );
    assert!(store.reader.history(10, None).unwrap().is_empty());
    store.close().unwrap();
    common::with_raw_sled(dir.path(), |db| {
        let sm = db.open_tree("sm").unwrap();
        assert!(!sm.contains_key(b"m/torn").unwrap());
        assert!(sm.get(b"c/C0").unwrap().is_none(), "stale values removed");
    });
}
