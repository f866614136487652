//! The antenna-fleet benchmark: one node against a simulator of N cells.
//!
//! 1. A node without antennas holds the image of N cells: its resident memory is the baseline.
//! 2. A node with the same image holds one session per base station (cell site; or per cell
//!    with `--antenna-sessions cell`); once every session is connected, and before the first
//!    report, its extra memory divided by the cells, and by the sessions, is the memory per idle
//!    cell and per idle session.
//! 3. Reports then flow every period: counter values ingested per second, the node's CPU use,
//!    values per CPU-second, and the latency from a period's close until every change set the
//!    SON functions proposed for it is committed and acknowledged by the antennas: from the
//!    period's end at the antennas (`close_to_ack_ms`), and from the node's close of it, once
//!    every report was in (`received_to_ack_ms`, without the simulator's delay in computing
//!    and sending the period).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use sonraft_client::{v1, with_query};
use sonraft_testkit::local_cluster::{LocalCluster, SimProc, client};

#[derive(Args, Debug, Clone)]
pub struct FleetArgs {
    /// Number of cells; several values run one row each.
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    pub cells: Vec<usize>,
    /// Counter period of the reporting phase, in ms.
    #[arg(long, default_value_t = 1000)]
    pub period_ms: u32,
    /// Seconds of the measured reporting phase.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Seconds of reporting before the measured phase (the SON functions fix the planted
    /// problems first; their change sets still count for the latency figures).
    #[arg(long, default_value_t = 20)]
    pub settle_s: u64,
    /// Where the processes keep their data (default: under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// One session per base station (`station`) or per cell (`cell`).
    #[arg(long, default_value = "station", value_parser = ["station", "cell"])]
    pub antenna_sessions: String,
    /// Carriers per sector of the simulated network (`sim run --carriers`): 2 gives six cells
    /// a base station, so 100,000 cells take about 17,000 sessions.
    #[arg(long, default_value_t = 2)]
    pub carriers: u8,
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// CPU seconds (user + system) used by a process so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = s.rsplit_once(')').map(|x| x.1).context("bad stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    Ok(ticks / 100.0)
}

/// Imports the simulated network in pieces (sites and policy, then cells, then relations), so
/// that no large request body inflates the node's memory.
async fn import(
    cluster: &LocalCluster,
    binary: &Path,
    cells: usize,
    carriers: u8,
) -> anyhow::Result<()> {
    let out = std::process::Command::new(binary)
        .args([
            "sim",
            "export",
            "--cells",
            &cells.to_string(),
            "--regions",
            "site-1",
            "--carriers",
            &carriers.to_string(),
            "--cooldown-ms",
            "3000",
        ])
        .output()?;
    let image: Value = serde_json::from_slice(&out.stdout).context("export")?;
    let api = &cluster.nodes[0].api;
    let slow = sonraft_client::ApiClient::new(
        Some(sonraft_testkit::local_cluster::TOKEN.into()),
        Duration::from_secs(600),
    );
    let mut parts = vec![json!({"sites": image["sites"], "policy": image["policy"]})];
    let list = |k: &str| image[k].as_array().cloned().unwrap_or_default();
    for c in list("cells").chunks(2000) {
        parts.push(json!({"cells": c}));
    }
    for r in list("relations").chunks(10_000) {
        parts.push(json!({"relations": r}));
    }
    for part in parts {
        let r = slow.post(api, "/image/import", &part).await?;
        if !r.status.is_success() {
            bail!("import: {} {}", r.status, String::from_utf8_lossy(&r.body));
        }
    }
    Ok(())
}

async fn summary(cluster: &LocalCluster) -> anyhow::Result<v1::AntennasSummary> {
    let query = v1::AntennasQuery { limit: Some(0) };
    let r = cluster
        .client
        .get(&cluster.nodes[0].api, &with_query("/antennas", &query))
        .await?;
    Ok(r.parse::<v1::Antennas>()
        .with_context(|| format!("GET /antennas: {}", r.status))?
        .summary)
}

/// The simulator's periods handed out while the benchmark measured: whether it kept its
/// period. A simulator that falls behind hands each period out late, and that lateness is in
/// `close_to_ack_ms` (which counts from the period's stamped end) though no node caused it.
struct SimClock {
    periods: usize,
    late_p50: u64,
    late_p99: u64,
    late_max: u64,
}

fn last_period(clock: &Value) -> u64 {
    clock["recent"]
        .as_array()
        .and_then(|r| r.last())
        .and_then(|p| p["period"].as_u64())
        .unwrap_or(0)
}

impl SimClock {
    fn since(clock: &Value, after: u64) -> SimClock {
        let mut late: Vec<u64> = clock["recent"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter(|p| p["period"].as_u64().is_some_and(|n| n > after))
                    .filter_map(|p| p["late_ms"].as_u64())
                    .collect()
            })
            .unwrap_or_default();
        late.sort_unstable();
        SimClock {
            periods: late.len(),
            late_p50: super::quantile(&late, 0.5),
            late_p99: super::quantile(&late, 0.99),
            late_max: late.last().copied().unwrap_or(0),
        }
    }
}

async fn run_row(
    binary: &Path,
    root: &Path,
    cells: usize,
    args: &FleetArgs,
) -> anyhow::Result<Value> {
    let big = ["--max-import-bytes".to_string(), (1u64 << 31).to_string()];
    // 1. A node holding the image, its sessions held back; then the sessions connect (the
    //    simulator sends no report yet): the growth is what the idle sessions cost.
    let ports = cells.div_ceil(20_000).max(1).to_string();
    let quiet = (90_000 + cells as u64).to_string();
    let sim = SimProc::start(
        binary,
        &root.join(format!("sim-{cells}")),
        &[
            "--cells",
            &cells.to_string(),
            "--regions",
            "site-1",
            "--carriers",
            &args.carriers.to_string(),
            "--ports",
            &ports,
            "--period-ms",
            &args.period_ms.to_string(),
            "--first-report-after-ms",
            &quiet,
        ],
    )?;
    let hold_ms: u64 = 20_000 + cells as u64 / 2;
    let mut node_args = big.to_vec();
    node_args.extend([
        "--antennas".to_string(),
        sim.antennas.join(","),
        "--antennas-after-ms".to_string(),
        hold_ms.to_string(),
        "--antenna-sessions".to_string(),
        args.antenna_sessions.clone(),
    ]);
    let mut cluster =
        LocalCluster::start(binary, &root.join(format!("fleet-{cells}")), 1, &node_args).await?;
    import(&cluster, binary, cells, args.carriers).await?;
    // Restart, so that the image is loaded from disk without the import's garbage in the heap.
    cluster.nodes[0].stop()?;
    cluster.nodes[0].restart()?;
    let node_started = Instant::now();
    cluster
        .wait_ready(&cluster.nodes[0], Duration::from_secs(120))
        .await?;
    let pid = cluster.nodes[0].pid().context("pid")?;
    let hold = Duration::from_millis(hold_ms);
    if node_started.elapsed() + Duration::from_secs(3) > hold {
        bail!("loading the image took longer than the hold of {hold_ms} ms");
    }
    tokio::time::sleep(hold - node_started.elapsed() - Duration::from_secs(1)).await;
    let before = rss_kib(pid)?;
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    let connected = loop {
        let s = summary(&cluster).await?;
        let n = s.connected.unwrap_or(0) as usize;
        if n >= cells || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let connect_s = started.elapsed().as_secs_f64() - 1.0;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss_kib(pid)?;
    let connections = summary(&cluster).await?.connections.unwrap_or(0);
    let grown = (idle_rss as f64 - before as f64) * 1024.0;
    let per_cell = grown / connected.max(1) as f64;
    let per_session = grown / connections.max(1) as f64;
    eprintln!(
        "{cells} cells: {connected} cells connected over {connections} sessions in {connect_s:.1} s; RSS {before} KiB before the sessions, {idle_rss} KiB with them idle"
    );

    // 3. Reports flowing.
    let wait_first = Instant::now() + Duration::from_secs(120);
    while summary(&cluster).await?.reports.unwrap_or(0) == 0 {
        if Instant::now() > wait_first {
            bail!("no reports arrived");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
    let s0 = summary(&cluster).await?;
    let sim_pid = sim.pid();
    let first_period = last_period(&sim.clock(&cluster.client).await?);
    let (cpu0, sim_cpu0, t0) = (cpu_seconds(pid)?, cpu_seconds(sim_pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let s1 = summary(&cluster).await?;
    let (cpu1, sim_cpu1, secs) = (
        cpu_seconds(pid)?,
        cpu_seconds(sim_pid)?,
        t0.elapsed().as_secs_f64(),
    );
    let handed = SimClock::since(&sim.clock(&cluster.client).await?, first_period);
    let values = s1
        .counter_values
        .unwrap_or(0)
        .saturating_sub(s0.counter_values.unwrap_or(0));
    let values_per_s = values as f64 / secs;
    let cpu = (cpu1 - cpu0) / secs;
    let latencies = |lat: &Option<v1::Latencies>| {
        json!({
            "count": lat.as_ref().map(|l| l.count), "p50": lat.as_ref().map(|l| l.p50),
            "p99": lat.as_ref().map(|l| l.p99), "max": lat.as_ref().and_then(|l| l.max),
        })
    };
    let row = json!({
        "bench": "fleet", "cells": cells, "cells_connected": s1.connected, "sessions": connections,
        "antenna_sessions": args.antenna_sessions, "connect_s": (connect_s * 10.0).round() / 10.0,
        "rss_before_sessions_kib": before, "rss_idle_sessions_kib": idle_rss,
        "bytes_per_idle_cell": per_cell.round(), "bytes_per_idle_session": per_session.round(),
        "values_per_s": values_per_s.round(), "node_cpu_cores": (cpu * 100.0).round() / 100.0,
        "values_per_cpu_s": (values_per_s / cpu.max(0.01)).round(),
        "close_to_ack_ms": latencies(&s1.close_to_ack_ms),
        "received_to_ack_ms": latencies(&s1.received_to_ack_ms),
        "in_sync": s1.in_sync, "diverged": s1.diverged,
        "sim_cpu_cores": ((sim_cpu1 - sim_cpu0) / secs * 100.0).round() / 100.0,
        "sim_periods": handed.periods,
        "sim_periods_due": (secs * 1000.0 / f64::from(args.period_ms)).floor() as u64,
        "sim_late_ms": {"p50": handed.late_p50, "p99": handed.late_p99, "max": handed.late_max},
    });
    drop(cluster);
    drop(sim);
    Ok(row)
}

/// Runs `sonraft bench fleet`.
pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    sonraft_protocol::net::raise_fd_limit();
    let binary = std::env::current_exe().context("cannot find this binary")?;
    let root = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sonraft-fleet-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&root);
    let _ = client();
    // Each session is one socket in the node and one in the simulator: refuse up front, with
    // the reason, what would otherwise stall at the open-files limit.
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).context("getrlimit")?;
    let per_session = match (args.antenna_sessions.as_str(), args.carriers) {
        ("cell", _) => 1,
        (_, 2) => 6,
        _ => 3,
    };
    let files = |cells: usize| (cells.div_ceil(per_session) + 1024) as u64;
    if let Some(&cells) = args.cells.iter().find(|&&c| files(c) > hard) {
        anyhow::bail!(
            "{cells} cells need about {} open files per process, but this machine's hard limit \
             is {hard} (ulimit -Hn); raise it (root or CAP_SYS_RESOURCE: `ulimit -Hn {}`, or \
             LimitNOFILE= in a systemd unit) or bench fewer cells",
            files(cells),
            files(cells)
        );
    }
    let mut rows = Vec::new();
    for &cells in &args.cells {
        rows.push(run_row(&binary, &root, cells, &args).await?);
    }
    let header = [
        [
            "cells",
            "sessions",
            "B/cell",
            "B/session",
            "values/s",
            "cpu",
            "values/",
        ],
        ["", "", "(idle)", "(idle)", "", "(cores)", "cpu-s"],
    ];
    let header2 = [
        [
            "change",
            "close",
            "->ack ms",
            "recv->ack",
            "ms",
            "sim",
            "periods",
            "sim late",
        ],
        [
            "sets", "p50", "p99", "p50", "p99", "cores", "made/due", "p99 ms",
        ],
    ];
    for (a, b) in header.iter().zip(&header2) {
        println!(
            "{:>8} {:>9} {:>8} {:>10} {:>10} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6} {:>9} {:>9}",
            a[0],
            a[1],
            a[2],
            a[3],
            a[4],
            a[5],
            a[6],
            b[0],
            b[1],
            b[2],
            b[3],
            b[4],
            b[5],
            b[6],
            b[7]
        );
    }
    for r in &rows {
        println!(
            "{:>8} {:>9} {:>8} {:>10} {:>10} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6} {:>9} {:>9}",
            r["cells"],
            r["sessions"],
            r["bytes_per_idle_cell"],
            r["bytes_per_idle_session"],
            r["values_per_s"],
            r["node_cpu_cores"],
            r["values_per_cpu_s"],
            r["close_to_ack_ms"]["count"],
            r["close_to_ack_ms"]["p50"],
            r["close_to_ack_ms"]["p99"],
            r["received_to_ack_ms"]["p50"],
            r["received_to_ack_ms"]["p99"],
            r["sim_cpu_cores"],
            format!("{}/{}", r["sim_periods"], r["sim_periods_due"]),
            r["sim_late_ms"]["p99"],
        );
    }
    for r in &rows {
        let (made, due) = (
            r["sim_periods"].as_f64().unwrap_or(0.0),
            r["sim_periods_due"].as_f64().unwrap_or(0.0),
        );
        if made + 1.0 < due {
            println!(
                "{} cells: the simulator did not keep its period ({made} of {due} periods, handed \
                 out up to {} ms after their end; {} cores for it, {} for the node): the \
                 latency from the period's end includes that lateness; a longer --period-ms \
                 measures the node rather than the machine it shares",
                r["cells"], r["sim_late_ms"]["max"], r["sim_cpu_cores"], r["node_cpu_cores"]
            );
        }
    }
    for r in &rows {
        println!("{r}");
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
