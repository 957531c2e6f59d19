//! Keyset pages: the types of the paged list operations ([`super::Store::rooms_page`],
//! [`super::Store::bookings_page`], [`super::Store::deliveries_page`]).
//!
//! A page is "at most `limit` items strictly after a key, in the list's order". The key is the
//! last item's sort key, so a page costs one index range read however deep it is, and a row added
//! or removed between two pages moves nothing: every row that exists for the whole walk is seen
//! exactly once (rows added behind the walk's position are not seen, rows added ahead are).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Delivery;
use crate::domain::{Booking, BookingStatus, Room, RoomId, TimeSlot};

/// Where a rooms page starts after: rooms are listed by creation time, then id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoomKey {
    pub created_at: DateTime<Utc>,
    pub id: RoomId,
}

impl RoomKey {
    /// The key of `room`.
    pub fn of(room: &Room) -> Self {
        Self { created_at: room.created_at, id: room.id }
    }
}

/// Where a bookings page starts after: bookings are listed by start, then id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BookingKey {
    pub start: DateTime<Utc>,
    pub id: Uuid,
}

impl BookingKey {
    /// The key of `booking`.
    pub fn of(booking: &Booking) -> Self {
        Self { start: booking.slot.start(), id: booking.id }
    }
}

/// Where a deliveries page starts after: deliveries are listed newest event first (`at`
/// descending), then by event id descending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryKey {
    pub at: DateTime<Utc>,
    pub id: String,
}

impl DeliveryKey {
    /// The key of `delivery`.
    pub fn of(delivery: &Delivery) -> Self {
        Self { at: delivery.event.at, id: delivery.event.id.clone() }
    }

    /// True when `other` comes after `self` in the list's order.
    pub fn precedes(&self, other: &DeliveryKey) -> bool {
        (other.at, other.id.as_str()) < (self.at, self.id.as_str())
    }
}

/// Which bookings `bookings_page` lists: one owner's, all present filters holding.
#[derive(Debug, Clone)]
pub struct BookingQuery {
    pub owner: String,
    /// Only bookings overlapping this slot.
    pub during: Option<TimeSlot>,
    /// Only bookings with this status at `now`.
    pub status: Option<BookingStatus>,
    /// The instant `status` is judged at.
    pub now: DateTime<Utc>,
}
