//! The Cosmos DB store on the SDK's in-memory emulator: what each `Store` operation costs in
//! Cosmos requests, and booking throughput and latency percentiles with two app instances.
//!
//! The emulator serves requests from memory, so the times measure the SDK pipeline and our
//! code, not a network: read them as ratios (requests per booking, contention cost), not as
//! Azure latencies. The request counts are exact and carry over to a real account.
//!
//! `cargo bench --bench cosmos [-- <bookings per workload>]` (default 400)

#[path = "../tests/support/cosmos.rs"]
mod support;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration as StdDuration, Instant},
};

use chrono::{DateTime, Duration, TimeZone, Utc};
use support::Emulator;
use suroga::{
    domain::{Booking, Room, RoomId, TimeSlot},
    store::{Assignment, IdempotencyClaim, Operation, RoomFilter, Store, cosmos::CosmosStore},
};
use uuid::Uuid;

const TASKS: usize = 32;

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap()
}

fn hour_slot(h: i64) -> TimeSlot {
    TimeSlot::new(base() + Duration::hours(h), base() + Duration::hours(h + 1)).unwrap()
}

fn new_room(seats: u8) -> Room {
    Room::generate(None, seats, Default::default(), base())
}

fn booking(room: RoomId, owner: &str, slot: TimeSlot) -> Booking {
    Booking {
        id: Uuid::new_v4(),
        room_id: room,
        owner: owner.into(),
        slot,
        created_at: base(),
        cancelled_at: None,
        access: Default::default(),
    }
}

/// Runs `f` once and returns its result with the requests it sent, by kind.
async fn cost<T>(emu: &Emulator, f: impl std::future::Future<Output = T>) -> (T, u64, BTreeMap<String, u64>) {
    let (t0, k0) = (emu.counter.total(), emu.counter.by_kind());
    let out = f.await;
    let (t1, k1) = (emu.counter.total(), emu.counter.by_kind());
    let diff = k1
        .into_iter()
        .filter_map(|(k, v)| Some((k.clone(), v - k0.get(&k).copied().unwrap_or(0))).filter(|(_, d)| *d > 0))
        .collect();
    (out, t1 - t0, diff)
}

fn show(name: &str, n: u64, kinds: &BTreeMap<String, u64>) {
    let detail: Vec<String> = kinds.iter().map(|(k, v)| format!("{v}× {k}")).collect();
    println!("  {name:<42} {n:>3}   {}", detail.join(", "));
}

async fn request_costs(emu: &Emulator, store: &CosmosStore) {
    println!("Cosmos requests per Store operation (no contention; 20 rooms, 4 physical partitions):");
    let owner = format!("owner-{}", Uuid::new_v4());
    let mut rooms = vec![];
    for _ in 0..20 {
        let r = new_room(2);
        store.insert_room(&r, None).await.unwrap();
        rooms.push(r);
    }
    // Warm the client's caches (account, partition map, query plans) outside the counts.
    store.get_room(rooms[0].id).await.unwrap();
    store.list_bookings("nobody", None).await.unwrap();

    let r = new_room(2);
    let (_, n, k) = cost(emu, store.insert_room(&r, None)).await;
    show("insert_room", n, &k);
    let (_, n, k) = cost(emu, store.get_room(r.id)).await;
    show("get_room", n, &k);
    let b = booking(r.id, &owner, hour_slot(1));
    let (_, n, k) = cost(emu, store.book_room(&b, None)).await;
    show("book_room", n, &k);
    let claim = IdempotencyClaim {
        scope: "bookings",
        user: owner.clone(),
        key: "k1".into(),
        fingerprint: "f".into(),
        now: base(),
    };
    let b2 = booking(r.id, &owner, hour_slot(2));
    let (_, n, k) = cost(emu, store.book_room(&b2, Some(&claim))).await;
    show("book_room with idempotency key", n, &k);
    let (_, n, k) = cost(emu, store.book_room(&booking(r.id, &owner, hour_slot(2)), Some(&claim))).await;
    show("book_room replay of that key", n, &k);
    let (_, n, k) = cost(emu, store.book_room(&booking(r.id, &owner, hour_slot(1)), None)).await;
    show("book_room that conflicts", n, &k);
    let (_, n, k) =
        cost(emu, store.book_any_room(&booking(RoomId::random(), &owner, hour_slot(3)), Some(&new_room(2)), None))
            .await;
    show("book_any_room (a free room exists)", n, &k);
    // Fill every room for one slot, then find-or-create must create.
    for room in &rooms {
        store.book_room(&booking(room.id, "filler", hour_slot(4)), None).await.unwrap();
    }
    store.book_room(&booking(r.id, "filler", hour_slot(4)), None).await.unwrap();
    let mut extra =
        store.list_rooms(&RoomFilter { free_during: Some(hour_slot(4)), ..Default::default() }).await.unwrap();
    for room in extra.drain(..) {
        if room.max_participants >= 2 {
            store.book_room(&booking(room.id, "filler", hour_slot(4)), None).await.unwrap();
        }
    }
    let (_, n, k) =
        cost(emu, store.book_any_room(&booking(RoomId::random(), &owner, hour_slot(4)), Some(&new_room(2)), None))
            .await;
    show("book_any_room (none free: creates the room)", n, &k);
    let (_, n, k) = cost(emu, store.get_booking(b.id)).await;
    show("get_booking (fan-out)", n, &k);
    let (_, n, k) = cost(emu, store.list_bookings(&owner, None)).await;
    show("list_bookings (fan-out)", n, &k);
    let (_, n, k) = cost(emu, store.bookings_between(TimeSlot::new(base(), base() + Duration::days(1)).unwrap())).await;
    show("bookings_between (fan-out)", n, &k);
    let (_, n, k) = cost(emu, store.list_rooms(&RoomFilter::default())).await;
    show("list_rooms (fan-out)", n, &k);
    let (_, n, k) =
        cost(emu, store.list_rooms(&RoomFilter { free_during: Some(hour_slot(5)), ..Default::default() })).await;
    show("list_rooms free_during (2 fan-outs)", n, &k);
    let (_, n, k) = cost(emu, store.room_bookings(r.id, base())).await;
    show("room_bookings", n, &k);
    let (_, n, k) = cost(emu, store.set_booking_end(b.id, b.slot.end() - Duration::minutes(15))).await;
    show("set_booking_end", n, &k);
    let (_, n, k) = cost(emu, store.cancel_booking(b.id, base())).await;
    show("cancel_booking", n, &k);
    let pw = store.get_room(r.id).await.unwrap().password;
    let (_, n, k) = cost(emu, store.set_room_password(r.id, &pw, "Newpassword23", base())).await;
    show("set_room_password", n, &k);
    let gone = new_room(2);
    store.insert_room(&gone, None).await.unwrap();
    store
        .book_room(
            &booking(gone.id, &owner, TimeSlot::new(base() - Duration::hours(3), base() - Duration::hours(2)).unwrap()),
            None,
        )
        .await
        .unwrap();
    let (_, n, k) = cost(emu, store.delete_room(gone.id, base())).await;
    show("delete_room (one past booking)", n, &k);
    let (_, n, k) = cost(emu, store.ping()).await;
    show("ping", n, &k);
    let (_, n, k) = cost(emu, store.claim_marker(&format!("m-{}", Uuid::new_v4()), base())).await;
    show("claim_marker", n, &k);
    let (_, n, k) =
        cost(emu, store.put_assignment(&Assignment { booking_id: b2.id, host: "h1".into(), ready_at: None })).await;
    show("put_assignment", n, &k);
    let (_, n, k) = cost(emu, store.assignments(&[b.id, b2.id])).await;
    show("assignments (fan-out)", n, &k);
    let op = Operation {
        id: Uuid::new_v4(),
        at: base(),
        actor: "reconciler".into(),
        action: suroga::store::OpAction::Start,
        host: Some("h1".into()),
        booking_id: None,
        room_id: None,
        result: "ok".into(),
        duration_ms: 1,
    };
    let (_, n, k) = cost(emu, store.append_operation(&op)).await;
    show("append_operation", n, &k);
    let (_, n, k) = cost(emu, store.operations(TimeSlot::new(base(), base() + Duration::hours(1)).unwrap())).await;
    show("operations (one day)", n, &k);
    let (_, n, k) = cost(emu, store.put_state("bench", &serde_json::json!({"a": 1}))).await;
    show("put_state", n, &k);
    let (_, n, k) = cost(emu, store.get_state("bench")).await;
    show("get_state", n, &k);
}

struct Run {
    latencies: Vec<StdDuration>,
    elapsed: StdDuration,
    requests: u64,
    ok: usize,
}

fn percentile(sorted: &[StdDuration], p: f64) -> StdDuration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn print_run(name: &str, run: &Run) {
    let mut l = run.latencies.clone();
    l.sort();
    println!(
        "  {name:<44} {:>5} calls {:>7.0}/s   p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms   {:.2} requests/call   {} booked",
        l.len(),
        l.len() as f64 / run.elapsed.as_secs_f64(),
        percentile(&l, 0.50).as_secs_f64() * 1e3,
        percentile(&l, 0.99).as_secs_f64() * 1e3,
        l.last().unwrap().as_secs_f64() * 1e3,
        run.requests as f64 / l.len() as f64,
        run.ok,
    );
}

/// `calls` bookings from TASKS tasks split over two instances; `pick(i)` gives call i's room and slot.
async fn load(
    emu: &Emulator,
    stores: [Arc<CosmosStore>; 2],
    calls: usize,
    any_room: bool,
    pick: Arc<dyn Fn(usize) -> (RoomId, TimeSlot) + Send + Sync>,
) -> Run {
    let before = emu.counter.total();
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = stores[t % 2].clone();
            let pick = pick.clone();
            tokio::spawn(async move {
                let mut out = vec![];
                for i in (t..calls).step_by(TASKS) {
                    let (room, slot) = pick(i);
                    let b = booking(room, &format!("user{i}"), slot);
                    let t0 = Instant::now();
                    let res = if any_room {
                        store.book_any_room(&b, Some(&new_room(2)), None).await.map(|_| ())
                    } else {
                        store.book_room(&b, None).await.map(|_| ())
                    };
                    out.push((t0.elapsed(), res.is_ok()));
                }
                out
            })
        })
        .collect();
    let mut run = Run { latencies: vec![], elapsed: StdDuration::ZERO, requests: 0, ok: 0 };
    for t in tasks {
        for (l, ok) in t.await.unwrap() {
            run.latencies.push(l);
            run.ok += ok as usize;
        }
    }
    run.elapsed = started.elapsed();
    run.requests = emu.counter.total() - before;
    run
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let calls: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(400);
    let emu = Emulator::new();
    let a = Arc::new(emu.store().await);
    let b = Arc::new(emu.store().await);
    request_costs(&emu, &a).await;

    println!("\nBooking load: {calls} calls per workload, {TASKS} tasks over two instances, one emulator account:");
    // Spread: every call its own room (no contention): the floor cost of a booking.
    let rooms: Vec<RoomId> = {
        let mut v = vec![];
        for _ in 0..calls {
            let r = new_room(2);
            a.insert_room(&r, None).await.unwrap();
            v.push(r.id);
        }
        v
    };
    let spread = rooms.clone();
    let run = load(&emu, [a.clone(), b.clone()], calls, false, Arc::new(move |i| (spread[i], hour_slot(100)))).await;
    print_run("book_room, one room per call", &run);

    // Hot rooms: 8 rooms, consecutive hours: calls race on each room's etag.
    let hot = rooms[..8].to_vec();
    let run = load(
        &emu,
        [a.clone(), b.clone()],
        calls,
        false,
        Arc::new(move |i| (hot[i % 8], hour_slot(200 + (i / 8) as i64))),
    )
    .await;
    print_run("book_room, 8 hot rooms, distinct slots", &run);

    // One slot, one room: one winner, everyone else Conflict.
    let one = rooms[8];
    let run =
        load(&emu, [a.clone(), b.clone()], calls.min(200), false, Arc::new(move |_| (one, hour_slot(5000)))).await;
    print_run("book_room, one room, one slot", &run);

    // Find-or-create over the whole fleet for distinct hours (a free room always exists).
    let run = load(
        &emu,
        [a.clone(), b.clone()],
        calls.min(200),
        true,
        Arc::new(move |i| (RoomId::random(), hour_slot(6000 + i as i64))),
    )
    .await;
    print_run(&format!("book_any_room, distinct slots, {} rooms", calls + 30), &run);
}
