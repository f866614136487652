//! `GET /watch` and `sonraft ctl watch` (issue 15): the change stream resumes from the last
//! event id on any node without losing or repeating a record, says when it was asked for what
//! is not held, refuses what it cannot read, and `ctl watch` prints records as they commit,
//! follows the cluster when its node stops, and ends quietly when its reader goes away. Real
//! processes on loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sonraft_client::sse::{EventStream, SseEvent};
use sonraft_client::v1;

/// Proposes one tilt through `ctl` (which reads the version for us); its exit status.
fn propose(api: &str, cell: &str, tilt: i64) -> i32 {
    let set = format!("cell/{cell}:electrical_tilt={tilt}");
    ctl(api, &["propose", "--set", &set, "--reason", "watch test"]).0
}

async fn open(c: &Cluster, api: &str, query: &str, last_id: Option<&str>) -> EventStream {
    let url = format!("{}/watch{query}", sonraft_client::base_url(api));
    let s = c
        .client
        .open_stream(&url, last_id)
        .await
        .expect("open /watch");
    assert_eq!(
        s.status,
        200,
        "{}",
        String::from_utf8_lossy(&s.error_body())
    );
    s
}

/// Reads events until `done` says so (at most 20 s).
async fn read_until(s: &mut EventStream, mut done: impl FnMut(&SseEvent) -> bool) -> Vec<SseEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = s
            .next_event(left.max(Duration::from_millis(1)))
            .await
            .expect("the stream broke")
            .expect("the stream ended");
        let stop = done(&e);
        out.push(e);
        if stop {
            return out;
        }
    }
}

fn ids(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event == "changeset")
        .map(|e| e.id.clone().expect("a changeset event has an id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumed_with_last_event_id_on_another_node_loses_and_repeats_nothing() {
    let c = Cluster::start(3).await;
    c.import_demo(6).await;
    let (a, b) = (c.nodes[0].api.clone(), c.nodes[1].api.clone());
    for (cell, tilt) in [("C1", 45), ("C2", 300), ("C3", 45), ("C4", 50)] {
        propose(&a, cell, tilt);
    }

    // From the start, on node 1: the import, then each proposal, applied or refused with why.
    let mut first = open(&c, &a, "?from_index=1", None).await;
    let seen = read_until(&mut first, |e| {
        e.event == "changeset" && e.data.contains("C3")
    })
    .await;
    let cluster = seen
        .iter()
        .find(|e| e.event == "cluster")
        .map(|e| e.data.clone());
    let refused = seen
        .iter()
        .find(|e| e.event == "changeset" && e.data.contains("\"C2\"") || e.data.contains("cell/C2"))
        .expect("the refused change set is in the stream");
    assert!(refused.data.contains("invalid"), "{}", refused.data);
    let mut got = ids(&seen);
    let last = got.last().cloned().expect("some records");
    drop(first);
    assert!(cluster.is_none() || cluster.as_deref().is_some_and(|c| c.contains("leader_id")));

    // Meanwhile more commits; then node 2 picks up right after the last id node 1 sent.
    for (cell, tilt) in [("C5", 45), ("C1", 46), ("C2", 45)] {
        assert_eq!(propose(&b, cell, tilt), 0);
    }
    // Exactly the history (as the leader holds it), oldest first. Node 2 may apply the last
    // commit a moment after the leader answered it: read until its record, not until
    // `caught_up`, which speaks of node 2's own applied state.
    let history: Vec<v1::HistoryRecord> = c
        .client
        .get(&a, "/image/history?limit=1000&consistency=leader")
        .await
        .expect("history")
        .parse()
        .expect("history records");
    let want: Vec<String> = history.iter().rev().map(|r| r.cursor.clone()).collect();
    let newest = want.last().cloned().expect("a history");
    let mut second = open(&c, &b, "", Some(&last)).await;
    let (mut saw_cluster, mut saw_newest) = (false, false);
    let seen = read_until(&mut second, |e| {
        saw_cluster |= e.event == "cluster";
        saw_newest |= e.id.as_deref() == Some(newest.as_str()) && e.event == "changeset";
        saw_cluster && saw_newest
    })
    .await;
    got.extend(ids(&seen));
    assert_eq!(got, want, "records lost or repeated across the reconnect");
    let cluster: v1::WatchCluster = serde_json::from_str(
        &seen
            .iter()
            .find(|e| e.event == "cluster")
            .expect("a cluster event")
            .data,
    )
    .expect("cluster event");
    assert_eq!((cluster.node, cluster.voters.len()), (2, 3));
    assert!(cluster.leader_id.is_some());

    // Live: a new commit arrives on the open stream.
    let started = Instant::now();
    assert_eq!(propose(&a, "C3", 46), 0);
    let live = read_until(&mut second, |e| e.event == "changeset").await;
    assert!(live.last().is_some_and(|e| e.data.contains("cell/C3")));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_refuses_a_bad_resume_point_and_a_caller_without_the_token() {
    let c = Cluster::start(1).await;
    let api = c.nodes[0].api.clone();
    let url = format!("{}/watch", sonraft_client::base_url(&api));
    let s = c
        .client
        .open_stream(&url, Some("twelve"))
        .await
        .expect("answer");
    assert_eq!(s.status, 400);
    assert!(String::from_utf8_lossy(&s.error_body()).contains("bad_last_event_id"));
    let s = c
        .client
        .open_stream(&format!("{url}?from_index=x"), None)
        .await
        .expect("answer");
    assert_eq!(s.status, 400);
    let anonymous = sonraft_client::ApiClient::new(None, Duration::from_secs(5));
    let s = anonymous.open_stream(&url, None).await.expect("answer");
    assert_eq!(s.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_asked_for_records_no_longer_held_says_so_first() {
    let c = Cluster::start(1).await;
    let api = c.nodes[0].api.clone();
    // A history of 4 records: older ones are dropped as new ones come.
    let mut image = demo_image(6);
    image["policy"] = serde_json::json!({"history_keep": 4});
    c.import(&image).await;
    for tilt in [41, 42, 43, 44, 45, 46] {
        assert_eq!(propose(&api, "C1", tilt), 0);
    }
    let mut s = open(&c, &api, "?from_index=1", None).await;
    let seen = read_until(&mut s, |e| e.event == "caught_up").await;
    assert_eq!(seen[0].event, "gap", "the gap comes first: {seen:?}");
    let gap: v1::WatchGap = serde_json::from_str(&seen[0].data).expect("gap event");
    assert_eq!(gap.asked_from, "1.0");
    let records = ids(&seen);
    assert_eq!(records.len(), 4, "what is held is sent: {records:?}");
    assert!(
        records[0].starts_with(&format!("{}.", gap.oldest_held)),
        "{records:?} {gap:?}"
    );

    // From a point still held: no gap.
    let mut s = open(&c, &api, &format!("?from_index={}", gap.oldest_held), None).await;
    let seen = read_until(&mut s, |e| e.event == "caught_up").await;
    assert!(seen.iter().all(|e| e.event != "gap"), "{seen:?}");
}

/// Lines of a child's stdout, as they come.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    rx
}

fn wait_line(rx: &std::sync::mpsc::Receiver<String>, what: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                seen.push(l.clone());
                if l.contains(what) {
                    return l;
                }
            }
            Err(_) => assert!(
                Instant::now() < deadline,
                "no line with {what:?}; printed:\n{}",
                seen.join("\n")
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_watch_prints_changes_as_they_commit_and_follows_the_cluster_when_its_node_stops() {
    let mut c = Cluster::start(3).await;
    c.import_demo(6).await;
    let nodes = format!("{},{}", c.nodes[0].api, c.nodes[1].api);
    let mut watch = Command::new(binary())
        .args(["ctl", "watch", "--cell", "C1"])
        .env("SONRAFT_NODES", &nodes)
        .env("SONRAFT_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ctl watch");
    let rx = lines_of(&mut watch);
    let mut seen = Vec::new();
    wait_line(&rx, "cluster: leader", &mut seen);

    let b = c.nodes[1].api.clone();
    assert_eq!(propose(&b, "C2", 45), 0, "filtered out: another cell");
    assert_eq!(propose(&b, "C1", 45), 0);
    let line = wait_line(&rx, "electrical_tilt=45", &mut seen);
    // `2026-12-03 04:01:02Z    index operator  applied  cell/C1 electrical_tilt=45  [watch test]`
    assert!(
        line.as_bytes().get(4) == Some(&b'-') && line.get(19..20) == Some("Z"),
        "no UTC time first: {line}"
    );
    assert!(
        line.contains("operator") && line.contains("applied") && line.contains("[watch test]"),
        "{line}"
    );

    // The node it watches stops: it goes on at the other, from where it was.
    let stopping = Instant::now();
    c.nodes[0].stop().expect("stop node 1");
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "a node with a stream open took {:?} to stop",
        stopping.elapsed()
    );
    assert_eq!(propose(&b, "C1", 46), 0);
    wait_line(&rx, "electrical_tilt=46", &mut seen);
    assert_eq!(
        seen.iter()
            .filter(|l| l.contains("electrical_tilt=45"))
            .count(),
        1,
        "a record printed twice:\n{}",
        seen.join("\n")
    );
    assert!(
        !seen.iter().any(|l| l.contains("cell/C2")),
        "{}",
        seen.join("\n")
    );
    eprintln!("ctl watch printed:\n{}", seen.join("\n"));
    let _ = watch.kill();
    let _ = watch.wait();

    // A reader that goes away ends it quietly.
    let mut head = Command::new(binary())
        .args(["ctl", "watch", "--json", "--from-index", "1"])
        .env("SONRAFT_NODES", &b)
        .env("SONRAFT_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ctl watch --json");
    let mut out = BufReader::new(head.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("a line");
    let v: serde_json::Value = serde_json::from_str(&first).expect("one JSON object per line");
    assert!(v.is_object(), "{first}");
    drop(out);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = head.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "ctl watch kept running without a reader"
        );
        // Something to write, so that it notices.
        propose(
            &b,
            "C4",
            45 + (Instant::now().elapsed().as_nanos() % 2) as i64,
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status.code(), Some(0));
}
