//! Cell outage detection on the radio simulator (issue 13): no alarm while the network is
//! healthy; a hard outage (the antenna stops and its session closes) and a sleeping cell
//! (reports, serves nobody) planted on the simulator are detected within a few periods by the
//! site that owns the cell, and clear when the cell is back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use sonraft_testkit::local_cluster::SimProc;

/// `sonraft_son_cells_in_outage{kind}` on the node's `/metrics`.
async fn in_outage(c: &Cluster, kind: &str) -> u64 {
    metric(
        c,
        &format!("sonraft_son_cells_in_outage{{kind=\"{kind}\"}} "),
    )
    .await as u64
}

async fn sim_period(c: &Cluster, sim: &SimProc) -> u64 {
    sim.state(&c.client).await.unwrap()["period"]
        .as_u64()
        .unwrap()
}

/// Plants `fault` on `cell`, waits until the node counts one cell of `kind` in outage, and
/// returns after how many simulator periods (from the simulator's count when it planted it).
async fn detect(c: &Cluster, sim: &SimProc, cell: &str, fault: &str, kind: &str) -> u64 {
    let r = c
        .client
        .post(
            &sim.status,
            "/fault",
            &json!({"cell": cell, "fault": fault}),
        )
        .await
        .unwrap();
    assert!(
        r.status.is_success(),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let planted_at = r.json()["period"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if in_outage(c, kind).await == 1 {
            return sim_period(c, sim).await - planted_at;
        }
        assert!(Instant::now() < deadline, "{fault} at {cell} not detected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn clear(c: &Cluster, sim: &SimProc, cell: &str, kind: &str) {
    let r = c
        .client
        .post(
            &sim.status,
            "/fault",
            &json!({"cell": cell, "fault": "clear"}),
        )
        .await
        .unwrap();
    assert!(r.status.is_success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while in_outage(c, kind).await != 0 {
        assert!(Instant::now() < deadline, "{cell} still counted in outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_outages_and_sleeping_cells_are_detected_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, c) = simulated_site(dir.path(), &[]).await;

    // Twenty healthy periods with the SON running: no alarm.
    let start = sim_period(&c, &sim).await;
    while sim_period(&c, &sim).await < start + 20 {
        assert_eq!(in_outage(&c, "hard").await, 0, "false hard outage");
        assert_eq!(in_outage(&c, "sleeping").await, 0, "false sleeping cell");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let hard = detect(&c, &sim, "S00002-2", "outage", "hard").await;
    eprintln!("hard outage detected {hard} periods after it was planted");
    // The cell's station stays connected: the first period without its report is taken for
    // late, until the second shows that report never came.
    assert!(hard <= 2, "hard outage detected only after {hard} periods");
    clear(&c, &sim, "S00002-2", "hard").await;

    let sleeping = detect(&c, &sim, "S00003-1", "sleeping", "sleeping").await;
    eprintln!("sleeping cell detected {sleeping} periods after it was planted");
    assert!(
        sleeping <= 2,
        "sleeping cell detected only after {sleeping} periods"
    );
    clear(&c, &sim, "S00003-1", "sleeping").await;
}

/// `late_reports` of the node's antenna summary: reports that arrived for a closed period.
async fn late_reports(c: &Cluster) -> u64 {
    let a = c
        .client
        .get(&c.nodes[0].api, "/antennas?limit=0")
        .await
        .unwrap()
        .json();
    a["summary"]["late_reports"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_whose_reports_always_arrive_late_is_not_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, c) = simulated_site(dir.path(), &[]).await;
    let start = sim_period(&c, &sim).await;
    while sim_period(&c, &sim).await < start + 4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c
        .client
        .post(
            &sim.status,
            "/fault",
            &json!({"cell": "S00002-2", "fault": "late"}),
        )
        .await
        .unwrap();
    assert!(
        r.status.is_success(),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // Ten periods of late reports: each arrives after its period closed, and the session
    // stays up. That is no outage.
    let late_before = late_reports(&c).await;
    let planted = sim_period(&c, &sim).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim_period(&c, &sim).await < planted + 10 {
        assert_eq!(
            in_outage(&c, "hard").await,
            0,
            "a cell with late reports was taken for a hard outage"
        );
        assert!(Instant::now() < deadline, "the simulator stalled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late = late_reports(&c).await - late_before;
    eprintln!("{late} late reports in 10 periods, no outage");
    assert!(
        late >= 6,
        "only {late} reports arrived late: the fault did not bite"
    );
}
