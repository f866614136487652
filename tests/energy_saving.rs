//! Energy saving on the radio simulator (issue 13): at night an NR capacity cell goes dormant
//! (pushed to its antenna), its LTE partner carries its users under the ceiling, and when the
//! partner fails (a hard outage planted on the simulator: its antenna session closes) the
//! capacity cell is woken at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn capacity_cells(state: &Value) -> Vec<Value> {
    state["capacity_cells"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capacity_cell_sleeps_at_night_and_wakes_when_its_partner_fails() {
    let dir = tempfile::tempdir().unwrap();
    // A real-time day starting at 04:00: the night trough for the whole test.
    let (sim, c) =
        simulated_site(dir.path(), &["--day-seconds", "86400", "--start-hour", "4"]).await;
    let api = c.nodes[0].api.clone();

    // Night: a capacity cell goes dormant, and its antenna has it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let sleeping = loop {
        let s = sim.state(&c.client).await.unwrap();
        if let Some(cell) = capacity_cells(&s)
            .into_iter()
            .find(|x| x["dormant"] == true)
        {
            break cell;
        }
        assert!(
            Instant::now() < deadline,
            "no capacity cell went dormant: {:?}",
            capacity_cells(&s)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (cell, partner) = (
        sleeping["cell"].as_str().unwrap().to_string(),
        sleeping["partner"].as_str().unwrap().to_string(),
    );
    // While it sleeps, the partner stays under the ceiling the function promises.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = sim.state(&c.client).await.unwrap();
        let now = capacity_cells(&s)
            .into_iter()
            .find(|x| x["cell"] == cell.as_str())
            .unwrap();
        assert_eq!(now["dormant"], true, "woke without cause: {now}");
        assert!(now["partner_prb_dl_pct"].as_f64().unwrap() < 75.0, "{now}");
    }

    // The partner fails: its antenna stops and its session closes. The cell wakes at once.
    let r = c
        .client
        .post(
            &sim.status,
            "/fault",
            &json!({"cell": partner, "fault": "outage"}),
        )
        .await
        .unwrap();
    assert!(
        r.status.is_success(),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let planted = Instant::now();
    loop {
        let s = sim.state(&c.client).await.unwrap();
        let now = capacity_cells(&s)
            .into_iter()
            .find(|x| x["cell"] == cell.as_str())
            .unwrap();
        if now["dormant"] == false {
            break;
        }
        assert!(
            planted.elapsed() < Duration::from_secs(20),
            "{cell} still dormant after its partner {partner} failed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let history: Value = c
        .client
        .get(&api, "/image/history?limit=1000")
        .await
        .unwrap()
        .json();
    let reasons: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["origin"]["function"] == "energy_saving")
        .filter_map(|h| h["reason"].as_str())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&format!("coverage partner {partner} is down or silent"))),
        "{reasons:?}"
    );
    // The failed cell is silent on the node: its base station's session stays up for the other
    // cells, but its own reports stopped (a per-cell session would be down).
    let antennas: Value = c
        .client
        .get(&api, "/antennas?limit=100")
        .await
        .unwrap()
        .json();
    let failed = antennas["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["cell"] == partner.as_str());
    assert!(
        failed.is_some_and(|s| s["connected"] == false || s["lag_ms"].as_u64() > Some(1_000)),
        "{partner}'s session: {failed:?}"
    );
}
