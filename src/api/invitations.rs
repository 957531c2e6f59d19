//! Guest invitations (specification 7.1: "reservou ou foi convidado"): the owner makes, shows and
//! revokes a booking's invitation; the guest opens the code's landing data and joins with it.
//!
//! The code is a bearer capability (192 random bits) shown once, in the answer that makes it;
//! the store keeps only its SHA-256. Handlers parse, authorize, call the sessions layer and map
//! errors.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    AppState,
    bookings::{JoinInfo, visible_booking},
    error::ApiError,
    extract::{ApiPath, JsonBody},
};
use crate::{
    auth::Caller,
    domain::{BookingStatus, Invitation},
    sessions::HOST_LABEL,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_invitation, get_invitation, delete_invitation))
        .routes(routes!(invitation_landing))
        .routes(routes!(join_with_invitation))
}

/// `POST /bookings/{booking_id}/invitation` body (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitationCreate {
    /// The only user (token `oid` or `sub`) who may use the invitation; without it, anyone
    /// holding the link may.
    #[schema(min_length = 1, max_length = 256)]
    pub guest: Option<String>,
}

/// An invitation just made: the only answer that shows its code.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationCreated {
    /// The bearer code (shown once; only its hash is kept).
    pub code: String,
    /// The guest's page: `<PUBLIC_BASE_URL>/app/i/<code>`.
    pub url: String,
    /// When the code stops working: the session's end.
    pub expires_at: DateTime<Utc>,
    /// The only user who may use it, if the owner named one.
    pub guest: Option<String>,
}

/// The booking's live invitation, as its owner sees it later (without the code).
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationView {
    pub guest: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// True once a guest joined with it.
    pub joined: bool,
}

/// What a guest's landing page needs, and no more.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationLanding {
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub status: BookingStatus,
    /// When the guest may join: the join window's opening.
    pub opens_at: DateTime<Utc>,
    /// The host's name (or a neutral label).
    pub host_display: String,
}

/// `POST /invitations/{code}/join` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuestJoin {
    /// The name the host sees: 1 to 64 printable characters.
    #[schema(min_length = 1, max_length = 64)]
    pub display_name: String,
}

const GUEST_MAX_CHARS: usize = 256;

fn view(inv: &Invitation, expires_at: DateTime<Utc>) -> InvitationView {
    InvitationView { guest: inv.guest.clone(), created_at: inv.created_at, expires_at, joined: inv.joined_at.is_some() }
}

/// Invite the guest: a new invitation for the booking, replacing the previous one (its code
/// stops working at once, and a guest who joined with it is removed from the session).
#[utoipa::path(post, path = "/bookings/{booking_id}/invitation", tag = "invitations",
    params(("booking_id" = Uuid, Path)), request_body(content = InvitationCreate, description = "optional"),
    security(("bearer" = [])),
    responses((status = 201, body = InvitationCreated), (status = 400), (status = 401), (status = 404),
        (status = 409, description = "Cancelled"), (status = 410, description = "The session has ended"),
        (status = 413), (status = 415), (status = 503)))]
async fn create_invitation(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    body: Option<JsonBody<InvitationCreate>>,
) -> Result<impl IntoResponse, ApiError> {
    let req = body.map(|b| b.value).unwrap_or_default();
    let guest = match req.guest.map(|g| g.trim().to_string()) {
        Some(g) if g.is_empty() || g.chars().count() > GUEST_MAX_CHARS || g.chars().any(char::is_control) => {
            return Err(ApiError::BadRequest(format!(
                "guest must be a user id of 1 to {GUEST_MAX_CHARS} printable characters"
            )));
        }
        other => other,
    };
    let b = visible_booking(&s, &caller, id).await?;
    // The name the guest's page shows is the owner's, even when an admin makes the invitation.
    let host_display = if caller.user == b.owner { caller.name.clone() } else { None };
    let made = s.sessions.invite(&b, guest, host_display.unwrap_or_else(|| HOST_LABEL.to_string())).await?;
    Ok((
        StatusCode::CREATED,
        Json(InvitationCreated {
            code: made.code,
            url: made.url,
            expires_at: made.booking.slot.end(),
            guest: made.invitation.guest,
        }),
    ))
}

/// The booking's live invitation (its code cannot be shown again: only its hash is kept).
#[utoipa::path(get, path = "/bookings/{booking_id}/invitation", tag = "invitations",
    params(("booking_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = InvitationView), (status = 400), (status = 401),
        (status = 404, description = "No such booking, or it has no live invitation")))]
async fn get_invitation(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<InvitationView>, ApiError> {
    let b = visible_booking(&s, &caller, id).await?;
    match &b.access.invitation {
        Some(inv) if b.is_live() && s.clock.now() < b.slot.end() => Ok(Json(view(inv, b.slot.end()))),
        _ => Err(ApiError::NotFound(format!("booking {id} has no live invitation"))),
    }
}

/// Revoke the invitation: its code stops working at once and a guest who joined with it is
/// removed from the session. 204 also when there was none.
#[utoipa::path(delete, path = "/bookings/{booking_id}/invitation", tag = "invitations",
    params(("booking_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 400), (status = 401), (status = 404), (status = 503)))]
async fn delete_invitation(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let b = visible_booking(&s, &caller, id).await?;
    s.sessions.revoke(&b).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a guest's landing page shows. No token needed; 404 for unknown, revoked, replaced and
/// expired codes alike.
#[utoipa::path(get, path = "/invitations/{code}", tag = "invitations",
    params(("code" = String, Path, description = "The invitation code")),
    responses((status = 200, body = InvitationLanding), (status = 400), (status = 404), (status = 503)))]
async fn invitation_landing(
    State(s): State<AppState>,
    ApiPath(code): ApiPath<String>,
) -> Result<Json<InvitationLanding>, ApiError> {
    let (b, inv) = s.sessions.invitation(&code).await?;
    Ok(Json(InvitationLanding {
        start_time: b.slot.start(),
        end_time: b.slot.end(),
        status: b.status(s.clock.now()),
        opens_at: s.sessions.join_window(&b).start(),
        host_display: inv.host_display,
    }))
}

/// The guest joins: the same answer as the owner's `/join`, with `role: "guest"`. No token
/// needed unless the invitation names a guest user (then only that user's token).
#[utoipa::path(post, path = "/invitations/{code}/join", tag = "invitations",
    params(("code" = String, Path, description = "The invitation code")), request_body = GuestJoin,
    responses((status = 200, body = JoinInfo), (status = 400),
        (status = 401, description = "The invitation is for a signed-in user"), (status = 404),
        (status = 409, description = "Cancelled"), (status = 410, description = "The session has ended"),
        (status = 413), (status = 415),
        (status = 425, description = "The join window has not opened yet"),
        (status = 502), (status = 503, description = "The media server is not ready; see Retry-After")))]
async fn join_with_invitation(
    State(s): State<AppState>,
    caller: Option<Caller>,
    ApiPath(code): ApiPath<String>,
    body: JsonBody<GuestJoin>,
) -> Result<Json<JoinInfo>, ApiError> {
    let user = caller.as_ref().map(|c| c.user.as_str());
    let joined = s.sessions.join_guest(&code, &body.value.display_name, user).await?;
    Ok(Json(joined.into()))
}
