//! The store conformance suite: plain async functions over `&dyn Store`, run by every backend.
//!
//! Each `pub async fn` checks one behaviour of the [`Store`] contract and panics when the
//! backend breaks it. [`store_conformance_tests!`](crate::store_conformance_tests) turns every
//! case into its own `#[tokio::test]`:
//!
//! ```ignore
//! suroga::store_conformance_tests!(async { std::sync::Arc::new(open_a_fresh_store().await) });
//! ```
//!
//! # Safe on one shared store
//! Cases may run at once against ONE database (a Cosmos container), so each one:
//! - makes its own rooms (random ids), owners (`user-<uuid>`) and keys, and places its slots at a
//!   random instant decades ahead, where nothing else is booked;
//! - gives its rooms ONE seat unless it is about `book_any_room`, so that a concurrent
//!   `book_any_room` case (which may book any room with two seats) never touches them;
//! - never wipes the store and only reads back what it can tell apart (its owners, its creation
//!   window, its rooms).
//!
//! The `book_any_room` cases that need "no free room" first book, for their own slot, every room
//! with two seats that is still free ([`exhaust_free_rooms`]): on a fresh store that is nothing, on
//! a shared store it takes other cases' rooms only at a slot those cases never use.

mod client_events;
mod pages;
mod quotas;

pub use client_events::*;
pub use pages::*;
pub use quotas::*;

use chrono::{DateTime, Duration, DurationRound, Utc};
use futures::future::join_all;
use rand::Rng;
use serde_json::json;
use uuid::Uuid;

use super::{
    Assignment, Attempt, Created, Delivery, DeliveryStatus, IDEMPOTENCY_TTL, IdempotencyClaim, OpAction, Operation,
    RoomFilter, SessionRoom, Store, StoreError,
};
use crate::domain::{
    Access, Booking, Invitation, Room, RoomId, TimeSlot,
    events::{EventType, OutboxEvent},
    session::{Observation, ObservationKind, SessionRecord},
};

/// Expands to one `#[tokio::test]` per conformance case. `$make` is an expression that, awaited,
/// yields a fresh store handle deref-ing to `dyn Store` (an `Arc<dyn Store>`, a `Box<dyn Store>`
/// or a guard that also owns a temporary folder); it is evaluated once per test.
///
/// ```ignore
/// suroga::store_conformance_tests!(async { Arc::new(SqliteStore::open(&path).unwrap()) as Arc<dyn Store> });
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@cases ($make)
            ping_answers,
            room_round_trips_every_field,
            missing_room_is_not_found,
            room_with_taken_id_is_already_exists,
            list_rooms_filters_by_max_participants,
            list_rooms_filters_by_creation_time,
            list_rooms_filters_free_during,
            book_room_stores_the_booking,
            overlapping_booking_conflicts,
            back_to_back_bookings_are_allowed,
            cancelled_booking_frees_its_slot,
            booking_an_unknown_room_is_not_found,
            book_any_room_reuses_a_free_room,
            book_any_room_creates_the_new_room_when_none_is_free,
            book_any_room_without_a_new_room_is_no_free_room,
            replayed_booking_returns_it_as_it_is_now_and_writes_nothing,
            replayed_room_insert_returns_the_room_and_writes_nothing,
            key_of_a_removed_room_counts_as_absent,
            replayed_book_any_room_returns_the_same_booking_and_room,
            idempotency_key_with_another_request_is_a_mismatch,
            idempotency_keys_of_different_users_are_independent,
            idempotency_keys_of_different_scopes_are_independent,
            expired_idempotency_key_creates_anew,
            purge_idempotency_forgets_old_keys_only,
            delete_room_with_a_future_booking_conflicts,
            delete_room_without_future_bookings_removes_it_and_its_bookings,
            delete_missing_room_is_not_found,
            set_room_password_is_compare_and_set,
            room_bookings_lists_live_bookings_after_an_instant,
            list_bookings_orders_by_start_and_filters_during,
            bookings_between_returns_live_overlapping_bookings,
            cancel_booking_is_idempotent,
            set_booking_end_moves_the_end_when_free,
            set_booking_end_into_another_booking_conflicts,
            set_booking_end_of_a_cancelled_booking_conflicts,
            booking_access_starts_empty_and_is_compare_and_set,
            invitation_lookup_follows_the_current_invitation,
            invitation_lookup_finds_cancelled_bookings,
            invitation_code_hashes_are_unique,
            parallel_access_updates_have_one_winner,
            assignments_are_upserted,
            assignments_of_a_busy_day_come_back_exactly_as_asked,
            operations_come_back_by_window,
            claim_marker_first_writer_wins,
            state_is_put_and_got,
            parallel_book_room_has_exactly_one_winner,
            parallel_book_any_room_never_double_books,
            parallel_requests_with_one_key_create_once,
            bookings_past_midnight_hold_the_next_days,
            bookings_between_spans_days,
            find_or_create_finds_rooms_freed_in_its_slot,
            list_bookings_follows_every_change,
            parallel_find_or_create_for_one_slot_takes_each_room_once,
            client_events_come_back_in_append_order,
            client_event_limits_hold_per_booking_and_per_minute,
            client_event_ids_are_unique,
            parallel_client_event_appends_never_pass_the_limit,
            booking_writes_that_notify_put_their_event_in_the_outbox,
            book_any_room_notify_announces_the_room_it_chose,
            a_replayed_or_plain_booking_write_puts_nothing_in_the_outbox,
            session_rooms_are_upserted_and_looked_up,
            session_records_are_compare_and_set_with_their_events,
            a_session_record_write_whose_event_exists_writes_nothing,
            deliveries_are_leased_retried_and_finished,
            parallel_claims_of_a_delivery_have_one_winner,
            redeliver_makes_a_dead_letter_due_again,
            purge_deliveries_forgets_delivered_events_only,
            // ----- keyset pages (conformance/pages.rs) -----
            rooms_pages_walk_every_room_once_in_order_while_rooms_are_added,
            rooms_pages_keep_the_free_during_filter,
            bookings_pages_walk_in_order_and_filter_by_status_and_day,
            deliveries_pages_walk_newest_first_once,
            // ----- per-user quota ledgers (conformance/quotas.rs) -----
            quota_ledger_is_absent_until_created_and_created_once,
            quota_ledger_is_compare_and_set_on_its_version,
            parallel_quota_ledger_writes_have_one_winner,
            a_live_cap_counts_the_owners_live_bookings_in_the_write,
        );
    };
    (@cases ($make:expr) $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $make.await;
                $crate::store::conformance::$case(&*store).await;
            }
        )*
    };
}

// ----- fixtures -----

/// One case's private corner of the store: an owner, and a random instant decades ahead around
/// which its slots and creation times lie.
struct Fixture {
    owner: String,
    base: DateTime<Utc>,
}

impl Fixture {
    fn new() -> Self {
        // 10 to 100 years ahead, to the nanosecond: no two cases share an hour.
        let offset = rand::thread_rng().gen_range(0..90 * 365 * 24 * 3600 * 1_000_000_000i64);
        let base = Utc::now() + Duration::days(3650) + Duration::nanoseconds(offset);
        Self { owner: format!("user-{}", Uuid::new_v4()), base }
    }
    /// `base + m` minutes.
    fn at(&self, m: i64) -> DateTime<Utc> {
        self.base + Duration::minutes(m)
    }
    /// The slot from `base + from` to `base + to` minutes.
    fn slot(&self, from: i64, to: i64) -> TimeSlot {
        TimeSlot::new(self.at(from), self.at(to)).unwrap()
    }
    /// A room with `seats` seats created `ms` milliseconds after `base`.
    fn room(&self, seats: u8, ms: i64) -> Room {
        Room::generate(None, seats, serde_json::Map::new(), self.base + Duration::milliseconds(ms))
    }
    fn booking(&self, room: RoomId, slot: TimeSlot) -> Booking {
        self.booking_by(&self.owner, room, slot)
    }
    fn booking_by(&self, owner: &str, room: RoomId, slot: TimeSlot) -> Booking {
        Booking {
            id: Uuid::new_v4(),
            room_id: room,
            owner: owner.to_owned(),
            slot,
            created_at: self.base - Duration::days(1),
            cancelled_at: None,
            access: Default::default(),
        }
    }
    fn claim(&self, scope: &'static str, key: &str, fingerprint: &str, now: DateTime<Utc>) -> IdempotencyClaim {
        IdempotencyClaim {
            scope,
            user: self.owner.clone(),
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            now,
        }
    }
    /// A one-seat room, stored: out of reach of `book_any_room`.
    async fn stored_room(&self, store: &dyn Store) -> Room {
        let room = self.room(1, 0);
        store.insert_room(&room, None).await.unwrap().into_inner()
    }
    async fn stored_booking(&self, store: &dyn Store, room: RoomId, slot: TimeSlot) -> Booking {
        store.book_room(&self.booking(room, slot), None).await.unwrap().into_inner()
    }
    /// Rooms created in this fixture's first second, found through the creation filters.
    fn own_rooms(&self) -> RoomFilter {
        RoomFilter {
            created_after: Some(self.base - Duration::nanoseconds(1)),
            created_before: Some(self.base + Duration::seconds(1)),
            ..RoomFilter::default()
        }
    }
}

fn ids(rooms: &[Room]) -> Vec<RoomId> {
    rooms.iter().map(|r| r.id).collect()
}

fn new<T: std::fmt::Debug>(c: Created<T>) -> T {
    match c {
        Created::New(t) => t,
        other => panic!("expected a new entity, got {other:?}"),
    }
}

/// `wanted` as stored: a store may give a booking its own id (Cosmos names the room and day in it).
fn as_stored(got: &Booking, wanted: &Booking) -> Booking {
    Booking { id: got.id, ..wanted.clone() }
}

fn replayed<T: std::fmt::Debug>(c: Created<T>) -> T {
    match c {
        Created::Replayed(t) => t,
        other => panic!("expected a replay, got {other:?}"),
    }
}

/// Books, for `slot`, every room with two seats that is still free, until the store answers
/// `NoFreeRoom`; returns the rooms it took. Panics if any of them was taken twice.
async fn exhaust_free_rooms(store: &dyn Store, f: &Fixture, slot: TimeSlot) -> Vec<RoomId> {
    let mut taken = Vec::new();
    loop {
        match store.book_any_room(&f.booking(RoomId::random(), slot), None, None).await {
            Ok(c) => {
                let (b, room) = new(c);
                assert!(room.max_participants >= 2, "booked a room with {} seats", room.max_participants);
                assert!(!taken.contains(&room.id), "room {} booked twice for one slot", room.id);
                assert!(taken.len() < 100_000, "the store never ran out of free rooms");
                assert_eq!(b.room_id, room.id);
                taken.push(room.id);
            }
            Err(StoreError::NoFreeRoom) => return taken,
            Err(e) => panic!("book_any_room failed: {e:?}"),
        }
    }
}

// ----- basics and rooms -----

pub async fn ping_answers(store: &dyn Store) {
    store.ping().await.unwrap();
}

pub async fn room_round_trips_every_field(store: &dyn Store) {
    let f = Fixture::new();
    let mut metadata = serde_json::Map::new();
    metadata.insert("topic".into(), json!("físico-química ✓"));
    metadata.insert("nested".into(), json!({"n": 1.5, "list": [1, null, true]}));
    let mut room = Room::generate(Some("Sala 1 — \"quoted\"".into()), 4, metadata, f.base);
    room.updated_at = f.base + Duration::nanoseconds(123_456_789);
    assert_eq!(new(store.insert_room(&room, None).await.unwrap()), room);
    let got = store.get_room(room.id).await.unwrap();
    assert_eq!(got, room);
    assert_eq!(got.created_at.timestamp_subsec_nanos(), room.created_at.timestamp_subsec_nanos());

    let bare = f.room(1, 1);
    store.insert_room(&bare, None).await.unwrap();
    assert_eq!(store.get_room(bare.id).await.unwrap(), bare);
}

pub async fn missing_room_is_not_found(store: &dyn Store) {
    let err = store.get_room(RoomId::random()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

pub async fn room_with_taken_id_is_already_exists(store: &dyn Store) {
    let f = Fixture::new();
    let first = f.stored_room(store).await;
    let mut second = f.room(1, 5);
    second.id = first.id;
    let err = store.insert_room(&second, None).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
    assert_eq!(store.get_room(first.id).await.unwrap(), first, "the first room must stay untouched");
}

pub async fn list_rooms_filters_by_max_participants(store: &dyn Store) {
    let f = Fixture::new();
    let one = f.room(1, 1);
    let three_a = f.room(3, 2);
    let three_b = f.room(3, 3);
    for r in [&one, &three_a, &three_b] {
        store.insert_room(r, None).await.unwrap();
    }
    let filter = RoomFilter { max_participants: Some(3), ..f.own_rooms() };
    assert_eq!(store.list_rooms(&filter).await.unwrap(), vec![three_a.clone(), three_b.clone()]);
    assert_eq!(ids(&store.list_rooms(&f.own_rooms()).await.unwrap()), vec![one.id, three_a.id, three_b.id]);
}

pub async fn list_rooms_filters_by_creation_time(store: &dyn Store) {
    let f = Fixture::new();
    let rooms: Vec<Room> = (0..4).map(|i| f.room(1, 100 * i)).collect();
    // Inserted out of order: the answer is oldest first all the same.
    for r in rooms.iter().rev() {
        store.insert_room(r, None).await.unwrap();
    }
    let all = store.list_rooms(&f.own_rooms()).await.unwrap();
    assert_eq!(all, rooms);
    let middle = RoomFilter {
        created_after: Some(rooms[0].created_at),
        created_before: Some(rooms[3].created_at),
        ..RoomFilter::default()
    };
    assert_eq!(ids(&store.list_rooms(&middle).await.unwrap()), vec![rooms[1].id, rooms[2].id], "bounds are strict");
}

pub async fn list_rooms_filters_free_during(store: &dyn Store) {
    let f = Fixture::new();
    let busy = f.room(1, 1);
    let cancelled = f.room(1, 2);
    let touching = f.room(1, 3);
    let idle = f.room(1, 4);
    for r in [&busy, &cancelled, &touching, &idle] {
        store.insert_room(r, None).await.unwrap();
    }
    f.stored_booking(store, busy.id, f.slot(30, 90)).await;
    let c = f.stored_booking(store, cancelled.id, f.slot(0, 60)).await;
    store.cancel_booking(c.id, f.at(-60)).await.unwrap();
    f.stored_booking(store, touching.id, f.slot(60, 120)).await;

    let filter = RoomFilter { free_during: Some(f.slot(0, 60)), ..f.own_rooms() };
    assert_eq!(ids(&store.list_rooms(&filter).await.unwrap()), vec![cancelled.id, touching.id, idle.id]);
}

// ----- booking one room -----

pub async fn book_room_stores_the_booking(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let mut b = f.booking(room.id, f.slot(0, 60));
    b.created_at += Duration::nanoseconds(987);
    let got = new(store.book_room(&b, None).await.unwrap());
    assert_eq!(got, as_stored(&got, &b));
    assert_eq!(store.get_booking(got.id).await.unwrap(), got);
    let err = store.get_booking(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

pub async fn overlapping_booking_conflicts(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    f.stored_booking(store, room.id, f.slot(0, 60)).await;
    for (from, to) in [(0, 60), (30, 90), (-30, 1), (59, 61), (10, 20), (-60, 120)] {
        let other = format!("user-{}", Uuid::new_v4());
        match store.book_room(&f.booking_by(&other, room.id, f.slot(from, to)), None).await {
            Err(StoreError::Conflict(msg)) => {
                assert!(msg.contains(&room.id.to_string()), "the message names the room: {msg}")
            }
            other => panic!("[{from}, {to}) overlaps [0, 60) but got {other:?}"),
        }
        assert!(store.list_bookings(&other, None).await.unwrap().is_empty());
    }
}

pub async fn back_to_back_bookings_are_allowed(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let mid = f.stored_booking(store, room.id, f.slot(60, 120)).await;
    let before = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    let after = f.stored_booking(store, room.id, f.slot(120, 180)).await;
    assert_eq!(store.room_bookings(room.id, f.at(-1)).await.unwrap(), vec![before, mid, after]);
}

pub async fn cancelled_booking_frees_its_slot(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let first = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    store.cancel_booking(first.id, f.at(-120)).await.unwrap();
    let second = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    assert_eq!(store.room_bookings(room.id, f.at(-1)).await.unwrap(), vec![second]);
}

pub async fn booking_an_unknown_room_is_not_found(store: &dyn Store) {
    let f = Fixture::new();
    let err = store.book_room(&f.booking(RoomId::random(), f.slot(0, 60)), None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert!(store.list_bookings(&f.owner, None).await.unwrap().is_empty());
}

// ----- find-or-create -----

pub async fn book_any_room_reuses_a_free_room(store: &dyn Store) {
    let f = Fixture::new();
    let mine = f.room(2, 0);
    store.insert_room(&mine, None).await.unwrap();
    let offered = f.room(2, 1);
    let wanted = f.booking(RoomId::random(), f.slot(0, 60));
    let (b, room) = new(store.book_any_room(&wanted, Some(&offered), None).await.unwrap());
    // On a shared store another free room may come first; the offered room is never made.
    assert_ne!(room.id, offered.id);
    assert!(matches!(store.get_room(offered.id).await, Err(StoreError::NotFound)));
    assert!(room.max_participants >= 2);
    assert_eq!(b, Booking { room_id: room.id, ..as_stored(&b, &wanted) });
    assert_eq!(store.get_booking(b.id).await.unwrap(), b);
    assert_eq!(store.get_room(room.id).await.unwrap(), room);
}

pub async fn book_any_room_creates_the_new_room_when_none_is_free(store: &dyn Store) {
    let f = Fixture::new();
    let slot = f.slot(0, 60);
    let busy = f.room(2, 0);
    store.insert_room(&busy, None).await.unwrap();
    let taken = f.stored_booking(store, busy.id, f.slot(30, 90)).await;
    let single = f.stored_room(store).await;
    // Booked right before and right after the slot: free for it (half-open intervals).
    let (before, after) = (f.room(2, 1), f.room(2, 2));
    for (room, at) in [(&before, f.slot(-60, 0)), (&after, f.slot(60, 120))] {
        store.insert_room(room, None).await.unwrap();
        f.stored_booking(store, room.id, at).await;
    }
    let filled = exhaust_free_rooms(store, &f, slot).await;
    assert!(!filled.contains(&busy.id) && !filled.contains(&single.id));
    assert!(filled.contains(&before.id) && filled.contains(&after.id), "rooms booked back-to-back are free");

    // A room another case creates meanwhile may be free; then it is booked instead, and we retry.
    for _ in 0..100 {
        let offered = f.room(2, 10);
        let wanted = f.booking(RoomId::random(), slot);
        let (b, room) = new(store.book_any_room(&wanted, Some(&offered), None).await.unwrap());
        assert_ne!(room.id, busy.id);
        assert_ne!(room.id, single.id);
        if room.id == offered.id {
            assert_eq!(room, offered);
            assert_eq!(store.get_room(offered.id).await.unwrap(), offered);
            assert_eq!(b, Booking { room_id: offered.id, ..as_stored(&b, &wanted) });
            // Rooms with two seats may also hold other cases' bookings at other slots.
            let mine = |bookings: Vec<Booking>| -> Vec<Booking> {
                bookings.into_iter().filter(|x| x.owner == f.owner).collect()
            };
            assert_eq!(mine(store.room_bookings(offered.id, f.at(-1)).await.unwrap()), vec![b]);
            assert_eq!(mine(store.room_bookings(busy.id, f.at(-1)).await.unwrap()), vec![taken]);
            return;
        }
    }
    panic!("book_any_room never created the offered room");
}

pub async fn book_any_room_without_a_new_room_is_no_free_room(store: &dyn Store) {
    let f = Fixture::new();
    let slot = f.slot(0, 60);
    let busy = f.room(2, 0);
    store.insert_room(&busy, None).await.unwrap();
    f.stored_booking(store, busy.id, slot).await;
    // A free room with one seat does not count.
    let single = f.stored_room(store).await;
    let filled = exhaust_free_rooms(store, &f, slot).await;
    assert!(!filled.contains(&busy.id) && !filled.contains(&single.id));
    let err = store.book_any_room(&f.booking(RoomId::random(), slot), None, None).await.unwrap_err();
    assert!(matches!(err, StoreError::NoFreeRoom), "{err:?}");
    assert!(store.room_bookings(single.id, f.at(-1)).await.unwrap().is_empty());
}

// ----- idempotency -----

pub async fn replayed_booking_returns_it_as_it_is_now_and_writes_nothing(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let now = Utc::now();
    let first = f.booking(room.id, f.slot(0, 60));
    let claim = f.claim("bookings", "key-1", "fp-1", now);
    let b = new(store.book_room(&first, Some(&claim)).await.unwrap());
    let cancelled = store.cancel_booking(b.id, now).await.unwrap();

    // The retry carries a fresh booking id (as the API would make): it must not be written.
    let retry = f.booking(room.id, f.slot(0, 60));
    let later = f.claim("bookings", "key-1", "fp-1", now + Duration::minutes(5));
    assert_eq!(replayed(store.book_room(&retry, Some(&later)).await.unwrap()), cancelled);
    assert_eq!(store.list_bookings(&f.owner, None).await.unwrap(), vec![cancelled]);
    assert!(matches!(store.get_booking(retry.id).await, Err(StoreError::NotFound)));
}

pub async fn replayed_room_insert_returns_the_room_and_writes_nothing(store: &dyn Store) {
    let f = Fixture::new();
    let now = Utc::now();
    let room = f.room(1, 1);
    let claim = f.claim("rooms", "room-key", "fp", now);
    new(store.insert_room(&room, Some(&claim)).await.unwrap());
    let changed = store.set_room_password(room.id, &room.password, "newpassword1", now).await.unwrap();

    let retry = f.room(1, 2);
    assert_eq!(replayed(store.insert_room(&retry, Some(&claim)).await.unwrap()), changed);
    assert!(matches!(store.get_room(retry.id).await, Err(StoreError::NotFound)));
    assert_eq!(store.list_rooms(&f.own_rooms()).await.unwrap(), vec![changed]);
}

/// A room removed again (Janus refused it) releases its key: the client's retry creates anew.
pub async fn key_of_a_removed_room_counts_as_absent(store: &dyn Store) {
    let f = Fixture::new();
    let now = Utc::now();
    let room = f.room(2, 1);
    let claim = f.claim("rooms", "rolled-back", "fp", now);
    new(store.insert_room(&room, Some(&claim)).await.unwrap());
    store.delete_room(room.id, now).await.unwrap();
    let retry = f.room(2, 2);
    assert_eq!(new(store.insert_room(&retry, Some(&claim)).await.unwrap()), retry);
    assert_eq!(store.get_room(retry.id).await.unwrap(), retry);
}

pub async fn replayed_book_any_room_returns_the_same_booking_and_room(store: &dyn Store) {
    let f = Fixture::new();
    let now = Utc::now();
    let slot = f.slot(0, 60);
    let claim = f.claim("bookings", "any-key", "fp", now);
    let (b, room) =
        new(store.book_any_room(&f.booking(RoomId::random(), slot), Some(&f.room(2, 0)), Some(&claim)).await.unwrap());
    let retry_room = f.room(2, 1);
    let (b2, room2) = replayed(
        store.book_any_room(&f.booking(RoomId::random(), slot), Some(&retry_room), Some(&claim)).await.unwrap(),
    );
    assert_eq!((b2, room2), (b.clone(), room));
    assert_eq!(store.list_bookings(&f.owner, None).await.unwrap(), vec![b]);
    assert!(matches!(store.get_room(retry_room.id).await, Err(StoreError::NotFound)));
}

pub async fn idempotency_key_with_another_request_is_a_mismatch(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let now = Utc::now();
    let first = f.booking(room.id, f.slot(0, 60));
    let first = new(store.book_room(&first, Some(&f.claim("bookings", "k", "fp-a", now))).await.unwrap());

    let other = f.booking(room.id, f.slot(120, 180));
    let err = store.book_room(&other, Some(&f.claim("bookings", "k", "fp-b", now))).await.unwrap_err();
    assert!(matches!(err, StoreError::IdempotencyMismatch), "{err:?}");
    assert!(matches!(store.get_booking(other.id).await, Err(StoreError::NotFound)));
    assert_eq!(store.room_bookings(room.id, f.at(-1)).await.unwrap(), vec![first]);
}

pub async fn idempotency_keys_of_different_users_are_independent(store: &dyn Store) {
    let f = Fixture::new();
    let g = Fixture { owner: format!("user-{}", Uuid::new_v4()), base: f.base };
    let room = f.stored_room(store).await;
    let now = Utc::now();
    let a = f.booking(room.id, f.slot(0, 60));
    let b = g.booking(room.id, g.slot(60, 120));
    let got_a = new(store.book_room(&a, Some(&f.claim("bookings", "shared", "fp", now))).await.unwrap());
    assert_eq!(got_a, as_stored(&got_a, &a));
    let got_b = new(store.book_room(&b, Some(&g.claim("bookings", "shared", "fp", now))).await.unwrap());
    assert_eq!(got_b, as_stored(&got_b, &b));
    assert_eq!(store.list_bookings(&g.owner, None).await.unwrap(), vec![got_b]);
}

pub async fn idempotency_keys_of_different_scopes_are_independent(store: &dyn Store) {
    let f = Fixture::new();
    let now = Utc::now();
    let room = f.room(1, 0);
    new(store.insert_room(&room, Some(&f.claim("rooms", "same", "fp", now))).await.unwrap());
    let b = f.booking(room.id, f.slot(0, 60));
    let got = new(store.book_room(&b, Some(&f.claim("bookings", "same", "fp", now))).await.unwrap());
    assert_eq!(got, as_stored(&got, &b));
}

pub async fn expired_idempotency_key_creates_anew(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let now = Utc::now();
    let first = f.booking(room.id, f.slot(0, 60));
    let first = new(store.book_room(&first, Some(&f.claim("bookings", "k", "fp", now))).await.unwrap());

    let second = f.booking(room.id, f.slot(60, 120));
    let almost = f.claim("bookings", "k", "fp", now + IDEMPOTENCY_TTL - Duration::seconds(1));
    assert_eq!(replayed(store.book_room(&second, Some(&almost)).await.unwrap()), first);

    let expired = f.claim("bookings", "k", "fp", now + IDEMPOTENCY_TTL + Duration::seconds(1));
    let got = new(store.book_room(&second, Some(&expired)).await.unwrap());
    assert_eq!(got, as_stored(&got, &second));
    let second = got;
    // The key now belongs to the second booking, for another day.
    let third = f.booking(room.id, f.slot(120, 180));
    let again = f.claim("bookings", "k", "fp", now + IDEMPOTENCY_TTL + Duration::hours(1));
    assert_eq!(replayed(store.book_room(&third, Some(&again)).await.unwrap()), second);
    assert_eq!(store.list_bookings(&f.owner, None).await.unwrap(), vec![first, second]);
}

pub async fn purge_idempotency_forgets_old_keys_only(store: &dyn Store) {
    let f = Fixture::new();
    // Keys recorded in a random past hour used by no other case.
    let t0 = DateTime::<Utc>::UNIX_EPOCH
        + Duration::days(365 * 15)
        + Duration::seconds(rand::thread_rng().gen_range(0..365 * 10 * 24 * 3600));
    let old = f.room(1, 0);
    store.insert_room(&old, Some(&f.claim("rooms", "old", "fp", t0))).await.unwrap();
    let kept = f.room(1, 1);
    let kept_at = t0 + Duration::hours(2);
    store.insert_room(&kept, Some(&f.claim("rooms", "kept", "fp", kept_at))).await.unwrap();

    let purged = store.purge_idempotency(t0 + Duration::hours(1)).await.unwrap();
    assert!(purged >= 1, "the old key must go");
    assert_eq!(store.purge_idempotency(t0 + Duration::hours(1)).await.unwrap(), 0);
    // The newer key still replays.
    let retry = f.room(1, 2);
    let claim = f.claim("rooms", "kept", "fp", kept_at + Duration::minutes(1));
    assert_eq!(replayed(store.insert_room(&retry, Some(&claim)).await.unwrap()), kept);
}

// ----- deleting rooms, passwords -----

pub async fn delete_room_with_a_future_booking_conflicts(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let b = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    // The session is still running at `now`: it counts.
    let err = store.delete_room(room.id, f.at(30)).await.unwrap_err();
    match err {
        StoreError::Conflict(msg) => assert!(msg.contains(&room.id.to_string()), "{msg}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get_room(room.id).await.unwrap(), room);
    assert_eq!(store.get_booking(b.id).await.unwrap(), b);
}

pub async fn delete_room_without_future_bookings_removes_it_and_its_bookings(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let past = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    let cancelled = f.stored_booking(store, room.id, f.slot(120, 180)).await;
    store.cancel_booking(cancelled.id, f.at(-10)).await.unwrap();

    store.delete_room(room.id, f.at(60)).await.unwrap();
    assert!(matches!(store.get_room(room.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.get_booking(past.id).await, Err(StoreError::NotFound)));
    assert!(store.list_bookings(&f.owner, None).await.unwrap().is_empty());
    assert!(matches!(store.room_bookings(room.id, f.at(-1)).await, Err(StoreError::NotFound)));
}

pub async fn delete_missing_room_is_not_found(store: &dyn Store) {
    let err = store.delete_room(RoomId::random(), Utc::now()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

pub async fn set_room_password_is_compare_and_set(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let now = f.at(5);
    let changed = store.set_room_password(room.id, &room.password, "second-pass1", now).await.unwrap();
    assert_eq!(changed, Room { password: "second-pass1".into(), updated_at: now, ..room.clone() });
    assert_eq!(store.get_room(room.id).await.unwrap(), changed);

    // A second writer that read the old password loses.
    let err = store.set_room_password(room.id, &room.password, "third-pass11", f.at(6)).await.unwrap_err();
    assert!(matches!(err, StoreError::PreconditionFailed), "{err:?}");
    assert_eq!(store.get_room(room.id).await.unwrap(), changed);

    let err = store.set_room_password(RoomId::random(), "a", "b", now).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

// ----- reading bookings -----

pub async fn room_bookings_lists_live_bookings_after_an_instant(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let ended = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    let later = f.stored_booking(store, room.id, f.slot(240, 300)).await;
    let running = f.stored_booking(store, room.id, f.slot(60, 120)).await;
    let cancelled = f.stored_booking(store, room.id, f.slot(120, 180)).await;
    store.cancel_booking(cancelled.id, f.at(-1)).await.unwrap();

    assert_eq!(store.room_bookings(room.id, f.at(60)).await.unwrap(), vec![running.clone(), later.clone()]);
    assert_eq!(store.room_bookings(room.id, f.at(-1)).await.unwrap(), vec![ended, running, later]);
    let err = store.room_bookings(RoomId::random(), f.at(0)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

pub async fn list_bookings_orders_by_start_and_filters_during(store: &dyn Store) {
    let f = Fixture::new();
    let a = f.stored_room(store).await;
    let b = f.stored_room(store).await;
    let third = f.stored_booking(store, a.id, f.slot(240, 300)).await;
    let first = f.stored_booking(store, b.id, f.slot(0, 60)).await;
    let second = f.stored_booking(store, a.id, f.slot(60, 120)).await;
    let second = store.cancel_booking(second.id, f.at(-5)).await.unwrap();
    // Someone else's booking never shows.
    let stranger = format!("user-{}", Uuid::new_v4());
    store.book_room(&f.booking_by(&stranger, b.id, f.slot(60, 120)), None).await.unwrap();

    let all = store.list_bookings(&f.owner, None).await.unwrap();
    assert_eq!(all, vec![first.clone(), second.clone(), third.clone()]);
    let during = store.list_bookings(&f.owner, Some(f.slot(60, 241))).await.unwrap();
    assert_eq!(during, vec![second, third], "half-open: [0, 60) does not overlap [60, 241)");
}

pub async fn bookings_between_returns_live_overlapping_bookings(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let other_room = f.stored_room(store).await;
    let before = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    let inside = f.stored_booking(store, room.id, f.slot(60, 120)).await;
    let spanning = f.stored_booking(store, other_room.id, f.slot(30, 300)).await;
    let cancelled = f.stored_booking(store, other_room.id, f.slot(300, 360)).await;
    store.cancel_booking(cancelled.id, f.at(0)).await.unwrap();
    let after = f.stored_booking(store, room.id, f.slot(180, 240)).await;

    let got: Vec<Booking> =
        store.bookings_between(f.slot(60, 180)).await.unwrap().into_iter().filter(|b| b.owner == f.owner).collect();
    assert_eq!(got, vec![spanning, inside]);
    assert!(!got.contains(&before) && !got.contains(&after));
}

// ----- changing bookings -----

pub async fn cancel_booking_is_idempotent(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let b = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    let once = store.cancel_booking(b.id, f.at(-30)).await.unwrap();
    assert_eq!(once, Booking { cancelled_at: Some(f.at(-30)), ..b });
    let twice = store.cancel_booking(b.id, f.at(-10)).await.unwrap();
    assert_eq!(twice, once, "the first cancellation time stays");
    assert_eq!(store.get_booking(b.id).await.unwrap(), once);
    let err = store.cancel_booking(Uuid::new_v4(), f.at(0)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

pub async fn set_booking_end_moves_the_end_when_free(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let b = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    let next = f.stored_booking(store, room.id, f.slot(90, 120)).await;
    let longer = store.set_booking_end(b.id, f.at(90)).await.unwrap();
    assert_eq!(longer, Booking { slot: f.slot(0, 90), ..b.clone() });
    let shorter = store.set_booking_end(b.id, f.at(30)).await.unwrap();
    assert_eq!(shorter.slot, f.slot(0, 30));
    assert_eq!(store.room_bookings(room.id, f.at(-1)).await.unwrap(), vec![shorter, next]);
    let err = store.set_booking_end(Uuid::new_v4(), f.at(10)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");

    // Stretched over days, it holds every minute of them.
    let other = f.stored_room(store).await;
    let long = f.stored_booking(store, other.id, f.slot(0, 60)).await;
    store.set_booking_end(long.id, f.at(3 * 24 * 60)).await.unwrap();
    let inside = f.booking(other.id, f.slot(2 * 24 * 60, 2 * 24 * 60 + 30));
    let err = store.book_room(&inside, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

pub async fn set_booking_end_into_another_booking_conflicts(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let b = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    let next = f.stored_booking(store, room.id, f.slot(90, 120)).await;
    let err = store.set_booking_end(b.id, f.at(91)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.room_bookings(room.id, f.at(-1)).await.unwrap(), vec![b, next]);
}

pub async fn set_booking_end_of_a_cancelled_booking_conflicts(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let b = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    let cancelled = store.cancel_booking(b.id, f.at(-1)).await.unwrap();
    let err = store.set_booking_end(b.id, f.at(90)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.get_booking(b.id).await.unwrap(), cancelled);
}

// ----- fleet bookkeeping -----

// ----- access: credential generation and guest invitations -----

/// A fresh invitation with a random code hash (64 lowercase hex digits, as SHA-256 gives).
fn invitation(f: &Fixture) -> Invitation {
    let hash: String = (0..64).map(|_| char::from_digit(rand::thread_rng().gen_range(0..16), 16).unwrap()).collect();
    Invitation { code_hash: hash, guest: None, host_display: "Host".into(), created_at: f.at(-120), joined_at: None }
}

pub async fn booking_access_starts_empty_and_is_compare_and_set(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let b = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    assert_eq!(b.access, Access::default());
    assert_eq!(store.get_booking(b.id).await.unwrap().access, Access::default());

    let invited =
        Access { generation: 0, invitation: Some(Invitation { guest: Some("guest-1".into()), ..invitation(&f) }) };
    let written = store.set_booking_access(b.id, &Access::default(), &invited).await.unwrap();
    assert_eq!(written, Booking { access: invited.clone(), ..b.clone() });
    assert_eq!(store.get_booking(b.id).await.unwrap(), written, "every field of the access round-trips");

    // A writer that read the old access loses.
    let other = Access { generation: 1, invitation: None };
    let err = store.set_booking_access(b.id, &Access::default(), &other).await.unwrap_err();
    assert!(matches!(err, StoreError::PreconditionFailed), "{err:?}");
    assert_eq!(store.get_booking(b.id).await.unwrap().access, invited);

    let joined = Access {
        generation: 0,
        invitation: invited.invitation.clone().map(|i| Invitation { joined_at: Some(f.at(-5)), ..i }),
    };
    let after = store.set_booking_access(b.id, &invited, &joined).await.unwrap();
    assert_eq!(after.access, joined);
    // The slot and status are untouched.
    assert_eq!((after.slot, after.cancelled_at), (b.slot, b.cancelled_at));

    let err = store.set_booking_access(Uuid::new_v4(), &Access::default(), &other).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

pub async fn invitation_lookup_follows_the_current_invitation(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let b = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    let first = invitation(&f);
    let a1 = Access { generation: 0, invitation: Some(first.clone()) };
    store.set_booking_access(b.id, &Access::default(), &a1).await.unwrap();
    assert_eq!(store.booking_by_invitation(&first.code_hash).await.unwrap().id, b.id);

    // Replaced: the old hash finds nothing, the new one finds the booking.
    let second = invitation(&f);
    let a2 = Access { generation: 1, invitation: Some(second.clone()) };
    store.set_booking_access(b.id, &a1, &a2).await.unwrap();
    let err = store.booking_by_invitation(&first.code_hash).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let found = store.booking_by_invitation(&second.code_hash).await.unwrap();
    assert_eq!(found.access, a2);

    // Revoked: nothing.
    let a3 = Access { generation: 2, invitation: None };
    store.set_booking_access(b.id, &a2, &a3).await.unwrap();
    for h in [&first.code_hash, &second.code_hash] {
        let err = store.booking_by_invitation(h).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "{err:?}");
    }
    let err = store.booking_by_invitation(&invitation(&f).code_hash).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "an unknown hash: {err:?}");
    let err = store.booking_by_invitation("not a hash/../?#").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "a malformed hash: {err:?}");
}

pub async fn invitation_lookup_finds_cancelled_bookings(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let b = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    let inv = invitation(&f);
    let access = Access { generation: 0, invitation: Some(inv.clone()) };
    store.set_booking_access(b.id, &Access::default(), &access).await.unwrap();
    store.cancel_booking(b.id, f.at(-30)).await.unwrap();
    let found = store.booking_by_invitation(&inv.code_hash).await.unwrap();
    assert_eq!((found.id, found.cancelled_at, found.access), (b.id, Some(f.at(-30)), access));
}

pub async fn invitation_code_hashes_are_unique(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let a = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    let b = f.stored_booking(store, room.id, f.slot(60, 120)).await;
    let inv = invitation(&f);
    let access = Access { generation: 0, invitation: Some(inv.clone()) };
    store.set_booking_access(a.id, &Access::default(), &access).await.unwrap();
    let err = store.set_booking_access(b.id, &Access::default(), &access).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
    assert_eq!(store.get_booking(b.id).await.unwrap().access, Access::default());
    assert_eq!(store.booking_by_invitation(&inv.code_hash).await.unwrap().id, a.id);
}

pub async fn parallel_access_updates_have_one_winner(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let b = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    let wanted: Vec<Access> = (0..20).map(|_| Access { generation: 1, invitation: Some(invitation(&f)) }).collect();
    let empty = Access::default();
    let results = join_all(wanted.iter().map(|a| store.set_booking_access(b.id, &empty, a))).await;
    let mut winners = Vec::new();
    for (a, r) in wanted.iter().zip(results) {
        match r {
            Ok(written) => winners.push((a.clone(), written)),
            Err(StoreError::PreconditionFailed) => {}
            Err(e) => panic!("unexpected error in the race: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of 20 parallel compare-and-sets wins");
    let (access, written) = winners.pop().unwrap();
    assert_eq!(written.access, access);
    assert_eq!(store.get_booking(b.id).await.unwrap().access, access);
    let code = &access.invitation.as_ref().unwrap().code_hash;
    assert_eq!(store.booking_by_invitation(code).await.unwrap().id, b.id);
    for loser in wanted.iter().filter(|a| **a != access) {
        let err = store.booking_by_invitation(&loser.invitation.as_ref().unwrap().code_hash).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "a losing invitation must not lead anywhere: {err:?}");
    }
}

pub async fn assignments_are_upserted(store: &dyn Store) {
    let f = Fixture::new();
    let (a, b, missing) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let first = Assignment { booking_id: a, host: "janus-1".into(), ready_at: None };
    store.put_assignment(&first).await.unwrap();
    let moved =
        Assignment { booking_id: a, host: "janus-2".into(), ready_at: Some(f.at(0) + Duration::nanoseconds(7)) };
    store.put_assignment(&moved).await.unwrap();
    let other = Assignment { booking_id: b, host: "janus-1".into(), ready_at: None };
    store.put_assignment(&other).await.unwrap();

    let mut got = store.assignments(&[b, missing, a]).await.unwrap();
    got.sort_by_key(|x| x.booking_id != b);
    assert_eq!(got, vec![other, moved]);
    assert!(store.assignments(&[]).await.unwrap().is_empty());
}

/// More than a hundred bookings on one day: the assignments asked for come back, as last written,
/// and nothing else of that day (a backend may read the day whole past a page of ids).
pub async fn assignments_of_a_busy_day_come_back_exactly_as_asked(store: &dyn Store) {
    let f = Fixture::new();
    // 150 quarter hours on one UTC day, in two one-seat rooms, and one booking two days later.
    let day = f.base.duration_trunc(Duration::days(1)).unwrap() + Duration::days(1);
    let quarter =
        |k: i64| TimeSlot::new(day + Duration::minutes(15 * k), day + Duration::minutes(15 * k + 15)).unwrap();
    let rooms = [f.stored_room(store).await.id, f.stored_room(store).await.id];
    let mut ids = Vec::new();
    for k in 0..150 {
        let b = f.booking(rooms[(k / 75) as usize], quarter(k % 75));
        ids.push(store.book_room(&b, None).await.unwrap().into_inner().id);
    }
    let later = f.stored_booking(store, rooms[0], quarter(2 * 96)).await.id;

    // 120 of the day's bookings and the later one on two hosts; the first moves to a third.
    let mut expected = std::collections::HashMap::new();
    for (i, id) in ids.iter().take(120).chain([&later]).enumerate() {
        let a = Assignment { booking_id: *id, host: format!("janus-{}", 1 + i % 2), ready_at: None };
        store.put_assignment(&a).await.unwrap();
        expected.insert(*id, a);
    }
    let moved = Assignment { booking_id: ids[0], host: "janus-3".into(), ready_at: Some(f.at(0)) };
    store.put_assignment(&moved).await.unwrap();
    expected.insert(ids[0], moved);

    let check = |asked: &[Uuid], got: Vec<Assignment>| {
        let mut want: Vec<&Assignment> = asked.iter().filter_map(|id| expected.get(id)).collect();
        let mut got_sorted: Vec<&Assignment> = got.iter().collect();
        want.sort_by_key(|a| a.booking_id);
        got_sorted.sort_by_key(|a| a.booking_id);
        assert_eq!(got_sorted, want, "asked {} ids", asked.len());
    };
    // Everything, with an unknown id.
    let all: Vec<Uuid> = ids.iter().copied().chain([later, Uuid::new_v4()]).collect();
    check(&all, store.assignments(&all).await.unwrap());
    // 101 of the day's ids, from its middle: assigned and not, none of the rest.
    let some = &ids[49..150];
    check(some, store.assignments(some).await.unwrap());
    // A few.
    let few = [ids[0], ids[119], ids[120], later];
    check(&few, store.assignments(&few).await.unwrap());
}

pub async fn operations_come_back_by_window(store: &dyn Store) {
    let f = Fixture::new();
    let op = |m: i64, action: &str| Operation {
        id: Uuid::new_v4(),
        at: f.at(m) + Duration::nanoseconds(3),
        actor: "reconciler".into(),
        action: OpAction::from_name(action),
        host: Some("janus-1".into()),
        booking_id: Some(Uuid::new_v4()),
        room_id: Some(RoomId::random()),
        result: "ok".into(),
        duration_ms: 1234,
    };
    let late = op(30, "deallocate");
    let early = op(0, "start");
    let bare = Operation { host: None, booking_id: None, room_id: None, result: "timeout".into(), ..op(10, "alert") };
    let outside = op(60, "start");
    for o in [&late, &early, &bare, &outside] {
        store.append_operation(o).await.unwrap();
    }
    let window = TimeSlot::new(early.at, outside.at).unwrap();
    assert_eq!(store.operations(window).await.unwrap(), vec![early, bare, late], "from <= at < to, oldest first");
}

pub async fn claim_marker_first_writer_wins(store: &dyn Store) {
    let key = format!("alert:{}", Uuid::new_v4());
    let now = Utc::now();
    let claims = join_all((0..20).map(|_| store.claim_marker(&key, now))).await;
    let won = claims.into_iter().map(Result::unwrap).filter(|w| *w).count();
    assert_eq!(won, 1);
    assert!(!store.claim_marker(&key, now + Duration::days(2)).await.unwrap());
    assert!(store.claim_marker(&format!("{key}:other"), now).await.unwrap());
}

pub async fn state_is_put_and_got(store: &dyn Store) {
    let key = format!("override:{}", Uuid::new_v4());
    assert_eq!(store.get_state(&key).await.unwrap(), None);
    let v1 = json!({"hosts": ["a", "b"], "always_on": true, "n": 2});
    store.put_state(&key, &v1).await.unwrap();
    assert_eq!(store.get_state(&key).await.unwrap(), Some(v1));
    let v2 = json!({"hosts": []});
    store.put_state(&key, &v2).await.unwrap();
    assert_eq!(store.get_state(&key).await.unwrap(), Some(v2));
}

// ----- concurrency -----

pub async fn parallel_book_room_has_exactly_one_winner(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let slot = f.slot(0, 60);
    let wanted: Vec<Booking> =
        (0..100).map(|_| f.booking_by(&format!("user-{}", Uuid::new_v4()), room.id, slot)).collect();
    let results = join_all(wanted.iter().map(|b| store.book_room(b, None))).await;
    let mut winners = Vec::new();
    for r in results {
        match r {
            Ok(c) => winners.push(new(c)),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error in the race: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of 100 parallel bookings wins");
    assert_eq!(store.room_bookings(room.id, f.at(-1)).await.unwrap(), winners);
}

pub async fn parallel_book_any_room_never_double_books(store: &dyn Store) {
    let f = Fixture::new();
    let slot = f.slot(0, 60);
    let offers: Vec<(Booking, Room)> = (0..100)
        .map(|i| (f.booking_by(&format!("user-{}", Uuid::new_v4()), RoomId::random(), slot), f.room(2, i)))
        .collect();
    let results = join_all(offers.iter().map(|(b, r)| store.book_any_room(b, Some(r), None))).await;
    let booked: Vec<(Booking, Room)> = results.into_iter().map(|r| new(r.unwrap())).collect();
    assert_eq!(booked.len(), 100);
    let mut rooms: Vec<RoomId> = booked
        .iter()
        .map(|(b, r)| {
            assert_eq!(b.room_id, r.id);
            r.id
        })
        .collect();
    rooms.sort();
    rooms.dedup();
    assert_eq!(rooms.len(), 100, "two bookings of one slot landed in one room");
    // What is stored agrees: at this slot, no room holds two live bookings.
    let mut stored: Vec<RoomId> = store.bookings_between(slot).await.unwrap().into_iter().map(|b| b.room_id).collect();
    let total = stored.len();
    stored.sort();
    stored.dedup();
    assert_eq!(stored.len(), total, "a room holds two live bookings at one slot");
    for (b, _) in &booked {
        assert_eq!(&store.get_booking(b.id).await.unwrap(), b);
    }
}

pub async fn parallel_requests_with_one_key_create_once(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let now = Utc::now();
    let claim = f.claim("bookings", "double-click", "fp", now);
    let tries: Vec<Booking> = (0..20).map(|i| f.booking(room.id, f.slot(i * 60, i * 60 + 60))).collect();
    let results = join_all(tries.iter().map(|b| store.book_room(b, Some(&claim)))).await;
    let mut created = Vec::new();
    let mut replays = Vec::new();
    for r in results {
        match r.unwrap() {
            Created::New(b) => created.push(b),
            Created::Replayed(b) => replays.push(b),
        }
    }
    assert_eq!(created.len(), 1);
    assert!(replays.iter().all(|b| *b == created[0]));
    assert_eq!(store.list_bookings(&f.owner, None).await.unwrap(), created);
}

// ----- days, freed rooms, the owner's list -----

/// The first UTC midnight after `t`.
fn next_midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::days(1)).unwrap() + Duration::days(1)
}

fn mine(f: &Fixture, bookings: Vec<Booking>) -> Vec<Booking> {
    bookings.into_iter().filter(|b| b.owner == f.owner).collect()
}

/// A booking that runs past midnight holds the next days' minutes too, and gives them back when
/// shortened or cancelled (a store that keeps a room's bookings by day must carry them over).
pub async fn bookings_past_midnight_hold_the_next_days(store: &dyn Store) {
    let f = Fixture::new();
    let midnight = next_midnight(f.base);
    let at = |m: i64| midnight + Duration::minutes(m);
    let slot = |a: i64, b: i64| TimeSlot::new(at(a), at(b)).unwrap();
    let room = f.stored_room(store).await;
    // 23:00 to 01:00.
    let late = f.stored_booking(store, room.id, slot(-60, 60)).await;
    for (a, b) in [(30, 90), (0, 30), (-30, 0), (59, 120), (-120, -59)] {
        let err = store.book_room(&f.booking(room.id, slot(a, b)), None).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "[{a}, {b}) minutes from midnight: {err:?}");
    }
    let after = f.stored_booking(store, room.id, slot(60, 120)).await;
    let before = f.stored_booking(store, room.id, slot(-120, -60)).await;
    // Seen from either day.
    assert_eq!(mine(&f, store.bookings_between(slot(10, 20)).await.unwrap()), vec![late.clone()]);
    assert_eq!(mine(&f, store.bookings_between(slot(-70, -50)).await.unwrap()), vec![before.clone(), late.clone()]);
    assert_eq!(store.room_bookings(room.id, at(0)).await.unwrap(), vec![late.clone(), after.clone()]);
    assert_eq!(store.get_booking(late.id).await.unwrap(), late);

    // Cut back to midnight: the next day's first hour is free again.
    let shorter = store.set_booking_end(late.id, at(0)).await.unwrap();
    assert_eq!(shorter.slot, slot(-60, 0));
    let early = f.stored_booking(store, room.id, slot(0, 60)).await;
    assert_eq!(store.room_bookings(room.id, at(-90)).await.unwrap(), vec![before, shorter, early, after]);

    // Stretched over two midnights, it holds every minute of them; cancelled, none.
    let other = f.stored_room(store).await;
    let long = f.stored_booking(store, other.id, slot(-30, 30)).await;
    store.set_booking_end(long.id, at(2 * 24 * 60 + 30)).await.unwrap();
    for day in [0, 1, 2] {
        let inside = f.booking(other.id, slot(day * 24 * 60 + 10, day * 24 * 60 + 20));
        let err = store.book_room(&inside, None).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "day {day}: {err:?}");
    }
    let cancelled = store.cancel_booking(long.id, f.at(-60)).await.unwrap();
    assert_eq!(cancelled.slot, slot(-30, 2 * 24 * 60 + 30));
    for day in [0, 1, 2] {
        f.stored_booking(store, other.id, slot(day * 24 * 60 + 10, day * 24 * 60 + 20)).await;
    }
}

/// The scheduler's window may span days: every live booking overlapping it comes back once.
pub async fn bookings_between_spans_days(store: &dyn Store) {
    let f = Fixture::new();
    let midnight = next_midnight(f.base);
    let at = |m: i64| midnight + Duration::minutes(m);
    let slot = |a: i64, b: i64| TimeSlot::new(at(a), at(b)).unwrap();
    let (a, b) = (f.stored_room(store).await, f.stored_room(store).await);
    let first_day = f.stored_booking(store, a.id, slot(-300, -240)).await;
    let across = f.stored_booking(store, b.id, slot(-30, 30)).await;
    let second_day = f.stored_booking(store, a.id, slot(600, 660)).await;
    let third_day = f.stored_booking(store, b.id, slot(24 * 60 + 60, 24 * 60 + 120)).await;
    let outside = f.stored_booking(store, a.id, slot(3 * 24 * 60, 3 * 24 * 60 + 60)).await;
    let got = mine(&f, store.bookings_between(slot(-600, 2 * 24 * 60)).await.unwrap());
    assert_eq!(got, vec![first_day, across.clone(), second_day, third_day]);
    assert!(!got.contains(&outside));
    assert_eq!(mine(&f, store.bookings_between(slot(1, 2)).await.unwrap()), vec![across]);
}

/// A room whose booking in a slot is cancelled is offered again by find-or-create for that
/// slot before any new room is made.
pub async fn find_or_create_finds_rooms_freed_in_its_slot(store: &dyn Store) {
    let f = Fixture::new();
    let slot = f.slot(0, 60);
    let rooms: Vec<Room> = (0..3).map(|i| f.room(2, i)).collect();
    for r in &rooms {
        store.insert_room(r, None).await.unwrap();
    }
    let filled = exhaust_free_rooms(store, &f, slot).await;
    assert!(rooms.iter().all(|r| filled.contains(&r.id)));
    let taken = mine(&f, store.room_bookings(rooms[1].id, f.at(-1)).await.unwrap());
    store.cancel_booking(taken[0].id, f.at(-10)).await.unwrap();
    // Another case's new room may be free too; then it is booked, and the search goes on.
    for _ in 0..100 {
        match store.book_any_room(&f.booking(RoomId::random(), slot), None, None).await {
            Ok(c) => {
                if new(c).1.id == rooms[1].id {
                    return;
                }
            }
            Err(e) => panic!("the freed room {} was not offered: {e:?}", rooms[1].id),
        }
    }
    panic!("find-or-create never offered the freed room");
}

/// The owner's list follows every change of a booking (cancelled, a new end, its access), and
/// forgets the bookings of a room that was deleted.
pub async fn list_bookings_follows_every_change(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let a = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    let b = f.stored_booking(store, room.id, f.slot(60, 120)).await;
    let c = f.stored_booking(store, room.id, f.slot(120, 180)).await;
    let a = store.cancel_booking(a.id, f.at(-30)).await.unwrap();
    let b = store.set_booking_end(b.id, f.at(90)).await.unwrap();
    let access = Access { generation: 3, invitation: Some(invitation(&f)) };
    let c = store.set_booking_access(c.id, &Access::default(), &access).await.unwrap();
    assert_eq!(store.list_bookings(&f.owner, None).await.unwrap(), vec![a.clone(), b.clone(), c.clone()]);
    assert_eq!(store.list_bookings(&f.owner, Some(f.slot(90, 120))).await.unwrap(), vec![], "b ends at 90 now");
    store.cancel_booking(b.id, f.at(-30)).await.unwrap();
    store.cancel_booking(c.id, f.at(-30)).await.unwrap();
    store.delete_room(room.id, f.at(-20)).await.unwrap();
    assert_eq!(store.list_bookings(&f.owner, None).await.unwrap(), vec![]);
    assert!(matches!(
        store.booking_by_invitation(&access.invitation.unwrap().code_hash).await,
        Err(StoreError::NotFound)
    ));
}

/// Many find-or-creates for one slot at once, with enough free rooms for all: each room is taken
/// once, and no new room is made while one of this case's rooms is free.
pub async fn parallel_find_or_create_for_one_slot_takes_each_room_once(store: &dyn Store) {
    let f = Fixture::new();
    let slot = f.slot(0, 60);
    let rooms: Vec<Room> = (0..12).map(|i| f.room(2, i)).collect();
    for r in &rooms {
        store.insert_room(r, None).await.unwrap();
    }
    let offers: Vec<(Booking, Room)> = (0..12)
        .map(|i| (f.booking_by(&format!("user-{}", Uuid::new_v4()), RoomId::random(), slot), f.room(2, 100 + i)))
        .collect();
    let results = join_all(offers.iter().map(|(b, r)| store.book_any_room(b, Some(r), None))).await;
    let mut got: Vec<RoomId> = results.into_iter().map(|r| new(r.unwrap()).1.id).collect();
    got.sort();
    let n = got.len();
    got.dedup();
    assert_eq!(got.len(), n, "a room was booked twice for one slot");
    let taken: Vec<&Room> = rooms.iter().filter(|r| got.contains(&r.id)).collect();
    let made = got.iter().filter(|id| offers.iter().any(|(_, r)| r.id == **id)).count();
    // Every new room was made only after this case's rooms were all taken (by it or by others).
    if made > 0 {
        for r in &rooms {
            let at_slot = store.room_bookings(r.id, f.at(-1)).await.unwrap();
            assert!(
                !at_slot.is_empty(),
                "room {} stayed free while a new room was made ({} taken here)",
                r.id,
                taken.len()
            );
        }
    }
}

// ----- the webhook outbox and session records -----

/// Every delivery of `booking`'s events, by event time.
async fn outbox_of(store: &dyn Store, booking: Uuid) -> Vec<Delivery> {
    let mut all: Vec<Delivery> = store
        .deliveries(None, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.event.booking_id == booking)
        .collect();
    all.sort_by_key(|d| (d.event.at, d.event.id.clone()));
    all
}

pub async fn booking_writes_that_notify_put_their_event_in_the_outbox(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let wanted = f.booking(room.id, f.slot(0, 60));
    let enqueued = f.at(-600);
    let b = new(store.book_room_notify(&wanted, None, Some(enqueued)).await.unwrap());
    let events = outbox_of(store, b.id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let d = &events[0];
    assert_eq!(d.event, OutboxEvent::booking_created(&b), "the event is built from the booking as written");
    assert_eq!(
        (d.status, d.attempts, d.enqueued_at, d.next_attempt_at),
        (DeliveryStatus::Pending, 0, enqueued, enqueued)
    );
    assert_eq!((d.leased_until, d.last_error.clone(), d.delivered_at), (None, None, None));

    let moved = store.set_booking_end_notify(b.id, f.at(90), Some(f.at(-500))).await.unwrap();
    assert_eq!(moved.slot.end(), f.at(90));
    // The same end again changes nothing and announces nothing.
    store.set_booking_end_notify(b.id, f.at(90), Some(f.at(-499))).await.unwrap();
    let cancelled = store.cancel_booking_notify(b.id, f.at(-400), Some(f.at(-400))).await.unwrap();
    store.cancel_booking_notify(b.id, f.at(-300), Some(f.at(-300))).await.unwrap();
    let types: Vec<EventType> = outbox_of(store, b.id).await.iter().map(|d| d.event.event_type).collect();
    assert_eq!(types, [EventType::BookingCreated, EventType::BookingExtended, EventType::BookingCancelled]);
    let all = outbox_of(store, b.id).await;
    assert_eq!(all[1].event, OutboxEvent::booking_extended(&moved, f.at(60), f.at(-500)));
    assert_eq!(all[2].event, OutboxEvent::booking_cancelled(&cancelled, f.at(-400)));

    // A move that conflicts writes neither the booking nor an event.
    let next = f.stored_booking(store, room.id, f.slot(120, 180)).await;
    let err = store.set_booking_end_notify(next.id, f.at(200), Some(f.at(-200))).await;
    assert!(err.is_ok(), "{err:?}");
    let clash = f.stored_booking(store, room.id, f.slot(240, 300)).await;
    let err = store.set_booking_end_notify(next.id, f.at(260), Some(f.at(-100))).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(outbox_of(store, next.id).await.len(), 1, "only the successful move is announced");
    assert!(outbox_of(store, clash.id).await.is_empty());
}

pub async fn book_any_room_notify_announces_the_room_it_chose(store: &dyn Store) {
    let f = Fixture::new();
    let slot = f.slot(0, 60);
    exhaust_free_rooms(store, &f, slot).await;
    // On a shared store another case's new room may be free; it is then booked (and announced
    // as such), and we try again until the offered room is made.
    for i in 0..100 {
        let fresh = f.room(2, 5 + i);
        let (b, room) = new(store
            .book_any_room_notify(&f.booking(RoomId::random(), slot), Some(&fresh), None, Some(f.at(-1)))
            .await
            .unwrap());
        let events = outbox_of(store, b.id).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event.room_id, room.id);
        assert_eq!(events[0].event, OutboxEvent::booking_created(&b));
        if room.id == fresh.id {
            return;
        }
    }
    panic!("book_any_room_notify never created the offered room");
}

pub async fn a_replayed_or_plain_booking_write_puts_nothing_in_the_outbox(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let claim = f.claim("bookings", "k", "fp", Utc::now());
    let first =
        new(store.book_room_notify(&f.booking(room.id, f.slot(0, 60)), Some(&claim), Some(f.at(-5))).await.unwrap());
    let again = replayed(
        store.book_room_notify(&f.booking(room.id, f.slot(0, 60)), Some(&claim), Some(f.at(-4))).await.unwrap(),
    );
    assert_eq!(again.id, first.id);
    assert_eq!(outbox_of(store, first.id).await.len(), 1, "a replay announces nothing again");
    let plain = f.stored_booking(store, room.id, f.slot(60, 120)).await;
    store.cancel_booking(plain.id, f.at(-3)).await.unwrap();
    assert!(outbox_of(store, plain.id).await.is_empty());
}

pub async fn session_rooms_are_upserted_and_looked_up(store: &dyn Store) {
    let janus_room = RoomId::random().get();
    assert_eq!(store.session_room(janus_room).await.unwrap(), None);
    let first = SessionRoom { janus_room, booking_id: Uuid::new_v4(), room_id: RoomId::random(), generation: 0 };
    store.put_session_room(&first).await.unwrap();
    store.put_session_room(&first).await.unwrap();
    assert_eq!(store.session_room(janus_room).await.unwrap(), Some(first.clone()));
    let moved = SessionRoom { generation: 3, ..first };
    store.put_session_room(&moved).await.unwrap();
    assert_eq!(store.session_room(janus_room).await.unwrap(), Some(moved));
}

fn observation(f: &Fixture, m: i64, kind: ObservationKind, participant: u64) -> Observation {
    Observation::participant(f.at(m) + Duration::microseconds(7), kind, 42, participant, None, Some("Bea".into()))
}

/// An event about `b`'s session, with its own id.
fn session_event(b: &Booking, key: &str, at: DateTime<Utc>) -> OutboxEvent {
    OutboxEvent::new(EventType::ParticipantJoined, b.id, b.room_id, key, at, json!({ "key": key }))
}

pub async fn session_records_are_compare_and_set_with_their_events(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let b = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    assert_eq!(store.session_record(room.id, b.id).await.unwrap(), None);

    let mut record = SessionRecord::new(b.id, room.id);
    record.merge([observation(&f, 1, ObservationKind::Joined, 5)]);
    record.announced.insert("participant.joined:42:5:0".into());
    let joined = session_event(&b, "joined", f.at(1));
    let v1 = store.put_session_record(&record, None, std::slice::from_ref(&joined), f.at(2)).await.unwrap();
    let stored = store.session_record(room.id, b.id).await.unwrap().unwrap();
    assert_eq!((stored.record.clone(), stored.version), (record.clone(), v1), "every field round-trips");
    let err = store.put_session_record(&record, None, &[], f.at(2)).await.unwrap_err();
    assert!(matches!(err, StoreError::PreconditionFailed), "a record exists: {err:?}");

    let mut later = record.clone();
    later.merge([observation(&f, 9, ObservationKind::Left, 5)]);
    let left = session_event(&b, "left", f.at(9));
    let v2 = store.put_session_record(&later, Some(v1), std::slice::from_ref(&left), f.at(10)).await.unwrap();
    assert_ne!(v1, v2);
    // A writer that read v1 loses, and its event is not written.
    let stale = session_event(&b, "stale", f.at(11));
    let err = store.put_session_record(&record, Some(v1), &[stale], f.at(11)).await.unwrap_err();
    assert!(matches!(err, StoreError::PreconditionFailed), "{err:?}");
    let got = store.session_record(room.id, b.id).await.unwrap().unwrap();
    assert_eq!((got.record, got.version), (later.clone(), v2));
    let events: Vec<String> = outbox_of(store, b.id).await.into_iter().map(|d| d.event.id).collect();
    assert_eq!(events, [joined.id, left.id]);
    let d = &outbox_of(store, b.id).await[1];
    assert_eq!((d.status, d.enqueued_at, d.next_attempt_at), (DeliveryStatus::Pending, f.at(10), f.at(10)));

    let other = f.stored_booking(store, room.id, f.slot(60, 120)).await;
    let mut many = store.session_records(&[other.id, b.id, Uuid::new_v4()]).await.unwrap();
    assert_eq!(many.len(), 1);
    assert_eq!(many.pop().unwrap().record, later);
    assert!(store.session_records(&[]).await.unwrap().is_empty());
}

pub async fn a_session_record_write_whose_event_exists_writes_nothing(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let b = f.stored_booking(store, room.id, f.slot(0, 60)).await;
    let record = SessionRecord::new(b.id, room.id);
    let event = session_event(&b, "once", f.at(1));
    let v1 = store.put_session_record(&record, None, std::slice::from_ref(&event), f.at(1)).await.unwrap();
    let mut next = record.clone();
    next.merge([observation(&f, 3, ObservationKind::Seen, 8)]);
    let err = store.put_session_record(&next, Some(v1), &[event], f.at(3)).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
    let got = store.session_record(room.id, b.id).await.unwrap().unwrap();
    assert_eq!((got.record, got.version), (record, v1), "the record is as before");
}

/// A booking whose `booking.created` event is in the outbox, enqueued at `enqueued`.
async fn announced_booking(store: &dyn Store, f: &Fixture, enqueued: DateTime<Utc>) -> Booking {
    let room = f.stored_room(store).await;
    new(store.book_room_notify(&f.booking(room.id, f.slot(0, 60)), None, Some(enqueued)).await.unwrap())
}

pub async fn deliveries_are_leased_retried_and_finished(store: &dyn Store) {
    let f = Fixture::new();
    let b = announced_booking(store, &f, f.at(-60)).await;
    let id = OutboxEvent::booking_created(&b).id;
    let now = f.at(-59);
    let due = |list: Vec<Delivery>| list.into_iter().any(|d| d.event.id == id);
    assert!(due(store.due_deliveries(now, usize::MAX).await.unwrap()));
    assert!(!due(store.due_deliveries(f.at(-61), usize::MAX).await.unwrap()), "not before it was enqueued");

    let leased = store.claim_delivery(b.id, &id, now, now + Duration::seconds(30)).await.unwrap().unwrap();
    assert_eq!(leased.leased_until, Some(now + Duration::seconds(30)));
    assert_eq!(store.claim_delivery(b.id, &id, now, now + Duration::seconds(30)).await.unwrap(), None);
    assert!(!due(store.due_deliveries(now, usize::MAX).await.unwrap()), "a lease hides it");
    // A lease that ran out (its holder died) frees it.
    let later = now + Duration::seconds(31);
    assert!(due(store.due_deliveries(later, usize::MAX).await.unwrap()));

    let retry_at = later + Duration::minutes(2);
    let retry = Attempt::Retry { at: later, next_at: retry_at, error: "HTTP 503".into() };
    let d = store.finish_delivery(b.id, &id, &retry).await.unwrap();
    assert_eq!((d.status, d.attempts, d.next_attempt_at, d.leased_until), (DeliveryStatus::Pending, 1, retry_at, None));
    assert_eq!(d.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(store.claim_delivery(b.id, &id, later, later + Duration::seconds(30)).await.unwrap(), None, "not due");
    assert!(store.claim_delivery(b.id, &id, retry_at, retry_at + Duration::seconds(30)).await.unwrap().is_some());
    let done = store.finish_delivery(b.id, &id, &Attempt::Delivered { at: retry_at }).await.unwrap();
    assert_eq!((done.status, done.attempts, done.delivered_at), (DeliveryStatus::Delivered, 2, Some(retry_at)));
    assert_eq!(store.claim_delivery(b.id, &id, retry_at, retry_at + Duration::hours(1)).await.unwrap(), None);
    // An attempt that finishes late (its lease ran out and another delivered) changes nothing.
    let late = Attempt::Retry { at: retry_at, next_at: retry_at + Duration::minutes(5), error: "timeout".into() };
    assert_eq!(store.finish_delivery(b.id, &id, &late).await.unwrap(), done);
    assert!(!due(store.due_deliveries(retry_at + Duration::days(1), usize::MAX).await.unwrap()));
    let listed: Vec<Delivery> = store
        .deliveries(Some(DeliveryStatus::Delivered), usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.event.id == id)
        .collect();
    assert_eq!(listed, vec![done]);
    assert!(
        !store.deliveries(Some(DeliveryStatus::Pending), usize::MAX).await.unwrap().iter().any(|d| d.event.id == id)
    );

    let err = store.claim_delivery(b.id, "evt_missing", now, now).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let err = store.finish_delivery(b.id, "evt_missing", &Attempt::Delivered { at: now }).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

pub async fn parallel_claims_of_a_delivery_have_one_winner(store: &dyn Store) {
    let f = Fixture::new();
    let b = announced_booking(store, &f, f.at(-60)).await;
    let id = OutboxEvent::booking_created(&b).id;
    let now = f.at(-59);
    let claims = join_all((0..20).map(|_| store.claim_delivery(b.id, &id, now, now + Duration::seconds(30)))).await;
    let won = claims.into_iter().map(Result::unwrap).filter(Option::is_some).count();
    assert_eq!(won, 1);
}

pub async fn redeliver_makes_a_dead_letter_due_again(store: &dyn Store) {
    let f = Fixture::new();
    let b = announced_booking(store, &f, f.at(-60)).await;
    let id = OutboxEvent::booking_created(&b).id;
    store.claim_delivery(b.id, &id, f.at(-59), f.at(-58)).await.unwrap().unwrap();
    let failed =
        store.finish_delivery(b.id, &id, &Attempt::Failed { at: f.at(-59), error: "HTTP 500".into() }).await.unwrap();
    assert_eq!(failed.status, DeliveryStatus::Failed);
    assert!(store.deliveries(Some(DeliveryStatus::Failed), usize::MAX).await.unwrap().iter().any(|d| d.event.id == id));
    assert!(!store.due_deliveries(f.at(10_000), usize::MAX).await.unwrap().iter().any(|d| d.event.id == id));

    let again = store.redeliver(&id, f.at(-10)).await.unwrap();
    assert_eq!(
        (again.status, again.attempts, again.enqueued_at, again.next_attempt_at),
        (DeliveryStatus::Pending, 1, f.at(-10), f.at(-10)),
        "due now, its age restarted, its attempts kept"
    );
    assert!(store.due_deliveries(f.at(-10), usize::MAX).await.unwrap().iter().any(|d| d.event.id == id));
    let err = store.redeliver("evt_missing", f.at(0)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

pub async fn purge_deliveries_forgets_delivered_events_only(store: &dyn Store) {
    let f = Fixture::new();
    // Delivered in a random past hour used by no other case.
    let t0 = DateTime::<Utc>::UNIX_EPOCH
        + Duration::days(365 * 15)
        + Duration::seconds(rand::thread_rng().gen_range(0..365 * 10 * 24 * 3600));
    let old = announced_booking(store, &f, t0 - Duration::hours(1)).await;
    let kept = announced_booking(store, &Fixture::new(), t0 - Duration::hours(1)).await;
    let pending = announced_booking(store, &Fixture::new(), t0 - Duration::hours(1)).await;
    for (b, at) in [(&old, t0), (&kept, t0 + Duration::hours(2))] {
        let id = OutboxEvent::booking_created(b).id;
        store.claim_delivery(b.id, &id, at, at + Duration::seconds(1)).await.unwrap().unwrap();
        store.finish_delivery(b.id, &id, &Attempt::Delivered { at }).await.unwrap();
    }
    assert!(store.purge_deliveries(t0 + Duration::hours(1)).await.unwrap() >= 1);
    assert!(outbox_of(store, old.id).await.is_empty());
    assert_eq!(outbox_of(store, kept.id).await.len(), 1);
    assert_eq!(outbox_of(store, pending.id).await.len(), 1, "an event not delivered yet stays");
    assert_eq!(store.purge_deliveries(t0 + Duration::hours(1)).await.unwrap(), 0);
}
