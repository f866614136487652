//! ANR that adds relations, on the radio simulator (issue 13): the users of a cell report the
//! neighbours it has no relation to by PCI and carrier; the site resolves them to cells and adds
//! the relations. Checked: removed true neighbours come back within 4 periods (at least 95 %),
//! and no relation is ever added beyond 1.5 inter-site distances.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use sonraft_testkit::local_cluster::SimProc;

async fn sim_period(c: &Cluster, sim: &SimProc) -> u64 {
    sim.state(&c.client).await.unwrap()["period"]
        .as_u64()
        .unwrap()
}

/// A list the node's admin API answers at `path`.
async fn list(c: &Cluster, path: &str) -> Vec<Value> {
    c.client
        .get(&c.nodes[0].api, path)
        .await
        .unwrap()
        .json()
        .as_array()
        .cloned()
        .unwrap()
}

async fn relations(c: &Cluster) -> Vec<Value> {
    list(c, "/image/relations?consistency=linearizable").await
}

fn key(r: &Value) -> (String, String) {
    (
        r["source"].as_str().unwrap().to_string(),
        r["target"].as_str().unwrap().to_string(),
    )
}

fn added_by_anr(r: &Value) -> bool {
    r["last_change"]["exists"]["by"] == "anr_add"
}

#[tokio::test(flavor = "multi_thread")]
async fn removed_neighbours_come_back_within_four_periods_and_none_is_added_too_far() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, c) = simulated_site(dir.path(), &[]).await;

    // The plan left neighbours out: ANR adds them first. Wait until the relations are stable
    // for 6 periods.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut count, mut since) = (0, sim_period(&c, &sim).await);
    loop {
        let now = relations(&c).await.len();
        let period = sim_period(&c, &sim).await;
        if now != count {
            (count, since) = (now, period);
        } else if period >= since + 6 && period >= 8 {
            break;
        }
        assert!(Instant::now() < deadline, "relations never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = relations(&c).await;
    let found = before.iter().filter(|r| added_by_anr(r)).count();
    eprintln!(
        "{} relations, {found} of them added by ANR at start",
        before.len()
    );

    // Remove up to 20 planned same-carrier relations that carry handovers.
    let state = sim.state(&c.client).await.unwrap();
    let dead: BTreeSet<String> = state["pruned_candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["relation"].as_str().unwrap().to_string())
        .collect();
    let cells = list(&c, "/image/cells").await;
    let arfcn: BTreeMap<&str, u64> = cells
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["arfcn"].as_u64().unwrap()))
        .collect();
    let chosen: Vec<&Value> = before
        .iter()
        .filter(|r| {
            let (s, t) = key(r);
            !added_by_anr(r)
                && r["remove_allowed"] == true
                && arfcn[s.as_str()] == arfcn[t.as_str()]
                && !dead.contains(&format!("{s}/{t}"))
        })
        .take(20)
        .collect();
    assert!(
        chosen.len() >= 10,
        "only {} relations to remove",
        chosen.len()
    );
    let removed: BTreeSet<(String, String)> = chosen.iter().map(|r| key(r)).collect();
    let body = json!({
        "origin": {"function": "operator"},
        "reason": "test: forget some true neighbours",
        "read_set": chosen.iter().map(|r| json!({"entity": format!("relation/{}/{}", r["source"].as_str().unwrap(), r["target"].as_str().unwrap()), "version": r["version"]})).collect::<Vec<_>>(),
        "writes": chosen.iter().map(|r| json!({"entity": format!("relation/{}/{}", r["source"].as_str().unwrap(), r["target"].as_str().unwrap()), "param": "exists", "value": false})).collect::<Vec<_>>(),
    });
    let leader = c.leader().await;
    let r = c
        .client
        .post(&c.nodes[leader].api, "/image/changesets", &body)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["outcome"], "applied", "{}", r.json());
    let removed_at = sim_period(&c, &sim).await;

    // Each comes back: note after how many periods.
    let mut back: BTreeMap<(String, String), u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while back.len() < removed.len() {
        let period = sim_period(&c, &sim).await;
        if period > removed_at + 12 || Instant::now() > deadline {
            break;
        }
        for r in relations(&c).await {
            let k = key(&r);
            if removed.contains(&k) && added_by_anr(&r) {
                back.entry(k).or_insert(period - removed_at);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let within = back.values().filter(|p| **p <= 4).count();
    let missing: Vec<_> = removed.iter().filter(|k| !back.contains_key(*k)).collect();
    eprintln!(
        "removed {}: {} back within 4 periods, {} later, periods {:?}; never: {missing:?}",
        removed.len(),
        within,
        back.len() - within,
        back.values().collect::<Vec<_>>()
    );
    if !missing.is_empty() {
        let log = c.nodes[0].log();
        for l in log
            .lines()
            .filter(|l| l.contains("not added") || l.contains("list full"))
        {
            if missing.iter().any(|(s, _)| l.contains(s.as_str())) {
                eprintln!("{l}");
            }
        }
    }
    assert!(
        within * 100 >= removed.len() * 95,
        "only {within} of {} removed neighbours were re-added within 4 periods; never: {missing:?}",
        removed.len()
    );

    // Nothing ANR added spans more than 1.5 inter-site distances.
    let sites = list(&c, "/image/sites").await;
    let (xy, isd) = sonraft_bench::anr::geometry(&sites);
    let site_of: BTreeMap<&str, &str> = cells
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["site"].as_str().unwrap()))
        .collect();
    let mut farthest = 0.0f64;
    for r in relations(&c).await.iter().filter(|r| added_by_anr(r)) {
        let (s, t) = key(r);
        let (p, q) = (xy[site_of[s.as_str()]], xy[site_of[t.as_str()]]);
        let d = ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt();
        farthest = farthest.max(d / isd);
        assert!(
            d <= 1.5 * isd + 1.0,
            "{s} -> {t} added at {d:.0} m, beyond 1.5 x {isd:.0} m"
        );
    }
    eprintln!("inter-site distance {isd:.0} m; farthest added relation {farthest:.2} x");
}
