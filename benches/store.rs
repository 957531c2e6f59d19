//! Find-or-create throughput of the SQLite store: 64 tasks call `book_any_room` (each offering a
//! new room) as fast as they can against a temporary database file, and the bench prints the
//! rate and the latency percentiles of each call.
//!
//! Two workloads: slots spread over the next year (most calls find a free room at once), and
//! every call for ONE slot (each call must see that every room is taken, then create one: the
//! worst case, whose cost grows with the number of rooms).
//!
//! `cargo bench --bench store [-- <calls for the spread workload> <calls for the hot slot>]`

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, DurationRound, Utc};
use rand::Rng;
use suroga::domain::{Booking, Room, RoomId, TimeSlot};
use suroga::store::Store;
use suroga::store::sqlite::SqliteStore;
use uuid::Uuid;

/// Concurrent callers; `BENCH_TASKS` overrides it for experiments.
fn tasks() -> usize {
    std::env::var("BENCH_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

struct Report {
    calls: usize,
    elapsed: StdDuration,
    latencies: Vec<StdDuration>,
    rooms: usize,
}

fn percentile(sorted: &[StdDuration], p: f64) -> StdDuration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn run(store: Arc<dyn Store>, calls: usize, slot_of: Arc<dyn Fn() -> TimeSlot + Send + Sync>) -> Report {
    let started = Instant::now();
    let n = tasks();
    let tasks: Vec<_> = (0..n)
        .map(|t| {
            let store = store.clone();
            let slot_of = slot_of.clone();
            let mine = calls / n + usize::from(t < calls % n);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(mine);
                let mut rooms = Vec::new();
                for _ in 0..mine {
                    let now = Utc::now();
                    let booking = Booking {
                        id: Uuid::new_v4(),
                        room_id: RoomId::random(),
                        owner: format!("user-{}", Uuid::new_v4()),
                        slot: slot_of(),
                        created_at: now,
                        cancelled_at: None,
                        access: Default::default(),
                    };
                    let room = Room::generate(None, 2, serde_json::Map::new(), now);
                    let t0 = Instant::now();
                    let (_, got) = store.book_any_room(&booking, Some(&room), None).await.unwrap().into_inner();
                    latencies.push(t0.elapsed());
                    rooms.push(got.id);
                }
                (latencies, rooms)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(calls);
    let mut rooms = Vec::new();
    for t in tasks {
        let (l, r) = t.await.unwrap();
        latencies.extend(l);
        rooms.extend(r);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    rooms.sort();
    rooms.dedup();
    Report { calls, elapsed, latencies, rooms: rooms.len() }
}

fn print(name: &str, r: &Report) {
    let ms = |d: StdDuration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<28} {:>7} calls  {:>8.0} calls/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  rooms used {}",
        r.calls,
        r.calls as f64 / r.elapsed.as_secs_f64(),
        ms(percentile(&r.latencies, 0.50)),
        ms(percentile(&r.latencies, 0.99)),
        ms(*r.latencies.last().unwrap()),
        r.rooms,
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; numbers after it are ours.
    let nums: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let spread_calls = nums.first().copied().unwrap_or(20_000);
    let hot_calls = nums.get(1).copied().unwrap_or(3_000);

    let dir = tempfile::TempDir::new().unwrap();
    println!("book_any_room, {} concurrent tasks, SQLite file in {}", tasks(), dir.path().display());

    let spread: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("spread.db")).unwrap());
    let base = Utc::now().duration_trunc(Duration::hours(1)).unwrap() + Duration::days(1);
    let r = run(
        spread,
        spread_calls,
        Arc::new(move || {
            let start = base + Duration::minutes(30 * rand::thread_rng().gen_range(0..2 * 24 * 365));
            TimeSlot::new(start, start + Duration::hours(1)).unwrap()
        }),
    )
    .await;
    print("slots spread over a year", &r);

    let hot: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("hot.db")).unwrap());
    let slot = TimeSlot::new(base, base + Duration::hours(1)).unwrap();
    let r = run(hot, hot_calls, Arc::new(move || slot)).await;
    print("one slot for every call", &r);
}
