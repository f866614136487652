//! Errors as `{"error": "<kind>", "detail": "<what and how to fix>"}`, request bodies read
//! under a size limit, and JSON bodies parsed into clear 400s.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use sonraft_client::v1;

use crate::membership::MembershipError;
use crate::propose::ProposeError;
use crate::reads::ReadError;

/// An error answer of the admin API.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub detail: String,
    /// Seconds after which a retry makes sense (sent as `Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            detail: detail.into(),
            retry_after: None,
        }
    }
    /// Adds `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown bearer token; send 'Authorization: Bearer <token>'",
        )
    }
    pub fn bad_request(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail)
    }
    pub fn conflict(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, detail)
    }
    pub fn unavailable(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, kind, detail)
    }
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }
}

/// A node that does not lead, when the request cannot be forwarded to the leader.
fn not_leader() -> ApiError {
    ApiError::unavailable("not_leader", "this node does not lead; retry").retry_after(1)
}

/// The one mapping of a failed proposal to an answer. `NotLeader` is normally forwarded
/// instead; it maps to 503 only when it cannot be. What the caller cannot fix and this node
/// cannot say more of is `raft`, without `Retry-After`.
impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader(_) => not_leader(),
            e @ ProposeError::FormatTooNew { .. } => {
                ApiError::conflict("cluster_version", e.to_string())
            }
            e @ ProposeError::OutcomeUnknown(_) => {
                ApiError::unavailable("outcome_unknown", e.to_string()).retry_after(1)
            }
            e @ ProposeError::NoQuorum(_) => {
                ApiError::unavailable("no_quorum", e.to_string()).retry_after(1)
            }
            e @ (ProposeError::Invalid(_)
            | ProposeError::ShuttingDown
            | ProposeError::RaftStopped(_)
            | ProposeError::LeaderFailed(_)
            | ProposeError::LeaderUnreachable(_)
            | ProposeError::UnexpectedAnswer(_)) => ApiError::unavailable("raft", e.to_string()),
        }
    }
}

/// The one mapping of a failed membership operation to an answer. `NotLeader` is normally
/// forwarded instead; it maps to 503 only when it cannot be.
impl From<MembershipError> for ApiError {
    fn from(e: MembershipError) -> Self {
        match e {
            MembershipError::NotLeader => not_leader(),
            e @ MembershipError::InitWithoutSelf(_) => ApiError::unprocessable(e.to_string()),
            e @ MembershipError::AlreadyInitialized(_) => {
                ApiError::conflict("already_initialized", e.to_string())
            }
            e @ (MembershipError::AlreadyMember { .. }
            | MembershipError::NotMember(_)
            | MembershipError::Refused(_)) => ApiError::conflict("refused", e.to_string()),
            e @ (MembershipError::Change(_)
            | MembershipError::CatchUpTimeout { .. }
            | MembershipError::NotElected { .. }
            | MembershipError::TargetUnreachable(_)
            | MembershipError::RaftStopped(_)) => ApiError::unavailable("raft", e.to_string()),
        }
    }
}

/// A linearizable read this node could not prove. `NotLeader` is normally forwarded instead.
impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NotLeader => not_leader(),
            e @ ReadError::Unavailable(_) => ApiError::unavailable("no_quorum", e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = v1::ErrorBody {
            error: self.kind.to_string(),
            detail: self.detail,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

/// Query parameters, parsed once, typed and percent-decoded, by axum's `Query` into one of the
/// [`v1`] query types. A query that does not fit is a 400 in the API's error shape (not axum's
/// plain-text rejection): `bad_query` for an unknown or repeated parameter, and the field's own
/// kind ([`QueryKinds`]) for a value that does not parse (`bad_limit`, `bad_consistency`, ...).
pub struct Params<T>(pub T);

/// A query type of the API, and the error kind of each of its fields whose value may not parse.
pub trait QueryKinds: DeserializeOwned {
    /// `(field, kind)`; a field not listed is `bad_query`.
    const FIELD_KINDS: &'static [(&'static str, &'static str)] = &[];
}

const LIMIT: (&str, &str) = ("limit", "bad_limit");
const CONSISTENCY: (&str, &str) = ("consistency", "bad_consistency");

impl QueryKinds for v1::ReadQuery {
    const FIELD_KINDS: &'static [(&'static str, &'static str)] = &[CONSISTENCY];
}
impl QueryKinds for v1::CellsQuery {
    const FIELD_KINDS: &'static [(&'static str, &'static str)] = &[CONSISTENCY, LIMIT];
}
impl QueryKinds for v1::RelationsQuery {
    const FIELD_KINDS: &'static [(&'static str, &'static str)] = &[CONSISTENCY, LIMIT];
}
impl QueryKinds for v1::HistoryQuery {
    const FIELD_KINDS: &'static [(&'static str, &'static str)] = &[CONSISTENCY, LIMIT];
}
impl QueryKinds for v1::AntennasQuery {
    const FIELD_KINDS: &'static [(&'static str, &'static str)] = &[LIMIT];
}
impl QueryKinds for v1::ProposeQuery {
    const FIELD_KINDS: &'static [(&'static str, &'static str)] = &[("dry_run", "bad_dry_run")];
}
impl QueryKinds for v1::ImportQuery {}
impl QueryKinds for v1::ForceQuery {}
impl QueryKinds for v1::ClusterHealthQuery {}

impl<S, T> axum::extract::FromRequestParts<S> for Params<T>
where
    T: QueryKinds + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Params(v)),
            Err(rejection) => Err(query_error::<T>(&rejection)),
        }
    }
}

/// The error answer for a query that does not fit `T`: the failing field's kind when the error
/// is in one field's value.
fn query_error<T: QueryKinds>(rejection: &axum::extract::rejection::QueryRejection) -> ApiError {
    // axum's `Query` deserializes with `serde_path_to_error`, which says in which field it
    // failed; the rejection carries that error as its source.
    let mut source = std::error::Error::source(rejection);
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<serde_path_to_error::Error<serde::de::value::Error>>() {
            let field = e.path().to_string();
            if let Some((_, kind)) = T::FIELD_KINDS.iter().find(|(f, _)| *f == field) {
                return ApiError::bad_request(kind, format!("{field}: {}", e.inner()));
            }
            break;
        }
        source = e.source();
    }
    ApiError::bad_request(
        "bad_query",
        format!(
            "the query string does not fit this route: {}",
            rejection.body_text()
        ),
    )
}

/// Reads a request body of at most `limit` bytes; a larger one is a 413.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the request body is over the {limit}-byte limit; split it into smaller requests"
            ),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

/// Parses a JSON body; malformed JSON or a wrong shape is a 400 saying where.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            format!("the body is not the expected JSON: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::error::{ChangeMembershipError, EmptyMembership, Fatal, NotAllowed};

    use super::*;

    /// Status, kind and `Retry-After` of an error answer.
    fn answer(e: impl Into<ApiError>) -> (StatusCode, &'static str, Option<u64>) {
        let e = e.into();
        (e.status, e.kind, e.retry_after)
    }

    const UNAVAILABLE: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

    #[test]
    fn a_failed_proposal_answers_the_status_and_kind_of_what_happened() {
        let ms = Duration::from_millis(5);
        let cases = [
            (
                ProposeError::NotLeader(None),
                (UNAVAILABLE, "not_leader", Some(1)),
            ),
            (
                ProposeError::FormatTooNew {
                    format: 3,
                    effective: 2,
                },
                (StatusCode::CONFLICT, "cluster_version", None),
            ),
            (
                ProposeError::OutcomeUnknown(ms),
                (UNAVAILABLE, "outcome_unknown", Some(1)),
            ),
            (
                ProposeError::NoQuorum(ms),
                (UNAVAILABLE, "no_quorum", Some(1)),
            ),
            (
                ProposeError::Invalid("x".into()),
                (UNAVAILABLE, "raft", None),
            ),
            (ProposeError::ShuttingDown, (UNAVAILABLE, "raft", None)),
            (
                ProposeError::RaftStopped(Box::new(Fatal::Stopped)),
                (UNAVAILABLE, "raft", None),
            ),
            (
                ProposeError::LeaderFailed("x".into()),
                (UNAVAILABLE, "raft", None),
            ),
            (
                ProposeError::LeaderUnreachable("x".into()),
                (UNAVAILABLE, "raft", None),
            ),
            (
                ProposeError::UnexpectedAnswer("x".into()),
                (UNAVAILABLE, "raft", None),
            ),
        ];
        for (e, expected) in cases {
            let shown = format!("{e:?}");
            assert_eq!(answer(e), expected, "{shown}");
        }
    }

    #[test]
    fn a_failed_membership_operation_answers_the_status_and_kind_of_what_happened() {
        let refused = (StatusCode::CONFLICT, "refused", None);
        let raft = (UNAVAILABLE, "raft", None);
        let cases = [
            (
                MembershipError::NotLeader,
                (UNAVAILABLE, "not_leader", Some(1)),
            ),
            (
                MembershipError::InitWithoutSelf(1),
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid", None),
            ),
            (
                MembershipError::AlreadyInitialized(NotAllowed {
                    last_log_id: None,
                    vote: openraft::Vote::new(1, 1),
                }),
                (StatusCode::CONFLICT, "already_initialized", None),
            ),
            (
                MembershipError::AlreadyMember {
                    id: 2,
                    raft_addr: "b:1".into(),
                },
                refused,
            ),
            (MembershipError::NotMember(2), refused),
            (MembershipError::Refused("x".into()), refused),
            (
                MembershipError::Change(ChangeMembershipError::EmptyMembership(EmptyMembership {})),
                raft,
            ),
            (
                MembershipError::CatchUpTimeout {
                    id: 2,
                    within: Duration::from_secs(1),
                },
                raft,
            ),
            (
                MembershipError::NotElected {
                    target: 2,
                    timeout_ms: 1,
                },
                raft,
            ),
            (MembershipError::TargetUnreachable("x".into()), raft),
            (
                MembershipError::RaftStopped(Box::new(Fatal::Panicked)),
                raft,
            ),
        ];
        for (e, expected) in cases {
            let shown = format!("{e:?}");
            assert_eq!(answer(e), expected, "{shown}");
        }
    }

    #[test]
    fn a_read_this_node_cannot_prove_answers_no_quorum() {
        let e = ReadError::Unavailable("no majority answered".into());
        assert_eq!(answer(e), (UNAVAILABLE, "no_quorum", None));
        assert_eq!(
            answer(ReadError::NotLeader),
            (UNAVAILABLE, "not_leader", Some(1))
        );
    }

    #[test]
    fn the_detail_of_an_error_answer_is_the_error_text() {
        let e = ApiError::from(MembershipError::NotMember(7));
        assert_eq!(e.detail, "node 7 is not a member");
        let e = ApiError::from(ProposeError::ShuttingDown);
        assert_eq!(e.detail, "the node is stopping");
    }
}
