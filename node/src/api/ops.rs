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
/// (versioned, CRC-checked). Restore with `sonraft ctl restore`. The copy is written while it
/// is sent, never held whole a second time (145 MB at 3 million relations); a failure part way
/// ends the body with an error, and a reader that checks the trailing CRC (`ctl backup` does)
/// never takes a cut-short copy for whole.
pub async fn backup(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let store = node.store().clone();
    let (meta, body) = tokio::task::spawn_blocking(move || store.capture())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let index = meta.last_log_id.map_or(0, |l| l.index);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let w = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        if let Err(e) = encode_snapshot(w, &meta, &body).and_then(ChunkWriter::finish) {
            tracing::warn!(error = %e, "a backup was not sent whole");
            // Said in the body, so that the transfer fails instead of ending as if whole.
            let _ = tx.blocking_send(Err(e));
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
        axum::body::Body::new(ChunkBody(rx)),
    )
        .into_response())
}

/// Bytes a backup's body is sent in.
const CHUNK: usize = 256 << 10;

/// Writes into a bounded channel in chunks (the encoding waits for the connection); the
/// receiver gone is an error that stops the encoding.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(bytes::Bytes::from(chunk)))
            .map_err(|_| std::io::Error::other("the client went away"))
    }

    fn finish(mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            self.send()
        }
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A response body of the chunks a [`ChunkWriter`] sends.
struct ChunkBody(tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>);

impl hyper::body::Body for ChunkBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(hyper::body::Frame::data)))
    }
}

/// `GET /antennas[?limit=N]`: this node's antenna sessions and their summary.
pub async fn antennas(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::AntennasQuery>,
) -> Json<v1::Antennas> {
    let limit = q.limit.map_or(1000, super::image::count);
    Json(node.antenna_sessions(limit))
}
