//! A cluster of real `sonraft node` processes on this machine, on loopback ports the OS picks:
//! what the black-box tests and the failover and upgrade benchmarks run against.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use sonraft_client::{ApiClient, v1};

/// Secrets used by local clusters (tests and benchmarks only).
pub const TOKEN: &str = "local-operator-token";
pub const SECRET: &str = "local-cluster-secret-0123";

/// One node process.
pub struct NodeProc {
    pub id: u64,
    pub dir: PathBuf,
    pub api: String,
    pub raft: String,
    pub binary: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
    /// The command the node runs under (`ip netns exec NS`), empty for none.
    wrapper: Vec<String>,
}

fn read_addresses(dir: &Path, pid: u32) -> Option<(String, String)> {
    let text = std::fs::read_to_string(dir.join("addresses.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    if v["pid"].as_u64() != Some(u64::from(pid)) {
        return None;
    }
    Some((
        v["api_addr"].as_str()?.to_string(),
        v["raft_addr"].as_str()?.to_string(),
    ))
}

fn send_signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .context("cannot run kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed: {status}");
    }
    Ok(())
}

/// How many threads of process `pid` are not in a stop (state `T`, or `t` under a tracer).
#[cfg(target_os = "linux")]
fn running_threads(pid: u32) -> anyhow::Result<usize> {
    let tasks = format!("/proc/{pid}/task");
    let mut running = 0;
    for task in std::fs::read_dir(&tasks).with_context(|| format!("cannot list {tasks}"))? {
        // A thread that exits meanwhile is not running either.
        let Ok(stat) = std::fs::read_to_string(task?.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`; comm may hold spaces and parentheses.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if !matches!(state, Some('T' | 't')) {
            running += 1;
        }
    }
    Ok(running)
}

/// Without `/proc` there is no way to tell; the signal has been sent.
#[cfg(not(target_os = "linux"))]
fn running_threads(_pid: u32) -> anyhow::Result<usize> {
    Ok(0)
}

impl NodeProc {
    /// Starts node `id` of `binary` with data in `dir`, listening on `raft` and `api` (port 0:
    /// any), and waits until it listens. Its log goes to `<dir>.log`.
    pub fn start(
        binary: &Path,
        id: u64,
        dir: &Path,
        raft: &str,
        api: &str,
        extra: &[String],
    ) -> anyhow::Result<NodeProc> {
        Self::start_under(&[], binary, id, dir, raft, api, extra)
    }

    /// As [`NodeProc::start`], run under `wrapper` (a command that execs the rest of its
    /// arguments, such as `ip netns exec NS`, so that the child is the node), as every
    /// restart will be too.
    pub fn start_under(
        wrapper: &[String],
        binary: &Path,
        id: u64,
        dir: &Path,
        raft: &str,
        api: &str,
        extra: &[String],
    ) -> anyhow::Result<NodeProc> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let log_path = dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        // The node's own default filter unless a test run asks for another (the tests check
        // what a healthy cluster logs as it ships).
        match std::env::var("SONRAFT_TEST_LOG") {
            Ok(filter) => command.env("RUST_LOG", filter),
            Err(_) => command.env_remove("RUST_LOG"),
        };
        let child = command
            .args([
                "node",
                "--id",
                &id.to_string(),
                "--site",
                &format!("site-{id}"),
            ])
            .arg("--data-dir")
            .arg(dir)
            .args(["--raft-addr", raft, "--api-addr", api])
            .args(extra)
            .env("SONRAFT_CLUSTER_SECRET", SECRET)
            .env("SONRAFT_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child.id();
        let mut node = NodeProc {
            id,
            dir: dir.to_path_buf(),
            api: String::new(),
            raft: String::new(),
            binary: binary.to_path_buf(),
            child: Some(child),
            extra: extra.to_vec(),
            wrapper: wrapper.to_vec(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((api, raft)) = read_addresses(dir, pid) {
                node.api = api;
                node.raft = raft;
                return Ok(node);
            }
            if let Some(c) = node.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                node.child = None;
                bail!("node {id} exited with {status}; see {}", log_path.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "node {id} did not start within 30 s; see {}",
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process has exited by itself (it is then reaped and no longer running).
    pub fn exited(&mut self) -> bool {
        let gone = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if gone {
            self.child = None;
        }
        gone
    }

    /// The node's log (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    /// SIGSTOP, and waits until the process is stopped: from then on it answers nothing and
    /// acknowledges nothing until [`NodeProc::resume`].
    ///
    /// `kill -STOP` returns once the signal is queued. Linux stops a multi-threaded process
    /// only when the one thread it woke to take the signal runs and stops the others; on a
    /// busy machine that thread may wait for a CPU while the others go on serving Raft RPCs.
    /// A test that paused both followers and then proposed saw one of them store and
    /// acknowledge the entry, and got `applied` where it expected `outcome_unknown`.
    pub fn pause(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("the node is not running")?;
        send_signal(pid, "STOP")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let running = running_threads(pid)?;
            if running == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} (pid {pid}) still has {running} threads not stopped 10 s after SIGSTOP",
                    self.id
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGCONT: a paused node goes on where it stopped.
    pub fn resume(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("the node is not running")?;
        send_signal(pid, "CONT")
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and hands back the child to wait on.
    pub fn sigterm(&mut self) -> anyhow::Result<Child> {
        let c = self.child.take().context("the node is not running")?;
        let status = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", c.id());
        }
        Ok(c)
    }

    /// SIGTERM and wait until it exited; returns whether it exited with 0.
    pub fn stop(&mut self) -> anyhow::Result<bool> {
        let mut c = self.sigterm()?;
        Ok(c.wait()?.success())
    }

    /// Starts again on the same addresses and data directory, optionally another binary.
    pub fn restart_with(&mut self, binary: Option<&Path>) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("node {} is still running", self.id);
        }
        let binary = binary.map_or_else(|| self.binary.clone(), Path::to_path_buf);
        *self = NodeProc::start_under(
            &self.wrapper.clone(),
            &binary,
            self.id,
            &self.dir.clone(),
            &self.raft.clone(),
            &self.api.clone(),
            &self.extra.clone(),
        )?;
        Ok(())
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.restart_with(None)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Node processes under one directory.
pub struct LocalCluster {
    pub dir: PathBuf,
    pub nodes: Vec<NodeProc>,
    pub client: ApiClient,
}

/// A client with the local clusters' token.
pub fn client() -> ApiClient {
    ApiClient::new(Some(TOKEN.to_string()), Duration::from_secs(15))
}

impl LocalCluster {
    /// Starts `n` nodes of `binary` under `dir`, makes them the voters and waits until every
    /// node is ready.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        n: u64,
        extra: &[String],
    ) -> anyhow::Result<LocalCluster> {
        Self::start_each(binary, dir, n, |_| extra.to_vec(), client()).await
    }

    /// As [`LocalCluster::start`], with node `id`'s own flags `extra(id)` (its certificate, for
    /// a cluster over TLS) and `client` for the cluster's API (one that trusts its CA).
    pub async fn start_each(
        binary: &Path,
        dir: &Path,
        n: u64,
        extra: impl Fn(u64) -> Vec<String>,
        client: ApiClient,
    ) -> anyhow::Result<LocalCluster> {
        let mut nodes = Vec::new();
        for id in 1..=n {
            nodes.push(NodeProc::start(
                binary,
                id,
                &dir.join(format!("node{id}")),
                "127.0.0.1:0",
                "127.0.0.1:0",
                &extra(id),
            )?);
        }
        Self::init(dir, nodes, client).await
    }

    /// As [`LocalCluster::start`], with node `paused` stopped (SIGSTOP) before the cluster is
    /// made: a voter that has never run in it, so its release is unknown (the oldest). Waits
    /// until the other nodes are ready.
    pub async fn start_paused(
        binary: &Path,
        dir: &Path,
        n: u64,
        paused: u64,
    ) -> anyhow::Result<LocalCluster> {
        let mut nodes = Vec::new();
        for id in 1..=n {
            let p = NodeProc::start(
                binary,
                id,
                &dir.join(format!("node{id}")),
                "127.0.0.1:0",
                "127.0.0.1:0",
                &[],
            )?;
            if id == paused {
                p.pause()?;
            }
            nodes.push(p);
        }
        Self::init_ready(dir, nodes, client(), |p| p.id != paused).await
    }

    /// Makes `nodes`, started and listening, the voters of a new cluster, each of its own
    /// site (`site-<id>`), and waits until every one is ready.
    pub async fn init(
        dir: &Path,
        nodes: Vec<NodeProc>,
        client: ApiClient,
    ) -> anyhow::Result<LocalCluster> {
        Self::init_ready(dir, nodes, client, |_| true).await
    }

    /// [`LocalCluster::init`], waiting for the nodes `wait` picks.
    async fn init_ready(
        dir: &Path,
        nodes: Vec<NodeProc>,
        client: ApiClient,
        wait: impl Fn(&NodeProc) -> bool,
    ) -> anyhow::Result<LocalCluster> {
        let cluster = LocalCluster {
            dir: dir.to_path_buf(),
            nodes,
            client,
        };
        let init = v1::InitRequest {
            nodes: cluster
                .nodes
                .iter()
                .map(|p| v1::NodeSpec {
                    id: p.id,
                    site: format!("site-{}", p.id),
                    raft_addr: p.raft.clone(),
                    api_addr: p.api.clone(),
                })
                .collect(),
        };
        let r = cluster
            .client
            .post(&cluster.nodes[0].api, "/cluster/init", &init)
            .await?;
        if !r.status.is_success() {
            bail!("init: {} {}", r.status, String::from_utf8_lossy(&r.body));
        }
        for p in cluster.nodes.iter().filter(|p| wait(p)) {
            cluster.wait_ready(p, Duration::from_secs(30)).await?;
        }
        Ok(cluster)
    }

    pub async fn wait_ready(&self, p: &NodeProc, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.client.get(&p.api, "/readyz").await
                && r.status.is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("node {} not ready within {timeout:?}", p.id);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `GET /status` of `p` as JSON, for tests that check its shape.
    pub async fn status(&self, p: &NodeProc) -> Option<Value> {
        let r = self.client.get(&p.api, "/status").await.ok()?;
        r.status.is_success().then(|| r.json())
    }

    /// `GET /status` of `p`, when it answers.
    pub async fn node_status(&self, p: &NodeProc) -> Option<v1::Status> {
        let r = self.client.get(&p.api, "/status").await.ok()?;
        r.status.is_success().then(|| r.parse().ok()).flatten()
    }

    /// Position of the leader every running node agrees on, waiting up to `timeout`.
    pub async fn leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for p in self.nodes.iter().filter(|p| p.running()) {
                seen.push(self.node_status(p).await.and_then(|s| s.leader_id));
            }
            if let Some(Some(l)) = seen.first()
                && seen.iter().all(|x| *x == Some(*l))
                && let Some(pos) = self.nodes.iter().position(|p| p.id == *l && p.running())
            {
                return Ok(pos);
            }
            if Instant::now() > deadline {
                bail!("no agreed leader within {timeout:?}: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every running node has applied at least `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for p in self.nodes.iter().filter(|p| p.running()) {
            loop {
                let applied = self
                    .node_status(p)
                    .await
                    .map_or(0, |s| s.last_applied_index);
                if applied >= index {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("node {} stuck at {applied} < {index}", p.id);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }

    /// API addresses of the running nodes.
    pub fn apis(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|p| p.running())
            .map(|p| p.api.clone())
            .collect()
    }
}

/// A `sonraft sim run` process.
pub struct SimProc {
    pub antennas: Vec<String>,
    pub status: String,
    child: Child,
}

impl SimProc {
    /// Starts the simulator with `args` (layout, period, ...) and waits until it listens.
    pub fn start(binary: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<SimProc> {
        std::fs::create_dir_all(dir)?;
        let file = dir.join("sim-addresses.json");
        let _ = std::fs::remove_file(&file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("sim.log"))?;
        let mut child = Command::new(binary)
            .args([
                "sim",
                "run",
                "--status-addr",
                "127.0.0.1:0",
                "--addresses-file",
            ])
            .arg(&file)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start the simulator")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                let antennas = v["antennas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect();
                let status = v["status"].as_str().unwrap_or_default().to_string();
                return Ok(SimProc {
                    antennas,
                    status,
                    child,
                });
            }
            if let Ok(Some(s)) = child.try_wait() {
                bail!(
                    "the simulator exited with {s}; see {}",
                    dir.join("sim.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!("the simulator did not start within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET /state` of the simulator.
    pub async fn state(&self, client: &ApiClient) -> anyhow::Result<Value> {
        let r = client.get(&self.status, "/state").await?;
        Ok(r.json())
    }

    /// `GET /clock` of the simulator: its last periods as they were handed out.
    pub async fn clock(&self, client: &ApiClient) -> anyhow::Result<Value> {
        let r = client.get(&self.status, "/clock").await?;
        Ok(r.json())
    }

    /// The simulator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SimProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
