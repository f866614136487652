//! Sending a request on to the leader, so that a client may talk to any node.
//!
//! A forwarded request carries [`FORWARDED`]; a node that receives one and is not the leader
//! answers 503 (leadership moved in between) instead of forwarding again, so requests never
//! loop.
//!
//! A leader can be cut off while a request waits on it (its site isolated, a firewall), and the
//! client would wait for its whole timeout. So a forwarded request is abandoned as soon as this
//! node learns of another leader (except a hand-over request, whose very effect that is), or
//! when it had no answer within a bound derived from the election timeout, and then:
//! - a request that was never delivered (no connection could be made), and a read, is sent
//!   once more, to the new leader;
//! - anything else may have taken effect on the old leader: 503 `outcome_unknown` with
//!   `Retry-After`, so that the client reads before it retries.

use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sonraft_client::ClientError;
use sonraft_raft::{NodeId, NodeInfo};

use super::error::ApiError;
use super::front_door::REQUEST_ID;
use crate::Node;

/// Header marking a request forwarded by another node; its value is that node's id, so that
/// a change set keeps the node it was proposed at as its origin.
pub const FORWARDED: &str = "x-sonraft-forwarded";

/// How a forwarded request ended.
enum Forwarded {
    Answered(Response),
    /// No connection could be made: it was not delivered.
    NotDelivered(String),
    /// It was sent, but this node gave up on the answer (why).
    Abandoned(String),
}

/// The hand-over route: a new leader is what it asks for, not a sign that it was lost.
const HAND_OVER: &str = "/cluster/leader";

/// How long a forwarded request may go without an answer: a read or a change set a little
/// longer than the leader itself waits for a commit; imports and membership changes as long as
/// they legitimately take.
fn answer_bound(node: &Node, method: &Method, uri: &Uri) -> Duration {
    if *method == Method::GET {
        node.config().outcome_bound()
    } else if uri.path() == HAND_OVER {
        2 * node.config().outcome_bound()
    } else if uri.path() == "/image/changesets" {
        node.config().outcome_bound() + Duration::from_secs(1)
    } else {
        Duration::from_secs(660)
    }
}

/// The current leader other than this node, waiting up to `within` for one to be known.
async fn leader_within(
    node: &Node,
    within: Duration,
    not: Option<NodeId>,
) -> Option<(NodeId, NodeInfo)> {
    let deadline = tokio::time::Instant::now() + within;
    let mut metrics = node.metrics();
    loop {
        if let Some((id, info)) = node.leader()
            && Some(id) != not
        {
            return Some((id, info));
        }
        if tokio::time::timeout_at(deadline, metrics.changed())
            .await
            .is_err()
        {
            return None;
        }
    }
}

async fn forward_once(
    node: &Node,
    leader: (NodeId, &NodeInfo),
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> Forwarded {
    let (id, info) = leader;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let url = format!("{}{path}", node.forwarder.base_url(&info.api_addr));
    let me = node.id().to_string();
    let bound = answer_bound(node, &method, uri);
    let mut extra = vec![(FORWARDED, me.as_str())];
    if let Some(id) = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        extra.push((REQUEST_ID, id));
    }
    // A body goes on as what it is (JSON lines of an import, say), not re-labelled JSON.
    if body.is_some()
        && let Some(t) = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
    {
        extra.push(("content-type", t));
    }
    // As the caller: the leader checks the caller's role again (every node holds the same
    // tokens), so forwarding never lends a caller this node's admin token.
    if let Some(auth) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        extra.push(("authorization", auth));
    }
    let send = node.forwarder.send(method, &url, body, &extra);
    let mut metrics = node.metrics();
    let hand_over = uri.path() == HAND_OVER;
    let leader_moved = async {
        if hand_over {
            std::future::pending::<()>().await;
        }
        loop {
            if metrics.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            let now = metrics.borrow().current_leader;
            if now.is_some_and(|l| l != id) {
                return;
            }
        }
    };
    tokio::select! {
        r = send => match r {
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
                Forwarded::Answered(resp)
            }
            Err(ClientError::Connect { reason, .. } | ClientError::Untrusted { reason, .. }) => {
                Forwarded::NotDelivered(reason)
            }
            Err(e) => Forwarded::Abandoned(format!("the leader (node {id}) did not answer: {e}")),
        },
        () = tokio::time::sleep(bound) => Forwarded::Abandoned(format!(
            "the leader (node {id}) did not answer within {} ms", bound.as_millis()
        )),
        () = leader_moved => Forwarded::Abandoned(format!(
            "leadership moved away from node {id} while it had the request"
        )),
    }
}

/// Forwards the request to the current leader and relays its answer (see the module docs for
/// when it is sent again, and when it is answered `outcome_unknown`).
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
        .retry_after(1)
        .into_response();
    }
    let election = Duration::from_millis(2 * node.config().election_max_ms);
    let mut tried: Option<NodeId> = None;
    for attempt in 0..2 {
        let looked = std::time::Instant::now();
        let Some((id, info)) = leader_within(node, election, tried).await else {
            tracing::debug!(
                attempt,
                waited_ms = looked.elapsed().as_millis() as u64,
                "no leader known"
            );
            return ApiError::unavailable(
                "no_leader",
                "no leader is known (election in progress?); retry shortly",
            )
            .retry_after(1)
            .into_response();
        };
        // This node became the leader meanwhile: it answers itself, through its own API.
        let target = if id == node.id() {
            node.advertised().clone()
        } else {
            info
        };
        let sent = std::time::Instant::now();
        tracing::debug!(
            attempt,
            leader = id,
            waited_for_leader_ms = (sent - looked).as_millis() as u64,
            "forwarding"
        );
        let forwarded = forward_once(
            node,
            (id, &target),
            method.clone(),
            uri,
            headers,
            body.clone(),
        );
        match forwarded.await {
            Forwarded::Answered(r) => {
                tracing::debug!(
                    attempt,
                    leader = id,
                    status = r.status().as_u16(),
                    ms = sent.elapsed().as_millis() as u64,
                    "forwarded request answered"
                );
                return r;
            }
            Forwarded::NotDelivered(reason) if attempt == 0 => {
                tracing::debug!(leader = id, %reason, ms = sent.elapsed().as_millis() as u64, "forwarding not delivered; trying the next leader");
                tried = Some(id);
            }
            Forwarded::Abandoned(reason) if attempt == 0 && method == Method::GET => {
                tracing::debug!(leader = id, %reason, ms = sent.elapsed().as_millis() as u64, "read abandoned; trying the next leader");
                tried = Some(id);
            }
            Forwarded::NotDelivered(reason) => {
                return ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "leader_unreachable",
                    format!("the leader (node {id}) cannot be reached: {reason}"),
                )
                .retry_after(1)
                .into_response();
            }
            Forwarded::Abandoned(reason) => {
                metrics::counter!("sonraft_forward_outcome_unknown_total").increment(1);
                return ApiError::unavailable(
                    "outcome_unknown",
                    format!(
                        "{reason}; the request may or may not have taken effect: read before retrying"
                    ),
                )
                .retry_after(1)
                .into_response();
            }
        }
    }
    ApiError::unavailable("no_leader", "no leader answered; retry shortly")
        .retry_after(1)
        .into_response()
}
