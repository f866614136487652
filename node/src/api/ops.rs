//! `/snapshot`, `/backup` and `/antennas`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sonraft_storage::snapshot::encode_snapshot;

use super::error::ApiError;
use crate::Node;

/// `POST /snapshot`: build a snapshot now (and purge the log behind it).
pub async fn snapshot(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    node.raft
        .trigger()
        .snapshot()
        .await
        .map_err(|e| ApiError::unavailable("raft", e.to_string()))?;
    let applied = node
        .raft
        .metrics()
        .borrow()
        .last_applied
        .map_or(0, |l| l.index);
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({"snapshot": "started", "up_to_index": applied})),
    )
        .into_response())
}

/// `GET /backup`: a consistent copy of the image and history in the snapshot file format
/// (versioned, CRC-checked). Restore with `sonraft ctl restore`.
pub async fn backup(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let store = node.store.clone();
    let (index, bytes) = tokio::task::spawn_blocking(move || {
        let (meta, body) = store.capture().map_err(|e| e.to_string())?;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        encode_snapshot(Vec::new(), &meta, &body)
            .map(|b| (index, b))
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(ApiError::internal)?;
    let name = format!(
        "attachment; filename=\"sonraft-node{}-{index}.backup\"",
        node.id
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        bytes,
    )
        .into_response())
}

/// The query of `GET /antennas[?limit=N]` (see [`super::error::Params`]).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AntennasParams {
    limit: Option<String>,
}

/// `GET /antennas[?limit=N]`: this node's antenna sessions and their summary.
pub async fn antennas(
    State(node): State<Arc<Node>>,
    super::error::Params(q): super::error::Params<AntennasParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = super::image::limit_from_query(q.limit.as_deref(), 1000)?;
    Ok(Json(match &node.antennas {
        Some(f) => f.describe(limit),
        None => {
            json!({"site": node.site, "antenna_addresses": [], "summary": {"sessions": 0}, "sessions": []})
        }
    }))
}
