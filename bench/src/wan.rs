//! `sonraft bench wan`: the same cluster on loopback and across WAN links, side by side.
//!
//! Three nodes are started twice with the same flags (by default `--timing wan`): once
//! talking Raft on loopback, once with every node behind a [`WanLink`] (a user-space proxy
//! that delays, jitters and resends as a WAN path would; see `sonraft_testkit::wan` for why
//! not `tc netem`). Only node-to-node traffic crosses the links; the benchmark's clients talk
//! to the admin API directly, so what it measures is what Raft adds, not the client's own
//! distance to the leader. On each cluster it runs:
//!
//! 1. one client writing change sets back to back (`write` mode): a change set's latency,
//!    against the floor of one round trip (the leader cannot commit before a follower
//!    answered); and one change set every 230 ms, which finds replication idle;
//! 2. the read-modify-write matrix of `bench load` (blind writes with `--mode write`) at each
//!    client count: throughput;
//!
//! and on the WAN cluster the failover benchmark: the leader killed with SIGKILL, time to the
//! first acknowledged write, over several kills.
//!
//! [`WanLink`]: sonraft_testkit::wan::WanLink

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::json;
use sonraft_testkit::local_cluster::{LocalCluster, TOKEN};
use sonraft_testkit::wan::LinkSpec;
use sonraft_testkit::wan_cluster::WanCluster;

use super::failover::kill_leaders;
use super::load::{Mode, Report, run_row};
use super::quantile;
use super::sonraft_target::SonraftTarget;

#[derive(Args, Debug, Clone)]
pub struct WanArgs {
    /// One-way delay of every node-to-node path, in ms.
    #[arg(long, default_value_t = 25)]
    pub delay_ms: u64,
    /// Jitter: each chunk's delay is the delay ± up to this, in ms (order is kept).
    #[arg(long, default_value_t = 2)]
    pub jitter_ms: u64,
    /// TCP segments lost per thousand (each resent `--retransmit-ms` later).
    #[arg(long, default_value_t = 1)]
    pub loss_permille: u32,
    /// How much later a lost segment arrives (Linux's minimum retransmission timeout).
    #[arg(long, default_value_t = 200)]
    pub retransmit_ms: u64,
    /// Clients of the matrix; one row each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub clients: Vec<usize>,
    /// The matrix's workload: read-modify-write, or blind writes.
    #[arg(long, value_enum, default_value = "rmw")]
    pub mode: Mode,
    /// Seconds per row (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Size of the preloaded image.
    #[arg(long, default_value_t = 10_000)]
    pub cells: usize,
    /// Leader kills on the WAN cluster (0: no failover benchmark).
    #[arg(long, default_value_t = 7)]
    pub trials: usize,
    /// Pause before each kill after the previous victim is ready again, in ms: longer than a
    /// restarted node's 3 s warm-up, during which it forces no election and holds other
    /// candidates off for the maximum election timeout (see `bench failover --settle-ms`).
    #[arg(long, default_value_t = 3500)]
    pub settle_ms: u64,
    /// Writing clients during the failover benchmark.
    #[arg(long, default_value_t = 8)]
    pub failover_clients: usize,
    /// Skip the loopback cluster (no ratios then).
    #[arg(long)]
    pub no_loopback: bool,
    /// Where the nodes keep their data and logs, kept afterwards (default: a fresh directory
    /// under the system temp dir, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Flags for every node of both clusters.
    #[arg(
        long,
        allow_hyphen_values = true,
        value_delimiter = ' ',
        default_value = "--timing wan"
    )]
    pub node_args: Vec<String>,
}

impl WanArgs {
    fn link(&self) -> LinkSpec {
        LinkSpec {
            one_way: Duration::from_millis(self.delay_ms),
            jitter: Duration::from_millis(self.jitter_ms),
            loss_permille: self.loss_permille.min(1000),
            retransmit: Duration::from_millis(self.retransmit_ms),
        }
    }
}

/// What one cluster gave.
struct Figures {
    /// One client, blind change sets back to back.
    change_set: Report,
    /// One client, one blind change set every [`PACE`], in microseconds, sorted.
    paced_us: Vec<u32>,
    /// The matrix (`--mode`), one per client count.
    matrix: Vec<Report>,
}

/// Preloads the image and runs the change-set row and the matrix against the nodes at `apis`.
async fn measure(label: &str, apis: &[String], args: &WanArgs) -> anyhow::Result<Figures> {
    let most = args.clients.iter().copied().max().unwrap_or(1);
    let target = Arc::new(SonraftTarget::connect(apis, Some(TOKEN.into()), most).await?);
    let started = Instant::now();
    super::load::Target::preload(&*target, args.cells).await?;
    eprintln!(
        "{label}: preloaded {} cells in {:.1} s",
        args.cells,
        started.elapsed().as_secs_f64()
    );
    println!("{label}");
    println!("{}", Report::HEADER);
    let change_set = run_row(target.clone(), Mode::Write, 1, args.cells, args.seconds).await;
    println!("{}", change_set.row());
    let paced_us = paced(&target, args.cells, args.seconds).await;
    println!(
        "paced: one change set every {} ms: p50 {:.2} ms, p99 {:.2} ms over {}",
        PACE.as_millis(),
        ms(quantile(&paced_us, 0.5)),
        ms(quantile(&paced_us, 0.99)),
        paced_us.len()
    );
    let mut matrix = Vec::new();
    for &clients in &args.clients {
        let r = run_row(target.clone(), args.mode, clients, args.cells, args.seconds).await;
        println!("{}", r.row());
        matrix.push(r);
    }
    Ok(Figures {
        change_set,
        paced_us,
        matrix,
    })
}

/// The pause between paced change sets: long enough for the previous one's commit to have
/// reached the followers, and no multiple of a heartbeat, so that the change sets meet the
/// heartbeats at every phase.
const PACE: Duration = Duration::from_millis(230);

/// One client proposing one blind change set every [`PACE`] for about `seconds`: the latency
/// of a change set that finds replication idle (back to back, each one finds the commit of
/// the one before still on its way to the followers). Failed writes are left out.
async fn paced(target: &SonraftTarget, cells: usize, seconds: u64) -> Vec<u32> {
    let mut session = super::load::Target::client(target);
    let rounds = (Duration::from_secs(seconds).as_millis() / PACE.as_millis()).max(1);
    let mut samples = Vec::new();
    for k in 0..rounds {
        tokio::time::sleep(PACE).await;
        let i = usize::try_from(k).unwrap_or(0) % cells.max(1);
        let started = Instant::now();
        let value = 4 + i64::from(k % 2 == 1);
        if super::load::Target::write(target, &mut session, i, None, value)
            .await
            .is_ok()
        {
            samples.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }
    samples.sort_unstable();
    samples
}

fn ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

async fn on_loopback(binary: &Path, dir: &Path, args: &WanArgs) -> anyhow::Result<Figures> {
    let cluster = LocalCluster::start(binary, &dir.join("loopback"), 3, &args.node_args).await?;
    measure("loopback", &cluster.apis(), args).await
}

/// Runs `sonraft bench wan`.
pub async fn run(args: WanArgs) -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("cannot find this binary")?;
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sonraft-wan-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let link = args.link();

    let loopback = if args.no_loopback {
        None
    } else {
        Some(on_loopback(&binary, &dir, &args).await?)
    };

    let mut wan = WanCluster::start(&binary, &dir.join("wan"), 3, &args.node_args, link).await?;
    let label = format!(
        "wan: {} ms one way ±{} ms, {}‰ of segments resent after {} ms",
        args.delay_ms, args.jitter_ms, args.loss_permille, args.retransmit_ms
    );
    let figures = measure(&label, &wan.cluster.apis(), &args).await?;
    let failover_ms = if args.trials > 0 {
        println!("failover (wan)");
        let restart = wan.restarter();
        let mut samples = kill_leaders(
            &mut wan.cluster,
            args.trials,
            args.failover_clients,
            Duration::from_millis(args.settle_ms),
            restart,
        )
        .await?;
        samples.sort_by(f64::total_cmp);
        samples
    } else {
        Vec::new()
    };
    drop(wan);
    // A directory given is kept, with the nodes' logs.
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }

    summarise(&args, link, loopback.as_ref(), &figures, &failover_ms);
    Ok(())
}

/// Prints the figures against the targets of issue 17, and one JSON line with all of them.
fn summarise(
    args: &WanArgs,
    link: LinkSpec,
    loopback: Option<&Figures>,
    wan: &Figures,
    failover_ms: &[f64],
) {
    let floor = link.rtt().as_secs_f64() * 1000.0;
    let cs = &wan.change_set;
    println!();
    println!(
        "change set, 1 client: p50 {:.2} ms, p99 {:.2} ms; floor (1 RTT) {floor:.1} ms: p50 is floor + {:.2} ms (target ≤ + 2 ms){}",
        cs.p50_ms(),
        cs.p99_ms(),
        cs.p50_ms() - floor,
        loopback.map_or(String::new(), |l| format!(
            "; loopback p50 {:.2} ms, p99 {:.2} ms",
            l.change_set.p50_ms(),
            l.change_set.p99_ms()
        )),
    );
    let paced50 = ms(quantile(&wan.paced_us, 0.5));
    println!(
        "change set, 1 client, one every {} ms: p50 {paced50:.2} ms (floor + {:.2} ms), p99 {:.2} ms",
        PACE.as_millis(),
        paced50 - floor,
        ms(quantile(&wan.paced_us, 0.99)),
    );
    println!("clients  loopback ops/s   wan ops/s   wan/loopback   wan p50 ms   wan p99 ms");
    let mut rows = Vec::new();
    for (i, w) in wan.matrix.iter().enumerate() {
        let l = loopback.and_then(|l| l.matrix.get(i));
        let ratio = l.map(|l| w.ops_per_s() / l.ops_per_s().max(f64::MIN_POSITIVE));
        println!(
            "{:>7} {:>16} {:>11.0} {:>14} {:>12.2} {:>12.2}",
            w.clients,
            l.map_or("-".into(), |l| format!("{:.0}", l.ops_per_s())),
            w.ops_per_s(),
            ratio.map_or("-".into(), |r| format!("{:.1} %", r * 100.0)),
            w.p50_ms(),
            w.p99_ms(),
        );
        rows.push(
            json!({"clients": w.clients, "wan_ops_per_s": w.ops_per_s().round(),
            "loopback_ops_per_s": l.map(|l| l.ops_per_s().round()), "ratio": ratio,
            "wan_p50_ms": w.p50_ms(), "wan_p99_ms": w.p99_ms(),
            "loopback_p50_ms": l.map(Report::p50_ms), "loopback_p99_ms": l.map(Report::p99_ms)}),
        );
    }
    let median = quantile(failover_ms, 0.5);
    if !failover_ms.is_empty() {
        println!(
            "failover (leader SIGKILL → first acknowledged write): median {median:.1} ms, max {:.1} ms over {} kills (target median ≤ 1500 ms)",
            failover_ms.last().copied().unwrap_or(0.0),
            failover_ms.len()
        );
    }
    println!(
        "{}",
        json!({"bench": "wan", "one_way_ms": args.delay_ms, "jitter_ms": args.jitter_ms,
            "loss_permille": args.loss_permille, "retransmit_ms": args.retransmit_ms,
            "node_args": args.node_args, "seconds": args.seconds, "floor_ms": floor,
            "settle_ms": args.settle_ms,
            "change_set_p50_ms": cs.p50_ms(), "change_set_p99_ms": cs.p99_ms(),
            "paced_change_set_p50_ms": paced50, "paced_change_set_p99_ms": ms(quantile(&wan.paced_us, 0.99)),
            "loopback_change_set_p50_ms": loopback.map(|l| l.change_set.p50_ms()),
            "loopback_change_set_p99_ms": loopback.map(|l| l.change_set.p99_ms()),
            "mode": format!("{:?}", args.mode).to_lowercase(), "matrix": rows, "failover_median_ms": median, "failover_ms": failover_ms})
    );
}
