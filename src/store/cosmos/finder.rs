//! Find-or-create on Cosmos DB: which rooms to try, in a few requests whatever the fleet's size.
//!
//! Rooms with two seats are listed in a directory, in creation order ([`DirChunk`] documents of a
//! thousand ids in one partition, cached by each instance and re-read when a search runs past
//! the cached end). For each slot (exact start and end) the slot's start day holds a hint: the
//! directory position from which rooms may still be free, positions after it known taken, and
//! rooms freed by cancellations. One query reads the hint; the search then tries a room freed in
//! that slot, else one of the first untaken positions (a random one of the first few, so that
//! instances racing for one slot spread out), each try one read of the room's day document and,
//! when free, the booking's batch, which also moves the hint on. After [`MAX_TRIES`] taken rooms
//! the search stops and the new room (if given) is created: the fleet may hold a room more than
//! a full search would need, never a double booking, since the day documents decide.

use std::{collections::BTreeSet, sync::Arc, time::Instant};

use azure_data_cosmos::Query;
use rand::seq::SliceRandom;

use super::super::{Created, StoreError, StoreResult};
use super::CosmosStore;
use super::claims::Ticket;
use super::documents::{
    DIRECTORY_CHUNK, DIRECTORY_PK, DirChunk, RoomDoc, SlotHint, VacancyDoc, day_pk, directory_id, room_pk, slot_key,
    ttl_until, vacancy_id,
};
use super::schedule::{Extras, Outcome};
use super::sdk::{Containers, Fresh, In, backoff, map_err};
use crate::domain::{Booking, Room, RoomId};

/// Taken rooms a search tries before it creates the new room.
pub(super) const MAX_TRIES: usize = 24;

/// Untaken directory positions a search picks its first try from at random.
const SPREAD: usize = 4;

/// How often each instance re-reads its copy of the directory in the background, so that no
/// search pays for a refresh: a search reads the directory itself only when it has no copy yet,
/// or when every room in its copy is taken (rooms made since may be free).
const DIRECTORY_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Each instance's copy of the room directory.
#[derive(Default)]
pub(super) struct Directory {
    cached: tokio::sync::RwLock<Option<(Instant, Vec<DirChunk>)>>,
}

impl Directory {
    /// Starts the background refresh of `directory` (see [`DIRECTORY_REFRESH`]). It re-reads only
    /// a copy a search has loaded, keeps the old copy when a read fails, and ends with the store.
    pub(super) fn keep_fresh(directory: &Arc<Directory>, c: Containers) {
        let directory = Arc::downgrade(directory);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(DIRECTORY_REFRESH);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(dir) = directory.upgrade() else { return };
                let stale = dir.cached.read().await.as_ref().is_some_and(|(at, _)| at.elapsed() >= DIRECTORY_REFRESH);
                if !stale {
                    continue;
                }
                match read_directory(&c).await {
                    Ok(chunks) => *dir.cached.write().await = Some((Instant::now(), chunks)),
                    Err(e) => tracing::warn!(error = %e, "room directory not refreshed; the last copy stays"),
                }
            }
        });
    }

    /// Puts `chunk`, as this instance just wrote it, into the cached copy (if there is one; a
    /// copy missing chunks before it is dropped, and the next search reads the directory).
    async fn learn(&self, chunk: DirChunk) {
        let mut cached = self.cached.write().await;
        let Some((_, chunks)) = cached.as_mut() else { return };
        if let Some(c) = chunks.iter_mut().find(|c| c.n == chunk.n) {
            *c = chunk;
        } else if chunks.last().map_or(0, |c| c.n + 1) == chunk.n {
            chunks.push(chunk);
        } else {
            *cached = None;
        }
    }
}

/// Every chunk of the room directory, in order.
async fn read_directory(c: &Containers) -> StoreResult<Vec<DirChunk>> {
    let q = Query::from("SELECT * FROM c WHERE c.kind = 'directory'");
    let mut chunks: Vec<DirChunk> = c.query(In::Ops, q, Some(DIRECTORY_PK), Fresh::Session).await?;
    chunks.sort_by_key(|c| c.n);
    Ok(chunks)
}

/// One room to try and where it came from.
struct Candidate {
    room: RoomId,
    /// Its directory position, or `None` for a room freed in this slot.
    position: Option<u64>,
    /// The freed-room offer to take with it.
    offer: Option<String>,
}

/// What a search found, or how it ended.
// Returned once per search and matched at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum Found {
    Booked(Booking, Room),
    /// Another holder of the idempotency key committed first.
    Fenced,
    NoFreeRoom,
}

impl CosmosStore {
    /// The directory: this instance's copy (kept fresh in the background), read here only if
    /// there is none yet or it does not reach `position`.
    async fn directory(&self, position: Option<u64>) -> StoreResult<Vec<DirChunk>> {
        {
            let cached = self.directory.cached.read().await;
            if let Some((_, chunks)) = cached.as_ref() {
                let reaches = position.is_none_or(|p| (p as usize) < chunks.iter().map(|c| c.rooms.len()).sum());
                if reaches {
                    return Ok(chunks.clone());
                }
            }
        }
        let chunks = read_directory(&self.c).await?;
        *self.directory.cached.write().await = Some((Instant::now(), chunks.clone()));
        Ok(chunks)
    }

    /// Appends a room with two seats to the directory's last chunk (or a new one). Best effort:
    /// a room missing from it is only never offered by find-or-create (it can still be booked by
    /// id), and is logged.
    pub(super) async fn list_in_directory(&self, room: RoomId) {
        let mut n = match self.directory(None).await {
            Ok(chunks) => chunks.last().map_or(0, |c| c.n),
            Err(_) => 0,
        };
        for attempt in 0..3 * self.tuning.contention_attempts {
            let id = directory_id(n);
            let (written, chunk) = match self.c.read::<DirChunk>(In::Ops, DIRECTORY_PK, &id, Fresh::Session).await {
                Ok(Some((chunk, _))) if chunk.rooms.contains(&room.get()) => return,
                Ok(Some((chunk, _))) if chunk.rooms.len() >= DIRECTORY_CHUNK => {
                    n += 1;
                    continue;
                }
                Ok(Some((mut chunk, etag))) => {
                    chunk.rooms.push(room.get());
                    (self.c.replace(In::Ops, DIRECTORY_PK, &id, &chunk, &etag).await.map(drop), chunk)
                }
                Ok(None) => {
                    let chunk = DirChunk {
                        id: id.clone(),
                        pk: DIRECTORY_PK.into(),
                        kind: "directory".into(),
                        n,
                        rooms: vec![room.get()],
                    };
                    (self.c.create(In::Ops, DIRECTORY_PK, &id, &chunk).await.map(drop), chunk)
                }
                Err(e) => {
                    tracing::warn!(room = %room, error = %e, "room not listed for find-or-create");
                    return;
                }
            };
            match written {
                Ok(()) => {
                    // This instance finds its own room at once, without reading the directory
                    // again: the chunk just written replaces its copy.
                    self.directory.learn(chunk).await;
                    return;
                }
                Err(f) if matches!(f.status, 409 | 412) || f.unknown_outcome() => backoff(attempt).await,
                Err(f) => {
                    tracing::warn!(room = %room, error = %f.error, "room not listed for find-or-create");
                    return;
                }
            }
        }
        tracing::warn!(room = %room, "room not listed for find-or-create: the directory kept changing");
    }

    /// Takes a deleted room out of the directory (its position stays, empty). Best effort.
    pub(super) async fn unlist(&self, room: RoomId) {
        let Ok(chunks) = self.directory(None).await else { return };
        let Some(chunk) = chunks.iter().find(|c| c.rooms.contains(&room.get())) else { return };
        for attempt in 0..self.tuning.contention_attempts {
            let Ok(Some((mut c, etag))) =
                self.c.read::<DirChunk>(In::Ops, DIRECTORY_PK, &chunk.id, Fresh::Session).await
            else {
                return;
            };
            c.rooms.iter_mut().filter(|r| **r == room.get()).for_each(|r| *r = 0);
            match self.c.replace(In::Ops, DIRECTORY_PK, &c.id.clone(), &c, &etag).await {
                Ok(_) => return,
                Err(f) if f.status == 412 => backoff(attempt).await,
                Err(_) => return,
            }
        }
    }

    /// Find-or-create (see the module docs). `new_room` is created and booked when the search
    /// finds no free room; `ticket` fences the booking when the request has an idempotency key.
    pub(super) async fn find_or_create(
        &self,
        wanted: &Booking,
        new_room: Option<&Room>,
        ticket: Option<&Ticket>,
        notify: Option<chrono::DateTime<chrono::Utc>>,
    ) -> StoreResult<Found> {
        let slot = wanted.slot;
        let day = slot.start().date_naive();
        let pk = day_pk(day);
        let q = Query::from("SELECT * FROM c WHERE c.slotKey = @key")
            .with_parameter("@key", slot_key(slot))
            .map_err(map_err)?;
        let found: Vec<serde_json::Value> = self.c.query(In::Rooms, q, Some(&pk), Fresh::Session).await?;
        let hints = found.into_iter().map(SlotHint::from_json).collect::<StoreResult<Vec<_>>>()?;
        let mut vacancy = VacancyDoc {
            id: vacancy_id(slot),
            pk: pk.clone(),
            kind: "vacancy".into(),
            slot_key: slot_key(slot),
            cursor: 0,
            taken: vec![],
            ttl: ttl_until(slot.end(), wanted.created_at),
        };
        let mut offers = vec![];
        for h in hints.into_iter().flatten() {
            match h {
                SlotHint::Vacancy(v) => vacancy = VacancyDoc { ttl: vacancy.ttl, ..v },
                SlotHint::Freed(f) => {
                    if let Ok(room) = RoomId::new(f.room_id) {
                        offers.push(Candidate { room, position: None, offer: Some(f.id) });
                    }
                }
            }
        }
        offers.shuffle(&mut rand::thread_rng());
        let mut taken: BTreeSet<u64> = vacancy.taken.iter().copied().collect();
        let mut tries = 0;
        let mut cursor = vacancy.cursor;
        loop {
            let next = match offers.pop() {
                Some(c) => Some(c),
                None => self.next_position(cursor, &taken).await?,
            };
            let Some(candidate) = next else { break };
            if tries >= MAX_TRIES {
                break;
            }
            tries += 1;
            if let Some(p) = candidate.position {
                taken.insert(p);
            }
            let hint = moved_on(&vacancy, &taken);
            let extras = Extras { vacancy: Some(hint), freed: candidate.offer.clone(), fence: None, notify };
            match self.book_in(wanted, candidate.room, extras, ticket).await {
                Ok(Outcome::Booked(b, room)) => return Ok(Found::Booked(b, room)),
                Ok(Outcome::Fenced) => return Ok(Found::Fenced),
                // Taken since the hint was written, or the room is gone: the next one.
                Ok(Outcome::Conflict(_) | Outcome::OfferGone) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
            cursor = moved_on(&vacancy, &taken).cursor;
        }
        let Some(room) = new_room else { return Ok(Found::NoFreeRoom) };
        // No free room found: the new one, with what the search learned about the others. It is
        // listed for others only once it holds this booking.
        self.create_room_doc(room).await?;
        let extras = Extras { vacancy: Some(moved_on(&vacancy, &taken)), freed: None, fence: None, notify };
        let outcome = self.book_in(wanted, room.id, extras, ticket).await;
        if !matches!(outcome, Ok(Outcome::Booked(..))) {
            // No room without its booking: the new room goes again.
            self.unlist(room.id).await;
            if let Err(e) = self.c.delete(In::Rooms, &room_pk(room.id), super::documents::ROOM_DOC_ID).await {
                tracing::warn!(room = %room.id, error = %e, "a new room without a booking stays");
            }
        }
        match outcome? {
            Outcome::Booked(b, room) => {
                self.list_in_directory(room.id).await;
                Ok(Found::Booked(b, room))
            }
            Outcome::Fenced => Ok(Found::Fenced),
            Outcome::Conflict(_) | Outcome::OfferGone => {
                Err(StoreError::Internal(format!("the new room {} was taken at once", room.id)))
            }
        }
    }

    /// The next directory room to try from `cursor`: one of the first [`SPREAD`] positions not
    /// known taken, at random; `None` past the directory's end.
    async fn next_position(&self, cursor: u64, taken: &BTreeSet<u64>) -> StoreResult<Option<Candidate>> {
        let mut refreshed = false;
        loop {
            let chunks = self.directory(None).await?;
            let mut open = vec![];
            let mut p = cursor;
            let total: u64 = chunks.iter().map(|c| c.rooms.len() as u64).sum();
            while open.len() < SPREAD && p < total {
                if !taken.contains(&p) {
                    let (chunk, i) = ((p as usize) / DIRECTORY_CHUNK, (p as usize) % DIRECTORY_CHUNK);
                    let id = chunks.iter().find(|c| c.n == chunk).and_then(|c| c.rooms.get(i)).copied().unwrap_or(0);
                    if let Ok(room) = RoomId::new(id) {
                        open.push(Candidate { room, position: Some(p), offer: None });
                    }
                }
                p += 1;
            }
            if open.is_empty() && !refreshed {
                // Rooms made since the cache was read may be free.
                *self.directory.cached.write().await = None;
                refreshed = true;
                continue;
            }
            open.shuffle(&mut rand::thread_rng());
            return Ok(open.pop());
        }
    }

    /// Booking `booking` and its room, as a replay of its idempotency key answers them.
    pub(super) async fn replayed(&self, booking: uuid::Uuid) -> StoreResult<Created<(Booking, Room)>> {
        let b = self.booking_entry(booking).await?.ok_or(StoreError::NotFound)?;
        let room = self.room_doc(b.room_id).await?.ok_or(StoreError::NotFound)?.0.to_room()?;
        Ok(Created::Replayed((b, room)))
    }

    /// Creates a room and lists it for find-or-create (`insert_room`): `AlreadyExists` when
    /// another room has its id; a lost answer of our own create counts as created.
    pub(super) async fn insert_room_now(&self, room: &Room) -> StoreResult<Room> {
        self.create_room_doc(room).await?;
        if room.max_participants >= 2 {
            self.list_in_directory(room.id).await;
        }
        Ok(room.clone())
    }

    /// Creates a room document, unlisted.
    async fn create_room_doc(&self, room: &Room) -> StoreResult<()> {
        let doc = RoomDoc::new(room);
        match self.c.create(In::Rooms, &room_pk(room.id), &doc.id, &doc).await {
            Ok(_) => Ok(()),
            Err(fail) => match self.room_doc_fresh(room.id, Fresh::Session).await? {
                Some((found, _)) if found.to_room().ok().as_ref() == Some(room) => Ok(()),
                Some(_) if fail.status == 409 => Err(StoreError::AlreadyExists),
                _ => Err(fail.error),
            },
        }
    }
}

/// The hint after the positions in `taken`: the cursor moves over every taken position right
/// after it, the rest stay listed.
fn moved_on(vacancy: &VacancyDoc, taken: &BTreeSet<u64>) -> VacancyDoc {
    let mut cursor = vacancy.cursor;
    while taken.contains(&cursor) {
        cursor += 1;
    }
    VacancyDoc { cursor, taken: taken.iter().copied().filter(|p| *p > cursor).collect(), ..vacancy.clone() }
}
