//! SON functions that share a parameter must not undo each other round and round: load
//! balancing raises the offsets (CIO) of an overloaded cell's relations, and the reverse ones
//! lower, to move edge users out; mobility robustness must not step those same offsets back
//! for the early (and, on the reverse relations, late) handovers they were set to bring about,
//! only for load balancing to set them again once its priority hold ran out. That tug of war
//! keeps an overloaded cell sawing around load balancing's threshold.
//!
//! Before mobility robustness left load balancing's offsets alone
//! (`node/src/son/robustness.rs`, `load_balancing_holds`), this showed within 20 s in every run
//! on the simulated network of `son_network`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sonraft_testkit::local_cluster::SimProc;

const REGIONS: &str = "site-1,site-2,site-3";

/// One applied CIO write: log index, function, new value.
type CioWrite = (u64, String, i64);

/// Per relation, the applied CIO writes in log order.
fn cio_writes(history: &[Value]) -> BTreeMap<String, Vec<CioWrite>> {
    let mut applied: Vec<&Value> = history
        .iter()
        .filter(|h| h["outcome"]["outcome"] == "applied")
        .collect();
    applied.sort_by_key(|h| h["index"].as_u64());
    let mut out: BTreeMap<String, Vec<CioWrite>> = BTreeMap::new();
    for h in applied {
        let function = h["origin"]["function"].as_str().unwrap_or_default();
        for w in h["writes"].as_array().into_iter().flatten() {
            if w["param"] != "cio_db" {
                continue;
            }
            if let (Some(entity), Some(value)) = (w["entity"].as_str(), w["value"].as_i64()) {
                out.entry(entity.to_string()).or_default().push((
                    h["index"].as_u64().unwrap_or(0),
                    function.to_string(),
                    value,
                ));
            }
        }
    }
    out
}

/// The first relation whose offset load balancing moved away from 0 again after mobility
/// robustness had stepped it back towards 0 from load balancing's value, with those writes.
fn tug_of_war(writes: &BTreeMap<String, Vec<CioWrite>>) -> Option<String> {
    for (relation, w) in writes {
        // The writes since load balancing last set the offset, while robustness pulls it in.
        let mut since_mlb: Vec<&CioWrite> = Vec::new();
        for write in w {
            let last = since_mlb.last().map(|x| x.2);
            match (write.1.as_str(), last) {
                ("load_balancing", Some(v)) if since_mlb.len() > 1 && write.2.abs() > v.abs() => {
                    since_mlb.push(write);
                    return Some(format!("{relation}: {since_mlb:?}"));
                }
                ("load_balancing", _) => since_mlb = vec![write],
                ("mobility_robustness", Some(v)) if write.2.abs() < v.abs() => {
                    since_mlb.push(write)
                }
                _ => since_mlb.clear(),
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mobility_robustness_does_not_step_back_the_offsets_load_balancing_set() {
    let dir = TestDir::new();
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
        ],
    )
    .expect("simulator");
    let c = Cluster::start_with(3, &["--antennas", &sim.antennas.join(",")]).await;
    c.import(&sim_export("300", REGIONS, &[])).await;

    // Sixty periods: where the two pull one offset both ways, it goes round within twenty.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let history = c.list("/image/history?limit=100000").await;
        if let Some(found) = tug_of_war(&cio_writes(&history)) {
            panic!(
                "load balancing set an offset again after mobility robustness stepped it back \
                 ((index, function, dB) since load balancing's first value): {found}"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
