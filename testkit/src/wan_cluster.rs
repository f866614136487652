//! A [`LocalCluster`] whose nodes reach each other only across [`WanLink`]s: each node
//! listens for Raft on its own loopback port and advertises its link's address instead, so
//! every Raft RPC and peer request, and its answer, crosses one link (one one-way delay each
//! way). The admin API is not behind a link: clients reach every node directly.
//!
//! One link per node (in front of its Raft listener) rather than one per pair of nodes: a
//! node has a single Raft address that every peer dials, and with the same delay on every
//! path the two are the same network.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use anyhow::Context;

use crate::local_cluster::{LocalCluster, NodeProc, client};
use crate::wan::{LinkSpec, WanLink};

/// A cluster behind WAN links; dropping it stops the nodes, then the links.
pub struct WanCluster {
    pub cluster: LocalCluster,
    /// Link `i` is in front of `cluster.nodes[i]`'s Raft listener.
    pub links: Vec<WanLink>,
    /// Where node `i` listens for Raft itself, behind its link.
    listens: Vec<String>,
}

/// A loopback port nothing listens on now (the node binds it a moment later).
fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?)
}

impl WanCluster {
    /// Starts `n` nodes of `binary` under `dir` with `extra` flags (`--timing wan`, say),
    /// each behind a link of `spec`, makes them the voters and waits until every node is
    /// ready.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        n: u64,
        extra: &[String],
        spec: LinkSpec,
    ) -> anyhow::Result<WanCluster> {
        let mut nodes = Vec::new();
        let mut links = Vec::new();
        let mut listens = Vec::new();
        for id in 1..=n {
            let listen = free_port()?;
            let link = WanLink::start(listen, spec, id).context("cannot start a WAN link")?;
            let mut flags = extra.to_vec();
            flags.extend(["--advertise-raft-addr".into(), link.addr().to_string()]);
            nodes.push(NodeProc::start(
                binary,
                id,
                &dir.join(format!("node{id}")),
                &listen.to_string(),
                "127.0.0.1:0",
                &flags,
            )?);
            links.push(link);
            listens.push(listen);
        }
        // `NodeProc::raft` is what the cluster is told: the link, from addresses.json.
        let cluster = LocalCluster::init(dir, nodes, client()).await?;
        Ok(WanCluster {
            cluster,
            links,
            listens: listens.iter().map(ToString::to_string).collect(),
        })
    }

    /// A function that starts a stopped node of this cluster again behind its link (a plain
    /// [`NodeProc::restart`] would listen on the link's address, which it learnt from the
    /// node as the address it advertises).
    pub fn restarter(&self) -> impl Fn(&mut NodeProc) -> anyhow::Result<()> + use<> {
        let listens = self.listens.clone();
        move |node: &mut NodeProc| {
            let i = usize::try_from(node.id.saturating_sub(1)).unwrap_or(usize::MAX);
            let listen = listens
                .get(i)
                .with_context(|| format!("node {} is not of this cluster", node.id))?;
            let advertised = std::mem::replace(&mut node.raft, listen.clone());
            let restarted = node.restart();
            if restarted.is_err() {
                node.raft = advertised;
            }
            restarted
        }
    }
}

impl Drop for WanCluster {
    fn drop(&mut self) {
        for node in &mut self.cluster.nodes {
            node.kill9();
        }
    }
}
