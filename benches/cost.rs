//! Cost of the VM plan over a generated month of bookings (seeded, so runs compare).
//!
//! Demand: EU working hours (sessions start 08:00-18:00 UTC on the quarter hour), 30-90 min
//! sessions, clustered around a few busy moments per day, weekdays much heavier than weekends,
//! no overlapping bookings of one room. Each scenario prints VM-hours for the planner, the lower
//! bound the bookings force with the same lead and grace, one VM always on, and a fixed daily
//! schedule (08:00-20:00 on weekdays, as many VMs as the peak needs), and the VM starts the plan
//! costs; then a sweep of the keep-warm gap.
//!
//! Run: `cargo bench --bench cost`.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc, Weekday};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use suroga::domain::{RoomId, TimeSlot};
use suroga::fleet::planner::{PlanBooking, PlanHost, PlanPolicy, lower_bound_minutes, plan, window};
use uuid::Uuid;

const SEED: u64 = 20260301;
const ROOMS: u64 = 40;

fn month_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}
const DAYS: i64 = 31;

/// A month of bookings; `scale` multiplies the daily demand.
fn generate(rng: &mut StdRng, scale: f64) -> Vec<PlanBooking> {
    let mut out: Vec<PlanBooking> = Vec::new();
    for day in 0..DAYS {
        let midnight = month_start() + Duration::days(day);
        let weekday = !matches!(midnight.weekday(), Weekday::Sat | Weekday::Sun);
        let mean = if weekday { 12.0 } else { 2.0 } * scale;
        let count = (mean * rng.gen_range(0.6..1.4)).round() as usize;
        // Busy moments: late morning and mid afternoon are likelier.
        let clusters: Vec<f64> = (0..rng.gen_range(2..=4))
            .map(|_| if rng.gen_bool(0.5) { rng.gen_range(9.5..12.0) } else { rng.gen_range(13.5..17.0) })
            .collect();
        for _ in 0..count {
            let c = clusters[rng.gen_range(0..clusters.len())];
            // Sum of uniforms: a bell of about ±1 h around the busy moment.
            let offset: f64 = (0..3).map(|_| rng.gen_range(-0.6..0.6)).sum();
            let hour = (c + offset).clamp(8.0, 17.75);
            let start = midnight + Duration::minutes(((hour * 60.0) / 15.0).round() as i64 * 15);
            let len = [30, 45, 60, 60, 75, 90][rng.gen_range(0..6)];
            let slot = TimeSlot::new(start, start + Duration::minutes(len)).unwrap();
            // A room takes one booking at a time: try rooms until one is free.
            for _ in 0..ROOMS {
                let room = RoomId::new(rng.gen_range(1..=ROOMS)).unwrap();
                if !out.iter().any(|b| b.room == room && b.slot.overlaps(&slot)) {
                    out.push(PlanBooking::new(Uuid::from_u128(rng.r#gen()), room, slot));
                    break;
                }
            }
        }
    }
    out
}

fn hours(minutes: f64) -> f64 {
    minutes / 60.0
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn scenario(title: &str, bookings: &[PlanBooking], hosts: &[PlanHost]) {
    let policy = PlanPolicy::default();
    let now = month_start();
    let p = plan(bookings, hosts, &[], &policy, now);
    let lb = lower_bound_minutes(bookings, hosts, &policy);

    // Peak: most hosts on at once in the plan.
    let mut ev: Vec<(DateTime<Utc>, i32)> =
        p.hosts.iter().flat_map(|h| &h.on_intervals).flat_map(|i| [(i.start, 1), (i.end, -1)]).collect();
    ev.sort();
    let (mut cur, mut peak) = (0, 0);
    for (_, d) in ev {
        cur += d;
        peak = peak.max(cur);
    }
    let weekdays = (0..DAYS)
        .filter(|d| !matches!((now + Duration::days(*d)).weekday(), Weekday::Sat | Weekday::Sun))
        .count() as f64;
    let fixed = 12.0 * weekdays * peak as f64;
    let outside_fixed = bookings
        .iter()
        .filter(|b| {
            let (ws, we) = window(b.slot, &policy);
            let weekend = matches!(ws.weekday(), Weekday::Sat | Weekday::Sun);
            weekend || ws.hour() < 8 || we.date_naive() != ws.date_naive() || (we.hour(), we.minute()) > (20, 0)
        })
        .count();

    // Per weekday: plan overhead over the bound, to see whether a few days carry the excess.
    let mut daily = Vec::new();
    for d in 0..DAYS {
        let (from, to) = (now + Duration::days(d), now + Duration::days(d + 1));
        let day: Vec<PlanBooking> =
            bookings.iter().filter(|b| b.slot.start() >= from && b.slot.start() < to).cloned().collect();
        if day.len() >= 5 {
            let dp = plan(&day, hosts, &[], &policy, now);
            daily.push(dp.vm_minutes() / lower_bound_minutes(&day, hosts, &policy));
        }
    }

    println!(
        "== {title}: {} bookings (peak {} concurrent), {} hosts (capacity {:?})",
        bookings.len(),
        peak_sessions(bookings),
        hosts.len(),
        hosts.iter().map(|h| h.capacity).collect::<Vec<_>>()
    );
    println!(
        "  policy: lead {} min, grace {} min, keep-warm {} min",
        policy.lead.num_minutes(),
        policy.grace.num_minutes(),
        policy.keep_warm.num_minutes()
    );
    println!(
        "  planner            {:8.1} VM-h  ({:.3} x lower bound), {} VM starts, {} unplaced",
        hours(p.vm_minutes()),
        p.vm_minutes() / lb,
        p.starts(),
        bookings.len() - p.assignments.len()
    );
    println!("  lower bound        {:8.1} VM-h", hours(lb));
    println!(
        "  one VM always on   {:8.1} VM-h  ({:.1} x lower bound)",
        24.0 * DAYS as f64,
        24.0 * 60.0 * DAYS as f64 / lb
    );
    println!(
        "  fixed 08-20 wkdays {:8.1} VM-h  ({:.1} x lower bound; {} VM(s) = plan peak; {} bookings' windows fall outside it)",
        fixed,
        fixed * 60.0 / lb,
        peak,
        outside_fixed
    );
    println!(
        "  busy days: plan/bound p50 {:.3}, p90 {:.3}, max {:.3} over {} days",
        percentile(daily.clone(), 0.5),
        percentile(daily.clone(), 0.9),
        percentile(daily.clone(), 1.0),
        daily.len()
    );
    println!("  keep-warm sweep (min: VM-h, x bound, starts):");
    for kw in [0, 5, 10, 15, 20, 30, 45, 60, 90] {
        let pol = PlanPolicy { keep_warm: Duration::minutes(kw), ..PlanPolicy::default() };
        let sp = plan(bookings, hosts, &[], &pol, now);
        println!(
            "    {kw:3}: {:7.1} VM-h  {:.3}  {:4} starts",
            hours(sp.vm_minutes()),
            sp.vm_minutes() / lb,
            sp.starts()
        );
    }
}

fn host(name: &str, capacity: u32) -> PlanHost {
    PlanHost::new(name, capacity, false)
}

fn main() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let month = generate(&mut rng, 1.0);
    scenario("one Janus VM (capacity 20)", &month, &[host("janus-1", 20)]);

    // Small VMs taking two sessions each: packing decides how many run at once.
    let pool: Vec<PlanHost> = (1..=4).map(|i| host(&format!("janus-{i}"), 2)).collect();
    scenario("pool of small VMs", &month, &pool);

    let mut rng = StdRng::seed_from_u64(SEED + 1);
    let busy = generate(&mut rng, 1.6);
    let big_pool: Vec<PlanHost> = (1..=10).map(|i| host(&format!("janus-{i}"), 2)).collect();
    scenario("larger pool, 1.6x demand", &busy, &big_pool);
}
/// Most sessions running at one instant.
fn peak_sessions(bookings: &[PlanBooking]) -> i32 {
    let mut ev: Vec<(DateTime<Utc>, i32)> =
        bookings.iter().flat_map(|b| [(b.slot.start(), 1), (b.slot.end(), -1)]).collect();
    ev.sort();
    let (mut cur, mut peak) = (0, 0);
    for (_, d) in ev {
        cur += d;
        peak = peak.max(cur);
    }
    peak
}
