//! The log on disk is bounded by its bytes, not only by its entry count: a node snapshots once
//! the log written since its last snapshot reaches `--snapshot-log-bytes`, and purges behind it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_snapshots_and_purges_when_its_log_reaches_its_byte_budget() {
    // The count alone would wait for 100 000 entries.
    let c = Cluster::start_with(
        1,
        &[
            "--snapshot-every",
            "100000",
            "--snapshot-log-bytes",
            "64KiB",
        ],
    )
    .await;
    c.import_demo(10).await;
    let api = c.nodes[0].api.clone();
    let status = |key: &'static str| {
        let c = &c;
        async move {
            c.status(&c.nodes[0])
                .await
                .and_then(|s| s[key].as_u64())
                .unwrap_or(0)
        }
    };
    assert_eq!(status("snapshot_index").await, 0, "no snapshot yet");

    // Change sets of ~1 KB each (a long reason) until the node purged: a snapshot by size,
    // then more of them once the log outgrew the 200 entries kept behind a snapshot.
    let padding = "x".repeat(900);
    let mut written = 0;
    while status("purged_index").await == 0 {
        assert!(
            written < 3000,
            "no purge after {written} change sets: snapshot at {}, log at {}",
            status("snapshot_index").await,
            status("last_log_index").await
        );
        for n in written..written + 50 {
            let body = json!({"origin": {"function": "operator"}, "reason": format!("{n} {padding}"),
                "writes": [{"entity": format!("cell/C{}", n % 10), "param": "hysteresis", "value": (n % 2 * 2 + 4) as i64}]});
            let r = c
                .client
                .post(&api, "/image/changesets", &body)
                .await
                .expect("post");
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        }
        written += 50;
        // The size is looked at every second.
        let deadline = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < deadline && status("purged_index").await == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let snapshot = status("snapshot_index").await;
    assert!(
        snapshot > 200,
        "snapshot at {snapshot}, by size: the count is 100 000"
    );
}
