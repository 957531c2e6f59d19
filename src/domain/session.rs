//! What happened in a booking's session, as a set of observations, and what follows from them.
//! Pure: no I/O, time is a parameter.
//!
//! # Where observations come from
//! - Janus's own events (the event handler posts them to the service): a publisher `joined`,
//!   was `leaving` or `kicked`, a room was `destroyed` ([`ObservationKind::Joined`], `Left`,
//!   `Closed`).
//! - The reconciler's participant checks fill what events miss: a participant Janus lists
//!   that the record does not have (`Seen`), one the record has that Janus no longer lists
//!   (`Gone`), a room or host that went away with people still recorded in it (`Closed`).
//! - The service itself: a room it destroyed (`Closed`), and someone asking to join while the
//!   session's host was off after everyone had left (`Wanted`: a late rejoin).
//!
//! # Order does not matter
//! A [`SessionRecord`] keeps a SET of observations: sorted, duplicates (same instant, kind,
//! room and participant) dropped. Everything derived from it (the participants, when the
//! session started and ended, whether its host may go: [`SessionRecord::summary`]) is a
//! function of that set alone, so events that arrive twice, late or out of order give the same
//! record, and two instances merging the same events agree.
//!
//! # Clocks
//! Janus stamps its events with its host's clock, the reconciler with the service's. A check
//! and an event within [`SKEW`] of each other are taken to describe the same moment: a `Gone`
//! does not close a presence evidenced less than `SKEW` before it, and a `Seen` or `Left` just
//! after a presence closed does not open another one.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::RoomId;

/// How far apart two clocks' accounts of one moment may be.
pub const SKEW: Duration = Duration::seconds(10);

/// Most observations one session keeps: an honest session has a few dozen (joins, leaves,
/// reconnects); past this, new ones are dropped (and logged by the caller), so a client
/// that rejoins in a loop cannot grow a record without bound.
pub const MAX_OBSERVATIONS: usize = 1000;

/// How long a late rejoin keeps a session that had ended wanted (its host on) while nobody
/// has joined yet.
pub const REJOIN_HOLD: Duration = Duration::minutes(10);

/// Who a participant is in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The booking's owner.
    Host,
    /// The invited guest.
    Guest,
}

/// What was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObservationKind {
    /// A participant joined the room as a publisher (Janus `joined`).
    Joined,
    /// The reconciler found the participant in the room.
    Seen,
    /// The participant left or was kicked (Janus `leaving`, `kicked`).
    Left,
    /// The reconciler found the participant no longer in the room.
    Gone,
    /// The room went away with everyone in it (Janus `destroyed`, a close by the service, its
    /// host stopped or restarted). Names no participant.
    Closed,
    /// Someone asked to join while the session's host was off (a late rejoin). Names no participant.
    Wanted,
}

/// One thing observed about a session room at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub at: DateTime<Utc>,
    pub kind: ObservationKind,
    /// The Janus room (a session's room changes when its credentials rotate).
    pub room: u64,
    /// The Janus participant id; `None` for room-wide observations (`Closed`, `Wanted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<u64>,
    /// Who the participant is, when its id is one the service handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The name the participant joined with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl Observation {
    /// What makes two observations the same: instant, kind, room, participant.
    fn identity(&self) -> (DateTime<Utc>, ObservationKind, u64, Option<u64>) {
        (self.at, self.kind, self.room, self.participant)
    }

    /// A room-wide observation.
    pub fn room(at: DateTime<Utc>, kind: ObservationKind, room: u64) -> Self {
        Self { at, kind, room, participant: None, role: None, display: None }
    }

    /// An observation of one participant.
    pub fn participant(
        at: DateTime<Utc>,
        kind: ObservationKind,
        room: u64,
        participant: u64,
        role: Option<Role>,
        display: Option<String>,
    ) -> Self {
        Self { at, kind, room, participant: Some(participant), role, display }
    }
}

/// A booking's session record: the observations, and which webhook events it already put in
/// the outbox (so no fact is announced twice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub booking_id: Uuid,
    /// The booked room (the store keeps the record with the booking).
    pub room_id: RoomId,
    /// Sorted by identity, no duplicates (see [`SessionRecord::merge`]).
    #[serde(default)]
    pub observations: Vec<Observation>,
    /// Keys of the facts already announced ([`Fact::key`]).
    #[serde(default)]
    pub announced: BTreeSet<String>,
}

/// One stretch of time a participant was in a session room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Presence {
    pub room: u64,
    pub participant: u64,
    /// The n-th presence of this participant id in this room (0-based), by time.
    pub ordinal: usize,
    pub role: Option<Role>,
    pub display: Option<String>,
    /// `None` when only the departure is known (the join was never reported nor seen).
    pub joined_at: Option<DateTime<Utc>>,
    /// `None` while the participant is in the room.
    pub left_at: Option<DateTime<Utc>>,
    /// The latest instant the participant is known to have been there.
    #[serde(skip)]
    last_evidence: Option<DateTime<Utc>>,
}

/// What a record says happened.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// The first join.
    pub started_at: Option<DateTime<Utc>>,
    /// The last departure, once everyone who came has left (cleared by a rejoin).
    pub ended_at: Option<DateTime<Utc>>,
    /// Every presence, by join (or departure) time.
    pub presences: Vec<Presence>,
    /// The latest late-rejoin request.
    pub wanted_at: Option<DateTime<Utc>>,
}

impl Summary {
    /// True while someone is in a session room.
    pub fn occupied(&self) -> bool {
        self.presences.iter().any(|p| p.left_at.is_none())
    }

    /// When the session's need for its host ended early, if it did: everyone who came has
    /// left, the booking has started (people leave and come back before the start), and no
    /// late rejoin is pending (a rejoin holds for [`REJOIN_HOLD`] or until someone joins).
    /// Never before the booked start.
    pub fn released_at(&self, booked_start: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let ended = self.ended_at?;
        if now < booked_start {
            return None;
        }
        if let Some(w) = self.wanted_at {
            if w > ended && now < w + REJOIN_HOLD {
                return None;
            }
        }
        Some(ended.max(booked_start))
    }
}

impl SessionRecord {
    /// An empty record of `booking_id` in booked room `room_id`.
    pub fn new(booking_id: Uuid, room_id: RoomId) -> Self {
        Self { booking_id, room_id, observations: vec![], announced: BTreeSet::new() }
    }

    /// Adds `new` to the set: duplicates (same identity) are dropped, the rest sorted in.
    /// Returns how many were added. Past [`MAX_OBSERVATIONS`], new ones are dropped.
    pub fn merge(&mut self, new: impl IntoIterator<Item = Observation>) -> usize {
        let before = self.observations.len();
        let known: BTreeSet<_> = self.observations.iter().map(Observation::identity).collect();
        let mut fresh: Vec<Observation> = new.into_iter().filter(|o| !known.contains(&o.identity())).collect();
        // Of fresh duplicates, keep the same one whatever the input order.
        fresh.sort_by(order);
        fresh.dedup_by(|a, b| a.identity() == b.identity());
        let room_left = MAX_OBSERVATIONS.saturating_sub(before);
        fresh.truncate(room_left);
        self.observations.extend(fresh);
        self.observations.sort_by(order);
        self.observations.len() - before
    }

    /// Everything the observations say (see the module docs). Pure.
    pub fn summary(&self) -> Summary {
        let mut by_participant: BTreeMap<(u64, u64), Vec<&Observation>> = BTreeMap::new();
        let mut closes: BTreeMap<u64, Vec<DateTime<Utc>>> = BTreeMap::new();
        let mut wanted_at = None;
        for o in &self.observations {
            match (o.kind, o.participant) {
                (ObservationKind::Closed, _) => closes.entry(o.room).or_default().push(o.at),
                (ObservationKind::Wanted, _) => wanted_at = wanted_at.max(Some(o.at)),
                (_, Some(p)) => by_participant.entry((o.room, p)).or_default().push(o),
                (_, None) => {}
            }
        }
        let mut presences = Vec::new();
        for ((room, participant), obs) in by_participant {
            let room_closes = closes.get(&room).map(Vec::as_slice).unwrap_or(&[]);
            presences.extend(presences_of(room, participant, &obs, room_closes));
        }
        presences.sort_by_key(|p| (p.joined_at.or(p.left_at), p.room, p.participant, p.ordinal));
        let started_at = presences.iter().filter_map(|p| p.joined_at).min();
        let ended_at = if !presences.is_empty() && presences.iter().all(|p| p.left_at.is_some()) {
            presences.iter().filter_map(|p| p.left_at).max()
        } else {
            None
        };
        Summary { started_at, ended_at, presences, wanted_at }
    }
}

/// The sort order of observations: identity first, then the rest, so sorting is total.
fn order(a: &Observation, b: &Observation) -> std::cmp::Ordering {
    a.identity().cmp(&b.identity()).then_with(|| (a.role, &a.display).cmp(&(b.role, &b.display)))
}

/// One participant's presences in one room, from its observations and the room's closes.
fn presences_of(room: u64, participant: u64, obs: &[&Observation], closes: &[DateTime<Utc>]) -> Vec<Presence> {
    // Within one instant: arrivals before departures, so a zero-length presence stays one.
    let rank = |k: ObservationKind| match k {
        ObservationKind::Joined => 0,
        ObservationKind::Seen => 1,
        ObservationKind::Left => 2,
        ObservationKind::Gone => 3,
        ObservationKind::Closed | ObservationKind::Wanted => 4,
    };
    let mut events: Vec<(DateTime<Utc>, u8, Option<&Observation>)> =
        obs.iter().map(|o| (o.at, rank(o.kind), Some(*o))).collect();
    events.extend(closes.iter().map(|at| (*at, 4, None)));
    events.sort_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| a.2.map(|o| (o.role, &o.display)).cmp(&b.2.map(|o| (o.role, &o.display))))
    });

    let mut out: Vec<Presence> = Vec::new();
    let mut open: Option<Presence> = None;
    let mut last_close: Option<DateTime<Utc>> = None;
    let role = obs.iter().find_map(|o| o.role);
    let new_presence = |joined_at: Option<DateTime<Utc>>, display: Option<String>| Presence {
        room,
        participant,
        ordinal: 0,
        role,
        display,
        joined_at,
        left_at: None,
        last_evidence: joined_at,
    };
    let just_closed = |at: DateTime<Utc>, last: Option<DateTime<Utc>>| last.is_some_and(|c| at - c < SKEW);
    for (at, _, o) in events {
        let kind = o.map_or(ObservationKind::Closed, |o| o.kind);
        let display = o.and_then(|o| o.display.clone());
        match kind {
            ObservationKind::Joined => {
                // A second join without a departure between: the departure was lost; Janus
                // admits one participant per id, so the first presence ended here.
                if let Some(mut p) = open.take() {
                    p.left_at = Some(at);
                    out.push(p);
                }
                open = Some(new_presence(Some(at), display));
            }
            ObservationKind::Seen => match &mut open {
                Some(p) => {
                    p.last_evidence = p.last_evidence.max(Some(at));
                    if p.display.is_none() {
                        p.display = display;
                    }
                }
                None if just_closed(at, last_close) => {}
                None => open = Some(new_presence(Some(at), display)),
            },
            ObservationKind::Left => match open.take() {
                Some(mut p) => {
                    p.left_at = Some(at);
                    out.push(p);
                    last_close = Some(at);
                }
                // The same departure the reconciler already recorded.
                None if just_closed(at, last_close) => {}
                None => {
                    let mut p = new_presence(None, display);
                    p.left_at = Some(at);
                    out.push(p);
                    last_close = Some(at);
                }
            },
            ObservationKind::Gone => {
                if let Some(p) = &open {
                    // Evidence from just before (on another clock) outweighs the check.
                    if p.last_evidence.is_none_or(|e| at - e >= SKEW) {
                        let mut p = open.take().expect("checked");
                        p.left_at = Some(at);
                        out.push(p);
                        last_close = Some(at);
                    }
                }
            }
            ObservationKind::Closed => {
                if let Some(mut p) = open.take() {
                    p.left_at = Some(at);
                    out.push(p);
                    last_close = Some(at);
                }
            }
            ObservationKind::Wanted => {}
        }
    }
    out.extend(open);
    for (i, p) in out.iter_mut().enumerate() {
        p.ordinal = i;
    }
    out
}

/// Something the record establishes that integrators hear about, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// The first join.
    Started { at: DateTime<Utc> },
    /// A presence began.
    Joined(Presence),
    /// A presence ended.
    Left(Presence),
    /// Everyone who came has left.
    Ended { started_at: Option<DateTime<Utc>>, at: DateTime<Utc> },
}

impl Fact {
    /// The fact's stable key: the same fact always has the same key, on every instance.
    pub fn key(&self) -> String {
        match self {
            Fact::Started { .. } => "session.started".into(),
            Fact::Joined(p) => format!("participant.joined:{}:{}:{}", p.room, p.participant, p.ordinal),
            Fact::Left(p) => format!("participant.left:{}:{}:{}", p.room, p.participant, p.ordinal),
            // A session that ends, is rejoined and ends again ends twice.
            Fact::Ended { at, .. } => format!("session.ended:{}", at.timestamp_micros()),
        }
    }
}

impl Summary {
    /// Every fact the summary establishes, in the order integrators should hear them.
    pub fn facts(&self) -> Vec<Fact> {
        let mut facts = Vec::new();
        if let Some(at) = self.started_at {
            facts.push(Fact::Started { at });
        }
        let mut moves: Vec<(DateTime<Utc>, u8, Fact)> = Vec::new();
        for p in &self.presences {
            if let Some(j) = p.joined_at {
                moves.push((j, 0, Fact::Joined(p.clone())));
            }
            if let Some(l) = p.left_at {
                moves.push((l, 1, Fact::Left(p.clone())));
            }
        }
        moves.sort_by_key(|m| (m.0, m.1));
        facts.extend(moves.into_iter().map(|(_, _, f)| f));
        if let Some(at) = self.ended_at {
            facts.push(Fact::Ended { started_at: self.started_at, at });
        }
        facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000 + s, 0).unwrap()
    }

    fn joined(at: i64, p: u64, role: Role, name: &str) -> Observation {
        Observation::participant(t(at), ObservationKind::Joined, 7, p, Some(role), Some(name.into()))
    }
    fn left(at: i64, p: u64) -> Observation {
        Observation::participant(t(at), ObservationKind::Left, 7, p, None, None)
    }

    fn record(obs: Vec<Observation>) -> SessionRecord {
        let mut r = SessionRecord::new(Uuid::nil(), RoomId::new(1).unwrap());
        r.merge(obs);
        r
    }

    /// A session: host joins, guest joins, guest drops and comes back, both leave.
    fn full_session() -> Vec<Observation> {
        vec![
            joined(0, 11, Role::Host, "Ana"),
            joined(60, 22, Role::Guest, "Bea"),
            left(300, 22),
            joined(330, 22, Role::Guest, "Bea"),
            left(600, 11),
            left(620, 22),
        ]
    }

    #[test]
    fn a_session_starts_with_the_first_join_and_ends_with_the_last_departure() {
        let s = record(full_session()).summary();
        assert_eq!((s.started_at, s.ended_at), (Some(t(0)), Some(t(620))));
        let spans: Vec<_> = s.presences.iter().map(|p| (p.role, p.joined_at, p.left_at, p.ordinal)).collect();
        assert_eq!(
            spans,
            vec![
                (Some(Role::Host), Some(t(0)), Some(t(600)), 0),
                (Some(Role::Guest), Some(t(60)), Some(t(300)), 0),
                (Some(Role::Guest), Some(t(330)), Some(t(620)), 1),
            ]
        );
        assert!(!s.occupied());
    }

    #[test]
    fn while_someone_is_in_the_session_has_not_ended() {
        let mut obs = full_session();
        obs.pop();
        let s = record(obs).summary();
        assert_eq!(s.ended_at, None);
        assert!(s.occupied());
    }

    #[test]
    fn a_room_close_ends_everyone_in_it_and_a_rejoin_after_it_is_a_new_presence() {
        let s = record(vec![
            joined(0, 11, Role::Host, "Ana"),
            Observation::room(t(100), ObservationKind::Closed, 7),
            joined(200, 11, Role::Host, "Ana"),
        ])
        .summary();
        assert_eq!(s.presences.len(), 2);
        assert_eq!(s.presences[0].left_at, Some(t(100)));
        assert_eq!((s.presences[1].joined_at, s.presences[1].left_at), (Some(t(200)), None));
    }

    #[test]
    fn the_reconciler_fills_a_lost_join_and_a_lost_departure() {
        let seen = Observation::participant(t(45), ObservationKind::Seen, 7, 11, Some(Role::Host), Some("Ana".into()));
        let gone = Observation::participant(t(700), ObservationKind::Gone, 7, 11, None, None);
        let s = record(vec![seen, gone]).summary();
        assert_eq!(s.presences.len(), 1);
        assert_eq!((s.presences[0].joined_at, s.presences[0].left_at), (Some(t(45)), Some(t(700))));
        assert_eq!(s.presences[0].display.as_deref(), Some("Ana"));
        // The real events, when they come late, win: the check only filled the gap.
        let mut r = record(vec![
            Observation::participant(t(45), ObservationKind::Seen, 7, 11, None, Some("Ana".into())),
            Observation::participant(t(700), ObservationKind::Gone, 7, 11, None, None),
        ]);
        r.merge([joined(0, 11, Role::Host, "Ana"), left(600, 11)]);
        let s = r.summary();
        assert_eq!(s.presences.len(), 1, "{:?}", s.presences);
        assert_eq!((s.presences[0].joined_at, s.presences[0].left_at), (Some(t(0)), Some(t(600))));
    }

    #[test]
    fn checks_within_the_clock_skew_of_an_event_do_not_split_or_resurrect_a_presence() {
        let s = record(vec![
            joined(100, 11, Role::Host, "Ana"),
            // Janus's clock runs a few seconds ahead: the check just before the join saw nobody.
            Observation::participant(t(97), ObservationKind::Gone, 7, 11, None, None),
            Observation::participant(t(103), ObservationKind::Gone, 7, 11, None, None),
            left(500, 11),
            // A check a moment after the departure (on the service's clock) still listed them.
            Observation::participant(t(504), ObservationKind::Seen, 7, 11, None, None),
        ])
        .summary();
        assert_eq!(s.presences.len(), 1, "{:?}", s.presences);
        assert_eq!((s.presences[0].joined_at, s.presences[0].left_at), (Some(t(100)), Some(t(500))));
    }

    #[test]
    fn a_departure_whose_join_was_never_known_is_kept_without_a_join_time() {
        let s = record(vec![left(50, 33)]).summary();
        assert_eq!(s.presences.len(), 1);
        assert_eq!((s.presences[0].joined_at, s.presences[0].left_at), (None, Some(t(50))));
        assert_eq!(s.started_at, None);
    }

    #[test]
    fn release_waits_for_the_start_and_for_a_pending_rejoin() {
        let s = record(vec![joined(0, 11, Role::Host, "Ana"), left(100, 11)]).summary();
        assert_eq!(s.released_at(t(200), t(150)), None, "before the start people may come back");
        assert_eq!(s.released_at(t(50), t(150)), Some(t(100)));
        assert_eq!(s.released_at(t(120), t(150)), Some(t(120)), "never before the start");
        let mut r = record(vec![joined(0, 11, Role::Host, "Ana"), left(100, 11)]);
        r.merge([Observation::room(t(200), ObservationKind::Wanted, 7)]);
        let s = r.summary();
        assert_eq!(s.released_at(t(50), t(210)), None, "a late rejoin holds the host");
        assert_eq!(s.released_at(t(50), t(200) + REJOIN_HOLD), Some(t(100)), "until the hold runs out");
        assert_eq!(record(vec![]).summary().released_at(t(0), t(10)), None, "nobody came: nothing ended");
    }

    #[test]
    fn facts_have_stable_keys_and_a_second_end_after_a_rejoin_is_a_new_fact() {
        let facts = record(full_session()).summary().facts();
        let keys: Vec<String> = facts.iter().map(Fact::key).collect();
        assert_eq!(keys[0], "session.started");
        assert_eq!(keys.iter().filter(|k| k.starts_with("participant.joined")).count(), 3);
        assert_eq!(keys.iter().filter(|k| k.starts_with("participant.left")).count(), 3);
        assert_eq!(keys.last().unwrap(), &format!("session.ended:{}", t(620).timestamp_micros()));
        let mut more = full_session();
        more.extend([joined(900, 11, Role::Host, "Ana"), left(960, 11)]);
        let again: Vec<String> = record(more).summary().facts().iter().map(Fact::key).collect();
        assert!(again.contains(&format!("session.ended:{}", t(960).timestamp_micros())));
        assert!(!again.contains(&format!("session.ended:{}", t(620).timestamp_micros())));
    }

    #[test]
    fn the_record_caps_its_observations() {
        let mut r = record(vec![]);
        let many = (0..(MAX_OBSERVATIONS as i64 + 50)).map(|i| joined(i, 11, Role::Host, "x"));
        assert_eq!(r.merge(many), MAX_OBSERVATIONS);
        assert_eq!(r.merge([left(1, 11)]), 0);
    }

    fn any_observation() -> impl Strategy<Value = Observation> {
        (0i64..40, 0usize..6, 1u64..3, 1u64..4).prop_map(|(at, kind, room, participant)| {
            let kind = [
                ObservationKind::Joined,
                ObservationKind::Seen,
                ObservationKind::Left,
                ObservationKind::Gone,
                ObservationKind::Closed,
                ObservationKind::Wanted,
            ][kind];
            let at = t(at * 7);
            match kind {
                ObservationKind::Closed | ObservationKind::Wanted => Observation::room(at, kind, room),
                _ => Observation::participant(at, kind, room, participant, None, Some(format!("p{participant}"))),
            }
        })
    }

    proptest! {
        /// Duplicated, reordered and re-merged observations give the same record and summary.
        #[test]
        fn the_record_is_the_same_whatever_the_order_and_duplicates(
            obs in proptest::collection::vec(any_observation(), 0..30),
            seed in any::<u64>(),
        ) {
            let a = record(obs.clone());
            let mut shuffled: Vec<Observation> = obs.iter().chain(obs.iter().take(5)).cloned().collect();
            use rand::{SeedableRng, seq::SliceRandom};
            shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            let mut b = SessionRecord::new(Uuid::nil(), RoomId::new(1).unwrap());
            let (first, second) = shuffled.split_at(shuffled.len() / 2);
            b.merge(second.to_vec());
            b.merge(first.to_vec());
            prop_assert_eq!(&a.observations, &b.observations);
            prop_assert_eq!(a.summary(), b.summary());
        }
    }
}
