//! The sessions layer: every write that must keep the store and Janus in step goes through
//! [`Sessions`]. Handlers and timer jobs only call it (parse, authorize, call, map errors).
//!
//! # What a session is
//! A booking is a session for two: its owner (the host) and one guest invited by a link. The
//! session lives in its OWN Janus VideoRoom, created on the booking's host when its join window
//! opens ([`BookingPolicy::join_window`]) and destroyed when it closes: at the end plus
//! `SESSION_GRACE_MINUTES`, clipped at the start of the room's next booking ([`Sessions::close_at`]).
//! The room's id, pin and admin secret derive from the booking and its credential generation
//! ([`credentials`]), so a booking's credentials open that booking's session and nothing else,
//! back-to-back bookings never share a Janus room, and rotating the generation replaces all of
//! them at once. Both participants get a core token and a room token that expire when the
//! session closes. A store room is what is booked (seats, name, metadata); Janus never holds it.
//!
//! # One order, one undo rule
//! 1. **The store first.** Every change is written to the store before Janus is touched, as a
//!    compare-and-set where it races (a booking's access, a room's password). The store is the
//!    desired state.
//! 2. **Janus follows.** The change is then applied to the session's host at once (the fast
//!    path): a room destroyed on cancel, revocation or rotation; a room created on join.
//! 3. **Nothing is undone.** A Janus failure never rolls the store back. The reconciler's
//!    [`SessionKeeper::converge`] (every minute) compares each running host's rooms with the
//!    store and finishes the job: a removal is at most one tick late. A join whose room cannot
//!    be created answers 503 and the client retries; the store holds nothing half-done.
//!
//! Every Janus write is logged in the operations log (typed [`OpAction`]) with its result.
//!
//! # Quotas come first
//! A booking or a room made for a user (admins are exempt) is first reserved in the user's quota
//! ledger in the store, by compare-and-set ([`quotas`]): reserve, then write the booking or room,
//! then settle. The undo rule: a write that definitively failed, or that replayed an earlier
//! request, releases its reservation; a write whose outcome is unknown keeps it, and the next
//! reservation at the limit drops it if its entity never appeared (a point read per entry). A
//! cancel releases its booking's entry, best effort on the same terms. Where the store counts
//! the owner's live bookings in the booking's own write (SQLite:
//! [`Store::counts_live_bookings`]), a booking has no ledger entry: that write refuses at the
//! limit, and nothing is left to settle.
//!
//! # What happened
//! Janus's events, the reconciler's participant checks and the layer's own closes become the
//! booking's session record ([`record`]); booking writes and new facts of a record put their
//! webhook events in the store's outbox in the same write, and hand them to the sender at once.

pub mod credentials;
mod keeper;
pub mod quotas;
mod record;
pub mod turn;

use std::{sync::Arc, time::Instant};

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use crate::domain::session::Role;
use crate::{
    clock::Clock,
    config::{IceConfig, IceTransportPolicy},
    domain::events::OutboxEvent,
    domain::{self, Access, Booking, BookingPolicy, BookingStatus, Invitation, Room, RoomId, TimeSlot, format_instant},
    fleet::{FleetError, JoinGrant, Participant, hosting::PlannedHosting},
    janus::CreateRoom,
    store::{Along, Created, IdempotencyClaim, LiveCap, OpAction, Operation, Store, StoreError},
    webhooks::Webhooks,
};
pub use credentials::{SessionCredentials, SessionKey};
pub use quotas::{Charge, QuotaSettings};
pub use record::IngestReport;
pub use turn::IceServer;

/// The operations log's actor for what this layer does on its own.
pub const ACTOR: &str = "sessions";

/// Publishers a session room takes: a one-to-one session has two.
pub const SESSION_PUBLISHERS: u32 = 2;

/// Longest guest display name, in characters.
pub const MAX_DISPLAY_CHARS: usize = 64;

/// How many times a compare-and-set of a booking's access is retried when it keeps losing.
const ACCESS_ATTEMPTS: usize = 8;

/// The name the guest sees for a host whose token carries no `name`.
pub const HOST_LABEL: &str = "Host";

/// What the layer's behaviour takes from configuration.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Booking rules; `reveal_before` opens the join window.
    pub policy: BookingPolicy,
    /// How long a session outlives its booked end (`SESSION_GRACE_MINUTES`), never past the start
    /// of the room's next booking.
    pub grace: Duration,
    /// The app's public address (`PUBLIC_BASE_URL`): invitation links are `<it>/app/i/<code>`.
    pub public_base_url: String,
    /// The STUN/TURN servers handed to clients with every join (their TURN credentials minted
    /// per join) and the candidates clients may use.
    pub ice: IceConfig,
    /// Per-user quotas (`QUOTA_*`).
    pub quotas: QuotaSettings,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            policy: BookingPolicy::default(),
            grace: Duration::minutes(5),
            public_base_url: "http://127.0.0.1:7071".into(),
            ice: IceConfig::default(),
            quotas: QuotaSettings::default(),
        }
    }
}

/// Why a session operation was refused or failed. The API maps each variant to one status.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// 404: no such booking, room or invitation (or not the caller's to see).
    #[error("{0}")]
    NotFound(String),
    /// 400: a value is out of range.
    #[error("{0}")]
    Invalid(String),
    /// 401: the invitation names a user: sign in as that user.
    #[error("{0}")]
    SignInRequired(String),
    /// 403: the booking's state forbids this (a session that started cannot be cancelled).
    #[error("{0}")]
    Forbidden(String),
    /// 409: the state conflicts (cancelled, room taken, future bookings, a session in progress).
    #[error("{0}")]
    Conflict(String),
    /// 409: a per-user quota is reached; `quota` names it, `limit` is its value.
    #[error("{detail}")]
    QuotaExceeded { detail: String, quota: &'static str, limit: u32 },
    /// 410: the session has ended.
    #[error("{0}")]
    Ended(String),
    /// 425: the join window opens at `opens_at`.
    #[error("{detail}")]
    TooEarly { detail: String, opens_at: DateTime<Utc> },
    /// 502/503: Janus failed, or the session's host is starting.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// The store failed (or refused an idempotency key).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<domain::Invalid> for SessionError {
    fn from(e: domain::Invalid) -> Self {
        SessionError::Invalid(e.0)
    }
}

/// What a participant receives to join a session.
#[derive(Debug, Clone)]
pub struct SessionJoin {
    pub booking: Booking,
    pub role: Role,
    /// The session's Janus room.
    pub room: RoomId,
    pub pin: String,
    pub grant: JoinGrant,
    /// The name the other participant sees.
    pub display: String,
    /// The session host's STUN and TURN servers, with TURN credentials for this join.
    pub ice_servers: Vec<IceServer>,
    /// Which candidates the client may use (`ICE_TRANSPORT_POLICY`).
    pub ice_transport_policy: IceTransportPolicy,
    /// The Janus participant id to join with (`id` in the publisher `join`), so the session
    /// record names this participant's role.
    pub participant_id: u64,
}

/// An invitation just made: the code, shown once.
#[derive(Debug, Clone)]
pub struct NewInvitation {
    /// The bearer code (at least 128 random bits); only its hash is stored.
    pub code: String,
    /// `<PUBLIC_BASE_URL>/app/i/<code>`.
    pub url: String,
    pub invitation: Invitation,
    pub booking: Booking,
}

/// A session's live participants.
#[derive(Debug, Clone)]
pub struct SessionParticipants {
    /// The session's Janus room.
    pub room: RoomId,
    pub participants: Vec<Participant>,
}

/// The lowercase hex SHA-256 of an invitation code: what the store keeps.
pub fn code_hash(code: &str) -> String {
    crate::domain::hex(&Sha256::digest(code.as_bytes()))
}

/// A fresh invitation code: 192 random bits, URL-safe base64 (32 characters).
fn new_code() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A guest's display name: trimmed, 1 to 64 characters, none of them a control character.
pub fn parse_display_name(raw: &str) -> Result<String, SessionError> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_DISPLAY_CHARS || name.chars().any(char::is_control) {
        return Err(SessionError::Invalid(format!(
            "display_name must be 1 to {MAX_DISPLAY_CHARS} printable characters"
        )));
    }
    Ok(name.to_string())
}

/// The layer. Cheap to share behind an `Arc`.
pub struct Sessions {
    store: Arc<dyn Store>,
    hosting: PlannedHosting,
    clock: Arc<dyn Clock>,
    key: SessionKey,
    settings: SessionSettings,
    /// The webhook sender, when `WEBHOOK_URL` is set: booking writes and session facts then
    /// put their events in the outbox.
    webhooks: Option<Arc<Webhooks>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        hosting: PlannedHosting,
        clock: Arc<dyn Clock>,
        key: SessionKey,
        settings: SessionSettings,
    ) -> Self {
        Self { store, hosting, clock, key, settings, webhooks: None }
    }

    /// The layer with webhooks on (`Some`) or off.
    pub fn with_webhooks(self, webhooks: Option<Arc<Webhooks>>) -> Self {
        Self { webhooks, ..self }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// Which host serves a booking (and the hosts' health).
    pub fn hosting(&self) -> &PlannedHosting {
        &self.hosting
    }

    /// The credentials of `booking`'s current session.
    pub fn credentials(&self, booking: &Booking) -> SessionCredentials {
        self.key.credentials(booking.id, booking.access.generation)
    }

    /// The booking's own pin: what `POST /bookings` answers as its `password`.
    pub fn pin(&self, booking: &Booking) -> String {
        self.key.pin(booking.id, booking.access.generation)
    }

    /// The window in which the booking's people may join: from `reveal_before` ahead of the
    /// start to the end.
    pub fn join_window(&self, booking: &Booking) -> TimeSlot {
        self.settings.policy.join_window(booking.slot)
    }

    /// When the booking's session closes: its end plus the grace, but never after `next_start`
    /// (the start of the room's next live booking).
    pub fn close_at(&self, booking: &Booking, next_start: Option<DateTime<Utc>>) -> DateTime<Utc> {
        let close = booking.slot.end() + self.settings.grace;
        next_start.map_or(close, |n| close.min(n.max(booking.slot.end())))
    }

    /// True when `booking`'s session room should exist at `now`: a live booking whose join
    /// window has opened and whose session has not closed.
    pub fn wanted(&self, booking: &Booking, next_start: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        booking.is_live() && self.join_window(booking).start() <= now && now < self.close_at(booking, next_start)
    }

    // ----- rooms -----

    /// Creates a room in the store (Janus holds no room until a booking of it opens its
    /// session), counted against `charge`'s rooms quota first (`QuotaExceeded` at the limit).
    /// Random 53-bit ids practically never collide; a clash is retried with a fresh id.
    /// Honours `claim` (see the store's idempotency contract; a replay counts nothing).
    pub async fn create_room(
        &self,
        template: &Room,
        claim: Option<&IdempotencyClaim>,
        charge: Charge<'_>,
    ) -> Result<Created<Room>, SessionError> {
        let mut attempt = 0;
        loop {
            let room = Room { id: RoomId::random(), ..template.clone() };
            let held = self.reserve_room(charge, room.id, claim).await?;
            let written = self.store.insert_room(&room, claim).await;
            if let (quotas::Reserved::Committed, Charge::User(user)) = (held, charge) {
                let undo = match &written {
                    Err(e) => quotas::definitive(e),
                    Ok(created) => !created.is_new(),
                };
                if undo {
                    self.release(user, quotas::Entry::Room(room.id), "the room was not created").await;
                }
            }
            match written {
                Err(StoreError::AlreadyExists) if attempt < 5 => attempt += 1,
                other => return Ok(other?),
            }
        }
    }

    /// Deletes a room without future bookings (`Conflict` otherwise), then closes the sessions
    /// of its bookings still inside their grace (their rooms would otherwise wait for the
    /// reconciler, which destroys rooms whose booking is gone).
    pub async fn delete_room(&self, id: RoomId) -> Result<(), SessionError> {
        let now = self.clock.now();
        let in_grace = match self.store.room_bookings(id, now - self.settings.grace).await {
            Ok(b) => b,
            Err(StoreError::NotFound) => return Err(room_not_found(id)),
            Err(e) => return Err(e.into()),
        };
        match self.store.delete_room(id, now).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => return Err(room_not_found(id)),
            Err(StoreError::Conflict(_)) => {
                return Err(SessionError::Conflict(format!(
                    "room {id} has future bookings; cancel them before deleting it"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        for b in &in_grace {
            self.close_now(b, b.access.generation, "its room was deleted").await;
        }
        Ok(())
    }

    /// An admin's reset of a room: a new room password, and new credentials for every live
    /// booking of the room that has not ended (each one's pin, Janus room and tokens change;
    /// people in a session in progress are removed and must call the join endpoint again).
    /// `Conflict` while a session is in progress unless `force`.
    pub async fn reset_room(&self, id: RoomId, force: bool) -> Result<Room, SessionError> {
        let now = self.clock.now();
        let room = self.store.get_room(id).await.map_err(not_found_as(room_not_found(id)))?;
        let bookings = self.store.room_bookings(id, now).await.map_err(not_found_as(room_not_found(id)))?;
        if !force && bookings.iter().any(|b| b.slot.contains(now)) {
            return Err(SessionError::Conflict(format!(
                "room {id} has a session in progress; use ?force=true to reset anyway"
            )));
        }
        let new_password = domain::new_password();
        let updated = self
            .store
            .set_room_password(id, &room.password, &new_password, now)
            .await
            .map_err(not_found_as(room_not_found(id)))?;
        for b in &bookings {
            self.rotate(b.id, "the room was reset").await?;
        }
        Ok(updated)
    }

    // ----- bookings -----

    /// Books `wanted.slot` for its owner: in `room` when given (`NotFound`, `Conflict` when
    /// taken), else in any free room with two seats, else in a new room, all in the store.
    /// Validates the slot against the booking policy at `now`, then reserves it in `charge`'s
    /// live bookings quota (`QuotaExceeded` at the limit; see [`quotas`]). Honours `claim` (a
    /// replay counts nothing).
    pub async fn book(
        &self,
        wanted: &Booking,
        room: Option<RoomId>,
        claim: Option<&IdempotencyClaim>,
        charge: Charge<'_>,
    ) -> Result<Created<(Booking, Room)>, SessionError> {
        let now = self.clock.now();
        self.settings.policy.bookable_slot(wanted.slot, now)?;
        if self.store.counts_live_bookings() {
            // The booking's own write counts the owner's live bookings: nothing to settle.
            let limit = self.settings.quotas.live_bookings_per_user;
            let live_cap = matches!(charge, Charge::User(_) if limit > 0).then_some(LiveCap { limit, now });
            return match self.book_reserved(wanted, room, claim, now, live_cap).await {
                Err(SessionError::Store(StoreError::LimitReached)) => Err(quotas::live_bookings_exceeded(limit)),
                other => other,
            };
        }
        let held = self.reserve_booking(charge, wanted, claim).await?;
        let booked = self.book_reserved(wanted, room, claim, now, None).await;
        if let (quotas::Reserved::Committed, Charge::User(user)) = (held, charge) {
            let undo = match &booked {
                Err(SessionError::Store(e)) => quotas::definitive(e),
                Err(_) => true,
                Ok(Created::New((b, _))) if b.id != wanted.id => {
                    self.follow_id(user, wanted.id, b.id).await;
                    false
                }
                Ok(created) => !created.is_new(),
            };
            if undo {
                self.release(user, quotas::Entry::Booking(wanted.id), "the booking was not made").await;
            }
        }
        booked
    }

    /// The store part of [`Self::book`], with `live_cap` checked by the booking's own write
    /// (only where [`Store::counts_live_bookings`]).
    async fn book_reserved(
        &self,
        wanted: &Booking,
        room: Option<RoomId>,
        claim: Option<&IdempotencyClaim>,
        now: DateTime<Utc>,
        live_cap: Option<LiveCap>,
    ) -> Result<Created<(Booking, Room)>, SessionError> {
        let along = Along { notify: self.notify_at(), live_cap };
        let Some(room_id) = room else {
            let booked = match self.store.book_any_room_with(wanted, None, claim, along).await {
                Err(StoreError::NoFreeRoom) => {
                    let new_room = Room::generate(None, 2, Default::default(), now);
                    self.store.book_any_room_with(wanted, Some(&new_room), claim, along).await?
                }
                other => other?,
            };
            if let Created::New((b, _)) = &booked {
                self.deliver_one(|| OutboxEvent::booking_created(b));
            }
            return Ok(booked);
        };
        let booking = Booking { room_id, ..wanted.clone() };
        let booked = self.store.book_room_with(&booking, claim, along).await.map_err(|e| match e {
            StoreError::NotFound => room_not_found(room_id),
            StoreError::Conflict(_) => {
                SessionError::Conflict(format!("room {room_id} is already booked in the requested slot"))
            }
            other => other.into(),
        })?;
        if let Created::New(b) = &booked {
            self.deliver_one(|| OutboxEvent::booking_created(b));
        }
        let room = self.store.get_room(room_id).await?;
        Ok(match booked {
            Created::New(b) => Created::New((b, room)),
            Created::Replayed(b) => Created::Replayed((b, room)),
        })
    }

    /// Cancels a booking before it starts, then removes everyone from its session room (the
    /// join window may already be open). Cancelling a cancelled booking changes nothing.
    /// `Forbidden` once started, `Invalid` inside the minimum cancel notice.
    pub async fn cancel(&self, booking: &Booking) -> Result<(), SessionError> {
        let now = self.clock.now();
        match booking.status(now) {
            BookingStatus::Cancelled => return Ok(()),
            BookingStatus::Active | BookingStatus::Past => {
                return Err(SessionError::Forbidden("the session has started; it can no longer be cancelled".into()));
            }
            BookingStatus::Upcoming => {}
        }
        let notice = self.settings.policy.min_cancel_notice;
        if booking.slot.start() - now < notice {
            return Err(SessionError::Invalid(format!(
                "bookings can be cancelled only up to {} minutes before the start",
                notice.num_minutes()
            )));
        }
        let cancelled = self
            .store
            .cancel_booking_notify(booking.id, now, self.notify_at())
            .await
            .map_err(not_found_as(booking_not_found(booking.id)))?;
        self.deliver_one(|| OutboxEvent::booking_cancelled(&cancelled, now));
        if self.ledger_counts_bookings() {
            self.release(&cancelled.owner, quotas::Entry::Booking(cancelled.id), "the booking was cancelled").await;
        }
        self.close_now(&cancelled, cancelled.access.generation, "the booking was cancelled").await;
        Ok(())
    }

    /// Moves a live booking's end (later to extend, earlier to shorten), with the overlap
    /// re-checked by the store. The session closes at the new end plus the grace: the reconciler
    /// removes people from a shortened session within a tick of that. Participants call the join
    /// endpoint again for tokens that last to the new end.
    pub async fn set_end(&self, booking: &Booking, end: DateTime<Utc>) -> Result<Booking, SessionError> {
        let now = self.clock.now();
        if !booking.is_live() {
            return Err(SessionError::Conflict("the booking is cancelled".into()));
        }
        if now >= booking.slot.end() {
            return Err(SessionError::Ended("the session has ended".into()));
        }
        if end <= now {
            return Err(SessionError::Invalid("end_time must be in the future".into()));
        }
        let slot = TimeSlot::new(booking.slot.start(), end)?;
        let max = self.settings.policy.max_duration;
        if slot.duration() > max {
            return Err(SessionError::Invalid(format!("a session may last at most {} minutes", max.num_minutes())));
        }
        let updated =
            self.store.set_booking_end_notify(booking.id, end, self.notify_at()).await.map_err(|e| match e {
                StoreError::NotFound => booking_not_found(booking.id),
                StoreError::Conflict(_) => SessionError::Conflict(format!(
                    "room {} is booked by someone else in the extended time",
                    booking.room_id
                )),
                other => other.into(),
            })?;
        if booking.slot.end() != end {
            self.deliver_one(|| OutboxEvent::booking_extended(&updated, booking.slot.end(), now));
            self.follow_end(&updated.owner, updated.id, updated.slot.end()).await;
        }
        Ok(updated)
    }

    // ----- invitations -----

    /// Makes a new invitation for `booking`'s guest (`guest`: the only user who may use it, or
    /// anyone holding the link), replacing any previous one: the old code stops working at once,
    /// and if a guest joined with it the session's credentials rotate and its room is destroyed
    /// (the host joins again into the new one). `Conflict` when cancelled, `Ended` after the end.
    pub async fn invite(
        &self,
        booking: &Booking,
        guest: Option<String>,
        host_display: String,
    ) -> Result<NewInvitation, SessionError> {
        let now = self.clock.now();
        let code = new_code();
        let invitation =
            Invitation { code_hash: code_hash(&code), guest, host_display, created_at: now, joined_at: None };
        let (before, after) = self
            .update_access(booking.id, |b| {
                self.check_open(b, now)?;
                let joined = b.access.invitation.as_ref().is_some_and(|i| i.joined_at.is_some());
                Ok(Access { generation: b.access.generation + u32::from(joined), invitation: Some(invitation.clone()) })
            })
            .await?;
        self.after_access_change(&before, &after, "the invitation was replaced").await;
        let url = format!("{}/app/i/{code}", self.settings.public_base_url.trim_end_matches('/'));
        tracing::info!(booking_id = %booking.id, named_guest = invitation.guest.is_some(), "invitation made");
        Ok(NewInvitation { code, url, invitation, booking: after })
    }

    /// Revokes `booking`'s invitation, if any: its code stops working at once, and a guest who
    /// joined with it is removed (the session's credentials rotate and its room is destroyed).
    pub async fn revoke(&self, booking: &Booking) -> Result<(), SessionError> {
        if booking.access.invitation.is_none() {
            return Ok(());
        }
        let (before, after) = self
            .update_access(booking.id, |b| {
                let joined = b.access.invitation.as_ref().is_some_and(|i| i.joined_at.is_some());
                Ok(Access { generation: b.access.generation + u32::from(joined), invitation: None })
            })
            .await?;
        self.after_access_change(&before, &after, "the invitation was revoked").await;
        tracing::info!(booking_id = %booking.id, "invitation revoked");
        Ok(())
    }

    /// The booking a guest's code opens and its invitation, while the code is current and the
    /// session has not ended. `NotFound` otherwise (unknown, revoked, replaced and expired codes
    /// are indistinguishable).
    pub async fn invitation(&self, code: &str) -> Result<(Booking, Invitation), SessionError> {
        let (booking, invitation) = self.by_code(code).await?;
        if self.clock.now() >= booking.slot.end() {
            return Err(invitation_not_found());
        }
        Ok((booking, invitation))
    }

    // ----- joining -----

    /// What the booking's owner needs to join its session, inside the join window: `Conflict`
    /// when cancelled, `Ended` after the end, `TooEarly` before the window, `Fleet(NotReady)`
    /// while the host starts. `display` is the name the guest sees (the owner's token's `name`).
    pub async fn join_host(&self, booking: &Booking, display: Option<String>) -> Result<SessionJoin, SessionError> {
        self.check_joinable(booking, self.clock.now())?;
        self.admit(booking, Role::Host, display.unwrap_or_else(|| HOST_LABEL.to_string())).await
    }

    /// What a guest needs to join with an invitation code, with the same window rules as the
    /// owner's. When the invitation names a guest user, `user` must be that user
    /// (`SignInRequired` without one, `NotFound` for another). The first join is recorded
    /// (store first), so revoking the invitation later rotates the session's credentials.
    pub async fn join_guest(
        &self,
        code: &str,
        display_name: &str,
        user: Option<&str>,
    ) -> Result<SessionJoin, SessionError> {
        let (booking, invitation) = self.by_code(code).await?;
        match (&invitation.guest, user) {
            (Some(_), None) => {
                return Err(SessionError::SignInRequired(
                    "this invitation is for a signed-in user: send their bearer token".into(),
                ));
            }
            (Some(guest), Some(u)) if guest != u => return Err(invitation_not_found()),
            _ => {}
        }
        let display = parse_display_name(display_name)?;
        let now = self.clock.now();
        self.check_joinable(&booking, now)?;
        let booking = if invitation.joined_at.is_some() {
            booking
        } else {
            let hash = invitation.code_hash.clone();
            let (_, after) = self
                .update_access(booking.id, |b| match &b.access.invitation {
                    Some(i) if i.code_hash == hash => Ok(Access {
                        generation: b.access.generation,
                        invitation: Some(Invitation { joined_at: Some(i.joined_at.unwrap_or(now)), ..i.clone() }),
                    }),
                    // Replaced or revoked meanwhile.
                    _ => Err(invitation_not_found()),
                })
                .await?;
            after
        };
        let joined = self.admit(&booking, Role::Guest, display).await?;
        // A revocation may have landed while the room was being made: then this guest's
        // credentials belong to a generation that is already over. Close it again and refuse.
        let now_stored = self.store.get_booking(booking.id).await?;
        let still = now_stored.access.generation == booking.access.generation
            && now_stored.access.invitation.as_ref().is_some_and(|i| i.code_hash == invitation.code_hash);
        if !still {
            self.close_now(&booking, booking.access.generation, "the invitation was revoked during the join").await;
            return Err(invitation_not_found());
        }
        Ok(joined)
    }

    /// The session's live participants (the owner and the guest), from the join window's opening
    /// to the end: `TooEarly` before, `Ended` after, `Conflict` when cancelled. A host that is
    /// off, or a room not opened yet, has none.
    pub async fn participants(&self, booking: &Booking) -> Result<SessionParticipants, SessionError> {
        self.check_joinable(booking, self.clock.now())?;
        let creds = self.credentials(booking);
        let participants = match self.hosting.assigned_running_host(booking).await? {
            Some(host) => self.hosting.janus().participants_on(&host, creds.room.get()).await?,
            None => vec![],
        };
        Ok(SessionParticipants { room: creds.room, participants })
    }

    /// Live participants of the sessions of store room `id` whose join window is open now: the
    /// caller's own session, or (for admins) every one. `Forbidden` for a non-admin who owns
    /// none of them.
    pub async fn room_participants(
        &self,
        id: RoomId,
        user: &str,
        admin: bool,
    ) -> Result<Vec<Participant>, SessionError> {
        let now = self.clock.now();
        self.store.get_room(id).await.map_err(not_found_as(room_not_found(id)))?;
        let bookings = self.store.room_bookings(id, now).await.map_err(not_found_as(room_not_found(id)))?;
        let open: Vec<&Booking> =
            bookings.iter().filter(|b| self.join_window(b).contains(now) && (admin || b.owner == user)).collect();
        if open.is_empty() && !admin {
            return Err(SessionError::Forbidden(
                "only an admin or the owner of the room's session (from its join window's opening to its end) may \
                 list its participants"
                    .into(),
            ));
        }
        let mut all = Vec::new();
        for b in open {
            all.extend(self.participants(b).await?.participants);
        }
        Ok(all)
    }

    // ----- the steps every operation shares -----

    /// The booking and invitation behind a code, if the code is the booking's current one.
    async fn by_code(&self, code: &str) -> Result<(Booking, Invitation), SessionError> {
        let booking =
            self.store.booking_by_invitation(&code_hash(code)).await.map_err(not_found_as(invitation_not_found()))?;
        let invitation = booking.access.invitation.clone().ok_or_else(invitation_not_found)?;
        Ok((booking, invitation))
    }

    /// A live booking whose session has not ended.
    fn check_open(&self, booking: &Booking, now: DateTime<Utc>) -> Result<(), SessionError> {
        if !booking.is_live() {
            return Err(SessionError::Conflict("the booking is cancelled".into()));
        }
        if now >= booking.slot.end() {
            return Err(SessionError::Ended("the session has ended".into()));
        }
        Ok(())
    }

    /// [`Self::check_open`], and the join window has opened.
    fn check_joinable(&self, booking: &Booking, now: DateTime<Utc>) -> Result<(), SessionError> {
        self.check_open(booking, now)?;
        let opens_at = self.join_window(booking).start();
        if now < opens_at {
            return Err(SessionError::TooEarly {
                detail: format!("the session can be joined from {}", format_instant(opens_at)),
                opens_at,
            });
        }
        Ok(())
    }

    /// Makes sure the session room exists on the booking's host and signs the tokens.
    async fn admit(&self, booking: &Booking, role: Role, display: String) -> Result<SessionJoin, SessionError> {
        let creds = self.credentials(booking);
        let serving = match self.hosting.session_host(booking).await {
            Ok(s) => s,
            Err(e @ FleetError::NotReady { .. }) => {
                // A late rejoin of a session whose host went off when everyone had left.
                self.note_wanted(booking, self.clock.now()).await;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        // Store first: an event about the room must find its booking.
        self.note_session_room(booking, booking.access.generation).await?;
        let started = Instant::now();
        let opened = self.hosting.janus().ensure_room(&serving.host, &room_spec(&creds)).await;
        if !serving.ready || opened.is_err() {
            self.log(OpAction::OpenSession, Some(&serving.host.name), booking, &opened, started).await;
        }
        opened?;
        if !serving.ready {
            if let Err(e) = self.hosting.mark_ready(booking, &serving.host).await {
                // The room is there; the reconciler marks it ready on its next run.
                tracing::warn!(booking_id = %booking.id, error = %e, "cannot record the session room as ready");
            }
        }
        let expires_at = booking.slot.end() + self.settings.grace;
        let grant = self.hosting.janus().grant(&serving.host, creds.room, expires_at);
        // TURN credentials die with the Janus tokens; the id shows in coturn's log.
        let turn_id = format!("{}.{}", booking.id, role.as_str());
        let ice_servers = turn::ice_servers(&self.settings.ice, &serving.host.name, expires_at, &turn_id);
        tracing::info!(booking_id = %booking.id, role = ?role, host = %serving.host.name, "join granted");
        Ok(SessionJoin {
            booking: booking.clone(),
            role,
            room: creds.room,
            pin: creds.pin,
            grant,
            display,
            ice_servers,
            ice_transport_policy: self.settings.ice.transport_policy,
            participant_id: self.key.participant_id(booking.id, booking.access.generation, role),
        })
    }

    /// Compare-and-set of a booking's access computed by `change` from the booking as stored,
    /// retried when another writer won. Returns the booking before and after.
    async fn update_access(
        &self,
        id: Uuid,
        change: impl Fn(&Booking) -> Result<Access, SessionError>,
    ) -> Result<(Booking, Booking), SessionError> {
        for _ in 0..ACCESS_ATTEMPTS {
            let current = self.store.get_booking(id).await.map_err(not_found_as(booking_not_found(id)))?;
            let next = change(&current)?;
            match self.store.set_booking_access(id, &current.access, &next).await {
                Ok(after) => return Ok((current, after)),
                Err(StoreError::PreconditionFailed) => continue,
                Err(StoreError::NotFound) => return Err(booking_not_found(id)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(SessionError::Conflict("the booking kept changing while this request ran; retry".into()))
    }

    /// Bumps a booking's credential generation and closes the old session room.
    async fn rotate(&self, id: Uuid, why: &str) -> Result<(), SessionError> {
        let (before, after) =
            self.update_access(id, |b| Ok(Access { generation: b.access.generation + 1, ..b.access.clone() })).await?;
        self.after_access_change(&before, &after, why).await;
        Ok(())
    }

    /// After a rotation, the old generation's room goes at once (the fast path).
    async fn after_access_change(&self, before: &Booking, after: &Booking, why: &str) {
        if after.access.generation != before.access.generation {
            let started = Instant::now();
            self.log(OpAction::RotateCredentials, None, after, &Ok::<(), FleetError>(()), started).await;
            tracing::info!(booking_id = %after.id, why, "session credentials rotated");
            self.close_now(before, before.access.generation, why).await;
        }
    }

    /// Destroys the session room of `booking`'s `generation` on its host, if that host runs. A
    /// failure is logged and left to the reconciler (at most one tick later).
    async fn close_now(&self, booking: &Booking, generation: u32, why: &str) {
        let creds = self.key.credentials(booking.id, generation);
        let host = match self.hosting.assigned_running_host(booking).await {
            Ok(Some(h)) => h,
            // Nothing was made for it, or its host is off (its rooms went with Janus).
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(booking_id = %booking.id, error = %e, "cannot find the session's host; the reconciler closes it");
                return;
            }
        };
        let started = Instant::now();
        let result = self.hosting.janus().destroy_room(&host, creds.room.get(), &creds.secret).await;
        match &result {
            Ok(()) => tracing::info!(booking_id = %booking.id, host = %host.name, why, "session room closed"),
            Err(e) => tracing::warn!(booking_id = %booking.id, host = %host.name, why, error = %e,
                "could not close the session room; the reconciler retries"),
        }
        self.log(OpAction::CloseSession, Some(&host.name), booking, &result, started).await;
        if result.is_ok() {
            self.note_closed(booking, creds.room.get()).await;
        }
    }

    /// Appends an operations log entry for a Janus write on a booking's session.
    async fn log<E: std::fmt::Display>(
        &self,
        action: OpAction,
        host: Option<&str>,
        booking: &Booking,
        result: &Result<(), E>,
        started: Instant,
    ) {
        let op = Operation {
            id: Uuid::new_v4(),
            at: self.clock.now(),
            actor: ACTOR.into(),
            action,
            host: host.map(str::to_string),
            booking_id: Some(booking.id),
            room_id: Some(booking.room_id),
            result: match result {
                Ok(()) => "ok".into(),
                Err(e) => e.to_string(),
            },
            duration_ms: started.elapsed().as_millis() as u64,
        };
        if let Err(e) = self.store.append_operation(&op).await {
            tracing::error!(error = %e, action = %action, "cannot write the operations log");
        }
    }
}

/// The Janus `create` of a session room: private, signed tokens, locked recording, subscribers
/// tied to a publisher, two publishers.
pub fn room_spec(creds: &SessionCredentials) -> CreateRoom<'_> {
    CreateRoom {
        room: creds.room.get(),
        description: &creds.description,
        secret: &creds.secret,
        pin: &creds.pin,
        publishers: SESSION_PUBLISHERS,
        signed_tokens: true,
        lock_record: true,
        require_pvtid: true,
    }
}

fn booking_not_found(id: Uuid) -> SessionError {
    SessionError::NotFound(format!("booking {id} does not exist"))
}

fn room_not_found(id: RoomId) -> SessionError {
    SessionError::NotFound(format!("room {id} does not exist"))
}

fn invitation_not_found() -> SessionError {
    SessionError::NotFound(
        "no such invitation (it may have been revoked, replaced, or its session may have ended)".into(),
    )
}

/// Maps the store's `NotFound` to `not_found`, everything else as is.
fn not_found_as(not_found: SessionError) -> impl FnOnce(StoreError) -> SessionError {
    move |e| match e {
        StoreError::NotFound => not_found,
        other => other.into(),
    }
}
