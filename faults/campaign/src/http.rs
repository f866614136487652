//! A bare HTTP/1 client with a deadline on every request.
//!
//! The campaign has to tell "the request never left" (nothing can have happened) from "the
//! answer was lost" (anything can have happened), so errors keep that distinction:
//! [`HttpError::Connect`] versus [`HttpError::Timeout`] and [`HttpError::Io`]. Each request
//! opens its own connection: a pooled connection to a node that was killed, paused or cut off
//! would otherwise make the next request fail in ways that are hard to classify.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The connection could not be made: the request was never sent.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No complete answer before the deadline: the request may or may not have arrived.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke after the request may have been sent.
    #[error("connection failed: {0}")]
    Io(String),
    #[error("bad request URL {0:?}")]
    Url(String),
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    pub headers: hyper::HeaderMap,
}

impl Answer {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text, for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client with the operator's bearer token.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    authorization: String,
}

impl Http {
    pub fn new(token: &str) -> Http {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Http {
            client,
            authorization: format!("Bearer {token}"),
        }
    }

    /// Sends one request to `addr` (`host:port`) and reads the whole answer within `deadline`.
    pub async fn send(
        &self,
        method: Method,
        addr: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        deadline: Duration,
    ) -> Result<Answer, HttpError> {
        self.send_with(method, addr, path, body, deadline, &[])
            .await
    }

    /// [`Http::send`] with extra headers (a request id, for instance).
    pub async fn send_with(
        &self,
        method: Method,
        addr: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        deadline: Duration,
        headers: &[(&str, &str)],
    ) -> Result<Answer, HttpError> {
        let url = format!("http://{addr}{path}");
        let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let mut request = Request::builder()
            .method(method)
            .uri(&url)
            .header(hyper::header::AUTHORIZATION, &self.authorization)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(bytes))
            .map_err(|_| HttpError::Url(url.clone()))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    HttpError::Connect(format!("{e:?}"))
                } else {
                    HttpError::Io(format!("{e:?}"))
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| HttpError::Io(e.to_string()))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                body,
                headers: parts.headers,
            })
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| HttpError::Timeout(deadline))?
    }

    pub async fn get(
        &self,
        addr: &str,
        path: &str,
        deadline: Duration,
    ) -> Result<Answer, HttpError> {
        self.send(Method::GET, addr, path, None, deadline).await
    }

    pub async fn post(
        &self,
        addr: &str,
        path: &str,
        body: &serde_json::Value,
        deadline: Duration,
    ) -> Result<Answer, HttpError> {
        self.send(Method::POST, addr, path, Some(body), deadline)
            .await
    }
}
