//! The store conformance suite against the embedded SQLite backend, one fresh database file per
//! test, plus the cross-process race: two stores on one file, as two API instances would open it.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{Duration, Utc};
use futures::future::join_all;
use suroga::domain::{Booking, Room, RoomId, TimeSlot};
use suroga::store::sqlite::SqliteStore;
use suroga::store::{Store, StoreError};
use tempfile::TempDir;
use uuid::Uuid;

/// A store on a fresh file; the folder goes when the test ends.
struct FreshStore {
    store: SqliteStore,
    _dir: TempDir,
}

impl Deref for FreshStore {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        &self.store
    }
}

fn db_path(dir: &TempDir) -> PathBuf {
    // A folder that does not exist yet: open must create it.
    dir.path().join("data").join("suroga.db")
}

async fn fresh_store() -> FreshStore {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(&db_path(&dir)).unwrap();
    FreshStore { store, _dir: dir }
}

suroga::store_conformance_tests!(fresh_store());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_let_exactly_one_of_100_parallel_bookings_win() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());

    let start = Utc::now() + Duration::days(30);
    let slot = TimeSlot::new(start, start + Duration::hours(1)).unwrap();
    let room = Room::generate(None, 2, serde_json::Map::new(), Utc::now());
    a.insert_room(&room, None).await.unwrap();
    // Written through one store, visible through the other.
    assert_eq!(b.get_room(room.id).await.unwrap(), room);

    let bookings: Vec<Booking> = (0..100)
        .map(|_| Booking {
            id: Uuid::new_v4(),
            room_id: room.id,
            owner: format!("user-{}", Uuid::new_v4()),
            slot,
            created_at: Utc::now(),
            cancelled_at: None,
            access: Default::default(),
        })
        .collect();
    let results = join_all(bookings.iter().enumerate().map(|(i, bk)| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { store.book_room(bk, None).await }
    }))
    .await;
    let mut wins = 0;
    for r in results {
        match r {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error in the race: {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(a.room_bookings(room.id, start - Duration::hours(1)).await.unwrap().len(), 1);
    assert_eq!(b.room_bookings(room.id, start - Duration::hours(1)).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_never_double_book_a_room_in_find_or_create() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());

    let start = Utc::now() + Duration::days(30);
    let slot = TimeSlot::new(start, start + Duration::hours(1)).unwrap();
    let results = join_all((0..60).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            let booking = Booking {
                id: Uuid::new_v4(),
                room_id: RoomId::random(),
                owner: format!("user-{}", Uuid::new_v4()),
                slot,
                created_at: Utc::now(),
                cancelled_at: None,
                access: Default::default(),
            };
            let room = Room::generate(None, 2, serde_json::Map::new(), Utc::now());
            store.book_any_room(&booking, Some(&room), None).await
        }
    }))
    .await;
    let mut rooms: Vec<RoomId> = results.into_iter().map(|r| r.unwrap().into_inner().1.id).collect();
    rooms.sort();
    rooms.dedup();
    assert_eq!(rooms.len(), 60, "two bookings of one slot landed in one room");
    assert_eq!(a.bookings_between(slot).await.unwrap().len(), 60);
}
