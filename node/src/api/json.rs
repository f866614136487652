//! JSON shapes of the API and their conversion to and from the replicated types.

use serde::Deserialize;
use serde_json::{Value as Json, json};
use sonraft_raft::changeset::{ChangeSet, Function, Origin, Outcome, ReadVersion, Write};
use sonraft_raft::model::image::HistoryRecord;
use sonraft_raft::model::{EntityRef, Param, Value};

/// A change set as clients send it.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ChangeSetBody {
    pub origin: OriginBody,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub read_set: Vec<ReadBody>,
    pub writes: Vec<WriteBody>,
    #[serde(default)]
    pub proposed_at_ms: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct OriginBody {
    pub function: String,
    #[serde(default)]
    pub node: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ReadBody {
    pub entity: String,
    pub version: u64,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct WriteBody {
    pub entity: String,
    pub param: String,
    pub value: Json,
}

/// Most characters of a change set's reason.
pub const MAX_REASON: usize = 2000;

/// Converts a parsed body into a change set; any problem is a reason for `invalid`.
pub fn change_set(body: ChangeSetBody, node: u64, now_ms: u64) -> Result<ChangeSet, String> {
    let function: Function = body
        .origin
        .function
        .parse()
        .map_err(|e: sonraft_raft::changeset::UnknownFunction| e.to_string())?;
    if body.reason.chars().count() > MAX_REASON {
        return Err(format!("reason is longer than {MAX_REASON} characters"));
    }
    let entity = |s: &str| s.parse::<EntityRef>().map_err(|e| e.to_string());
    let read_set = body
        .read_set
        .iter()
        .map(|r| {
            Ok(ReadVersion {
                entity: entity(&r.entity)?,
                version: r.version,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let writes = body
        .writes
        .iter()
        .map(|w| {
            let param: Param = w
                .param
                .parse()
                .map_err(|e: sonraft_raft::model::param::UnknownParam| e.to_string())?;
            Ok(Write {
                entity: entity(&w.entity)?,
                param,
                value: value(param, &w.value)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ChangeSet {
        origin: Origin {
            node: body.origin.node.unwrap_or(node),
            function,
        },
        reason: body.reason,
        read_set,
        writes,
        proposed_at_ms: body.proposed_at_ms.unwrap_or(now_ms),
    })
}

fn value(param: Param, v: &Json) -> Result<Value, String> {
    match v {
        Json::Bool(b) => Ok(Value::Bool(*b)),
        Json::String(s) if s.len() <= 64 => Ok(Value::Text(s.clone())),
        Json::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .ok_or_else(|| format!("{param} takes a whole number, got {n}")),
        other => Err(format!("{param} cannot take {other}")),
    }
}

/// A value as JSON.
pub fn value_json(v: &Value) -> Json {
    match v {
        Value::Int(i) => json!(i),
        Value::Bool(b) => json!(b),
        Value::Text(t) => json!(t),
    }
}

/// An outcome as JSON, as the API contract (README.md) gives it.
pub fn outcome_json(o: &Outcome) -> Json {
    match o {
        Outcome::Applied { index, versions } => {
            json!({"outcome": "applied", "index": index, "versions": versions})
        }
        Outcome::Conflict { current } => json!({"outcome": "conflict", "current": current}),
        Outcome::Rejected { reason } => json!({"outcome": "rejected", "reason": reason}),
        Outcome::Invalid { reason } => json!({"outcome": "invalid", "reason": reason}),
    }
}

/// A history record as JSON.
pub fn history_json(r: &HistoryRecord) -> Json {
    let writes: Vec<Json> = r
        .writes
        .iter()
        .map(|w| json!({"entity": w.entity.to_string(), "param": w.param.name(), "value": value_json(&w.value)}))
        .collect();
    json!({
        "index": r.index,
        "log_time_ms": r.log_time_ms,
        "proposed_at_ms": r.proposed_at_ms,
        "origin": {"node": r.origin.node, "function": r.origin.function.name()},
        "reason": r.reason,
        "writes": writes,
        "outcome": outcome_json(&r.outcome),
    })
}
