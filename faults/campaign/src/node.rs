//! One `sonraft node` process: started inside its site's namespace, on its clock, with its
//! data directory on its site's filesystem; killed, paused, resumed and restarted from outside.
//!
//! `ip netns exec` execs the node in place, so the child's pid is the node's pid and signals
//! reach the node itself. Every start appends to the same log file, after a line saying why
//! the campaign (re)started it, so that a node's whole life reads top to bottom.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::command::{CommandError, alive, signal, threads_not_stopped};

/// The operator token and cluster secret of campaign clusters.
pub const TOKEN: &str = "campaign-operator-token";
pub const SECRET: &str = "campaign-cluster-secret-0123456789";

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot start node {id}: {error}")]
    Spawn { id: u64, error: String },
    #[error("node {id} exited with {status} while starting; log tail:\n{tail}")]
    Exited {
        id: u64,
        status: String,
        tail: String,
    },
    #[error("node {id} did not listen within {waited:?}; log tail:\n{tail}")]
    NotListening {
        id: u64,
        waited: Duration,
        tail: String,
    },
    #[error(transparent)]
    Signal(#[from] CommandError),
    #[error("node {id} still has {running} threads running 5 s after SIGSTOP")]
    NotStopped { id: u64, running: usize },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Everything that identifies one node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: u64,
    pub slot: usize,
    pub site: String,
    pub data_dir: PathBuf,
    pub ip: String,
    /// Added to the Raft (7001) and API (8001) ports: a replacement node may listen elsewhere
    /// than the node it replaces.
    pub port_offset: u16,
    pub log: PathBuf,
    /// Extra node flags (`--timing`, `--snapshot-every`, ...).
    pub flags: Vec<String>,
}

impl NodeSpec {
    pub fn raft_addr(&self) -> String {
        format!("{}:{}", self.ip, 7001 + self.port_offset)
    }
    pub fn api_addr(&self) -> String {
        format!("{}:{}", self.ip, 8001 + self.port_offset)
    }
}

/// A running (or paused) node process.
#[derive(Debug)]
pub struct NodeProcess {
    pub spec: NodeSpec,
    child: Child,
    pub paused: bool,
}

/// The last `lines` lines of a log file.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn addresses_pid(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("addresses.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["pid"].as_u64()
}

impl NodeProcess {
    /// Starts the node and waits until it listens (it wrote its addresses with its own pid).
    pub async fn start(
        binary: &Path,
        spec: &NodeSpec,
        exec_prefix: &[String],
        env: &[(String, String)],
        why: &str,
    ) -> Result<NodeProcess, NodeError> {
        std::fs::create_dir_all(&spec.data_dir)?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)?;
        writeln!(
            log,
            "=== sonraft-campaign: starting node {} in slot {} ({why}) ===",
            spec.id, spec.slot
        )?;
        let child = Command::new(&exec_prefix[0])
            .args(&exec_prefix[1..])
            .arg(binary)
            .args(["node", "--id", &spec.id.to_string(), "--site", &spec.site])
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .args(["--raft-addr", &spec.raft_addr()])
            .args(["--api-addr", &spec.api_addr()])
            .args(&spec.flags)
            .env("SONRAFT_CLUSTER_SECRET", SECRET)
            .env("SONRAFT_TOKEN", TOKEN)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("SONRAFT_CAMPAIGN_NODE_LOG").unwrap_or_else(|_| {
                    "info,openraft=error,openraft::replication=off,sled=warn".into()
                }),
            )
            // After the defaults: a setup's own RUST_LOG (see `Setup::node_log`) wins.
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| NodeError::Spawn {
                id: spec.id,
                error: e.to_string(),
            })?;
        let mut node = NodeProcess {
            spec: spec.clone(),
            child,
            paused: false,
        };
        let waited = Duration::from_secs(30);
        let deadline = Instant::now() + waited;
        let pid = u64::from(node.pid());
        while addresses_pid(&spec.data_dir) != Some(pid) {
            if let Some(status) = node.exited() {
                return Err(NodeError::Exited {
                    id: spec.id,
                    status,
                    tail: log_tail(&spec.log, 40),
                });
            }
            if Instant::now() > deadline {
                node.kill_now();
                return Err(NodeError::NotListening {
                    id: spec.id,
                    waited,
                    tail: log_tail(&spec.log, 40),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(node)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// SIGKILL and reap (works on a paused process too).
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL without blocking the runtime on the reap.
    pub async fn kill(self) {
        let mut me = self;
        let _ = tokio::task::spawn_blocking(move || me.kill_now()).await;
    }

    /// SIGSTOP, and waits until every thread has stopped (at most a few seconds): a pause
    /// that is still half running is not the fault the nemesis planned.
    pub async fn pause(&mut self) -> Result<(), NodeError> {
        signal(self.pid(), "STOP").await?;
        self.paused = true;
        let deadline = Instant::now() + Duration::from_secs(5);
        while threads_not_stopped(self.pid()) > 0 {
            if Instant::now() > deadline {
                return Err(NodeError::NotStopped {
                    id: self.spec.id,
                    running: threads_not_stopped(self.pid()),
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    pub async fn resume(&mut self) -> Result<(), NodeError> {
        signal(self.pid(), "CONT").await?;
        self.paused = false;
        Ok(())
    }

    /// SIGTERM, and SIGKILL if it has not exited within `grace`.
    pub async fn terminate(mut self, grace: Duration) {
        if self.paused {
            let _ = signal(self.pid(), "CONT").await;
        }
        let _ = signal(self.pid(), "TERM").await;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && alive(self.pid()) {
            if self.exited().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill().await;
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_now();
        }
    }
}
