//! `POST /image/changesets` (with `?dry_run=true`) and `GET /image/history`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sonraft_raft::changeset::Outcome;
use sonraft_storage::{BadCursor, HistoryCursor, read};

use super::error::{ApiError, Params, parse_json, read_body};
use super::forward;
use super::image::{Consistency, limit_from_query, prepare_read};
use super::json::{ChangeSetBody, change_set, history_json, outcome_json};
use crate::Node;
use crate::propose::{ProposeError, now_ms};

/// The HTTP status of an outcome: 200 applied, 409 conflict or rejected, 422 invalid.
pub fn status_of(o: &Outcome) -> StatusCode {
    match o {
        Outcome::Applied { .. } => StatusCode::OK,
        Outcome::Conflict { .. } | Outcome::Rejected { .. } => StatusCode::CONFLICT,
        Outcome::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

fn answer(o: &Outcome, dry_run: bool) -> Response {
    metrics::counter!("sonraft_proposals_total", "outcome" => o.kind(), "dry_run" => if dry_run { "true" } else { "false" }).increment(1);
    let mut body = outcome_json(o);
    if dry_run {
        body["dry_run"] = json!(true);
        if let Some(obj) = body.as_object_mut() {
            obj.remove("index");
        }
    }
    (status_of(o), Json(body)).into_response()
}

/// The query of `POST /image/changesets[?dry_run=true]`, percent-decoded by [`Params`]; the
/// value stays text so that a bad one is a 400 `bad_dry_run`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ProposeParams {
    dry_run: Option<String>,
}

/// `POST /image/changesets`: propose (or with `dry_run=true`, only validate) a change set.
pub async fn propose(
    State(node): State<Arc<Node>>,
    Params(q): Params<ProposeParams>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config.max_body_bytes).await?;
    let parsed: ChangeSetBody = parse_json(&bytes)?;
    // A bare `?dry_run` asks for a dry run too.
    let dry_run = match q.dry_run.as_deref() {
        None | Some("false") => false,
        Some("true") | Some("") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_dry_run",
                format!("dry_run={other:?}; use true or false"),
            ));
        }
    };
    let origin_node = headers
        .get(forward::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(node.id);
    let cs = match change_set(parsed, origin_node, now_ms()) {
        Ok(cs) => cs,
        Err(reason) => return Ok(answer(&Outcome::Invalid { reason }, dry_run)),
    };
    if !node.is_leader() {
        return Ok(forward::to_leader(&node, Method::POST, &uri, &headers, Some(bytes)).await);
    }
    if dry_run {
        if let Some(r) = prepare_read(
            &node,
            super::image::Consistency::Linearizable,
            &uri,
            &headers,
        )
        .await?
        {
            return Ok(r);
        }
        let outcome = read(node.store.state()).image.dry_run(&cs, now_ms());
        return Ok(answer(&outcome, true));
    }
    match node.batcher.propose(cs).await {
        Ok((_, outcome)) => Ok(answer(&outcome, false)),
        Err(ProposeError::NotLeader(_)) => {
            Ok(forward::to_leader(&node, Method::POST, &uri, &headers, Some(bytes)).await)
        }
        Err(e) => Err(e.into()),
    }
}

/// The query of `GET /image/history`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    limit: Option<String>,
    before: Option<String>,
    consistency: Option<String>,
}

/// Most records one history page holds.
const MAX_PAGE: usize = 100_000;

/// `GET /image/history[?limit=N][&before=CURSOR]`: applied and refused change sets, newest
/// first. Each record carries its `cursor` (`INDEX.POSITION`: its log entry and its place among
/// that entry's records); the last record's cursor as `before` gives the next page, without
/// skipping or repeating a record even where one log entry holds many change sets. A bare
/// `before=INDEX` still means "entries below INDEX".
pub async fn history(
    State(node): State<Arc<Node>>,
    Params(q): Params<HistoryParams>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let limit = limit_from_query(q.limit.as_deref(), 100)?;
    let before: Option<HistoryCursor> = match q.before.as_deref() {
        None => None,
        Some(v) => Some(
            v.parse()
                .map_err(|e: BadCursor| ApiError::bad_request("bad_before", e.to_string()))?,
        ),
    };
    let consistency = Consistency::from_query(q.consistency.as_deref())?;
    if let Some(r) = prepare_read(&node, consistency, &uri, &headers).await? {
        return Ok(r);
    }
    let store = node.store.clone();
    let records = tokio::task::spawn_blocking(move || store.history(limit.min(MAX_PAGE), before))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let out: Vec<_> = records
        .iter()
        .map(|(cursor, record)| {
            let mut v = history_json(record);
            v["cursor"] = json!(cursor.to_string());
            v
        })
        .collect();
    Ok(Json(json!(out)).into_response())
}
