//! The Azure Cosmos DB backend of [`super::Store`] (`STORE=cosmos`).
//!
//! # Containers and partition keys
//! Two containers, both with partition key path `/pk` (see [`PARTITION_KEY_PATH`]). The app
//! never creates them: [`CosmosStore::connect`] fails fast, naming the missing container,
//! when infrastructure has not created them.
//!
//! | container (setting) | `pk` value | documents |
//! |---|---|---|
//! | `rooms` (`COSMOS_CONTAINER`) | the room id, decimal | the room document (`id = "room"`) and every booking of that room (`id` = booking id) |
//! | `ops` (`COSMOS_OPS_CONTAINER`) | the document's own id, or `oplog-YYYY-MM-DD` | idempotency claims, host assignments, once-only markers, state documents; the operations log, one partition per UTC day |
//!
//! Session records, the webhook outbox and session room lookups: see [`records`]. Per-user quota
//! ledgers (`ops`, `quota-<user digest>`): see [`quotas`].
//!
//! # Why a room and its bookings share a partition
//! A logical partition is the unit of Cosmos transactions. Every write that can create an
//! overlap (a booking, a new end) is a transactional batch in the room's partition that also
//! replaces the room document with `If-Match: <etag read before the overlap check>`. Any
//! other booking write in between changed that etag, so the batch fails with 412 and is
//! retried from the read: two instances can never both pass the check for the same room
//! (per-room serialization in the database, no process lock). The room read and the overlap
//! query use the `LatestCommitted` read strategy (a quorum read), so a lagging replica cannot
//! hide a booking whose write came before the etag we hold.
//!
//! # Which queries stay in one partition and which fan out
//! - One partition (cheap, by room id): `get_room`, `room_bookings`, the overlap check of
//!   `book_room` / `set_booking_end`, `delete_room`, `set_room_password`, markers, state,
//!   assignments by id, the operations log of one day.
//! - Fan out (cross-partition, cost grows with physical partitions): `list_rooms`,
//!   `book_any_room`'s candidate search (rooms with two seats, minus rooms busy in the slot),
//!   `get_booking` / `cancel_booking` / `set_booking_end` (a booking is found by its id
//!   alone), `list_bookings` (by owner), `bookings_between` (the scheduler's window),
//!   `assignments`, `purge_idempotency`, and `operations` windows longer than 31 days.
//!   An owner index would have to live in another partition and could not be written in the
//!   same batch as the booking, so we accept the fan-out instead of an index that can drift.
//!
//! # Idempotency keys
//! A create with an [`IdempotencyClaim`] first creates a claim document in `ops` (id = hash of
//! scope, user and key): the create is the arbiter when two requests with one key race. The
//! claim records the fingerprint and the ids the request will write; after the write it is
//! marked done. A replay reads the claim and answers with the entity as it is now; a claim
//! still pending (the first request is in flight, or died) answers `Unavailable` until its
//! 30 s lease ends, then the next request takes it over. A definitive failure (conflict, not
//! found) deletes the claim so a retry runs afresh, as on SQLite. Claims carry `ttl` (24 h):
//! set the `ops` container's default TTL to `-1` (on, per item) so Cosmos drops them itself;
//! `purge_idempotency` removes old claims where it is off.
//!
//! # Bounded requests and error mapping
//! Client defaults ([`default_operation_options`]): at most [`CosmosTuning::throttle_retries`]
//! retries on 429, within [`CosmosTuning::throttle_wait`], and an end-to-end timeout per
//! request. 429 → [`StoreError::Unavailable`] with the server's `retry-after` (or 1 s);
//! 408/449/503/transport failures → `Unavailable` with 1 s; 404 → `NotFound`; 409 →
//! `AlreadyExists` or `Conflict` as the contract says; 412 → retried (etag races) or
//! `PreconditionFailed` (the password compare-and-set). A write whose outcome is unknown
//! (timeout, 503, or a 409/412 caused by the SDK retrying our own committed write) is read
//! back and compared before it is called a failure or a conflict.
//!
//! Client events (one partition of `ops` per booking, a quota document guarding the limits) are in
//! [`client_events`].

mod client_events;

use std::{collections::HashSet, fmt::Write as _, sync::Arc, time::Duration as StdDuration};

use async_trait::async_trait;
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, ContainerClient, CosmosClient, CosmosClientBuilder, CosmosError, FeedScope,
    Query, RoutingStrategy, TransactionalBatch,
    options::{
        BatchReplaceOptions, EndToEndOperationLatencyPolicy, ItemReadOptions, ItemWriteOptions, OperationOptions,
        OperationOptionsBuilder, Precondition, QueryOptions, ReadConsistencyStrategy, ThrottlingRetryOptionsBuilder,
    },
};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use futures::TryStreamExt;
use rand::{Rng, seq::SliceRandom};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    Assignment, Attempt, ClientEvent, ClientEventLimits, Created, Delivery, DeliveryStatus, IDEMPOTENCY_TTL,
    IdempotencyClaim, Operation, RoomFilter, SessionRoom, Store, StoreError, StoreResult, StoredRecord,
};
use super::{BookingKey, BookingQuery, DeliveryKey, RoomKey};
use crate::{
    config::{CosmosConfig, CosmosCredentialKind},
    domain::{Access, Booking, Room, RoomId, TimeSlot, events::OutboxEvent, session::SessionRecord},
};

mod pages;
mod quotas;
mod records;

/// The partition key path both containers must have.
pub const PARTITION_KEY_PATH: &str = "/pk";

/// The id of the room document inside its partition.
const ROOM_DOC_ID: &str = "room";

/// How long a pending idempotency claim blocks other requests with its key.
const CLAIM_LEASE: Duration = Duration::seconds(30);

/// Retry-after given when the service did not say.
const DEFAULT_RETRY_AFTER: StdDuration = StdDuration::from_secs(1);

/// Limits that keep every store call bounded. The defaults suit an HTTP API behind the
/// Functions host: a throttled account answers within a few seconds, never minutes.
#[derive(Debug, Clone)]
pub struct CosmosTuning {
    /// End-to-end timeout of one Cosmos request, retries included.
    pub request_timeout: StdDuration,
    /// Retries of a request the service throttled (429) before giving up.
    pub throttle_retries: u32,
    /// Most time spent waiting between 429 retries of one request.
    pub throttle_wait: StdDuration,
    /// Attempts of an etag-guarded write that keeps losing races before answering `Unavailable`.
    pub contention_attempts: u32,
}

impl Default for CosmosTuning {
    fn default() -> Self {
        Self {
            request_timeout: StdDuration::from_secs(5),
            throttle_retries: 3,
            throttle_wait: StdDuration::from_secs(2),
            contention_attempts: 12,
        }
    }
}

/// The client-wide operation defaults that bound each request (429 retries, end-to-end timeout).
pub fn default_operation_options(tuning: &CosmosTuning) -> OperationOptions {
    OperationOptionsBuilder::new()
        .with_end_to_end_latency_policy(EndToEndOperationLatencyPolicy::new(tuning.request_timeout))
        .with_throttling_retry_options(
            ThrottlingRetryOptionsBuilder::new()
                .with_max_retry_count(tuning.throttle_retries)
                .with_max_retry_wait_time(tuning.throttle_wait)
                .build(),
        )
        .build()
}

/// A client builder with [`default_operation_options`] applied. Production ([`CosmosStore::connect`])
/// and the tests' emulator clients both start here, so both run with the same limits.
pub fn client_builder(tuning: &CosmosTuning) -> CosmosClientBuilder {
    CosmosClientBuilder::new().with_default_operation_options(default_operation_options(tuning))
}

/// The Cosmos DB store. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct CosmosStore {
    rooms: ContainerClient,
    ops: ContainerClient,
    tuning: Arc<CosmosTuning>,
}

impl std::fmt::Debug for CosmosStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosStore").field("tuning", &self.tuning).finish_non_exhaustive()
    }
}

impl CosmosStore {
    /// Connects for production: Entra ID (managed identity in Azure, the developer's CLI login
    /// locally, per [`CosmosConfig::credential`]), or the account key only when `COSMOS_KEY` is
    /// set. Checks that the database and both containers exist; fails with
    /// [`StoreError::Internal`] naming the missing one and how to create it.
    #[tracing::instrument(skip_all, fields(endpoint = %cfg.endpoint, database = %cfg.database))]
    pub async fn connect(cfg: &CosmosConfig) -> StoreResult<Self> {
        let endpoint: AccountEndpoint = cfg.endpoint.parse().map_err(|e| {
            StoreError::Internal(format!("COSMOS_ENDPOINT {:?} is not an account URL: {e}", cfg.endpoint))
        })?;
        let account = match (&cfg.key, cfg.credential) {
            (Some(key), _) => {
                tracing::warn!("using the Cosmos DB account key (COSMOS_KEY); prefer Entra ID in Azure");
                AccountReference::with_authentication_key(
                    endpoint,
                    azure_core::credentials::Secret::new(key.expose().to_string()),
                )
            }
            (None, CosmosCredentialKind::ManagedIdentity) => {
                let cred = azure_identity::ManagedIdentityCredential::new(None)
                    .map_err(|e| StoreError::Internal(format!("managed identity credential: {e}")))?;
                AccountReference::with_credential(endpoint, cred)
            }
            (None, CosmosCredentialKind::DeveloperTools) => {
                let cred = azure_identity::DeveloperToolsCredential::new(None)
                    .map_err(|e| StoreError::Internal(format!("developer tools credential: {e}")))?;
                AccountReference::with_credential(endpoint, cred)
            }
        };
        let tuning = CosmosTuning::default();
        let client = client_builder(&tuning)
            .build(account, RoutingStrategy::ProximityTo(cfg.region.clone().into()))
            .await
            .map_err(map_err)?;
        Self::from_client(&client, &cfg.database, &cfg.container, &cfg.ops_container, tuning).await
    }

    /// Builds the store on an existing client (tests use the in-memory emulator). Reads both
    /// containers: fails with [`StoreError::Internal`] naming a missing container or a wrong
    /// partition key path, `Unavailable` when the account cannot be reached.
    pub async fn from_client(
        client: &CosmosClient,
        database: &str,
        container: &str,
        ops_container: &str,
        tuning: CosmosTuning,
    ) -> StoreResult<Self> {
        let db = client.database_client(database);
        let rooms = open_container(&db, database, container).await?;
        let ops = open_container(&db, database, ops_container).await?;
        Ok(Self { rooms, ops, tuning: Arc::new(tuning) })
    }

    // ----- room partition primitives -----

    /// The room document and its etag; `None` when missing or being deleted.
    async fn room_doc(&self, id: RoomId) -> StoreResult<Option<(RoomDoc, String)>> {
        Ok(self.room_doc_raw(id).await?.filter(|(d, _)| !d.deleting))
    }

    async fn room_doc_raw(&self, id: RoomId) -> StoreResult<Option<(RoomDoc, String)>> {
        read_doc(&self.rooms, pk(id), ROOM_DOC_ID).await
    }

    async fn booking_doc_in(&self, room: RoomId, id: Uuid) -> StoreResult<Option<(BookingDoc, String)>> {
        read_doc(&self.rooms, pk(room), &id.to_string()).await
    }

    /// Ids of live bookings of `room` overlapping `slot` (one partition, quorum read).
    async fn overlapping(&self, room: RoomId, slot: TimeSlot) -> StoreResult<Vec<String>> {
        let q = Query::from(
            "SELECT VALUE c.id FROM c WHERE c.kind = 'booking' AND c.live = true AND c.start < @end AND c.end > @start",
        )
        .with_parameter("@start", ts(slot.start()))
        .map_err(map_err)?
        .with_parameter("@end", ts(slot.end()))
        .map_err(map_err)?;
        query(&self.rooms, q, FeedScope::partition(pk(room))).await
    }

    /// Finds a booking by id alone (fan-out).
    async fn find_booking(&self, id: Uuid) -> StoreResult<Option<BookingDoc>> {
        let q = Query::from("SELECT * FROM c WHERE c.kind = 'booking' AND c.id = @id")
            .with_parameter("@id", id.to_string())
            .map_err(map_err)?;
        let docs: Vec<BookingDoc> = query(&self.rooms, q, FeedScope::full_container()).await?;
        Ok(docs.into_iter().next())
    }

    /// Ids of rooms with a live booking overlapping `slot` (fan-out).
    async fn busy_rooms(&self, slot: TimeSlot) -> StoreResult<HashSet<u64>> {
        let q = Query::from(
            "SELECT VALUE c.roomId FROM c WHERE c.kind = 'booking' AND c.live = true AND c.start < @end AND c.end > @start",
        )
        .with_parameter("@start", ts(slot.start()))
        .map_err(map_err)?
        .with_parameter("@end", ts(slot.end()))
        .map_err(map_err)?;
        let ids: Vec<u64> = query(&self.rooms, q, FeedScope::full_container()).await?;
        Ok(ids.into_iter().collect())
    }

    /// Books `room` for `booking` (whose `room_id` is ignored): the overlap check and the write
    /// are one etag-guarded batch, retried when another write in the room wins the race.
    /// `NotFound`, `Conflict`, or `Unavailable` after [`CosmosTuning::contention_attempts`].
    async fn book_in_room(
        &self,
        booking: &Booking,
        room: RoomId,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<(Booking, Room)> {
        let booking = Booking { room_id: room, ..booking.clone() };
        let doc = BookingDoc::new(&booking);
        let events: Vec<OutboxEvent> = notify.iter().map(|_| OutboxEvent::booking_created(&booking)).collect();
        // Set once a batch of ours was sent: from then on an overlap may be our own booking.
        let mut sent = false;
        for attempt in 0..self.tuning.contention_attempts {
            let Some((room_doc, etag)) = self.room_doc(room).await? else {
                return Err(StoreError::NotFound);
            };
            if !self.overlapping(room, booking.slot).await?.is_empty() {
                if sent {
                    if let Some(found) = self.own_booking(&doc).await? {
                        return Ok((found, room_doc.to_room()?));
                    }
                }
                return Err(StoreError::Conflict(format!("room {room} is booked during that time")));
            }
            sent = true;
            let bumped = room_doc.bumped();
            let batch = TransactionalBatch::new(pk(room))
                .create_item(&doc)
                .map_err(map_err)?
                .replace_item(ROOM_DOC_ID, &bumped, Some(if_match_batch(&etag)))
                .map_err(map_err)?;
            let batch = records::with_outbox(batch, &events, notify.unwrap_or_default())?;
            match run_batch(&self.rooms, batch).await {
                Ok(()) => return Ok((booking, room_doc.to_room()?)),
                Err(fail) => {
                    if let Some(found) = self.own_booking(&doc).await? {
                        return Ok((found, room_doc.to_room()?));
                    }
                    match fail.status {
                        412 => backoff(attempt).await,
                        404 => return Err(StoreError::NotFound),
                        409 => return Err(StoreError::Conflict(format!("booking id {} is taken", booking.id))),
                        _ => return Err(fail.error),
                    }
                }
            }
        }
        Err(busy(format!("room {room} kept changing during {} attempts", self.tuning.contention_attempts)))
    }

    /// The stored booking if it is exactly `doc` (our own write, committed); `Conflict` if the
    /// id holds another booking; `None` if absent.
    async fn own_booking(&self, doc: &BookingDoc) -> StoreResult<Option<Booking>> {
        let room = RoomId::new(doc.room_id).map_err(|e| StoreError::Internal(e.0))?;
        match self.booking_doc_in(room, doc.booking_id).await? {
            Some((found, _)) if found.same_write(doc) => Ok(Some(found.to_booking()?)),
            Some(_) => Err(StoreError::Conflict(format!("booking id {} is taken", doc.booking_id))),
            None => Ok(None),
        }
    }

    /// Creates the lookup from `code_hash` to booking `id` (in `room`). Idempotent for the same
    /// booking; `AlreadyExists` when the hash leads to another booking whose current invitation
    /// still has it (a stale lookup of a replaced invitation is taken over).
    async fn claim_invitation(&self, code_hash: &str, id: Uuid, room: RoomId) -> StoreResult<()> {
        let doc_id = invite_id(code_hash)
            .ok_or_else(|| StoreError::Internal("an invitation code hash must be lowercase hex".into()))?;
        let doc = InviteDoc {
            id: doc_id.clone(),
            pk: doc_id.clone(),
            kind: "invitation".into(),
            booking_id: id,
            room_id: room.get(),
        };
        match self.ops.create_item(doc_id.clone(), &doc_id, &doc, None).await {
            Ok(_) => return Ok(()),
            Err(e) if u16::from(e.status().status_code()) == 409 => {}
            Err(e) => return Err(map_err(e)),
        }
        let Some((found, etag)) = read_doc::<InviteDoc>(&self.ops, doc_id.clone(), &doc_id).await? else {
            return Box::pin(self.claim_invitation(code_hash, id, room)).await;
        };
        if found.booking_id == id {
            return Ok(());
        }
        if self.booking_by_invitation(code_hash).await.is_ok() {
            return Err(StoreError::AlreadyExists);
        }
        self.ops.replace_item(doc_id.clone(), &doc_id, &doc, Some(if_match(&etag))).await.map(|_| ()).map_err(map_err)
    }

    /// Inserts `room` and books it in one batch (the find-or-create fallback).
    async fn create_room_with_booking(
        &self,
        booking: &Booking,
        room: &Room,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<(Booking, Room)> {
        let booking = Booking { room_id: room.id, ..booking.clone() };
        let doc = BookingDoc::new(&booking);
        let room_doc = RoomDoc::new(room);
        let batch = TransactionalBatch::new(pk(room.id))
            .create_item(&room_doc)
            .map_err(map_err)?
            .create_item(&doc)
            .map_err(map_err)?;
        let events: Vec<OutboxEvent> = notify.iter().map(|_| OutboxEvent::booking_created(&booking)).collect();
        let batch = records::with_outbox(batch, &events, notify.unwrap_or_default())?;
        match run_batch(&self.rooms, batch).await {
            Ok(()) => Ok((booking, room.clone())),
            Err(fail) => {
                if let Some(found) = self.own_booking(&doc).await? {
                    return Ok((found, room.clone()));
                }
                match fail.status {
                    409 => Err(StoreError::AlreadyExists),
                    _ => Err(fail.error),
                }
            }
        }
    }

    async fn book_any_room_now(
        &self,
        booking: &Booking,
        new_room: Option<&Room>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<(Booking, Room)> {
        // Ids only: the chosen room's document is read (with its etag) when it is booked.
        let q = Query::from(
            "SELECT VALUE c.roomId FROM c WHERE c.kind = 'room' AND c.deleting = false AND c.maxParticipants >= 2",
        );
        let rooms: Vec<u64> = query(&self.rooms, q, FeedScope::full_container()).await?;
        let busy = self.busy_rooms(booking.slot).await?;
        let mut candidates: Vec<u64> = rooms.into_iter().filter(|id| !busy.contains(id)).collect();
        // Instances racing for one slot would all try the same first room; a random order
        // spreads them so most win their first attempt.
        candidates.shuffle(&mut rand::thread_rng());
        for id in candidates {
            let room = RoomId::new(id).map_err(|e| StoreError::Internal(e.0))?;
            match self.book_in_room(booking, room, notify).await {
                Ok(done) => return Ok(done),
                // Someone took it (or deleted it) since the search: move on to the next room.
                Err(StoreError::Conflict(_) | StoreError::NotFound) => continue,
                Err(e) => return Err(e),
            }
        }
        match new_room {
            Some(room) => self.create_room_with_booking(booking, room, notify).await,
            None => Err(StoreError::NoFreeRoom),
        }
    }

    async fn insert_room_now(&self, room: &Room) -> StoreResult<Room> {
        let doc = RoomDoc::new(room);
        match self.rooms.create_item(pk(room.id), ROOM_DOC_ID, &doc, None).await {
            Ok(_) => Ok(room.clone()),
            Err(e) => {
                let fail = Fail::from(e);
                match self.room_doc_raw(room.id).await? {
                    Some((found, _)) if found.same_room(&doc) => Ok(room.clone()),
                    Some(_) if fail.status == 409 => Err(StoreError::AlreadyExists),
                    _ => Err(fail.error),
                }
            }
        }
    }

    // ----- idempotency claims -----

    /// Claims `claim`'s key for a write of `planned`. `Fresh` when this request owns the key
    /// now; `Replay` when an earlier request with the same fingerprint owns it.
    async fn claim_key(&self, claim: &IdempotencyClaim, planned: Planned) -> StoreResult<ClaimStart> {
        let id = idem_id(claim);
        let fresh = IdemDoc {
            id: id.clone(),
            pk: id.clone(),
            kind: "idem".into(),
            scope: claim.scope.into(),
            user: claim.user.clone(),
            fingerprint: claim.fingerprint.clone(),
            at: ts(claim.now),
            nonce: Uuid::new_v4().to_string(),
            done: false,
            booking_id: planned.booking,
            room_id: planned.room,
            ttl: IDEMPOTENCY_TTL.num_seconds(),
            etag: None,
        };
        for attempt in 0..self.tuning.contention_attempts {
            let (existing, etag) = match self.ops.create_item(&id, &id, &fresh, None).await {
                Ok(resp) => return Ok(ClaimStart::Fresh(fresh.with_etag(etag_of(resp.headers())?))),
                Err(e) => {
                    let fail = Fail::from(e);
                    match read_doc::<IdemDoc>(&self.ops, id.clone(), &id).await? {
                        Some((d, etag)) if d.nonce == fresh.nonce => return Ok(ClaimStart::Fresh(d.with_etag(etag))),
                        Some(found) => found,
                        None if fail.status == 409 => {
                            backoff(attempt).await;
                            continue;
                        }
                        None => return Err(fail.error),
                    }
                }
            };
            let at = parse_ts(&existing.at)?;
            if at + IDEMPOTENCY_TTL <= claim.now {
                // An expired key counts as absent: take it over.
                match self.ops.replace_item(&id, &id, &fresh, Some(if_match(&etag))).await {
                    Ok(resp) => return Ok(ClaimStart::Fresh(fresh.with_etag(etag_of(resp.headers())?))),
                    Err(_) => {
                        backoff(attempt).await;
                        continue;
                    }
                }
            }
            if existing.fingerprint != claim.fingerprint {
                return Err(StoreError::IdempotencyMismatch);
            }
            if existing.done {
                if self.planned_exists(&existing).await? {
                    return Ok(ClaimStart::Replay(existing));
                }
                // What the key created is gone (removed again after Janus refused it, or
                // deleted since): the key counts as absent, so this request takes it over.
                match self.ops.replace_item(&id, &id, &fresh, Some(if_match(&etag))).await {
                    Ok(resp) => return Ok(ClaimStart::Fresh(fresh.with_etag(etag_of(resp.headers())?))),
                    Err(_) => {
                        backoff(attempt).await;
                        continue;
                    }
                }
            }
            if self.planned_exists(&existing).await? {
                return Ok(ClaimStart::Replay(existing));
            }
            if claim.now < at + CLAIM_LEASE {
                let left = (at + CLAIM_LEASE - claim.now).to_std().unwrap_or(DEFAULT_RETRY_AFTER);
                return Err(StoreError::Unavailable {
                    message: "a request with this idempotency key is still in progress".into(),
                    retry_after: Some(left.min(StdDuration::from_secs(30))),
                });
            }
            // The first request died without writing: take over its key (and its plan, so a
            // zombie write of it could never sit beside ours).
            let takeover = IdemDoc { at: ts(claim.now), nonce: fresh.nonce.clone(), ..existing };
            match self.ops.replace_item(&id, &id, &takeover, Some(if_match(&etag))).await {
                Ok(resp) => return Ok(ClaimStart::Fresh(takeover.with_etag(etag_of(resp.headers())?))),
                Err(_) => backoff(attempt).await,
            }
        }
        Err(busy("idempotency key kept changing".into()))
    }

    /// True when the entity a pending claim planned was written.
    async fn planned_exists(&self, claim: &IdemDoc) -> StoreResult<bool> {
        match (claim.booking_id, claim.room_id) {
            (Some(b), Some(r)) => {
                let room = RoomId::new(r).map_err(|e| StoreError::Internal(e.0))?;
                Ok(self.booking_doc_in(room, b).await?.is_some())
            }
            (Some(b), None) => Ok(self.find_booking(b).await?.is_some()),
            (None, Some(r)) => {
                let room = RoomId::new(r).map_err(|e| StoreError::Internal(e.0))?;
                Ok(self.room_doc(room).await?.is_some())
            }
            (None, None) => Ok(false),
        }
    }

    /// Settles a claim after the write: done (with where the entity landed), or released on a
    /// definitive failure. Left pending when the outcome is unknown: a replay then looks for
    /// the planned entity. Best effort: a failure here never changes the caller's answer.
    async fn settle_claim<T>(&self, ticket: IdemDoc, result: &StoreResult<T>, landed_room: Option<u64>) {
        let opts = Some(if_match(ticket.etag.as_deref().unwrap_or_default()));
        let outcome = match result {
            Ok(_) => {
                let done =
                    IdemDoc { done: true, room_id: landed_room.or(ticket.room_id), etag: None, ..ticket.clone() };
                self.ops.replace_item(&ticket.id, &ticket.id, &done, opts).await.map(|_| ())
            }
            Err(StoreError::Unavailable { .. } | StoreError::Internal(_)) => return,
            Err(_) => self.ops.delete_item(&ticket.id, &ticket.id, opts).await.map(|_| ()),
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "could not settle an idempotency claim; a replay will find the entity itself");
        }
    }

    async fn replay_booking(&self, claim: &IdemDoc) -> StoreResult<Booking> {
        let id = claim.booking_id.ok_or_else(|| StoreError::Internal("booking claim without booking id".into()))?;
        match claim.room_id {
            Some(r) => {
                let room = RoomId::new(r).map_err(|e| StoreError::Internal(e.0))?;
                self.booking_doc_in(room, id).await?.ok_or(StoreError::NotFound)?.0.to_booking()
            }
            None => self.get_booking(id).await,
        }
    }

    // ----- ops container -----

    async fn create_once<T: Serialize + DeserializeOwned + Send + 'static>(
        &self,
        pk_value: &str,
        id: &str,
        doc: &T,
        same: impl Fn(&T) -> bool,
    ) -> StoreResult<bool> {
        match self.ops.create_item(pk_value.to_string(), id, doc, None).await {
            Ok(_) => Ok(true),
            Err(e) => {
                let fail = Fail::from(e);
                match read_doc::<T>(&self.ops, pk_value.to_string(), id).await? {
                    Some((found, _)) if same(&found) => Ok(true),
                    Some(_) => Ok(false),
                    None => Err(fail.error),
                }
            }
        }
    }
}

async fn open_container(
    db: &azure_data_cosmos::DatabaseClient,
    database: &str,
    name: &str,
) -> StoreResult<ContainerClient> {
    let container = db.container_client(name, None).await.map_err(|e| {
        if u16::from(e.status().status_code()) == 404 {
            StoreError::Internal(format!(
                "Cosmos DB container {name:?} (or database {database:?}) does not exist. The app does not create \
                 it: deploy infra (the Bicep template) or run `az cosmosdb sql container create --account-name <account> \
                 --resource-group <rg> --database-name {database} --name {name} --partition-key-path {PARTITION_KEY_PATH}`"
            ))
        } else {
            map_err(e)
        }
    })?;
    let props = container.read(None).await.map_err(map_err)?.into_model().map_err(map_err)?;
    let paths: Vec<String> = props.partition_key.paths().iter().map(|p| p.to_string()).collect();
    if paths != [PARTITION_KEY_PATH] {
        return Err(StoreError::Internal(format!(
            "Cosmos DB container {name:?} has partition key {paths:?}; it must be {PARTITION_KEY_PATH:?} (recreate it)"
        )));
    }
    Ok(container)
}

#[async_trait]
impl Store for CosmosStore {
    #[tracing::instrument(skip_all)]
    async fn ping(&self) -> StoreResult<()> {
        // A point read of an id that never exists: one cheap round trip, 404 is the answer.
        read_doc::<serde_json::Value>(&self.ops, "ping".to_string(), "ping").await.map(|_| ())
    }

    #[tracing::instrument(skip_all, fields(room = %room.id))]
    async fn insert_room(&self, room: &Room, claim: Option<&IdempotencyClaim>) -> StoreResult<Created<Room>> {
        let Some(claim) = claim else {
            return self.insert_room_now(room).await.map(Created::New);
        };
        match self.claim_key(claim, Planned { booking: None, room: Some(room.id.get()) }).await? {
            ClaimStart::Replay(c) => {
                let id = c.room_id.ok_or_else(|| StoreError::Internal("room claim without room id".into()))?;
                let id = RoomId::new(id).map_err(|e| StoreError::Internal(e.0))?;
                Ok(Created::Replayed(self.get_room(id).await?))
            }
            ClaimStart::Fresh(ticket) => {
                // A taken-over claim keeps the room id the first request planned.
                let planned = ticket.room_id.and_then(|r| RoomId::new(r).ok()).unwrap_or(room.id);
                let room = Room { id: planned, ..room.clone() };
                let result = self.insert_room_now(&room).await;
                self.settle_claim(ticket, &result, None).await;
                result.map(Created::New)
            }
        }
    }

    #[tracing::instrument(skip_all, fields(room = %id))]
    async fn get_room(&self, id: RoomId) -> StoreResult<Room> {
        self.room_doc(id).await?.ok_or(StoreError::NotFound)?.0.to_room()
    }

    #[tracing::instrument(skip_all)]
    async fn list_rooms(&self, filter: &RoomFilter) -> StoreResult<Vec<Room>> {
        let mut text = String::from("SELECT * FROM c WHERE c.kind = 'room' AND c.deleting = false");
        let mut params: Vec<(&str, serde_json::Value)> = vec![];
        if let Some(m) = filter.max_participants {
            text += " AND c.maxParticipants = @mp";
            params.push(("@mp", m.into()));
        }
        if let Some(t) = filter.created_before {
            text += " AND c.createdAt < @before";
            params.push(("@before", ts(t).into()));
        }
        if let Some(t) = filter.created_after {
            text += " AND c.createdAt > @after";
            params.push(("@after", ts(t).into()));
        }
        let mut q = Query::from(text);
        for (name, value) in params {
            q = q.with_parameter(name, value).map_err(map_err)?;
        }
        let docs: Vec<RoomDoc> = query(&self.rooms, q, FeedScope::full_container()).await?;
        let busy = match filter.free_during {
            Some(slot) => self.busy_rooms(slot).await?,
            None => HashSet::new(),
        };
        let mut rooms = docs
            .into_iter()
            .filter(|d| !busy.contains(&d.room_id))
            .map(|d| d.to_room())
            .collect::<StoreResult<Vec<_>>>()?;
        // Sorted here, not in SQL: a two-field ORDER BY needs a composite index in Azure.
        rooms.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(rooms)
    }

    #[tracing::instrument(skip_all, fields(room = %id))]
    async fn delete_room(&self, id: RoomId, now: DateTime<Utc>) -> StoreResult<()> {
        for attempt in 0..self.tuning.contention_attempts {
            let Some((room_doc, etag)) = self.room_doc_raw(id).await? else {
                return Err(StoreError::NotFound);
            };
            let q = Query::from("SELECT * FROM c WHERE c.kind = 'booking'");
            let bookings: Vec<BookingDoc> = query(&self.rooms, q, FeedScope::partition(pk(id))).await?;
            let now_s = ts(now);
            if !room_doc.deleting && bookings.iter().any(|b| b.live && b.end > now_s) {
                return Err(StoreError::Conflict(format!("room {id} has a booking that has not ended")));
            }
            let result = if bookings.len() < 100 && !room_doc.deleting {
                let mut batch = TransactionalBatch::new(pk(id)).delete_item(ROOM_DOC_ID, Some(delete_if_match(&etag)));
                for b in &bookings {
                    batch = batch.delete_item(b.id.clone(), None);
                }
                run_batch(&self.rooms, batch).await
            } else {
                // More than one batch can hold: mark the room deleted first (atomic with the
                // check), so it is gone for every reader, then remove its documents.
                if !room_doc.deleting {
                    let tomb = RoomDoc { deleting: true, ..room_doc.bumped() };
                    if let Err(e) = self.rooms.replace_item(pk(id), ROOM_DOC_ID, &tomb, Some(if_match(&etag))).await {
                        let fail = Fail::from(e);
                        if fail.status == 412 {
                            backoff(attempt).await;
                            continue;
                        }
                        return Err(fail.error);
                    }
                }
                for chunk in bookings.chunks(100) {
                    let mut batch = TransactionalBatch::new(pk(id));
                    for b in chunk {
                        batch = batch.delete_item(b.id.clone(), None);
                    }
                    run_batch(&self.rooms, batch).await.map_err(|f| f.error)?;
                }
                match self.rooms.delete_item(pk(id), ROOM_DOC_ID, None).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.status().is_not_found() => Ok(()),
                    Err(e) => Err(Fail::from(e)),
                }
            };
            match result {
                Ok(()) => return Ok(()),
                Err(fail) => {
                    // Our own delete may have committed with its answer lost.
                    if self.room_doc_raw(id).await?.is_none() {
                        return Ok(());
                    }
                    match fail.status {
                        412 | 404 => backoff(attempt).await,
                        _ => return Err(fail.error),
                    }
                }
            }
        }
        Err(busy(format!("room {id} kept changing")))
    }

    #[tracing::instrument(skip_all, fields(room = %id))]
    async fn set_room_password(&self, id: RoomId, expected: &str, new: &str, now: DateTime<Utc>) -> StoreResult<Room> {
        for attempt in 0..self.tuning.contention_attempts {
            let Some((doc, etag)) = self.room_doc(id).await? else {
                return Err(StoreError::NotFound);
            };
            if doc.password != expected {
                return Err(StoreError::PreconditionFailed);
            }
            let next = RoomDoc { password: new.to_string(), updated_at: ts(now), ..doc.bumped() };
            match self.rooms.replace_item(pk(id), ROOM_DOC_ID, &next, Some(if_match(&etag))).await {
                Ok(_) => return next.to_room(),
                Err(e) => {
                    let fail = Fail::from(e);
                    if let Some((found, _)) = self.room_doc(id).await? {
                        if found.version == next.version && found.password == next.password {
                            return found.to_room();
                        }
                    }
                    match fail.status {
                        // A booking bumped the room meanwhile; the compare runs again.
                        412 => backoff(attempt).await,
                        404 => return Err(StoreError::NotFound),
                        _ => return Err(fail.error),
                    }
                }
            }
        }
        Err(busy(format!("room {id} kept changing")))
    }

    #[tracing::instrument(skip_all, fields(room = %id))]
    async fn room_bookings(&self, id: RoomId, after: DateTime<Utc>) -> StoreResult<Vec<Booking>> {
        if self.room_doc(id).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        let q = Query::from("SELECT * FROM c WHERE c.kind = 'booking' AND c.live = true AND c.end > @after")
            .with_parameter("@after", ts(after))
            .map_err(map_err)?;
        let docs: Vec<BookingDoc> = query(&self.rooms, q, FeedScope::partition(pk(id))).await?;
        sorted_bookings(docs)
    }

    #[tracing::instrument(skip_all, fields(room = %booking.room_id, booking = %booking.id))]
    async fn book_room_notify(
        &self,
        booking: &Booking,
        claim: Option<&IdempotencyClaim>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Created<Booking>> {
        let Some(claim) = claim else {
            return self.book_in_room(booking, booking.room_id, notify).await.map(|(b, _)| Created::New(b));
        };
        let planned = Planned { booking: Some(booking.id), room: Some(booking.room_id.get()) };
        match self.claim_key(claim, planned).await? {
            ClaimStart::Replay(c) => Ok(Created::Replayed(self.replay_booking(&c).await?)),
            ClaimStart::Fresh(ticket) => {
                let booking = Booking { id: ticket.booking_id.unwrap_or(booking.id), ..booking.clone() };
                let result = self.book_in_room(&booking, booking.room_id, notify).await;
                self.settle_claim(ticket, &result, None).await;
                result.map(|(b, _)| Created::New(b))
            }
        }
    }

    #[tracing::instrument(skip_all, fields(booking = %booking.id))]
    async fn book_any_room_notify(
        &self,
        booking: &Booking,
        new_room: Option<&Room>,
        claim: Option<&IdempotencyClaim>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Created<(Booking, Room)>> {
        let Some(claim) = claim else {
            return self.book_any_room_now(booking, new_room, notify).await.map(Created::New);
        };
        match self.claim_key(claim, Planned { booking: Some(booking.id), room: None }).await? {
            ClaimStart::Replay(c) => {
                let b = self.replay_booking(&c).await?;
                let room = self.get_room(b.room_id).await?;
                Ok(Created::Replayed((b, room)))
            }
            ClaimStart::Fresh(ticket) => {
                let booking = Booking { id: ticket.booking_id.unwrap_or(booking.id), ..booking.clone() };
                let result = self.book_any_room_now(&booking, new_room, notify).await;
                let landed = result.as_ref().ok().map(|(b, _)| b.room_id.get());
                self.settle_claim(ticket, &result, landed).await;
                result.map(Created::New)
            }
        }
    }

    #[tracing::instrument(skip_all, fields(booking = %id))]
    async fn get_booking(&self, id: Uuid) -> StoreResult<Booking> {
        self.find_booking(id).await?.ok_or(StoreError::NotFound)?.to_booking()
    }

    #[tracing::instrument(skip_all)]
    async fn list_bookings(&self, owner: &str, during: Option<TimeSlot>) -> StoreResult<Vec<Booking>> {
        let mut q = Query::from("SELECT * FROM c WHERE c.kind = 'booking' AND c.owner = @owner")
            .with_parameter("@owner", owner.to_string())
            .map_err(map_err)?;
        if let Some(slot) = during {
            q = q
                .append_text(" AND c.start < @end AND c.end > @start")
                .with_parameter("@start", ts(slot.start()))
                .map_err(map_err)?
                .with_parameter("@end", ts(slot.end()))
                .map_err(map_err)?;
        }
        let docs: Vec<BookingDoc> = query(&self.rooms, q, FeedScope::full_container()).await?;
        sorted_bookings(docs)
    }

    #[tracing::instrument(skip_all)]
    async fn bookings_between(&self, window: TimeSlot) -> StoreResult<Vec<Booking>> {
        let q = Query::from(
            "SELECT * FROM c WHERE c.kind = 'booking' AND c.live = true AND c.start < @end AND c.end > @start",
        )
        .with_parameter("@start", ts(window.start()))
        .map_err(map_err)?
        .with_parameter("@end", ts(window.end()))
        .map_err(map_err)?;
        let docs: Vec<BookingDoc> = query(&self.rooms, q, FeedScope::full_container()).await?;
        sorted_bookings(docs)
    }

    #[tracing::instrument(skip_all, fields(booking = %id))]
    async fn cancel_booking_notify(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Booking> {
        let mut doc = self.find_booking(id).await?.ok_or(StoreError::NotFound)?;
        let room = RoomId::new(doc.room_id).map_err(|e| StoreError::Internal(e.0))?;
        for attempt in 0..self.tuning.contention_attempts {
            if !doc.live {
                return doc.to_booking();
            }
            let etag = doc.etag.clone().unwrap_or_default();
            let next = BookingDoc { live: false, cancelled_at: Some(ts(now)), etag: None, ..doc.clone() };
            // Cancelling only frees time, so it needs no room serialization: an If-Match on the
            // booking itself is enough against a concurrent end change.
            let outcome = match notify {
                None => self
                    .rooms
                    .replace_item(pk(room), &doc.id, &next, Some(if_match(&etag)))
                    .await
                    .map(drop)
                    .map_err(Fail::from),
                Some(at) => {
                    let batch = TransactionalBatch::new(pk(room))
                        .replace_item(doc.id.clone(), &next, Some(if_match_batch(&etag)))
                        .map_err(map_err)?;
                    let event = OutboxEvent::booking_cancelled(&next.to_booking()?, now);
                    run_batch(&self.rooms, records::with_outbox(batch, &[event], at)?).await
                }
            };
            let fail = match outcome {
                Ok(()) => return next.to_booking(),
                Err(fail) => fail,
            };
            doc = match self.booking_doc_in(room, id).await? {
                Some((d, etag)) => BookingDoc { etag: Some(etag), ..d },
                None => return Err(StoreError::NotFound),
            };
            match fail.status {
                412 => backoff(attempt).await,
                // Unknown outcome: the re-read decides at the loop's head.
                _ if !doc.live => {}
                _ => return Err(fail.error),
            }
        }
        Err(busy(format!("booking {id} kept changing")))
    }

    #[tracing::instrument(skip_all, fields(booking = %id))]
    async fn set_booking_end_notify(
        &self,
        id: Uuid,
        end: DateTime<Utc>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Booking> {
        let found = self.find_booking(id).await?.ok_or(StoreError::NotFound)?;
        let room = RoomId::new(found.room_id).map_err(|e| StoreError::Internal(e.0))?;
        for attempt in 0..self.tuning.contention_attempts {
            let Some((doc, booking_etag)) = self.booking_doc_in(room, id).await? else {
                return Err(StoreError::NotFound);
            };
            if !doc.live {
                return Err(StoreError::Conflict(format!("booking {id} is cancelled")));
            }
            let current = doc.to_booking()?;
            if current.slot.end() == end {
                return Ok(current);
            }
            let slot = TimeSlot::new(current.slot.start(), end)
                .map_err(|_| StoreError::Conflict("the new end is not after the start".into()))?;
            let Some((room_doc, room_etag)) = self.room_doc(room).await? else {
                return Err(StoreError::NotFound);
            };
            let own = id.to_string();
            if self.overlapping(room, slot).await?.iter().any(|b| *b != own) {
                return Err(StoreError::Conflict(format!("room {room} is booked during the new time")));
            }
            let next = BookingDoc { end: ts(end), etag: None, ..doc };
            let batch = TransactionalBatch::new(pk(room))
                .replace_item(own.clone(), &next, Some(if_match_batch(&booking_etag)))
                .map_err(map_err)?
                .replace_item(ROOM_DOC_ID, room_doc.bumped(), Some(if_match_batch(&room_etag)))
                .map_err(map_err)?;
            let events: Vec<OutboxEvent> = match notify {
                Some(at) => vec![OutboxEvent::booking_extended(&next.to_booking()?, current.slot.end(), at)],
                None => vec![],
            };
            let batch = records::with_outbox(batch, &events, notify.unwrap_or_default())?;
            match run_batch(&self.rooms, batch).await {
                Ok(()) => return next.to_booking(),
                Err(fail) => match fail.status {
                    // Unknown outcomes and lost races alike: the re-read at the loop's head
                    // sees our end if it was written.
                    412 => backoff(attempt).await,
                    _ if fail.error_is_unknown_outcome() => {
                        if let Some((d, _)) = self.booking_doc_in(room, id).await? {
                            if d.end == next.end && d.live {
                                return d.to_booking();
                            }
                        }
                        return Err(fail.error);
                    }
                    404 => return Err(StoreError::NotFound),
                    _ => return Err(fail.error),
                },
            }
        }
        Err(busy(format!("room {room} kept changing")))
    }

    #[tracing::instrument(skip_all, fields(booking = %id))]
    async fn set_booking_access(&self, id: Uuid, expected: &Access, new: &Access) -> StoreResult<Booking> {
        let found = self.find_booking(id).await?.ok_or(StoreError::NotFound)?;
        let room = RoomId::new(found.room_id).map_err(|e| StoreError::Internal(e.0))?;
        let hash_of = |a: &Access| a.invitation.as_ref().map(|i| i.code_hash.clone());
        let (old_hash, new_hash) = (hash_of(expected), hash_of(new));
        if let Some(h) = new_hash.as_deref().filter(|h| Some(*h) != old_hash.as_deref()) {
            // The lookup first: if the booking write then fails, the lookup leads nowhere.
            self.claim_invitation(h, id, room).await?;
        }
        let mut sent = false;
        for attempt in 0..self.tuning.contention_attempts {
            let Some((doc, etag)) = self.booking_doc_in(room, id).await? else {
                return Err(StoreError::NotFound);
            };
            if sent && doc.access == *new {
                // Our write landed though its answer was lost.
                return doc.to_booking();
            }
            if doc.access != *expected {
                return Err(StoreError::PreconditionFailed);
            }
            let next = BookingDoc { access: new.clone(), etag: None, ..doc };
            sent = true;
            match self.rooms.replace_item(pk(room), &next.id, &next, Some(if_match(&etag))).await {
                Ok(_) => {
                    if let Some(old) = old_hash.filter(|h| Some(h) != new_hash.as_ref()).and_then(|h| invite_id(&h)) {
                        // Best effort: a stale lookup finds nothing anyway.
                        let _ = self.ops.delete_item(old.clone(), &old, None).await;
                    }
                    return next.to_booking();
                }
                Err(e) => {
                    let fail = Fail::from(e);
                    match fail.status {
                        412 => backoff(attempt).await,
                        404 => return Err(StoreError::NotFound),
                        // Unknown outcome: the re-read at the loop's head decides.
                        _ if fail.error_is_unknown_outcome() => {}
                        _ => return Err(fail.error),
                    }
                }
            }
        }
        Err(busy(format!("booking {id} kept changing")))
    }

    #[tracing::instrument(skip_all)]
    async fn booking_by_invitation(&self, code_hash: &str) -> StoreResult<Booking> {
        let Some(doc_id) = invite_id(code_hash) else { return Err(StoreError::NotFound) };
        let Some((lookup, _)) = read_doc::<InviteDoc>(&self.ops, doc_id.clone(), &doc_id).await? else {
            return Err(StoreError::NotFound);
        };
        let room = RoomId::new(lookup.room_id).map_err(|e| StoreError::Internal(e.0))?;
        match self.booking_doc_in(room, lookup.booking_id).await? {
            Some((doc, _)) if doc.access.invitation.as_ref().is_some_and(|i| i.code_hash == code_hash) => {
                doc.to_booking()
            }
            _ => Err(StoreError::NotFound),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn purge_idempotency(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let q = Query::from("SELECT c.id FROM c WHERE c.kind = 'idem' AND c.at < @before")
            .with_parameter("@before", ts(before))
            .map_err(map_err)?;
        let ids: Vec<IdOnly> = query(&self.ops, q, FeedScope::full_container()).await?;
        let mut n = 0;
        for IdOnly { id } in ids {
            match self.ops.delete_item(id.clone(), &id, None).await {
                Ok(_) => n += 1,
                Err(e) if e.status().is_not_found() => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        Ok(n)
    }

    #[tracing::instrument(skip_all, fields(booking = %assignment.booking_id))]
    async fn put_assignment(&self, assignment: &Assignment) -> StoreResult<()> {
        let id = format!("asg-{}", assignment.booking_id);
        let doc = AssignmentDoc {
            id: id.clone(),
            pk: id.clone(),
            kind: "assignment".into(),
            booking_id: assignment.booking_id.to_string(),
            assignment: assignment.clone(),
        };
        self.ops.upsert_item(id.clone(), &id, &doc, None).await.map(|_| ()).map_err(map_err)
    }

    #[tracing::instrument(skip_all)]
    async fn assignments(&self, booking_ids: &[Uuid]) -> StoreResult<Vec<Assignment>> {
        if booking_ids.is_empty() {
            return Ok(vec![]);
        }
        let ids: Vec<String> = booking_ids.iter().map(|u| u.to_string()).collect();
        let q = Query::from("SELECT * FROM c WHERE c.kind = 'assignment' AND ARRAY_CONTAINS(@ids, c.bookingId)")
            .with_parameter("@ids", ids)
            .map_err(map_err)?;
        let docs: Vec<AssignmentDoc> = query(&self.ops, q, FeedScope::full_container()).await?;
        Ok(docs.into_iter().map(|d| d.assignment).collect())
    }

    #[tracing::instrument(skip_all, fields(action = %op.action))]
    async fn append_operation(&self, op: &Operation) -> StoreResult<()> {
        let doc =
            OpDoc { id: op.id.to_string(), pk: oplog_pk(op.at), kind: "op".into(), at: ts(op.at), op: op.clone() };
        if self.create_once(&doc.pk, &doc.id, &doc, |found: &OpDoc| found.op == *op).await? {
            Ok(())
        } else {
            Err(StoreError::AlreadyExists)
        }
    }

    #[tracing::instrument(skip_all)]
    async fn operations(&self, window: TimeSlot) -> StoreResult<Vec<Operation>> {
        let q = || -> StoreResult<Query> {
            Query::from("SELECT * FROM c WHERE c.kind = 'op' AND c.at >= @from AND c.at < @to")
                .with_parameter("@from", ts(window.start()))
                .map_err(map_err)?
                .with_parameter("@to", ts(window.end()))
                .map_err(map_err)
        };
        let mut docs: Vec<OpDoc> = vec![];
        if window.duration() <= Duration::days(31) {
            let mut day = window.start().date_naive();
            while day <= window.end().date_naive() {
                let pk_value = format!("oplog-{}", day.format("%Y-%m-%d"));
                docs.extend(query::<OpDoc>(&self.ops, q()?, FeedScope::partition(pk_value)).await?);
                day = day.succ_opt().ok_or_else(|| StoreError::Internal("date overflow".into()))?;
            }
        } else {
            docs = query(&self.ops, q()?, FeedScope::full_container()).await?;
        }
        let mut ops: Vec<Operation> = docs.into_iter().map(|d| d.op).collect();
        ops.sort_by(|a, b| a.at.cmp(&b.at).then(a.id.cmp(&b.id)));
        Ok(ops)
    }

    #[tracing::instrument(skip_all)]
    async fn claim_marker(&self, key: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let id = format!("marker-{}", hex_digest(key));
        let doc = MarkerDoc {
            id: id.clone(),
            pk: id.clone(),
            kind: "marker".into(),
            key: key.to_string(),
            at: ts(now),
            nonce: Uuid::new_v4().to_string(),
        };
        self.create_once(&id, &id, &doc, |found: &MarkerDoc| found.nonce == doc.nonce).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_state(&self, key: &str) -> StoreResult<Option<serde_json::Value>> {
        let id = format!("state-{}", hex_digest(key));
        Ok(read_doc::<StateDoc>(&self.ops, id.clone(), &id).await?.map(|(d, _)| d.value))
    }

    #[tracing::instrument(skip_all)]
    async fn put_state(&self, key: &str, value: &serde_json::Value) -> StoreResult<()> {
        let id = format!("state-{}", hex_digest(key));
        let doc = StateDoc {
            id: id.clone(),
            pk: id.clone(),
            kind: "state".into(),
            key: key.to_string(),
            value: value.clone(),
        };
        self.ops.upsert_item(id.clone(), &id, &doc, None).await.map(|_| ()).map_err(map_err)
    }

    #[tracing::instrument(skip_all, fields(booking = %booking_id))]
    async fn append_client_events(
        &self,
        booking_id: Uuid,
        events: &[ClientEvent],
        limits: ClientEventLimits,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        client_events::append(self, booking_id, events, limits, now).await
    }

    #[tracing::instrument(skip_all, fields(booking = %booking_id))]
    async fn client_events(&self, booking_id: Uuid) -> StoreResult<Vec<ClientEvent>> {
        client_events::list(self, booking_id).await
    }

    // ----- session records and the webhook outbox (see `records`) -----

    #[tracing::instrument(skip_all)]
    async fn put_session_room(&self, room: &SessionRoom) -> StoreResult<()> {
        self.put_session_room_impl(room).await
    }

    #[tracing::instrument(skip_all)]
    async fn session_room(&self, janus_room: u64) -> StoreResult<Option<SessionRoom>> {
        self.session_room_impl(janus_room).await
    }

    #[tracing::instrument(skip_all, fields(booking = %booking))]
    async fn session_record(&self, room: RoomId, booking: Uuid) -> StoreResult<Option<StoredRecord>> {
        self.session_record_impl(room, booking).await
    }

    #[tracing::instrument(skip_all)]
    async fn session_records(&self, bookings: &[Uuid]) -> StoreResult<Vec<StoredRecord>> {
        self.session_records_impl(bookings).await
    }

    #[tracing::instrument(skip_all, fields(booking = %record.booking_id))]
    async fn put_session_record(
        &self,
        record: &SessionRecord,
        expected: Option<u64>,
        outbox: &[OutboxEvent],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        self.put_session_record_impl(record, expected, outbox, now).await
    }

    #[tracing::instrument(skip_all)]
    async fn due_deliveries(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Delivery>> {
        self.due_deliveries_impl(now, limit).await
    }

    #[tracing::instrument(skip_all)]
    async fn claim_delivery(
        &self,
        room: RoomId,
        id: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<Delivery>> {
        self.claim_delivery_impl(room, id, now, until).await
    }

    #[tracing::instrument(skip_all)]
    async fn finish_delivery(&self, room: RoomId, id: &str, attempt: &Attempt) -> StoreResult<Delivery> {
        self.finish_delivery_impl(room, id, attempt).await
    }

    #[tracing::instrument(skip_all)]
    async fn deliveries(&self, status: Option<DeliveryStatus>, limit: usize) -> StoreResult<Vec<Delivery>> {
        self.deliveries_impl(status, limit).await
    }

    #[tracing::instrument(skip_all)]
    async fn redeliver(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Delivery> {
        self.redeliver_impl(id, now).await
    }

    #[tracing::instrument(skip_all)]
    async fn purge_deliveries(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.purge_deliveries_impl(before).await
    }

    // ----- keyset pages (see `pages`) -----

    async fn rooms_page(&self, filter: &RoomFilter, after: Option<&RoomKey>, limit: usize) -> StoreResult<Vec<Room>> {
        self.rooms_page_impl(filter, after, limit).await
    }

    async fn bookings_page(
        &self,
        q: &BookingQuery,
        after: Option<&BookingKey>,
        limit: usize,
    ) -> StoreResult<Vec<Booking>> {
        self.bookings_page_impl(q, after, limit).await
    }

    async fn deliveries_page(
        &self,
        status: Option<DeliveryStatus>,
        after: Option<&DeliveryKey>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        self.deliveries_page_impl(status, after, limit).await
    }

    async fn quota_ledger(&self, user: &str) -> StoreResult<Option<super::StoredLedger>> {
        self.quota_ledger_impl(user).await
    }

    async fn put_quota_ledger(
        &self,
        user: &str,
        ledger: &super::QuotaLedger,
        expected: Option<u64>,
    ) -> StoreResult<u64> {
        self.put_quota_ledger_impl(user, ledger, expected).await
    }
}

// ----- documents -----

/// The room document: the room's fields plus `version`, bumped by every write in the room's
/// partition that must serialize with bookings (its etag is the per-room lock).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomDoc {
    id: String,
    pk: String,
    kind: String,
    room_id: u64,
    name: Option<String>,
    password: String,
    max_participants: u8,
    metadata: serde_json::Map<String, serde_json::Value>,
    created_at: String,
    updated_at: String,
    version: u64,
    /// Set while a room with more bookings than one batch holds is being deleted.
    #[serde(default)]
    deleting: bool,
}

impl RoomDoc {
    fn new(r: &Room) -> Self {
        Self {
            id: ROOM_DOC_ID.into(),
            pk: r.id.to_string(),
            kind: "room".into(),
            room_id: r.id.get(),
            name: r.name.clone(),
            password: r.password.clone(),
            max_participants: r.max_participants,
            metadata: r.metadata.clone(),
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
            version: 1,
            deleting: false,
        }
    }
    fn bumped(&self) -> Self {
        Self { version: self.version + 1, ..self.clone() }
    }
    fn same_room(&self, other: &RoomDoc) -> bool {
        self.to_room().ok() == other.to_room().ok()
    }
    fn to_room(&self) -> StoreResult<Room> {
        Ok(Room {
            id: RoomId::new(self.room_id).map_err(|e| StoreError::Internal(e.0))?,
            name: self.name.clone(),
            password: self.password.clone(),
            max_participants: self.max_participants,
            metadata: self.metadata.clone(),
            created_at: parse_ts(&self.created_at)?,
            updated_at: parse_ts(&self.updated_at)?,
        })
    }
}

/// A booking, in its room's partition. Times are fixed-width RFC 3339 strings, so string
/// order is time order in queries; `live` is false once cancelled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BookingDoc {
    id: String,
    pk: String,
    kind: String,
    booking_id: Uuid,
    room_id: u64,
    owner: String,
    start: String,
    end: String,
    created_at: String,
    cancelled_at: Option<String>,
    live: bool,
    #[serde(default)]
    access: Access,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: Option<String>,
}

impl BookingDoc {
    fn new(b: &Booking) -> Self {
        Self {
            id: b.id.to_string(),
            pk: b.room_id.to_string(),
            kind: "booking".into(),
            booking_id: b.id,
            room_id: b.room_id.get(),
            owner: b.owner.clone(),
            start: ts(b.slot.start()),
            end: ts(b.slot.end()),
            created_at: ts(b.created_at),
            cancelled_at: b.cancelled_at.map(ts),
            live: b.cancelled_at.is_none(),
            access: b.access.clone(),
            etag: None,
        }
    }
    /// True when `other` is the same create (ours, retried), not just the same id.
    fn same_write(&self, other: &BookingDoc) -> bool {
        self.booking_id == other.booking_id
            && self.room_id == other.room_id
            && self.owner == other.owner
            && self.start == other.start
            && self.end == other.end
            && self.created_at == other.created_at
    }
    fn to_booking(&self) -> StoreResult<Booking> {
        let slot = TimeSlot::new(parse_ts(&self.start)?, parse_ts(&self.end)?)
            .map_err(|e| StoreError::Internal(format!("stored booking {}: {e}", self.id)))?;
        Ok(Booking {
            id: self.booking_id,
            room_id: RoomId::new(self.room_id).map_err(|e| StoreError::Internal(e.0))?,
            owner: self.owner.clone(),
            slot,
            created_at: parse_ts(&self.created_at)?,
            cancelled_at: self.cancelled_at.as_deref().map(parse_ts).transpose()?,
            access: self.access.clone(),
        })
    }
}

/// An idempotency claim in `ops`: who holds a key, for which request, and what it writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdemDoc {
    id: String,
    pk: String,
    kind: String,
    scope: String,
    user: String,
    fingerprint: String,
    at: String,
    nonce: String,
    done: bool,
    booking_id: Option<Uuid>,
    room_id: Option<u64>,
    /// Seconds until Cosmos drops the claim (when the container's default TTL is on).
    ttl: i64,
    #[serde(skip)]
    etag: Option<String>,
}

impl IdemDoc {
    fn with_etag(self, etag: String) -> Self {
        Self { etag: Some(etag), ..self }
    }
}

#[derive(Debug, Clone, Copy)]
struct Planned {
    booking: Option<Uuid>,
    room: Option<u64>,
}

enum ClaimStart {
    Fresh(IdemDoc),
    Replay(IdemDoc),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssignmentDoc {
    id: String,
    pk: String,
    kind: String,
    booking_id: String,
    assignment: Assignment,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpDoc {
    id: String,
    pk: String,
    kind: String,
    at: String,
    op: Operation,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MarkerDoc {
    id: String,
    pk: String,
    kind: String,
    key: String,
    at: String,
    nonce: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateDoc {
    id: String,
    pk: String,
    kind: String,
    key: String,
    value: serde_json::Value,
}

/// The lookup from an invitation's code hash to its booking, in `ops` (id and `pk` are
/// `inv-<hash>`: one point read). It never decides anything: the booking's own `access` says
/// whether the invitation is current, so a stale lookup (a replaced invitation) finds nothing.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InviteDoc {
    id: String,
    pk: String,
    kind: String,
    booking_id: Uuid,
    room_id: u64,
}

#[derive(Debug, Deserialize)]
struct IdOnly {
    id: String,
}

// ----- helpers -----

fn pk(room: RoomId) -> String {
    room.to_string()
}

fn oplog_pk(at: DateTime<Utc>) -> String {
    format!("oplog-{}", at.format("%Y-%m-%d"))
}

/// The id (and partition) of an invitation lookup; `None` for a hash that is not lowercase hex
/// (no invitation has such a hash, and ids may not hold every character).
fn invite_id(code_hash: &str) -> Option<String> {
    let hex = !code_hash.is_empty()
        && code_hash.len() <= 128
        && code_hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    hex.then(|| format!("inv-{code_hash}"))
}

fn idem_id(claim: &IdempotencyClaim) -> String {
    format!("idem-{}", hex_digest(&format!("{}\n{}\n{}", claim.scope, claim.user, claim.key)))
}

/// Document ids may not contain `/`, `\`, `?` or `#`: keys chosen by users are hashed.
fn hex_digest(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Fixed-width UTC timestamps (nanoseconds): lexical order is time order.
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn parse_ts(s: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Internal(format!("stored time {s:?}: {e}")))
}

fn sorted_bookings(docs: Vec<BookingDoc>) -> StoreResult<Vec<Booking>> {
    let mut out = docs.iter().map(BookingDoc::to_booking).collect::<StoreResult<Vec<_>>>()?;
    out.sort_by(|a, b| a.slot.start().cmp(&b.slot.start()).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Reads that guard a write use a quorum read: a lagging replica must not hide a booking.
fn latest() -> OperationOptions {
    OperationOptionsBuilder::new().with_read_consistency_strategy(ReadConsistencyStrategy::LatestCommitted).build()
}

fn if_match(etag: &str) -> ItemWriteOptions {
    ItemWriteOptions::default().with_precondition(Precondition::if_match(etag.to_string()))
}

fn if_match_batch(etag: &str) -> BatchReplaceOptions {
    BatchReplaceOptions::default().with_precondition(Precondition::if_match(etag.to_string()))
}

fn delete_if_match(etag: &str) -> azure_data_cosmos::options::BatchDeleteOptions {
    azure_data_cosmos::options::BatchDeleteOptions::default()
        .with_precondition(Precondition::if_match(etag.to_string()))
}

fn etag_of(headers: &azure_data_cosmos::models::ResponseHeaders) -> StoreResult<String> {
    headers.etag().map(|e| e.to_string()).ok_or_else(|| StoreError::Internal("Cosmos response without an etag".into()))
}

async fn read_doc<T: DeserializeOwned>(
    c: &ContainerClient,
    pk_value: String,
    id: &str,
) -> StoreResult<Option<(T, String)>> {
    let opts = ItemReadOptions::default().with_operation_options(latest());
    match c.read_item(pk_value, id, Some(opts)).await {
        Ok(resp) => {
            let etag = etag_of(resp.headers())?;
            let doc: T = resp.into_model().map_err(map_err)?;
            Ok(Some((doc, etag)))
        }
        Err(e) if e.status().is_not_found() => Ok(None),
        Err(e) => Err(map_err(e)),
    }
}

async fn query<T: DeserializeOwned + Send + 'static>(
    c: &ContainerClient,
    q: Query,
    scope: FeedScope,
) -> StoreResult<Vec<T>> {
    let opts = QueryOptions::default().with_operation_options(latest());
    c.query_items::<T>(q, scope, Some(opts)).await.map_err(map_err)?.try_collect().await.map_err(map_err)
}

/// A failed write: the HTTP status of the operation that failed, and its mapped error.
#[derive(Debug)]
struct Fail {
    status: u16,
    error: StoreError,
}

impl Fail {
    /// True when the write may or may not have happened (timeouts, 503, transport).
    fn error_is_unknown_outcome(&self) -> bool {
        matches!(self.error, StoreError::Unavailable { .. }) && self.status != 429
    }
}

impl From<CosmosError> for Fail {
    fn from(e: CosmosError) -> Self {
        Self { status: u16::from(e.status().status_code()), error: map_err(e) }
    }
}

/// Runs a transactional batch. A failed batch comes back as a 207 with one result per
/// operation; the failing operation's status is the answer (the others say 424).
async fn run_batch(c: &ContainerClient, batch: TransactionalBatch) -> Result<(), Fail> {
    let resp = c.execute_transactional_batch(batch, None).await.map_err(Fail::from)?;
    let body = resp.into_model().map_err(Fail::from)?;
    match body.results().iter().find(|r| !r.is_success() && r.status_code() != 424) {
        None if body.results().iter().all(|r| r.is_success()) => Ok(()),
        None => Err(Fail { status: 424, error: StoreError::Internal("batch failed without a cause".into()) }),
        Some(r) => Err(Fail { status: r.status_code(), error: map_status(r.status_code(), None, r.retry_after()) }),
    }
}

/// Maps a Cosmos failure into the shared variants (see the module docs).
pub fn map_err(e: CosmosError) -> StoreError {
    let status = e.status();
    let retry_after = e.response().and_then(|r| r.headers().retry_after_ms).map(StdDuration::from_millis);
    if status.is_read_session_not_available() {
        return map_status(503, Some(&e), retry_after);
    }
    map_status(u16::from(status.status_code()), Some(&e), retry_after)
}

fn map_status(code: u16, e: Option<&CosmosError>, retry_after: Option<StdDuration>) -> StoreError {
    let detail = e.map(|e| format!(": {e}")).unwrap_or_default();
    match code {
        404 => StoreError::NotFound,
        409 => StoreError::AlreadyExists,
        412 => StoreError::PreconditionFailed,
        429 => StoreError::Unavailable {
            message: "Cosmos DB is throttling requests (429)".into(),
            retry_after: Some(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
        },
        408 | 410 | 449 | 500 | 502 | 503 | 504 => StoreError::Unavailable {
            message: format!("Cosmos DB did not complete the request ({code}){detail}"),
            retry_after: Some(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
        },
        _ => StoreError::Internal(format!("Cosmos DB answered {code}{detail}")),
    }
}

fn busy(message: String) -> StoreError {
    StoreError::Unavailable { message, retry_after: Some(DEFAULT_RETRY_AFTER) }
}

/// Jittered exponential backoff between etag races: losers spread out instead of colliding again.
async fn backoff(attempt: u32) {
    let cap = (5u64 << attempt.min(6)).min(200);
    let ms = rand::thread_rng().gen_range(0..=cap);
    tokio::time::sleep(StdDuration::from_millis(ms)).await;
}
