//! Switching Janus hosts on and off: the [`PowerControl`] trait every backend keeps, its
//! error type [`PowerError`], and the `static` backend ([`StaticPower`]: always-on hosts).
//!
//! Backends: [`crate::fleet::azure::AzurePower`] (Azure VMs through ARM), [`StaticPower`], and
//! [`crate::fleet::local::LocalPower`] (starts and stops local Janus processes).
//!
//! The contract every backend keeps:
//! - Hosts are named as in the configuration (`JANUS_HOSTS[].name`); an unknown name is
//!   [`PowerError::UnknownHost`] and nothing is touched.
//! - `start` and `deallocate` are idempotent: starting a running host or deallocating a
//!   deallocated one succeeds. They return once the backend reports the operation finished,
//!   or fail with [`PowerError::Transient`] (`StillInProgress`) when it was still running at the
//!   backend's deadline; the next reconcile then sees `Starting`/`Deallocating` and waits.
//! - Failures say whether retrying can help ([`PowerError::Transient`], with a hint of when) or
//!   not ([`PowerError::Permanent`]: fix the configuration or permissions first).

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

/// Power state of a host, as the backend reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    Running,
    Starting,
    /// Stopped but still allocated (Azure still bills the compute); also "stopping".
    Stopped,
    Deallocating,
    Deallocated,
    /// The backend answered with no power state we know.
    Unknown,
}

impl PowerState {
    /// Running or on its way: what the planner counts as an on host ([`super::planner::PlanHost::on`]).
    pub fn is_on(self) -> bool {
        matches!(self, Self::Running | Self::Starting)
    }

    /// True when the backend may be billing compute for the host (anything but deallocated).
    pub fn is_billed(self) -> bool {
        !matches!(self, Self::Deallocated)
    }
}

/// What a successful `start` or `deallocate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerOutcome {
    /// The backend carried the operation out (or found the host already in that state).
    Done,
    /// This backend does not switch hosts (static, always-on): nothing was done.
    NotManaged,
}

/// Why a power operation may succeed if tried again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransientCause {
    #[error("throttled (HTTP 429)")]
    Throttled,
    #[error("the host is changing state (HTTP 409)")]
    Conflict,
    #[error("server error (HTTP {status})")]
    Server { status: u16 },
    #[error("network error")]
    Network,
    #[error("no access token could be obtained")]
    Credential,
    #[error("the operation was still in progress at the deadline")]
    StillInProgress,
    /// A local Janus process exited while starting, did not answer in time, or could not be
    /// spawned or stopped; `detail` names the cause and the host's log file.
    #[error("local Janus process: {detail}")]
    LocalProcess { detail: String },
}

/// Why a power operation will not succeed until something is fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermanentCause {
    #[error("access denied (HTTP {status}): check the role assignment")]
    Denied { status: u16 },
    #[error("no such VM (HTTP 404)")]
    NotFound,
    #[error("request refused (HTTP {status}, code {code:?})")]
    Refused { status: u16, code: Option<String> },
    /// The long-running operation ended `Failed` or `Canceled`.
    #[error("operation ended {status} (code {code:?}: {message:?})")]
    OperationFailed { status: String, code: Option<String>, message: Option<String> },
    #[error("unexpected answer: {what}")]
    Malformed { what: &'static str },
    #[error("host is not configured for this backend: {what}")]
    Misconfigured { what: &'static str },
}

/// Errors of [`PowerControl`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PowerError {
    #[error("unknown host {0:?}")]
    UnknownHost(String),
    /// Worth retrying after `retry_after` (the backend already retried within its bounds).
    #[error("power control of {host} failed for now: {cause} (retry in {retry_after:?})")]
    Transient { host: String, cause: TransientCause, retry_after: Duration },
    #[error("power control of {host} failed: {cause}")]
    Permanent { host: String, cause: PermanentCause },
}

impl PowerError {
    /// True when retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// When to try again, for transient errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Switches hosts on and off. See the module docs for the contract every backend keeps.
#[async_trait]
pub trait PowerControl: Send + Sync + 'static {
    /// The host's current power state. Read-only. May be a few seconds old when the backend is
    /// behind a cache ([`super::power_cache::CachedPower`]).
    async fn power_state(&self, host: &str) -> Result<PowerState, PowerError>;

    /// The host's power state asked of the backend itself, past any cache: what the reconciler
    /// acts on. Backends without a cache answer as [`Self::power_state`].
    async fn fresh_power_state(&self, host: &str) -> Result<PowerState, PowerError> {
        self.power_state(host).await
    }

    /// Switches the host on and waits until the backend reports it running. Idempotent.
    async fn start(&self, host: &str) -> Result<PowerOutcome, PowerError>;

    /// Switches the host off, releasing its compute (no billing), and waits until done. Idempotent.
    async fn deallocate(&self, host: &str) -> Result<PowerOutcome, PowerError>;
}

/// Always-on hosts (`FLEET=static`): every known host is `Running`; `start` and `deallocate`
/// do nothing and answer [`PowerOutcome::NotManaged`].
#[derive(Debug, Clone)]
pub struct StaticPower {
    hosts: BTreeSet<String>,
}

impl StaticPower {
    /// A backend for these host names.
    pub fn new(hosts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { hosts: hosts.into_iter().map(Into::into).collect() }
    }

    fn known(&self, host: &str) -> Result<(), PowerError> {
        if self.hosts.contains(host) { Ok(()) } else { Err(PowerError::UnknownHost(host.to_string())) }
    }
}

#[async_trait]
impl PowerControl for StaticPower {
    async fn power_state(&self, host: &str) -> Result<PowerState, PowerError> {
        self.known(host).map(|_| PowerState::Running)
    }

    async fn start(&self, host: &str) -> Result<PowerOutcome, PowerError> {
        self.known(host).map(|_| PowerOutcome::NotManaged)
    }

    async fn deallocate(&self, host: &str) -> Result<PowerOutcome, PowerError> {
        self.known(host).map(|_| PowerOutcome::NotManaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_hosts_are_always_running_and_never_switched() {
        let p = StaticPower::new(["janus-1"]);
        assert_eq!(p.power_state("janus-1").await, Ok(PowerState::Running));
        assert_eq!(p.start("janus-1").await, Ok(PowerOutcome::NotManaged));
        assert_eq!(p.deallocate("janus-1").await, Ok(PowerOutcome::NotManaged));
        assert_eq!(p.start("other").await, Err(PowerError::UnknownHost("other".into())));
    }
}
