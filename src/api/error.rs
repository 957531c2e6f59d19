//! The one API error type. Every error answers RFC 9457 `application/problem+json` and keeps the
//! `detail` field the API contract (and the specification) uses. Internal causes are logged, never
//! shown to clients.

use axum::{
    extract::rejection::{BytesRejection, PathRejection, QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::{domain::Invalid, fleet::FleetError, sessions::SessionError, store::StoreError};

/// Every way an API request can fail, with its status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a value is out of range.
    #[error("{0}")]
    BadRequest(String),
    /// 401: this needs a (different) bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// 401: this needs HTTP basic credentials (Janus's event handler).
    #[error("{0}")]
    BasicAuthRequired(String),
    /// 403: authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource (or not the caller's to see).
    #[error("{0}")]
    NotFound(String),
    /// 409: the resource's state forbids the change (taken slot, future bookings, cancelled).
    #[error("{0}")]
    Conflict(String),
    /// 409: a per-user quota is reached; the body names it (`quota`) and its `limit`.
    #[error("{detail}")]
    QuotaExceeded { detail: String, quota: &'static str, limit: u32 },
    /// 410: too late (the session has ended).
    #[error("{0}")]
    Gone(String),
    /// 413: the body is larger than the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: an `Idempotency-Key` reused with a different request.
    #[error("{0}")]
    Unprocessable(String),
    /// 425: too early (the join window opens at `opens_at`).
    #[error("{detail}")]
    TooEarly { detail: String, opens_at: DateTime<Utc> },
    /// 429: the client sent too much; it may try again after `retry_after` seconds.
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after: u64 },
    /// 502: Janus answered with something unexpected.
    #[error("{0}")]
    BadGateway(String),
    /// 503: a dependency (database, Janus) is unavailable; retry later.
    #[error("{detail}")]
    Unavailable { detail: String, retry_after: Option<u64> },
    /// 500: a bug; the cause is logged, the client sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) | ApiError::BasicAuthRequired(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::QuotaExceeded { .. } => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooEarly { .. } => StatusCode::TOO_EARLY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A 503 with a message for the client.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        ApiError::Unavailable { detail: detail.into(), retry_after: None }
    }
}

/// Builds a problem+json response. `extra` members are merged into the object.
pub fn problem(status: StatusCode, detail: &str, extra: Option<serde_json::Value>) -> Response {
    let mut body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let (Some(serde_json::Value::Object(extra)), Some(obj)) = (extra, body.as_object_mut()) {
        obj.extend(extra);
    }
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    res
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                problem(status, "internal error; it has been logged", None)
            }
            ApiError::TooEarly { detail, opens_at } => {
                problem(status, &detail, Some(json!({ "opens_at": crate::domain::format_instant(opens_at) })))
            }
            ApiError::QuotaExceeded { detail, quota, limit } => {
                problem(status, &detail, Some(json!({ "quota": quota, "limit": limit })))
            }
            ApiError::TooManyRequests { detail, retry_after } => {
                let mut res = problem(status, &detail, None);
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
                res
            }
            ApiError::Unauthorized(detail) => {
                let mut res = problem(status, &detail, None);
                res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                res
            }
            ApiError::BasicAuthRequired(detail) => {
                let mut res = problem(status, &detail, None);
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"janus-events\""));
                res
            }
            ApiError::Unavailable { detail, retry_after } => {
                let mut res = problem(status, &detail, None);
                if let Some(secs) = retry_after {
                    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                }
                res
            }
            other => problem(status, &other.to_string(), None),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::BadRequest(e.0)
    }
}

impl From<StoreError> for ApiError {
    /// The generic mapping; handlers map `NotFound` and `Conflict` themselves where they can say more.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::Conflict(msg) => ApiError::Conflict(msg),
            StoreError::AlreadyExists => ApiError::Conflict("already exists".into()),
            StoreError::PreconditionFailed => {
                ApiError::Conflict("the resource changed while this request ran; retry".into())
            }
            StoreError::IdempotencyMismatch => {
                ApiError::Unprocessable("this Idempotency-Key was used with a different request body".into())
            }
            StoreError::NoFreeRoom => ApiError::Conflict("no free room".into()),
            StoreError::LimitReached => ApiError::Conflict("the live bookings quota is reached".into()),
            StoreError::Unavailable { message, retry_after } => {
                tracing::warn!(%message, "store unavailable");
                ApiError::Unavailable {
                    detail: "the database is unavailable; try again shortly".into(),
                    retry_after: Some(retry_after.map(|d| d.as_secs_f64().ceil() as u64).unwrap_or(1)),
                }
            }
            StoreError::Internal(msg) => ApiError::Internal(msg),
        }
    }
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        tracing::warn!(error = %e, "Janus call failed");
        match e {
            FleetError::Unavailable(_) => ApiError::Unavailable {
                detail: "the WebRTC service (Janus) is unavailable; try again later".into(),
                retry_after: Some(5),
            },
            FleetError::Janus(_) => {
                ApiError::BadGateway("the WebRTC service (Janus) refused the request; try again later".into())
            }
            FleetError::NotReady { retry_after } => ApiError::Unavailable {
                detail: "the session's media server is starting; try again shortly".into(),
                retry_after: Some(retry_after.as_secs().max(1)),
            },
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound(d) => ApiError::NotFound(d),
            SessionError::Invalid(d) => ApiError::BadRequest(d),
            SessionError::SignInRequired(d) => ApiError::Unauthorized(d),
            SessionError::Forbidden(d) => ApiError::Forbidden(d),
            SessionError::Conflict(d) => ApiError::Conflict(d),
            SessionError::QuotaExceeded { detail, quota, limit } => ApiError::QuotaExceeded { detail, quota, limit },
            SessionError::Ended(d) => ApiError::Gone(d),
            SessionError::TooEarly { detail, opens_at } => ApiError::TooEarly { detail, opens_at },
            SessionError::Fleet(e) => e.into(),
            SessionError::Store(e) => e.into(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::BadRequest(format!("invalid path parameter: {}", e.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query: {}", e.body_text()))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!("the body is larger than {} bytes", super::MAX_BODY_BYTES))
        } else {
            ApiError::BadRequest(format!("could not read the body: {}", e.body_text()))
        }
    }
}
