//! The admin API's front door, around the whole router: refuses requests without a token of
//! the role the route needs ([`crate::access`]; 401 without a known token, 403 with one whose
//! role is too low), then counts and times every request by route and status. The caller's
//! role travels on in the request's extensions.
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
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower_service::Service;

use super::error::ApiError;
use crate::Node;
use crate::access::{Role, required_role};

/// Header a client may set to name its request in the nodes' debug logs; forwarding passes it on.
pub const REQUEST_ID: &str = "x-request-id";

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
        403 => "403",
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

    /// The caller's role if it may call `route`, else the answer that refuses it. An open
    /// route takes any caller, with the role of its token if it has one.
    fn admit(&self, req: &Request, route: &str) -> Result<Option<Role>, ApiError> {
        let presented = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let role = presented.and_then(|t| self.node.config().tokens.role_of(t));
        let Some(needed) = required_role(req.method(), route) else {
            return Ok(role);
        };
        match role {
            None => Err(ApiError::unauthorized()),
            Some(role) if role < needed => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this token's role is {}; {} {route} needs a token of role {} or above",
                    role.name(),
                    req.method(),
                    needed.name()
                ),
            )),
            Some(role) => Ok(Some(role)),
        }
    }
}

/// The role of the token a request was admitted with, in its extensions.
#[derive(Clone, Copy, Debug)]
pub struct Caller(pub Role);

impl Service<Request> for FrontDoor {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = Instant::now();
        let route = route_of(req.uri().path());
        let method = method_label(req.method());
        let refused = match self.admit(&req, route) {
            Ok(role) => {
                if let Some(role) = role {
                    req.extensions_mut().insert(Caller(role));
                }
                None
            }
            Err(e) => {
                tracing::warn!(path = %req.uri().path(), method, "refused an admin request: {}", e.detail);
                Some(e)
            }
        };
        let span = match req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
            Some(id) => tracing::debug_span!("request", id = %id, path = %req.uri().path()),
            None => tracing::Span::none(),
        };
        let answer = refused.is_none().then(|| self.router.call(req));
        let answered = async move {
            let resp = match answer {
                Some(future) => match future.await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                },
                None => refused.map(IntoResponse::into_response).unwrap_or_default(),
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
