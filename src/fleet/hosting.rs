//! [`PlannedHosting`]: which Janus host serves a booking's session, following the plan the
//! reconciler stored, for every kind of fleet (`FLEET=local`, `static`, `azure`).
//!
//! - A booking is served by its stored assignment ([`Store::assignments`]). A booking the
//!   reconciler has not assigned yet is served by its room's default host (`room_id % hosts`)
//!   when that host runs, and that choice is stored at once, so the planner keeps it (sticky).
//! - [`PlannedHosting::session_host`] answers `NotReady` (503 + `Retry-After`) while the serving
//!   host is not running: the reconciler starts it before the join window opens.
//! - Hosts of `FLEET=static` are always running ([`super::power::StaticPower`]).
//!
//! [`Store::assignments`]: crate::store::Store::assignments

use std::{sync::Arc, time::Duration};

use super::{
    FleetError, HostHealth, control::Fleet, janus_hosts::JanusHost, janus_hosts::JanusHosts, power::PowerState,
};
use crate::{
    domain::Booking,
    store::{Assignment, StoreError},
};

/// How long a client is told to wait when its host is off or starting: about one reconciler
/// tick (the timer runs every minute) for a local host, a VM boot takes a few of them.
pub const NOT_READY_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The running host that serves a booking, and whether its session room is known to be there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingHost {
    pub host: JanusHost,
    /// True when the stored assignment says the session room was made on this host.
    pub ready: bool,
}

/// Session hosting that follows the fleet's plan. See the module docs.
#[derive(Debug, Clone)]
pub struct PlannedHosting {
    fleet: Arc<Fleet>,
}

fn store_unavailable(e: StoreError) -> FleetError {
    FleetError::Unavailable(format!("reading the fleet plan: {e}"))
}

impl PlannedHosting {
    pub fn new(fleet: Arc<Fleet>) -> Self {
        Self { fleet }
    }

    /// The fleet it follows.
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// Janus operations on one host.
    pub fn janus(&self) -> &JanusHosts {
        &self.fleet.janus
    }

    async fn running(&self, host: &str) -> bool {
        if self.fleet.always_on {
            return true;
        }
        match self.fleet.power.power_state(host).await {
            Ok(s) => s == PowerState::Running,
            Err(e) => {
                tracing::warn!(host, error = %e, "power state unknown; treating the host as off");
                false
            }
        }
    }

    /// The running host serving `booking`: its assignment, or (unassigned) its room's default
    /// host, then stored as its assignment. `NotReady` while that host is not running;
    /// `Unavailable` when the store cannot be read.
    pub async fn session_host(&self, booking: &Booking) -> Result<ServingHost, FleetError> {
        let assigned = self.fleet.store.assignments(&[booking.id]).await.map_err(store_unavailable)?.pop();
        let host = match assigned.as_ref().and_then(|a| self.fleet.janus_host(&a.host)) {
            Some(h) => h.clone(),
            None => self.fleet.default_host(booking.room_id).clone(),
        };
        if !self.running(&host.name).await {
            return Err(FleetError::NotReady { retry_after: NOT_READY_RETRY_AFTER });
        }
        if assigned.as_ref().is_none_or(|a| a.host != host.name) {
            let a = Assignment { booking_id: booking.id, host: host.name.clone(), ready_at: None };
            self.fleet.store.put_assignment(&a).await.map_err(store_unavailable)?;
        }
        let ready = assigned.is_some_and(|a| a.host == host.name && a.ready_at.is_some());
        Ok(ServingHost { host, ready })
    }

    /// The host `booking` is assigned to, when it is running: where its session room can be.
    /// `None` when unassigned (nothing was ever made for it) or off (its rooms went with Janus).
    pub async fn assigned_running_host(&self, booking: &Booking) -> Result<Option<JanusHost>, FleetError> {
        let assigned = self.fleet.store.assignments(&[booking.id]).await.map_err(store_unavailable)?.pop();
        let Some(host) = assigned.and_then(|a| self.fleet.janus_host(&a.host).cloned()) else { return Ok(None) };
        Ok(self.running(&host.name).await.then_some(host))
    }

    /// Records that `booking`'s session room is on `host` now.
    pub async fn mark_ready(&self, booking: &Booking, host: &JanusHost) -> Result<(), FleetError> {
        let a = Assignment { booking_id: booking.id, host: host.name.clone(), ready_at: Some(self.fleet.clock.now()) };
        self.fleet.store.put_assignment(&a).await.map_err(store_unavailable)
    }

    /// `ok` for running hosts whose Janus answers; `unavailable` otherwise (a host switched off
    /// to save cost is `unavailable` too). Never fails.
    pub async fn health(&self) -> Vec<HostHealth> {
        let checks = self.fleet.janus.hosts().iter().map(|h| async move {
            let janus = if self.running(&h.name).await && self.fleet.janus.answers(h).await.is_ok() {
                "ok"
            } else {
                "unavailable"
            };
            HostHealth { name: h.name.clone(), janus }
        });
        futures::future::join_all(checks).await
    }
}
