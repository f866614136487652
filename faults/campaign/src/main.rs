//! `sonraft-campaign`: run a fault campaign against three `sonraft node` processes, re-check
//! a recorded run, measure client waits while a cut-off leader is replaced (`failover`), or
//! tear down what a killed run left behind. See the crate docs
//! (`src/lib.rs`) for how a run is put together.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sonraft_campaign::campaign::{self, Options};
use sonraft_campaign::checks::{self, Evidence};
use sonraft_campaign::linearizability::Budget;
use sonraft_campaign::nemesis::FaultKind;
use sonraft_campaign::{clock, failover, history, nemesis, prerequisites, teardown};

#[derive(Parser)]
#[command(version, about = "Fault campaign against a three-node sonraft cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a campaign and print its summary; exits 1 on any anomaly.
    Run(Box<RunArgs>),
    /// Cut the leader off with a TCP-reset firewall, round after round, under read-modify-write
    /// load on every node: print the election time and the longest client wait of each round;
    /// exits 1 if a wait exceeds twice its round's election time.
    Failover(FailoverArgs),
    /// Judge a recorded run again (its history.jsonl and evidence.json), without a cluster.
    Check {
        #[arg(long)]
        run_dir: PathBuf,
        /// Seconds the linearizability search may spend per cell.
        #[arg(long, default_value_t = 300)]
        check_seconds: u64,
    },
    /// Tear down namespaces, mounts and processes of dead runs whose name starts with PREFIX.
    Cleanup {
        #[arg(long, default_value = "sonc")]
        prefix: String,
    },
    /// Print this process's wall and monotonic clocks (used to check libfaketime).
    #[command(hide = true)]
    ProbeClock,
}

#[derive(clap::Args)]
struct RunArgs {
    /// How long to inject faults.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Go on past --seconds until every kind of fault was injected at least this many times
    /// (on a slow or busy machine faults take longer), but never past --max-seconds.
    #[arg(long, default_value_t = 0)]
    min_per_kind: u64,
    /// Hard end of the injection with --min-per-kind (default: 3 x --seconds).
    #[arg(long)]
    max_seconds: Option<u64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fault kinds to inject (comma-separated); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Option<Vec<FaultKind>>,
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// Read-modify-write cycles per second, all clients together.
    #[arg(long, default_value_t = 25.0)]
    rate: f64,
    /// Reads of random cells after each cycle (they catch stale reads without filling the
    /// node's history).
    #[arg(long, default_value_t = 2)]
    extra_reads: usize,
    /// Cells the clients work on.
    #[arg(long, default_value_t = 6)]
    cells: usize,
    /// Client request timeout in milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// Namespaces, bridge and run name start with this (at most 5 characters).
    #[arg(long, default_value = "sonc")]
    prefix: String,
    /// Where logs, history and faults go (default: $TMPDIR/sonraft-campaign/<run name>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// The node binary (default: `sonraft` next to this binary).
    #[arg(long)]
    sonraft: Option<PathBuf>,
    /// The filesystem binary (default: `sonraft-lazyfs` next to this binary).
    #[arg(long)]
    lazyfs: Option<PathBuf>,
    /// Data directories on the plain disk instead of sonraft-lazyfs (power loss degrades to
    /// kill -9; for trying the campaign where FUSE is unavailable).
    #[arg(long)]
    plain_fs: bool,
    /// The nodes' `--snapshot-every`: small, so snapshots and log purges happen during the run.
    #[arg(long, default_value_t = 300)]
    snapshot_every: u64,
    /// Keep the data directories even when the run found nothing.
    #[arg(long)]
    keep: bool,
    /// Start each replacement node on new ports instead of the address of the node it
    /// replaces (by default it takes that address over, as a rebuilt host would).
    #[arg(long)]
    fresh_addresses: bool,
    /// Seconds the linearizability search may spend per cell.
    #[arg(long, default_value_t = 120)]
    check_seconds: u64,
    /// Check the long run's targets (issue 11): at least this many faults of each kind...
    #[arg(long)]
    target_per_kind: Option<u64>,
    /// ...and at least this many power losses of the leader (with --target-per-kind).
    #[arg(long, default_value_t = 50)]
    target_leader_power_losses: u64,
}

#[derive(clap::Args)]
struct FailoverArgs {
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Read-modify-write clients bound to each node.
    #[arg(long, default_value_t = 2)]
    clients_per_node: usize,
    /// Pause between one client's cycles in milliseconds (jittered by ±50%).
    #[arg(long, default_value_t = 20)]
    pause_ms: u64,
    /// Client request timeout in milliseconds: far above any expected wait, so that waits are
    /// measured, not cut.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// How long each cut lasts, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    hold_ms: u64,
    /// Namespaces, bridge and run name start with this (at most 5 lowercase letters).
    #[arg(long, default_value = "sonf")]
    prefix: String,
    /// Where the node logs go (default: $TMPDIR/sonraft-campaign/<run name>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// The node binary (default: `sonraft` next to this binary).
    #[arg(long)]
    sonraft: Option<PathBuf>,
    /// Print the N slowest requests of each round with what the nodes' debug logs say about
    /// them (the nodes then log at debug level, which costs some speed).
    #[arg(long, default_value_t = 0)]
    trace: usize,
}

fn failover_options(a: FailoverArgs) -> anyhow::Result<failover::Options> {
    if a.prefix.is_empty()
        || a.prefix.len() > 5
        || !a.prefix.chars().all(|c| c.is_ascii_lowercase())
    {
        anyhow::bail!("--prefix must be 1 to 5 lowercase letters (interface names are short)");
    }
    Ok(failover::Options {
        rounds: a.rounds,
        seed: a.seed,
        clients_per_node: a.clients_per_node.max(1),
        pause: Duration::from_millis(a.pause_ms),
        timeout: Duration::from_millis(a.timeout_ms),
        hold: Duration::from_millis(a.hold_ms),
        prefix: a.prefix,
        run_dir: a.run_dir,
        sonraft: a
            .sonraft
            .unwrap_or_else(|| prerequisites::sibling("sonraft")),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        trace: a.trace,
    })
}

fn options(a: RunArgs) -> anyhow::Result<Options> {
    if a.prefix.len() > 5 || !a.prefix.chars().all(|c| c.is_ascii_lowercase()) {
        anyhow::bail!("--prefix must be 1 to 5 lowercase letters (interface names are short)");
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    Ok(Options {
        seconds: a.seconds,
        min_per_kind: a.min_per_kind,
        max_seconds: a.max_seconds.unwrap_or(3 * a.seconds).max(a.seconds),
        seed: a.seed,
        faults: a.faults.unwrap_or_else(|| FaultKind::ALL.to_vec()),
        clients: a.clients.max(1),
        rate: a.rate,
        extra_reads: a.extra_reads,
        cells: a.cells.max(1),
        timeout: Duration::from_millis(a.timeout_ms),
        prefix: a.prefix,
        run_dir: a.run_dir,
        sonraft: a
            .sonraft
            .unwrap_or_else(|| prerequisites::sibling("sonraft")),
        lazyfs: if a.plain_fs {
            None
        } else {
            Some(
                a.lazyfs
                    .unwrap_or_else(|| prerequisites::sibling("sonraft-lazyfs")),
            )
        },
        snapshot_every: a.snapshot_every,
        keep: a.keep,
        fresh_addresses: a.fresh_addresses,
        check_seconds: a.check_seconds,
        command,
        targets: a.target_per_kind.map(|k| (k, a.target_leader_power_losses)),
    })
}

fn check(run_dir: PathBuf, check_seconds: u64) -> anyhow::Result<bool> {
    let events = history::load(&run_dir.join("history.jsonl"))?;
    let evidence: Evidence =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("evidence.json"))?)?;
    let budget = Budget {
        steps: u64::MAX,
        time: Duration::from_secs(check_seconds),
    };
    let faults = nemesis::load(&run_dir.join("faults.jsonl"))?;
    let v = checks::verify(&events, &faults, &evidence, budget, &run_dir);
    println!(
        "cells checked: {}, anomalies: {}",
        v.cells_checked,
        v.anomalies.len()
    );
    for a in &v.anomalies {
        println!("{}", serde_json::to_string_pretty(a)?);
    }
    for n in &v.notes {
        println!("note: {n}");
    }
    Ok(v.anomalies.is_empty())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::ProbeClock => {
            println!("{}", clock::probe());
            Ok(true)
        }
        Command::Cleanup { prefix } => {
            let cleaned = teardown::cleanup_leftovers(&prefix, 3);
            println!("tore down: {cleaned:?}");
            Ok(true)
        }
        Command::Check {
            run_dir,
            check_seconds,
        } => check(run_dir, check_seconds),
        Command::Failover(args) => match failover_options(args) {
            Ok(o) => failover::run(o.clone()).await.map(|rounds| {
                println!("{}", failover::summary(&o, &rounds));
                !rounds.is_empty() && rounds.iter().all(|r| r.met())
            }),
            Err(e) => Err(e),
        },
        Command::Run(args) => match options(*args) {
            Ok(o) => campaign::run(o).await.map(|summary| {
                println!("{}", summary.text());
                summary.anomalies.is_empty() && summary.targets.iter().all(|t| t.met())
            }),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("sonraft-campaign: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
