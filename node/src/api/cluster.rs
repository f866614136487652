//! `/cluster/*`: initialisation, learners, voters, removal, leader hand-over.
//! Operations that need the leader are forwarded to it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sonraft_client::v1;
use sonraft_raft::{NodeId, NodeInfo};

use super::error::{ApiError, Params, parse_json, read_body};
use super::forward;
use crate::Node;
use crate::membership::MembershipError;

/// The membership record of a node to add.
fn info(n: &v1::NodeSpec) -> NodeInfo {
    NodeInfo {
        site: n.site.clone(),
        raft_addr: n.raft_addr.clone(),
        api_addr: n.api_addr.clone(),
    }
}

/// Answers the result of a membership operation, forwarding the request to the leader when
/// this node is not it.
async fn answer<T: serde::Serialize>(
    node: &Node,
    result: Result<T, MembershipError>,
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
        Err(e) => ApiError::from(e).into_response(),
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
    let bytes = read_body(&headers, body, node.config().max_body_bytes).await?;
    let req: v1::InitRequest = parse_json(&bytes)?;
    if req.nodes.is_empty() {
        return Err(ApiError::unprocessable("nodes must list at least one node"));
    }
    let mut nodes = BTreeMap::new();
    for n in &req.nodes {
        check_addr("raft_addr", &n.raft_addr)?;
        check_addr("api_addr", &n.api_addr)?;
        if nodes.insert(n.id, info(n)).is_some() {
            return Err(ApiError::unprocessable(format!(
                "node {} is listed twice",
                n.id
            )));
        }
    }
    let voters: Vec<NodeId> = nodes.keys().copied().collect();
    node.init_cluster(nodes).await?;
    Ok(Json(v1::Initialized {
        initialized: true,
        voters,
    })
    .into_response())
}

/// A node id from a request, refused with the range when it is none.
fn node_id(id: NodeId) -> Result<NodeId, ApiError> {
    crate::membership::check_node_id(id).map_err(ApiError::unprocessable)?;
    Ok(id)
}

/// `POST /cluster/learners[?force=true]`: add one node as a learner (waits until it has caught
/// up). Refused unless it answers on its Raft address as that node, with this cluster's timing.
pub async fn add_learner(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::ForceQuery>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config().max_body_bytes).await?;
    let req: v1::NodeSpec = parse_json(&bytes)?;
    node_id(req.id)?;
    check_addr("raft_addr", &req.raft_addr)?;
    check_addr("api_addr", &req.api_addr)?;
    let result = node
        .add_learner(req.id, info(&req), q.force)
        .await
        .map(|()| v1::LearnerAdded { learner: req.id });
    Ok(answer(&node, result, Method::POST, &uri, &headers, bytes).await)
}

/// `POST /cluster/voters[?force=true]`: replace the voter set (demoted voters stay learners).
/// Refused unless the set is odd, keeps the fault tolerance, and every voter answers and has
/// caught up.
pub async fn change_voters(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::ForceQuery>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config().max_body_bytes).await?;
    let req: v1::VotersRequest = parse_json(&bytes)?;
    for id in &req.ids {
        node_id(*id)?;
    }
    let ids: BTreeSet<NodeId> = req.ids.iter().copied().collect();
    if ids.len() != req.ids.len() {
        return Err(ApiError::unprocessable("ids lists a node twice"));
    }
    let result = node
        .change_voters(ids.clone(), q.force)
        .await
        .map(|()| v1::VotersChanged {
            voters: ids.into_iter().collect(),
        });
    Ok(answer(&node, result, Method::POST, &uri, &headers, bytes).await)
}

/// `DELETE /cluster/nodes/{id}[?force=true]`: remove a voter or learner. Removing a voter is
/// refused unless the voters left keep an odd number and the fault tolerance.
pub async fn remove_node(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    Params(q): Params<v1::ForceQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id: NodeId = id
        .parse()
        .map_err(|_| ApiError::bad_request("bad_id", format!("{id:?} is not a node id")))?;
    node_id(id)?;
    let result = node
        .remove_node(id, q.force)
        .await
        .map(|()| v1::NodeRemoved { removed: id });
    Ok(answer(&node, result, Method::DELETE, &uri, &headers, Bytes::new()).await)
}

/// `POST /cluster/leader`: hand leadership to voter `id`.
pub async fn transfer_leader(
    State(node): State<Arc<Node>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config().max_body_bytes).await?;
    let req: v1::LeaderRequest = parse_json(&bytes)?;
    let result = node
        .hand_over(req.id)
        .await
        .map(|took| v1::LeaderHandedOver {
            leader: req.id,
            took_ms: took.as_millis() as u64,
        });
    Ok(answer(&node, result, Method::POST, &uri, &headers, bytes).await)
}
