//! `/cluster/health` and `sonraft ctl health` tell the truth about fault tolerance and
//! unreachable members (issue 19).

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

/// Runs `sonraft ctl health ARGS` against the cluster; returns whether it exited 0, and its
/// output.
fn ctl_health(c: &Cluster, args: &[&str]) -> (bool, String) {
    let nodes: Vec<String> = c.nodes.iter().map(|p| p.api.clone()).collect();
    let out = Command::new(binary())
        .args(["ctl", "health"])
        .args(args)
        .env("SONRAFT_NODES", nodes.join(","))
        .env("SONRAFT_TOKEN", TOKEN)
        .output()
        .expect("run ctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_when_members_do_not_answer_or_the_cluster_cannot_lose_a_voter() {
    let c = Cluster::start(3).await;
    let api = c.nodes[0].api.clone();
    let h = c.client.get(&api, "/cluster/health").await.unwrap().json();
    assert_eq!(h["fault_tolerance"], 1, "{h}");
    assert_eq!(h["healthy"], true, "{h}");
    let (ok, out) = ctl_health(&c, &[]);
    assert!(ok, "{out}");

    // What a run of malformed membership requests left behind: a bogus member that is
    // nowhere (only with force now), and a voter demoted to learner.
    let ghost =
        json!({"id": 9, "site": "ghost", "raft_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:1"});
    let r = c
        .client
        .post(&api, "/cluster/learners?force=true", &ghost)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (ok, out) = ctl_health(&c, &[]);
    assert!(!ok, "a member that does not answer passed: {out}");
    assert!(
        out.contains("learner 9") && out.contains("does not answer"),
        "{out}"
    );
    let (ok, out) = ctl_health(&c, &["--allow-unreachable"]);
    assert!(ok, "{out}");

    let leader = c.leader().await;
    let keep: Vec<u64> = c
        .nodes
        .iter()
        .map(|p| p.id)
        .filter(|id| *id == c.nodes[leader].id || *id == c.nodes[(leader + 1) % 3].id)
        .collect();
    let r = c
        .client
        .post(&api, "/cluster/voters?force=true", &json!({"ids": keep}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let h = c.client.get(&api, "/cluster/health").await.unwrap().json();
    assert_eq!(h["fault_tolerance"], 0, "{h}");
    let (ok, out) = ctl_health(&c, &["--allow-unreachable"]);
    assert!(!ok, "two voters passed: {out}");
    assert!(out.contains("cannot lose another one"), "{out}");
    let (ok, out) = ctl_health(&c, &["--allow-unreachable", "--allow-no-fault-tolerance"]);
    assert!(ok, "{out}");

    // The leader exports both each second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let metrics = c
            .client
            .get(&c.nodes[leader].api, "/metrics")
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        let tolerance = text.contains("sonraft_cluster_fault_tolerance 0");
        let ghost = text.lines().any(|l| {
            l.starts_with("sonraft_member_reachable") && l.contains("id=\"9\"") && l.ends_with(" 0")
        });
        if tolerance && ghost {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
