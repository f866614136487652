//! The sending side: openraft's `RaftNetworkFactory` over a pooled keep-alive hyper client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, RPCTypes};

use super::peer_health::PeerHealth;
use super::{
    AckClock, MAX_BODY, RAFT_PATH, RaftReply, RaftRpc, SECRET_HEADER, TARGET_HEADER, decode_frame,
    encode_frame,
};
use crate::durable::DurableLog;
use crate::{NodeId, NodeInfo, TypeConfig};

type HttpClient = Client<sonraft_tls::Connector, Full<Bytes>>;

/// Builds one [`HttpNetwork`] per peer; all share one connection pool.
#[derive(Clone)]
pub struct HttpNetworkFactory {
    client: HttpClient,
    secret: Arc<str>,
    me: NodeId,
    acks: Arc<AckClock>,
    synced: Arc<DurableLog>,
    retry_cap: Duration,
    health: Arc<PeerHealth>,
    /// `https` when the cluster speaks TLS ([`HttpNetworkFactory::with_tls`]).
    scheme: &'static str,
}

/// The hyper client both node-to-node clients build: keep-alive, `TCP_NODELAY`, and TLS when
/// `tls` is given (else a configuration that trusts nothing, which plain `http://` never uses).
pub(super) fn pooled_client(
    tls: Option<Arc<sonraft_tls::rustls::ClientConfig>>,
    max_idle: usize,
) -> Result<Client<sonraft_tls::Connector, Full<Bytes>>, sonraft_tls::TlsError> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.set_keepalive(Some(Duration::from_secs(30)));
    let tls = match tls {
        Some(t) => t,
        None => sonraft_tls::trust_nothing()?,
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(max_idle)
        .build(sonraft_tls::connector(connector, tls)))
}

impl HttpNetworkFactory {
    /// `me` is this node's id (for error reports); `secret` is the cluster secret; `synced` is
    /// how far this node's log is on disk: no AppendEntries tells a follower a commit index
    /// beyond it (see [`crate::durable`]).
    ///
    /// `tls`: connect to peers with TLS under this configuration (trusting the cluster's CA,
    /// presenting this node's certificate); `None`: plain HTTP.
    pub fn new(
        me: NodeId,
        secret: impl Into<Arc<str>>,
        synced: Arc<DurableLog>,
        tls: Option<Arc<sonraft_tls::rustls::ClientConfig>>,
    ) -> Result<Self, sonraft_tls::TlsError> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(HttpNetworkFactory {
            client: pooled_client(tls, 64)?,
            secret: secret.into(),
            me,
            acks: Arc::default(),
            synced,
            retry_cap: DEFAULT_RETRY_CAP,
            scheme,
            health: Arc::default(),
        })
    }

    /// Retries a peer that refused a connection at least every `cap` (default
    /// [`DEFAULT_RETRY_CAP`]); see [`retry_pauses`].
    pub fn with_retry_cap(mut self, cap: Duration) -> Self {
        self.retry_cap = cap;
        self
    }
}

/// The longest pause between attempts to reach a peer that refused, unless set.
pub const DEFAULT_RETRY_CAP: Duration = Duration::from_millis(500);

/// The pauses between attempts to reach a peer after it refused a connection: 50 ms, doubling
/// (it may be restarting), and never longer than `cap`.
///
/// openraft keeps pausing a peer's replication this way after every failed AppendEntries,
/// timeouts included, until one succeeds. A follower back from a partition often answers its
/// first AppendEntries late (it truncates and syncs a log a deposed leader left), so the
/// leader times out and pauses while the follower did hear it: a pause longer than the
/// follower's election timeout lets the follower campaign and depose a healthy leader (issue
/// 19 saw it happen with 500 ms pauses and a 150-300 ms election timeout). A node caps the
/// pauses at its minimum election timeout.
pub fn retry_pauses(cap: Duration) -> impl Iterator<Item = Duration> {
    // Clamped at each step, so the doubling never runs past `cap` (nor overflows).
    std::iter::successors(Some(Duration::from_millis(50).min(cap)), move |d| {
        Some(d.saturating_mul(2).min(cap))
    })
}

impl HttpNetworkFactory {
    /// When followers last accepted this node's leadership (fed by every AppendEntries).
    pub fn acks(&self) -> Arc<AckClock> {
        self.acks.clone()
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetworkFactory {
    type Network = HttpNetwork;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> HttpNetwork {
        HttpNetwork {
            client: self.client.clone(),
            secret: self.secret.clone(),
            url: format!("{}://{}{RAFT_PATH}", self.scheme, node.raft_addr),
            me: self.me,
            target,
            acks: self.acks.clone(),
            synced: self.synced.clone(),
            retry_cap: self.retry_cap,
            health: self.health.clone(),
        }
    }
}

/// The connection to one peer.
pub struct HttpNetwork {
    client: HttpClient,
    secret: Arc<str>,
    url: String,
    me: NodeId,
    target: NodeId,
    acks: Arc<AckClock>,
    synced: Arc<DurableLog>,
    retry_cap: Duration,
    health: Arc<PeerHealth>,
}

/// Why an RPC did not get an answer from the peer's Raft.
enum CallError {
    Unreachable(AnyError),
    Network(AnyError),
    Timeout,
}

impl HttpNetwork {
    /// Sends one RPC. The exchange runs as its own task: when openraft gives up waiting (its
    /// timeouts are as short as one heartbeat), the request still completes in the background
    /// and its keep-alive connection goes back to the pool instead of being torn down — under
    /// load, reconnecting would cost more than the RPC.
    async fn call(&self, rpc: &RaftRpc, ttl: Duration) -> Result<RaftReply, CallError> {
        let body = encode_frame(rpc).map_err(|e| CallError::Network(AnyError::new(&e)))?;
        let exchange = tokio::spawn(Self::exchange(
            self.client.clone(),
            self.url.clone(),
            self.secret.clone(),
            self.target,
            body,
        ));
        let started = std::time::Instant::now();
        let kind = match rpc {
            RaftRpc::Append(r) if r.entries.is_empty() => "append_empty",
            RaftRpc::Append(_) => "append",
            RaftRpc::Vote(_) => "vote",
            RaftRpc::Snapshot(_) => "snapshot",
        };
        let result = tokio::time::timeout(ttl, exchange).await;
        metrics::histogram!("sonraft_raft_rpc_seconds", "rpc" => kind)
            .record(started.elapsed().as_secs_f64());
        let result = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(CallError::Network(AnyError::error(e.to_string()))),
            Err(_) => Err(CallError::Timeout),
        };
        let error = match &result {
            Ok(_) => None,
            Err(CallError::Unreachable(e) | CallError::Network(e)) => Some(e.to_string()),
            Err(CallError::Timeout) => Some(format!("no answer within {} ms", ttl.as_millis())),
        };
        self.health.observe(self.target, error.as_deref());
        result
    }

    async fn exchange(
        client: HttpClient,
        url: String,
        secret: Arc<str>,
        target: NodeId,
        body: Vec<u8>,
    ) -> Result<RaftReply, CallError> {
        let req = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header(SECRET_HEADER, &*secret)
            .header(TARGET_HEADER, target.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Network(AnyError::new(&e)))?;
        let resp = client.request(req).await.map_err(|e| {
            if e.is_connect() {
                CallError::Unreachable(AnyError::new(&e))
            } else {
                CallError::Network(AnyError::new(&e))
            }
        })?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| CallError::Network(AnyError::error(e.to_string())))?
            .to_bytes();
        if status != StatusCode::OK {
            let msg = format!(
                "node {target} answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
            );
            // A refusal (wrong secret, other wire format) will not heal by retrying at once.
            return Err(CallError::Unreachable(AnyError::error(msg)));
        }
        decode_frame(&bytes).map_err(|e| CallError::Network(AnyError::new(&e)))
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        e: CallError,
        action: RPCTypes,
        ttl: Duration,
    ) -> RPCError<NodeId, NodeInfo, E> {
        match e {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
            CallError::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.me,
                target: self.target,
                timeout: ttl,
            }),
        }
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<NodeId, NodeInfo, E> {
        RPCError::Network(NetworkError::new(&AnyError::error(format!(
            "node {} answered a different RPC than was sent",
            self.target
        ))))
    }
}

impl RaftNetwork<TypeConfig> for HttpNetwork {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let ttl = option.hard_ttl();
        // Followers apply what they are told is committed: never beyond our own disk.
        rpc.leader_commit = self.synced.cap_commit(rpc.leader_commit);
        let (vote, sent) = (rpc.vote, self.acks.now_us());
        match self.call(&RaftRpc::Append(rpc), ttl).await {
            Ok(RaftReply::Append(r)) => {
                if let Ok(
                    AppendEntriesResponse::Success
                    | AppendEntriesResponse::PartialSuccess(_)
                    | AppendEntriesResponse::Conflict,
                ) = &r
                {
                    // The follower took our vote: it accepted this leader at `sent` or later.
                    self.acks.record(self.target, &vote, sent);
                }
                r.map_err(|e| RemoteError::new(self.target, e).into())
            }
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.rpc_error(e, RPCTypes::AppendEntries, ttl)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let ttl = option.hard_ttl();
        match self.call(&RaftRpc::Snapshot(rpc), ttl).await {
            Ok(RaftReply::Snapshot(r)) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.rpc_error(e, RPCTypes::InstallSnapshot, ttl)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let ttl = option.hard_ttl();
        match self.call(&RaftRpc::Vote(rpc), ttl).await {
            Ok(RaftReply::Vote(r)) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.rpc_error(e, RPCTypes::Vote, ttl)),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(retry_pauses(self.retry_cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusing_peer_is_retried_quickly_then_at_most_every_cap() {
        let ms = Duration::from_millis;
        let pauses: Vec<Duration> = retry_pauses(ms(150)).take(6).collect();
        assert_eq!(
            pauses,
            [ms(50), ms(100), ms(150), ms(150), ms(150), ms(150)]
        );
        let pauses: Vec<Duration> = retry_pauses(ms(1000)).take(7).collect();
        assert_eq!(
            pauses,
            [
                ms(50),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                ms(1000)
            ]
        );
    }

    #[test]
    fn a_peer_down_for_hours_is_still_retried_every_cap() {
        // openraft takes one pause per failed attempt for as long as the peer stays down: at
        // 150 ms a pause, a day is ~576,000 of them; doubling without a bound overflows
        // `Duration` (a panic) after about 70.
        let cap = Duration::from_millis(150);
        assert_eq!(retry_pauses(cap).nth(600_000), Some(cap));
    }
}
