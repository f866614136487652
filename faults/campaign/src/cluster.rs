//! The cluster under test: three sites ("slots"), each a namespace with its own filesystem
//! and clock, running one node at a time.
//!
//! A slot keeps its address, filesystem and clock for the whole run; the node in it changes
//! when membership faults replace it (a new node id on an empty data directory). This module
//! knows how to start, stop and cut power to the node of a slot, who leads, and when the
//! cluster is whole again; the nemesis decides what to do with that.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::api::{Api, NodeEntry, Status};
use crate::clock::Clock;
use crate::lazyfs::{Crash, LazyFs, LazyFsError};
use crate::netns::Network;
use crate::node::{NodeError, NodeProcess, NodeSpec, log_tail};
use crate::report::Anomaly;
use crate::teardown;

/// Why the cluster could not be set up or restored.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    LazyFs(#[from] LazyFsError),
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Stuck(String),
}

/// Binaries and knobs of the cluster.
#[derive(Clone, Debug)]
pub struct Setup {
    pub sonraft: PathBuf,
    /// `None`: data directories on the plain disk (power loss degrades to kill -9).
    pub lazyfs: Option<PathBuf>,
    pub libfaketime: PathBuf,
    pub run_dir: PathBuf,
    pub node_flags: Vec<String>,
    /// The nodes' `RUST_LOG`, if not the default (`SONRAFT_CAMPAIGN_NODE_LOG` or info).
    pub node_log: Option<String>,
    pub seed: u64,
    /// Whether a replacement node listens on other ports than the node it replaces (else it
    /// takes over its address, as a rebuilt host would).
    pub fresh_addresses: bool,
}

/// One site.
pub struct Slot {
    pub index: usize,
    pub fs: Option<LazyFs>,
    pub clock: Clock,
    /// The node this slot runs (or ran last).
    pub spec: NodeSpec,
    pub node: Option<NodeProcess>,
    exec_prefix: Vec<String>,
}

impl Slot {
    /// The directory node data directories live in: the lazyfs mount, or a plain directory.
    fn data_root(&self, run_dir: &Path) -> PathBuf {
        self.fs.as_ref().map_or_else(
            || run_dir.join(format!("data/s{}", self.index)),
            |f| f.mount.clone(),
        )
    }
}

/// The running cluster.
pub struct Cluster {
    pub network: Network,
    pub slots: Vec<Slot>,
    pub api: Api,
    /// The API address of each slot's node, shared with the clients (it changes when a
    /// replacement listens elsewhere).
    pub addrs: Arc<RwLock<Vec<String>>>,
    /// A cell outside the workload that [`Cluster::heal`] writes through every node.
    pub probe_cell: Option<String>,
    setup: Setup,
    next_id: u64,
}

/// How long a node gets to become ready after a fault is healed.
pub const RECOVERY: Duration = Duration::from_secs(60);

impl Cluster {
    /// Creates the slots (filesystem, clock, node spec) and starts one node in each.
    pub async fn start(setup: Setup, network: Network) -> Result<Cluster, ClusterError> {
        let mut slots = Vec::new();
        if setup.lazyfs.is_some() {
            let root = setup.run_dir.join("mnt");
            crate::lazyfs::shared_root(&root)?;
            teardown::update(|r| r.mounts.push(root.clone()));
        }
        for index in 1..=network.slots {
            let fs = match &setup.lazyfs {
                Some(bin) => {
                    let fs = LazyFs::mount(
                        bin,
                        &setup.run_dir.join(format!("backing/s{index}")),
                        &setup.run_dir.join(format!("mnt/s{index}")),
                        &setup.run_dir.join(format!("lazyfs-s{index}.ctl")),
                        &setup.run_dir.join(format!("logs/lazyfs-s{index}.log")),
                        setup.seed.wrapping_add(index as u64),
                    )?;
                    teardown::update(|r| {
                        r.mounts.push(fs.mount.clone());
                        r.lazyfs_pids.extend(fs.pid());
                    });
                    Some(fs)
                }
                None => None,
            };
            let clock = Clock::new(
                &setup.run_dir.join(format!("clock-s{index}")),
                &setup.libfaketime,
            )?;
            let mut slot = Slot {
                index,
                fs,
                clock,
                spec: NodeSpec {
                    id: index as u64,
                    slot: index,
                    site: format!("site-{index}"),
                    data_dir: PathBuf::new(),
                    ip: network.ip(index),
                    port_offset: 0,
                    log: PathBuf::new(),
                    flags: setup.node_flags.clone(),
                },
                node: None,
                exec_prefix: network.exec_prefix(index),
            };
            slot.spec.data_dir = slot.data_root(&setup.run_dir).join(format!("node-{index}"));
            slot.spec.log = setup.run_dir.join(format!("logs/node-{index}.log"));
            slots.push(slot);
        }
        let addrs = slots.iter().map(|s| s.spec.api_addr()).collect();
        let mut cluster = Cluster {
            addrs: Arc::new(RwLock::new(addrs)),
            next_id: slots.len() as u64 + 1,
            network,
            slots,
            api: Api::new(crate::node::TOKEN),
            probe_cell: None,
            setup,
        };
        for i in 0..cluster.slots.len() {
            cluster.start_node(i, "first start").await?;
        }
        Ok(cluster)
    }

    /// Starts the node of slot position `i` (0-based) on its data directory.
    pub async fn start_node(&mut self, i: usize, why: &str) -> Result<(), NodeError> {
        let slot = &mut self.slots[i];
        let mut env = slot.clock.env();
        env.extend(
            self.setup
                .node_log
                .clone()
                .map(|filter| ("RUST_LOG".to_string(), filter)),
        );
        let node = NodeProcess::start(
            &self.setup.sonraft,
            &slot.spec,
            &slot.exec_prefix,
            &env,
            why,
        )
        .await?;
        slot.node = Some(node);
        Ok(())
    }

    /// The membership entry of slot position `i`'s node.
    pub fn entry(&self, i: usize) -> NodeEntry {
        let s = &self.slots[i].spec;
        NodeEntry {
            id: s.id,
            site: s.site.clone(),
            raft_addr: s.raft_addr(),
            api_addr: s.api_addr(),
        }
    }

    /// API address of slot position `i`.
    pub fn addr(&self, i: usize) -> String {
        self.slots[i].spec.api_addr()
    }

    /// Node ids the cluster should have as voters.
    pub fn ids(&self) -> Vec<u64> {
        self.slots.iter().map(|s| s.spec.id).collect()
    }

    /// Makes the three nodes the voters of a new cluster.
    pub async fn init(&self) -> Result<(), ClusterError> {
        let entries: Vec<NodeEntry> = (0..self.slots.len()).map(|i| self.entry(i)).collect();
        self.api.init(&self.addr(0), &entries).await?;
        Ok(())
    }

    /// `GET /status` of every slot whose node runs and answers.
    pub async fn statuses(&self) -> Vec<(usize, Status)> {
        let mut out = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            if s.node.as_ref().is_some_and(|n| !n.paused)
                && let Ok(st) = self.api.status(&self.addr(i)).await
            {
                out.push((i, st));
            }
        }
        out
    }

    /// The slot position and term of the node that says it leads with the highest term.
    pub async fn leader(&self) -> Option<(usize, u64)> {
        self.statuses()
            .await
            .into_iter()
            .filter(|(_, s)| s.role == "leader")
            .max_by_key(|(_, s)| s.term)
            .map(|(i, s)| (i, s.term))
    }

    /// Waits (up to `bound`) for a leader in a term above `after_term`, among the slots not in
    /// `excluded`.
    pub async fn wait_new_leader(
        &self,
        after_term: u64,
        excluded: &[usize],
        bound: Duration,
    ) -> Option<(usize, u64)> {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Some((i, term)) = self.leader().await
                && term > after_term
                && !excluded.contains(&i)
            {
                return Some((i, term));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    /// SIGKILL the node of slot position `i` and, for a power loss, drop what its filesystem
    /// had not synced.
    /// Returns the filesystem's report of what the cut dropped.
    pub async fn cut(&mut self, i: usize, crash: Option<Crash>) -> Result<String, LazyFsError> {
        if let Some(node) = self.slots[i].node.take() {
            node.kill().await;
        }
        match (crash, self.slots[i].fs.as_ref()) {
            (Some(how), Some(fs)) => fs.crash(how).await,
            _ => Ok(String::new()),
        }
    }

    /// Brings the cluster back to whole: every slot's node running, unpaused, on a real
    /// clock, with no partition; then waits until all are ready and agree on the leader and
    /// the voters. Returns what went wrong, as anomalies, after fault number `fault`.
    pub async fn heal(&mut self, fault: u64) -> Vec<Anomaly> {
        let mut anomalies = Vec::new();
        if let Err(e) = self.network.heal().await {
            anomalies.push(Anomaly::CampaignError {
                detail: format!("cannot heal the network: {e}"),
            });
        }
        for i in 0..self.slots.len() {
            if self.slots[i].clock.offset_secs() != 0 {
                let _ = self.slots[i].clock.set_offset(0);
            }
            let slot = &mut self.slots[i];
            if let Some(node) = slot.node.as_mut() {
                if node.paused {
                    let _ = node.resume().await;
                }
                if let Some(status) = node.exited() {
                    anomalies.push(Anomaly::NodeExited {
                        slot: slot.index,
                        node: slot.spec.id,
                        after_fault: fault,
                        status,
                        log_tail: log_tail(&slot.spec.log, 30),
                    });
                    slot.node = None;
                }
            }
            if self.slots[i].node.is_none()
                && let Err(e) = self
                    .start_node(i, &format!("restart after fault {fault}"))
                    .await
            {
                anomalies.push(Anomaly::NodeCannotStart {
                    slot: self.slots[i].index,
                    node: self.slots[i].spec.id,
                    after_fault: fault,
                    detail: e.to_string(),
                });
            }
        }
        if let Err(detail) = self.wait_whole(RECOVERY).await {
            let tails = self
                .slots
                .iter()
                .map(|s| {
                    format!(
                        "--- node {} (slot {}):\n{}",
                        s.spec.id,
                        s.index,
                        log_tail(&s.spec.log, 15)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            anomalies.push(Anomaly::NotRecovered {
                after_fault: fault,
                detail,
                log_tails: tails,
            });
            return anomalies;
        }
        anomalies.extend(self.writes_get_through(fault).await);
        anomalies
    }

    /// Whether a change set proposed through each node gets an answer: a node whose
    /// proposals hang (a batch never answered) looks ready but takes no writes.
    async fn writes_get_through(&self, fault: u64) -> Vec<Anomaly> {
        let Some(cell) = &self.probe_cell else {
            return Vec::new();
        };
        let mut anomalies = Vec::new();
        for i in 0..self.slots.len() {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let last = match self.probe_write(i, cell).await {
                    Ok(()) => break,
                    Err(e) => e,
                };
                if Instant::now() > deadline {
                    let s = &self.slots[i];
                    anomalies.push(Anomaly::NodeStalled {
                        slot: s.index,
                        node: s.spec.id,
                        after_fault: fault,
                        last_error: last,
                        log_tail: log_tail(&s.spec.log, 30),
                    });
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        anomalies
    }

    /// Reads the probe cell through slot position `i` and proposes a change conditional on
    /// it there; any outcome of the log (applied, conflict, rejected) will do.
    async fn probe_write(&self, i: usize, cell: &str) -> Result<(), String> {
        let addr = self.addr(i);
        let deadline = Duration::from_secs(5);
        let state = self
            .api
            .read_cell(&addr, cell, deadline)
            .await
            .map_err(|e| e.to_string())?;
        let body = serde_json::json!({
            "origin": {"function": "operator"},
            "reason": format!("campaign probe through slot {}", i + 1),
            "read_set": [{"entity": format!("cell/{cell}"), "version": state.version}],
            "writes": [{"entity": format!("cell/{cell}"), "param": "electrical_tilt",
                        "value": crate::workload::next_tilt(&state, state.version % 2 == 0)}],
        });
        let a = self
            .api
            .http
            .post(&addr, "/image/changesets", &body, deadline)
            .await
            .map_err(|e| e.to_string())?;
        match a.status.as_u16() {
            200 | 409 => Ok(()),
            s => Err(format!("{s} {}", a.text())),
        }
    }

    /// Slot positions whose node is missing, not ready, or disagrees with the others about
    /// the leader or the voters.
    pub async fn unhealthy(&self) -> Vec<usize> {
        let mut ids = self.ids();
        ids.sort_unstable();
        let mut seen = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            let status = match s.node {
                Some(_) if self.api.ready(&self.addr(i)).await => {
                    self.api.status(&self.addr(i)).await.ok()
                }
                _ => None,
            };
            seen.push(status.map(|st| {
                let mut voters = st.voters;
                voters.sort_unstable();
                (st.leader_id, voters == ids)
            }));
        }
        let leaders: Vec<Option<u64>> = seen.iter().flatten().map(|(l, _)| *l).collect();
        let agreed = leaders
            .iter()
            .max_by_key(|l| leaders.iter().filter(|m| m == l).count())
            .copied()
            .flatten();
        seen.iter()
            .enumerate()
            .filter(|(_, v)| !matches!(v, Some((l, true)) if l.is_some() && *l == agreed))
            .map(|(i, _)| i)
            .collect()
    }

    /// Waits until every node is ready, all agree on one leader, and its voters are
    /// exactly this cluster's nodes.
    pub async fn wait_whole(&self, bound: Duration) -> Result<(), String> {
        let deadline = Instant::now() + bound;
        let mut ids = self.ids();
        ids.sort_unstable();
        loop {
            let mut last = String::new();
            let mut whole = true;
            let mut leaders = Vec::new();
            for (i, s) in self.slots.iter().enumerate() {
                if s.node.is_none() {
                    whole = false;
                    last = format!("slot {} has no node", s.index);
                    break;
                }
                if !self.api.ready(&self.addr(i)).await {
                    whole = false;
                    last = format!("node {} is not ready", s.spec.id);
                    break;
                }
                match self.api.status(&self.addr(i)).await {
                    Ok(st) => {
                        let mut voters = st.voters.clone();
                        voters.sort_unstable();
                        if voters != ids {
                            whole = false;
                            last =
                                format!("node {} sees voters {voters:?}, want {ids:?}", s.spec.id);
                        }
                        leaders.push(st.leader_id);
                    }
                    Err(e) => {
                        whole = false;
                        last = format!("node {}: {e}", s.spec.id);
                    }
                }
            }
            if whole && leaders.windows(2).all(|w| w[0] == w[1]) && leaders[0].is_some() {
                return Ok(());
            }
            if whole {
                last = format!("nodes disagree on the leader: {leaders:?}");
            }
            if Instant::now() > deadline {
                return Err(format!("not whole within {bound:?}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replaces the node of slot position `i` (which must not lead) with a new node id on an
    /// empty data directory, the way README.md says to replace a lost site: stop it, start
    /// the new one in its place, add it as a learner, make it a voter in the old one's place,
    /// then remove the old one. (Removing a voter first is refused: it would leave two.)
    /// Returns the new node's id.
    pub async fn replace(&mut self, i: usize) -> Result<u64, ClusterError> {
        let old = self.slots[i].spec.id;
        let fallback = usize::from(i == 0);
        if let Some(node) = self.slots[i].node.take() {
            node.terminate(Duration::from_secs(5)).await;
        }
        let old_dir = self.slots[i].spec.data_dir.clone();
        let _ = tokio::fs::remove_dir_all(&old_dir).await;
        let id = self.next_id;
        self.next_id += 1;
        let root = self.slots[i].data_root(&self.setup.run_dir);
        self.slots[i].spec.id = id;
        self.slots[i].spec.data_dir = root.join(format!("node-{id}"));
        if self.setup.fresh_addresses {
            let spec = &mut self.slots[i].spec;
            spec.port_offset = (spec.port_offset + 10) % 1000;
            if let Ok(mut addrs) = self.addrs.write() {
                addrs[i] = spec.api_addr();
            }
        }
        self.start_node(i, &format!("replaces node {old}")).await?;
        let (entry, ids, this) = (&self.entry(i), &self.ids(), &*self);
        retry("add the learner", || async move {
            let leader = this.leader().await.map_or(fallback, |(l, _)| l);
            this.api.add_learner(&this.addr(leader), entry).await
        })
        .await?;
        retry("change the voters", || async move {
            let leader = this.leader().await.map_or(fallback, |(l, _)| l);
            this.api.change_voters(&this.addr(leader), ids).await
        })
        .await?;
        retry("remove the old node", || async move {
            let leader = this.leader().await.map_or(fallback, |(l, _)| l);
            this.api.remove_node(&this.addr(leader), old).await
        })
        .await?;
        Ok(id)
    }

    /// Stops every node (SIGTERM) and unmounts the filesystems.
    pub async fn shut_down(&mut self) {
        for s in &mut self.slots {
            if let Some(node) = s.node.take() {
                node.terminate(Duration::from_secs(5)).await;
            }
        }
        for s in &mut self.slots {
            if let Some(fs) = s.fs.as_mut() {
                fs.unmount();
            }
        }
        if self.setup.lazyfs.is_some() {
            crate::lazyfs::force_unmount(&self.setup.run_dir.join("mnt"));
        }
    }

    /// Filesystem counters of every slot, for the run directory.
    pub async fn fs_stats(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for s in &self.slots {
            if let Some(fs) = &s.fs {
                out.push((s.index, fs.stats().await.unwrap_or_else(|e| e.to_string())));
            }
        }
        out
    }
}

/// Retries a membership request for up to 30 s (leadership may be moving).
async fn retry<F, Fut>(what: &str, mut f: F) -> Result<(), ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::api::ApiError>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(ClusterError::Stuck(format!("cannot {what}: {e}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
