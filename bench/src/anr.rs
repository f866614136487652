//! The ANR-add phase of `bench son` (issue 13: "ANR: at least 95 % of removed true neighbours
//! re-added within 4 periods; no relation added beyond 1.5 x the inter-site distance").
//!
//! After the SON run, the operator removes up to `--anr-remove` planned relations that carry
//! handovers (same carrier, both ends not excluded, not a planted dead or failing relation, not
//! one ANR added itself), in one change set. The phase then looks at the image every quarter
//! period until each came back (written by `anr_add`) or 12 periods passed, and measures every
//! relation `anr_add` wrote against the network's inter-site distance (the median distance from
//! a site to its nearest other one).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sonraft_client::ApiClient;
use sonraft_testkit::local_cluster::SimProc;

use crate::son::sim_state;

/// What the phase measured.
#[derive(Debug, Default)]
pub struct AnrFigures {
    pub removed: usize,
    /// Periods until each removed relation was back, for those that came back.
    pub periods: Vec<u64>,
    /// Relations `anr_add` wrote over the whole run, and the farthest in inter-site distances.
    pub added_total: usize,
    pub farthest_isd: f64,
    pub isd_m: f64,
    /// The removed relations that did not come back in the phase.
    pub never: Vec<String>,
}

impl AnrFigures {
    pub fn within(&self, periods: u64) -> usize {
        self.periods.iter().filter(|p| **p <= periods).count()
    }
}

async fn get_json(client: &ApiClient, api: &str, path: &str) -> anyhow::Result<Value> {
    let r = client.get(api, path).await?;
    if !r.status.is_success() {
        bail!(
            "GET {path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    Ok(r.json())
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn added_by_anr(r: &Value) -> bool {
    r["last_change"]["exists"]["by"] == "anr_add"
}

/// Site positions (metres, equirectangular) and the median nearest-site distance, measured
/// apart from the node's own computation (`tests/anr_add.rs` uses it too).
pub fn geometry(sites: &[Value]) -> (BTreeMap<String, (f64, f64)>, f64) {
    let n = sites.len().max(1) as f64;
    let lat0 = sites.iter().filter_map(|s| s["lat"].as_f64()).sum::<f64>() / n;
    let xy: BTreeMap<String, (f64, f64)> = sites
        .iter()
        .map(|s| {
            let (lat, lon) = (
                s["lat"].as_f64().unwrap_or(0.0),
                s["lon"].as_f64().unwrap_or(0.0),
            );
            let r = 6_371_000.0;
            (
                text(s, "id").to_string(),
                (
                    lon.to_radians() * r * lat0.to_radians().cos(),
                    lat.to_radians() * r,
                ),
            )
        })
        .collect();
    let mut nearest: Vec<f64> = xy
        .values()
        .map(|p| {
            xy.values()
                .map(|q| ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt())
                .filter(|d| *d > 1.0)
                .fold(f64::INFINITY, f64::min)
        })
        .filter(|d| d.is_finite())
        .collect();
    nearest.sort_by(f64::total_cmp);
    let isd = nearest.get(nearest.len() / 2).copied().unwrap_or(0.0);
    (xy, isd)
}

/// Runs the phase on the cluster behind `api` and the simulator `sim`.
pub async fn phase(
    client: &ApiClient,
    api: &str,
    sim: &SimProc,
    excluded: &BTreeSet<&str>,
    remove: usize,
) -> anyhow::Result<AnrFigures> {
    let rels_path = "/image/relations?consistency=linearizable";
    let before = get_json(client, api, rels_path).await?;
    let cells = get_json(client, api, "/image/cells").await?;
    let sites = get_json(client, api, "/image/sites").await?;
    let state = sim_state(client, sim).await?;
    let planted: BTreeSet<&str> = list(&state["pruned_candidates"])
        .iter()
        .map(|d| text(d, "relation"))
        .collect();
    let cell: BTreeMap<&str, (u64, &str)> = list(&cells)
        .iter()
        .map(|c| {
            (
                text(c, "id"),
                (c["arfcn"].as_u64().unwrap_or(0), text(c, "site")),
            )
        })
        .collect();
    let candidates: Vec<&Value> = list(&before)
        .iter()
        .filter(|r| {
            let (s, t) = (text(r, "source"), text(r, "target"));
            !added_by_anr(r)
                && r["remove_allowed"] == true
                && cell.get(s).map(|c| c.0) == cell.get(t).map(|c| c.0)
                && !excluded.contains(s)
                && !excluded.contains(t)
                && !planted.contains(format!("{s}/{t}").as_str())
        })
        .collect();
    // Spread over the network rather than the first cells.
    let step = (candidates.len() / remove.max(1)).max(1);
    let chosen: Vec<&Value> = candidates
        .iter()
        .step_by(step)
        .take(remove)
        .copied()
        .collect();
    let entity = |r: &Value| format!("relation/{}/{}", text(r, "source"), text(r, "target"));
    let body = json!({
        "origin": {"function": "operator"},
        "reason": "bench: forget true neighbours for ANR to find",
        "read_set": chosen.iter().map(|r| json!({"entity": entity(r), "version": r["version"]})).collect::<Vec<_>>(),
        "writes": chosen.iter().map(|r| json!({"entity": entity(r), "param": "exists", "value": false})).collect::<Vec<_>>(),
    });
    let r = client.post(api, "/image/changesets", &body).await?;
    let outcome = r.json();
    if !r.status.is_success() || outcome["outcome"] != "applied" {
        bail!(
            "removing {} relations: {} {outcome}",
            chosen.len(),
            r.status
        );
    }
    let period = |s: &Value| s["period"].as_u64().unwrap_or(0);
    let removed_at = period(&sim_state(client, sim).await?);
    let removed: BTreeSet<String> = chosen.iter().map(|r| entity(r)).collect();
    let mut back: BTreeMap<String, u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = period(&sim_state(client, sim).await?);
        let rels = get_json(client, api, rels_path).await?;
        for r in list(&rels).iter().filter(|r| added_by_anr(r)) {
            let e = entity(r);
            if removed.contains(&e) {
                back.entry(e).or_insert(now.saturating_sub(removed_at));
            }
        }
        if back.len() == removed.len() || now > removed_at + 12 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rels = get_json(client, api, rels_path)
        .await
        .context("relations after the phase")?;
    let (xy, isd) = geometry(list(&sites));
    let never = removed
        .iter()
        .filter(|e| !back.contains_key(*e))
        .cloned()
        .collect();
    let mut figures = AnrFigures {
        removed: removed.len(),
        never,
        periods: back.into_values().collect(),
        isd_m: isd,
        ..AnrFigures::default()
    };
    for r in list(&rels).iter().filter(|r| added_by_anr(r)) {
        let at = |id: &str| cell.get(id).and_then(|c| xy.get(c.1)).copied();
        if let (Some(p), Some(q)) = (at(text(r, "source")), at(text(r, "target"))) {
            let d = ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt();
            figures.farthest_isd = figures.farthest_isd.max(d / isd.max(1.0));
        }
        figures.added_total += 1;
    }
    figures.periods.sort_unstable();
    Ok(figures)
}
