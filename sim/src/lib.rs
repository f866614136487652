//! `sonraft sim`: a fleet of simulated antennas over real TCP.
//!
//! - [`topology`]: the layout (hex grid, three sectors per site, relations, PCI plan) and the
//!   planted problems;
//! - [`radio`]: the radio layer (bins of users, path loss, antenna patterns, SINR, PRB load);
//! - [`model`]: the counters each cell reports, from the radio layer and the mobility model;
//! - [`server`]: antenna connections, the period clock, and the status endpoint;
//! - [`pm`]: each period also as TS 32.435 measurement files, one per region (`--pm-dir`);
//! - `signal`: when to stop.
//!
//! It depends on the antenna protocol ([`sonraft_protocol`]) and nothing of the node: it is the
//! other end of the wire, and what it knows of a controller is what the frames say.
#![forbid(unsafe_code)]

pub mod model;
pub mod pm;
pub mod radio;
pub mod server;
mod signal;
pub mod topology;

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct SimArgs {
    #[command(subcommand)]
    pub command: SimCommand,
}

#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// Print the simulated network as the JSON `POST /image/import` takes.
    Export(ExportArgs),
    /// Play the antennas: listen for controller sessions and report counters every period.
    Run(RunArgs),
    /// Measure the radio model alone: build a network and run periods on one core.
    Bench(BenchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Periods to run.
    #[arg(long, default_value_t = 20)]
    pub periods: u32,
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Also set the coordination policy's cool-down (ms) and priority hold (3x), e.g. for
    /// demos with short counter periods.
    #[arg(long)]
    pub cooldown_ms: Option<u64>,
    /// Write JSON lines instead (one `{"site": ...}`, `{"cell": ...}`, `{"relation": ...}` or
    /// `{"policy": ...}` a line), which `sonraft ctl import FILE.jsonl` streams whatever the
    /// image's size.
    #[arg(long)]
    pub lines: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// First antenna listen address (port 0: the OS picks).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Number of antenna listeners (consecutive ports, or all OS-picked with port 0); more
    /// spread 100,000 sessions over more port pairs.
    #[arg(long, default_value_t = 1)]
    pub ports: u16,
    /// Counter period in milliseconds (production: 900000, 15 minutes).
    #[arg(long, default_value_t = 900_000)]
    pub period_ms: u32,
    /// Address of the HTTP status endpoint (`GET /state`).
    #[arg(long)]
    pub status_addr: Option<String>,
    /// Write the listen addresses here as JSON once listening.
    #[arg(long)]
    pub addresses_file: Option<PathBuf>,
    /// Ignore the hysteresis of one push in this many (0: never), to exercise re-pushes.
    #[arg(long, default_value_t = 0)]
    pub faulty_every: u64,
    /// Send the first report only after this many milliseconds (sessions stay idle until then).
    #[arg(long, default_value_t = 0)]
    pub first_report_after_ms: u64,
    /// Run a daily demand profile with one simulated day taking this many real seconds
    /// (86400: real time; 0: demand stays at the busy hour).
    #[arg(long, default_value_t = 0)]
    pub day_seconds: u64,
    /// Simulated hour of day at the first period (with --day-seconds).
    #[arg(long, default_value_t = 12.0)]
    pub start_hour: f32,
    /// Faults to plant at a period, and clear at a later one: KIND:CELL@PERIOD[-CLEAR],
    /// e.g. `outage:S00012-2@120-180` (KIND: outage, sleeping, hole, hotspot); repeatable.
    #[arg(long, value_name = "KIND:CELL@PERIOD[-CLEAR]")]
    pub plant: Vec<server::Scheduled>,
    /// Also write each period as TS 32.435 measurement files, one per region:
    /// `DIR/<region>/A<date>.<begin>-<end>_<region>.xml` (what `sonraft node --pm-dir` reads).
    #[arg(long)]
    pub pm_dir: Option<PathBuf>,
    /// Measurement files kept per region (the oldest are deleted), so the directory is bounded.
    #[arg(long, default_value_t = 96)]
    pub pm_keep: usize,
}

/// What determines the layout; the simulator and the exported image must use the same values.
#[derive(Args, Debug, Clone)]
pub struct LayoutArgs {
    /// Number of cells (three per cell site).
    #[arg(long, default_value_t = 300)]
    pub cells: usize,
    /// Seed of the layout and of the planted problems.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The sonraft sites that split the network between them.
    #[arg(long, value_delimiter = ',', default_value = "site-a,site-b,site-c")]
    pub regions: Vec<String>,
    /// Plant an overshooting cell: its site's mast 100 m high and the cell installed at 0°
    /// tilt (see `topology::overshoot`); repeatable.
    #[arg(long, value_name = "CELL")]
    pub overshooter: Vec<String>,
    /// Carriers per sector: 1 (three LTE sectors a site, and an NR capacity cell on every
    /// fifth site) or 2 (three LTE and three NR sectors on every site: six cells per base
    /// station, as the fleet benchmark's 100,000 cells use).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub carriers: u8,
    /// Inter-site distance in metres (1000: urban; 2000 to 4000: suburban to rural, where an
    /// outage leaves users without coverage).
    #[arg(long, default_value_t = topology::ISD_M)]
    pub isd_m: f64,
    /// Transmit power every cell is configured with, dBm (below the radio's 49 dBm, the rest
    /// is headroom outage compensation can use).
    #[arg(long, default_value_t = topology::CONFIGURED_POWER_DBM)]
    pub power_dbm: i16,
}

impl LayoutArgs {
    /// The layout these arguments determine, with its planted overshooters.
    pub fn topology(&self) -> anyhow::Result<topology::Topology> {
        anyhow::ensure!(
            (100.0..=10_000.0).contains(&self.isd_m),
            "--isd-m must be in 100..=10000"
        );
        anyhow::ensure!(
            (0..=60).contains(&self.power_dbm),
            "--power-dbm must be in 0..=60"
        );
        let deployment = topology::Deployment {
            isd_m: self.isd_m,
            power_dbm: self.power_dbm,
            carriers: self.carriers,
        };
        let mut topo =
            topology::Topology::build_deployed(self.cells, self.seed, &self.regions, deployment);
        for cell in &self.overshooter {
            topo.plant_overshooter(cell)
                .map_err(|e| anyhow::anyhow!(e))?;
        }
        Ok(topo)
    }
}

/// Runs `sonraft sim`.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    match args.command {
        SimCommand::Export(export) => {
            use std::io::Write;
            let layout = export.layout;
            let topo = layout.topology()?;
            let mut image = topo.image_json();
            if let Some(ms) = export.cooldown_ms {
                image["policy"] =
                    serde_json::json!({"cooldown_ms": ms, "priority_hold_ms": ms * 3});
            }
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if export.lines {
                for (kind, list) in [
                    ("site", "sites"),
                    ("cell", "cells"),
                    ("relation", "relations"),
                ] {
                    for v in image[list].as_array().into_iter().flatten() {
                        serde_json::to_writer(&mut out, &serde_json::json!({ kind: v }))?;
                        writeln!(out)?;
                    }
                }
                if !image["policy"].is_null() {
                    serde_json::to_writer(
                        &mut out,
                        &serde_json::json!({ "policy": image["policy"] }),
                    )?;
                    writeln!(out)?;
                }
            } else {
                serde_json::to_writer(&mut out, &image)?;
                writeln!(out)?;
            }
            out.flush()?;
            Ok(())
        }
        SimCommand::Run(run) => run_sim(run).await,
        SimCommand::Bench(b) => {
            tokio::task::spawn_blocking(move || bench(&b)).await?;
            Ok(())
        }
    }
}

/// `sonraft sim bench`: how fast the radio model runs on one core.
fn bench(args: &BenchArgs) {
    use std::time::Instant;
    let t = Instant::now();
    let Ok(topo) = args.layout.topology() else {
        eprintln!("--overshooter names a cell the network does not have");
        return;
    };
    let layout_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut grid = radio::RadioGrid::build(&topo, args.layout.seed);
    let grid_s = t.elapsed().as_secs_f64();
    let by_source = topo.relations_by_source();
    let configs: Vec<_> = (0..topo.cells.len())
        .map(|c| model::initial_config(&topo, c, &by_source))
        .collect();
    let relations = vec![model::RelationState::NEUTRAL; topo.relations.len()];
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(args.layout.seed);
    let t = Instant::now();
    let mut served = 0.0;
    for p in 0..args.periods {
        let out = model::run_period(
            &topo,
            &by_source,
            &mut grid,
            &configs,
            &relations,
            model::PeriodClock {
                end_ms: u64::from(p) * 1000,
                period_ms: 1000,
                profile: radio::daily_profile(p as f32),
            },
            &mut rng,
        );
        served = out.radio.total_served_mbps / out.radio.total_demand_mbps.max(1e-9);
    }
    let run_s = t.elapsed().as_secs_f64();
    println!(
        "cells {} relations {} bins {} (bin {:.0} m): layout {:.2} s, radio grid {:.2} s; {} periods in {:.2} s = {:.2} periods/s on one core ({:.0} ms a period); served {:.1} % of demand",
        topo.cells.len(),
        topo.relations.len(),
        grid.bins,
        grid.bin_m,
        layout_s,
        grid_s,
        args.periods,
        run_s,
        f64::from(args.periods) / run_s,
        run_s * 1000.0 / f64::from(args.periods),
        served * 100.0
    );
}

async fn run_sim(args: RunArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    // `RUST_LOG` filters, as for the node (`sonraft_sim=debug`: each period's timing).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    sonraft_protocol::net::raise_fd_limit();
    anyhow::ensure!(args.period_ms >= 200, "--period-ms must be at least 200");
    let started = std::time::Instant::now();
    let topo = args.layout.topology()?;
    anyhow::ensure!(
        (0.0..24.0).contains(&args.start_hour),
        "--start-hour must be in 0..24"
    );
    let sim = server::Sim::new(
        topo,
        server::SimOptions {
            period_ms: args.period_ms,
            seed: args.layout.seed,
            faulty_every: args.faulty_every,
            day_ms: args.day_seconds.saturating_mul(1000),
            start_hour: args.start_hour,
        },
    );
    sim.set_schedule(args.plant.clone())
        .map_err(|e| anyhow::anyhow!(e))?;
    if let Some(dir) = &args.pm_dir {
        let writer = pm::PmWriter::start(dir.clone(), args.pm_keep, &sim.topo)
            .with_context(|| format!("cannot write PM files into {}", dir.display()))?;
        let _ = sim.pm.set(writer);
    }
    let first: std::net::SocketAddr = args.listen.parse().context("--listen is not ip:port")?;
    let mut addrs = Vec::new();
    for k in 0..args.ports.max(1) {
        let mut a = first;
        if first.port() != 0 {
            a.set_port(first.port() + k);
        }
        let l =
            sonraft_protocol::net::listen(a).with_context(|| format!("cannot listen on {a}"))?;
        addrs.push(l.local_addr()?);
        tokio::spawn(server::accept(sim.clone(), l));
    }
    let status = match &args.status_addr {
        Some(s) => {
            let l = tokio::net::TcpListener::bind(s)
                .await
                .with_context(|| format!("cannot listen on {s}"))?;
            let a = l.local_addr()?;
            tokio::spawn(server::status_http(sim.clone(), l));
            Some(a)
        }
        None => None,
    };
    let json = server::addresses_json(&addrs, status);
    if let Some(f) = &args.addresses_file {
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, json.to_string())?;
        std::fs::rename(&tmp, f)?;
    }
    tracing::info!(cells = sim.topo.cells.len(), relations = sim.topo.relations.len(), antennas = ?addrs, status = ?status,
        built_ms = started.elapsed().as_millis() as u64, "simulator listening");
    println!("{json}");
    let delay = std::time::Duration::from_millis(args.first_report_after_ms);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        server::clock(sim).await;
    });
    signal::wait_for_signal().await;
    Ok(())
}
