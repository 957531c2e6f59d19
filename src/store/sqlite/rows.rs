//! Rows of the embedded store: how values are encoded, how rows become domain values, and the
//! statements several operations share — among them THE overlap rule ([`OVERLAPS`]), written
//! here once and used by every query that asks which bookings overlap a slot, and find-or-create's
//! search ([`first_free_shared_room`]) with the vacancy hints that keep it short.
//!
//! Instants are INTEGER nanoseconds since the Unix epoch: exact round trips, comparable in SQL.
//! The price is the range, 1677-09-21 to 2262-04-11; instants outside it are refused with
//! [`StoreError::Internal`] (the API bounds booking dates long before that).

use chrono::{DateTime, Utc};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, named_params, params};
use uuid::Uuid;

use super::super::{IDEMPOTENCY_TTL, IdempotencyClaim, LiveCap, OpAction, Operation, StoreError, StoreResult};
use super::engine;
use crate::domain::{Access, Booking, Room, RoomId, TimeSlot, format_instant};

/// THE overlap rule of this backend: booking row `b` overlaps the half-open slot `[:start, :end)`
/// when it starts before `:end` and ends after `:start`. `:floor` is `:start` minus the longest
/// booking ever stored (see [`start_floor`]): no booking that starts at or before it can still be
/// running at `:start`, so the index range on `slot_start` holds only the bookings near the slot,
/// never a room's whole past or future. Liveness is a separate condition, [`LIVE`].
pub(super) const OVERLAPS: &str = "b.slot_start > :floor AND b.slot_start < :end AND b.slot_end > :start";

/// Booking row `b` is not cancelled. Spelled as in the partial indexes, so they apply.
pub(super) const LIVE: &str = "b.cancelled_at IS NULL";

/// The end of time for open-ended overlap queries ("ends after t" is "overlaps [t, FOREVER)").
pub(super) const FOREVER: i64 = i64::MAX;

pub(super) fn ns(t: DateTime<Utc>) -> StoreResult<i64> {
    t.timestamp_nanos_opt()
        .ok_or_else(|| StoreError::Internal(format!("instant {} is outside the storable range", format_instant(t))))
}

pub(super) fn instant(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(n)
}

pub(super) fn room_key(id: RoomId) -> i64 {
    // Room ids are below 2^53, so they always fit.
    id.get() as i64
}

pub(super) fn corrupt(col: usize, ty: Type, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, ty, Box::new(e))
}

pub(super) const ROOM_COLUMNS: &str = "id, name, password, max_participants, metadata, created_at, updated_at";

pub(super) fn room_from_row(r: &Row<'_>) -> rusqlite::Result<Room> {
    let id: i64 = r.get(0)?;
    let id = RoomId::new(id as u64).map_err(|e| corrupt(0, Type::Integer, e))?;
    let max_participants: i64 = r.get(3)?;
    let max_participants = u8::try_from(max_participants).map_err(|e| corrupt(3, Type::Integer, e))?;
    let metadata: String = r.get(4)?;
    let metadata = serde_json::from_str(&metadata).map_err(|e| corrupt(4, Type::Text, e))?;
    Ok(Room {
        id,
        name: r.get(1)?,
        password: r.get(2)?,
        max_participants,
        metadata,
        created_at: instant(r.get(5)?),
        updated_at: instant(r.get(6)?),
    })
}

/// The booking columns, for tables aliased `b`.
pub(super) const BOOKING_COLUMNS: &str =
    "b.id, b.room_id, b.owner, b.slot_start, b.slot_end, b.created_at, b.cancelled_at, b.access";

pub(super) fn booking_from_row(r: &Row<'_>) -> rusqlite::Result<Booking> {
    let id: String = r.get(0)?;
    let id = Uuid::parse_str(&id).map_err(|e| corrupt(0, Type::Text, e))?;
    let room: i64 = r.get(1)?;
    let room_id = RoomId::new(room as u64).map_err(|e| corrupt(1, Type::Integer, e))?;
    let slot = TimeSlot::new(instant(r.get(3)?), instant(r.get(4)?)).map_err(|e| corrupt(3, Type::Integer, e))?;
    Ok(Booking {
        id,
        room_id,
        owner: r.get(2)?,
        slot,
        created_at: instant(r.get(5)?),
        cancelled_at: r.get::<_, Option<i64>>(6)?.map(instant),
        access: {
            let access: String = r.get(7)?;
            serde_json::from_str(&access).map_err(|e| corrupt(7, Type::Text, e))?
        },
    })
}

/// The access column's JSON and the current invitation's code hash.
pub(super) fn access_columns(access: &Access) -> StoreResult<(String, Option<String>)> {
    let json = serde_json::to_string(access).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok((json, access.invitation.as_ref().map(|i| i.code_hash.clone())))
}

pub(super) fn operation_from_row(r: &Row<'_>) -> rusqlite::Result<Operation> {
    let id: String = r.get(0)?;
    let booking_id = r
        .get::<_, Option<String>>(5)?
        .map(|s| Uuid::parse_str(&s))
        .transpose()
        .map_err(|e| corrupt(5, Type::Text, e))?;
    let room_id = r
        .get::<_, Option<i64>>(6)?
        .map(|v| RoomId::new(v as u64))
        .transpose()
        .map_err(|e| corrupt(6, Type::Integer, e))?;
    let duration_ms: i64 = r.get(8)?;
    Ok(Operation {
        id: Uuid::parse_str(&id).map_err(|e| corrupt(0, Type::Text, e))?,
        at: instant(r.get(1)?),
        actor: r.get(2)?,
        action: OpAction::from_name(&r.get::<_, String>(3)?),
        host: r.get(4)?,
        booking_id,
        room_id,
        result: r.get(7)?,
        duration_ms: u64::try_from(duration_ms).map_err(|e| corrupt(8, Type::Integer, e))?,
    })
}

pub(super) fn collect<T>(rows: impl Iterator<Item = rusqlite::Result<T>>) -> StoreResult<Vec<T>> {
    rows.collect::<rusqlite::Result<Vec<T>>>().map_err(Into::into)
}

// ----- rooms and bookings -----

pub(super) fn load_room(tx: &Connection, id: RoomId) -> StoreResult<Option<Room>> {
    let mut st = tx.prepare_cached(&format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE id = ?1"))?;
    Ok(st.query_row([room_key(id)], room_from_row).optional()?)
}

pub(super) fn load_booking(tx: &Connection, id: Uuid) -> StoreResult<Option<Booking>> {
    let mut st = tx.prepare_cached(&format!("SELECT {BOOKING_COLUMNS} FROM bookings b WHERE b.id = ?1"))?;
    Ok(st.query_row([id.to_string()], booking_from_row).optional()?)
}

pub(super) fn room_exists(tx: &Connection, id: RoomId) -> StoreResult<bool> {
    let mut st = tx.prepare_cached("SELECT 1 FROM rooms WHERE id = ?1")?;
    Ok(st.exists([room_key(id)])?)
}

/// The longest booking ever stored, in nanoseconds: no booking starts more than this before it ends.
fn longest_booking(tx: &Connection) -> StoreResult<i64> {
    Ok(tx.prepare_cached("SELECT longest_booking_ns FROM limits WHERE id = 1")?.query_row([], |r| r.get(0))?)
}

/// The `:floor` of [`OVERLAPS`] for a slot starting at `t`.
pub(super) fn start_floor(tx: &Connection, t: i64) -> StoreResult<i64> {
    Ok(t.saturating_sub(longest_booking(tx)?))
}

/// How many live bookings owner `?1` holds at `?3` (`?2`: its start floor), counted to `?4`.
pub(super) const LIVE_COUNT: &str = "SELECT count(*) FROM (SELECT 1 FROM bookings b
     WHERE b.owner = ?1 AND b.slot_start > ?2 AND b.slot_end > ?3 AND b.cancelled_at IS NULL LIMIT ?4)";

/// [`LiveCap`]: `LimitReached` when `owner` already holds `cap.limit` live bookings (neither
/// cancelled nor ended at `cap.now`). One range of the owner's index (`bookings_by_owner`, which
/// carries each booking's end and cancellation), from one longest booking before `now`, read no
/// further than `limit` matches: the leaf the booking's own entry is about to go into.
pub(super) fn check_cap(tx: &Connection, owner: &str, cap: Option<LiveCap>) -> StoreResult<()> {
    let Some(cap) = cap else { return Ok(()) };
    let now = ns(cap.now)?;
    let held: u32 = tx
        .prepare_cached(LIVE_COUNT)?
        .query_row(params![owner, start_floor(tx, now)?, now, cap.limit], |r| r.get(0))?;
    if held >= cap.limit { Err(StoreError::LimitReached) } else { Ok(()) }
}

/// Raises the longest-booking bound to cover `[start, end)`. The bound only grows, in the same
/// transaction as the booking that grows it, so every process's overlap query sees one that holds.
pub(super) fn cover_duration(tx: &Connection, start: i64, end: i64) -> StoreResult<()> {
    tx.prepare_cached("UPDATE limits SET longest_booking_ns = ?1 WHERE id = 1 AND longest_booking_ns < ?1")?
        .execute([end.saturating_sub(start)])?;
    Ok(())
}

/// The first live booking of `room` overlapping `[start, end)`, other than `except`.
pub(super) fn overlapping(
    tx: &Connection,
    room: RoomId,
    start: i64,
    end: i64,
    except: Option<Uuid>,
) -> StoreResult<Option<Booking>> {
    let mut st = tx.prepare_cached(&format!(
        "SELECT {BOOKING_COLUMNS} FROM bookings b
         WHERE b.room_id = :room AND {LIVE} AND {OVERLAPS} AND b.id IS NOT :except
         ORDER BY b.slot_start LIMIT 1"
    ))?;
    let floor = start_floor(tx, start)?;
    let except = except.map(|u| u.to_string());
    Ok(st
        .query_row(
            named_params! {":room": room_key(room), ":start": start, ":end": end, ":floor": floor, ":except": except},
            booking_from_row,
        )
        .optional()?)
}

pub(super) fn overlap_conflict(room: RoomId, taken: &Booking) -> StoreError {
    StoreError::Conflict(format!(
        "room {room} is already booked from {} to {}",
        format_instant(taken.slot.start()),
        format_instant(taken.slot.end())
    ))
}

pub(super) fn insert_booking_row(tx: &Connection, b: &Booking, room: RoomId) -> StoreResult<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO bookings (id, room_id, owner, slot_start, slot_end, created_at, cancelled_at, access, invite_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let (access, invite_hash) = access_columns(&b.access)?;
    st.execute(params![
        b.id.to_string(),
        room_key(room),
        b.owner,
        ns(b.slot.start())?,
        ns(b.slot.end())?,
        ns(b.created_at)?,
        b.cancelled_at.map(ns).transpose()?,
        access,
        invite_hash,
    ])?;
    cover_duration(tx, ns(b.slot.start())?, ns(b.slot.end())?)
}

/// Inserts `room` with the next creation-order number (never reused, so a room created after a
/// vacancy hint was written is never below it).
pub(super) fn insert_room_row(tx: &Connection, room: &Room) -> StoreResult<()> {
    let seq: i64 = tx
        .prepare_cached("UPDATE limits SET next_room_seq = next_room_seq + 1 WHERE id = 1 RETURNING next_room_seq - 1")?
        .query_row([], |r| r.get(0))?;
    let metadata = serde_json::to_string(&room.metadata).map_err(|e| StoreError::Internal(e.to_string()))?;
    let mut st =
        tx.prepare_cached(&format!("INSERT INTO rooms ({ROOM_COLUMNS}, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"))?;
    st.execute(params![
        room_key(room.id),
        room.name,
        room.password,
        room.max_participants,
        metadata,
        ns(room.created_at)?,
        ns(room.updated_at)?,
        seq,
    ])?;
    Ok(())
}

// ----- find-or-create -----

/// A free room find-or-create found, and how it walked there.
pub(super) struct FreeRoom {
    pub(super) room: Room,
    /// The room's creation-order number.
    pub(super) seq: i64,
    /// The slot's vacancy hint when the walk began: every room before it was taken.
    pub(super) hint: i64,
}

/// How many taken rooms a walk may pass before the booking it ends in moves the slot's vacancy
/// hint ([`taken_through`]). A hint moved by every booking wrote a page of `vacancy` for each slot
/// of a batch: about one WAL frame in eight under sustained load. Moved every [`HINT_STRIDE`]
/// rooms, it costs a walk at most that many more overlap probes (short index reads; most walks
/// skip them, see [`Walks`]), and the hint is still a bound that holds: it lags, it never passes
/// a free room.
pub(super) const HINT_STRIDE: i64 = 8;

/// The room with two seats that is free during `[start, end)` and comes first in creation order.
/// The walk starts at the slot's vacancy hint, or past it where this writer's last walk for the
/// slot ended ([`Walks`]): every room before it is known to be taken in that slot, so the walk
/// does not grow with the rooms already booked there.
pub(super) fn first_free_shared_room(tx: &Connection, start: i64, end: i64) -> StoreResult<Option<FreeRoom>> {
    let hint: i64 = tx
        .prepare_cached("SELECT next_seq FROM vacancy WHERE slot_start = ?1 AND slot_end = ?2")?
        .query_row([start, end], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let from = Walks::resume(start, end, hint);
    let floor = start_floor(tx, start)?;
    let mut st = tx.prepare_cached(&format!(
        "SELECT {ROOM_COLUMNS}, r.seq FROM rooms r
         WHERE r.max_participants >= 2 AND r.seq >= :from
           AND NOT EXISTS (SELECT 1 FROM bookings b WHERE b.room_id = r.id AND {LIVE} AND {OVERLAPS})
         ORDER BY r.seq LIMIT 1"
    ))?;
    let found = st
        .query_row(named_params! {":from": from, ":start": start, ":end": end, ":floor": floor}, |r| {
            Ok(FreeRoom { room: room_from_row(r)?, seq: r.get(7)?, hint })
        })
        .optional()?;
    Ok(found)
}

/// Where this writer thread's find-or-create walks ended, per slot: where the next walk may
/// start, past the slot's vacancy hint (which moves only every [`HINT_STRIDE`] rooms, so that a
/// booking does not write its slot's row). Only the thread that owns the process's write
/// connection walks, so the memory is that thread's. A remembered walk says the rooms from the
/// vacancy hint to the one it booked were taken, which stays true while the database is what
/// this thread's own committed writes made it: each walk is remembered with the writer's epoch
/// ([`engine::writer_epoch`]), which changes when another connection commits (a cancel in
/// another process) or a write of this thread rolls back (the booking it walked for is not
/// stored); a cancel or a shortening in this process forgets every walk ([`Walks::forget`]).
/// A walk remembered under another epoch, or from another vacancy hint, is not used: the walk
/// starts at the hint.
pub(super) struct Walks;

/// A remembered walk: the slot's vacancy hint when it was read, the creation-order number after
/// the room the walk booked, and the writer's epoch then.
#[derive(Clone, Copy)]
struct Walked {
    hint: i64,
    next: i64,
    epoch: u64,
}

/// Slots remembered at most (about 48 bytes each); the memory starts over when full.
const WALKED_SLOTS: usize = 8192;

thread_local! {
    static WALKED: std::cell::RefCell<std::collections::HashMap<(i64, i64), Walked>> = Default::default();
}

impl Walks {
    /// Where a walk of slot `[start, end)` whose vacancy hint reads `hint` may start.
    fn resume(start: i64, end: i64, hint: i64) -> i64 {
        let epoch = engine::writer_epoch();
        WALKED.with_borrow(|w| {
            w.get(&(start, end)).filter(|w| w.hint == hint && w.epoch == epoch).map_or(hint, |w| w.next)
        })
    }

    /// Remembers that a walk of `[start, end)` from vacancy hint `hint` booked room `seq`.
    pub(super) fn booked(start: i64, end: i64, hint: i64, seq: i64) {
        engine::remembering();
        WALKED.with_borrow_mut(|w| {
            if w.len() >= WALKED_SLOTS {
                w.clear();
            }
            w.insert((start, end), Walked { hint, next: seq + 1, epoch: engine::writer_epoch() });
        });
    }

    /// Forgets the walk of `[start, end)`: its vacancy hint moved, the next walk starts there.
    pub(super) fn moved(start: i64, end: i64) {
        WALKED.with_borrow_mut(|w| w.remove(&(start, end)));
    }

    /// Forgets every walk: a room this process freed may lie behind any of them.
    pub(super) fn forget() {
        WALKED.with_borrow_mut(|w| w.clear());
    }
}

/// The creation-order number of a room.
pub(super) fn room_seq(tx: &Connection, id: RoomId) -> StoreResult<i64> {
    Ok(tx.prepare_cached("SELECT seq FROM rooms WHERE id = ?1")?.query_row([room_key(id)], |r| r.get(0))?)
}

/// Records that every room with two seats up to and including `seq` is taken in `[start, end)`
/// (find-or-create walked them, and has just booked `seq`).
pub(super) fn taken_through(tx: &Connection, start: i64, end: i64, seq: i64) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO vacancy (slot_start, slot_end, next_seq) VALUES (?1, ?2, ?3)
         ON CONFLICT (slot_start, slot_end) DO UPDATE SET next_seq = max(next_seq, excluded.next_seq)",
    )?
    .execute([start, end, seq + 1])?;
    Ok(())
}

/// Lowers the vacancy hints a booking of `room` no longer holds: `[start, end)` of it is free
/// again (cancelled, or cut off by a shorter end). Vacancy rows are slots as long as bookings,
/// so [`OVERLAPS`] finds them within the same bounded index range.
pub(super) fn freed(tx: &Connection, room: RoomId, start: i64, end: i64) -> StoreResult<()> {
    if start >= end {
        return Ok(());
    }
    Walks::forget();
    let seq = room_seq(tx, room)?;
    let floor = start_floor(tx, start)?;
    tx.prepare_cached(&format!("UPDATE vacancy AS b SET next_seq = :seq WHERE b.next_seq > :seq AND {OVERLAPS}"))?
        .execute(named_params! {":seq": seq, ":start": start, ":end": end, ":floor": floor})?;
    Ok(())
}

// ----- idempotency keys -----

/// What an idempotency key says about the request presenting it.
pub(super) enum Prior {
    /// Unknown or expired: go ahead and record it with the write.
    Absent,
    /// Seen with the same request: replay this resource id.
    Replay(String),
}

/// Looks the claim up inside the write transaction, so two requests with one key serialize.
pub(super) fn check_claim(tx: &Connection, claim: Option<&IdempotencyClaim>) -> StoreResult<Prior> {
    let Some(c) = claim else { return Ok(Prior::Absent) };
    let mut st = tx.prepare_cached(
        "SELECT fingerprint, resource_id, created_at FROM idempotency WHERE scope = ?1 AND user = ?2 AND key = ?3",
    )?;
    let row: Option<(String, String, i64)> =
        st.query_row(params![c.scope, c.user, c.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?;
    match row {
        Some((fingerprint, resource, at)) if c.now - instant(at) < IDEMPOTENCY_TTL => {
            if fingerprint == c.fingerprint {
                Ok(Prior::Replay(resource))
            } else {
                Err(StoreError::IdempotencyMismatch)
            }
        }
        _ => Ok(Prior::Absent),
    }
}

/// Records (or replaces an expired) key in the same transaction as the entity it created.
pub(super) fn record_claim(tx: &Connection, claim: Option<&IdempotencyClaim>, resource: &str) -> StoreResult<()> {
    let Some(c) = claim else { return Ok(()) };
    let mut st = tx.prepare_cached(
        "INSERT INTO idempotency (scope, user, key, fingerprint, resource_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (scope, user, key) DO UPDATE SET
           fingerprint = excluded.fingerprint, resource_id = excluded.resource_id, created_at = excluded.created_at",
    )?;
    st.execute(params![c.scope, c.user, c.key, c.fingerprint, resource, ns(c.now)?])?;
    Ok(())
}

/// The room a key names, or `None` when it is gone (the key then counts as absent).
pub(super) fn replayed_room(tx: &Connection, resource: &str) -> StoreResult<Option<Room>> {
    let id: RoomId =
        resource.parse().map_err(|_| StoreError::Internal(format!("idempotency record names room {resource:?}")))?;
    load_room(tx, id)
}

/// The booking a key names, or `None` when it is gone (the key then counts as absent).
pub(super) fn replayed_booking(tx: &Connection, resource: &str) -> StoreResult<Option<Booking>> {
    let id = Uuid::parse_str(resource)
        .map_err(|_| StoreError::Internal(format!("idempotency record names booking {resource:?}")))?;
    load_booking(tx, id)
}
