//! Tokens with roles (issue 15, "Security"): a read-only token reads and is refused every
//! write, an operator proposes and approves but changes no membership, only an admin imports
//! and changes membership; no token proposes in a SON function's name unless the cluster is a
//! lab (`--api-son-origins`), and then only an admin's. Real nodes on loopback; requests go to
//! a follower too, so that forwarding cannot lift a caller's role.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use sonraft_client::ApiClient;

const READER: &str = "wall-screen-token";
const OPERATOR: &str = "shift-lead-token";

/// A tokens file (mode 600) in `dir` giving [`READER`] and [`OPERATOR`] their roles.
fn tokens_file(dir: &std::path::Path) -> String {
    let path = dir.join("tokens");
    std::fs::write(
        &path,
        format!("# roles\nread-only {READER}\noperator {OPERATOR}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

fn client(token: &str) -> ApiClient {
    ApiClient::new(Some(token.to_string()), Duration::from_secs(15))
}

/// A change set of `function` moving one cell's tilt by one step.
async fn tilt_change(c: &Cluster, function: &str) -> Value {
    let cell = c.cell(&c.nodes[0], "C1", "linearizable").await;
    let tilt = cell["electrical_tilt"].as_u64().unwrap();
    json!({
        "origin": {"function": function},
        "reason": "roles test",
        "read_set": [{"entity": "cell/C1", "version": cell["version"]}],
        "writes": [{"entity": "cell/C1", "param": "electrical_tilt",
                    "value": if tilt > 20 { tilt - 1 } else { tilt + 1 }}],
    })
}

fn detail(r: &sonraft_client::ApiResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_do_what_it_is_given_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let c = Cluster::start_with(3, &["--tokens-file", &tokens]).await;
    c.import_demo(30).await;
    let leader = c.leader().await;
    let follower = c.nodes[(leader + 1) % 3].api.clone();
    let (reader, operator, admin) = (client(READER), client(OPERATOR), client(TOKEN));

    // Reads: every role; an unknown token is 401, no token on the open routes is fine.
    for who in [&reader, &operator, &admin] {
        let r = who.get(&follower, "/image/cells?limit=2").await.unwrap();
        assert_eq!(r.status, 200, "{}", detail(&r));
    }
    let r = client("not-a-token-at-all")
        .get(&follower, "/image/cells")
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{}", detail(&r));
    let r = ApiClient::new(None, Duration::from_secs(5))
        .get(&follower, "/health")
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // A read-only token is refused every write, with the role it would need.
    let change = tilt_change(&c, "operator").await;
    let r = reader
        .post(&follower, "/image/changesets", &change)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", detail(&r));
    assert!(
        detail(&r).contains("needs a token of role operator"),
        "{}",
        detail(&r)
    );
    let r = reader.get(&follower, "/backup").await.unwrap();
    assert_eq!(r.status, 403, "{}", detail(&r));
    let r = reader
        .put(&follower, "/son/policy", &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", detail(&r));

    // An operator proposes as the operator (through the follower: forwarded to the leader),
    // but not in a SON function's name, and changes no membership and imports nothing.
    let r = operator
        .post(&follower, "/image/changesets", &change)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", detail(&r));
    let son = tilt_change(&c, "coverage_capacity").await;
    let r = operator
        .post(&follower, "/image/changesets", &son)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", detail(&r));
    assert!(detail(&r).contains("own SON functions"), "{}", detail(&r));
    for (path, body) in [
        ("/cluster/voters", json!({"ids": [1, 2]})),
        ("/image/import", demo_image(3)),
        ("/snapshot", json!({})),
    ] {
        let r = operator.post(&follower, path, &body).await.unwrap();
        assert_eq!(r.status, 403, "{path}: {}", detail(&r));
        assert!(detail(&r).contains("role admin"), "{path}: {}", detail(&r));
    }
    let r = operator
        .delete(&follower, "/cluster/nodes/3")
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", detail(&r));

    // Not even an admin proposes in a SON function's name, and a dry run is no way around it.
    let r = admin
        .post(&follower, "/image/changesets", &son)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", detail(&r));
    let r = admin
        .post(&follower, "/image/changesets?dry_run=true", &son)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", detail(&r));
    // Every node still holds three voters and the operator's one change.
    let status = c.status(&c.nodes[leader]).await.unwrap();
    assert_eq!(
        status["voters"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_cluster_takes_son_origins_from_admin_tokens_only() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let c = Cluster::start_with(1, &["--tokens-file", &tokens, "--api-son-origins"]).await;
    c.import_demo(30).await;
    let api = c.nodes[0].api.clone();
    let son = tilt_change(&c, "coverage_capacity").await;
    let r = client(OPERATOR)
        .post(&api, "/image/changesets", &son)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", detail(&r));
    assert!(detail(&r).contains("admin tokens only"), "{}", detail(&r));
    let r = client(TOKEN)
        .post(&api, "/image/changesets", &son)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", detail(&r));
}
