//! Energy saving over a simulated day (issue 13): the same network, demand and day twice, once
//! with `energy_saving` switched off by the operator's policy and once closed-loop, each on a
//! fresh three-node cluster and simulator (real processes on loopback).
//!
//! From the simulator's totals (`GET /state`) it compares: energy by the simulator's power
//! model (EARTH macro: per transceiver chain 130 W + 4.7 × 20 W × load, 75 W asleep; two chains
//! an LTE cell, four an NR cell), cell-hours dormant, the demand served (volume) and the mean
//! per-user downlink throughput. While a capacity cell sleeps, its partner's load is watched at
//! every look (the ceiling the function promises). It prints a table and one JSON line; it
//! asserts nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use sonraft_client::ApiClient;
use sonraft_testkit::local_cluster::{LocalCluster, SimProc, TOKEN};

use crate::son::{history, put_once_allowed, set_policy, sim_state};

#[derive(Args, Debug, Clone)]
pub struct EnergyArgs {
    /// Real seconds one simulated day takes.
    #[arg(long, default_value_t = 240)]
    pub day_seconds: u64,
    /// Counter period in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub period_ms: u64,
    /// Simulated cells.
    #[arg(long, default_value_t = 300)]
    pub cells: usize,
    /// Simulated hour at the start (the run lasts one day).
    #[arg(long, default_value_t = 12.0)]
    pub start_hour: f32,
    /// Where the processes keep their data (default: under the system temp dir; removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// SON tuning to set on both days (`PUT /son/tuning`), e.g.
    /// `{"energy_saving": {"sleep_ceiling_pct": 30}}`: the trade between energy and peak rate.
    #[arg(long, value_parser = parse_json)]
    pub tuning: Option<Value>,
}

fn parse_json(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}

const REGIONS: &str = "site-1,site-2,site-3";

/// What one simulated day gave.
#[derive(Debug, Default, Clone)]
struct Day {
    totals: Value,
    /// Highest partner load seen while its capacity cell was dormant, percent.
    max_partner_dormant: f64,
    es_applied: usize,
    es_sleeps: usize,
    es_wakes: usize,
    es_undone: usize,
}

/// Runs `sonraft bench energy`.
pub async fn run(args: EnergyArgs) -> anyhow::Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let binary = std::env::current_exe().context("cannot find this binary")?;
    let root = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sonraft-bench-energy-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&root);
    let mut days = Vec::new();
    for on in [false, true] {
        let dir = root.join(if on { "es-on" } else { "es-off" });
        eprintln!(
            "simulated day with energy saving {}",
            if on { "on" } else { "off" }
        );
        match one_day(&args, &binary, &dir, on).await {
            Ok(d) => days.push(d),
            Err(e) => {
                eprintln!("logs kept under {}", root.display());
                return Err(e);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    let (off, on) = (&days[0], &days[1]);
    let f = |d: &Day, k: &str| d.totals[k].as_f64().unwrap_or(0.0);
    let delta = |k: &str| {
        let (a, b) = (f(off, k), f(on, k));
        if a > 0.0 { (b - a) * 100.0 / a } else { 0.0 }
    };
    println!("# {command}");
    println!(
        "{:<34} {:>14} {:>14} {:>9}",
        "one simulated day", "ES off", "ES on", "change"
    );
    for (label, k) in [
        ("energy (kWh, power model)", "energy_kwh"),
        ("demand served (% of offered)", "served_pct"),
        ("demand served (Mbit)", "served_mbit"),
        ("DL throughput per user (kbit/s)", "thp_dl_kbps_per_user"),
        ("capacity cell-hours dormant", "dormant_cell_hours"),
    ] {
        println!(
            "{label:<34} {:>14.2} {:>14.2} {:>8.2}%",
            f(off, k),
            f(on, k),
            delta(k)
        );
    }
    println!(
        "energy-saving changes: {} applied ({} to dormant, {} woken), {} undone by verification; highest partner load while dormant {:.0} %",
        on.es_applied, on.es_sleeps, on.es_wakes, on.es_undone, on.max_partner_dormant
    );
    println!(
        "{}",
        json!({
            "bench": "energy", "cells": args.cells, "day_seconds": args.day_seconds, "period_ms": args.period_ms,
            "tuning": args.tuning,
            "off": off.totals, "on": on.totals,
            "energy_saved_pct": -delta("energy_kwh"), "served_change_pct": delta("served_mbit"),
            "thp_change_pct": delta("thp_dl_kbps_per_user"),
            "es_applied": on.es_applied, "es_sleeps": on.es_sleeps, "es_wakes": on.es_wakes, "es_undone": on.es_undone,
            "max_partner_prb_dl_pct_while_dormant": on.max_partner_dormant,
        })
    );
    Ok(())
}

async fn one_day(args: &EnergyArgs, binary: &Path, dir: &Path, on: bool) -> anyhow::Result<Day> {
    let sim = SimProc::start(
        binary,
        &dir.join("sim"),
        &[
            "--cells",
            &args.cells.to_string(),
            "--period-ms",
            &args.period_ms.to_string(),
            "--regions",
            REGIONS,
            "--day-seconds",
            &args.day_seconds.to_string(),
            "--start-hour",
            &args.start_hour.to_string(),
        ],
    )?;
    let cluster = LocalCluster::start(
        binary,
        dir,
        3,
        &["--antennas".to_string(), sim.antennas.join(",")],
    )
    .await?;
    let client = ApiClient::new(Some(TOKEN.to_string()), Duration::from_secs(60));
    let api = cluster.nodes[0].api.clone();
    let mut policy = client.get(&api, "/son/policy").await?.json();
    if !policy.is_object() {
        policy = json!({});
    }
    let mode = if on { "closed_loop" } else { "off" };
    policy["functions"] = json!({"energy_saving": {"mode": mode}});
    set_policy(&client, &api, &policy).await?;
    if let Some(tuning) = &args.tuning {
        put_once_allowed(&client, &api, "/son/tuning", tuning).await?;
    }
    let out = std::process::Command::new(binary)
        .args(["sim", "export", "--cells", &args.cells.to_string()])
        .args(["--regions", REGIONS, "--cooldown-ms"])
        .arg((2 * args.period_ms).to_string())
        .output()
        .context("sim export")?;
    if !out.status.success() {
        bail!("sim export: {}", String::from_utf8_lossy(&out.stderr));
    }
    let image: Value = serde_json::from_slice(&out.stdout).context("sim export: not JSON")?;
    let r = client.post(&api, "/image/import", &image).await?;
    if !r.status.is_success() {
        bail!("import: {} {}", r.status, String::from_utf8_lossy(&r.body));
    }
    let periods = args.day_seconds * 1000 / args.period_ms;
    let mut day = Day::default();
    let mut stalled = Instant::now();
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(args.period_ms)).await;
        let Ok(state) = sim_state(&client, &sim).await else {
            if stalled.elapsed() > Duration::from_secs(30) {
                bail!("the simulator has not answered for 30 s");
            }
            continue;
        };
        for c in state["capacity_cells"].as_array().into_iter().flatten() {
            if c["dormant"] == true {
                let p = c["partner_prb_dl_pct"].as_f64().unwrap_or(0.0);
                day.max_partner_dormant = day.max_partner_dormant.max(p);
            }
        }
        let period = state["period"].as_u64().unwrap_or(0);
        if period > seen {
            if period / 60 > seen / 60 {
                eprintln!(
                    "period {period} of {periods} (hour {})",
                    state["radio"]["hour"]
                );
            }
            seen = period;
            stalled = Instant::now();
        } else if stalled.elapsed() > Duration::from_secs(30) {
            bail!("the simulator stopped at period {period}");
        }
        day.totals = state["totals"].clone();
        if period >= periods {
            break;
        }
    }
    for r in history(&client, &api).await? {
        let function = r.origin.function.as_str();
        let applied = matches!(r.outcome, sonraft_client::v1::Outcome::Applied { .. });
        if function == "energy_saving" && applied {
            day.es_applied += 1;
            let to_dormant = r
                .writes
                .iter()
                .any(|w| format!("{:?}", w.value).contains("dormant"));
            if to_dormant {
                day.es_sleeps += 1;
            } else {
                day.es_wakes += 1;
            }
        }
        if function == "fallback" && r.reason.contains("energy_saving") {
            day.es_undone += 1;
        }
    }
    drop(cluster);
    drop(sim);
    Ok(day)
}
