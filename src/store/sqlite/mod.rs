//! The embedded SQLite backend of [`super::Store`] (`STORE=sqlite`, the default).
//!
//! | file | holds |
//! |---|---|
//! | [`engine`] | connections, the writer thread (group commit), the reader threads, checkpoints, errors |
//! | [`schema`] | the tables and their migrations |
//! | [`rows`] | encodings, row mapping, the overlap rule, find-or-create's search, idempotency keys |
//! | [`client_events`] | the web client's events: the limit check and the inserts in one write |
//! | [`records`] | session records, session room lookups, the webhook outbox (written inside the booking writes) |
//! | this file | [`SqliteStore`]: each [`Store`] operation as one read or one write of the engine |
//!
//! Every check and the write it guards (overlap, idempotency key, future bookings) run in one
//! write transaction under SQLite's write lock, so the contract holds across threads and across
//! processes sharing the file.

mod client_events;
mod engine;
mod page_cache;
mod pages;
mod quotas;
mod records;
mod rows;
mod schema;
mod wal_batch;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, ToSql, named_params, params};
use uuid::Uuid;

use super::{
    Along, Assignment, Attempt, ClientEvent, ClientEventLimits, Created, Delivery, DeliveryStatus, IdempotencyClaim,
    Operation, RoomFilter, SessionRoom, Store, StoreError, StoreResult, StoredRecord,
};
use super::{BookingKey, BookingQuery, DeliveryKey, RoomKey};
use crate::domain::{
    Access, Booking, Room, RoomId, TimeSlot, events::OutboxEvent, format_instant, session::SessionRecord,
};
use engine::Engine;
use rows::{
    BOOKING_COLUMNS, FOREVER, HINT_STRIDE, LIVE, OVERLAPS, Prior, ROOM_COLUMNS, Walks, access_columns,
    booking_from_row, check_cap, check_claim, collect, corrupt, cover_duration, first_free_shared_room, freed,
    insert_booking_row, insert_room_row, instant, load_booking, load_room, ns, operation_from_row, overlap_conflict,
    overlapping, record_claim, replayed_booking, replayed_room, room_exists, room_from_row, room_key, start_floor,
    taken_through,
};

pub use engine::BUSY_TIMEOUT;

/// The embedded store: one SQLite file in WAL mode. Cheap to clone (shared connections).
#[derive(Clone)]
pub struct SqliteStore {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.engine.path()).finish()
    }
}

impl SqliteStore {
    /// Opens (creating the folder and file on first start) the database at `path`, switches it to
    /// WAL, and applies missing schema migrations atomically. Blocks: call it at start-up, not on
    /// a busy runtime thread. Fails with `Unavailable` when the file cannot be opened or stays
    /// locked, `Internal` when it holds a schema newer than this build knows.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let engine = Engine::open(path)?;
        tracing::info!(path = %path.display(), "sqlite store open");
        Ok(SqliteStore { engine: Arc::new(engine) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.engine.path()
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> StoreResult<T> + Send + 'static,
    {
        self.engine.write(f).await
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> StoreResult<T> + Send + 'static,
    {
        self.engine.read(f).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read(|tx| {
            tx.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// See [`Store::insert_room`].
    async fn insert_room(&self, room: &Room, claim: Option<&IdempotencyClaim>) -> StoreResult<Created<Room>> {
        let room = room.clone();
        let claim = claim.cloned();
        self.write(move |tx| {
            if let Prior::Replay(resource) = check_claim(tx, claim.as_ref())?
                && let Some(room) = replayed_room(tx, &resource)?
            {
                return Ok(Created::Replayed(room));
            }
            insert_room_row(tx, &room)?;
            record_claim(tx, claim.as_ref(), &room.id.to_string())?;
            Ok(Created::New(room))
        })
        .await
    }

    async fn get_room(&self, id: RoomId) -> StoreResult<Room> {
        self.read(move |tx| load_room(tx, id)?.ok_or(StoreError::NotFound)).await
    }

    /// See [`Store::list_rooms`]. `created_before` and `created_after` are strict bounds;
    /// `max_participants` must match exactly.
    async fn list_rooms(&self, filter: &RoomFilter) -> StoreResult<Vec<Room>> {
        let mut sql = format!("SELECT {ROOM_COLUMNS} FROM rooms r WHERE 1");
        let mut args: Vec<(&'static str, i64)> = Vec::new();
        if let Some(m) = filter.max_participants {
            sql += " AND r.max_participants = :mp";
            args.push((":mp", m.into()));
        }
        if let Some(t) = filter.created_before {
            sql += " AND r.created_at < :before";
            args.push((":before", ns(t)?));
        }
        if let Some(t) = filter.created_after {
            sql += " AND r.created_at > :after";
            args.push((":after", ns(t)?));
        }
        let free = filter.free_during.map(|s| Ok::<_, StoreError>((ns(s.start())?, ns(s.end())?))).transpose()?;
        if free.is_some() {
            sql +=
                &format!(" AND NOT EXISTS (SELECT 1 FROM bookings b WHERE b.room_id = r.id AND {LIVE} AND {OVERLAPS})");
        }
        sql += " ORDER BY r.created_at, r.id";
        self.read(move |tx| {
            let mut args = args;
            if let Some((start, end)) = free {
                // The index floor is only known inside the snapshot.
                args.extend([(":start", start), (":end", end), (":floor", start_floor(tx, start)?)]);
            }
            let named: Vec<(&str, &dyn ToSql)> = args.iter().map(|(k, v)| (*k, v as &dyn ToSql)).collect();
            let mut st = tx.prepare_cached(&sql)?;
            collect(st.query_map(named.as_slice(), room_from_row)?)
        })
        .await
    }

    async fn delete_room(&self, id: RoomId, now: DateTime<Utc>) -> StoreResult<()> {
        let now = ns(now)?;
        self.write(move |tx| {
            if !room_exists(tx, id)? {
                return Err(StoreError::NotFound);
            }
            // A booking still running at `now` or later overlaps [now, forever).
            let floor = start_floor(tx, now)?;
            let mut st = tx.prepare_cached(&format!(
                "SELECT b.slot_end FROM bookings b WHERE b.room_id = :room AND {LIVE} AND {OVERLAPS}
                 ORDER BY b.slot_start DESC LIMIT 1"
            ))?;
            let args = named_params! {":room": room_key(id), ":start": now, ":end": FOREVER, ":floor": floor};
            if let Some(until) = st.query_row(args, |r| r.get::<_, i64>(0)).optional()? {
                return Err(StoreError::Conflict(format!(
                    "room {id} has a booking until {}",
                    format_instant(instant(until))
                )));
            }
            // Assignments carry no foreign key (the scheduler may write one for a booking it
            // read a moment ago); clear those of the bookings that cascade away.
            tx.prepare_cached(
                "DELETE FROM assignments WHERE booking_id IN (SELECT id FROM bookings WHERE room_id = ?1)",
            )?
            .execute([room_key(id)])?;
            tx.prepare_cached("DELETE FROM rooms WHERE id = ?1")?.execute([room_key(id)])?;
            Ok(())
        })
        .await
    }

    async fn set_room_password(&self, id: RoomId, expected: &str, new: &str, now: DateTime<Utc>) -> StoreResult<Room> {
        let (expected, new, now) = (expected.to_owned(), new.to_owned(), ns(now)?);
        self.write(move |tx| {
            let changed = tx
                .prepare_cached("UPDATE rooms SET password = ?3, updated_at = ?4 WHERE id = ?1 AND password = ?2")?
                .execute(params![room_key(id), expected, new, now])?;
            match load_room(tx, id)? {
                None => Err(StoreError::NotFound),
                Some(_) if changed == 0 => Err(StoreError::PreconditionFailed),
                Some(room) => Ok(room),
            }
        })
        .await
    }

    async fn room_bookings(&self, id: RoomId, after: DateTime<Utc>) -> StoreResult<Vec<Booking>> {
        let after = ns(after)?;
        self.read(move |tx| {
            if !room_exists(tx, id)? {
                return Err(StoreError::NotFound);
            }
            let mut st = tx.prepare_cached(&format!(
                "SELECT {BOOKING_COLUMNS} FROM bookings b WHERE b.room_id = :room AND {LIVE} AND {OVERLAPS}
                 ORDER BY b.slot_start, b.id"
            ))?;
            let floor = start_floor(tx, after)?;
            let args = named_params! {":room": room_key(id), ":start": after, ":end": FOREVER, ":floor": floor};
            collect(st.query_map(args, booking_from_row)?)
        })
        .await
    }

    fn counts_live_bookings(&self) -> bool {
        true
    }

    /// See [`Store::book_room`]. A booking id already taken answers `AlreadyExists`.
    async fn book_room_with(
        &self,
        booking: &Booking,
        claim: Option<&IdempotencyClaim>,
        along: Along,
    ) -> StoreResult<Created<Booking>> {
        let booking = booking.clone();
        let claim = claim.cloned();
        let (start, end) = (ns(booking.slot.start())?, ns(booking.slot.end())?);
        self.write(move |tx| {
            if let Prior::Replay(resource) = check_claim(tx, claim.as_ref())?
                && let Some(b) = replayed_booking(tx, &resource)?
            {
                return Ok(Created::Replayed(b));
            }
            if !room_exists(tx, booking.room_id)? {
                return Err(StoreError::NotFound);
            }
            check_cap(tx, &booking.owner, along.live_cap)?;
            if let Some(taken) = overlapping(tx, booking.room_id, start, end, None)? {
                return Err(overlap_conflict(booking.room_id, &taken));
            }
            insert_booking_row(tx, &booking, booking.room_id)?;
            record_claim(tx, claim.as_ref(), &booking.id.to_string())?;
            if let Some(at) = along.notify {
                records::insert_outbox(tx, &[OutboxEvent::booking_created(&booking)], at)?;
            }
            Ok(Created::New(booking))
        })
        .await
    }

    /// See [`Store::book_any_room`]. Picks the free room that was created first, walking from the
    /// slot's vacancy hint (see [`rows::first_free_shared_room`]).
    async fn book_any_room_with(
        &self,
        booking: &Booking,
        new_room: Option<&Room>,
        claim: Option<&IdempotencyClaim>,
        along: Along,
    ) -> StoreResult<Created<(Booking, Room)>> {
        let mut booking = booking.clone();
        let new_room = new_room.cloned();
        let claim = claim.cloned();
        let (start, end) = (ns(booking.slot.start())?, ns(booking.slot.end())?);
        self.write(move |tx| {
            if let Prior::Replay(resource) = check_claim(tx, claim.as_ref())?
                && let Some(b) = replayed_booking(tx, &resource)?
                && let Some(room) = load_room(tx, b.room_id)?
            {
                return Ok(Created::Replayed((b, room)));
            }
            check_cap(tx, &booking.owner, along.live_cap)?;
            let room = match (first_free_shared_room(tx, start, end)?, new_room) {
                (Some(free), _) => {
                    // The hint moves once the walk passed HINT_STRIDE taken rooms (see there).
                    if free.seq + 1 - free.hint >= HINT_STRIDE {
                        taken_through(tx, start, end, free.seq)?;
                        Walks::moved(start, end);
                    } else {
                        Walks::booked(start, end, free.hint, free.seq);
                    }
                    free.room
                }
                (None, Some(room)) => {
                    Walks::moved(start, end);
                    insert_room_row(tx, &room)?;
                    // Every room before it is taken in this slot, and now it is too.
                    if room.max_participants >= 2 {
                        taken_through(tx, start, end, rows::room_seq(tx, room.id)?)?;
                    }
                    room
                }
                (None, None) => return Err(StoreError::NoFreeRoom),
            };
            booking.room_id = room.id;
            insert_booking_row(tx, &booking, room.id)?;
            record_claim(tx, claim.as_ref(), &booking.id.to_string())?;
            if let Some(at) = along.notify {
                records::insert_outbox(tx, &[OutboxEvent::booking_created(&booking)], at)?;
            }
            Ok(Created::New((booking, room)))
        })
        .await
    }

    async fn get_booking(&self, id: Uuid) -> StoreResult<Booking> {
        self.read(move |tx| load_booking(tx, id)?.ok_or(StoreError::NotFound)).await
    }

    async fn list_bookings(&self, owner: &str, during: Option<TimeSlot>) -> StoreResult<Vec<Booking>> {
        let owner = owner.to_owned();
        let window = during.map(|s| Ok::<_, StoreError>((ns(s.start())?, ns(s.end())?))).transpose()?;
        self.read(move |tx| match window {
            None => {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT {BOOKING_COLUMNS} FROM bookings b WHERE b.owner = ?1 ORDER BY b.slot_start, b.id"
                ))?;
                collect(st.query_map([owner], booking_from_row)?)
            }
            Some((start, end)) => {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT {BOOKING_COLUMNS} FROM bookings b WHERE b.owner = :owner AND {OVERLAPS}
                     ORDER BY b.slot_start, b.id"
                ))?;
                let floor = start_floor(tx, start)?;
                let args = named_params! {":owner": owner, ":start": start, ":end": end, ":floor": floor};
                collect(st.query_map(args, booking_from_row)?)
            }
        })
        .await
    }

    async fn bookings_between(&self, window: TimeSlot) -> StoreResult<Vec<Booking>> {
        let (start, end) = (ns(window.start())?, ns(window.end())?);
        self.read(move |tx| {
            let mut st = tx.prepare_cached(&format!(
                "SELECT {BOOKING_COLUMNS} FROM bookings b WHERE {LIVE} AND {OVERLAPS} ORDER BY b.slot_start, b.id"
            ))?;
            let floor = start_floor(tx, start)?;
            collect(st.query_map(named_params! {":start": start, ":end": end, ":floor": floor}, booking_from_row)?)
        })
        .await
    }

    async fn cancel_booking_notify(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Booking> {
        let at = now;
        let now = ns(now)?;
        self.write(move |tx| {
            let changed = tx
                .prepare_cached("UPDATE bookings SET cancelled_at = ?2 WHERE id = ?1 AND cancelled_at IS NULL")?
                .execute(params![id.to_string(), now])?;
            let b = load_booking(tx, id)?.ok_or(StoreError::NotFound)?;
            if changed == 1 {
                freed(tx, b.room_id, ns(b.slot.start())?, ns(b.slot.end())?)?;
                if let Some(enqueued) = notify {
                    records::insert_outbox(tx, &[OutboxEvent::booking_cancelled(&b, at)], enqueued)?;
                }
            }
            Ok(b)
        })
        .await
    }

    /// See [`Store::set_booking_end`]. An `end` not after the booking's start answers `Conflict`
    /// too (the API validates it first).
    async fn set_booking_end_notify(
        &self,
        id: Uuid,
        end: DateTime<Utc>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Booking> {
        self.write(move |tx| {
            let mut b = load_booking(tx, id)?.ok_or(StoreError::NotFound)?;
            if b.cancelled_at.is_some() {
                return Err(StoreError::Conflict(format!("booking {id} is cancelled")));
            }
            let slot = TimeSlot::new(b.slot.start(), end)
                .map_err(|_| StoreError::Conflict(format!("booking {id} cannot end before it starts")))?;
            let (start_ns, end_ns) = (ns(slot.start())?, ns(slot.end())?);
            if let Some(taken) = overlapping(tx, b.room_id, start_ns, end_ns, Some(id))? {
                return Err(overlap_conflict(b.room_id, &taken));
            }
            tx.prepare_cached("UPDATE bookings SET slot_end = ?2 WHERE id = ?1")?
                .execute(params![id.to_string(), end_ns])?;
            cover_duration(tx, start_ns, end_ns)?;
            freed(tx, b.room_id, end_ns, ns(b.slot.end())?)?;
            let previous_end = b.slot.end();
            b.slot = slot;
            if let Some(at) = notify.filter(|_| previous_end != end) {
                records::insert_outbox(tx, &[OutboxEvent::booking_extended(&b, previous_end, at)], at)?;
            }
            Ok(b)
        })
        .await
    }

    async fn set_booking_access(&self, id: Uuid, expected: &Access, new: &Access) -> StoreResult<Booking> {
        let (expected, new) = (expected.clone(), new.clone());
        self.write(move |tx| {
            let mut b = load_booking(tx, id)?.ok_or(StoreError::NotFound)?;
            if b.access != expected {
                return Err(StoreError::PreconditionFailed);
            }
            let (access, invite_hash) = access_columns(&new)?;
            tx.prepare_cached("UPDATE bookings SET access = ?2, invite_hash = ?3 WHERE id = ?1")?.execute(params![
                id.to_string(),
                access,
                invite_hash
            ])?;
            b.access = new;
            Ok(b)
        })
        .await
    }

    async fn booking_by_invitation(&self, code_hash: &str) -> StoreResult<Booking> {
        let hash = code_hash.to_owned();
        self.read(move |tx| {
            let mut st =
                tx.prepare_cached(&format!("SELECT {BOOKING_COLUMNS} FROM bookings b WHERE b.invite_hash = ?1"))?;
            st.query_row([hash], booking_from_row).optional()?.ok_or(StoreError::NotFound)
        })
        .await
    }

    /// See [`Store::purge_idempotency`]. Also forgets the vacancy hints of slots that ended
    /// before `before`: nobody books them any more.
    async fn purge_idempotency(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let before = ns(before)?;
        self.write(move |tx| {
            let n = tx.prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?.execute([before])?;
            Walks::forget();
            // `slot_start < ?1` bounds the key's range: a slot that ended started before.
            tx.prepare_cached("DELETE FROM vacancy WHERE slot_start < ?1 AND slot_end < ?1")?.execute([before])?;
            Ok(n as u64)
        })
        .await
    }

    async fn put_assignment(&self, a: &Assignment) -> StoreResult<()> {
        let (booking, host) = (a.booking_id.to_string(), a.host.clone());
        let ready = a.ready_at.map(ns).transpose()?;
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO assignments (booking_id, host, ready_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (booking_id) DO UPDATE SET host = excluded.host, ready_at = excluded.ready_at",
            )?
            .execute(params![booking, host, ready])?;
            Ok(())
        })
        .await
    }

    /// See [`Store::assignments`]. Answers in the order of `booking_ids`.
    async fn assignments(&self, booking_ids: &[Uuid]) -> StoreResult<Vec<Assignment>> {
        let ids = booking_ids.to_vec();
        self.read(move |tx| {
            let mut st = tx.prepare_cached("SELECT host, ready_at FROM assignments WHERE booking_id = ?1")?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let row = st
                    .query_row([id.to_string()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)))
                    .optional()?;
                if let Some((host, ready)) = row {
                    out.push(Assignment { booking_id: id, host, ready_at: ready.map(instant) });
                }
            }
            Ok(out)
        })
        .await
    }

    /// See [`Store::append_operation`]. An id logged before answers `AlreadyExists`.
    async fn append_operation(&self, op: &Operation) -> StoreResult<()> {
        let op = op.clone();
        let at = ns(op.at)?;
        let duration = i64::try_from(op.duration_ms).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO operations (id, at, actor, action, host, booking_id, room_id, result, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                op.id.to_string(),
                at,
                op.actor,
                op.action.as_str(),
                op.host,
                op.booking_id.map(|u| u.to_string()),
                op.room_id.map(room_key),
                op.result,
                duration,
            ])?;
            Ok(())
        })
        .await
    }

    /// See [`Store::operations`]. Entries at the same instant come in the order they were appended.
    async fn operations(&self, window: TimeSlot) -> StoreResult<Vec<Operation>> {
        let (start, end) = (ns(window.start())?, ns(window.end())?);
        self.read(move |tx| {
            let mut st = tx.prepare_cached(
                "SELECT id, at, actor, action, host, booking_id, room_id, result, duration_ms FROM operations
                 WHERE at >= ?1 AND at < ?2 ORDER BY at, seq",
            )?;
            collect(st.query_map(params![start, end], operation_from_row)?)
        })
        .await
    }

    async fn claim_marker(&self, key: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let (key, now) = (key.to_owned(), ns(now)?);
        self.write(move |tx| {
            let n = tx
                .prepare_cached("INSERT OR IGNORE INTO markers (key, at) VALUES (?1, ?2)")?
                .execute(params![key, now])?;
            Ok(n == 1)
        })
        .await
    }

    async fn get_state(&self, key: &str) -> StoreResult<Option<serde_json::Value>> {
        let key = key.to_owned();
        self.read(move |tx| {
            let text: Option<String> = tx
                .prepare_cached("SELECT value FROM state WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?;
            text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Internal(format!("corrupt state: {e}"))))
                .transpose()
        })
        .await
    }

    async fn put_state(&self, key: &str, value: &serde_json::Value) -> StoreResult<()> {
        let key = key.to_owned();
        let text = value.to_string();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, text])?;
            Ok(())
        })
        .await
    }

    async fn append_client_events(
        &self,
        booking_id: Uuid,
        events: &[ClientEvent],
        limits: ClientEventLimits,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        client_events::append(self, booking_id, events, limits, now).await
    }

    async fn client_events(&self, booking_id: Uuid) -> StoreResult<Vec<ClientEvent>> {
        client_events::list(self, booking_id).await
    }

    // ----- session records and the webhook outbox (see `records`) -----

    async fn put_session_room(&self, room: &SessionRoom) -> StoreResult<()> {
        self.put_session_room_impl(room).await
    }

    async fn session_room(&self, janus_room: u64) -> StoreResult<Option<SessionRoom>> {
        self.session_room_impl(janus_room).await
    }

    async fn session_record(&self, _room: RoomId, booking: Uuid) -> StoreResult<Option<StoredRecord>> {
        self.session_record_impl(booking).await
    }

    async fn session_records(&self, bookings: &[Uuid]) -> StoreResult<Vec<StoredRecord>> {
        self.session_records_impl(bookings).await
    }

    async fn put_session_record(
        &self,
        record: &SessionRecord,
        expected: Option<u64>,
        outbox: &[OutboxEvent],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        self.put_session_record_impl(record, expected, outbox, now).await
    }

    async fn due_deliveries(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Delivery>> {
        self.due_deliveries_impl(now, limit).await
    }

    async fn claim_delivery(
        &self,
        _booking: Uuid,
        id: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<Delivery>> {
        self.claim_delivery_impl(id, now, until).await
    }

    async fn finish_delivery(&self, _booking: Uuid, id: &str, attempt: &Attempt) -> StoreResult<Delivery> {
        self.finish_delivery_impl(id, attempt).await
    }

    async fn deliveries(&self, status: Option<DeliveryStatus>, limit: usize) -> StoreResult<Vec<Delivery>> {
        self.deliveries_impl(status, limit).await
    }

    async fn redeliver(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Delivery> {
        self.redeliver_impl(id, now).await
    }

    async fn purge_deliveries(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.purge_deliveries_impl(before).await
    }

    // ----- per-user quota ledgers (see `quotas`) -----

    async fn quota_ledger(&self, user: &str) -> StoreResult<Option<super::StoredLedger>> {
        quotas::ledger(self, user).await
    }

    async fn put_quota_ledger(
        &self,
        user: &str,
        ledger: &super::QuotaLedger,
        expected: Option<u64>,
    ) -> StoreResult<u64> {
        quotas::put(self, user, ledger, expected).await
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
}

/// A database path in a folder of its own, for unit tests.
#[cfg(test)]
fn temp_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("suroga-sqlite-unit-{}", Uuid::new_v4())).join("store.db")
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, TransactionBehavior};

    use super::*;
    use crate::store::LiveCap;

    #[test]
    fn open_creates_the_folder_and_a_wal_database_at_the_latest_schema() {
        let path = temp_path();
        let store = SqliteStore::open(&path).unwrap();
        assert!(path.exists());
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(version, schema::MIGRATIONS.len() as i64);
        drop((store, conn));
        // A second open (a restart) keeps the data and applies nothing twice.
        SqliteStore::open(&path).unwrap();
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// A file written before migration 10 (the owner's index without each booking's end and
    /// cancellation) opens at the latest schema, and the bookings it holds count against a cap.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bookings_from_before_the_owners_covering_index_count_after_the_upgrade() {
        let path = temp_path();
        let now = Utc::now();
        let booking = |room: RoomId, from: i64| Booking {
            id: Booking::new_id(now),
            room_id: room,
            owner: "ana".into(),
            slot: TimeSlot::new(now + chrono::Duration::hours(from), now + chrono::Duration::hours(from + 1)).unwrap(),
            created_at: now,
            cancelled_at: None,
            access: Default::default(),
        };
        let store = SqliteStore::open(&path).unwrap();
        let room = store.insert_room(&Room::generate(None, 2, Default::default(), now), None).await.unwrap();
        let room = room.into_inner().id;
        for from in [1, 3] {
            store.book_room(&booking(room, from), None).await.unwrap();
        }
        drop(store);
        // The file as the build before wrote it.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP INDEX bookings_by_owner;
             CREATE INDEX bookings_owner_page ON bookings (owner, slot_start, id);
             PRAGMA user_version = 9;",
        )
        .unwrap();
        drop(conn);
        let store = SqliteStore::open(&path).unwrap();
        let cap = |limit| Along { notify: None, live_cap: Some(LiveCap { limit, now }) };
        let third = booking(room, 5);
        let refused = store.book_room_with(&third, None, cap(2)).await;
        assert!(matches!(refused, Err(StoreError::LimitReached)), "{refused:?}");
        assert!(store.book_room_with(&third, None, cap(3)).await.unwrap().is_new());
        drop(store);
        let conn = Connection::open(&path).unwrap();
        let owner_indexes = "SELECT group_concat(name) FROM sqlite_schema
                             WHERE name LIKE 'bookings_owner%' OR name = 'bookings_by_owner'";
        let indexes: String = conn.query_row(owner_indexes, [], |r| r.get(0)).unwrap();
        assert_eq!(indexes, "bookings_by_owner", "the upgrade swapped the owner's index");
        drop(conn);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// A new store with `rooms` rooms of two seats, and bookings for ana of one slot an hour ahead.
    struct OneSlot {
        path: std::path::PathBuf,
        store: SqliteStore,
        now: DateTime<Utc>,
        /// The rooms, in creation order.
        ids: Vec<RoomId>,
        /// A new booking of the slot (its room left to find-or-create).
        booking: Box<dyn Fn() -> Booking>,
    }

    impl OneSlot {
        async fn with_rooms(rooms: usize) -> Self {
            let path = temp_path();
            let store = SqliteStore::open(&path).unwrap();
            let now = Utc::now();
            let slot = TimeSlot::new(now + chrono::Duration::hours(1), now + chrono::Duration::hours(2)).unwrap();
            let mut ids = Vec::new();
            for _ in 0..rooms {
                let room = store.insert_room(&Room::generate(None, 2, Default::default(), now), None).await.unwrap();
                ids.push(room.into_inner().id);
            }
            let booking = Box::new(move || Booking {
                id: Booking::new_id(now),
                room_id: RoomId::random(),
                owner: "ana".into(),
                slot,
                created_at: now,
                cancelled_at: None,
                access: Default::default(),
            });
            OneSlot { path, store, now, ids, booking }
        }
    }

    /// The slot's vacancy hint moves once a walk passed HINT_STRIDE taken rooms, not with every
    /// booking, and a lagging hint never costs a free room: find-or-create still takes the
    /// first free room in creation order, a freed room included.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_vacancy_hint_moves_every_stride_and_never_passes_a_free_room() {
        let rooms = 2 * HINT_STRIDE as usize + 3;
        let OneSlot { path, store, now, ids, booking } = OneSlot::with_rooms(rooms).await;
        let hint = || -> Option<i64> {
            let conn = Connection::open(&path).unwrap();
            conn.query_row("SELECT next_seq FROM vacancy", [], |r| r.get(0)).optional().unwrap()
        };
        let mut booked = Vec::new();
        for (n, &id) in ids.iter().enumerate() {
            let (b, room) = store.book_any_room(&booking(), None, None).await.unwrap().into_inner();
            assert_eq!(room.id, id, "booking {n} takes the first free room");
            booked.push(b);
            // Moved by the 8th and the 16th booking (each ends a walk of HINT_STRIDE rooms), to 8 and 16.
            let moved = (n as i64 + 1) / HINT_STRIDE * HINT_STRIDE;
            assert_eq!(hint(), (moved > 0).then_some(moved), "after booking {n}");
        }
        // Every room is taken; a room freed below the hint is found again.
        let err = store.book_any_room(&booking(), None, None).await.unwrap_err();
        assert!(matches!(err, StoreError::NoFreeRoom), "{err:?}");
        store.cancel_booking(booked[3].id, now).await.unwrap();
        assert_eq!(hint(), Some(3), "the cancellation lowered the hint");
        let (_, room) = store.book_any_room(&booking(), None, None).await.unwrap().into_inner();
        assert_eq!(room.id, ids[3]);
        // A new room when none is free moves the hint past every room.
        let extra = Room::generate(None, 2, Default::default(), now);
        let (_, room) = store.book_any_room(&booking(), Some(&extra), None).await.unwrap().into_inner();
        assert_eq!(room.id, extra.id);
        assert_eq!(hint(), Some(rooms as i64 + 1));
        drop(store);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// A walk may start where this writer's last walk of the slot ended, past the vacancy hint,
    /// only while the database is what this writer made it: a room freed there by another
    /// process is the next booking's room.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_room_freed_by_another_process_is_the_next_walks_room() {
        let OneSlot { path, store, now, ids, booking } = OneSlot::with_rooms(2 * HINT_STRIDE as usize).await;
        let mut booked = Vec::new();
        for &id in &ids[..4] {
            let (b, room) = store.book_any_room(&booking(), None, None).await.unwrap().into_inner();
            assert_eq!(room.id, id);
            booked.push(b);
        }
        // Another process cancels room 1's booking: this writer's memory of the walk says rooms
        // 0 to 3 are taken, and the vacancy hint (0, no row yet) has nothing to lower.
        let other = Connection::open(&path).unwrap();
        other.busy_timeout(engine::BUSY_TIMEOUT).unwrap();
        let cancelled = other
            .execute(
                "UPDATE bookings SET cancelled_at = ?1 WHERE id = ?2",
                params![ns(now).unwrap(), booked[1].id.to_string()],
            )
            .unwrap();
        assert_eq!(cancelled, 1);
        let (_, room) = store.book_any_room(&booking(), None, None).await.unwrap().into_inner();
        assert_eq!(room.id, ids[1]);
        let (_, room) = store.book_any_room(&booking(), None, None).await.unwrap().into_inner();
        assert_eq!(room.id, ids[4]);
        drop(other);
        drop(store);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// A booking that walked to a room and then rolled back leaves the room free, and the next
    /// walk finds it: the writer does not remember a walk whose booking was not stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_walk_whose_booking_rolled_back_is_not_remembered() {
        let OneSlot { path, store, ids, booking, .. } = OneSlot::with_rooms(2 * HINT_STRIDE as usize).await;
        let (first, room) = store.book_any_room(&booking(), None, None).await.unwrap().into_inner();
        assert_eq!(room.id, ids[0]);
        // The same booking id again: the walk reaches room 1, then the insert fails and the
        // write rolls back.
        let again = Booking { id: first.id, ..booking() };
        assert!(store.book_any_room(&again, None, None).await.is_err());
        let (_, room) = store.book_any_room(&booking(), None, None).await.unwrap().into_inner();
        assert_eq!(room.id, ids[1]);
        drop(store);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn the_bundled_sqlite_keeps_no_memory_statistics() {
        let conn = Connection::open_in_memory().unwrap();
        let options: Vec<String> = conn
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "LIBSQLITE3_FLAGS did not reach SQLite: {options:?}"
        );
    }

    #[test]
    fn a_database_from_a_newer_build_is_refused() {
        let path = temp_path();
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(SqliteStore::open(&path), Err(StoreError::Internal(_))));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn instants_round_trip_to_the_nanosecond() {
        let t = DateTime::parse_from_rfc3339("2199-12-31T23:59:59.123456789Z").unwrap().with_timezone(&Utc);
        assert_eq!(instant(ns(t).unwrap()), t);
        let far = DateTime::parse_from_rfc3339("2300-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        assert!(matches!(ns(far), Err(StoreError::Internal(_))));
    }

    /// The overlap probes must stay short index ranges, not scans of a room's history.
    #[test]
    fn overlap_probes_search_a_bounded_index_range() {
        let path = temp_path();
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let plan = |sql: &str| -> String {
            let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let args = vec![1i64; st.parameter_count()];
            let rows = st.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let probe = "USING INDEX bookings_room_live_start (room_id=? AND slot_start>? AND slot_start<?)";
        let one_room = plan(&format!(
            "SELECT {BOOKING_COLUMNS} FROM bookings b
             WHERE b.room_id = :room AND {LIVE} AND {OVERLAPS} AND b.id IS NOT :except
             ORDER BY b.slot_start LIMIT 1"
        ));
        assert!(one_room.contains(probe), "{one_room}");
        // Find-or-create walks the rooms with two seats from the hint, in creation order.
        let any_room = plan(&format!(
            "SELECT {ROOM_COLUMNS}, r.seq FROM rooms r
             WHERE r.max_participants >= 2 AND r.seq >= :hint
               AND NOT EXISTS (SELECT 1 FROM bookings b WHERE b.room_id = r.id AND {LIVE} AND {OVERLAPS})
             ORDER BY r.seq LIMIT 1"
        ));
        assert!(any_room.contains("USING INDEX rooms_shared_seq (seq>?)"), "{any_room}");
        assert!(any_room.contains(probe), "{any_room}");
        let scheduler = plan(&format!("SELECT {BOOKING_COLUMNS} FROM bookings b WHERE {LIVE} AND {OVERLAPS}"));
        assert!(scheduler.contains("USING INDEX bookings_live_start (slot_start>? AND slot_start<?)"), "{scheduler}");
        let hints = plan(&format!("UPDATE vacancy AS b SET next_seq = :seq WHERE b.next_seq > :seq AND {OVERLAPS}"));
        assert!(hints.contains("USING PRIMARY KEY (slot_start>? AND slot_start<?)"), "{hints}");
        let purge = plan("DELETE FROM vacancy WHERE slot_start < ?1 AND slot_end < ?1");
        assert!(purge.contains("USING PRIMARY KEY (slot_start<?)"), "{purge}");
        // The live bookings quota counts one owner's bookings from the index alone.
        let cap = plan(rows::LIVE_COUNT);
        assert!(cap.contains("USING COVERING INDEX bookings_by_owner (owner=? AND slot_start>?)"), "{cap}");
        // A page of an owner's bookings after a key is one range of the owner's index; only
        // the bookings of one start are ordered by id apart.
        let page = plan(&format!(
            "SELECT {BOOKING_COLUMNS} FROM bookings b WHERE b.owner = ?1
             AND (slot_start > ?2 OR (slot_start = ?2 AND id > ?3)) ORDER BY slot_start, id LIMIT ?4"
        ));
        assert!(page.contains("USING INDEX bookings_by_owner (owner=? AND slot_start>?)"), "{page}");
        assert!(page.contains("USE TEMP B-TREE FOR LAST TERM OF ORDER BY"), "{page}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// A read that panics answers `Internal` and takes no reader thread with it: afterwards as
    /// many reads as there are threads still run at once, each in its own snapshot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_read_is_internal_and_the_reader_threads_stay() {
        let path = temp_path();
        let store = SqliteStore::open(&path).unwrap();
        for _ in 0..8 {
            let err = store.read(|_: &rusqlite::Connection| -> StoreResult<()> { panic!("a bug in a read") }).await;
            assert!(matches!(err, Err(StoreError::Internal(_))), "{err:?}");
        }
        // Every thread holds a read open until all have started: all of them are alive.
        let started = Arc::new(std::sync::Barrier::new(engine::READERS));
        let reads = (0..engine::READERS).map(|_| {
            let started = started.clone();
            store.read(move |conn| {
                started.wait();
                Ok(conn.query_row("SELECT count(*) FROM rooms", [], |r| r.get::<_, i64>(0))?)
            })
        });
        let all = tokio::time::timeout(std::time::Duration::from_secs(10), futures::future::join_all(reads));
        for counted in all.await.expect("every reader thread answers") {
            assert_eq!(counted.unwrap(), 0);
        }
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_lock_held_past_the_busy_timeout_is_unavailable() {
        let path = temp_path();
        let store = SqliteStore::open(&path).unwrap();
        // Another process holding the write lock, simulated by a foreign connection.
        let mut other = Connection::open(&path).unwrap();
        let tx = other.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
        let started = std::time::Instant::now();
        let err = store.claim_marker("busy", Utc::now()).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { retry_after: Some(_), .. }), "{err:?}");
        assert!(started.elapsed() >= BUSY_TIMEOUT);
        tx.rollback().unwrap();
        assert!(store.claim_marker("busy", Utc::now()).await.unwrap());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
