//! The admin HTTP API (contract v1 in README.md, design in docs/DESIGN.md), on axum.
//!
//! - [`error`]: the `{"error", "detail"}` shape, body limits, JSON parsing;
//! - [`forward`]: sending a request on to the leader;
//! - [`health`]: `/health`, `/readyz`, `/status`, `/metrics`;
//! - [`cluster`]: `/cluster/*` membership and leadership;
//! - [`image`]: reads of the image and `/image/import`;
//! - [`changesets`]: `/image/changesets` and `/image/history`;
//! - [`ops`]: `/snapshot`, `/backup`, `/antennas`;
//! - [`watch`]: `/watch`, the change stream (server-sent events);
//! - [`ui`]: `/ui`, the live web view (assets in the binary);
//! - [`front_door`]: around them all, the token check and the request metrics.
//!
//! Every route but `/health`, `/readyz`, `/metrics` and the web view's assets (`/ui`, which
//! hold no data) needs `Authorization: Bearer <token>`.

pub mod changesets;
pub mod cluster;
pub mod control;
pub mod error;
pub mod forward;
pub mod front_door;
pub mod health;
pub mod image;
pub mod json;
pub mod ops;
pub mod son;
pub mod ui;
pub mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::ServiceExt;
use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post, put};
use tokio::net::TcpListener;

use crate::Node;
use error::ApiError;
use front_door::FrontDoor;

/// One route of the admin API: its method, its path template (`{id}` matches one segment, and
/// only ever comes last) and its handler. The router is built from [`ROUTES`], and request
/// metrics are labelled by the same templates ([`front_door::route_of`]).
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    handler: fn() -> MethodRouter<Arc<Node>>,
}

const fn route(
    method: Method,
    path: &'static str,
    handler: fn() -> MethodRouter<Arc<Node>>,
) -> Route {
    Route {
        method,
        path,
        handler,
    }
}

/// Every route of the admin API (README, "Admin API").
pub static ROUTES: [Route; 36] = [
    route(Method::GET, "/health", || get(health::health)),
    route(Method::GET, "/readyz", || get(health::readyz)),
    route(Method::GET, "/status", || get(health::status)),
    route(Method::GET, "/metrics", || get(health::metrics)),
    route(Method::POST, "/cluster/init", || post(cluster::init)),
    route(Method::GET, "/cluster/health", || {
        get(health::cluster_health)
    }),
    route(Method::POST, "/cluster/learners", || {
        post(cluster::add_learner)
    }),
    route(Method::POST, "/cluster/voters", || {
        post(cluster::change_voters)
    }),
    route(Method::DELETE, "/cluster/nodes/{id}", || {
        delete(cluster::remove_node)
    }),
    route(Method::POST, "/cluster/leader", || {
        post(cluster::transfer_leader)
    }),
    route(Method::POST, "/image/import", || post(image::import)),
    route(Method::GET, "/image/sites", || get(image::sites)),
    route(Method::GET, "/image/cells", || get(image::cells)),
    route(Method::GET, "/image/cells/{id}", || get(image::cell)),
    route(Method::GET, "/image/relations", || get(image::relations)),
    route(Method::GET, "/image/kpis", || get(image::kpis)),
    route(Method::GET, "/image/digest", || get(image::digest)),
    route(Method::POST, "/image/changesets", || {
        post(changesets::propose)
    }),
    route(Method::GET, "/image/history", || get(changesets::history)),
    route(Method::GET, "/antennas", || get(ops::antennas)),
    route(Method::GET, "/control", || get(control::control)),
    route(Method::POST, "/control/hand-back", || {
        post(control::hand_back)
    }),
    route(Method::POST, "/snapshot", || post(ops::snapshot)),
    route(Method::GET, "/backup", || get(ops::backup)),
    route(Method::GET, "/son/policy", || get(son::policy)),
    route(Method::PUT, "/son/policy", || put(son::set_policy)),
    route(Method::GET, "/son/tuning", || get(son::tuning)),
    route(Method::PUT, "/son/tuning", || put(son::set_tuning)),
    route(Method::GET, "/son/pending", || get(son::pending)),
    route(Method::POST, "/son/pending/{id}/approve", || {
        post(son::approve)
    }),
    route(Method::POST, "/son/pending/{id}/reject", || {
        post(son::reject)
    }),
    route(Method::GET, "/son/trials", || get(son::trials)),
    route(Method::GET, "/watch", || get(watch::watch)),
    route(Method::GET, "/ui", || get(ui::index)),
    route(Method::GET, "/ui/app.js", || get(ui::app_js)),
    route(Method::GET, "/ui/app.css", || get(ui::app_css)),
];

/// Builds the router of one node from [`ROUTES`] (without the token check: see [`front_door`]).
pub fn router(node: Arc<Node>) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |r, route| {
            r.route(route.path, (route.handler)())
        })
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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

/// Serves the API until `shutdown` resolves, then lets in-flight requests finish.
/// Every accepted socket gets `TCP_NODELAY`. With TLS configured the API is HTTPS only, each
/// connection's handshake in its own task ([`sonraft_tls::serve`]).
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = FrontDoor::new(router(node.clone()), node.clone());
    if let Some(tls) = &node.config().tls {
        let handler = move |_peer, req: hyper::Request<hyper::body::Incoming>| {
            let mut app = app.clone();
            async move {
                use tower_service::Service;
                match app.call(req.map(axum::body::Body::new)).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            }
        };
        // The stop sequence waits 10 s for the API (`shutdown::graceful`).
        let drain = Duration::from_secs(10);
        sonraft_tls::serve(listener, tls.api_acceptor(), handler, shutdown, drain).await;
        return;
    }
    let listener = NoDelay(listener);
    if let Err(e) = axum::serve(listener, app.into_make_service())
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
