//! Writing a history of bookings in bulk, for `benches/cosmos.rs`: the documents booking them one
//! by one would leave (the same day documents, room day lists and owner index documents, built by
//! the same functions), in point writes instead of one transactional batch per booking.
//!
//! Why it exists: the SDK's in-memory emulator copies a whole physical partition for every
//! transactional batch, so seeding 100,000 bookings through [`Store::book_room`](super::Store)
//! slows down with every booking written (measured: 254 bookings/s at the first thousand, 60/s at
//! the fifth, at 4.0 requests each throughout). The service itself has no such cost; the store's
//! requests per booking stay constant. Not for production: it takes no idempotency key, writes no
//! outbox event, and skips find-or-create's hints.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::super::{StoreError, StoreResult};
use super::CosmosStore;
use super::documents::{DayDoc, Entry, day_doc_id, day_pk, days_of, mint_booking_id};
use super::schedule::{Extras, Outcome, conflict};
use super::sdk::{Fresh, In, backoff, busy};
use crate::domain::Booking;

impl CosmosStore {
    /// Stores `bookings` as [`Store::book_room`](super::Store) without a key would, and answers
    /// them with the ids they got (minted for their room and day, as `book_room` mints them).
    /// `Conflict` when one overlaps a booking of its room. Bookings of one room should come in
    /// one call: two calls writing one room's day at once only retry each other.
    #[doc(hidden)]
    pub async fn seed_bookings(&self, bookings: &[Booking]) -> StoreResult<Vec<Booking>> {
        let mut out = Vec::with_capacity(bookings.len());
        let mut by_day: BTreeMap<(u64, NaiveDate), Vec<Booking>> = BTreeMap::new();
        for b in bookings {
            let b = Booking { id: mint_booking_id(b.room_id, b.slot.start())?, ..b.clone() };
            let days = days_of(b.slot);
            if days.len() > 1 {
                // A booking that spills into later days takes the one-by-one path.
                match self.book_in(&b, b.room_id, Extras::default(), None).await? {
                    Outcome::Booked(b, _) => out.push(b),
                    Outcome::Conflict(m) => return Err(StoreError::Conflict(m)),
                    Outcome::Fenced | Outcome::OfferGone => {
                        return Err(StoreError::Internal("a seeded booking took a key or an offer".into()));
                    }
                }
                continue;
            }
            by_day.entry((b.room_id.get(), days[0])).or_default().push(b);
        }
        for ((_, day), group) in by_day {
            self.seed_day(day, &group).await?;
            // The room's day list as each booking's confirmation leaves it: the first adds the day,
            // the others find it there.
            self.confirm(&group[0]).await?;
            for b in &group {
                self.index_owner(b, None).await;
            }
            out.extend(group);
        }
        Ok(out)
    }

    /// Adds `group` (bookings of one room starting and ending on `day`) to the room's day
    /// document in one guarded write, checking each against the overlap rule as `place` does.
    async fn seed_day(&self, day: NaiveDate, group: &[Booking]) -> StoreResult<()> {
        let room = group[0].room_id;
        for attempt in 0..self.tuning.contention_attempts {
            let read = self.c.read::<DayDoc>(In::Rooms, &day_pk(day), &day_doc_id(room), Fresh::Session).await?;
            let mut next = read.as_ref().map(|(d, _)| d.clone()).unwrap_or_else(|| DayDoc::empty(room, day));
            if next.entry(group[0].id).is_some() {
                // Our write landed though its answer was lost.
                return Ok(());
            }
            for b in group {
                if let Some((_, s, e)) = next.overlapping(b.slot.start(), b.slot.end(), b.id)? {
                    return Err(conflict(room, s, e));
                }
                next.bookings.push(Entry::new(b));
            }
            next.touch()?;
            let written = match &read {
                Some((_, etag)) => self.c.replace(In::Rooms, &next.pk, &next.id, &next, etag).await,
                None => self.c.create(In::Rooms, &next.pk, &next.id, &next).await,
            };
            match written {
                Ok(_) => return Ok(()),
                Err(f) if matches!(f.status, 409 | 412) || f.unknown_outcome() => backoff(attempt).await,
                Err(f) => return Err(f.error),
            }
        }
        Err(busy(format!("room {room} kept changing")))
    }
}
