//! What `sonraft ctl` shows a person (issue 15): a cell's parameters in degrees and decibels
//! beside the stored integers, changes with their units in the history, and `status` finding
//! every member of the cluster from one address. The real binary against real nodes.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_and_changes_read_in_units_and_status_finds_every_member() {
    let c = Cluster::start(3).await;
    c.import_demo(6).await;
    let one = c.nodes[2].api.clone();

    let (code, out, err) = ctl(&one, &["propose", "--set", "cell/C1:electrical_tilt=45"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = ctl(&one, &["cell", "C1"]);
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        "electrical tilt  4.5°",
        "dBm",
        "hysteresis",
        " dB",
        "ms",
        "by operator at ",
    ] {
        assert!(out.contains(needle), "{needle:?} in\n{out}");
    }
    // --json stays the API's own JSON, stored units.
    let (_, out, _) = ctl(&one, &["cell", "C1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["electrical_tilt"], 45);
    let (_, out, _) = ctl(&one, &["history", "--cell", "C1"]);
    assert!(out.contains("electrical_tilt=45 (4.5°)"), "{out}");

    // One address: all three rows, two of them found through the first.
    let (code, out, err) = ctl(&one, &["status"]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(
        rows.iter().filter(|r| r.contains("not in --nodes")).count(),
        2,
        "{out}"
    );
    // A member that is down makes the status incomplete: exit 1, not 0.
    let mut c = c;
    c.nodes[0].kill9();
    let (code, out, err) = ctl(&one, &["status"]);
    assert_eq!(code, 1, "{out}{err}");
}
