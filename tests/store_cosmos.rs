//! The Cosmos DB backend on the SDK's in-memory emulator: many instances on one account,
//! throttling, failures and lost responses injected below the SDK's retry layer.
//! An opt-in case runs against a real account (see [`real_account`]).

mod support;

use std::{sync::Arc, time::Instant};

use azure_data_cosmos_driver::fault_injection::{FaultInjectionErrorType as E, FaultOperationType as Op};
use chrono::{DateTime, Duration, TimeZone, Utc};
use support::cosmos::{Emulator, fault, latency};
use suroga::{
    domain::{Booking, Room, RoomId, TimeSlot},
    store::{
        Created, IdempotencyClaim, Store, StoreError,
        cosmos::{CosmosStore, CosmosTuning},
    },
};
use uuid::Uuid;

/// The conformance suite, each case on its own emulator account. (On one shared account
/// `book_any_room_creates_the_new_room_when_none_is_free` can see another case's
/// `exhaust_free_rooms` booking of its two-seat "busy" room at that case's slot.)
mod conformance {
    use std::sync::Arc;

    use super::support::cosmos::Emulator;

    suroga::store_conformance_tests!(async { Arc::new(Emulator::new().store().await) });
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 8, 0, 0).unwrap()
}

fn slot(h: u32, hours: i64) -> TimeSlot {
    let s = Utc.with_ymd_and_hms(2030, 1, 2, h, 0, 0).unwrap();
    TimeSlot::new(s, s + Duration::hours(hours)).unwrap()
}

fn room(seats: u8) -> Room {
    Room::generate(Some("room".into()), seats, Default::default(), now())
}

fn booking(room: RoomId, owner: &str, slot: TimeSlot) -> Booking {
    Booking {
        id: Uuid::new_v4(),
        room_id: room,
        owner: owner.into(),
        slot,
        created_at: now(),
        cancelled_at: None,
        access: Default::default(),
    }
}

/// The booking a create answered, checked to be `wanted` under the id the store gave it.
fn booked(created: Created<Booking>, wanted: &Booking) -> Booking {
    let Created::New(b) = created else { panic!("expected a new booking, got {created:?}") };
    assert_eq!(b, Booking { id: b.id, ..wanted.clone() });
    b
}

async fn live_bookings(store: &dyn Store, room: RoomId) -> Vec<Booking> {
    store.room_bookings(room, now() - Duration::days(365)).await.unwrap()
}

#[tokio::test]
async fn start_up_names_the_missing_container() {
    let emu = Emulator::with_containers(&[support::cosmos::ROOMS]);
    let err = emu.try_store(vec![], CosmosTuning::default()).await.unwrap_err();
    match err {
        StoreError::Internal(msg) => {
            assert!(msg.contains("\"ops\""), "{msg}");
            assert!(msg.contains("--partition-key-path /pk"), "{msg}");
        }
        other => panic!("expected a start-up failure naming the container, got {other:?}"),
    }
}

#[tokio::test]
async fn rooms_and_bookings_round_trip() {
    let emu = Emulator::new();
    let store = emu.store().await;
    store.ping().await.unwrap();
    let r = room(2);
    assert!(store.insert_room(&r, None).await.unwrap().is_new());
    assert_eq!(store.get_room(r.id).await.unwrap(), r);
    let wanted = booking(r.id, "alice", slot(10, 1));
    let b = booked(store.book_room(&wanted, None).await.unwrap(), &wanted);
    assert_eq!(store.get_booking(b.id).await.unwrap(), b);
    let clash = booking(r.id, "bob", slot(10, 2));
    assert!(matches!(store.book_room(&clash, None).await, Err(StoreError::Conflict(_))));
    let next = store.book_room(&booking(r.id, "bob", slot(11, 1)), None).await.unwrap().into_inner();
    assert_eq!(store.list_bookings("alice", None).await.unwrap(), vec![b.clone()]);
    assert_eq!(live_bookings(&store, r.id).await, vec![b.clone(), next.clone()]);
    assert!(matches!(store.delete_room(r.id, now()).await, Err(StoreError::Conflict(_))));
    store.cancel_booking(b.id, now()).await.unwrap();
    store.cancel_booking(next.id, now()).await.unwrap();
    store.delete_room(r.id, now()).await.unwrap();
    assert!(matches!(store.get_room(r.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.get_booking(b.id).await, Err(StoreError::NotFound)));
}

/// The benchmark's bulk seeder (`CosmosStore::seed_bookings`) leaves bookings that every read and
/// change finds as it finds booked ones: the same slots by id, room, owner and day window, the
/// overlap guard, find-or-create, cancellation, and the room's day list (a deletion sees them).
#[tokio::test]
async fn seeded_bookings_read_like_booked_ones() {
    let emu = Emulator::new();
    let store = emu.store().await;
    let (a, b) = (room(2), room(2));
    store.insert_room(&a, None).await.unwrap();
    store.insert_room(&b, None).await.unwrap();
    // Two on one day, one past midnight (it spills into the next day), one on the next day.
    let later = TimeSlot::new(slot(8, 1).start() + Duration::days(2), slot(8, 1).end() + Duration::days(2)).unwrap();
    let slots = [slot(8, 1), slot(10, 1), slot(22, 3), later];
    let mut booked = vec![];
    for s in slots {
        booked.push(store.book_room(&booking(a.id, "booked", s), None).await.unwrap().into_inner());
    }
    let wanted: Vec<Booking> = slots.iter().map(|s| booking(b.id, "seeded", *s)).collect();
    let seeded = store.seed_bookings(&wanted).await.unwrap();
    let by_start = |mut v: Vec<Booking>| {
        v.sort_by_key(|x| x.slot.start());
        v
    };
    let seeded = by_start(seeded);
    assert_eq!(seeded.len(), booked.len());
    for (s, k) in seeded.iter().zip(&booked) {
        assert_eq!(*s, Booking { id: s.id, room_id: b.id, owner: "seeded".into(), ..k.clone() });
        assert_eq!(store.get_booking(s.id).await.unwrap(), *s);
    }
    assert_eq!(store.list_bookings("seeded", None).await.unwrap(), seeded);
    assert_eq!(live_bookings(&store, b.id).await, seeded);
    let window = TimeSlot::new(slots[0].start(), slots[3].end()).unwrap();
    let all = store.bookings_between(window).await.unwrap();
    assert!(seeded.iter().chain(&booked).all(|x| all.contains(x)), "{all:?}");
    for s in &slots {
        let clash = booking(b.id, "other", *s);
        assert!(matches!(store.book_room(&clash, None).await, Err(StoreError::Conflict(_))));
    }
    assert!(matches!(store.delete_room(b.id, now()).await, Err(StoreError::Conflict(_))));
    // Find-or-create passes over a seeded room as over a booked one (the benchmark's fill of
    // three rooms in four relies on it): both rooms are taken, so the new one is made.
    let fresh = room(2);
    let found = store.book_any_room(&booking(RoomId::random(), "other", slots[1]), Some(&fresh), None).await.unwrap();
    assert_eq!(found.into_inner().1.id, fresh.id);
    for s in &seeded {
        store.cancel_booking(s.id, now()).await.unwrap();
    }
    store.book_room(&booking(b.id, "other", slots[2]), None).await.unwrap();
}

/// Two instances whose booking writes are slowed down (2 ms), so a check and its write are
/// never back to back: without the etag guard several of them would win.
async fn racing_instances(emu: &Emulator) -> (Arc<CosmosStore>, Arc<CosmosStore>) {
    let slow = || vec![latency(Op::BatchItem, 2)];
    (Arc::new(emu.store_with_faults(slow()).await), Arc::new(emu.store_with_faults(slow()).await))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_100_parallel_bookings_of_one_slot_one_wins() {
    let emu = Emulator::new();
    let (a, b) = racing_instances(&emu).await;
    let r = room(2);
    a.insert_room(&r, None).await.unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let bk = booking(r.id, &format!("user{i}"), slot(10, 1));
            tokio::spawn(async move { store.book_room(&bk, None).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(live_bookings(&*a, r.id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_find_or_create_never_overlaps() {
    let emu = Emulator::new();
    let (a, b) = racing_instances(&emu).await;
    let existing: Vec<Room> = (0..3).map(|_| room(2)).collect();
    for r in &existing {
        a.insert_room(r, None).await.unwrap();
    }
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let bk = booking(RoomId::random(), &format!("user{i}"), slot(10, 1));
            let fresh = room(2);
            tokio::spawn(async move { store.book_any_room(&bk, Some(&fresh), None).await })
        })
        .collect();
    let mut rooms = std::collections::HashSet::new();
    for t in tasks {
        let (bk, rm) = t.await.unwrap().unwrap().into_inner();
        assert_eq!(bk.room_id, rm.id);
        assert!(rooms.insert(rm.id), "room {} booked twice for one slot", rm.id);
    }
    for r in &existing {
        assert!(rooms.contains(&r.id), "free room {} was skipped", r.id);
    }
    for id in rooms {
        assert_eq!(live_bookings(&*a, id).await.len(), 1);
    }
}

#[tokio::test]
async fn a_burst_of_throttling_is_absorbed() {
    let emu = Emulator::new();
    let rule = fault(Op::BatchItem, E::TooManyRequests, Some(2));
    let store = emu.store_with_faults(vec![rule.clone()]).await;
    let r = room(2);
    store.insert_room(&r, None).await.unwrap();
    rule.enable();
    let wanted = booking(r.id, "alice", slot(10, 1));
    let b = booked(store.book_room(&wanted, None).await.unwrap(), &wanted);
    assert_eq!(rule.hit_count(), 2);
    assert_eq!(live_bookings(&store, r.id).await, vec![b]);
}

#[tokio::test]
async fn persistent_throttling_answers_unavailable_within_seconds() {
    let emu = Emulator::new();
    let rule = fault(Op::BatchItem, E::TooManyRequests, None);
    let store = emu.store_with_faults(vec![rule.clone()]).await;
    let r = room(2);
    store.insert_room(&r, None).await.unwrap();
    rule.enable();
    let started = Instant::now();
    let res = store.book_room(&booking(r.id, "alice", slot(10, 1)), None).await;
    let elapsed = started.elapsed();
    match res {
        Err(StoreError::Unavailable { retry_after: Some(d), .. }) => assert!(d > std::time::Duration::ZERO),
        other => panic!("expected Unavailable with retry_after, got {other:?}"),
    }
    assert!(elapsed < std::time::Duration::from_secs(5), "took {elapsed:?}");
    rule.disable();
    assert!(live_bookings(&store, r.id).await.is_empty());
}

async fn failed_write_leaves_nothing(error: E) {
    let emu = Emulator::new();
    let rule = fault(Op::BatchItem, error, None);
    let store = emu.store_with_faults(vec![rule.clone()]).await;
    let r = room(2);
    store.insert_room(&r, None).await.unwrap();
    rule.enable();
    let b = booking(r.id, "alice", slot(10, 1));
    let started = Instant::now();
    let res = store.book_room(&b, None).await;
    assert!(matches!(res, Err(StoreError::Unavailable { retry_after: Some(_), .. })), "{res:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
    // Find-or-create with a new room fails whole: no room without its booking.
    let fresh = room(2);
    let res = store.book_any_room(&booking(RoomId::random(), "bob", slot(10, 1)), Some(&fresh), None).await;
    assert!(matches!(res, Err(StoreError::Unavailable { .. })), "{res:?}");
    rule.disable();
    let other = emu.store().await;
    assert!(live_bookings(&other, r.id).await.is_empty());
    assert!(other.list_bookings("alice", None).await.unwrap().is_empty());
    assert!(matches!(other.get_room(fresh.id).await, Err(StoreError::NotFound)));
    assert!(other.list_bookings("bob", None).await.unwrap().is_empty());
    // The room is untouched and still bookable.
    assert_eq!(other.get_room(r.id).await.unwrap(), r);
    other.book_room(&b, None).await.unwrap();
}

#[tokio::test]
async fn service_unavailable_on_the_booking_write_leaves_nothing() {
    failed_write_leaves_nothing(E::ServiceUnavailable).await;
}

#[tokio::test]
async fn timeout_on_the_booking_write_leaves_nothing() {
    failed_write_leaves_nothing(E::Timeout).await;
}

#[tokio::test]
async fn lost_response_after_a_committed_booking_is_one_booking() {
    let emu = Emulator::new();
    let rule = fault(Op::BatchItem, E::ResponseTimeoutAfterService, Some(1));
    let store = emu.store_with_faults(vec![rule.clone()]).await;
    let r = room(2);
    store.insert_room(&r, None).await.unwrap();
    rule.enable();
    let wanted = booking(r.id, "alice", slot(10, 1));
    let b = booked(store.book_room(&wanted, None).await.unwrap(), &wanted);
    assert_eq!(rule.hit_count(), 1);
    assert_eq!(live_bookings(&store, r.id).await, vec![b]);
}

#[tokio::test]
async fn lost_response_after_a_committed_room_create_is_not_already_exists() {
    let emu = Emulator::new();
    let rule = fault(Op::CreateItem, E::ResponseTimeoutAfterService, Some(1));
    let store = emu.store_with_faults(vec![rule.clone()]).await;
    rule.enable();
    let r = room(2);
    assert_eq!(store.insert_room(&r, None).await.unwrap(), Created::New(r.clone()));
    assert_eq!(rule.hit_count(), 1);
    assert_eq!(store.get_room(r.id).await.unwrap(), r);
}

#[tokio::test]
async fn lost_response_after_find_or_create_is_one_room_one_booking() {
    let emu = Emulator::new();
    let rule = fault(Op::BatchItem, E::ResponseTimeoutAfterService, Some(1));
    let store = emu.store_with_faults(vec![rule.clone()]).await;
    rule.enable();
    let owner = format!("owner-{}", Uuid::new_v4());
    let fresh = room(2);
    let b = booking(RoomId::random(), &owner, slot(10, 1));
    let (got, rm) = store.book_any_room(&b, Some(&fresh), None).await.unwrap().into_inner();
    assert_eq!(rule.hit_count(), 1);
    assert_eq!(rm, fresh);
    assert_eq!(store.list_bookings(&owner, None).await.unwrap(), vec![got]);
}

#[tokio::test]
async fn idempotent_booking_replays_on_another_instance() {
    let emu = Emulator::new();
    let (a, b) = (emu.store().await, emu.store().await);
    let r = room(2);
    a.insert_room(&r, None).await.unwrap();
    let claim = IdempotencyClaim {
        scope: "bookings",
        user: "alice".into(),
        key: format!("key/{}", Uuid::new_v4()),
        fingerprint: "f1".into(),
        now: now(),
    };
    let wanted = booking(r.id, "alice", slot(10, 1));
    let first = booked(a.book_room(&wanted, Some(&claim)).await.unwrap(), &wanted);
    let retry = booking(r.id, "alice", slot(10, 1));
    assert_eq!(b.book_room(&retry, Some(&claim)).await.unwrap(), Created::Replayed(first.clone()));
    let other = IdempotencyClaim { fingerprint: "f2".into(), ..claim.clone() };
    assert!(matches!(b.book_room(&retry, Some(&other)).await, Err(StoreError::IdempotencyMismatch)));
    assert_eq!(live_bookings(&a, r.id).await, vec![first]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_create_one_room() {
    let emu = Emulator::new();
    let (a, b) = (Arc::new(emu.store().await), Arc::new(emu.store().await));
    let claim = IdempotencyClaim {
        scope: "rooms",
        user: format!("u-{}", Uuid::new_v4()),
        key: "k".into(),
        fingerprint: "f".into(),
        now: now(),
    };
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let claim = claim.clone();
            tokio::spawn(async move { store.insert_room(&room(2), Some(&claim)).await })
        })
        .collect();
    let mut created = vec![];
    for t in tasks {
        match t.await.unwrap() {
            Ok(Created::New(r)) => created.push(r.id),
            Ok(Created::Replayed(r)) => created.push(r.id),
            // The first request was still writing: the client is told to come back.
            Err(StoreError::Unavailable { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    created.dedup();
    assert_eq!(created.len(), 1, "{created:?}");
}

#[tokio::test]
async fn markers_are_claimed_once_across_instances() {
    let emu = Emulator::new();
    let (a, b) = (emu.store().await, emu.store().await);
    let key = format!("alert/{}", Uuid::new_v4());
    assert!(a.claim_marker(&key, now()).await.unwrap());
    assert!(!b.claim_marker(&key, now()).await.unwrap());
}

/// Opt-in (ignored by default; `-- --ignored`): runs against a real account given by `SUROGA_COSMOS_TEST_ENDPOINT` and
/// `SUROGA_COSMOS_TEST_KEY` are set (database `SUROGA_COSMOS_TEST_DATABASE`, default
/// `suroga-test`, with containers `rooms` and `ops` made by infra). It covers what the
/// emulator ignores: indexing policy on the real query paths and container TTL settings.
#[tokio::test]
#[ignore = "opt-in: needs a real account; run with SUROGA_COSMOS_TEST_ENDPOINT and SUROGA_COSMOS_TEST_KEY and -- --ignored"]
async fn real_account() {
    let (Ok(endpoint), Ok(key)) =
        (std::env::var("SUROGA_COSMOS_TEST_ENDPOINT"), std::env::var("SUROGA_COSMOS_TEST_KEY"))
    else {
        panic!("set SUROGA_COSMOS_TEST_ENDPOINT and SUROGA_COSMOS_TEST_KEY to run this test against a real account");
    };
    let cfg = suroga::config::CosmosConfig {
        endpoint,
        database: std::env::var("SUROGA_COSMOS_TEST_DATABASE").unwrap_or_else(|_| "suroga-test".into()),
        container: "rooms".into(),
        ops_container: "ops".into(),
        key: Some(suroga::config::Secret::new(key)),
        region: std::env::var("SUROGA_COSMOS_TEST_REGION").unwrap_or_else(|_| "West Europe".into()),
        credential: suroga::config::CosmosCredentialKind::DeveloperTools,
    };
    let store = suroga::store::cosmos::CosmosStore::connect(&cfg).await.unwrap();
    let r = room(2);
    store.insert_room(&r, None).await.unwrap();
    let b = booking(r.id, &format!("owner-{}", Uuid::new_v4()), slot(10, 1));
    store.book_room(&b, None).await.unwrap();
    // The fan-out queries run on the real index.
    assert_eq!(store.list_bookings(&b.owner, None).await.unwrap(), vec![b.clone()]);
    assert!(store.list_rooms(&Default::default()).await.unwrap().iter().any(|x| x.id == r.id));
    assert!(store.bookings_between(b.slot).await.unwrap().contains(&b));
    store.cancel_booking(b.id, now()).await.unwrap();
    store.delete_room(r.id, now()).await.unwrap();
}

/// An `Idempotency-Key`'s first request stalls past the claim's lease (its booking write takes
/// 3 s to arrive); the client's retry, on another instance, takes the key over and books. The
/// stalled write must not land beside it: one key, one booking, and every answer names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_first_request_and_the_retry_that_takes_its_key_over_book_once() {
    let emu = Emulator::new();
    let stalled = Arc::new(emu.store_with_faults(vec![latency(Op::BatchItem, 3000)]).await);
    let retrying = Arc::new(emu.store().await);
    for _ in 0..4 {
        retrying.insert_room(&room(2), None).await.unwrap();
    }
    let claim = |at: DateTime<Utc>| IdempotencyClaim {
        scope: "bookings",
        user: "alice".into(),
        key: "book-once".into(),
        fingerprint: "same-body".into(),
        now: at,
    };
    let first = {
        let stalled = stalled.clone();
        tokio::spawn(async move {
            stalled.book_any_room(&booking(RoomId::random(), "alice", slot(10, 1)), None, Some(&claim(now()))).await
        })
    };
    // The first request holds the key (its claim is written) and its booking write is on the way.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    // The retry comes after the lease: the clock is a parameter, so no test waits 30 s.
    let later = now() + Duration::seconds(31);
    let again = Booking { created_at: later, ..booking(RoomId::random(), "alice", slot(10, 1)) };
    let retry = retrying.book_any_room(&again, None, Some(&claim(later))).await;
    let first = first.await.unwrap();

    let stored = retrying.list_bookings("alice", None).await.unwrap();
    assert_eq!(stored.len(), 1, "one key, yet these bookings are stored: {stored:#?}");
    for answer in [&first, &retry] {
        match answer {
            Ok(c) => assert_eq!(c.clone().into_inner().0.id, stored[0].id, "an answer names another booking"),
            // The stalled request may also learn that its key moved on; it must not book.
            Err(StoreError::Unavailable { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(retry.is_ok(), "the retry that took the key over books: {retry:?}");
}
