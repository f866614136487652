//! The admin API's front door, around the whole router: refuses requests without the operator
//! token (except the open routes), then counts and times every request by route and status.
//! A request that carries [`REQUEST_ID`] runs in a `request` span with that id (debug level),
//! so that what it waited for, here and at the leader it was forwarded to, can be traced.
//!
//! It is one hand-written service rather than two `axum::middleware::from_fn` layers: those box
//! a future and clone a boxed service per layer, per route, per request, which profiling put at
//! about a fifth of the leader's CPU under load. Here a request costs one boxed future, and
//! metric labels are static strings (no allocation).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use tower_service::Service;

use super::error::ApiError;
use crate::Node;

/// Header a client may set to name its request in the nodes' debug logs; forwarding passes it on.
pub const REQUEST_ID: &str = "x-request-id";

/// Routes that need no token (the web view's assets hold no data: see [`super::ui`]).
const OPEN_ROUTES: [&str; 6] = [
    "/health",
    "/readyz",
    "/metrics",
    "/ui",
    "/ui/app.js",
    "/ui/app.css",
];

/// The template of [`super::ROUTES`] that `path` matches, or `"other"`. Runs on every request:
/// an exact match first, then the templates ending in `/{id}` (one non-empty segment).
pub fn route_of(path: &str) -> &'static str {
    let templates = || super::ROUTES.iter().map(|r| r.path);
    if let Some(exact) = templates().find(|t| *t == path) {
        return exact;
    }
    templates()
        .find(|t| matches_template(t, path))
        .unwrap_or("other")
}

/// Whether `path` fits `template`, where a `{id}` segment stands for any non-empty segment.
fn matches_template(template: &str, path: &str) -> bool {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some("{id}"), Some(segment)) if !segment.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

fn status_label(code: u16) -> &'static str {
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

/// Compares secrets without stopping at the first differing byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The router behind the token check and the request metrics.
#[derive(Clone)]
pub struct FrontDoor {
    router: Router,
    node: Arc<Node>,
}

impl FrontDoor {
    pub fn new(router: Router, node: Arc<Node>) -> Self {
        FrontDoor { router, node }
    }

    fn authorized(&self, req: &Request) -> bool {
        if OPEN_ROUTES.contains(&req.uri().path()) {
            return true;
        }
        let presented = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        same(presented.as_bytes(), self.node.config().token.as_bytes())
    }
}

impl Service<Request> for FrontDoor {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let route = route_of(req.uri().path());
        let method = method_label(req.method());
        let refused = !self.authorized(&req);
        if refused {
            tracing::warn!(path = %req.uri().path(), "refused an admin request without the right token");
        }
        let span = match req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
            Some(id) => tracing::debug_span!("request", id = %id, path = %req.uri().path()),
            None => tracing::Span::none(),
        };
        let answer = (!refused).then(|| self.router.call(req));
        let answered = async move {
            let resp = match answer {
                Some(future) => match future.await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                },
                None => ApiError::unauthorized().into_response(),
            };
            let status = status_label(resp.status().as_u16());
            metrics::counter!("sonraft_http_requests_total", "route" => route, "method" => method, "status" => status)
                .increment(1);
            metrics::histogram!("sonraft_http_request_seconds", "route" => route)
                .record(started.elapsed().as_secs_f64());
            tracing::debug!(
                status = resp.status().as_u16(),
                ms = started.elapsed().as_millis() as u64,
                "answered"
            );
            Ok(resp)
        };
        Box::pin(tracing::Instrument::instrument(answered, span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_labelled_by_the_template_they_match() {
        assert_eq!(route_of("/image/cells"), "/image/cells");
        assert_eq!(route_of("/image/cells/S1-2"), "/image/cells/{id}");
        assert_eq!(route_of("/cluster/nodes/3"), "/cluster/nodes/{id}");
        assert_eq!(route_of("/image/cells/"), "other", "an empty id is no id");
        assert_eq!(route_of("/image/cells/a/b"), "other");
        assert_eq!(route_of("/nope"), "other");
        assert_eq!(
            route_of("/son/pending/17/approve"),
            "/son/pending/{id}/approve"
        );
        assert_eq!(route_of("/son/pending//approve"), "other");
        assert_eq!(route_of("/son/pending/17"), "other");
        assert_eq!(route_of("/"), "other");
    }
}
