//! The timer jobs, served two ways from one table ([`crate::functions::TIMERS`]):
//! - under the Functions host, as `POST /{function-name}` with the host's JSON envelope;
//! - standalone (`suroga serve` without the host), fired in-process on the same NCRONTAB schedules.
//!
//! Every job is idempotent: after a lost lease the host may replay an occurrence, and two
//! instances may run one at once.

use std::sync::Arc;

use axum::{Router, extract::State, response::Response, routing::post};
use chrono::{DateTime, Utc};

use crate::{
    api::AppState,
    fleet::reconciler::Reconciler,
    functions::{TIMERS, TimerInvocation, ncrontab::Schedule, timer_error_reply, timer_reply},
    store::StoreError,
};

/// What the timer jobs need besides the API state.
#[derive(Clone)]
pub struct Jobs {
    pub state: AppState,
    pub reconciler: Arc<Reconciler>,
}

/// Why a job run failed (the host marks the invocation failed; the next occurrence retries).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("no job named {0:?}")]
    Unknown(String),
    /// The reconcile run stopped early (the store failed); its log lines say where.
    #[error("reconcile incomplete: {}", .0.join("; "))]
    Incomplete(Vec<String>),
}

impl Jobs {
    /// Runs the job `name` for the occurrence at `at`. Returns log lines for the host.
    pub async fn run(&self, name: &str, at: DateTime<Utc>) -> Result<Vec<String>, JobError> {
        tracing::debug!(job = name, occurrence = %at, "running a timer job");
        match name {
            "fleet-reconcile" => {
                let report = self.reconciler.run_once().await;
                if report.errors.is_empty() { Ok(report.lines()) } else { Err(JobError::Incomplete(report.lines())) }
            }
            "purge-keys" => purge_keys(&self.state).await,
            "deliver-webhooks" => deliver_webhooks(&self.state).await,
            other => Err(JobError::Unknown(other.to_string())),
        }
    }

    /// `POST /{function-name}` for every timer: the host's envelope in, its reply shape out;
    /// answered only for the Functions host or a local caller ([`crate::functions::access`]).
    pub fn router(&self) -> Router {
        let mut r = Router::new();
        for t in TIMERS {
            let name = t.name;
            r = r.route(
                &format!("/{name}"),
                post(move |State(jobs): State<Jobs>, inv: TimerInvocation| async move { jobs.invoke(name, inv).await }),
            );
        }
        let under_host = self.state.settings.under_functions_host;
        r.with_state(self.clone())
            .layer(axum::middleware::from_fn_with_state(under_host, crate::functions::access::only_the_host))
    }

    async fn invoke(&self, name: &str, inv: TimerInvocation) -> Response {
        let now = self.state.clock.now();
        let at = inv.utc_now().unwrap_or(now);
        tracing::info!(job = name, past_due = inv.is_past_due(), last = ?inv.last_run(), "timer invoked by the host");
        match self.run(name, at).await {
            Ok(lines) => {
                tracing::info!(job = name, summary = lines.join("; "), "timer done");
                timer_reply(lines)
            }
            Err(e) => {
                tracing::error!(job = name, error = %e, "timer failed");
                timer_error_reply(vec![], &e)
            }
        }
    }

    /// Standalone mode: fires every timer on its schedule until `shutdown` resolves.
    pub async fn run_schedules(self, shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tasks = Vec::new();
        for t in TIMERS {
            let schedule = Schedule::parse(t.schedule).expect("timer schedules in TIMERS parse");
            let (jobs, mut stop) = (self.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let now = jobs.state.clock.now();
                    let Some(next) = schedule.next_after(now) else { return };
                    let wait = (next - now).to_std().unwrap_or_default();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return,
                    }
                    match jobs.run(t.name, next).await {
                        Ok(lines) => tracing::info!(job = t.name, summary = lines.join("; "), "timer done"),
                        Err(e) => tracing::error!(job = t.name, error = %e, "timer failed"),
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Every minute: sends the webhook events that are due (first attempts that never happened,
/// retries after backoff), dead-letters those past `WEBHOOK_MAX_AGE_MINUTES`, and forgets events
/// delivered a week ago. Does nothing when webhooks are off. Idempotent: each attempt takes its
/// event's lease first.
pub async fn deliver_webhooks(state: &AppState) -> Result<Vec<String>, JobError> {
    let Some(w) = &state.webhooks else { return Ok(vec!["webhooks are off (WEBHOOK_URL is unset)".into()]) };
    let r = w.run_due().await?;
    Ok(vec![format!(
        "{} webhook events delivered, {} to retry, {} dead-lettered, {} held by another attempt; {} old deliveries forgotten",
        r.delivered, r.retrying, r.failed, r.skipped, r.purged
    )])
}

/// Daily: forgets `Idempotency-Key` records older than [`IDEMPOTENCY_TTL`] (they already count as
/// absent; this keeps the store from growing). Idempotent.
pub async fn purge_keys(state: &AppState) -> Result<Vec<String>, JobError> {
    let before = state.clock.now() - crate::store::IDEMPOTENCY_TTL;
    let n = state.store.purge_idempotency(before).await?;
    Ok(vec![format!("forgot {n} idempotency keys recorded before {}", crate::domain::format_instant(before))])
}
