//! Per-user quotas, kept in the store so they hold across every instance: live bookings per user
//! (`QUOTA_LIVE_BOOKINGS_PER_USER`) and rooms created per user in a rolling 24 hours
//! (`QUOTA_ROOMS_PER_USER_PER_DAY`). Admins are exempt; 0 turns a quota off.
//!
//! # The ledger
//! Each user has one [`QuotaLedger`] in the store: the bookings it holds (id, end) and the rooms
//! it created in the last 24 hours (id, when). It changes only by compare-and-set on its version
//! ([`Store::put_quota_ledger`]), so two instances that read the same ledger cannot both add the
//! last free slot: one write wins, the other reads again and finds the quota full.
//!
//! # Reserve, write, settle
//! 1. **Reserve.** Read the ledger (seeded from the user's live bookings the first time), drop
//!    what no longer counts (bookings that ended, rooms older than 24 hours). At the limit,
//!    check each remaining entry with a point read: a cancelled booking, or an entity still
//!    missing [`PENDING_GRACE`] after its reservation (its request died between the reservation
//!    and the write), is dropped; this is what heals every missed release. Still at the limit:
//!    `QuotaExceeded` (409). Else append the id chosen for the new entity and write the ledger
//!    with the version read; when another writer won, start again from the read.
//! 2. **Write** the booking or room (the store checks overlap and idempotency as always).
//! 3. **Settle.** A write that definitively failed, or that replayed an earlier request (its
//!    entity is already counted), releases the reservation. A write whose outcome is unknown
//!    (the store unavailable) keeps it: step 1 drops it later if the entity never appeared.
//!    A booking the store wrote under an id of its own (Cosmos DB mints ids that name the room
//!    and day) renames its entry to that id, so the checks of step 1 and a cancel find it.
//!
//! A request that carries an `Idempotency-Key` already in the ledger (a retry) reserves nothing:
//! replays never consume quota, even at the limit. A cancel releases its booking's entry, and an
//! extension moves the entry's end; both best effort, as step 1 corrects what they miss.
//!
//! # A store that counts
//! A store that can count an owner's live bookings inside a booking's own write
//! ([`Store::counts_live_bookings`]: SQLite, where every write is one transaction on one file)
//! keeps no ledger entries for bookings: the write counts the owner's bookings that are neither
//! cancelled nor ended and refuses at the limit ([`crate::store::LiveCap`]). Nothing is reserved,
//! so nothing is settled or healed, a cancel or an extension needs no ledger change, and a replay
//! counts nothing because the store answers it before counting. The rooms quota keeps its ledger
//! on every store.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use futures::future::join_all;
use rand::Rng;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{SessionError, Sessions};
use crate::domain::{Booking, RoomId, TimeSlot, format_instant};
use crate::store::{IdempotencyClaim, LedgerBooking, LedgerRoom, QuotaLedger, Store, StoreError, StoreResult};

/// How long a reservation whose entity is missing still counts: the longest a request may
/// take from its reservation to its write. Later, the request is taken to have died.
pub const PENDING_GRACE: Duration = Duration::minutes(2);

/// The window of the rooms quota.
pub const ROOMS_WINDOW: Duration = Duration::hours(24);

/// Compare-and-set attempts of a ledger write before the request gives up (a burst of one
/// user's requests on many instances: each round has one winner).
const LEDGER_ATTEMPTS: u32 = 64;

/// Per-user quotas (`QUOTA_*`). 0 turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaSettings {
    /// `QUOTA_LIVE_BOOKINGS_PER_USER` (20): bookings one user may hold that are neither cancelled
    /// nor ended.
    pub live_bookings_per_user: u32,
    /// `QUOTA_ROOMS_PER_USER_PER_DAY` (50): rooms one user may create in any 24 hours.
    pub rooms_per_user_per_day: u32,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self { live_bookings_per_user: 20, rooms_per_user_per_day: 50 }
    }
}

/// Whose quota a create counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge<'a> {
    /// This user's.
    User(&'a str),
    /// Nobody's: admins are exempt (operators and automation that act for others).
    Exempt,
}

impl<'a> Charge<'a> {
    /// The caller's charge: admins are exempt.
    pub fn of(user: &'a str, admin: bool) -> Self {
        if admin { Charge::Exempt } else { Charge::User(user) }
    }
}

/// How a reservation loop ended.
pub(super) enum Reserved {
    /// The ledger with the new entry was written: it is settled after the entity's write.
    Committed,
    /// Nothing to write: the quota is off, the caller exempt, or the request a replay.
    Nothing,
}

/// Which entry to release.
#[derive(Debug, Clone, Copy)]
pub(super) enum Entry {
    Booking(Uuid),
    Room(RoomId),
}

/// The digest a ledger keeps of an `Idempotency-Key` (the ledger is the user's, so the user is implied).
fn key_digest(claim: Option<&IdempotencyClaim>) -> Option<String> {
    claim.map(|c| {
        let digest = Sha256::digest(format!("{}\n{}", c.scope, c.key).as_bytes());
        crate::domain::hex(&digest[..16])
    })
}

/// True when a failed write certainly wrote nothing (an unavailable store may have committed).
pub(super) fn definitive(e: &StoreError) -> bool {
    !matches!(e, StoreError::Unavailable { .. })
}

/// Jittered backoff between lost compare-and-sets, so losers spread out instead of colliding again.
async fn backoff(attempt: u32) {
    let cap = (2u64 << attempt.min(5)).min(40);
    let ms = rand::thread_rng().gen_range(0..=cap);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

fn kept_changing() -> SessionError {
    SessionError::Conflict("too many of your requests are changing your quota at once; retry".into())
}

/// What a point read found of a counted entry's entity.
enum Found {
    /// It exists and counts; a booking names its current end.
    Live(Option<DateTime<Utc>>),
    /// It exists and no longer counts (a cancelled or ended booking).
    Done,
    /// It does not exist (yet, or any more).
    Missing,
}

/// The two kinds of ledger entry, so one reservation loop serves both quotas.
trait Counted: Clone + Send + Sync + Sized {
    type Id: Copy + Eq + std::hash::Hash + Send + Sync;
    fn id(&self) -> Self::Id;
    fn key(&self) -> Option<&String>;
    fn reserved_at(&self) -> DateTime<Utc>;
    /// True while it counts without a check (a booking not ended, a room inside the window).
    fn counts_at(&self, now: DateTime<Utc>) -> bool;
    /// Its list in a ledger.
    fn list(ledger: &mut QuotaLedger) -> &mut Vec<Self>;
    /// Adopts what a check found (a booking's moved end).
    fn follow(&mut self, end: Option<DateTime<Utc>>);
    /// The point read of its entity.
    fn look_up(store: &dyn Store, id: Self::Id, now: DateTime<Utc>) -> impl Future<Output = StoreResult<Found>> + Send;
}

impl Counted for LedgerBooking {
    type Id = Uuid;
    fn id(&self) -> Uuid {
        self.id
    }
    fn key(&self) -> Option<&String> {
        self.key.as_ref()
    }
    fn reserved_at(&self) -> DateTime<Utc> {
        self.reserved_at
    }
    fn counts_at(&self, now: DateTime<Utc>) -> bool {
        self.end > now
    }
    fn list(ledger: &mut QuotaLedger) -> &mut Vec<Self> {
        &mut ledger.bookings
    }
    fn follow(&mut self, end: Option<DateTime<Utc>>) {
        self.end = end.unwrap_or(self.end);
    }
    async fn look_up(store: &dyn Store, id: Uuid, now: DateTime<Utc>) -> StoreResult<Found> {
        match store.get_booking(id).await {
            Ok(b) if b.is_live() && b.slot.end() > now => Ok(Found::Live(Some(b.slot.end()))),
            Ok(_) => Ok(Found::Done),
            Err(StoreError::NotFound) => Ok(Found::Missing),
            Err(e) => Err(e),
        }
    }
}

impl Counted for LedgerRoom {
    type Id = RoomId;
    fn id(&self) -> RoomId {
        self.id
    }
    fn key(&self) -> Option<&String> {
        self.key.as_ref()
    }
    fn reserved_at(&self) -> DateTime<Utc> {
        self.reserved_at
    }
    fn counts_at(&self, now: DateTime<Utc>) -> bool {
        self.reserved_at + ROOMS_WINDOW > now
    }
    fn list(ledger: &mut QuotaLedger) -> &mut Vec<Self> {
        &mut ledger.rooms
    }
    fn follow(&mut self, _end: Option<DateTime<Utc>>) {}
    async fn look_up(store: &dyn Store, id: RoomId, _now: DateTime<Utc>) -> StoreResult<Found> {
        match store.get_room(id).await {
            Ok(_) => Ok(Found::Live(None)),
            Err(StoreError::NotFound) => Ok(Found::Missing),
            Err(e) => Err(e),
        }
    }
}

/// The answer at the live bookings quota's `limit`, from a ledger or from a store that counts.
pub(super) fn live_bookings_exceeded(limit: u32) -> SessionError {
    SessionError::QuotaExceeded {
        detail: format!(
            "quota reached: a user may hold at most {limit} live bookings (not cancelled and not yet ended); \
             cancel one or wait until one ends"
        ),
        quota: "live_bookings_per_user",
        limit,
    }
}

impl Sessions {
    /// Reserves a live booking for `charge`'s user in the ledger (see the module docs), on a
    /// store that does not count ([`Store::counts_live_bookings`]). `QuotaExceeded` at the limit.
    pub(super) async fn reserve_booking(
        &self,
        charge: Charge<'_>,
        booking: &Booking,
        claim: Option<&IdempotencyClaim>,
    ) -> Result<Reserved, SessionError> {
        let limit = self.settings.quotas.live_bookings_per_user;
        let key = key_digest(claim);
        let entry = |now| LedgerBooking { id: booking.id, end: booking.slot.end(), reserved_at: now, key: key.clone() };
        self.reserve(charge, limit, entry, |_: &[LedgerBooking], _| live_bookings_exceeded(limit)).await
    }

    /// True when bookings have ledger entries to keep in step: the quota is on and the store
    /// does not count bookings itself.
    pub(super) fn ledger_counts_bookings(&self) -> bool {
        self.settings.quotas.live_bookings_per_user > 0 && !self.store.counts_live_bookings()
    }

    /// Reserves a room creation for `charge`'s user in the ledger (see the module docs).
    /// `QuotaExceeded` at the limit.
    pub(super) async fn reserve_room(
        &self,
        charge: Charge<'_>,
        id: RoomId,
        claim: Option<&IdempotencyClaim>,
    ) -> Result<Reserved, SessionError> {
        let limit = self.settings.quotas.rooms_per_user_per_day;
        let key = key_digest(claim);
        let entry = |now| LedgerRoom { id, reserved_at: now, key: key.clone() };
        let exceeded = |held: &[LedgerRoom], now| {
            let frees_at = held.iter().map(|e| e.reserved_at).min().unwrap_or(now) + ROOMS_WINDOW;
            SessionError::QuotaExceeded {
                detail: format!(
                    "quota reached: a user may create at most {limit} rooms in 24 hours; the next one can be \
                     created from {}",
                    format_instant(frees_at)
                ),
                quota: "rooms_per_user_per_day",
                limit,
            }
        };
        self.reserve(charge, limit, entry, exceeded).await
    }

    /// The reservation loop both quotas share: read (or seed) the ledger, drop what no longer
    /// counts, check the rest at the limit, refuse with `exceeded` or append `entry(now)` and
    /// write the ledger by compare-and-set, again from the read when another writer won.
    async fn reserve<E: Counted>(
        &self,
        charge: Charge<'_>,
        limit: u32,
        entry: impl Fn(DateTime<Utc>) -> E,
        exceeded: impl Fn(&[E], DateTime<Utc>) -> SessionError,
    ) -> Result<Reserved, SessionError> {
        let Charge::User(user) = charge else { return Ok(Reserved::Nothing) };
        if limit == 0 {
            return Ok(Reserved::Nothing);
        }
        let limit = limit as usize;
        // What this call already checked: entries found gone, and entries found live.
        let (mut gone, mut live) = (HashSet::new(), HashSet::new());
        for attempt in 0..LEDGER_ATTEMPTS {
            let now = self.clock.now();
            let new = entry(now);
            let (mut ledger, expected) = match self.store.quota_ledger(user).await? {
                Some(s) => (s.ledger, Some(s.version)),
                None => (self.seed_ledger(user, now).await?, None),
            };
            let held = E::list(&mut ledger);
            if new.key().is_some() && held.iter().any(|e| e.key() == new.key()) {
                return Ok(Reserved::Nothing);
            }
            held.retain(|e| e.counts_at(now) && !gone.contains(&e.id()));
            if held.len() >= limit {
                self.check(held, &mut gone, &mut live, now).await?;
            }
            if held.len() >= limit {
                return Err(exceeded(held, now));
            }
            held.push(new);
            match self.store.put_quota_ledger(user, &ledger, expected).await {
                Ok(_) => return Ok(Reserved::Committed),
                Err(StoreError::PreconditionFailed) => backoff(attempt).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(kept_changing())
    }

    /// Removes `entry` from `user`'s ledger. Best effort: a failure is logged, and the next
    /// reservation at the limit drops the entry anyway (its booking cancelled or missing).
    pub(super) async fn release(&self, user: &str, entry: Entry, why: &str) {
        for attempt in 0..LEDGER_ATTEMPTS {
            let stored = match self.store.quota_ledger(user).await {
                Ok(Some(s)) => s,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, ?entry, why, "cannot release a quota reservation; it heals later");
                    return;
                }
            };
            let mut ledger = stored.ledger;
            let before = (ledger.bookings.len(), ledger.rooms.len());
            match entry {
                Entry::Booking(id) => ledger.bookings.retain(|e| e.id != id),
                Entry::Room(id) => ledger.rooms.retain(|e| e.id != id),
            }
            if before == (ledger.bookings.len(), ledger.rooms.len()) {
                return;
            }
            match self.store.put_quota_ledger(user, &ledger, Some(stored.version)).await {
                Ok(_) => return,
                Err(StoreError::PreconditionFailed) => backoff(attempt).await,
                Err(e) => {
                    tracing::warn!(error = %e, ?entry, why, "cannot release a quota reservation; it heals later");
                    return;
                }
            }
        }
        tracing::warn!(?entry, why, "quota ledger kept changing; the reservation heals later");
    }

    /// Moves the end of booking `id`'s entry in `user`'s ledger (an extension or a shortening),
    /// so the entry counts exactly as long as the booking. Best effort, like [`Self::release`].
    pub(super) async fn follow_end(&self, user: &str, id: Uuid, end: DateTime<Utc>) {
        self.amend(user, id, "cannot move a quota entry's end", |e| std::mem::replace(&mut e.end, end) != end).await
    }

    /// Renames the entry reserved as `reserved` to the id the store gave the booking (a store
    /// may mint its own: Cosmos DB names the room and day in it), so the check at the limit and
    /// a cancel's release find it. Best effort, like [`Self::release`]: an entry left under the
    /// reserved id is dropped [`PENDING_GRACE`] after its reservation, as a dead request's.
    pub(super) async fn follow_id(&self, user: &str, reserved: Uuid, id: Uuid) {
        self.amend(user, reserved, "cannot rename a quota entry to its booking's id", |e| {
            std::mem::replace(&mut e.id, id) != id
        })
        .await
    }

    /// Applies `change` to booking `id`'s entry in `user`'s ledger by compare-and-set (again
    /// from the read when another writer won); `change` answers false when it changed nothing.
    /// Best effort: a failure is logged as `failed`.
    async fn amend(&self, user: &str, id: Uuid, failed: &str, change: impl Fn(&mut LedgerBooking) -> bool) {
        if !self.ledger_counts_bookings() {
            return;
        }
        for attempt in 0..LEDGER_ATTEMPTS {
            let Ok(Some(stored)) = self.store.quota_ledger(user).await else { return };
            let mut ledger = stored.ledger;
            let Some(e) = ledger.bookings.iter_mut().find(|e| e.id == id) else { return };
            if !change(e) {
                return;
            }
            match self.store.put_quota_ledger(user, &ledger, Some(stored.version)).await {
                Err(StoreError::PreconditionFailed) => backoff(attempt).await,
                Err(e) => {
                    tracing::warn!(error = %e, booking_id = %id, "{failed}");
                    return;
                }
                Ok(_) => return,
            }
        }
    }

    /// A user's first ledger: the live bookings it already holds (made before it had a ledger);
    /// none on a store that counts bookings itself, which needs no booking entries.
    async fn seed_ledger(&self, user: &str, now: DateTime<Utc>) -> Result<QuotaLedger, SessionError> {
        if self.store.counts_live_bookings() {
            return Ok(QuotaLedger::default());
        }
        let ahead = TimeSlot::new(now, now + Duration::days(3650))?;
        let bookings = self.store.list_bookings(user, Some(ahead)).await?;
        Ok(QuotaLedger {
            bookings: bookings
                .iter()
                .filter(|b| b.is_live() && b.slot.end() > now)
                .map(|b| LedgerBooking { id: b.id, end: b.slot.end(), reserved_at: b.created_at.min(now), key: None })
                .collect(),
            rooms: vec![],
        })
    }

    /// Checks every entry of `held` not checked yet with a point read: drops those whose entity
    /// no longer counts or is still missing [`PENDING_GRACE`] after its reservation (adding them to
    /// `gone`), and has live ones follow their entity (a booking's end).
    async fn check<E: Counted>(
        &self,
        held: &mut Vec<E>,
        gone: &mut HashSet<E::Id>,
        live: &mut HashSet<E::Id>,
        now: DateTime<Utc>,
    ) -> Result<(), SessionError> {
        let unchecked: Vec<E::Id> = held.iter().map(E::id).filter(|id| !live.contains(id)).collect();
        let found = join_all(unchecked.iter().map(|id| E::look_up(&*self.store, *id, now))).await;
        for (id, found) in unchecked.into_iter().zip(found) {
            let entry = held.iter_mut().find(|e| e.id() == id).expect("an entry of this ledger");
            match found? {
                Found::Live(end) => {
                    entry.follow(end);
                    live.insert(id);
                }
                Found::Done => {
                    gone.insert(id);
                }
                Found::Missing if entry.reserved_at() + PENDING_GRACE <= now => {
                    tracing::info!("dropping a quota reservation whose entity never came");
                    gone.insert(id);
                }
                // Its request may still be writing it.
                Found::Missing => {}
            }
        }
        held.retain(|e| !gone.contains(&e.id()));
        Ok(())
    }
}
