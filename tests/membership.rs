//! Membership: remove a node, add it back as a learner, promote it to voter.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_can_come_back_as_learner_and_be_promoted() {
    let c = Cluster::start(3).await;
    c.import_demo(9).await;
    let leader = c.leader().await;
    let victim = (leader + 1) % 3;
    let vid = c.nodes[victim].id;
    let via = &c.nodes[(leader + 2) % 3];

    let r = c
        .client
        .delete(&via.api, &format!("/cluster/nodes/{vid}"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let s = c.status(&c.nodes[leader]).await.unwrap();
    assert!(
        !s["voters"].as_array().unwrap().contains(&json!(vid)),
        "{s}"
    );
    assert!(s["nodes"].get(vid.to_string()).is_none(), "{s}");

    let body = json!({"id": vid, "site": format!("site-{vid}"), "raft_addr": c.nodes[victim].raft, "api_addr": c.nodes[victim].api});
    let r = c
        .client
        .post(&via.api, "/cluster/learners", &body)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let leader = c.leader().await;
    let s = c.status(&c.nodes[leader]).await.unwrap();
    assert!(
        s["learners"].as_array().unwrap().contains(&json!(vid)),
        "{s}"
    );

    let ids: Vec<u64> = c.nodes.iter().map(|p| p.id).collect();
    let r = c
        .client
        .post(&via.api, "/cluster/voters", &json!({"ids": ids}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = c.status(&c.nodes[victim]).await.unwrap();
        if s["voters"].as_array().unwrap().len() == 3 && s["role"] != "learner" {
            break;
        }
        assert!(Instant::now() < deadline, "not promoted: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The promoted node holds the image.
    let v = c.cell(&c.nodes[victim], "C4", "local").await;
    assert_eq!(v["id"], "C4");
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
