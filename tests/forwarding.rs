//! A request a follower forwards to a leader that stops answering does not wait for the
//! client's timeout: a read goes to the new leader, a change set ends as `outcome_unknown`
//! (issue 19).

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_forwarded_to_a_leader_that_stopped_answering_end_when_a_new_leader_is_elected() {
    let c = Cluster::start(3).await;
    c.import_demo(6).await;
    let leader = c.leader().await;
    let follower = c.nodes[(leader + 1) % 3].api.clone();
    let client = sonraft_client::ApiClient::new(Some(TOKEN.into()), Duration::from_secs(30));
    let cell = c.cell(&c.nodes[leader], "C1", "linearizable").await;
    let version = cell["version"].as_u64().unwrap();

    // The leader stops answering (its sockets still accept connections).
    c.nodes[leader].pause().expect("pause");
    let started = Instant::now();
    let read = client.get(&follower, "/image/cells/C1");
    let change = tilt("C1", version, 50);
    let write = client.post(&follower, "/image/changesets", &change);
    let (read, write) = tokio::join!(read, write);
    let waited = started.elapsed();
    c.nodes[leader].resume().expect("resume");

    let read = read.expect("the read got an answer");
    assert_eq!(read.status, 200, "{}", String::from_utf8_lossy(&read.body));
    assert_eq!(read.json()["id"], "C1");
    let write = write.expect("the change set got an answer");
    assert!(
        write.status == 200 || write.json()["error"] == "outcome_unknown",
        "{} {}",
        write.status,
        String::from_utf8_lossy(&write.body)
    );
    if write.status != 200 {
        assert_eq!(write.status, 503);
        assert!(
            write.retry_after.is_some(),
            "outcome_unknown without Retry-After"
        );
        let metrics = client.get(&follower, "/metrics").await.unwrap();
        let counted = String::from_utf8_lossy(&metrics.body)
            .lines()
            .filter_map(|l| l.strip_prefix("sonraft_forward_outcome_unknown_total "))
            .any(|v| v.trim().parse::<f64>().is_ok_and(|n| n >= 1.0));
        assert!(counted, "the abandoned forward is not counted");
    }
    // A new leader takes 450-600 ms with the loopback timing; the client must not wait for
    // anything near its own timeout.
    assert!(waited < Duration::from_secs(4), "answered after {waited:?}");

    // The loop guard: a request another node forwarded, reaching a node that does not lead, is
    // answered (503 `leader_changed`) instead of being forwarded once more.
    let leader = c.leader().await;
    let follower = &c.nodes[(leader + 1) % 3].api;
    for (method, path, body) in [
        (hyper::Method::GET, "/image/cells/C1", None),
        (
            hyper::Method::POST,
            "/image/changesets",
            Some(bytes::Bytes::from(tilt("C1", version, 50).to_string())),
        ),
    ] {
        let url = format!("{}{path}", sonraft_client::base_url(follower));
        let r = client
            .send(method, &url, body, &[("x-sonraft-forwarded", "9")])
            .await
            .expect("an answer");
        assert_eq!(
            r.status,
            503,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["error"], "leader_changed", "{path}: {}", r.json());
        assert!(r.retry_after.is_some(), "{path}: no Retry-After");
    }
}
