//! Cell outage detection and compensation on the radio simulator (issue 13): a whole cell
//! site fails, on a fresh three-node cluster and simulator each time, with
//! `outage_compensation` switched off and then closed-loop, at the busy hour and at night.
//!
//! **The scenario.** By default a suburban layout: sites 2.1 km apart (`--isd-m`), cells
//! configured at 43 dBm (`--power-dbm`) on radios that can transmit 49 dBm, and the failed site
//! S00001, the first of the first ring with LTE cells only. In the simulator's urban layout
//! (1 km, `--isd-m 1000 --power-dbm 46`) an outage hardly shows at night (the neighbours already
//! serve 96 % of the area) and at the busy hour it is capacity, not coverage, that is missing;
//! where sites stand farther apart the neighbours reach only part of the area, and the 6 dB
//! a cell configured below its radio's capability can add (two 3 dB steps, one a period, with
//! 2° of uptilt) is what gives coverage back. The radio model is the same in both. S00000 has
//! the NR capacity cell, whose traffic falls back on the LTE neighbours; it can be chosen with
//! `--site`.
//!
//! Coverage and capacity optimisation is switched off unless `--cco` is given: at the other
//! sites it may answer the outage's radio link failures with the same levers, and nothing
//! reverts what it changes when the site returns; with `--cco` the runs show what the two do
//! together. `--hours` chooses the simulated hours (default: the busy hour 20:00 and night
//! 03:00).
//!
//! It measures, from the nodes' metrics and the simulator's `GET /state`: the periods until
//! the owning site counts every cell of the site in outage, from the period in which the last
//! of them failed; the share of the failed cells' area demand served once compensation settled
//! (mean of the last looks) and the highest load of a neighbour; and, after the site returns,
//! the periods until every compensated tilt and power is back, from the period in which the
//! first of its cells returned (with how many were not yet back in each period). Periods are
//! the simulator's own count, as its answers to the fault requests and `GET /state` give it.
//! It prints a table and one JSON line; it asserts nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use sonraft_client::{ApiClient, v1};
use sonraft_testkit::local_cluster::{LocalCluster, SimProc, TOKEN};

use crate::son::{history, metric_sum, set_policy, sim_state};

#[derive(Args, Debug, Clone)]
pub struct OutageArgs {
    /// Simulated cells.
    #[arg(long, default_value_t = 300)]
    pub cells: usize,
    /// The cell site that fails (all its cells).
    #[arg(long, default_value = "S00001")]
    pub site: String,
    /// Inter-site distance, metres (`sonraft sim --isd-m`).
    #[arg(long, default_value_t = 2100.0)]
    pub isd_m: f64,
    /// Power the cells are configured with, dBm (`sonraft sim --power-dbm`); the radios can
    /// transmit 49.
    #[arg(long, default_value_t = 43)]
    pub power_dbm: i16,
    /// Counter period in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub period_ms: u64,
    /// Periods the outage lasts before the site returns.
    #[arg(long, default_value_t = 16)]
    pub outage_periods: u64,
    /// Simulated hours of the day to run at (20: the busy hour, 3: night).
    #[arg(long, value_delimiter = ',', default_value = "20,3")]
    pub hours: Vec<f32>,
    /// Leave coverage and capacity optimisation on (closed loop) at the other sites, as a
    /// network would run it, instead of switching it off to measure compensation alone.
    #[arg(long)]
    pub cco: bool,
    /// Where the processes keep their data (default: under the system temp dir; removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const REGIONS: &str = "site-1,site-2,site-3";

#[derive(Debug, Clone, Default)]
struct Run {
    hour: f32,
    compensation: bool,
    detected_after: u64,
    served_before_pct: f64,
    served_pct: f64,
    max_neighbour_pct: f64,
    compensating: usize,
    /// Each compensating cell's tilt (0.1°) and power (dBm) at the end of the outage.
    compensated: Vec<(String, i64, i64)>,
    reverted_after: Option<u64>,
    /// Cells whose tilt or power differ from before the outage that compensation did not
    /// change (coverage optimisation, with `--cco`).
    changed_by_others: usize,
    /// After the site returns, per period: the compensated cells not yet back.
    revert_trace: Vec<(u64, usize)>,
}

/// Runs `sonraft bench outage`.
pub async fn run(args: OutageArgs) -> anyhow::Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let binary = std::env::current_exe().context("cannot find this binary")?;
    let root = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sonraft-bench-outage-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&root);
    let mut runs = Vec::new();
    for &hour in &args.hours {
        for on in [false, true] {
            let dir = root.join(format!("h{hour}-{}", if on { "on" } else { "off" }));
            eprintln!(
                "site outage at {hour:02}:00, compensation {}",
                if on { "on" } else { "off" }
            );
            match one(&args, &binary, &dir, hour, on).await {
                Ok(r) => runs.push(r),
                Err(e) => {
                    eprintln!("logs kept under {}", root.display());
                    return Err(e);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    println!("# {command}");
    println!(
        "{:<6} {:<13} {:>9} {:>15} {:>13} {:>14} {:>13} {:>9}",
        "hour",
        "compensation",
        "detected",
        "served at start",
        "served after",
        "max neighbour",
        "compensating",
        "reverted"
    );
    for r in &runs {
        println!(
            "{:<6} {:<13} {:>7} p {:>14.1}% {:>12.1}% {:>13.0}% {:>13} {:>9}",
            format!("{:02}:00", r.hour as u32),
            if r.compensation { "on" } else { "off" },
            r.detected_after,
            r.served_before_pct,
            r.served_pct,
            r.max_neighbour_pct,
            r.compensating,
            r.reverted_after.map_or("-".into(), |p| format!("{p} p"))
        );
    }
    let rows: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({"hour": r.hour, "compensation": r.compensation, "detected_after_periods": r.detected_after,
                   "area_served_at_detection_pct": r.served_before_pct, "area_served_pct": r.served_pct,
                   "max_neighbour_prb_dl_pct": r.max_neighbour_pct, "compensating_cells": r.compensating,
                   "compensated": r.compensated, "changed_by_others": r.changed_by_others,
                   "reverted_after_periods": r.reverted_after, "not_yet_reverted_by_period": r.revert_trace})
        })
        .collect();
    println!(
        "{}",
        json!({"bench": "outage", "cells": args.cells, "site": args.site, "cco": args.cco, "isd_m": args.isd_m, "power_dbm": args.power_dbm, "period_ms": args.period_ms, "runs": rows})
    );
    Ok(())
}

fn area(state: &Value) -> (f64, f64) {
    let (mut d, mut s, mut nb) = (0.0, 0.0, 0.0f64);
    for f in state["faults"].as_array().into_iter().flatten() {
        d += f["area_demand_mbps"].as_f64().unwrap_or(0.0);
        s += f["area_served_mbps"].as_f64().unwrap_or(0.0);
        nb = nb.max(f["max_neighbour_prb_dl_pct"].as_f64().unwrap_or(0.0));
    }
    (if d > 0.0 { s * 100.0 / d } else { 100.0 }, nb)
}

/// Cell id -> (tilt, power).
fn coverage(state: &Value) -> std::collections::BTreeMap<String, (i64, i64)> {
    state["configs"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(id, c)| {
            let n = |k: &str| c[k].as_i64().unwrap_or(0);
            (id.clone(), (n("electrical_tilt"), n("max_tx_power_dbm")))
        })
        .collect()
}

async fn one(
    args: &OutageArgs,
    binary: &Path,
    dir: &Path,
    hour: f32,
    on: bool,
) -> anyhow::Result<Run> {
    // Ten real days a simulated day: the hour barely moves during the run.
    let sim = SimProc::start(
        binary,
        &dir.join("sim"),
        &[
            "--cells",
            &args.cells.to_string(),
            "--isd-m",
            &args.isd_m.to_string(),
            "--power-dbm",
            &args.power_dbm.to_string(),
            "--period-ms",
            &args.period_ms.to_string(),
            "--regions",
            REGIONS,
            "--day-seconds",
            "864000",
            "--start-hour",
            &hour.to_string(),
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
    let apis = cluster.apis();
    let mut policy = client.get(&api, "/son/policy").await?.json();
    if !policy.is_object() {
        policy = json!({});
    }
    let mode = if on { "closed_loop" } else { "off" };
    // Coverage optimisation at the other sites may chase the outage's failures with the same
    // levers (power, uptilt): off unless asked for, so that what is measured is compensation's.
    let cco = if args.cco { "closed_loop" } else { "off" };
    policy["functions"] = json!({"outage_compensation": {"mode": mode},
                                 "coverage_capacity": {"mode": cco}});
    set_policy(&client, &api, &policy).await?;
    let out = std::process::Command::new(binary)
        .args(["sim", "export", "--cells", &args.cells.to_string()])
        .args(["--isd-m", &args.isd_m.to_string()])
        .args(["--power-dbm", &args.power_dbm.to_string()])
        .args(["--regions", REGIONS, "--cooldown-ms"])
        .arg((2 * args.period_ms).to_string())
        .output()
        .context("sim export")?;
    if !out.status.success() {
        bail!("sim export: {}", String::from_utf8_lossy(&out.stderr));
    }
    let image: Value = serde_json::from_slice(&out.stdout).context("sim export: not JSON")?;
    let site_cells: Vec<String> = image["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["site"] == args.site.as_str())
        .filter_map(|c| c["id"].as_str().map(str::to_string))
        .collect();
    if site_cells.is_empty() {
        bail!("no cell of site {} in the network", args.site);
    }
    let r = client.post(&api, "/image/import", &image).await?;
    if !r.status.is_success() {
        bail!("import: {} {}", r.status, String::from_utf8_lossy(&r.body));
    }
    let period = |s: &Value| s["period"].as_u64().unwrap_or(0);
    let wait = |n: u64| {
        let (client, sim) = (&client, &sim);
        async move {
            let from = period(&sim_state(client, sim).await?);
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let s = sim_state(client, sim).await?;
                if period(&s) >= from + n {
                    return anyhow::Ok(s);
                }
            }
        }
    };
    let settled = wait(10).await?;
    let baseline = coverage(&settled);
    // Periods count from the simulator's own answers: the period in which the last of the
    // site's cells failed, and the one in which the first came back.
    let mut planted_at = period(&settled);
    for cell in &site_cells {
        let r = client
            .post(
                &sim.status,
                "/fault",
                &json!({"cell": cell, "fault": "outage"}),
            )
            .await?;
        planted_at = planted_at.max(period(&r.json()));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let hard = "sonraft_son_cells_in_outage{kind=\"hard\"}";
    while metric_sum(&client, &apis, hard).await < site_cells.len() as u64 {
        if Instant::now() > deadline {
            bail!("the site's outage was not detected in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at_detection = sim_state(&client, &sim).await?;
    let mut run = Run {
        hour,
        compensation: on,
        detected_after: period(&at_detection).saturating_sub(planted_at),
        served_before_pct: area(&at_detection).0,
        ..Run::default()
    };
    // Let compensation land and the loads settle, then average the last looks.
    let mut looks = Vec::new();
    let mut last = at_detection;
    while period(&last) < planted_at + args.outage_periods {
        last = wait(1).await?;
        looks.push(area(&last));
    }
    let tail = &looks[looks.len().saturating_sub(4)..];
    run.served_pct = tail.iter().map(|a| a.0).sum::<f64>() / tail.len().max(1) as f64;
    run.max_neighbour_pct = tail.iter().map(|a| a.1).fold(0.0, f64::max);
    let during = coverage(&last);
    // The cells outage compensation changed, by the history: with coverage optimisation on,
    // other cells change too, and compensation is not theirs to revert.
    let by_compensation: std::collections::BTreeSet<String> = history(&client, &api)
        .await?
        .iter()
        .filter(|h| {
            h.origin.function == "outage_compensation"
                && matches!(h.outcome, v1::Outcome::Applied { .. })
        })
        .flat_map(|h| &h.writes)
        .filter_map(|w| w.entity.strip_prefix("cell/").map(str::to_string))
        .collect();
    let compensated: Vec<String> = during
        .iter()
        .filter(|(id, v)| baseline.get(*id) != Some(v))
        .map(|(id, _)| id.clone())
        .filter(|id| !args.cco || by_compensation.contains(id))
        .collect();
    run.changed_by_others = during
        .iter()
        .filter(|(id, v)| baseline.get(*id) != Some(v) && !by_compensation.contains(*id))
        .count();
    run.compensating = compensated.len();
    run.compensated = compensated
        .iter()
        .map(|id| {
            let (tilt, power) = during[id];
            (id.clone(), tilt, power)
        })
        .collect();
    let mut cleared_at = u64::MAX;
    for cell in &site_cells {
        let r = client
            .post(
                &sim.status,
                "/fault",
                &json!({"cell": cell, "fault": "clear"}),
            )
            .await?;
        cleared_at = cleared_at.min(period(&r.json()));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = sim_state(&client, &sim).await?;
        let now = coverage(&s);
        let left = compensated
            .iter()
            .filter(|id| now.get(*id) != baseline.get(*id))
            .count();
        let after = period(&s).saturating_sub(cleared_at);
        if run.revert_trace.last().is_none_or(|l| l.0 != after) {
            run.revert_trace.push((after, left));
        } else if let Some(l) = run.revert_trace.last_mut() {
            l.1 = left;
        }
        if left == 0 {
            run.reverted_after = Some(after);
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(cluster);
    drop(sim);
    Ok(run)
}
