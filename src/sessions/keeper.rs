//! The reconciler's side of the layer: [`SessionKeeper::converge`] makes one running host hold
//! exactly the session rooms it should, from the store and the host's own room list.
//!
//! - **Close.** Every room on the host whose description names a booking and generation
//!   ([`super::credentials::parse`]) is kept only while that booking's session is wanted there:
//!   the booking is live, its join window has opened, its session has not closed (end plus
//!   grace, clipped at the room's next booking), the generation is current, and the booking is
//!   assigned to this host. Anything else is destroyed with the room's derived secret: sessions
//!   that ended, cancelled bookings, rotated credentials, deleted rooms. Rooms this service did
//!   not make are left alone.
//! - **Open.** Every booking planned on the host whose session is wanted gets its room (created
//!   when missing) and its assignment marked ready.
//!
//! - **Check who is there.** The session records of the host's bookings are compared with
//!   Janus (see [`Sessions::check_participants`]): the gaps Janus's events left are filled.
//!
//! Asking Janus for the room list (one request with the VideoRoom `admin_key`) rather than
//! trusting a record of what was created means nothing can leak: a room created by a request
//! that crashed, a destroy that failed, a booking deleted with its room, all are found here.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Sessions, credentials, room_spec};
use crate::{
    domain::{Booking, RoomId},
    fleet::{KeeperReport, SessionKeeper, janus_hosts::JanusHost},
    store::{Assignment, OpAction, StoreError},
};

/// For each booking, the start of the next live booking of the same room at or after its end.
fn next_starts(bookings: &[Booking]) -> HashMap<Uuid, DateTime<Utc>> {
    let mut by_room: HashMap<RoomId, Vec<&Booking>> = HashMap::new();
    for b in bookings.iter().filter(|b| b.is_live()) {
        by_room.entry(b.room_id).or_default().push(b);
    }
    let mut next = HashMap::new();
    for list in by_room.values_mut() {
        list.sort_by_key(|b| b.slot.start());
        for (i, b) in list.iter().enumerate() {
            if let Some(n) = list[i + 1..].iter().find(|n| n.slot.start() >= b.slot.end()) {
                next.insert(b.id, n.slot.start());
            }
        }
    }
    next
}

#[async_trait]
impl SessionKeeper for Sessions {
    async fn converge(
        &self,
        host: &JanusHost,
        serving: &[&Booking],
        bookings: &[Booking],
        assignments: &HashMap<Uuid, Assignment>,
        now: DateTime<Utc>,
    ) -> KeeperReport {
        let mut report = KeeperReport::default();
        let janus = self.hosting.janus();
        let rooms = match janus.rooms_on(host).await {
            Ok(r) => r,
            Err(e) => {
                report.errors.push(format!("listing the rooms of {}: {e}", host.name));
                return report;
            }
        };
        let by_id: HashMap<Uuid, &Booking> = bookings.iter().map(|b| (b.id, b)).collect();
        let next = next_starts(bookings);
        let present: HashSet<u64> = rooms.iter().map(|r| r.room).collect();

        for room in &rooms {
            let Some((booking_id, generation)) = credentials::parse(&room.description) else { continue };
            let (booking, assigned) = match by_id.get(&booking_id) {
                Some(b) => (Some((*b).clone()), assignments.get(&booking_id).map(|a| a.host.clone())),
                // Not among the live bookings read for this run: cancelled, deleted, or made
                // after the read. The store decides.
                None => match self.store.get_booking(booking_id).await {
                    Ok(b) => match self.store.assignments(&[booking_id]).await {
                        Ok(mut a) => (Some(b), a.pop().map(|a| a.host)),
                        Err(e) => {
                            report.errors.push(format!("reading the assignment of booking {booking_id}: {e}"));
                            continue;
                        }
                    },
                    Err(StoreError::NotFound) => (None, None),
                    Err(e) => {
                        report.errors.push(format!("reading booking {booking_id}: {e}"));
                        continue;
                    }
                },
            };
            let keep = booking.as_ref().is_some_and(|b| {
                generation == b.access.generation
                    && self.key.credentials(b.id, generation).room.get() == room.room
                    && assigned.as_deref() == Some(host.name.as_str())
                    && self.wanted(b, next.get(&b.id).copied(), now)
            });
            if keep {
                continue;
            }
            let Ok(id) = RoomId::new(room.room) else { continue };
            let started = std::time::Instant::now();
            let result = janus.destroy_room(host, room.room, &self.key.room_secret(id)).await;
            match &result {
                Ok(()) => report.closed.push(room.room),
                Err(e) => report.errors.push(format!("closing room {} of booking {booking_id}: {e}", room.room)),
            }
            if let (Some(b), true) = (&booking, result.is_ok()) {
                self.note_closed(b, room.room).await;
            }
            match &booking {
                Some(b) => self.log(OpAction::CloseSession, Some(&host.name), b, &result, started).await,
                None => {
                    tracing::info!(host = %host.name, room = room.room, %booking_id, "closed the room of a deleted booking")
                }
            }
        }

        for b in serving {
            if !self.wanted(b, next.get(&b.id).copied(), now) {
                continue;
            }
            let creds = self.credentials(b);
            let ready = assignments.get(&b.id).is_some_and(|a| a.host == host.name && a.ready_at.is_some());
            if present.contains(&creds.room.get()) {
                // Rooms the reconciler opens are looked up by events like the ones joins open.
                if !ready {
                    if let Err(e) = self.note_session_room(b, b.access.generation).await {
                        report.errors.push(format!("recording the session room of booking {}: {e}", b.id));
                    }
                }
                if !ready {
                    match self.hosting.mark_ready(b, host).await {
                        Ok(()) => report.marked_ready.push(b.id),
                        Err(e) => report.not_ready.push((b.id, format!("storing readiness: {e}"))),
                    }
                }
                continue;
            }
            if let Err(e) = self.note_session_room(b, b.access.generation).await {
                report.not_ready.push((b.id, format!("recording the session room: {e}")));
                continue;
            }
            let started = std::time::Instant::now();
            let result = janus.ensure_room(host, &room_spec(&creds)).await;
            self.log(OpAction::OpenSession, Some(&host.name), b, &result, started).await;
            let result = match result {
                Ok(()) => self.hosting.mark_ready(b, host).await.map_err(|e| format!("storing readiness: {e}")),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) => report.opened.push(b.id),
                Err(e) => report.not_ready.push((b.id, e)),
            }
        }

        let closed: HashSet<u64> = report.closed.iter().copied().collect();
        let errors = self.check_participants(host, &rooms, &closed, &by_id, assignments, now).await;
        report.errors.extend(errors);
        report
    }

    async fn host_stopped(
        &self,
        host: &str,
        serving: &[&Booking],
        assignments: &HashMap<Uuid, Assignment>,
        now: DateTime<Utc>,
    ) {
        self.end_presences_on(host, serving, assignments, now).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TimeSlot;
    use chrono::Duration;

    fn booking(room: u64, start: i64, end: i64) -> Booking {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        Booking {
            id: Uuid::new_v4(),
            room_id: RoomId::new(room).unwrap(),
            owner: "o".into(),
            slot: TimeSlot::new(t0 + Duration::minutes(start), t0 + Duration::minutes(end)).unwrap(),
            created_at: t0,
            cancelled_at: None,
            access: Default::default(),
        }
    }

    #[test]
    fn the_next_booking_is_the_same_rooms_first_one_after_the_end() {
        let a = booking(1, 0, 60);
        let b = booking(1, 60, 90);
        let c = booking(1, 120, 150);
        let other_room = booking(2, 60, 70);
        let mut cancelled = booking(1, 90, 100);
        cancelled.cancelled_at = Some(a.created_at);
        let next = next_starts(&[c.clone(), a.clone(), other_room.clone(), cancelled, b.clone()]);
        assert_eq!(next.get(&a.id), Some(&b.slot.start()));
        assert_eq!(next.get(&b.id), Some(&c.slot.start()), "the cancelled booking does not count");
        assert_eq!(next.get(&c.id), None);
        assert_eq!(next.get(&other_room.id), None);
    }
}
