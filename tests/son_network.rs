//! A three-node cluster with a simulator of 300 cells reporting every second: the SON
//! functions fix the planted problems on the simulated network, and every committed change
//! reaches the antennas.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sonraft::local_cluster::SimProc;

const REGIONS: &str = "site-1,site-2,site-3";

fn export(cells: usize) -> Value {
    let out = std::process::Command::new(binary())
        .args([
            "sim",
            "export",
            "--cells",
            &cells.to_string(),
            "--regions",
            REGIONS,
            "--cooldown-ms",
            "2000",
        ])
        .output()
        .expect("sim export");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("image json")
}

fn planted_fixed(s: &Value) -> Result<(), String> {
    let n = |k: &str| s[k].as_array().map_or(usize::MAX, Vec::len);
    if n("pci_collisions") > 0 || n("pci_confusions") > 0 {
        return Err(format!(
            "PCI: {} collisions, {} confusions",
            s["pci_collisions"], s["pci_confusions"]
        ));
    }
    for o in s["overloaded"].as_array().into_iter().flatten() {
        let (prb, nb) = (
            o["prb_dl_pct"].as_f64().unwrap_or(100.0),
            o["max_neighbour_prb_dl_pct"].as_f64().unwrap_or(100.0),
        );
        if prb >= 80.0 || nb >= 80.0 {
            return Err(format!("overload: {o}"));
        }
    }
    for l in s["late"].as_array().into_iter().flatten() {
        let (now, before) = (
            l["too_late_ratio"].as_f64().unwrap_or(1.0),
            l["initial_too_late_ratio"].as_f64().unwrap_or(0.0),
        );
        if now >= before || now > 0.03 {
            return Err(format!("too-late handovers: {l}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn son_functions_fix_the_planted_problems_and_every_change_reaches_the_antennas() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProc::start(
        binary(),
        dir.path(),
        &[
            "--cells",
            "300",
            "--period-ms",
            "1000",
            "--regions",
            REGIONS,
            "--faulty-every",
            "40",
        ],
    )
    .expect("simulator");
    let antennas = sim.antennas.join(",");
    let c = Cluster::start_with(3, &["--antennas", &antennas]).await;
    let r = c
        .client
        .post(&c.nodes[0].api, "/image/import", &export(300))
        .await
        .unwrap();
    assert!(
        r.status.is_success(),
        "{}",
        String::from_utf8_lossy(&r.body)
    );

    let before = sim.state(&c.client).await.unwrap();
    assert!(planted_fixed(&before).is_err(), "nothing was planted");
    let started = Instant::now();
    let fixed_at = loop {
        let s = sim.state(&c.client).await.unwrap();
        let still = match planted_fixed(&s) {
            Ok(()) => break s["period"].as_u64().unwrap_or(0),
            Err(e) => e,
        };
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not fixed after 90 periods: {still}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "planted problems fixed by period {fixed_at} ({:?})",
        started.elapsed()
    );

    // Every committed change pushed and acknowledged: sessions in sync, and the antennas'
    // configuration equal to the image.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut sessions = 0;
        let mut in_sync = 0;
        for p in &c.nodes {
            let a = c
                .client
                .get(&p.api, "/antennas?limit=0")
                .await
                .unwrap()
                .json();
            sessions += a["summary"]["sessions"].as_u64().unwrap_or(0);
            in_sync += a["summary"]["in_sync"].as_u64().unwrap_or(0);
        }
        let cells = c
            .client
            .get(&c.nodes[0].api, "/image/cells?consistency=linearizable")
            .await
            .unwrap()
            .json();
        let relations = c
            .client
            .get(&c.nodes[0].api, "/image/relations?consistency=linearizable")
            .await
            .unwrap()
            .json();
        let antennas = sim.state(&c.client).await.unwrap()["configs"].clone();
        let mut mismatch = None;
        for cell in cells.as_array().unwrap() {
            let id = cell["id"].as_str().unwrap();
            let a = &antennas[id];
            for k in ["pci", "electrical_tilt", "hysteresis", "time_to_trigger_ms"] {
                if a[k] != cell[k] {
                    mismatch = Some(format!("{id} {k}: antenna {} image {}", a[k], cell[k]));
                }
            }
        }
        let mut image_relations = 0;
        for r in relations.as_array().unwrap() {
            image_relations += 1;
            let (s, t) = (r["source"].as_str().unwrap(), r["target"].as_str().unwrap());
            if antennas[s]["relations"][t]["cio_db"] != r["cio_db"] {
                mismatch = Some(format!(
                    "{s}->{t} cio: antenna {} image {}",
                    antennas[s]["relations"][t]["cio_db"], r["cio_db"]
                ));
            }
        }
        let antenna_relations: usize = antennas
            .as_object()
            .unwrap()
            .values()
            .map(|v| v["relations"].as_object().map_or(0, |m| m.len()))
            .sum();
        if mismatch.is_none()
            && sessions == 300
            && in_sync == 300
            && antenna_relations == image_relations
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "antennas not in line with the image: {sessions} sessions, {in_sync} in sync, relations {antenna_relations} vs {image_relations}, {mismatch:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let history = c
        .client
        .get(&c.nodes[0].api, "/image/history?limit=10000")
        .await
        .unwrap()
        .json();
    let functions: std::collections::BTreeSet<String> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["outcome"]["outcome"] == "applied")
        .filter_map(|h| h["origin"]["function"].as_str().map(str::to_string))
        .collect();
    for f in [
        "pci_conflict",
        "load_balancing",
        "mobility_robustness",
        "anr_pruning",
    ] {
        assert!(
            functions.contains(f),
            "no applied change set of {f}: {functions:?}"
        );
    }
}
