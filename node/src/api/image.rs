//! Reads of the image (`/image/sites`, `/image/cells`, `/image/cells/{id}`,
//! `/image/relations`) with a chosen consistency, and `POST /image/import`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sonraft_raft::changeset::{Function, Origin};
use sonraft_raft::command::{Command, ImageImport, Response as Applied};
use sonraft_raft::model::import::{ImportDiff, ImportOutcome, ImportPart, KindCounts};
use sonraft_storage::read;

use super::error::{ApiError, Params, parse_json, read_body};
use super::forward;
use crate::Node;
use crate::propose::ProposeError;

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// This node's applied state, possibly behind the leader.
    Local,
    /// The leader's applied state, without confirming it still leads.
    Leader,
    /// Confirmed with a quorum (read index): reflects every write acknowledged before.
    Linearizable,
}

impl Consistency {
    /// The `consistency` query parameter: absent means linearizable; anything but `local`,
    /// `leader` or `linearizable` is a 400 `bad_consistency`.
    pub fn from_query(value: Option<&str>) -> Result<Consistency, ApiError> {
        match value {
            None | Some("linearizable") => Ok(Consistency::Linearizable),
            Some("leader") => Ok(Consistency::Leader),
            Some("local") => Ok(Consistency::Local),
            Some(other) => Err(ApiError::bad_request(
                "bad_consistency",
                format!("consistency={other:?}; use local, leader or linearizable"),
            )),
        }
    }
}

/// The `limit` query parameter: a count, `default` when absent, else a 400 `bad_limit`.
pub fn limit_from_query(value: Option<&str>, default: usize) -> Result<usize, ApiError> {
    match value {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            ApiError::bad_request("bad_limit", format!("limit={v:?} is not a number"))
        }),
    }
}

/// The query of `GET /image/sites` and `GET /image/cells/{id}`. Every read route takes its
/// query through [`Params`], so values are percent-decoded (`?site=North%20Hill`) and a
/// parameter the route does not know is a 400 `bad_query` rather than silently ignored. Values
/// stay text here so that a bad one gets its own error kind (`bad_consistency`, `bad_limit`).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    consistency: Option<String>,
}

/// The query of `GET /image/cells[?site=S][&limit=N]`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CellsParams {
    consistency: Option<String>,
    site: Option<String>,
    limit: Option<String>,
}

/// The query of `GET /image/relations[?source=CELL][&limit=N]`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RelationsParams {
    consistency: Option<String>,
    source: Option<String>,
    limit: Option<String>,
}

/// Makes this node fit to answer a read of the given consistency, or forwards the read to the
/// leader (`Some(response)`).
pub async fn prepare_read(
    node: &Node,
    c: Consistency,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<Response>, ApiError> {
    match c {
        Consistency::Local => Ok(None),
        Consistency::Leader if node.is_leader() => Ok(None),
        Consistency::Leader => Ok(Some(
            forward::to_leader(node, Method::GET, uri, headers, None).await,
        )),
        Consistency::Linearizable => match node.reads.wait().await {
            Ok(()) => Ok(None),
            Err(crate::reads::ReadError::NotLeader) => Ok(Some(
                forward::to_leader(node, Method::GET, uri, headers, None).await,
            )),
            Err(e) => Err(ApiError::unavailable("no_quorum", e.to_string())),
        },
    }
}

/// `GET /image/digest`: this node's last-applied entry and a digest of its whole applied state,
/// always local (it is how replicas are compared: equal entries must give equal digests).
pub async fn digest(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let store = node.store.clone();
    let d = tokio::task::spawn_blocking(move || store.digest())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({
        "applied_index": d.applied.map_or(0, |l| l.index),
        "applied_term": d.applied.map_or(0, |l| l.leader_id.term),
        "digest": format!("{:016x}", d.digest),
        "cells": d.cells,
        "relations": d.relations,
        "history_records": d.history_records,
    }))
    .into_response())
}

/// `GET /image/sites`.
pub async fn sites(
    State(node): State<Arc<Node>>,
    Params(q): Params<ReadParams>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let consistency = Consistency::from_query(q.consistency.as_deref())?;
    if let Some(r) = prepare_read(&node, consistency, &uri, &headers).await? {
        return Ok(r);
    }
    let state = read(node.store.state());
    let sites: Vec<_> = state.image.sites.values().collect();
    Ok(Json(json!(sites)).into_response())
}

/// `GET /image/cells[?site=S][&limit=N]`.
pub async fn cells(
    State(node): State<Arc<Node>>,
    Params(q): Params<CellsParams>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let limit = limit_from_query(q.limit.as_deref(), usize::MAX)?;
    let consistency = Consistency::from_query(q.consistency.as_deref())?;
    if let Some(r) = prepare_read(&node, consistency, &uri, &headers).await? {
        return Ok(r);
    }
    let site = q.site;
    let body = {
        let state = read(node.store.state());
        let cells: Vec<_> = state
            .image
            .cells
            .values()
            .filter(|c| site.as_ref().is_none_or(|s| &c.site == s))
            .take(limit)
            .collect();
        serde_json::to_vec(&cells).map_err(|e| ApiError::internal(e.to_string()))?
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// `GET /image/cells/{id}`.
pub async fn cell(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    Params(q): Params<ReadParams>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let consistency = Consistency::from_query(q.consistency.as_deref())?;
    if let Some(r) = prepare_read(&node, consistency, &uri, &headers).await? {
        return Ok(r);
    }
    let state = read(node.store.state());
    match state.image.cells.get(&id) {
        Some(c) => Ok(Json(c).into_response()),
        None => Err(ApiError::not_found(format!("no cell {id:?} in the image"))),
    }
}

/// `GET /image/relations[?source=CELL][&limit=N]`.
pub async fn relations(
    State(node): State<Arc<Node>>,
    Params(q): Params<RelationsParams>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let limit = limit_from_query(q.limit.as_deref(), usize::MAX)?;
    let consistency = Consistency::from_query(q.consistency.as_deref())?;
    if let Some(r) = prepare_read(&node, consistency, &uri, &headers).await? {
        return Ok(r);
    }
    let body = {
        let state = read(node.store.state());
        let rels: Vec<_> = match &q.source {
            Some(s) => state.image.relations_from(s).take(limit).collect(),
            None => state.image.relations.values().take(limit).collect(),
        };
        serde_json::to_vec(&rels).map_err(|e| ApiError::internal(e.to_string()))?
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// Cells per import command: keeps each log entry around a megabyte.
const CELLS_PER_ENTRY: usize = 4000;
const RELATIONS_PER_ENTRY: usize = 16000;

/// Splits an import into log-entry-sized commands, sites and policy first.
fn chunks(import: ImageImport) -> Vec<ImageImport> {
    let mut out = vec![ImageImport {
        sites: import.sites,
        policy: import.policy,
        ..Default::default()
    }];
    for c in import.cells.chunks(CELLS_PER_ENTRY) {
        out.push(ImageImport {
            cells: c.to_vec(),
            ..Default::default()
        });
    }
    for r in import.relations.chunks(RELATIONS_PER_ENTRY) {
        out.push(ImageImport {
            relations: r.to_vec(),
            ..Default::default()
        });
    }
    out
}

/// `?dry_run=true&reason=...` of `POST /image/import`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    reason: Option<String>,
}

fn counts_json(k: &KindCounts) -> serde_json::Value {
    json!({"created": k.created, "updated": k.updated, "unchanged": k.unchanged})
}

/// The answer's view of what an import changes (with the listed changes for a dry run).
fn diff_json(diff: &ImportDiff, with_changes: bool) -> serde_json::Value {
    let mut v = json!({
        "sites": counts_json(&diff.sites),
        "cells": counts_json(&diff.cells),
        "relations": counts_json(&diff.relations),
        "policy_changed": diff.policy_changed,
        "changed_params": diff.changed_params,
    });
    if with_changes {
        v["changes"] = diff
            .changes
            .iter()
            .map(|c| {
                json!({"entity": c.entity.to_string(), "param": c.param.name(),
                       "from": super::json::value_json(&c.from), "to": super::json::value_json(&c.to)})
            })
            .collect();
        v["changes_listed"] = json!(diff.changes.len());
    }
    v
}

/// `POST /image/import[?dry_run=true][&reason=...]`: bulk upsert of sites, cells and relations,
/// checked whole and applied in one step or not at all, and recorded in the history with what it
/// changed. `dry_run` answers what it would change in the leader's image, applying nothing.
pub async fn import(
    State(node): State<Arc<Node>>,
    Params(q): Params<ImportParams>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config.max_import_bytes).await?;
    let import: ImageImport = parse_json(&bytes)?;
    if !node.is_leader() {
        return Ok(forward::to_leader(&node, Method::POST, &uri, &headers, Some(bytes)).await);
    }
    if q.dry_run {
        if let Some(r) = prepare_read(&node, Consistency::Linearizable, &uri, &headers).await? {
            return Ok(r);
        }
        let image = read(node.store.state()).image.clone();
        return Ok(match image.check_import(&import) {
            Ok(()) => Json(json!({"dry_run": true, "valid": true,
                                  "would_change": diff_json(&image.import_diff(&import), true)})),
            Err(reason) => Json(json!({"dry_run": true, "valid": false, "reason": reason})),
        }
        .into_response());
    }
    let effective = node.effective_format(Duration::from_secs(5)).await;
    if effective < ImportPart::FORMAT {
        return import_v1(&node, import, &uri, &headers, bytes).await;
    }
    let origin_node = headers
        .get(forward::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(node.id);
    let parts = chunks(import);
    let count = parts.len();
    let import_id = rand::random::<u64>();
    for (n, data) in parts.into_iter().enumerate() {
        let part = ImportPart {
            import_id,
            part: n as u32,
            last: n + 1 == count,
            origin: Origin {
                node: origin_node,
                function: Function::Operator,
            },
            reason: q.reason.clone().unwrap_or_else(|| "import".into()),
            data,
        };
        match node.propose(&Command::ImportPart(part)).await {
            Ok((_, Applied::Import(ImportOutcome::Staged { .. }))) => {}
            Ok((_, Applied::Import(ImportOutcome::Applied { index, diff }))) => {
                tracing::info!(index, parts = count, summary = %diff.summary(), "imported");
                let c = diff.counts();
                return Ok(Json(json!({
                    "imported": {"sites": c.sites, "cells": c.cells, "relations": c.relations},
                    "index": index,
                    "changed": diff_json(&diff, false),
                }))
                .into_response());
            }
            Ok((_, Applied::Import(ImportOutcome::Refused { reason }))) => {
                return Err(ApiError::unprocessable(format!(
                    "nothing imported: {reason}"
                )));
            }
            Ok((_, other)) => {
                return Err(ApiError::internal(format!("unexpected answer {other:?}")));
            }
            Err(ProposeError::NotLeader(_)) if n == 0 => {
                return Ok(
                    forward::to_leader(&node, Method::POST, &uri, &headers, Some(bytes)).await,
                );
            }
            Err(e) => {
                let e = ApiError::from(e);
                return Err(ApiError {
                    detail: format!(
                        "nothing imported (stopped at part {} of {count}; the parts sent are dropped by the next import): {}",
                        n + 1,
                        e.detail
                    ),
                    ..e
                });
            }
        }
    }
    Err(ApiError::internal("the import had no last part"))
}

/// An import while some voter runs a release before command format 3 (a rolling upgrade): one
/// entry of command format 1, which is atomic, or a refusal when it does not fit one.
async fn import_v1(
    node: &Node,
    import: ImageImport,
    uri: &Uri,
    headers: &HeaderMap,
    bytes: bytes::Bytes,
) -> Result<Response, ApiError> {
    if import.cells.len() > CELLS_PER_ENTRY || import.relations.len() > RELATIONS_PER_ENTRY {
        return Err(ApiError::conflict(
            "cluster_version",
            "an import this large is applied in parts, which needs every voter on command format 3; finish upgrading the cluster first",
        ));
    }
    match node.propose(&Command::Import(import)).await {
        Ok((index, Applied::Imported(Ok(c)))) => Ok(Json(json!({
            "imported": {"sites": c.sites, "cells": c.cells, "relations": c.relations},
            "index": index,
        }))
        .into_response()),
        Ok((_, Applied::Imported(Err(reason)))) => Err(ApiError::unprocessable(reason)),
        Ok((_, other)) => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
        Err(ProposeError::NotLeader(_)) => {
            Ok(forward::to_leader(node, Method::POST, uri, headers, Some(bytes)).await)
        }
        Err(e) => Err(e.into()),
    }
}
