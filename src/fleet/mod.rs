//! Janus hosts: which host serves a room, making rooms exist there (materialization),
//! live participants, join grants, and (with the scheduler) switching hosts on and off.
//!
//! The API talks to the fleet only through [`RoomHosting`]: [`janus_hosts::JanusHosts`] for
//! always-on hosts, [`hosting::PlannedHosting`] for hosts switched on and off. The scheduler
//! part: [`control::Fleet`] (hosts, power, policy, overrides, plan loading), [`planner`] (pure),
//! [`reconciler`] (the every-minute timer that acts), [`alerts`] (the operators' webhook).
//! Power backends ([`power::PowerControl`]): [`local::LocalPower`] (local Janus processes),
//! [`power::StaticPower`] (always on), [`azure::AzurePower`] (Azure VMs); the API reads them
//! through [`power_cache::CachedPower`], so a burst of requests is not a burst of ARM calls.

pub mod alerts;
pub mod azure;
pub mod control;
pub mod hosting;
pub mod janus_hosts;
pub mod local;
pub mod planner;
pub mod power;
pub mod power_cache;
pub mod reconciler;
pub mod usage;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{Booking, Room};

/// Why a fleet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The host cannot be reached or timed out: the API answers 503.
    #[error("Janus host unavailable: {0}")]
    Unavailable(String),
    /// Janus answered with an error we did not expect: the API answers 502.
    #[error("Janus refused the request: {0}")]
    Janus(String),
    /// The room's host is switched off or still starting: the API answers 503 with `Retry-After`.
    #[error("Janus host not ready")]
    NotReady { retry_after: std::time::Duration },
}

/// A participant in a live room, as Janus lists it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Participant {
    pub id: u64,
    pub display: Option<String>,
    pub publisher: bool,
}

/// What a client needs to join a booked session on its Janus host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JoinGrant {
    /// Janus HTTP API URL for clients (`.../janus`).
    pub http_url: String,
    /// Janus WebSocket URL for clients.
    pub ws_url: String,
    /// A signed Janus token valid for the VideoRoom plugin.
    pub token: String,
    pub token_expires_at: DateTime<Utc>,
}

/// Health of one Janus host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostHealth {
    pub name: String,
    /// `ok` or `unavailable`.
    pub janus: &'static str,
}

/// What the API needs from the Janus side. Every call is idempotent.
#[async_trait]
pub trait RoomHosting: Send + Sync + 'static {
    /// Makes the room exist on the host that serves it, with the room's current password as
    /// the pin (create, or edit when it exists). When that host is switched off the change
    /// waits in the store and `Ok` is returned: the scheduler materializes it later.
    async fn materialize(&self, room: &Room) -> Result<(), FleetError>;

    /// Removes the room from every running host; a room Janus does not know counts as removed.
    async fn destroy(&self, room: &Room) -> Result<(), FleetError>;

    /// Live participants of the room on its host.
    async fn participants(&self, room: &Room) -> Result<Vec<Participant>, FleetError>;

    /// A join grant for the booking's session: host URLs and a token valid until `expires_at`.
    /// `NotReady` when the host serving the booking is not up yet.
    async fn join(&self, room: &Room, booking: &Booking, expires_at: DateTime<Utc>) -> Result<JoinGrant, FleetError>;

    /// Health of each host, without failing.
    async fn health(&self) -> Vec<HostHealth>;
}
