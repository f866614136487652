//! `/health`, `/readyz`, `/status` and `/metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sonraft_client::v1;

use super::error::Params;
use super::forward;
use crate::Node;

/// The process is up.
pub async fn health() -> Json<v1::Health> {
    Json(v1::Health {
        status: "ok".into(),
    })
}

/// 200 when the node knows a leader and has applied what was committed when it started.
pub async fn readyz(State(node): State<Arc<Node>>) -> Response {
    let answer = node.readiness();
    let code = if answer.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(answer)).into_response()
}

/// Role, term, indexes, membership and versions of this node.
pub async fn status(State(node): State<Arc<Node>>) -> Json<v1::Status> {
    Json(node.status())
}

/// Prometheus text format.
pub async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let body = node.render_metrics();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

/// `GET /cluster/health[?max_lag=N]`: members, who answers, lags, the fault tolerance and a
/// verdict, as the leader sees them (a follower forwards; with no leader known, it answers
/// from its own position).
pub async fn cluster_health(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::ClusterHealthQuery>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    if !node.is_leader() && node.leader().is_some() && !headers.contains_key(forward::FORWARDED) {
        let r = forward::to_leader(&node, axum::http::Method::GET, &uri, &headers, None).await;
        if r.status().is_success() {
            return r;
        }
    }
    node.recheck_unanswered(std::time::Duration::from_millis(500))
        .await;
    Json(node.cluster_health(q.max_lag.unwrap_or(1000))).into_response()
}
