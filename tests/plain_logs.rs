//! Logs written to a file or a pipe are plain text: ANSI colour codes belong on a terminal
//! only (issue 15: the bootstrap's `node.log` and `sim.log` held them).

mod common;

use std::time::{Duration, Instant};

use common::*;
use sonraft_testkit::local_cluster::SimProc;

/// Waits until `read()` holds `needle`; what it held last.
fn wait_for(mut read: impl FnMut() -> String, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = read();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_simulator_logs_written_to_files_hold_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProc::start(
        binary(),
        dir.path(),
        &[
            "--cells",
            "30",
            "--period-ms",
            "1000",
            "--regions",
            "site-1",
        ],
    )
    .unwrap();
    let c = Cluster::start_with(1, &["--antennas", &sim.antennas[0]]).await;
    c.wait_ready(&c.nodes[0]).await;

    let sim_log = wait_for(
        || std::fs::read_to_string(dir.path().join("sim.log")).unwrap_or_default(),
        "simulator listening",
    );
    let node_log = wait_for(|| c.nodes[0].log(), "INFO");

    assert!(sim_log.contains("simulator listening"), "{sim_log}");
    assert!(node_log.contains("INFO"), "{node_log}");
    assert!(
        !sim_log.contains('\x1b'),
        "colour codes in sim.log:\n{sim_log}"
    );
    assert!(
        !node_log.contains('\x1b'),
        "colour codes in node.log:\n{node_log}"
    );
}
