//! The receiving side: decode, check the secret, hand the RPC to the local Raft.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::peer::{PEER_PATH, PeerReply, PeerRpc, PeerService};
use super::{
    MAX_BODY, RAFT_PATH, RaftReply, RaftRpc, SECRET_HEADER, TARGET_HEADER, decode_frame,
    decode_peer_frame, encode_frame, encode_peer_frame,
};
use crate::Raft;

/// When this node last heard an AppendEntries (replication or heartbeat) from a leader.
#[derive(Debug)]
pub struct LeaderContact {
    base: std::time::Instant,
    last_append_us: std::sync::atomic::AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact {
            base: std::time::Instant::now(),
            last_append_us: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl LeaderContact {
    fn touch(&self) {
        let now = self.base.elapsed().as_micros() as u64;
        self.last_append_us
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether any AppendEntries arrived since this node started.
    pub fn heard(&self) -> bool {
        self.last_append_us
            .load(std::sync::atomic::Ordering::Relaxed)
            != 0
    }

    /// Time since the last AppendEntries arrived (since start if none did).
    pub fn silence(&self) -> Duration {
        let last = self
            .last_append_us
            .load(std::sync::atomic::Ordering::Relaxed);
        self.base
            .elapsed()
            .saturating_sub(Duration::from_micros(last))
    }
}

/// Serves Raft RPCs, and peer requests when given a [`PeerService`], for one node.
#[derive(Clone)]
pub struct RaftServer {
    raft: Raft,
    secret: Arc<str>,
    contact: Arc<LeaderContact>,
    peers: Option<Arc<dyn PeerService>>,
    /// TLS on the listener ([`RaftServer::with_tls`]); plain HTTP without.
    tls: Option<sonraft_tls::Acceptor>,
    /// Set once this node's Raft is shutting down ([`RaftServer::closing`]).
    closing: Arc<std::sync::atomic::AtomicBool>,
}

impl RaftServer {
    pub fn new(raft: Raft, secret: impl Into<Arc<str>>) -> Self {
        RaftServer {
            raft,
            secret: secret.into(),
            contact: Arc::default(),
            peers: None,
            tls: None,
            closing: Arc::default(),
        }
    }

    /// Set it before shutting Raft down: RPCs are then answered 503 instead of reaching a
    /// stopped Raft core (which openraft logs as an ERROR for every one).
    pub fn closing(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.closing.clone()
    }

    /// Serves over TLS: only peers with a certificate the cluster's CA signed get through the
    /// handshake (see [`sonraft_tls::NodeTls::peer_acceptor`]).
    pub fn with_tls(mut self, tls: sonraft_tls::Acceptor) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Answers `POST /peer` with `service` (without one, peer requests get 404).
    pub fn with_peer_service(mut self, service: Arc<dyn PeerService>) -> Self {
        self.peers = Some(service);
        self
    }

    /// When this node last heard from a leader; for fast failure detection.
    pub fn contact(&self) -> Arc<LeaderContact> {
        self.contact.clone()
    }

    /// Handles one HTTP request. Never fails: every problem becomes an HTTP error response.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let known = path == RAFT_PATH || (path == PEER_PATH && self.peers.is_some());
        if req.method() != Method::POST || !known {
            return text(
                StatusCode::NOT_FOUND,
                "the Raft listener serves only POST /raft and POST /peer",
            );
        }
        let is_peer = path == PEER_PATH;
        let presented = req
            .headers()
            .get(SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        if !same_secret(presented, self.secret.as_bytes()) {
            tracing::warn!(%peer, "refused a Raft RPC without the right cluster secret");
            return text(StatusCode::UNAUTHORIZED, "missing or wrong cluster secret");
        }
        if self.closing.load(std::sync::atomic::Ordering::Acquire) {
            return text(StatusCode::SERVICE_UNAVAILABLE, "this node is stopping");
        }
        let me = self.raft.metrics().borrow().id;
        let meant_for = req
            .headers()
            .get(TARGET_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.parse::<crate::NodeId>());
        match meant_for {
            None => {}
            Some(Ok(id)) if id == me => {}
            Some(other) => {
                let meant = other.map_or_else(
                    |_| "an unreadable id".to_string(),
                    |id| format!("node {id}"),
                );
                tracing::warn!(%peer, me, "refused a request meant for {meant} (a node once at this address?)");
                return text(
                    StatusCode::MISDIRECTED_REQUEST,
                    &format!("this is node {me}, not the {meant} the request is meant for"),
                );
            }
        }
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "could not read a Raft RPC body");
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("body not read: {e}"),
                );
            }
        };
        if is_peer {
            return self.handle_peer(&body, peer).await;
        }
        let rpc: RaftRpc = match decode_frame(&body) {
            Ok(rpc) => rpc,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "refused an undecodable Raft RPC");
                return text(StatusCode::BAD_REQUEST, &format!("bad Raft RPC: {e}"));
            }
        };
        let started = std::time::Instant::now();
        let (kind, reply) = match rpc {
            RaftRpc::Append(r) => {
                self.contact.touch();
                let kind = if r.entries.is_empty() {
                    "append_empty"
                } else {
                    "append"
                };
                (kind, RaftReply::Append(self.raft.append_entries(r).await))
            }
            RaftRpc::Vote(r) => ("vote", RaftReply::Vote(self.raft.vote(r).await)),
            RaftRpc::Snapshot(r) => (
                "snapshot",
                RaftReply::Snapshot(self.raft.install_snapshot(r).await),
            ),
        };
        let took = started.elapsed();
        metrics::histogram!("sonraft_raft_rpc_handle_seconds", "rpc" => kind)
            .record(took.as_secs_f64());
        if took >= SLOW_RPC {
            tracing::info!(
                rpc = kind,
                took_ms = took.as_millis() as u64,
                "Raft took long to answer a request"
            );
        }
        match encode_frame(&reply) {
            Ok(bytes) => Response::new(Full::new(Bytes::from(bytes))),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("reply not encoded: {e}"),
            ),
        }
    }
}

/// Handling time from which a Raft request is logged (a heartbeat's answer this late counts
/// as none towards the leader's quorum watch).
const SLOW_RPC: std::time::Duration = std::time::Duration::from_millis(100);

impl RaftServer {
    async fn handle_peer(&self, body: &[u8], peer: SocketAddr) -> Response<Full<Bytes>> {
        let Some(service) = &self.peers else {
            return text(StatusCode::NOT_FOUND, "no peer service");
        };
        let rpc: PeerRpc = match decode_peer_frame(body) {
            Ok(rpc) => rpc,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "refused an undecodable peer request");
                return text(StatusCode::BAD_REQUEST, &format!("bad peer request: {e}"));
            }
        };
        let kind = match &rpc {
            PeerRpc::Facts => "facts",
            PeerRpc::Submit { .. } => "submit",
            PeerRpc::Elect { .. } => "elect",
        };
        let started = std::time::Instant::now();
        let reply: PeerReply = service.handle(rpc).await;
        metrics::histogram!("sonraft_peer_rpc_handle_seconds", "rpc" => kind)
            .record(started.elapsed().as_secs_f64());
        match encode_peer_frame(&reply) {
            Ok(bytes) => Response::new(Full::new(Bytes::from(bytes))),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("reply not encoded: {e}"),
            ),
        }
    }
}

/// Compares secrets without stopping at the first differing byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(msg.to_string())));
    *resp.status_mut() = status;
    resp
}

/// Accepts connections on `listener` until `shutdown` resolves, then waits (up to 5 s) for
/// in-flight RPCs to finish. Every accepted socket gets `TCP_NODELAY`. With TLS
/// ([`RaftServer::with_tls`]) each connection's handshake runs in its own task.
pub async fn serve(listener: TcpListener, server: RaftServer, shutdown: impl Future<Output = ()>) {
    if let Some(tls) = server.tls.clone() {
        let handler = move |peer, req| {
            let server = server.clone();
            async move { server.handle(req, peer).await }
        };
        sonraft_tls::serve(listener, tls, handler, shutdown, Duration::from_secs(5)).await;
        return;
    }
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the Raft listener");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let server = server.clone();
        let service = hyper::service::service_fn(move |req| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.handle(req, peer).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "Raft connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("Raft connections still open after 5 s; closing them");
    }
}
