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
//!
//! A request that carries an `Idempotency-Key` already in the ledger (a retry) reserves nothing:
//! replays never consume quota, even at the limit. A cancel releases its booking's entry, and an
//! extension moves the entry's end; both best effort, as step 1 corrects what they miss.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use futures::future::join_all;
use rand::Rng;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{SessionError, Sessions};
use crate::domain::{Booking, RoomId, TimeSlot, format_instant};
use crate::store::{IdempotencyClaim, LedgerBooking, LedgerRoom, QuotaLedger, StoreError};

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

/// What a reservation left in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    /// An entry for the new entity: settle it after the write.
    Reserved,
    /// Nothing: the quota is off, the caller exempt, or the request a replay.
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
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
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

impl Sessions {
    /// Reserves a live booking for `booking.owner` in the ledger (see the module docs).
    /// `QuotaExceeded` at the limit.
    pub(super) async fn reserve_booking(
        &self,
        charge: Charge<'_>,
        booking: &Booking,
        claim: Option<&IdempotencyClaim>,
    ) -> Result<Held, SessionError> {
        let limit = self.settings.quotas.live_bookings_per_user as usize;
        let Charge::User(user) = charge else { return Ok(Held::Nothing) };
        if limit == 0 {
            return Ok(Held::Nothing);
        }
        let key = key_digest(claim);
        // What this call already checked: entries found gone, and entries found live.
        let (mut gone, mut live) = (HashSet::new(), HashSet::new());
        for attempt in 0..LEDGER_ATTEMPTS {
            let now = self.clock.now();
            let (mut ledger, version) = match self.store.quota_ledger(user).await? {
                Some(s) => (s.ledger, Some(s.version)),
                None => (self.seed_ledger(user, now).await?, None),
            };
            if key.is_some() && ledger.bookings.iter().any(|e| e.key == key) {
                return Ok(Held::Nothing);
            }
            ledger.bookings.retain(|e| e.end > now && !gone.contains(&e.id));
            if ledger.bookings.len() >= limit {
                self.check_bookings(&mut ledger, &mut gone, &mut live, now).await?;
            }
            if ledger.bookings.len() >= limit {
                return Err(SessionError::QuotaExceeded {
                    detail: format!(
                        "quota reached: a user may hold at most {limit} live bookings (not cancelled and not yet \
                         ended); cancel one or wait until one ends"
                    ),
                    quota: "live_bookings_per_user",
                    limit: limit as u32,
                });
            }
            ledger.bookings.push(LedgerBooking {
                id: booking.id,
                end: booking.slot.end(),
                reserved_at: now,
                key: key.clone(),
            });
            match self.store.put_quota_ledger(user, &ledger, version).await {
                Ok(_) => return Ok(Held::Reserved),
                Err(StoreError::PreconditionFailed) => backoff(attempt).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(kept_changing())
    }

    /// Reserves a room creation for `user` in the ledger (see the module docs). `QuotaExceeded`
    /// at the limit.
    pub(super) async fn reserve_room(
        &self,
        charge: Charge<'_>,
        id: RoomId,
        claim: Option<&IdempotencyClaim>,
    ) -> Result<Held, SessionError> {
        let limit = self.settings.quotas.rooms_per_user_per_day as usize;
        let Charge::User(user) = charge else { return Ok(Held::Nothing) };
        if limit == 0 {
            return Ok(Held::Nothing);
        }
        let key = key_digest(claim);
        let (mut gone, mut live) = (HashSet::new(), HashSet::new());
        for attempt in 0..LEDGER_ATTEMPTS {
            let now = self.clock.now();
            let (mut ledger, version) = match self.store.quota_ledger(user).await? {
                Some(s) => (s.ledger, Some(s.version)),
                None => (self.seed_ledger(user, now).await?, None),
            };
            if key.is_some() && ledger.rooms.iter().any(|e| e.key == key) {
                return Ok(Held::Nothing);
            }
            ledger.rooms.retain(|e| e.reserved_at + ROOMS_WINDOW > now && !gone.contains(&e.id));
            if ledger.rooms.len() >= limit {
                self.check_rooms(&mut ledger, &mut gone, &mut live, now).await?;
            }
            if ledger.rooms.len() >= limit {
                let frees_at = ledger.rooms.iter().map(|e| e.reserved_at).min().unwrap_or(now) + ROOMS_WINDOW;
                return Err(SessionError::QuotaExceeded {
                    detail: format!(
                        "quota reached: a user may create at most {limit} rooms in 24 hours; the next one can be \
                         created from {}",
                        format_instant(frees_at)
                    ),
                    quota: "rooms_per_user_per_day",
                    limit: limit as u32,
                });
            }
            ledger.rooms.push(LedgerRoom { id, reserved_at: now, key: key.clone() });
            match self.store.put_quota_ledger(user, &ledger, version).await {
                Ok(_) => return Ok(Held::Reserved),
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
        if self.settings.quotas.live_bookings_per_user == 0 {
            return;
        }
        for attempt in 0..LEDGER_ATTEMPTS {
            let Ok(Some(stored)) = self.store.quota_ledger(user).await else { return };
            let mut ledger = stored.ledger;
            let Some(e) = ledger.bookings.iter_mut().find(|e| e.id == id) else { return };
            if e.end == end {
                return;
            }
            e.end = end;
            match self.store.put_quota_ledger(user, &ledger, Some(stored.version)).await {
                Err(StoreError::PreconditionFailed) => backoff(attempt).await,
                Err(e) => {
                    tracing::warn!(error = %e, booking_id = %id, "cannot move a quota entry's end");
                    return;
                }
                Ok(_) => return,
            }
        }
    }

    /// A user's first ledger: the live bookings it already holds (made before it had a ledger).
    async fn seed_ledger(&self, user: &str, now: DateTime<Utc>) -> Result<QuotaLedger, SessionError> {
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

    /// Checks every booking entry not checked yet with a point read: drops cancelled, ended and
    /// long-missing ones (adding them to `gone`), and moves each live one's end to the booking's.
    async fn check_bookings(
        &self,
        ledger: &mut QuotaLedger,
        gone: &mut HashSet<Uuid>,
        live: &mut HashSet<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<(), SessionError> {
        let unchecked: Vec<Uuid> = ledger.bookings.iter().map(|e| e.id).filter(|id| !live.contains(id)).collect();
        let found = join_all(unchecked.iter().map(|id| self.store.get_booking(*id))).await;
        for (id, found) in unchecked.into_iter().zip(found) {
            let entry = ledger.bookings.iter_mut().find(|e| e.id == id).expect("an entry of this ledger");
            match found {
                Ok(b) if b.is_live() && b.slot.end() > now => {
                    entry.end = b.slot.end();
                    live.insert(id);
                }
                Ok(_) => {
                    gone.insert(id);
                }
                Err(StoreError::NotFound) if entry.reserved_at + PENDING_GRACE <= now => {
                    tracing::info!(booking_id = %id, "dropping a quota reservation whose booking never came");
                    gone.insert(id);
                }
                // Its request may still be writing it.
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        ledger.bookings.retain(|e| !gone.contains(&e.id));
        Ok(())
    }

    /// Checks every room entry not checked yet with a point read: drops long-missing ones (their
    /// request died, or an admin deleted the room).
    async fn check_rooms(
        &self,
        ledger: &mut QuotaLedger,
        gone: &mut HashSet<RoomId>,
        live: &mut HashSet<RoomId>,
        now: DateTime<Utc>,
    ) -> Result<(), SessionError> {
        let unchecked: Vec<(RoomId, DateTime<Utc>)> =
            ledger.rooms.iter().filter(|e| !live.contains(&e.id)).map(|e| (e.id, e.reserved_at)).collect();
        let found = join_all(unchecked.iter().map(|(id, _)| self.store.get_room(*id))).await;
        for ((id, reserved_at), found) in unchecked.into_iter().zip(found) {
            match found {
                Ok(_) => {
                    live.insert(id);
                }
                Err(StoreError::NotFound) if reserved_at + PENDING_GRACE <= now => {
                    gone.insert(id);
                }
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        ledger.rooms.retain(|e| !gone.contains(&e.id));
        Ok(())
    }
}
