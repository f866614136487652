//! `/cluster/*`: initialisation, learners, voters, removal, leader hand-over.
//! Operations that need the leader are forwarded to it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use sonraft_raft::command::{COMMAND_FORMAT, Command};
use sonraft_raft::{NodeId, NodeInfo};

use super::error::{ApiError, parse_json, read_body};
use super::forward;
use crate::node::Node;
use crate::node::membership::MembershipError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeBody {
    pub id: NodeId,
    pub site: String,
    pub raft_addr: String,
    pub api_addr: String,
}

impl NodeBody {
    fn info(&self) -> NodeInfo {
        NodeInfo {
            site: self.site.clone(),
            raft_addr: self.raft_addr.clone(),
            api_addr: self.api_addr.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InitBody {
    nodes: Vec<NodeBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VotersBody {
    ids: Vec<NodeId>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaderBody {
    id: NodeId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ElectBody {
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// Answers a membership error, forwarding to the leader when this node is not it.
async fn answer(
    node: &Node,
    result: Result<serde_json::Value, MembershipError>,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(MembershipError::NotLeader) => {
            forward::to_leader(node, method, uri, headers, Some(body)).await
        }
        Err(MembershipError::Refused(r)) => ApiError::conflict("refused", r).into_response(),
        Err(MembershipError::Raft(r)) => ApiError::unavailable("raft", r).into_response(),
    }
}

fn check_addr(what: &str, a: &str) -> Result<(), ApiError> {
    if a.parse::<std::net::SocketAddr>().is_ok()
        || (a.contains(':') && a.len() < 256 && !a.contains('/'))
    {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "{what} {a:?} is not host:port"
        )))
    }
}

/// `POST /cluster/init`: make the listed nodes the voters of a new cluster.
pub async fn init(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config.max_body_bytes).await?;
    let req: InitBody = parse_json(&bytes)?;
    if req.nodes.is_empty() {
        return Err(ApiError::unprocessable("nodes must list at least one node"));
    }
    let mut nodes = BTreeMap::new();
    for n in &req.nodes {
        check_addr("raft_addr", &n.raft_addr)?;
        check_addr("api_addr", &n.api_addr)?;
        if nodes.insert(n.id, n.info()).is_some() {
            return Err(ApiError::unprocessable(format!(
                "node {} is listed twice",
                n.id
            )));
        }
    }
    let voters: Vec<NodeId> = nodes.keys().copied().collect();
    match node.init_cluster(nodes).await {
        Ok(()) => Ok(Json(json!({"initialized": true, "voters": voters})).into_response()),
        Err(MembershipError::Refused(r)) if r.contains("already") => {
            Err(ApiError::conflict("already_initialized", r))
        }
        Err(MembershipError::Refused(r)) => Err(ApiError::unprocessable(r)),
        Err(e) => Err(ApiError::unavailable("raft", e.to_string())),
    }
}

/// `POST /cluster/learners`: add one node as a learner (waits until it has caught up).
pub async fn add_learner(
    State(node): State<Arc<Node>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config.max_body_bytes).await?;
    let req: NodeBody = parse_json(&bytes)?;
    check_addr("raft_addr", &req.raft_addr)?;
    check_addr("api_addr", &req.api_addr)?;
    let result = node
        .add_learner(req.id, req.info())
        .await
        .map(|()| json!({"learner": req.id}));
    Ok(answer(&node, result, Method::POST, &uri, &headers, bytes).await)
}

/// `POST /cluster/voters`: replace the voter set (demoted voters stay learners).
pub async fn change_voters(
    State(node): State<Arc<Node>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config.max_body_bytes).await?;
    let req: VotersBody = parse_json(&bytes)?;
    let ids: BTreeSet<NodeId> = req.ids.iter().copied().collect();
    let result = node
        .change_voters(ids.clone())
        .await
        .map(|()| json!({"voters": ids}));
    Ok(answer(&node, result, Method::POST, &uri, &headers, bytes).await)
}

/// `DELETE /cluster/nodes/{id}`: remove a voter or learner.
pub async fn remove_node(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id: NodeId = id
        .parse()
        .map_err(|_| ApiError::bad_request("bad_id", format!("{id:?} is not a node id")))?;
    let result = node.remove_node(id).await.map(|()| json!({"removed": id}));
    Ok(answer(&node, result, Method::DELETE, &uri, &headers, Bytes::new()).await)
}

/// `POST /cluster/leader`: hand leadership to voter `id`.
pub async fn transfer_leader(
    State(node): State<Arc<Node>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config.max_body_bytes).await?;
    let req: LeaderBody = parse_json(&bytes)?;
    let result = node
        .hand_over(req.id)
        .await
        .map(|took| json!({"leader": req.id, "took_ms": took.as_millis() as u64}));
    Ok(answer(&node, result, Method::POST, &uri, &headers, bytes).await)
}

/// `POST /cluster/elect`: campaign until this node leads (the target side of a hand-over).
pub async fn elect(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config.max_body_bytes).await?;
    let req: ElectBody = if bytes.is_empty() {
        ElectBody { timeout_ms: None }
    } else {
        parse_json(&bytes)?
    };
    let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(3000).min(30_000));
    match node.elect_self(timeout).await {
        Ok(true) => Ok(Json(json!({"leader": node.id})).into_response()),
        Ok(false) => Err(ApiError::unavailable(
            "not_elected",
            format!(
                "node {} did not win an election within {timeout:?}",
                node.id
            ),
        )),
        Err(e) => Err(ApiError::unavailable("not_elected", e.to_string())),
    }
}

/// `POST /internal/command`: commit a command sent by another node (its SON functions, KPI
/// summaries, release). Only the leader commits; others forward.
pub async fn submit_command(
    State(node): State<Arc<Node>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config.max_import_bytes).await?;
    let command: Command = parse_json(&bytes)?;
    if command.format() > COMMAND_FORMAT {
        return Err(ApiError::unprocessable(format!(
            "command format {} is newer than this node understands",
            command.format()
        )));
    }
    match node.propose(&command).await {
        Ok((index, response)) => {
            Ok(Json(json!({"index": index, "response": response})).into_response())
        }
        Err(crate::node::propose::ProposeError::NotLeader(_)) => {
            Ok(forward::to_leader(&node, Method::POST, &uri, &headers, Some(bytes)).await)
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    for_ms: u64,
}

/// `POST /internal/lease-release`: stop serving reads from the leader lease for a while (a
/// node is about to force an election).
pub async fn release_lease(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config.max_body_bytes).await?;
    let req: LeaseBody = parse_json(&bytes)?;
    let for_ms = req.for_ms.clamp(1, 60_000);
    node.reads.release_lease(Duration::from_millis(for_ms));
    Ok(Json(json!({"released_for_ms": for_ms})).into_response())
}
