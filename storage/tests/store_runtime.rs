//! The state machine's long waits and long holds of the applied state do not hold one of the
//! runtime's worker threads: a node has as many as cores (two here), and a Raft core starved of
//! workers sends no heartbeats, so its followers elect another leader. A large import showed it:
//! at 100,000 cells and 3 million relations the leader lost its term part way through, while
//! snapshots were captured under the state lock and applies waited for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use sonraft_raft::command::Command;
use sonraft_storage::Store;

mod common;

/// Holds the applied state from a plain thread, with the write lock or a read lock, until
/// released or 10 s have passed (then `held_too_long` is set, and it lets go).
struct Holder {
    release: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    held_too_long: Arc<AtomicBool>,
}

impl Holder {
    fn hold(store: &Store, exclusive: bool) -> Holder {
        let state = store.reader.state().clone();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let held_too_long = Arc::new(AtomicBool::new(false));
        let flag = held_too_long.clone();
        let thread = std::thread::spawn(move || {
            let wait = |locked_tx: std::sync::mpsc::Sender<()>| {
                locked_tx.send(()).unwrap();
                if release_rx.recv_timeout(Duration::from_secs(10)).is_err() {
                    flag.store(true, Ordering::SeqCst);
                }
            };
            if exclusive {
                let _g = state.write().unwrap();
                wait(locked_tx);
            } else {
                let _g = state.read().unwrap();
                wait(locked_tx);
            }
        });
        locked_rx.recv().unwrap();
        Holder {
            release,
            thread,
            held_too_long,
        }
    }

    /// Lets go; whether the probe ran while the state was held.
    fn release(self) -> bool {
        let _ = self.release.send(());
        self.thread.join().unwrap();
        !self.held_too_long.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_snapshot_waiting_for_the_applied_state_leaves_the_worker_to_other_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    common::apply_demo(&mut store, 4).await;
    let mut builder = store.sm.get_snapshot_builder().await;
    let holder = Holder::hold(&store, true);
    let build = tokio::spawn(async move { builder.build_snapshot().await });
    tokio::spawn(async {}).await.unwrap();
    assert!(
        holder.release(),
        "a task waited for the snapshot build's wait for the applied state"
    );
    build.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn an_apply_waiting_for_the_applied_state_leaves_the_worker_to_other_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    common::apply_demo(&mut store, 4).await;
    let holder = Holder::hold(&store, false);
    let entry = common::entry(3, &Command::Import(common::demo_import(2)));
    let mut sm = store.sm;
    let apply = tokio::spawn(async move { sm.apply([entry]).await.map(|_| sm) });
    tokio::spawn(async {}).await.unwrap();
    assert!(
        holder.release(),
        "a task waited for an apply's wait for the applied state"
    );
    apply.await.unwrap().unwrap();
}
