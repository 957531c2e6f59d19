//! Rooms: what is booked, with its seats, name and metadata (specification 5.3, 5.4, 5.6, 5.7).
//!
//! Janus holds no room for a store room: each booking's session gets its own Janus room when
//! its join window opens (see [`crate::sessions`]). So creating and deleting a room are store
//! writes; a reset rotates the credentials of the room's sessions; participants come from the
//! sessions whose window is open. Handlers parse, authorize, call the sessions layer and map
//! errors.

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

use super::{
    AppState,
    error::ApiError,
    extract::{ApiPath, ApiQuery, JsonBody, idempotency_key},
    paging::{Page, PageRequest},
};
use crate::{
    auth::{AdminCaller, Caller},
    domain::{MAX_METADATA_BYTES, MAX_NAME_CHARS, MAX_PARTICIPANTS, Room, RoomId, TimeSlot, parse_instant},
    fleet::Participant,
    sessions::Charge,
    store::{IdempotencyClaim, RoomFilter, RoomKey, StoreError},
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_rooms, create_room))
        .routes(routes!(availability))
        .routes(routes!(get_room, delete_room))
        .routes(routes!(reset_password))
        .routes(routes!(participants))
}

/// A room as lists and details show it: never its password or Janus secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomView {
    /// Janus VideoRoom id, below 2^53.
    #[schema(minimum = 1.0, maximum = 9007199254740991.0)]
    pub room_id: u64,
    #[schema(max_length = 200)]
    pub name: Option<String>,
    #[schema(minimum = 1, maximum = 16)]
    pub max_participants: u8,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Room> for RoomView {
    fn from(r: &Room) -> Self {
        Self {
            room_id: r.id.get(),
            name: r.name.clone(),
            max_participants: r.max_participants,
            metadata: r.metadata.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A room's details.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomDetail {
    #[serde(flatten)]
    pub room: RoomView,
    /// True when a live booking of the room ends in the future.
    pub has_future_booking: bool,
}

/// A room just created: the only answer that shows the password unasked.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomCreated {
    #[serde(flatten)]
    pub room: RoomView,
    /// The room's password, kept for the specification's clients. It opens no session: every
    /// booking's session has its own pin (the booking's `password`).
    pub password: String,
}

/// `POST /rooms` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomCreate {
    /// 1 to 16; default 2.
    #[schema(minimum = 1, maximum = 16)]
    pub max_participants: Option<i64>,
    /// A display name, at most 200 characters.
    #[schema(max_length = 200)]
    pub optional_name: Option<String>,
    /// Free-form JSON object, at most 4 KiB serialized.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `GET /rooms` filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoomListQuery {
    /// With `start_time` and `end_time`: only rooms free in that slot.
    pub available: Option<bool>,
    /// RFC 3339 with offset.
    #[param(format = DateTime)]
    pub start_time: Option<String>,
    /// RFC 3339 with offset.
    #[param(format = DateTime)]
    pub end_time: Option<String>,
    /// Only rooms with exactly this many seats.
    #[param(minimum = 1, maximum = 16)]
    pub max_participants: Option<i64>,
    /// Only rooms created before this time (RFC 3339).
    #[param(format = DateTime)]
    pub created_before: Option<String>,
    /// Only rooms created after this time (RFC 3339).
    #[param(format = DateTime)]
    pub created_after: Option<String>,
    /// Most rooms in the answer: 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Where to go on: the `cursor` of the previous answer's `Link` (opaque).
    #[param(max_length = 512)]
    pub cursor: Option<String>,
}

/// `GET /rooms/availability` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SlotQuery {
    /// RFC 3339 with offset.
    #[param(format = DateTime)]
    pub start_time: Option<String>,
    /// RFC 3339 with offset.
    #[param(format = DateTime)]
    pub end_time: Option<String>,
}

/// `GET /rooms/availability` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Availability {
    pub available_rooms: Vec<AvailableRoom>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AvailableRoom {
    pub room_id: u64,
    pub max_participants: u8,
}

/// `POST /rooms/{room_id}/password/reset` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordReset {
    pub room_id: u64,
    pub new_password: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ForceQuery {
    /// Reset even while a session is in progress.
    pub force: Option<bool>,
}

/// Live participants of a room.
#[derive(Debug, Serialize, ToSchema)]
pub struct Participants {
    pub room_id: u64,
    pub participant_count: usize,
    pub participants: Vec<Participant>,
}

/// Parses a required slot given as two query parameters.
pub(super) fn slot_from_query(start: Option<&str>, end: Option<&str>) -> Result<TimeSlot, ApiError> {
    let (Some(start), Some(end)) = (start, end) else {
        return Err(ApiError::BadRequest("start_time and end_time are both required".into()));
    };
    Ok(TimeSlot::new(parse_instant("start_time", start)?, parse_instant("end_time", end)?)?)
}

fn room_not_found(id: RoomId) -> impl FnOnce(StoreError) -> ApiError {
    move |e| match e {
        StoreError::NotFound => ApiError::NotFound(format!("room {id} does not exist")),
        other => other.into(),
    }
}

/// List rooms (specification 5.3.1), oldest first, a page at a time: `limit` rooms, and a
/// `Link: <...>; rel="next"` header while more remain.
#[utoipa::path(get, path = "/rooms", tag = "rooms", params(RoomListQuery),
    security(("bearer" = [])),
    responses((status = 200, body = [RoomView], headers(("Link" = String, description = "The next page: `<url>; rel=\"next\"`"))),
        (status = 400, description = "Invalid filter, limit or cursor"), (status = 401)))]
async fn list_rooms(
    State(s): State<AppState>,
    _caller: Caller,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<RoomListQuery>,
) -> Result<Page<RoomView>, ApiError> {
    let page = PageRequest::<RoomKey>::parse("rooms", q.limit, q.cursor.as_deref())?;
    let free_during = match q.available {
        Some(true) => Some(slot_from_query(q.start_time.as_deref(), q.end_time.as_deref())?),
        _ if q.start_time.is_some() || q.end_time.is_some() => {
            return Err(ApiError::BadRequest("start_time and end_time go with available=true".into()));
        }
        _ => None,
    };
    let max_participants = match q.max_participants {
        None => None,
        Some(n) => Some(participants_in_range(n)?),
    };
    let filter = RoomFilter {
        max_participants,
        created_before: q.created_before.as_deref().map(|v| parse_instant("created_before", v)).transpose()?,
        created_after: q.created_after.as_deref().map(|v| parse_instant("created_after", v)).transpose()?,
        free_during,
    };
    let rooms = s.store.rooms_page(&filter, page.after.as_ref(), page.fetch()).await?;
    Ok(Page::new(rooms, &page, "rooms", RoomKey::of, &uri, &headers).map(|r| RoomView::from(&r)))
}

fn participants_in_range(n: i64) -> Result<u8, ApiError> {
    u8::try_from(n).ok().filter(|n| MAX_PARTICIPANTS.contains(n)).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "max_participants must be between {} and {}, got {n}",
            MAX_PARTICIPANTS.start(),
            MAX_PARTICIPANTS.end()
        ))
    })
}

/// Create a room (specification 5.3.2). Janus gets a room only when a booking's session opens,
/// so this never waits for Janus. A user may create at most `QUOTA_ROOMS_PER_USER_PER_DAY` rooms
/// in any 24 hours (admins are exempt). Honours `Idempotency-Key` (a replay counts nothing).
#[utoipa::path(post, path = "/rooms", tag = "rooms", request_body = RoomCreate,
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 201, body = RoomCreated), (status = 400), (status = 401),
        (status = 409, description = "The caller created the most rooms a user may in 24 hours (`QUOTA_ROOMS_PER_USER_PER_DAY`; the body's `quota` and `limit` say so)"),
        (status = 413),
        (status = 415), (status = 422, description = "Idempotency-Key reused with another body"), (status = 503)))]
async fn create_room(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: JsonBody<RoomCreate>,
) -> Result<impl IntoResponse, ApiError> {
    let key = idempotency_key(&headers)?;
    let fingerprint = key.as_ref().map(|_| body.fingerprint());
    let req = body.value;
    let max_participants = participants_in_range(req.max_participants.unwrap_or(2))?;
    let name = match req.optional_name {
        Some(n) if n.chars().count() > MAX_NAME_CHARS => {
            return Err(ApiError::BadRequest(format!("optional_name may have at most {MAX_NAME_CHARS} characters")));
        }
        Some(n) if n.trim().is_empty() => None,
        other => other,
    };
    let metadata = req.metadata.unwrap_or_default();
    if serde_json::to_vec(&metadata).map(|v| v.len()).unwrap_or(usize::MAX) > MAX_METADATA_BYTES {
        return Err(ApiError::BadRequest(format!("metadata may take at most {MAX_METADATA_BYTES} bytes as JSON")));
    }
    let now = s.clock.now();
    let claim = key.zip(fingerprint).map(|(key, fingerprint)| IdempotencyClaim {
        scope: "rooms",
        user: caller.user.clone(),
        key,
        fingerprint,
        now,
    });

    let template = Room::generate(name, max_participants, metadata, now);
    let charge = Charge::of(&caller.user, caller.admin);
    let room = s.sessions.create_room(&template, claim.as_ref(), charge).await?.into_inner();
    tracing::info!(room_id = %room.id, user = %caller.user, "room created");
    Ok((StatusCode::CREATED, Json(RoomCreated { room: RoomView::from(&room), password: room.password.clone() })))
}

/// Rooms free in a slot (specification 5.4); an empty list, never 404.
#[utoipa::path(get, path = "/rooms/availability", tag = "rooms", params(SlotQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Availability), (status = 400), (status = 401)))]
async fn availability(
    State(s): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<SlotQuery>,
) -> Result<Json<Availability>, ApiError> {
    let slot = slot_from_query(q.start_time.as_deref(), q.end_time.as_deref())?;
    let rooms = s.store.list_rooms(&RoomFilter { free_during: Some(slot), ..Default::default() }).await?;
    Ok(Json(Availability {
        available_rooms: rooms
            .iter()
            .map(|r| AvailableRoom { room_id: r.id.get(), max_participants: r.max_participants })
            .collect(),
    }))
}

/// A room's details (specification 5.3.3).
#[utoipa::path(get, path = "/rooms/{room_id}", tag = "rooms",
    params(("room_id" = u64, Path, minimum = 1.0, maximum = 9007199254740991.0)), security(("bearer" = [])),
    responses((status = 200, body = RoomDetail), (status = 400), (status = 401), (status = 404)))]
async fn get_room(
    State(s): State<AppState>,
    _caller: Caller,
    ApiPath(id): ApiPath<RoomId>,
) -> Result<Json<RoomDetail>, ApiError> {
    let room = s.store.get_room(id).await.map_err(room_not_found(id))?;
    let future = s.store.room_bookings(id, s.clock.now()).await.map_err(room_not_found(id))?;
    Ok(Json(RoomDetail { room: RoomView::from(&room), has_future_booking: !future.is_empty() }))
}

/// Delete a room without future bookings (specification 5.3.4). Admin only. Sessions of its
/// past bookings still inside their grace are closed.
#[utoipa::path(delete, path = "/rooms/{room_id}", tag = "rooms",
    params(("room_id" = u64, Path, minimum = 1.0, maximum = 9007199254740991.0)), security(("bearer" = [])),
    responses((status = 204), (status = 400), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "The room has future bookings"), (status = 503)))]
async fn delete_room(
    State(s): State<AppState>,
    AdminCaller(caller): AdminCaller,
    ApiPath(id): ApiPath<RoomId>,
) -> Result<StatusCode, ApiError> {
    s.sessions.delete_room(id).await?;
    tracing::info!(room_id = %id, admin = %caller.user, "room deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Reset a room (specification 5.6). Admin only: a new room password, and new credentials
/// (pin, Janus room, tokens) for every booking of the room that has not ended, so nothing handed
/// out before still opens one of its sessions. People in a session in progress are removed and
/// join again with fresh credentials. 409 while a session is in progress unless `force=true`.
#[utoipa::path(post, path = "/rooms/{room_id}/password/reset", tag = "rooms",
    params(("room_id" = u64, Path, minimum = 1.0, maximum = 9007199254740991.0), ForceQuery), security(("bearer" = [])),
    responses((status = 200, body = PasswordReset), (status = 400), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "A session is in progress"), (status = 503)))]
async fn reset_password(
    State(s): State<AppState>,
    AdminCaller(caller): AdminCaller,
    ApiPath(id): ApiPath<RoomId>,
    ApiQuery(q): ApiQuery<ForceQuery>,
) -> Result<Json<PasswordReset>, ApiError> {
    let room = s.sessions.reset_room(id, q.force.unwrap_or(false)).await?;
    tracing::info!(room_id = %id, admin = %caller.user, "room reset");
    Ok(Json(PasswordReset { room_id: id.get(), new_password: room.password }))
}

/// Live participants, from Janus (specification 5.7), of the room's sessions whose join window
/// is open: admins see every one, a booking's owner their own (from the window's opening to the
/// end). Cached for 5 s per session. A session whose host is off has none.
#[utoipa::path(get, path = "/rooms/{room_id}/participants", tag = "rooms",
    params(("room_id" = u64, Path, minimum = 1.0, maximum = 9007199254740991.0)), security(("bearer" = [])),
    responses((status = 200, body = Participants), (status = 400), (status = 401), (status = 403), (status = 404),
        (status = 502, description = "Janus refused"), (status = 503, description = "Janus unreachable")))]
async fn participants(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<RoomId>,
) -> Result<Json<Participants>, ApiError> {
    let participants = s.sessions.room_participants(id, &caller.user, caller.admin).await?;
    Ok(Json(Participants { room_id: id.get(), participant_count: participants.len(), participants }))
}
