//! One load-generator client's own keep-alive HTTP/1.1 connection, driven by the client's task.
//!
//! A closed-loop client has one request outstanding at a time, so it needs no pool, and it
//! can poll the connection itself instead of handing each request to a connection task and
//! waiting to be woken with the answer: two task switches fewer per request, on a machine whose
//! two cores the load generator shares with the nodes it measures.

use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Conn = Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// An open connection and the `host:port` it goes to.
struct Open {
    authority: String,
    sender: SendRequest<Full<Bytes>>,
    conn: Pin<Box<Conn>>,
}

/// One client's connection; (re)opened on demand, dropped after any failure.
pub struct Session {
    open: Option<Open>,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl Session {
    /// A session sending `authorization` (e.g. `Bearer <token>`) on every request.
    pub fn new(authorization: Option<HeaderValue>, timeout: Duration) -> Self {
        Session {
            open: None,
            authorization,
            timeout,
        }
    }

    /// Sends one request to `authority` (`host:port`) and reads the whole answer.
    pub async fn send(
        &mut self,
        authority: &str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let result =
            tokio::time::timeout(self.timeout, self.exchange(authority, method, path, body))
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "{authority} did not answer within {:?}",
                        self.timeout
                    ))
                });
        if result.is_err() {
            // Whatever state the connection is in, the next request starts afresh.
            self.open = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        authority: &str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        if self.open.as_ref().is_none_or(|o| o.authority != authority) {
            self.open = Some(connect(authority).await?);
        }
        let Some(Open { sender, conn, .. }) = self.open.as_mut() else {
            bail!("no connection to {authority}");
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, authority);
        if let Some(auth) = &self.authorization {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .context("request not built")?;
        let answer = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        tokio::pin!(answer);
        // The connection makes progress only while it is polled: poll it beside the answer.
        tokio::select! {
            biased;
            r = &mut answer => r.with_context(|| format!("request to {authority} failed")),
            r = conn.as_mut() => match r {
                Ok(()) => bail!("{authority} closed the connection"),
                Err(e) => Err(e).with_context(|| format!("connection to {authority} failed")),
            },
        }
    }
}

async fn connect(authority: &str) -> anyhow::Result<Open> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(authority))
        .await
        .with_context(|| format!("connecting to {authority} timed out"))?
        .with_context(|| format!("cannot connect to {authority}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY not set")?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake with {authority} failed"))?;
    Ok(Open {
        authority: authority.to_string(),
        sender,
        conn: Box::pin(conn),
    })
}
