//! VM usage for billing, derived from the operations log (pure, no I/O).
//!
//! A host is on from a successful `start` until a successful `deallocate` (actor: the reconciler
//! or an operator). Each on-minute is attributed to the bookings whose host window
//! `[start - lead, end + grace)` covers it on that host, split evenly among them; minutes that no
//! booking needs (keep-warm bridges, operator overrides, waiting for participants to leave) stay
//! "idle" on the host. The saving is measured against every host on for the whole period.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    domain::{Booking, TimeSlot},
    store::{OpAction, Operation},
};

/// One host's VM time in the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostUsage {
    pub name: String,
    /// Minutes the VM was on (billed).
    pub vm_minutes: f64,
    /// Of those, minutes no booking needed.
    pub idle_minutes: f64,
    /// Successful starts in the period.
    pub starts: u32,
}

/// The VM time one booking caused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BookingUsage {
    pub booking_id: Uuid,
    pub owner: String,
    pub host: String,
    pub vm_minutes: f64,
}

/// Usage in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub hosts: Vec<HostUsage>,
    pub bookings: Vec<BookingUsage>,
    /// VM minutes per booking owner.
    pub users: BTreeMap<String, f64>,
    pub total_vm_minutes: f64,
    /// Every host on for the whole period.
    pub always_on_vm_minutes: f64,
    pub saving_vm_minutes: f64,
    /// Saving as a share of always-on, 0..=100.
    pub saving_percent: f64,
}

/// What [`usage`] reads.
pub struct UsageInput<'a> {
    pub period: TimeSlot,
    /// Time ends here for hosts still on (the present, or the period's end).
    pub now: DateTime<Utc>,
    pub hosts: &'a [String],
    /// Always-on hosts (`FLEET=static`) count as on for the whole period.
    pub always_on: bool,
    /// Log entries from before the period too, so that a host already on at `from` is seen.
    pub ops: &'a [Operation],
    /// Live bookings overlapping the period, with the host that served each.
    pub bookings: &'a [(Booking, String)],
    pub lead: Duration,
    pub grace: Duration,
}

fn minutes(d: Duration) -> f64 {
    d.num_milliseconds() as f64 / 60_000.0
}

/// `[from, to)` in which a host was on.
type Span = (DateTime<Utc>, DateTime<Utc>);

/// The on-intervals of `host` inside the period, from its start/deallocate log, and its starts.
fn on_intervals(input: &UsageInput<'_>, host: &str) -> (Vec<Span>, u32) {
    let (from, to) = (input.period.start(), input.period.end().min(input.now.max(input.period.start())));
    if input.always_on {
        return (vec![(from, to)], 0);
    }
    let mut ops: Vec<&Operation> = input
        .ops
        .iter()
        .filter(|o| {
            o.host.as_deref() == Some(host)
                && o.result == "ok"
                && matches!(o.action, OpAction::Start | OpAction::Deallocate)
        })
        .collect();
    ops.sort_by_key(|o| o.at);
    let (mut out, mut starts, mut on_since) = (Vec::new(), 0, None::<DateTime<Utc>>);
    for o in ops {
        match (o.action, on_since) {
            (OpAction::Start, None) => {
                on_since = Some(o.at);
                if o.at >= from && o.at < to {
                    starts += 1;
                }
            }
            (OpAction::Deallocate, Some(since)) => {
                out.push((since, o.at));
                on_since = None;
            }
            _ => {}
        }
    }
    if let Some(since) = on_since {
        out.push((since, to));
    }
    let clipped = out.into_iter().map(|(a, b)| (a.max(from), b.min(to))).filter(|(a, b)| a < b).collect();
    (clipped, starts)
}

/// VM minutes per host, attributed to bookings and users, and the saving against always-on.
pub fn usage(input: &UsageInput<'_>) -> UsageReport {
    let mut hosts = Vec::new();
    let mut per_booking: BTreeMap<Uuid, f64> = BTreeMap::new();
    for host in input.hosts {
        let (intervals, starts) = on_intervals(input, host);
        let windows: Vec<(DateTime<Utc>, DateTime<Utc>, Uuid)> = input
            .bookings
            .iter()
            .filter(|(_, h)| h == host)
            .map(|(b, _)| (b.slot.start() - input.lead, b.slot.end() + input.grace, b.id))
            .collect();
        let (mut on, mut idle) = (0.0, 0.0);
        for (a, b) in intervals {
            on += minutes(b - a);
            // Sweep the points where the set of covering windows changes.
            let mut points: Vec<DateTime<Utc>> = vec![a, b];
            for (s, e, _) in &windows {
                points.extend([*s, *e].into_iter().filter(|p| *p > a && *p < b));
            }
            points.sort();
            points.dedup();
            for pair in points.windows(2) {
                let (p, q) = (pair[0], pair[1]);
                let covering: Vec<Uuid> = windows.iter().filter(|(s, e, _)| *s <= p && q <= *e).map(|w| w.2).collect();
                let m = minutes(q - p);
                if covering.is_empty() {
                    idle += m;
                } else {
                    for id in &covering {
                        *per_booking.entry(*id).or_default() += m / covering.len() as f64;
                    }
                }
            }
        }
        hosts.push(HostUsage { name: host.clone(), vm_minutes: on, idle_minutes: idle, starts });
    }
    let mut bookings = Vec::new();
    let mut users: BTreeMap<String, f64> = BTreeMap::new();
    for (b, host) in input.bookings {
        if let Some(m) = per_booking.get(&b.id) {
            bookings.push(BookingUsage {
                booking_id: b.id,
                owner: b.owner.clone(),
                host: host.clone(),
                vm_minutes: *m,
            });
            *users.entry(b.owner.clone()).or_default() += m;
        }
    }
    let total: f64 = hosts.iter().map(|h| h.vm_minutes).sum();
    let always_on = minutes(input.period.duration()) * input.hosts.len() as f64;
    let saving = (always_on - total).max(0.0);
    UsageReport {
        from: input.period.start(),
        to: input.period.end(),
        hosts,
        bookings,
        users,
        total_vm_minutes: total,
        always_on_vm_minutes: always_on,
        saving_vm_minutes: saving,
        saving_percent: if always_on > 0.0 { saving / always_on * 100.0 } else { 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RoomId, parse_instant};

    fn t(s: &str) -> DateTime<Utc> {
        parse_instant("t", &format!("2026-03-02T{s}:00Z")).unwrap()
    }

    fn op(at: &str, action: &str, host: &str, result: &str) -> Operation {
        Operation {
            id: Uuid::new_v4(),
            at: t(at),
            actor: "reconciler".into(),
            action: OpAction::from_name(action),
            host: Some(host.into()),
            booking_id: None,
            room_id: None,
            result: result.into(),
            duration_ms: 0,
        }
    }

    fn booking(owner: &str, start: &str, end: &str) -> Booking {
        Booking {
            id: Uuid::new_v4(),
            room_id: RoomId::new(7).unwrap(),
            owner: owner.into(),
            slot: TimeSlot::new(t(start), t(end)).unwrap(),
            created_at: t("00:00"),
            cancelled_at: None,
            access: Default::default(),
        }
    }

    #[test]
    fn minutes_are_split_between_overlapping_windows_and_the_rest_is_idle() {
        let hosts = vec!["h1".to_string()];
        let ops = vec![
            op("09:30", "start", "h1", "ok"),
            op("09:31", "start", "h1", "ok"), // a replayed start changes nothing
            op("12:00", "deallocate", "h1", "ok"),
            op("13:00", "start", "h1", "quota exceeded"), // failed: not on
        ];
        let (a, b) = (booking("ana", "10:00", "11:00"), booking("bo", "10:30", "11:00"));
        let bookings = vec![(a.clone(), "h1".to_string()), (b.clone(), "h1".to_string())];
        let r = usage(&UsageInput {
            period: TimeSlot::new(t("08:00"), t("16:00")).unwrap(),
            now: t("16:00"),
            hosts: &hosts,
            always_on: false,
            ops: &ops,
            bookings: &bookings,
            lead: Duration::minutes(30),
            grace: Duration::minutes(10),
        });
        assert_eq!(r.hosts[0].vm_minutes, 150.0);
        assert_eq!(r.hosts[0].starts, 1);
        // ana's window 09:30-11:10, bo's 10:00-11:10: 30 min alone, 70 min shared.
        assert_eq!(r.bookings.iter().find(|x| x.booking_id == a.id).unwrap().vm_minutes, 30.0 + 35.0);
        assert_eq!(r.users["bo"], 35.0);
        assert_eq!(r.hosts[0].idle_minutes, 50.0);
        assert_eq!(r.always_on_vm_minutes, 480.0);
        assert_eq!(r.saving_vm_minutes, 330.0);
    }

    #[test]
    fn a_host_on_before_the_period_counts_from_its_start() {
        let hosts = vec!["h1".to_string()];
        let ops = vec![op("07:00", "start", "h1", "ok")];
        let r = usage(&UsageInput {
            period: TimeSlot::new(t("08:00"), t("16:00")).unwrap(),
            now: t("09:00"),
            hosts: &hosts,
            always_on: false,
            ops: &ops,
            bookings: &[],
            lead: Duration::minutes(30),
            grace: Duration::minutes(10),
        });
        assert_eq!(r.hosts[0].vm_minutes, 60.0, "on from 08:00 until now");
        assert_eq!(r.hosts[0].starts, 0);
    }
}
