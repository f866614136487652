//! SIGTERM on the leader hands leadership to another voter before the process exits.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Slow heartbeats: once a leader is gone without handing over, no follower campaigns before
/// two heartbeats (1 s) of silence (its watchdog, on a refused connection) or its election
/// timeout (1.5-2.5 s). A new leader known within [`SLACK`] of the old process's exit can only
/// come from the hand-over the old leader made before exiting.
const TIMING: [&str; 6] = [
    "--heartbeat-ms",
    "500",
    "--election-min-ms",
    "1500",
    "--election-max-ms",
    "2500",
];
const SLACK: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_hands_leadership_over_before_it_exits() {
    let mut c = Cluster::start_with(3, &TIMING).await;
    let leader = c.leader().await;
    let old_id = c.nodes[leader].id;
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut child = c.nodes[leader].sigterm().expect("sigterm");
    let started = Instant::now();

    let mut new_leader: Option<(u64, Duration)> = None;
    let mut exited: Option<Duration> = None;
    while new_leader.is_none() || exited.is_none() {
        if exited.is_none() && child.try_wait().unwrap().is_some() {
            exited = Some(started.elapsed());
        }
        if new_leader.is_none() {
            for &i in &others {
                if let Some(s) = c.status(&c.nodes[i]).await
                    && s["role"] == "leader"
                {
                    new_leader = Some((c.nodes[i].id, started.elapsed()));
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "after 30 s: exit {exited:?}, new leader {new_leader:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let exit = child.wait().unwrap();
    let exited_after = exited.unwrap();
    let (new_id, leading_after) = new_leader.unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        leading_after <= exited_after + SLACK,
        "node {new_id} led {leading_after:?} after the SIGTERM, the old leader exited after {exited_after:?}: elected after the old one was gone, not handed over"
    );
    let log = c.nodes[leader].log();
    assert!(
        log.contains("leadership handed over before stopping"),
        "{log}"
    );
    eprintln!(
        "node {old_id} handed over to {new_id}, which led {leading_after:?} after the SIGTERM; the old leader exited after {exited_after:?}"
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
