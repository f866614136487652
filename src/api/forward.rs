//! Sending a request on to the leader, so that a client may talk to any node.
//!
//! A forwarded request carries [`FORWARDED`]; a node that receives one and is not the leader
//! either answers 503 (leadership moved in between) instead of forwarding again, so requests
//! never loop.

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::error::ApiError;
use crate::node::Node;

/// Header marking a request forwarded by another node; its value is that node's id, so that
/// a change set keeps the node it was proposed at as its origin.
pub const FORWARDED: &str = "x-sonraft-forwarded";

/// Forwards the request to the current leader and relays its answer.
pub async fn to_leader(
    node: &Node,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> Response {
    if headers.contains_key(FORWARDED) {
        return ApiError::unavailable(
            "leader_changed",
            "leadership moved while the request was forwarded; retry",
        )
        .into_response();
    }
    let Some((id, info)) = node.leader() else {
        return ApiError::unavailable(
            "no_leader",
            "no leader is known yet (election in progress?); retry shortly",
        )
        .into_response();
    };
    if id == node.id {
        return ApiError::unavailable(
            "leader_changed",
            "this node is stepping up or down as leader; retry",
        )
        .into_response();
    }
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let url = format!("{}{path}", crate::client::base_url(&info.api_addr));
    let me = node.id.to_string();
    match node
        .peers
        .send(method, &url, body, &[(FORWARDED, me.as_str())])
        .await
    {
        Ok(r) => {
            let mut resp = (r.status, r.body).into_response();
            if let Some(ct) = r.content_type.and_then(|c| c.parse().ok()) {
                resp.headers_mut()
                    .insert(axum::http::header::CONTENT_TYPE, ct);
            }
            if let Some(secs) = r.retry_after {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, secs.into());
            }
            resp
        }
        Err(e) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "leader_unreachable",
            format!("the leader (node {id}) did not answer: {e}"),
        )
        .into_response(),
    }
}
