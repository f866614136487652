//! A follower that fell further behind than the leader keeps its log catches up from a
//! snapshot while writes go on, and ends with the same state as the others, every acknowledged
//! change set in its history. `/readyz` answers 503 with a reason until a node is a member that
//! knows a leader and re-applied its own committed log.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// A `/status` number of node `p`.
async fn status_of(c: &Cluster, p: &NodeProc, key: &str) -> u64 {
    c.status(p).await.and_then(|s| s[key].as_u64()).unwrap_or(0)
}

/// Waits up to `within` for `what` to hold.
async fn until<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every `(reason, applied?)` in node `p`'s history, page by page by cursor.
async fn history(c: &Cluster, p: &NodeProc) -> Vec<Value> {
    let mut all = Vec::new();
    let mut before = String::new();
    loop {
        let path = format!("/image/history?limit=500&consistency=local{before}");
        let r = c.client.get(&p.api, &path).await.expect("history");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let page = r.json().as_array().cloned().unwrap_or_default();
        let next = (page.len() == 500)
            .then(|| {
                page.last()
                    .and_then(|h| h["cursor"].as_str().map(str::to_string))
            })
            .flatten();
        all.extend(page);
        match next {
            Some(cursor) => before = format!("&before={cursor}"),
            None => return all,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_purged_log_catches_up_by_snapshot_while_writes_go_on() {
    // A snapshot every 100 entries; the log keeps 200 entries behind it.
    let mut c = Cluster::start_with(3, &["--snapshot-every", "100"]).await;
    // A node nobody made a member is not ready, and says why.
    let stray = NodeProc::start(
        binary(),
        9,
        &c.dir.join("stray"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[],
    )
    .expect("a stray node");
    let r = c.client.get(&stray.api, "/readyz").await.expect("readyz");
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    let reason = r.json()["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("not part of a cluster"), "{reason}");
    drop(stray);
    c.import_demo(30).await;
    let leader = c.leader().await;
    let lagging = (leader + 1) % 3;
    let others = [leader, (leader + 2) % 3];

    // Writers through the two others, each change set with its own token; every
    // acknowledged token is remembered.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = sonraft_client::ApiClient::new(Some(TOKEN.into()), Duration::from_secs(3));
    let mut writers = Vec::new();
    for w in 0..4usize {
        let api = c.nodes[others[w % 2]].api.clone();
        let (acked, stop, client) = (acked.clone(), stop.clone(), client.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let token = format!("t{w}-{n}");
                let body = json!({"origin": {"function": "operator"}, "reason": token,
                    "writes": [{"entity": format!("cell/C{}", (w * 7 + n) % 30), "param": "hysteresis", "value": (n % 2 * 2 + 4) as i64}]});
                match client.post(&api, "/image/changesets", &body).await {
                    Ok(r) if r.status == 200 => acked.lock().await.push(token),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }

    // The follower stops; the others write on until the leader purged the log past all of
    // the follower's.
    until(
        Duration::from_secs(20),
        "writes before the stop",
        || async { acked.lock().await.len() >= 20 },
    )
    .await;
    let applied_before = status_of(&c, &c.nodes[lagging], "last_applied_index").await;
    assert!(c.nodes[lagging].stop().expect("stop"), "a clean stop");
    let held = status_of(&c, &c.nodes[leader], "last_log_index").await;
    until(
        Duration::from_secs(120),
        "the leader purging its log past the stopped follower's",
        || async {
            let leader = c.leader().await;
            status_of(&c, &c.nodes[leader], "purged_index").await > held + 10
        },
    )
    .await;

    // Restarted while the writes go on: until it answers ready, 503 with a reason; once ready,
    // it names a leader and has applied at least what it had before it stopped. (Its "catching
    // up" is re-applying its own committed log, over in moments; what it missed from the
    // others comes after, by snapshot.)
    c.nodes[lagging].restart().expect("restart");
    let acked_at_restart = acked.lock().await.len();
    let not_ready = std::cell::RefCell::new(Vec::new());
    until(Duration::from_secs(30), "the restarted follower ready", || async {
        let r = c
            .client
            .get(&c.nodes[lagging].api, "/readyz")
            .await
            .expect("readyz");
        let v = r.json();
        if r.status == 503 {
            let reason = v["reason"].as_str().unwrap_or_default().to_string();
            assert!(!reason.is_empty(), "a 503 without a reason: {v}");
            not_ready.borrow_mut().push(reason);
            return false;
        }
        assert_eq!(r.status, 200, "{v}");
        assert!(v["leader_id"].as_u64().is_some(), "ready without a leader: {v}");
        let applied = v["last_applied_index"].as_u64().unwrap_or(0);
        assert!(
            applied >= applied_before,
            "ready at applied {applied}, below the {applied_before} it had applied before it stopped"
        );
        true
    })
    .await;
    eprintln!("not ready after the restart: {:?}", not_ready.borrow());
    until(Duration::from_secs(60), "a snapshot installed", || async {
        c.nodes[lagging].log().contains("installed a snapshot")
    })
    .await;
    until(
        Duration::from_secs(30),
        "writes after the catch-up",
        || async { acked.lock().await.len() >= acked_at_restart + 50 },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    // Same state everywhere at the same applied entry; every acknowledged change set there.
    let digests = || async {
        let mut seen = Vec::new();
        for p in &c.nodes {
            let r = c.client.get(&p.api, "/image/digest").await.expect("digest");
            let d = r.json();
            seen.push((d["applied_index"].as_u64(), d["digest"].clone()));
        }
        seen
    };
    until(
        Duration::from_secs(30),
        "equal digests on every node",
        || async {
            let seen = digests().await;
            seen.iter().all(|d| *d == seen[0])
        },
    )
    .await;
    let tokens: std::collections::BTreeSet<String> = history(&c, &c.nodes[lagging])
        .await
        .iter()
        .filter(|h| h["outcome"]["outcome"] == "applied")
        .filter_map(|h| h["reason"].as_str().map(str::to_string))
        .collect();
    let acked = acked.lock().await;
    let lost: Vec<&String> = acked.iter().filter(|t| !tokens.contains(*t)).collect();
    assert!(lost.is_empty(), "the caught-up follower lacks {lost:?}");
    eprintln!(
        "{} acknowledged change sets, all on the follower that caught up by snapshot",
        acked.len()
    );
}
