//! Conformance cases of the per-user quota ledgers ([`Store::quota_ledger`],
//! [`Store::put_quota_ledger`]): absent until written, every field round-trips, compare-and-set
//! on the version, of writers racing on one version exactly one wins, and a ledger written along
//! with a booking commits with it or not at all. Safe on a shared
//! store: each case's user is its own.

use chrono::Duration;
use futures::future::join_all;
use uuid::Uuid;

use super::{Fixture, new};
use crate::domain::RoomId;
use crate::store::{Along, LedgerBooking, LedgerPut, LedgerRoom, QuotaLedger, Store, StoreError};

fn ledger(f: &Fixture, bookings: usize) -> QuotaLedger {
    QuotaLedger {
        bookings: (0..bookings)
            .map(|i| LedgerBooking {
                id: Uuid::new_v4(),
                end: f.at(60 * i as i64 + 30),
                reserved_at: f.base + Duration::nanoseconds(i as i64 + 1),
                key: (i % 2 == 0).then(|| format!("key-{i}")),
            })
            .collect(),
        rooms: vec![LedgerRoom { id: RoomId::random(), reserved_at: f.at(-5), key: Some("room-key".into()) }],
    }
}

pub async fn quota_ledger_is_absent_until_created_and_created_once(store: &dyn Store) {
    let f = Fixture::new();
    assert_eq!(store.quota_ledger(&f.owner).await.unwrap(), None);
    let first = ledger(&f, 3);
    let v = store.put_quota_ledger(&f.owner, &first, None).await.unwrap();
    let stored = store.quota_ledger(&f.owner).await.unwrap().expect("written");
    assert_eq!((stored.ledger, stored.version), (first, v), "every field round-trips");
    assert!(matches!(
        store.put_quota_ledger(&f.owner, &ledger(&f, 1), None).await,
        Err(StoreError::PreconditionFailed)
    ));
    // Another user's ledger is another document.
    let other = format!("user-{}/with?odd#chars", Uuid::new_v4());
    assert_eq!(store.quota_ledger(&other).await.unwrap(), None);
    store.put_quota_ledger(&other, &QuotaLedger::default(), None).await.unwrap();
    assert_eq!(store.quota_ledger(&other).await.unwrap().unwrap().ledger, QuotaLedger::default());
    assert_eq!(store.quota_ledger(&f.owner).await.unwrap().unwrap().version, v);
}

pub async fn quota_ledger_is_compare_and_set_on_its_version(store: &dyn Store) {
    let f = Fixture::new();
    let v1 = store.put_quota_ledger(&f.owner, &ledger(&f, 1), None).await.unwrap();
    let second = ledger(&f, 2);
    let v2 = store.put_quota_ledger(&f.owner, &second, Some(v1)).await.unwrap();
    assert_ne!(v1, v2, "every write changes the version");
    // A writer that read v1 lost.
    assert!(matches!(
        store.put_quota_ledger(&f.owner, &ledger(&f, 5), Some(v1)).await,
        Err(StoreError::PreconditionFailed)
    ));
    let stored = store.quota_ledger(&f.owner).await.unwrap().unwrap();
    assert_eq!((stored.ledger, stored.version), (second, v2), "a lost write changes nothing");
    // A version for a user without a ledger is a lost race too.
    let fresh = format!("user-{}", Uuid::new_v4());
    assert!(matches!(
        store.put_quota_ledger(&fresh, &ledger(&f, 1), Some(v2)).await,
        Err(StoreError::PreconditionFailed)
    ));
    assert_eq!(store.quota_ledger(&fresh).await.unwrap(), None);
}

pub async fn parallel_quota_ledger_writes_have_one_winner(store: &dyn Store) {
    let f = Fixture::new();
    // Creation: of 8 writers that found no ledger, one creates it.
    let creates: Vec<QuotaLedger> = (0..8).map(|_| ledger(&f, 1)).collect();
    let results = join_all(creates.iter().map(|l| store.put_quota_ledger(&f.owner, l, None))).await;
    let winners: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.is_ok()).map(|(i, _)| i).collect();
    assert_eq!(winners.len(), 1, "one creator wins: {results:?}");
    for r in &results {
        assert!(matches!(r, Ok(_) | Err(StoreError::PreconditionFailed)), "{r:?}");
    }
    let stored = store.quota_ledger(&f.owner).await.unwrap().unwrap();
    assert_eq!(stored.ledger, creates[winners[0]]);
    // Replacement: of 16 writers that read one version, one writes.
    let updates: Vec<QuotaLedger> = (0..16).map(|i| ledger(&f, i % 4 + 1)).collect();
    let results = join_all(updates.iter().map(|l| store.put_quota_ledger(&f.owner, l, Some(stored.version)))).await;
    let winners: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.is_ok()).map(|(i, _)| i).collect();
    assert_eq!(winners.len(), 1, "one writer wins: {results:?}");
    for r in &results {
        assert!(matches!(r, Ok(_) | Err(StoreError::PreconditionFailed)), "{r:?}");
    }
    let after = store.quota_ledger(&f.owner).await.unwrap().unwrap();
    assert_eq!(after.ledger, updates[winners[0]]);
    assert_eq!(&after.version, results[winners[0]].as_ref().unwrap());
}

/// Where the backend writes a ledger with a booking ([`Store::books_with_ledger`]): both commit
/// or neither. A lost compare-and-set writes no booking, a booking refused writes no ledger, a
/// replayed key writes neither. Elsewhere, a ledger along is refused and nothing is written.
pub async fn a_ledger_along_with_a_booking_commits_with_it_or_not_at_all(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let wanted = f.booking(room.id, f.slot(0, 60));
    let put = LedgerPut { user: f.owner.clone(), ledger: ledger(&f, 1), expected: None };
    let along = Along { notify: None, ledger: Some(&put) };
    if !store.books_with_ledger() {
        assert!(matches!(store.book_room_with(&wanted, None, along).await, Err(StoreError::Internal(_))));
        assert!(matches!(store.get_booking(wanted.id).await, Err(StoreError::NotFound)));
        assert_eq!(store.quota_ledger(&f.owner).await.unwrap(), None);
        return;
    }
    let v1 = store.put_quota_ledger(&f.owner, &ledger(&f, 2), None).await.unwrap();
    // A stale version: the booking is not written either.
    assert!(matches!(store.book_room_with(&wanted, None, along).await, Err(StoreError::PreconditionFailed)));
    assert!(matches!(store.get_booking(wanted.id).await, Err(StoreError::NotFound)));
    // The version read: both commit.
    let claim = f.claim("bookings", "along-1", "fp", f.at(-10));
    let fresh = LedgerPut { expected: Some(v1), ..put.clone() };
    let along = Along { notify: None, ledger: Some(&fresh) };
    let booked = new(store.book_room_with(&wanted, Some(&claim), along).await.unwrap());
    let stored = store.quota_ledger(&f.owner).await.unwrap().unwrap();
    assert_eq!((&stored.ledger, store.get_booking(booked.id).await.unwrap()), (&fresh.ledger, booked.clone()));
    // A replay writes no ledger, even one whose version still matches.
    let again = LedgerPut { ledger: ledger(&f, 3), expected: Some(stored.version), ..put.clone() };
    let along = Along { notify: None, ledger: Some(&again) };
    let replay = store.book_room_with(&wanted, Some(&claim), along).await.unwrap();
    assert!(!replay.is_new());
    assert_eq!(store.quota_ledger(&f.owner).await.unwrap().unwrap(), stored);
    // A booking refused (the slot is taken) writes no ledger.
    let taken = f.booking(room.id, f.slot(30, 90));
    assert!(matches!(store.book_room_with(&taken, None, along).await, Err(StoreError::Conflict(_))));
    // Find-or-create takes it along too.
    let any = f.booking(RoomId::random(), f.slot(0, 60));
    let (b, _) = new(store.book_any_room_with(&any, Some(&f.room(2, 0)), None, along).await.unwrap());
    let stored_after = store.quota_ledger(&f.owner).await.unwrap().unwrap();
    assert_eq!((stored_after.ledger, stored_after.version != stored.version), (again.ledger.clone(), true));
    assert_eq!(store.get_booking(b.id).await.unwrap().id, b.id);
}
