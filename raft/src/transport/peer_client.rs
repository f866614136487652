//! The sending side of peer requests: one pooled keep-alive hyper client, the cluster secret.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;

use super::peer::{PEER_PATH, PeerReply, PeerRpc};
use super::{MAX_BODY, SECRET_HEADER, TARGET_HEADER, decode_peer_frame, encode_peer_frame};
use crate::NodeId;

/// Why a peer request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerCallError {
    /// Nothing listens there, or the connection broke.
    #[error("{addr} not reached: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("{addr} did not answer within {} ms", .after.as_millis())]
    Timeout { addr: String, after: Duration },
    /// A node of a release without peer requests (before 0.3.0): use the old admin route.
    #[error("{addr} does not serve peer requests (an older release)")]
    NotSupported { addr: String },
    /// The peer refused the request (wrong secret, a body it could not read).
    #[error("{addr} refused the request: {status} {reason}")]
    Refused {
        addr: String,
        status: u16,
        reason: String,
    },
}

/// Sends [`PeerRpc`]s to other nodes' Raft listeners. Cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    client: Client<sonraft_tls::Connector, Full<Bytes>>,
    secret: Arc<str>,
    /// `https` when the cluster speaks TLS.
    scheme: &'static str,
}

impl PeerClient {
    /// `tls`: reach peers with TLS under this configuration; `None`: plain HTTP.
    pub fn new(
        secret: impl Into<Arc<str>>,
        tls: Option<Arc<sonraft_tls::rustls::ClientConfig>>,
    ) -> Result<Self, sonraft_tls::TlsError> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(PeerClient {
            client: super::client::pooled_client(tls, 16)?,
            secret: secret.into(),
            scheme,
        })
    }

    /// Sends `rpc` to node `target` (`None`: whoever listens there, e.g. to learn its id)
    /// whose Raft listener is `raft_addr`, waiting at most `timeout`.
    pub async fn call(
        &self,
        target: Option<NodeId>,
        raft_addr: &str,
        rpc: &PeerRpc,
        timeout: Duration,
    ) -> Result<PeerReply, PeerCallError> {
        let addr = raft_addr.to_string();
        let unreachable = |reason: String| PeerCallError::Unreachable {
            addr: addr.clone(),
            reason,
        };
        let body = encode_peer_frame(rpc).map_err(|e| unreachable(e.to_string()))?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}://{raft_addr}{PEER_PATH}", self.scheme))
            .header(SECRET_HEADER, &*self.secret);
        if let Some(id) = target {
            req = req.header(TARGET_HEADER, id.to_string());
        }
        let req = req
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unreachable(e.to_string()))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            match status {
                StatusCode::OK => decode_peer_frame(&bytes).map_err(|e| PeerCallError::Refused {
                    addr: addr.clone(),
                    status: 200,
                    reason: format!("answer not understood: {e}"),
                }),
                StatusCode::NOT_FOUND => Err(PeerCallError::NotSupported { addr: addr.clone() }),
                other => Err(PeerCallError::Refused {
                    addr: addr.clone(),
                    status: other.as_u16(),
                    reason: String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
                }),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(PeerCallError::Timeout {
                addr: addr.clone(),
                after: timeout,
            }),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
