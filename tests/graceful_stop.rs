//! SIGTERM on the leader hands leadership to another voter before the process exits.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_hands_leadership_over_before_it_exits() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let old_id = c.nodes[leader].id;
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut child = c.nodes[leader].sigterm().expect("sigterm");
    let started = Instant::now();

    let mut new_leader_seen = None;
    let exit = loop {
        for &i in &others {
            if let Some(s) = c.status(&c.nodes[i]).await
                && let Some(l) = s["leader_id"].as_u64()
                && l != old_id
                && new_leader_seen.is_none()
            {
                new_leader_seen = Some((l, started.elapsed()));
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the node did not stop"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let exited_after = started.elapsed();
    assert!(exit.success(), "exit status {exit:?}");
    let (new_id, seen_after) =
        new_leader_seen.expect("no other node became leader before the old one exited");
    assert!(
        seen_after <= exited_after,
        "leadership moved only after exit"
    );
    eprintln!(
        "node {old_id} handed over to {new_id} after {seen_after:?}, exited after {exited_after:?}"
    );

    let pos = c.nodes.iter().position(|p| p.id == new_id).unwrap();
    let r = c
        .client
        .post(&c.nodes[pos].api, "/image/import", &demo_image(3))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = c.cell(&c.nodes[pos], "C1", "linearizable").await["version"]
        .as_u64()
        .unwrap();
    let r = c
        .client
        .post(&c.nodes[pos].api, "/image/changesets", &tilt("C1", v, 45))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}
