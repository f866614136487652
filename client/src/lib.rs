//! A small JSON-over-HTTP/1.1 client for the admin API: pooled keep-alive connections with
//! `TCP_NODELAY`, a bearer token, a per-request timeout, and `https://` trusting the CA it was
//! given ([`ApiClient::with_tls`]). Used by `ctl`, by nodes forwarding
//! requests to the leader, by the load generator and by the black-box tests.
//!
//! It is a crate of its own because the node, the test kit and the benchmarks all speak to the
//! admin API and none of them may depend on another: below all three, it keeps the benchmarks
//! and the test kit off the node's library.
//!
//! [`v1`] is the API's contract: the typed request and answer bodies both ends share.
//! [`sse`] reads the event stream of `GET /watch`.
#![forbid(unsafe_code)]

pub mod sse;
pub mod v1;

/// How a client comes to trust the nodes' certificates: the CA's PEM file.
pub use sonraft_tls::{TlsError, trust_ca};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sonraft_tls::rustls::ClientConfig;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made: the request was not delivered.
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The node's certificate was not trusted (signed by another CA, expired, or not for that
    /// address): the request was not delivered, and retrying will not help.
    #[error(
        "{url}: its TLS certificate was not trusted ({reason}); give the CA that signed the \
         nodes' certificates (sonraft ctl --ca FILE, or SONRAFT_CA)"
    )]
    Untrusted { url: String, reason: String },
    /// The connection broke: the request may or may not have been delivered.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} did not answer within {0:?}", .timeout)]
    Timeout { url: String, timeout: Duration },
    #[error("bad request to {url}: {reason}")]
    Request { url: String, reason: String },
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub content_type: Option<String>,
    /// `Retry-After` in seconds, when the server sent one.
    pub retry_after: Option<u64>,
    pub body: Bytes,
}

impl ApiResponse {
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body read as one of the [`v1`] answers.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The `{"error", "detail"}` body of an error answer (`None` when it is not one).
    pub fn error(&self) -> Option<v1::ErrorBody> {
        self.parse().ok()
    }
}

/// `path?query` with `query` (one of the [`v1`] query types) percent-encoded; just `path` when
/// the query has no field set.
pub fn with_query<Q: Serialize>(path: &str, query: &Q) -> String {
    match serde_urlencoded::to_string(query) {
        Ok(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_string(),
    }
}

/// Pooled admin-API client. Cheap to clone.
/// A request's body: whole, or streamed from a file (`POST /image/import` of a large image).
pub type RequestBody = BoxBody<Bytes, std::io::Error>;

#[derive(Clone)]
pub struct ApiClient {
    /// `Err` when TLS could not be set up (every request then fails with that reason).
    http: Result<Client<sonraft_tls::Connector, RequestBody>, String>,
    /// The scheme of addresses given without one: `https` once a CA is given.
    scheme: &'static str,
    /// `Bearer <token>`, built once: a header value per request would be an allocation per
    /// request on the load generator's hot path. `Err` when the token cannot be a header value
    /// (every request then fails with that reason).
    authorization: Result<Option<HeaderValue>, String>,
    timeout: Duration,
}

/// `host:port` or `http://host:port` → `http://host:port`, without a trailing slash.
pub fn base_url(addr: &str) -> String {
    let a = addr.trim().trim_end_matches('/');
    if a.starts_with("http://") || a.starts_with("https://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}

/// The `Authorization` value for `token`: `Bearer <token>`.
pub fn bearer(token: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the token is not a valid HTTP header value".to_string())
}

impl ApiClient {
    /// A client for plain `http://` nodes; an `https://` node's certificate is not trusted.
    pub fn new(token: Option<String>, timeout: Duration) -> Self {
        Self::with_tls(token, timeout, None)
    }

    /// A client that trusts the certificates `tls` trusts (see [`sonraft_tls::trust_ca`]),
    /// and takes an address without a scheme as `https://`; `None`: as [`ApiClient::new`].
    pub fn with_tls(
        token: Option<String>,
        timeout: Duration,
        tls: Option<Arc<ClientConfig>>,
    ) -> Self {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let http = match tls {
            Some(t) => Ok(t),
            None => sonraft_tls::trust_nothing(),
        }
        .map(|tls| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(512)
                .build(sonraft_tls::connector(connector, tls))
        })
        .map_err(|e| e.to_string());
        ApiClient {
            http,
            scheme,
            authorization: token.as_deref().map(bearer).transpose(),
            timeout,
        }
    }

    /// `addr` as a base URL: `host:port` gets this client's scheme (`https` when it was given
    /// a CA), an address with a scheme keeps it.
    pub fn base_url(&self, addr: &str) -> String {
        let a = addr.trim().trim_end_matches('/');
        if a.starts_with("http://") || a.starts_with("https://") {
            a.to_string()
        } else {
            format!("{}://{a}", self.scheme)
        }
    }

    /// Sends one request. `headers` are added as given; an `authorization` among them replaces
    /// the client's own token (a node forwarding a caller's request sends it as the caller).
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<ApiResponse, ClientError> {
        // JSON unless the caller names the type (a forwarded body keeps its own).
        let typed = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(hyper::header::CONTENT_TYPE.as_str()));
        let content_type = (body.is_some() && !typed).then_some("application/json");
        let body = whole_body(body.unwrap_or_default());
        self.exchange(method, url, body, content_type, headers, Some(self.timeout))
            .await
    }

    /// Sends `body` as it comes (a large file, read on while it is sent), as `content_type`.
    /// No deadline covers the whole exchange, which lasts as long as the body does: the caller
    /// bounds it if it must.
    pub async fn send_stream(
        &self,
        method: Method,
        url: &str,
        body: RequestBody,
        content_type: &str,
    ) -> Result<ApiResponse, ClientError> {
        self.exchange(method, url, body, Some(content_type), &[], None)
            .await
    }

    /// Sends one request and answers the response as it arrives, its body unread.
    async fn request(
        &self,
        method: Method,
        url: &str,
        body: RequestBody,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let http = self.http.as_ref().map_err(|reason| ClientError::Request {
            url: url.into(),
            reason: format!("TLS not set up: {reason}"),
        })?;
        let authorization = self
            .authorization
            .as_ref()
            .map_err(|reason| ClientError::Request {
                url: url.into(),
                reason: reason.clone(),
            })?;
        let mut req = Request::builder().method(method).uri(url);
        let own_token = !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(hyper::header::AUTHORIZATION.as_str()));
        if let Some(auth) = authorization.as_ref().filter(|_| own_token) {
            req = req.header(hyper::header::AUTHORIZATION, auth.clone());
        }
        if let Some(t) = content_type {
            req = req.header(hyper::header::CONTENT_TYPE, t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body).map_err(|e| ClientError::Request {
            url: url.into(),
            reason: e.to_string(),
        })?;
        http.request(req).await.map_err(|e| {
            if sonraft_tls::is_untrusted_certificate(&e) {
                ClientError::Untrusted {
                    url: url.into(),
                    reason: error_chain(&e),
                }
            } else if e.is_connect() {
                ClientError::Connect {
                    url: url.into(),
                    reason: error_chain(&e),
                }
            } else {
                ClientError::Unreachable {
                    url: url.into(),
                    reason: error_chain(&e),
                }
            }
        })
    }

    /// `GET url`, answered as its status and its body as it comes: a download larger than
    /// should be held in memory. The client's timeout covers the answer's head; the caller
    /// reads the body at its own pace.
    pub async fn get_streamed(
        &self,
        url: &str,
    ) -> Result<(StatusCode, hyper::body::Incoming), ClientError> {
        let head = self.request(Method::GET, url, whole_body(Bytes::new()), None, &[]);
        match tokio::time::timeout(self.timeout, head).await {
            Ok(r) => r.map(|resp| (resp.status(), resp.into_body())),
            Err(_) => Err(ClientError::Timeout {
                url: url.into(),
                timeout: self.timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        url: &str,
        body: RequestBody,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
        timeout: Option<Duration>,
    ) -> Result<ApiResponse, ClientError> {
        let exchange = async {
            let resp = self
                .request(method, url, body, content_type, headers)
                .await?;
            let status = resp.status();
            let content_type = resp
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let retry_after = resp
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: url.into(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok(ApiResponse {
                status,
                content_type,
                retry_after,
                body,
            })
        };
        let Some(timeout) = timeout else {
            return exchange.await;
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                url: url.into(),
                timeout,
            }),
        }
    }

    pub async fn get(&self, base: &str, path: &str) -> Result<ApiResponse, ClientError> {
        self.send(
            Method::GET,
            &format!("{}{path}", self.base_url(base)),
            None,
            &[],
        )
        .await
    }

    /// Sends `body` (a [`v1`] request, or any JSON) as JSON.
    pub async fn post<B: Serialize + ?Sized>(
        &self,
        base: &str,
        path: &str,
        body: &B,
    ) -> Result<ApiResponse, ClientError> {
        self.send_json(Method::POST, base, path, body).await
    }

    /// `PUT`s `body` as JSON.
    pub async fn put<B: Serialize + ?Sized>(
        &self,
        base: &str,
        path: &str,
        body: &B,
    ) -> Result<ApiResponse, ClientError> {
        self.send_json(Method::PUT, base, path, body).await
    }

    async fn send_json<B: Serialize + ?Sized>(
        &self,
        method: Method,
        base: &str,
        path: &str,
        body: &B,
    ) -> Result<ApiResponse, ClientError> {
        let url = format!("{}{path}", self.base_url(base));
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Request {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        self.send(method, &url, Some(Bytes::from(bytes)), &[]).await
    }

    pub async fn delete(&self, base: &str, path: &str) -> Result<ApiResponse, ClientError> {
        self.send(
            Method::DELETE,
            &format!("{}{path}", self.base_url(base)),
            None,
            &[],
        )
        .await
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

/// A request body read from `file` as it is sent, 256 KiB at a time; `sent` counts the bytes
/// handed to the connection (for a progress display).
pub fn file_body(file: tokio::fs::File, sent: Arc<std::sync::atomic::AtomicU64>) -> RequestBody {
    FileBody {
        file,
        buf: vec![0; 256 << 10],
        sent,
        done: false,
    }
    .boxed()
}

struct FileBody {
    file: tokio::fs::File,
    buf: Vec<u8>,
    sent: Arc<std::sync::atomic::AtomicU64>,
    done: bool,
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        use std::task::Poll;
        use tokio::io::AsyncRead;
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let mut rb = tokio::io::ReadBuf::new(&mut this.buf);
        match std::pin::Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Ok(())) => {
                let data = Bytes::copy_from_slice(rb.filled());
                this.sent
                    .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// A request body sent as its chunks come from `chunks`, for a producer that writes while it
/// is sent (a restore's image as JSON lines). `None` ends it; a sender dropped before that
/// (the producer failed or panicked) ends it with an error, so that the request fails rather
/// than deliver a body cut short as if whole. The channel's bound holds the producer back to
/// the pace of the connection.
pub fn channel_body(chunks: tokio::sync::mpsc::Receiver<Option<Bytes>>) -> RequestBody {
    ChannelBody {
        chunks,
        ended: false,
    }
    .boxed()
}

struct ChannelBody {
    chunks: tokio::sync::mpsc::Receiver<Option<Bytes>>,
    ended: bool,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match this.chunks.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Some(b))) => Poll::Ready(Some(Ok(hyper::body::Frame::data(b)))),
            Poll::Ready(Some(None)) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(Some(Err(std::io::Error::other(
                    "the body's producer stopped before its end",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

/// Writes the chunks of a [`channel_body`] from a blocking thread: bytes gathered into chunks
/// of [`ChunkWriter::CHUNK`], each sent as it fills, waiting while the channel is full (the
/// connection's pace). [`ChunkWriter::finish`] sends the rest and ends the body; a writer
/// dropped without it (its producer failed or panicked) ends the body with an error. A
/// receiver gone (the request or response ended) is an error of kind `BrokenPipe`.
pub struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Option<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    pub const CHUNK: usize = 256 << 10;

    pub fn new(tx: tokio::sync::mpsc::Sender<Option<Bytes>>) -> ChunkWriter {
        ChunkWriter {
            tx,
            buf: Vec::with_capacity(Self::CHUNK),
        }
    }

    fn send(&self, chunk: Option<Bytes>) -> std::io::Result<()> {
        self.tx.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the receiver went away")
        })
    }

    /// Sends what is left and ends the body.
    pub fn finish(mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.send(Some(rest.into()))?;
        }
        self.send(None)
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CHUNK));
            self.send(Some(chunk.into()))?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A request body held whole (for [`ApiClient::send_stream`] with a body already in memory).
pub fn whole_body(bytes: Bytes) -> RequestBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

#[cfg(test)]
mod channel_body_tests {
    use super::*;

    async fn read(chunks: Vec<Option<&'static str>>) -> Result<Bytes, std::io::Error> {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        for c in chunks {
            tx.send(c.map(|s| Bytes::from_static(s.as_bytes())))
                .await
                .unwrap();
        }
        drop(tx);
        channel_body(rx).collect().await.map(|c| c.to_bytes())
    }

    #[tokio::test]
    async fn a_channel_body_ends_only_when_told_and_fails_when_its_producer_stops_short() {
        assert_eq!(
            read(vec![Some("a"), Some("b"), None]).await.unwrap(),
            Bytes::from_static(b"ab")
        );
        assert!(read(vec![Some("a"), Some("b")]).await.is_err());
    }

    /// Bytes written through a [`ChunkWriter`] arrive whole once it finishes; a writer dropped
    /// before that fails the body.
    #[tokio::test]
    async fn a_chunk_writer_ends_the_body_only_when_it_finishes() {
        use std::io::Write;
        let data: Vec<u8> = (0..ChunkWriter::CHUNK * 2 + 123).map(|i| i as u8).collect();
        for finish in [true, false] {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            let sent = data.clone();
            let writer = tokio::task::spawn_blocking(move || {
                let mut w = ChunkWriter::new(tx);
                w.write_all(&sent).unwrap();
                if finish {
                    w.finish().unwrap();
                }
            });
            let got = channel_body(rx).collect().await.map(|c| c.to_bytes());
            writer.await.unwrap();
            match got {
                Ok(b) => assert!(finish && b.as_ref() == data.as_slice()),
                Err(_) => assert!(!finish),
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let e = tokio::task::spawn_blocking(move || ChunkWriter::new(tx).finish())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    }
}
