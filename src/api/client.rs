//! What the web client needs from the API besides bookings and invitations:
//! - `GET /client-config` (public): how to sign in and the call's timing rules;
//! - `POST /client-events`: connection time, ICE failures, reconnects and a quality summary from
//!   a participant's browser, authenticated by the host's bearer token or the guest's invitation
//!   code, bounded in size and rate, kept with the booking;
//! - `GET /bookings/{booking_id}/client-events` (admin): what the browsers reported.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{AppState, error::ApiError, extract::ApiPath};
use crate::{
    auth::{AdminCaller, AuthError, Caller},
    domain::{Booking, parse_instant},
    store::{ClientEvent, ClientEventLimits, StoreError},
    web::AuthMode,
};

/// Largest `POST /client-events` body.
pub const MAX_EVENTS_BODY_BYTES: usize = 16 * 1024;
/// Most events in one request.
pub const MAX_EVENTS_PER_REQUEST: usize = 20;
/// Largest `data` of one event, serialized.
pub const MAX_EVENT_DATA_BYTES: usize = 1024;
/// What one booking may keep, and receive per minute (both participants together).
pub const CLIENT_EVENT_LIMITS: ClientEventLimits = ClientEventLimits { per_booking: 500, per_minute: 60 };
/// Events are accepted from the join window's opening until this long after the session's end
/// (the quality summary comes when the call ends, possibly after the booked end).
pub const EVENTS_AFTER_END: Duration = Duration::hours(1);

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(client_config))
        .routes(routes!(post_client_events))
        .routes(routes!(list_client_events))
}

/// `GET /client-config`: what the browser app needs before anyone signs in.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientConfig {
    /// `{"mode": "local"}`, or `{"mode": "entra", "client_id", "authority", "scopes"}` (MSAL.js).
    pub auth: AuthMode,
    /// The join window opens this long before the start.
    pub join_opens_before_minutes: i64,
    /// The call warns this long before the booked end.
    pub end_warning_minutes: u32,
    /// What the host's "extend" adds.
    pub extend_minutes: u32,
    /// The languages the app speaks (BCP 47).
    pub languages: Vec<&'static str>,
}

/// The web client's public configuration: how people sign in (local development tokens, or
/// Microsoft Entra ID with MSAL.js) and the session's timing. No secret is in it.
#[utoipa::path(get, path = "/client-config", tag = "web", responses((status = 200, body = ClientConfig)))]
async fn client_config(State(s): State<AppState>) -> impl IntoResponse {
    let w = &s.web;
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Json(ClientConfig {
            auth: w.auth.clone(),
            join_opens_before_minutes: s.sessions.settings().policy.reveal_before.num_minutes(),
            end_warning_minutes: w.end_warning_minutes,
            extend_minutes: w.extend_minutes,
            languages: vec!["en", "pt-PT"],
        }),
    )
}

/// `POST /client-events` body: the booking with the host's bearer token, or the guest's
/// invitation code (then no token is needed).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientEventsIn {
    pub booking_id: Option<Uuid>,
    /// The invitation code the guest joined with.
    pub invitation: Option<String>,
    /// 1 to 20 events.
    pub events: Vec<ClientEventIn>,
}

/// One event from a browser.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientEventIn {
    /// What happened: 1 to 32 of `a-z`, `0-9`, `-` (`connected`, `ice-failed`, `reconnect`, `quality`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// When, RFC 3339 (the browser's clock).
    pub at: String,
    /// A JSON object of at most 1 KiB.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Option<serde_json::Value>,
}

/// `202` answer of `POST /client-events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientEventsAccepted {
    pub accepted: usize,
}

/// A stored client event, as operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientEventView {
    pub id: Uuid,
    pub received_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
    /// `host` or `guest`.
    pub role: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<ClientEventsIn, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::UnsupportedMediaType("the body must be JSON (Content-Type: application/json)".into()));
    }
    if body.len() > MAX_EVENTS_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge(format!("client events take at most {MAX_EVENTS_BODY_BYTES} bytes")));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))
}

fn check_events(events: &[ClientEventIn]) -> Result<(), ApiError> {
    if events.is_empty() || events.len() > MAX_EVENTS_PER_REQUEST {
        return Err(ApiError::BadRequest(format!("send 1 to {MAX_EVENTS_PER_REQUEST} events")));
    }
    for e in events {
        let ok = (1..=32).contains(&e.kind.len())
            && e.kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(ApiError::BadRequest("an event type is 1 to 32 of a-z, 0-9 and -".into()));
        }
        match &e.data {
            None | Some(serde_json::Value::Object(_)) => {}
            Some(_) => return Err(ApiError::BadRequest("an event's data must be a JSON object".into())),
        }
        if e.data.as_ref().is_some_and(|d| d.to_string().len() > MAX_EVENT_DATA_BYTES) {
            return Err(ApiError::BadRequest(format!("an event's data takes at most {MAX_EVENT_DATA_BYTES} bytes")));
        }
    }
    Ok(())
}

/// The booking a guest's invitation code opens, if the code is its booking's current invitation
/// (a replaced or revoked code opens nothing). 404 for every other code, indistinguishably.
async fn invitation_booking(s: &AppState, code: &str) -> Result<Booking, ApiError> {
    match s.store.booking_by_invitation(&crate::sessions::code_hash(code)).await {
        Ok(b) => Ok(b),
        Err(StoreError::NotFound) => Err(ApiError::NotFound("no such invitation".into())),
        Err(e) => Err(e.into()),
    }
}

/// Client events from a participant's browser: kept with the booking for operators.
///
/// Authenticated by the host's bearer token (with `booking_id`: the caller's own booking) or by
/// the guest's `invitation` code. Bounded: 16 KiB and 20 events per request, 1 KiB of data per
/// event, 60 events a minute and 500 in all per booking (429 past those), from the join window's
/// opening until an hour after the end (409 outside it).
#[utoipa::path(post, path = "/client-events", tag = "web", request_body = ClientEventsIn,
    security((), ("bearer" = [])),
    responses((status = 202, body = ClientEventsAccepted), (status = 400), (status = 401),
        (status = 404, description = "Unknown booking or invitation"),
        (status = 409, description = "The session is not open for events"), (status = 413), (status = 415),
        (status = 429, description = "Too many events for this booking; see Retry-After")))]
async fn post_client_events(
    State(s): State<AppState>,
    caller: Option<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, Response> {
    let fail = |e: ApiError| e.into_response();
    let req = parse_body(&headers, &body).map_err(fail)?;
    check_events(&req.events).map_err(fail)?;
    let (booking, role) = match (&req.invitation, &req.booking_id, &caller) {
        (Some(code), _, _) => (invitation_booking(&s, code).await.map_err(fail)?, "guest"),
        (None, Some(id), Some(c)) => match s.store.get_booking(*id).await {
            Ok(b) if b.owner == c.user => (b, "host"),
            Ok(_) | Err(StoreError::NotFound) => {
                return Err(fail(ApiError::NotFound(format!("booking {id} does not exist"))));
            }
            Err(e) => return Err(fail(e.into())),
        },
        (None, _, None) => return Err(AuthError::MissingCredentials.into_response()),
        (None, None, Some(_)) => return Err(fail(ApiError::BadRequest("booking_id or invitation is required".into()))),
    };
    let now = s.clock.now();
    let window = s.sessions.join_window(&booking);
    if !booking.is_live() || now < window.start() || now >= booking.slot.end() + EVENTS_AFTER_END {
        return Err(fail(ApiError::Conflict("the session is not open for client events".into())));
    }
    let mut events = Vec::with_capacity(req.events.len());
    for e in req.events {
        let at = parse_instant("at", &e.at).map_err(|e| fail(e.into()))?;
        events.push(ClientEvent {
            id: Uuid::new_v4(),
            booking_id: booking.id,
            received_at: now,
            at,
            role: role.into(),
            kind: e.kind,
            data: e.data.unwrap_or_else(|| serde_json::json!({})),
        });
    }
    let n = events.len();
    s.store.append_client_events(booking.id, &events, CLIENT_EVENT_LIMITS, now).await.map_err(|e| {
        fail(match e {
            StoreError::Conflict(detail) => ApiError::TooManyRequests { detail, retry_after: 60 },
            other => other.into(),
        })
    })?;
    tracing::info!(booking_id = %booking.id, role, events = n, "client events");
    Ok((StatusCode::ACCEPTED, Json(ClientEventsAccepted { accepted: n })))
}

/// What the participants' browsers reported about a session (operators).
#[utoipa::path(get, path = "/bookings/{booking_id}/client-events", tag = "web",
    params(("booking_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = [ClientEventView]), (status = 401), (status = 403)))]
async fn list_client_events(
    State(s): State<AppState>,
    _admin: AdminCaller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Vec<ClientEventView>>, ApiError> {
    let events = s.store.client_events(id).await?;
    Ok(Json(
        events
            .into_iter()
            .map(|e| ClientEventView {
                id: e.id,
                received_at: e.received_at,
                at: e.at,
                role: e.role,
                kind: e.kind,
                data: e.data,
            })
            .collect(),
    ))
}
