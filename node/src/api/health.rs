//! `/health`, `/readyz`, `/status` and `/metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use openraft::ServerState;
use serde_json::json;
use sonraft_raft::command::COMMAND_FORMAT;
use sonraft_storage::format::DATA_FORMAT;

use super::error::Params;
use super::forward;
use crate::Node;

/// The process is up.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when the node knows a leader and has applied what was committed when it started.
pub async fn readyz(State(node): State<Arc<Node>>) -> Response {
    let m = node.raft.metrics().borrow().clone();
    let applied = m.last_applied.map_or(0, |l| l.index);
    let reason = if let Err(e) = &m.running_state {
        Some(format!("the Raft core stopped: {e}"))
    } else if m.membership_config.membership().nodes().next().is_none() {
        Some(
            "the node is not part of a cluster yet (POST /cluster/init or add it as a learner)"
                .to_string(),
        )
    } else if m.current_leader.is_none() {
        Some("no leader is known (election in progress or no quorum)".to_string())
    } else if applied < node.committed_at_start {
        Some(format!(
            "catching up: applied {applied} of the {} entries committed when the node started",
            node.committed_at_start
        ))
    } else {
        None
    };
    match reason {
        None => (StatusCode::OK, Json(json!({"ready": true, "leader_id": m.current_leader, "last_applied_index": applied}))).into_response(),
        Some(r) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reason": r}))).into_response(),
    }
}

/// Role, term, indexes, membership and versions of this node.
pub async fn status(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let m = node.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let learners: Vec<u64> = membership.learner_ids().collect();
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Follower if learners.contains(&node.id) => "learner",
        ServerState::Follower if !voters.contains(&node.id) => "learner",
        ServerState::Follower => "follower",
        ServerState::Shutdown => "shutdown",
    };
    let nodes: BTreeMap<String, serde_json::Value> = membership
        .nodes()
        .map(|(id, n)| {
            (
                id.to_string(),
                json!({"site": n.site, "raft_addr": n.raft_addr, "api_addr": n.api_addr}),
            )
        })
        .collect();
    let releases: BTreeMap<String, serde_json::Value> = sonraft_storage::read(node.store.state())
        .image
        .releases
        .iter()
        .map(|(id, r)| {
            (
                id.to_string(),
                json!({"release": r.release, "max_command_format": r.max_command_format}),
            )
        })
        .collect();
    let effective = sonraft_storage::read(node.store.state())
        .image
        .effective_format(voters.iter().copied());
    Json(json!({
        "id": node.id,
        "site": node.site,
        "self": {"raft_addr": node.advertised.raft_addr, "api_addr": node.advertised.api_addr},
        "role": role,
        "term": m.current_term,
        "leader_id": m.current_leader,
        "last_log_index": m.last_log_index.unwrap_or(0),
        "last_applied_index": m.last_applied.map_or(0, |l| l.index),
        "purged_index": m.purged.map_or(0, |l| l.index),
        "snapshot_index": m.snapshot.map_or(0, |l| l.index),
        "voters": voters,
        "learners": learners,
        "nodes": nodes,
        "version": crate::RELEASE,
        "data_format": DATA_FORMAT,
        "command_format": COMMAND_FORMAT,
        "effective_command_format": effective,
        "releases": releases,
        "millis_since_quorum_ack": m.millis_since_quorum_ack,
        // This node's wall clock (log times of the change sets it leads come from it).
        "now_ms": crate::propose::now_ms(),
    }))
}

/// Prometheus text format.
pub async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let body = node.prometheus.render();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

/// `?max_lag=N` of `/cluster/health`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HealthParams {
    /// A voter trailing the leader by more entries is a problem (default 1000).
    #[serde(default)]
    max_lag: Option<u64>,
}

/// `GET /cluster/health[?max_lag=N]`: members, who answers, lags, the fault tolerance and a
/// verdict, as the leader sees them (a follower forwards; with no leader known, it answers
/// from its own position).
pub async fn cluster_health(
    State(node): State<Arc<Node>>,
    Params(q): Params<HealthParams>,
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
