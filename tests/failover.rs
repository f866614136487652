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

    // Writers: blind hysteresis writes round-robin over the nodes, each with a unique token in
    // its reason; remember every acknowledged (token, cell, value). Several change sets share a
    // log entry (group commit), so an acknowledged index alone could be present for another
    // change set of the same entry while this one was lost.
    let acked = Arc::new(Mutex::new(Vec::<(u64, String, String, i64)>::new()));
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
                let token = format!("w{w}-{n}");
                let body = json!({"origin": {"function": "operator"}, "reason": token,
                    "writes": [{"entity": format!("cell/{cell}"), "param": "hysteresis", "value": value}]});
                if let Ok(r) = client.post(&apis[(w + n) % apis.len()], "/image/changesets", &body).await
                    && r.status == 200
                {
                    acked.lock().await.push((r.json()["index"].as_u64().unwrap(), token, cell, value));
                }
            }
        }));
    }
    let acked_at_least = |n: usize, what: &'static str| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            while acked.lock().await.len() < n {
                assert!(Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    acked_at_least(50, "fewer than 50 writes acknowledged before the kill").await;
    let before_kill = acked.lock().await.len();

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
    // Writes go on while the killed node rejoins and catches up.
    c.wait_ready(&c.nodes[leader]).await;
    let rejoined = acked.lock().await.len();
    acked_at_least(rejoined + 50, "no writes after the node rejoined").await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    let last = acked.iter().map(|a| a.0).max().unwrap();
    c.wait_ready(&c.nodes[leader]).await;
    c.wait_applied(last).await;

    for p in &c.nodes {
        // (token, cell, value, index) of every applied change set this node's history holds.
        let applied: std::collections::BTreeSet<(String, String, i64, u64)> = history(&c, p)
            .await
            .iter()
            .filter(|h| h["outcome"]["outcome"] == "applied")
            .filter_map(|h| {
                let w = &h["writes"][0];
                Some((
                    h["reason"].as_str()?.to_string(),
                    w["entity"].as_str()?.strip_prefix("cell/")?.to_string(),
                    w["value"].as_i64()?,
                    h["index"].as_u64()?,
                ))
            })
            .collect();
        for (index, token, cell, value) in &acked {
            assert!(
                applied.contains(&(token.clone(), cell.clone(), *value, *index)),
                "node {} lost acknowledged change set {token} ({cell} hysteresis={value} at {index})",
                p.id
            );
        }
    }
    eprintln!(
        "{} acknowledged change sets, all present on every node",
        acked.len()
    );
}

/// The whole history of node `p` (its local state), page by page.
async fn history(c: &Cluster, p: &NodeProc) -> Vec<serde_json::Value> {
    const PAGE: usize = 1000;
    let mut all = Vec::new();
    let mut before = String::new();
    loop {
        let path = format!("/image/history?limit={PAGE}&consistency=local{before}");
        let r = c.client.get(&p.api, &path).await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let page = r.json().as_array().cloned().unwrap_or_default();
        let next = match page.last() {
            Some(last) if page.len() == PAGE => last["cursor"].as_str().map(str::to_string),
            _ => None,
        };
        all.extend(page);
        match next {
            Some(cursor) => before = format!("&before={cursor}"),
            None => return all,
        }
    }
}
