//! `GET /watch`: the change stream, as server-sent events (README, "Admin API").
//!
//! Two kinds of event travel on it:
//! - **log events**, which carry an SSE `id`: `changeset`, one per applied or refused change set
//!   (a [`HistoryRecord`]), in log order. The id is the record's cursor `INDEX.POSITION` (its
//!   log entry, and its place among that entry's records: group commit puts many change sets in
//!   one entry). A client that reconnects with `Last-Event-ID: <id>` gets the records after
//!   it, each exactly once;
//! - **state events**, without an id, which say how things stand now rather than what happened
//!   in order: `cluster` (leader, term, members; sent first and on every change), `kpis` (the
//!   KPI summaries of the cells whose period moved, at most once a second), `trial` (a SON
//!   change's verification closed: kept, undone or unverified; a [`super::Trial`]), `caught_up` (the
//!   stream reached the node's applied state), `gap` (first, when the records asked for are no
//!   longer held), `closed` (last, when the node ends the stream: say why and where to resume).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{NodeId, Role};

/// The SSE event names of `GET /watch`.
pub mod event {
    /// A [`super::super::HistoryRecord`], with the SSE id `INDEX.POSITION`.
    pub const CHANGESET: &str = "changeset";
    /// [`super::WatchGap`].
    pub const GAP: &str = "gap";
    /// [`super::WatchCaughtUp`].
    pub const CAUGHT_UP: &str = "caught_up";
    /// [`super::WatchCluster`].
    pub const CLUSTER: &str = "cluster";
    /// [`super::WatchKpis`].
    pub const KPIS: &str = "kpis";
    /// [`super::super::Trial`]: a SON change's verification closed (`state` `kept`, `undone`
    /// or `unverified`).
    pub const TRIAL: &str = "trial";
    /// [`super::WatchClosed`].
    pub const CLOSED: &str = "closed";
}

/// The query of `GET /watch[?from_index=N][&kpis=false]`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// Start with the records of log entry N (and every later one). Without it, and without a
    /// `Last-Event-ID` header, the stream starts after the node's last applied entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_index: Option<u64>,
    /// Send `kpis` events (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kpis: Option<bool>,
}

/// `gap`: the stream was asked to start before the oldest record this node still holds (the
/// history keeps the newest `history_keep` records of the policy); the records in between, if
/// there were any, are not sent.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WatchGap {
    /// Where the stream was asked to start, `INDEX.POSITION`.
    pub asked_from: String,
    /// The log index of the oldest record held; the stream goes on from there.
    pub oldest_held: u64,
    pub detail: String,
}

/// `caught_up`: every record up to the node's applied entry at that moment was sent; what
/// follows is new.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WatchCaughtUp {
    /// The node that serves the stream.
    pub node: NodeId,
    pub applied_index: u64,
}

/// `cluster`: the cluster as the serving node sees it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WatchCluster {
    /// The node that serves the stream, and its role.
    pub node: NodeId,
    pub role: Role,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

/// `kpis`: the newest KPI summary of each cell whose period moved since the last `kpis` event
/// (every cell that has one, in the first), compactly: per cell one row of numbers in the
/// order of `fields`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WatchKpis {
    /// The names of the row's columns: [`KPI_FIELDS`].
    pub fields: Vec<String>,
    pub cells: BTreeMap<String, Vec<u64>>,
}

/// The columns of a [`WatchKpis`] row, as in `GET /image/kpis`.
pub const KPI_FIELDS: [&str; 6] = [
    "period_end_ms",
    "prb_dl_permille",
    "rrc_conn_mean",
    "thp_dl_kbps",
    "ho_att",
    "ho_succ",
];

/// `closed`: the node ends the stream. Reconnect with `Last-Event-ID: <resume_after>` (or the
/// id of the last event received) to go on without losing or repeating a record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WatchClosed {
    /// `slow_client` (the client did not take events as fast as they came: the node does not
    /// buffer without bound), `node_stopping`, or `store_error`.
    pub reason: String,
    pub detail: String,
    /// The id of the last `changeset` event sent on this stream, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_after: Option<String>,
}
