//! The admin HTTP API (contract v1 in DESIGN.md), on axum.
//!
//! - [`error`]: the `{"error", "detail"}` shape, body limits, JSON parsing;
//! - [`forward`]: sending a request on to the leader;
//! - [`health`]: `/health`, `/readyz`, `/status`, `/metrics`;
//! - [`cluster`]: `/cluster/*` membership and leadership;
//! - [`image`]: reads of the image and `/image/import`;
//! - [`changesets`]: `/image/changesets` and `/image/history`;
//! - [`ops`]: `/snapshot`, `/backup`, `/antennas`.
//!
//! Every route but `/health`, `/readyz` and `/metrics` needs `Authorization: Bearer <token>`.

pub mod changesets;
pub mod cluster;
pub mod error;
pub mod forward;
pub mod health;
pub mod image;
pub mod json;
pub mod ops;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;

use crate::node::Node;
use error::ApiError;

/// Routes that need no token.
const OPEN_ROUTES: [&str; 3] = ["/health", "/readyz", "/metrics"];

/// Builds the router of one node.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/readyz", get(health::readyz))
        .route("/status", get(health::status))
        .route("/metrics", get(health::metrics))
        .route("/cluster/init", post(cluster::init))
        .route("/cluster/learners", post(cluster::add_learner))
        .route("/cluster/voters", post(cluster::change_voters))
        .route("/cluster/nodes/{id}", delete(cluster::remove_node))
        .route("/cluster/leader", post(cluster::transfer_leader))
        .route("/cluster/elect", post(cluster::elect))
        .route("/internal/command", post(cluster::submit_command))
        .route("/internal/lease-release", post(cluster::release_lease))
        .route("/image/import", post(image::import))
        .route("/image/sites", get(image::sites))
        .route("/image/cells", get(image::cells))
        .route("/image/cells/{id}", get(image::cell))
        .route("/image/relations", get(image::relations))
        .route("/image/changesets", post(changesets::propose))
        .route("/image/history", get(changesets::history))
        .route("/antennas", get(ops::antennas))
        .route("/snapshot", post(ops::snapshot))
        .route("/backup", get(ops::backup))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(node.clone(), authorize))
        .layer(middleware::from_fn(observe))
        .with_state(node)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see the API table in README.md")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Refuses requests without the operator token (except the open routes).
async fn authorize(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    if OPEN_ROUTES.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same(presented.as_bytes(), node.config.token.as_bytes()) {
        tracing::warn!(path = %req.uri().path(), "refused an admin request without the right token");
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts requests by route and status, and times them.
async fn observe(req: Request, next: Next) -> Response {
    // Labels are static strings, so recording allocates nothing per request.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| static_route(p.as_str()));
    let method = match *req.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::DELETE => "DELETE",
        _ => "other",
    };
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = static_status(resp.status().as_u16());
    metrics::counter!("sonraft_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("sonraft_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// The route templates of [`router`], as static strings.
const ROUTES: [&str; 22] = [
    "/health",
    "/readyz",
    "/status",
    "/metrics",
    "/cluster/init",
    "/cluster/learners",
    "/cluster/voters",
    "/cluster/nodes/{id}",
    "/cluster/leader",
    "/cluster/elect",
    "/internal/command",
    "/internal/lease-release",
    "/image/import",
    "/image/sites",
    "/image/cells",
    "/image/cells/{id}",
    "/image/relations",
    "/image/changesets",
    "/image/history",
    "/antennas",
    "/snapshot",
    "/backup",
];

fn static_route(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("other")
}

fn static_status(code: u16) -> &'static str {
    match code {
        200 => "200",
        202 => "202",
        400 => "400",
        401 => "401",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        422 => "422",
        500 => "500",
        502 => "502",
        503 => "503",
        _ => "other",
    }
}

/// Serves the API until `shutdown` resolves, then lets in-flight requests finish.
/// Every accepted socket gets `TCP_NODELAY`.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = router(node);
    let listener = NoDelay(listener);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "the admin API stopped with an error");
    }
}

/// A listener that sets `TCP_NODELAY` on every accepted socket.
struct NoDelay(TcpListener);

impl axum::serve::Listener for NoDelay {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY not set");
                    }
                    return (stream, addr);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the admin API");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}
