//! Errors as `{"error": "<kind>", "detail": "<what and how to fix>"}`, request bodies read
//! under a size limit, and JSON bodies parsed into clear 400s.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use sonraft_client::v1;

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
            "missing or wrong bearer token; send 'Authorization: Bearer <operator token>'",
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

/// The one mapping of a failed proposal to an answer. `NotLeader` is normally forwarded
/// instead; it maps to 503 only when it cannot be.
impl From<crate::propose::ProposeError> for ApiError {
    fn from(e: crate::propose::ProposeError) -> Self {
        use crate::propose::ProposeError as P;
        match e {
            P::NotLeader(_) => {
                ApiError::unavailable("not_leader", "this node does not lead; retry").retry_after(1)
            }
            e @ P::FormatTooNew { .. } => ApiError::conflict("cluster_version", e.to_string()),
            e @ P::OutcomeUnknown(_) => {
                ApiError::unavailable("outcome_unknown", e.to_string()).retry_after(1)
            }
            e @ P::NoQuorum(_) => ApiError::unavailable("no_quorum", e.to_string()).retry_after(1),
            e @ P::Raft(_) => ApiError::unavailable("raft", e.to_string()),
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
