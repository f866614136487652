//! Reads of the image (`/image/sites`, `/image/cells`, `/image/cells/{id}`,
//! `/image/relations`) with a chosen consistency, and `POST /image/import`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sonraft_raft::command::{Command, ImageImport, ImportCounts, Response as Applied};
use sonraft_raft::model::image::Changes;
use sonraft_storage::read;

use super::error::{ApiError, parse_json, read_body};
use super::forward;
use crate::node::Node;
use crate::node::propose::ProposeError;

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

/// The query string as a map (our parameters need no percent-decoding).
pub fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

pub fn consistency(q: &BTreeMap<String, String>) -> Result<Consistency, ApiError> {
    match q.get("consistency").map(String::as_str) {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("leader") => Ok(Consistency::Leader),
        Some("local") => Ok(Consistency::Local),
        Some(other) => Err(ApiError::bad_request(
            "bad_consistency",
            format!("consistency={other:?}; use local, leader or linearizable"),
        )),
    }
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
            Err(crate::node::reads::ReadError::NotLeader) => Ok(Some(
                forward::to_leader(node, Method::GET, uri, headers, None).await,
            )),
            Err(e) => Err(ApiError::unavailable("no_quorum", e.to_string())),
        },
    }
}

fn parse_limit(q: &BTreeMap<String, String>, default: usize) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            ApiError::bad_request("bad_limit", format!("limit={v:?} is not a number"))
        }),
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
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(&uri);
    if let Some(r) = prepare_read(&node, consistency(&q)?, &uri, &headers).await? {
        return Ok(r);
    }
    let state = read(node.store.state());
    let sites: Vec<_> = state.image.sites.values().collect();
    Ok(Json(json!(sites)).into_response())
}

/// `GET /image/cells[?site=S][&limit=N]`.
pub async fn cells(
    State(node): State<Arc<Node>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(&uri);
    let limit = parse_limit(&q, usize::MAX)?;
    if let Some(r) = prepare_read(&node, consistency(&q)?, &uri, &headers).await? {
        return Ok(r);
    }
    let site = q.get("site");
    let body = {
        let state = read(node.store.state());
        let cells: Vec<_> = state
            .image
            .cells
            .values()
            .filter(|c| site.is_none_or(|s| &c.site == s))
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
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(&uri);
    if let Some(r) = prepare_read(&node, consistency(&q)?, &uri, &headers).await? {
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
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(&uri);
    let limit = parse_limit(&q, usize::MAX)?;
    if let Some(r) = prepare_read(&node, consistency(&q)?, &uri, &headers).await? {
        return Ok(r);
    }
    let body = {
        let state = read(node.store.state());
        let rels: Vec<_> = match q.get("source") {
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

/// `POST /image/import`: bulk upsert of sites, cells and relations (all-or-nothing).
pub async fn import(
    State(node): State<Arc<Node>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config.max_import_bytes).await?;
    let import: ImageImport = parse_json(&bytes)?;
    if !node.is_leader() {
        return Ok(forward::to_leader(&node, Method::POST, &uri, &headers, Some(bytes)).await);
    }
    let parts = chunks(import);
    if parts.len() > 1 {
        // Check the whole import against a copy first, so that it lands entirely or not at all.
        let mut trial = read(node.store.state()).image.clone();
        for part in &parts {
            if let Applied::Imported(Err(reason)) =
                trial.apply(0, &Command::Import(part.clone()), &mut Changes::default())
            {
                return Err(ApiError::unprocessable(reason));
            }
        }
    }
    let mut total = ImportCounts::default();
    let mut last = 0;
    for part in parts {
        match node.propose(&Command::Import(part)).await {
            Ok((index, Applied::Imported(Ok(c)))) => {
                total.sites += c.sites;
                total.cells += c.cells;
                total.relations += c.relations;
                last = index;
            }
            Ok((_, Applied::Imported(Err(reason)))) => return Err(ApiError::unprocessable(reason)),
            Ok((_, other)) => {
                return Err(ApiError::internal(format!("unexpected answer {other:?}")));
            }
            Err(ProposeError::NotLeader(_)) if last == 0 => {
                return Ok(
                    forward::to_leader(&node, Method::POST, &uri, &headers, Some(bytes)).await,
                );
            }
            Err(e) => {
                return Err(ApiError::unavailable(
                    "raft",
                    format!("import stopped after index {last}: {e}"),
                ));
            }
        }
    }
    Ok(Json(json!({
        "imported": {"sites": total.sites, "cells": total.cells, "relations": total.relations},
        "index": last,
    }))
    .into_response())
}
