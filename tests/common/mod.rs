//! Black-box harness: real `sonraft node` processes on loopback, ports picked by the OS.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sonraft::client::ApiClient;

pub const TOKEN: &str = "test-operator-token";
pub const SECRET: &str = "test-cluster-secret-0123";

/// One node process.
pub struct NodeProc {
    pub id: u64,
    pub dir: PathBuf,
    pub api: String,
    pub raft: String,
    child: Option<Child>,
    extra: Vec<String>,
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

impl NodeProc {
    /// Starts node `id` with data in `dir`, listening on the given addresses (port 0: any).
    pub fn start(id: u64, dir: &Path, raft: &str, api: &str, extra: &[String]) -> NodeProc {
        std::fs::create_dir_all(dir).expect("node dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sonraft"))
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
            .env("RUST_LOG", "info,openraft=warn,sled=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sonraft node");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        let (api, raft) = loop {
            if let Some(a) = read_addresses(dir, pid) {
                break a;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not start; see {}",
                dir.with_extension("log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        NodeProc {
            id,
            dir: dir.to_path_buf(),
            api,
            raft,
            child: Some(child),
            extra: extra.to_vec(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and returns the child to wait on.
    pub fn sigterm(&mut self) -> Child {
        let c = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        c
    }

    /// Restarts on the same addresses and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        let again = NodeProc::start(
            self.id,
            &self.dir.clone(),
            &self.raft.clone(),
            &self.api.clone(),
            &self.extra.clone(),
        );
        *self = again;
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster of node processes in a temp dir.
pub struct Cluster {
    pub root: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    pub client: ApiClient,
}

pub fn client() -> ApiClient {
    ApiClient::new(Some(TOKEN.to_string()), Duration::from_secs(15))
}

impl Cluster {
    /// Starts `n` nodes and initialises them as voters; returns when every node is ready.
    pub async fn start(n: u64) -> Cluster {
        Self::start_with(n, &[]).await
    }

    pub async fn start_with(n: u64, extra: &[&str]) -> Cluster {
        let root = tempfile::tempdir().expect("temp dir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let nodes: Vec<NodeProc> = (1..=n)
            .map(|id| {
                NodeProc::start(
                    id,
                    &root.path().join(format!("node{id}")),
                    "127.0.0.1:0",
                    "127.0.0.1:0",
                    &extra,
                )
            })
            .collect();
        let cluster = Cluster {
            root,
            nodes,
            client: client(),
        };
        let list: Vec<Value> = cluster
            .nodes
            .iter()
            .map(|p| json!({"id": p.id, "site": format!("site-{}", p.id), "raft_addr": p.raft, "api_addr": p.api}))
            .collect();
        let r = cluster
            .client
            .post(
                &cluster.nodes[0].api,
                "/cluster/init",
                &json!({"nodes": list}),
            )
            .await
            .expect("init");
        assert!(
            r.status.is_success(),
            "init: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        for p in &cluster.nodes {
            cluster.wait_ready(p).await;
        }
        cluster
    }

    pub async fn wait_ready(&self, p: &NodeProc) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.client.get(&p.api, "/readyz").await
                && r.status.is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} not ready within 30 s",
                p.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn status(&self, p: &NodeProc) -> Option<Value> {
        let r = self.client.get(&p.api, "/status").await.ok()?;
        r.status.is_success().then(|| r.json())
    }

    /// The leader agreed on by every running node, waiting up to 10 s.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut seen = Vec::new();
            for p in self.nodes.iter().filter(|p| p.running()) {
                seen.push(self.status(p).await.and_then(|s| s["leader_id"].as_u64()));
            }
            if let Some(Some(l)) = seen.first()
                && seen.iter().all(|x| *x == Some(*l))
                && let Some(pos) = self.nodes.iter().position(|p| p.id == *l && p.running())
            {
                return pos;
            }
            assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn import_demo(&self, cells: usize) {
        let r = self
            .client
            .post(&self.nodes[0].api, "/image/import", &demo_image(cells))
            .await
            .expect("import");
        assert!(
            r.status.is_success(),
            "import: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }

    pub async fn cell(&self, p: &NodeProc, id: &str, consistency: &str) -> Value {
        let r = self
            .client
            .get(
                &p.api,
                &format!("/image/cells/{id}?consistency={consistency}"),
            )
            .await
            .expect("get cell");
        assert!(
            r.status.is_success(),
            "{} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    /// Waits until every running node has applied at least `index`.
    pub async fn wait_applied(&self, index: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for p in self.nodes.iter().filter(|p| p.running()) {
            loop {
                let applied = self
                    .status(p)
                    .await
                    .and_then(|s| s["last_applied_index"].as_u64())
                    .unwrap_or(0);
                if applied >= index {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} stuck at {applied} < {index}",
                    p.id
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A small image: one site per node, `cells` cells, a ring of relations.
pub fn demo_image(cells: usize) -> Value {
    let sites: Vec<Value> = (1..=3).map(|i| json!({"id": format!("S{i}"), "name": format!("site {i}"), "lat": 48.0 + i as f64 / 100.0, "lon": 11.0})).collect();
    let cell_list: Vec<Value> = (0..cells)
        .map(|i| json!({"id": format!("C{i}"), "site": format!("S{}", i % 3 + 1), "rat": "LTE", "pci": i % 504, "arfcn": 1300, "azimuth": (i % 3) * 120}))
        .collect();
    let relations: Vec<Value> = (0..cells)
        .map(|i| json!({"source": format!("C{i}"), "target": format!("C{}", (i + 1) % cells)}))
        .collect();
    json!({"sites": sites, "cells": cell_list, "relations": relations})
}

/// An operator change set of one write, reading `version`.
pub fn tilt(cell: &str, version: u64, tilt: i64) -> Value {
    json!({
        "origin": {"function": "operator"},
        "reason": "test",
        "read_set": [{"entity": format!("cell/{cell}"), "version": version}],
        "writes": [{"entity": format!("cell/{cell}"), "param": "electrical_tilt", "value": tilt}],
    })
}
