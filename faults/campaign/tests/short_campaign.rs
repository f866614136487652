//! The CI form of the fault campaign: two minutes of every fault kind against three real
//! node processes, with a fixed seed, and no anomaly allowed.
//!
//! It needs root, /dev/fuse, iproute2, iptables and libfaketime, and the `sonraft` and
//! `sonraft-lazyfs` binaries of this workspace (built by `cargo test --workspace`). Without
//! them it fails and says what to install: a fault campaign that silently does not run
//! proves nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sonraft_campaign::prerequisites;

/// Namespaces and run names of this test start with it, so that a run killed with the test
/// is torn down by the next one (and by `Drop` below).
const PREFIX: &str = "sctst";

/// The campaign process; ends it and tears down whatever it left if the test fails.
struct Running {
    child: Option<Child>,
    campaign: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM makes the campaign tear down its namespaces, mounts and nodes.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
        let _ = Command::new(&self.campaign)
            .args(["cleanup", "--prefix", PREFIX])
            .status();
    }
}

fn sibling(campaign: &Path, name: &str) -> PathBuf {
    campaign
        .parent()
        .map_or_else(|| PathBuf::from(name), |d| d.join(name))
}

#[test]
fn a_short_campaign_of_every_fault_kind_finds_no_anomaly() {
    let campaign = PathBuf::from(env!("CARGO_BIN_EXE_sonraft-campaign"));
    let sonraft = sibling(&campaign, "sonraft");
    let lazyfs = sibling(&campaign, "sonraft-lazyfs");
    let missing = prerequisites::missing(&sonraft, Some(&lazyfs));
    assert!(
        missing.is_empty(),
        "the fault campaign cannot run here; missing: {}",
        missing
            .iter()
            .map(|m| format!("{} ({})", m.what, m.fix))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let run_dir = std::env::temp_dir().join(format!("sonraft-campaign-ci-{}", std::process::id()));
    let child = Command::new(&campaign)
        .args([
            "run",
            "--seconds",
            "120",
            "--min-per-kind",
            "3",
            "--max-seconds",
            "420",
        ])
        .args(["--seed", "7", "--prefix", PREFIX])
        .arg("--sonraft")
        .arg(&sonraft)
        .arg("--lazyfs")
        .arg(&lazyfs)
        .arg("--run-dir")
        .arg(&run_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start sonraft-campaign");
    let mut running = Running {
        child: Some(child),
        campaign: campaign.clone(),
    };
    let output = running
        .child
        .take()
        .expect("the campaign process")
        .wait_with_output()
        .expect("the campaign did not finish");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "the campaign found anomalies or failed ({}); run directory kept at {}",
        output.status,
        run_dir.display()
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("summary.json")).expect("summary.json"),
    )
    .expect("summary.json is JSON");
    for kind in [
        "power-loss",
        "kill",
        "pause",
        "partition",
        "clock",
        "membership",
        "combined",
    ] {
        let n = summary["faults"]["by_kind"][kind].as_u64().unwrap_or(0);
        assert!(
            n >= 3,
            "only {n} faults of kind {kind} were injected; see {}",
            run_dir.display()
        );
    }
    let _ = std::fs::remove_dir_all(&run_dir);
}
