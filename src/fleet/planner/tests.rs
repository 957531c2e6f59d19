use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::domain::{RoomId, TimeSlot};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
}

/// A time `h:m` on the test day.
fn hm(h: i64, m: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(h * 60 + m)
}

fn booking(room: u64, start: DateTime<Utc>, minutes: i64) -> PlanBooking {
    PlanBooking::new(
        Uuid::new_v4(),
        RoomId::new(room).unwrap(),
        TimeSlot::new(start, start + Duration::minutes(minutes)).unwrap(),
    )
}

fn host(name: &str, capacity: u32, on: bool) -> PlanHost {
    PlanHost::new(name, capacity, on)
}

fn policy(keep_warm: i64) -> PlanPolicy {
    PlanPolicy { keep_warm: Duration::minutes(keep_warm), ..PlanPolicy::default() }
}

fn host_plan<'a>(p: &'a Plan, name: &str) -> &'a HostPlan {
    p.hosts.iter().find(|h| h.name == name).unwrap()
}

fn spans(h: &HostPlan) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    h.on_intervals.iter().map(|i| (i.start, i.end)).collect()
}

#[test]
fn one_booking_is_covered_from_lead_to_grace_and_started_when_its_window_opens() {
    let b = booking(1, hm(10, 0), 60);
    let hosts = [host("a", 1, false)];
    let before = plan(std::slice::from_ref(&b), &hosts, &[], &policy(20), hm(9, 0));
    assert_eq!(spans(host_plan(&before, "a")), vec![(hm(9, 30), hm(11, 10))]);
    assert_eq!(host_plan(&before, "a").action, HostAction::StayOff { next: Some(b.id) });
    assert!(before.warnings.is_empty());

    let opening = plan(std::slice::from_ref(&b), &hosts, &[], &policy(20), hm(9, 30));
    assert_eq!(host_plan(&opening, "a").action, HostAction::Start { booking: b.id });
}

#[test]
fn a_session_that_ended_early_frees_its_host_at_once_without_the_grace() {
    let b = PlanBooking { released: Some(hm(10, 20)), ..booking(1, hm(10, 0), 60) };
    let hosts = [host("a", 1, true)];
    let p = plan(std::slice::from_ref(&b), &hosts, &[], &policy(20), hm(10, 21));
    assert_eq!(host_plan(&p, "a").action, HostAction::Deallocate { last: Some(b.id) });
    let off = plan(std::slice::from_ref(&b), &[host("a", 1, false)], &[], &policy(20), hm(8, 0));
    assert_eq!(spans(host_plan(&off, "a")), vec![(hm(9, 30), hm(10, 20))], "no grace after the release");
    // Before the release the host is needed as booked.
    let unreleased = PlanBooking { released: None, ..b.clone() };
    let p = plan(std::slice::from_ref(&unreleased), &hosts, &[], &policy(20), hm(10, 21));
    assert_eq!(host_plan(&p, "a").action, HostAction::KeepOn { booking: b.id });
    // Another booking soon after keeps it warm (the keep-warm rule still holds).
    let next = booking(2, hm(11, 0), 30);
    let p = plan(&[b.clone(), next.clone()], &hosts, &[], &policy(20), hm(10, 21));
    assert_eq!(host_plan(&p, "a").action, HostAction::KeepOn { booking: next.id });
    // Released seats are free again: a capacity-1 host takes an overlapping booking after it.
    let overlapping = booking(3, hm(10, 30), 30);
    let p = plan(&[b.clone(), overlapping.clone()], &[host("a", 1, true)], &[], &policy(20), hm(10, 21));
    assert_eq!(p.host_of(overlapping.id), Some("a"));
}

#[test]
fn a_host_with_a_learned_lead_starts_that_long_before_and_is_preferred() {
    let b = booking(1, hm(10, 0), 60);
    let quick = PlanHost { lead: Some(Duration::minutes(7)), ..host("quick", 1, false) };
    let p = plan(std::slice::from_ref(&b), std::slice::from_ref(&quick), &[], &policy(20), hm(9, 50));
    assert_eq!(host_plan(&p, "quick").action, HostAction::StayOff { next: Some(b.id) });
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let p = plan(std::slice::from_ref(&b), std::slice::from_ref(&quick), &[], &policy(20), hm(9, 53));
    assert_eq!(host_plan(&p, "quick").action, HostAction::Start { booking: b.id });
    assert_eq!(spans(host_plan(&p, "quick")), vec![(hm(9, 53), hm(11, 10))]);
    // Late against its own lead: still off 3 min into it (tolerance 2).
    let p = plan(std::slice::from_ref(&b), std::slice::from_ref(&quick), &[], &policy(20), hm(9, 56));
    assert_eq!(
        p.warnings,
        vec![Warning::NotReadyInTime { booking: b.id, host: "quick".into(), short_by: Duration::minutes(3) }]
    );
    // Of two idle hosts, the one that boots faster costs less VM time.
    let p = plan(std::slice::from_ref(&b), &[host("slow", 1, false), quick], &[], &policy(20), hm(8, 0));
    assert_eq!(p.host_of(b.id), Some("quick"));
}

#[test]
fn close_sessions_share_one_interval_and_far_ones_do_not() {
    // Windows: [9:30, 10:40], [10:50, 11:40] (gap 10 min), [14:30, 15:40] (gap ~3 h).
    let bs = [booking(1, hm(10, 0), 30), booking(2, hm(11, 20), 10), booking(3, hm(15, 0), 30)];
    let p = plan(&bs, &[host("a", 5, false)], &[], &policy(20), t0());
    assert_eq!(spans(host_plan(&p, "a")), vec![(hm(9, 30), hm(11, 40)), (hm(14, 30), hm(15, 40))]);
    assert_eq!(host_plan(&p, "a").on_intervals[0].bookings, vec![bs[0].id, bs[1].id]);
    assert_eq!(p.starts(), 2);

    let no_bridge = plan(&bs, &[host("a", 5, false)], &[], &policy(5), t0());
    assert_eq!(host_plan(&no_bridge, "a").on_intervals.len(), 3);
}

#[test]
fn overlapping_sessions_beyond_capacity_spill_to_a_second_host_and_then_warn() {
    let bs = [booking(1, hm(10, 0), 60), booking(2, hm(10, 30), 60), booking(3, hm(10, 45), 30)];
    let hosts = [host("a", 1, false), host("b", 1, false)];
    let p = plan(&bs, &hosts, &[], &policy(20), t0());
    assert_eq!(p.host_of(bs[0].id), Some("a"));
    assert_eq!(p.host_of(bs[1].id), Some("b"));
    assert_eq!(p.host_of(bs[2].id), None);
    assert_eq!(p.warnings, vec![Warning::NoCapacity { booking: bs[2].id }]);
}

#[test]
fn a_session_after_another_joins_the_host_already_planned_on() {
    // b0 on a; b1 starts 15 min after b0 ends: on a it costs 15 min of bridge, on b a new start.
    let bs = [booking(1, hm(10, 0), 60), booking(2, hm(11, 15), 60)];
    let hosts = [host("a", 1, false), host("b", 1, false)];
    let p = plan(&bs, &hosts, &[], &policy(30), t0());
    assert_eq!(p.host_of(bs[0].id), Some("a"));
    assert_eq!(p.host_of(bs[1].id), Some("a"));
    assert_eq!(spans(host_plan(&p, "a")), vec![(hm(9, 30), hm(12, 25))]);
    assert!(host_plan(&p, "b").on_intervals.is_empty());
}

#[test]
fn ties_go_to_the_host_that_is_on_then_by_name() {
    let b = booking(1, hm(10, 0), 60);
    let p = plan(std::slice::from_ref(&b), &[host("b", 1, false), host("a", 1, false)], &[], &policy(0), t0());
    assert_eq!(p.host_of(b.id), Some("a"));
    let p = plan(std::slice::from_ref(&b), &[host("b", 1, true), host("a", 1, false)], &[], &policy(0), t0());
    assert_eq!(p.host_of(b.id), Some("b"));
}

#[test]
fn materialized_assignments_stay_even_when_another_host_is_cheaper() {
    let first = booking(1, hm(10, 0), 60);
    let second = booking(2, hm(11, 15), 60);
    let hosts = [host("a", 1, false), host("b", 1, false)];
    let current = [CurrentAssignment { booking: second.id, host: "b".into(), materialized: true }];
    let p = plan(&[first.clone(), second.clone()], &hosts, &current, &policy(30), t0());
    assert_eq!(p.host_of(second.id), Some("b"));
    // ...and the other session joins it there rather than starting a second VM.
    assert_eq!(p.host_of(first.id), Some("b"));

    // Not materialized yet: the planner may move it to save VM time.
    let current = [CurrentAssignment { booking: second.id, host: "b".into(), materialized: false }];
    let p = plan(&[first.clone(), second.clone()], &hosts, &current, &policy(30), t0());
    assert_eq!(p.host_of(first.id), Some("a"));
    assert_eq!(p.host_of(second.id), Some("a"));
}

#[test]
fn a_sticky_booking_on_a_removed_host_is_reassigned_with_a_warning() {
    let b = booking(1, hm(10, 0), 60);
    let current = [CurrentAssignment { booking: b.id, host: "gone".into(), materialized: true }];
    let p = plan(std::slice::from_ref(&b), &[host("a", 1, false)], &current, &policy(20), t0());
    assert_eq!(p.host_of(b.id), Some("a"));
    assert_eq!(p.warnings, vec![Warning::StickyHostMissing { booking: b.id, host: "gone".into() }]);
}

#[test]
fn a_booking_made_inside_the_lead_time_on_an_off_host_warns() {
    let b = booking(1, hm(10, 0), 60);
    let p = plan(std::slice::from_ref(&b), &[host("a", 1, false)], &[], &policy(20), hm(9, 50));
    assert_eq!(host_plan(&p, "a").action, HostAction::Start { booking: b.id });
    assert_eq!(
        p.warnings,
        vec![Warning::NotReadyInTime { booking: b.id, host: "a".into(), short_by: Duration::minutes(20) }]
    );
    // One tick after the window opened is on time, not late.
    let p = plan(std::slice::from_ref(&b), &[host("a", 1, false)], &[], &policy(20), hm(9, 31));
    assert!(p.warnings.is_empty());
    // A host that is already on is ready.
    let p = plan(std::slice::from_ref(&b), &[host("a", 1, true)], &[], &policy(20), hm(9, 50));
    assert!(p.warnings.is_empty());
}

#[test]
fn an_on_host_is_kept_warm_for_a_window_opening_soon_and_deallocated_otherwise() {
    let soon = booking(1, hm(10, 0), 60); // window opens 9:30
    let p = plan(std::slice::from_ref(&soon), &[host("a", 1, true)], &[], &policy(20), hm(9, 15));
    assert_eq!(host_plan(&p, "a").action, HostAction::KeepOn { booking: soon.id });
    assert_eq!(spans(host_plan(&p, "a")), vec![(hm(9, 15), hm(11, 10))]);

    let p = plan(std::slice::from_ref(&soon), &[host("a", 1, true)], &[], &policy(20), hm(9, 0));
    assert_eq!(host_plan(&p, "a").action, HostAction::Deallocate { last: None });
    assert_eq!(spans(host_plan(&p, "a")), vec![(hm(9, 30), hm(11, 10))]);
}

#[test]
fn a_host_is_deallocated_after_the_grace_and_names_the_last_booking() {
    let b = booking(1, hm(10, 0), 60);
    let p = plan(std::slice::from_ref(&b), &[host("a", 1, true)], &[], &policy(20), hm(11, 9));
    assert_eq!(host_plan(&p, "a").action, HostAction::KeepOn { booking: b.id });
    let p = plan(std::slice::from_ref(&b), &[host("a", 1, true)], &[], &policy(20), hm(11, 10));
    assert_eq!(host_plan(&p, "a").action, HostAction::Deallocate { last: Some(b.id) });
}

#[test]
fn an_off_host_is_not_started_for_a_keep_warm_bridge() {
    let bs = [booking(1, hm(10, 0), 30), booking(2, hm(11, 20), 10)]; // bridge 10:40..10:50
    let p = plan(&bs, &[host("a", 1, false)], &[], &policy(20), hm(10, 45));
    assert_eq!(host_plan(&p, "a").action, HostAction::StayOff { next: Some(bs[1].id) });
    let p = plan(&bs, &[host("a", 1, true)], &[], &policy(20), hm(10, 45));
    assert_eq!(host_plan(&p, "a").action, HostAction::KeepOn { booking: bs[1].id });
}

#[test]
fn max_hosts_caps_how_many_hosts_are_on_at_once() {
    let bs = [booking(1, hm(10, 0), 60), booking(2, hm(10, 0), 60)];
    let hosts = [host("a", 1, false), host("b", 1, false)];
    let limited = PlanPolicy { max_hosts: Some(1), ..policy(20) };
    let p = plan(&bs, &hosts, &[], &limited, t0());
    assert_eq!(p.assignments.len(), 1);
    assert_eq!(p.warnings.len(), 1);
}

#[test]
fn the_lower_bound_shares_a_host_between_back_to_back_sessions() {
    // Capacity 1, back-to-back: one host suffices, windows overlap by 40 min but never two hosts.
    let bs = [booking(1, hm(10, 0), 60), booking(2, hm(11, 0), 60)];
    let hosts = [host("a", 1, false), host("b", 1, false)];
    assert_eq!(lower_bound_minutes(&bs, &hosts, &policy(0)), 160.0);
    // Concurrent sessions need two hosts while both windows are open (10:00-11:10).
    let bs = [booking(1, hm(10, 0), 60), booking(2, hm(10, 30), 60)];
    assert_eq!(lower_bound_minutes(&bs, &hosts, &policy(0)), 30.0 + 2.0 * 70.0 + 30.0);
    let p = plan(&bs, &hosts, &[], &policy(0), t0());
    assert_eq!(p.vm_minutes(), 200.0);
    // One host of capacity 2 takes both.
    assert_eq!(lower_bound_minutes(&bs, &[host("big", 2, false)], &policy(0)), 130.0);
}

// ---------------------------------------------------------------- properties

#[derive(Debug, Clone)]
struct Case {
    bookings: Vec<PlanBooking>,
    hosts: Vec<PlanHost>,
    policy: PlanPolicy,
    now: DateTime<Utc>,
}

fn arb_case() -> impl Strategy<Value = Case> {
    let b = (any::<u128>(), 1u64..5, 0i64..48 * 60, 5i64..150).prop_map(|(id, room, start, len)| {
        let s = t0() + Duration::minutes(start);
        PlanBooking::new(
            Uuid::from_u128(id),
            RoomId::new(room).unwrap(),
            TimeSlot::new(s, s + Duration::minutes(len)).unwrap(),
        )
    });
    let h = prop::collection::vec((0u32..4, any::<bool>()), 1..4)
        .prop_map(|v| v.into_iter().enumerate().map(|(i, (c, on))| host(&format!("h{i}"), c, on)).collect::<Vec<_>>());
    let p =
        (0i64..60, 0i64..30, 0i64..120, prop::option::of(1usize..4)).prop_map(|(lead, grace, kw, max)| PlanPolicy {
            lead: Duration::minutes(lead),
            grace: Duration::minutes(grace),
            keep_warm: Duration::minutes(kw),
            max_hosts: max,
            start_tolerance: Duration::minutes(2),
        });
    (prop::collection::vec(b, 0..14), h, p, -120i64..50 * 60).prop_map(|(bookings, hosts, policy, now)| Case {
        bookings,
        hosts,
        policy,
        now: t0() + Duration::minutes(now),
    })
}

fn run(c: &Case) -> Plan {
    plan(&c.bookings, &c.hosts, &[], &c.policy, c.now)
}

fn win(c: &Case, b: &PlanBooking) -> (DateTime<Utc>, DateTime<Utc>) {
    window(b.slot, &c.policy)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_assigned_booking_has_its_host_on_for_its_whole_window(c in arb_case()) {
        let p = run(&c);
        for b in &c.bookings {
            let Some(h) = p.host_of(b.id) else {
                let warned = p.warnings.contains(&Warning::NoCapacity { booking: b.id });
                prop_assert!(warned);
                continue;
            };
            let (ws, we) = win(&c, b);
            prop_assert!(host_plan(&p, h).on_intervals.iter().any(|i| i.start <= ws && we <= i.end),
                "booking {} window {ws}..{we} not covered on {h}", b.id);
        }
    }

    #[test]
    fn no_host_exceeds_its_capacity_at_any_instant(c in arb_case()) {
        let p = run(&c);
        for h in &c.hosts {
            let slots = c.bookings.iter().filter(|b| p.host_of(b.id) == Some(h.name.as_str()))
                .map(|b| (ms(b.slot.start()), ms(b.slot.end())));
            prop_assert!(max_concurrency(slots) <= h.capacity as usize);
        }
    }

    #[test]
    fn no_host_is_on_when_nothing_needs_it_beyond_the_keep_warm_gap(c in arb_case()) {
        let p = run(&c);
        let kw = c.policy.keep_warm;
        for (hp, h) in p.hosts.iter().zip({ let mut hs = c.hosts.clone(); hs.sort_by(|a, b| a.name.cmp(&b.name)); hs }) {
            let mut needs: Vec<(DateTime<Utc>, DateTime<Utc>)> = c.bookings.iter()
                .filter(|b| p.host_of(b.id) == Some(hp.name.as_str())).map(|b| win(&c, b)).collect();
            if h.on { needs.push((c.now, c.now)); }
            needs.sort();
            for iv in &hp.on_intervals {
                let inside: Vec<_> = needs.iter().filter(|(s, e)| iv.start <= *s && *e <= iv.end).collect();
                prop_assert!(!inside.is_empty());
                prop_assert_eq!(inside.first().unwrap().0, iv.start);
                prop_assert_eq!(inside.iter().map(|n| n.1).max().unwrap(), iv.end);
                let mut reach = inside[0].1;
                for n in &inside[1..] {
                    prop_assert!(n.0 <= reach || n.0 - reach < kw, "gap {} >= keep-warm", n.0 - reach);
                    reach = reach.max(n.1);
                }
            }
            for pair in hp.on_intervals.windows(2) {
                prop_assert!(pair[1].start - pair[0].end >= kw && pair[1].start > pair[0].end);
            }
        }
    }

    #[test]
    fn the_plan_does_not_depend_on_input_order(c in arb_case(), rot in 0usize..14) {
        let p = run(&c);
        let mut shuffled = c.clone();
        shuffled.bookings.reverse();
        let k = rot % shuffled.bookings.len().max(1);
        shuffled.bookings.rotate_left(k);
        shuffled.hosts.reverse();
        prop_assert_eq!(&p, &run(&shuffled));
        prop_assert_eq!(&p, &run(&c));
    }

    #[test]
    fn never_more_hosts_on_at_once_than_the_limit(c in arb_case()) {
        let p = run(&c);
        if let Some(limit) = c.policy.max_hosts {
            let all = p.hosts.iter().flat_map(|h| &h.on_intervals).map(|i| (ms(i.start), ms(i.end)));
            prop_assert!(max_concurrency(all) <= limit);
        }
    }

    #[test]
    fn materialized_assignments_survive_replanning(c in arb_case(), keep in 0usize..14) {
        let first = run(&c);
        let current: Vec<CurrentAssignment> = first.assignments.iter().take(keep)
            .map(|(b, h)| CurrentAssignment { booking: *b, host: h.clone(), materialized: true }).collect();
        let later = plan(&c.bookings, &c.hosts, &current, &c.policy, c.now + Duration::minutes(7));
        for a in &current {
            prop_assert_eq!(later.host_of(a.booking), Some(a.host.as_str()));
        }
        let overloaded = later.warnings.iter().any(|w| matches!(w, Warning::OverCapacity { .. }));
        prop_assert!(!overloaded);
    }

    #[test]
    fn the_lower_bound_never_exceeds_a_feasible_plan(c in arb_case()) {
        let p = run(&c);
        if p.assignments.len() == c.bookings.len() {
            let lb = lower_bound_minutes(&c.bookings, &c.hosts, &c.policy);
            prop_assert!(lb <= p.vm_minutes() + 1e-9, "lower bound {lb} > plan {}", p.vm_minutes());
        }
    }
}
