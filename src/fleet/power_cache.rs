//! [`CachedPower`]: a [`PowerControl`] in front of the real backend that remembers each host's
//! power state for a few seconds (`FLEET_POWER_CACHE_SECONDS`), so that the API's paths (`/join`,
//! room changes, `GET /hosts`, admin health) cost at most one backend call per host per period,
//! however many requests arrive: with Azure, a burst of requests never becomes a burst of ARM
//! calls (which ARM would throttle for the reconciler too).
//!
//! - Concurrent readers of a host whose entry is missing or old wait for ONE backend call and all
//!   take its answer (errors included: a throttled or failing backend is not asked again sooner).
//! - [`PowerControl::fresh_power_state`] (the reconciler's read) always asks the backend and
//!   stores the answer for the API's readers.
//! - `start` and `deallocate` go to the backend and forget the host's entry, so the next read
//!   sees the new state.
//!
//! A process-local cache of an observation, not of an invariant: every instance keeps its own,
//! each at most the configured age behind the backend. Age is measured on the service's
//! [`Clock`], so tests move it with the clock.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use super::power::{PowerControl, PowerError, PowerOutcome, PowerState};
use crate::clock::Clock;

type Answer = Result<PowerState, PowerError>;

/// One host's remembered answer, and the lock its refreshes queue on.
#[derive(Default)]
struct Entry {
    last: Mutex<Option<(DateTime<Utc>, Answer)>>,
    refresh: tokio::sync::Mutex<()>,
}

/// The power backend behind a per-host cache. See the module docs.
pub struct CachedPower {
    inner: Arc<dyn PowerControl>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    /// One entry per host given at construction; other names pass through uncached.
    entries: HashMap<String, Entry>,
}

impl std::fmt::Debug for CachedPower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedPower").field("ttl", &self.ttl).field("hosts", &self.entries.len()).finish()
    }
}

impl CachedPower {
    /// Caches `inner`'s answers for `hosts` for `ttl` (zero: no caching).
    pub fn new(
        inner: Arc<dyn PowerControl>,
        clock: Arc<dyn Clock>,
        ttl: Duration,
        hosts: impl IntoIterator<Item = String>,
    ) -> Self {
        Self { inner, clock, ttl, entries: hosts.into_iter().map(|h| (h, Entry::default())).collect() }
    }

    fn remembered(&self, entry: &Entry, now: DateTime<Utc>) -> Option<Answer> {
        let last = entry.last.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            // A clock set back makes an entry from "the future": not trusted either.
            Some((at, answer)) if *at <= now && now - *at < self.ttl => Some(answer.clone()),
            _ => None,
        }
    }

    fn remember(&self, host: &str, answer: &Answer) {
        if let Some(entry) = self.entries.get(host) {
            *entry.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((self.clock.now(), answer.clone()));
        }
    }

    fn forget(&self, host: &str) {
        if let Some(entry) = self.entries.get(host) {
            *entry.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

#[async_trait]
impl PowerControl for CachedPower {
    /// The remembered state when younger than the TTL; otherwise one backend call, shared by every
    /// concurrent reader of the host.
    async fn power_state(&self, host: &str) -> Answer {
        let Some(entry) = self.entries.get(host).filter(|_| self.ttl > Duration::zero()) else {
            return self.inner.power_state(host).await;
        };
        if let Some(answer) = self.remembered(entry, self.clock.now()) {
            return answer;
        }
        let _turn = entry.refresh.lock().await;
        // The reader ahead in the queue may have just asked.
        if let Some(answer) = self.remembered(entry, self.clock.now()) {
            return answer;
        }
        let answer = self.inner.power_state(host).await;
        self.remember(host, &answer);
        answer
    }

    async fn fresh_power_state(&self, host: &str) -> Answer {
        let answer = self.inner.fresh_power_state(host).await;
        self.remember(host, &answer);
        answer
    }

    async fn start(&self, host: &str) -> Result<PowerOutcome, PowerError> {
        let outcome = self.inner.start(host).await;
        self.forget(host);
        outcome
    }

    async fn deallocate(&self, host: &str) -> Result<PowerOutcome, PowerError> {
        let outcome = self.inner.deallocate(host).await;
        self.forget(host);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::clock::ManualClock;

    /// Counts state reads; answers `Running` after a short delay so concurrent readers overlap.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl PowerControl for Counting {
        async fn power_state(&self, _host: &str) -> Answer {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok(PowerState::Running)
        }
        async fn start(&self, _host: &str) -> Result<PowerOutcome, PowerError> {
            Ok(PowerOutcome::Done)
        }
        async fn deallocate(&self, _host: &str) -> Result<PowerOutcome, PowerError> {
            Ok(PowerOutcome::Done)
        }
    }

    fn cached(ttl_secs: i64) -> (Arc<Counting>, ManualClock, CachedPower) {
        let backend = Arc::new(Counting::default());
        let clock = ManualClock::new(Utc::now());
        let cache =
            CachedPower::new(backend.clone(), Arc::new(clock.clone()), Duration::seconds(ttl_secs), ["h".to_string()]);
        (backend, clock, cache)
    }

    #[tokio::test]
    async fn a_burst_of_readers_makes_one_backend_call_per_period() {
        let (backend, clock, cache) = cached(10);
        let answers = futures::future::join_all((0..100).map(|_| cache.power_state("h"))).await;
        assert!(answers.iter().all(|a| *a == Ok(PowerState::Running)));
        assert_eq!(backend.0.load(Ordering::SeqCst), 1);
        clock.advance(Duration::seconds(9));
        cache.power_state("h").await.unwrap();
        assert_eq!(backend.0.load(Ordering::SeqCst), 1);
        clock.advance(Duration::seconds(1));
        cache.power_state("h").await.unwrap();
        assert_eq!(backend.0.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn fresh_reads_and_switching_bypass_or_forget_the_cache() {
        let (backend, _clock, cache) = cached(10);
        cache.fresh_power_state("h").await.unwrap();
        cache.power_state("h").await.unwrap();
        assert_eq!(backend.0.load(Ordering::SeqCst), 1, "the fresh read fills the cache");
        cache.fresh_power_state("h").await.unwrap();
        assert_eq!(backend.0.load(Ordering::SeqCst), 2, "a fresh read always asks");
        cache.start("h").await.unwrap();
        cache.power_state("h").await.unwrap();
        assert_eq!(backend.0.load(Ordering::SeqCst), 3, "a start forgets the state");
        cache.power_state("other").await.unwrap();
        assert_eq!(backend.0.load(Ordering::SeqCst), 4, "unknown hosts pass through");
    }

    #[tokio::test]
    async fn a_zero_ttl_caches_nothing() {
        let (backend, _clock, cache) = cached(0);
        cache.power_state("h").await.unwrap();
        cache.power_state("h").await.unwrap();
        assert_eq!(backend.0.load(Ordering::SeqCst), 2);
    }
}
