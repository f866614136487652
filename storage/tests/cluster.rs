//! Three Raft nodes in one process, on loopback HTTP, with sled in temp dirs.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use sonraft_raft::changeset::Outcome;
use sonraft_raft::command::{Command, Response};
use sonraft_storage::read;

fn cell_version(node: &TestNode, cell: &str) -> u64 {
    read(node.reader.state()).image.cells[cell].version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_change_sets_from_the_same_read_one_applies_the_other_conflicts() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3, 10_000).await;
    let leader = &nodes[wait_leader(&nodes).await];
    let (_, r) = propose(&leader.raft, Command::Import(demo_import(10))).await;
    assert!(matches!(r, Response::Imported(Ok(_))), "{r:?}");
    let v = cell_version(leader, "C3");

    let (a, b) = tokio::join!(
        propose(&leader.raft, tilt_change("C3", v, 45)),
        propose(&leader.raft, tilt_change("C3", v, 35)),
    );
    let outcomes = [outcome(a.1), outcome(b.1)];
    let applied: Vec<_> = outcomes.iter().filter(|o| o.kind() == "applied").collect();
    let conflicts: Vec<_> = outcomes.iter().filter(|o| o.kind() == "conflict").collect();
    assert_eq!((applied.len(), conflicts.len()), (1, 1), "{outcomes:?}");
    assert_eq!(
        conflicts[0],
        &Outcome::Conflict {
            current: [("cell/C3".to_string(), Some(v + 1))].into()
        }
    );
    let last = a.0.max(b.0);
    wait_applied(&nodes.iter().collect::<Vec<_>>(), last).await;
    let images: BTreeSet<_> = nodes
        .iter()
        .map(|n| format!("{:?}", read(n.reader.state()).image))
        .collect();
    assert_eq!(images.len(), 1, "all nodes hold the same image");
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_stopped_a_new_leader_is_elected_and_writes_continue() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3, 10_000).await;
    let pos = wait_leader(&nodes).await;
    let (imported, _) = propose(&nodes[pos].raft, Command::Import(demo_import(5))).await;
    let old = nodes.remove(pos);
    let old_id = old.id;
    old.stop().await;

    let new_pos = wait_leader(&nodes).await;
    assert_ne!(nodes[new_pos].id, old_id);
    // The import was committed, but the new leader may learn so (and apply it) only after its
    // election: read its version once it has.
    wait_applied(&[&nodes[new_pos]], imported).await;
    let v = cell_version(&nodes[new_pos], "C1");
    let (_, r) = propose(&nodes[new_pos].raft, tilt_change("C1", v, 41)).await;
    assert_eq!(outcome(r).kind(), "applied");
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_restarted_from_its_data_dir_catches_up_with_nothing_lost() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3, 10_000).await;
    let pos = wait_leader(&nodes).await;
    propose(&nodes[pos].raft, Command::Import(demo_import(20))).await;
    let follower_pos = (pos + 1) % 3;
    let follower = nodes.remove(follower_pos);
    let follower_id = follower.id;
    let before_stop = follower.last_applied();
    let (dir, addr) = follower.stop().await;

    let leader_pos = wait_leader(&nodes).await;
    let mut last = 0;
    for i in 0..20 {
        let cell = format!("C{i}");
        let v = cell_version(&nodes[leader_pos], &cell);
        let (idx, r) = propose(&nodes[leader_pos].raft, tilt_change(&cell, v, 45)).await;
        assert_eq!(outcome(r).kind(), "applied");
        last = idx;
    }
    assert!(last > before_stop);

    let restarted = TestNode::start(follower_id, &dir, addr, 10_000).await;
    assert!(
        restarted.last_applied() >= before_stop,
        "the restarted node lost applied entries"
    );
    wait_applied(&[&restarted], last).await;
    let leader_image = read(nodes[leader_pos].reader.state()).image.clone();
    assert_eq!(read(restarted.reader.state()).image, leader_image);
    assert!(leader_image.cells.values().all(|c| c.electrical_tilt == 45));
    nodes.push(restarted);
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_added_after_the_log_was_purged_receives_a_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3, 20).await;
    let pos = wait_leader(&nodes).await;
    let leader = &nodes[pos];
    propose(&leader.raft, Command::Import(demo_import(30))).await;
    let mut last = 0;
    for i in 0..30 {
        let cell = format!("C{i}");
        let v = cell_version(leader, &cell);
        last = propose(&leader.raft, tilt_change(&cell, v, 30)).await.0;
    }
    wait_applied(&[leader], last).await;
    // Wait until the log before the snapshot is purged on the leader.
    let mut purged = None;
    for _ in 0..200 {
        purged = leader.raft.metrics().borrow().purged;
        if purged.is_some_and(|p| p.index >= 10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        purged.is_some_and(|p| p.index >= 10),
        "log not purged: {purged:?}"
    );

    let learner = TestNode::start(
        4,
        &root.path().join("n4"),
        "127.0.0.1:0".parse().unwrap(),
        20,
    )
    .await;
    let leader = &nodes[wait_leader(&nodes).await];
    leader
        .raft
        .add_learner(4, learner.info(), true)
        .await
        .expect("add learner");
    wait_applied(&[&learner], last).await;
    let learner_state = read(learner.reader.state()).clone();
    assert_eq!(learner_state.image, read(leader.reader.state()).image);
    assert!(
        learner.raft.metrics().borrow().snapshot.is_some(),
        "the learner caught up without installing a snapshot"
    );
    assert_eq!(
        learner.reader.history(1000, None).unwrap().len(),
        leader.reader.history(1000, None).unwrap().len(),
        "history travels with the snapshot"
    );
    learner.stop().await;
    for n in nodes {
        n.stop().await;
    }
}
