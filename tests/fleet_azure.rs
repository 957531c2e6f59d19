//! The Azure VM power backend against a fake ARM server on 127.0.0.1 that keeps the documented
//! contract: `POST .../virtualMachines/{vm}/start|deallocate` answers 202 with
//! `Azure-AsyncOperation` and `Retry-After`; the operation URL answers `InProgress` and then
//! `Succeeded` (or `Failed`); `GET .../instanceView` lists `PowerState/...`; 409 while the VM
//! is changing state; 429 and 5xx on demand; 403 `AuthorizationFailed` on the operation URL when
//! the caller lacks `Microsoft.Compute/locations/operations/read` at resource-group scope (the VM
//! still changes state, as a real one does). The credential is a fake: no managed identity.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use suroga::fleet::azure::{AzureOptions, AzurePower, AzureVm};
use suroga::fleet::power::{PermanentCause, PowerControl, PowerError, PowerOutcome, PowerState, TransientCause};
use url::Url;
use uuid::Uuid;

const API_VERSION: &str = "2024-07-01";

#[derive(Debug)]
struct FakeCredential {
    token: String,
    scopes: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FakeCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        self.scopes.lock().unwrap().extend(scopes.iter().map(|s| s.to_string()));
        Ok(azure_core::credentials::AccessToken::new(
            azure_core::credentials::Secret::new(self.token.clone()),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

#[derive(Debug, Clone)]
struct Seen {
    method: &'static str,
    path: String,
    api_version: Option<String>,
    authorization: Option<String>,
    at: Instant,
}

struct Operation {
    polls_in_progress: u32,
    outcome: &'static str,
    power_after: &'static str,
}

/// What the fake ARM server does; tests script it before the calls.
struct Arm {
    base: String,
    power: &'static str,
    /// Statuses answered to the next POSTs before one is accepted.
    post_failures: VecDeque<u16>,
    /// `InProgress` answers per operation before its outcome.
    polls_in_progress: u32,
    /// `Succeeded`, `Failed` or `Canceled`.
    outcome: &'static str,
    /// `Retry-After` seconds on 202 and on polls.
    retry_after: u64,
    /// Answer the operation URL with 403: the caller may act on the VM but not follow the operation.
    deny_polls: bool,
    /// With `deny_polls`: instance-view reads that still show the transition before the VM
    /// reaches the operation's end state (the operation goes on whether or not anyone polls).
    view_reads_in_progress: u32,
    /// The operation whose end state the instance view will show: reads left, end state.
    pending: Option<(u32, &'static str)>,
    ops: HashMap<String, Operation>,
    seen: Vec<Seen>,
}

type Shared = Arc<Mutex<Arm>>;

fn record(arm: &mut Arm, method: &'static str, path: String, q: &HashMap<String, String>, h: &HeaderMap) {
    arm.seen.push(Seen {
        method,
        path,
        api_version: q.get("api-version").cloned(),
        authorization: h.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string),
        at: Instant::now(),
    });
}

fn arm_error(status: u16, code: &str) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap(),
        Json(json!({"error": {"code": code, "message": format!("fake ARM answered {status}")}})),
    )
        .into_response();
    if status == 429 {
        r.headers_mut().insert("retry-after", "0".parse().unwrap());
    }
    r
}

async fn vm_action(
    State(arm): State<Shared>,
    Path((sub, rg, vm, action)): Path<(String, String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut arm = arm.lock().unwrap();
    let path =
        format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}/{action}");
    record(&mut arm, "POST", path, &q, &headers);
    if let Some(status) = arm.post_failures.pop_front() {
        let code = match status {
            409 => "OperationNotAllowed",
            429 => "TooManyRequests",
            _ => "InternalServerError",
        };
        return arm_error(status, code);
    }
    let (during, after) = match action.as_str() {
        "start" => ("starting", "running"),
        "deallocate" => ("deallocating", "deallocated"),
        _ => return arm_error(404, "NotFound"),
    };
    arm.power = during;
    if arm.deny_polls {
        arm.pending = Some((arm.view_reads_in_progress, after));
    }
    let id = Uuid::new_v4().to_string();
    let op = Operation { polls_in_progress: arm.polls_in_progress, outcome: arm.outcome, power_after: after };
    arm.ops.insert(id.clone(), op);
    let op_url = format!(
        "{}/subscriptions/{sub}/providers/Microsoft.Compute/locations/westeurope/operations/{id}?api-version={API_VERSION}",
        arm.base
    );
    let mut r = StatusCode::ACCEPTED.into_response();
    r.headers_mut().insert("azure-asyncoperation", op_url.parse().unwrap());
    r.headers_mut().insert("retry-after", arm.retry_after.to_string().parse().unwrap());
    r
}

async fn operation(
    State(arm): State<Shared>,
    Path((sub, loc, id)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut arm = arm.lock().unwrap();
    record(
        &mut arm,
        "GET",
        format!("/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id}"),
        &q,
        &headers,
    );
    let retry_after = arm.retry_after;
    if arm.deny_polls {
        return arm_error(403, "AuthorizationFailed");
    }
    let Some(op) = arm.ops.get_mut(&id) else { return arm_error(404, "NotFound") };
    let body = if op.polls_in_progress > 0 {
        op.polls_in_progress -= 1;
        json!({"name": id, "status": "InProgress"})
    } else if op.outcome == "Succeeded" {
        let after = op.power_after;
        arm.power = after;
        json!({"name": id, "status": "Succeeded"})
    } else {
        json!({"name": id, "status": op.outcome, "error": {"code": "AllocationFailed", "message": "no capacity in the region"}})
    };
    let mut r = Json(body).into_response();
    r.headers_mut().insert("retry-after", retry_after.to_string().parse().unwrap());
    r
}

async fn instance_view(
    State(arm): State<Shared>,
    Path((sub, rg, vm)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut arm = arm.lock().unwrap();
    let path = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}/instanceView"
    );
    record(&mut arm, "GET", path, &q, &headers);
    if let Some(status) = arm.post_failures.pop_front() {
        return arm_error(status, "InternalServerError");
    }
    match arm.pending {
        Some((0, after)) => {
            arm.power = after;
            arm.pending = None;
        }
        Some((left, after)) => arm.pending = Some((left - 1, after)),
        None => {}
    }
    Json(json!({
        "computerName": vm,
        "statuses": [
            {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"},
            {"code": format!("PowerState/{}", arm.power), "level": "Info", "displayStatus": "VM state"}
        ]
    }))
    .into_response()
}

struct Env {
    arm: Shared,
    power: AzurePower,
    credential: Arc<FakeCredential>,
    token: String,
    sub: String,
    rg: String,
    vm: String,
    host: String,
}

async fn spawn(configure: impl FnOnce(&mut Arm)) -> Env {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut arm = Arm {
        base: base.clone(),
        power: "deallocated",
        post_failures: VecDeque::new(),
        polls_in_progress: 2,
        outcome: "Succeeded",
        retry_after: 0,
        deny_polls: false,
        view_reads_in_progress: 0,
        pending: None,
        ops: HashMap::new(),
        seen: Vec::new(),
    };
    configure(&mut arm);
    let arm = Arc::new(Mutex::new(arm));
    let app = Router::new()
        .route(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}/instanceView",
            get(instance_view),
        )
        .route(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}/{action}",
            post(vm_action),
        )
        .route("/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id}", get(operation))
        .with_state(arm.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let token = format!("fake-token-{}", Uuid::new_v4());
    let credential = Arc::new(FakeCredential { token: token.clone(), scopes: Mutex::new(Vec::new()) });
    let (sub, rg, vm, host) = (
        Uuid::new_v4().to_string(),
        format!("rg-{}", Uuid::new_v4().simple()),
        format!("janus-{}", Uuid::new_v4().simple()),
        format!("host-{}", Uuid::new_v4().simple()),
    );
    let options = AzureOptions {
        endpoint: Url::parse(&base).unwrap(),
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        poll_interval: Duration::from_millis(5),
        max_poll_interval: Duration::from_secs(2),
        deadline: Duration::from_secs(20),
        request_timeout: Duration::from_secs(5),
    };
    let power = AzurePower::new(
        credential.clone(),
        sub.clone(),
        [(host.clone(), AzureVm { resource_group: rg.clone(), vm_name: vm.clone() })],
        options,
    )
    .unwrap();
    Env { arm, power, credential, token, sub, rg, vm, host }
}

impl Env {
    fn seen(&self) -> Vec<Seen> {
        self.arm.lock().unwrap().seen.clone()
    }
    fn vm_path(&self, tail: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}/{tail}",
            self.sub, self.rg, self.vm
        )
    }
    fn assert_authenticated(&self) {
        let seen = self.seen();
        assert!(!seen.is_empty());
        let bearer = format!("Bearer {}", self.token);
        for s in &seen {
            assert_eq!(s.authorization.as_deref(), Some(bearer.as_str()), "{} {}", s.method, s.path);
            assert_eq!(s.api_version.as_deref(), Some(API_VERSION), "{} {}", s.method, s.path);
        }
        let scopes = self.credential.scopes.lock().unwrap();
        assert!(scopes.iter().all(|s| s == "https://management.azure.com/.default"), "{scopes:?}");
    }
}

#[tokio::test]
async fn start_waits_for_the_operation_honours_retry_after_and_the_vm_then_runs() {
    let env = spawn(|arm| arm.retry_after = 1).await;
    assert_eq!(env.power.power_state(&env.host).await.unwrap(), PowerState::Deallocated);

    assert_eq!(env.power.start(&env.host).await.unwrap(), PowerOutcome::Done);
    assert_eq!(env.power.power_state(&env.host).await.unwrap(), PowerState::Running);

    let seen = env.seen();
    let methods_paths: Vec<(&str, &str)> = seen.iter().map(|s| (s.method, s.path.as_str())).collect();
    assert_eq!(methods_paths[0], ("GET", env.vm_path("instanceView").as_str()));
    assert_eq!(methods_paths[1], ("POST", env.vm_path("start").as_str()));
    let polls: Vec<&Seen> = seen.iter().filter(|s| s.path.contains("/operations/")).collect();
    assert_eq!(polls.len(), 3, "two InProgress answers, then Succeeded");
    assert!(polls[0].path.starts_with(&format!("/subscriptions/{}/providers/Microsoft.Compute/locations/", env.sub)));
    // `Retry-After: 1` is honoured between the start and each poll.
    assert!(polls[0].at - seen[1].at >= Duration::from_secs(1));
    assert!(polls[1].at - polls[0].at >= Duration::from_secs(1));
    assert_eq!(methods_paths.last().unwrap(), &("GET", env.vm_path("instanceView").as_str()));
    env.assert_authenticated();
}

#[tokio::test]
async fn deallocate_waits_for_the_operation_and_the_vm_is_then_deallocated() {
    let env = spawn(|arm| arm.power = "running").await;
    assert_eq!(env.power.power_state(&env.host).await.unwrap(), PowerState::Running);
    assert_eq!(env.power.deallocate(&env.host).await.unwrap(), PowerOutcome::Done);
    assert_eq!(env.power.power_state(&env.host).await.unwrap(), PowerState::Deallocated);
    assert!(env.seen().iter().any(|s| s.method == "POST" && s.path == env.vm_path("deallocate")));
    env.assert_authenticated();
}

#[tokio::test]
async fn a_conflict_while_the_vm_changes_state_is_retried_until_accepted() {
    let env = spawn(|arm| arm.post_failures = VecDeque::from([409, 409, 429])).await;
    assert_eq!(env.power.start(&env.host).await.unwrap(), PowerOutcome::Done);
    assert_eq!(env.power.power_state(&env.host).await.unwrap(), PowerState::Running);
    let posts = env.seen().iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts, 4);
    env.assert_authenticated();
}

#[tokio::test]
async fn persistent_server_errors_fail_as_transient_after_bounded_retries() {
    let env = spawn(|arm| arm.post_failures = VecDeque::from(vec![503; 50])).await;
    let err = env.power.start(&env.host).await.unwrap_err();
    assert!(matches!(&err, PowerError::Transient { cause: TransientCause::Server { status: 503 }, .. }), "{err:?}");
    assert!(err.retry_after().is_some());
    let posts = env.seen().iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts, 4, "max_attempts bounds the retries");
    assert_eq!(env.arm.lock().unwrap().power, "deallocated");
}

#[tokio::test]
async fn a_failed_operation_is_a_permanent_error_with_arm_code() {
    let env = spawn(|arm| {
        arm.outcome = "Failed";
        arm.polls_in_progress = 1;
    })
    .await;
    let err = env.power.start(&env.host).await.unwrap_err();
    match err {
        PowerError::Permanent { host, cause: PermanentCause::OperationFailed { status, code, .. } } => {
            assert_eq!(host, env.host);
            assert_eq!(status, "Failed");
            assert_eq!(code.as_deref(), Some("AllocationFailed"));
        }
        other => panic!("expected a failed operation, got {other:?}"),
    }
    let posts = env.seen().iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts, 1, "a failed operation is not retried blindly");
}

impl Env {
    /// Rebuilds the backend with a 300 ms deadline against the same fake.
    fn with_a_short_deadline(mut self) -> Self {
        let base = self.arm.lock().unwrap().base.clone();
        self.power = AzurePower::new(
            self.credential.clone(),
            self.sub.clone(),
            [(self.host.clone(), AzureVm { resource_group: self.rg.clone(), vm_name: self.vm.clone() })],
            AzureOptions {
                endpoint: Url::parse(&base).unwrap(),
                poll_interval: Duration::from_millis(20),
                deadline: Duration::from_millis(300),
                ..AzureOptions::default()
            },
        )
        .unwrap();
        self
    }
}

#[tokio::test]
async fn an_operation_still_running_at_the_deadline_is_transient() {
    let env = spawn(|arm| arm.polls_in_progress = u32::MAX).await.with_a_short_deadline();
    let err = env.power.start(&env.host).await.unwrap_err();
    assert!(matches!(err, PowerError::Transient { cause: TransientCause::StillInProgress, .. }), "{err:?}");
    assert_eq!(env.power.power_state(&env.host).await.unwrap(), PowerState::Starting);
}

#[tokio::test]
async fn unknown_hosts_are_refused_without_a_request() {
    let env = spawn(|_| {}).await;
    assert_eq!(env.power.start("nope").await, Err(PowerError::UnknownHost("nope".into())));
    assert!(env.seen().is_empty());
}

#[tokio::test]
async fn a_denied_operation_poll_is_confirmed_with_the_instance_view() {
    for (from, op, end) in
        [("deallocated", "start", PowerState::Running), ("running", "deallocate", PowerState::Deallocated)]
    {
        let env = spawn(|arm| {
            arm.power = from;
            arm.deny_polls = true;
            arm.view_reads_in_progress = 2;
        })
        .await;
        let outcome = match op {
            "start" => env.power.start(&env.host).await,
            _ => env.power.deallocate(&env.host).await,
        };
        assert_eq!(outcome, Ok(PowerOutcome::Done), "{op} after a 403 on its operation poll");
        assert_eq!(env.power.power_state(&env.host).await.unwrap(), end);
        let seen = env.seen();
        let denied_poll = seen.iter().position(|s| s.path.contains("/operations/")).expect("the operation was polled");
        let views_after = seen[denied_poll..].iter().filter(|s| s.path == env.vm_path("instanceView")).count();
        assert!(views_after >= 3, "two reads in transition, then the end state: {views_after}");
        assert_eq!(seen.iter().filter(|s| s.path.contains("/operations/")).count(), 1, "a denied poll is not retried");
        assert_eq!(seen.iter().filter(|s| s.method == "POST").count(), 1, "the operation is not sent again");
        env.assert_authenticated();
    }
}

#[tokio::test]
async fn a_denied_poll_and_a_vm_that_never_gets_there_is_transient_not_denied() {
    let env = spawn(|arm| {
        arm.deny_polls = true;
        arm.view_reads_in_progress = u32::MAX;
    })
    .await
    .with_a_short_deadline();
    let err = env.power.start(&env.host).await.unwrap_err();
    assert!(matches!(err, PowerError::Transient { cause: TransientCause::StillInProgress, .. }), "{err:?}");
    assert_eq!(env.power.power_state(&env.host).await.unwrap(), PowerState::Starting);
}
