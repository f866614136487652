//! Coverage and capacity optimisation on the radio simulator (issue 13): a fresh three-node
//! cluster and simulator with a planted overshooter (`--overshooter`: a 100 m mast, the cell
//! installed at 0° tilt) and a planted coverage hole, for a number of periods.
//!
//! It measures, from the simulator's `GET /state` and the nodes' admin API: the far-user share
//! of every cell of the overshooting site before and after, the periods until the planted
//! overshooter is under the function's threshold, the hole's own demand served before and after
//! (mean of the last looks), the periods until the last `coverage_capacity` change, the cells it
//! changed, and the cells outside their tilt box (which must be none). It prints a table and one
//! JSON line; it asserts nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use sonraft_client::{ApiClient, v1};
use sonraft_testkit::local_cluster::{LocalCluster, SimProc, TOKEN};

use crate::son::sim_state;

#[derive(Args, Debug, Clone)]
pub struct CcoArgs {
    /// Simulated cells.
    #[arg(long, default_value_t = 300)]
    pub cells: usize,
    /// The planted overshooter (its whole site gets the high mast).
    #[arg(long, default_value = "S00000-1")]
    pub overshooter: String,
    /// The cell whose area gets the coverage hole (25 dB within 250 m, 400 m out).
    #[arg(long, default_value = "S00020-2")]
    pub hole: String,
    /// Counter period in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub period_ms: u64,
    /// Periods to run after the import.
    #[arg(long, default_value_t = 80)]
    pub periods: u64,
    /// Where the processes keep their data (default: under the system temp dir; removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const REGIONS: &str = "site-1,site-2,site-3";
/// The far-user share over which the node's coverage optimisation calls a cell overshooting,
/// percent (`sonraft_node::son::coverage::OVERSHOOT_SHARE`; a benchmark does not link the
/// node).
const OVERSHOOT_PCT: f64 = 30.0;

/// Far-user share (percent) and tilt of each cell of the overshooting site.
fn overshooters(state: &Value) -> BTreeMap<String, (f64, i64)> {
    state["overshooters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            Some((
                o["cell"].as_str()?.to_string(),
                (o["far_user_pct"].as_f64()?, o["electrical_tilt"].as_i64()?),
            ))
        })
        .collect()
}

/// Share of the hole's demand served, percent.
fn hole_served(state: &Value) -> f64 {
    state["faults"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["fault"] == "hole")
        .and_then(|f| f["hole_served_pct"].as_f64())
        .unwrap_or(0.0)
}

/// Cell id -> (tilt, power) in the simulator.
fn settings(state: &Value) -> BTreeMap<String, (i64, i64)> {
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

/// Cells of the image outside their tilt box.
async fn outside_box(client: &ApiClient, api: &str) -> anyhow::Result<usize> {
    let cells: Value = client
        .get(api, "/image/cells?consistency=local")
        .await?
        .json();
    Ok(cells
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            let t = c["electrical_tilt"].as_i64().unwrap_or(0);
            let (lo, hi) = (
                c["tilt_box"]["min"].as_i64().unwrap_or(i64::MIN),
                c["tilt_box"]["max"].as_i64().unwrap_or(i64::MAX),
            );
            t < lo || t > hi
        })
        .count())
}

/// Runs `sonraft bench cco`.
pub async fn run(args: CcoArgs) -> anyhow::Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let binary = std::env::current_exe().context("cannot find this binary")?;
    let root = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sonraft-bench-cco-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&root);
    let cells = args.cells.to_string();
    let layout = [
        "--cells",
        &cells,
        "--regions",
        REGIONS,
        "--overshooter",
        &args.overshooter,
    ];
    let hole = format!("hole:{}@0", args.hole);
    let period_ms = args.period_ms.to_string();
    let mut sim_args = layout.to_vec();
    sim_args.extend(["--period-ms", &period_ms, "--plant", &hole]);
    let sim = SimProc::start(&binary, &root.join("sim"), &sim_args)?;
    let cluster = LocalCluster::start(
        &binary,
        &root,
        3,
        &["--antennas".to_string(), sim.antennas.join(",")],
    )
    .await?;
    let client = ApiClient::new(Some(TOKEN.to_string()), Duration::from_secs(60));
    let api = cluster.nodes[0].api.clone();
    let out = std::process::Command::new(&binary)
        .args(["sim", "export"])
        .args(layout)
        .args(["--cooldown-ms", &(2 * args.period_ms).to_string()])
        .output()
        .context("sim export")?;
    if !out.status.success() {
        bail!("sim export: {}", String::from_utf8_lossy(&out.stderr));
    }
    let image: Value = serde_json::from_slice(&out.stdout).context("sim export: not JSON")?;
    let before = sim_state(&client, &sim).await?;
    let r = client.post(&api, "/image/import", &image).await?;
    if !r.status.is_success() {
        bail!("import: {} {}", r.status, String::from_utf8_lossy(&r.body));
    }
    let period = |s: &Value| s["period"].as_u64().unwrap_or(0);
    let start = period(&before);
    let far_before = overshooters(&before);
    let served_before = hole_served(&before);
    let baseline = settings(&before);
    let threshold = OVERSHOOT_PCT;
    let mut fixed_after = None;
    let mut last_change_at = None;
    let mut last = before.clone();
    let mut seen = baseline.clone();
    let mut looks = Vec::new();
    let mut outside_max = 0;
    while period(&last) < start + args.periods {
        tokio::time::sleep(Duration::from_millis(args.period_ms / 4)).await;
        let s = sim_state(&client, &sim).await?;
        if period(&s) == period(&last) {
            continue;
        }
        let now = settings(&s);
        if now != seen {
            last_change_at = Some(period(&s) - start);
            seen = now;
        }
        let planted = overshooters(&s)
            .get(&args.overshooter)
            .map_or(100.0, |o| o.0);
        if fixed_after.is_none() && planted < threshold {
            fixed_after = Some(period(&s) - start);
        }
        looks.push(hole_served(&s));
        outside_max = outside_max.max(outside_box(&client, &api).await?);
        last = s;
    }
    let tail = &looks[looks.len().saturating_sub(4)..];
    let served_after = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
    let far_after = overshooters(&last);
    let changed: Vec<String> = settings(&last)
        .into_iter()
        .filter(|(id, v)| baseline.get(id) != Some(v))
        .map(|(id, v)| format!("{id} {:?}->{v:?}", baseline.get(&id)))
        .collect();
    let history: Value = client.get(&api, "/image/history?limit=10000").await?.json();
    let count = |outcome: &str| {
        history
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| {
                h["origin"]["function"] == "coverage_capacity" && h["outcome"]["outcome"] == outcome
            })
            .count()
    };
    let (applied, rejected) = (count("applied"), count("rejected"));
    let trials: v1::Trials = {
        let r = client.get(&api, "/son/trials?limit=100000").await?;
        r.parse()
            .with_context(|| format!("GET /son/trials: {}", r.status))?
    };
    let undone: Vec<String> = trials
        .closed
        .iter()
        .filter(|t| t.function == "coverage_capacity" && t.state == "undone")
        .map(|t| {
            let writes: Vec<String> = t
                .writes
                .iter()
                .map(|w| format!("{} {} {}->{}", w.entity, w.param, w.before, w.after))
                .collect();
            let kpis: Vec<String> = t
                .kpis
                .iter()
                .map(|k| format!("{} {:.1}->{:.1}", k.kpi, k.before, k.after))
                .collect();
            format!("{} ({})", writes.join(", "), kpis.join(", "))
        })
        .collect();
    drop(cluster);
    drop(sim);
    let _ = std::fs::remove_dir_all(&root);

    println!("# {command}");
    println!(
        "{:<10} {:>9} {:>14} {:>13} {:>10}",
        "cell", "planted", "far before %", "far after %", "tilt"
    );
    for (id, (far, tilt)) in &far_after {
        let (b, t0) = far_before.get(id).copied().unwrap_or((0.0, 0));
        println!(
            "{:<10} {:>9} {:>14.1} {:>13.1} {:>4} -> {}",
            id,
            if *id == args.overshooter { "yes" } else { "" },
            b,
            far,
            t0,
            tilt
        );
    }
    println!(
        "overshooter {} under {threshold:.0} % far users after: {}",
        args.overshooter,
        fixed_after.map_or("not within the run".into(), |p| format!("{p} periods"))
    );
    println!(
        "hole at {}: {served_before:.1} % of its demand served before, {served_after:.1} % after",
        args.hole
    );
    println!(
        "coverage_capacity: {applied} applied, {rejected} rejected, {} undone by verification; last change after {} periods; {} cells changed",
        undone.len(),
        last_change_at.map_or("-".into(), |p| p.to_string()),
        changed.len()
    );
    for u in &undone {
        println!("  undone {u}");
    }
    println!("cells outside their tilt box (highest seen): {outside_max}");
    for c in &changed {
        println!("  changed {c}");
    }
    let far: BTreeMap<&String, Value> = far_after
        .iter()
        .map(|(id, (far, tilt))| {
            (id, json!({"far_before_pct": far_before.get(id).map(|f| f.0), "far_after_pct": far, "tilt_after": tilt}))
        })
        .collect();
    println!(
        "{}",
        json!({"bench": "cco", "cells": args.cells, "period_ms": args.period_ms, "periods": args.periods,
               "overshooter": args.overshooter, "overshooter_fixed_after_periods": fixed_after, "site": far,
               "hole": args.hole, "hole_served_before_pct": served_before, "hole_served_after_pct": served_after,
               "applied": applied, "rejected": rejected, "undone": undone.len(), "undone_trials": undone, "last_change_after_periods": last_change_at,
               "cells_changed": changed.len(), "cells_outside_tilt_box": outside_max})
    );
    Ok(())
}
