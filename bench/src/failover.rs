//! Failover: a local three-node cluster under blind writes from several clients; the leader is
//! killed with SIGKILL and the time from the kill to the first write that is acknowledged
//! (and was sent after the kill) is measured. The killed node is restarted and the next trial
//! begins once every node is ready again.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::json;
use sonraft_testkit::local_cluster::{LocalCluster, NodeProc, client};

use super::quantile;

#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    /// Number of kills.
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// Concurrent writing clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Where the nodes keep their data (default: a fresh directory under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Pause before each kill, after the previous victim is ready again, in ms. A node forces
    /// no election in its first 3 s (`WARM_UP`) and refuses other candidates' votes for the
    /// maximum election timeout after it last heard the leader, so a kill sooner than that
    /// after a restart waits for the restarted node's timers: with `--timing wan` up to 2 s.
    #[arg(long, default_value_t = 700)]
    pub settle_ms: u64,
    /// Extra flags for every node (e.g. `--timing wan`).
    #[arg(long, allow_hyphen_values = true, value_delimiter = ' ')]
    pub node_args: Vec<String>,
}

/// Microseconds since `epoch` of the first acknowledged write sent at or after `armed_at`.
struct Watch {
    epoch: Instant,
    armed_at: AtomicU64,
    first_ok: AtomicU64,
}

impl Watch {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// Runs `sonraft bench failover`.
pub async fn run(args: FailoverArgs) -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("cannot find this binary")?;
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sonraft-failover-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let mut cluster = LocalCluster::start(&binary, &dir, 3, &args.node_args).await?;
    let samples_ms = kill_leaders(
        &mut cluster,
        args.trials,
        args.clients,
        Duration::from_millis(args.settle_ms),
        NodeProc::restart,
    )
    .await?;
    let mut sorted = samples_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = quantile(&sorted, 0.5);
    let max = sorted.last().copied().unwrap_or(0.0);
    println!(
        "failover: median {median:.1} ms, max {max:.1} ms over {} trials",
        sorted.len()
    );
    println!(
        "{}",
        json!({"bench": "failover", "trials": sorted.len(), "median_ms": median, "max_ms": max, "samples_ms": samples_ms, "node_args": args.node_args})
    );
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Under blind writes from `clients` clients, kills the leader of `cluster` `trials` times
/// (restarting it after each) and returns the milliseconds from each kill to the first
/// acknowledged write sent after it; prints one row a trial. Each kill comes `settle` after
/// the cluster is whole again; `restart` starts a killed node again.
pub async fn kill_leaders(
    cluster: &mut LocalCluster,
    trials: usize,
    clients: usize,
    settle: Duration,
    restart: impl Fn(&mut NodeProc) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    let r = cluster
        .client
        .post(&cluster.nodes[0].api, "/image/import", &json!({"sites": [{"id": "F", "name": "f", "lat": 0.0, "lon": 0.0}],
            "cells": (0..64).map(|i| json!({"id": format!("F{i}"), "site": "F", "rat": "LTE", "pci": i, "arfcn": 1300, "azimuth": 0})).collect::<Vec<_>>()}))
        .await?;
    anyhow::ensure!(r.status.is_success(), "import failed: {}", r.status);

    let watch = Arc::new(Watch {
        epoch: Instant::now(),
        armed_at: AtomicU64::new(u64::MAX),
        first_ok: AtomicU64::new(u64::MAX),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let apis = Arc::new(std::sync::Mutex::new(cluster.apis()));
    let mut writers = Vec::new();
    for w in 0..clients {
        let (watch, stop, apis) = (watch.clone(), stop.clone(), apis.clone());
        writers.push(tokio::spawn(async move {
            let client = client();
            let mut n = w;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let targets = apis.lock().map(|a| a.clone()).unwrap_or_default();
                if targets.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let api = &targets[n % targets.len()];
                let sent = watch.now();
                let body = json!({"origin": {"function": "operator"}, "reason": "failover bench",
                    "writes": [{"entity": format!("cell/F{}", n % 64), "param": "hysteresis", "value": 4 + (n % 2)}]});
                match client.post(api, "/image/changesets", &body).await {
                    Ok(r) if r.status.is_success() => {
                        if sent >= watch.armed_at.load(Ordering::SeqCst) {
                            watch.first_ok.fetch_min(watch.now(), Ordering::SeqCst);
                        }
                    }
                    _ => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        }));
    }

    let mut samples_ms = Vec::new();
    println!("trial  killed  new_leader  failover_ms");
    for trial in 1..=trials {
        tokio::time::sleep(settle).await;
        let leader = cluster.leader(Duration::from_secs(10)).await?;
        let killed = cluster.nodes[leader].id;
        watch.first_ok.store(u64::MAX, Ordering::SeqCst);
        let at = watch.now();
        watch.armed_at.store(at, Ordering::SeqCst);
        cluster.nodes[leader].kill9();
        if let Ok(mut a) = apis.lock() {
            *a = cluster.apis();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while watch.first_ok.load(Ordering::SeqCst) == u64::MAX {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no write succeeded within 30 s of the kill"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ms = (watch.first_ok.load(Ordering::SeqCst) - at) as f64 / 1000.0;
        let new_leader = cluster
            .leader(Duration::from_secs(10))
            .await
            .map(|p| cluster.nodes[p].id)
            .unwrap_or(0);
        println!("{trial:>5} {killed:>7} {new_leader:>11} {ms:>12.1}");
        samples_ms.push(ms);
        watch.armed_at.store(u64::MAX, Ordering::SeqCst);
        restart(&mut cluster.nodes[leader])?;
        cluster
            .wait_ready(&cluster.nodes[leader], Duration::from_secs(30))
            .await?;
        if let Ok(mut a) = apis.lock() {
            *a = cluster.apis();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    Ok(samples_ms)
}
