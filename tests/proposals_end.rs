//! Every proposal ends: applied, refused, or "outcome unknown" within a bound (issue 11,
//! finding 3). A proposal that cannot end must not hold up the ones behind it either.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Raft timing for a cluster whose followers a test pauses before it proposes: the leader
/// gives up on its quorum one maximum election timeout after the last acknowledgement (see
/// `node::quorum`), and a proposal that reaches it later is refused `no_quorum` instead of
/// being held. With the loopback timing that is 300 ms, which a busy machine spent between
/// the pause and the proposal; the WAN timing leaves 2 s.
const CUT_OFF_TIMING: [&str; 2] = ["--timing", "wan"];

fn hysteresis(cell: &str, value: i64) -> serde_json::Value {
    json!({"origin": {"function": "operator"}, "reason": "test",
        "writes": [{"entity": format!("cell/{cell}"), "param": "hysteresis", "value": value}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_the_leader_cannot_commit_ends_as_outcome_unknown_and_holds_up_nothing() {
    let c = Cluster::start_with(3, &CUT_OFF_TIMING).await;
    c.import_demo(4).await;
    let leader = c.leader().await;
    let api = c.nodes[leader].api.clone();
    // The client would wait far longer than any bound the node may use.
    let client = sonraft_client::ApiClient::new(Some(TOKEN.into()), Duration::from_secs(60));

    // Both followers paused: the leader still leads (it hears of no newer term) but cannot
    // commit anything.
    let followers: Vec<&NodeProc> = c
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, p)| p)
        .collect();
    for f in &followers {
        f.pause().expect("pause");
    }
    // The first is appended and never committed; the second finds a leader that knows it is
    // cut off and is not appended at all.
    for (cell, value, error) in [("C0", 5, "outcome_unknown"), ("C1", 6, "no_quorum")] {
        let started = Instant::now();
        let r = client
            .post(&api, "/image/changesets", &hysteresis(cell, value))
            .await
            .expect("an answer");
        let waited = started.elapsed();
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["error"], error, "{}", r.json());
        assert!(r.retry_after.is_some(), "503 without Retry-After");
        assert!(
            waited < Duration::from_secs(15),
            "{cell}: answered only after {waited:?}"
        );
    }

    let metrics = client.get(&api, "/metrics").await.expect("metrics");
    let counted = String::from_utf8_lossy(&metrics.body)
        .lines()
        .filter_map(|l| l.strip_prefix("sonraft_proposals_outcome_unknown_total "))
        .any(|v| v.trim().parse::<f64>().is_ok_and(|n| n >= 1.0));
    assert!(counted, "the unknown outcome is not counted");

    for f in &followers {
        f.resume().expect("resume");
    }
    // With the quorum back, proposals are applied again (the batcher was not left waiting).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let leader = c.leader().await;
        let r = client
            .post(
                &c.nodes[leader].api,
                "/image/changesets",
                &hysteresis("C2", 6),
            )
            .await
            .expect("an answer");
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no proposal applied after the followers resumed: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// openraft 0.9 has no check-quorum: a leader that no majority hears any more (here both
/// followers are paused; a firewall does the same) keeps leading. It must not hold its clients
/// for the outcome bound while the other sites elect a new leader in a few hundred
/// milliseconds: the proposal it holds ends `outcome_unknown` about an election timeout after
/// the quorum fell silent, and a new one is refused at once, unappended (issue 19).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_quorum_answers_its_clients_long_before_the_outcome_bound() {
    // An outcome bound far above what the answers may take: they must not come from it.
    let c = Cluster::start_with(
        3,
        &[
            CUT_OFF_TIMING[0],
            CUT_OFF_TIMING[1],
            "--outcome-timeout-ms",
            "20000",
        ],
    )
    .await;
    c.import_demo(4).await;
    let leader = c.leader().await;
    let api = c.nodes[leader].api.clone();
    let client = sonraft_client::ApiClient::new(Some(TOKEN.into()), Duration::from_secs(60));
    let followers: Vec<&NodeProc> = c
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, p)| p)
        .collect();
    for f in &followers {
        f.pause().expect("pause");
    }

    let started = Instant::now();
    let held = client
        .post(&api, "/image/changesets", &hysteresis("C0", 5))
        .await
        .expect("an answer");
    let held_waited = started.elapsed();
    let started = Instant::now();
    let refused = client
        .post(&api, "/image/changesets", &hysteresis("C1", 6))
        .await
        .expect("an answer");
    let refused_waited = started.elapsed();
    for f in &followers {
        f.resume().expect("resume");
    }

    assert_eq!(held.status, 503, "{}", String::from_utf8_lossy(&held.body));
    assert_eq!(held.json()["error"], "outcome_unknown", "{}", held.json());
    // The WAN timing's election timeout is 1-2 s; the bound is 20 s.
    assert!(
        held_waited < Duration::from_secs(5),
        "the held proposal was answered after {held_waited:?}"
    );
    assert_eq!(
        refused.status,
        503,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert_eq!(refused.json()["error"], "no_quorum", "{}", refused.json());
    assert!(refused.retry_after.is_some(), "503 without Retry-After");
    assert!(
        refused_waited < Duration::from_secs(1),
        "the new proposal was refused after {refused_waited:?}"
    );
}
