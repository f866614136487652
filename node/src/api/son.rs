//! The operator's SON controls: `GET`/`PUT /son/policy`, `GET /son/pending`,
//! `POST /son/pending/{id}/approve` and `/reject`, `GET /son/trials`; and the functions'
//! thresholds, `GET`/`PUT /son/tuning`.
//!
//! The policy, the pending proposals and the trials live in the replicated image (command
//! format 4, the tuning format 5, its outage, compensation and energy-saving sections format 9):
//! writes go to the leader as commands, reads are linearizable unless asked otherwise.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use sonraft_client::v1;
use sonraft_raft::changeset::Outcome;
use sonraft_raft::command::{Command, Response as Applied};
use sonraft_raft::son::{Decision, Pending, SonPolicy, Trial, TrialEnd, TrialRecord, Tuning};

use super::changesets::status_of;
use super::error::{ApiError, Params, parse_json, read_body};
use super::forward;
use super::image::{count, prepare_read};
use super::json::{outcome, param_value};
use crate::Node;
use crate::propose::ProposeError;

impl super::error::QueryKinds for v1::TrialsQuery {
    const FIELD_KINDS: &'static [(&'static str, &'static str)] = &[("limit", "bad_limit")];
}

/// Longest note an operator may attach to a decision.
const MAX_NOTE: usize = 2000;

/// Proposes `command` at the leader, forwarding the request there when this node does not lead.
async fn at_leader(
    node: &Node,
    command: Command,
    uri: &Uri,
    headers: &HeaderMap,
    method: Method,
    body: bytes::Bytes,
) -> Result<Result<Applied, Response>, ApiError> {
    if !node.is_leader() {
        return Ok(Err(forward::to_leader(
            node,
            method,
            uri,
            headers,
            Some(body),
        )
        .await));
    }
    match node.propose(&command).await {
        Ok((_, applied)) => Ok(Ok(applied)),
        Err(ProposeError::NotLeader(_)) => Ok(Err(forward::to_leader(
            node,
            method,
            uri,
            headers,
            Some(body),
        )
        .await)),
        Err(e) => Err(e.into()),
    }
}

/// Answers one SON document of the image (`pick`), after the read's consistency is proven.
async fn read_son<T: serde::Serialize>(
    node: &Node,
    q: v1::ReadQuery,
    uri: &Uri,
    headers: &HeaderMap,
    pick: impl FnOnce(&sonraft_raft::model::image::NetworkImage) -> T,
) -> Result<Response, ApiError> {
    if let Some(r) = prepare_read(node, q.consistency.unwrap_or_default(), uri, headers).await? {
        return Ok(r);
    }
    Ok(Json(node.store().with_image(pick)).into_response())
}

/// A whole SON document a `PUT` replaces: how it is checked, proposed and answered.
trait SonDocument: serde::Serialize + serde::de::DeserializeOwned + Clone {
    /// The error kind of a document that cannot hold (422).
    const INVALID: &'static str;
    fn validate(&self) -> Result<(), String>;
    /// The command that sets the document in a cluster of effective command format
    /// `effective`, or why that cluster cannot take it yet (409).
    fn command(self, effective: u16) -> Result<Command, String>;
    /// What applying the command answered, if it is this document's answer.
    fn applied(answer: Applied) -> Result<Result<(), String>, Applied>;
}

impl SonDocument for SonPolicy {
    const INVALID: &'static str = "invalid_policy";
    fn validate(&self) -> Result<(), String> {
        SonPolicy::validate(self).map_err(|e| e.to_string())
    }
    fn command(self, _effective: u16) -> Result<Command, String> {
        Ok(Command::SonPolicy(self))
    }
    fn applied(answer: Applied) -> Result<Result<(), String>, Applied> {
        match answer {
            Applied::SonPolicy(r) => Ok(r),
            other => Err(other),
        }
    }
}

impl SonDocument for Tuning {
    const INVALID: &'static str = "invalid_tuning";
    fn validate(&self) -> Result<(), String> {
        Tuning::validate(self).map_err(|e| e.to_string())
    }
    /// The format-5 command while the sections format 9 added are at their defaults, so a
    /// cluster mid-upgrade can still be tuned.
    fn command(self, effective: u16) -> Result<Command, String> {
        Command::set_tuning(self, effective).map_err(|e| e.to_string())
    }
    fn applied(answer: Applied) -> Result<Result<(), String>, Applied> {
        match answer {
            Applied::SonTuning(r) => Ok(r),
            other => Err(other),
        }
    }
}

/// Replaces a SON document with the request's: checked here first (a clear 422 without a
/// round trip), then proposed at the leader, which checks it again when it applies.
async fn replace<T: SonDocument>(
    node: &Node,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(headers, body, node.config().max_body_bytes).await?;
    let doc: T = parse_json(&bytes)?;
    let invalid =
        |reason: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, T::INVALID, reason);
    doc.validate().map_err(invalid)?;
    // What `propose` checks against too: a tuning that needs a newer format than every voter
    // applies is refused here with the reason, not proposed.
    let effective = node.store().effective_format(&node.voters());
    let command = doc
        .clone()
        .command(effective)
        .map_err(|reason| ApiError::conflict("cluster_version", reason))?;
    match at_leader(node, command, uri, headers, Method::PUT, bytes).await? {
        Err(forwarded) => Ok(forwarded),
        Ok(answer) => match T::applied(answer) {
            Ok(Ok(())) => Ok(Json(doc).into_response()),
            Ok(Err(reason)) => Err(invalid(reason)),
            Err(other) => Err(ApiError::internal(format!(
                "unexpected answer to PUT {uri}: {other:?}"
            ))),
        },
    }
}

/// `GET /son/policy`: the operator's controls of every SON function.
pub async fn policy(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::ReadQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    read_son(&node, q, &uri, &headers, |i| i.son.policy.clone()).await
}

/// `PUT /son/policy`: replaces the controls (the whole policy; absent fields take their
/// defaults).
pub async fn set_policy(
    State(node): State<Arc<Node>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    replace::<SonPolicy>(&node, &uri, &headers, body).await
}

/// `GET /son/tuning`: the SON functions' thresholds.
pub async fn tuning(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::ReadQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    read_son(&node, q, &uri, &headers, |i| i.son.tuning.clone()).await
}

/// `PUT /son/tuning`: replaces the thresholds (absent fields take their defaults; unknown
/// ones are refused, so a misspelt threshold is not silently ignored).
pub async fn set_tuning(
    State(node): State<Arc<Node>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    replace::<Tuning>(&node, &uri, &headers, body).await
}

fn pending_view(p: &Pending) -> v1::PendingProposal {
    v1::PendingProposal {
        id: p.id,
        recorded_at_ms: p.recorded_at_ms,
        expires_at_ms: p.expires_at_ms,
        origin: v1::Origin {
            node: p.change_set.origin.node,
            function: p.change_set.origin.function.name().to_string(),
        },
        reason: p.change_set.reason.clone(),
        writes: p
            .change_set
            .writes
            .iter()
            .map(|w| v1::Written {
                entity: w.entity.to_string(),
                param: w.param.name().to_string(),
                value: param_value(&w.value),
            })
            .collect(),
    }
}

/// `GET /son/pending`: the open-loop proposals waiting for an operator, oldest first.
pub async fn pending(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::ReadQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(r) = prepare_read(&node, q.consistency.unwrap_or_default(), &uri, &headers).await? {
        return Ok(r);
    }
    let list: Vec<v1::PendingProposal> = node
        .store()
        .with_image(|i| i.son.pending.values().map(pending_view).collect());
    Ok(Json(list).into_response())
}

/// `POST /son/pending/{id}/approve`.
pub async fn approve(
    node: State<Arc<Node>>,
    id: Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    decide(node, id, uri, headers, body, true).await
}

/// `POST /son/pending/{id}/reject`.
pub async fn reject(
    node: State<Arc<Node>>,
    id: Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    decide(node, id, uri, headers, body, false).await
}

async fn decide(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
    approve: bool,
) -> Result<Response, ApiError> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::bad_request(
            "bad_id",
            format!(
                "{:?} is not a proposal id (a whole number)",
                id.chars().take(40).collect::<String>()
            ),
        )
    })?;
    let bytes = read_body(&headers, body, node.config().max_body_bytes).await?;
    let request: v1::DecisionRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        v1::DecisionRequest::default()
    } else {
        parse_json(&bytes)?
    };
    if request.note.chars().count() > MAX_NOTE {
        return Err(ApiError::bad_request(
            "bad_note",
            format!("a note holds at most {MAX_NOTE} characters"),
        ));
    }
    let command = Command::Decide(Decision {
        id,
        approve,
        note: request.note,
    });
    match at_leader(&node, command, &uri, &headers, Method::POST, bytes).await? {
        Err(forwarded) => Ok(forwarded),
        Ok(Applied::ChangeSet(o)) => {
            // A rejection that took effect is what was asked for.
            let status = match &o {
                Outcome::Rejected { .. } if !approve => StatusCode::OK,
                o => status_of(o),
            };
            let body = v1::DecisionAnswer {
                id,
                outcome: outcome(&o),
            };
            Ok((status, Json(body)).into_response())
        }
        Ok(other) => Err(ApiError::internal(format!(
            "unexpected answer to a decision: {other:?}"
        ))),
    }
}

/// A trial as the API shows it (`GET /son/trials`, the `trial` events of `GET /watch`).
pub(crate) fn trial_view(t: &Trial, closed: Option<&TrialRecord>) -> v1::Trial {
    let (state, reason, restored) = match closed.map(|r| &r.end) {
        None => ("open", None, None),
        Some(TrialEnd::Kept) => ("kept", None, None),
        Some(TrialEnd::Unverified) => ("unverified", None, None),
        Some(TrialEnd::Undone { reason, restored }) => {
            ("undone", Some(reason.clone()), Some(*restored))
        }
    };
    v1::Trial {
        index: t.index,
        function: t.function.name().to_string(),
        applied_at_ms: t.applied_at_ms,
        cells: t.cells.iter().map(|c| c.to_string()).collect(),
        writes: t
            .writes
            .iter()
            .map(|(w, before)| v1::TrialWrite {
                entity: w.entity.to_string(),
                param: w.param.name().to_string(),
                before: param_value(before),
                after: param_value(&w.value),
            })
            .collect(),
        removed: t
            .removed
            .iter()
            .map(|r| format!("relation/{}/{}", r.source, r.target))
            .collect(),
        state: state.to_string(),
        reason,
        restored,
        kpis: closed
            .map(|r| {
                r.kpis
                    .iter()
                    .map(|k| v1::KpiDelta {
                        kpi: k.kpi.clone(),
                        before: k.before,
                        after: k.after,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        closed_at_ms: closed.map(|r| r.closed_at_ms),
    }
}

/// `GET /son/trials[?limit=N]`: the SON changes under verification, the N newest verified
/// changes (default 100), and the holds after undone changes.
pub async fn trials(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::TrialsQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.map_or(100, count);
    let answer = node.store().with_image(|i| v1::Trials {
        open: i.son.trials.values().map(|t| trial_view(t, None)).collect(),
        closed: i
            .son
            .journal
            .values()
            .rev()
            .take(limit)
            .map(|r| trial_view(&r.trial, Some(r)))
            .collect(),
        holds: i
            .son
            .holds
            .iter()
            .filter(|(_, until)| **until > i.log_time_ms)
            .map(|((cell, function), until)| v1::Hold {
                cell: cell.to_string(),
                function: function.name().to_string(),
                until_ms: *until,
            })
            .collect(),
    });
    Ok(Json(answer).into_response())
}
