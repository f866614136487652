//! The admin API as an operator's tools meet it, against real processes: history pages that
//! lose no record although many change sets share a log entry, query values and ids with
//! spaces and `+` that arrive as typed (server and `sonraft ctl`), dry runs that change
//! nothing, the documented 400s for bad queries, every route counted under its own label,
//! every metric the README names, and a backup that restores into a new cluster.
//!
//! One three-node cluster carries every check (and a one-node cluster the restore), to keep
//! the suite short.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;
use hyper::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_pages_decodes_dry_runs_counts_and_backs_up_as_documented() {
    let c = Cluster::start(3).await;
    c.import_demo(9).await;
    let leader = c.leader().await;
    let api = c.nodes[leader].api.clone();

    history_pages_return_every_record_exactly_once(&c, &api).await;
    query_values_and_ids_are_percent_decoded_and_ctl_encodes_them(&c, &api).await;
    a_dry_run_answers_the_outcome_and_changes_nothing(&c, &api).await;
    bad_query_strings_get_documented_errors(&c, &api).await;
    every_route_is_counted_under_its_template_and_every_readme_metric_is_exported(&c).await;
    a_backup_restores_into_a_new_cluster_with_the_same_image(&c).await;
}

/// Runs `sonraft ctl ARGS` against `nodes`; returns whether it exited 0, stdout and stderr.
fn ctl(nodes: &[String], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .arg("ctl")
        .args(args)
        .env("SONRAFT_NODES", nodes.join(","))
        .env("SONRAFT_TOKEN", TOKEN)
        .output()
        .expect("run ctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `GET path`, which must answer 200; its JSON.
async fn get_ok(c: &Cluster, api: &str, path: &str) -> Value {
    let r = c.client.get(api, path).await.expect("an answer");
    assert_eq!(
        r.status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// `(cursor, reason)` of each record of a history page.
fn records(page: &Value) -> Vec<(String, String)> {
    page.as_array()
        .expect("a history page is an array")
        .iter()
        .map(|h| {
            let cursor = h["cursor"].as_str().expect("every record has a cursor");
            (
                cursor.to_string(),
                h["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Issue 18: with eight concurrent writes group-committed into shared log entries, pages of
/// three followed `before=<last index>` and never returned the rest of an entry a page ended
/// in. Pages now end on a record's cursor and continue right after it.
async fn history_pages_return_every_record_exactly_once(c: &Cluster, api: &str) {
    // Rounds of eight concurrent blind writes until some log entry holds several of them.
    let mut shared_entry = None;
    for round in 0..20 {
        let writes = (0..8).map(|k| {
            let body = json!({"origin": {"function": "operator"}, "reason": format!("page-{round}-{k}"),
                "writes": [{"entity": format!("cell/C{k}"), "param": "hysteresis", "value": 4 + (round % 2) * 2}]});
            let (client, api) = (c.client.clone(), api.to_string());
            async move { client.post(&api, "/image/changesets", &body).await }
        });
        let mut indexes = Vec::new();
        for r in futures_join_all(writes).await {
            let r = r.expect("an answer");
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            indexes.push(r.json()["index"].as_u64().unwrap());
        }
        indexes.sort_unstable();
        if let Some(w) = indexes.windows(2).find(|w| w[0] == w[1]) {
            shared_entry = Some(w[0]);
            break;
        }
    }
    let shared = shared_entry.expect("no two of eight concurrent writes shared a log entry");

    let all = records(&get_ok(c, api, "/image/history?limit=100000").await);
    assert!(all.len() >= 9, "{all:?}");
    let distinct: BTreeSet<&String> = all.iter().map(|(cursor, _)| cursor).collect();
    assert_eq!(distinct.len(), all.len(), "cursors repeat: {all:?}");

    for limit in [1, 3, 7] {
        let mut paged = Vec::new();
        let mut path = format!("/image/history?limit={limit}");
        loop {
            let page = records(&get_ok(c, api, &path).await);
            assert!(page.len() <= limit, "a page of {limit} held {}", page.len());
            paged.extend(page.iter().cloned());
            match page.last() {
                Some((cursor, _)) if page.len() == limit => {
                    path = format!("/image/history?limit={limit}&before={cursor}");
                }
                _ => break,
            }
        }
        assert_eq!(paged, all, "pages of {limit} differ from one long page");
    }

    // `before=INDEX` keeps its meaning: every record of the entries below INDEX.
    let below: Vec<(String, String)> = all
        .iter()
        .filter(|(cursor, _)| index_of(cursor) < shared)
        .cloned()
        .collect();
    let got = records(
        &get_ok(
            c,
            api,
            &format!("/image/history?limit=100000&before={shared}"),
        )
        .await,
    );
    assert_eq!(got, below);

    // `ctl history` says how to get the next page, and gets it.
    let nodes = vec![api.to_string()];
    let (ok, out, err) = ctl(&nodes, &["history", "--limit", "3"]);
    assert!(ok, "{out}{err}");
    let more = format!("more: sonraft ctl history --limit 3 --before {}", all[2].0);
    assert!(out.contains(&more), "no {more:?} in:\n{out}");
    let (ok, out, err) = ctl(
        &nodes,
        &["--json", "history", "--limit", "3", "--before", &all[2].0],
    );
    assert!(ok, "{out}{err}");
    let page: Value = serde_json::from_str(&out).expect("ctl --json prints JSON");
    assert_eq!(records(&page), all[3..6].to_vec());
}

/// The log index of a cursor `INDEX.POSITION`.
fn index_of(cursor: &str) -> u64 {
    cursor
        .split_once('.')
        .and_then(|(i, _)| i.parse().ok())
        .unwrap_or_else(|| panic!("cursor {cursor:?} is not INDEX.POSITION"))
}

/// A tiny `join_all`: the futures run concurrently as tasks, results in order.
async fn futures_join_all<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

/// Issue 18: `?site=North%20Hill` and `?source=C%201` answered `[]`, and `ctl cells --site
/// "North Hill"` failed with "invalid uri character". `+` is a space in a query, `%2B` a plus.
async fn query_values_and_ids_are_percent_decoded_and_ctl_encodes_them(c: &Cluster, api: &str) {
    let image = json!({
        "sites": [{"id": "North Hill", "name": "north hill", "lat": 48.2, "lon": 11.6, "region": "site-1"}],
        "cells": [
            {"id": "C 1", "site": "North Hill", "rat": "LTE", "pci": 101, "arfcn": 1300, "azimuth": 0},
            {"id": "C+1", "site": "North Hill", "rat": "LTE", "pci": 102, "arfcn": 1300, "azimuth": 120},
        ],
        "relations": [{"source": "C 1", "target": "C+1"}, {"source": "C+1", "target": "C 1"}],
    });
    let r = c.client.post(api, "/image/import", &image).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let ids = |v: &Value, key: &str| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x[key].as_str().unwrap().to_string())
            .collect()
    };
    let cells = get_ok(c, api, "/image/cells?site=North%20Hill").await;
    assert_eq!(ids(&cells, "id"), ["C 1", "C+1"]);
    let cells = get_ok(c, api, "/image/cells?consistency=local&site=North+Hill").await;
    assert_eq!(ids(&cells, "id"), ["C 1", "C+1"], "+ is a space in a query");
    let rels = get_ok(c, api, "/image/relations?source=C%201").await;
    assert_eq!(ids(&rels, "target"), ["C+1"]);
    let rels = get_ok(c, api, "/image/relations?source=C%2B1").await;
    assert_eq!(ids(&rels, "target"), ["C 1"]);
    assert_eq!(get_ok(c, api, "/image/cells/C%2B1").await["pci"], 102);
    assert_eq!(
        get_ok(c, api, "/image/cells/C+1").await["pci"],
        102,
        "+ is a plus in a path"
    );

    // ctl, through a follower (the reads and the write are forwarded).
    let follower = c.nodes.iter().find(|p| p.api != api).unwrap().api.clone();
    let nodes = vec![follower];
    let (ok, out, err) = ctl(&nodes, &["--json", "cells", "--site", "North Hill"]);
    assert!(ok, "{out}{err}");
    let cells: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ids(&cells, "id"), ["C 1", "C+1"]);
    let (ok, out, err) = ctl(&nodes, &["--json", "cell", "C+1"]);
    assert!(ok, "{out}{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["id"], "C+1");
    let (ok, out, err) = ctl(
        &nodes,
        &[
            "--json",
            "propose",
            "--reason",
            "tilt & CIO for North Hill",
            "--set",
            "cell/C 1:electrical_tilt=45",
            "--set",
            "relation/C+1/C 1:cio_db=2",
        ],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["outcome"],
        "applied",
        "{out}"
    );
    assert_eq!(
        get_ok(c, api, "/image/cells/C%201").await["electrical_tilt"],
        45
    );
    let newest = get_ok(c, api, "/image/history?limit=1").await;
    assert_eq!(newest[0]["reason"], "tilt & CIO for North Hill");
}

/// `?dry_run=true` answers what the change set's outcome would be, through any node, and
/// applies nothing: no new version, no history record.
async fn a_dry_run_answers_the_outcome_and_changes_nothing(c: &Cluster, api: &str) {
    let follower = c.nodes.iter().find(|p| p.api != api).unwrap().api.clone();
    let cell = get_ok(c, api, "/image/cells/C3").await;
    let version = cell["version"].as_u64().unwrap();
    let tilt_now = cell["electrical_tilt"].as_i64().unwrap();
    let newest = get_ok(c, api, "/image/history?limit=1").await[0]["cursor"].clone();

    for (via, query) in [(api, "?dry_run=true"), (follower.as_str(), "?dry_run")] {
        let path = format!("/image/changesets{query}");
        let r = c
            .client
            .post(via, &path, &tilt("C3", version, tilt_now + 5))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["outcome"], "applied", "{v}");
        assert_eq!(v["dry_run"], true, "{v}");
        assert!(v.get("index").is_none(), "a dry run has no log index: {v}");
    }
    let r = c
        .client
        .post(
            api,
            "/image/changesets?dry_run=true",
            &tilt("C3", version + 7, 40),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["outcome"], "conflict");
    let r = c
        .client
        .post(
            api,
            "/image/changesets?dry_run=true",
            &tilt("C3", version, 2000),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));

    let after = get_ok(c, api, "/image/cells/C3").await;
    assert_eq!(after["version"], version, "a dry run applied something");
    assert_eq!(after["electrical_tilt"], tilt_now);
    assert_eq!(
        get_ok(c, api, "/image/history?limit=1").await[0]["cursor"],
        newest,
        "a dry run left a history record"
    );
}

/// Bad query values get their documented kinds; a parameter the route does not take is
/// `bad_query` instead of being ignored.
async fn bad_query_strings_get_documented_errors(c: &Cluster, api: &str) {
    let cases = [
        (Method::GET, "/image/cells?limit=ten", "bad_limit"),
        (Method::GET, "/image/relations?limit=-1", "bad_limit"),
        (Method::GET, "/image/history?limit=x", "bad_limit"),
        (
            Method::GET,
            "/image/sites?consistency=strong",
            "bad_consistency",
        ),
        (
            Method::GET,
            "/image/cells/C1?consistency=",
            "bad_consistency",
        ),
        (Method::GET, "/image/history?before=12.x", "bad_before"),
        (Method::GET, "/image/history?before=%2B12", "bad_before"),
        (Method::GET, "/image/cells?sit=North%20Hill", "bad_query"),
        (Method::GET, "/image/cells?site=a&site=b", "bad_query"),
        (
            Method::POST,
            "/image/changesets?dry_run=maybe",
            "bad_dry_run",
        ),
        (Method::POST, "/image/changesets?dryrun=true", "bad_query"),
    ];
    for (method, path, kind) in cases {
        let url = format!("{}{path}", sonraft_client::base_url(api));
        let body = bytes::Bytes::from(tilt("C1", 1, 40).to_string());
        let r = c.client.send(method, &url, Some(body), &[]).await.unwrap();
        assert_eq!(
            r.status,
            400,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(v["error"], kind, "{path}: {v}");
        assert!(
            !v["detail"].as_str().unwrap_or_default().is_empty(),
            "{path}: {v}"
        );
    }
}

/// The routes of the admin API's one route table: `(method, path)`.
fn router_routes() -> Vec<(Method, String)> {
    sonraft_node::api::ROUTES
        .iter()
        .map(|r| (r.method.clone(), r.path.to_string()))
        .collect()
}

/// The router serves every route of the table (none answers 404 or 405), each route's
/// requests are counted under its template, and every metric the README's `/metrics` row
/// names is exported.
async fn every_route_is_counted_under_its_template_and_every_readme_metric_is_exported(
    c: &Cluster,
) {
    let routes = router_routes();
    let paths: BTreeSet<&str> = routes.iter().map(|(_, p)| p.as_str()).collect();
    let unique: BTreeSet<(&str, &str)> = routes
        .iter()
        .map(|(m, p)| (m.as_str(), p.as_str()))
        .collect();
    assert_eq!(
        unique.len(),
        routes.len(),
        "a method and path twice in the route table"
    );
    let readme = include_str!("../README.md");
    let api_section = readme
        .split("## Admin API")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has an Admin API section");
    for path in &paths {
        assert!(
            api_section.contains(path),
            "{path} is served but not in the README's Admin API section"
        );
    }

    // One request per route to one node, with a body no POST accepts (nothing changes).
    let api = c.nodes[0].api.clone();
    for (method, path) in &routes {
        let url = format!(
            "{}{}",
            sonraft_client::base_url(&api),
            path.replace("{id}", "C1")
        );
        // A stream never ends by itself: ask for one the node refuses at once.
        let url = if path == "/watch" {
            format!("{url}?from_index=x")
        } else {
            url
        };
        let body = (*method != Method::GET).then(|| bytes::Bytes::from_static(b"not json"));
        let r = c
            .client
            .send(method.clone(), &url, body, &[])
            .await
            .unwrap();
        let kind = r.json()["error"].clone();
        assert!(
            (kind != "not_found" || path.ends_with("{id}")) && kind != "method_not_allowed",
            "{method} {path} is not served: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let metrics =
        String::from_utf8_lossy(&c.client.get(&api, "/metrics").await.unwrap().body).into_owned();
    for (_, path) in &routes {
        let label = format!("route=\"{path}\"");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("sonraft_http_requests_total{") && l.contains(&label)),
            "no request counted under {label}"
        );
    }

    // Every name in the README's /metrics row, on the leader (the event counters of outcome
    // unknown answers are checked where those events are made: tests/forwarding.rs and
    // tests/proposals_end.rs).
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `GET /metrics` |"))
        .expect("README has a /metrics row");
    let names: BTreeSet<String> = row
        .split('`')
        .filter_map(|t| t.strip_prefix("sonraft_"))
        .map(|t| {
            let name: String = t
                .chars()
                .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_' || *ch == '*')
                .collect();
            format!("sonraft_{name}")
        })
        .filter(|n| !n.ends_with("outcome_unknown_total"))
        .collect();
    assert!(names.len() >= 12, "{names:?}");
    // The leader exports the members' gauges once a second: poll for them with a bound.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let leader = c.leader().await;
        let text = String::from_utf8_lossy(
            &c.client
                .get(&c.nodes[leader].api, "/metrics")
                .await
                .unwrap()
                .body,
        )
        .into_owned();
        let missing: Vec<&String> = names
            .iter()
            .filter(|name| match name.strip_suffix('*') {
                Some(prefix) => !text.lines().any(|l| l.starts_with(prefix)),
                None => !text.lines().any(|l| {
                    l.strip_prefix(name.as_str())
                        .is_some_and(|rest| rest.starts_with([' ', '{', '_']))
                }),
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not in /metrics of the leader: {missing:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `ctl backup` writes the image as the snapshot format holds it; `ctl restore` loads it into a
/// new cluster, which then holds the same sites, cells and relations with the same values.
async fn a_backup_restores_into_a_new_cluster_with_the_same_image(c: &Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("image.backup");
    let file_arg = file.to_str().unwrap();
    let (ok, out, err) = ctl(&c.apis(), &["backup", file_arg]);
    assert!(ok, "{out}{err}");
    let (_, body) = sonraft_storage::snapshot::decode_snapshot(std::fs::File::open(&file).unwrap())
        .expect("the backup decodes");
    let api = c.nodes[c.leader().await].api.clone();
    let cells = get_ok(c, &api, "/image/cells").await;
    assert_eq!(body.image.cells.len(), cells.as_array().unwrap().len());
    assert!(!body.history.is_empty(), "the backup holds the history");
    // Into the live cluster it came from, a restore would roll the network back: refused
    // without --force.
    let (ok, out, err) = ctl(&c.apis(), &["restore", file_arg]);
    assert!(!ok, "{out}{err}");
    assert!(err.contains("--force"), "{err}");

    // The new cluster takes import bodies of at most 2 KiB, far less than this image as one
    // JSON body: the restore streams it as JSON lines, as a national image must be.
    let fresh = Cluster::start_with(1, &["--max-import-bytes", "2048"]).await;
    let (ok, out, err) = ctl(&fresh.apis(), &["restore", file_arg]);
    assert!(ok, "{out}{err}");
    // Versions and last writers differ in a new cluster; every value must not.
    let values = |v: Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| {
                let mut x = x.clone();
                let o = x.as_object_mut().unwrap();
                o.remove("version");
                o.remove("last_change");
                x
            })
            .collect()
    };
    let new_api = fresh.nodes[0].api.clone();
    for route in ["/image/sites", "/image/cells", "/image/relations"] {
        assert_eq!(
            values(get_ok(&fresh, &new_api, route).await),
            values(get_ok(c, &api, route).await),
            "{route} differs after the restore"
        );
    }
}
