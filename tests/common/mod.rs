//! Black-box harness: real `sonraft node` processes on loopback (see
//! `sonraft_testkit::local_cluster`), with test-friendly panicking helpers.
#![allow(dead_code, unused_imports)]

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use sonraft_client::v1;
pub use sonraft_testkit::fixtures::{demo_image, tilt};
use sonraft_testkit::local_cluster::LocalCluster;
pub use sonraft_testkit::local_cluster::{NodeProc, TOKEN};

pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sonraft"))
}

/// A temp dir that is removed with it when the test passes, and kept when it fails (the
/// panic unwinds through its drop): the failure output names it, so that the node and
/// simulator logs it holds can be read after a flaky run. With `SONRAFT_TEST_KEEP` set it is
/// kept when the test passes too, to compare a passing run with a failing one.
pub struct TestDir(Option<tempfile::TempDir>);

/// Whether `SONRAFT_TEST_KEEP` asks to keep the files of passing tests too.
pub fn keep_passing() -> bool {
    std::env::var_os("SONRAFT_TEST_KEEP").is_some()
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir(Some(tempfile::tempdir().expect("temp dir")))
    }

    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("until dropped").path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if (failed || keep_passing())
            && let Some(dir) = self.0.take()
        {
            let why = if failed {
                "the test failed"
            } else {
                "SONRAFT_TEST_KEEP"
            };
            eprintln!(
                "{why}: its files (logs, data) are kept in {}",
                dir.keep().display()
            );
        }
    }
}

/// A local cluster in a temp dir that is removed with it, or kept if the test fails (see
/// [`TestDir`]): node N logs to `<dir>/nodeN.log`.
pub struct Cluster {
    inner: LocalCluster,
    _root: TestDir,
}

impl Deref for Cluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.inner
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.inner
    }
}

impl Cluster {
    pub async fn start(n: u64) -> Cluster {
        Self::start_with(n, &[]).await
    }

    pub async fn start_with(n: u64, extra: &[&str]) -> Cluster {
        let root = TestDir::new();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let inner = LocalCluster::start(binary(), root.path(), n, &extra)
            .await
            .expect("cluster start");
        Cluster { inner, _root: root }
    }

    /// `n` voters, node `paused` stopped before the cluster was made (see
    /// [`LocalCluster::start_paused`]).
    pub async fn start_paused(n: u64, paused: u64) -> Cluster {
        let root = TestDir::new();
        let inner = LocalCluster::start_paused(binary(), root.path(), n, paused)
            .await
            .expect("cluster start");
        Cluster { inner, _root: root }
    }

    pub async fn wait_ready(&self, p: &NodeProc) {
        self.inner
            .wait_ready(p, Duration::from_secs(30))
            .await
            .expect("ready");
    }

    pub async fn leader(&self) -> usize {
        self.inner
            .leader(Duration::from_secs(10))
            .await
            .expect("leader")
    }

    pub async fn wait_applied(&self, index: u64) {
        self.inner
            .wait_applied(index, Duration::from_secs(30))
            .await
            .expect("applied");
    }

    pub async fn import_demo(&self, cells: usize) {
        let api = &self
            .nodes
            .iter()
            .find(|p| p.running())
            .expect("a running node")
            .api;
        let r = self
            .client
            .post(api, "/image/import", &demo_image(cells))
            .await
            .expect("import");
        assert!(
            r.status.is_success(),
            "import: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }

    /// The JSON list node 0's admin API answers at `path`.
    pub async fn list(&self, path: &str) -> Vec<Value> {
        let r = self.client.get(&self.nodes[0].api, path).await.expect(path);
        let body = r.json();
        match body.as_array() {
            Some(list) => list.clone(),
            None => panic!("{path}: {} {body}", r.status),
        }
    }

    /// Imports `image` through node 0; fails the test unless it applies.
    pub async fn import(&self, image: &Value) {
        let r = self
            .client
            .post(&self.nodes[0].api, "/image/import", image)
            .await
            .expect("import");
        assert!(
            r.status.is_success(),
            "import: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }

    /// `GET /antennas` of the node at `pos` (`None` while it does not answer).
    pub async fn antennas(&self, pos: usize) -> Option<v1::Antennas> {
        let r = self
            .client
            .get(&self.nodes[pos].api, "/antennas?limit=1000")
            .await
            .ok()?;
        serde_json::from_slice(&r.body).ok()
    }

    /// Cells whose connected, unfenced sessions on the nodes at `positions` speak an epoch
    /// above `above` (any epoch with `None`), with the node's id and the epoch.
    pub async fn connected_cells(
        &self,
        positions: &[usize],
        above: Option<u64>,
    ) -> BTreeMap<String, (u64, u64)> {
        let mut out = BTreeMap::new();
        for &pos in positions {
            let Some(a) = self.antennas(pos).await else {
                continue;
            };
            for s in a.sessions {
                let epoch = s.epoch.unwrap_or(0);
                if s.connected && s.fenced.is_none() && above.is_none_or(|e| epoch > e) {
                    out.insert(s.cell, (self.nodes[pos].id, epoch));
                }
            }
        }
        out
    }

    /// Reads a cell as a client would: a 503 (no leader, no quorum right now: the node says
    /// when to retry) is retried for up to 10 s; any other failure fails the test.
    pub async fn cell(&self, p: &NodeProc, id: &str, consistency: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let r = loop {
            let r = self
                .client
                .get(
                    &p.api,
                    &format!("/image/cells/{id}?consistency={consistency}"),
                )
                .await
                .expect("get cell");
            if r.status != 503 || std::time::Instant::now() >= deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            r.status.is_success(),
            "{} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }
}

/// A one-node cluster of site `site-1` on a simulated network of 30 cells (counters every
/// 500 ms, `extra` more simulator flags), its image imported (cool-down 1 s). The simulator's
/// files live in `dir`.
pub async fn simulated_site(
    dir: &Path,
    extra: &[&str],
) -> (sonraft_testkit::local_cluster::SimProc, Cluster) {
    simulated_site_with_layout(dir, &[], extra).await
}

/// [`simulated_site`] with more layout flags (`layout`, e.g. `--overshooter CELL`), which the
/// simulator and the exported image both take.
pub async fn simulated_site_with_layout(
    dir: &Path,
    layout: &[&str],
    extra: &[&str],
) -> (sonraft_testkit::local_cluster::SimProc, Cluster) {
    const CELLS: &str = "30";
    const REGIONS: &str = "site-1";
    let mut args = vec!["--cells", CELLS, "--period-ms", "500", "--regions", REGIONS];
    args.extend_from_slice(layout);
    args.extend_from_slice(extra);
    let sim =
        sonraft_testkit::local_cluster::SimProc::start(binary(), dir, &args).expect("simulator");
    let c = Cluster::start_with(1, &["--antennas", &sim.antennas.join(",")]).await;
    c.import(&sim_export(CELLS, REGIONS, layout)).await;
    (sim, c)
}

/// The cells of region `site` in the image, by id, and the number of their cell sites.
pub async fn region_cells(c: &Cluster, site: &str) -> (BTreeSet<String>, usize) {
    let in_region: BTreeSet<String> = c
        .list("/image/sites")
        .await
        .into_iter()
        .filter(|s| s["region"] == site)
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    let cells = c
        .list("/image/cells")
        .await
        .into_iter()
        .filter(|x| x["site"].as_str().is_some_and(|s| in_region.contains(s)))
        .filter_map(|x| x["id"].as_str().map(str::to_string))
        .collect();
    (cells, in_region.len())
}

/// The value of the first metric line of node 0 that starts with `prefix` (0 when absent).
pub async fn metric(c: &Cluster, prefix: &str) -> f64 {
    let r = c.client.get(&c.nodes[0].api, "/metrics").await.unwrap();
    String::from_utf8_lossy(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Runs `sonraft ctl ARGS` against `nodes` with the test token: its exit status, stdout and
/// stderr.
pub fn ctl(nodes: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(binary())
        .arg("ctl")
        .args(args)
        .env("SONRAFT_NODES", nodes)
        .env("SONRAFT_TOKEN", TOKEN)
        .output()
        .expect("run ctl");
    (
        out.status.code().expect("ctl ended by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The simulated network of `cells` cells in `regions` (more layout flags in `layout`) as the
/// JSON `POST /image/import` takes, with a SON cool-down of 1 s.
pub fn sim_export(cells: &str, regions: &str, layout: &[&str]) -> Value {
    let out = std::process::Command::new(binary())
        .args(["sim", "export", "--cells", cells, "--regions", regions])
        .args(layout)
        .args(["--cooldown-ms", "1000"])
        .output()
        .expect("sim export");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("image json")
}

/// A cluster of `n` nodes, node `id` run in site `id`'s namespace of `network` and listening
/// there on the fixed `raft_port` and `api_port` (each namespace has its own ports), with
/// `extra` flags.
pub async fn start_in_namespaces(
    network: &sonraft_testkit::netns::SiteNetwork,
    n: u64,
    raft_port: u16,
    api_port: u16,
    extra: &[&str],
) -> Cluster {
    let root = TestDir::new();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let nodes = (1..=n)
        .map(|id| {
            let ip = network.ip(id as usize);
            sonraft_testkit::local_cluster::NodeProc::start_under(
                &network.exec_prefix(id as usize),
                binary(),
                id,
                &root.path().join(format!("node{id}")),
                &format!("{ip}:{raft_port}"),
                &format!("{ip}:{api_port}"),
                &extra,
            )
            .expect("node start")
        })
        .collect();
    let inner = LocalCluster::init(root.path(), nodes, sonraft_testkit::local_cluster::client())
        .await
        .expect("cluster init");
    Cluster { inner, _root: root }
}

/// Waits until `cond` holds, or fails with `what` and `cond`'s last error after `within`;
/// returns how long it took.
pub async fn until<F, Fut>(within: Duration, what: &str, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = std::time::Instant::now();
    loop {
        match cond().await {
            Ok(()) => return started.elapsed(),
            Err(e) if started.elapsed() > within => panic!("{what} not within {within:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
