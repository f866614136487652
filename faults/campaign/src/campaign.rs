//! One run, top to bottom: check the machine, build the network, start and initialise the
//! cluster, import a small image, run the clients and the nemesis side by side, heal,
//! collect the evidence, judge it, report, tear down.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::Rng;
use serde_json::json;

use crate::checks::{self, Observed};
use crate::cluster::{Cluster, Setup};
use crate::history::History;
use crate::linearizability::{Budget, Register};
use crate::nemesis::{FaultKind, Nemesis};
use crate::netns::Network;
use crate::report::Summary;
use crate::workload::{self, Workload};
use crate::{clock, prerequisites, teardown};

/// How to run a campaign (see `sonraft-campaign run --help`).
#[derive(Clone, Debug)]
pub struct Options {
    pub seconds: u64,
    /// Faults of each kind to reach even past `seconds`, up to `max_seconds`.
    pub min_per_kind: u64,
    pub max_seconds: u64,
    pub seed: u64,
    pub faults: Vec<FaultKind>,
    pub clients: usize,
    pub rate: f64,
    pub extra_reads: usize,
    pub cells: usize,
    pub timeout: Duration,
    pub prefix: String,
    pub run_dir: Option<PathBuf>,
    pub sonraft: PathBuf,
    pub lazyfs: Option<PathBuf>,
    pub snapshot_every: u64,
    pub keep: bool,
    pub fresh_addresses: bool,
    pub check_seconds: u64,
    pub command: String,
    /// Check the long run's targets: (faults per kind, power losses of the leader).
    pub targets: Option<(u64, u64)>,
}

/// The cells the clients work on, on three sites.
pub fn image(cells: usize) -> (serde_json::Value, Vec<String>) {
    let ids: Vec<String> = (0..cells)
        .map(|i| format!("CAMP{}-{}", i % 3 + 1, i / 3 + 1))
        .chain(std::iter::once(PROBE_CELL.to_string()))
        .collect();
    let sites: Vec<_> = (1..=3)
        .map(|s| json!({"id": format!("CAMP{s}"), "name": format!("campaign site {s}"), "lat": 48.0 + s as f64, "lon": 11.0}))
        .collect();
    let list: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"id": id, "site": format!("CAMP{}", i % 3 + 1), "rat": "LTE", "pci": i, "arfcn": 1300, "azimuth": (i * 120) % 360}))
        .collect();
    // Keep every record of the run: the final check reads the whole history in one page.
    let policy = json!({"history_keep": 1_000_000});
    let workload = ids[..cells].to_vec();
    (
        json!({"sites": sites, "cells": list, "policy": policy}),
        workload,
    )
}

/// The cell healing writes through every node to see that writes get through.
const PROBE_CELL: &str = "CAMP-PROBE";

/// Checks that libfaketime moves `SystemTime` but not `Instant` in a Rust process.
fn probe_clock(dir: &std::path::Path, library: &std::path::Path) -> anyhow::Result<String> {
    let mut c = clock::Clock::new(&dir.join("clock-probe"), library)?;
    c.set_offset(3 * 3600)?;
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("probe-clock")
        .envs(c.env())
        .output()
        .context("cannot run the clock probe")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "the clock probe printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let wall = v["wall_secs"].as_i64().unwrap_or(0);
    let shift = wall - clock::now_secs() as i64;
    let mono = v["monotonic_elapsed_ms"].as_i64().unwrap_or(-1);
    if (shift - 3 * 3600).abs() > 5 {
        bail!("libfaketime did not move SystemTime by +3 h in a Rust process (moved {shift} s)");
    }
    if !(45..=2000).contains(&mono) {
        bail!("libfaketime disturbed the monotonic clock: a 50 ms sleep measured {mono} ms");
    }
    Ok(format!(
        "clock probe: SystemTime moved {shift} s for a +10800 s offset, a 50 ms sleep measured {mono} ms on Instant"
    ))
}

/// Runs a campaign; returns the summary (the caller decides the exit code).
pub async fn run(o: Options) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let missing = prerequisites::missing(&o.sonraft, o.lazyfs.as_deref());
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|m| format!("{} ({})", m.what, m.fix))
            .collect();
        bail!("missing prerequisites: {}", list.join("; "));
    }
    let library = clock::libfaketime().context("libfaketime is not installed")?;
    let cleaned = teardown::cleanup_leftovers(&o.prefix, 3);
    let mut rng = rand::rng();
    let name = format!("{}{:04x}", o.prefix, rng.random::<u16>());
    let net = crate::netns::free_net(rng.random()).context("no free 10.77.x.0/24 network")?;
    let run_dir = o
        .run_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("sonraft-campaign").join(&name));
    std::fs::create_dir_all(run_dir.join("logs"))
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let mut notes = Vec::new();
    if !cleaned.is_empty() {
        notes.push(format!("tore down leftovers of earlier runs: {cleaned:?}"));
    }
    notes.push(probe_clock(&run_dir, &library)?);

    teardown::begin(&name, 3, &run_dir);
    let _guard = teardown::Guard;
    teardown::install_handlers();
    let network = Network::create(&name, net, 3).context("cannot create the network")?;
    let setup = Setup {
        sonraft: o.sonraft.clone(),
        lazyfs: o.lazyfs.clone(),
        libfaketime: library,
        run_dir: run_dir.clone(),
        node_log: None,
        node_flags: vec![
            "--timing".into(),
            "loopback".into(),
            "--snapshot-every".into(),
            o.snapshot_every.to_string(),
        ],
        seed: o.seed,
        fresh_addresses: o.fresh_addresses,
    };
    let mut cluster = Cluster::start(setup, network)
        .await
        .context("cannot start the nodes")?;
    notes.push(node_clock_moves(&mut cluster).await);
    cluster
        .init()
        .await
        .context("cannot initialise the cluster")?;
    cluster
        .wait_whole(Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)
        .context("the new cluster did not become ready")?;
    let (image, cells) = image(o.cells);
    let leader = cluster.leader().await.map_or(0, |(l, _)| l);
    cluster
        .api
        .import(&cluster.addr(leader), &image)
        .await
        .context("cannot import the image")?;
    cluster.probe_cell = Some(PROBE_CELL.to_string());

    let history = History::new(&run_dir.join("history.jsonl"))?;
    let mut initial = BTreeMap::new();
    for cell in &cells {
        let invoke = history.now();
        let s = cluster
            .api
            .read_cell(&cluster.addr(leader), cell, Duration::from_secs(10))
            .await
            .with_context(|| format!("cannot read {cell} after the import"))?;
        initial.insert(
            cell.clone(),
            Observed {
                state: Register {
                    version: s.version,
                    value: s.electrical_tilt,
                },
                invoke,
                complete: history.now(),
            },
        );
    }

    let token_prefix = format!("campaign {name} ");
    let w = Workload {
        cells: cells.clone(),
        addrs: cluster.addrs.clone(),
        clients: o.clients,
        rate: o.rate,
        extra_reads: o.extra_reads,
        timeout: o.timeout,
        run: name.clone(),
        seed: o.seed,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let clients = tokio::spawn(workload::run(
        w,
        history.clone(),
        cluster.api.http.clone(),
        stop.clone(),
    ));
    let mut nemesis = Nemesis::new(
        o.seed,
        &o.faults,
        &run_dir.join("faults.jsonl"),
        history.clone(),
    )?;
    let started_faults = Instant::now();
    let until = started_faults + Duration::from_secs(o.seconds);
    let hard_until = started_faults + Duration::from_secs(o.max_seconds);
    nemesis
        .run(&mut cluster, until, o.min_per_kind, hard_until)
        .await;
    stop.store(true, Ordering::Relaxed);
    let _ = clients.await;
    // Make sure the end state is healed even if the nemesis stopped early.
    let mut anomalies = nemesis.anomalies.clone();
    let last_heal = cluster.heal(nemesis.records.len() as u64 + 1).await;
    if !last_heal.is_empty() && !nemesis.repair(&mut cluster).await {
        notes.push(
            "the cluster was not whole at the end even after repair; the evidence is partial"
                .into(),
        );
    }
    anomalies.extend(last_heal);

    let evidence = checks::collect(&cluster, &token_prefix, initial, &history, &cells).await;
    std::fs::write(
        run_dir.join("evidence.json"),
        serde_json::to_string(&evidence)?,
    )?;
    for (slot, stats) in cluster.fs_stats().await {
        notes.push(format!("lazyfs slot {slot}: {stats}"));
    }
    let budget = Budget {
        steps: 100_000_000,
        time: Duration::from_secs(o.check_seconds),
    };
    let events = history.events();
    let verdicts = checks::verify(&events, &nemesis.records, &evidence, budget, &run_dir);
    anomalies.extend(verdicts.anomalies);
    notes.extend(verdicts.notes);
    let (seen, unseen) = nemesis.clock_checks;
    notes.push(format!(
        "forward clock jumps seen in the node's HTTP Date header: {seen} of {}",
        seen + unseen
    ));
    let mut operations = BTreeMap::new();
    for e in &events {
        let kind = match e.request {
            crate::history::Request::Read => "read",
            crate::history::Request::Write { .. } => "write",
        };
        *operations
            .entry(format!("{kind} {}", e.outcome.label()))
            .or_insert(0) += 1;
    }
    cluster.shut_down().await;
    anomalies.extend(crate::report::panics(&run_dir.join("logs")));
    let mut summary = Summary {
        command: o.command.clone(),
        seed: o.seed,
        seconds: started.elapsed().as_secs_f64(),
        run_dir: run_dir.clone(),
        fs: if o.lazyfs.is_some() {
            "sonraft-lazyfs".into()
        } else {
            "plain (power loss = kill -9)".into()
        },
        faults: nemesis.counts.clone(),
        operations,
        cells_checked: verdicts.cells_checked,
        anomalies,
        notes,
        targets: Vec::new(),
    };
    if let Some((per_kind, leader_power)) = o.targets {
        let kinds: Vec<&str> = o.faults.iter().map(|k| k.name()).collect();
        summary.targets = crate::report::targets(&summary, &kinds, per_kind, leader_power);
    }
    std::fs::write(
        run_dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    if summary.anomalies.is_empty() && !o.keep {
        // Only the data directories are big; the logs and history stay for reference.
        let _ = std::fs::remove_dir_all(run_dir.join("backing"));
        let _ = std::fs::remove_dir_all(run_dir.join("data"));
    }
    Ok(summary)
}

/// Jumps node 1's clock by an hour and back, and says whether its HTTP `Date` followed.
async fn node_clock_moves(cluster: &mut Cluster) -> String {
    let addr = cluster.addr(0);
    let before = cluster.api.wall_clock_secs(&addr).await;
    if cluster.slots[0].clock.set_offset(3600).is_err() {
        return "cannot write node 1's clock file".into();
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = None;
    while Instant::now() < deadline {
        if let Ok(s) = cluster.api.wall_clock_secs(&addr).await {
            seen = Some(s);
            if (s as i64 - clock::now_secs() as i64 - 3600).abs() <= 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = cluster.slots[0].clock.set_offset(0);
    match (before, seen) {
        (Ok(b), Some(s)) => format!(
            "node clock check: node 1's HTTP Date moved from {b} to {s} for a +3600 s offset (real now {})",
            clock::now_secs()
        ),
        _ => "node clock check: node 1 sent no Date header".into(),
    }
}
