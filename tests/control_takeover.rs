//! When a site's node is lost, the surviving nodes take its antennas over and SON goes on for
//! its cells; when it returns, control goes back; and no antenna ever applies a configuration
//! from a stale controller (issue 14). Three nodes, a simulator of 60 cells in three regions
//! reporting every 500 ms, loopback timing (claim after 4 s, hand-back after 5 s).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use sonraft_client::v1;
use sonraft_testkit::local_cluster::SimProc;

const REGIONS: &str = "site-1,site-2,site-3";
const CELLS: &str = "60";
/// `--control-claim-ms` with loopback timing.
const CLAIM: Duration = Duration::from_secs(4);

async fn control(c: &Cluster, p: &NodeProc) -> v1::ControlSummary {
    let r = c
        .client
        .get(&p.api, "/control")
        .await
        .expect("GET /control");
    serde_json::from_slice(&r.body).expect("control summary")
}

fn fencing(state: &Value) -> Value {
    state["fencing"].clone()
}

async fn start() -> (tempfile::TempDir, SimProc, Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProc::start(
        binary(),
        dir.path(),
        &["--cells", CELLS, "--period-ms", "500", "--regions", REGIONS],
    )
    .expect("simulator");
    let c = Cluster::start_with(3, &["--antennas", &sim.antennas.join(",")]).await;
    c.import(&sim_export(CELLS, REGIONS, &[])).await;
    (dir, sim, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_sites_antennas_are_taken_over_then_handed_back_and_never_fenced_wrongly() {
    let (_dir, sim, mut c) = start().await;
    let (lost_cells, lost_cell_sites) = region_cells(&c, "site-3").await;
    assert!(
        lost_cells.len() >= 15,
        "{} cells in site-3",
        lost_cells.len()
    );

    // Every cell of site-3 has its session on node 3, at the home epoch 0.
    until(Duration::from_secs(30), "site-3's sessions", || async {
        let up = c.connected_cells(&[2], None).await;
        let missing: Vec<_> = lost_cells.iter().filter(|x| !up.contains_key(*x)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("{} missing", missing.len()))
        }
    })
    .await;

    c.nodes[2].kill9();
    let killed = Instant::now();
    // Within the claim time + 10 s, every one of its cells has a session from a survivor, at
    // a new epoch.
    let took = until(CLAIM + Duration::from_secs(10), "the take-over", || async {
        let up = c.connected_cells(&[0, 1], Some(0)).await;
        let missing: Vec<_> = lost_cells.iter().filter(|x| !up.contains_key(*x)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} of {} not taken over: {missing:?}",
                missing.len(),
                lost_cells.len()
            ))
        }
    })
    .await;
    let after_kill = killed.elapsed();
    let taken = c.connected_cells(&[0, 1], Some(0)).await;
    let by_node: BTreeMap<u64, usize> = lost_cells.iter().fold(BTreeMap::new(), |mut m, x| {
        *m.entry(taken[x].0).or_default() += 1;
        m
    });
    let takeover_epoch = lost_cells.iter().map(|x| taken[x].1).max().unwrap();
    eprintln!(
        "site-3's {} cells taken over {:.1} s after the kill (per node {by_node:?})",
        lost_cells.len(),
        after_kill.as_secs_f64()
    );
    let summary = control(&c, &c.nodes[0]).await;
    assert_eq!(
        summary.away_from_home as usize, lost_cell_sites,
        "{summary:?}"
    );
    assert_eq!(by_node.len(), 2, "both survivors take a share: {by_node:?}");
    let _ = took;

    // SON goes on for them: relations of site-3 cells an operator removes are added back by
    // ANR at the node that took the cell over, and reach the antennas.
    let before = sim.state(&c.client).await.unwrap();
    let relations: Vec<Value> = c.list("/image/relations?consistency=linearizable").await;
    let dead: BTreeSet<String> = before["pruned_candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["relation"].as_str().unwrap().to_string())
        .collect();
    let cells: Vec<Value> = c.list("/image/cells").await;
    let arfcn: BTreeMap<&str, u64> = cells
        .iter()
        .map(|x| (x["id"].as_str().unwrap(), x["arfcn"].as_u64().unwrap()))
        .collect();
    // Not on a cell where ANR waits for the verdict on an addition of its, or is held off after
    // one was undone: it would not add them back for hours. At most two a cell.
    let trials = c
        .client
        .get(&c.nodes[0].api, "/son/trials")
        .await
        .unwrap()
        .json();
    let anr = |list: &str| -> Vec<String> {
        trials[list]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["function"] == "anr_add")
            .flat_map(|t| match t["cells"].as_array() {
                Some(cells) => cells.iter().filter_map(|x| x.as_str()).collect(),
                None => t["cell"].as_str().into_iter().collect::<Vec<_>>(),
            })
            .map(str::to_string)
            .collect()
    };
    let busy: BTreeSet<String> = anr("open").into_iter().chain(anr("holds")).collect();
    let mut per_cell: BTreeMap<&str, usize> = BTreeMap::new();
    let chosen: Vec<&Value> = relations
        .iter()
        .filter(|r| {
            let (s, t) = (r["source"].as_str().unwrap(), r["target"].as_str().unwrap());
            lost_cells.contains(s)
                && !busy.contains(s)
                && r["remove_allowed"] == true
                && r["last_change"]["exists"]["by"] != "anr_add"
                && arfcn[s] == arfcn[t]
                && !dead.contains(&format!("{s}/{t}"))
        })
        .filter(|r| {
            let n = per_cell.entry(r["source"].as_str().unwrap()).or_default();
            *n += 1;
            *n <= 2
        })
        .take(6)
        .collect();
    assert!(
        chosen.len() >= 3,
        "only {} relations to remove",
        chosen.len()
    );
    let entity = |r: &Value| {
        format!(
            "relation/{}/{}",
            r["source"].as_str().unwrap(),
            r["target"].as_str().unwrap()
        )
    };
    let body = json!({
        "origin": {"function": "operator"},
        "reason": "test: forget some of site-3's neighbours",
        "read_set": chosen.iter().map(|r| json!({"entity": entity(r), "version": r["version"]})).collect::<Vec<_>>(),
        "writes": chosen.iter().map(|r| json!({"entity": entity(r), "param": "exists", "value": false})).collect::<Vec<_>>(),
    });
    let r = c
        .client
        .post(&c.nodes[0].api, "/image/changesets", &body)
        .await
        .unwrap();
    assert_eq!(r.json()["outcome"], "applied", "{}", r.json());
    let removed: BTreeSet<String> = chosen.iter().map(|r| entity(r)).collect();
    let removed_at = r.json()["index"].as_u64().expect("the removal's index");
    // Each is added back by ANR: an applied anr_add change set writes it. (Whether it stays is
    // the verification's call: on 30 cells with half-second periods the area's throughput is
    // noisy enough that a trial now and then undoes an addition and holds the function off
    // the cell, which `son_verification` tests; here what counts is that ANR ran for them.)
    until(
        Duration::from_secs(30),
        "ANR re-adding site-3's relations",
        || async {
            let r = c
                .client
                .get(&c.nodes[0].api, "/image/history?limit=1000")
                .await
                .map_err(|e| e.to_string())?;
            let history = r.json();
            let history = history
                .as_array()
                .ok_or_else(|| format!("history: {} {history}", r.status))?;
            let back: BTreeSet<&str> = history
                .iter()
                .filter(|h| {
                    h["index"].as_u64() > Some(removed_at)
                        && h["origin"]["function"] == "anr_add"
                        && h["outcome"]["outcome"] == "applied"
                })
                .flat_map(|h| h["writes"].as_array().into_iter().flatten())
                .filter(|w| w["param"] == "exists" && w["value"] == true)
                .filter_map(|w| w["entity"].as_str())
                .filter(|e| removed.contains(*e))
                .collect();
            if back.len() == removed.len() {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} back: {back:?} of {removed:?}",
                    back.len(),
                    removed.len()
                ))
            }
        },
    )
    .await;
    let pushed = sim.state(&c.client).await.unwrap();
    let applied = |s: &Value, id: u64| {
        s["fencing"]["applied_by_controller"][id.to_string()]
            .as_u64()
            .unwrap_or(0)
    };
    for id in by_node.keys() {
        assert!(
            applied(&pushed, *id) > applied(&before, *id),
            "node {id} pushed nothing after the take-over: {}",
            fencing(&pushed)
        );
    }

    // Node 3 returns: once it has been heard and caught up for the hold time, its cell sites
    // go home at a newer epoch.
    c.nodes[2].restart().unwrap();
    c.wait_ready(&c.nodes[2]).await;
    until(Duration::from_secs(30), "the hand-back", || async {
        let away = control(&c, &c.nodes[0]).await.away_from_home;
        let home = c.connected_cells(&[2], Some(takeover_epoch)).await;
        let missing = lost_cells.iter().filter(|x| !home.contains_key(*x)).count();
        if away == 0 && missing == 0 {
            Ok(())
        } else {
            Err(format!(
                "{away} cell sites away, {missing} cells without their home session"
            ))
        }
    })
    .await;
    let (code, out, err) = ctl(&c.apis().join(","), &["control"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("every cell site is controlled by its home site"),
        "{out}"
    );

    // No antenna applied a configuration from a stale controller, nor two controllers at one
    // epoch.
    let f = fencing(&sim.state(&c.client).await.unwrap());
    eprintln!("fencing: {f}");
    assert_eq!(f["stale_applied"], 0, "{f}");
    assert_eq!(f["epoch_conflicts"], 0, "{f}");
}
