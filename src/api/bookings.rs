//! Bookings: a room for a time window, with find-or-create of a free room (specification 5.5)
//! and the join endpoint that hands the owner what Janus needs (specification 7.1).

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    AppState,
    error::ApiError,
    extract::{ApiPath, ApiQuery, JsonBody, idempotency_key},
};
use crate::{
    auth::Caller,
    domain::{Booking, BookingStatus, Room, RoomId, TimeSlot, parse_instant},
    store::{Created, IdempotencyClaim, StoreError},
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_bookings, create_booking))
        .routes(routes!(get_booking, delete_booking))
        .routes(routes!(cancel_booking))
        .routes(routes!(join_booking))
        .routes(routes!(extend_booking))
}

/// `POST /bookings/{id}/extend` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingExtend {
    /// The new end, RFC 3339 with offset: after the start and after now, within the maximum session.
    pub end_time: String,
}

/// `POST /bookings` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingCreate {
    /// RFC 3339 with offset; not in the past.
    pub start_time: String,
    /// RFC 3339 with offset; after `start_time`, at most the maximum session length later.
    pub end_time: String,
    /// Book this room; without it, any free room is booked, or a new one is created.
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
    /// The room password: at creation, and to the owner or an admin only from shortly before
    /// the start until the end. Never in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
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
        }
    }
}

/// `GET /bookings` filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BookingListQuery {
    /// `upcoming`, `active`, `past` or `cancelled`.
    pub status: Option<String>,
    /// `YYYY-MM-DD` (UTC): bookings overlapping that day.
    pub date: Option<String>,
}

/// Janus endpoints for a client.
#[derive(Debug, Serialize, ToSchema)]
pub struct JanusEndpoints {
    pub http: String,
    pub ws: String,
}

/// What a client needs to join its session (janus.js `server`, `token`, and the room `pin`).
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinInfo {
    pub room_id: u64,
    pub pin: String,
    pub janus: JanusEndpoints,
    /// A signed Janus token for the VideoRoom plugin.
    pub token: String,
    pub token_expires_at: DateTime<Utc>,
    /// A display name for the participant.
    pub display: String,
}

fn booking_not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("booking {id} does not exist"))
}

/// The booking if the caller may see it: its owner, or an admin. Others get 404 so they learn
/// nothing about other users' bookings.
async fn visible_booking(s: &AppState, caller: &Caller, id: Uuid) -> Result<Booking, ApiError> {
    match s.store.get_booking(id).await {
        Ok(b) if b.owner == caller.user || caller.admin => Ok(b),
        Ok(_) | Err(StoreError::NotFound) => Err(booking_not_found(id)),
        Err(e) => Err(e.into()),
    }
}

/// The caller's bookings, by start (specification 5.5.1).
#[utoipa::path(get, path = "/bookings", tag = "bookings", params(BookingListQuery),
    security(("bearer" = [])),
    responses((status = 200, body = [BookingView]), (status = 400), (status = 401)))]
async fn list_bookings(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<BookingListQuery>,
) -> Result<Json<Vec<BookingView>>, ApiError> {
    let status: Option<BookingStatus> = q.status.as_deref().map(str::parse).transpose()?;
    let during = match q.date.as_deref() {
        None => None,
        Some(d) => {
            let day = NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| ApiError::BadRequest(format!("date must be YYYY-MM-DD, got {d:?}")))?;
            let start = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
            Some(TimeSlot::new(start, start + chrono::Duration::days(1))?)
        }
    };
    let now = s.clock.now();
    let bookings = s.store.list_bookings(&caller.user, during).await?;
    Ok(Json(
        bookings
            .iter()
            .filter(|b| status.is_none_or(|st| b.status(now) == st))
            .map(|b| BookingView::new(b, now, None))
            .collect(),
    ))
}

/// Book a room for a slot: the given room, or any free room, or a new one (specification 5.5.2).
///
/// No two live bookings of a room ever overlap: the store checks and writes atomically.
/// Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/bookings", tag = "bookings", request_body = BookingCreate,
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 201, body = BookingView), (status = 400), (status = 401),
        (status = 404, description = "The given room does not exist"),
        (status = 409, description = "The room is taken in that slot"), (status = 413),
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
    let slot = s.settings.policy.bookable_slot(slot, now)?;
    let room_id = req.room_id.map(RoomId::new).transpose()?;
    let claim = key.zip(fingerprint).map(|(key, fingerprint)| IdempotencyClaim {
        scope: "bookings",
        user: caller.user.clone(),
        key,
        fingerprint,
        now,
    });
    let mut booking = Booking {
        id: Uuid::new_v4(),
        room_id: room_id.unwrap_or_else(RoomId::random),
        owner: caller.user.clone(),
        slot,
        created_at: now,
        cancelled_at: None,
        access: Default::default(),
    };

    let (booking, room) = match room_id {
        Some(id) => {
            let booked = s.store.book_room(&booking, claim.as_ref()).await.map_err(|e| match e {
                StoreError::NotFound => ApiError::NotFound(format!("room {id} does not exist")),
                StoreError::Conflict(_) => {
                    ApiError::Conflict(format!("room {id} is already booked in the requested slot"))
                }
                other => other.into(),
            })?;
            let booking = booked.into_inner();
            let room = s.store.get_room(booking.room_id).await?;
            (booking, room)
        }
        None => match s.store.book_any_room(&booking, None, claim.as_ref()).await {
            Ok(c) => c.into_inner(),
            Err(StoreError::NoFreeRoom) => {
                // Make the room in Janus first, so the store never holds a room Janus refused.
                let new_room = Room::generate(None, 2, Default::default(), now);
                booking.room_id = new_room.id;
                s.fleet.materialize(&new_room).await.map_err(|e| {
                    tracing::warn!(error = %e, "Janus did not create a room for a new booking");
                    ApiError::Unavailable {
                        detail: "could not create a new room in the WebRTC service (Janus); try again later".into(),
                        retry_after: Some(5),
                    }
                })?;
                let result = s.store.book_any_room(&booking, Some(&new_room), claim.as_ref()).await;
                let unused = match &result {
                    Ok(Created::New((_, r)) | Created::Replayed((_, r))) => r.id != new_room.id,
                    Err(_) => true,
                };
                if unused {
                    // Another request freed or created a room first: the new Janus room is not needed.
                    if let Err(e) = s.fleet.destroy(&new_room).await {
                        tracing::warn!(room_id = %new_room.id, error = %e, "could not remove an unused Janus room");
                    }
                }
                result?.into_inner()
            }
            Err(e) => return Err(e.into()),
        },
    };
    tracing::info!(booking_id = %booking.id, room_id = %booking.room_id, user = %caller.user, "booked");
    Ok((StatusCode::CREATED, Json(BookingView::new(&booking, now, Some(room.password)))))
}

/// One booking (specification 5.5.3). The password shows only inside the join window.
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
    let reveal = b.is_live() && s.settings.policy.join_window(b.slot).contains(now);
    let password = if reveal { Some(s.store.get_room(b.room_id).await?.password) } else { None };
    Ok(Json(BookingView::new(&b, now, password)))
}

async fn cancel(s: &AppState, caller: &Caller, id: Uuid) -> Result<StatusCode, ApiError> {
    let b = visible_booking(s, caller, id).await?;
    let now = s.clock.now();
    match b.status(now) {
        BookingStatus::Cancelled => return Ok(StatusCode::NO_CONTENT),
        BookingStatus::Active | BookingStatus::Past => {
            return Err(ApiError::Forbidden("the session has started; it can no longer be cancelled".into()));
        }
        BookingStatus::Upcoming => {}
    }
    let notice = s.settings.policy.min_cancel_notice;
    if b.slot.start() - now < notice {
        return Err(ApiError::BadRequest(format!(
            "bookings can be cancelled only up to {} minutes before the start",
            notice.num_minutes()
        )));
    }
    s.store.cancel_booking(id, now).await.map_err(|e| match e {
        StoreError::NotFound => booking_not_found(id),
        other => other.into(),
    })?;
    tracing::info!(booking_id = %id, user = %caller.user, "booking cancelled");
    Ok(StatusCode::NO_CONTENT)
}

/// Cancel a booking before it starts (specification 5.5.4).
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

/// What the owner needs to join the session, inside the join window: the Janus URLs, the pin and
/// a signed Janus token lasting until the end plus a grace.
#[utoipa::path(get, path = "/bookings/{booking_id}/join", tag = "bookings",
    params(("booking_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = JoinInfo), (status = 401), (status = 404),
        (status = 409, description = "Cancelled"), (status = 410, description = "The session has ended"),
        (status = 425, description = "The join window has not opened yet"),
        (status = 503, description = "The media server is not ready; see Retry-After")))]
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
    let now = s.clock.now();
    if !b.is_live() {
        return Err(ApiError::Conflict("the booking is cancelled".into()));
    }
    if now >= b.slot.end() {
        return Err(ApiError::Gone("the session has ended".into()));
    }
    let window = s.settings.policy.join_window(b.slot);
    if now < window.start() {
        return Err(ApiError::TooEarly {
            detail: format!("the session can be joined from {}", crate::domain::format_instant(window.start())),
            opens_at: window.start(),
        });
    }
    let room = s.store.get_room(b.room_id).await?;
    let expires_at = b.slot.end() + s.settings.join_token_grace;
    let grant = s.fleet.join(&room, &b, expires_at).await?;
    Ok(Json(JoinInfo {
        room_id: room.id.get(),
        pin: room.password,
        janus: JanusEndpoints { http: grant.http_url, ws: grant.ws_url },
        token: grant.token,
        token_expires_at: grant.token_expires_at,
        display: caller.user,
    }))
}

/// Move a booking's end (owner or admin): later to extend a session, or earlier to shorten it.
/// The store re-checks overlap atomically; the fleet plan follows at once, because every plan
/// is computed from the stored bookings.
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
    let now = s.clock.now();
    let end = parse_instant("end_time", &body.value.end_time)?;
    if !b.is_live() {
        return Err(ApiError::Conflict("the booking is cancelled".into()));
    }
    if now >= b.slot.end() {
        return Err(ApiError::Gone("the session has ended".into()));
    }
    if end <= now {
        return Err(ApiError::BadRequest("end_time must be in the future".into()));
    }
    let slot = TimeSlot::new(b.slot.start(), end)?;
    if slot.duration() > s.settings.policy.max_duration {
        return Err(ApiError::BadRequest(format!(
            "a session may last at most {} minutes",
            s.settings.policy.max_duration.num_minutes()
        )));
    }
    let updated = s.store.set_booking_end(id, end).await.map_err(|e| match e {
        StoreError::NotFound => booking_not_found(id),
        StoreError::Conflict(_) => {
            ApiError::Conflict(format!("room {} is booked by someone else in the extended time", b.room_id))
        }
        other => other.into(),
    })?;
    tracing::info!(booking_id = %id, user = %caller.user, end = %end, "booking end moved");
    let reveal = s.settings.policy.join_window(updated.slot).contains(now);
    let password = if reveal { Some(s.store.get_room(updated.room_id).await?.password) } else { None };
    Ok(Json(BookingView::new(&updated, now, password)))
}
