//! Bad input gets the documented status and error JSON, and the image does not change.

mod common;

use common::*;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use sonraft_testkit::local_cluster::SECRET;

/// Every cell, read linearizably; the read itself must succeed, or comparing two of them
/// proves nothing.
async fn image(c: &Cluster) -> Value {
    let r = c
        .client
        .get(&c.nodes[0].api, "/image/cells?consistency=linearizable")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let cells = r.json();
    assert_eq!(
        cells.as_array().map(Vec::len),
        Some(6),
        "the six imported cells: {cells}"
    );
    cells
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_documented_errors_and_change_nothing() {
    let c = Cluster::start_with(3, &["--max-body-bytes", "4096"]).await;
    c.import_demo(6).await;
    let before = image(&c).await;
    let api = &c.nodes[1].api;
    let url = |p: &str| format!("{}{p}", sonraft_client::base_url(api));
    let send = |method: Method, path: &str, body: &str, token: Option<&str>| {
        let client = match token {
            Some(t) => sonraft_client::ApiClient::new(
                Some(t.to_string()),
                std::time::Duration::from_secs(10),
            ),
            None => sonraft_client::ApiClient::new(None, std::time::Duration::from_secs(10)),
        };
        let (url, body) = (url(path), body.to_string());
        async move {
            client
                .send(method, &url, Some(bytes::Bytes::from(body)), &[])
                .await
                .unwrap()
        }
    };

    // (what, method, path, body, token, expected status, expected error or outcome)
    type Case<'a> = (
        &'a str,
        Method,
        &'a str,
        String,
        Option<&'a str>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("malformed JSON", Method::POST, "/image/changesets", "{\"origin\": ".into(), Some(TOKEN), StatusCode::BAD_REQUEST, "malformed_json"),
        ("wrong shape", Method::POST, "/image/changesets", "{\"writes\": 3}".into(), Some(TOKEN), StatusCode::BAD_REQUEST, "malformed_json"),
        ("unknown entity", Method::POST, "/image/changesets", json!({"origin": {"function": "operator"}, "writes": [{"entity": "cell/NOPE", "param": "pci", "value": 1}]}).to_string(), Some(TOKEN), StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        ("bad entity name", Method::POST, "/image/changesets", json!({"origin": {"function": "operator"}, "writes": [{"entity": "antenna/C1", "param": "pci", "value": 1}]}).to_string(), Some(TOKEN), StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        ("unknown parameter", Method::POST, "/image/changesets", json!({"origin": {"function": "operator"}, "writes": [{"entity": "cell/C1", "param": "colour", "value": 1}]}).to_string(), Some(TOKEN), StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        ("out of range", Method::POST, "/image/changesets", json!({"origin": {"function": "operator"}, "writes": [{"entity": "cell/C1", "param": "pci", "value": 504}]}).to_string(), Some(TOKEN), StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        ("wrong value type", Method::POST, "/image/changesets", json!({"origin": {"function": "operator"}, "writes": [{"entity": "cell/C1", "param": "hysteresis", "value": "high"}]}).to_string(), Some(TOKEN), StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        ("over the body limit", Method::POST, "/image/changesets", format!("{{\"reason\": \"{}\"}}", "x".repeat(10_000)), Some(TOKEN), StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        ("missing token", Method::POST, "/image/changesets", tilt("C1", 1, 40).to_string(), None, StatusCode::UNAUTHORIZED, "unauthorized"),
        ("wrong token", Method::POST, "/image/changesets", tilt("C1", 1, 40).to_string(), Some("not-the-token"), StatusCode::UNAUTHORIZED, "unauthorized"),
        ("missing token on a read", Method::GET, "/image/cells", String::new(), None, StatusCode::UNAUTHORIZED, "unauthorized"),
        ("bad import", Method::POST, "/image/import", json!({"cells": [{"id": "X1", "site": "NOWHERE", "rat": "LTE", "pci": 1, "arfcn": 1, "azimuth": 0}]}).to_string(), Some(TOKEN), StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        ("bad consistency", Method::GET, "/image/cells?consistency=eventually", String::new(), Some(TOKEN), StatusCode::BAD_REQUEST, "bad_consistency"),
        ("unknown route", Method::GET, "/image/antennas", String::new(), Some(TOKEN), StatusCode::NOT_FOUND, "not_found"),
        // Node-to-node requests travel on the Raft listener with the cluster secret; the
        // operator token reaches none of them.
        ("internal command", Method::POST, "/internal/command", json!({"Release": {"node_id": 1, "release": "9.9.9", "max_command_format": 9}}).to_string(), Some(TOKEN), StatusCode::NOT_FOUND, "not_found"),
        ("forced election", Method::POST, "/cluster/elect", "{}".into(), Some(TOKEN), StatusCode::NOT_FOUND, "not_found"),
        ("lease release", Method::POST, "/internal/lease-release", "{\"for_ms\": 60000}".into(), Some(TOKEN), StatusCode::NOT_FOUND, "not_found"),
        ("bad force flag", Method::DELETE, "/cluster/nodes/2?force=maybe", String::new(), Some(TOKEN), StatusCode::BAD_REQUEST, "bad_query"),
        ("node id out of range", Method::DELETE, "/cluster/nodes/9007199254740992", String::new(), Some(TOKEN), StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        ("init again", Method::POST, "/cluster/init", json!({"nodes": [{"id": c.nodes[1].id, "site": "site-2", "raft_addr": c.nodes[1].raft, "api_addr": c.nodes[1].api}]}).to_string(), Some(TOKEN), StatusCode::CONFLICT, "already_initialized"),
    ];
    for (what, method, path, body, token, status, kind) in cases {
        let r = send(method, path, &body, token).await;
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        let got = v
            .get("error")
            .or_else(|| v.get("outcome"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert_eq!(got, kind, "{what}: {v}");
        let detail = v
            .get("detail")
            .or_else(|| v.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert!(!detail.is_empty(), "{what}: no detail in {v}");
    }
    assert_eq!(image(&c).await, before, "bad input changed the image");
    let health = send(Method::GET, "/health", "", None).await;
    assert_eq!(health.status, 200, "health needs no token");

    // The Raft listener's peer route refuses the operator token and garbage alike.
    let raft = format!("http://{}/peer", c.nodes[1].raft);
    let client =
        sonraft_client::ApiClient::new(Some(TOKEN.into()), std::time::Duration::from_secs(10));
    let r = client
        .send(
            Method::POST,
            &raft,
            Some(bytes::Bytes::from_static(&[0, 1, 0])),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the operator token is no cluster secret"
    );
    let r = client
        .send(
            Method::POST,
            &raft,
            Some(bytes::Bytes::from_static(&[0, 1, 0xff, 0xfe])),
            &[("x-sonraft-cluster-secret", SECRET)],
        )
        .await
        .unwrap();
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}
