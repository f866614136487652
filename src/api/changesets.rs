//! `POST /image/changesets` (with `?dry_run=true`) and `GET /image/history`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sonraft_raft::changeset::Outcome;
use sonraft_storage::read;

use super::error::{ApiError, parse_json, read_body};
use super::forward;
use super::image::{consistency, prepare_read, query};
use super::json::{ChangeSetBody, change_set, history_json, outcome_json};
use crate::node::Node;
use crate::node::propose::{ProposeError, now_ms};

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

/// `POST /image/changesets`: propose (or with `dry_run=true`, only validate) a change set.
pub async fn propose(
    State(node): State<Arc<Node>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config.max_body_bytes).await?;
    let parsed: ChangeSetBody = parse_json(&bytes)?;
    let q = query(&uri);
    let dry_run = match q.get("dry_run").map(String::as_str) {
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

/// `GET /image/history[?limit=N][&before=INDEX]`: applied and refused change sets, newest first.
pub async fn history(
    State(node): State<Arc<Node>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(&uri);
    let limit: usize = match q.get("limit") {
        None => 100,
        Some(v) => v.parse().map_err(|_| {
            ApiError::bad_request("bad_limit", format!("limit={v:?} is not a number"))
        })?,
    };
    let before: Option<u64> = match q.get("before") {
        None => None,
        Some(v) => Some(v.parse().map_err(|_| {
            ApiError::bad_request("bad_before", format!("before={v:?} is not an index"))
        })?),
    };
    if let Some(r) = prepare_read(&node, consistency(&q)?, &uri, &headers).await? {
        return Ok(r);
    }
    let store = node.store.clone();
    let records = tokio::task::spawn_blocking(move || store.history(limit.min(100_000), before))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let out: Vec<_> = records.iter().map(history_json).collect();
    Ok(Json(json!(out)).into_response())
}
