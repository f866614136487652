//! # sonraft-node: one site's sonraft process
//!
//! One identical node runs at each site of an operator. The nodes keep the network image
//! (sites, cells, neighbour relations) in sled, replicated with Raft ([`sonraft_raft`],
//! [`sonraft_storage`]); this crate is the node around them, wired top to bottom in [`run`]:
//!
//! - [`config`]: flags, TOML file and environment, in that order of precedence;
//! - [`api`]: the admin HTTP API (axum), one file per group of routes;
//! - [`propose`]: how a command gets into the log (leader check, log time, cluster version);
//! - [`quorum`]: a leader that no majority hears answers its clients at once;
//! - [`batcher`]: concurrent change sets share log entries (group commit);
//! - [`reads`]: concurrent linearizable reads share leadership confirmations;
//! - [`status`]: what the node says about itself (`/status`, `/readyz`);
//! - [`health`]: the cluster's health and fault tolerance from this node's position;
//! - [`membership`]: init, learners, voters, removal and leader hand-over;
//! - [`gate`]: the gate that holds new proposals while leadership is handed over;
//! - [`peers`]: what this node answers other nodes on the Raft listener, and what it knows of
//!   them (their facts, who answers);
//! - [`compaction`]: snapshots by log size as well as by entry count;
//! - [`shutdown`]: SIGTERM/SIGINT handling and the graceful stop sequence;
//! - [`telemetry`]: logging and Prometheus metrics;
//! - [`tls`]: TLS on both listeners and to peers, from three PEM files or none;
//! - [`watchdog`]: fast detection of a crashed leader;
//! - [`antennas`]: sessions with this site's antennas and their raw counters;
//! - [`son`]: the SON functions and their per-period cycle.
//!
//! Its neighbours are crates of their own, each with one job (the graph is in the README's
//! Layout): [`sonraft_protocol`] (the antenna protocol and the sockets for many sessions),
//! [`sonraft_client`] (the keep-alive JSON client of the admin API, used here to forward
//! requests to the leader). The `sonraft` binary runs this crate's [`run`] for `sonraft node`,
//! next to `ctl`, `sim` and `bench`, which this crate never calls.
//!
//! A change set flows: `POST /image/changesets` on any node → parsed into a
//! [`sonraft_raft::changeset::ChangeSet`] → forwarded to the leader if needed → wrapped in a
//! log envelope stamped with the leader's clock → committed by Raft (durable on a quorum) →
//! applied by every node's state machine → the outcome returned to the caller.
#![forbid(unsafe_code)]

pub mod access;
pub mod antennas;
pub mod api;
pub mod batcher;
pub mod compaction;
pub mod config;
pub mod control;
pub mod gate;
pub mod health;
pub mod membership;
pub mod peers;
pub mod propose;
pub mod quorum;
pub mod reads;
pub mod shutdown;
pub mod son;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod watchdog;

/// This build's release, as advertised to the cluster and shown in `/status`.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use openraft::storage::RaftLogStorage;
use openraft::{Config, ServerState, SnapshotPolicy};
use sonraft_client::ApiClient;
use sonraft_raft::transport::{HttpNetworkFactory, RaftServer};
use sonraft_raft::{NodeId, NodeInfo, Raft};
use sonraft_storage::{Store, StoreOptions, StoreReader};
use tokio::net::TcpListener;

use crate::config::NodeConfig;

pub use telemetry::init_logging;

/// One node: its Raft instance, its store, and what its admin API and background tasks share.
///
/// Its fields are private. The modules that own a concern reach their part directly (Raft's
/// core: [`propose`], [`membership`], [`reads`], [`watchdog`], [`compaction`], [`telemetry`],
/// [`peers`], [`shutdown`]; the forwarding client: [`api::forward`]); every other caller (the
/// API handlers, [`son`], [`antennas`]) goes through the methods: propose a change set or a
/// command ([`Node::propose_change_set`], [`Node::submit`]), prepare a read of a consistency
/// ([`Node::ready_to_read`]), status and readiness ([`Node::status`], [`Node::readiness`],
/// [`Node::leader`]), membership operations ([`Node::add_learner`] and its neighbours), and
/// queries of the applied image through [`Node::store`] (`StoreReader`'s queries: none of
/// them keeps the state's lock past its call).
pub struct Node {
    id: NodeId,
    site: String,
    raft: Raft,
    store: StoreReader,
    config: NodeConfig,
    /// How other nodes and clients reach this node.
    advertised: NodeInfo,
    /// Client for the admin routes of nodes of a release before peer requests (with this
    /// node's token).
    peers: ApiClient,
    /// Client that forwards operators' requests to the leader (bounds per request: see
    /// `api::forward`).
    forwarder: ApiClient,
    /// Node-to-node requests over the Raft listeners, with the cluster secret.
    peer_client: sonraft_raft::transport::PeerClient,
    /// What this node last learned of the other members.
    known_peers: peers::KnownPeers,
    /// When this node last heard an AppendEntries from a leader.
    contact: Arc<sonraft_raft::transport::LeaderContact>,
    /// When this process started.
    started: std::time::Instant,
    /// The commit index persisted when this node started: `/readyz` waits until it is applied.
    committed_at_start: u64,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    /// Sessions with this site's antennas and their counters (when `--antennas` or
    /// `--pm-dir` is set).
    antennas: Option<Arc<crate::antennas::fleet::Fleet>>,
    /// Change sets proposed on this node go through here (group commit).
    batcher: batcher::Batcher,
    /// Linearizable reads wait here.
    reads: Arc<reads::ReadBarrier>,
    /// Closed while leadership is being handed over: new proposals wait, so that no
    /// AppendEntries keeps renewing the followers' vote leases against the chosen successor.
    hand_over_gate: gate::HandOverGate,
    /// Set by a graceful stop before Raft shuts down: proposals are refused from then on (one
    /// reaching a stopped Raft core is an ERROR in openraft's log).
    stopping: std::sync::atomic::AtomicBool,
    /// The `GET /watch` streams: their slots, and the signal that ends them at a stop.
    watchers: api::watch::Watchers,
}

impl Node {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The site this node serves.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The settings this node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Queries of the applied image, the history and the store's state.
    pub fn store(&self) -> &StoreReader {
        &self.store
    }

    /// How other nodes and clients reach this node.
    pub fn advertised(&self) -> &NodeInfo {
        &self.advertised
    }

    /// Commits change set `cs` together with the others proposed meanwhile (group commit);
    /// returns its log index and outcome. Only the leader commits: elsewhere it is
    /// [`propose::ProposeError::NotLeader`].
    pub async fn propose_change_set(
        &self,
        cs: sonraft_raft::changeset::ChangeSet,
    ) -> Result<(u64, sonraft_raft::changeset::Outcome), propose::ProposeError> {
        self.batcher.propose(cs).await
    }

    /// This site's antenna sessions (at most `limit`) and their summary; none without
    /// `--antennas`.
    pub fn antenna_sessions(&self, limit: usize) -> sonraft_client::v1::Antennas {
        match &self.antennas {
            Some(fleet) => fleet.describe(limit),
            None => sonraft_client::v1::Antennas {
                site: self.site.clone(),
                ..Default::default()
            },
        }
    }

    /// Raft's view of the cluster (leader, term, membership, replication), and its changes.
    pub fn metrics(&self) -> tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, NodeInfo>> {
        self.raft.metrics()
    }

    /// The current leader and how to reach it, if known.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let info = m
            .membership_config
            .nodes()
            .find(|(n, _)| **n == id)
            .map(|(_, i)| i.clone())?;
        Some((id, info))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The `GET /watch` streams this node serves.
    pub fn watchers(&self) -> &api::watch::Watchers {
        &self.watchers
    }

    /// Ids of the current voters.
    pub fn voters(&self) -> Vec<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }
}

/// The openraft configuration of a node.
pub fn raft_config(c: &NodeConfig) -> anyhow::Result<Arc<Config>> {
    let config = Config {
        cluster_name: "sonraft".into(),
        heartbeat_interval: c.heartbeat_ms,
        election_timeout_min: c.election_min_ms,
        election_timeout_max: c.election_max_ms,
        // By count and size in `compaction`, which holds the count back while the log is
        // small next to a large image.
        snapshot_policy: SnapshotPolicy::Never,
        // Keep some log behind a snapshot so a briefly lagging follower needs no snapshot.
        max_in_snapshot_log_to_keep: crate::config::LOG_KEPT_BEHIND_SNAPSHOT,
        install_snapshot_timeout: 10_000,
        max_payload_entries: 512,
        ..Default::default()
    };
    Ok(Arc::new(config.validate().context("invalid Raft timing")?))
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    sonraft_protocol::net::listen(addr)
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// Writes the addresses this node listens on to `<data dir>/addresses.json` (atomically), so
/// that scripts and tests that started it with port 0 can find it.
fn write_addresses(dir: &Path, id: NodeId, info: &NodeInfo) -> anyhow::Result<()> {
    let json = serde_json::json!({
        "id": id, "site": info.site, "raft_addr": info.raft_addr, "api_addr": info.api_addr,
        "pid": std::process::id(),
    });
    let tmp = dir.join("addresses.json.tmp");
    std::fs::write(&tmp, json.to_string()).context("cannot write addresses.json")?;
    std::fs::rename(&tmp, dir.join("addresses.json")).context("cannot write addresses.json")?;
    Ok(())
}

/// Runs a node until SIGTERM or SIGINT, then stops it gracefully.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let span = tracing::info_span!("node", node = config.id, site = %config.site);
    let _enter = span.enter();
    let prometheus = telemetry::install_metrics()?;
    // The recorder keeps every histogram sample until it is drained, which only a scrape of
    // /metrics or this upkeep does: without it a node nobody scrapes grows without bound.
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });

    let options = StoreOptions {
        cache_bytes: config.store_cache_bytes,
    };
    let opening = std::time::Instant::now();
    let mut store = Store::open_with(&config.data_dir, &options)?;
    let store_opened_ms = opening.elapsed().as_millis() as u64;
    let committed_at_start = store
        .log
        .read_committed()
        .await
        .context("cannot read the commit index")?
        .map_or(0, |l| l.index);

    let raft_listener = bind(config.raft_listen, "Raft").await?;
    let api_listener = bind(config.api_listen, "the admin API").await?;
    let advertised = NodeInfo {
        site: config.site.clone(),
        raft_addr: config
            .advertise_raft_addr
            .clone()
            .unwrap_or(raft_listener.local_addr()?.to_string()),
        api_addr: config
            .advertise_api_addr
            .clone()
            .unwrap_or(api_listener.local_addr()?.to_string()),
    };
    write_addresses(&config.data_dir, config.id, &advertised)?;

    sonraft_protocol::net::raise_fd_limit();
    // Counters come from the antenna sessions, or from a PM directory (`antennas::pm_dir`).
    let pm_dir = match &config.pm_dir {
        Some(dir) => Some(crate::antennas::pm_dir::PmDir::open(
            dir.clone(),
            config.data_dir.join("pm-ingested"),
        )?),
        None => None,
    };
    let fleet = if config.antennas.is_some() || pm_dir.is_some() {
        let addrs: Vec<String> = config
            .antennas
            .as_deref()
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        let counters = crate::antennas::counters::CounterStore::open(
            &config.data_dir.join("counters"),
            config.raw_counters,
        )?;
        Some(crate::antennas::fleet::Fleet::new(
            config.id,
            config.site.clone(),
            addrs,
            store.reader.clone(),
            counters,
            pm_dir.clone(),
            config.antenna_sessions == crate::config::SessionKind::Station,
        ))
    } else {
        None
    };

    // As leader, this node's appends replicate while they are synced here; the state machine
    // and the transport hold back what a commit causes until they are on disk (see
    // `sonraft_raft::durable`).
    store.log.report_own_appends_early(config.id);
    // A follower must hear the leader's retries before its election timer fires, even when it
    // answers them too late (see `retry_pauses`).
    let client_tls = config.tls.as_ref().map(sonraft_tls::NodeTls::client_config);
    let network = HttpNetworkFactory::new(
        config.id,
        config.cluster_secret.expose(),
        store.reader.durable_log(),
        client_tls.clone(),
    )?
    .with_retry_cap(std::time::Duration::from_millis(config.election_min_ms));
    let acks = network.acks();
    let raft = Raft::new(
        config.id,
        raft_config(&config)?,
        network,
        store.log,
        store.sm,
    )
    .await
    .context("cannot start Raft")?;

    let (batcher, batch_rx) = batcher::Batcher::new();
    let read_barrier = Arc::new(reads::ReadBarrier::new(acks));
    let mut rpc = RaftServer::new(raft.clone(), config.cluster_secret.expose());
    if let Some(tls) = &config.tls {
        rpc = rpc.with_tls(tls.peer_acceptor());
    }
    let contact = rpc.contact();
    let node = Arc::new(Node {
        id: config.id,
        site: config.site.clone(),
        raft: raft.clone(),
        store: store.reader.clone(),
        peers: ApiClient::with_tls(
            Some(config.token.expose().to_string()),
            std::time::Duration::from_secs(10),
            client_tls.clone(),
        ),
        forwarder: ApiClient::with_tls(
            Some(config.token.expose().to_string()),
            std::time::Duration::from_secs(660),
            client_tls.clone(),
        ),
        peer_client: sonraft_raft::transport::PeerClient::new(
            config.cluster_secret.expose(),
            client_tls,
        )?,
        known_peers: peers::KnownPeers::default(),
        contact,
        started: std::time::Instant::now(),
        config,
        advertised,
        committed_at_start,
        prometheus,
        antennas: fleet.clone(),
        batcher,
        reads: read_barrier.clone(),
        hand_over_gate: gate::HandOverGate::default(),
        stopping: std::sync::atomic::AtomicBool::new(false),
        watchers: api::watch::Watchers::default(),
    });
    tokio::spawn(batcher::run(node.clone(), batch_rx));
    tokio::spawn(reads::run(node.clone(), read_barrier));

    let mut stop = shutdown::Stop::new();
    stop.raft_closing = Some(rpc.closing());
    let rpc = rpc.with_peer_service(Arc::new(peers::PeerHandler(node.clone())));
    tokio::spawn(watchdog::watch_leader(node.clone()));
    tokio::spawn(watchdog::startup_grace(node.clone()));
    let (removed_tx, mut removed_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(peers::run(node.clone(), removed_tx));
    let raft_server = tokio::spawn(sonraft_raft::transport::serve(
        raft_listener,
        rpc,
        stop.raft.clone().wait(),
    ));
    let api_server = tokio::spawn(crate::api::serve(
        api_listener,
        node.clone(),
        stop.api.clone().wait(),
    ));
    tokio::spawn(telemetry::watch_raft(node.clone()));
    tokio::spawn(telemetry::watch_runtime());
    tokio::spawn(compaction::snapshot_by_size(node.clone()));
    tokio::spawn(telemetry::exit_when_raft_fails(node.clone()));
    tokio::spawn(propose::advertise_release(node.clone()));
    tokio::spawn(control::run(node.clone()));
    if let Some(fleet) = fleet {
        tokio::spawn(control::keep_lease(node.clone(), fleet.clone()));
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let f = fleet.clone();
        tokio::spawn(fleet.counters.clone().run(move || f.connected(), tx));
        if let Some(pm_dir) = pm_dir {
            let f = fleet.clone();
            tokio::spawn(pm_dir.run(fleet.counters.clone(), move || f.own_cells()));
        }
        let delay = std::time::Duration::from_millis(node.config.antennas_after_ms);
        let sessions = fleet.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            sessions.run().await;
        });
        tokio::spawn(crate::son::run(node.clone(), fleet, rx));
    }

    tracing::info!(
        raft = %node.advertised.raft_addr,
        api = %node.advertised.api_addr,
        data_dir = %node.config.data_dir.display(),
        release = crate::RELEASE,
        tls = node.config.tls.is_some(),
        store_opened_ms,
        "node started"
    );
    if node.config.api_son_origins {
        tracing::warn!(
            "--api-son-origins is set: admin tokens may propose change sets in a SON function's name (a lab setting, not for a live network)"
        );
    }
    tokio::select! {
        () = shutdown::wait_for_signal() => {}
        Some(why) = removed_rx.recv() => {
            tracing::warn!(
                reason = %why,
                "this node was removed from the cluster; stopping (to serve again, empty its data directory and join it as a new member)"
            );
        }
    }
    shutdown::graceful(node, stop, api_server, raft_server).await
}
