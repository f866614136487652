//! The SON controls: `GET`/`PUT /son/policy`, `GET /son/pending`,
//! `POST /son/pending/{id}/approve|reject`, `GET /son/trials`.

use serde::{Deserialize, Serialize};

use super::{Origin, Outcome, ParamValue, Written};

/// One open-loop proposal waiting for an operator (`GET /son/pending`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PendingProposal {
    /// What `ctl approve ID` / `ctl reject ID` take.
    pub id: u64,
    /// Log time it was recorded, milliseconds since the Unix epoch.
    pub recorded_at_ms: u64,
    /// Log time after which it can no longer be approved.
    pub expires_at_ms: u64,
    pub origin: Origin,
    pub reason: String,
    pub writes: Vec<Written>,
}

/// The body of `POST /son/pending/{id}/approve` and `.../reject` (optional).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// Who decides and why, for the history (at most 2000 characters).
    #[serde(default)]
    pub note: String,
}

/// The answer to a decision: the approved change set's outcome (`applied`, or `conflict` /
/// `rejected` when the network changed since), or `rejected` for a rejection.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DecisionAnswer {
    pub id: u64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// One parameter a SON change wrote, with the value it replaced.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TrialWrite {
    pub entity: String,
    pub param: String,
    pub before: ParamValue,
    pub after: ParamValue,
}

/// A KPI of the cells a change touched, before and after it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct KpiDelta {
    pub kpi: String,
    pub before: f64,
    pub after: f64,
}

/// A SON change under verification, or verified (`GET /son/trials`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Trial {
    /// The log index of the change: its id.
    pub index: u64,
    pub function: String,
    pub applied_at_ms: u64,
    pub cells: Vec<String>,
    pub writes: Vec<TrialWrite>,
    /// Relations the change removed (`relation/<source>/<target>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// `open`, `kept`, `undone` or `unverified`.
    pub state: String,
    /// For an undone change: the degraded KPI, and how many parameters were restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kpis: Vec<KpiDelta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at_ms: Option<u64>,
}

/// `GET /son/trials`: the changes under verification and the newest closed ones.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Trials {
    pub open: Vec<Trial>,
    /// Newest first.
    pub closed: Vec<Trial>,
    /// Cells a function leaves alone after an undone change: `(cell, function, until_ms)`.
    pub holds: Vec<Hold>,
}

/// A function held off a cell after its change there was undone.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub cell: String,
    pub function: String,
    /// Log time the hold ends.
    pub until_ms: u64,
}

/// The query of `GET /son/trials[?limit=N]`: at most N closed trials (default 100).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TrialsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}
