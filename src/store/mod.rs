//! The store: the desired state of the system (rooms, bookings, idempotency keys, host
//! assignments, the operations log) behind one trait, [`Store`], with two backends:
//! [`sqlite`] (embedded, the default) and [`cosmos`] (Azure Cosmos DB, production).
//!
//! # The contract every backend keeps
//! - **No overlap, ever.** Two live (not cancelled) bookings of one room never overlap as
//!   half-open intervals `[start, end)`. The check and the write are one atomic step in the
//!   database (a transaction on SQLite; per-room serialization with etags or a transactional
//!   batch on Cosmos), so it holds across threads, processes and instances. A booking that
//!   would overlap fails with [`StoreError::Conflict`].
//! - **Atomic find-or-create.** [`Store::book_any_room`] books a free room, or inserts the
//!   given new room and books it, as one step: it never books a taken room and never leaves a
//!   new room without its booking or a booking without its room.
//! - **Idempotency is part of the write.** When a create carries an [`IdempotencyClaim`], the
//!   key is recorded in the same atomic step as the entity. A later call with the same key and
//!   the same fingerprint writes nothing and returns [`Created::Replayed`] with the entity as
//!   it is now; a different fingerprint fails with [`StoreError::IdempotencyMismatch`]. Keys
//!   older than [`IDEMPOTENCY_TTL`] count as absent, and so do keys whose entity is gone (a room
//!   removed again because Janus refused it): a client retrying after a failure gets a fresh try.
//! - **Errors are variants, not strings.** Each backend maps its own failures into
//!   [`StoreError`]; the conformance suite ([`conformance`]) asserts them case by case.
//! - **Times are UTC.** Whatever a backend stores, it answers with the same instants it got.
//! - **Events go out through an outbox written with their cause.** A booking write given
//!   `notify` ([`Store::book_room_notify`] and its siblings) puts the booking's webhook event into
//!   the outbox in the SAME atomic step, and a session record write ([`Store::put_session_record`])
//!   puts its events there with the record: a crash between the change and the delivery loses
//!   nothing. Deliveries are leased with compare-and-set ([`Store::claim_delivery`]), so two
//!   instances rarely send one event at once (delivery is at least once all the same).
//! - **Lists page by key.** [`Store::rooms_page`], [`Store::bookings_page`] and
//!   [`Store::deliveries_page`] read at most `limit` items strictly after the last item's sort key
//!   from an index range ([`pages`]): a walk sees every item that exists throughout it once.
//! - **Access is compare-and-set.** A booking's [`Access`] (its credential generation and its
//!   guest invitation) changes only through [`Store::set_booking_access`], which fails with
//!   [`StoreError::PreconditionFailed`] when another writer changed it first; a booking is found
//!   by its current invitation's code hash ([`Store::booking_by_invitation`]), never by an old one.
//! - **Quota ledgers are compare-and-set.** A user's [`QuotaLedger`] changes only through
//!   [`Store::put_quota_ledger`], which fails with [`StoreError::PreconditionFailed`] when another
//!   writer changed (or created) it first ([`quotas`]). A backend that can count an owner's
//!   live bookings inside the booking's own write ([`Store::counts_live_bookings`]: SQLite)
//!   enforces the live bookings quota there instead ([`LiveCap`]).

pub mod conformance;
pub mod cosmos;
pub mod pages;
pub mod quotas;
pub mod sqlite;

pub use pages::{BookingKey, BookingQuery, DeliveryKey, RoomKey};
pub use quotas::{LedgerBooking, LedgerRoom, QuotaLedger, StoredLedger};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Access, Booking, Room, RoomId, TimeSlot, events::OutboxEvent, session::SessionRecord};

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::hours(24);

/// Failures every backend maps its own errors into.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The room or booking does not exist.
    #[error("not found")]
    NotFound,
    /// The write would break an invariant (an overlapping booking, a room with future bookings).
    #[error("conflict: {0}")]
    Conflict(String),
    /// An entity with this id exists already (only for ids the caller chose).
    #[error("already exists")]
    AlreadyExists,
    /// A compare-and-set lost: the stored value was not the expected one.
    #[error("precondition failed")]
    PreconditionFailed,
    /// The idempotency key was used before with a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    /// `book_any_room` found no free room and was given no new room to create.
    #[error("no free room")]
    NoFreeRoom,
    /// The owner already holds the live bookings [`LiveCap`] allows.
    #[error("the owner holds the live bookings allowed")]
    LimitReached,
    /// The database cannot be reached or throttles us; the client may retry later.
    #[error("store unavailable: {message}")]
    Unavailable { message: String, retry_after: Option<std::time::Duration> },
    /// A bug or corrupt data; logged, never shown to clients.
    #[error("store failure: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The result of a create that may carry an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub enum Created<T> {
    /// Written now.
    New(T),
    /// The key was seen before with the same request: nothing was written; this is the entity
    /// the first request created, as it is now.
    Replayed(T),
}

impl<T> Created<T> {
    pub fn into_inner(self) -> T {
        match self {
            Created::New(t) | Created::Replayed(t) => t,
        }
    }
    pub fn is_new(&self) -> bool {
        matches!(self, Created::New(_))
    }
}

/// What a booking's write also does, in the same atomic step.
#[derive(Debug, Clone, Copy, Default)]
pub struct Along {
    /// The booking's `booking.created` event enters the outbox, `enqueued_at` = this.
    pub notify: Option<DateTime<Utc>>,
    /// The owner's live bookings are counted first; only where [`Store::counts_live_bookings`].
    pub live_cap: Option<LiveCap>,
}

/// A cap on the live bookings (neither cancelled nor ended at `now`) one owner may hold, checked
/// by the booking's own write: when the owner already holds `limit`, the write answers
/// [`StoreError::LimitReached`] and writes nothing. A replayed key is answered as always (it
/// adds no booking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveCap {
    pub limit: u32,
    pub now: DateTime<Utc>,
}

/// An `Idempotency-Key` presented with a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// What is being created: `"rooms"` or `"bookings"`; keys of different scopes never meet.
    pub scope: &'static str,
    /// The caller: keys of different users never meet.
    pub user: String,
    /// The client's key.
    pub key: String,
    /// A digest of the request body; the same key with another fingerprint is a mismatch.
    pub fingerprint: String,
    /// When the request came; keys older than [`IDEMPOTENCY_TTL`] at this time are ignored.
    pub now: DateTime<Utc>,
}

/// Filters of `GET /rooms`. All present filters must hold.
#[derive(Debug, Clone, Default)]
pub struct RoomFilter {
    pub max_participants: Option<u8>,
    pub created_before: Option<DateTime<Utc>>,
    pub created_after: Option<DateTime<Utc>>,
    /// Only rooms with no live booking overlapping this slot.
    pub free_during: Option<TimeSlot>,
}

/// What an operations log entry records. Stored by its serde name (`start`, `open-session`, ...),
/// so producers and consumers (billing reads `start` and `deallocate`) share one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpAction {
    /// A host was switched on (by the reconciler or an operator's override).
    Start,
    /// A host was deallocated.
    Deallocate,
    /// A booking's session room was created on its host.
    OpenSession,
    /// A session room was destroyed: its session ended, was cancelled or rotated, or its booking is gone.
    CloseSession,
    /// A booking's session credentials were rotated (a guest who joined lost the invitation, or
    /// an admin reset the room).
    RotateCredentials,
    /// An operator alert was raised.
    Alert,
    /// A host was deallocated before a booking's end plus grace because its session ended early
    /// (logged next to the `deallocate`, which billing reads).
    EarlyRelease,
    /// An entry written by an older version under a name this one no longer makes.
    #[serde(other)]
    Retired,
}

impl OpAction {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Deallocate => "deallocate",
            Self::OpenSession => "open-session",
            Self::CloseSession => "close-session",
            Self::RotateCredentials => "rotate-credentials",
            Self::Alert => "alert",
            Self::EarlyRelease => "early-release",
            Self::Retired => "retired",
        }
    }

    /// The action stored under `name`; names this version does not make read as [`OpAction::Retired`].
    pub fn from_name(name: &str) -> Self {
        serde_json::from_value(serde_json::Value::String(name.to_string())).unwrap_or(Self::Retired)
    }
}

impl std::fmt::Display for OpAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the operations log: what the system did to a host or room, and how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// `reconciler`, `sessions`, or the user id of an operator.
    pub actor: String,
    pub action: OpAction,
    pub host: Option<String>,
    pub booking_id: Option<Uuid>,
    pub room_id: Option<RoomId>,
    /// `ok`, or the error.
    pub result: String,
    pub duration_ms: u64,
}

/// One event a participant's browser reported about a session (connection time, ICE failure,
/// reconnect, quality summary), kept with the booking for operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientEvent {
    pub id: Uuid,
    pub booking_id: Uuid,
    /// When the service received it (the rate limit counts by this).
    pub received_at: DateTime<Utc>,
    /// When the browser says it happened.
    pub at: DateTime<Utc>,
    /// `host` or `guest`.
    pub role: String,
    /// What happened: `connected`, `ice-failed`, `reconnect`, `quality`, ...
    pub kind: String,
    /// Small JSON details (the API bounds their size).
    pub data: serde_json::Value,
}

/// How many client events one booking may keep: in all, and received in one UTC minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEventLimits {
    pub per_booking: u32,
    pub per_minute: u32,
}

/// Most events one [`Store::append_client_events`] call may carry.
pub const MAX_CLIENT_EVENTS_PER_APPEND: usize = 50;

/// Where a booking is served: filled in by the fleet scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub booking_id: Uuid,
    pub host: String,
    /// Set once the room is materialized on the host with the current password.
    pub ready_at: Option<DateTime<Utc>>,
}

// ----- session records and the webhook outbox: types -----

/// Where a Janus session room belongs: written when the room is opened (before Janus creates
/// it), so an event naming the room finds its booking with one point read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRoom {
    /// The Janus VideoRoom id.
    pub janus_room: u64,
    pub booking_id: Uuid,
    /// The booked room.
    pub room_id: RoomId,
    /// The credential generation the room belongs to.
    pub generation: u32,
}

/// A session record as stored, with the version its compare-and-set checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub record: SessionRecord,
    /// Opaque; changes with every write.
    pub version: u64,
}

/// Where an outbox event is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Dead-lettered: not delivered within the maximum age. Redelivery makes it pending again.
    Failed,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

impl std::str::FromStr for DeliveryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            other => Err(format!("status must be pending, delivered or failed; got {other:?}")),
        }
    }
}

/// An outbox event and the state of its delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub event: OutboxEvent,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it entered the outbox (or was last redelivered): its age counts from here.
    pub enqueued_at: DateTime<Utc>,
    /// Not attempted before this.
    pub next_attempt_at: DateTime<Utc>,
    /// An attempt in flight holds the event until then.
    pub leased_until: Option<DateTime<Utc>>,
    /// The last failed attempt's reason (status code or transport error; never a body).
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// How one delivery attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx at `at`.
    Delivered { at: DateTime<Utc> },
    /// Failed; try again from `next_at`.
    Retry { at: DateTime<Utc>, next_at: DateTime<Utc>, error: String },
    /// Failed, and the event is past its maximum age: dead-letter it.
    Failed { at: DateTime<Utc>, error: String },
}

/// The persistence every backend provides. See the module docs for the contract.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A cheap round trip to the database. `Unavailable` when it cannot be reached.
    async fn ping(&self) -> StoreResult<()>;

    // ----- rooms -----

    /// Inserts a new room. `AlreadyExists` if its id is taken (callers pick another random id);
    /// with a claim, see the idempotency contract.
    async fn insert_room(&self, room: &Room, claim: Option<&IdempotencyClaim>) -> StoreResult<Created<Room>>;

    /// The room, or `NotFound`.
    async fn get_room(&self, id: RoomId) -> StoreResult<Room>;

    /// Rooms matching every given filter, oldest first (then by id).
    async fn list_rooms(&self, filter: &RoomFilter) -> StoreResult<Vec<Room>>;

    /// Deletes a room that has no live booking ending after `now`; atomic with that check.
    /// `NotFound` if missing, `Conflict` if it has such a booking. Its past bookings go with it.
    async fn delete_room(&self, id: RoomId, now: DateTime<Utc>) -> StoreResult<()>;

    /// Compare-and-set of the password: sets `new` only if the stored password is `expected`.
    /// `NotFound` if missing, `PreconditionFailed` if the password changed meanwhile.
    async fn set_room_password(&self, id: RoomId, expected: &str, new: &str, now: DateTime<Utc>) -> StoreResult<Room>;

    /// Live bookings of the room that end after `after`, by start. `NotFound` if the room is missing.
    async fn room_bookings(&self, id: RoomId, after: DateTime<Utc>) -> StoreResult<Vec<Booking>>;

    // ----- bookings -----

    /// Books `booking.room_id` for `booking.slot`, atomically with the overlap check.
    /// `NotFound` if the room does not exist, `Conflict` if a live booking of it overlaps.
    async fn book_room(&self, booking: &Booking, claim: Option<&IdempotencyClaim>) -> StoreResult<Created<Booking>> {
        self.book_room_notify(booking, claim, None).await
    }

    /// Find-or-create: books any room with at least two seats that is free for the slot
    /// (`booking.room_id` is ignored), or, when none is free and `new_room` is given, inserts
    /// `new_room` and books it, all in one atomic step. Returns the booking and its room.
    /// `NoFreeRoom` when none is free and `new_room` is `None`.
    async fn book_any_room(
        &self,
        booking: &Booking,
        new_room: Option<&Room>,
        claim: Option<&IdempotencyClaim>,
    ) -> StoreResult<Created<(Booking, Room)>> {
        self.book_any_room_notify(booking, new_room, claim, None).await
    }

    /// The booking, or `NotFound`.
    async fn get_booking(&self, id: Uuid) -> StoreResult<Booking>;

    /// The owner's bookings (cancelled ones too), by start then id; when `during` is given,
    /// only those overlapping it.
    async fn list_bookings(&self, owner: &str, during: Option<TimeSlot>) -> StoreResult<Vec<Booking>>;

    /// Live bookings of every room overlapping `window`, by start: the scheduler's input.
    async fn bookings_between(&self, window: TimeSlot) -> StoreResult<Vec<Booking>>;

    /// Marks the booking cancelled at `now`. Cancelling a cancelled booking changes nothing and
    /// returns it. `NotFound` if missing.
    async fn cancel_booking(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Booking> {
        self.cancel_booking_notify(id, now, None).await
    }

    /// Moves a live booking's end, atomically with the overlap check. `NotFound`, or `Conflict`
    /// if the new slot overlaps another live booking of the room or the booking is cancelled.
    async fn set_booking_end(&self, id: Uuid, end: DateTime<Utc>) -> StoreResult<Booking> {
        self.set_booking_end_notify(id, end, None).await
    }

    /// Compare-and-set of the booking's [`Access`] (credential generation and guest invitation):
    /// writes `new` only when the stored access equals `expected`, and returns the booking as
    /// written. `NotFound` if the booking is missing, `PreconditionFailed` if its access changed
    /// meanwhile, `AlreadyExists` if `new` carries an invitation whose code hash another
    /// booking's current invitation has. Cancelled and past bookings may be changed too.
    async fn set_booking_access(&self, id: Uuid, expected: &Access, new: &Access) -> StoreResult<Booking>;

    /// The booking whose CURRENT invitation has this code hash (cancelled and past bookings
    /// included: the caller decides what their status allows). `NotFound` for a hash no current
    /// invitation has, including the hashes of replaced or revoked invitations.
    async fn booking_by_invitation(&self, code_hash: &str) -> StoreResult<Booking>;

    /// Forgets idempotency keys recorded before `before`. Returns how many went.
    async fn purge_idempotency(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    // ----- fleet -----

    /// Sets (upserts) where a booking is served.
    async fn put_assignment(&self, assignment: &Assignment) -> StoreResult<()>;

    /// Assignments of the given bookings (missing ones are left out).
    async fn assignments(&self, booking_ids: &[Uuid]) -> StoreResult<Vec<Assignment>>;

    /// Appends an entry to the operations log.
    async fn append_operation(&self, op: &Operation) -> StoreResult<()>;

    /// Log entries with `from <= at < to`, oldest first.
    async fn operations(&self, window: TimeSlot) -> StoreResult<Vec<Operation>>;

    /// Records `key` if absent and returns true; returns false if it was recorded before.
    /// The first of many concurrent callers wins. Used for once-only alerts and timer replays.
    async fn claim_marker(&self, key: &str, now: DateTime<Utc>) -> StoreResult<bool>;

    /// A small JSON document by key (operator overrides and similar), or `None`.
    async fn get_state(&self, key: &str) -> StoreResult<Option<serde_json::Value>>;

    /// Writes a small JSON document by key, replacing any previous one.
    async fn put_state(&self, key: &str, value: &serde_json::Value) -> StoreResult<()>;

    // ----- client events -----

    /// Appends `events` (all of `booking_id`, received at `now`, at most
    /// [`MAX_CLIENT_EVENTS_PER_APPEND`]) all or nothing, atomically with the limit check: fails
    /// with `Conflict` when the booking would then hold more than `limits.per_booking` events, or
    /// more than `limits.per_minute` received in `now`'s UTC minute. An event id stored before
    /// answers `AlreadyExists`.
    async fn append_client_events(
        &self,
        booking_id: Uuid,
        events: &[ClientEvent],
        limits: ClientEventLimits,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// The booking's client events, in the order they were appended.
    async fn client_events(&self, booking_id: Uuid) -> StoreResult<Vec<ClientEvent>>;
    // ----- booking writes that also notify (the outbox) -----
    // The plain writes above are these with `notify` off; backends implement the `_with` forms.

    /// [`Store::book_room`]; with `notify`, the booking's `booking.created` event (built from
    /// the booking as written) enters the outbox in the same atomic step, `enqueued_at` = `notify`.
    /// A replayed key writes no event.
    async fn book_room_notify(
        &self,
        booking: &Booking,
        claim: Option<&IdempotencyClaim>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Created<Booking>> {
        self.book_room_with(booking, claim, Along { notify, live_cap: None }).await
    }

    /// [`Store::book_any_room`], with `notify` as [`Store::book_room_notify`].
    async fn book_any_room_notify(
        &self,
        booking: &Booking,
        new_room: Option<&Room>,
        claim: Option<&IdempotencyClaim>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Created<(Booking, Room)>> {
        self.book_any_room_with(booking, new_room, claim, Along { notify, live_cap: None }).await
    }

    /// True when the backend counts the owner's live bookings against [`Along::live_cap`] in
    /// the booking's own write (one transaction: nothing can slip between the count and the
    /// insert); false: `live_cap` must be `None` (`Internal` otherwise) and the caller keeps the
    /// user's quota ledger instead.
    fn counts_live_bookings(&self) -> bool {
        false
    }

    /// [`Store::book_room_notify`], with what else [`Along`] names in the same atomic step. A
    /// replayed key writes none of it.
    async fn book_room_with(
        &self,
        booking: &Booking,
        claim: Option<&IdempotencyClaim>,
        along: Along,
    ) -> StoreResult<Created<Booking>>;

    /// [`Store::book_any_room_notify`], with what else [`Along`] names in the same atomic step.
    async fn book_any_room_with(
        &self,
        booking: &Booking,
        new_room: Option<&Room>,
        claim: Option<&IdempotencyClaim>,
        along: Along,
    ) -> StoreResult<Created<(Booking, Room)>>;

    /// [`Store::cancel_booking`]; with `notify`, `booking.cancelled` enters the outbox in the same
    /// atomic step (only when this call cancelled it: cancelling again writes nothing).
    async fn cancel_booking_notify(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Booking>;

    /// [`Store::set_booking_end`]; with `notify`, `booking.extended` (with the previous end)
    /// enters the outbox in the same atomic step (only when the end changed).
    async fn set_booking_end_notify(
        &self,
        id: Uuid,
        end: DateTime<Utc>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Booking>;

    // ----- session records -----

    /// Records where Janus room `room.janus_room` belongs (upsert; idempotent).
    async fn put_session_room(&self, room: &SessionRoom) -> StoreResult<()>;

    /// Where Janus room `janus_room` belongs, or `None` when no session room was recorded with it.
    async fn session_room(&self, janus_room: u64) -> StoreResult<Option<SessionRoom>>;

    /// The session record of `booking` (booked in `room`), or `None` when nothing was recorded yet.
    async fn session_record(&self, room: RoomId, booking: Uuid) -> StoreResult<Option<StoredRecord>>;

    /// The session records of the given bookings (missing ones are left out), in any order.
    async fn session_records(&self, bookings: &[Uuid]) -> StoreResult<Vec<StoredRecord>>;

    /// Compare-and-set of a session record: writes `record` only when the stored version is
    /// `expected` (`None`: no record may exist yet), and in the same atomic step puts `outbox`'s
    /// events in the outbox (`enqueued_at` = `now`). Returns the new version.
    /// `PreconditionFailed` when another writer won; `AlreadyExists` when an event id is in the
    /// outbox already (callers announce each fact once: see [`SessionRecord::announced`]).
    async fn put_session_record(
        &self,
        record: &SessionRecord,
        expected: Option<u64>,
        outbox: &[OutboxEvent],
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;

    // ----- the webhook outbox -----

    /// Pending deliveries due at `now` (`next_attempt_at <= now`, no lease in force), oldest
    /// due first, at most `limit`.
    async fn due_deliveries(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Delivery>>;

    /// Takes the lease of event `id` (about booking `booking`: the store keeps an event with its
    /// booking) until `until`, if it is pending, due at `now` and not leased: compare-and-set, so
    /// of concurrent callers one gets it. `None` when it is not (another caller has it, it was
    /// delivered, or it is not due); `NotFound` when missing.
    async fn claim_delivery(
        &self,
        booking: Uuid,
        id: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<Delivery>>;

    /// Records an attempt's outcome (one more attempt, the lease released). An event already
    /// delivered stays delivered (a late attempt whose lease ran out cannot undo a delivery).
    /// `NotFound` when missing.
    async fn finish_delivery(&self, booking: Uuid, id: &str, attempt: &Attempt) -> StoreResult<Delivery>;

    /// Deliveries with `status` (any when `None`), newest event first, at most `limit`.
    async fn deliveries(&self, status: Option<DeliveryStatus>, limit: usize) -> StoreResult<Vec<Delivery>>;

    /// Makes event `id` pending again, due at `now`, its age counted from `now` (attempts are
    /// kept). `NotFound` when missing.
    async fn redeliver(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Delivery>;

    /// Forgets delivered events delivered before `before`. Returns how many went.
    async fn purge_deliveries(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    // ----- keyset pages (see [`pages`]) -----
    // Each reads at most `limit` items strictly after `after` from an index range: never the
    // whole list. A walk page by page sees every item that exists throughout it exactly once.

    /// Rooms matching `filter`, in [`Store::list_rooms`] order, strictly after `after`, at most `limit`.
    async fn rooms_page(&self, filter: &RoomFilter, after: Option<&RoomKey>, limit: usize) -> StoreResult<Vec<Room>>;

    /// The owner's bookings matching `query` (cancelled ones too unless `query.status` says
    /// otherwise), by start then id, strictly after `after`, at most `limit`.
    async fn bookings_page(
        &self,
        query: &BookingQuery,
        after: Option<&BookingKey>,
        limit: usize,
    ) -> StoreResult<Vec<Booking>>;

    /// Deliveries with `status` (any when `None`), newest event first then event id descending,
    /// strictly after `after`, at most `limit`.
    async fn deliveries_page(
        &self,
        status: Option<DeliveryStatus>,
        after: Option<&DeliveryKey>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>>;

    // ----- per-user quota ledgers (see [`quotas`]) -----

    /// `user`'s quota ledger and its version, or `None` when none was written yet.
    async fn quota_ledger(&self, user: &str) -> StoreResult<Option<StoredLedger>>;

    /// Compare-and-set of `user`'s ledger: writes `ledger` only when the stored version is
    /// `expected` (`None`: no ledger may exist yet) and returns the new version.
    /// `PreconditionFailed` when another writer changed or created it first.
    async fn put_quota_ledger(&self, user: &str, ledger: &QuotaLedger, expected: Option<u64>) -> StoreResult<u64>;
}
