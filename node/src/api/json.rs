//! The API's change sets, outcomes and history records ([`v1`]) to and from the replicated
//! types.

use serde_json::Value as Json;
use sonraft_client::v1;
use sonraft_raft::changeset::{ChangeSet, Function, Origin, Outcome, ReadVersion, Write};
use sonraft_raft::model::image::HistoryRecord;
use sonraft_raft::model::{EntityRef, Param, Value};
use sonraft_storage::HistoryCursor;

/// Most characters of a change set's reason.
pub const MAX_REASON: usize = 2000;

/// Converts a parsed body into a change set; any problem is a reason for `invalid`.
pub fn change_set(body: v1::ChangeSetRequest, node: u64, now_ms: u64) -> Result<ChangeSet, String> {
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

/// A parameter value as the API shows it.
pub fn param_value(v: &Value) -> v1::ParamValue {
    match v {
        Value::Int(i) => v1::ParamValue::Int(*i),
        Value::Bool(b) => v1::ParamValue::Bool(*b),
        Value::Text(t) => v1::ParamValue::Text(t.clone()),
    }
}

/// An outcome as the API shows it.
pub fn outcome(o: &Outcome) -> v1::Outcome {
    match o.clone() {
        Outcome::Applied { index, versions } => v1::Outcome::Applied {
            index: Some(index),
            versions,
        },
        Outcome::Conflict { current } => v1::Outcome::Conflict { current },
        Outcome::Rejected { reason } => v1::Outcome::Rejected { reason },
        Outcome::Invalid { reason } => v1::Outcome::Invalid { reason },
        Outcome::Pending { id } => v1::Outcome::Pending { id },
    }
}

/// A history record as the API shows it, with its cursor.
pub fn history_record(cursor: HistoryCursor, r: &HistoryRecord) -> v1::HistoryRecord {
    v1::HistoryRecord {
        index: r.index,
        log_time_ms: r.log_time_ms,
        proposed_at_ms: r.proposed_at_ms,
        origin: v1::Origin {
            node: r.origin.node,
            function: r.origin.function.name().to_string(),
        },
        reason: r.reason.clone(),
        writes: r
            .writes
            .iter()
            .map(|w| v1::Written {
                entity: w.entity.to_string(),
                param: w.param.name().to_string(),
                value: param_value(&w.value),
            })
            .collect(),
        outcome: outcome(&r.outcome),
        cursor: cursor.to_string(),
    }
}
