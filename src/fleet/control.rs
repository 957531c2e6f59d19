//! [`Fleet`]: the hosts as one thing the API, the operators' endpoints and the reconciler share:
//! their Janus URLs ([`JanusHosts`]), their power backend ([`PowerControl`]), their capacities,
//! the scheduling policy ([`FleetPolicy`]), operator overrides ([`HostOverride`], kept in the
//! store as `override:{host}`) and a planner entry point that loads its inputs ([`Fleet::plan`]):
//! besides bookings and power states, the sessions that ended early ([`PlanInputs::released`],
//! from the session records, with `FLEET_RELEASE_EARLY`) and each host's learned lead
//! ([`super::boots`]).
//!
//! Nothing here is cached in process memory but the power states the API reads (a few seconds
//! old at most, see [`super::power_cache`]; the reconciler reads them fresh): bookings,
//! assignments and overrides come from the store, so every instance sees the same fleet.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{
    janus_hosts::{JanusHost, JanusHosts},
    planner::{self, CurrentAssignment, Plan, PlanBooking, PlanHost, PlanPolicy},
    power::{PowerControl, PowerError, PowerState},
};
use crate::{
    clock::Clock,
    config::FleetSettings,
    domain::{Booking, TimeSlot},
    store::{Assignment, Store, StoreError},
};
use uuid::Uuid;

/// A host the scheduler may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetHost {
    /// As in `JANUS_HOSTS[].name` (or `local-N`).
    pub name: String,
    /// Concurrent sessions it takes.
    pub capacity: u32,
}

/// How the scheduler runs hosts: the planner's policy plus what only the reconciler knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetPolicy {
    /// Lead, grace, keep-warm and host limit for [`planner::plan`].
    pub plan: PlanPolicy,
    /// An occupied session keeps its host on at most this long after its end.
    pub overrun_limit: Duration,
    /// How far ahead the reconciler plans (bookings starting later are left for later runs).
    pub horizon: Duration,
    /// Alert when a booking's host is not ready this long before the session starts.
    pub ready_alert_before: Duration,
    /// Alert when start or deallocate of a host failed this many runs in a row.
    pub failures_before_alert: u32,
    /// `FLEET_RELEASE_EARLY`: plan a booking whose session ended early as needing its host only
    /// until then.
    pub release_early: bool,
}

/// What the planner takes besides bookings, hosts and power states.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanInputs {
    /// Bookings whose session ended early, with when (empty without `FLEET_RELEASE_EARLY`).
    pub released: HashMap<Uuid, DateTime<Utc>>,
    /// Each host's lead (a host missing here gets the policy's).
    pub leads: BTreeMap<String, Duration>,
}

impl FleetPolicy {
    /// The policy from `FLEET_*` settings; horizon 24 h, ready alert 10 min, 3 failures.
    pub fn from_settings(s: &FleetSettings) -> Self {
        Self {
            plan: PlanPolicy {
                lead: s.lead,
                grace: s.grace,
                keep_warm: s.keep_warm,
                max_hosts: s.max_hosts,
                ..PlanPolicy::default()
            },
            overrun_limit: s.overrun_limit,
            horizon: Duration::hours(24),
            ready_alert_before: Duration::minutes(10),
            failures_before_alert: 3,
            release_early: s.release_early,
        }
    }
}

impl Default for FleetPolicy {
    fn default() -> Self {
        Self::from_settings(&FleetSettings::default())
    }
}

/// What an operator forced on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverrideAction {
    /// Keep the host on (start it if off); the reconciler never deallocates it meanwhile.
    Start,
    /// Keep the host off; the reconciler never starts it and plans no new booking on it. It
    /// deallocates the host even with a booking inside its window (the operator's call; unready
    /// bookings move to other hosts), but never while participants are live in its rooms.
    Deallocate,
}

/// An operator override, stored as JSON under [`HostOverride::key`]:
/// `{"action":"start"|"deallocate","until":RFC3339,"by":user,"at":RFC3339}`. The reconciler
/// follows it while `now < until`, then the plan again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostOverride {
    pub action: OverrideAction,
    pub until: DateTime<Utc>,
    /// The operator's user id.
    pub by: String,
    /// When it was set.
    pub at: DateTime<Utc>,
}

impl HostOverride {
    /// The store state key of `host`'s override.
    pub fn key(host: &str) -> String {
        format!("override:{host}")
    }

    /// True while the reconciler follows it.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        now < self.until
    }
}

/// One host as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostStatus {
    pub name: String,
    pub capacity: u32,
    /// What the power backend says; `None` when it could not be asked (see `power_error`).
    pub power_state: Option<PowerState>,
    pub power_error: Option<String>,
    /// The operator override in force, if any.
    #[serde(rename = "override")]
    pub override_: Option<HostOverride>,
}

/// A plan with what it was made from.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    pub plan: Plan,
    /// The live bookings considered, by start.
    pub bookings: Vec<Booking>,
    /// The stored assignments of those bookings.
    pub assignments: Vec<Assignment>,
    /// Each host's power state when planned (`Unknown` when the backend failed).
    pub power: BTreeMap<String, PowerState>,
    /// Active overrides by host.
    pub overrides: BTreeMap<String, HostOverride>,
}

/// The fleet of Janus hosts. Cheap to share behind an `Arc`.
pub struct Fleet {
    /// Janus by URL: rooms, participants, join grants.
    pub janus: Arc<JanusHosts>,
    /// Switches hosts on and off.
    pub power: Arc<dyn PowerControl>,
    /// Every host, by name.
    pub hosts: Vec<FleetHost>,
    pub policy: FleetPolicy,
    /// `FLEET=static`: hosts are always on and a room is served by `room_id % hosts` (as
    /// [`JanusHosts`] serves it); the reconciler only materializes and marks bookings ready.
    pub always_on: bool,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("hosts", &self.hosts).field("always_on", &self.always_on).finish_non_exhaustive()
    }
}

impl Fleet {
    /// The Janus entry (URLs) of `name`.
    pub fn janus_host(&self, name: &str) -> Option<&JanusHost> {
        self.janus.host(name)
    }

    /// The host a room is served from when no assignment says otherwise (`room_id % hosts`).
    pub fn default_host(&self, room: crate::domain::RoomId) -> &JanusHost {
        self.janus.host_for(room)
    }

    /// Every host's power state asked of the backend itself (past any cache), concurrently: what
    /// the reconciler acts on.
    pub async fn power_states(&self) -> BTreeMap<String, Result<PowerState, PowerError>> {
        let asks =
            self.hosts.iter().map(|h| async move { (h.name.clone(), self.power.fresh_power_state(&h.name).await) });
        futures::future::join_all(asks).await.into_iter().collect()
    }

    /// Every host's power state as the API reads it: from the power cache when it is recent
    /// (see [`super::power_cache`]), concurrently.
    pub async fn recent_power_states(&self) -> BTreeMap<String, Result<PowerState, PowerError>> {
        let asks = self.hosts.iter().map(|h| async move { (h.name.clone(), self.power.power_state(&h.name).await) });
        futures::future::join_all(asks).await.into_iter().collect()
    }

    /// The override of `host` in force at `now` (an expired or unreadable one counts as none).
    pub async fn override_of(&self, host: &str, now: DateTime<Utc>) -> Result<Option<HostOverride>, StoreError> {
        let Some(v) = self.store.get_state(&HostOverride::key(host)).await? else { return Ok(None) };
        match serde_json::from_value::<HostOverride>(v) {
            Ok(o) if o.is_active(now) => Ok(Some(o)),
            Ok(_) => Ok(None),
            Err(e) => {
                tracing::warn!(host, error = %e, "ignoring an unreadable host override");
                Ok(None)
            }
        }
    }

    /// Stores an override for `host` (replacing any). The reconciler follows it from its next run.
    pub async fn set_override(&self, host: &str, o: &HostOverride) -> Result<(), StoreError> {
        let v = serde_json::to_value(o).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.store.put_state(&HostOverride::key(host), &v).await
    }

    /// Each host's power state (recent, see [`Self::recent_power_states`]) and override, for
    /// operators. Never fails on the power backend (its error is reported per host); fails only
    /// when the store does.
    pub async fn host_statuses(&self) -> Result<Vec<HostStatus>, StoreError> {
        let now = self.clock.now();
        let mut states = self.recent_power_states().await;
        let mut out = Vec::with_capacity(self.hosts.len());
        for h in &self.hosts {
            let (power_state, power_error) = match states.remove(&h.name) {
                Some(Ok(s)) => (Some(s), None),
                Some(Err(e)) => (None, Some(e.to_string())),
                None => (None, None),
            };
            out.push(HostStatus {
                name: h.name.clone(),
                capacity: h.capacity,
                power_state,
                power_error,
                override_: self.override_of(&h.name, now).await?,
            });
        }
        Ok(out)
    }

    /// Plans at `now` for the bookings whose host windows overlap `[from, to)`: loads the live
    /// bookings, their assignments, the power states and overrides, then calls
    /// [`planner::plan`]. Read-only: nothing is stored or switched (a dry run).
    pub async fn plan(
        &self,
        now: DateTime<Utc>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<FleetPlan, StoreError> {
        let statuses = self.host_statuses().await?;
        self.plan_from(now, from, to, &statuses).await
    }

    /// [`plan`](Self::plan) on power states and overrides already read by
    /// [`host_statuses`](Self::host_statuses), so a caller that shows both asks each host once.
    /// A host whose power state could not be read counts as `Unknown`. Early releases and
    /// learned leads are loaded as the reconciler loads them ([`Self::plan_inputs`]).
    pub async fn plan_from(
        &self,
        now: DateTime<Utc>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        statuses: &[HostStatus],
    ) -> Result<FleetPlan, StoreError> {
        let window = TimeSlot::new(from - self.policy.plan.grace, to.max(from) + self.policy.plan.lead)
            .map_err(|e| StoreError::Internal(format!("plan window: {e}")))?;
        let bookings = self.store.bookings_between(window).await?;
        let ids: Vec<_> = bookings.iter().map(|b| b.id).collect();
        let assignments = self.store.assignments(&ids).await?;
        let power: BTreeMap<String, PowerState> =
            statuses.iter().map(|st| (st.name.clone(), st.power_state.unwrap_or(PowerState::Unknown))).collect();
        let overrides: BTreeMap<String, HostOverride> =
            statuses.iter().filter_map(|st| st.override_.clone().map(|o| (st.name.clone(), o))).collect();
        let inputs = self.plan_inputs(now, &bookings).await?;
        let plan = self.plan_with(now, &bookings, &assignments, &power, &overrides, &inputs);
        Ok(FleetPlan { plan, bookings, assignments, power, overrides })
    }

    /// The early releases of `bookings` at `now` (from their session records, when
    /// `FLEET_RELEASE_EARLY` is on) and every host's lead.
    pub async fn plan_inputs(&self, now: DateTime<Utc>, bookings: &[Booking]) -> Result<PlanInputs, StoreError> {
        let leads = self.host_leads().await?.into_iter().map(|(h, l)| (h, l.minutes)).collect();
        let mut released = HashMap::new();
        if self.policy.release_early && !self.always_on {
            let started: Vec<&Booking> = bookings.iter().filter(|b| b.slot.start() <= now).collect();
            let ids: Vec<Uuid> = started.iter().map(|b| b.id).collect();
            if !ids.is_empty() {
                let starts: HashMap<Uuid, DateTime<Utc>> = started.iter().map(|b| (b.id, b.slot.start())).collect();
                for r in self.store.session_records(&ids).await? {
                    let Some(start) = starts.get(&r.record.booking_id) else { continue };
                    if let Some(at) = r.record.summary().released_at(*start, now) {
                        released.insert(r.record.booking_id, at);
                    }
                }
            }
        }
        Ok(PlanInputs { released, leads })
    }

    /// The planner on given inputs (pure). A host overridden to `deallocate` takes no new
    /// booking; with `always_on`, every booking is pinned to its default host.
    pub fn plan_with(
        &self,
        now: DateTime<Utc>,
        bookings: &[Booking],
        assignments: &[Assignment],
        power: &BTreeMap<String, PowerState>,
        overrides: &BTreeMap<String, HostOverride>,
        inputs: &PlanInputs,
    ) -> Plan {
        let plan_bookings: Vec<PlanBooking> = bookings
            .iter()
            .map(|b| PlanBooking {
                released: inputs.released.get(&b.id).copied(),
                ..PlanBooking::new(b.id, b.room_id, b.slot)
            })
            .collect();
        let hosts: Vec<PlanHost> = self
            .hosts
            .iter()
            .map(|h| {
                let forced = overrides.get(&h.name).map(|o| o.action);
                PlanHost {
                    name: h.name.clone(),
                    capacity: if forced == Some(OverrideAction::Deallocate) { 0 } else { h.capacity },
                    on: power.get(&h.name).is_some_and(|s| s.is_on()),
                    lead: inputs.leads.get(&h.name).copied(),
                }
            })
            .collect();
        let current: Vec<CurrentAssignment> = if self.always_on {
            bookings
                .iter()
                .map(|b| CurrentAssignment {
                    booking: b.id,
                    host: self.default_host(b.room_id).name.clone(),
                    materialized: true,
                })
                .collect()
        } else {
            assignments
                .iter()
                .map(|a| CurrentAssignment {
                    booking: a.booking_id,
                    host: a.host.clone(),
                    materialized: a.ready_at.is_some(),
                })
                .collect()
        };
        planner::plan(&plan_bookings, &hosts, &current, &self.policy.plan, now)
    }
}
