//! The Azure Cosmos DB backend of [`super::Store`] (`STORE=cosmos`).
//!
//! | file | holds |
//! |---|---|
//! | [`documents`] | the documents, their ids and partition keys, booking ids that name their room and day, the overlap rule |
//! | [`schedule`] | bookings: placed under the day documents' guard, found in one read, changed with `If-Match`, listed by day, room and owner |
//! | [`finder`] | find-or-create: the room directory and each slot's hints |
//! | [`claims`] | idempotency keys: claims, leases, and the fence that makes a key book once |
//! | [`records`] | session records, session room lookups, the webhook outbox (in the booking writes' batches) |
//! | [`client_events`] | the web client's events: one partition per booking, a quota document guarding the limits |
//! | [`sdk`] | the SDK glue: client limits, reads, paged queries, batches, errors |
//! | [`seed`] | a history of bookings written in bulk, for the benchmark |
//! | this file | [`CosmosStore`]: each [`Store`] operation composed of those |
//!
//! # Cost per operation
//! Every operation the API calls per request reads and writes a number of documents that does not
//! depend on the number of rooms, on history, or on the account's physical partitions: the hot
//! paths are point reads, single-partition batches and single-partition queries. What each costs
//! is in the README (`cargo bench --bench cosmos` prints it). Fan-outs remain only where the
//! answer is the whole fleet (`list_rooms`) or for rare administrative work (deleting a room,
//! purging old idempotency keys).
//!
//! # Containers
//! Two containers, both with partition key path `/pk` ([`PARTITION_KEY_PATH`]); the app never
//! creates them: [`CosmosStore::connect`] fails fast, naming the missing one. Set the default
//! TTL of both to `-1` (on, per item) so claims, fences, hints and the operations log expire.

mod claims;
mod client_events;
mod documents;
mod finder;
mod pages;
mod quotas;
mod records;
mod schedule;
mod sdk;
mod seed;

use std::sync::Arc;

use async_trait::async_trait;
use azure_data_cosmos::{AccountEndpoint, AccountReference, CosmosClient, Query, RoutingStrategy};
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::{
    Along, Assignment, Attempt, ClientEvent, ClientEventLimits, Created, Delivery, DeliveryStatus, IdempotencyClaim,
    Operation, RoomFilter, SessionRoom, Store, StoreError, StoreResult, StoredRecord,
};
use super::{BookingKey, BookingQuery, DeliveryKey, RoomKey};
use crate::{
    config::{CosmosConfig, CosmosCredentialKind},
    domain::{Access, Booking, Room, RoomId, TimeSlot, events::OutboxEvent, session::SessionRecord},
};
use claims::ClaimStart;
use documents::{
    AssignmentDoc, InviteDoc, MARKER_TTL, MarkerDoc, OPLOG_TTL, OpDoc, OwnerDoc, ROOM_DOC_ID, RoomDoc, StateDoc,
    assignment_id, day_pk, days_of, invite_id, oplog_pk, owner_pk,
};
use finder::{Directory, Found};
use schedule::Outcome;
use sdk::{Containers, Fresh, In, backoff, busy, hex_digest, map_err, open_container, ts};

pub use sdk::{CosmosTuning, PARTITION_KEY_PATH, client_builder, default_operation_options};

/// The Cosmos DB store. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct CosmosStore {
    c: Containers,
    tuning: Arc<CosmosTuning>,
    directory: Arc<Directory>,
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
        let c = Containers::new(rooms, ops, &tuning);
        let directory = Arc::default();
        finder::Directory::keep_fresh(&directory, c.clone());
        Ok(Self { c, tuning: Arc::new(tuning), directory })
    }

    /// Documents this store has read so far (point reads and query results): what a request
    /// unit estimate needs besides the request count.
    pub fn docs_read(&self) -> u64 {
        self.c.docs_read()
    }

    /// Creates the lookup from `code_hash` to booking `id`. Idempotent for the same booking;
    /// `AlreadyExists` when the hash leads to another booking whose current invitation still has
    /// it (a stale lookup of a replaced invitation is taken over).
    async fn claim_invitation(&self, code_hash: &str, id: Uuid) -> StoreResult<()> {
        let key = invite_id(code_hash)
            .ok_or_else(|| StoreError::Internal("an invitation code hash must be lowercase hex".into()))?;
        let doc = InviteDoc { id: key.clone(), pk: key.clone(), kind: "invitation".into(), booking_id: id };
        for attempt in 0..self.tuning.contention_attempts {
            match self.c.create(In::Ops, &key, &key, &doc).await {
                Ok(_) => return Ok(()),
                Err(f) if f.status == 409 => {}
                Err(f) => return Err(f.error),
            }
            let Some((found, etag)) = self.c.read::<InviteDoc>(In::Ops, &key, &key, Fresh::Session).await? else {
                backoff(attempt).await;
                continue;
            };
            if found.booking_id == id {
                return Ok(());
            }
            if self.booking_by_invitation(code_hash).await.is_ok() {
                return Err(StoreError::AlreadyExists);
            }
            return self.c.replace(In::Ops, &key, &key, &doc, &etag).await.map(drop).map_err(|f| f.error);
        }
        Err(busy("invitation lookup kept changing".into()))
    }

    /// The outbox instant of [`Along`]: an owner's bookings live in many partitions, so no batch
    /// can count them; the caller keeps the user's quota ledger (`counts_live_bookings` is false).
    fn only_notify(along: Along) -> StoreResult<Option<DateTime<Utc>>> {
        match along.live_cap {
            None => Ok(along.notify),
            Some(_) => {
                Err(StoreError::Internal("Cosmos DB cannot count an owner's bookings in a booking's write".into()))
            }
        }
    }

    /// The start day of a booking's slot, where its fence lives.
    fn fence_day(booking: &Booking) -> NaiveDate {
        booking.slot.start().date_naive()
    }
}

#[async_trait]
impl Store for CosmosStore {
    #[tracing::instrument(skip_all)]
    async fn ping(&self) -> StoreResult<()> {
        // A point read of an id that never exists: one cheap round trip, 404 is the answer.
        self.c.read::<serde_json::Value>(In::Ops, "ping", "ping", Fresh::Session).await.map(drop)
    }

    #[tracing::instrument(skip_all, fields(room = %room.id))]
    async fn insert_room(&self, room: &Room, claim: Option<&IdempotencyClaim>) -> StoreResult<Created<Room>> {
        let Some(claim) = claim else {
            return self.insert_room_now(room).await.map(Created::New);
        };
        match self.claim_key(claim, None, Some(room.id.get())).await? {
            ClaimStart::Replay { room: Some(id), .. } => {
                let id = RoomId::new(id).map_err(|e| StoreError::Internal(e.0))?;
                Ok(Created::Replayed(self.get_room(id).await?))
            }
            ClaimStart::Replay { .. } => Err(StoreError::Internal("a room claim without a room".into())),
            ClaimStart::Fresh(ticket) => {
                // A taken-over claim keeps the room id the first request planned.
                let planned = ticket.doc.room_id.and_then(|r| RoomId::new(r).ok()).unwrap_or(room.id);
                let room = Room { id: planned, ..room.clone() };
                match self.insert_room_now(&room).await {
                    Ok(made) => {
                        let done = Self::settled(&ticket, None, Some(made.id.get()));
                        if let Err(e) = self.c.upsert(In::Ops, &done.pk, &done.id, &done).await {
                            tracing::warn!(error = %e, "could not settle an idempotency claim; a replay finds the room");
                        }
                        Ok(Created::New(made))
                    }
                    Err(e @ StoreError::Unavailable { .. }) => Err(e),
                    Err(e) => {
                        self.release(&ticket).await;
                        Err(e)
                    }
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(room = %id))]
    async fn get_room(&self, id: RoomId) -> StoreResult<Room> {
        self.room_doc(id).await?.ok_or(StoreError::NotFound)?.0.to_room()
    }

    /// See [`Store::list_rooms`]: the whole fleet, so a fan-out (paged); the free filter reads
    /// the slot's days.
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
        let docs: Vec<RoomDoc> = self.c.query(In::Rooms, q, None, Fresh::Session).await?;
        let busy = match filter.free_during {
            Some(slot) => self.busy_rooms(slot).await?,
            None => Default::default(),
        };
        let mut rooms = docs
            .into_iter()
            .map(|d| d.to_room())
            .filter(|r| r.as_ref().map_or(true, |r| !busy.contains(&r.id)))
            .collect::<StoreResult<Vec<_>>>()?;
        // Sorted here, not in SQL: a two-field ORDER BY needs a composite index in Azure.
        rooms.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(rooms)
    }

    /// See [`Store::delete_room`]. Marks the room as going (so bookings landing meanwhile undo
    /// themselves), checks its days, then removes its documents.
    #[tracing::instrument(skip_all, fields(room = %id))]
    async fn delete_room(&self, id: RoomId, now: DateTime<Utc>) -> StoreResult<()> {
        for attempt in 0..self.tuning.contention_attempts {
            let Some((doc, etag)) = self.room_doc_fresh(id, Fresh::Latest).await? else {
                return Err(StoreError::NotFound);
            };
            let (doc, etag) = if doc.deleting {
                (doc, etag)
            } else {
                let tomb = RoomDoc { deleting: true, ..doc.bumped() };
                match self.c.replace(In::Rooms, &tomb.pk, ROOM_DOC_ID, &tomb, &etag).await {
                    Ok(etag) => (tomb, etag),
                    Err(f) if f.status == 412 || f.unknown_outcome() => {
                        backoff(attempt).await;
                        continue;
                    }
                    Err(f) if f.status == 404 => return Err(StoreError::NotFound),
                    Err(f) => return Err(f.error),
                }
            };
            if let Some(b) = self.booking_after(&doc, now).await? {
                let back = RoomDoc { deleting: false, ..doc.bumped() };
                if let Err(f) = self.c.replace(In::Rooms, &back.pk, ROOM_DOC_ID, &back, &etag).await {
                    tracing::warn!(room = %id, error = %f.error, "a room stays marked as going");
                }
                return Err(StoreError::Conflict(format!("room {id} has a booking until {}", b.slot.end())));
            }
            self.remove_room_days(id).await?;
            self.unlist(id).await;
            return match self.delete_room_doc(id, &etag).await {
                Ok(()) => Ok(()),
                Err(f) if f.status == 404 => Ok(()),
                Err(f) => Err(f.error),
            };
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
            match self.c.replace(In::Rooms, &next.pk, ROOM_DOC_ID, &next, &etag).await {
                Ok(_) => return next.to_room(),
                Err(f) => {
                    if let Some((found, _)) = self.room_doc(id).await?
                        && found.version == next.version
                        && found.password == next.password
                    {
                        return found.to_room();
                    }
                    match f.status {
                        // A booking added a day to the room meanwhile; the compare runs again.
                        412 => backoff(attempt).await,
                        404 => return Err(StoreError::NotFound),
                        _ if f.unknown_outcome() => backoff(attempt).await,
                        _ => return Err(f.error),
                    }
                }
            }
        }
        Err(busy(format!("room {id} kept changing")))
    }

    #[tracing::instrument(skip_all, fields(room = %id))]
    async fn room_bookings(&self, id: RoomId, after: DateTime<Utc>) -> StoreResult<Vec<Booking>> {
        let (doc, _) = self.room_doc(id).await?.ok_or(StoreError::NotFound)?;
        self.bookings_of_room(&doc, after, Fresh::Session).await
    }

    /// See [`Store::book_room`]. The booking gets an id that names its room and start day.
    #[tracing::instrument(skip_all, fields(room = %booking.room_id))]
    async fn book_room_with(
        &self,
        booking: &Booking,
        claim: Option<&IdempotencyClaim>,
        along: Along,
    ) -> StoreResult<Created<Booking>> {
        let notify = Self::only_notify(along)?;
        let ticket = match claim {
            None => None,
            Some(c) => match self.claim_key(c, Some(Self::fence_day(booking)), None).await? {
                ClaimStart::Replay { booking: Some(id), .. } => {
                    return Ok(Created::Replayed(self.booking_entry(id).await?.ok_or(StoreError::NotFound)?));
                }
                ClaimStart::Replay { .. } => {
                    return Err(StoreError::Internal("a booking claim without a booking".into()));
                }
                ClaimStart::Fresh(t) => Some(t),
            },
        };
        let extras = schedule::Extras { notify, ..Default::default() };
        let outcome = self.book_in(booking, booking.room_id, extras, ticket.as_ref()).await;
        let answer = match outcome {
            Ok(Outcome::Booked(b, _)) => Ok(Created::New(b)),
            Ok(Outcome::Conflict(m)) => Err(StoreError::Conflict(m)),
            Ok(Outcome::Fenced) => {
                let t = ticket.as_ref().ok_or_else(|| StoreError::Internal("fenced without a key".into()))?;
                let fence = self.fenced(&t.doc).await?.ok_or(StoreError::NotFound)?;
                return Ok(Created::Replayed(self.booking_entry(fence.booking_id).await?.ok_or(StoreError::NotFound)?));
            }
            Ok(Outcome::OfferGone) => Err(StoreError::Internal("book_room took no offer".into())),
            Err(e) => Err(e),
        };
        if let (Some(t), Err(StoreError::Conflict(_) | StoreError::NotFound)) = (&ticket, &answer) {
            self.release(t).await;
        }
        answer
    }

    /// See [`Store::book_any_room`] and [`finder`]: a bounded search of the directory from the
    /// slot's hint, then the new room. The booking gets an id that names its room and start day.
    #[tracing::instrument(skip_all)]
    async fn book_any_room_with(
        &self,
        booking: &Booking,
        new_room: Option<&Room>,
        claim: Option<&IdempotencyClaim>,
        along: Along,
    ) -> StoreResult<Created<(Booking, Room)>> {
        let notify = Self::only_notify(along)?;
        let ticket = match claim {
            None => None,
            Some(c) => match self.claim_key(c, Some(Self::fence_day(booking)), None).await? {
                ClaimStart::Replay { booking: Some(id), .. } => return self.replayed(id).await,
                ClaimStart::Replay { .. } => {
                    return Err(StoreError::Internal("a booking claim without a booking".into()));
                }
                ClaimStart::Fresh(t) => Some(t),
            },
        };
        let answer = match self.find_or_create(booking, new_room, ticket.as_ref(), notify).await {
            Ok(Found::Booked(b, room)) => Ok(Created::New((b, room))),
            Ok(Found::NoFreeRoom) => Err(StoreError::NoFreeRoom),
            Ok(Found::Fenced) => {
                let t = ticket.as_ref().ok_or_else(|| StoreError::Internal("fenced without a key".into()))?;
                let fence = self.fenced(&t.doc).await?.ok_or(StoreError::NotFound)?;
                return self.replayed(fence.booking_id).await;
            }
            Err(e) => Err(e),
        };
        if let (Some(t), Err(StoreError::NoFreeRoom | StoreError::Conflict(_) | StoreError::AlreadyExists)) =
            (&ticket, &answer)
        {
            self.release(t).await;
        }
        answer
    }

    #[tracing::instrument(skip_all, fields(booking = %id))]
    async fn get_booking(&self, id: Uuid) -> StoreResult<Booking> {
        self.booking_entry(id).await?.ok_or(StoreError::NotFound)
    }

    /// See [`Store::list_bookings`]: one query in the owner's partition.
    #[tracing::instrument(skip_all)]
    async fn list_bookings(&self, owner: &str, during: Option<TimeSlot>) -> StoreResult<Vec<Booking>> {
        let mut q = Query::from("SELECT * FROM c WHERE c.kind = 'owned' AND c.owner = @owner")
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
        let docs: Vec<OwnerDoc> = self.c.query(In::Ops, q, Some(&owner_pk(owner)), Fresh::Session).await?;
        let mut out: Vec<Booking> = docs.into_iter().map(|d| d.booking).collect();
        out.sort_by(|a, b| a.slot.start().cmp(&b.slot.start()).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// See [`Store::bookings_between`]: one single-partition query per day of the window.
    #[tracing::instrument(skip_all)]
    async fn bookings_between(&self, window: TimeSlot) -> StoreResult<Vec<Booking>> {
        self.bookings_in(window).await
    }

    #[tracing::instrument(skip_all, fields(booking = %id))]
    async fn cancel_booking_notify(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Booking> {
        self.cancel(id, now, notify).await
    }

    #[tracing::instrument(skip_all, fields(booking = %id))]
    async fn set_booking_end_notify(
        &self,
        id: Uuid,
        end: DateTime<Utc>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Booking> {
        self.set_end(id, end, notify).await
    }

    #[tracing::instrument(skip_all, fields(booking = %id))]
    async fn set_booking_access(&self, id: Uuid, expected: &Access, new: &Access) -> StoreResult<Booking> {
        let hash_of = |a: &Access| a.invitation.as_ref().map(|i| i.code_hash.clone());
        let (old_hash, new_hash) = (hash_of(expected), hash_of(new));
        if let Some(h) = new_hash.as_deref().filter(|h| Some(*h) != old_hash.as_deref()) {
            if self.booking_entry(id).await?.is_none() {
                return Err(StoreError::NotFound);
            }
            // The lookup first: if the booking write then fails, the lookup leads nowhere.
            self.claim_invitation(h, id).await?;
        }
        let updated = self.set_access(id, expected, new).await?;
        if let Some(old) = old_hash.filter(|h| Some(h) != new_hash.as_ref()).and_then(|h| invite_id(&h)) {
            // Best effort: a stale lookup finds nothing anyway.
            let _ = self.c.delete(In::Ops, &old, &old).await;
        }
        Ok(updated)
    }

    #[tracing::instrument(skip_all)]
    async fn booking_by_invitation(&self, code_hash: &str) -> StoreResult<Booking> {
        let Some(key) = invite_id(code_hash) else { return Err(StoreError::NotFound) };
        let Some((lookup, _)) = self.c.read::<InviteDoc>(In::Ops, &key, &key, Fresh::Session).await? else {
            return Err(StoreError::NotFound);
        };
        match self.booking_entry(lookup.booking_id).await? {
            Some(b) if b.access.invitation.as_ref().is_some_and(|i| i.code_hash == code_hash) => Ok(b),
            _ => Err(StoreError::NotFound),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn purge_idempotency(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.purge_claims(before).await
    }

    /// See [`Store::put_assignment`]: in the day partition of the booking's start (an id this
    /// layout cannot place gets a partition of its own).
    #[tracing::instrument(skip_all, fields(booking = %assignment.booking_id))]
    async fn put_assignment(&self, assignment: &Assignment) -> StoreResult<()> {
        let id = assignment_id(assignment.booking_id);
        let pk = match self.home_of(assignment.booking_id).await? {
            Some((_, day)) => day_pk(day),
            None => id.clone(),
        };
        let doc = AssignmentDoc {
            id,
            pk,
            kind: "assignment".into(),
            booking_id: assignment.booking_id,
            assignment: assignment.clone(),
        };
        self.c.upsert(In::Rooms, &doc.pk, &doc.id, &doc).await
    }

    /// See [`Store::assignments`]: one query per day the bookings start on.
    #[tracing::instrument(skip_all)]
    async fn assignments(&self, booking_ids: &[Uuid]) -> StoreResult<Vec<Assignment>> {
        self.assignments_of(booking_ids).await
    }

    #[tracing::instrument(skip_all, fields(action = %op.action))]
    async fn append_operation(&self, op: &Operation) -> StoreResult<()> {
        let doc = OpDoc {
            id: op.id.to_string(),
            pk: oplog_pk(op.at),
            kind: "op".into(),
            at: ts(op.at),
            op: op.clone(),
            ttl: Some(OPLOG_TTL.num_seconds()),
        };
        match self.c.create(In::Ops, &doc.pk, &doc.id, &doc).await {
            Ok(_) => Ok(()),
            Err(f) => match self.c.read::<OpDoc>(In::Ops, &doc.pk, &doc.id, Fresh::Session).await? {
                Some((found, _)) if found.op == *op => Ok(()),
                Some(_) => Err(StoreError::AlreadyExists),
                None => Err(f.error),
            },
        }
    }

    /// See [`Store::operations`]: one single-partition query per day, for any window.
    #[tracing::instrument(skip_all)]
    async fn operations(&self, window: TimeSlot) -> StoreResult<Vec<Operation>> {
        let mut docs: Vec<OpDoc> = vec![];
        for day in days_of(window) {
            let q = Query::from("SELECT * FROM c WHERE c.kind = 'op' AND c.at >= @from AND c.at < @to")
                .with_parameter("@from", ts(window.start()))
                .map_err(map_err)?
                .with_parameter("@to", ts(window.end()))
                .map_err(map_err)?;
            let pk = format!("oplog-{}", documents::day_key(day));
            docs.extend(self.c.query::<OpDoc>(In::Ops, q, Some(&pk), Fresh::Session).await?);
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
            ttl: Some(MARKER_TTL.num_seconds()),
        };
        match self.c.create(In::Ops, &id, &id, &doc).await {
            Ok(_) => Ok(true),
            Err(f) => match self.c.read::<MarkerDoc>(In::Ops, &id, &id, Fresh::Session).await? {
                // Our own create, whose answer was lost.
                Some((found, _)) => Ok(found.nonce == doc.nonce),
                None => Err(f.error),
            },
        }
    }

    #[tracing::instrument(skip_all)]
    async fn get_state(&self, key: &str) -> StoreResult<Option<serde_json::Value>> {
        let id = format!("state-{}", hex_digest(key));
        Ok(self.c.read::<StateDoc>(In::Ops, &id, &id, Fresh::Session).await?.map(|(d, _)| d.value))
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
        self.c.upsert(In::Ops, &id, &id, &doc).await
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

    /// See [`Store::session_record`]: a point read in the booking's home partition (`room` is
    /// not needed: the booking id names it).
    #[tracing::instrument(skip_all, fields(booking = %booking))]
    async fn session_record(&self, _room: RoomId, booking: Uuid) -> StoreResult<Option<StoredRecord>> {
        self.session_record_impl(booking).await
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
        booking: Uuid,
        id: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<Delivery>> {
        self.claim_delivery_impl(booking, id, now, until).await
    }

    #[tracing::instrument(skip_all)]
    async fn finish_delivery(&self, booking: Uuid, id: &str, attempt: &Attempt) -> StoreResult<Delivery> {
        self.finish_delivery_impl(booking, id, attempt).await
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

    // ----- per-user quota ledgers (see `quotas`) -----

    #[tracing::instrument(skip_all)]
    async fn quota_ledger(&self, user: &str) -> StoreResult<Option<super::StoredLedger>> {
        self.quota_ledger_impl(user).await
    }

    #[tracing::instrument(skip_all)]
    async fn put_quota_ledger(
        &self,
        user: &str,
        ledger: &super::QuotaLedger,
        expected: Option<u64>,
    ) -> StoreResult<u64> {
        self.put_quota_ledger_impl(user, ledger, expected).await
    }

    // ----- keyset pages (see `pages`) -----

    #[tracing::instrument(skip_all)]
    async fn rooms_page(&self, filter: &RoomFilter, after: Option<&RoomKey>, limit: usize) -> StoreResult<Vec<Room>> {
        self.rooms_page_impl(filter, after, limit).await
    }

    #[tracing::instrument(skip_all)]
    async fn bookings_page(
        &self,
        q: &BookingQuery,
        after: Option<&BookingKey>,
        limit: usize,
    ) -> StoreResult<Vec<Booking>> {
        self.bookings_page_impl(q, after, limit).await
    }

    #[tracing::instrument(skip_all)]
    async fn deliveries_page(
        &self,
        status: Option<DeliveryStatus>,
        after: Option<&DeliveryKey>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        self.deliveries_page_impl(status, after, limit).await
    }
}
