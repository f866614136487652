//! A cluster whose nodes talk Raft only across user-space WAN links (the set-up of
//! `sonraft bench wan`, `sonraft_testkit::wan_cluster`): Raft traffic really crosses the links,
//! and a leader killed behind its link is replaced and rejoins through it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use sonraft_testkit::wan::LinkSpec;
use sonraft_testkit::wan_cluster::WanCluster;

const ONE_WAY: Duration = Duration::from_millis(20);

async fn start(root: &std::path::Path) -> WanCluster {
    let wan = WanCluster::start(
        binary(),
        root,
        3,
        &["--timing".into(), "wan".into()],
        LinkSpec::delay(ONE_WAY),
    )
    .await
    .expect("a cluster behind WAN links");
    let r = wan
        .cluster
        .client
        .post(&wan.cluster.nodes[0].api, "/image/import", &demo_image(6))
        .await
        .expect("import");
    assert!(r.status.is_success(), "import: {}", r.status);
    wan
}

fn hysteresis(cell: &str, value: i64) -> serde_json::Value {
    json!({"origin": {"function": "operator"}, "reason": "wan test",
        "writes": [{"entity": format!("cell/{cell}"), "param": "hysteresis", "value": value}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_set_waits_for_a_round_trip_of_the_links() {
    let root = tempfile::tempdir().expect("temp dir");
    let wan = start(root.path()).await;
    let leader = wan
        .cluster
        .leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let api = wan.cluster.nodes[leader].api.clone();

    let started = Instant::now();
    let r = wan
        .cluster
        .client
        .post(&api, "/image/changesets", &hysteresis("C1", 5))
        .await
        .expect("change set");

    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // No commit before a follower's answer came back across its link.
    assert!(
        started.elapsed() >= 2 * ONE_WAY,
        "committed in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_behind_its_link_is_replaced_and_rejoins_through_it() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut wan = start(root.path()).await;
    let leader = wan
        .cluster
        .leader(Duration::from_secs(10))
        .await
        .expect("leader");

    wan.cluster.nodes[leader].kill9();

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        n += 1;
        let apis = wan.cluster.apis();
        let api = &apis[n % apis.len()];
        if let Ok(r) = wan
            .cluster
            .client
            .post(
                api,
                "/image/changesets",
                &hysteresis("C2", 4 + (n % 2) as i64),
            )
            .await
            && r.status == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write acknowledged after the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restart = wan.restarter();
    restart(&mut wan.cluster.nodes[leader]).expect("restart behind the link");
    let back = &wan.cluster.nodes[leader];
    wan.cluster
        .wait_ready(back, Duration::from_secs(30))
        .await
        .expect("the restarted node is ready");
    let now = wan
        .cluster
        .leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let committed = wan
        .cluster
        .node_status(&wan.cluster.nodes[now])
        .await
        .expect("leader status")
        .last_applied_index;
    wan.cluster
        .wait_applied(committed, Duration::from_secs(20))
        .await
        .expect("the restarted node caught up through its link");
}
