//! `/snapshot`, `/backup` and `/antennas`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use sonraft_client::v1;
use sonraft_storage::snapshot::encode_snapshot;

use super::error::{ApiError, Params};
use crate::Node;

/// `POST /snapshot`: build a snapshot now (and purge the log behind it).
pub async fn snapshot(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let applied = node
        .snapshot_now()
        .await
        .map_err(|e| ApiError::unavailable("raft", e.to_string()))?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(v1::SnapshotStarted {
            snapshot: "started".into(),
            up_to_index: applied,
        }),
    )
        .into_response())
}

/// `GET /backup`: a consistent copy of the image and history in the snapshot file format
/// (versioned, CRC-checked). Restore with `sonraft ctl restore`.
pub async fn backup(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let store = node.store().clone();
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
        node.id()
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

/// `GET /antennas[?limit=N]`: this node's antenna sessions and their summary.
pub async fn antennas(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::AntennasQuery>,
) -> Json<v1::Antennas> {
    let limit = q.limit.map_or(1000, super::image::count);
    Json(node.antenna_sessions(limit))
}
