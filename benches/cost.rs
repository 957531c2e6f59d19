//! Cost of the VM plan over a generated month of bookings (seeded, so runs compare).
//!
//! Demand: EU working hours (sessions start 08:00-18:00 UTC on the quarter hour), 30-90 min
//! sessions, clustered around a few busy moments per day, weekdays much heavier than weekends,
//! no overlapping bookings of one room. Each scenario prints VM-hours for the planner, the lower
//! bound the bookings force with the same lead and grace, one VM always on, and a fixed daily
//! schedule (08:00-20:00 on weekdays, as many VMs as the peak needs), and the VM starts the plan
//! costs; then a sweep of the keep-warm gap.
//!
//! Then what happened, not just what was booked: each booking's session really starts a few
//! minutes late, ends early (45%), runs to its end (40%) or nobody comes (15%), and every VM
//! boot takes what an Azure B2s start plus Janus takes (60 s plus an exponential tail, mean
//! 100 s). The reconciler is simulated minute by minute with the real planner, with and without
//! early release (`FLEET_RELEASE_EARLY`) and learned lead ([`suroga::fleet::boots`]): VM-hours,
//! starts and sessions whose host was not ready at their start, against the lower bound of
//! what happened (each session's real occupancy, a no-show's booked slot, after one boot).
//!
//! Run: `cargo bench --bench cost`.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc, Weekday};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};

use suroga::domain::{RoomId, TimeSlot};
use suroga::fleet::boots::learned_lead;
use suroga::fleet::planner::{
    CurrentAssignment, HostAction, PlanBooking, PlanHost, PlanPolicy, booking_window, lower_bound_minutes, plan, window,
};
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

    happened("one Janus VM (capacity 20)", &month, &[host("janus-1", 20)]);
    happened("pool of small VMs", &month, &pool);
    happened("larger pool, 1.6x demand", &busy, &big_pool);
}

/// What really happened in a booking's session.
#[derive(Debug, Clone, Copy)]
struct Occupancy {
    /// First join and last departure; `None`: nobody came.
    span: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// Each booking's real session: a few minutes late, then early (45%), to the end (40%), or
/// nobody (15%).
fn occupancies(bookings: &[PlanBooking]) -> HashMap<Uuid, Occupancy> {
    let mut rng = StdRng::seed_from_u64(SEED + 7);
    bookings
        .iter()
        .map(|b| {
            let start = b.slot.start() + Duration::minutes(rng.gen_range(-3..=5));
            let len = b.slot.duration().num_minutes();
            let draw: f64 = rng.r#gen();
            let span = if draw < 0.15 {
                None
            } else if draw < 0.60 {
                let end = b.slot.start() + Duration::minutes((len as f64 * rng.gen_range(0.25..0.9)) as i64);
                Some((start, end.max(start + Duration::minutes(1))))
            } else {
                Some((start, b.slot.end() - Duration::minutes(rng.gen_range(0..=2))))
            };
            (b.id, Occupancy { span })
        })
        .collect()
}

/// The `n`-th boot of host `h`, in seconds: an Azure B2s start plus Janus, 60 s and an
/// exponential tail (mean 40 s), at most 6 minutes. The same host's n-th boot lasts the same
/// in every variant, so variants compare.
fn boot_seconds(h: usize, n: usize) -> i64 {
    let mut rng = StdRng::seed_from_u64(SEED ^ ((h as u64) << 32) ^ n as u64);
    let u: f64 = rng.gen_range(1e-9..1.0);
    (60.0 - 40.0 * u.ln()).min(360.0) as i64
}

#[derive(Default, Clone, Copy)]
struct Outcome {
    vm_minutes: f64,
    starts: usize,
    late: usize,
    late_minutes: i64,
}

struct SimHost {
    on: bool,
    /// When Janus answers after the current start.
    ready_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    boots: usize,
    samples: Vec<u64>,
}

/// The reconciler, minute by minute, over what happened.
fn simulate(
    bookings: &[PlanBooking],
    hosts: &[PlanHost],
    occ: &HashMap<Uuid, Occupancy>,
    release: bool,
    learn: bool,
) -> Outcome {
    let policy = PlanPolicy::default();
    let tick = Duration::minutes(1);
    let (from, to) = (month_start() - Duration::hours(2), month_start() + Duration::days(DAYS + 1));
    let mut sim: Vec<SimHost> = hosts
        .iter()
        .map(|_| SimHost { on: false, ready_at: None, started_at: None, boots: 0, samples: vec![] })
        .collect();
    let mut assigned: BTreeMap<Uuid, (String, bool)> = BTreeMap::new();
    let mut checked: std::collections::HashSet<Uuid> = Default::default();
    let mut out = Outcome::default();
    let mut sorted: Vec<&PlanBooking> = bookings.iter().collect();
    sorted.sort_by_key(|b| b.slot.start());
    let mut t = from;
    while t < to {
        // A boot is noticed on the first tick after Janus answers.
        for h in sim.iter_mut() {
            if let (Some(r), Some(s)) = (h.ready_at, h.started_at) {
                if t >= r {
                    h.samples.push((t - s).num_seconds() as u64);
                    h.started_at = None;
                }
            }
        }
        let ready = |h: &SimHost| h.on && h.ready_at.is_some_and(|r| t >= r);
        let horizon: Vec<PlanBooking> = sorted
            .iter()
            .filter(|b| b.slot.end() + Duration::hours(2) > t && b.slot.start() - Duration::hours(24) < t)
            .map(|b| {
                let released = match occ[&b.id].span {
                    Some((_, end)) if release && end <= t && b.slot.start() <= t => Some(end.max(b.slot.start())),
                    _ => None,
                };
                PlanBooking { released, ..(*b).clone() }
            })
            .collect();
        let plan_hosts: Vec<PlanHost> = hosts
            .iter()
            .zip(&sim)
            .map(|(p, h)| PlanHost {
                on: h.on,
                lead: learn.then(|| learned_lead(&h.samples, policy.lead).minutes),
                ..p.clone()
            })
            .collect();
        let current: Vec<CurrentAssignment> = horizon
            .iter()
            .filter_map(|b| {
                assigned.get(&b.id).map(|(h, m)| CurrentAssignment { booking: b.id, host: h.clone(), materialized: *m })
            })
            .collect();
        let p = plan(&horizon, &plan_hosts, &current, &policy, t);
        for (id, h) in &p.assignments {
            let e = assigned.entry(*id).or_insert((h.clone(), false));
            if e.0 != *h {
                *e = (h.clone(), false);
            }
        }
        for hp in &p.hosts {
            // The plan lists hosts by name (janus-10 before janus-2).
            let i = hosts.iter().position(|h| h.name == hp.name).expect("a planned host");
            match hp.action {
                HostAction::Start { .. } if !sim[i].on => {
                    let h = &mut sim[i];
                    h.on = true;
                    h.started_at = Some(t);
                    h.ready_at = Some(t + Duration::seconds(boot_seconds(i, h.boots)));
                    h.boots += 1;
                    out.starts += 1;
                }
                HostAction::Deallocate { .. } if sim[i].on => {
                    // Never while someone is in a session there.
                    let occupied = horizon.iter().any(|b| {
                        assigned.get(&b.id).is_some_and(|(h, _)| *h == hp.name)
                            && occ[&b.id].span.is_some_and(|(s, e)| s <= t && t < e)
                    });
                    if !occupied {
                        let h = &mut sim[i];
                        h.on = false;
                        h.ready_at = None;
                        h.started_at = None;
                        for a in assigned.values_mut().filter(|(n, _)| *n == hp.name) {
                            a.1 = false;
                        }
                    }
                }
                _ => {}
            }
        }
        // Rooms open on ready hosts inside their bookings' windows.
        for b in &horizon {
            let Some((name, materialized)) = assigned.get_mut(&b.id) else { continue };
            let i = hosts.iter().position(|h| h.name == *name).unwrap();
            let lead = plan_hosts[i].lead.unwrap_or(policy.lead);
            let (ws, we) = booking_window(b, lead, &policy);
            if ready(&sim[i]) && ws <= t && t < we {
                *materialized = true;
            }
            // Was the host ready when the session began?
            if let Some((s, _)) = occ[&b.id].span {
                if s <= t && checked.insert(b.id) && !ready(&sim[i]) {
                    out.late += 1;
                    out.late_minutes += sim[i].ready_at.map_or(60, |r| (r - s).num_minutes().max(1));
                }
            }
        }
        out.vm_minutes += sim.iter().filter(|h| h.on).count() as f64;
        t += tick;
    }
    out
}

fn happened(title: &str, bookings: &[PlanBooking], hosts: &[PlanHost]) {
    let occ = occupancies(bookings);
    let ended_early = bookings
        .iter()
        .filter(|b| occ[&b.id].span.is_some_and(|(_, e)| e + Duration::minutes(3) < b.slot.end()))
        .count();
    let no_show = bookings.iter().filter(|b| occ[&b.id].span.is_none()).count();
    // The bound: what happened, each after one boot of average length, no grace.
    let mean_boot: f64 = (0..1000).map(|n| boot_seconds(0, n) as f64).sum::<f64>() / 1000.0;
    let real: Vec<PlanBooking> = bookings
        .iter()
        .map(|b| match occ[&b.id].span {
            Some((s, e)) => PlanBooking::new(b.id, b.room, TimeSlot::new(s, e.max(s + Duration::minutes(1))).unwrap()),
            None => b.clone(),
        })
        .collect();
    let bound_policy =
        PlanPolicy { lead: Duration::seconds(mean_boot as i64), grace: Duration::zero(), ..PlanPolicy::default() };
    let lb = lower_bound_minutes(&real, hosts, &bound_policy);
    println!(
        "== what happened, {title}: {} bookings, {ended_early} ended early, {no_show} no-shows; boots {:.0} s on average",
        bookings.len(),
        mean_boot
    );
    println!("  lower bound of what happened  {:8.1} VM-h", hours(lb));
    let started = std::time::Instant::now();
    let mut base = None;
    for (name, release, learn) in [
        ("fixed lead 30, booked end (before)", false, false),
        ("early release", true, false),
        ("learned lead", false, true),
        ("early release + learned lead", true, true),
    ] {
        let o = simulate(bookings, hosts, &occ, release, learn);
        let base_h = *base.get_or_insert(o.vm_minutes);
        println!(
            "  {name:<34} {:8.1} VM-h  ({:.3} x lower bound, {:5.1}% saved), {:4} starts, {} sessions late (mean {:.1} min)",
            hours(o.vm_minutes),
            o.vm_minutes / lb,
            (1.0 - o.vm_minutes / base_h) * 100.0,
            o.starts,
            o.late,
            if o.late > 0 { o.late_minutes as f64 / o.late as f64 } else { 0.0 }
        );
    }
    println!("  (simulated {} minutes x 4 in {:.1} s)", (DAYS + 1) * 24 * 60, started.elapsed().as_secs_f64());
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
