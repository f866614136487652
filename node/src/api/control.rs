//! `/control`: which node controls each cell site's antennas, and the operator's hand-back
//! (see [`crate::control`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use sonraft_client::v1;
use sonraft_raft::model::image::NetworkImage;

use super::error::{ApiError, parse_json, read_body};
use crate::Node;

/// `GET /control`: per sonraft site the cell sites it controls, and those away from home,
/// as this node's applied image has them.
pub async fn control(State(node): State<Arc<Node>>) -> Json<v1::ControlSummary> {
    // Summed on a copy: a walk over every cell site, not under the state lock.
    let view = node.store().with_image(NetworkImage::control_copy);
    Json(crate::control::summary(&view))
}

/// `POST /control/hand-back` `{"site": "site-2"}`: every cell site whose home is that site
/// goes back to it now, each at a new epoch (with `control_hand_back = "manual"` the only way
/// back; with `auto` it saves the hold time).
pub async fn hand_back(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<v1::HandBackOutcome>, ApiError> {
    let bytes = read_body(&headers, body, node.config().max_body_bytes).await?;
    let req: v1::HandBackRequest = parse_json(&bytes)?;
    let members = node.member_sites();
    if !members.contains(&req.site) {
        return Err(ApiError::unprocessable(format!(
            "no node of the cluster serves site {:?} (members: {})",
            req.site,
            members.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    let view = node.store().with_image(NetworkImage::control_copy);
    let moves = crate::control::hand_back_moves(&view, &req.site);
    if moves.is_empty() {
        return Ok(Json(v1::HandBackOutcome::default()));
    }
    let reason = format!("an operator handed {} back", req.site);
    let (moved, refused) = node.move_control(moves, &reason).await?;
    tracing::info!(site = %req.site, moved, refused = refused.len(), "{reason}");
    Ok(Json(v1::HandBackOutcome { moved, refused }))
}
