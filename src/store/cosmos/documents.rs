//! The documents of the Cosmos DB backend: their shapes, ids and partition keys, the booking id
//! that names where its booking lives, and THE overlap rule ([`overlaps`]), written here once.
//!
//! | container | partition (`pk`) | document (`id`) | holds |
//! |---|---|---|---|
//! | `rooms` | the room id | `room` ([`RoomDoc`]) | the room; the days it has bookings on; `deleting` while it goes |
//! | `rooms` | `day-YYYY-MM-DD` | `g-<room>` ([`DayDoc`]) | one room's bookings starting that day (whole), and the parts of earlier bookings that run into it (spills): the overlap guard |
//! | `rooms` | `day-YYYY-MM-DD` | `vac-…` ([`VacancyDoc`]), `free-…` ([`FreedDoc`]) | find-or-create's hints for one slot: where in the room directory to look, rooms freed by cancellations |
//! | `rooms` | `day-YYYY-MM-DD` | `fence-…` ([`FenceDoc`]) | the booking an `Idempotency-Key` committed (created in the booking's own batch) |
//! | `rooms` | `day-YYYY-MM-DD` | `asg-<booking>` ([`AssignmentDoc`]) | where a booking starting that day is served |
//! | `ops` | `own-<hash of owner>` | `ob-<booking>` ([`OwnerDoc`]), `idem-…` ([`IdemDoc`]) | the owner's bookings (an index, written after each change), the owner's idempotency claims |
//! | `ops` | `rooms-dir` | `dir-<n>` ([`DirChunk`]) | the room directory: rooms with two seats in creation order |
//! | `ops` | the id | `inv-<hash>`, `bk-<id>`, `marker-…`, `state-…` | invitation lookups, lookups of bookings made before this layout, once-only markers, state |
//! | `ops` | `oplog-YYYY-MM-DD` | the operation id ([`OpDoc`]) | the operations log, one partition per UTC day |
//!
//! A booking id ([`mint_booking_id`]) carries its room and the UTC day it starts, so any booking is
//! one point read away ([`locate`]); ids of bookings made before this layout lead through a `bk-`
//! lookup written by the migration.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::super::{Assignment, IDEMPOTENCY_TTL, Operation, StoreError, StoreResult};
use super::sdk::{hex_digest, parse_ts, ts};
use crate::domain::{Access, Booking, Room, RoomId, TimeSlot};

/// The id of the room document inside its partition.
pub(super) const ROOM_DOC_ID: &str = "room";

/// The partition of the room directory.
pub(super) const DIRECTORY_PK: &str = "rooms-dir";

/// Rooms per directory document (about 17 KB of ids).
pub(super) const DIRECTORY_CHUNK: usize = 1000;

/// How long the operations log is kept (`ttl`, when the `ops` container's default TTL is on).
pub(super) const OPLOG_TTL: Duration = Duration::days(400);

/// How long once-only markers are kept: long after any timer occurrence could be replayed.
pub(super) const MARKER_TTL: Duration = Duration::days(90);

// ----- the overlap rule -----

/// Time a booking holds in a day document: its id, start and end.
pub(super) type Held = (Uuid, DateTime<Utc>, DateTime<Utc>);

/// THE overlap rule of this backend: two half-open intervals `[a_start, a_end)` and
/// `[b_start, b_end)` overlap when each starts before the other ends. Back to back is free.
pub(super) fn overlaps(
    a_start: DateTime<Utc>,
    a_end: DateTime<Utc>,
    b_start: DateTime<Utc>,
    b_end: DateTime<Utc>,
) -> bool {
    a_start < b_end && b_start < a_end
}

/// The UTC days a slot touches: from its start's day to the day of its last instant.
pub(super) fn days_of(slot: TimeSlot) -> Vec<NaiveDate> {
    let last = (slot.end() - Duration::nanoseconds(1)).date_naive();
    let mut days = vec![];
    let mut d = slot.start().date_naive();
    while d <= last {
        days.push(d);
        match d.succ_opt() {
            Some(next) => d = next,
            None => break,
        }
    }
    days
}

// ----- ids and partition keys -----

pub(super) fn room_pk(room: RoomId) -> String {
    room.to_string()
}

pub(super) fn day_key(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

pub(super) fn parse_day(s: &str) -> StoreResult<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|e| StoreError::Internal(format!("stored day {s:?}: {e}")))
}

pub(super) fn day_pk(day: NaiveDate) -> String {
    format!("day-{}", day_key(day))
}

pub(super) fn day_doc_id(room: RoomId) -> String {
    format!("g-{room}")
}

/// The owner's partition: a prefix of a hash (owners are user ids of any shape).
pub(super) fn owner_pk(owner: &str) -> String {
    format!("own-{}", &hex_digest(owner)[..16])
}

pub(super) fn owner_doc_id(booking: Uuid) -> String {
    format!("ob-{booking}")
}

pub(super) fn oplog_pk(at: DateTime<Utc>) -> String {
    format!("oplog-{}", day_key(at.date_naive()))
}

pub(super) fn assignment_id(booking: Uuid) -> String {
    format!("asg-{booking}")
}

pub(super) fn lookup_id(booking: Uuid) -> String {
    format!("bk-{booking}")
}

/// The key of one slot in find-or-create's documents: its start and end, exact.
pub(super) fn slot_key(slot: TimeSlot) -> String {
    format!("{}~{}", slot.start().timestamp_nanos_opt().unwrap_or(0), slot.end().timestamp_nanos_opt().unwrap_or(0))
}

pub(super) fn vacancy_id(slot: TimeSlot) -> String {
    format!("vac-{}", slot_key(slot))
}

pub(super) fn freed_id(slot: TimeSlot, room: RoomId) -> String {
    format!("free-{}-{room}", slot_key(slot))
}

pub(super) fn directory_id(n: usize) -> String {
    format!("dir-{n:06}")
}

/// The id (and partition) of an invitation lookup; `None` for a hash that is not lowercase hex
/// (no invitation has such a hash, and ids may not hold every character).
pub(super) fn invite_id(code_hash: &str) -> Option<String> {
    let hex = !code_hash.is_empty()
        && code_hash.len() <= 128
        && code_hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    hex.then(|| format!("inv-{code_hash}"))
}

// ----- booking ids -----

/// Marks the ids this layout mints, so another UUIDv8 is never taken for one.
const ID_TAG: u128 = 0x5a;
const ROOM_BITS: u32 = 53;
const DAY_BITS: u32 = 20;
const RANDOM_BITS: u32 = 41;

/// A booking id that names its room and the UTC day its slot starts (a UUIDv8: 8 tag bits, 53
/// room bits, 20 bits of days since 1970-01-01, 41 random bits). Days before 1970 or after 4840
/// are refused with `Internal`.
pub(super) fn mint_booking_id(room: RoomId, start: DateTime<Utc>) -> StoreResult<Uuid> {
    let days = (start.date_naive() - NaiveDate::default()).num_days();
    if !(0..1 << DAY_BITS).contains(&days) {
        return Err(StoreError::Internal(format!("a booking starting {start} cannot be stored")));
    }
    let random = rand::thread_rng().r#gen::<u128>() & ((1 << RANDOM_BITS) - 1);
    let payload = ID_TAG << (ROOM_BITS + DAY_BITS + RANDOM_BITS)
        | u128::from(room.get()) << (DAY_BITS + RANDOM_BITS)
        | (days as u128) << RANDOM_BITS
        | random;
    let (hi, mid, lo) = (payload >> 74, (payload >> 62) & 0xfff, payload & ((1 << 62) - 1));
    Ok(Uuid::from_u128(hi << 80 | 0x8 << 76 | mid << 64 | 0b10 << 62 | lo))
}

/// The room and start day a minted booking id names; `None` for any other id.
pub(super) fn locate(id: Uuid) -> Option<(RoomId, NaiveDate)> {
    let v = id.as_u128();
    if (v >> 76) & 0xf != 0x8 || (v >> 62) & 0b11 != 0b10 {
        return None;
    }
    let payload = (v >> 80) << 74 | ((v >> 64) & 0xfff) << 62 | (v & ((1 << 62) - 1));
    if payload >> (ROOM_BITS + DAY_BITS + RANDOM_BITS) != ID_TAG {
        return None;
    }
    let room = RoomId::new(((payload >> (DAY_BITS + RANDOM_BITS)) & ((1 << ROOM_BITS) - 1)) as u64).ok()?;
    let days = ((payload >> RANDOM_BITS) & ((1 << DAY_BITS) - 1)) as i64;
    Some((room, NaiveDate::default() + Duration::days(days)))
}

// ----- rooms -----

/// The room document: the room's fields, the days it has bookings on, and `version`, bumped by
/// every change, so its etag guards password changes and deletion.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RoomDoc {
    pub id: String,
    pub pk: String,
    pub kind: String,
    pub room_id: u64,
    pub name: Option<String>,
    pub password: String,
    pub max_participants: u8,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
    /// Set while the room is being deleted: bookings that land meanwhile undo themselves.
    #[serde(default)]
    pub deleting: bool,
    /// The UTC days (`YYYY-MM-DD`, sorted) on which this room has bookings, so its bookings
    /// are point reads away. A day is added before the booking on it is confirmed.
    #[serde(default)]
    pub days: Vec<String>,
}

impl RoomDoc {
    pub fn new(r: &Room) -> Self {
        Self {
            id: ROOM_DOC_ID.into(),
            pk: room_pk(r.id),
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
            days: vec![],
        }
    }

    pub fn bumped(&self) -> Self {
        Self { version: self.version + 1, ..self.clone() }
    }

    pub fn to_room(&self) -> StoreResult<Room> {
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

// ----- the day documents: bookings and the overlap guard -----

/// One room's bookings on one UTC day, in the day's partition: the bookings that start that day
/// (whole) and spills of earlier ones that run into it. Every write that can create an overlap
/// replaces this document with `If-Match`, so it is the per-room-and-day guard; the day's
/// partition is also the scheduler's index (one query per day).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DayDoc {
    pub id: String,
    pub pk: String,
    pub kind: String,
    pub room_id: u64,
    pub day: String,
    #[serde(default)]
    pub bookings: Vec<Entry>,
    #[serde(default)]
    pub spills: Vec<Spill>,
    /// The earliest start and latest end of the live bookings and spills, so a query for a
    /// window skips documents that cannot overlap it.
    #[serde(default)]
    pub first_start: Option<String>,
    #[serde(default)]
    pub last_end: Option<String>,
}

impl DayDoc {
    pub fn empty(room: RoomId, day: NaiveDate) -> Self {
        Self {
            id: day_doc_id(room),
            pk: day_pk(day),
            kind: "day".into(),
            room_id: room.get(),
            day: day_key(day),
            bookings: vec![],
            spills: vec![],
            first_start: None,
            last_end: None,
        }
    }

    pub fn room(&self) -> StoreResult<RoomId> {
        RoomId::new(self.room_id).map_err(|e| StoreError::Internal(e.0))
    }

    /// The live intervals this document holds (bookings and spills) with their booking ids.
    pub fn live_intervals(&self) -> StoreResult<Vec<Held>> {
        let mut out = vec![];
        for e in self.bookings.iter().filter(|e| e.cancelled_at.is_none()) {
            out.push((e.id, parse_ts(&e.start)?, parse_ts(&e.end)?));
        }
        for s in &self.spills {
            out.push((s.id, parse_ts(&s.start)?, parse_ts(&s.end)?));
        }
        Ok(out)
    }

    /// The first live booking or spill overlapping `[start, end)` other than `except`.
    pub fn overlapping(&self, start: DateTime<Utc>, end: DateTime<Utc>, except: Uuid) -> StoreResult<Option<Held>> {
        Ok(self.live_intervals()?.into_iter().find(|(id, s, e)| *id != except && overlaps(*s, *e, start, end)))
    }

    pub fn entry(&self, id: Uuid) -> Option<&Entry> {
        self.bookings.iter().find(|e| e.id == id)
    }

    pub fn entry_mut(&mut self, id: Uuid) -> Option<&mut Entry> {
        self.bookings.iter_mut().find(|e| e.id == id)
    }

    /// Recomputes the window bounds after a change.
    pub fn touch(&mut self) -> StoreResult<()> {
        let live = self.live_intervals()?;
        self.first_start = live.iter().map(|(_, s, _)| *s).min().map(ts);
        self.last_end = live.iter().map(|(_, _, e)| *e).max().map(ts);
        Ok(())
    }
}

/// A booking, whole, in the day document of the day it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Entry {
    pub id: Uuid,
    pub owner: String,
    pub start: String,
    pub end: String,
    pub created_at: String,
    #[serde(default)]
    pub cancelled_at: Option<String>,
    #[serde(default)]
    pub access: Access,
}

impl Entry {
    pub fn new(b: &Booking) -> Self {
        Self {
            id: b.id,
            owner: b.owner.clone(),
            start: ts(b.slot.start()),
            end: ts(b.slot.end()),
            created_at: ts(b.created_at),
            cancelled_at: b.cancelled_at.map(ts),
            access: b.access.clone(),
        }
    }

    pub fn to_booking(&self, room: RoomId) -> StoreResult<Booking> {
        let slot = TimeSlot::new(parse_ts(&self.start)?, parse_ts(&self.end)?)
            .map_err(|e| StoreError::Internal(format!("stored booking {}: {e}", self.id)))?;
        Ok(Booking {
            id: self.id,
            room_id: room,
            owner: self.owner.clone(),
            slot,
            created_at: parse_ts(&self.created_at)?,
            cancelled_at: self.cancelled_at.as_deref().map(parse_ts).transpose()?,
            access: self.access.clone(),
        })
    }
}

/// The part of a live booking that runs into a later day, in that day's document. Written
/// before the booking itself (so it only ever blocks too much, never too little) and removed
/// when the booking is cancelled, shortened, or never commits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Spill {
    pub id: Uuid,
    pub start: String,
    pub end: String,
    /// The day the booking starts (its home document).
    pub home: String,
}

// ----- find-or-create -----

/// Find-or-create's hint for one slot (exact start and end), in the slot's start day: the
/// directory position from which rooms may be free (`cursor`), and positions after it known to
/// be taken. Advisory: written without a guard, never deciding anything (the day documents do).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct VacancyDoc {
    pub id: String,
    pub pk: String,
    pub kind: String,
    pub slot_key: String,
    pub cursor: u64,
    #[serde(default)]
    pub taken: Vec<u64>,
    pub ttl: i64,
}

/// A room freed in one slot by a cancellation, offered first to the next find-or-create of that
/// exact slot. Deleted in the batch of the booking that takes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FreedDoc {
    pub id: String,
    pub pk: String,
    pub kind: String,
    pub slot_key: String,
    pub room_id: u64,
    pub ttl: i64,
}

/// Either document of find-or-create's slot query, told apart by `kind`.
#[derive(Debug, Clone)]
pub(super) enum SlotHint {
    Vacancy(VacancyDoc),
    Freed(FreedDoc),
}

impl SlotHint {
    pub fn from_json(v: serde_json::Value) -> StoreResult<Option<Self>> {
        let bad = |e: serde_json::Error| StoreError::Internal(format!("stored slot hint: {e}"));
        Ok(match v.get("kind").and_then(|k| k.as_str()) {
            Some("vacancy") => Some(Self::Vacancy(serde_json::from_value(v).map_err(bad)?)),
            Some("freed") => Some(Self::Freed(serde_json::from_value(v).map_err(bad)?)),
            _ => None,
        })
    }
}

/// A chunk of the room directory: rooms with two seats in creation order (0 for a deleted room).
/// Positions (chunk × [`DIRECTORY_CHUNK`] + index) never change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DirChunk {
    pub id: String,
    pub pk: String,
    pub kind: String,
    pub n: usize,
    pub rooms: Vec<u64>,
}

/// Seconds from `now` until `until`, at least a day: a `ttl` for a document about a slot.
pub(super) fn ttl_until(until: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (until - now).num_seconds().max(24 * 3600)
}

// ----- idempotency -----

/// An idempotency claim, in the user's partition: who holds a key, for which request, and
/// (once done) what it made. The booking itself is fenced by a [`FenceDoc`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct IdemDoc {
    pub id: String,
    pub pk: String,
    pub kind: String,
    pub scope: String,
    pub user: String,
    pub fingerprint: String,
    /// When the current holder took the key (its lease starts here).
    pub at: String,
    /// The current holder.
    pub nonce: String,
    /// Set when the key was (re)started as absent; the fence of this epoch decides.
    pub epoch: String,
    pub done: bool,
    /// Bookings: the UTC day the slot starts, where the fence lives.
    #[serde(default)]
    pub day: Option<String>,
    #[serde(default)]
    pub booking_id: Option<Uuid>,
    #[serde(default)]
    pub room_id: Option<u64>,
    /// Seconds until Cosmos drops the claim (when the container's default TTL is on).
    pub ttl: i64,
}

impl IdemDoc {
    pub fn ttl() -> i64 {
        IDEMPOTENCY_TTL.num_seconds()
    }
}

/// The booking one epoch of an idempotency key committed. Created in the booking's own batch, so
/// two holders of the key (a stalled first request and the retry that took the key over) cannot
/// both commit: the second create fails and its batch with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FenceDoc {
    pub id: String,
    pub pk: String,
    pub kind: String,
    pub booking_id: Uuid,
    pub room_id: u64,
    pub ttl: i64,
}

// ----- indexes and small documents -----

/// A booking as its owner's list shows it, in the owner's partition; written after each change
/// of the booking, never deciding anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OwnerDoc {
    pub id: String,
    pub pk: String,
    pub kind: String,
    pub owner: String,
    pub start: String,
    pub end: String,
    pub booking: Booking,
}

impl OwnerDoc {
    pub fn new(b: &Booking) -> Self {
        Self {
            id: owner_doc_id(b.id),
            pk: owner_pk(&b.owner),
            kind: "owned".into(),
            owner: b.owner.clone(),
            start: ts(b.slot.start()),
            end: ts(b.slot.end()),
            booking: b.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AssignmentDoc {
    pub id: String,
    pub pk: String,
    pub kind: String,
    pub booking_id: Uuid,
    pub assignment: Assignment,
}

/// Where a booking made before this layout lives (written by the migration).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LookupDoc {
    pub id: String,
    pub pk: String,
    pub kind: String,
    pub room_id: u64,
    pub day: String,
}

/// The lookup from an invitation's code hash to its booking. It never decides anything: the
/// booking's own `access` says whether the invitation is current, so a stale lookup finds nothing.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InviteDoc {
    pub id: String,
    pub pk: String,
    pub kind: String,
    pub booking_id: Uuid,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OpDoc {
    pub id: String,
    pub pk: String,
    pub kind: String,
    pub at: String,
    pub op: Operation,
    #[serde(default)]
    pub ttl: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MarkerDoc {
    pub id: String,
    pub pk: String,
    pub kind: String,
    pub key: String,
    pub at: String,
    pub nonce: String,
    #[serde(default)]
    pub ttl: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StateDoc {
    pub id: String,
    pub pk: String,
    pub kind: String,
    pub key: String,
    pub value: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_minted_booking_id_names_its_room_and_start_day() {
        let room = RoomId::new((1 << 53) - 1).unwrap();
        let start = Utc.with_ymd_and_hms(2031, 12, 31, 23, 30, 0).unwrap();
        let id = mint_booking_id(room, start).unwrap();
        assert_eq!(id.get_version_num(), 8);
        assert_eq!(locate(id), Some((room, start.date_naive())));
        assert_ne!(mint_booking_id(room, start).unwrap(), id, "random bits differ");
        let small = RoomId::new(1).unwrap();
        assert_eq!(locate(mint_booking_id(small, start).unwrap()), Some((small, start.date_naive())));
        // Ids minted elsewhere lead nowhere.
        assert_eq!(locate(Uuid::new_v4()), None);
        assert_eq!(locate(Booking::new_id(start)), None);
        assert_eq!(locate(Uuid::from_u128(0x8 << 76 | 0b10 << 62)), None);
        assert!(mint_booking_id(room, Utc.with_ymd_and_hms(1969, 12, 31, 0, 0, 0).unwrap()).is_err());
    }

    #[test]
    fn a_slot_touches_the_days_it_has_instants_in() {
        let at = |d, h, m| Utc.with_ymd_and_hms(2031, 1, d, h, m, 0).unwrap();
        let day = |d| NaiveDate::from_ymd_opt(2031, 1, d).unwrap();
        assert_eq!(days_of(TimeSlot::new(at(1, 10, 0), at(1, 11, 0)).unwrap()), vec![day(1)]);
        // Ending at midnight: the next day is not touched (half-open).
        assert_eq!(days_of(TimeSlot::new(at(1, 23, 0), at(2, 0, 0)).unwrap()), vec![day(1)]);
        assert_eq!(days_of(TimeSlot::new(at(1, 23, 0), at(2, 0, 30)).unwrap()), vec![day(1), day(2)]);
        assert_eq!(days_of(TimeSlot::new(at(1, 0, 0), at(4, 0, 0)).unwrap()), vec![day(1), day(2), day(3)]);
    }

    #[test]
    fn back_to_back_does_not_overlap() {
        let at = |h| Utc.with_ymd_and_hms(2031, 1, 1, h, 0, 0).unwrap();
        assert!(!overlaps(at(1), at(2), at(2), at(3)));
        assert!(overlaps(at(1), at(3), at(2), at(4)));
        assert!(overlaps(at(2), at(3), at(1), at(4)));
    }
}
