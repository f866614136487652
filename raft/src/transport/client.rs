//! The sending side: openraft's `RaftNetworkFactory` over a pooled keep-alive hyper client.

use std::future::Future;
use std::io::SeekFrom;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, OptionalSend, RPCTypes, Snapshot, StorageError, Vote,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::OwnedSemaphorePermit;

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
            matched: None,
            detached: Arc::default(),
            lane: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// The connection to one peer.
///
/// openraft 0.9 creates one per replication stream (one per follower and leader term, used for
/// every AppendEntries of that stream) and one per target for each round of `ensure_linearizable`
/// (used once).
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
    /// The entry up to which the peer's log is known to match ours (`Some(None)`: an empty
    /// log): the end of the last AppendEntries this client waited for, if the peer accepted it.
    matched: Option<Option<LogId<NodeId>>>,
    /// The heartbeats sent without waiting for their answer.
    detached: Arc<Detached>,
    /// Held by the request this client waits for (or waited for: one past openraft's timeout
    /// still completes in the background) until the peer answers it; see [`HttpNetwork::lane`].
    lane: Arc<tokio::sync::Semaphore>,
}

/// The most heartbeats to one peer out at once without their answer: a heartbeat timer's tick
/// and a new commit index or two within a round trip (on a WAN, 50 ms against a 100 ms
/// heartbeat); a peer that stops answering is waited for again after these.
const MAX_DETACHED: usize = 4;

/// Heartbeats to one peer sent without waiting for their answer.
#[derive(Debug, Default)]
struct Detached {
    /// How many are out unanswered.
    out: AtomicUsize,
    /// One was refused, or not answered in time, since this client last waited for an answer.
    failed: AtomicBool,
}

impl Detached {
    /// Counts one more out, unless one failed or [`MAX_DETACHED`] are out.
    fn start(&self) -> bool {
        !self.failed.load(Ordering::Acquire)
            && self
                .out
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < MAX_DETACHED).then_some(n + 1)
                })
                .is_ok()
    }

    fn answered(&self, accepted: bool) {
        if !accepted {
            self.failed.store(true, Ordering::Release);
        }
        self.out.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why an RPC did not get an answer from the peer's Raft.
enum CallError {
    Unreachable(AnyError),
    Network(AnyError),
    Timeout,
}

/// An RPC encoded for the wire, with its kind for the metrics.
struct Framed {
    kind: &'static str,
    body: Result<Vec<u8>, CallError>,
}

impl Framed {
    fn new(rpc: &RaftRpc) -> Framed {
        let kind = match rpc {
            RaftRpc::Append(r) if r.entries.is_empty() => "append_empty",
            RaftRpc::Append(_) => "append",
            RaftRpc::Vote(_) => "vote",
            RaftRpc::Snapshot(_) => "snapshot",
        };
        let body = encode_frame(rpc).map_err(|e| CallError::Network(AnyError::new(&e)));
        Framed { kind, body }
    }

    fn len(&self) -> usize {
        self.body.as_ref().map_or(0, Vec::len)
    }
}

/// The largest AppendEntries sent with more than one entry: openraft sends up to 512 entries,
/// and 512 parts of a national import are ~150 MB that a busy peer holds in memory until its
/// Raft takes them. A larger batch is refused to openraft as too large, with the number of
/// entries that would fit, and openraft sends that many instead.
const MAX_APPEND_BYTES: usize = 8 << 20;

/// How long the last chunk of a snapshot waits for the peer's answer, which comes once the
/// peer has installed it: a learner installs a national image (434 MB) in 20–50 s on a busy
/// machine. A last chunk lost in a partition is sent again after this long.
const INSTALL_AT_MOST: Duration = Duration::from_secs(120);

/// A snapshot's chunk when openraft names no size (its default, 3 MiB).
const SNAPSHOT_CHUNK: usize = 3 << 20;

/// Failures of one snapshot chunk in a row (with pauses of 20 ms doubling) before the snapshot
/// is given up to openraft, which starts it again after its own back-off.
const SNAPSHOT_CHUNK_TRIES: u32 = 5;

/// How long a request may hold a replication stream's lane past openraft's timeout before it
/// is given up (its connection closed) and the next may go.
const LANE_HELD_AT_MOST: Duration = Duration::from_secs(5);

impl HttpNetwork {
    /// Sends one RPC at once and returns the wait for its answer (which does not borrow the
    /// client, so that a heartbeat's can run on its own). The exchange runs as its own task:
    /// when openraft gives up waiting (its timeouts are as short as one heartbeat), the request
    /// still completes in the background and its keep-alive connection goes back to the pool
    /// instead of being torn down — under load, reconnecting would cost more than the RPC.
    fn call(
        &self,
        rpc: Framed,
        ttl: Duration,
        lane: Option<OwnedSemaphorePermit>,
    ) -> impl Future<Output = Result<RaftReply, CallError>> + Send + 'static {
        let Framed { kind, body } = rpc;
        let started = std::time::Instant::now();
        let exchange = body.map(|body| {
            let exchange = Self::exchange(
                self.client.clone(),
                self.url.clone(),
                self.secret.clone(),
                self.target,
                body,
            );
            tokio::spawn(async move {
                let Some(lane) = lane else {
                    return exchange.await;
                };
                // The lane is held until the peer answers, but not forever: a request lost
                // in a partition may wait for TCP to give up (minutes) after the partition
                // healed, and the peer would get no entries meanwhile.
                let answer = tokio::time::timeout(LANE_HELD_AT_MOST.max(ttl), exchange).await;
                drop(lane);
                answer.unwrap_or(Err(CallError::Timeout))
            })
        });
        let (health, target) = (self.health.clone(), self.target);
        async move {
            let result = match exchange {
                Err(e) => Err(e),
                Ok(exchange) => {
                    let result = tokio::time::timeout(ttl, exchange).await;
                    metrics::histogram!("sonraft_raft_rpc_seconds", "rpc" => kind)
                        .record(started.elapsed().as_secs_f64());
                    match result {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) => Err(CallError::Network(AnyError::error(e.to_string()))),
                        Err(_) => Err(CallError::Timeout),
                    }
                }
            };
            let error = match &result {
                Ok(_) => None,
                Err(CallError::Unreachable(e) | CallError::Network(e)) => Some(e.to_string()),
                Err(CallError::Timeout) => Some(format!("no answer within {} ms", ttl.as_millis())),
            };
            health.observe(target, error.as_deref());
            result
        }
    }

    /// Waits (up to `ttl`) until the peer has answered this client's previous request, then
    /// holds the lane for the next one: `None` when the previous one is still out.
    ///
    /// openraft 0.9 gives up on an AppendEntries after one heartbeat and sends again at once
    /// (a timeout earns no back-off), while the request it gave up on still runs to its end
    /// here. A peer too busy to answer (a learner applying a national import it replays from the
    /// log) was sent a new batch of entries every heartbeat, each read whole into its memory
    /// while it waited for its Raft: a learner grew to 18 GB and was killed. One request with
    /// entries (or snapshot chunk) per replication stream is out at a time; the next waits for
    /// the peer's answer to it. Heartbeats go on without waiting: their answers are the
    /// leader's proof of a majority, and behind a held request the answer to each would come
    /// late and carry an old send time.
    async fn lane(&self, ttl: Duration) -> Option<OwnedSemaphorePermit> {
        match tokio::time::timeout(ttl, self.lane.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            _ => {
                let error = format!(
                    "its answer to the previous request is still out after {} ms more",
                    ttl.as_millis()
                );
                self.health.observe(self.target, Some(&error));
                None
            }
        }
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
    /// An AppendEntries without entries (a heartbeat, or a new commit index) is sent without
    /// waiting for its answer when its previous entry is the one the peer accepted last through
    /// this client: it is answered at once with what the leader knows already.
    ///
    /// Why: openraft 0.9 keeps one AppendEntries in flight per follower, and sends a new commit
    /// index as an AppendEntries of its own the moment it has one. Across a WAN the entries
    /// of the next change set then wait a whole round trip behind that message, so change sets
    /// back to back took two round trips each, and heartbeats added one to a change set that
    /// met them (DESIGN.md, Across a WAN).
    ///
    /// Why the early answer tells openraft nothing new: openraft sends a heartbeat with the
    /// follower's known match as its previous entry, and this client answers early only when
    /// that entry is the end of what the peer accepted in its last answer, so "success" repeats
    /// what the peer said (a probe of a follower's log, whose previous entry is not known to be
    /// there yet, and every AppendEntries with entries always wait for the answer). The real
    /// answer still arrives: an accepted one feeds the [`AckClock`] (the read lease and the
    /// quorum watch count only real answers, at their send time); anything else (a higher vote,
    /// a refusal, no answer within the timeout) makes the next AppendEntries wait for its answer
    /// again, which brings openraft the higher vote or the error. At most [`MAX_DETACHED`]
    /// heartbeats per peer are out unanswered. A client on its first call (openraft's
    /// `ensure_linearizable` makes a new one for each call) always waits: that round of
    /// heartbeats is the proof of leadership.
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let ttl = option.hard_ttl();
        // Followers apply what they are told is committed: never beyond our own disk.
        rpc.leader_commit = self.synced.cap_commit(rpc.leader_commit);
        let detach = rpc.entries.is_empty()
            && self.matched == Some(rpc.prev_log_id)
            && self.detached.start();
        if !detach {
            // This answer will tell openraft whatever a refused heartbeat had to.
            self.detached.failed.store(false, Ordering::Release);
        }
        let (vote, sent) = (rpc.vote, self.acks.now_us());
        let end = rpc
            .entries
            .last()
            .map_or(rpc.prev_log_id, |e| Some(e.log_id));
        let entries = rpc.entries.len();
        let framed = Framed::new(&RaftRpc::Append(rpc));
        if entries > 1 && framed.len() > MAX_APPEND_BYTES {
            let fit = (entries * MAX_APPEND_BYTES / framed.len()).max(1);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fit as u64),
            ));
        }
        // Heartbeats do not wait in the lane: they are small, and their answers are what tells
        // this leader that a majority still follows it (the ack clock).
        let lane = if entries == 0 {
            None
        } else {
            match self.lane(ttl).await {
                Some(permit) => Some(permit),
                None => {
                    self.matched = None;
                    return Err(self.rpc_error(CallError::Timeout, RPCTypes::AppendEntries, ttl));
                }
            }
        };
        let exchange = self.call(framed, ttl, lane);
        if detach {
            let (acks, target, detached) = (self.acks.clone(), self.target, self.detached.clone());
            tokio::spawn(async move {
                let accepted = match exchange.await {
                    Ok(RaftReply::Append(Ok(r))) => {
                        if took_our_vote(&r) {
                            acks.record(target, &vote, sent);
                        }
                        matches!(r, AppendEntriesResponse::Success)
                    }
                    _ => false,
                };
                detached.answered(accepted);
            });
            return Ok(AppendEntriesResponse::Success);
        }
        let result = exchange.await;
        self.matched = match &result {
            Ok(RaftReply::Append(Ok(AppendEntriesResponse::Success))) => Some(end),
            Ok(RaftReply::Append(Ok(AppendEntriesResponse::PartialSuccess(m)))) => Some(*m),
            _ => None,
        };
        match result {
            Ok(RaftReply::Append(r)) => {
                if r.as_ref().is_ok_and(took_our_vote) {
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
        self.send_chunk(rpc, option.hard_ttl()).await
    }

    /// Sends a snapshot in chunks, as openraft's own `Chunked` does, with one difference: the
    /// last chunk waits up to [`INSTALL_AT_MOST`] for its answer, which comes once the peer has
    /// installed the snapshot.
    ///
    /// Why: `Chunked` gives every chunk `install_snapshot_timeout` (10 s here), and a learner
    /// took 20–50 s to install a national image's 434 MB on this machine. The leader gave up
    /// on the last chunk and streamed the whole snapshot again from its start every 10 s, which
    /// the learner received into a file beside its install. Every other chunk keeps openraft's
    /// timeout, so one lost in a partition goes again soon.
    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let Snapshot {
            meta,
            snapshot: mut file,
        } = snapshot;
        let read_error = |e: std::io::Error| {
            let subject = ErrorSubject::Snapshot(Some(meta.signature()));
            StorageError::from_io_error(subject, ErrorVerb::Read, e)
        };
        let end = file.seek(SeekFrom::End(0)).await.map_err(read_error)?;
        let chunk = option
            .snapshot_chunk_size()
            .unwrap_or(SNAPSHOT_CHUNK)
            .max(1) as u64;
        let mut cancel = std::pin::pin!(cancel);
        let (mut offset, mut failures) = (0u64, 0u32);
        loop {
            file.seek(SeekFrom::Start(offset))
                .await
                .map_err(read_error)?;
            let mut data = Vec::with_capacity(chunk.min(end.saturating_sub(offset)) as usize);
            (&mut file)
                .take(chunk)
                .read_to_end(&mut data)
                .await
                .map_err(read_error)?;
            let sent = data.len() as u64;
            if sent == 0 && offset < end {
                // The file got shorter than when it was opened: sending on would send empty
                // chunks for ever.
                return Err(read_error(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the snapshot file ended at {offset} of {end} bytes"),
                ))
                .into());
            }
            let done = offset + sent >= end;
            let rpc = InstallSnapshotRequest {
                vote,
                meta: meta.clone(),
                offset,
                data,
                done,
            };
            let ttl = if done {
                option.hard_ttl().max(INSTALL_AT_MOST)
            } else {
                option.hard_ttl()
            };
            let answer = tokio::select! {
                closed = cancel.as_mut() => return Err(closed.into()),
                answer = self.send_chunk(rpc, ttl) => answer,
            };
            let error: StreamingError<TypeConfig, Fatal<NodeId>> = match answer {
                Ok(r) if r.vote > vote || done => return Ok(SnapshotResponse::new(r.vote)),
                Ok(_) => {
                    (offset, failures) = (offset + sent, 0);
                    continue;
                }
                Err(RPCError::RemoteError(RemoteError {
                    target,
                    target_node,
                    source,
                })) => match source {
                    RaftError::Fatal(source) => {
                        return Err(RemoteError {
                            target,
                            target_node,
                            source,
                        }
                        .into());
                    }
                    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m)) => {
                        tracing::info!(target, mismatch = %m, "the peer wants the snapshot from its start");
                        (offset, failures) = (0, 0);
                        continue;
                    }
                },
                Err(RPCError::PayloadTooLarge(p)) => {
                    let e =
                        AnyError::error(format!("a snapshot chunk was refused as too large: {p}"));
                    return Err(NetworkError::new(&e).into());
                }
                Err(RPCError::Timeout(e)) => e.into(),
                Err(RPCError::Network(e)) => e.into(),
                Err(RPCError::Unreachable(e)) => e.into(),
            };
            failures += 1;
            if failures >= SNAPSHOT_CHUNK_TRIES {
                return Err(error);
            }
            tracing::debug!(target = self.target, offset, error = %error, "a snapshot chunk goes again");
            let pause = Duration::from_millis(10 << failures.min(5));
            tokio::select! {
                closed = cancel.as_mut() => return Err(closed.into()),
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let ttl = option.hard_ttl();
        match self.call(Framed::new(&RaftRpc::Vote(rpc)), ttl, None).await {
            Ok(RaftReply::Vote(r)) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.rpc_error(e, RPCTypes::Vote, ttl)),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(retry_pauses(self.retry_cap))
    }
}

impl HttpNetwork {
    /// Sends one chunk of a snapshot and waits up to `ttl` for its answer.
    async fn send_chunk(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        ttl: Duration,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let Some(lane) = self.lane(ttl).await else {
            return Err(self.rpc_error(CallError::Timeout, RPCTypes::InstallSnapshot, ttl));
        };
        match self
            .call(Framed::new(&RaftRpc::Snapshot(rpc)), ttl, Some(lane))
            .await
        {
            Ok(RaftReply::Snapshot(r)) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.rpc_error(e, RPCTypes::InstallSnapshot, ttl)),
        }
    }
}

/// Whether a follower's answer to an AppendEntries says it took the leader's vote, that is
/// accepted this leader when the request arrived: every answer but a higher vote. Only those
/// feed the [`AckClock`] (the read lease and read-index proofs count them).
fn took_our_vote(answer: &AppendEntriesResponse<NodeId>) -> bool {
    matches!(
        answer,
        AppendEntriesResponse::Success
            | AppendEntriesResponse::PartialSuccess(_)
            | AppendEntriesResponse::Conflict
    )
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

    use openraft::{CommittedLeaderId, Entry, EntryPayload, Vote};
    use tokio::sync::{mpsc, oneshot};

    /// A peer whose every AppendEntries the test answers by hand: each request arrives on the
    /// channel with the sender of its answer.
    type Held = (
        AppendEntriesRequest<TypeConfig>,
        oneshot::Sender<AppendEntriesResponse<NodeId>>,
    );

    async fn hand_answered_peer() -> (String, mpsc::UnboundedReceiver<Held>) {
        let (tx, rx) = mpsc::unbounded_channel::<Held>();
        let addr = peer(move |rpc| {
            let tx = tx.clone();
            async move {
                let RaftRpc::Append(rpc) = rpc else {
                    panic!("only AppendEntries here")
                };
                let (answer, answered) = oneshot::channel();
                tx.send((rpc, answer)).unwrap();
                RaftReply::Append(Ok(answered.await.unwrap()))
            }
        })
        .await;
        (addr, rx)
    }

    /// A peer on loopback that answers each request with what `answer` makes of it; its
    /// address.
    async fn peer<F, A>(answer: F) -> String
    where
        F: Fn(RaftRpc) -> A + Clone + Send + Sync + 'static,
        A: Future<Output = RaftReply> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let answer = answer.clone();
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let answer = answer.clone();
                        async move {
                            let bytes = req.into_body().collect().await?.to_bytes();
                            let reply = answer(decode_frame(&bytes).unwrap()).await;
                            let body = Full::new(Bytes::from(encode_frame(&reply).unwrap()));
                            Ok::<_, hyper::Error>(hyper::Response::new(body))
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    /// An AppendEntries of leader 1 in term 1 with `entries` entries after entry `prev`.
    fn append(prev: u64, entries: u64) -> AppendEntriesRequest<TypeConfig> {
        let log_id = |index| LogId::new(CommittedLeaderId::new(1, 1), index);
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(log_id(prev)),
            leader_commit: None,
            entries: (prev + 1..=prev + entries)
                .map(|index| Entry {
                    log_id: log_id(index),
                    payload: EntryPayload::Blank,
                })
                .collect(),
        }
    }

    /// A client of node 2 at `addr`.
    async fn client_of(addr: String) -> HttpNetwork {
        let durable = Arc::new(DurableLog::new(None));
        let mut factory = HttpNetworkFactory::new(1, "secret", durable, None).unwrap();
        let node = NodeInfo {
            site: "S2".into(),
            raft_addr: addr,
            api_addr: "127.0.0.1:1".into(),
        };
        factory.new_client(2, &node).await
    }

    /// Sends `rpc` on `net` and checks that the call waits until the peer answers `answer`;
    /// returns the client, the request as the peer got it, and what the call returned.
    async fn waits_for_the_peer(
        net: HttpNetwork,
        peer: &mut mpsc::UnboundedReceiver<Held>,
        rpc: AppendEntriesRequest<TypeConfig>,
        answer: AppendEntriesResponse<NodeId>,
        what: &str,
    ) -> (
        HttpNetwork,
        AppendEntriesRequest<TypeConfig>,
        Result<AppendEntriesResponse<NodeId>, String>,
    ) {
        let mut net = net;
        let call = tokio::spawn(async move {
            let r = net
                .append_entries(rpc, RPCOption::new(Duration::from_secs(30)))
                .await;
            (net, r.map_err(|e| e.to_string()))
        });
        let (got, answered) = peer.recv().await.unwrap();
        assert!(!call.is_finished(), "{what}: answered before the peer did");
        answered.send(answer).unwrap();
        let (net, r) = call.await.unwrap();
        (net, got, r)
    }

    #[tokio::test]
    async fn a_heartbeat_waits_for_its_answer_unless_it_follows_what_the_peer_accepted_last() {
        let (addr, mut peer) = hand_answered_peer().await;
        let net = client_of(addr).await;
        let ok = || AppendEntriesResponse::Success;
        let option = || RPCOption::new(Duration::from_secs(30));

        // A new client's first heartbeat (ensure_linearizable's) waits for the peer; so do
        // entries, always.
        let (net, _, r) =
            waits_for_the_peer(net, &mut peer, append(1, 0), ok(), "a first heartbeat").await;
        assert_eq!(r, Ok(ok()));
        let (net, got, r) = waits_for_the_peer(net, &mut peer, append(1, 2), ok(), "entries").await;
        assert_eq!((got.entries.len(), r), (2, Ok(ok())));

        // A heartbeat that does not follow the entry the peer accepted last (a probe) waits.
        let (net, _, r) = waits_for_the_peer(net, &mut peer, append(2, 0), ok(), "a probe").await;
        assert_eq!(r, Ok(ok()));
        // It was accepted: the peer's known match is entry 2 now, not 3; once a heartbeat
        // after 3 is accepted, 3 again.
        let (mut net, _, r) =
            waits_for_the_peer(net, &mut peer, append(3, 0), ok(), "past the match").await;
        assert_eq!(r, Ok(ok()));
        // Now heartbeats after entry 3 are answered at once, and still sent, up to
        // MAX_DETACHED of them. (Bounded so that a client that waits fails here instead of
        // hanging: the peer answers only below.)
        let mut held = Vec::new();
        for _ in 0..MAX_DETACHED {
            let r = tokio::time::timeout(
                Duration::from_secs(20),
                net.append_entries(append(3, 0), option()),
            )
            .await
            .expect("a heartbeat waited for the peer's answer after an accepted exchange");
            assert_eq!(r.unwrap(), ok());
            held.push(peer.recv().await.unwrap().1);
        }

        // While they are out, the next one waits.
        let (net, _, r) =
            waits_for_the_peer(net, &mut peer, append(3, 0), ok(), "one too many").await;
        assert_eq!(r, Ok(ok()));

        // One held is accepted and one refused: the next heartbeat waits and brings openraft
        // the answer, and the one after that waits too, until the peer accepts one again.
        let higher = Vote::new_committed(2, 3);
        held.pop().unwrap().send(ok()).unwrap();
        held.pop()
            .unwrap()
            .send(AppendEntriesResponse::HigherVote(higher))
            .unwrap();
        while !net.detached.failed.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        let refused = || AppendEntriesResponse::HigherVote(higher);
        let (net, _, r) =
            waits_for_the_peer(net, &mut peer, append(3, 0), refused(), "after a refusal").await;
        assert_eq!(r, Ok(refused()));
        let (_, _, r) =
            waits_for_the_peer(net, &mut peer, append(3, 0), ok(), "after a higher vote").await;
        assert_eq!(r, Ok(ok()));
        for answer in held {
            answer.send(ok()).unwrap();
        }
    }

    #[tokio::test]
    async fn a_heartbeat_answered_at_once_and_then_refused_is_no_acceptance() {
        let (addr, mut peer) = hand_answered_peer().await;
        let net = client_of(addr).await;
        let vote = Vote::new_committed(1, 1);
        let ok = || AppendEntriesResponse::Success;
        let (mut net, _, r) =
            waits_for_the_peer(net, &mut peer, append(1, 0), ok(), "a first heartbeat").await;
        assert_eq!(r, Ok(ok()));
        let accepted = net.acks.last_accepted(&vote, 2).expect("it was accepted");

        // The next heartbeat is answered at once and still sent; the peer follows a newer
        // leader by now. Its refusal must not count as the peer accepting this leader: a
        // deposed leader woken from a pause served a stale read on the lease that did.
        let r = net
            .append_entries(append(1, 0), RPCOption::new(Duration::from_secs(30)))
            .await;
        assert_eq!(r.unwrap(), ok());
        let (_, answer) = peer.recv().await.unwrap();
        answer
            .send(AppendEntriesResponse::HigherVote(Vote::new_committed(2, 3)))
            .unwrap();
        while !net.detached.failed.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            net.acks.last_accepted(&vote, 2),
            Some(accepted),
            "a refused heartbeat is no acceptance"
        );
    }

    /// A client whose request with entries the peer has not answered within openraft's
    /// timeout (100 ms, as `short` gives it); the peer, and the answer it holds back.
    async fn with_a_request_held() -> (
        HttpNetwork,
        mpsc::UnboundedReceiver<Held>,
        oneshot::Sender<AppendEntriesResponse<NodeId>>,
        RPCOption,
    ) {
        let (addr, mut peer) = hand_answered_peer().await;
        let mut net = client_of(addr).await;
        let short = RPCOption::new(Duration::from_millis(100));
        // The peer does not answer in time: openraft is told so, the request stays out.
        let r = net.append_entries(append(1, 3), short.clone()).await;
        assert!(matches!(r, Err(RPCError::Timeout(_))), "{r:?}");
        let (first, held) = peer.recv().await.unwrap();
        assert_eq!(first.prev_log_id.unwrap().index, 1);
        (net, peer, held, short)
    }

    #[tokio::test]
    async fn no_request_goes_to_a_peer_behind_one_it_has_not_answered() {
        let (mut net, mut peer, held, short) = with_a_request_held().await;

        // openraft sends again at once: nothing goes out behind the unanswered one.
        for prev in [2, 3] {
            let r = net.append_entries(append(prev, 3), short.clone()).await;
            assert!(matches!(r, Err(RPCError::Timeout(_))), "{r:?}");
        }

        // A heartbeat still goes: its answer is the leader's proof that the peer follows it.
        let ok = || AppendEntriesResponse::Success;
        let (net, beat, r) =
            waits_for_the_peer(net, &mut peer, append(1, 0), ok(), "a heartbeat").await;
        assert!(beat.entries.is_empty());
        assert_eq!(r, Ok(ok()));

        // Once the peer answers the held one, the next request goes.
        held.send(ok()).unwrap();
        let (_, next, r) = waits_for_the_peer(net, &mut peer, append(4, 3), ok(), "entries").await;
        assert_eq!(
            next.prev_log_id.unwrap().index,
            4,
            "a request sent behind the unanswered one reached the peer"
        );
        assert_eq!(r, Ok(ok()));
    }

    #[tokio::test]
    async fn a_batch_too_large_is_refused_with_the_entries_that_fit_and_one_entry_goes_whole() {
        let (addr, mut peer) = hand_answered_peer().await;
        let mut net = client_of(addr).await;
        // Ten entries of 2 MiB each: 20 MiB, over the 8 MiB a batch may carry.
        let mut rpc = append(1, 10);
        for e in &mut rpc.entries {
            e.payload = EntryPayload::Normal(crate::command::Envelope {
                format: 1,
                log_time_ms: 0,
                body: vec![7; 2 << 20],
            });
        }
        let single = AppendEntriesRequest {
            entries: rpc.entries[..1].to_vec(),
            ..append(1, 0)
        };
        let r = net
            .append_entries(rpc, RPCOption::new(Duration::from_secs(30)))
            .await;
        match r {
            Err(RPCError::PayloadTooLarge(p)) => assert_eq!(p.entries_hint(), 3),
            other => panic!("{other:?}"),
        }
        let (_, got, r) = waits_for_the_peer(
            net,
            &mut peer,
            single,
            AppendEntriesResponse::Success,
            "one large entry",
        )
        .await;
        assert_eq!(
            (got.entries.len(), r),
            (1, Ok(AppendEntriesResponse::Success))
        );
    }

    #[tokio::test]
    async fn a_request_the_peer_never_answers_gives_up_the_lane_after_a_while() {
        let (mut net, mut peer, _never_answered, short) = with_a_request_held().await;
        // Sent again until one goes (LANE_HELD_AT_MOST after the first).
        let call = tokio::spawn(async move {
            loop {
                if net
                    .append_entries(append(2, 3), short.clone())
                    .await
                    .is_ok()
                {
                    return;
                }
            }
        });
        let (next, answer) = tokio::time::timeout(Duration::from_secs(60), peer.recv())
            .await
            .expect("the lane stayed held by a request the peer never answered")
            .unwrap();
        assert_eq!(next.prev_log_id.unwrap().index, 2);
        answer.send(AppendEntriesResponse::Success).unwrap();
        call.await.unwrap();
    }

    /// A peer that takes `install` to answer the last chunk of a snapshot (it installs it) and
    /// answers the others at once; it records each chunk it got as (offset, data, done).
    async fn installing_peer(
        install: Duration,
    ) -> (String, Arc<std::sync::Mutex<Vec<(u64, Vec<u8>, bool)>>>) {
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = got.clone();
        let addr = peer(move |rpc| {
            let seen = seen.clone();
            async move {
                let RaftRpc::Snapshot(rpc) = rpc else {
                    panic!("only snapshot chunks here")
                };
                seen.lock().unwrap().push((rpc.offset, rpc.data, rpc.done));
                if rpc.done {
                    tokio::time::sleep(install).await;
                }
                RaftReply::Snapshot(Ok(InstallSnapshotResponse { vote: rpc.vote }))
            }
        })
        .await;
        (addr, got)
    }

    /// A snapshot of `len` bytes (a counting pattern) in a file of its own.
    fn snapshot_of(len: usize) -> (Snapshot<TypeConfig>, Vec<u8>) {
        use std::io::Write;
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&bytes).unwrap();
        let meta = openraft::SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 10)),
            last_membership: Default::default(),
            snapshot_id: "1-10-0".into(),
        };
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(f)),
        };
        (snapshot, bytes)
    }

    #[tokio::test]
    async fn a_snapshot_goes_once_though_the_peer_installs_it_for_longer_than_a_chunk_may_take() {
        // Each chunk may take 300 ms; the peer installs for 1.5 s before it answers the last.
        let (addr, got) = installing_peer(Duration::from_millis(1500)).await;
        let mut net = client_of(addr).await;
        let (snapshot, bytes) = snapshot_of(SNAPSHOT_CHUNK * 2 + 12_345);
        let vote = Vote::new_committed(1, 1);
        let never = std::future::pending::<ReplicationClosed>();
        let option = RPCOption::new(Duration::from_millis(300));
        let r = net.full_snapshot(vote, snapshot, never, option).await;
        assert_eq!(
            r.map_err(|e| e.to_string()),
            Ok(SnapshotResponse::new(vote))
        );

        let got = got.lock().unwrap();
        let offsets: Vec<(u64, bool)> = got.iter().map(|(o, _, d)| (*o, *d)).collect();
        let c = SNAPSHOT_CHUNK as u64;
        assert_eq!(
            offsets,
            [(0, false), (c, false), (2 * c, true)],
            "sent more than once"
        );
        let sent: Vec<u8> = got.iter().flat_map(|(_, d, _)| d.iter().copied()).collect();
        assert!(sent == bytes, "the chunks do not make up the snapshot");
    }

    #[tokio::test]
    async fn a_snapshot_waiting_for_its_install_stops_when_the_replication_does() {
        let (addr, _got) = installing_peer(Duration::from_secs(600)).await;
        let mut net = client_of(addr).await;
        let (snapshot, _) = snapshot_of(1000);
        let (stop, stopped) = oneshot::channel::<()>();
        let cancel = async move {
            let _ = stopped.await;
            ReplicationClosed::new("the test stops it")
        };
        let option = RPCOption::new(Duration::from_millis(300));
        let call = tokio::spawn(async move {
            net.full_snapshot(Vote::new_committed(1, 1), snapshot, cancel, option)
                .await
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !call.is_finished(),
            "gave up on the install after the chunk timeout"
        );
        stop.send(()).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("went on waiting after the replication stopped")
            .unwrap();
        assert!(matches!(r, Err(StreamingError::Closed(_))), "{r:?}");
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
