//! Closed-loop load: each client loops "read a random cell's version, propose a change set
//! with that read set" (mode `rmw`), or proposes blind writes (mode `write`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rand::Rng;
use serde_json::json;

use super::quantile;

/// What one write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Applied,
    Conflict,
}

/// A system under test.
pub trait Target: Send + Sync + 'static {
    /// What one client holds: its own connection, or its handle on a shared one, as the
    /// system's own client library does it.
    type Client: Send + 'static;
    fn name(&self) -> String;
    /// Loads `cells` keys/cells (idempotent).
    fn preload(&self, cells: usize) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// A new client.
    fn client(&self) -> Self::Client;
    /// The current version of cell `i` (a linearizable read).
    fn read_version(
        &self,
        client: &mut Self::Client,
        i: usize,
    ) -> impl Future<Output = anyhow::Result<u64>> + Send;
    /// Writes `value` to cell `i`, conditional on `read` when given.
    fn write(
        &self,
        client: &mut Self::Client,
        i: usize,
        read: Option<u64>,
        value: i64,
    ) -> impl Future<Output = anyhow::Result<Written>> + Send;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Read a version, then a write conditional on it.
    Rmw,
    /// Blind writes.
    Write,
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// API addresses of the sonraft nodes (the leader is found and used).
    #[arg(long, env = "SONRAFT_NODES", value_delimiter = ' ')]
    pub nodes: Vec<String>,
    #[arg(long, env = "SONRAFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Target system: sonraft, or etcd (build with `--features etcd`).
    #[arg(long, default_value = "sonraft")]
    pub target: String,
    /// etcd client endpoints (for `--target etcd`).
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Concurrent clients; several values run one row each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub clients: Vec<usize>,
    #[arg(long, value_enum, default_value = "rmw")]
    pub mode: Mode,
    /// Seconds per row (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Size of the preloaded image.
    #[arg(long, default_value_t = 10_000)]
    pub cells: usize,
    /// Skip the preload (the image is already there).
    #[arg(long)]
    pub no_preload: bool,
}

/// One row of results.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: String,
    pub mode: Mode,
    pub clients: usize,
    pub seconds: f64,
    pub applied: u64,
    pub conflicts: u64,
    pub errors: u64,
    /// Per-operation latency in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl Report {
    pub fn ops_per_s(&self) -> f64 {
        (self.applied + self.conflicts) as f64 / self.seconds
    }
    pub fn p50_ms(&self) -> f64 {
        f64::from(quantile(&self.latencies_us, 0.5)) / 1000.0
    }
    pub fn p99_ms(&self) -> f64 {
        f64::from(quantile(&self.latencies_us, 0.99)) / 1000.0
    }
    pub fn max_ms(&self) -> f64 {
        f64::from(self.latencies_us.last().copied().unwrap_or(0)) / 1000.0
    }

    pub const HEADER: &'static str = "target    mode   clients      ops/s    applied  conflicts  errors   p50 ms   p99 ms   max ms";

    pub fn row(&self) -> String {
        format!(
            "{:<9} {:<6} {:>7} {:>10.0} {:>10} {:>10} {:>7} {:>8.2} {:>8.2} {:>8.2}",
            self.target,
            format!("{:?}", self.mode).to_lowercase(),
            self.clients,
            self.ops_per_s(),
            self.applied,
            self.conflicts,
            self.errors,
            self.p50_ms(),
            self.p99_ms(),
            self.max_ms()
        )
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "bench": "load", "target": self.target, "mode": format!("{:?}", self.mode).to_lowercase(),
            "clients": self.clients, "seconds": self.seconds, "ops_per_s": (self.ops_per_s() * 10.0).round() / 10.0,
            "applied": self.applied, "conflicts": self.conflicts, "errors": self.errors,
            "p50_ms": self.p50_ms(), "p99_ms": self.p99_ms(), "max_ms": self.max_ms(),
        })
    }
}

#[derive(Default)]
struct ClientTally {
    applied: u64,
    conflicts: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

async fn client_loop<T: Target>(
    target: Arc<T>,
    mode: Mode,
    cells: usize,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> ClientTally {
    let mut tally = ClientTally::default();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
    let mut client = target.client();
    while !stop.load(Ordering::Relaxed) {
        let i = rng.random_range(0..cells);
        let started = Instant::now();
        let result = match mode {
            Mode::Rmw => match target.read_version(&mut client, i).await {
                Ok(v) => {
                    target
                        .write(&mut client, i, Some(v), 4 + (v % 2) as i64)
                        .await
                }
                Err(e) => Err(e),
            },
            Mode::Write => {
                let value = rng.random_range(4..=5);
                target.write(&mut client, i, None, value).await
            }
        };
        if !measuring.load(Ordering::Relaxed) {
            continue;
        }
        match result {
            Ok(Written::Applied) => tally.applied += 1,
            Ok(Written::Conflict) => tally.conflicts += 1,
            Err(e) => {
                tally.errors += 1;
                if tally.errors <= 3 {
                    tracing::warn!(error = %e, "operation failed");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        }
        tally
            .latencies_us
            .push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    tally
}

/// Runs one row: `clients` concurrent clients for `seconds` after a one-second warm-up.
pub async fn run_row<T: Target>(
    target: Arc<T>,
    mode: Mode,
    clients: usize,
    cells: usize,
    seconds: u64,
) -> Report {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(client_loop(
                target.clone(),
                mode,
                cells,
                measuring.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut report = Report {
        target: target.name(),
        mode,
        clients,
        seconds: elapsed,
        applied: 0,
        conflicts: 0,
        errors: 0,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        if let Ok(tally) = t.await {
            report.applied += tally.applied;
            report.conflicts += tally.conflicts;
            report.errors += tally.errors;
            report.latencies_us.extend(tally.latencies_us);
        }
    }
    report.latencies_us.sort_unstable();
    report
}

async fn run_target<T: Target>(target: T, args: &LoadArgs) -> anyhow::Result<()> {
    let target = Arc::new(target);
    if !args.no_preload {
        let started = Instant::now();
        target.preload(args.cells).await?;
        eprintln!(
            "preloaded {} cells into {} in {:.1} s",
            args.cells,
            target.name(),
            started.elapsed().as_secs_f64()
        );
    }
    println!("{}", Report::HEADER);
    let mut reports = Vec::new();
    for &clients in &args.clients {
        let r = run_row(target.clone(), args.mode, clients, args.cells, args.seconds).await;
        println!("{}", r.row());
        reports.push(r);
    }
    for r in &reports {
        println!("{}", r.json());
    }
    Ok(())
}

/// Runs `sonraft bench load`.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    match args.target.as_str() {
        "sonraft" => {
            let target = super::sonraft_target::SonraftTarget::connect(
                &args.nodes,
                args.token.clone(),
                args.clients.iter().copied().max().unwrap_or(1),
            )
            .await?;
            run_target(target, &args).await
        }
        #[cfg(feature = "etcd")]
        "etcd" => {
            let target = super::etcd_target::EtcdTarget::connect(&args.etcd).await?;
            run_target(target, &args).await
        }
        other => anyhow::bail!(
            "unknown target {other:?} (sonraft, or etcd when built with --features etcd)"
        ),
    }
}
