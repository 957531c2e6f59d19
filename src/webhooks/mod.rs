//! Webhooks out: every event in the store's outbox is POSTed to `WEBHOOK_URL`, signed as the
//! Standard Webhooks specification says (<https://www.standardwebhooks.com/>,
//! `spec/standard-webhooks.md`: `webhook-id`, `webhook-timestamp`, `webhook-signature`).
//!
//! # Nothing lost, nothing on the request's path
//! The outbox is written by the store in the same atomic step as the change an event reports
//! (see [`crate::store`]). Right after that write, the writer hands the event ids to
//! [`Webhooks::deliver_soon`], which sends them from a background task: a slow receiver never
//! slows the API or the reconciler. The timer `deliver-webhooks` ([`Webhooks::run_due`], every
//! minute) sends whatever is due: events whose first attempt never happened (the process died
//! after the write), and retries after a failure, with backoff ([`backoff`]: 1, 2, 4, ... 60
//! minutes, the last one at the maximum age). An event not delivered within
//! `WEBHOOK_MAX_AGE_MINUTES` of entering the outbox is dead-lettered (`failed`); operators list and redeliver those (`/api/v1/webhooks/deliveries`).
//!
//! Each attempt first takes the event's lease in the store (compare-and-set), so two instances
//! rarely send one event at once; delivery is at least once all the same, and receivers
//! de-duplicate by `webhook-id`.
//!
//! # Signing
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, where the key
//! is the base64 after `whsec_` in `WEBHOOK_SECRET`, `<id>` the event id and `<timestamp>` the
//! attempt's Unix seconds (also sent as `webhook-timestamp`).

use std::{sync::Arc, time::Duration as StdDuration};

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{
    clock::Clock,
    config::{Secret, WebhookConfig, webhook_key},
    store::{Attempt, Delivery, Store, StoreError},
};
use uuid::Uuid;

/// Longest wait for a receiver's answer.
pub const ATTEMPT_TIMEOUT: StdDuration = StdDuration::from_secs(10);
/// How long an attempt holds its event: longer than [`ATTEMPT_TIMEOUT`], so a lease outlives its attempt.
pub const LEASE: Duration = Duration::seconds(60);
/// Most events one timer run attempts.
pub const BATCH: usize = 200;
/// Attempts in flight at once.
pub const CONCURRENCY: usize = 8;
/// Delivered events are kept this long (visible with `status=delivered`), then purged.
pub const KEEP_DELIVERED: Duration = Duration::days(7);

/// The wait after the `attempts`-th failed attempt: 1 minute, doubling, at most an hour.
pub fn backoff(attempts: u32) -> Duration {
    Duration::minutes(1i64 << attempts.saturating_sub(1).min(6)).min(Duration::minutes(60))
}

/// `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`: the Standard Webhooks signature.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// What one timer run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: usize,
    /// Failed and scheduled again.
    pub retrying: usize,
    /// Failed past the maximum age: dead-lettered.
    pub failed: usize,
    /// Due but leased by another attempt.
    pub skipped: usize,
    /// Delivered events forgotten (older than [`KEEP_DELIVERED`]).
    pub purged: u64,
}

/// The sender. Cheap to share behind an `Arc`.
pub struct Webhooks {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    url: Secret,
    key: Vec<u8>,
    max_age: Duration,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("max_age", &self.max_age).finish_non_exhaustive()
    }
}

/// Why the sender could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WebhookSetupError {
    #[error("WEBHOOK_SECRET is not a Standard Webhooks secret (whsec_ + base64)")]
    Secret,
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

impl Webhooks {
    /// The sender for `config`.
    pub fn new(
        config: &WebhookConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, WebhookSetupError> {
        let key = webhook_key(config.secret.expose()).ok_or(WebhookSetupError::Secret)?;
        let http = reqwest::Client::builder()
            .connect_timeout(StdDuration::from_secs(5))
            .timeout(ATTEMPT_TIMEOUT)
            // A redirect is not an answer: the receiver's URL is the one configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| WebhookSetupError::Client(e.without_url().to_string()))?;
        Ok(Self { store, clock, http, url: config.url.clone(), key, max_age: config.max_age })
    }

    /// Sends these just-written events (their booking, event id) from a background task, each once
    /// if its lease can be taken; whatever fails is left to the timer. Never blocks the caller.
    pub fn deliver_soon(self: &Arc<Self>, events: Vec<(Uuid, String)>) {
        if events.is_empty() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            for (booking, id) in events {
                let now = me.clock.now();
                match me.store.claim_delivery(booking, &id, now, now + LEASE).await {
                    Ok(Some(d)) => {
                        me.attempt(d).await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(event_id = %id, error = %e, "cannot take a webhook event; the timer sends it")
                    }
                }
            }
        });
    }

    /// The timer: attempts every due event (up to [`BATCH`], [`CONCURRENCY`] at once), then
    /// forgets events delivered more than [`KEEP_DELIVERED`] ago. Fails only when the store does.
    pub async fn run_due(&self) -> Result<DeliveryReport, StoreError> {
        let now = self.clock.now();
        let due = self.store.due_deliveries(now, BATCH).await?;
        let outcomes: Vec<Option<Outcome>> = futures::stream::iter(due)
            .map(|d| async move {
                let now = self.clock.now();
                match self.store.claim_delivery(d.event.booking_id, &d.event.id, now, now + LEASE).await {
                    Ok(Some(d)) => Some(self.attempt(d).await),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(event_id = %d.event.id, error = %e, "cannot take a webhook event");
                        None
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut report = DeliveryReport::default();
        for o in outcomes {
            match o {
                Some(Outcome::Delivered) => report.delivered += 1,
                Some(Outcome::Retrying) => report.retrying += 1,
                Some(Outcome::Failed) => report.failed += 1,
                None => report.skipped += 1,
            }
        }
        report.purged = self.store.purge_deliveries(now - KEEP_DELIVERED).await?;
        Ok(report)
    }

    /// Sends one leased event and records the outcome.
    async fn attempt(&self, d: Delivery) -> Outcome {
        let started = self.clock.now();
        let timestamp = started.timestamp();
        let signature = sign(&self.key, &d.event.id, timestamp, &d.event.body);
        let sent = self
            .http
            .post(self.url.expose())
            .header("content-type", "application/json")
            .header("webhook-id", &d.event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(d.event.body.clone())
            .send()
            .await;
        let error = match sent {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
            // Without the URL: it is a secret.
            Err(e) if e.is_timeout() => Some(format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs())),
            Err(e) => Some(describe(&e.without_url())),
        };
        let at = self.clock.now();
        let (attempt, outcome) = match error {
            None => (Attempt::Delivered { at }, Outcome::Delivered),
            Some(error) if at >= d.enqueued_at + self.max_age => (Attempt::Failed { at, error }, Outcome::Failed),
            // The last retry comes at the maximum age, not after it.
            Some(error) => {
                let next_at = (at + backoff(d.attempts + 1)).min(self.expires(d.enqueued_at));
                (Attempt::Retry { at, next_at, error }, Outcome::Retrying)
            }
        };
        match &attempt {
            Attempt::Delivered { .. } => {
                tracing::info!(event_id = %d.event.id, event_type = d.event.event_type.as_str(), "webhook delivered")
            }
            Attempt::Retry { error, next_at, .. } => tracing::warn!(event_id = %d.event.id, %error,
                next_attempt_at = %next_at.to_rfc3339(), "webhook not delivered; retrying later"),
            Attempt::Failed { error, .. } => tracing::error!(event_id = %d.event.id, %error,
                "webhook dead-lettered: not delivered within WEBHOOK_MAX_AGE_MINUTES"),
        }
        if let Err(e) = self.store.finish_delivery(d.event.booking_id, &d.event.id, &attempt).await {
            // The lease runs out and the timer tries again: at least once, never lost.
            tracing::warn!(event_id = %d.event.id, error = %e, "cannot record a webhook attempt");
        }
        outcome
    }

    /// When an event enqueued at `enqueued_at` is dead-lettered.
    pub fn expires(&self, enqueued_at: DateTime<Utc>) -> DateTime<Utc> {
        enqueued_at + self.max_age
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Retrying,
    Failed,
}

/// A transport error with its causes, as one line.
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signatures_match_the_standard_webhooks_reference() {
        let key = webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let mins: Vec<i64> = (1..=9).map(|n| backoff(n).num_minutes()).collect();
        assert_eq!(mins, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
