//! Closing a store releases its data directory: whatever opens it next, at once, succeeds.

use openraft::storage::RaftStateMachine;
use sonraft_storage::{OpenError, Store, read};

mod common;

/// Opens and closes the store in `dir` `rounds` times, applying and syncing a change each
/// time: the kind of work that left sled background jobs holding the directory for a moment
/// after the store was dropped.
async fn reopen_in_a_loop(dir: std::path::PathBuf, rounds: u64) {
    let mut store = Store::open(&dir).unwrap();
    common::apply_demo(&mut store, 20).await;
    store.close().unwrap();
    for round in 0..rounds {
        let mut store =
            Store::open(&dir).unwrap_or_else(|e| panic!("round {round}: reopening failed: {e}"));
        let version = read(store.reader.state()).image.cells["C0"].version;
        let tilt = if round % 2 == 0 { 50 } else { 40 };
        store
            .sm
            .apply([common::entry(
                3 + round,
                &common::tilt_change("C0", version, tilt),
            )])
            .await
            .unwrap();
        store.reader.sync().unwrap();
        store.close().unwrap();
    }
    let store = Store::open(&dir).unwrap();
    let state = read(store.reader.state()).clone();
    assert_eq!(state.last_applied.map(|l| l.index), Some(2 + rounds));
    assert_eq!(
        state.image.cells["C0"].version,
        1 + rounds,
        "every change landed"
    );
}

/// Several stores at once, as in a test binary: sled's thread pool is shared by the process,
/// so each store's background jobs wait behind the others'.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_store_can_be_reopened_at_once_every_time() {
    let root = tempfile::tempdir().unwrap();
    let loops: Vec<_> = (0..4)
        .map(|i| tokio::spawn(reopen_in_a_loop(root.path().join(format!("s{i}")), 100)))
        .collect();
    for l in loops {
        l.await.unwrap();
    }
}

#[tokio::test]
async fn a_store_still_open_is_refused_as_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _open = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).err().expect("refused");
    assert!(matches!(err, OpenError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("another sonraft process"), "{err}");
}
