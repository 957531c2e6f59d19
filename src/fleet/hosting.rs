//! [`PlannedHosting`]: the [`RoomHosting`] the API uses when hosts are switched on and off
//! (`FLEET=local`, `FLEET=azure`). It follows the plan the reconciler stored:
//!
//! - A room is served by the hosts assigned to its live bookings ([`Store::assignments`]); a
//!   room with no assigned live booking by its default host (`room_id % hosts`).
//! - `materialize` applies the room to each of those hosts that is RUNNING now; a host that is
//!   off gets nothing and `Ok` is returned: the change waits in the store and the reconciler
//!   materializes the room when it starts the host, before the join window opens.
//! - `destroy` removes the room from every running host (a host that is off lost its
//!   non-permanent rooms when it stopped).
//! - `join` answers with the booking's assigned host, or `NotReady` (503 + `Retry-After`) while
//!   that host is not running. A booking the reconciler has not assigned yet is served by the
//!   default host when it runs, and that choice is stored, so the planner keeps it (sticky).
//!
//! [`Store::assignments`]: crate::store::Store::assignments

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    FleetError, HostHealth, JoinGrant, Participant, RoomHosting, control::Fleet, janus_hosts::JanusHost,
    power::PowerState,
};
use crate::{
    domain::{Booking, Room},
    store::{Assignment, StoreError},
};

/// How long a client is told to wait when its host is off or starting: about one reconciler
/// tick (the timer runs every minute) for a local host, a VM boot takes a few of them.
pub const NOT_READY_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Room hosting that follows the fleet's plan. See the module docs.
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

    async fn running(&self, host: &str) -> bool {
        match self.fleet.power.power_state(host).await {
            Ok(s) => s == PowerState::Running,
            Err(e) => {
                tracing::warn!(host, error = %e, "power state unknown; treating the host as off");
                false
            }
        }
    }

    /// Hosts serving the room's live bookings that end after now, in booking order; the
    /// default host when none is assigned.
    async fn serving(&self, room: &Room) -> Result<Vec<&JanusHost>, FleetError> {
        let now = self.fleet.clock.now();
        let bookings = match self.fleet.store.room_bookings(room.id, now).await {
            Ok(b) => b,
            // The room is being created or deleted: only its default host can hold it.
            Err(StoreError::NotFound) => vec![],
            Err(e) => return Err(store_unavailable(e)),
        };
        let ids: Vec<_> = bookings.iter().map(|b| b.id).collect();
        let assigned = if ids.is_empty() {
            vec![]
        } else {
            self.fleet.store.assignments(&ids).await.map_err(store_unavailable)?
        };
        let mut seen = BTreeSet::new();
        let mut hosts = Vec::new();
        for b in &bookings {
            if let Some(a) = assigned.iter().find(|a| a.booking_id == b.id) {
                if let Some(h) = self.fleet.janus_host(&a.host) {
                    if seen.insert(h.name.clone()) {
                        hosts.push(h);
                    }
                }
            }
        }
        if hosts.is_empty() {
            hosts.push(self.fleet.default_host(room.id));
        }
        Ok(hosts)
    }
}

#[async_trait]
impl RoomHosting for PlannedHosting {
    /// Creates or edits the room on every running serving host, concurrently; the first Janus
    /// failure is returned (the API then rolls the store back). Hosts that are off are skipped.
    async fn materialize(&self, room: &Room) -> Result<(), FleetError> {
        let hosts = self.serving(room).await?;
        let applies = hosts.into_iter().map(|h| async move {
            if self.running(&h.name).await {
                self.fleet.janus.materialize_on(h, room).await
            } else {
                tracing::info!(host = %h.name, room = %room.id, "host is off; the room waits for the reconciler");
                Ok(())
            }
        });
        futures::future::join_all(applies).await.into_iter().collect()
    }

    /// Destroys the room on every running host: on the serving hosts it must succeed, on the
    /// others it is best effort (an older plan may have put it there).
    async fn destroy(&self, room: &Room) -> Result<(), FleetError> {
        let serving: BTreeSet<String> = self.serving(room).await?.into_iter().map(|h| h.name.clone()).collect();
        let all = self.fleet.janus.hosts().iter().map(|h| async move {
            let r = if self.running(&h.name).await { self.fleet.janus.destroy_on(h, room).await } else { Ok(()) };
            (h, r)
        });
        let mut first_error = None;
        for (h, r) in futures::future::join_all(all).await {
            if let Err(e) = r {
                if serving.contains(&h.name) {
                    first_error.get_or_insert(e);
                } else {
                    tracing::warn!(host = %h.name, error = %e, "could not check a non-serving host for the room");
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Participants on the room's first serving host; a host that is off has none.
    async fn participants(&self, room: &Room) -> Result<Vec<Participant>, FleetError> {
        let host = self.serving(room).await?.remove(0);
        if !self.running(&host.name).await {
            return Ok(vec![]);
        }
        self.fleet.janus.participants_on(host, room).await
    }

    /// The booking's assigned host (or, unassigned, the default host, then stored as its
    /// assignment). `NotReady` while that host is not running. A host that runs but has not
    /// been marked ready for the booking gets the room materialized first.
    async fn join(&self, room: &Room, booking: &Booking, expires_at: DateTime<Utc>) -> Result<JoinGrant, FleetError> {
        let assigned = self.fleet.store.assignments(&[booking.id]).await.map_err(store_unavailable)?.pop();
        let host = match assigned.as_ref().and_then(|a| self.fleet.janus_host(&a.host)) {
            Some(h) => h,
            None => self.fleet.default_host(room.id),
        };
        if !self.running(&host.name).await {
            return Err(FleetError::NotReady { retry_after: NOT_READY_RETRY_AFTER });
        }
        let ready = assigned.as_ref().is_some_and(|a| a.host == host.name && a.ready_at.is_some());
        if !ready {
            self.fleet.janus.materialize_on(host, room).await?;
            let a =
                Assignment { booking_id: booking.id, host: host.name.clone(), ready_at: Some(self.fleet.clock.now()) };
            self.fleet.store.put_assignment(&a).await.map_err(store_unavailable)?;
        }
        Ok(self.fleet.janus.grant(host, expires_at))
    }

    /// `ok` for running hosts whose Janus answers; `unavailable` otherwise (a host switched off
    /// to save cost is `unavailable` too).
    async fn health(&self) -> Vec<HostHealth> {
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
