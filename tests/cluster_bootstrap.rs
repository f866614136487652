//! A bootstrapped cluster: one leader, three voters, and a change set proposed through any
//! node is readable from every node.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_gives_one_leader_three_voters_and_writes_through_any_node_read_everywhere() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let mut roles = Vec::new();
    for p in &c.nodes {
        let s = c.status(p).await.expect("status");
        assert_eq!(s["voters"].as_array().map(Vec::len), Some(3), "{s}");
        roles.push(s["role"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(
        roles.iter().filter(|r| *r == "leader").count(),
        1,
        "{roles:?}"
    );
    assert_eq!(roles[leader], "leader");

    c.import_demo(30).await;
    for (i, via) in c.nodes.iter().enumerate() {
        let cell = format!("C{i}");
        let v = c.cell(via, &cell, "linearizable").await["version"]
            .as_u64()
            .unwrap();
        let r = c
            .client
            .post(&via.api, "/image/changesets", &tilt(&cell, v, 47))
            .await
            .unwrap();
        assert_eq!(
            r.status,
            200,
            "via node {}: {}",
            via.id,
            String::from_utf8_lossy(&r.body)
        );
        let index = r.json()["index"].as_u64().unwrap();
        c.wait_applied(index).await;
        for reader in &c.nodes {
            let got = c.cell(reader, &cell, "local").await;
            assert_eq!(got["electrical_tilt"], 47, "node {} reads {got}", reader.id);
            assert_eq!(got["version"], v + 1);
        }
    }
}
