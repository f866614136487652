//! All node-to-node traffic, over HTTP/1.1 on each node's Raft listener: openraft's RPCs on
//! `POST /raft`, and the other requests nodes make of each other on `POST /peer` ([`peer`]).
//!
//! A request body is a 2-byte big-endian format number followed by bincode: a [`RaftRpc`] in
//! wire format [`WIRE_FORMAT`], or a [`peer::PeerRpc`] in [`peer::PEER_FORMAT`]; a `200`
//! response body is the same prefix followed by the reply. Every request carries the cluster
//! secret in the [`SECRET_HEADER`] header; a request without the right secret gets `401` and
//! is logged, one meant for another node ([`TARGET_HEADER`]) `421`. Bytes that do not decode get `400` with the reason; the server never panics on
//! them.

mod ack_clock;
mod client;
pub mod peer;
mod peer_client;
mod peer_health;
mod server;

pub use ack_clock::AckClock;
pub use client::HttpNetworkFactory;
pub use peer::{NodeFacts, PEER_FORMAT, PeerReply, PeerRpc, PeerService, SubmitError};
pub use peer_client::{PeerCallError, PeerClient};
pub use server::{LeaderContact, RaftServer, serve};

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::{NodeId, TypeConfig};

/// The wire format this build speaks.
pub const WIRE_FORMAT: u16 = 1;
/// Header that carries the cluster secret.
pub const SECRET_HEADER: &str = "x-sonraft-cluster-secret";
/// Header that names the node a request is meant for. A node refuses (421) a request meant for
/// another id: a new node started at a lost node's address must not answer as it (it would
/// acknowledge entries and grant votes in its name). Requests without it (a release before
/// 0.2.0) are taken as meant for the receiver.
pub const TARGET_HEADER: &str = "x-sonraft-target-node";
/// The one route.
pub const RAFT_PATH: &str = "/raft";
/// Largest request body the server reads: 256 MiB (a snapshot chunk or a batch of entries).
pub const MAX_BODY: usize = 256 << 20;

/// A Raft RPC from one node to another.
#[derive(Serialize, Deserialize, Debug)]
pub enum RaftRpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`RaftRpc`].
#[derive(Serialize, Deserialize, Debug)]
pub enum RaftReply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
}

/// A body that is not a frame this build understands.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("body of {0} bytes is too short for a frame")]
    Short(usize),
    #[error("the sender speaks format {found}; this node speaks {expected}")]
    Format { found: u16, expected: u16 },
    #[error(transparent)]
    Codec(#[from] CodecError),
}

fn frame<T: Serialize>(format: u16, value: &T) -> Result<Vec<u8>, CodecError> {
    let body = codec::encode(value)?;
    let mut out = Vec::with_capacity(body.len() + 2);
    out.extend_from_slice(&format.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn unframe<T: serde::de::DeserializeOwned>(expected: u16, bytes: &[u8]) -> Result<T, FrameError> {
    let (prefix, body) = bytes
        .split_at_checked(2)
        .ok_or(FrameError::Short(bytes.len()))?;
    let found = u16::from_be_bytes([prefix[0], prefix[1]]);
    if found != expected {
        return Err(FrameError::Format { found, expected });
    }
    Ok(codec::decode(body)?)
}

/// Frames a Raft RPC or reply: wire format prefix, then bincode.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    frame(WIRE_FORMAT, value)
}

/// Unframes a Raft RPC or reply, refusing other wire formats and bad bytes.
pub fn decode_frame<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    unframe(WIRE_FORMAT, bytes)
}

/// Frames a peer request or reply: [`PEER_FORMAT`] prefix, then bincode.
pub fn encode_peer_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    frame(PEER_FORMAT, value)
}

/// Unframes a peer request or reply, refusing other formats and bad bytes.
pub fn decode_peer_frame<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    unframe(PEER_FORMAT, bytes)
}
