//! TLS on the admin API and between sites (issue 15, "Security"): certificates from
//! `scripts/make-certs.sh`, real node processes on loopback with OS-assigned ports, and
//! `sonraft ctl` over https. A cluster whose every node has a certificate of the one private
//! CA forms and replicates; a client or node outside that trust is refused, clearly, and the
//! node keeps serving.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use sonraft_client::ApiClient;
use sonraft_testkit::local_cluster::{LocalCluster, client};

/// Runs `scripts/make-certs.sh DIR specs...`, panicking with its output if it fails.
fn make_certs(dir: &Path, specs: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-certs.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(dir)
        .args(specs)
        .output()
        .expect("run make-certs.sh");
    assert!(
        out.status.success(),
        "make-certs.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The flags that give node `name` its certificate from `certs` and trust `ca`.
fn tls_flags(certs: &Path, name: &str, ca: &Path) -> Vec<String> {
    let file = |ext: &str| certs.join(format!("{name}.{ext}")).display().to_string();
    vec![
        "--tls-cert".into(),
        file("pem"),
        "--tls-key".into(),
        file("key"),
        "--tls-ca".into(),
        ca.display().to_string(),
    ]
}

/// A client of the local clusters' token that trusts the CA in `ca`.
fn trusting(ca: &Path) -> ApiClient {
    let tls = sonraft_client::trust_ca(ca).expect("the CA loads");
    ApiClient::with_tls(Some(TOKEN.to_string()), Duration::from_secs(15), Some(tls))
}

/// Three nodes over TLS, each with its own certificate of one CA, and their certificates.
struct TlsCluster {
    cluster: LocalCluster,
    certs: PathBuf,
    _root: tempfile::TempDir,
}

impl TlsCluster {
    async fn start() -> TlsCluster {
        let root = tempfile::tempdir().expect("temp dir");
        let certs = root.path().join("certs");
        make_certs(
            &certs,
            &[
                "node1=127.0.0.1,localhost",
                "node2=127.0.0.1",
                "node3=127.0.0.1",
            ],
        );
        let ca = certs.join("ca.pem");
        let cluster = LocalCluster::start_each(
            binary(),
            &root.path().join("nodes"),
            3,
            |id| tls_flags(&certs, &format!("node{id}"), &ca),
            trusting(&ca),
        )
        .await
        .expect("a three-node cluster over TLS forms");
        TlsCluster {
            cluster,
            certs,
            _root: root,
        }
    }

    fn ca(&self) -> PathBuf {
        self.certs.join("ca.pem")
    }

    /// `https://api1,https://api2,https://api3`.
    fn https_nodes(&self) -> String {
        self.cluster
            .nodes
            .iter()
            .map(|p| format!("https://{}", p.api))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `sonraft ctl ARGS` against `nodes`, with `ca` (if any) and nothing from the test's
/// environment; its exit status, stdout and stderr.
fn ctl(nodes: &str, ca: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(binary());
    c.arg("ctl")
        .args(args)
        .env_remove("SONRAFT_CA")
        .env("SONRAFT_NODES", nodes)
        .env("SONRAFT_TOKEN", TOKEN);
    if let Some(ca) = ca {
        c.env("SONRAFT_CA", ca);
    }
    let out = c.output().expect("run ctl");
    (
        out.status.code().expect("ctl ended by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_set_proposed_through_ctl_over_https_to_a_follower_applies_on_all_three_nodes() {
    let c = TlsCluster::start().await;
    let r = c
        .cluster
        .client
        .post(&c.cluster.nodes[0].api, "/image/import", &demo_image(6))
        .await
        .expect("import over https");
    assert!(r.status.is_success(), "import: {} {:?}", r.status, r.body);

    // Through a follower: it forwards the proposal to the leader's API, over TLS too.
    let leader = c
        .cluster
        .leader(Duration::from_secs(10))
        .await
        .expect("a leader");
    let follower = &c.cluster.nodes[(leader + 1) % 3];
    let (code, out, err) = ctl(
        &format!("https://{}", follower.api),
        Some(&c.ca()),
        &["propose", "--set", "cell/C1:electrical_tilt=45"],
    );
    assert_eq!(code, 0, "ctl propose over https: {out}{err}");

    let deadline = Instant::now() + Duration::from_secs(20);
    for p in &c.cluster.nodes {
        loop {
            let tilt = c
                .cluster
                .client
                .get(&p.api, "/image/cells/C1?consistency=local")
                .await
                .ok()
                .filter(|r| r.status.is_success())
                .map(|r| r.json()["electrical_tilt"].clone());
            if tilt == Some(json!(45)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} never applied the change set: {tilt:?}",
                p.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_at_a_tls_port_is_refused_at_once_and_the_node_keeps_serving() {
    let c = TlsCluster::start().await;
    let node = &c.cluster.nodes[1];
    let plain = client();
    for addr in [&node.api, &node.raft] {
        let started = Instant::now();
        let r = plain
            .get(&format!("http://{addr}"), "/health")
            .await
            .expect("a plain-HTTP client gets an answer, not a hang");
        assert_eq!(r.status, 400, "{addr}: {:?}", r.body);
        assert!(
            String::from_utf8_lossy(&r.body).contains("HTTPS"),
            "{:?}",
            r.body
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let r = c
        .cluster
        .client
        .get(&node.api, "/status")
        .await
        .expect("the node still answers over https");
    assert!(r.status.is_success(), "{}", r.status);
    assert!(
        !node.log().contains(" ERROR "),
        "a refused client was logged at ERROR:\n{}",
        node.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_without_the_ca_is_unreachable_and_names_the_certificate_and_the_flag() {
    let c = TlsCluster::start().await;
    let (code, out, err) = ctl(&c.https_nodes(), None, &["cells"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        err.contains("certificate was not trusted") && err.contains("--ca"),
        "{err}"
    );
    assert!(
        err.contains(&c.cluster.nodes[0].api),
        "names the node: {err}"
    );

    let (code, out, err) = ctl(&c.https_nodes(), Some(&c.ca()), &["status"]);
    assert_eq!(code, 0, "with the CA: {out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_of_another_ca_cannot_join() {
    let c = TlsCluster::start().await;
    // Another CA's certificate for the same address; the node trusts the cluster's CA, so
    // only its own certificate is wrong.
    let other = c.certs.with_file_name("other-ca");
    make_certs(&other, &["node4=127.0.0.1"]);
    let stranger = NodeProc::start(
        binary(),
        4,
        &c.cluster.dir.join("node4"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--tls-cert".into(),
            other.join("node4.pem").display().to_string(),
            "--tls-key".into(),
            other.join("node4.key").display().to_string(),
            "--tls-ca".into(),
            c.ca().display().to_string(),
        ],
    )
    .expect("node 4 starts");

    let join =
        json!({"id": 4, "site": "site-4", "raft_addr": stranger.raft, "api_addr": stranger.api});
    let r = c
        .cluster
        .client
        .post(&c.cluster.nodes[0].api, "/cluster/learners", &join)
        .await
        .expect("the cluster answers");
    let body: Value = r.json();
    assert_eq!(r.status, 409, "{body}");
    assert!(
        body.to_string().contains("certificate"),
        "the refusal names the certificate: {body}"
    );

    let members = c
        .cluster
        .client
        .get(&c.cluster.nodes[0].api, "/status")
        .await
        .expect("status")
        .json();
    assert!(
        !members["nodes"].to_string().contains(&stranger.raft),
        "node 4 became a member: {members}"
    );
}

#[test]
fn a_node_with_a_partial_or_unreadable_tls_set_exits_at_start_naming_what_is_wrong() {
    let root = tempfile::tempdir().expect("temp dir");
    let certs = root.path().join("certs");
    make_certs(&certs, &["node1=127.0.0.1"]);
    let start = |flags: &[String]| {
        Command::new(binary())
            .args(["node", "--id", "1", "--site", "site-1", "--data-dir"])
            .arg(root.path().join("data"))
            .args(["--raft-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"])
            .args(flags)
            .env("SONRAFT_CLUSTER_SECRET", "local-cluster-secret-0123")
            .env("SONRAFT_TOKEN", TOKEN)
            .env_remove("SONRAFT_TLS_CERT")
            .env_remove("SONRAFT_TLS_KEY")
            .env_remove("SONRAFT_TLS_CA")
            .output()
            .expect("run the node")
    };
    let mut flags = tls_flags(&certs, "node1", &certs.join("ca.pem"));
    let partial = start(&flags[..4]);
    let err = String::from_utf8_lossy(&partial.stderr);
    assert!(!partial.status.success());
    assert!(
        err.contains("--tls-ca") && !err.contains("panicked"),
        "{err}"
    );

    flags[3] = certs.join("missing.key").display().to_string();
    let unreadable = start(&flags);
    let err = String::from_utf8_lossy(&unreadable.stderr);
    assert!(!unreadable.status.success());
    assert!(
        err.contains("missing.key") && err.contains("tls_key") && !err.contains("panicked"),
        "{err}"
    );
}
