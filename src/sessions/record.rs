//! The sessions layer's record of what happened: every observation of a session (Janus's
//! events, the reconciler's checks, the layer's own closes and late rejoins) is merged into the
//! booking's [`SessionRecord`] by [`Sessions::observe`], which also puts the facts the record
//! newly establishes (session started, participant joined or left, session ended) into the
//! webhook outbox, in the same store write (compare-and-set, retried when another writer won).
//!
//! - [`Sessions::record_janus_events`]: Janus's VideoRoom events, each mapped to its booking by
//!   the session room lookup written when the room was opened ([`Sessions::note_session_room`]),
//!   and to a role by the participant id the service handed out. A participant that joined with
//!   another id is recorded with no role.
//! - [`Sessions::check_participants`] (the reconciler, per running host): where the record and
//!   Janus disagree on who is in a room, Janus's list wins (`Seen`, `Gone`); a room that is gone
//!   with people recorded in it is `Closed`.
//! - [`Sessions::host_stopped`]: a host that is off holds nobody.
//!
//! Observations are facts about an instant, so merging them in any order gives the same record
//! (see [`crate::domain::session`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{SessionError, Sessions, credentials};
use crate::{
    domain::{
        Booking, RoomId,
        events::OutboxEvent,
        session::{Fact, Observation, ObservationKind, SessionRecord, Summary},
    },
    fleet::janus_hosts::JanusHost,
    janus::{
        ListedRoom,
        events::{RoomEvent, RoomEventKind},
    },
    store::{Assignment, SessionRoom, StoreError},
};

/// Attempts of a record's compare-and-set that keeps losing to other writers.
const RECORD_ATTEMPTS: usize = 8;

/// What [`Sessions::record_janus_events`] did with a post.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Events recorded (new to their records).
    pub recorded: usize,
    /// Events about rooms that are no session room of this service (or that it forgot).
    pub unknown_rooms: usize,
}

impl Sessions {
    /// Records that Janus room `janus_room` belongs to `booking` in `generation` (before the
    /// room is created, so no event about it can come first).
    pub(super) async fn note_session_room(&self, booking: &Booking, generation: u32) -> Result<(), SessionError> {
        let room = SessionRoom {
            janus_room: self.key.credentials(booking.id, generation).room.get(),
            booking_id: booking.id,
            room_id: booking.room_id,
            generation,
        };
        Ok(self.store.put_session_room(&room).await?)
    }

    /// What the booking's session record says (an empty summary when nothing was recorded).
    pub async fn session_summary(&self, booking: &Booking) -> Result<Summary, SessionError> {
        Ok(self
            .store
            .session_record(booking.room_id, booking.id)
            .await?
            .map(|r| r.record.summary())
            .unwrap_or_default())
    }

    /// Merges `observations` into the session record of `booking_id` (booked in `room_id`) and,
    /// in the same write, announces the facts the record newly establishes (when webhooks are on;
    /// facts are marked announced either way, so switching webhooks on later does not replay the
    /// past). Returns how many observations were new. Idempotent.
    pub async fn observe(
        &self,
        booking_id: Uuid,
        room_id: RoomId,
        observations: Vec<Observation>,
    ) -> Result<usize, SessionError> {
        if observations.is_empty() {
            return Ok(0);
        }
        for _ in 0..RECORD_ATTEMPTS {
            let stored = self.store.session_record(room_id, booking_id).await?;
            let (mut record, expected) = match stored {
                Some(s) => (s.record, Some(s.version)),
                None => (SessionRecord::new(booking_id, room_id), None),
            };
            let added = record.merge(observations.iter().cloned());
            if added == 0 {
                return Ok(0);
            }
            let facts: Vec<Fact> =
                record.summary().facts().into_iter().filter(|f| !record.announced.contains(&f.key())).collect();
            record.announced.extend(facts.iter().map(Fact::key));
            let outbox: Vec<OutboxEvent> = match &self.webhooks {
                Some(_) => facts.iter().map(|f| OutboxEvent::session_fact(booking_id, room_id, f)).collect(),
                None => vec![],
            };
            let now = self.clock.now();
            let written = match self.store.put_session_record(&record, expected, &outbox, now).await {
                // The events exist already (announced by a write this one raced): the record alone.
                Err(StoreError::AlreadyExists) => self.store.put_session_record(&record, expected, &[], now).await,
                other => other,
            };
            match written {
                Ok(_) => {
                    for f in &facts {
                        tracing::info!(booking_id = %booking_id, fact = %f.key(), "session fact recorded");
                    }
                    self.deliver(&outbox);
                    return Ok(added);
                }
                Err(StoreError::PreconditionFailed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SessionError::Conflict("the session record kept changing while this request ran; retry".into()))
    }

    /// Records a post of Janus's events (already parsed and checked whole): each event about a
    /// session room becomes an observation of its booking's session.
    pub async fn record_janus_events(&self, events: Vec<RoomEvent>) -> Result<IngestReport, SessionError> {
        let mut rooms: HashMap<u64, Option<SessionRoom>> = HashMap::new();
        let mut by_booking: BTreeMap<Uuid, (RoomId, Vec<Observation>)> = BTreeMap::new();
        let mut report = IngestReport::default();
        for e in events {
            let room = match rooms.get(&e.room) {
                Some(r) => r.clone(),
                None => {
                    let r = self.store.session_room(e.room).await?;
                    rooms.insert(e.room, r.clone());
                    r
                }
            };
            let Some(room) = room else {
                report.unknown_rooms += 1;
                continue;
            };
            let role_of = |p: u64| self.key.role_of(room.booking_id, room.generation, p);
            let obs = match e.kind {
                RoomEventKind::Joined { participant, display } => Observation::participant(
                    e.at,
                    ObservationKind::Joined,
                    e.room,
                    participant,
                    role_of(participant),
                    display,
                ),
                RoomEventKind::Left { participant } => Observation::participant(
                    e.at,
                    ObservationKind::Left,
                    e.room,
                    participant,
                    role_of(participant),
                    None,
                ),
                RoomEventKind::Destroyed => Observation::room(e.at, ObservationKind::Closed, e.room),
            };
            by_booking.entry(room.booking_id).or_insert_with(|| (room.room_id, vec![])).1.push(obs);
        }
        for (booking, (room_id, obs)) in by_booking {
            report.recorded += self.observe(booking, room_id, obs).await?;
        }
        Ok(report)
    }

    /// After the layer destroyed `janus_room` of `booking`: the people the record still has in
    /// it are out (Janus says so too, with `destroyed`, when its events reach the service).
    pub(super) async fn note_closed(&self, booking: &Booking, janus_room: u64) {
        let occupied = match self.session_summary(booking).await {
            Ok(s) => s.presences.iter().any(|p| p.room == janus_room && p.left_at.is_none()),
            Err(e) => {
                tracing::warn!(booking_id = %booking.id, error = %e, "cannot read the session record");
                return;
            }
        };
        if occupied {
            let obs = Observation::room(self.clock.now(), ObservationKind::Closed, janus_room);
            if let Err(e) = self.observe(booking.id, booking.room_id, vec![obs]).await {
                tracing::warn!(booking_id = %booking.id, error = %e, "cannot record the session room's close");
            }
        }
    }

    /// A late rejoin: someone wants into `booking`'s session while its host is off. When the
    /// session had ended (so its host may have been released early), the record notes that it
    /// is wanted again: the reconciler then starts the host (see [`Summary::released_at`]).
    pub(super) async fn note_wanted(&self, booking: &Booking, now: DateTime<Utc>) {
        if now < booking.slot.start() {
            return;
        }
        match self.session_summary(booking).await {
            Ok(s)
                if s.ended_at.is_some()
                    && s.wanted_at.is_none_or(|w| s.ended_at > Some(w) || now - w >= chrono::Duration::minutes(1)) =>
            {
                let room = self.credentials(booking).room.get();
                let obs = Observation::room(now, ObservationKind::Wanted, room);
                match self.observe(booking.id, booking.room_id, vec![obs]).await {
                    Ok(_) => {
                        tracing::info!(booking_id = %booking.id, "late rejoin: the session's host is wanted again")
                    }
                    Err(e) => tracing::warn!(booking_id = %booking.id, error = %e, "cannot record a late rejoin"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(booking_id = %booking.id, error = %e, "cannot read the session record"),
        }
    }

    /// The reconciler's participant check on one running host: for each booking served there
    /// (and each session room the host holds), compares who the record has in a room with
    /// Janus. Rooms whose publisher count agrees with the record cost nothing more; otherwise
    /// Janus's participant list is read and its answer recorded. Returns what could not be done.
    pub(super) async fn check_participants(
        &self,
        host: &JanusHost,
        rooms: &[ListedRoom],
        closed: &HashSet<u64>,
        bookings: &HashMap<Uuid, &Booking>,
        assignments: &HashMap<Uuid, Assignment>,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        let present: HashMap<u64, &ListedRoom> =
            rooms.iter().filter(|r| !closed.contains(&r.room)).map(|r| (r.room, r)).collect();
        let mut rooms_of: HashMap<Uuid, Vec<&ListedRoom>> = HashMap::new();
        for r in present.values() {
            if let Some((b, _)) = credentials::parse(&r.description) {
                rooms_of.entry(b).or_default().push(r);
            }
        }
        let assigned_here: BTreeSet<Uuid> = assignments
            .values()
            .filter(|a| a.host == host.name && bookings.contains_key(&a.booking_id))
            .map(|a| a.booking_id)
            .collect();
        let ids: Vec<Uuid> = assigned_here
            .iter()
            .copied()
            .chain(rooms_of.keys().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if ids.is_empty() {
            return errors;
        }
        let records = match self.store.session_records(&ids).await {
            Ok(r) => r,
            Err(e) => return vec![format!("reading session records: {e}")],
        };
        let records: HashMap<Uuid, SessionRecord> =
            records.into_iter().map(|r| (r.record.booking_id, r.record)).collect();
        for id in ids {
            let summary = records.get(&id).map(SessionRecord::summary).unwrap_or_default();
            let mut open: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
            for p in summary.presences.iter().filter(|p| p.left_at.is_none()) {
                open.entry(p.room).or_default().insert(p.participant);
            }
            let mine = rooms_of.get(&id).cloned().unwrap_or_default();
            let mut to_list: Vec<u64> = Vec::new();
            let mut obs = Vec::new();
            for (room, pids) in &open {
                match present.get(room) {
                    Some(r) if r.num_participants == pids.len() as u64 => {}
                    Some(_) => to_list.push(*room),
                    // Its room is gone from the host that serves it: nobody is in it.
                    None if assigned_here.contains(&id) => {
                        obs.push(Observation::room(now, ObservationKind::Closed, *room))
                    }
                    None => {}
                }
            }
            to_list
                .extend(mine.iter().filter(|r| r.num_participants > 0 && !open.contains_key(&r.room)).map(|r| r.room));
            let generation_of =
                |room: u64| present.get(&room).and_then(|r| credentials::parse(&r.description)).map(|(_, g)| g);
            for room in to_list {
                let listed = match self.hosting.janus().participants_fresh(host, room).await {
                    Ok(l) => l,
                    Err(e) => {
                        errors.push(format!("listing the participants of room {room}: {e}"));
                        continue;
                    }
                };
                let recorded = open.get(&room).cloned().unwrap_or_default();
                let listed_ids: BTreeSet<u64> = listed.iter().map(|p| p.id).collect();
                for p in listed.iter().filter(|p| !recorded.contains(&p.id)) {
                    let role = generation_of(room).and_then(|g| self.key.role_of(id, g, p.id));
                    obs.push(Observation::participant(now, ObservationKind::Seen, room, p.id, role, p.display.clone()));
                }
                for p in recorded.iter().filter(|p| !listed_ids.contains(p)) {
                    obs.push(Observation::participant(now, ObservationKind::Gone, room, *p, None, None));
                }
            }
            if obs.is_empty() {
                continue;
            }
            let Some(room_id) = bookings.get(&id).map(|b| b.room_id).or_else(|| records.get(&id).map(|r| r.room_id))
            else {
                continue;
            };
            tracing::info!(booking_id = %id, host = %host.name, observations = obs.len(), "participant check filled the session record");
            if let Err(e) = self.observe(id, room_id, obs).await {
                errors.push(format!("recording the participant check of booking {id}: {e}"));
            }
        }
        errors
    }

    /// See [`crate::fleet::SessionKeeper::host_stopped`].
    pub(super) async fn end_presences_on(
        &self,
        host: &str,
        serving: &[&Booking],
        assignments: &HashMap<Uuid, Assignment>,
        now: DateTime<Utc>,
    ) {
        let grace = self.settings.grace;
        // Only sessions that can have had anyone in them recently.
        let candidates: HashMap<Uuid, &Booking> = serving
            .iter()
            .filter(|b| assignments.get(&b.id).is_some_and(|a| a.host == host))
            .filter(|b| self.join_window(b).start() <= now && now < b.slot.end() + grace + chrono::Duration::hours(1))
            .map(|b| (b.id, *b))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let ids: Vec<Uuid> = candidates.keys().copied().collect();
        let records = match self.store.session_records(&ids).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(host, error = %e, "cannot read the session records of a stopped host");
                return;
            }
        };
        for r in records {
            let rooms: BTreeSet<u64> =
                r.record.summary().presences.iter().filter(|p| p.left_at.is_none()).map(|p| p.room).collect();
            if rooms.is_empty() {
                continue;
            }
            let obs = rooms.into_iter().map(|room| Observation::room(now, ObservationKind::Closed, room)).collect();
            tracing::info!(host, booking_id = %r.record.booking_id, "host is off: the session's presences end");
            if let Err(e) = self.observe(r.record.booking_id, r.record.room_id, obs).await {
                tracing::warn!(host, booking_id = %r.record.booking_id, error = %e, "cannot record the end of presences");
            }
        }
    }

    /// Hands just-written events to the webhook sender.
    pub(super) fn deliver(&self, events: &[OutboxEvent]) {
        if let Some(w) = &self.webhooks {
            w.deliver_soon(events.iter().map(|e| (e.booking_id, e.id.clone())).collect());
        }
    }

    /// [`Self::deliver`] of the event `event` builds, built only when webhooks are on: an event
    /// renders its JSON body and hashes its id, work a booking without webhooks never needs.
    pub(super) fn deliver_one(&self, event: impl FnOnce() -> OutboxEvent) {
        if self.webhooks.is_some() {
            self.deliver(&[event()]);
        }
    }

    /// `Some(now)` when webhooks are on: what booking writes pass as `notify`.
    pub(super) fn notify_at(&self) -> Option<DateTime<Utc>> {
        self.webhooks.as_ref().map(|_| self.clock.now())
    }
}
