//! The operator's SON controls through the admin API and `ctl` (issue 12): an open-loop
//! function's change applies only when an operator approves it; an excluded cell is left
//! alone by that function; every applied SON change is a trial with the values it replaced.
//! The SON functions' changes are planted through the API, which a lab cluster allows
//! (`--api-son-origins`; tests/roles.rs shows a production one refusing them).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Runs `sonraft ctl ARGS` against the cluster; returns whether it exited 0, and its output.
fn ctl(c: &Cluster, args: &[&str]) -> (bool, String) {
    let out = Command::new(binary())
        .arg("ctl")
        .args(args)
        .env("SONRAFT_NODES", c.apis().join(","))
        .env("SONRAFT_TOKEN", TOKEN)
        .output()
        .expect("run ctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Sets the SON policy, waiting until every voter advertised command format 4 (each node
/// does so once it runs; until then the cluster answers 409 `cluster_version`).
async fn set_policy(c: &Cluster, policy: Value) {
    let api = &c.nodes[0].api;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.client.put(api, "/son/policy", &policy).await.unwrap();
        if r.status == 200 {
            return;
        }
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert!(
            r.status == 409 && body.contains("cluster_version") && Instant::now() < deadline,
            "{} {body}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cio_change(function: &str, source: &str, target: &str, cio: i64) -> Value {
    json!({
        "origin": {"function": function},
        "reason": "test",
        "writes": [{"entity": format!("relation/{source}/{target}"), "param": "cio_db", "value": cio}],
    })
}

async fn cio_of(c: &Cluster, source: &str) -> i64 {
    let r = c
        .client
        .get(
            &c.nodes[0].api,
            &format!("/image/relations?source={source}&consistency=linearizable"),
        )
        .await
        .unwrap()
        .json();
    r.as_array()
        .and_then(|a| a.first())
        .and_then(|rel| rel["cio_db"].as_i64())
        .unwrap_or_else(|| panic!("no relation from {source}: {r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_functions_change_applies_only_when_an_operator_approves_it() {
    let c = Cluster::start_with(3, &["--api-son-origins"]).await;
    c.import_demo(6).await;
    set_policy(
        &c,
        json!({"functions": {"load_balancing": {"mode": "open_loop"}}}),
    )
    .await;
    let (ok, out) = ctl(&c, &["son-policy"]);
    assert!(
        ok && out.contains("load_balancing") && out.contains("open_loop"),
        "{out}"
    );

    let api = &c.nodes[1].api;
    let r = c
        .client
        .post(
            api,
            "/image/changesets",
            &cio_change("load_balancing", "C0", "C1", 2),
        )
        .await
        .unwrap();
    let answer = r.json();
    assert_eq!(r.status, 202, "{answer}");
    assert_eq!(answer["outcome"], "pending", "{answer}");
    let id = answer["id"].as_u64().expect("an id");
    assert_eq!(
        cio_of(&c, "C0").await,
        0,
        "nothing applied before the approval"
    );

    let (ok, out) = ctl(&c, &["pending"]);
    assert!(
        ok && out.contains(&id.to_string()) && out.contains("relation/C0/C1"),
        "{out}"
    );
    let (ok, out) = ctl(
        &c,
        &["approve", &id.to_string(), "--note", "checked by alice"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("applied"), "{out}");
    assert_eq!(cio_of(&c, "C0").await, 2);
    let (ok, out) = ctl(&c, &["approve", &id.to_string()]);
    assert!(!ok && out.contains("no proposal"), "approved twice: {out}");

    // A second one is rejected and never applies.
    let r = c
        .client
        .post(
            api,
            "/image/changesets",
            &cio_change("load_balancing", "C2", "C3", 2),
        )
        .await
        .unwrap();
    let second = r.json()["id"].as_u64().expect("an id");
    let (ok, out) = ctl(&c, &["reject", &second.to_string()]);
    assert!(ok && out.contains("rejected by the operator"), "{out}");
    assert_eq!(cio_of(&c, "C2").await, 0);
    let pending = c.client.get(api, "/son/pending").await.unwrap().json();
    assert_eq!(pending, json!([]));

    // The approved change is a trial: what it wrote and the value it replaced.
    let trials = c.client.get(api, "/son/trials").await.unwrap().json();
    let open = &trials["open"][0];
    assert_eq!(open["function"], "load_balancing", "{trials}");
    assert_eq!(open["writes"][0]["before"], 0, "{trials}");
    assert_eq!(open["writes"][0]["after"], 2, "{trials}");
    assert_eq!(open["state"], "open", "{trials}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excluded_cell_is_left_alone_by_that_function_only() {
    let c = Cluster::start_with(3, &["--api-son-origins"]).await;
    c.import_demo(6).await;
    set_policy(
        &c,
        json!({"functions": {"load_balancing": {"exclude": {"cells": ["C1"]}}}}),
    )
    .await;
    let api = &c.nodes[0].api;
    let r = c
        .client
        .post(
            api,
            "/image/changesets",
            &cio_change("load_balancing", "C0", "C1", 2),
        )
        .await
        .unwrap();
    let answer = r.json();
    assert_eq!(r.status, 409, "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("excluded cell C1"),
        "{answer}"
    );
    for function in ["mobility_robustness", "operator"] {
        let r = c
            .client
            .post(
                api,
                "/image/changesets",
                &cio_change(function, "C0", "C1", 1),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{function}: {}", r.json());
    }
    // A policy that cannot hold is refused, and the old one stays.
    let bad =
        json!({"functions": {"pci_conflict": {"window": {"from_minute": 60, "to_minute": 60}}}});
    let r = c.client.put(api, "/son/policy", &bad).await.unwrap();
    assert_eq!(r.status, 422, "{}", r.json());
    let policy = c.client.get(api, "/son/policy").await.unwrap().json();
    assert_eq!(
        policy["functions"]["load_balancing"]["exclude"]["cells"],
        json!(["C1"]),
        "{policy}"
    );
}

/// Sets `tuning` through node 1, once the cluster's format allows it: until every node
/// advertised its release, the command is refused with 409.
async fn put_tuning(c: &Cluster, tuning: &Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c
            .client
            .put(&c.nodes[0].api, "/son/tuning", tuning)
            .await
            .unwrap();
        if r.status == 200 {
            return;
        }
        assert_eq!(r.status, 409, "{}", r.json());
        assert!(Instant::now() < deadline, "{}", r.json());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_son_tuning_is_replicated_and_a_bad_one_refused() {
    let c = Cluster::start(3).await;
    let tuning = json!({"load_balancing": {"high_pct": 85}, "pci": {"reserved": [0, 1, 2]}});
    // Until every node advertised its release, the cluster refuses a format-5 command.
    put_tuning(&c, &tuning).await;
    for n in &c.nodes {
        let t = c.client.get(&n.api, "/son/tuning").await.unwrap().json();
        assert_eq!(t["load_balancing"]["high_pct"], 85, "{t}");
        assert_eq!(
            t["load_balancing"]["low_pct"], 60,
            "absent fields take defaults: {t}"
        );
        assert_eq!(t["pci"]["reserved"], json!([0, 1, 2]), "{t}");
    }
    // Thresholds that cannot hold, and a misspelt one, are refused; the tuning stays.
    let api = &c.nodes[1].api;
    let bad = json!({"load_balancing": {"high_pct": 50, "low_pct": 60}});
    let r = c.client.put(api, "/son/tuning", &bad).await.unwrap();
    assert_eq!(r.status, 422, "{}", r.json());
    assert_eq!(r.json()["error"], "invalid_tuning", "{}", r.json());
    let typo = json!({"anr": {"idle_prune": 1000}});
    let r = c.client.put(api, "/son/tuning", &typo).await.unwrap();
    assert!(r.status.is_client_error(), "{}", r.json());
    assert!(r.json().to_string().contains("idle_prune"), "{}", r.json());
    let t = c.client.get(api, "/son/tuning").await.unwrap().json();
    assert_eq!(t["load_balancing"]["high_pct"], 85, "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outage_compensation_and_energy_saving_tuning_is_replicated_and_a_bad_one_refused() {
    let c = Cluster::start(3).await;
    let tuning = json!({"outage": {"hard_periods": 3},
                        "outage_compensation": {"withdraw_load_pct": 90},
                        "energy_saving": {"sleep_ceiling_pct": 40, "wake_ceiling_pct": 60}});
    // Until every node advertised its release (format 9), the cluster refuses the sections.
    put_tuning(&c, &tuning).await;
    for n in &c.nodes {
        let t = c.client.get(&n.api, "/son/tuning").await.unwrap().json();
        assert_eq!(t["outage"]["hard_periods"], 3, "{t}");
        assert_eq!(
            t["outage"]["sleeping_periods"], 2,
            "absent fields take defaults: {t}"
        );
        assert_eq!(t["outage_compensation"]["withdraw_load_pct"], 90, "{t}");
        assert_eq!(t["energy_saving"]["wake_ceiling_pct"], 60, "{t}");
    }
    let api = &c.nodes[1].api;
    let bad = json!({"energy_saving": {"sleep_ceiling_pct": 70, "wake_ceiling_pct": 65}});
    let r = c.client.put(api, "/son/tuning", &bad).await.unwrap();
    assert_eq!(r.status, 422, "{}", r.json());
    assert_eq!(r.json()["error"], "invalid_tuning", "{}", r.json());
    assert!(
        r.json().to_string().contains("sleep_ceiling_pct"),
        "{}",
        r.json()
    );
    let t = c.client.get(api, "/son/tuning").await.unwrap().json();
    assert_eq!(t["energy_saving"]["sleep_ceiling_pct"], 40, "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_availability_tuning_is_refused_while_a_voters_release_is_older_and_set_once_it_is_not()
{
    // Node 3 is a voter that has not run in the cluster yet: its release is unknown, so the
    // cluster counts it as the oldest and its effective command format stays below 9.
    let c = Cluster::start_paused(3, 3).await;
    let api = c.nodes[0].api.clone();
    let status = c.status(&c.nodes[0]).await.expect("status");
    assert!(
        status["effective_command_format"].as_u64().unwrap() < 9,
        "{status}"
    );
    let tuning = json!({"energy_saving": {"wake_ceiling_pct": 70}});
    let r = c.client.put(&api, "/son/tuning", &tuning).await.unwrap();
    assert_eq!(r.status, 409, "{}", r.json());
    assert_eq!(r.json()["error"], "cluster_version", "{}", r.json());
    assert!(
        r.json().to_string().contains("upgrade every voter first"),
        "{}",
        r.json()
    );
    let t = c.client.get(&api, "/son/tuning").await.unwrap().json();
    assert_eq!(
        t["energy_saving"]["wake_ceiling_pct"], 65,
        "nothing set: {t}"
    );

    // Node 3 runs and advertises its release: the same request is accepted and replicated.
    c.nodes[2].resume().expect("resume node 3");
    c.wait_ready(&c.nodes[2]).await;
    put_tuning(&c, &tuning).await;
    for n in &c.nodes {
        let t = c.client.get(&n.api, "/son/tuning").await.unwrap().json();
        assert_eq!(t["energy_saving"]["wake_ceiling_pct"], 70, "{t}");
    }
}
