//! The reconciler (timer `fleet-reconcile`, every minute): makes the hosts follow the plan.
//!
//! One run ([`Reconciler::run_once`]):
//! 1. reads the live bookings from `overrun limit + grace` ago to the horizon, their
//!    assignments, each host's power state and the operators' overrides, the sessions that
//!    ended early (`FLEET_RELEASE_EARLY`) and each host's learned lead ([`super::boots`]);
//! 2. plans ([`super::control::Fleet::plan_with`]) and stores assignments that changed;
//! 3. acts per host, all hosts CONCURRENTLY and ISOLATED (a failure is that host's only):
//!    start or deallocate as the plan (or an active override) says. It never deallocates a
//!    host with a booking inside its window, nor one with participants in any of its rooms
//!    (asked of Janus, uncached) until `end + overrun limit` of its latest recent booking;
//! 4. makes each running host READY: Janus answers `/info`, then the [`SessionKeeper`] (the
//!    sessions layer) opens the session rooms of its bookings whose join window is open, marks
//!    those assignments ready, and destroys every room the host should no longer hold (sessions
//!    past their end plus grace, cancelled, rotated, or unknown). A host found off loses
//!    `ready_at` on its assignments (its non-permanent rooms went with Janus), and the sessions
//!    layer ends the presences still recorded there. A host started by the reconciler has its
//!    boot timed until Janus answers (its learned lead);
//! 5. alerts once per subject: a booking whose host is not ready 10 minutes before it starts,
//!    start/deallocate failing several runs in a row, capacity short.
//!
//! Idempotent: a replay of an occurrence finds the work done (hosts in the planned state,
//! session rooms open or closed, alerts claimed); each power action is also claimed per host and
//! minute (`reconcile:{host}:{action}:{minute}`), so two concurrent invocations never both start
//! or deallocate a host. Every action goes to the operations log with the booking that caused
//! it, its result and its duration; a deallocation that comes before a booking's end plus grace
//! because its session ended early is also logged as an `early-release`. Time comes from the
//! fleet's [`crate::clock::Clock`].

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Instant,
};

use chrono::{DateTime, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    FleetError, SessionKeeper,
    alerts::{AlertOutcome, Alerter},
    control::{Fleet, HostOverride, OverrideAction, PlanInputs},
    planner::{HostAction, HostPlan, PlanBooking, Warning, booking_window},
    power::{PowerError, PowerOutcome, PowerState},
};
use crate::{
    domain::{Booking, RoomId, TimeSlot},
    store::{Assignment, OpAction, Operation, StoreError},
};

/// The operations log's actor for everything the reconciler does.
pub const ACTOR: &str = "reconciler";

/// What a power action on one host came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerStep {
    /// Nothing to switch.
    None,
    /// Started (or deallocated) now.
    Done {
        action: OpAction,
    },
    /// The backend does not switch this host (always on).
    NotManaged {
        action: OpAction,
    },
    /// Another invocation of this occurrence took this action.
    Replayed {
        action: OpAction,
    },
    /// The plan wanted it off but it stays on; `reason` says why.
    KeptOn {
        reason: String,
    },
    Failed {
        action: OpAction,
        error: String,
    },
}

/// One host's part of a run.
#[derive(Debug, Clone)]
pub struct HostReport {
    pub host: String,
    /// Power state at the start of the run (`None`: the backend could not be asked).
    pub power_before: Option<PowerState>,
    pub step: PowerStep,
    /// Bookings whose rooms were materialized and marked ready on this host in this run.
    pub made_ready: Vec<Uuid>,
    /// Bookings whose rooms could not be opened, with the error.
    pub not_ready: Vec<(Uuid, String)>,
    /// Janus rooms destroyed on this host in this run (sessions that ended, were cancelled or
    /// rotated, and rooms of no current session).
    pub closed: Vec<u64>,
    /// True when the host runs and its Janus answered.
    pub janus_ok: bool,
}

/// What one run did.
#[derive(Debug, Clone, Default)]
pub struct ReconcileReport {
    pub at: Option<DateTime<Utc>>,
    /// Live bookings in the horizon.
    pub bookings: usize,
    pub hosts: Vec<HostReport>,
    /// Alert keys raised in this run.
    pub alerts: Vec<String>,
    /// Failures outside any one host (the store), which stopped the run.
    pub errors: Vec<String>,
}

impl ReconcileReport {
    /// Short lines for the Functions host's `Logs`.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(at) = self.at {
            lines.push(format!(
                "reconciled at {} over {} bookings and {} hosts",
                at.to_rfc3339(),
                self.bookings,
                self.hosts.len()
            ));
        }
        let pick = |f: &dyn Fn(&PowerStep) -> bool| -> Vec<&str> {
            self.hosts.iter().filter(|h| f(&h.step)).map(|h| h.host.as_str()).collect()
        };
        let started = pick(&|s| matches!(s, PowerStep::Done { action: OpAction::Start }));
        let stopped = pick(&|s| matches!(s, PowerStep::Done { action: OpAction::Deallocate }));
        lines.push(format!("started [{}], deallocated [{}]", started.join(", "), stopped.join(", ")));
        for h in &self.hosts {
            match &h.step {
                PowerStep::Failed { action, error } => lines.push(format!("{}: {action} failed: {error}", h.host)),
                PowerStep::KeptOn { reason } => lines.push(format!("{}: kept on: {reason}", h.host)),
                PowerStep::Replayed { action } => {
                    lines.push(format!("{}: {action} left to another invocation", h.host))
                }
                _ => {}
            }
            for (b, e) in &h.not_ready {
                lines.push(format!("{}: booking {b} not ready: {e}", h.host));
            }
        }
        let ready: usize = self.hosts.iter().map(|h| h.made_ready.len()).sum();
        let closed: usize = self.hosts.iter().map(|h| h.closed.len()).sum();
        lines.push(format!("{ready} bookings made ready, {closed} session rooms closed, {} alerts", self.alerts.len()));
        lines.extend(self.errors.iter().map(|e| format!("error: {e}")));
        lines
    }

    /// The host's report.
    pub fn host(&self, name: &str) -> Option<&HostReport> {
        self.hosts.iter().find(|h| h.host == name)
    }
}

/// A failure streak of a host's power actions, kept as state `power-failures:{host}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FailureStreak {
    count: u32,
    /// When the streak began: part of the alert key, so a later streak alerts again.
    since: Option<DateTime<Utc>>,
}

/// The reconciler over a [`Fleet`]. Cheap to share behind an `Arc`.
pub struct Reconciler {
    fleet: Arc<Fleet>,
    alerts: Alerter,
    sessions: Arc<dyn SessionKeeper>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler").field("fleet", &self.fleet).finish_non_exhaustive()
    }
}

/// Everything one host's task needs, read once per run.
struct HostInput<'a> {
    plan: &'a HostPlan,
    power: Option<PowerState>,
    forced: Option<HostOverride>,
    bookings: Vec<&'a Booking>,
    /// Every live booking of the run (the keeper finds most rooms' bookings here).
    all: &'a [Booking],
    assignments: &'a HashMap<Uuid, Assignment>,
    /// Early releases and leads the plan was made with.
    inputs: &'a PlanInputs,
    now: DateTime<Utc>,
    minute: DateTime<Utc>,
}

impl HostInput<'_> {
    /// The lead the plan gave this host.
    fn plan_lead(&self, fleet: &Fleet) -> chrono::Duration {
        self.inputs.leads.get(&self.plan.name).copied().unwrap_or(fleet.policy.plan.lead)
    }
}

impl Reconciler {
    /// A reconciler that asks `sessions` to open and close the sessions of running hosts.
    pub fn new(fleet: Arc<Fleet>, alerts: Alerter, sessions: Arc<dyn SessionKeeper>) -> Self {
        Self { fleet, alerts, sessions }
    }

    /// The fleet it acts on.
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// One reconcile run at the clock's `now`. Never fails as a whole: a store failure is in
    /// `errors` (the run stops there), a host's failure in that host's report.
    #[tracing::instrument(level = "info", skip(self))]
    pub async fn run_once(&self) -> ReconcileReport {
        let now = self.fleet.clock.now();
        let mut report = ReconcileReport { at: Some(now), ..Default::default() };
        if let Err(e) = self.run(now, &mut report).await {
            tracing::error!(error = %e, "reconcile stopped");
            report.errors.push(e.to_string());
        }
        report
    }

    async fn run(&self, now: DateTime<Utc>, report: &mut ReconcileReport) -> Result<(), StoreError> {
        let fleet = &self.fleet;
        let policy = &fleet.policy;
        let minute = now.duration_trunc(chrono::Duration::minutes(1)).unwrap_or(now);
        let horizon = TimeSlot::new(now - policy.overrun_limit - policy.plan.grace, now + policy.horizon)
            .map_err(|e| StoreError::Internal(format!("reconcile horizon: {e}")))?;
        let bookings = fleet.store.bookings_between(horizon).await?;
        report.bookings = bookings.len();
        let ids: Vec<Uuid> = bookings.iter().map(|b| b.id).collect();
        let stored = if ids.is_empty() { vec![] } else { fleet.store.assignments(&ids).await? };
        let power_results = fleet.power_states().await;
        let power: BTreeMap<String, PowerState> =
            power_results.iter().map(|(h, r)| (h.clone(), r.clone().unwrap_or(PowerState::Unknown))).collect();
        let mut overrides = BTreeMap::new();
        for h in &fleet.hosts {
            if let Some(o) = fleet.override_of(&h.name, now).await? {
                overrides.insert(h.name.clone(), o);
            }
        }
        let inputs = fleet.plan_inputs(now, &bookings).await?;
        let plan = fleet.plan_with(now, &bookings, &stored, &power, &overrides, &inputs);

        // Store the assignments that changed; an unchanged one keeps its ready_at.
        let mut assignments: HashMap<Uuid, Assignment> = stored.into_iter().map(|a| (a.booking_id, a)).collect();
        for (booking, host) in &plan.assignments {
            if assignments.get(booking).is_none_or(|a| &a.host != host) {
                let a = Assignment { booking_id: *booking, host: host.clone(), ready_at: None };
                fleet.store.put_assignment(&a).await?;
                assignments.insert(*booking, a);
            }
        }

        let by_id: HashMap<Uuid, &Booking> = bookings.iter().map(|b| (b.id, b)).collect();
        let tasks = plan.hosts.iter().map(|hp| {
            let input = HostInput {
                plan: hp,
                power: power_results.get(&hp.name).and_then(|r| r.as_ref().ok().copied()),
                forced: overrides.get(&hp.name).cloned(),
                bookings: hp.bookings.iter().filter_map(|id| by_id.get(id).copied()).collect(),
                all: &bookings,
                assignments: &assignments,
                inputs: &inputs,
                now,
                minute,
            };
            self.host_task(input)
        });
        report.hosts = futures::future::join_all(tasks).await;

        self.raise_alerts(now, &plan.warnings, &bookings, &assignments, &inputs, report).await;
        Ok(())
    }

    /// One host's whole part of a run; never fails (errors go into its report and the log).
    async fn host_task(&self, input: HostInput<'_>) -> HostReport {
        let name = input.plan.name.clone();
        let mut report = HostReport {
            host: name.clone(),
            power_before: input.power,
            step: PowerStep::None,
            made_ready: vec![],
            not_ready: vec![],
            closed: vec![],
            janus_ok: false,
        };
        let on = input.power.is_some_and(PowerState::is_on);
        let forced = input.forced.as_ref().map(|o| o.action);

        // What the plan (or an override) wants, and the booking that causes it.
        let want: Option<(OpAction, Option<Uuid>)> = if self.fleet.always_on {
            None
        } else {
            match (forced, &input.plan.action) {
                (Some(OverrideAction::Start), _) if !on => Some((OpAction::Start, None)),
                (Some(OverrideAction::Start), _) => None,
                (Some(OverrideAction::Deallocate), _)
                    if input.power != Some(PowerState::Deallocated) && input.power.is_some() =>
                {
                    Some((OpAction::Deallocate, None))
                }
                (Some(OverrideAction::Deallocate), _) => None,
                (None, HostAction::Start { booking }) => Some((OpAction::Start, Some(*booking))),
                (None, HostAction::Deallocate { last }) => Some((OpAction::Deallocate, *last)),
                // Stopped but still allocated still bills compute: release it.
                (None, HostAction::StayOff { .. }) if input.power == Some(PowerState::Stopped) => {
                    Some((OpAction::Deallocate, None))
                }
                (None, _) => None,
            }
        };

        let mut running = input.power == Some(PowerState::Running) || self.fleet.always_on;
        if let Some((action, cause)) = want {
            let keep = if action == OpAction::Deallocate {
                self.reason_to_keep_on(&input, forced.is_some()).await
            } else {
                None
            };
            report.step = match keep {
                Some(reason) => {
                    tracing::info!(host = %name, reason, "kept on");
                    PowerStep::KeptOn { reason }
                }
                None => self.switch(&name, action, cause, input.now, input.minute).await,
            };
            match &report.step {
                PowerStep::Done { action: OpAction::Start } => running = true,
                PowerStep::Done { action: OpAction::Deallocate } => {
                    running = false;
                    self.log_early_release(&input).await;
                }
                _ => {}
            }
            let started = matches!(report.step, PowerStep::Done { action: OpAction::Start })
                || matches!(&report.step, PowerStep::Failed { action: OpAction::Start, .. });
            if started {
                if let Err(e) = self.fleet.boot_started(&name, input.now).await {
                    tracing::warn!(host = %name, error = %e, "cannot record the start of a boot");
                }
            }
        }

        if running {
            self.make_ready(&input, &mut report).await;
        } else {
            self.forget_ready(&input).await;
        }
        report
    }

    /// Logs the deallocation of a host that came before the booked end plus grace of one of
    /// its bookings because that booking's session ended early.
    async fn log_early_release(&self, input: &HostInput<'_>) {
        let grace = self.fleet.policy.plan.grace;
        for b in &input.bookings {
            let Some(ended) = input.inputs.released.get(&b.id) else { continue };
            let booked_until = b.slot.end() + grace;
            if input.now >= booked_until {
                continue;
            }
            let saved = (booked_until - input.now).num_minutes();
            tracing::info!(
                host = %input.plan.name,
                booking_id = %b.id,
                session_ended_at = %ended.to_rfc3339(),
                booked_until = %booked_until.to_rfc3339(),
                saved_minutes = saved,
                "early release: the host is deallocated because the session ended early"
            );
            self.log(
                input.now,
                OpAction::EarlyRelease,
                Some(&input.plan.name),
                Some(b.id),
                Some(b.room_id),
                format!(
                    "session ended at {}; booked until {}; {saved} min saved",
                    ended.to_rfc3339(),
                    booked_until.to_rfc3339()
                ),
                0,
            )
            .await;
        }
    }

    /// Why a host the plan wants off must stay on, if it must: a booking inside its window
    /// (unless an operator forced it off), or live participants in a room of its recent
    /// bookings until `end + overrun limit`. A Janus that cannot be asked for another reason
    /// than being unreachable keeps the host on too (better a VM-minute than a dropped call).
    async fn reason_to_keep_on(&self, input: &HostInput<'_>, forced: bool) -> Option<String> {
        let policy = &self.fleet.policy;
        let now = input.now;
        if !forced {
            let lead = input.plan_lead(&self.fleet);
            if let Some(b) = input.bookings.iter().find(|b| {
                let pb = PlanBooking {
                    released: input.inputs.released.get(&b.id).copied(),
                    ..PlanBooking::new(b.id, b.room_id, b.slot)
                };
                let (s, e) = booking_window(&pb, lead, &policy.plan);
                s <= now && now < e
            }) {
                return Some(format!("booking {} is inside its window", b.id));
            }
        }
        let host = self.fleet.janus_host(&input.plan.name)?;
        // The latest end among the host's recent bookings: participants keep it on until then
        // plus the overrun limit (sessions close at their end plus a short grace, so this only
        // matters when a close could not happen).
        let latest_end = input
            .bookings
            .iter()
            .filter(|b| b.slot.start() - policy.plan.lead <= now && now < b.slot.end() + policy.overrun_limit)
            .map(|b| b.slot.end())
            .max()?;
        match self.fleet.janus.rooms_on(host).await {
            Ok(rooms) => {
                let occupied: u64 = rooms.iter().map(|r| r.num_participants).sum();
                (occupied > 0).then(|| {
                    format!(
                        "{occupied} live participants in its rooms (overrun limit {})",
                        (latest_end + policy.overrun_limit).to_rfc3339()
                    )
                })
            }
            // Janus down: nobody can be in a session there.
            Err(FleetError::Unavailable(_)) => None,
            Err(e) => Some(format!("cannot ask Janus about its rooms: {e}")),
        }
    }

    /// Starts or deallocates `host` once per occurrence, logs it, and keeps the failure streak.
    async fn switch(
        &self,
        host: &str,
        action: OpAction,
        cause: Option<Uuid>,
        now: DateTime<Utc>,
        minute: DateTime<Utc>,
    ) -> PowerStep {
        let marker = format!("reconcile:{host}:{action}:{}", minute.to_rfc3339());
        match self.fleet.store.claim_marker(&marker, now).await {
            Ok(true) => {}
            Ok(false) => return PowerStep::Replayed { action },
            Err(e) => return PowerStep::Failed { action, error: format!("claiming the occurrence: {e}") },
        }
        let started = Instant::now();
        let result = match action {
            OpAction::Start => self.fleet.power.start(host).await,
            _ => self.fleet.power.deallocate(host).await,
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let (step, text) = match &result {
            Ok(PowerOutcome::Done) => (PowerStep::Done { action }, "ok".to_string()),
            Ok(PowerOutcome::NotManaged) => (PowerStep::NotManaged { action }, "not managed".to_string()),
            Err(e) => (PowerStep::Failed { action, error: e.to_string() }, e.to_string()),
        };
        tracing::info!(host, action = %action, result = %text, duration_ms, "power action");
        self.log(now, action, Some(host), cause, None, text, duration_ms).await;
        if action == OpAction::Deallocate && matches!(step, PowerStep::Done { .. }) {
            self.fleet.janus.forget_all_participants();
        }
        self.track_failures(host, action, result.as_ref().err(), now).await;
        step
    }

    /// Counts consecutive failed runs of a host's power actions; alerts once per streak when
    /// it reaches the policy's threshold; a success ends the streak.
    async fn track_failures(&self, host: &str, action: OpAction, error: Option<&PowerError>, now: DateTime<Utc>) {
        let key = format!("power-failures:{host}");
        let mut streak: FailureStreak = match self.fleet.store.get_state(&key).await {
            Ok(Some(v)) => serde_json::from_value(v).unwrap_or_default(),
            Ok(None) => FailureStreak::default(),
            Err(e) => {
                tracing::warn!(host, error = %e, "cannot read the failure streak");
                return;
            }
        };
        match error {
            None if streak.count == 0 => return,
            None => streak = FailureStreak::default(),
            Some(_) => {
                streak.count += 1;
                streak.since.get_or_insert(now);
            }
        }
        let value = serde_json::to_value(&streak).expect("a streak serializes");
        if let Err(e) = self.fleet.store.put_state(&key, &value).await {
            tracing::warn!(host, error = %e, "cannot store the failure streak");
        }
        if let (Some(err), Some(since)) = (error, streak.since) {
            if streak.count >= self.fleet.policy.failures_before_alert {
                let alert_key = format!("alert:power-failing:{host}:{}", since.to_rfc3339());
                let text = format!(
                    "Janus host {host}: {action} failed {} runs in a row since {}: {err}",
                    streak.count,
                    since.to_rfc3339()
                );
                self.alert(&alert_key, &text, Some(host), None, now).await;
            }
        }
    }

    /// Janus answers, then the sessions layer opens the session rooms of the host's bookings
    /// whose window is open (marking them ready) and closes every room the host should not hold.
    async fn make_ready(&self, input: &HostInput<'_>, report: &mut HostReport) {
        let Some(host) = self.fleet.janus_host(&input.plan.name) else { return };
        if let Err(e) = self.fleet.janus.answers(host).await {
            tracing::warn!(host = %host.name, error = %e, "running host does not answer yet");
            return;
        }
        report.janus_ok = true;
        if let Err(e) = self.fleet.boot_answered(&host.name, self.fleet.clock.now()).await {
            tracing::warn!(host = %host.name, error = %e, "cannot record the end of a boot");
        }
        let kept = self.sessions.converge(host, &input.bookings, input.all, input.assignments, input.now).await;
        report.made_ready.extend(kept.opened.iter().chain(&kept.marked_ready).copied());
        report.not_ready.extend(kept.not_ready);
        report.closed.extend(kept.closed);
        for e in kept.errors {
            tracing::warn!(host = %host.name, error = %e, "session rooms not fully converged; the next run retries");
        }
    }

    /// A host that is off holds no rooms: its assignments are no longer ready, and nobody is
    /// in its sessions any more.
    async fn forget_ready(&self, input: &HostInput<'_>) {
        self.sessions.host_stopped(&input.plan.name, &input.bookings, input.assignments, input.now).await;
        for b in &input.bookings {
            if let Some(a) = input.assignments.get(&b.id) {
                if a.host == input.plan.name && a.ready_at.is_some() {
                    let a = Assignment { ready_at: None, ..a.clone() };
                    if let Err(e) = self.fleet.store.put_assignment(&a).await {
                        tracing::warn!(booking = %b.id, error = %e, "cannot clear readiness");
                    }
                }
            }
        }
    }

    /// Capacity short and bookings not ready in time, each once.
    async fn raise_alerts(
        &self,
        now: DateTime<Utc>,
        warnings: &[Warning],
        bookings: &[Booking],
        before: &HashMap<Uuid, Assignment>,
        inputs: &PlanInputs,
        report: &mut ReconcileReport,
    ) {
        let by_id: HashMap<Uuid, &Booking> = bookings.iter().map(|b| (b.id, b)).collect();
        let mut raised = Vec::new();
        for w in warnings {
            let (key, text, booking) = match w {
                Warning::NoCapacity { booking } => match by_id.get(booking) {
                    Some(b) if b.slot.end() > now => (
                        format!("alert:capacity:{booking}"),
                        format!(
                            "no Janus host has capacity for booking {booking} ({} to {})",
                            b.slot.start().to_rfc3339(),
                            b.slot.end().to_rfc3339()
                        ),
                        *booking,
                    ),
                    _ => continue,
                },
                Warning::OverCapacity { booking, host } => (
                    format!("alert:over-capacity:{booking}"),
                    format!("booking {booking} overloads Janus host {host} beyond its capacity"),
                    *booking,
                ),
                _ => continue,
            };
            if self.alert(&key, &text, None, Some(booking), now).await {
                raised.push(key);
            }
        }
        let made_ready: BTreeSet<Uuid> = report.hosts.iter().flat_map(|h| h.made_ready.iter().copied()).collect();
        let policy = &self.fleet.policy;
        for b in bookings {
            // A session that ended early has its host off on purpose.
            if made_ready.contains(&b.id) || inputs.released.contains_key(&b.id) {
                continue;
            }
            let Some(a) = before.get(&b.id) else { continue }; // unassigned: the capacity alert covers it
            // A host with a short learned lead starts late on purpose: alert only past its tolerance.
            let lead = inputs.leads.get(&a.host).copied().unwrap_or(policy.plan.lead);
            let soon = policy.ready_alert_before.min(lead - policy.plan.start_tolerance);
            if !(b.slot.start() - soon <= now && now < b.slot.end()) {
                continue;
            }
            if a.ready_at.is_some() && report.host(&a.host).is_some_and(|h| h.janus_ok) {
                continue;
            }
            let key = format!("alert:not-ready:{}", b.id);
            let text = format!(
                "Janus host {} is not ready for booking {} (room {}) starting at {}",
                a.host,
                b.id,
                b.room_id,
                b.slot.start().to_rfc3339()
            );
            if self.alert(&key, &text, Some(&a.host), Some(b.id), now).await {
                raised.push(key);
            }
        }
        report.alerts.extend(raised);
    }

    /// Raises an alert once and logs it; true when raised now.
    async fn alert(
        &self,
        key: &str,
        text: &str,
        host: Option<&str>,
        booking: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> bool {
        let started = Instant::now();
        let (raised, result) = match self.alerts.raise(key, text, now).await {
            Ok(AlertOutcome::AlreadyRaised) => return false,
            Ok(AlertOutcome::Raised) => (true, "ok".to_string()),
            Err(e) => (true, e.to_string()),
        };
        self.log(
            now,
            OpAction::Alert,
            host,
            booking,
            None,
            format!("{result}: {text}"),
            started.elapsed().as_millis() as u64,
        )
        .await;
        raised
    }

    #[allow(clippy::too_many_arguments)]
    async fn log(
        &self,
        at: DateTime<Utc>,
        action: OpAction,
        host: Option<&str>,
        booking_id: Option<Uuid>,
        room_id: Option<RoomId>,
        result: String,
        duration_ms: u64,
    ) {
        let op = Operation {
            id: Uuid::new_v4(),
            at,
            actor: ACTOR.into(),
            action,
            host: host.map(str::to_string),
            booking_id,
            room_id,
            result,
            duration_ms,
        };
        if let Err(e) = self.fleet.store.append_operation(&op).await {
            tracing::error!(error = %e, action = %action, "cannot write the operations log");
        }
    }
}
