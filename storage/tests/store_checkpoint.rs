//! The state machine's checkpoints in sled: what a restart finds after a clean stop, and after
//! a crash that cut a checkpoint short (simulated by leaving its `m/torn` marker and part of
//! its writes behind).

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership};
use sonraft_raft::command::{Command, Envelope};
use sonraft_raft::{NodeInfo, TypeConfig};
use sonraft_storage::{Store, read};

mod common;

fn entry(index: u64, command: &Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Envelope::new(command, 1_000 + index).unwrap()),
    }
}

fn membership(index: u64) -> Entry<TypeConfig> {
    let nodes = [(1u64, NodeInfo::default())]
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>();
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Membership(Membership::new(vec![[1u64].into()], nodes)),
    }
}

/// Leaves behind what a crash in the middle of a checkpoint leaves: the marker, and a newer
/// value of one key than the last complete checkpoint holds.
fn tear_last_checkpoint(dir: &std::path::Path) {
    let db = sled::open(dir.join("sled")).unwrap();
    let sm = db.open_tree("sm").unwrap();
    let cell = sm.get(b"c/C0").unwrap().expect("cell C0 was checkpointed");
    sm.insert(b"m/torn", &[]).unwrap();
    let mut newer = cell.to_vec();
    *newer.last_mut().unwrap() ^= 1;
    sm.insert(b"c/C0", newer).unwrap();
    db.flush().unwrap();
}

#[tokio::test]
async fn after_a_clean_stop_the_checkpoint_holds_everything_applied() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let mut store = Store::open(dir.path()).unwrap();
        store
            .sm
            .apply([
                membership(1),
                entry(2, &Command::Import(common::demo_import(20))),
                entry(3, &common::tilt_change("C3", 0, 45)),
            ])
            .await
            .unwrap();
        let state = read(store.reader.state()).clone();
        drop(store);
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
        store
            .sm
            .apply([
                membership(1),
                entry(2, &Command::Import(common::demo_import(20))),
            ])
            .await
            .unwrap();
        store
            .sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let at_snapshot = read(store.reader.state()).image.clone();
        store
            .sm
            .apply([entry(3, &common::tilt_change("C0", 0, 45))])
            .await
            .unwrap();
        drop(store);
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
    drop(store);
    let db = sled::open(dir.path().join("sled")).unwrap();
    assert!(!db.open_tree("sm").unwrap().contains_key(b"m/torn").unwrap());
}

#[tokio::test]
async fn a_checkpoint_cut_short_without_a_snapshot_is_rebuilt_from_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        store
            .sm
            .apply([
                membership(1),
                entry(2, &Command::Import(common::demo_import(20))),
                entry(3, &common::tilt_change("C0", 0, 45)),
            ])
            .await
            .unwrap();
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
    drop(store);
    let db = sled::open(dir.path().join("sled")).unwrap();
    let sm = db.open_tree("sm").unwrap();
    assert!(!sm.contains_key(b"m/torn").unwrap());
    assert!(sm.get(b"c/C0").unwrap().is_none(), "stale values removed");
}
