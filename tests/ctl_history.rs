//! `sonraft ctl history` as an operator reads it (issue 15): each line has the log time, the
//! function, the outcome, what was written and why, and for a refusal why it was refused;
//! `--cell`, `--function`, `--outcome` and `--since` filter (on the node, so a page holds
//! `--limit` matching records), and `--follow` prints new records as they commit. The real
//! binary against a real one-node cluster on loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn propose(api: &str, set: &str) -> i32 {
    ctl(api, &["propose", "--set", set]).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_filters_and_follows_and_says_why_a_change_was_refused() {
    let c = Cluster::start(1).await;
    c.wait_ready(&c.nodes[0]).await;
    c.import_demo(6).await;
    let api = c.nodes[0].api.clone();
    assert_eq!(propose(&api, "cell/C1:electrical_tilt=45"), 0);
    assert_eq!(propose(&api, "cell/C2:electrical_tilt=50"), 0);
    // Too big a step: refused as invalid (exit 3), and recorded.
    assert_eq!(propose(&api, "cell/C2:electrical_tilt=300"), 3);

    let (code, out, err) = ctl(&api, &["history", "--limit", "50"]);
    assert_eq!(code, 0, "{out}{err}");
    let first = out.lines().next().unwrap_or_default();
    // `2026-12-03 04:01:02Z    index operator ...`
    assert!(
        first.len() > 20
            && first.as_bytes()[4] == b'-'
            && first[10..11] == *" "
            && first[19..20] == *"Z",
        "no UTC time stamp first: {first}"
    );
    assert!(out.contains("refused: "), "no refusal reason shown:\n{out}");

    let (code, out, _) = ctl(&api, &["history", "--cell", "C2"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines.iter().all(|l| l.contains("cell/C2")), "{out}");

    let (code, out, _) = ctl(&api, &["history", "--cell", "C2", "--outcome", "invalid"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("invalid") && out.contains("refused: "),
        "{out}"
    );

    let (code, out, _) = ctl(&api, &["history", "--function", "operator", "--limit", "2"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "two records and how to get more: {out}");
    assert!(
        lines[2].starts_with("more: sonraft ctl history --limit 2 --before ")
            && lines[2].ends_with("--function operator"),
        "{out}"
    );

    let (code, out, _) = ctl(&api, &["history", "--since", "1h", "--outcome", "applied"]);
    assert_eq!(code, 0);
    assert!(out.lines().count() >= 2, "{out}");
    let (code, out, _) = ctl(&api, &["history", "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!((code, out.as_str()), (0, ""), "nothing is that recent");
    let (code, _, err) = ctl(&api, &["history", "--since", "yesterday"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--since"), "{err}");

    // --follow: the newest records, then each new one as it commits.
    let mut follow = Command::new(binary())
        .args(["ctl", "history", "--follow", "--limit", "1", "--cell", "C3"])
        .env("SONRAFT_NODES", &api)
        .env("SONRAFT_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    assert_eq!(propose(&api, "cell/C3:electrical_tilt=45"), 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.contains("cell/C3") => break l,
            Ok(_) | Err(_) => assert!(Instant::now() < deadline, "--follow printed nothing"),
        }
    };
    assert!(line.contains("electrical_tilt=45"), "{line}");
    let _ = follow.kill();
    let _ = follow.wait();
}
