//! The Cosmos DB store at production scale, on the SDK's in-memory emulator: what each operation
//! costs in requests and documents read when the account holds 100 or 10,000 rooms and 0 or
//! 100,000 past bookings, with queries paged at 100 items (as the service would charge them).
//!
//! One line per operation and scale:
//! `op=<name> rooms=<n> history=<n> requests=<n> docs=<n> ru=<estimate> largest_request_kib=<x>
//! p50_ms=<x> p99_ms=<x>` (the most any sample of the operation needed; a request over 256 KiB of
//! SQL is one the service refuses, which the emulator does not), then a booking load with two app
//! instances on one account.
//!
//! `ru` estimates request units from Microsoft's published costs, per request the emulator saw:
//! a point read of a 1 KB item 1 RU (2 for a quorum read); a create 5.7 RU per KB, a replace or
//! upsert 10.7, a delete 5.7 (a batch is the sum of its operations, a read in it 1); a query page
//! 2.8 RU plus 1 RU per document it returns. Item sizes are taken from request bodies where the
//! emulator sees them, 1 KB otherwise. The emulator itself answers from memory: read the times as
//! ratios, not as Azure latencies. The request and document counts carry over to a real account.
//!
//! `cargo bench --bench cosmos [-- small | scale=<rooms>x<history> ...]` (`small`: 100 rooms and
//! no history only; `scale=10000x0`: the named scales only).

#[path = "../tests/support/cosmos.rs"]
mod support;

use std::{
    sync::Arc,
    time::{Duration as StdDuration, Instant},
};

use chrono::{DateTime, Duration, DurationRound, Utc};
use rand::Rng;
use support::Emulator;
use suroga::{
    domain::{Booking, Room, RoomId, TimeSlot},
    store::{Assignment, IdempotencyClaim, Operation, Store, cosmos::CosmosStore},
};
use uuid::Uuid;

/// Samples of each operation at each scale.
const SAMPLES: usize = 20;

/// Concurrent writers while seeding.
const SEEDERS: usize = 64;

fn now() -> DateTime<Utc> {
    Utc::now().duration_trunc(Duration::hours(1)).unwrap()
}

fn slot(start: DateTime<Utc>, minutes: i64) -> TimeSlot {
    TimeSlot::new(start, start + Duration::minutes(minutes)).unwrap()
}

fn new_room(seats: u8) -> Room {
    Room::generate(None, seats, Default::default(), Utc::now())
}

fn booking(room: RoomId, owner: &str, slot: TimeSlot) -> Booking {
    Booking {
        id: Uuid::new_v4(),
        room_id: room,
        owner: owner.into(),
        slot,
        created_at: Utc::now(),
        cancelled_at: None,
        access: Default::default(),
    }
}

/// A new `Idempotency-Key` of the bench's owner, as the API sends it.
fn fresh_claim() -> IdempotencyClaim {
    IdempotencyClaim {
        scope: "bookings",
        user: "bench-owner".into(),
        key: Uuid::new_v4().to_string(),
        fingerprint: "fp".into(),
        now: Utc::now(),
    }
}

/// What one sample of an operation cost.
#[derive(Clone, Copy, Default)]
struct Cost {
    requests: u64,
    /// The largest request body, in KiB (a query's parameters count: Cosmos refuses SQL over 256 KiB).
    largest_kib: f64,
    docs: u64,
    ru: f64,
    elapsed: StdDuration,
}

/// Runs `f` once and measures what it sent and read.
async fn measure<T>(emu: &Emulator, store: &CosmosStore, f: impl std::future::Future<Output = T>) -> (T, Cost) {
    let (r0, ru0, d0) = (emu.counter.total(), emu.counter.ru(), store.docs_read());
    emu.counter.reset_largest();
    let started = Instant::now();
    let out = f.await;
    let elapsed = started.elapsed();
    let cost = Cost {
        requests: emu.counter.total() - r0,
        largest_kib: emu.counter.largest() as f64 / 1024.0,
        docs: store.docs_read() - d0,
        ru: emu.counter.ru() - ru0 + (store.docs_read() - d0) as f64 * emu.counter.ru_per_query_doc(),
        elapsed,
    };
    (out, cost)
}

fn percentile(sorted: &[StdDuration], p: f64) -> StdDuration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Prints one line for `name` at this scale: the most requests, documents and RU any sample
/// needed, and the latency percentiles.
fn report(name: &str, scale: (usize, usize), costs: &[Cost]) {
    let mut lat: Vec<StdDuration> = costs.iter().map(|c| c.elapsed).collect();
    lat.sort();
    let requests = costs.iter().map(|c| c.requests).max().unwrap_or(0);
    let docs = costs.iter().map(|c| c.docs).max().unwrap_or(0);
    let ru = costs.iter().map(|c| c.ru).fold(0.0, f64::max);
    let kib = costs.iter().map(|c| c.largest_kib).fold(0.0, f64::max);
    println!(
        "op={name} rooms={} history={} requests={requests} docs={docs} ru={ru:.1} largest_request_kib={kib:.1} p50_ms={:.2} p99_ms={:.2}",
        scale.0,
        scale.1,
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
    );
}

/// Runs `f(i)` for `n` items from SEEDERS tasks.
async fn parallel<F, Fut>(n: usize, f: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let tasks: Vec<_> = (0..SEEDERS)
        .map(|t| {
            let f = f.clone();
            tokio::spawn(async move {
                for i in (t..n).step_by(SEEDERS) {
                    f(i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// One account at one scale: `rooms` rooms with two seats and `history` past bookings spread over
/// them and over 500 owners, ending before now.
async fn seed(emu: &Emulator, store: &Arc<CosmosStore>, rooms: usize, history: usize) -> Vec<RoomId> {
    let started = Instant::now();
    let made: Arc<std::sync::Mutex<Vec<RoomId>>> = Arc::default();
    let (s, m) = (store.clone(), made.clone());
    parallel(rooms, move |_| {
        let (s, m) = (s.clone(), m.clone());
        async move {
            let r = new_room(2);
            s.insert_room(&r, None).await.unwrap();
            m.lock().unwrap().push(r.id);
        }
    })
    .await;
    let ids: Arc<Vec<RoomId>> = Arc::new(made.lock().unwrap().clone());
    // Past bookings: each room gets its share of consecutive half hours, the last ending a day
    // before now (outside the scheduler's window, inside a 30-day usage report). Written in bulk,
    // one room per call (`seed_bookings`: the documents `book_room` leaves, without the emulator's
    // cost of a transactional batch, which copies the whole physical partition and so grows with
    // the history). Owners: 500, each with its share (an owner's bookings are one index document
    // each, so they share no document).
    let (s, r, base) = (store.clone(), ids.clone(), now() - Duration::days(1));
    parallel(ids.len(), move |room| {
        let (s, r) = (s.clone(), r.clone());
        async move {
            let past: Vec<Booking> = (room..history)
                .step_by(r.len())
                .map(|i| {
                    let back = (i / r.len()) as i64 + 1;
                    let at = slot(base - Duration::minutes(30 * back), 30);
                    booking(r[room], &format!("past-owner-{}", i % 500), at)
                })
                .collect();
            s.seed_bookings(&past).await.unwrap();
        }
    })
    .await;
    eprintln!(
        "seeded {rooms} rooms and {history} past bookings in {:.1} s ({} requests)",
        started.elapsed().as_secs_f64(),
        emu.counter.total()
    );
    ids.to_vec()
}

async fn scale(rooms: usize, history: usize) {
    let emu = Emulator::new();
    let store = Arc::new(emu.store().await);
    let ids = seed(&emu, &store, rooms, history).await;
    let sc = (rooms, history);
    let base = now() + Duration::hours(1);
    let mut rng = rand::thread_rng();

    // Warm the client's caches (account, partition map, query plans) outside the counts.
    store.get_room(ids[0]).await.unwrap();
    let _ = store.list_bookings("nobody", None).await;

    // Book a given room: a free slot of a random room.
    let mut costs = vec![];
    let mut made = vec![];
    for i in 0..SAMPLES {
        let room = ids[rng.gen_range(0..ids.len())];
        let b = booking(room, "bench-owner", slot(base + Duration::hours(i as i64), 60));
        let (r, c) = measure(&emu, &store, store.book_room(&b, None)).await;
        made.push(r.unwrap().into_inner());
        costs.push(c);
    }
    report("book_room", sc, &costs);

    // Book a given room with an Idempotency-Key.
    let mut costs = vec![];
    for i in 0..SAMPLES {
        let room = ids[rng.gen_range(0..ids.len())];
        let b = booking(room, "bench-owner", slot(base + Duration::hours(100 + i as i64), 60));
        let claim = fresh_claim();
        let (r, c) = measure(&emu, &store, store.book_room(&b, Some(&claim))).await;
        r.unwrap();
        costs.push(c);
    }
    report("book_room_with_key", sc, &costs);

    // Find-or-create when a free room exists: every sample its own hour, so most rooms are free.
    let mut costs = vec![];
    for i in 0..SAMPLES {
        let b = booking(RoomId::random(), "bench-owner", slot(base + Duration::hours(200 + i as i64), 60));
        let (r, c) = measure(&emu, &store, store.book_any_room(&b, Some(&new_room(2)), None)).await;
        r.unwrap();
        costs.push(c);
    }
    report("find_or_create", sc, &costs);

    // The same with an Idempotency-Key, as the API sends it.
    let mut costs = vec![];
    for i in 0..SAMPLES {
        let b = booking(RoomId::random(), "bench-owner", slot(base + Duration::hours(300 + i as i64), 60));
        let claim = fresh_claim();
        let (r, c) = measure(&emu, &store, store.book_any_room(&b, Some(&new_room(2)), Some(&claim))).await;
        r.unwrap();
        costs.push(c);
    }
    report("find_or_create_with_key", sc, &costs);

    // Find-or-create in a slot where the rooms are mostly taken: a quarter of them stay free.
    // The others are filled in bulk, as the history is (`seed_bookings` writes what `book_room`
    // leaves, without a transactional batch per booking, which on the emulator copies the whole
    // partition: thousands of them outlast the run).
    let busy_at = slot(base + Duration::hours(400), 60);
    let started = Instant::now();
    let (s, busy_ids) = (store.clone(), Arc::new(ids.clone()));
    parallel(ids.len() * 3 / 4, move |i| {
        let (s, r) = (s.clone(), busy_ids.clone());
        async move {
            s.seed_bookings(&[booking(r[i], "filler", busy_at)]).await.unwrap();
        }
    })
    .await;
    eprintln!("filled {} of {rooms} rooms in {:.1} s", ids.len() * 3 / 4, started.elapsed().as_secs_f64());
    let mut costs = vec![];
    for _ in 0..SAMPLES {
        let b = booking(RoomId::random(), "bench-owner", busy_at);
        let (r, c) = measure(&emu, &store, store.book_any_room(&b, Some(&new_room(2)), None)).await;
        r.unwrap();
        costs.push(c);
    }
    report("find_or_create_3_of_4_taken", sc, &costs);

    // Reads and changes of single bookings.
    let mut costs = vec![];
    for b in &made {
        let (r, c) = measure(&emu, &store, store.get_booking(b.id)).await;
        r.unwrap();
        costs.push(c);
    }
    report("get", sc, &costs);
    let mut costs = vec![];
    for b in &made {
        let (r, c) = measure(&emu, &store, async {
            let b = store.get_booking(b.id).await?;
            store.get_room(b.room_id).await
        })
        .await;
        r.unwrap();
        costs.push(c);
    }
    report("join", sc, &costs);
    let mut costs = vec![];
    for b in &made[..SAMPLES / 2] {
        let (r, c) = measure(&emu, &store, store.set_booking_end(b.id, b.slot.end() - Duration::minutes(15))).await;
        r.unwrap();
        costs.push(c);
    }
    report("extend", sc, &costs);
    let mut costs = vec![];
    for b in &made[SAMPLES / 2..] {
        let (r, c) = measure(&emu, &store, store.cancel_booking(b.id, Utc::now())).await;
        r.unwrap();
        costs.push(c);
    }
    report("cancel", sc, &costs);

    // The owner's list: an owner with ten bookings (written in bulk, as the fill above).
    let owner = format!("listed-{}", Uuid::new_v4());
    let listed: Vec<Booking> = (0..10)
        .map(|i| booking(ids[rng.gen_range(0..ids.len())], &owner, slot(base + Duration::hours(500 + i), 30)))
        .collect();
    store.seed_bookings(&listed).await.unwrap();
    let mut costs = vec![];
    for _ in 0..SAMPLES {
        let (r, c) = measure(&emu, &store, store.list_bookings(&owner, None)).await;
        assert_eq!(r.unwrap().len(), 10);
        costs.push(c);
    }
    report("owner_list", sc, &costs);

    // The scheduler's minute: bookings around now (horizon of a day) and their assignments.
    let horizon = TimeSlot::new(Utc::now() - Duration::hours(2), Utc::now() + Duration::hours(24)).unwrap();
    let mut costs = vec![];
    for _ in 0..SAMPLES {
        let (r, c) = measure(&emu, &store, async {
            let bookings = store.bookings_between(horizon).await?;
            let ids: Vec<Uuid> = bookings.iter().map(|b| b.id).collect();
            store.assignments(&ids).await
        })
        .await;
        r.unwrap();
        costs.push(c);
    }
    report("scheduler_minute", sc, &costs);
    let a = Assignment { booking_id: made[0].id, host: "janus-1".into(), ready_at: None };
    let (r, c) = measure(&emu, &store, store.put_assignment(&a)).await;
    r.unwrap();
    report("put_assignment", sc, &[c]);

    // /plan for a day and a week ahead, /usage for the past 30 days (all the history): bookings,
    // their assignments and the operations log.
    let windows = [
        ("plan_day", TimeSlot::new(base, base + Duration::days(1)).unwrap()),
        ("plan_7_days", TimeSlot::new(base, base + Duration::days(7)).unwrap()),
        ("usage_30_days", TimeSlot::new(now() - Duration::days(31), now()).unwrap()),
    ];
    for (name, window) in windows {
        let mut costs = vec![];
        for _ in 0..3 {
            let (r, c) = measure(&emu, &store, async {
                let bookings = store.bookings_between(window).await?;
                let ids: Vec<Uuid> = bookings.iter().map(|b| b.id).collect();
                store.assignments(&ids).await?;
                store.operations(window).await
            })
            .await;
            if let Err(e) = r {
                println!("op={name} rooms={rooms} history={history} failed: {e}");
                break;
            }
            costs.push(c);
        }
        if !costs.is_empty() {
            report(name, sc, &costs);
        }
    }
    let op = Operation {
        id: Uuid::new_v4(),
        at: Utc::now(),
        actor: "reconciler".into(),
        action: suroga::store::OpAction::Start,
        host: Some("janus-1".into()),
        booking_id: None,
        room_id: None,
        result: "ok".into(),
        duration_ms: 1,
    };
    let (r, c) = measure(&emu, &store, store.append_operation(&op)).await;
    r.unwrap();
    report("append_operation", sc, &[c]);
}

/// Booking throughput with two app instances on one account (32 tasks), as ratios.
async fn load() {
    const TASKS: usize = 32;
    const CALLS: usize = 400;
    let emu = Emulator::new();
    let stores = [Arc::new(emu.store().await), Arc::new(emu.store().await)];
    let base = now() + Duration::days(3);
    for (name, same_slot) in [("find_or_create, distinct hours", false), ("find_or_create, one hour", true)] {
        let before = emu.counter.total();
        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let store = stores[t % 2].clone();
                tokio::spawn(async move {
                    let mut lat = vec![];
                    for i in (t..CALLS).step_by(TASKS) {
                        let at = if same_slot { base } else { base + Duration::hours(i as i64) };
                        let b = booking(RoomId::random(), &format!("user{i}"), slot(at, 60));
                        let t0 = Instant::now();
                        store.book_any_room(&b, Some(&new_room(2)), None).await.unwrap();
                        lat.push(t0.elapsed());
                    }
                    lat
                })
            })
            .collect();
        let mut lat = vec![];
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        lat.sort();
        println!(
            "load {name}: {CALLS} calls, {TASKS} tasks over two instances: {:.0}/s p50 {:.2} ms p99 {:.2} ms, {:.1} requests/call",
            CALLS as f64 / started.elapsed().as_secs_f64(),
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            (emu.counter.total() - before) as f64 / CALLS as f64,
        );
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let small = std::env::args().any(|a| a == "small");
    // `scale=<rooms>x<history>` (repeatable) runs only the named scales.
    let named: Vec<(usize, usize)> = std::env::args()
        .filter_map(|a| {
            let (rooms, history) = a.strip_prefix("scale=")?.split_once('x')?;
            Some((rooms.parse().ok()?, history.parse().ok()?))
        })
        .collect();
    let scales: &[(usize, usize)] = if !named.is_empty() {
        &named
    } else if small {
        &[(100, 0)]
    } else {
        &[(100, 0), (10_000, 0), (100, 100_000), (10_000, 100_000)]
    };
    for &(rooms, history) in scales {
        scale(rooms, history).await;
    }
    load().await;
}
