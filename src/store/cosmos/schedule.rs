//! Bookings on Cosmos DB: how one is placed in a room atomically with the overlap check, found
//! by its id in one read, changed under `If-Match`, and listed by day, by room and by owner.
//!
//! # The guard
//! A room's bookings live in one [`DayDoc`] per room and UTC day, in the day's partition. To place
//! a booking, its day documents are read, checked with [`overlaps`](super::documents::overlaps),
//! and written back with `If-Match` (or created, which fails if another writer created it first):
//! two writers of one room and day can never both pass the check. No query and no quorum read is
//! on this path; a stale read only makes the guarded write fail and start again.
//!
//! A booking that runs past midnight also spills into the next days' documents. The spills are
//! written first and the booking's own day last, in one batch with the rest of its work (the
//! fence of its idempotency key, find-or-create's hints): that batch is the commit. A spill whose
//! booking never committed only blocks time that was free, and is removed by its writer.
//!
//! # After the commit
//! - The room is read (a quorum read) to answer with it, and to meet a deletion half way: a room
//!   being deleted marks itself before it checks its days, a booking writes before it reads the
//!   room, so one of the two always sees the other; a booking that finds its room going undoes
//!   itself. A day the room had no booking on yet is added to the room's list of days.
//! - The owner's index document is written (with the idempotency claim, in one batch).

use std::collections::{BTreeMap, HashMap, HashSet};

use azure_data_cosmos::{Query, TransactionalBatch};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures::future::join_all;
use uuid::Uuid;

use super::super::{StoreError, StoreResult};
use super::CosmosStore;
use super::claims::Ticket;
use super::documents::{
    DayDoc, Entry, FenceDoc, FreedDoc, LookupDoc, OwnerDoc, ROOM_DOC_ID, RoomDoc, Spill, VacancyDoc, day_doc_id,
    day_key, day_pk, days_of, freed_id, locate, lookup_id, parse_day, room_pk, slot_key, ttl_until,
};
use super::records::{outbox_doc, outbox_id};
use super::sdk::{Fresh, In, backoff, busy, delete_if, map_err, parse_ts, replace_if, ts};
use crate::domain::{Booking, Room, RoomId, TimeSlot, events::OutboxEvent, format_instant};

/// A day document as read, with its etag (`None` when it does not exist yet).
pub(super) type Read = (NaiveDate, Option<(DayDoc, String)>);

/// What else a booking's commit batch carries.
#[derive(Default)]
pub(super) struct Extras {
    /// Find-or-create's new hint for the slot (advisory, written unguarded).
    pub vacancy: Option<VacancyDoc>,
    /// A freed-room offer this booking takes (deleted: if it is gone, another booking took it).
    pub freed: Option<String>,
    /// The fence of the booking's idempotency key.
    pub fence: Option<FenceDoc>,
    /// When set, the booking's `booking.created` event enters the outbox in the commit, enqueued then.
    pub notify: Option<DateTime<Utc>>,
}

/// How booking a room ended.
// Returned once per try and matched at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum Outcome {
    Booked(Booking, Room),
    /// A live booking of the room overlaps: the message names the room.
    Conflict(String),
    /// Another holder of the idempotency key committed first.
    Fenced,
    /// The freed-room offer was taken by another booking.
    OfferGone,
}

/// How placing a booking ended.
pub(super) enum Placed {
    Done,
    /// A live booking of the room overlaps: the message names the room.
    Conflict(String),
    /// Another holder of the idempotency key committed first.
    Fenced,
    /// The freed-room offer was taken by another booking.
    OfferGone,
}

impl CosmosStore {
    // ----- reading -----

    /// The day documents of `room` on `days`, read at once.
    pub(super) async fn read_days(&self, room: RoomId, days: &[NaiveDate], fresh: Fresh) -> StoreResult<Vec<Read>> {
        let id = day_doc_id(room);
        let reads = days.iter().map(|d| {
            let pk = day_pk(*d);
            let id = id.clone();
            async move { self.c.read::<DayDoc>(In::Rooms, &pk, &id, fresh).await }
        });
        let docs = join_all(reads).await.into_iter().collect::<StoreResult<Vec<_>>>()?;
        Ok(days.iter().copied().zip(docs).collect())
    }

    /// Where booking `id` lives: its room and start day. Ids minted by this layout say it
    /// themselves; older ids lead through a lookup document the migration wrote.
    pub(super) async fn home_of(&self, id: Uuid) -> StoreResult<Option<(RoomId, NaiveDate)>> {
        if let Some(home) = locate(id) {
            return Ok(Some(home));
        }
        let key = lookup_id(id);
        let Some((lookup, _)) = self.c.read::<LookupDoc>(In::Ops, &key, &key, Fresh::Session).await? else {
            return Ok(None);
        };
        let room = RoomId::new(lookup.room_id).map_err(|e| StoreError::Internal(e.0))?;
        Ok(Some((room, parse_day(&lookup.day)?)))
    }

    /// Booking `id` and the day document that holds it (with its etag), or `None`.
    pub(super) async fn booking_home(&self, id: Uuid) -> StoreResult<Option<(Booking, DayDoc, String)>> {
        let Some((room, day)) = self.home_of(id).await? else { return Ok(None) };
        let Some((doc, etag)) =
            self.c.read::<DayDoc>(In::Rooms, &day_pk(day), &day_doc_id(room), Fresh::Session).await?
        else {
            return Ok(None);
        };
        let Some(entry) = doc.entry(id) else { return Ok(None) };
        let booking = entry.to_booking(room)?;
        Ok(Some((booking, doc, etag)))
    }

    /// Booking `id` as stored, or `None`.
    pub(super) async fn booking_entry(&self, id: Uuid) -> StoreResult<Option<Booking>> {
        Ok(self.booking_home(id).await?.map(|(b, _, _)| b))
    }

    /// The live bookings in `docs` overlapping `[start, end)`, spills resolved to their booking
    /// (read from its home day when that day is not among `docs`), each once, by start.
    pub(super) async fn live_in(
        &self,
        docs: Vec<DayDoc>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> StoreResult<Vec<Booking>> {
        let days: HashSet<String> = docs.iter().map(|d| d.day.clone()).collect();
        let mut found: BTreeMap<Uuid, Booking> = BTreeMap::new();
        let mut homes: HashSet<(u64, String)> = HashSet::new();
        for doc in &docs {
            let room = doc.room()?;
            for e in doc.bookings.iter().filter(|e| e.cancelled_at.is_none()) {
                if super::documents::overlaps(parse_ts(&e.start)?, parse_ts(&e.end)?, start, end) {
                    found.insert(e.id, e.to_booking(room)?);
                }
            }
            for s in &doc.spills {
                if !days.contains(&s.home)
                    && super::documents::overlaps(parse_ts(&s.start)?, parse_ts(&s.end)?, start, end)
                {
                    homes.insert((doc.room_id, s.home.clone()));
                }
            }
        }
        let reads = homes.into_iter().map(|(room, day)| async move {
            let room = RoomId::new(room).map_err(|e| StoreError::Internal(e.0))?;
            let doc =
                self.c.read::<DayDoc>(In::Rooms, &day_pk(parse_day(&day)?), &day_doc_id(room), Fresh::Session).await?;
            Ok::<_, StoreError>(doc.map(|(d, _)| d))
        });
        for doc in join_all(reads).await {
            let Some(doc) = doc? else { continue };
            let room = doc.room()?;
            for e in doc.bookings.iter().filter(|e| e.cancelled_at.is_none()) {
                if super::documents::overlaps(parse_ts(&e.start)?, parse_ts(&e.end)?, start, end) {
                    found.insert(e.id, e.to_booking(room)?);
                }
            }
        }
        let mut out: Vec<Booking> = found.into_values().collect();
        out.sort_by(|a, b| a.slot.start().cmp(&b.slot.start()).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Live bookings of every room overlapping `window`: one single-partition query per day.
    pub(super) async fn bookings_in(&self, window: TimeSlot) -> StoreResult<Vec<Booking>> {
        let queries = days_of(window).into_iter().map(|day| async move {
            let q = Query::from("SELECT * FROM c WHERE c.kind = 'day' AND c.lastEnd > @start AND c.firstStart < @end")
                .with_parameter("@start", ts(window.start()))
                .map_err(map_err)?
                .with_parameter("@end", ts(window.end()))
                .map_err(map_err)?;
            self.c.query::<DayDoc>(In::Rooms, q, Some(&day_pk(day)), Fresh::Session).await
        });
        let mut docs = vec![];
        for r in join_all(queries).await {
            docs.extend(r?);
        }
        self.live_in(docs, window.start(), window.end()).await
    }

    // ----- placing a booking -----

    /// Places `booking` (its id minted for its room) atomically with the overlap check; see the
    /// module docs. Answers `Done` also when the booking is found already placed (a retry whose
    /// answer was lost).
    pub(super) async fn place(&self, booking: &Booking, extras: Extras) -> StoreResult<Placed> {
        let room = booking.room_id;
        let days = days_of(booking.slot);
        let (start, end) = (booking.slot.start(), booking.slot.end());
        let mut spilled = false;
        for attempt in 0..self.tuning.contention_attempts {
            let docs = self.read_days(room, &days, Fresh::Session).await?;
            let home = &docs[0].1;
            if home.as_ref().is_some_and(|(d, _)| d.entry(booking.id).is_some()) {
                return Ok(Placed::Done);
            }
            for (_, doc) in &docs {
                if let Some((_, s, e)) =
                    doc.as_ref().map(|(d, _)| d.overlapping(start, end, booking.id)).transpose()?.flatten()
                {
                    if spilled {
                        self.remove_spills(booking.id, room, &days[1..]).await;
                    }
                    return Ok(Placed::Conflict(format!(
                        "room {room} is already booked from {} to {}",
                        format_instant(s),
                        format_instant(e)
                    )));
                }
            }
            // Spills first: until the commit they only block time that was free.
            let mut lost = false;
            for (day, doc) in &docs[1..] {
                let mut next = doc.as_ref().map(|(d, _)| d.clone()).unwrap_or_else(|| DayDoc::empty(room, *day));
                if next.spills.iter().any(|s| s.id == booking.id) {
                    continue;
                }
                next.spills.push(Spill { id: booking.id, start: ts(start), end: ts(end), home: day_key(days[0]) });
                next.touch()?;
                let written = match doc {
                    Some((_, etag)) => self.c.replace(In::Rooms, &next.pk, &next.id, &next, etag).await,
                    None => self.c.create(In::Rooms, &next.pk, &next.id, &next).await,
                };
                match written {
                    Ok(_) => spilled = true,
                    Err(f) if matches!(f.status, 409 | 412) => {
                        lost = true;
                        break;
                    }
                    Err(f) => {
                        self.remove_spills(booking.id, room, &days[1..]).await;
                        return Err(f.error);
                    }
                }
            }
            if lost {
                backoff(attempt).await;
                continue;
            }
            // The commit: the booking's own day, with everything that must happen with it.
            let mut next = home.as_ref().map(|(d, _)| d.clone()).unwrap_or_else(|| DayDoc::empty(room, days[0]));
            next.bookings.push(Entry::new(booking));
            next.touch()?;
            let mut batch = TransactionalBatch::new(day_pk(days[0]));
            batch = match home {
                Some((_, etag)) => batch.replace_item(next.id.clone(), &next, replace_if(etag)),
                None => batch.create_item(&next),
            }
            .map_err(map_err)?;
            let fence_at = extras.fence.as_ref().map(|_| 1);
            if let Some(f) = &extras.fence {
                batch = batch.create_item(f).map_err(map_err)?;
            }
            let offer_at = extras.freed.as_ref().map(|_| 1 + usize::from(fence_at.is_some()));
            if let Some(id) = &extras.freed {
                batch = batch.delete_item(id.clone(), None);
            }
            if let Some(v) = &extras.vacancy {
                batch = batch.upsert_item(v, None).map_err(map_err)?;
            }
            if let Some(at) = extras.notify {
                let event = OutboxEvent::booking_created(booking);
                batch = batch.create_item(outbox_doc(&event, day_pk(days[0]), at)).map_err(map_err)?;
            }
            match self.c.batch(In::Rooms, batch).await {
                Ok(_) => return Ok(Placed::Done),
                Err(f) if f.op == Some(0) && matches!(f.fail.status, 409 | 412) => backoff(attempt).await,
                Err(f) if f.op.is_some() && f.op == fence_at && f.fail.status == 409 => {
                    self.remove_spills(booking.id, room, &days[1..]).await;
                    return Ok(Placed::Fenced);
                }
                Err(f) if f.op.is_some() && f.op == offer_at && f.fail.status == 404 => {
                    self.remove_spills(booking.id, room, &days[1..]).await;
                    return Ok(Placed::OfferGone);
                }
                // Unknown outcome: the read at the loop's head tells.
                Err(f) if f.fail.unknown_outcome() => backoff(attempt).await,
                Err(f) => {
                    self.remove_spills(booking.id, room, &days[1..]).await;
                    return Err(f.fail.error);
                }
            }
        }
        self.remove_spills(booking.id, room, &days[1..]).await;
        Err(busy(format!("room {room} kept changing")))
    }

    /// Removes booking `id`'s spills from `days` of `room`. Best effort: a spill left behind only
    /// blocks time its booking no longer holds, and is logged.
    pub(super) async fn remove_spills(&self, id: Uuid, room: RoomId, days: &[NaiveDate]) {
        for day in days {
            for attempt in 0..self.tuning.contention_attempts {
                let pk = day_pk(*day);
                let read = self.c.read::<DayDoc>(In::Rooms, &pk, &day_doc_id(room), Fresh::Session).await;
                let Ok(Some((mut doc, etag))) = read else { break };
                if !doc.spills.iter().any(|s| s.id == id) {
                    break;
                }
                doc.spills.retain(|s| s.id != id);
                if doc.touch().is_err() {
                    break;
                }
                match self.c.replace(In::Rooms, &pk, &doc.id, &doc, &etag).await {
                    Ok(_) => break,
                    Err(f) if f.status == 412 => backoff(attempt).await,
                    Err(f) => {
                        tracing::warn!(booking = %id, error = %f.error, "a spill of a booking stays behind");
                        break;
                    }
                }
            }
        }
    }

    /// Takes a committed booking out again (its room turned out to be going): the entry and its
    /// spills. Best effort, as [`remove_spills`](Self::remove_spills).
    async fn unplace(&self, booking: &Booking) {
        let days = days_of(booking.slot);
        let room = booking.room_id;
        for attempt in 0..self.tuning.contention_attempts {
            let pk = day_pk(days[0]);
            let Ok(Some((mut doc, etag))) =
                self.c.read::<DayDoc>(In::Rooms, &pk, &day_doc_id(room), Fresh::Session).await
            else {
                break;
            };
            doc.bookings.retain(|e| e.id != booking.id);
            if doc.touch().is_err() {
                break;
            }
            match self.c.replace(In::Rooms, &pk, &doc.id, &doc, &etag).await {
                Ok(_) => break,
                Err(f) if f.status == 412 => backoff(attempt).await,
                Err(f) => {
                    tracing::warn!(booking = %booking.id, error = %f.error, "a booking of a deleted room stays behind");
                    break;
                }
            }
        }
        self.remove_spills(booking.id, room, &days[1..]).await;
        // Nothing announces a booking that was undone.
        let event = outbox_id(&OutboxEvent::booking_created(booking).id);
        if let Err(e) = self.c.delete(In::Rooms, &day_pk(days[0]), &event).await {
            tracing::warn!(booking = %booking.id, error = %e, "the event of an undone booking stays in the outbox");
        }
    }

    /// After a commit: meets a deletion of the room half way (a quorum read) and adds the
    /// booking's days to the room's list. `NotFound` (the booking undone) when the room is gone
    /// or going; otherwise the room.
    pub(super) async fn confirm(&self, booking: &Booking) -> StoreResult<Room> {
        let room = booking.room_id;
        let days: Vec<String> = days_of(booking.slot).into_iter().map(day_key).collect();
        for attempt in 0..self.tuning.contention_attempts {
            let Some((doc, etag)) = self.room_doc_fresh(room, Fresh::Latest).await? else {
                self.unplace(booking).await;
                return Err(StoreError::NotFound);
            };
            if doc.deleting {
                self.unplace(booking).await;
                return Err(StoreError::NotFound);
            }
            if days.iter().all(|d| doc.days.binary_search(d).is_ok()) {
                return doc.to_room();
            }
            let mut next = doc.bumped();
            // Days long past leave the list as new ones come.
            let oldest = day_key((booking.created_at - Duration::days(1)).date_naive());
            next.days.retain(|d| *d >= oldest);
            next.days.extend(days.iter().cloned());
            next.days.sort();
            next.days.dedup();
            match self.c.replace(In::Rooms, &doc.pk, ROOM_DOC_ID, &next, &etag).await {
                Ok(_) => return next.to_room(),
                Err(f) if f.status == 412 || f.unknown_outcome() => backoff(attempt).await,
                Err(f) if f.status == 404 => {
                    self.unplace(booking).await;
                    return Err(StoreError::NotFound);
                }
                Err(f) => return Err(f.error),
            }
        }
        Err(busy(format!("room {room} kept changing")))
    }

    /// Writes the owner's index document of `booking` (and, in the same batch, the settled
    /// idempotency claim). Best effort after a commit: the booking stands, and the list heals
    /// at the booking's next change.
    pub(super) async fn index_owner(&self, booking: &Booking, settled: Option<super::documents::IdemDoc>) {
        let doc = OwnerDoc::new(booking);
        let outcome = match settled {
            None => self.c.upsert(In::Ops, &doc.pk, &doc.id, &doc).await,
            Some(claim) => {
                let batch = TransactionalBatch::new(doc.pk.clone())
                    .upsert_item(&doc, None)
                    .and_then(|b| b.upsert_item(&claim, None))
                    .map_err(map_err);
                match batch {
                    Ok(b) => self.c.batch(In::Ops, b).await.map(drop).map_err(|f| f.fail.error),
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(booking = %booking.id, error = %e, "the owner's list misses a change of this booking");
        }
    }

    /// Books `room` for `booking` (its id re-minted for the room): place, confirm, index. With a
    /// ticket, the batch carries the key's fence and the owner's batch the settled claim.
    pub(super) async fn book_in(
        &self,
        booking: &Booking,
        room: RoomId,
        mut extras: Extras,
        ticket: Option<&Ticket>,
    ) -> StoreResult<Outcome> {
        let id = super::documents::mint_booking_id(room, booking.slot.start())?;
        let booking = Booking { id, room_id: room, ..booking.clone() };
        if let Some(t) = ticket {
            extras.fence = Some(t.fence(id, room.get())?);
        }
        match self.place(&booking, extras).await? {
            Placed::Done => {}
            Placed::Conflict(m) => return Ok(Outcome::Conflict(m)),
            Placed::Fenced => return Ok(Outcome::Fenced),
            Placed::OfferGone => return Ok(Outcome::OfferGone),
        }
        let room = self.confirm(&booking).await?;
        self.index_owner(&booking, ticket.map(|t| Self::settled(t, Some(booking.id), Some(room.id.get())))).await;
        Ok(Outcome::Booked(booking, room))
    }

    // ----- changing a booking -----

    /// Marks booking `id` cancelled at `now` (a cancelled one is answered as it is), frees its
    /// spills, and offers its room to the next find-or-create of the same slot.
    /// With `notify`, `booking.cancelled` enters the outbox in the same batch (enqueued then).
    pub(super) async fn cancel(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Booking> {
        for attempt in 0..self.tuning.contention_attempts {
            let Some((booking, mut doc, etag)) = self.booking_home(id).await? else {
                return Err(StoreError::NotFound);
            };
            if booking.cancelled_at.is_some() {
                return Ok(booking);
            }
            let entry = doc.entry_mut(id).ok_or(StoreError::NotFound)?;
            entry.cancelled_at = Some(ts(now));
            doc.touch()?;
            let cancelled = Booking { cancelled_at: Some(now), ..booking.clone() };
            let offer = FreedDoc {
                id: freed_id(booking.slot, booking.room_id),
                pk: doc.pk.clone(),
                kind: "freed".into(),
                slot_key: slot_key(booking.slot),
                room_id: booking.room_id.get(),
                ttl: ttl_until(booking.slot.end(), now),
            };
            let mut batch = TransactionalBatch::new(doc.pk.clone())
                .replace_item(doc.id.clone(), &doc, replace_if(&etag))
                .and_then(|b| b.upsert_item(&offer, None))
                .map_err(map_err)?;
            if let Some(at) = notify {
                let event = OutboxEvent::booking_cancelled(&cancelled, now);
                batch = batch.create_item(outbox_doc(&event, doc.pk.clone(), at)).map_err(map_err)?;
            }
            match self.c.batch(In::Rooms, batch).await {
                Ok(_) => {
                    let days = days_of(booking.slot);
                    self.remove_spills(id, booking.room_id, &days[1..]).await;
                    self.index_owner(&cancelled, None).await;
                    return Ok(cancelled);
                }
                Err(f) if f.op == Some(0) && f.fail.status == 412 => backoff(attempt).await,
                Err(f) if f.fail.unknown_outcome() => backoff(attempt).await,
                Err(f) => return Err(f.fail.error),
            }
        }
        Err(busy(format!("booking {id} kept changing")))
    }

    /// Moves booking `id`'s end, atomically with the overlap check in every day it then touches.
    /// With `notify`, `booking.extended` enters the outbox with the booking's own day (one batch).
    pub(super) async fn set_end(
        &self,
        id: Uuid,
        end: DateTime<Utc>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Booking> {
        for attempt in 0..self.tuning.contention_attempts {
            let Some((current, mut home, etag)) = self.booking_home(id).await? else {
                return Err(StoreError::NotFound);
            };
            if current.cancelled_at.is_some() {
                return Err(StoreError::Conflict(format!("booking {id} is cancelled")));
            }
            if current.slot.end() == end {
                return Ok(current);
            }
            let slot = TimeSlot::new(current.slot.start(), end)
                .map_err(|_| StoreError::Conflict(format!("booking {id} cannot end before it starts")))?;
            let room = current.room_id;
            let (old_days, new_days) = (days_of(current.slot), days_of(slot));
            if let Some((_, s, e)) = home.overlapping(slot.start(), slot.end(), id)? {
                return Err(conflict(room, s, e));
            }
            let others = self.read_days(room, &new_days[1..], Fresh::Session).await?;
            for (_, doc) in &others {
                if let Some((_, s, e)) =
                    doc.as_ref().map(|(d, _)| d.overlapping(slot.start(), slot.end(), id)).transpose()?.flatten()
                {
                    return Err(conflict(room, s, e));
                }
            }
            // Spills of the new slot first (new or moved), then the booking itself.
            let mut lost = false;
            for (day, doc) in &others {
                let mut next = doc.as_ref().map(|(d, _)| d.clone()).unwrap_or_else(|| DayDoc::empty(room, *day));
                next.spills.retain(|s| s.id != id);
                next.spills.push(Spill { id, start: ts(slot.start()), end: ts(slot.end()), home: home.day.clone() });
                next.touch()?;
                let written = match doc {
                    Some((_, etag)) => self.c.replace(In::Rooms, &next.pk, &next.id, &next, etag).await,
                    None => self.c.create(In::Rooms, &next.pk, &next.id, &next).await,
                };
                match written {
                    Ok(_) => {}
                    Err(f) if matches!(f.status, 409 | 412) => {
                        lost = true;
                        break;
                    }
                    Err(f) => return Err(f.error),
                }
            }
            if lost {
                backoff(attempt).await;
                continue;
            }
            let entry = home.entry_mut(id).ok_or(StoreError::NotFound)?;
            entry.end = ts(end);
            home.touch()?;
            let written = match notify {
                None => self.c.replace(In::Rooms, &home.pk, &home.id, &home, &etag).await.map(drop),
                Some(at) => {
                    let moved = Booking { slot, ..current.clone() };
                    let event = OutboxEvent::booking_extended(&moved, current.slot.end(), at);
                    let batch = TransactionalBatch::new(home.pk.clone())
                        .replace_item(home.id.clone(), &home, replace_if(&etag))
                        .and_then(|b| b.create_item(outbox_doc(&event, home.pk.clone(), at)))
                        .map_err(map_err)?;
                    self.c.batch(In::Rooms, batch).await.map(drop).map_err(|f| f.fail)
                }
            };
            match written {
                Ok(()) => {
                    let gone: Vec<NaiveDate> = old_days.into_iter().filter(|d| !new_days.contains(d)).collect();
                    self.remove_spills(id, room, &gone).await;
                    let updated = Booking { slot, ..current };
                    if new_days.len() > 1 {
                        // New days go into the room's list (the room has this booking: no undo).
                        self.confirm(&updated).await?;
                    }
                    self.index_owner(&updated, None).await;
                    return Ok(updated);
                }
                Err(f) if f.status == 412 || f.unknown_outcome() => backoff(attempt).await,
                Err(f) => return Err(f.error),
            }
        }
        Err(busy(format!("booking {id} kept changing")))
    }

    /// Replaces booking `id`'s access if it is still `expected` (compare-and-set).
    pub(super) async fn set_access(
        &self,
        id: Uuid,
        expected: &crate::domain::Access,
        new: &crate::domain::Access,
    ) -> StoreResult<Booking> {
        let mut sent = false;
        for attempt in 0..self.tuning.contention_attempts {
            let Some((current, mut doc, etag)) = self.booking_home(id).await? else {
                return Err(StoreError::NotFound);
            };
            if sent && current.access == *new {
                // Our write landed though its answer was lost.
                return Ok(current);
            }
            if current.access != *expected {
                return Err(StoreError::PreconditionFailed);
            }
            doc.entry_mut(id).ok_or(StoreError::NotFound)?.access = new.clone();
            sent = true;
            match self.c.replace(In::Rooms, &doc.pk, &doc.id, &doc, &etag).await {
                Ok(_) => {
                    let updated = Booking { access: new.clone(), ..current };
                    self.index_owner(&updated, None).await;
                    return Ok(updated);
                }
                Err(f) if f.status == 412 || f.unknown_outcome() => backoff(attempt).await,
                Err(f) => return Err(f.error),
            }
        }
        Err(busy(format!("booking {id} kept changing")))
    }

    // ----- rooms and their bookings -----

    /// The room document and its etag, as fresh as asked; `None` when missing.
    pub(super) async fn room_doc_fresh(&self, id: RoomId, fresh: Fresh) -> StoreResult<Option<(RoomDoc, String)>> {
        self.c.read::<RoomDoc>(In::Rooms, &room_pk(id), ROOM_DOC_ID, fresh).await
    }

    /// The room document unless missing or being deleted.
    pub(super) async fn room_doc(&self, id: RoomId) -> StoreResult<Option<(RoomDoc, String)>> {
        Ok(self.room_doc_fresh(id, Fresh::Session).await?.filter(|(d, _)| !d.deleting))
    }

    /// Live bookings of `room` that end after `after`, from the room's days, and the room.
    pub(super) async fn bookings_of_room(
        &self,
        doc: &RoomDoc,
        after: DateTime<Utc>,
        fresh: Fresh,
    ) -> StoreResult<Vec<Booking>> {
        let room = RoomId::new(doc.room_id).map_err(|e| StoreError::Internal(e.0))?;
        let from = day_key(after.date_naive());
        let days =
            doc.days.iter().filter(|d| **d >= from).map(|d| parse_day(d)).collect::<StoreResult<Vec<NaiveDate>>>()?;
        let docs: Vec<DayDoc> =
            self.read_days(room, &days, fresh).await?.into_iter().filter_map(|(_, d)| d.map(|(d, _)| d)).collect();
        self.live_in(docs, after, DateTime::<Utc>::MAX_UTC).await
    }

    /// The rooms busy (a live booking overlapping) during `slot`, from the slot's days.
    pub(super) async fn busy_rooms(&self, slot: TimeSlot) -> StoreResult<HashSet<RoomId>> {
        Ok(self.bookings_in(slot).await?.into_iter().map(|b| b.room_id).collect())
    }

    /// Deletes every day document of `room` (history too: a fan-out, for the rare deletion) and
    /// the owners' index documents and assignments of its bookings.
    pub(super) async fn remove_room_days(&self, room: RoomId) -> StoreResult<()> {
        let q = Query::from("SELECT * FROM c WHERE c.kind = 'day' AND c.roomId = @room")
            .with_parameter("@room", room.get())
            .map_err(map_err)?;
        let docs: Vec<DayDoc> = self.c.query(In::Rooms, q, None, Fresh::Latest).await?;
        for doc in docs {
            for e in &doc.bookings {
                let owner = OwnerDoc::new(&e.to_booking(room)?);
                self.c.delete(In::Ops, &owner.pk, &owner.id).await?;
                self.c.delete(In::Rooms, &doc.pk, &super::documents::assignment_id(e.id)).await?;
            }
            self.c.delete(In::Rooms, &doc.pk, &doc.id).await?;
        }
        Ok(())
    }

    /// The first live booking of `room` ending after `now` (on the room's listed days), read by
    /// quorum: a deletion must see a booking that committed before it marked the room.
    pub(super) async fn booking_after(&self, doc: &RoomDoc, now: DateTime<Utc>) -> StoreResult<Option<Booking>> {
        Ok(self.bookings_of_room(doc, now, Fresh::Latest).await?.into_iter().next())
    }

    /// Deletes a document of a batchable kind guarded by its etag (a room's tombstone step).
    pub(super) async fn delete_room_doc(&self, id: RoomId, etag: &str) -> Result<(), super::sdk::Fail> {
        let batch = TransactionalBatch::new(room_pk(id)).delete_item(ROOM_DOC_ID, delete_if(etag));
        self.c.batch(In::Rooms, batch).await.map(drop).map_err(|f| f.fail)
    }

    /// Assignments of bookings, grouped by the day partitions their ids name. A day asked for by
    /// at most [`ASSIGNMENT_IDS_PER_QUERY`] ids costs one query naming them; a day asked for by
    /// more is read whole (every assignment of the day, in pages) and filtered here: its pages
    /// number at most the day's assignments over the page size, where naming the ids would cost
    /// one query per [`ASSIGNMENT_IDS_PER_QUERY`] of them whether they are assigned or not.
    pub(super) async fn assignments_of(&self, ids: &[Uuid]) -> StoreResult<Vec<super::super::Assignment>> {
        let mut by_day: HashMap<NaiveDate, HashSet<Uuid>> = HashMap::new();
        let mut out = vec![];
        for id in ids {
            match self.home_of(*id).await? {
                Some((_, day)) => {
                    by_day.entry(day).or_default().insert(*id);
                }
                None => {
                    let key = super::documents::assignment_id(*id);
                    if let Some((d, _)) =
                        self.c.read::<super::documents::AssignmentDoc>(In::Rooms, &key, &key, Fresh::Session).await?
                    {
                        out.push(d.assignment);
                    }
                }
            }
        }
        for (day, ids) in by_day {
            let q = if ids.len() > ASSIGNMENT_IDS_PER_QUERY {
                Query::from("SELECT * FROM c WHERE c.kind = 'assignment'")
            } else {
                let named: Vec<String> = ids.iter().map(Uuid::to_string).collect();
                Query::from("SELECT * FROM c WHERE c.kind = 'assignment' AND ARRAY_CONTAINS(@ids, c.bookingId)")
                    .with_parameter("@ids", named)
                    .map_err(map_err)?
            };
            let docs: Vec<super::documents::AssignmentDoc> =
                self.c.query(In::Rooms, q, Some(&day_pk(day)), Fresh::Session).await?;
            out.extend(docs.into_iter().filter(|d| ids.contains(&d.booking_id)).map(|d| d.assignment));
        }
        Ok(out)
    }
}

/// The most booking ids one assignments query names (see [`CosmosStore::assignments_of`]).
const ASSIGNMENT_IDS_PER_QUERY: usize = 100;

/// The refusal of a booking that overlaps `room`'s booking from `s` to `e`.
pub(super) fn conflict(room: RoomId, s: DateTime<Utc>, e: DateTime<Utc>) -> StoreError {
    StoreError::Conflict(format!("room {room} is already booked from {} to {}", format_instant(s), format_instant(e)))
}
