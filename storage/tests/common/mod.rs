//! In-process sonraft cores for tests: sled in temp dirs, Raft over loopback HTTP.
#![allow(dead_code)]

pub mod faults;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{CommittedLeaderId, Config, Entry, EntryPayload, LogId, Membership, SnapshotPolicy};
use sonraft_raft::changeset::{ChangeSet, Function, Origin, Outcome, ReadVersion, Write};
use sonraft_raft::command::{Command, Envelope, ImageImport, Response};
use sonraft_raft::transport::{HttpNetworkFactory, RaftServer, serve};
use sonraft_raft::{NodeId, NodeInfo, Raft, TypeConfig};
use sonraft_storage::{Store, StoreReader, read};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const SECRET: &str = "test-cluster-secret";

pub struct TestNode {
    pub id: NodeId,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub raft: Raft,
    pub reader: StoreReader,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

pub fn config(snapshot_every: u64) -> Arc<Config> {
    let c = Config {
        cluster_name: "test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: 0,
        ..Default::default()
    };
    Arc::new(c.validate().expect("valid raft config"))
}

impl TestNode {
    /// Starts a node on `addr` (port 0: the OS picks one) with its data in `dir`.
    pub async fn start(id: NodeId, dir: &Path, addr: SocketAddr, snapshot_every: u64) -> TestNode {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut store = Store::open(dir).expect("open store");
        store.log.report_own_appends_early(id);
        let reader = store.reader.clone();
        let network =
            HttpNetworkFactory::new(id, SECRET, reader.durable_log(), None).expect("network");
        let raft = Raft::new(id, config(snapshot_every), network, store.log, store.sm)
            .await
            .expect("raft");
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(serve(
            listener,
            RaftServer::new(raft.clone(), SECRET),
            async {
                let _ = rx.await;
            },
        ));
        TestNode {
            id,
            dir: dir.to_path_buf(),
            addr,
            raft,
            reader,
            stop: Some(tx),
            server: Some(server),
        }
    }

    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            site: format!("site-{}", self.id),
            raft_addr: self.addr.to_string(),
            api_addr: String::new(),
        }
    }

    /// Stops Raft and the listener, and returns once the data directory is released.
    pub async fn stop(mut self) -> (PathBuf, SocketAddr) {
        let _ = self.raft.shutdown().await;
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        let (dir, addr) = (self.dir.clone(), self.addr);
        drop(self);
        let d = dir.clone();
        tokio::task::spawn_blocking(move || {
            sonraft_storage::wait_released(&d, sonraft_storage::RELEASE_WITHIN)
        })
        .await
        .expect("wait for the store")
        .expect("the store is released after Raft shut down");
        (dir, addr)
    }

    pub fn last_applied(&self) -> u64 {
        read(self.reader.state())
            .last_applied
            .map_or(0, |l| l.index)
    }
}

/// Runs `f` on the sled database of data directory `dir` opened directly (to plant what a
/// crash leaves behind, or to look at it), then closes it and waits until sled has released
/// the directory, so that the next `Store::open` cannot race sled's background threads.
pub fn with_raw_sled<T>(dir: &Path, f: impl FnOnce(&sled::Db) -> T) -> T {
    let db = sled::open(dir.join("sled")).expect("open sled directly");
    let out = f(&db);
    db.flush().expect("flush sled");
    drop(db);
    sonraft_storage::wait_released(dir, sonraft_storage::RELEASE_WITHIN).expect("sled released");
    out
}

/// Starts `n` nodes with ids 1..=n in subdirectories of `root` and initialises them as voters.
pub async fn cluster(root: &Path, n: u64, snapshot_every: u64) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for id in 1..=n {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        nodes.push(TestNode::start(id, &root.join(format!("n{id}")), any, snapshot_every).await);
    }
    let members: BTreeMap<NodeId, NodeInfo> = nodes.iter().map(|n| (n.id, n.info())).collect();
    nodes[0].raft.initialize(members).await.expect("initialize");
    wait_leader(&nodes).await;
    nodes
}

/// Waits until some node of `nodes` is leader and all agree on it; returns its position.
pub async fn wait_leader(nodes: &[TestNode]) -> usize {
    for _ in 0..200 {
        let leaders: Vec<Option<NodeId>> = nodes
            .iter()
            .map(|n| n.raft.metrics().borrow().current_leader)
            .collect();
        if let Some(Some(l)) = leaders.first()
            && leaders.iter().all(|x| *x == Some(*l))
            && let Some(pos) = nodes.iter().position(|n| n.id == *l)
        {
            return pos;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no agreed leader within 5 s");
}

/// Waits until every node has applied at least `index`.
pub async fn wait_applied(nodes: &[&TestNode], index: u64) {
    for n in nodes {
        n.raft
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(index), "catch up")
            .await
            .expect("node caught up");
    }
}

pub async fn propose(raft: &Raft, command: Command) -> (u64, Response) {
    let env = Envelope::new(&command, now_ms()).expect("encode");
    let r = raft.client_write(env).await.expect("client write");
    (r.log_id.index, r.data)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn demo_import(cells: usize) -> ImageImport {
    let cell_list: Vec<_> = (0..cells)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "id": format!("C{i}"), "site": "S1", "rat": "LTE", "pci": i % 504, "arfcn": 1300, "azimuth": 0
            }))
            .expect("cell")
        })
        .collect();
    let relations = (0..cells)
        .map(|i| {
            serde_json::from_value(serde_json::json!({"source": format!("C{i}"), "target": format!("C{}", (i + 1) % cells)}))
                .expect("relation")
        })
        .collect();
    let site = serde_json::from_value(
        serde_json::json!({"id": "S1", "name": "one", "lat": 0.0, "lon": 0.0}),
    )
    .expect("site");
    ImageImport {
        sites: vec![site],
        cells: cell_list,
        relations,
        policy: None,
    }
}

pub fn tilt_change(cell: &str, version: u64, tilt: i64) -> Command {
    Command::ChangeSet(ChangeSet {
        origin: Origin {
            node: 0,
            function: Function::Operator,
        },
        reason: "test".into(),
        read_set: vec![ReadVersion {
            entity: format!("cell/{cell}").parse().expect("entity"),
            version,
        }],
        writes: vec![Write {
            entity: format!("cell/{cell}").parse().expect("entity"),
            param: sonraft_raft::model::Param::ElectricalTilt,
            value: sonraft_raft::model::Value::Int(tilt),
        }],
        proposed_at_ms: now_ms(),
    })
}

pub fn outcome(r: Response) -> Outcome {
    match r {
        Response::ChangeSet(o) => o,
        other => panic!("not a change-set outcome: {other:?}"),
    }
}

/// Log entry `index` (term 1) carrying `command`, stamped with log time `1_000 + index`.
pub fn entry(index: u64, command: &Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Envelope::new(command, 1_000 + index).expect("envelope")),
    }
}

/// Membership entry `index`: node 1 the only voter.
pub fn membership(index: u64) -> Entry<TypeConfig> {
    let nodes = [(1u64, NodeInfo::default())]
        .into_iter()
        .collect::<BTreeMap<_, _>>();
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Membership(Membership::new(vec![[1u64].into()], nodes)),
    }
}

/// Applies to `store`'s state machine a membership (index 1) and an import of `cells` demo
/// cells (index 2).
pub async fn apply_demo(store: &mut Store, cells: usize) {
    store
        .sm
        .apply([
            membership(1),
            entry(2, &Command::Import(demo_import(cells))),
        ])
        .await
        .expect("apply");
}

/// Builds a snapshot of what `store` has applied.
/// Builds a snapshot of `store` (data directory `dir`) and checks the file it wrote: its
/// format number and decoded body, which `check` sees (with "written"); then installs it into a
/// fresh store, which `check` sees before and after a restart ("installed", "restarted").
pub async fn snapshot_round_trip(
    store: &mut Store,
    dir: &Path,
    format: u16,
    check: impl Fn(&sonraft_storage::StoreReader, &str),
) -> sonraft_storage::snapshot::SnapshotBody {
    let snap = build_snapshot(store).await;
    let path = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        u16::from_be_bytes([bytes[8], bytes[9]]),
        format,
        "written in format {format}"
    );
    let (_, body) = sonraft_storage::snapshot::decode_snapshot(&bytes[..]).unwrap();
    assert_eq!(body.format(), format);
    let (other, restored) = install_fresh(snap).await;
    check(&restored.reader, "installed");
    restored.close().unwrap();
    let restored = Store::open(other.path()).unwrap();
    check(&restored.reader, "restarted");
    body
}

/// A fresh store in a directory of its own with `snap` installed.
pub async fn install_fresh(snap: Snapshot<TypeConfig>) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .sm
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    (dir, store)
}

pub async fn build_snapshot(store: &mut Store) -> Snapshot<TypeConfig> {
    store
        .sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot")
}
