//! The VM planner: a pure function of (bookings, hosts, current assignments, policy, `now`)
//! that decides which Janus host serves each booking and when each host must be on.
//! Spec 1.2 (start ~30 min before, deallocate after a closing margin) and 1.3 (pool hosts for
//! close-together sessions, switch off after isolated ones).
//!
//! - [`plan`] is the entry point; it returns a [`Plan`]: one [`HostPlan`] per host (its bookings,
//!   its [`OnInterval`]s and the [`HostAction`] due at `now`) plus [`Warning`]s.
//! - A booking *needs* its host on for its window `[start - lead, end + grace]` ([`window`]);
//!   `lead` is the host's own (learned from its boots, [`PlanHost::lead`]) when it has one. A
//!   booking whose session ended early ([`PlanBooking::released`]) needs it only until then.
//!   A host's windows are merged into on-intervals when the gap between them is shorter than
//!   `keep_warm`: a short gap costs fewer VM-minutes than it is worth to avoid a stop and a start.
//! - Assignment is greedy in window order. A booking goes to the host where it costs least:
//!   `extra VM-minutes + keep_warm × extra starts` (so the host already on or planned-on around
//!   that time wins, then the one whose on-interval grows least), ties broken by fewer starts, the
//!   booking's current host, a host serving the same room, a host that is on, then the name.
//!   Materialized assignments are sticky: the room already exists on that host.
//! - [`lower_bound_minutes`] is what any plan must spend with the same lead and grace; the cost
//!   benchmark (`benches/cost.rs`) compares plans against it.
//!
//! Everything here is deterministic: the order of the input bookings and hosts does not matter.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::domain::{RoomId, TimeSlot};

/// A live booking as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlanBooking {
    pub id: Uuid,
    pub room: RoomId,
    pub slot: TimeSlot,
    /// When its session ended early (everyone left after the start): its host is needed only
    /// until then, without the grace. `None`: until the booked end plus the grace.
    pub released: Option<DateTime<Utc>>,
}

impl PlanBooking {
    /// A booking needed for its whole slot.
    pub fn new(id: Uuid, room: RoomId, slot: TimeSlot) -> Self {
        Self { id, room, slot, released: None }
    }
}

/// A Janus host the planner may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanHost {
    /// Unique host name (as in `JANUS_HOSTS`).
    pub name: String,
    /// Concurrent sessions the host takes; 0 means the host takes none.
    pub capacity: u32,
    /// True when the host was last seen running or starting. An on host is kept warm for a
    /// window that opens within `keep_warm`; an off host is only started when a window opens.
    pub on: bool,
    /// How long before a session this host must be started (learned from its boots);
    /// `None`: the policy's lead.
    pub lead: Option<Duration>,
}

impl PlanHost {
    /// A host with the policy's lead.
    pub fn new(name: impl Into<String>, capacity: u32, on: bool) -> Self {
        Self { name: name.into(), capacity, on, lead: None }
    }
}

/// How the planner trades VM time for readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPolicy {
    /// How long before a session its host must be on (boot, Janus start, room materialization).
    pub lead: Duration,
    /// How long after a session its host stays on (late leavers, overruns).
    pub grace: Duration,
    /// Gaps between a host's windows shorter than this are bridged (the host stays on).
    pub keep_warm: Duration,
    /// Most hosts the plan may have on at the same instant; `None`: no limit beyond the hosts.
    pub max_hosts: Option<usize>,
    /// A host still off this long after a booking's window opened is reported as late
    /// ([`Warning::NotReadyInTime`]); absorbs the reconciler's tick so on-time starts stay quiet.
    pub start_tolerance: Duration,
}

/// Default keep-warm gap, chosen with `benches/cost.rs` (a generated month, lead 30, grace 10):
/// 30 min saves 4-6% of VM starts against no bridging for +0.3-0.6% VM-hours, and keeps the
/// plan within 4% of the lower bound in every scenario; from 45 min on the VM-hours climb
/// towards and past the 5% target (pool of small VMs: 1.045 at 45, 1.055 at 60). Sessions
/// already share hosts through the 40 min that lead plus grace add, so only gaps longer than
/// that are bridged, and a start avoided is one less chance of a host not ready in time.
pub const DEFAULT_KEEP_WARM_MINUTES: i64 = 30;

impl Default for PlanPolicy {
    /// Lead 30 min, grace 10 min (design defaults), keep-warm [`DEFAULT_KEEP_WARM_MINUTES`],
    /// no host limit, start tolerance 2 min (two reconciler ticks).
    fn default() -> Self {
        Self {
            lead: Duration::minutes(30),
            grace: Duration::minutes(10),
            keep_warm: Duration::minutes(DEFAULT_KEEP_WARM_MINUTES),
            max_hosts: None,
            start_tolerance: Duration::minutes(2),
        }
    }
}

/// Where a booking is assigned now, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentAssignment {
    pub booking: Uuid,
    pub host: String,
    /// True once the booking's room exists on that host: the assignment is then kept.
    pub materialized: bool,
}

/// A stretch of time in which a host must be on, `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnInterval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The bookings whose windows lie in this interval, by window start then id.
    pub bookings: Vec<Uuid>,
}

impl OnInterval {
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }
}

/// What a host should do at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAction {
    /// The host is off and `booking`'s window is open: start it now.
    Start { booking: Uuid },
    /// The host is on and must stay on: `booking`'s window is open, or the host bridges a
    /// keep-warm gap until `booking`'s window opens.
    KeepOn { booking: Uuid },
    /// The host is on and nothing needs it now or within the keep-warm gap: deallocate it.
    /// `last` is the latest booking whose window closed, if any.
    Deallocate { last: Option<Uuid> },
    /// The host is off and may stay off; `next` is the next booking that needs it, if any.
    StayOff { next: Option<Uuid> },
}

/// The plan for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    pub name: String,
    /// Bookings assigned to this host, by window start then id.
    pub bookings: Vec<Uuid>,
    /// When the host must be on, sorted and disjoint, separated by at least `keep_warm`.
    pub on_intervals: Vec<OnInterval>,
    /// What to do at `now`.
    pub action: HostAction,
}

/// Something the operators must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// No host has room for this booking (capacity or `max_hosts`): it is left unassigned.
    NoCapacity { booking: Uuid },
    /// The booking's host is off although its window opened: the session may start before
    /// Janus is ready. `short_by` is how much of the lead time is already lost.
    NotReadyInTime { booking: Uuid, host: String, short_by: Duration },
    /// The booking was materialized on a host that is no longer configured; it was reassigned.
    StickyHostMissing { booking: Uuid, host: String },
    /// A sticky (materialized) booking overloads its host beyond its capacity.
    OverCapacity { booking: Uuid, host: String },
}

/// The planner's answer. Equal inputs give equal plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub now: DateTime<Utc>,
    /// Booking id → host name, for every booking that could be placed.
    pub assignments: BTreeMap<Uuid, String>,
    /// One entry per host, by name.
    pub hosts: Vec<HostPlan>,
    pub warnings: Vec<Warning>,
}

impl Plan {
    /// The host serving `booking`, if it was placed.
    pub fn host_of(&self, booking: Uuid) -> Option<&str> {
        self.assignments.get(&booking).map(String::as_str)
    }

    /// Total planned VM time over every host, in minutes.
    pub fn vm_minutes(&self) -> f64 {
        self.hosts.iter().flat_map(|h| &h.on_intervals).map(|i| i.duration().num_milliseconds() as f64 / 60_000.0).sum()
    }

    /// How many VM starts the plan needs: on-intervals that begin after `now` (an interval
    /// already under way needs no start when its host is on).
    pub fn starts(&self) -> usize {
        self.hosts.iter().flat_map(|h| &h.on_intervals).filter(|i| i.start >= self.now).count()
    }
}

/// The window in which `slot`'s host must be on: `[start - lead, end + grace]`.
pub fn window(slot: TimeSlot, policy: &PlanPolicy) -> (DateTime<Utc>, DateTime<Utc>) {
    (slot.start() - policy.lead, slot.end() + policy.grace)
}

/// The window in which `b`'s host must be on with `lead`: `[start - lead, end + grace]`, or
/// `[start - lead, released]` for a session that ended early.
pub fn booking_window(b: &PlanBooking, lead: Duration, policy: &PlanPolicy) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = b.slot.start() - lead;
    match b.released {
        Some(r) => (start, r.max(start)),
        None => (start, b.slot.end() + policy.grace),
    }
}

// Internally times are milliseconds since the epoch: the sweeps below compare many instants.
type Ms = i64;

/// How a host ranks for a booking, lowest first: (extra VM time, extra starts, not its current
/// host, not serving the same room, not on, host index).
type PlacementKey = (Ms, i64, bool, bool, bool, usize);

fn ms(t: DateTime<Utc>) -> Ms {
    t.timestamp_millis()
}

fn at(t: Ms) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).expect("planner times come from valid DateTimes")
}

/// Merges `[s, e)` intervals, bridging gaps shorter than `keep_warm`; touching intervals merge.
fn merge(mut iv: Vec<(Ms, Ms)>, keep_warm: Ms) -> Vec<(Ms, Ms)> {
    iv.sort_unstable();
    let mut out: Vec<(Ms, Ms)> = Vec::with_capacity(iv.len());
    for (s, e) in iv {
        if let Some(last) = out.last_mut() {
            if s <= last.1 || s - last.1 < keep_warm {
                last.1 = last.1.max(e);
                continue;
            }
        }
        out.push((s, e));
    }
    out
}

/// Largest number of `[s, e)` intervals covering one instant.
fn max_concurrency(iv: impl Iterator<Item = (Ms, Ms)>) -> usize {
    let mut ev: Vec<(Ms, i32)> = Vec::new();
    for (s, e) in iv {
        if s < e {
            ev.push((s, 1));
            ev.push((e, -1));
        }
    }
    // Ends sort before starts at the same instant: half-open intervals that touch do not overlap.
    ev.sort_unstable();
    let (mut cur, mut best) = (0i32, 0i32);
    for (_, d) in ev {
        cur += d;
        best = best.max(cur);
    }
    best as usize
}

struct Booked {
    b: PlanBooking,
    /// The window with the policy's lead (the order bookings are placed in).
    win: (Ms, Ms),
    /// The time it holds a seat: its slot, cut at an early release.
    slot: (Ms, Ms),
}

struct HostState<'a> {
    host: &'a PlanHost,
    /// Indices into the sorted bookings.
    assigned: Vec<usize>,
    /// The assigned bookings' windows with this host's lead, in `assigned` order.
    wins: Vec<(Ms, Ms)>,
    /// Windows of the assigned bookings plus, for an on host, the seed `[now, now]`.
    windows: Vec<(Ms, Ms)>,
    merged: Vec<(Ms, Ms)>,
    rooms: HashSet<RoomId>,
}

/// The future cost of a host's merged intervals: (VM-ms after `now`, starts needed after `now`).
fn future_cost(merged: &[(Ms, Ms)], now: Ms, on: bool) -> (Ms, i64) {
    let mut len = 0;
    let mut starts = 0;
    for &(s, e) in merged {
        if e > now {
            len += e - s.max(now);
            // An interval under way needs no start when the host is already on.
            if !(on && s <= now) {
                starts += 1;
            }
        }
    }
    (len, starts)
}

impl HostState<'_> {
    fn fits(&self, bk: &Booked, booked: &[Booked]) -> bool {
        let (ns, ne) = bk.slot;
        let overlapping = self
            .assigned
            .iter()
            .map(|&i| booked[i].slot)
            .filter(|&(s, e)| s < ne && ns < e)
            .map(|(s, e)| (s.max(ns), e.min(ne)));
        max_concurrency(overlapping) < self.host.capacity as usize
    }

    /// `bk`'s window on this host (its own lead).
    fn window_of(&self, bk: &Booked, policy: &PlanPolicy) -> (Ms, Ms) {
        let (s, e) = booking_window(&bk.b, self.host.lead.unwrap_or(policy.lead), policy);
        (ms(s), ms(e))
    }

    fn add(&mut self, idx: usize, bk: &Booked, policy: &PlanPolicy) {
        let win = self.window_of(bk, policy);
        self.assigned.push(idx);
        self.wins.push(win);
        self.windows.push(win);
        self.merged = merge(self.windows.clone(), policy.keep_warm.num_milliseconds());
        self.rooms.insert(bk.b.room);
    }
}

/// Plans which host serves each booking and when each host is on. Pure and deterministic:
/// the same input (in any order) gives the same plan. Duplicate booking ids keep the first
/// (by slot) occurrence; duplicate host names keep the first by name order.
pub fn plan(
    bookings: &[PlanBooking],
    hosts: &[PlanHost],
    current: &[CurrentAssignment],
    policy: &PlanPolicy,
    now: DateTime<Utc>,
) -> Plan {
    let now_ms = ms(now);
    let kw = policy.keep_warm.num_milliseconds();

    let mut sorted_hosts: Vec<&PlanHost> = hosts.iter().collect();
    sorted_hosts.sort_by(|a, b| (&a.name, a.capacity, a.on).cmp(&(&b.name, b.capacity, b.on)));
    sorted_hosts.dedup_by(|a, b| a.name == b.name);

    let mut booked: Vec<Booked> = bookings
        .iter()
        .map(|b| {
            let (ws, we) = booking_window(b, policy.lead, policy);
            let (start, end) = (ms(b.slot.start()), ms(b.slot.end()));
            let seat_end = b.released.map_or(end, |r| ms(r).clamp(start + 1, end));
            Booked { b: b.clone(), win: (ms(ws), ms(we)), slot: (start, seat_end) }
        })
        .collect();
    booked.sort_by_key(|x| (x.win, x.slot, x.b.id, x.b.room));
    let mut seen = HashSet::new();
    booked.retain(|b| seen.insert(b.b.id));

    let mut states: Vec<HostState> = sorted_hosts
        .iter()
        .map(|h| {
            let windows = if h.on { vec![(now_ms, now_ms)] } else { Vec::new() };
            HostState {
                host: h,
                assigned: Vec::new(),
                wins: Vec::new(),
                merged: merge(windows.clone(), kw),
                windows,
                rooms: HashSet::new(),
            }
        })
        .collect();
    let host_index = |name: &str| states_index(&sorted_hosts, name);

    // The current assignment of each booking; on duplicates the smallest host name wins so
    // the answer does not depend on input order.
    let mut cur: BTreeMap<Uuid, (&str, bool)> = BTreeMap::new();
    for c in current {
        let e = cur.entry(c.booking).or_insert((c.host.as_str(), c.materialized));
        if (c.materialized, std::cmp::Reverse(c.host.as_str())) > (e.1, std::cmp::Reverse(e.0)) {
            *e = (c.host.as_str(), c.materialized);
        }
    }

    let mut warnings = Vec::new();
    let mut assignments = BTreeMap::new();

    // Sticky bookings first: their host is fixed whatever it costs.
    let mut free = Vec::new();
    for (idx, bk) in booked.iter().enumerate() {
        match cur.get(&bk.b.id) {
            Some(&(host, true)) => match host_index(host) {
                Some(h) => {
                    if !states[h].fits(bk, &booked) {
                        warnings.push(Warning::OverCapacity { booking: bk.b.id, host: host.to_string() });
                    }
                    states[h].add(idx, bk, policy);
                    assignments.insert(bk.b.id, host.to_string());
                }
                None => {
                    warnings.push(Warning::StickyHostMissing { booking: bk.b.id, host: host.to_string() });
                    free.push(idx);
                }
            },
            _ => free.push(idx),
        }
    }

    for idx in free {
        let bk = &booked[idx];
        let current_host = cur.get(&bk.b.id).map(|&(h, _)| h);
        let mut best: Option<(PlacementKey, usize)> = None;
        for (h, st) in states.iter().enumerate() {
            if !st.fits(bk, &booked) {
                continue;
            }
            let mut windows = st.windows.clone();
            windows.push(st.window_of(bk, policy));
            let merged = merge(windows, kw);
            if let Some(limit) = policy.max_hosts {
                if !within_host_limit(&states, h, &merged, limit) {
                    continue;
                }
            }
            let (old_len, old_starts) = future_cost(&st.merged, now_ms, st.host.on);
            let (new_len, new_starts) = future_cost(&merged, now_ms, st.host.on);
            let extra_starts = new_starts - old_starts;
            let cost = (new_len - old_len) + kw * extra_starts;
            let key = (
                cost,
                extra_starts,
                current_host != Some(st.host.name.as_str()),
                !st.rooms.contains(&bk.b.room),
                !st.host.on,
                h,
            );
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, h));
            }
        }
        match best {
            Some((_, h)) => {
                states[h].add(idx, bk, policy);
                assignments.insert(bk.b.id, states[h].host.name.clone());
            }
            None => warnings.push(Warning::NoCapacity { booking: bk.b.id }),
        }
    }

    let mut host_plans = Vec::with_capacity(states.len());
    for st in &states {
        // (booking, its window on this host), by window start then id.
        let mut mine: Vec<(&Booked, (Ms, Ms))> =
            st.assigned.iter().zip(&st.wins).map(|(&i, w)| (&booked[i], *w)).collect();
        mine.sort_by_key(|(x, w)| (*w, x.b.id));

        let on_intervals: Vec<OnInterval> = st
            .merged
            .iter()
            .filter(|(s, e)| s < e)
            .map(|&(s, e)| OnInterval {
                start: at(s),
                end: at(e),
                bookings: mine.iter().filter(|(_, w)| w.0 >= s && w.1 <= e).map(|(b, _)| b.b.id).collect(),
            })
            .collect();

        let open = mine.iter().find(|(_, w)| w.0 <= now_ms && now_ms < w.1).map(|(b, _)| b.b.id);
        let next = mine.iter().find(|(_, w)| w.0 > now_ms).map(|(b, _)| b.b.id);
        let bridging = st.merged.iter().any(|&(s, e)| s <= now_ms && now_ms < e);
        let action = match (open, st.host.on) {
            (Some(b), false) => HostAction::Start { booking: b },
            (Some(b), true) => HostAction::KeepOn { booking: b },
            (None, true) if bridging && next.is_some() => HostAction::KeepOn { booking: next.unwrap() },
            (None, true) => HostAction::Deallocate {
                last: mine
                    .iter()
                    .filter(|(_, w)| w.1 <= now_ms)
                    .max_by_key(|(b, w)| (w.1, b.b.id))
                    .map(|(b, _)| b.b.id),
            },
            // An off host is not started to bridge a gap: it starts when the next window opens.
            (None, false) => HostAction::StayOff { next },
        };

        if !st.host.on {
            let lead = st.host.lead.unwrap_or(policy.lead);
            let lateness_floor = lead - policy.start_tolerance;
            for (b, _) in &mine {
                let to_start = b.b.slot.start() - now;
                if now < b.b.slot.end() && b.b.released.is_none() && to_start < lateness_floor {
                    warnings.push(Warning::NotReadyInTime {
                        booking: b.b.id,
                        host: st.host.name.clone(),
                        short_by: lead - to_start,
                    });
                }
            }
        }

        host_plans.push(HostPlan {
            name: st.host.name.clone(),
            bookings: mine.iter().map(|(b, _)| b.b.id).collect(),
            on_intervals,
            action,
        });
    }

    Plan { now, assignments, hosts: host_plans, warnings }
}

fn states_index(hosts: &[&PlanHost], name: &str) -> Option<usize> {
    hosts.binary_search_by(|h| h.name.as_str().cmp(name)).ok()
}

/// True when giving host `h` the intervals `merged` keeps at most `limit` hosts on at once.
fn within_host_limit(states: &[HostState], h: usize, merged: &[(Ms, Ms)], limit: usize) -> bool {
    // Only the intervals that changed can break the limit.
    merged.iter().filter(|iv| !states[h].merged.contains(iv)).all(|&(s, e)| {
        let others = states
            .iter()
            .enumerate()
            .filter(|&(o, _)| o != h)
            .flat_map(|(_, st)| st.merged.iter().copied())
            .filter(|&(os, oe)| os < e && s < oe)
            .map(|(os, oe)| (os.max(s), oe.min(e)));
        max_concurrency(others) < limit
    })
}

/// The VM-minutes any plan must spend for these bookings with the same lead and grace,
/// ignoring keep-warm: at each instant, the hosts that must be on are at least the fewest hosts
/// (largest capacities first, at most `max_hosts`) whose capacity covers the largest number of
/// concurrent sessions among the bookings whose windows contain that instant.
/// Touching windows do not overlap; with no hosts the bound counts one host per instant covered.
pub fn lower_bound_minutes(bookings: &[PlanBooking], hosts: &[PlanHost], policy: &PlanPolicy) -> f64 {
    let mut caps: Vec<u64> = hosts.iter().map(|h| h.capacity as u64).filter(|&c| c > 0).collect();
    caps.sort_unstable_by(|a, b| b.cmp(a));
    let limit = policy.max_hosts.unwrap_or(usize::MAX).min(caps.len().max(1));
    let hosts_for = |sessions: usize| -> usize {
        if sessions == 0 {
            return 0;
        }
        let mut sum = 0u64;
        for (k, c) in caps.iter().enumerate() {
            sum += c;
            if sum >= sessions as u64 {
                return (k + 1).min(limit);
            }
        }
        limit
    };

    let mut items: Vec<((Ms, Ms), (Ms, Ms))> = bookings
        .iter()
        .map(|b| {
            let (ws, we) = booking_window(b, policy.lead, policy);
            let (start, end) = (ms(b.slot.start()), ms(b.slot.end()));
            ((ms(ws), ms(we)), (start, b.released.map_or(end, |r| ms(r).clamp(start + 1, end))))
        })
        .collect();
    items.sort_unstable();
    let mut cuts: Vec<Ms> = items.iter().flat_map(|(w, _)| [w.0, w.1]).collect();
    cuts.sort_unstable();
    cuts.dedup();

    let mut total: Ms = 0;
    let mut first_live = 0;
    for seg in cuts.windows(2) {
        let (a, b) = (seg[0], seg[1]);
        while first_live < items.len() && items[first_live].0.1 <= a {
            first_live += 1;
        }
        // Windows are sorted by start, so scanning stops at the first that starts at or after b.
        let covering = items[first_live..]
            .iter()
            .take_while(|(w, _)| w.0 < b)
            .filter(|(w, _)| w.0 <= a && w.1 >= b)
            .map(|(_, s)| *s);
        total += (b - a) * hosts_for(max_concurrency(covering)) as Ms;
    }
    total as f64 / 60_000.0
}

#[cfg(test)]
mod tests;
