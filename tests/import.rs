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
    // 9,000 cells travel in fifteen parts (600 a part); the one bad relation is checked with
    // the last.
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

/// An image as JSON lines, streamed by `ctl import FILE.jsonl` to the leader (ctl asked a
/// follower first), lands whole in parts; a bad line refuses it whole and names the line; a
/// body of lines posted to a follower is forwarded whole (issue 17).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_import_of_json_lines_lands_whole_and_a_bad_line_lands_nothing() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let nodes = format!("{},{}", c.nodes[follower].api, c.nodes[leader].api);
    let dir = TestDir::new();
    // 4,500 cells and their relations: more than one part (4,000 cells a part).
    let out = std::process::Command::new(binary())
        .args(["sim", "export", "--cells", "4500", "--lines"])
        .output()
        .expect("sim export");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let count = |kind: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("{{\"{kind}\"")))
            .count()
    };
    let (cells, relations) = (count("cell"), count("relation"));
    assert_eq!(cells, 4500);

    // One bad line after the first part: nothing lands, and the error names the line.
    let mut lines: Vec<&str> = text.lines().collect();
    let bad_at = lines.len() - 10;
    lines.insert(bad_at, r#"{"cell": {"id": "X"}}"#);
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let (code, _, err) = ctl(&nodes, &["import", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("line {}", bad_at + 1)) && err.contains("nothing imported"),
        "{err}"
    );
    let api = &c.nodes[leader].api;
    let none = c.client.get(api, "/image/cells?limit=5").await.unwrap();
    assert_eq!(none.json(), json!([]), "no part of the import is visible");

    let good = dir.path().join("network.jsonl");
    std::fs::write(&good, &text).unwrap();
    let (code, out, err) = ctl(&nodes, &["--json", "import", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["imported"]["cells"], cells, "{answer}");
    assert_eq!(answer["imported"]["relations"], relations, "{answer}");
    let some = c
        .client
        .get(api, "/image/cells/S00000-1?consistency=linearizable")
        .await
        .unwrap();
    assert_eq!(some.status, 200);

    // Lines posted to a follower: forwarded whole to the leader, and applied.
    let url = format!("{}/image/import", c.client.base_url(&c.nodes[follower].api));
    let body = concat!(
        r#"{"site":{"id":"L1","name":"lines","lat":48.1,"lon":11.5}}"#,
        "\n",
        r#"{"cell":{"id":"L1-1","site":"L1","rat":"NR","pci":900,"arfcn":632628,"azimuth":0}}"#,
        "\n"
    );
    let r = c
        .client
        .send_stream(
            hyper::Method::POST,
            &url,
            sonraft_client::whole_body(bytes::Bytes::from(body)),
            "application/x-ndjson",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["imported"]["cells"], 1);
}
