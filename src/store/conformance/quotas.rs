//! Conformance cases of the per-user quota ledgers ([`Store::quota_ledger`],
//! [`Store::put_quota_ledger`]): absent until written, every field round-trips, compare-and-set
//! on the version, of writers racing on one version exactly one wins; and, where a store counts
//! an owner's live bookings in a booking's write, that count. Safe on a shared
//! store: each case's user is its own.

use chrono::Duration;
use futures::future::join_all;
use uuid::Uuid;

use super::{Fixture, new};
use crate::domain::RoomId;
use crate::store::{Along, Created, LedgerBooking, LedgerRoom, LiveCap, QuotaLedger, Store, StoreError};

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

/// Where the backend counts an owner's live bookings in a booking's write
/// ([`Store::counts_live_bookings`]): at the cap the write is `LimitReached` and writes nothing;
/// cancelled and ended bookings and other owners' do not count; a replay at the cap is answered
/// as a replay; find-or-create counts too. Elsewhere, a cap is refused and nothing is written.
pub async fn a_live_cap_counts_the_owners_live_bookings_in_the_write(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    let cap = |limit, now| Along { notify: None, live_cap: Some(LiveCap { limit, now }) };
    let first = f.booking(room.id, f.slot(0, 60));
    if !store.counts_live_bookings() {
        assert!(matches!(store.book_room_with(&first, None, cap(5, f.base)).await, Err(StoreError::Internal(_))));
        assert!(matches!(store.get_booking(first.id).await, Err(StoreError::NotFound)));
        return;
    }
    let claim = f.claim("bookings", "cap-1", "fp", f.at(-10));
    let first = new(store.book_room_with(&first, Some(&claim), cap(1, f.base)).await.unwrap());
    // One live booking held: a cap of 1 refuses the next, in a given room or any.
    let second = f.booking(room.id, f.slot(60, 120));
    assert!(matches!(store.book_room_with(&second, None, cap(1, f.base)).await, Err(StoreError::LimitReached)));
    assert!(matches!(store.get_booking(second.id).await, Err(StoreError::NotFound)));
    let any = f.booking(RoomId::random(), f.slot(0, 60));
    let refused = store.book_any_room_with(&any, Some(&f.room(2, 1)), None, cap(1, f.base)).await;
    assert!(matches!(refused, Err(StoreError::LimitReached)), "{refused:?}");
    // A replay at the cap is the first request's answer.
    let replay = store.book_room_with(&f.booking(room.id, f.slot(0, 60)), Some(&claim), cap(1, f.base)).await;
    assert_eq!(replay.unwrap(), Created::Replayed(first.clone()));
    // Another owner's bookings count for that owner only.
    let other = Fixture { owner: format!("user-{}", Uuid::new_v4()), base: f.base };
    new(store.book_room_with(&other.booking(room.id, f.slot(120, 180)), None, cap(1, f.base)).await.unwrap());
    // A cap of 2 lets a second one in.
    let second = new(store.book_room_with(&second, None, cap(2, f.base)).await.unwrap());
    // A cancelled booking no longer counts; an ended one neither.
    store.cancel_booking(second.id, f.base).await.unwrap();
    let third = f.booking(room.id, f.slot(180, 240));
    assert!(matches!(store.book_room_with(&third, None, cap(1, f.base)).await, Err(StoreError::LimitReached)));
    let (b, _) = new(store.book_any_room_with(&any, Some(&f.room(2, 1)), None, cap(1, f.at(60))).await.unwrap());
    assert_eq!(store.get_booking(b.id).await.unwrap().owner, f.owner);
}
