//! Imports: applied whole or not at all, shown before with a dry run, and recorded in the history
//! with what they overwrote (issue 11, finding 5).

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_in_many_parts_whose_last_part_does_not_check_applies_nothing() {
    // Change sets get 50 ms for their outcome; an import waits for its own (its last part
    // checks and applies everything, seconds for a large image on a busy machine).
    let c = Cluster::start_with(3, &["--outcome-timeout-ms", "50"]).await;
    let leader = c.leader().await;
    let api = &c.nodes[leader].api;
    // 9,000 cells travel in three parts; the one bad relation is checked with the last.
    let mut image = demo_image(9000);
    image["relations"]
        .as_array_mut()
        .unwrap()
        .push(json!({"source": "C1", "target": "NOPE"}));
    let r = c.client.post(api, "/image/import", &image).await.unwrap();
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("nothing imported"),
        "{}",
        r.json()
    );
    let cells = c
        .client
        .get(api, "/image/cells?limit=5")
        .await
        .unwrap()
        .json();
    assert_eq!(cells, json!([]), "no part of the import is visible");
    let h = c.client.get(api, "/image/history").await.unwrap().json();
    assert_eq!(h[0]["outcome"]["outcome"], "invalid", "{h}");

    // The same import, fixed, lands whole.
    image["relations"].as_array_mut().unwrap().pop();
    let r = c.client.post(api, "/image/import", &image).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["imported"]["cells"], 9000);
    assert_eq!(r.json()["changed"]["cells"]["created"], 9000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_over_live_changes_shows_them_in_a_dry_run_and_records_them_in_the_history() {
    let c = Cluster::start(3).await;
    c.import_demo(9).await;
    let leader = c.leader().await;
    let api = c.nodes[leader].api.clone();
    let cell = c.cell(&c.nodes[leader], "C1", "linearizable").await;
    let version = cell["version"].as_u64().unwrap();
    let r = c
        .client
        .post(&api, "/image/changesets", &tilt("C1", version, 50))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // The planning tool's file still says tilt 40 (the default) for C1.
    let plan = demo_image(9);
    let r = c
        .client
        .post(&api, "/image/import?dry_run=true", &plan)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let d = r.json();
    assert_eq!(d["would_change"]["cells"]["updated"], 1, "{d}");
    assert_eq!(d["would_change"]["cells"]["unchanged"], 8, "{d}");
    assert_eq!(
        d["would_change"]["changes"],
        json!([{"entity": "cell/C1", "param": "electrical_tilt", "from": 50, "to": 40}]),
        "{d}"
    );
    let now = c.cell(&c.nodes[leader], "C1", "linearizable").await;
    assert_eq!(now["electrical_tilt"], 50, "a dry run applies nothing");

    let r = c
        .client
        .post(&api, "/image/import?reason=quarterly%20plan", &plan)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let h = c
        .client
        .get(&api, "/image/history?limit=1")
        .await
        .unwrap()
        .json();
    let record = &h[0];
    assert_eq!(record["origin"]["function"], "operator", "{record}");
    let reason = record["reason"].as_str().unwrap();
    assert!(reason.contains("quarterly plan"), "{reason}");
    assert!(reason.contains("1 updated, 8 unchanged"), "{reason}");
    assert_eq!(
        record["writes"],
        json!([{"entity": "cell/C1", "param": "electrical_tilt", "value": 40}]),
        "{record}"
    );
}
