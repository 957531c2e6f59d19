//! Rooms: Janus VideoRoom rooms with a password (specification 5.3, 5.4, 5.6, 5.7).
//!
//! A room change that Janus must see (create, password reset, delete) is applied to Janus in the
//! same request; when Janus fails, the store is put back as it was and the answer is 502/503.

use axum::{
    Json,
    extract::State,
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
};
use crate::{
    auth::{AdminCaller, Caller},
    domain::{self, MAX_METADATA_BYTES, MAX_NAME_CHARS, MAX_PARTICIPANTS, Room, RoomId, TimeSlot, parse_instant},
    fleet::Participant,
    store::{Created, IdempotencyClaim, RoomFilter, StoreError},
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
    pub room_id: u64,
    pub name: Option<String>,
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
    /// The join password (the Janus `pin`).
    pub password: String,
}

/// `POST /rooms` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomCreate {
    /// 1 to 16; default 2.
    pub max_participants: Option<i64>,
    /// A display name, at most 200 characters.
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
    pub start_time: Option<String>,
    /// RFC 3339 with offset.
    pub end_time: Option<String>,
    /// Only rooms with exactly this many seats.
    pub max_participants: Option<i64>,
    /// Only rooms created before this time (RFC 3339).
    pub created_before: Option<String>,
    /// Only rooms created after this time (RFC 3339).
    pub created_after: Option<String>,
}

/// `GET /rooms/availability` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SlotQuery {
    /// RFC 3339 with offset.
    pub start_time: Option<String>,
    /// RFC 3339 with offset.
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

/// List rooms (specification 5.3.1).
#[utoipa::path(get, path = "/rooms", tag = "rooms", params(RoomListQuery),
    security(("bearer" = [])),
    responses((status = 200, body = [RoomView]), (status = 400, description = "Invalid filter"), (status = 401)))]
async fn list_rooms(
    State(s): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<RoomListQuery>,
) -> Result<Json<Vec<RoomView>>, ApiError> {
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
    let rooms = s.store.list_rooms(&filter).await?;
    Ok(Json(rooms.iter().map(RoomView::from).collect()))
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

/// Create a room, in the store and in Janus (specification 5.3.2).
///
/// Honours `Idempotency-Key`. When Janus fails the stored room is removed again and the answer
/// is 503 (the key is released with it, so a retry with the same key can succeed).
#[utoipa::path(post, path = "/rooms", tag = "rooms", request_body = RoomCreate,
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 201, body = RoomCreated), (status = 400), (status = 401), (status = 413),
        (status = 422, description = "Idempotency-Key reused with another body"),
        (status = 502), (status = 503)))]
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

    // Random 53-bit ids practically never collide; retry the rare clash with a fresh id.
    let mut attempt = 0;
    let created = loop {
        let room = Room::generate(name.clone(), max_participants, metadata.clone(), now);
        match s.store.insert_room(&room, claim.as_ref()).await {
            Err(StoreError::AlreadyExists) if attempt < 5 => attempt += 1,
            other => break other?,
        }
    };
    let room = match created {
        Created::Replayed(room) => room,
        Created::New(room) => {
            if let Err(e) = s.fleet.materialize(&room).await {
                tracing::warn!(room_id = %room.id, error = %e, "Janus did not create the room; removing it from the store");
                if let Err(undo) = s.store.delete_room(room.id, now).await {
                    tracing::error!(room_id = %room.id, error = %undo, "could not remove the room after Janus failed");
                }
                return Err(ApiError::Unavailable {
                    detail: "could not create the room in the WebRTC service (Janus); try again later".into(),
                    retry_after: Some(5),
                });
            }
            tracing::info!(room_id = %room.id, user = %caller.user, "room created");
            room
        }
    };
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
    params(("room_id" = u64, Path)), security(("bearer" = [])),
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

/// Delete a room, in Janus first, then in the store (specification 5.3.4). Admin only.
#[utoipa::path(delete, path = "/rooms/{room_id}", tag = "rooms",
    params(("room_id" = u64, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "The room has future bookings"), (status = 502), (status = 503)))]
async fn delete_room(
    State(s): State<AppState>,
    AdminCaller(caller): AdminCaller,
    ApiPath(id): ApiPath<RoomId>,
) -> Result<StatusCode, ApiError> {
    let now = s.clock.now();
    let room = s.store.get_room(id).await.map_err(room_not_found(id))?;
    if !s.store.room_bookings(id, now).await.map_err(room_not_found(id))?.is_empty() {
        return Err(future_bookings(id));
    }
    s.fleet.destroy(&room).await?;
    match s.store.delete_room(id, now).await {
        Ok(()) | Err(StoreError::NotFound) => {}
        Err(e) => {
            // A booking arrived between the check and the delete: the room stays, so put it back in Janus.
            if let Err(redo) = s.fleet.materialize(&room).await {
                tracing::error!(room_id = %id, error = %redo, "room kept in the store but not restored in Janus");
            }
            return Err(match e {
                StoreError::Conflict(_) => future_bookings(id),
                other => other.into(),
            });
        }
    }
    tracing::info!(room_id = %id, admin = %caller.user, "room deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn future_bookings(id: RoomId) -> ApiError {
    ApiError::Conflict(format!("room {id} has future bookings; cancel them before deleting it"))
}

/// Give a room a new password, in the store and in Janus (specification 5.6). Admin only.
/// 409 while a session is in progress unless `force=true`.
#[utoipa::path(post, path = "/rooms/{room_id}/password/reset", tag = "rooms",
    params(("room_id" = u64, Path), ForceQuery), security(("bearer" = [])),
    responses((status = 200, body = PasswordReset), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "A session is in progress"), (status = 502), (status = 503)))]
async fn reset_password(
    State(s): State<AppState>,
    AdminCaller(caller): AdminCaller,
    ApiPath(id): ApiPath<RoomId>,
    ApiQuery(q): ApiQuery<ForceQuery>,
) -> Result<Json<PasswordReset>, ApiError> {
    let now = s.clock.now();
    let room = s.store.get_room(id).await.map_err(room_not_found(id))?;
    if !q.force.unwrap_or(false) {
        let bookings = s.store.room_bookings(id, now).await.map_err(room_not_found(id))?;
        if bookings.iter().any(|b| b.slot.contains(now)) {
            return Err(ApiError::Conflict(format!(
                "room {id} has a session in progress; use ?force=true to reset anyway"
            )));
        }
    }
    let new_password = domain::new_password();
    let updated =
        s.store.set_room_password(id, &room.password, &new_password, now).await.map_err(room_not_found(id))?;
    if let Err(e) = s.fleet.materialize(&updated).await {
        // Janus kept the old pin: keep it in the store too.
        if let Err(undo) = s.store.set_room_password(id, &new_password, &room.password, now).await {
            tracing::error!(room_id = %id, error = %undo, "could not restore the old password after Janus failed");
        }
        return Err(match ApiError::from(e) {
            ApiError::BadGateway(_) | ApiError::Unavailable { .. } => ApiError::Unavailable {
                detail: "could not change the password in the WebRTC service (Janus); the old password stays".into(),
                retry_after: Some(5),
            },
            other => other,
        });
    }
    tracing::info!(room_id = %id, admin = %caller.user, "room password reset");
    Ok(Json(PasswordReset { room_id: id.get(), new_password }))
}

/// Live participants, from Janus (specification 5.7). Admins, or the owner of a booking of the
/// room that is active now. Cached for 5 s per room.
#[utoipa::path(get, path = "/rooms/{room_id}/participants", tag = "rooms",
    params(("room_id" = u64, Path)), security(("bearer" = [])),
    responses((status = 200, body = Participants), (status = 401), (status = 403), (status = 404),
        (status = 502, description = "Janus unreachable")))]
async fn participants(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<RoomId>,
) -> Result<Json<Participants>, ApiError> {
    let now = s.clock.now();
    let room = s.store.get_room(id).await.map_err(room_not_found(id))?;
    if !caller.admin {
        let bookings = s.store.room_bookings(id, now).await.map_err(room_not_found(id))?;
        if !bookings.iter().any(|b| b.owner == caller.user && b.slot.contains(now)) {
            return Err(ApiError::Forbidden(
                "only an admin or the owner of the room's session in progress may list its participants".into(),
            ));
        }
    }
    let participants = s.fleet.participants(&room).await.map_err(|e| {
        tracing::warn!(room_id = %id, error = %e, "could not list participants");
        ApiError::BadGateway("could not reach the WebRTC service (Janus) to list participants".into())
    })?;
    Ok(Json(Participants { room_id: id.get(), participant_count: participants.len(), participants }))
}
