//! `sonraft ctl` as a script sees it (issue 15, "a CLI that scripts can trust"): the exit
//! status says which kind of failure it was (0 ok, 1 the cluster said no or is unhealthy,
//! 2 usage, 3 a change refused as given, 4 no node answered), no address is assumed when none
//! is given, a reader that closes the pipe early ends it quietly, and a dry run says what it
//! would do. The real binary against a real one-node cluster on loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;

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

/// Runs `sonraft ctl ARGS`; its exit status, stdout and stderr.
fn ctl(nodes: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = ctl_command(nodes, token, args).output().expect("run ctl");
    (
        status.code().expect("ctl ended by a signal"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A one-node cluster holding the demo image of `cells` cells; its API address.
async fn cluster_with(cells: usize) -> (Cluster, String) {
    let c = Cluster::start(1).await;
    c.wait_ready(&c.nodes[0]).await;
    c.import_demo(cells).await;
    let api = c.nodes[0].api.clone();
    (c, api)
}

/// An address nothing listens on: a port the OS gave out and that was closed again.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// What `ctl cell ID --json` shows.
fn cell(api: &str, id: &str) -> Value {
    let (code, out, err) = ctl(api, TOKEN, &["cell", id, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).expect("ctl --json prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_the_cluster_carries_out_exit_0() {
    let (_c, api) = cluster_with(6).await;
    for args in [
        &["status"][..],
        &["cells"],
        &["cell", "C1"],
        &["members"],
        &["history"],
        &["health", "--allow-no-fault-tolerance"],
        &["propose", "--set", "cell/C1:electrical_tilt=45"],
    ] {
        let (code, out, err) = ctl(&api, TOKEN, args);
        assert_eq!(code, 0, "ctl {args:?}: {out}{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_says_no_or_is_unhealthy_exits_1() {
    let (_c, api) = cluster_with(6).await;
    // Every node answers 401: the table shows why, and the status is not 0.
    let (code, out, err) = ctl(&api, "wrong-token", &["status"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("401"), "{out}");
    let (code, out, err) = ctl(&api, "wrong-token", &["cells"]);
    assert_eq!(code, 1, "{out}{err}");
    // One voter: the cluster cannot lose one.
    let (code, out, err) = ctl(&api, TOKEN, &["health"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("unhealthy"), "{err}");
    let (code, out, err) = ctl(&api, TOKEN, &["cell", "NO-SUCH-CELL"]);
    assert_eq!(code, 1, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_before_anything_is_sent() {
    let nodes = closed_port();
    for args in [
        &["cells", "--no-such-flag"][..],
        &["no-such-command"],
        &["propose", "--set", "cell/C1-electrical_tilt"],
        &["propose", "--file", "/no/such/file.json"],
        &["import", "/no/such/image.json"],
    ] {
        let (code, out, err) = ctl(&nodes, TOKEN, args);
        assert_eq!(code, 2, "ctl {args:?}: {out}{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_comes_from_the_environment_or_a_file_never_the_command_line() {
    use std::os::unix::fs::PermissionsExt;
    let (_c, api) = cluster_with(6).await;
    // On the command line: refused before anything is sent, with the two ways that work.
    let (code, out, err) = ctl(&api, "", &["cells", "--token", TOKEN]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("SONRAFT_TOKEN") && err.contains("--token-file"),
        "{err}"
    );
    // From a private file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file = file.display().to_string();
    let (code, out, err) = ctl(&api, "", &["cells", "--token-file", &file]);
    assert_eq!(code, 0, "{out}{err}");
    // A file any user may read is refused, with the fix.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = ctl(&api, "", &["cells", "--token-file", &file]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("chmod 600"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nodes_ctl_names_both_ways_to_give_them_and_exits_2() {
    let (code, out, err) = ctl("", TOKEN, &["status"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("--nodes") && err.contains("SONRAFT_NODES"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_info_names_its_node_and_needs_no_nodes() {
    let (_c, api) = cluster_with(3).await;
    let (code, out, err) = ctl("", TOKEN, &["node-info", &api]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("role=leader"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_read_version_and_an_invalid_change_set_exit_3() {
    let (_c, api) = cluster_with(6).await;
    let version = cell(&api, "C2")["version"].as_u64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.json");
    std::fs::write(&stale, tilt("C2", version + 7, 40).to_string()).unwrap();
    let (code, out, err) = ctl(&api, TOKEN, &["propose", "--file", stale.to_str().unwrap()]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.starts_with("conflict"), "{out}");

    let (code, out, err) = ctl(
        &api,
        TOKEN,
        &["propose", "--set", "cell/C2:electrical_tilt=2000"],
    );
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.starts_with("invalid"), "{out}");
    // A dry run of it is refused the same way.
    let (code, out, err) = ctl(
        &api,
        TOKEN,
        &[
            "propose",
            "--dry-run",
            "--set",
            "cell/C2:electrical_tilt=2000",
        ],
    );
    assert_eq!(code, 3, "{out}{err}");
    assert_eq!(
        cell(&api, "C2")["version"],
        version,
        "a refused change applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_answering_exits_4() {
    let nodes = format!("{},{}", closed_port(), closed_port());
    for args in [
        &["status"][..],
        &["cells"],
        &["health"],
        &["propose", "--set", "cell/C1:electrical_tilt=45"],
    ] {
        let (code, out, err) = ctl(&nodes, TOKEN, args);
        assert_eq!(code, 4, "ctl {args:?}: {out}{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_says_what_it_would_apply_and_applies_nothing() {
    let (_c, api) = cluster_with(6).await;
    let before = cell(&api, "C4");
    let (code, out, err) = ctl(
        &api,
        TOKEN,
        &[
            "propose",
            "--dry-run",
            "--set",
            "cell/C4:electrical_tilt=45",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("dry run: would apply cell/C4 electrical_tilt=45"),
        "{out}"
    );
    assert!(!out.contains("applied at index"), "{out}");
    assert_eq!(cell(&api, "C4"), before, "a dry run changed the cell");
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
