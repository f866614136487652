//! `kill -9` of the leader under writes: a new leader takes writes, the killed node rejoins
//! from its data directory and catches up, and no acknowledged change set is lost.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_change_set() {
    let mut c = Cluster::start(3).await;
    c.import_demo(30).await;
    let leader = c.leader().await;
    let apis: Vec<String> = c.nodes.iter().map(|p| p.api.clone()).collect();

    // Writers: blind hysteresis writes round-robin over the nodes; remember every ack.
    let acked = Arc::new(Mutex::new(Vec::<(u64, String, i64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4usize {
        let (acked, stop, apis, client) =
            (acked.clone(), stop.clone(), apis.clone(), c.client.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let cell = format!("C{}", (w * 7 + n) % 30);
                let value = (n % 2 * 2 + 4) as i64;
                let body = json!({"origin": {"function": "operator"}, "reason": "load",
                    "writes": [{"entity": format!("cell/{cell}"), "param": "hysteresis", "value": value}]});
                if let Ok(r) = client.post(&apis[(w + n) % apis.len()], "/image/changesets", &body).await
                    && r.status == 200
                {
                    acked.lock().await.push((r.json()["index"].as_u64().unwrap(), cell, value));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_kill = acked.lock().await.len();
    assert!(before_kill > 0, "no write acknowledged before the kill");

    let killed_at = Instant::now();
    c.nodes[leader].kill9();
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);
    // The first write acknowledged after the kill.
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.lock().await.len() <= before_kill + 5 {
        assert!(Instant::now() < deadline, "no writes after the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "writes resumed {} ms after the kill",
        killed_at.elapsed().as_millis()
    );

    c.nodes[leader].restart().expect("restart");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    let last = acked.iter().map(|a| a.0).max().unwrap();
    c.wait_ready(&c.nodes[leader]).await;
    c.wait_applied(last).await;

    for p in &c.nodes {
        let r = c
            .client
            .get(&p.api, "/image/history?limit=100000&consistency=local")
            .await
            .unwrap();
        let history = r.json();
        let applied: std::collections::BTreeSet<u64> = history
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["outcome"]["outcome"] == "applied")
            .filter_map(|h| h["index"].as_u64())
            .collect();
        for (index, cell, value) in &acked {
            assert!(
                applied.contains(index),
                "node {} lost acknowledged change set {index} ({cell}={value})",
                p.id
            );
        }
    }
    eprintln!(
        "{} acknowledged change sets, all present on every node",
        acked.len()
    );
}
