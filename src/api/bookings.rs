//! Bookings: a room for a time window, with find-or-create of a free room (specification 5.5),
//! the join endpoint that hands the owner what Janus needs (specification 7.1), and the
//! session's participants. Handlers parse, authorize, call the sessions layer and map errors.

use axum::{
    Json,
    extract::{OriginalUri, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    AppState,
    error::ApiError,
    extract::{ApiPath, ApiQuery, JsonBody, idempotency_key},
    paging::{Page, PageRequest},
};
use crate::{
    auth::Caller,
    config::IceTransportPolicy,
    domain::{Booking, BookingStatus, RoomId, TimeSlot, parse_day, parse_instant, session::Summary},
    fleet::Participant,
    sessions::{Charge, IceServer, Role, SessionJoin},
    store::{BookingKey, BookingQuery, IdempotencyClaim, StoreError},
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_bookings, create_booking))
        .routes(routes!(get_booking, delete_booking))
        .routes(routes!(cancel_booking))
        .routes(routes!(join_booking))
        .routes(routes!(booking_participants))
        .routes(routes!(extend_booking))
}

/// `POST /bookings/{id}/extend` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingExtend {
    /// The new end, RFC 3339 with offset: after the start and after now, within the maximum session.
    #[schema(format = DateTime)]
    pub end_time: String,
}

/// `POST /bookings` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingCreate {
    /// RFC 3339 with offset; not in the past.
    #[schema(format = DateTime)]
    pub start_time: String,
    /// RFC 3339 with offset; after `start_time`, at most the maximum session length later.
    #[schema(format = DateTime)]
    pub end_time: String,
    /// Book this room; without it, any free room is booked, or a new one is created.
    #[schema(minimum = 1.0, maximum = 9007199254740991.0)]
    pub room_id: Option<u64>,
}

/// A booking as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BookingView {
    pub booking_id: Uuid,
    pub room_id: u64,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub status: BookingStatus,
    pub created_at: DateTime<Utc>,
    /// The booking's own pin (its session's Janus room password; no other booking's session
    /// accepts it): at creation, and to the owner or an admin only inside the join window.
    /// Never in lists. It changes when the session's credentials rotate; `/join` always
    /// answers the current one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// What happened in the session (`GET /bookings/{id}` only: its owner and admins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionView>,
}

/// What happened in a booking's session, from Janus's events and the reconciler's checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The first join.
    pub started_at: Option<DateTime<Utc>>,
    /// The last departure, once everyone who came has left (null while someone is in).
    pub ended_at: Option<DateTime<Utc>>,
    /// Every stretch of time someone was in the session, by join time (a rejoin is a new entry).
    pub participants: Vec<SessionParticipantView>,
}

/// One participant's stretch of time in a session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionParticipantView {
    /// `host` or `guest`; null for a participant that joined with an id the service did not hand out.
    pub role: Option<Role>,
    /// The name it joined with.
    pub display: Option<String>,
    /// Null when only its departure was reported.
    pub joined_at: Option<DateTime<Utc>>,
    /// Null while it is in the session.
    pub left_at: Option<DateTime<Utc>>,
}

impl From<Summary> for SessionView {
    fn from(s: Summary) -> Self {
        Self {
            started_at: s.started_at,
            ended_at: s.ended_at,
            participants: s
                .presences
                .into_iter()
                .map(|p| SessionParticipantView {
                    role: p.role,
                    display: p.display,
                    joined_at: p.joined_at,
                    left_at: p.left_at,
                })
                .collect(),
        }
    }
}

impl BookingView {
    fn new(b: &Booking, now: DateTime<Utc>, password: Option<String>) -> Self {
        Self {
            booking_id: b.id,
            room_id: b.room_id.get(),
            start_time: b.slot.start(),
            end_time: b.slot.end(),
            status: b.status(now),
            created_at: b.created_at,
            password,
            session: None,
        }
    }
}

/// `GET /bookings` filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BookingListQuery {
    /// `upcoming`, `active`, `past` or `cancelled`.
    #[param(value_type = Option<BookingStatus>)]
    pub status: Option<String>,
    /// `YYYY-MM-DD` (UTC): bookings overlapping that day.
    #[param(format = Date)]
    pub date: Option<String>,
    /// Most bookings in the answer: 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Where to go on: the `cursor` of the previous answer's `Link` (opaque).
    #[param(max_length = 512)]
    pub cursor: Option<String>,
}

/// Janus endpoints for a client.
#[derive(Debug, Serialize, ToSchema)]
pub struct JanusEndpoints {
    pub http: String,
    pub ws: String,
}

/// What a participant needs to join its session: janus.js's `server` and `token`, the room, its
/// `pin` and the room token. The same shape for the owner and the guest.
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinInfo {
    pub booking_id: Uuid,
    /// The Janus VideoRoom of THIS session: every booking has its own, so this is not the
    /// booking's `room_id`.
    pub room_id: u64,
    /// The session room's pin: `pin` in both VideoRoom joins (publisher and subscriber).
    pub pin: String,
    pub janus: JanusEndpoints,
    /// The core Janus token: the top-level `token` of every Janus request.
    pub token: String,
    /// The room token: `token` inside the VideoRoom `join` body of both handles.
    pub room_token: String,
    /// When both tokens expire: the session's end plus the grace. After an extension, call the
    /// join endpoint again for fresh ones.
    pub token_expires_at: DateTime<Utc>,
    /// The name the other participant sees.
    pub display: String,
    pub role: Role,
    /// The Janus participant id to join with: `id` in the publisher `join` (so the session's
    /// record knows who joined). A client that leaves it out is still recorded, without a role.
    pub participant_id: u64,
    /// ICE servers for `RTCPeerConnection` (`iceServers`): the STUN and TURN servers of the
    /// session's host, TURN with a `username` and `credential` valid until `token_expires_at`
    /// (coturn's TURN REST API scheme); empty when none is configured.
    pub ice_servers: Vec<IceServer>,
    /// `iceTransportPolicy` for `RTCPeerConnection`: `relay` when the deployment wants media
    /// through TURN only (`ICE_TRANSPORT_POLICY`), else `all`.
    pub ice_transport_policy: IceTransportPolicy,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
}

impl From<SessionJoin> for JoinInfo {
    fn from(j: SessionJoin) -> Self {
        Self {
            booking_id: j.booking.id,
            room_id: j.room.get(),
            pin: j.pin,
            janus: JanusEndpoints { http: j.grant.http_url, ws: j.grant.ws_url },
            token: j.grant.token,
            room_token: j.grant.room_token,
            token_expires_at: j.grant.token_expires_at,
            display: j.display,
            role: j.role,
            participant_id: j.participant_id,
            ice_servers: j.ice_servers,
            ice_transport_policy: j.ice_transport_policy,
            start_time: j.booking.slot.start(),
            end_time: j.booking.slot.end(),
        }
    }
}

/// A session's live participants.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionParticipantsView {
    /// The session's Janus room.
    pub room_id: u64,
    pub participant_count: usize,
    pub participants: Vec<Participant>,
}

pub(super) fn booking_not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("booking {id} does not exist"))
}

/// The booking if the caller may see it: its owner, or an admin. Others get 404 so they learn
/// nothing about other users' bookings.
pub(super) async fn visible_booking(s: &AppState, caller: &Caller, id: Uuid) -> Result<Booking, ApiError> {
    match s.store.get_booking(id).await {
        Ok(b) if b.owner == caller.user || caller.admin => Ok(b),
        Ok(_) | Err(StoreError::NotFound) => Err(booking_not_found(id)),
        Err(e) => Err(e.into()),
    }
}

/// The caller's bookings, by start (specification 5.5.1), a page at a time: `limit` bookings,
/// and a `Link: <...>; rel="next"` header while more remain.
#[utoipa::path(get, path = "/bookings", tag = "bookings", params(BookingListQuery),
    security(("bearer" = [])),
    responses((status = 200, body = [BookingView], headers(("Link" = String, description = "The next page: `<url>; rel=\"next\"`"))),
        (status = 400, description = "Invalid filter, limit or cursor"), (status = 401)))]
async fn list_bookings(
    State(s): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<BookingListQuery>,
) -> Result<Page<BookingView>, ApiError> {
    let page = PageRequest::<BookingKey>::parse("bookings", q.limit, q.cursor.as_deref())?;
    let status: Option<BookingStatus> = q.status.as_deref().map(str::parse).transpose()?;
    let during = q.date.as_deref().map(|d| parse_day("date", d)).transpose()?;
    let now = s.clock.now();
    let query = BookingQuery { owner: caller.user.clone(), during, status, now };
    let bookings = s.store.bookings_page(&query, page.after.as_ref(), page.fetch()).await?;
    Ok(Page::new(bookings, &page, "bookings", BookingKey::of, &uri, &headers).map(|b| BookingView::new(&b, now, None)))
}

/// Book a room for a slot: the given room, or any free room, or a new one (specification 5.5.2).
///
/// No two live bookings of a room ever overlap: the store checks and writes atomically.
/// A user may hold at most `QUOTA_LIVE_BOOKINGS_PER_USER` live bookings (admins are exempt).
/// Honours `Idempotency-Key` (a replay counts nothing against the quota). The answer's `password` is the booking's own pin.
#[utoipa::path(post, path = "/bookings", tag = "bookings", request_body = BookingCreate,
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 201, body = BookingView), (status = 400), (status = 401),
        (status = 404, description = "The given room does not exist"),
        (status = 409, description = "The room is taken in that slot, or the caller holds the most live bookings a user may (`QUOTA_LIVE_BOOKINGS_PER_USER`; the body's `quota` and `limit` say so)"), (status = 413),
        (status = 422, description = "Idempotency-Key reused with another body"), (status = 503)))]
async fn create_booking(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: JsonBody<BookingCreate>,
) -> Result<impl IntoResponse, ApiError> {
    let key = idempotency_key(&headers)?;
    let fingerprint = key.as_ref().map(|_| body.fingerprint());
    let req = body.value;
    let now = s.clock.now();
    let slot = TimeSlot::new(parse_instant("start_time", &req.start_time)?, parse_instant("end_time", &req.end_time)?)?;
    let room_id = req.room_id.map(RoomId::new).transpose()?;
    let claim = key.zip(fingerprint).map(|(key, fingerprint)| IdempotencyClaim {
        scope: "bookings",
        user: caller.user.clone(),
        key,
        fingerprint,
        now,
    });
    let wanted = Booking {
        id: Booking::new_id(now),
        room_id: room_id.unwrap_or_else(RoomId::random),
        owner: caller.user.clone(),
        slot,
        created_at: now,
        cancelled_at: None,
        access: Default::default(),
    };
    let charge = Charge::of(&caller.user, caller.admin);
    let (booking, _room) = s.sessions.book(&wanted, room_id, claim.as_ref(), charge).await?.into_inner();
    tracing::info!(booking_id = %booking.id, room_id = %booking.room_id, user = %caller.user, "booked");
    let pin = s.sessions.pin(&booking);
    Ok((StatusCode::CREATED, Json(BookingView::new(&booking, now, Some(pin)))))
}

/// One booking (specification 5.5.3). The password (the booking's pin) shows only inside the
/// join window; `session` says what happened in it.
#[utoipa::path(get, path = "/bookings/{booking_id}", tag = "bookings",
    params(("booking_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = BookingView), (status = 400), (status = 401), (status = 404)))]
async fn get_booking(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<BookingView>, ApiError> {
    let b = visible_booking(&s, &caller, id).await?;
    let now = s.clock.now();
    let reveal = b.is_live() && s.sessions.join_window(&b).contains(now);
    let session = s.sessions.session_summary(&b).await?;
    Ok(Json(BookingView {
        session: Some(session.into()),
        ..BookingView::new(&b, now, reveal.then(|| s.sessions.pin(&b)))
    }))
}

async fn cancel(s: &AppState, caller: &Caller, id: Uuid) -> Result<StatusCode, ApiError> {
    let b = visible_booking(s, caller, id).await?;
    s.sessions.cancel(&b).await?;
    tracing::info!(booking_id = %id, user = %caller.user, "booking cancelled");
    Ok(StatusCode::NO_CONTENT)
}

/// Cancel a booking before it starts (specification 5.5.4); anyone in its session room (the
/// join window may be open) is removed.
#[utoipa::path(delete, path = "/bookings/{booking_id}", tag = "bookings",
    params(("booking_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 400, description = "Inside the minimum cancel notice"),
        (status = 401), (status = 403, description = "Already started"), (status = 404)))]
async fn delete_booking(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    cancel(&s, &caller, id).await
}

/// Cancel a booking before it starts (specification 5.5.4), as a POST.
#[utoipa::path(post, path = "/bookings/{booking_id}/cancel", tag = "bookings",
    params(("booking_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 400, description = "Inside the minimum cancel notice"),
        (status = 401), (status = 403, description = "Already started"), (status = 404)))]
async fn cancel_booking(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    cancel(&s, &caller, id).await
}

/// What the owner needs to join the session, inside the join window: the Janus URLs, the
/// session's own room, pin and tokens (lasting until the end plus the grace).
#[utoipa::path(get, path = "/bookings/{booking_id}/join", tag = "bookings",
    params(("booking_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = JoinInfo), (status = 400), (status = 401), (status = 404),
        (status = 409, description = "Cancelled"), (status = 410, description = "The session has ended"),
        (status = 425, description = "The join window has not opened yet"),
        (status = 502), (status = 503, description = "The media server is not ready; see Retry-After")))]
async fn join_booking(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<JoinInfo>, ApiError> {
    let b = match s.store.get_booking(id).await {
        Ok(b) if b.owner == caller.user => b,
        Ok(_) | Err(StoreError::NotFound) => return Err(booking_not_found(id)),
        Err(e) => return Err(e.into()),
    };
    Ok(Json(s.sessions.join_host(&b, caller.name.clone()).await?.into()))
}

/// The session's live participants (the owner and the guest), for the owner or an admin, from
/// the join window's opening to the end.
#[utoipa::path(get, path = "/bookings/{booking_id}/participants", tag = "bookings",
    params(("booking_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = SessionParticipantsView), (status = 400), (status = 401), (status = 404),
        (status = 409, description = "Cancelled"), (status = 410, description = "The session has ended"),
        (status = 425, description = "The join window has not opened yet"), (status = 502), (status = 503)))]
async fn booking_participants(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<SessionParticipantsView>, ApiError> {
    let b = visible_booking(&s, &caller, id).await?;
    let p = s.sessions.participants(&b).await?;
    Ok(Json(SessionParticipantsView {
        room_id: p.room.get(),
        participant_count: p.participants.len(),
        participants: p.participants,
    }))
}

/// Move a booking's end (owner or admin): later to extend a session, or earlier to shorten it.
/// The store re-checks overlap atomically; the fleet plan follows at once, because every plan
/// is computed from the stored bookings; the session closes at the new end plus the grace.
#[utoipa::path(post, path = "/bookings/{booking_id}/extend", tag = "bookings",
    params(("booking_id" = Uuid, Path)), request_body = BookingExtend, security(("bearer" = [])),
    responses((status = 200, body = BookingView), (status = 400), (status = 401), (status = 404),
        (status = 409, description = "The room is booked after this session, or the booking is cancelled"),
        (status = 410, description = "The session has ended")))]
async fn extend_booking(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    body: JsonBody<BookingExtend>,
) -> Result<Json<BookingView>, ApiError> {
    let b = visible_booking(&s, &caller, id).await?;
    let end = parse_instant("end_time", &body.value.end_time)?;
    let updated = s.sessions.set_end(&b, end).await?;
    tracing::info!(booking_id = %id, user = %caller.user, end = %end, "booking end moved");
    let now = s.clock.now();
    let reveal = s.sessions.join_window(&updated).contains(now);
    Ok(Json(BookingView::new(&updated, now, reveal.then(|| s.sessions.pin(&updated)))))
}
