//! A healthy cluster's logs (issue 15, "Operations"): no ERROR line while three sites run SON on
//! a simulated network, serve reads and proposals through followers, hand leadership over and
//! restart a site as an upgrade does (the peer's absence is one WARN, its return one INFO);
//! and the lifecycle is there at INFO: each node's start, who became the leader, the import,
//! the hand-over. An ERROR an operator is paged for must mean something is wrong.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use sonraft_testkit::local_cluster::SimProc;

const CELLS: &str = "30";
const REGIONS: &str = "site-1,site-2,site-3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_cluster_logs_no_error_and_its_lifecycle_at_info() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProc::start(
        binary(),
        dir.path(),
        &["--cells", CELLS, "--period-ms", "500", "--regions", REGIONS],
    )
    .unwrap();
    let c = Cluster::start_with(3, &["--antennas", &sim.antennas.join(",")]).await;
    let image = sim_export(CELLS, REGIONS, &[]);
    let leader = c.leader().await;
    let r = c
        .client
        .post(&c.nodes[(leader + 1) % 3].api, "/image/import", &image)
        .await
        .unwrap();
    assert!(
        r.status.is_success(),
        "{}",
        String::from_utf8_lossy(&r.body)
    );

    // Twenty simulator periods of SON, with reads and an operator change through a follower.
    let period = |s: &Value| s["period"].as_u64().unwrap_or(0);
    let start = period(&sim.state(&c.client).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut proposed = false;
    while period(&sim.state(&c.client).await.unwrap()) < start + 20 {
        assert!(Instant::now() < deadline, "the simulator does not report");
        let follower = &c.nodes[(c.leader().await + 1) % 3].api;
        let r = c
            .client
            .get(follower, "/image/cells?limit=5&consistency=linearizable")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        if !proposed {
            let cells: Value = r.json();
            let cell = &cells[0];
            let change = json!({
                "origin": {"function": "operator"},
                "reason": "healthy logs test",
                "read_set": [{"entity": format!("cell/{}", cell["id"].as_str().unwrap()),
                              "version": cell["version"]}],
                "writes": [{"entity": format!("cell/{}", cell["id"].as_str().unwrap()),
                            "param": "cio_db", "value": 1}],
            });
            let r = c
                .client
                .post(follower, "/image/changesets", &change)
                .await
                .unwrap();
            proposed = r.status == 200;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A graceful hand-over to another voter.
    let old = c.leader().await;
    let to = (old + 1) % 3;
    let r = c
        .client
        .post(
            &c.nodes[old].api,
            "/cluster/leader",
            &json!({"id": c.nodes[to].id}),
        )
        .await
        .unwrap();
    assert!(
        r.status.is_success(),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.leader().await != to {
        assert!(Instant::now() < deadline, "no hand-over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few more periods under the new leader.
    let now = period(&sim.state(&c.client).await.unwrap());
    while period(&sim.state(&c.client).await.unwrap()) < now + 4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A follower stopped for an upgrade and back: the leader says so once each way, at WARN
    // and INFO, instead of an ERROR a heartbeat.
    let mut c = c;
    let leader = c.leader().await;
    let down = (leader + 1) % 3;
    let id = c.nodes[down].id;
    c.nodes[down].stop().unwrap();
    let wait_log = |c: &Cluster, needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if c.nodes[leader].log().contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the leader's log"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_log(&c, &format!("Raft traffic cannot reach node {id}"));
    c.nodes[down].restart().unwrap();
    c.wait_ready(&c.nodes[down]).await;
    wait_log(&c, &format!("node {id} answers Raft traffic again"));

    let logs: Vec<String> = c.nodes.iter().map(|p| p.log()).collect();
    let all = logs.join("");
    let errors: Vec<&str> = all.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(
        errors.is_empty(),
        "ERROR lines in a healthy cluster:\n{}",
        errors.join("\n")
    );
    let warnings: Vec<&str> = all.lines().filter(|l| l.contains(" WARN ")).collect();
    println!("{} WARN lines:\n{}", warnings.len(), warnings.join("\n"));
    for (i, log) in logs.iter().enumerate() {
        assert!(log.contains("node started"), "node {i}:\n{log}");
    }
    for needle in [
        "this node became the leader",
        "following leader",
        "imported",
        "leadership handed over",
    ] {
        assert!(all.contains(needle), "no {needle:?} at INFO in:\n{all}");
    }
}
