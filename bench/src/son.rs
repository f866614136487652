//! The acceptance measurement of the trusted SON (issue 12, "How it will be checked"): a
//! three-node cluster and the simulator (1 s counter period, ±3 % counter noise) as real
//! processes on loopback, left to the SON functions for N periods without any injected harm.
//!
//! With an operator policy set before the network is imported:
//! - a set of cells, excluded for every SON function (planted problems among them, so that the
//!   functions want to touch them);
//! - a change window for `pci_conflict` that opens in the middle of the run (the planted PCI
//!   collisions exist while it is closed);
//!
//! it measures, from the history (`GET /image/history`), the trials (`GET /son/trials`) and the
//! simulator's handover counters (`GET /state` of the simulator):
//! 1. SON change sets applied per function, and the share undone (trials closed `undone`);
//! 2. writes by SON functions that touch an excluded cell;
//! 3. PCI writes inside and outside the window;
//! 4. direction reversals per cell or relation and parameter group at steady state, the most
//!    in any `--reversal-window` consecutive periods;
//! 5. the too-early handover ratio at steady state on the cells where mobility robustness acted;
//! 6. cell outages detected (none is planted, so each is a false alarm);
//! 7. after the run, ANR finding removed true neighbours again ([`crate::anr`]).
//!
//! It prints a table and one JSON line; it asserts nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use sonraft_client::{ApiClient, v1};
use sonraft_sim::topology::Topology;
use sonraft_testkit::local_cluster::{LocalCluster, SimProc, TOKEN};

/// The SON functions the operator's policy controls.
const SON_FUNCTIONS: [&str; 7] = [
    "pci_conflict",
    "mobility_robustness",
    "load_balancing",
    "energy_saving",
    "anr_pruning",
    "anr_add",
    "coverage_capacity",
];

#[derive(Args, Debug, Clone)]
pub struct SonArgs {
    /// Counter periods to run (1 s each).
    #[arg(long, default_value_t = 500)]
    pub periods: u64,
    /// Periods before the steady state (reversals and too-early ratios count after them).
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    /// Reversals are counted in any this many consecutive periods.
    #[arg(long, default_value_t = 24)]
    pub reversal_window: u64,
    /// Planned relations the operator removes after the run, for ANR to find again (0: no
    /// ANR phase).
    #[arg(long, default_value_t = 100)]
    pub anr_remove: usize,
    /// Simulated cells.
    #[arg(long, default_value_t = 300)]
    pub cells: usize,
    /// Regions of the simulated sites (one per node).
    #[arg(long, default_value = "site-1,site-2,site-3")]
    pub regions: String,
    /// Where the processes keep their data (default: under the system temp dir; removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const PERIOD_MS: u64 = 1000;

/// A SON function's direction on a parameter group: +1, -1 (0: no numeric move).
fn direction(param: &str, before: &v1::ParamValue, after: &v1::ParamValue) -> i64 {
    let (v1::ParamValue::Int(b), v1::ParamValue::Int(a)) = (before, after) else {
        return 0;
    };
    let sign = (a - b).signum();
    // More downtilt shrinks the coverage that more power grows.
    if param == "electrical_tilt" {
        -sign
    } else {
        sign
    }
}

/// The parameter group a written parameter belongs to, as counted here: a cell's mobility
/// parameters, a cell's coverage parameters, or a relation's CIO (in both groups).
fn group(param: &str) -> Option<&'static str> {
    match param {
        "hysteresis" | "time_to_trigger_ms" | "a3_offset" => Some("mobility"),
        "electrical_tilt" | "max_tx_power_dbm" => Some("coverage"),
        "cio_db" => Some("cio (mobility+coverage)"),
        _ => None,
    }
}

/// The cells an entity touches: a cell, or both ends of a relation.
fn entity_cells(entity: &str) -> Vec<&str> {
    if let Some(c) = entity.strip_prefix("cell/") {
        vec![c]
    } else if let Some((s, t)) = entity
        .strip_prefix("relation/")
        .and_then(|r| r.split_once('/'))
    {
        vec![s, t]
    } else {
        Vec::new()
    }
}

/// The cell an entity reconfigures (a relation belongs to its source).
fn owner_cell(entity: &str) -> Option<&str> {
    entity_cells(entity).first().copied()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 10_000.0 / whole as f64).round() / 100.0
    }
}

/// The simulator's cumulative handover counters per cell: (attempts, too early).
fn handovers(state: &Value) -> BTreeMap<String, (u64, u64)> {
    state["handovers"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(cell, h)| {
            let n = |k: &str| h[k].as_u64().unwrap_or(0);
            (cell.clone(), (n("attempts"), n("too_early")))
        })
        .collect()
}

pub(crate) async fn sim_state(client: &ApiClient, sim: &SimProc) -> anyhow::Result<Value> {
    let r = client.get(&sim.status, "/state").await?;
    if !r.status.is_success() {
        bail!("simulator state: {}", r.status);
    }
    Ok(r.json())
}

/// Proposals the nodes dropped before proposing them because the operator's controls would
/// refuse them (window, exclusion, verification, hold), per function, summed over `apis`.
async fn skipped(client: &ApiClient, apis: &[String]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for api in apis {
        let Ok(r) = client.get(api, "/metrics").await else {
            continue;
        };
        for line in String::from_utf8_lossy(&r.body).lines() {
            let Some(rest) = line.strip_prefix("sonraft_son_proposals_skipped_total{function=\"")
            else {
                continue;
            };
            let Some((function, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let v = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
            *out.entry(function.to_string()).or_default() += v;
        }
    }
    out
}

/// The sum over `apis` of every metric line that starts with `prefix` (all label sets of a
/// metric when `prefix` ends at its `{`).
pub(crate) async fn metric_sum(client: &ApiClient, apis: &[String], prefix: &str) -> u64 {
    let mut n = 0;
    for api in apis {
        let Ok(r) = client.get(api, "/metrics").await else {
            continue;
        };
        for line in String::from_utf8_lossy(&r.body).lines() {
            if let Some(rest) = line.strip_prefix(prefix)
                && let Some((_, value)) = rest.rsplit_once(' ')
            {
                n += value.trim().parse::<f64>().unwrap_or(0.0) as u64;
            }
        }
    }
    n
}

/// The whole history, oldest first.
pub(crate) async fn history(
    client: &ApiClient,
    api: &str,
) -> anyhow::Result<Vec<v1::HistoryRecord>> {
    let mut all = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let q = v1::HistoryQuery {
            limit: Some(10_000),
            before: before.clone(),
            ..Default::default()
        };
        let r = client
            .get(api, &sonraft_client::with_query("/image/history", &q))
            .await?;
        let page: Vec<v1::HistoryRecord> = r
            .parse()
            .with_context(|| format!("GET /image/history: {}", r.status))?;
        let Some(last) = page.last() else { break };
        before = Some(last.cursor.clone());
        let n = page.len();
        all.extend(page);
        if n < 10_000 {
            break;
        }
    }
    all.reverse();
    Ok(all)
}

/// The excluded cells: planted problems each function would want to fix, and two plain cells.
fn excluded_cells(topo: &Topology) -> Vec<String> {
    let p = &topo.problems;
    let mut picks: Vec<usize> = Vec::new();
    picks.extend(p.late_cells.iter().take(2));
    picks.extend(p.early_cells.iter().take(2));
    picks.extend(p.overloaded.iter().take(2));
    picks.extend(p.pci_collisions.iter().take(1).map(|(a, _)| *a));
    picks.extend(
        p.failing_relations
            .iter()
            .take(1)
            .map(|&r| topo.relations[r].source),
    );
    let planted: BTreeSet<usize> = picks.iter().copied().collect();
    picks.extend(
        (0..topo.cells.len())
            .filter(|c| !planted.contains(c))
            .step_by(97)
            .take(2),
    );
    let mut ids: Vec<String> = picks.iter().map(|&c| topo.cells[c].id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Sets the SON policy, waiting until the cluster takes policies (command format 4).
pub(crate) async fn set_policy(
    client: &ApiClient,
    api: &str,
    policy: &Value,
) -> anyhow::Result<()> {
    put_once_allowed(client, api, "/son/policy", policy).await
}

/// `PUT path`, again while the cluster answers 409 (a voter has not advertised the command
/// format it needs yet), for up to 30 s.
pub(crate) async fn put_once_allowed(
    client: &ApiClient,
    api: &str,
    path: &str,
    body: &Value,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client.put(api, path, body).await?;
        if r.status.is_success() {
            return Ok(());
        }
        let answer = String::from_utf8_lossy(&r.body).into_owned();
        if r.status != 409 || Instant::now() > deadline {
            bail!("PUT {path}: {} {answer}", r.status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn export(binary: &Path, args: &SonArgs) -> anyhow::Result<Value> {
    let out = std::process::Command::new(binary)
        .args(["sim", "export", "--cells", &args.cells.to_string()])
        .args(["--regions", &args.regions, "--cooldown-ms", "2000"])
        .output()
        .context("sim export")?;
    if !out.status.success() {
        bail!("sim export: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).context("sim export: not JSON")
}

/// One change of a parameter group, for the reversal count.
struct Step {
    period: u64,
    dir: i64,
    what: String,
}

/// Most reversals among `steps` (in order) at or after `from` within any `window` periods.
fn most_reversals_in_window(steps: &[Step], from: u64, window: u64) -> (usize, Vec<u64>) {
    let mut at = Vec::new();
    let mut last = 0;
    for s in steps {
        if s.dir == 0 {
            continue;
        }
        if last != 0 && s.dir != last && s.period >= from {
            at.push(s.period);
        }
        last = s.dir;
    }
    let mut most = 0;
    for (i, &p) in at.iter().enumerate() {
        let n = at[i..].iter().take_while(|&&q| q < p + window).count();
        most = most.max(n);
    }
    (most, at)
}

/// Runs `sonraft bench son`.
pub async fn run(args: SonArgs) -> anyhow::Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let binary = std::env::current_exe().context("cannot find this binary")?;
    let root = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sonraft-bench-son-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&root);
    let result = measure(&args, &binary, &root, &command).await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&root);
    } else {
        eprintln!("logs kept under {}", root.display());
    }
    result
}

async fn measure(args: &SonArgs, binary: &Path, root: &Path, command: &str) -> anyhow::Result<()> {
    let regions: Vec<String> = args.regions.split(',').map(str::to_string).collect();
    let topo = Topology::build(args.cells, 1, &regions);
    let sim = SimProc::start(
        binary,
        &root.join("sim"),
        &[
            "--cells",
            &args.cells.to_string(),
            "--period-ms",
            &PERIOD_MS.to_string(),
            "--regions",
            &args.regions,
        ],
    )?;
    let cluster = LocalCluster::start(
        binary,
        root,
        3,
        &["--antennas".to_string(), sim.antennas.join(",")],
    )
    .await?;
    let client = ApiClient::new(Some(TOKEN.to_string()), Duration::from_secs(60));
    let api = cluster.nodes[0].api.clone();

    // The operator's policy, before the network exists: nothing is changed before it holds.
    let excluded = excluded_cells(&topo);
    let start_ms = now_ms();
    let run_ms = args.periods * PERIOD_MS;
    // The PCI window opens at the first whole minute after the middle of the run and stays
    // open past its end.
    let from_minute = (start_ms + run_ms / 2).div_ceil(60_000) % 1440;
    let width = (run_ms.div_ceil(60_000) + 10).min(1439);
    let to_minute = (from_minute + width) % 1440;
    let opens_ms = (start_ms + run_ms / 2).div_ceil(60_000) * 60_000;
    let in_window = |ms: u64| {
        let m = (ms / 60_000) % 1440;
        if from_minute <= to_minute {
            (from_minute..to_minute).contains(&m)
        } else {
            m >= from_minute || m < to_minute
        }
    };
    let mut policy = client.get(&api, "/son/policy").await?.json();
    if !policy.is_object() {
        policy = json!({});
    }
    let mut functions = serde_json::Map::new();
    for f in SON_FUNCTIONS {
        let mut controls = json!({"mode": "closed_loop", "exclude": {"cells": excluded}});
        if f == "pci_conflict" {
            controls["window"] = json!({"from_minute": from_minute, "to_minute": to_minute});
        }
        functions.insert(f.to_string(), controls);
    }
    policy["functions"] = Value::Object(functions);
    set_policy(&client, &api, &policy).await?;

    let image = export(binary, args)?;
    let r = client.post(&api, "/image/import", &image).await?;
    if !r.status.is_success() {
        bail!("import: {} {}", r.status, String::from_utf8_lossy(&r.body));
    }

    // The run: one look at the simulator per period.
    let t0 = now_ms();
    let first = sim_state(&client, &sim).await?["period"]
        .as_u64()
        .unwrap_or(0);
    let mut steady_from: Option<BTreeMap<String, (u64, u64)>> = None;
    let mut last_state;
    let mut stalled = Instant::now();
    let mut seen = first;
    // PCI collisions and confusions on the simulator at the last look before the window opened,
    // and the period they were all gone.
    let mut pci_while_closed = 0;
    let mut pci_fixed_at: Option<u64> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(PERIOD_MS)).await;
        // A missed look is made up at the next: the counters are cumulative.
        let Ok(state) = sim_state(&client, &sim).await else {
            if stalled.elapsed() > Duration::from_secs(30) {
                bail!("the simulator has not answered for 30 s");
            }
            continue;
        };
        let period = state["period"].as_u64().unwrap_or(0);
        last_state = state;
        if period > seen {
            if (period - first) / 50 > (seen - first) / 50 {
                eprintln!("period {} of {}", period - first, args.periods);
            }
            seen = period;
            stalled = Instant::now();
        } else if stalled.elapsed() > Duration::from_secs(30) {
            bail!("the simulator stopped at period {period}");
        }
        let pci_problems = |k: &str| last_state[k].as_array().map_or(0, Vec::len);
        let problems = pci_problems("pci_collisions") + pci_problems("pci_confusions");
        if now_ms() < opens_ms {
            pci_while_closed = problems;
        } else if problems == 0 && pci_fixed_at.is_none() {
            pci_fixed_at = Some(period.saturating_sub(first));
        }
        let done = period.saturating_sub(first);
        if done >= args.warmup && steady_from.is_none() {
            steady_from = Some(handovers(&last_state));
        }
        if done >= args.periods {
            break;
        }
    }
    let end_ms = now_ms();
    let steady_end = handovers(&last_state);
    let steady_start = steady_from.unwrap_or_default();
    let period_of = |ms: u64| ms.saturating_sub(t0) / PERIOD_MS;
    let excluded_set: BTreeSet<&str> = excluded.iter().map(String::as_str).collect();
    let anr = if args.anr_remove > 0 {
        crate::anr::phase(&client, &api, &sim, &excluded_set, args.anr_remove).await?
    } else {
        crate::anr::AnrFigures::default()
    };

    let records = history(&client, &api).await?;
    let skipped = skipped(&client, &cluster.apis()).await;
    // With no fault planted, every outage detected is a false alarm.
    let alarms = metric_sum(
        &client,
        &cluster.apis(),
        "sonraft_son_outages_detected_total{",
    )
    .await;
    let trials: v1::Trials = {
        let r = client.get(&api, "/son/trials?limit=100000").await?;
        r.parse()
            .with_context(|| format!("GET /son/trials: {}", r.status))?
    };

    // 1. Applied per function, and undone.
    let mut applied: BTreeMap<String, u64> = BTreeMap::new();
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut fallbacks = Vec::new();
    for h in &records {
        let f = h.origin.function.clone();
        if f == "operator" {
            continue;
        }
        match h.outcome {
            v1::Outcome::Applied { .. } => {
                *applied.entry(f.clone()).or_default() += 1;
                if f == "fallback" {
                    fallbacks.push(h);
                }
            }
            _ => *refused.entry(f).or_default() += 1,
        }
    }
    let mut trial_states: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for t in trials.open.iter().chain(&trials.closed) {
        *trial_states
            .entry(t.function.clone())
            .or_default()
            .entry(t.state.clone())
            .or_default() += 1;
    }
    let son_applied: u64 = SON_FUNCTIONS
        .iter()
        .map(|f| applied.get(*f).copied().unwrap_or(0))
        .sum();
    let undone_total: u64 = trial_states
        .values()
        .map(|s| s.get("undone").copied().unwrap_or(0))
        .sum();
    let undone_examples: Vec<Value> = trials
        .closed
        .iter()
        .filter(|t| t.state == "undone")
        .take(8)
        .map(|t| {
            json!({
                "index": t.index, "function": t.function, "period": period_of(t.applied_at_ms),
                "reason": t.reason, "writes": t.writes.iter().map(|w| format!("{} {} {}->{}", w.entity, w.param, w.before, w.after)).collect::<Vec<_>>(),
                "kpis": t.kpis.iter().map(|k| format!("{} {:.1}->{:.1}", k.kpi, k.before, k.after)).collect::<Vec<_>>(),
            })
        })
        .collect();

    // 2. Writes by SON functions that touch an excluded cell; refusals that name an exclusion.
    let mut excluded_writes = Vec::new();
    let mut exclusion_refusals: BTreeMap<String, u64> = BTreeMap::new();
    for h in &records {
        if !SON_FUNCTIONS.contains(&h.origin.function.as_str()) {
            continue;
        }
        match &h.outcome {
            v1::Outcome::Applied { .. } => {
                for w in &h.writes {
                    if entity_cells(&w.entity)
                        .iter()
                        .any(|c| excluded_set.contains(c))
                    {
                        excluded_writes.push(format!(
                            "{} {} {}={} (index {})",
                            h.origin.function, w.entity, w.param, w.value, h.index
                        ));
                    }
                }
            }
            v1::Outcome::Rejected { reason } if reason.contains("the operator excluded") => {
                *exclusion_refusals
                    .entry(h.origin.function.clone())
                    .or_default() += 1;
            }
            _ => {}
        }
    }

    // 3. PCI writes in and out of the window.
    let (mut pci_in, mut pci_out, mut pci_window_refusals) = (0u64, Vec::new(), 0u64);
    for h in records
        .iter()
        .filter(|h| h.origin.function == "pci_conflict")
    {
        match &h.outcome {
            v1::Outcome::Applied { .. } => {
                for w in h.writes.iter().filter(|w| w.param == "pci") {
                    if in_window(h.log_time_ms) {
                        pci_in += 1;
                    } else {
                        pci_out.push(format!(
                            "{} pci={} at period {} (index {})",
                            w.entity,
                            w.value,
                            period_of(h.log_time_ms),
                            h.index
                        ));
                    }
                }
            }
            v1::Outcome::Rejected { reason } if reason.contains("only in its window") => {
                pci_window_refusals += 1;
            }
            _ => {}
        }
    }
    let n = |k: &str| last_state[k].as_array().map_or(0, Vec::len);
    let pci_left = (n("pci_collisions"), n("pci_confusions"));

    // 4. Reversals by SON functions per entity and parameter group, from the trials' before and
    //    after values, in the order the changes applied.
    let mut all_trials: Vec<&v1::Trial> = trials.open.iter().chain(&trials.closed).collect();
    all_trials.sort_by_key(|t| t.index);
    let mut steps: BTreeMap<(String, &str), Vec<Step>> = BTreeMap::new();
    for t in &all_trials {
        let mut per_key: BTreeMap<(String, &str), (i64, Vec<String>)> = BTreeMap::new();
        for w in &t.writes {
            let Some(g) = group(&w.param) else { continue };
            let e = per_key.entry((w.entity.clone(), g)).or_default();
            e.0 += direction(&w.param, &w.before, &w.after);
            e.1.push(format!("{} {}->{}", w.param, w.before, w.after));
        }
        for (key, (dir, what)) in per_key {
            steps.entry(key).or_default().push(Step {
                period: period_of(t.applied_at_ms),
                dir: dir.signum(),
                what: format!(
                    "p{} {} {}",
                    period_of(t.applied_at_ms),
                    t.function,
                    what.join(",")
                ),
            });
        }
    }
    let mut groups_reversing = 0;
    let mut groups_over = Vec::new();
    let mut most_reversals = 0;
    let mut reversal_examples = Vec::new();
    for ((entity, g), s) in &steps {
        let (most, at) = most_reversals_in_window(s, args.warmup, args.reversal_window);
        if at.is_empty() {
            continue;
        }
        groups_reversing += 1;
        most_reversals = most_reversals.max(most);
        let example = json!({"entity": entity, "group": g, "most_in_window": most, "reversals_at": at,
            "changes": s.iter().map(|x| x.what.clone()).collect::<Vec<_>>()});
        if most > 1 {
            groups_over.push(example);
        } else if reversal_examples.len() < 5 {
            reversal_examples.push(example);
        }
    }

    // 5. Too-early handovers at steady state where mobility robustness acted.
    let mut mro_cells: BTreeSet<String> = BTreeSet::new();
    for h in &records {
        if h.origin.function == "mobility_robustness"
            && matches!(h.outcome, v1::Outcome::Applied { .. })
        {
            mro_cells.extend(
                h.writes
                    .iter()
                    .filter_map(|w| owner_cell(&w.entity).map(str::to_string)),
            );
        }
    }
    let mut early: Vec<(String, f64, u64)> = mro_cells
        .iter()
        .map(|c| {
            let (a1, e1) = steady_end.get(c).copied().unwrap_or_default();
            let (a0, e0) = steady_start.get(c).copied().unwrap_or_default();
            let att = a1.saturating_sub(a0);
            (c.clone(), pct(e1.saturating_sub(e0), att), att)
        })
        .collect();
    early.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (early_sum, att_sum) = mro_cells.iter().fold((0, 0), |acc, c| {
        let (a1, e1) = steady_end.get(c).copied().unwrap_or_default();
        let (a0, e0) = steady_start.get(c).copied().unwrap_or_default();
        (acc.0 + e1.saturating_sub(e0), acc.1 + a1.saturating_sub(a0))
    });
    let early_over: Vec<Value> = early
        .iter()
        .filter(|e| e.1 > 3.0)
        .map(|e| json!({"cell": e.0, "too_early_pct": e.1, "attempts": e.2}))
        .collect();

    let undone_pct = pct(undone_total, son_applied);
    let mut figures = json!({
        "bench": "son",
        "command": command,
        "periods": args.periods,
        "cells": args.cells,
        "seconds": (end_ms - t0) / 1000,
        "warmup_periods": args.warmup,
        "applied": applied,
        "refused": refused,
        "skipped_by_controls": skipped,
        "outage_false_alarms": alarms,
        "trials": trial_states,
        "son_applied": son_applied,
        "undone": undone_total,
        "undone_pct": undone_pct,
        "fallback_change_sets": fallbacks.len(),
        "undone_examples": undone_examples,
        "excluded_cells": excluded,
        "excluded_writes": excluded_writes.len(),
        "excluded_write_examples": excluded_writes.iter().take(10).collect::<Vec<_>>(),
        "exclusion_refusals": exclusion_refusals,
        "pci_window": {"from_minute": from_minute, "to_minute": to_minute,
                       "opens_at_period": period_of(opens_ms)},
        "pci_writes_in_window": pci_in,
        "pci_writes_out_of_window": pci_out.len(),
        "pci_out_of_window_examples": pci_out.iter().take(10).collect::<Vec<_>>(),
        "pci_refused_outside_window": pci_window_refusals,
        "pci_problems_at_last_look_before_window": pci_while_closed,
        "pci_problems_all_fixed_at_period": pci_fixed_at,
        "pci_collisions_left": pci_left.0,
        "pci_confusions_left": pci_left.1,
        "reversal_window_periods": args.reversal_window,
        "groups_reversing_at_steady_state": groups_reversing,
        "most_reversals_in_window": most_reversals,
        "groups_over_one_reversal": groups_over.len(),
        "groups_over_examples": groups_over.iter().take(10).collect::<Vec<_>>(),
        "reversal_examples": reversal_examples,
        "mro_cells": mro_cells.len(),
        "mro_cells_too_early_pct": pct(early_sum, att_sum),
        "mro_cells_max_too_early_pct": early.first().map_or(0.0, |e| e.1),
        "mro_cells_over_3pct": early_over,
    });

    figures["anr_removed"] = json!(anr.removed);
    figures["anr_back_periods"] = json!(anr.periods);
    figures["anr_relations_added"] = json!(anr.added_total);
    figures["anr_farthest_isd"] = json!(anr.farthest_isd);
    figures["anr_never_back"] = json!(anr.never);
    println!(
        "sonraft bench son: {} periods of 1 s, {} cells, steady state after period {}",
        args.periods, args.cells, args.warmup
    );
    println!(
        "{:<24} {:>8} {:>8} {:>8} {:>6} {:>6} {:>10} {:>6}",
        "function", "applied", "refused", "skipped", "kept", "undone", "unverified", "open"
    );
    for f in SON_FUNCTIONS {
        let s = trial_states.get(f).cloned().unwrap_or_default();
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        println!(
            "{:<24} {:>8} {:>8} {:>8} {:>6} {:>6} {:>10} {:>6}",
            f,
            applied.get(f).copied().unwrap_or(0),
            refused.get(f).copied().unwrap_or(0),
            skipped.get(f).copied().unwrap_or(0),
            g("kept"),
            g("undone"),
            g("unverified"),
            g("open")
        );
    }
    println!(
        "(refused: in the history; skipped: dropped by the nodes before proposing, as the \
         controls would refuse them: window, exclusion, verification pending, hold)"
    );
    let mark = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!("{:<58} {:>12}  target", "figure", "value");
    let early_pct = pct(early_sum, att_sum);
    let anr_within = anr.within(4);
    let rows: [(String, String, &str, bool); 12] = [
        (
            "SON change sets undone (fallback)".into(),
            format!("{undone_pct} %"),
            "< 1 %",
            undone_pct < 1.0,
        ),
        (
            "writes by SON functions on excluded cells".into(),
            excluded_writes.len().to_string(),
            "0",
            excluded_writes.is_empty(),
        ),
        (
            "PCI writes outside the window".into(),
            pci_out.len().to_string(),
            "0",
            pci_out.is_empty(),
        ),
        (
            "PCI collisions+confusions just before the window opened".into(),
            pci_while_closed.to_string(),
            "-",
            true,
        ),
        (
            "PCI writes inside the window".into(),
            pci_in.to_string(),
            "-",
            true,
        ),
        (
            format!(
                "groups with > 1 reversal in {} periods",
                args.reversal_window
            ),
            groups_over.len().to_string(),
            "0",
            groups_over.is_empty(),
        ),
        (
            "most reversals of one group in the window".into(),
            most_reversals.to_string(),
            "<= 1",
            most_reversals <= 1,
        ),
        (
            format!(
                "too-early HOs on the {} cells MRO acted on",
                mro_cells.len()
            ),
            format!("{early_pct} %"),
            "<= 3 %",
            early_pct <= 3.0,
        ),
        (
            "  cells above 3 % too early".into(),
            early_over.len().to_string(),
            "0",
            early_over.is_empty(),
        ),
        (
            "cell outages detected (none planted: false alarms)".into(),
            alarms.to_string(),
            "0",
            alarms == 0,
        ),
        (
            format!(
                "removed true neighbours re-added within 4 periods (of {})",
                anr.removed
            ),
            format!("{} %", pct(anr_within as u64, anr.removed as u64)),
            ">= 95 %",
            anr_within * 100 >= anr.removed * 95,
        ),
        (
            format!(
                "farthest relation ANR added, x inter-site distance ({:.0} m)",
                anr.isd_m
            ),
            format!("{:.2}", anr.farthest_isd),
            "<= 1.5",
            anr.farthest_isd <= 1.5,
        ),
    ];
    for (name, value, target, ok) in rows {
        println!("{name:<58} {value:>12}  {target:<7} {}", mark(ok));
    }
    println!("{figures}");
    drop(cluster);
    drop(sim);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(period: u64, dir: i64) -> Step {
        Step {
            period,
            dir,
            what: String::new(),
        }
    }

    #[test]
    fn reversals_count_only_changes_of_direction_at_steady_state() {
        let s = [
            step(5, 1),
            step(50, -1),
            step(110, 1),
            step(120, 1),
            step(130, -1),
        ];
        assert_eq!(most_reversals_in_window(&s, 100, 24), (2, vec![110, 130]));
        assert_eq!(most_reversals_in_window(&s, 100, 20), (1, vec![110, 130]));
        assert_eq!(most_reversals_in_window(&s[..2], 100, 24).0, 0);
    }

    #[test]
    fn tilt_down_and_power_up_move_coverage_opposite_ways() {
        let i = v1::ParamValue::Int;
        assert_eq!(direction("electrical_tilt", &i(40), &i(50)), -1);
        assert_eq!(direction("max_tx_power_dbm", &i(40), &i(43)), 1);
        assert_eq!(
            direction(
                "ho_allowed",
                &v1::ParamValue::Bool(true),
                &v1::ParamValue::Bool(false)
            ),
            0
        );
        assert_eq!(entity_cells("relation/A/B"), vec!["A", "B"]);
        assert_eq!(owner_cell("cell/C"), Some("C"));
    }
}
