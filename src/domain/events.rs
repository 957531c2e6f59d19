//! The events integrators receive by webhook, as the outbox stores them: each with a stable id
//! and the exact JSON body every delivery attempt sends. Pure.
//!
//! Body: `{"id": "evt_...", "type": "booking.created", "timestamp": RFC 3339, "data": {...}}`
//! (the Standard Webhooks payload shape). Ids are derived from what the event is about (the
//! booking and the fact), so the same event written twice (a retried write, two instances
//! deriving the same fact) has one id, and receivers de-duplicate by it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    Booking, RoomId, format_instant,
    session::{Fact, Presence},
};

/// The kinds of webhook events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    #[serde(rename = "booking.created")]
    BookingCreated,
    #[serde(rename = "booking.cancelled")]
    BookingCancelled,
    /// The booking's end moved (later or earlier).
    #[serde(rename = "booking.extended")]
    BookingExtended,
    #[serde(rename = "session.started")]
    SessionStarted,
    #[serde(rename = "participant.joined")]
    ParticipantJoined,
    #[serde(rename = "participant.left")]
    ParticipantLeft,
    #[serde(rename = "session.ended")]
    SessionEnded,
}

impl EventType {
    /// The name in bodies and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BookingCreated => "booking.created",
            Self::BookingCancelled => "booking.cancelled",
            Self::BookingExtended => "booking.extended",
            Self::SessionStarted => "session.started",
            Self::ParticipantJoined => "participant.joined",
            Self::ParticipantLeft => "participant.left",
            Self::SessionEnded => "session.ended",
        }
    }
}

/// An event in the outbox: what to send, about which booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// `evt_` and 32 hex digits; also the `webhook-id` header.
    pub id: String,
    pub event_type: EventType,
    pub booking_id: Uuid,
    /// The booked room: the store keeps the event with its booking.
    pub room_id: RoomId,
    /// When what it reports happened.
    pub at: DateTime<Utc>,
    /// The exact JSON body sent (and signed) on every attempt.
    pub body: String,
}

impl OutboxEvent {
    /// An event `event_type` about `booking`, identified by `key` (unique per booking), with `data`.
    pub fn new(
        event_type: EventType,
        booking_id: Uuid,
        room_id: RoomId,
        key: &str,
        at: DateTime<Utc>,
        data: Value,
    ) -> Self {
        let id = event_id(booking_id, key);
        let body = json!({
            "id": id,
            "type": event_type.as_str(),
            "timestamp": format_instant(at),
            "data": data,
        })
        .to_string();
        Self { id, event_type, booking_id, room_id, at, body }
    }

    /// `booking.created`, stamped with the booking's creation.
    pub fn booking_created(b: &Booking) -> Self {
        Self::new(EventType::BookingCreated, b.id, b.room_id, "booking.created", b.created_at, booking_data(b))
    }

    /// `booking.cancelled` at `at`.
    pub fn booking_cancelled(b: &Booking, at: DateTime<Utc>) -> Self {
        Self::new(EventType::BookingCancelled, b.id, b.room_id, "booking.cancelled", at, booking_data(b))
    }

    /// `booking.extended` at `at`: `b` as it is now, with the end it had before.
    pub fn booking_extended(b: &Booking, previous_end: DateTime<Utc>, at: DateTime<Utc>) -> Self {
        let mut data = booking_data(b);
        data["previous_end_time"] = json!(format_instant(previous_end));
        let key = format!("booking.extended:{}:{}", previous_end.timestamp_micros(), b.slot.end().timestamp_micros());
        Self::new(EventType::BookingExtended, b.id, b.room_id, &key, at, data)
    }

    /// The event announcing `fact` of `booking_id`'s session.
    pub fn session_fact(booking_id: Uuid, room_id: RoomId, fact: &Fact) -> Self {
        let base = json!({ "booking_id": booking_id, "room_id": room_id.get() });
        let with = |mut extra: Value| {
            if let (Some(b), Some(e)) = (base.as_object(), extra.as_object_mut()) {
                for (k, v) in b {
                    e.insert(k.clone(), v.clone());
                }
            }
            extra
        };
        let key = fact.key();
        match fact {
            Fact::Started { at } => Self::new(
                EventType::SessionStarted,
                booking_id,
                room_id,
                &key,
                *at,
                with(json!({ "started_at": format_instant(*at) })),
            ),
            Fact::Joined(p) => Self::new(
                EventType::ParticipantJoined,
                booking_id,
                room_id,
                &key,
                p.joined_at.unwrap_or_default(),
                with(participant_data(p)),
            ),
            Fact::Left(p) => Self::new(
                EventType::ParticipantLeft,
                booking_id,
                room_id,
                &key,
                p.left_at.unwrap_or_default(),
                with(participant_data(p)),
            ),
            Fact::Ended { started_at, at } => Self::new(
                EventType::SessionEnded,
                booking_id,
                room_id,
                &key,
                *at,
                with(json!({
                    "started_at": started_at.map(format_instant),
                    "ended_at": format_instant(*at),
                    "duration_seconds": started_at.map(|s| (*at - s).num_seconds()),
                })),
            ),
        }
    }
}

/// `evt_` and the first 32 hex digits of SHA-256(booking id, key).
fn event_id(booking_id: Uuid, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(booking_id.as_bytes());
    h.update(key.as_bytes());
    format!("evt_{}", super::hex(&h.finalize()[..16]))
}

fn booking_data(b: &Booking) -> Value {
    json!({
        "booking_id": b.id,
        "room_id": b.room_id.get(),
        "owner": b.owner,
        "start_time": format_instant(b.slot.start()),
        "end_time": format_instant(b.slot.end()),
        "cancelled_at": b.cancelled_at.map(format_instant),
    })
}

fn participant_data(p: &Presence) -> Value {
    json!({
        "role": p.role,
        "display": p.display,
        "joined_at": p.joined_at.map(format_instant),
        "left_at": p.left_at.map(format_instant),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TimeSlot;

    fn booking() -> Booking {
        let t = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        Booking {
            id: Uuid::new_v4(),
            room_id: RoomId::new(42).unwrap(),
            owner: "alice".into(),
            slot: TimeSlot::new(t, t + chrono::Duration::hours(1)).unwrap(),
            created_at: t,
            cancelled_at: None,
            access: Default::default(),
        }
    }

    #[test]
    fn ids_are_stable_per_booking_and_fact_and_bodies_carry_them() {
        let b = booking();
        let a = OutboxEvent::booking_created(&b);
        assert_eq!(a, OutboxEvent::booking_created(&b));
        assert_ne!(a.id, OutboxEvent::booking_created(&booking()).id);
        assert!(a.id.starts_with("evt_") && a.id.len() == 36);
        let body: Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(body["id"], a.id.as_str());
        assert_eq!(body["type"], "booking.created");
        assert_eq!(body["data"]["booking_id"], b.id.to_string());
        assert_eq!(body["data"]["end_time"], format_instant(b.slot.end()));
    }

    #[test]
    fn each_end_move_is_its_own_event() {
        let b = booking();
        let mut later = b.clone();
        later.slot = TimeSlot::new(b.slot.start(), b.slot.end() + chrono::Duration::minutes(30)).unwrap();
        let e1 = OutboxEvent::booking_extended(&later, b.slot.end(), b.created_at);
        let body: Value = serde_json::from_str(&e1.body).unwrap();
        assert_eq!(body["data"]["previous_end_time"], format_instant(b.slot.end()));
        let mut back = later.clone();
        back.slot = b.slot;
        assert_ne!(e1.id, OutboxEvent::booking_extended(&back, later.slot.end(), b.created_at).id);
    }
}
