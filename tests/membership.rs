//! Membership: remove a node, add it back as a learner, promote it to voter.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Removing a voter of three leaves two, which tolerate no failure: refused unless forced. A
/// removed node stops by itself. A site comes back as a new member (new id, empty directory):
/// it catches up, including what changed after the removal, and becomes a voter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_voter_needs_force_and_the_removed_node_stops_and_a_new_member_catches_up() {
    let mut c = Cluster::start(3).await;
    c.import_demo(9).await;
    let leader = c.leader().await;
    let victim = (leader + 1) % 3;
    let vid = c.nodes[victim].id;
    let via = c.nodes[(leader + 2) % 3].api.clone();

    let r = c
        .client
        .delete(&via, &format!("/cluster/nodes/{vid}"))
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("odd number of voters"),
        "{}",
        r.json()
    );
    let r = c
        .client
        .delete(&via, &format!("/cluster/nodes/{vid}?force=true"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let s = c.status(&c.nodes[leader]).await.unwrap();
    assert!(
        !s["voters"].as_array().unwrap().contains(&json!(vid)),
        "{s}"
    );
    assert!(s["nodes"].get(vid.to_string()).is_none(), "{s}");

    // The removed node learns it from its peers and stops instead of campaigning forever.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !c.nodes[victim].exited() {
        assert!(
            Instant::now() < deadline,
            "the removed node still runs:\n{}",
            c.nodes[victim].log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        c.nodes[victim].log().contains("removed from the cluster"),
        "{}",
        c.nodes[victim].log()
    );

    // A change made after the removal.
    let leader = c.leader().await;
    let before = c.cell(&c.nodes[leader], "C4", "linearizable").await;
    let version = before["version"].as_u64().unwrap();
    let r = c
        .client
        .post(
            &c.nodes[leader].api,
            "/image/changesets",
            &tilt("C4", version, 50),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let changed = r.json()["versions"]["cell/C4"].as_u64().unwrap();

    // The site comes back as node 4.
    let newcomer = NodeProc::start(
        binary(),
        4,
        &c.dir.join("node4"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[],
    )
    .unwrap();
    let body =
        json!({"id": 4, "site": "site-4", "raft_addr": newcomer.raft, "api_addr": newcomer.api});
    let r = c
        .client
        .post(&via, "/cluster/learners", &body)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mut ids: Vec<u64> = c
        .nodes
        .iter()
        .filter(|p| p.running())
        .map(|p| p.id)
        .collect();
    ids.push(4);
    let r = c
        .client
        .post(&via, "/cluster/voters", &json!({"ids": ids}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    c.nodes.push(newcomer);
    let deadline = Instant::now() + Duration::from_secs(10);
    let newcomer = c.nodes.last().unwrap();
    loop {
        let s = c.status(newcomer).await.unwrap();
        if s["voters"].as_array().unwrap().len() == 3 && s["role"] == "follower" {
            break;
        }
        assert!(Instant::now() < deadline, "not promoted: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = c.cell(newcomer, "C4", "local").await;
        if v["version"].as_u64() == Some(changed) {
            assert_eq!(v["electrical_tilt"], 50);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new member does not hold the change made after the removal: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node that does not answer on its Raft address is not added (unless forced), and an even
/// number of voters is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_that_cannot_work_or_weaken_the_cluster_are_refused() {
    let c = Cluster::start(3).await;
    let api = &c.nodes[0].api;
    let ghost =
        json!({"id": 7, "site": "ghost", "raft_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:1"});
    let r = c
        .client
        .post(api, "/cluster/learners", &ghost)
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("does not answer"),
        "{}",
        r.json()
    );
    for bad in [json!(0), json!(9_007_199_254_740_992u64)] {
        let body =
            json!({"id": bad, "site": "x", "raft_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:1"});
        let r = c
            .client
            .post(api, "/cluster/learners", &body)
            .await
            .unwrap();
        assert_eq!(r.status, 422, "{bad}: {}", String::from_utf8_lossy(&r.body));
    }
    let r = c
        .client
        .post(api, "/cluster/voters", &json!({"ids": [1, 2]}))
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    let s = c.status(&c.nodes[0]).await.unwrap();
    assert_eq!(s["voters"].as_array().unwrap().len(), 3, "{s}");
    assert!(s["nodes"].get("7").is_none(), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_can_be_handed_to_a_chosen_voter() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let target = c.nodes[(leader + 1) % 3].id;
    let r = c
        .client
        .post(
            &c.nodes[(leader + 2) % 3].api,
            "/cluster/leader",
            &json!({"id": target}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let now = c.leader().await;
    assert_eq!(c.nodes[now].id, target);
}

/// A new node started at a removed (or lost) node's address must not be taken for it: Raft
/// traffic meant for node 3 reaching node 4 there would let node 4 acknowledge entries and
/// grant votes as node 3 (found by the fault campaign, replacing a site at its old address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_at_another_nodes_address_refuses_the_traffic_meant_for_that_node() {
    let mut c = Cluster::start(3).await;
    c.import_demo(3).await;
    let leader = c.leader().await;
    let victim = (leader + 1) % 3;
    let (raft, api) = (c.nodes[victim].raft.clone(), c.nodes[victim].api.clone());
    c.nodes[victim].kill9();
    let stranger = NodeProc::start(binary(), 4, &c.dir.join("node4"), &raft, &api, &[]).unwrap();
    // The leader keeps replicating to node 3 at that address: node 4 must hold nothing.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let s = c.status(&stranger).await.unwrap();
        assert_eq!(s["last_log_index"], 0, "node 4 took node 3's log: {s}");
        assert_eq!(
            s["voters"],
            json!([]),
            "node 4 took node 3's membership: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stranger.log().contains("meant for node"),
        "node 4 did not say it refused: {}",
        stranger.log()
    );
}
