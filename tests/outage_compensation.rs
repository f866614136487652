//! Cell outage compensation on the radio simulator (issue 13): a whole cell site fails (its
//! four cells in hard outage); the owning site detects it, the neighbours pointing at it
//! uptilt and raise power, more of the outage area's demand is served, and when the site
//! returns every compensation is reverted.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use sonraft_testkit::local_cluster::SimProc;

const SITE: [&str; 4] = ["S00000-1", "S00000-2", "S00000-3", "S00000-4"];

async fn in_outage(c: &Cluster) -> u64 {
    metric(c, "sonraft_son_cells_in_outage{kind=\"hard\"} ").await as u64
}

/// Share of the failed cells' area demand served now, percent.
fn area_served(state: &Value) -> f64 {
    let (mut d, mut s) = (0.0, 0.0);
    for f in state["faults"].as_array().into_iter().flatten() {
        d += f["area_demand_mbps"].as_f64().unwrap_or(0.0);
        s += f["area_served_mbps"].as_f64().unwrap_or(0.0);
    }
    if d > 0.0 { s * 100.0 / d } else { 100.0 }
}

/// Cells whose tilt or power differs from the exported 4.0° / 46 dBm.
fn changed(state: &Value) -> Vec<String> {
    state["configs"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, c)| c["electrical_tilt"] != 40 || c["max_tx_power_dbm"] != 46)
        .map(|(id, _)| id.clone())
        .collect()
}

async fn wait_periods(c: &Cluster, sim: &SimProc, n: u64) -> Value {
    let from = sim.state(&c.client).await.unwrap()["period"]
        .as_u64()
        .unwrap();
    loop {
        let s = sim.state(&c.client).await.unwrap();
        if s["period"].as_u64().unwrap() >= from + n {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neighbours_compensate_a_failed_site_and_go_back_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    // Night (real time from 02:00): the neighbours have capacity to spare, so what the
    // outage takes away is coverage, which compensation can give back.
    let (sim, c) =
        simulated_site(dir.path(), &["--day-seconds", "86400", "--start-hour", "2"]).await;
    let settled = wait_periods(&c, &sim, 6).await;
    let before = changed(&settled);

    for cell in SITE {
        let r = c
            .client
            .post(
                &sim.status,
                "/fault",
                &json!({"cell": cell, "fault": "outage"}),
            )
            .await
            .unwrap();
        assert!(
            r.status.is_success(),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while in_outage(&c).await < 4 {
        assert!(
            Instant::now() < deadline,
            "the site's outage was not detected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let detected = sim.state(&c.client).await.unwrap();
    let without = area_served(&detected);

    // Compensation lands, and the area is better served once it did.
    let deadline = Instant::now() + Duration::from_secs(30);
    let compensating = loop {
        let s = sim.state(&c.client).await.unwrap();
        let now: Vec<String> = changed(&s)
            .into_iter()
            .filter(|x| !before.contains(x))
            .collect();
        if !now.is_empty() {
            break now;
        }
        assert!(Instant::now() < deadline, "no neighbour compensated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let after = wait_periods(&c, &sim, 4).await;
    let with = area_served(&after);
    eprintln!(
        "site outage: area demand served {without:.1} % when detected, {with:.1} % with {} cells compensating ({compensating:?})",
        changed(&after).len()
    );
    assert!(
        with > without,
        "compensation did not help: {without:.1} % -> {with:.1} %"
    );
    let history: Value = c
        .client
        .get(&c.nodes[0].api, "/image/history?limit=1000")
        .await
        .unwrap()
        .json();
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["origin"]["function"] == "outage_compensation"
                && h["outcome"]["outcome"] == "applied"),
        "no applied compensation in the history"
    );

    // The site returns: every compensation is reverted within two periods of the first of its
    // cells coming back (the simulator's period count when it did).
    let mut cleared = u64::MAX;
    for cell in SITE {
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
        cleared = cleared.min(r.json()["period"].as_u64().unwrap());
    }
    loop {
        let s = sim.state(&c.client).await.unwrap();
        let left: Vec<String> = changed(&s)
            .into_iter()
            .filter(|x| compensating.contains(x))
            .collect();
        if left.is_empty() {
            eprintln!(
                "compensation reverted {} periods after the outage cleared",
                s["period"].as_u64().unwrap() - cleared
            );
            break;
        }
        assert!(
            s["period"].as_u64().unwrap() <= cleared + 2,
            "still compensating {left:?} 2 periods after the outage cleared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
