//! The admin API's contract, version 1: the JSON bodies, query parameters and answers of every
//! route whose shape is the API's own (README, "Admin API").
//!
//! The node builds these types to answer; `ctl`, the rolling-upgrade checks, the benchmarks and
//! the test kit read answers into them. `client/tests/fixtures/v1/` pins each one as golden
//! JSON (`client/tests/golden_v1.rs`): a renamed, retyped or dropped field fails the tests.
//!
//! Compatibility, because a rolling upgrade talks to older releases and older clients talk to
//! newer nodes:
//! - answers ignore fields they do not know (no `deny_unknown_fields` on an answer);
//! - a field a release added is an `Option` with `#[serde(default)]`, so that an older node's
//!   answer still reads (`Status::now_ms`);
//! - request bodies are strict (`deny_unknown_fields`): a misspelt field is a 400, not ignored.
//!
//! The image's own entities (`GET /image/sites`, `/image/cells`, `/image/relations` answer them)
//! are the replicated model's [`Site`], [`Cell`] and [`Relation`], re-exported from
//! `sonraft-model` (pure data, no Raft stack): the node serializes the applied image's entities
//! in place, without copying them into look-alike types, and their golden JSON pins them like
//! the rest, as are the body of `POST /image/import` ([`ImageImport`], with its [`Policy`]) and
//! the SON policy ([`SonPolicy`]). Not here: `GET /metrics` (Prometheus text) and `GET /backup`
//! (the snapshot file format).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

// ---------------------------------------------------------------------------------------------
// Image entities

/// A site, a cell and a neighbour relation of the image, and the values their fields take.
/// `last_change` records, per parameter, which function last wrote it, when and in which
/// log entry.
pub use sonraft_model::changeset::Function;
/// A cell's replicated KPI summary of its latest counter period (`GET /image/kpis`).
pub use sonraft_model::model::KpiSummary;
pub use sonraft_model::model::{
    AdminState, Cell, EnergySaving, Param, Rat, Relation, RelationOrigin, Site, Stamp, TiltBox,
};

mod son;
pub use son::*;
mod watch;
/// The body of `POST /image/import`: sites, cells and relations to upsert, and the coordination
/// policy to set, if any.
pub use sonraft_model::command::ImageImport;
pub use sonraft_model::model::Policy;
/// The operator's controls of the SON functions (`GET`/`PUT /son/policy`) and their thresholds
/// (`GET`/`PUT /son/tuning`).
pub use sonraft_model::son::{
    AnrTuning, AvailabilityTuning, CompensationTuning, Controls, EnergySavingTuning, Exclusions,
    MlbTuning, Mode, MroTuning, OutageTuning, PciTuning, SonPolicy, Tuning, TuningV1, Verification,
    Window,
};
pub use watch::*;

/// A node's id in the cluster (1 ..= 2^53, see `POST /cluster/init`).
pub type NodeId = u64;

// ---------------------------------------------------------------------------------------------
// Errors

/// The body of every error answer (4xx, 5xx): `{"error": "<kind>", "detail": "<text>"}`.
/// Outcomes of a change set (`conflict`, `rejected`, `invalid`) are [`ChangeSetAnswer`]s instead.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// A stable machine-readable kind (`bad_limit`, `not_leader`, `outcome_unknown`, ...).
    pub error: String,
    /// What went wrong and how to fix it, for a person.
    pub detail: String,
}

// ---------------------------------------------------------------------------------------------
// Health, readiness and status

/// `GET /health`: the process is up.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz`: 200 with `ready: true`, or 503 with `ready: false` and the reason.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// The leader this node knows (when ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<NodeId>,
    /// The log index this node has applied (when ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_index: Option<u64>,
    /// Why it is not ready (when not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A node's role as `/status` reports it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Candidate,
    Follower,
    /// A member that is not a voter (or not a member yet).
    Learner,
    Shutdown,
    /// A role of a newer release.
    #[serde(other)]
    Unknown,
}

/// Where a node listens, as it advertises it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    /// `host:port` of its Raft listener (node-to-node traffic).
    pub raft_addr: String,
    /// `host:port` of its admin API.
    pub api_addr: String,
}

/// A member of the cluster as the membership records it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MemberAddresses {
    /// The site it runs at.
    pub site: String,
    /// `host:port` of its Raft listener.
    pub raft_addr: String,
    /// `host:port` of its admin API.
    pub api_addr: String,
}

/// The release a node advertised to the cluster (replicated).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedRelease {
    /// Its release, e.g. `0.2.0`.
    pub release: String,
    /// The newest command format it can apply.
    pub max_command_format: u16,
}

/// `GET /status`: this node's view of itself and the cluster.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub site: String,
    /// Where this node listens (as advertised).
    #[serde(rename = "self")]
    pub this: Addresses,
    pub role: Role,
    /// The current Raft term.
    pub term: u64,
    /// The leader this node knows, if any.
    pub leader_id: Option<NodeId>,
    /// The last log index this node holds (0: none).
    pub last_log_index: u64,
    /// The last log index it applied (0: none).
    pub last_applied_index: u64,
    /// The log is purged up to this index (0: nothing purged).
    pub purged_index: u64,
    /// The last index its newest snapshot covers (0: no snapshot).
    pub snapshot_index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Every member (voters and learners) by id.
    pub nodes: BTreeMap<NodeId, MemberAddresses>,
    /// This node's release.
    pub version: String,
    /// The data-directory format it writes.
    pub data_format: u32,
    /// The newest command format it can apply.
    pub command_format: u16,
    /// The cluster's effective command format: the lowest any voter advertised.
    pub effective_command_format: u16,
    /// What each node advertised, by id.
    pub releases: BTreeMap<NodeId, AdvertisedRelease>,
    /// Milliseconds since a quorum last acknowledged this node as leader (leader only).
    pub millis_since_quorum_ack: Option<u64>,
    /// This node's wall clock, milliseconds since the Unix epoch (log times of the change sets
    /// it leads come from it). Absent from 0.1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now_ms: Option<u64>,
    /// Applied batches not yet in this node's checkpoint in sled: a stop now waits for them
    /// (a minute and a half after a national import). Absent before this release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_pending: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Cluster health

/// `?max_lag=N` of `GET /cluster/health`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterHealthQuery {
    /// A voter trailing the leader by more entries is a problem (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag: Option<u64>,
}

/// A member's role in `/cluster/health`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Voter,
    Learner,
}

/// One member as the answering node sees it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MemberHealth {
    pub id: NodeId,
    pub site: String,
    pub raft_addr: String,
    pub api_addr: String,
    pub role: MemberRole,
    /// Whether it answered its last facts request (a node always answers itself).
    pub answers: bool,
    /// Why it did not, if it did not.
    #[serde(default)]
    pub error: Option<String>,
    /// The release it runs, when it answered.
    #[serde(default)]
    pub release: Option<String>,
    /// How many log entries it trails the leader by (known on the leader only).
    #[serde(default)]
    pub lag: Option<u64>,
}

/// The kind of a problem in `/cluster/health`, so that a client can relax one rule and keep the
/// others.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// No leader is known.
    NoLeader,
    /// The cluster cannot lose another voter and keep taking writes.
    FaultTolerance,
    /// A member does not answer.
    Unreachable,
    /// A voter trails the leader by more than the bound asked for.
    Lag,
    /// A kind of a newer release.
    #[serde(other)]
    Other,
}

/// What is wrong.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub detail: String,
}

/// `GET /cluster/health`: the cluster from the answering node's position (the leader's, when
/// one is known).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ClusterHealth {
    /// The node that answers.
    pub from: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub members: Vec<MemberHealth>,
    /// How many more voters may fail with a quorum left (a majority of each configuration
    /// during a membership change), counting only the voters that answer now.
    pub fault_tolerance: u64,
    pub problems: Vec<Problem>,
    /// True when there is a leader, the cluster tolerates a failure, every member answers and
    /// no voter trails by more than the lag bound asked for.
    pub healthy: bool,
}

// ---------------------------------------------------------------------------------------------
// Membership

/// A node to make a member: the body of `POST /cluster/learners`, and an item of
/// [`InitRequest`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub id: NodeId,
    pub site: String,
    /// `host:port` its Raft listener answers on (as that id).
    pub raft_addr: String,
    /// `host:port` of its admin API.
    pub api_addr: String,
}

/// `POST /cluster/init`: make these nodes the voters of a new cluster.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InitRequest {
    pub nodes: Vec<NodeSpec>,
}

/// The answer to `POST /cluster/init`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Initialized {
    /// Always true.
    pub initialized: bool,
    pub voters: Vec<NodeId>,
}

/// `?force=true` of the membership routes: do a change that would otherwise be refused.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ForceQuery {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// The answer to `POST /cluster/learners`: the node is a learner and has caught up.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LearnerAdded {
    pub learner: NodeId,
}

/// `POST /cluster/voters`: the new voter set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VotersRequest {
    pub ids: Vec<NodeId>,
}

/// The answer to `POST /cluster/voters`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct VotersChanged {
    pub voters: Vec<NodeId>,
}

/// The answer to `DELETE /cluster/nodes/{id}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NodeRemoved {
    pub removed: NodeId,
}

/// `POST /cluster/leader`: hand leadership to this voter.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LeaderRequest {
    pub id: NodeId,
}

/// The answer to `POST /cluster/leader`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LeaderHandedOver {
    /// The new leader.
    pub leader: NodeId,
    /// How long the hand-over took, in milliseconds.
    pub took_ms: u64,
}

// ---------------------------------------------------------------------------------------------
// Reads of the image

/// How fresh a read must be (`?consistency=`; absent means linearizable).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// The answering node's applied state, possibly behind the leader.
    Local,
    /// The leader's applied state, without confirming it still leads.
    Leader,
    /// Confirmed with a quorum: reflects every write acknowledged before the read.
    #[default]
    Linearizable,
}

impl Consistency {
    /// The query value: `local`, `leader` or `linearizable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Local => "local",
            Consistency::Leader => "leader",
            Consistency::Linearizable => "linearizable",
        }
    }
}

/// The query of `GET /image/sites` and `GET /image/cells/{id}`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
}

/// The query of `GET /image/cells[?site=S][&limit=N]`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CellsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    /// Only the cells of this site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// At most this many cells (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// The query of `GET /image/relations[?source=CELL][&limit=N]`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RelationsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    /// Only the relations from this cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// At most this many relations (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// `GET /image/digest`: the answering node's last applied entry and a digest of its whole
/// applied state (replicas at the same entry must agree).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// The last log index applied (0: none).
    pub applied_index: u64,
    /// That entry's term (0: none).
    pub applied_term: u64,
    /// 16 hex digits.
    pub digest: String,
    /// How many cells the image holds.
    pub cells: u64,
    /// How many relations.
    pub relations: u64,
    /// How many history records are kept.
    pub history_records: u64,
}

// ---------------------------------------------------------------------------------------------
// Change sets and the history

/// A parameter's value: a whole number, a flag or a short text, as the parameter takes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Text(String),
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// Who proposes a change set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OriginSpec {
    /// `operator` or a SON function (`mro`, `anr`, `ccO`, ...: README, "Antennas, SON").
    pub function: String,
    /// The node it was proposed at (default: the node that receives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
}

/// An entity's version the change set was computed from.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReadVersion {
    /// `cell/<id>` or `relation/<source>/<target>`.
    pub entity: String,
    pub version: u64,
}

/// One parameter a change set writes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WriteSpec {
    /// `cell/<id>` or `relation/<source>/<target>`.
    pub entity: String,
    /// `pci`, `electrical_tilt` (tenths of a degree), `max_tx_power_dbm`, `hysteresis` (half
    /// dB), `time_to_trigger_ms`, `a3_offset` (half dB), `admin_state`, `energy_saving`; on
    /// relations `cio_db`, `ho_allowed`, `exists` (`false` prunes).
    pub param: String,
    /// Kept as JSON as sent: a value the parameter cannot take is the change set's `invalid`
    /// outcome (422), not a malformed body.
    pub value: serde_json::Value,
}

/// `POST /image/changesets`: a change set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChangeSetRequest {
    pub origin: OriginSpec,
    /// Why, for the history (at most 2000 characters).
    #[serde(default)]
    pub reason: String,
    /// What it was computed from: stale versions make it a `conflict`.
    #[serde(default)]
    pub read_set: Vec<ReadVersion>,
    pub writes: Vec<WriteSpec>,
    /// When it was computed, milliseconds since the Unix epoch (default: when received).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_at_ms: Option<u64>,
}

/// `?dry_run=true` of `POST /image/changesets` (a bare `?dry_run` is true too).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProposeQuery {
    /// Validate against the leader's image without committing.
    #[serde(
        default,
        deserialize_with = "bare_flag",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub dry_run: bool,
}

/// `true`, `false`, or empty (a bare `?flag`) for true; a JSON `true` or `false` too, so that
/// the query reads back from its golden JSON.
fn bare_flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Flag::deserialize(d)? {
        Flag::Bool(b) => Ok(b),
        Flag::Text(text) => match text.as_str() {
            "true" | "" => Ok(true),
            "false" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is not a flag; use true or false"
            ))),
        },
    }
}

/// What became of a change set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    /// Every write landed (200).
    Applied {
        /// The log index it was applied at (absent for a dry run).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<u64>,
        /// The new version of each written entity.
        versions: BTreeMap<String, u64>,
    },
    /// A read version was stale (409): the current version of each entity read (`null`: it no
    /// longer exists). Re-read and recompute.
    Conflict {
        current: BTreeMap<String, Option<u64>>,
    },
    /// Coordination refused it (409): cool-down, priority, function domain, removal not allowed.
    Rejected { reason: String },
    /// An illegal value, a step over the limit, an unknown entity or parameter (422).
    Invalid { reason: String },
    /// The function runs open loop: the change set passed every rule and waits as pending
    /// proposal `id` for an operator to approve or reject it (202).
    Pending { id: u64 },
}

impl Outcome {
    /// `applied`, `conflict`, `rejected`, `invalid` or `pending`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Conflict { .. } => "conflict",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Invalid { .. } => "invalid",
            Outcome::Pending { .. } => "pending",
        }
    }
}

/// The answer to `POST /image/changesets`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ChangeSetAnswer {
    #[serde(flatten)]
    pub outcome: Outcome,
    /// True when it was only validated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// The trial the change opened, when a SON function's change is now under verification
    /// (`GET /son/trials`). Its id is the entry's `index` only when it was the entry's one SON
    /// change: from command format 10 several in one entry each open a trial of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<u64>,
}

/// The query of `GET /image/history[?limit=N][&before=CURSOR]`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// At most this many records (default 100, at most 100,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Only records older than this cursor: a record's `cursor` (`INDEX.POSITION`) continues
    /// after it; a bare `INDEX` means the entries below `INDEX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    /// Only records that write this cell or a relation from or to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<String>,
    /// Only records of this origin function (`operator`, `load_balancing`, ..., `import`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Only records with this outcome (`applied`, `conflict`, `rejected`, `invalid`,
    /// `pending`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Only records of this log time or later (milliseconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
}

impl HistoryQuery {
    /// Whether any filter is set.
    pub fn filtered(&self) -> bool {
        self.cell.is_some()
            || self.function.is_some()
            || self.outcome.is_some()
            || self.since_ms.is_some()
    }

    /// Whether `r` passes the filters (all of them).
    pub fn admits(&self, r: &HistoryRecord) -> bool {
        let cell_ok = self.cell.as_deref().is_none_or(|cell| {
            r.writes.iter().any(|w| {
                let mut parts = w.entity.split('/');
                let kind = parts.next();
                match kind {
                    Some("cell") => parts.next() == Some(cell),
                    Some("relation") => parts.any(|p| p == cell),
                    _ => false,
                }
            })
        });
        cell_ok
            && self
                .function
                .as_deref()
                .is_none_or(|f| r.origin.function == f)
            && self
                .outcome
                .as_deref()
                .is_none_or(|o| r.outcome.kind() == o)
            && self.since_ms.is_none_or(|t| r.log_time_ms >= t)
    }
}

/// Who proposed a recorded change set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub node: NodeId,
    pub function: String,
}

/// One write of a recorded change set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub entity: String,
    pub param: String,
    pub value: ParamValue,
}

/// One record of `GET /image/history`: a change set, applied or refused, or an import.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HistoryRecord {
    /// The log entry it was in.
    pub index: u64,
    /// The log time the rules judged it by, milliseconds since the Unix epoch.
    pub log_time_ms: u64,
    /// When its proposer computed it, milliseconds since the Unix epoch.
    pub proposed_at_ms: u64,
    pub origin: Origin,
    pub reason: String,
    pub writes: Vec<Written>,
    pub outcome: Outcome,
    /// `INDEX.POSITION`: pass the last record's as `before` for the next page.
    pub cursor: String,
}

// ---------------------------------------------------------------------------------------------
// Imports

/// The media type of a streamed `POST /image/import`: one [`ImportLine`] per line (JSON lines).
pub const IMPORT_LINES: &str = "application/x-ndjson";

/// One line of a streamed import: a site, a cell, a relation, or the coordination policy, each
/// as `{"cell": {...}}`. Lines come in any order; an import of any size streams this way (the
/// whole-body form, [`ImageImport`], is held in memory at once and bounded by the node's
/// `max_import_bytes`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ImportLine {
    Site(Site),
    Cell(Cell),
    Relation(Relation),
    Policy(Policy),
}

impl ImportLine {
    /// Adds this line's entity (or policy) to `import`.
    pub fn add_to(self, import: &mut ImageImport) {
        match self {
            ImportLine::Site(s) => import.sites.push(s),
            ImportLine::Cell(c) => import.cells.push(c),
            ImportLine::Relation(r) => import.relations.push(r),
            ImportLine::Policy(p) => import.policy = Some(p),
        }
    }
}

/// `?dry_run=true&reason=R` of `POST /image/import`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Answer what it would change in the leader's image, applying nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Why, for the history (default `import`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How many entities of one kind an import creates, updates and leaves as they are.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCounts {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// A parameter value of an existing entity that an import replaces.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ParamChange {
    pub entity: String,
    pub param: String,
    pub from: ParamValue,
    pub to: ParamValue,
}

/// What an import changes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ImportChanges {
    pub sites: KindCounts,
    pub cells: KindCounts,
    pub relations: KindCounts,
    pub policy_changed: bool,
    /// How many parameter values it replaces in all.
    pub changed_params: u64,
    /// The replaced values, up to a bound (dry runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<ParamChange>>,
    /// How many of them `changes` lists (dry runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes_listed: Option<u64>,
}

/// How many entities of each kind an import carried.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportCounts {
    pub sites: u64,
    pub cells: u64,
    pub relations: u64,
}

/// The answer to a dry run of `POST /image/import`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ImportDryRun {
    /// Always true.
    pub dry_run: bool,
    /// Whether the import would be applied.
    pub valid: bool,
    /// What it would change (when valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_change: Option<ImportChanges>,
    /// Why it would be refused (when not valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to an applied `POST /image/import`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub imported: ImportCounts,
    /// The log index it was applied at.
    pub index: u64,
    /// What it changed (absent while a voter runs a release before command format 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<ImportChanges>,
}

/// The answer to `POST /image/import`: a dry run's, or an applied import's.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum ImportAnswer {
    DryRun(ImportDryRun),
    Imported(Imported),
}

// ---------------------------------------------------------------------------------------------
// Operations

/// The answer to `POST /snapshot` (202).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SnapshotStarted {
    /// Always `started`.
    pub snapshot: String,
    /// The last applied index when it was asked for.
    pub up_to_index: u64,
}

/// `?limit=N` of `GET /antennas`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AntennasQuery {
    /// At most this many sessions listed (default 1000; the summary counts them all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// Latencies from a cell's change being applied to its antenna's acknowledgement, in
/// milliseconds (nearest-rank quantiles over the recent ones; 0 when there is none).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Latencies {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: Option<f64>,
}

/// The summary of `GET /antennas`; a node without antennas answers only `sessions: 0`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct AntennasSummary {
    /// Cells served by a session (a base station's session serves several).
    pub sessions: u64,
    /// Connections held: one per base station, or per cell with `--antenna-sessions cell`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    /// Of them, connected now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<u64>,
    /// Of them, whose antenna's configuration equals the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync: Option<u64>,
    /// Of them, whose antenna acknowledged other values (a re-push is scheduled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged: Option<u64>,
    /// Counter reports received since the node started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<u64>,
    /// Counter values received since the node started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter_values: Option<u64>,
    /// Reports that arrived after their period was summarised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_reports: Option<u64>,
    /// From a counter period's end (at the antennas) until the change sets the SON functions
    /// proposed for it were committed and acknowledged by the antennas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_to_ack_ms: Option<Latencies>,
    /// The same from the moment this node closed the period (every report in, or its grace
    /// passed): without the antennas' own delay in reporting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_to_ack_ms: Option<Latencies>,
    /// Configuration pushes waiting for their antenna's acknowledgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_acks: Option<u64>,
}

/// One antenna session.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct AntennaSession {
    pub cell: String,
    pub connected: bool,
    /// Connections made since the node started.
    pub connects: u32,
    /// Connections that failed or broke.
    pub failures: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Counter reports received.
    pub reports: u64,
    /// End of the last reported period, milliseconds since the Unix epoch (0: none yet).
    pub last_period_end_ms: u64,
    /// How long ago that was, in milliseconds (none before the first report).
    #[serde(default)]
    pub lag_ms: Option<u64>,
    /// Configurations pushed to the antenna.
    pub pushes: u64,
    /// Configurations it acknowledged.
    pub acks: u64,
    /// It acknowledged values that differ from the image; a re-push is scheduled.
    pub diverged: bool,
    /// Its configuration equals the image's.
    pub in_sync: bool,
    /// The log index of the image its acknowledged configuration was built from.
    pub acked_index: u64,
    /// The control epoch the session speaks with (its cell site's, see `GET /control`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Why the antenna refused this node's epoch: another node controls the cell now, and this
    /// session stays idle until the image gives this node a newer epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced: Option<String>,
    /// The base station whose session carries the cell (none for a per-cell session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
}

/// `GET /antennas`: this node's antenna sessions.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Antennas {
    pub site: String,
    /// The antenna endpoints it was given (`--antennas`).
    pub antenna_addresses: Vec<String>,
    pub summary: AntennasSummary,
    /// Up to `limit` sessions, by cell.
    pub sessions: Vec<AntennaSession>,
    /// The PM directory the counters come from instead of the sessions' reports (`--pm-dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pm_dir: Option<PmDirStatus>,
    /// Whether this node may push to its antennas now (see `GET /control`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<AntennaControl>,
}

/// A node's hold on its antennas, in `GET /antennas`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct AntennaControl {
    /// The node can prove it belongs to the majority, so it pushes configuration.
    pub lease: bool,
    /// Why it cannot, when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_lost: Option<String>,
    /// Cell sites (base stations) this node's site controls.
    pub cell_sites: u64,
    /// Of them, taken over from another site.
    pub taken_over: u64,
    /// Sessions the antenna fenced off (another node controls their cell now).
    pub fenced_sessions: u64,
}

/// `GET /control`: which sonraft site controls the cell sites' antennas.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ControlSummary {
    /// Per sonraft site, what it controls.
    pub sites: BTreeMap<String, SiteControl>,
    /// Cell sites controlled by another site than their home.
    pub away_from_home: u64,
    /// Up to 1,000 of them.
    pub moved: Vec<MovedCellSite>,
}

/// What one sonraft site controls.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct SiteControl {
    pub cell_sites: u64,
    /// Of them, taken over from another site.
    pub taken_over: u64,
}

/// A cell site controlled away from its home.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct MovedCellSite {
    pub cell_site: String,
    pub home: String,
    pub controller: String,
    /// The fencing epoch: the log index of the move.
    pub epoch: u64,
    /// Log time of the move, milliseconds since the Unix epoch.
    pub since_ms: u64,
}

/// `POST /control/hand-back`: give a site's cell sites back to it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct HandBackRequest {
    pub site: String,
}

/// What a hand-back did.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct HandBackOutcome {
    pub moved: u64,
    /// Moves refused because control moved meanwhile (each with its reason).
    pub refused: Vec<String>,
}

/// What a node took from its PM directory (`--pm-dir`) since it started.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PmDirStatus {
    pub dir: String,
    /// Measurement files read and taken.
    pub files_ingested: u64,
    /// The newest file taken: files whose names sort at or before it are not read again.
    #[serde(default)]
    pub newest_ingested: Option<String>,
    /// Reports of this node's cells taken from them.
    pub reports: u64,
    /// Reports of cells other sites own, skipped.
    pub foreign_reports: u64,
    /// Reports of periods this node had already closed, not used.
    pub late_reports: u64,
    /// Files refused and still in the directory, newest first (at most 100).
    pub bad_files: Vec<BadPmFile>,
}

/// A measurement file a node refused, and why (file, line, what).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BadPmFile {
    pub file: String,
    pub error: String,
}
