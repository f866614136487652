//! `/snapshot`, `/backup` and `/antennas`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use sonraft_client::{ChunkWriter, channel_body, v1};
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
/// (versioned, CRC-checked). Restore with `sonraft ctl restore`. The copy is written while it
/// is sent, never held whole a second time (145 MB at 3 million relations); a failure part way
/// ends the body with an error, and a reader that checks the trailing CRC (`ctl backup` does)
/// never takes a cut-short copy for whole.
pub async fn backup(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    // Captured and encoded at the node's own priority, unlike a snapshot (see
    // `sonraft_storage::background`): an operator waits for a backup. Below the priority of
    // the threads writes wait for, one asked for right after a national import took 80-88 s,
    // the three nodes' checkpoint writers taking both cores of the bench's machine for as long.
    let store = node.store().clone();
    let (meta, body) = tokio::task::spawn_blocking(move || store.capture())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let index = meta.last_log_id.map_or(0, |l| l.index);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        // A failure drops the writer unfinished, which ends the body with an error, so that
        // the transfer fails instead of ending as if whole (a panic does the same).
        let w = ChunkWriter::new(tx);
        if let Err(e) = encode_snapshot(w, &meta, &body).and_then(ChunkWriter::finish) {
            tracing::warn!(error = %e, "a backup was not sent whole");
        }
    });
    let name = format!(
        "attachment; filename=\"sonraft-node{}-{index}.backup\"",
        node.id()
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        axum::body::Body::new(channel_body(rx)),
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
