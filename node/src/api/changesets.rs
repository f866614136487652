//! `POST /image/changesets` (with `?dry_run=true`) and `GET /image/history`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use sonraft_client::v1;
use sonraft_raft::changeset::Function;
use sonraft_raft::changeset::Outcome;
use sonraft_raft::model::CellId;
use sonraft_storage::{BadCursor, HistoryCursor};

use super::error::{ApiError, Params, parse_json, read_body};
use super::forward;
use super::front_door::Caller;
use super::image::{count, prepare_read};
use super::json::{change_set, history_record, outcome};
use crate::Node;
use crate::access::Role;
use crate::propose::{ProposeError, now_ms};

/// The HTTP status of an outcome: 200 applied, 202 pending, 409 conflict or rejected, 422
/// invalid.
pub fn status_of(o: &Outcome) -> StatusCode {
    match o {
        Outcome::Applied { .. } => StatusCode::OK,
        Outcome::Pending { .. } => StatusCode::ACCEPTED,
        Outcome::Conflict { .. } | Outcome::Rejected { .. } => StatusCode::CONFLICT,
        Outcome::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

fn answer(o: &Outcome, dry_run: bool) -> Response {
    answer_with_trial(o, dry_run, None)
}

fn answer_with_trial(o: &Outcome, dry_run: bool, trial: Option<u64>) -> Response {
    metrics::counter!("sonraft_proposals_total", "outcome" => o.kind(), "dry_run" => if dry_run { "true" } else { "false" }).increment(1);
    let mut outcome = outcome(o);
    if let v1::Outcome::Applied { index, .. } = &mut outcome
        && dry_run
    {
        // A dry run is applied nowhere.
        *index = None;
    }
    let body = v1::ChangeSetAnswer {
        outcome,
        dry_run,
        trial,
    };
    (status_of(o), Json(body)).into_response()
}

/// `POST /image/changesets`: propose (or with `dry_run=true`, only validate) a change set.
pub async fn propose(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::ProposeQuery>,
    caller: Option<Extension<Caller>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config().max_body_bytes).await?;
    let parsed: v1::ChangeSetRequest = parse_json(&bytes)?;
    check_origin(&node, &parsed, caller.map(|c| c.0.0))?;
    let dry_run = q.dry_run;
    let origin_node = headers
        .get(forward::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(node.id());
    let cs = match change_set(parsed, origin_node, now_ms()) {
        Ok(cs) => cs,
        Err(reason) => return Ok(answer(&Outcome::Invalid { reason }, dry_run)),
    };
    if !node.is_leader() {
        return Ok(forward::to_leader(&node, Method::POST, &uri, &headers, Some(bytes)).await);
    }
    if dry_run {
        if let Some(r) = prepare_read(&node, v1::Consistency::Linearizable, &uri, &headers).await? {
            return Ok(r);
        }
        // Judged by the rules of the format its entry would carry.
        let voters = node.voters();
        let outcome = node.store().with_image(|image| {
            let format = image.effective_format(voters.iter().copied());
            image.dry_run_in_format(&cs, now_ms(), format)
        });
        return Ok(answer(&outcome, true));
    }
    let (function, writes) = (cs.origin.function, cs.writes.clone());
    let cells = sonraft_raft::rules::reconfigured_cells(&cs);
    match node.propose_change_set(cs).await {
        Ok((_, outcome)) => {
            let trial = match outcome {
                Outcome::Applied { .. } => opened_trial(&node, function, &cells, &writes),
                _ => None,
            };
            Ok(answer_with_trial(&outcome, false, trial))
        }
        Err(ProposeError::NotLeader(_)) => {
            Ok(forward::to_leader(&node, Method::POST, &uri, &headers, Some(bytes)).await)
        }
        Err(e) => Err(e.into()),
    }
}

/// The trial an applied change set of `function` opened: the function's open trial on its
/// first cell that wrote exactly `writes` (a function has one open trial a cell at most), if it
/// is still open.
fn opened_trial(
    node: &Node,
    function: Function,
    cells: &[CellId],
    writes: &[sonraft_raft::changeset::Write],
) -> Option<u64> {
    let cell = cells.first()?;
    node.store().with_image(|image| {
        image
            .son
            .open_trial(function, cell)
            .filter(|t| t.writes.iter().map(|(w, _)| w).eq(writes.iter()))
            .map(|t| t.index)
    })
}

/// Change sets in a SON function's name come from the nodes' own SON functions, which propose
/// through the node-to-node channel, not this API: a token, even an admin's, proposes as the
/// operator. Otherwise anyone with a token could act as load balancing or as an undo, past the
/// operator's approval of open-loop functions and into verification's statistics. A lab or
/// test cluster may let admin tokens do it (`--api-son-origins`).
fn check_origin(
    node: &Node,
    request: &v1::ChangeSetRequest,
    caller: Option<Role>,
) -> Result<(), ApiError> {
    let function = request.origin.function.as_str();
    if function == Function::Operator.name() {
        return Ok(());
    }
    if node.config().api_son_origins && caller == Some(Role::Admin) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "only the nodes' own SON functions propose change sets in the name of {function:?}; propose as \"operator\"{}",
            if node.config().api_son_origins {
                " (this node takes SON origins from admin tokens only)"
            } else {
                ""
            }
        ),
    ))
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
    Params(q): Params<v1::HistoryQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let limit = q.limit.map_or(100, count);
    let before: Option<HistoryCursor> = match q.before.as_deref() {
        None => None,
        Some(v) => Some(
            v.parse()
                .map_err(|e: BadCursor| ApiError::bad_request("bad_before", e.to_string()))?,
        ),
    };
    if let Some(r) = prepare_read(&node, q.consistency.unwrap_or_default(), &uri, &headers).await? {
        return Ok(r);
    }
    let store = node.store().clone();
    let limit = limit.min(MAX_PAGE);
    if !q.filtered() {
        let records = tokio::task::spawn_blocking(move || store.history(limit, before))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let out: Vec<_> = records
            .iter()
            .map(|(cursor, record)| history_record(*cursor, record))
            .collect();
        return Ok(Json(out).into_response());
    }
    // Filtered: read older pages until `limit` records pass, the history ends, the records
    // turn older than `since_ms`, or `SCAN_BUDGET` records were looked at.
    let out = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut from = before;
        let mut scanned = 0;
        while out.len() < limit && scanned < SCAN_BUDGET {
            let page = store.history(SCAN_PAGE, from)?;
            let Some(last) = page.last() else { break };
            from = Some(last.0);
            scanned += page.len();
            for (cursor, record) in &page {
                let r = history_record(*cursor, record);
                if q.since_ms.is_some_and(|t| r.log_time_ms < t) {
                    return Ok(out);
                }
                if q.admits(&r) && out.len() < limit {
                    out.push(r);
                }
            }
            if page.len() < SCAN_PAGE {
                break;
            }
        }
        Ok::<_, sonraft_storage::error::Damaged>(out)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(out).into_response())
}

/// Records a filtered history read looks at per store read, and at most in one request.
const SCAN_PAGE: usize = 1000;
const SCAN_BUDGET: usize = 200_000;
