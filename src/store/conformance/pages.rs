//! Conformance cases of the keyset pages ([`Store::rooms_page`], [`Store::bookings_page`],
//! [`Store::deliveries_page`]): a walk page by page sees every item once, in the list's order,
//! while rows are added ahead of and behind its position. Safe on a shared store: rooms and
//! bookings are the case's own (its creation window, its owner); the outbox walk checks the
//! order of everything it sees and the case's own events by id.

use chrono::{DateTime, Duration, Utc};

use super::{Fixture, ids, new};
use crate::domain::{Booking, BookingStatus, Room, RoomId, events::OutboxEvent};
use crate::store::{BookingKey, BookingQuery, Delivery, DeliveryKey, RoomFilter, RoomKey, Store};

/// Walks `rooms_page` with pages of `limit`, calling `between` after each page.
async fn walk_rooms(
    store: &dyn Store,
    filter: &RoomFilter,
    limit: usize,
    mut between: impl AsyncFnMut(usize),
) -> Vec<Room> {
    let (mut all, mut after, mut pages) = (Vec::new(), None::<RoomKey>, 0);
    loop {
        let page = store.rooms_page(filter, after.as_ref(), limit).await.unwrap();
        assert!(page.len() <= limit, "a page of {} rooms for a limit of {limit}", page.len());
        let Some(last) = page.last() else { return all };
        after = Some(RoomKey::of(last));
        all.extend(page);
        pages += 1;
        between(pages).await;
        assert!(pages < 1000, "the walk never ends");
    }
}

async fn walk_bookings(store: &dyn Store, q: &BookingQuery, limit: usize) -> Vec<Booking> {
    let (mut all, mut after) = (Vec::new(), None::<BookingKey>);
    loop {
        let page = store.bookings_page(q, after.as_ref(), limit).await.unwrap();
        assert!(page.len() <= limit);
        let Some(last) = page.last() else { return all };
        after = Some(BookingKey::of(last));
        all.extend(page);
        assert!(all.len() < 100_000, "the walk never ends");
    }
}

fn query(f: &Fixture, now: DateTime<Utc>) -> BookingQuery {
    BookingQuery { owner: f.owner.clone(), during: None, status: None, now }
}

pub async fn rooms_pages_walk_every_room_once_in_order_while_rooms_are_added(store: &dyn Store) {
    let f = Fixture::new();
    // Seven rooms; three share one creation instant, so the id breaks the tie.
    let mut rooms = Vec::new();
    for ms in [5, 1, 3, 3, 3, 7, 2] {
        rooms.push(store.insert_room(&f.room(1, ms), None).await.unwrap().into_inner());
    }
    rooms.sort_by_key(RoomKey::of);
    let filter = f.own_rooms();
    assert_eq!(ids(&store.list_rooms(&filter).await.unwrap()), ids(&rooms), "the unpaged order");

    let mut added = Vec::new();
    let walked = walk_rooms(store, &filter, 3, async |page| {
        if page == 1 {
            // One ahead of the walk (seen once) and one behind it (not seen).
            let ahead = store.insert_room(&f.room(1, 900), None).await.unwrap().into_inner();
            store.insert_room(&f.room(1, 0), None).await.unwrap();
            added.push(ahead);
        }
    })
    .await;
    let expected: Vec<RoomId> = ids(&rooms).into_iter().chain(ids(&added)).collect();
    assert_eq!(ids(&walked), expected, "every room once, in order, the one added ahead at the end");

    assert_eq!(ids(&walk_rooms(store, &filter, 1, async |_| {}).await).len(), 9, "pages of one");
    assert_eq!(ids(&walk_rooms(store, &filter, 1000, async |_| {}).await).len(), 9, "one page");
    assert!(store.rooms_page(&filter, None, 0).await.unwrap().is_empty(), "a limit of 0 reads nothing");
}

pub async fn rooms_pages_keep_the_free_during_filter(store: &dyn Store) {
    let f = Fixture::new();
    let mut rooms = Vec::new();
    for ms in 0..6 {
        rooms.push(store.insert_room(&f.room(1, ms), None).await.unwrap().into_inner());
    }
    // Rooms 0, 2 and 3 are busy in the slot.
    for i in [0, 2, 3] {
        f.stored_booking(store, rooms[i].id, f.slot(0, 60)).await;
    }
    let filter = RoomFilter { free_during: Some(f.slot(30, 90)), ..f.own_rooms() };
    let free: Vec<RoomId> = [1, 4, 5].iter().map(|&i| rooms[i].id).collect();
    assert_eq!(ids(&walk_rooms(store, &filter, 1, async |_| {}).await), free);
    assert_eq!(ids(&walk_rooms(store, &filter, 2, async |_| {}).await), free);
    assert_eq!(ids(&store.rooms_page(&filter, None, 2).await.unwrap()), free[..2].to_vec(), "a full first page");
}

pub async fn bookings_pages_walk_in_order_and_filter_by_status_and_day(store: &dyn Store) {
    let f = Fixture::new();
    let (a, b) = (f.stored_room(store).await, f.stored_room(store).await);
    // Two bookings start at each instant (one per room): the id breaks the tie.
    let mut all = Vec::new();
    for h in 0..4 {
        all.push(f.stored_booking(store, a.id, f.slot(h * 60, h * 60 + 30)).await);
        all.push(f.stored_booking(store, b.id, f.slot(h * 60, h * 60 + 45)).await);
    }
    let cancelled = store.cancel_booking(all[6].id, f.at(-10)).await.unwrap();
    all[6] = cancelled.clone();
    all.sort_by_key(BookingKey::of);
    let now = f.at(70); // the bookings of hour 0 are past, hour 1 active, hours 2 and 3 upcoming
    assert_eq!(walk_bookings(store, &query(&f, now), 3).await, all, "every field, in order");
    assert_eq!(walk_bookings(store, &query(&f, now), 1000).await, all);

    let with = |status| BookingQuery { status: Some(status), ..query(&f, now) };
    let of = |want: BookingStatus| -> Vec<Booking> { all.iter().filter(|b| b.status(now) == want).cloned().collect() };
    for status in [BookingStatus::Past, BookingStatus::Active, BookingStatus::Upcoming, BookingStatus::Cancelled] {
        let walked = walk_bookings(store, &with(status), 1).await;
        assert_eq!(walked, of(status), "{status:?}");
        assert!(!walked.is_empty(), "{status:?} has bookings in this case");
    }
    let during = BookingQuery { during: Some(f.slot(100, 150)), ..query(&f, now) };
    let overlapping: Vec<Booking> = all.iter().filter(|b| b.slot.overlaps(&f.slot(100, 150))).cloned().collect();
    assert_eq!(walk_bookings(store, &during, 1).await, overlapping);
    let other = BookingQuery { owner: format!("{}-other", f.owner), ..query(&f, now) };
    assert!(store.bookings_page(&other, None, 10).await.unwrap().is_empty(), "only the owner's");
}

pub async fn deliveries_pages_walk_newest_first_once(store: &dyn Store) {
    let f = Fixture::new();
    let room = f.stored_room(store).await;
    // Three events share one instant (the bookings' creation): the id breaks the tie.
    let mut mine = Vec::new();
    for h in 0..5 {
        let mut b = f.booking(room.id, f.slot(h * 60, h * 60 + 30));
        b.created_at = f.base - Duration::days(1) + Duration::seconds(if h < 3 { 0 } else { h });
        let b = new(store.book_room_notify(&b, None, Some(f.at(-60))).await.unwrap());
        mine.push(OutboxEvent::booking_created(&b).id);
    }
    let (mut seen, mut after, mut previous) = (Vec::<Delivery>::new(), None::<DeliveryKey>, None::<DeliveryKey>);
    loop {
        let page = store.deliveries_page(None, after.as_ref(), 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(DeliveryKey::of(last));
        for d in page {
            let key = DeliveryKey::of(&d);
            if let Some(p) = &previous {
                assert!(p.precedes(&key), "{p:?} listed before {key:?}");
            }
            previous = Some(key);
            seen.push(d);
        }
        assert!(seen.len() < 1_000_000, "the walk never ends");
    }
    let walked_mine: Vec<&String> = seen.iter().map(|d| &d.event.id).filter(|id| mine.contains(id)).collect();
    assert_eq!(walked_mine.len(), mine.len(), "each of the case's events once");
    let pending = store.deliveries_page(Some(crate::store::DeliveryStatus::Pending), None, usize::MAX).await.unwrap();
    assert!(mine.iter().all(|id| pending.iter().any(|d| &d.event.id == id)));
    let failed = store.deliveries_page(Some(crate::store::DeliveryStatus::Failed), None, usize::MAX).await.unwrap();
    assert!(!failed.iter().any(|d| mine.contains(&d.event.id)));
}
