//! `sonraft ctl` as a script sees it (issue 15, "a CLI that scripts can trust"): a reader that
//! closes the pipe early ends it quietly. The real binary against a real one-node cluster on
//! loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

/// `sonraft ctl ARGS` with `--nodes nodes` (none when empty) and `token`, and nothing from the
/// environment of the test.
fn ctl_command(nodes: &str, token: &str, args: &[&str]) -> Command {
    let mut c = Command::new(binary());
    c.arg("ctl")
        .args(args)
        .env_remove("SONRAFT_NODES")
        .env_remove("SONRAFT_TOKEN")
        .env("SONRAFT_TOKEN", token);
    if !nodes.is_empty() {
        c.env("SONRAFT_NODES", nodes);
    }
    c
}

/// A one-node cluster holding the demo image of `cells` cells; its API address.
async fn cluster_with(cells: usize) -> (Cluster, String) {
    let c = Cluster::start(1).await;
    c.wait_ready(&c.nodes[0]).await;
    c.import_demo(cells).await;
    let api = c.nodes[0].api.clone();
    (c, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_closes_the_pipe_after_one_line_ends_ctl_quietly() {
    // More table than a pipe buffers (64 KiB), so that ctl still writes after the reader left.
    let (_c, api) = cluster_with(2000).await;
    let mut child = ctl_command(&api, TOKEN, &["cells"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ctl");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader (and with it the pipe's read end) is gone here, as after `| head -1`.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(first.starts_with("cell "), "{first}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}
