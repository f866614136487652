//! # sonraft-raft: how a sonraft cluster replicates its image
//!
//! What the cluster agrees on — the network image, change sets, their rules and the log
//! entry's data — is the pure crate `sonraft-model`, re-exported here as [`model`],
//! [`changeset`], [`rules`], [`command`] and [`codec`]. This crate puts it on Raft:
//!
//! - the Raft types, declared once: [`TypeConfig`] (the entry's data is
//!   [`command::Envelope`], its response [`command::Response`]), [`NodeId`], [`NodeInfo`] and
//!   the aliases [`Raft`], [`Entry`], [`LogId`] and the rest;
//! - [`transport`]: openraft's network over HTTP/1.1 (hyper), bincode bodies, cluster secret;
//! - [`durable`]: how far the local log is on disk, which gates applying and the commit index
//!   a leader tells its followers.
//!
//! A request flows: a node builds a `Command`, wraps it in an `Envelope` stamped with the
//! leader's clock, and hands it to openraft; once committed, every node's state machine calls
//! [`model::image::NetworkImage::apply_entry`] and gets the same `Response`.
#![forbid(unsafe_code)]

pub mod durable;
pub mod transport;

pub use sonraft_model::{changeset, codec, command, model, rules, son};

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's Raft id.
pub type NodeId = u64;

/// What the cluster membership records about each node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The site this node serves (one node per site).
    pub site: String,
    /// `host:port` of the node-to-node Raft listener.
    pub raft_addr: String,
    /// `host:port` of the admin HTTP API.
    pub api_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{} (api {})",
            self.site, self.raft_addr, self.api_addr
        )
    }
}

openraft::declare_raft_types!(
    /// The Raft types of a sonraft cluster, declared once.
    pub TypeConfig:
        D = command::Envelope,
        R = command::Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of a sonraft node.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// openraft's storage error for our node id.
pub type StorageError = openraft::StorageError<NodeId>;
/// Membership as stored with the state machine.
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
