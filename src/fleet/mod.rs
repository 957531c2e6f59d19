//! Janus hosts: which host serves a booking's session, the Janus operations on a host, live
//! participants, join grants, and (with the scheduler) switching hosts on and off.
//!
//! The sessions layer ([`crate::sessions`]) talks to the fleet through
//! [`hosting::PlannedHosting`] (which running host serves a booking) and
//! [`janus_hosts::JanusHosts`] (Janus operations on one host). The scheduler part:
//! [`control::Fleet`] (hosts, power, policy, overrides, plan loading), [`planner`] (pure),
//! [`reconciler`] (the every-minute timer that acts; it asks a [`SessionKeeper`] to open and
//! close the sessions of each running host), [`boots`] (each host's learned lead time),
//! [`alerts`] (the operators' webhook).
//! Power backends ([`power::PowerControl`]): [`local::LocalPower`] (local Janus processes),
//! [`power::StaticPower`] (always on), [`azure::AzurePower`] (Azure VMs); the API reads them
//! through [`power_cache::CachedPower`], so a burst of requests is not a burst of ARM calls.

pub mod alerts;
pub mod azure;
pub mod boots;
pub mod control;
pub mod hosting;
pub mod janus_hosts;
pub mod local;
pub mod planner;
pub mod power;
pub mod power_cache;
pub mod reconciler;
pub mod usage;

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{domain::Booking, store::Assignment};
use janus_hosts::JanusHost;

/// Why a fleet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The host cannot be reached or timed out: the API answers 503.
    #[error("Janus host unavailable: {0}")]
    Unavailable(String),
    /// Janus answered with an error we did not expect: the API answers 502.
    #[error("Janus refused the request: {0}")]
    Janus(String),
    /// The session's host is switched off or still starting: the API answers 503 with `Retry-After`.
    #[error("Janus host not ready")]
    NotReady { retry_after: std::time::Duration },
}

/// A participant in a live room, as Janus lists it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Participant {
    /// Janus's participant id.
    pub id: u64,
    /// The name the participant joined with.
    pub display: Option<String>,
    /// True while the participant sends media.
    pub publisher: bool,
}

/// What a client needs to join one session's room on its Janus host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JoinGrant {
    /// Janus HTTP API URL for clients (`.../janus`).
    pub http_url: String,
    /// Janus WebSocket URL for clients.
    pub ws_url: String,
    /// The core token: opens a Janus session and attaches the VideoRoom plugin.
    pub token: String,
    /// The room token: admits a `join` to this session's room only.
    pub room_token: String,
    pub token_expires_at: DateTime<Utc>,
}

/// Health of one Janus host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostHealth {
    pub name: String,
    /// `ok` or `unavailable`.
    pub janus: &'static str,
}

/// What one [`SessionKeeper::converge`] did on a host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeeperReport {
    /// Bookings whose session room was created on the host in this run.
    pub opened: Vec<Uuid>,
    /// Bookings whose session room was already there and are now marked ready.
    pub marked_ready: Vec<Uuid>,
    /// Bookings whose room could not be created, with the error.
    pub not_ready: Vec<(Uuid, String)>,
    /// Janus rooms destroyed on the host (session ended, cancelled, rotated, or unknown).
    pub closed: Vec<u64>,
    /// What could not be done (the host's room list, a destroy that failed: retried next run).
    pub errors: Vec<String>,
}

/// The sessions layer as the reconciler sees it: it makes one RUNNING host hold exactly the
/// session rooms it should. Implemented by [`crate::sessions::Sessions`]; the reconciler calls
/// it once per run for each running host whose Janus answers.
#[async_trait]
pub trait SessionKeeper: Send + Sync + 'static {
    /// Opens the sessions of `serving` (the live bookings planned on `host`) whose join window is
    /// open and not yet closed, and destroys every other room `host` holds. `bookings` are all
    /// the live bookings the reconciler read (so most rooms need no store read), `assignments`
    /// where each is served. Idempotent; never fails as a whole (see [`KeeperReport`]).
    async fn converge(
        &self,
        host: &JanusHost,
        serving: &[&Booking],
        bookings: &[Booking],
        assignments: &HashMap<Uuid, Assignment>,
        now: DateTime<Utc>,
    ) -> KeeperReport;

    /// `host` is off (deallocated, or found off): nobody can be in the session rooms it held.
    /// `serving` are its planned bookings; the ones assigned there whose records still have
    /// someone in a room get those presences ended at `now`. Never fails (errors are logged).
    async fn host_stopped(
        &self,
        host: &str,
        serving: &[&Booking],
        assignments: &HashMap<Uuid, Assignment>,
        now: DateTime<Utc>,
    );
}
