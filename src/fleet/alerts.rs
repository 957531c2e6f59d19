//! Operator alerts: a Slack-compatible incoming webhook (`ALERT_WEBHOOK_URL`, JSON
//! `{"text": ...}`), each alert at most once per subject across runs and instances.
//!
//! Once-only is a store marker ([`Store::claim_marker`]) claimed BEFORE sending: of two
//! instances that see the same problem only one sends; the price is that an alert whose webhook
//! call fails is not retried (it is still in the service log and the operations log).

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::{
    config::Secret,
    store::{Store, StoreError},
};

/// Why an alert was not delivered to the webhook.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The marker could not be claimed: nothing was sent.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The webhook did not answer 2xx (the URL is never shown: it carries a token).
    #[error("webhook answered HTTP {status}")]
    Status { status: u16 },
    #[error("webhook unreachable")]
    Unreachable,
}

/// What happened to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertOutcome {
    /// First time for this subject: sent (or only logged, without a webhook).
    Raised,
    /// Raised before: nothing done.
    AlreadyRaised,
}

/// Sends alerts to the webhook, once per key.
#[derive(Clone)]
pub struct Alerter {
    webhook: Option<Secret>,
    http: reqwest::Client,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Alerter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerter").field("webhook", &self.webhook.as_ref().map(|_| "***")).finish_non_exhaustive()
    }
}

impl Alerter {
    /// Alerts to `webhook` (none: logged only), remembered in `store`. The HTTP client times out
    /// after 5 s so a slow webhook never holds the reconciler.
    pub fn new(webhook: Option<Secret>, store: Arc<dyn Store>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()
            .expect("the webhook HTTP client builds");
        Self { webhook, http, store }
    }

    /// Raises the alert `text` once for `key` (e.g. `alert:not-ready:<booking>`): claims the
    /// marker, then posts `{"text": text}`. `AlreadyRaised` when the key was claimed before.
    /// Errors only when the marker cannot be claimed or, after claiming, the webhook fails.
    pub async fn raise(&self, key: &str, text: &str, now: DateTime<Utc>) -> Result<AlertOutcome, AlertError> {
        if !self.store.claim_marker(key, now).await? {
            return Ok(AlertOutcome::AlreadyRaised);
        }
        tracing::warn!(alert = key, text, "alert");
        let Some(url) = &self.webhook else { return Ok(AlertOutcome::Raised) };
        let res = self
            .http
            .post(url.expose())
            .json(&json!({ "text": text }))
            .send()
            .await
            .map_err(|_| AlertError::Unreachable)?;
        if !res.status().is_success() {
            return Err(AlertError::Status { status: res.status().as_u16() });
        }
        Ok(AlertOutcome::Raised)
    }
}
