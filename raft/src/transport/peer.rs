//! Node-to-node requests other than Raft's own, on the Raft listener (`POST /peer`).
//!
//! Everything one node asks of another travels here, never over the operators' admin API: it
//! needs the cluster secret (not the operator token), and its bodies are framed like Raft RPCs
//! with a format number of their own ([`PEER_FORMAT`], golden fixture `peer-v1.hex`).
//!
//! - [`PeerRpc::Facts`]: who the node is, its release and election timing, the membership it
//!   knows; how a leader learns how long each follower promises not to vote for another
//!   candidate (its read lease may not outlast that promise), how a membership change checks
//!   that a new node answers, and how a removed node learns that it was removed;
//! - [`PeerRpc::Submit`]: a command for the leader to commit (SON proposals, KPI summaries and
//!   release adverts of a follower);
//! - [`PeerRpc::Elect`]: campaign until this node leads (the target side of a hand-over).

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::NodeId;
use crate::command::Response;

/// The format of peer request and reply bodies this build speaks.
pub const PEER_FORMAT: u16 = 1;
/// The route on the Raft listener.
pub const PEER_PATH: &str = "/peer";

/// What a node tells its peers about itself.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub id: NodeId,
    pub release: String,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// After this node accepts an AppendEntries from a leader, it votes for no other
    /// candidate, itself included, for at least this long (openraft's vote lease, and the
    /// silence after which it forces an election when the leader's port refuses).
    pub vote_promise_ms: u64,
    /// The membership this node knows: the index of its log entry, and the voters and learners.
    pub membership_index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

/// A request from one node to another.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum PeerRpc {
    Facts,
    /// Commit a command, if this node leads: `command` is the bincode [`crate::command::Command`]
    /// of command format `format` (a leader refuses formats it does not know).
    Submit {
        format: u16,
        #[serde(with = "serde_bytes")]
        command: Vec<u8>,
    },
    /// Campaign until this node leads or `timeout_ms` passes.
    Elect {
        timeout_ms: u64,
    },
}

/// Why a submitted command was not committed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// Not appended: nothing of it was applied.
    #[error("node does not lead (leader: {0:?})")]
    NotLeader(Option<NodeId>),
    #[error(
        "command format {format} is newer than the cluster's effective format {effective}; upgrade every voter first"
    )]
    FormatTooNew { format: u16, effective: u16 },
    /// Appended, but no outcome within `after_ms`: it may or may not be applied.
    #[error("no outcome within {after_ms} ms: the command may or may not have been applied")]
    OutcomeUnknown { after_ms: u64 },
    #[error("{0}")]
    Failed(String),
}

/// The answer to a [`PeerRpc`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum PeerReply {
    Facts(NodeFacts),
    /// The log index and applied response of a submitted command.
    Submitted(Result<(u64, Response), SubmitError>),
    /// Whether this node leads now.
    Elected(bool),
    /// The request was understood but refused, and why.
    Refused(String),
}

/// What a node answers peer requests with (implemented by the node, which knows its state).
pub trait PeerService: Send + Sync + 'static {
    fn handle(&self, rpc: PeerRpc) -> Pin<Box<dyn Future<Output = PeerReply> + Send + '_>>;
}
