//! In-process clusters for fault tests: every Raft RPC a node receives passes a filter the
//! test sets (cut a link, drop one kind of RPC in one direction), a node's background syncs can
//! be held, and a power cut drops whatever the node had not synced.
//!
//! The sending side is the production transport ([`HttpNetworkFactory`], which caps the commit
//! index a leader tells followers); the receiving side decodes the frame and hands it to Raft as
//! the production `RaftServer` does, after the filter. Election timeouts are long, so that no
//! node campaigns unless the test makes it ([`FaultNode::elect`]).

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use openraft::{Config, RaftMetrics, ServerState, SnapshotPolicy};
use sonraft_raft::command::{Command, Envelope, Response as Applied};
use sonraft_raft::transport::{HttpNetworkFactory, RaftReply, RaftRpc, decode_frame, encode_frame};
use sonraft_raft::{NodeId, NodeInfo, Raft};
use sonraft_storage::{StateDigest, Store, StoreReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{SECRET, now_ms, with_raw_sled};

/// The kinds of Raft RPC a filter can drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rpc {
    Append,
    Vote,
    Snapshot,
}

pub const ALL: [Rpc; 3] = [Rpc::Append, Rpc::Vote, Rpc::Snapshot];

/// Which RPCs are dropped: `(from, to, kind)`. A dropped RPC gets 503, as from a peer that
/// refuses the connection.
#[derive(Default)]
pub struct Net {
    dropped: Mutex<HashSet<(NodeId, NodeId, Rpc)>>,
}

impl Net {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<(NodeId, NodeId, Rpc)>> {
        self.dropped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops `kinds` sent from `from` to `to` (one direction).
    pub fn drop_rpcs(&self, from: NodeId, to: NodeId, kinds: &[Rpc]) {
        let mut s = self.set();
        for k in kinds {
            s.insert((from, to, *k));
        }
    }

    /// Cuts the link between `a` and `b`, both ways, every kind.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.drop_rpcs(a, b, &ALL);
        self.drop_rpcs(b, a, &ALL);
    }

    /// Restores the link between `a` and `b`, both ways.
    pub fn heal(&self, a: NodeId, b: NodeId) {
        self.set()
            .retain(|(f, t, _)| !((*f == a && *t == b) || (*f == b && *t == a)));
    }

    /// Cuts `node` off from each of `others`.
    pub fn isolate(&self, node: NodeId, others: &[NodeId]) {
        for o in others {
            self.cut(node, *o);
        }
    }

    pub fn heal_all(&self) {
        self.set().clear();
    }

    fn passes(&self, from: NodeId, to: NodeId, kind: Rpc) -> bool {
        !self.set().contains(&(from, to, kind))
    }
}

pub fn config() -> Arc<Config> {
    let c = Config {
        cluster_name: "faults".into(),
        heartbeat_interval: 50,
        // Nobody campaigns on their own within a test: elections are the test's moves.
        election_timeout_min: 30_000,
        election_timeout_max: 40_000,
        snapshot_policy: SnapshotPolicy::Never,
        ..Default::default()
    };
    Arc::new(c.validate().expect("valid raft config"))
}

/// One node of a fault-test cluster.
pub struct FaultNode {
    pub id: NodeId,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub raft: Raft,
    pub reader: StoreReader,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

fn sender(rpc: &RaftRpc) -> (Option<NodeId>, Rpc) {
    match rpc {
        RaftRpc::Append(r) => (r.vote.leader_id().voted_for(), Rpc::Append),
        RaftRpc::Vote(r) => (r.vote.leader_id().voted_for(), Rpc::Vote),
        RaftRpc::Snapshot(r) => (r.vote.leader_id().voted_for(), Rpc::Snapshot),
    }
}

async fn answer(raft: &Raft, me: NodeId, net: &Net, body: Bytes) -> Response<Full<Bytes>> {
    let status = |code: StatusCode, msg: String| {
        let mut r = Response::new(Full::new(Bytes::from(msg)));
        *r.status_mut() = code;
        r
    };
    let rpc: RaftRpc = match decode_frame(&body) {
        Ok(r) => r,
        Err(e) => return status(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let (from, kind) = sender(&rpc);
    if let Some(from) = from
        && !net.passes(from, me, kind)
    {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{kind:?} from {from} dropped"),
        );
    }
    let reply = match rpc {
        RaftRpc::Append(r) => RaftReply::Append(raft.append_entries(r).await),
        RaftRpc::Vote(r) => RaftReply::Vote(raft.vote(r).await),
        RaftRpc::Snapshot(r) => RaftReply::Snapshot(raft.install_snapshot(r).await),
    };
    match encode_frame(&reply) {
        Ok(bytes) => Response::new(Full::new(Bytes::from(bytes))),
        Err(e) => status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn serve_filtered(
    listener: TcpListener,
    raft: Raft,
    me: NodeId,
    net: Arc<Net>,
    mut stop: oneshot::Receiver<()>,
) {
    // Dropped on stop, which aborts every connection: a restarted node must not be answered
    // for by its predecessor over a kept-alive connection.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            _ = &mut stop => return,
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let (raft, net) = (raft.clone(), net.clone());
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let (raft, net) = (raft.clone(), net.clone());
            async move {
                let body = match req.into_body().collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => Bytes::new(),
                };
                Ok::<_, Infallible>(answer(&raft, me, &net, body).await)
            }
        });
        connections.spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

impl FaultNode {
    /// Starts node `id` with its data in `dir`, its RPCs filtered by `net`, listening on
    /// `addr` (port 0: any; a restarted node passes its old address).
    pub async fn start(id: NodeId, dir: &Path, addr: SocketAddr, net: Arc<Net>) -> FaultNode {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut store = Store::open(dir).expect("open store");
        store.log.report_own_appends_early(id);
        let reader = store.reader.clone();
        let network =
            HttpNetworkFactory::new(id, SECRET, reader.durable_log(), None).expect("network");
        let raft = Raft::new(id, config(), network, store.log, store.sm)
            .await
            .expect("raft starts");
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(serve_filtered(listener, raft.clone(), id, net, rx));
        FaultNode {
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

    pub fn metrics(&self) -> RaftMetrics<NodeId, NodeInfo> {
        self.raft.metrics().borrow().clone()
    }

    pub fn last_log_index(&self) -> u64 {
        self.metrics().last_log_index.unwrap_or(0)
    }

    pub fn last_applied(&self) -> u64 {
        self.metrics().last_applied.map_or(0, |l| l.index)
    }

    /// Waits up to `within` for `cond` on this node's metrics.
    pub async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        cond: impl Fn(&RaftMetrics<NodeId, NodeInfo>) -> bool + Send + 'static,
    ) -> Result<RaftMetrics<NodeId, NodeInfo>, String> {
        self.raft
            .wait(Some(within))
            .metrics(move |m| cond(m), what)
            .await
            .map_err(|e| format!("node {}: {what}: {e}", self.id))
    }

    /// Makes this node campaign until it leads in a term newer than the one it is in (a
    /// candidate whose term ties another's may need a second term; a cut-off leader still
    /// believes it leads its old one).
    pub async fn elect(&self) {
        for _ in 0..10 {
            let before = self.metrics().current_term;
            self.raft.trigger().elect().await.expect("trigger election");
            if self
                .wait_for(Duration::from_secs(2), "leads", move |m| {
                    m.state == ServerState::Leader && m.current_term > before
                })
                .await
                .is_ok()
            {
                return;
            }
            let m = self.metrics();
            eprintln!(
                "node {} did not win yet: {:?} term {} vote {}",
                self.id, m.state, m.current_term, m.vote
            );
        }
        panic!("node {} did not win an election", self.id);
    }

    /// Makes this node lead, in whatever term: a just-initialized node may already have won
    /// its first election by its own timer (only it knows the membership yet), and then
    /// [`FaultNode::elect`], which wants a newer term, would wait in vain.
    pub async fn lead(&self) {
        for _ in 0..10 {
            if self.metrics().state == ServerState::Leader {
                return;
            }
            self.raft.trigger().elect().await.expect("trigger election");
            if self
                .wait_for(Duration::from_secs(2), "leads", |m| {
                    m.state == ServerState::Leader
                })
                .await
                .is_ok()
            {
                return;
            }
        }
        panic!("node {} does not lead", self.id);
    }

    /// Commits `command` through this node (which must lead).
    pub async fn propose(&self, command: &Command) -> (u64, Applied) {
        let env = Envelope::new(command, now_ms()).expect("encode");
        let r = self.raft.client_write(env).await.expect("client write");
        (r.log_id.index, r.data)
    }

    pub fn digest(&self) -> StateDigest {
        self.reader.digest().expect("digest")
    }

    /// Stops Raft and the listener; returns once the data directory is released.
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

    /// A power cut: nothing more is synced, the node stops, and every log entry it had not
    /// synced is gone (what a filesystem that drops unsynced writes leaves; the commit index
    /// and checkpoints it wrote unsynced are kept, the harder case). Then it starts again.
    pub async fn power_cut(self, net: Arc<Net>) -> FaultNode {
        self.reader.sync_gate().cut();
        let synced = self
            .reader
            .durable_log()
            .synced_log_id()
            .map_or(0, |l| l.index);
        let id = self.id;
        let (dir, addr) = self.stop().await;
        with_raw_sled(&dir, |db| {
            let log = db.open_tree("log").expect("log tree");
            let lost: Vec<_> = log
                .range((synced + 1).to_be_bytes()..)
                .keys()
                .map(|k| k.expect("key"))
                .collect();
            for k in lost {
                log.remove(k).expect("remove");
            }
        });
        FaultNode::start(id, &dir, addr, net).await
    }
}

/// Starts nodes `1..=n` in `root` on one filtered network, initialises them as voters and makes
/// node 1 the leader.
pub async fn cluster(root: &Path, n: u64, net: Arc<Net>) -> Vec<FaultNode> {
    let mut nodes = Vec::new();
    for id in 1..=n {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        nodes.push(FaultNode::start(id, &root.join(format!("n{id}")), any, net.clone()).await);
    }
    let members: BTreeMap<NodeId, NodeInfo> = nodes.iter().map(|n| (n.id, n.info())).collect();
    nodes[0].raft.initialize(members).await.expect("initialize");
    nodes[0].lead().await;
    let leader = nodes[0].id;
    for n in &nodes {
        n.wait_for(Duration::from_secs(5), "knows the leader", move |m| {
            m.current_leader == Some(leader)
        })
        .await
        .expect("leader known");
    }
    nodes
}
