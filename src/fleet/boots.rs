//! Learned lead time: how long each host takes from the reconciler's start command to its Janus
//! answering, and the lead the planner gives each host from its own recent boots.
//!
//! The reconciler records the start ([`Fleet::boot_started`]) and, when it next finds Janus
//! answering, the boot's duration ([`Fleet::boot_answered`]), in the store's state
//! `boots:{host}` (the last [`MAX_SAMPLES`] boots). A host's lead ([`learned_lead`]) is the
//! [`PERCENTILE`] of its boots plus [`MARGIN`] (the reconciler's tick, opening the session
//! rooms, a boot slower than the ones seen), never more than `FLEET_LEAD_MINUTES`, and that
//! ceiling until the host has booted [`MIN_SAMPLES`] times. The reconciler notices Janus
//! answering on its next tick, so samples are at most a tick too long: the lead errs late.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::control::Fleet;
use crate::store::StoreError;

/// Boots kept per host.
pub const MAX_SAMPLES: usize = 20;
/// Boots needed before the learned lead replaces the ceiling.
pub const MIN_SAMPLES: usize = 3;
/// Which percentile of the boots the lead covers.
pub const PERCENTILE: f64 = 0.9;
/// Added to the percentile: a reconciler tick, the rooms opening, a slower boot.
pub const MARGIN: Duration = Duration::minutes(5);

/// A host's boots, as stored under [`BootHistory::key`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootHistory {
    /// A start command whose boot has not been seen to finish yet.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// Boot durations in seconds, oldest first, at most [`MAX_SAMPLES`].
    #[serde(default)]
    pub samples: Vec<u64>,
}

impl BootHistory {
    /// The state key of `host`'s boots.
    pub fn key(host: &str) -> String {
        format!("boots:{host}")
    }
}

/// The lead a host gets, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LeadInfo {
    /// Start the host this long before its next session.
    #[serde(serialize_with = "minutes")]
    #[schema(value_type = i64)]
    pub minutes: Duration,
    /// True when learned from the host's boots; false: `FLEET_LEAD_MINUTES`.
    pub learned: bool,
    /// Boots measured.
    pub boots: usize,
    /// The [`PERCENTILE`] of the measured boots, in seconds.
    pub boot_p90_seconds: Option<u64>,
}

fn minutes<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(d.num_minutes())
}

/// The lead of a host with these boot `samples` (seconds) and the `ceiling` (`FLEET_LEAD_MINUTES`).
pub fn learned_lead(samples: &[u64], ceiling: Duration) -> LeadInfo {
    let p90 = percentile(samples);
    match p90 {
        Some(p) if samples.len() >= MIN_SAMPLES => {
            let lead = (Duration::seconds(p as i64) + MARGIN).min(ceiling);
            LeadInfo { minutes: lead, learned: lead < ceiling, boots: samples.len(), boot_p90_seconds: p90 }
        }
        _ => LeadInfo { minutes: ceiling, learned: false, boots: samples.len(), boot_p90_seconds: p90 },
    }
}

/// The [`PERCENTILE`] of `samples` (nearest rank), `None` when empty.
fn percentile(samples: &[u64]) -> Option<u64> {
    let mut v = samples.to_vec();
    v.sort_unstable();
    let rank = ((v.len() as f64) * PERCENTILE).ceil() as usize;
    v.get(rank.clamp(1, v.len().max(1)) - 1).copied()
}

impl Fleet {
    async fn boots(&self, host: &str) -> Result<BootHistory, StoreError> {
        Ok(match self.store.get_state(&BootHistory::key(host)).await? {
            Some(v) => serde_json::from_value(v).unwrap_or_default(),
            None => BootHistory::default(),
        })
    }

    async fn put_boots(&self, host: &str, h: &BootHistory) -> Result<(), StoreError> {
        let v = serde_json::to_value(h).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.store.put_state(&BootHistory::key(host), &v).await
    }

    /// Notes that the reconciler sent `host` a start command at `at`.
    pub async fn boot_started(&self, host: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut h = self.boots(host).await?;
        h.started_at = Some(at);
        self.put_boots(host, &h).await
    }

    /// Notes that `host`'s Janus answers at `at`: if a start is pending, its boot becomes a
    /// sample. Cheap when none is (one read).
    pub async fn boot_answered(&self, host: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut h = self.boots(host).await?;
        let Some(started) = h.started_at.take() else { return Ok(()) };
        let secs = (at - started).num_seconds().max(0) as u64;
        h.samples.push(secs);
        let extra = h.samples.len().saturating_sub(MAX_SAMPLES);
        h.samples.drain(..extra);
        tracing::info!(host, boot_seconds = secs, "host boot measured");
        self.put_boots(host, &h).await
    }

    /// Every host's lead (the ceiling for always-on hosts, which never boot).
    pub async fn host_leads(&self) -> Result<BTreeMap<String, LeadInfo>, StoreError> {
        let ceiling = self.policy.plan.lead;
        let mut out = BTreeMap::new();
        for h in &self.hosts {
            let info = if self.always_on {
                learned_lead(&[], ceiling)
            } else {
                learned_lead(&self.boots(&h.name).await?.samples, ceiling)
            };
            out.insert(h.name.clone(), info);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_holds_until_enough_boots_are_seen() {
        let ceiling = Duration::minutes(30);
        assert_eq!(learned_lead(&[], ceiling).minutes, ceiling);
        let two = learned_lead(&[60, 70], ceiling);
        assert_eq!((two.minutes, two.learned, two.boot_p90_seconds), (ceiling, false, Some(70)));
    }

    #[test]
    fn the_lead_is_the_90th_percentile_plus_the_margin_capped_at_the_ceiling() {
        let ceiling = Duration::minutes(30);
        let boots: Vec<u64> = (1..=10).map(|i| i * 20).collect(); // 20 s .. 200 s
        let l = learned_lead(&boots, ceiling);
        assert_eq!(l.boot_p90_seconds, Some(180));
        assert_eq!(l.minutes, Duration::seconds(180) + MARGIN);
        assert!(l.learned);
        let slow = learned_lead(&[3000, 3100, 3200], ceiling);
        assert_eq!((slow.minutes, slow.learned), (ceiling, false));
    }
}
