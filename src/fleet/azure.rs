//! Azure VMs as Janus hosts: start, deallocate and read the power state through Azure Resource
//! Manager, as [`PowerControl`] ([`AzurePower`]).
//!
//! - Calls: `azure_mgmt_compute` 0.21 (`virtual_machines().start / deallocate / instance_view`,
//!   api-version 2024-07-01) sends the three ARM requests. That crate does not poll long-running
//!   operations, so [`AzurePower`] polls the `Azure-AsyncOperation` URL (or `Location` when only
//!   that is given) itself with plain `reqwest` and the same credential, honouring `Retry-After`,
//!   until `Succeeded`/`Failed`/`Canceled` or the overall deadline.
//!   The polling URL must have the same origin as the ARM endpoint: the bearer token is never
//!   sent anywhere else.
//! - A poll answered 401/403 does not mean the operation failed: reading its status needs
//!   `Microsoft.Compute/locations/operations/read` at resource-group scope, which the VM-scoped
//!   role lacks. The outcome is then unknown, and [`AzurePower`] confirms it with the VM's
//!   instance view (until the VM reaches the target state or the deadline passes).
//! - Retries: 409 (the VM is changing state), 429 and 5xx, and network errors are retried with
//!   bounded exponential backoff ([`AzureOptions`]). The crate hides the headers of failed
//!   responses, so a 429 on the three ARM calls is retried on the backoff schedule rather than its
//!   `Retry-After`; polls honour `Retry-After` exactly (capped by `max_poll_interval`).
//! - Credentials: `azure_mgmt_compute` wants an `azure_core` 0.21 `TokenCredential`;
//!   [`LegacyCredential`] adapts an `azure_identity` 1.x credential to it. In Azure use
//!   [`managed_identity`]; tests inject a fake credential.
//!
//! Least privilege: the function app's managed identity needs only a custom role on each Janus VM
//! with `Microsoft.Compute/virtualMachines/read`,
//! `Microsoft.Compute/virtualMachines/instanceView/read`, `Microsoft.Compute/virtualMachines/start/action`
//! and `Microsoft.Compute/virtualMachines/deallocate/action`, plus
//! `Microsoft.Compute/locations/operations/read` at resource-group scope to follow the
//! operations (infra/main.bicep). Not Contributor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core_legacy::error::ErrorKind;
use azure_core_legacy::headers::{AZURE_ASYNCOPERATION, LOCATION, RETRY_AFTER};
use azure_mgmt_compute::Client as ComputeClient;
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use super::power::{PermanentCause, PowerControl, PowerError, PowerOutcome, PowerState, TransientCause};
use crate::config::HostConfig;

/// The ARM endpoint of the public Azure cloud.
pub const ARM_ENDPOINT: &str = "https://management.azure.com";
/// The token scope for ARM.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";

/// Adapts an `azure_identity` 1.x credential (azure_core 1.x) to the azure_core 0.21
/// `TokenCredential` that `azure_mgmt_compute` takes. Tokens are cached by the inner credential.
#[derive(Debug, Clone)]
pub struct LegacyCredential(pub Arc<dyn azure_core::credentials::TokenCredential>);

#[async_trait]
impl azure_core_legacy::auth::TokenCredential for LegacyCredential {
    async fn get_token(&self, scopes: &[&str]) -> azure_core_legacy::Result<azure_core_legacy::auth::AccessToken> {
        let token = self
            .0
            .get_token(scopes, None)
            .await
            .map_err(|e| azure_core_legacy::Error::full(ErrorKind::Credential, e, "getting an ARM token"))?;
        Ok(azure_core_legacy::auth::AccessToken::new(
            azure_core_legacy::auth::Secret::new(token.token.secret().to_owned()),
            token.expires_on,
        ))
    }

    async fn clear_cache(&self) -> azure_core_legacy::Result<()> {
        Ok(())
    }
}

/// The production credential: the app's managed identity (App Service identity endpoint from
/// `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, else the VM metadata service). Never call it in tests.
pub fn managed_identity() -> azure_core::Result<Arc<dyn azure_core::credentials::TokenCredential>> {
    Ok(azure_identity::ManagedIdentityCredential::new(None)?)
}

/// One Azure VM serving as a Janus host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureVm {
    pub resource_group: String,
    pub vm_name: String,
}

/// Endpoint, retry and polling settings of [`AzurePower`].
#[derive(Debug, Clone)]
pub struct AzureOptions {
    /// ARM endpoint (default [`ARM_ENDPOINT`]); tests point it at a loopback fake.
    pub endpoint: Url,
    /// Attempts per ARM request, counting the first (default 5).
    pub max_attempts: u32,
    /// First backoff delay; doubles per attempt (default 2 s).
    pub base_delay: Duration,
    /// Longest backoff delay (default 30 s).
    pub max_delay: Duration,
    /// Poll interval when the server gives no `Retry-After` (default 10 s).
    pub poll_interval: Duration,
    /// Longest wait between polls, whatever `Retry-After` says (default 60 s).
    pub max_poll_interval: Duration,
    /// Overall time budget of one start or deallocate, retries and polling included (default
    /// 4 min, under the Functions timer timeout of 5 min).
    pub deadline: Duration,
    /// Per-request timeout of the polls (default 30 s).
    pub request_timeout: Duration,
}

impl Default for AzureOptions {
    fn default() -> Self {
        Self {
            endpoint: Url::parse(ARM_ENDPOINT).expect("constant URL"),
            max_attempts: 5,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(30),
            poll_interval: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(60),
            deadline: Duration::from_secs(240),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Why an [`AzurePower`] could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum AzureConfigError {
    #[error("host {host:?} has no resource_group or vm_name")]
    MissingVm { host: String },
    #[error("could not build the ARM client")]
    Client(#[source] azure_core_legacy::Error),
    #[error("could not build the HTTP client")]
    Http(#[source] reqwest::Error),
}

/// Azure VMs switched through ARM. Cheap to share (`Arc` it); calls for different hosts run
/// concurrently and do not affect each other.
pub struct AzurePower {
    compute: ComputeClient,
    http: reqwest::Client,
    credential: LegacyCredential,
    subscription_id: String,
    vms: BTreeMap<String, AzureVm>,
    options: AzureOptions,
}

impl std::fmt::Debug for AzurePower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzurePower")
            .field("subscription_id", &self.subscription_id)
            .field("vms", &self.vms)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

enum Op {
    Start,
    Deallocate,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Deallocate => "deallocate",
        }
    }

    /// The power state the operation ends in.
    fn target(&self) -> PowerState {
        match self {
            Op::Start => PowerState::Running,
            Op::Deallocate => PowerState::Deallocated,
        }
    }
}

#[derive(Deserialize)]
struct OperationStatus {
    status: String,
    #[serde(default)]
    error: Option<OperationError>,
}

#[derive(Deserialize)]
struct OperationError {
    code: Option<String>,
    message: Option<String>,
}

/// What a poll found.
enum Poll {
    Done,
    InProgress(Option<Duration>),
}

impl AzurePower {
    /// A backend for `vms` (host name → VM) in `subscription_id`. Builds clients only; no I/O.
    pub fn new(
        credential: Arc<dyn azure_core::credentials::TokenCredential>,
        subscription_id: impl Into<String>,
        vms: impl IntoIterator<Item = (String, AzureVm)>,
        options: AzureOptions,
    ) -> Result<Self, AzureConfigError> {
        let credential = LegacyCredential(credential);
        let compute = ComputeClient::builder(Arc::new(credential.clone()))
            .endpoint(options.endpoint.clone())
            .scopes(&[ARM_SCOPE])
            // Retries are ours: the crate's policy neither retries 409 nor reports its attempts.
            .retry(azure_core_legacy::RetryOptions::none())
            .build()
            .map_err(AzureConfigError::Client)?;
        let http = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(AzureConfigError::Http)?;
        Ok(Self {
            compute,
            http,
            credential,
            subscription_id: subscription_id.into(),
            vms: vms.into_iter().collect(),
            options,
        })
    }

    /// A backend for the configured hosts (`JANUS_HOSTS` with `resource_group` and `vm_name`).
    /// Fails with [`AzureConfigError::MissingVm`] when a host lacks either.
    pub fn from_hosts(
        credential: Arc<dyn azure_core::credentials::TokenCredential>,
        subscription_id: impl Into<String>,
        hosts: &[HostConfig],
        options: AzureOptions,
    ) -> Result<Self, AzureConfigError> {
        let vms = hosts
            .iter()
            .map(|h| match (&h.resource_group, &h.vm_name) {
                (Some(rg), Some(vm)) => {
                    Ok((h.name.clone(), AzureVm { resource_group: rg.clone(), vm_name: vm.clone() }))
                }
                _ => Err(AzureConfigError::MissingVm { host: h.name.clone() }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(credential, subscription_id, vms, options)
    }

    fn vm(&self, host: &str) -> Result<&AzureVm, PowerError> {
        self.vms.get(host).ok_or_else(|| PowerError::UnknownHost(host.to_string()))
    }

    fn vms_client(&self) -> azure_mgmt_compute::virtual_machines::Client {
        self.compute.virtual_machines_client()
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.options.base_delay.saturating_mul(1u32 << attempt.min(16)).min(self.options.max_delay)
    }

    /// Runs `call` until it succeeds, fails permanently, or runs out of attempts or time.
    async fn with_retries<T, F, Fut>(
        &self,
        host: &str,
        what: &'static str,
        deadline: Instant,
        mut call: F,
    ) -> Result<T, PowerError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PowerError>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Err(e @ PowerError::Transient { .. }) if attempt + 1 < self.options.max_attempts => {
                    let delay = self.backoff(attempt);
                    if Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    tracing::warn!(host, what, attempt, error = %e, delay_ms = delay.as_millis() as u64, "retrying ARM request");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Sends start or deallocate once and returns the polling URL, if the operation is async.
    async fn send_op(&self, host: &str, vm: &AzureVm, op: &Op) -> Result<(Option<Url>, Option<Duration>), PowerError> {
        let c = self.vms_client();
        let sub = self.subscription_id.clone();
        let result = match op {
            Op::Start => c.start(&vm.resource_group, &vm.vm_name, sub).send().await.map(|r| r.into_raw_response()),
            Op::Deallocate => {
                c.deallocate(&vm.resource_group, &vm.vm_name, sub).send().await.map(|r| r.into_raw_response())
            }
        };
        let rsp = result.map_err(|e| classify_legacy(host, &e))?;
        let headers = rsp.headers();
        let poll = match headers.get_optional_str(&AZURE_ASYNCOPERATION).or_else(|| headers.get_optional_str(&LOCATION))
        {
            Some(u) => Some(self.same_origin(host, u)?),
            None => None,
        };
        let retry_after = headers.get_optional_str(&RETRY_AFTER).and_then(parse_retry_after);
        tracing::info!(
            host,
            op = op.name(),
            status = u16::from(rsp.status()),
            polling = poll.is_some(),
            "ARM accepted the operation"
        );
        Ok((poll, retry_after))
    }

    /// The polling URL, if it is on the ARM endpoint's origin (the bearer token goes there).
    fn same_origin(&self, host: &str, raw: &str) -> Result<Url, PowerError> {
        let u = Url::parse(raw).map_err(|_| malformed(host, "polling URL"))?;
        if u.origin() != self.options.endpoint.origin() {
            return Err(malformed(host, "polling URL outside the ARM endpoint"));
        }
        Ok(u)
    }

    async fn poll_once(&self, host: &str, url: &Url) -> Result<Poll, PowerError> {
        use azure_core_legacy::auth::TokenCredential as _;
        let token = self.credential.get_token(&[ARM_SCOPE]).await.map_err(|e| classify_legacy(host, &e))?;
        let rsp = self
            .http
            .get(url.clone())
            .bearer_auth(token.token.secret())
            .send()
            .await
            .map_err(|_| transient(host, TransientCause::Network, self.options.base_delay))?;
        let status = rsp.status().as_u16();
        let retry_after = rsp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        if !(200..300).contains(&status) {
            return Err(classify_status(host, status, None, retry_after));
        }
        // A `Location` poll answers 202 while running and 200 when done; an
        // `Azure-AsyncOperation` poll always answers 200 with the status in the body.
        if status == 202 {
            return Ok(Poll::InProgress(retry_after));
        }
        let body = rsp.bytes().await.map_err(|_| transient(host, TransientCause::Network, self.options.base_delay))?;
        let Ok(op) = serde_json::from_slice::<OperationStatus>(&body) else {
            // A finished `Location` poll returns the resource (or nothing), not a status.
            return Ok(Poll::Done);
        };
        match op.status.as_str() {
            "Succeeded" => Ok(Poll::Done),
            "Failed" | "Canceled" => {
                let (code, message) = op.error.map(|e| (e.code, e.message)).unwrap_or((None, None));
                Err(PowerError::Permanent {
                    host: host.to_string(),
                    cause: PermanentCause::OperationFailed { status: op.status, code, message },
                })
            }
            _ => Ok(Poll::InProgress(retry_after)),
        }
    }

    #[tracing::instrument(skip(self), fields(op = op.name()))]
    async fn run_op(&self, host: &str, op: Op) -> Result<PowerOutcome, PowerError> {
        let vm = self.vm(host)?;
        let deadline = Instant::now() + self.options.deadline;
        let (poll_url, mut wait) = self.with_retries(host, op.name(), deadline, || self.send_op(host, vm, &op)).await?;
        let Some(url) = poll_url else {
            return Ok(PowerOutcome::Done);
        };
        loop {
            let delay = wait.unwrap_or(self.options.poll_interval).min(self.options.max_poll_interval);
            if Instant::now() + delay > deadline {
                tracing::warn!(host, "operation still in progress at the deadline");
                return Err(transient(host, TransientCause::StillInProgress, self.options.poll_interval));
            }
            tokio::time::sleep(delay).await;
            match self.with_retries(host, "poll", deadline, || self.poll_once(host, &url)).await {
                Ok(Poll::Done) => {
                    tracing::info!(host, "operation succeeded");
                    return Ok(PowerOutcome::Done);
                }
                Ok(Poll::InProgress(next)) => wait = next,
                Err(PowerError::Permanent { cause: PermanentCause::Denied { status }, .. }) => {
                    // ARM accepted the operation; only its status is out of reach.
                    tracing::warn!(
                        host,
                        status,
                        "cannot read the operation's status (needs Microsoft.Compute/locations/operations/read \
                         at resource-group scope); confirming with the instance view"
                    );
                    return self.confirm_with_instance_view(host, vm, &op, deadline).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until the instance view shows the operation's target state: `Done` then, or
    /// [`TransientCause::StillInProgress`] at the deadline (the next reconcile looks again).
    async fn confirm_with_instance_view(
        &self,
        host: &str,
        vm: &AzureVm,
        op: &Op,
        deadline: Instant,
    ) -> Result<PowerOutcome, PowerError> {
        loop {
            let state = self.instance_state(host, vm, deadline).await?;
            if state == op.target() {
                tracing::info!(host, ?state, "operation confirmed by the instance view");
                return Ok(PowerOutcome::Done);
            }
            if Instant::now() + self.options.poll_interval > deadline {
                tracing::warn!(host, ?state, "instance view not in the target state at the deadline");
                return Err(transient(host, TransientCause::StillInProgress, self.options.poll_interval));
            }
            tokio::time::sleep(self.options.poll_interval).await;
        }
    }

    /// The `PowerState/...` status of the VM's instance view, retried like the operations.
    async fn instance_state(&self, host: &str, vm: &AzureVm, deadline: Instant) -> Result<PowerState, PowerError> {
        let view = self
            .with_retries(host, "instance view", deadline, || async {
                self.vms_client()
                    .instance_view(&vm.resource_group, &vm.vm_name, self.subscription_id.clone())
                    .await
                    .map_err(|e| classify_legacy(host, &e))
            })
            .await?;
        Ok(view
            .statuses
            .iter()
            .filter_map(|s| s.code.as_deref()?.strip_prefix("PowerState/"))
            .map(parse_power_state)
            .next()
            .unwrap_or(PowerState::Unknown))
    }
}

#[async_trait]
impl PowerControl for AzurePower {
    /// The `PowerState/...` status of the VM's instance view; retried like the operations.
    async fn power_state(&self, host: &str) -> Result<PowerState, PowerError> {
        let vm = self.vm(host)?;
        self.instance_state(host, vm, Instant::now() + self.options.deadline).await
    }

    async fn start(&self, host: &str) -> Result<PowerOutcome, PowerError> {
        self.run_op(host, Op::Start).await
    }

    async fn deallocate(&self, host: &str) -> Result<PowerOutcome, PowerError> {
        self.run_op(host, Op::Deallocate).await
    }
}

fn parse_power_state(code: &str) -> PowerState {
    match code {
        "running" => PowerState::Running,
        "starting" => PowerState::Starting,
        // Stopping ends in stopped; both still hold (and bill) the compute.
        "stopped" | "stopping" => PowerState::Stopped,
        "deallocating" => PowerState::Deallocating,
        "deallocated" => PowerState::Deallocated,
        _ => PowerState::Unknown,
    }
}

/// `Retry-After` as delta-seconds (what ARM sends); HTTP dates are ignored.
fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn transient(host: &str, cause: TransientCause, retry_after: Duration) -> PowerError {
    PowerError::Transient { host: host.to_string(), cause, retry_after }
}

fn malformed(host: &str, what: &'static str) -> PowerError {
    PowerError::Permanent { host: host.to_string(), cause: PermanentCause::Malformed { what } }
}

fn classify_status(host: &str, status: u16, code: Option<String>, retry_after: Option<Duration>) -> PowerError {
    let hint = retry_after.unwrap_or(Duration::from_secs(30));
    let cause = match status {
        409 => return transient(host, TransientCause::Conflict, hint),
        429 => return transient(host, TransientCause::Throttled, hint),
        408 => return transient(host, TransientCause::Network, hint),
        500..=599 => return transient(host, TransientCause::Server { status }, hint),
        401 | 403 => PermanentCause::Denied { status },
        404 => PermanentCause::NotFound,
        _ => PermanentCause::Refused { status, code },
    };
    PowerError::Permanent { host: host.to_string(), cause }
}

fn classify_legacy(host: &str, e: &azure_core_legacy::Error) -> PowerError {
    match e.kind() {
        ErrorKind::HttpResponse { status, error_code } => {
            classify_status(host, u16::from(*status), error_code.clone(), None)
        }
        ErrorKind::Io => transient(host, TransientCause::Network, Duration::from_secs(30)),
        ErrorKind::Credential => {
            tracing::warn!(host, error = %e, "no ARM token");
            transient(host, TransientCause::Credential, Duration::from_secs(60))
        }
        _ => {
            tracing::warn!(host, error = %e, "unexpected ARM client error");
            malformed(host, "ARM response")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_state_codes_map_to_states() {
        assert_eq!(parse_power_state("running"), PowerState::Running);
        assert_eq!(parse_power_state("deallocated"), PowerState::Deallocated);
        assert_eq!(parse_power_state("stopping"), PowerState::Stopped);
        assert_eq!(parse_power_state("hibernated"), PowerState::Unknown);
    }

    #[test]
    fn statuses_split_into_transient_and_permanent() {
        assert!(classify_status("h", 409, None, None).is_transient());
        assert_eq!(
            classify_status("h", 429, None, Some(Duration::from_secs(7))).retry_after(),
            Some(Duration::from_secs(7))
        );
        assert!(classify_status("h", 503, None, None).is_transient());
        assert_eq!(
            classify_status("h", 403, None, None),
            PowerError::Permanent { host: "h".into(), cause: PermanentCause::Denied { status: 403 } }
        );
    }
}
