//! What power cuts and partitions right after elections may do to what nodes apply: never make
//! them apply different entries (in-process clusters with filtered RPCs and held syncs; see
//! `common::faults`).

use std::sync::Arc;
use std::time::Duration;

use common::faults::{self, FaultNode, Net, Rpc};
use sonraft_raft::command::Command;
use sonraft_storage::read;

mod common;

fn tilt_of(node: &FaultNode, cell: &str) -> i16 {
    read(node.reader.state()).image.cells[cell].electrical_tilt
}

/// The Raft paper's Figure 8 with early-reported leader appends (issue 11, finding 1).
///
/// A leads term a and appends E at i; B syncs E; A loses E in a power cut. C wins term b with
/// A's vote and appends its blank at i, which reaches nobody. B wins term c with A's vote and
/// appends its blank at i+1, which it reports to openraft before syncing it; A syncs it and
/// acknowledges, so openraft on B commits i+1. E, of term a, is committed only through B's
/// blank, which is not yet on a majority of disks (only A's): B must not tell A that E is
/// committed. B then loses its blank in a power cut, and C wins term d with B's vote and puts
/// its own entry at i everywhere. Had A applied E, A would differ from B and C for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_earlier_terms_entry_is_applied_only_once_the_new_leaders_entry_is_on_a_majority_of_disks()
 {
    let root = tempfile::tempdir().unwrap();
    let net = Arc::new(Net::default());
    let mut nodes = faults::cluster(root.path(), 3, net.clone()).await;
    let (c, mut b, mut a) = (
        nodes.pop().unwrap(),
        nodes.pop().unwrap(),
        nodes.pop().unwrap(),
    );
    let (imported, _) = a.propose(&Command::Import(common::demo_import(3))).await;
    for n in [&a, &b, &c] {
        n.wait_for(Duration::from_secs(5), "applied the import", move |m| {
            m.last_applied.is_some_and(|l| l.index >= imported)
        })
        .await
        .unwrap();
    }
    assert_eq!(tilt_of(&a, "C0"), 40);

    // Term a: A appends E at i with its syncs held; B syncs it; C never hears of it.
    net.cut(1, 3);
    a.reader.sync_gate().hold();
    let raft = a.raft.clone();
    let e = tokio::spawn(async move {
        let change = common::tilt_change("C0", 1, 50);
        raft.client_write(sonraft_raft::command::Envelope::new(&change, common::now_ms()).unwrap())
            .await
    });
    let i = imported + 1;
    b.wait_for(Duration::from_secs(5), "holds E", move |m| {
        m.last_log_index >= Some(i)
    })
    .await
    .unwrap();

    // A's power cut takes E.
    a = a.power_cut(net.clone()).await;
    e.abort();
    let restarted = a
        .wait_for(Duration::from_secs(5), "restarted", |m| {
            m.last_log_index.is_some()
        })
        .await
        .unwrap();
    assert_eq!(restarted.last_log_index, Some(i - 1), "A lost E");

    // Term b: C wins with A's vote; its entry at i reaches neither A nor B.
    net.heal(1, 3);
    net.cut(2, 3);
    net.drop_rpcs(3, 1, &[Rpc::Append]);
    c.elect().await;
    c.wait_for(
        Duration::from_secs(5),
        "appended its blank at i",
        move |m| m.last_log_index >= Some(i),
    )
    .await
    .unwrap();

    // Term c: C is cut off; B wins with A's vote, its own appends unsynced.
    net.isolate(3, &[1, 2]);
    b.reader.sync_gate().hold();
    b.elect().await;
    a.wait_for(Duration::from_secs(5), "holds B's blank at i+1", move |m| {
        m.last_log_index >= Some(i + 1)
    })
    .await
    .unwrap();
    b.wait_for(Duration::from_secs(5), "sees A holding i+1", move |m| {
        m.replication
            .as_ref()
            .and_then(|r| r.get(&1).cloned().flatten())
            .is_some_and(|l| l.index > i)
    })
    .await
    .unwrap();
    // Heartbeats would carry a commit index within one interval (50 ms); give them many.
    let applied_e = a
        .wait_for(Duration::from_millis(1000), "applied E", move |m| {
            m.last_applied.is_some_and(|l| l.index >= i)
        })
        .await;
    assert!(
        applied_e.is_err(),
        "A applied E (term a, index {i}) while B's blank of term c was on A's disk only"
    );

    // B's power cut takes its blank; term d: C wins with B's vote and overwrites i everywhere.
    b = b.power_cut(net.clone()).await;
    net.heal_all();
    c.elect().await;
    let (last, _) = c.propose(&Command::Import(common::demo_import(3))).await;
    for n in [&a, &b, &c] {
        n.wait_for(Duration::from_secs(10), "caught up", move |m| {
            m.last_applied.is_some_and(|l| l.index >= last)
        })
        .await
        .unwrap();
    }
    let digests: Vec<_> = [&a, &b, &c].iter().map(|n| n.digest()).collect();
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "the nodes applied different entries: {digests:?}"
    );
    assert_eq!(tilt_of(&a, "C0"), 40, "E was never committed");
    for n in [a, b, c] {
        n.stop().await;
    }
}
