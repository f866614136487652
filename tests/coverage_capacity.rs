//! Coverage and capacity optimisation on the radio simulator (issue 13): a planted
//! overshooter (a 100 m mast, installed at 0° tilt) and a planted coverage hole, on one
//! simulated network. The overshooter downtilts until its far-user share is under the
//! function's threshold; the cells around the hole grow into it, so more of the hole's demand
//! is served; and no cell ever leaves its operator tilt box.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sonraft_node::son::coverage::OVERSHOOT_SHARE;

const OVERSHOOTER: &str = "S00000-1";
const HOLE: &str = "S00007-1";

/// The planted overshooter's far-user share (percent) and tilt (0.1°), from `GET /state`.
fn overshooter(state: &Value) -> (f64, i64) {
    let o = state["overshooters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["cell"] == OVERSHOOTER)
        .unwrap_or_else(|| panic!("{OVERSHOOTER} not among the overshooters: {state}"));
    (
        o["far_user_pct"].as_f64().unwrap(),
        o["electrical_tilt"].as_i64().unwrap(),
    )
}

/// The hole's demand and the part of it served, Mbit/s.
fn hole(state: &Value) -> (f64, f64) {
    let f = state["faults"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["fault"] == "hole")
        .unwrap_or_else(|| panic!("no hole planted: {state}"));
    (
        f["hole_demand_mbps"].as_f64().unwrap(),
        f["hole_served_mbps"].as_f64().unwrap(),
    )
}

/// Cells of the node's image whose tilt is outside their tilt box.
async fn outside_their_box(c: &Cluster) -> Vec<String> {
    let cells: Value = c
        .client
        .get(&c.nodes[0].api, "/image/cells?consistency=local")
        .await
        .unwrap()
        .json();
    cells
        .as_array()
        .unwrap()
        .iter()
        .filter(|cell| {
            let t = cell["electrical_tilt"].as_i64().unwrap();
            t < cell["tilt_box"]["min"].as_i64().unwrap()
                || t > cell["tilt_box"]["max"].as_i64().unwrap()
        })
        .map(|cell| cell["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overshooter_is_downtilted_and_a_hole_served_inside_every_tilt_box() {
    let dir = tempfile::tempdir().unwrap();
    let hole_at = format!("hole:{HOLE}@0");
    let (sim, c) = simulated_site_with_layout(
        dir.path(),
        &["--overshooter", OVERSHOOTER],
        &["--plant", &hole_at],
    )
    .await;
    let before = sim.state(&c.client).await.unwrap();
    let (far_before, tilt_before) = overshooter(&before);
    let (demand, served_before) = hole(&before);
    assert_eq!(tilt_before, 0, "the overshooter was installed at 0°");
    assert!(
        far_before > OVERSHOOT_SHARE * 100.0,
        "the planted overshooter serves {far_before:.1} % far users"
    );

    let deadline = Instant::now() + Duration::from_secs(45);
    let fixed = loop {
        let s = sim.state(&c.client).await.unwrap();
        let (far, _) = overshooter(&s);
        let (_, served) = hole(&s);
        if far < OVERSHOOT_SHARE * 100.0 && served > served_before {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "not fixed: far users {far:.1} % (from {far_before:.1}), hole served {served:.1} of {demand:.1} Mbit/s (from {served_before:.1})"
        );
        assert_eq!(outside_their_box(&c).await, Vec::<String>::new());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (far, tilt) = overshooter(&fixed);
    let (_, served) = hole(&fixed);
    eprintln!(
        "overshooter {OVERSHOOTER}: far users {far_before:.1} % -> {far:.1} %, tilt {tilt_before} -> {tilt} (0.1°); \
         hole at {HOLE}: {served_before:.1} -> {served:.1} of {demand:.1} Mbit/s served, after {} periods",
        fixed["period"].as_u64().unwrap() - before["period"].as_u64().unwrap()
    );
    assert_eq!(outside_their_box(&c).await, Vec::<String>::new());
    let history: Value = c
        .client
        .get(&c.nodes[0].api, "/image/history?limit=1000")
        .await
        .unwrap()
        .json();
    let applied = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| {
            h["origin"]["function"] == "coverage_capacity" && h["outcome"]["outcome"] == "applied"
        })
        .count();
    assert!(applied > 0, "no coverage_capacity change applied");
}
