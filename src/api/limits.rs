//! Per-caller rate limits of one instance: an authenticated caller is limited per user, everyone
//! else (no token, or a token that does not verify) per client address. Over the limit the answer
//! is 429 with `Retry-After` (problem+json), before the handler runs.
//!
//! - [`RateLimiter`]: the generic cell rate algorithm (GCRA, a token bucket kept as one
//!   timestamp per caller) over a sharded map; pure, time is a parameter.
//! - [`rate_limit`]: the middleware: who the caller is, then the check.
//! - [`client_address`]: the address a request comes from. Standalone, the TCP peer. Under the
//!   Functions host every connection comes from the host on loopback, so the address comes from a
//!   header the platform's front end sets: `CLIENT_ADDRESS_HEADER` (default `X-Client-IP`, which
//!   Azure App Service's front end adds), else the LAST entry of `X-Forwarded-For` (the one the
//!   last proxy appended; entries to its left were sent by the client and prove nothing), else
//!   the peer. Why not `X-Forwarded-For` first: a current host proxies requests with YARP, whose
//!   default transforms REPLACE `X-Forwarded-For` with the address the host itself saw (the
//!   platform's, not the client's); only an older, forwarding host passes the front end's value
//!   through. Other headers pass through both modes unchanged.
//!
//! Limits are per instance: N instances let a caller through N times as often. A global limit
//! belongs in front of the app (Azure API Management `rate-limit-by-key`, or a Front Door WAF
//! rate-limit rule); see the README.
//!
//! Memory is bounded: each shard keeps at most [`SHARD_CAPACITY`] callers; when a new caller
//! finds its shard full, callers whose bucket has refilled are dropped (they are
//! indistinguishable from new ones), and if none has, the shard starts over (those callers get
//! a fresh burst) rather than growing.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, RandomState},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{HeaderMap, HeaderName, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};

use super::{AppState, error::ApiError};
use crate::{auth::Caller, config::RateLimitSettings};

/// Shards of the caller map (a power of two): requests of different callers rarely share a lock.
const SHARDS: usize = 64;
/// Most callers one shard remembers.
pub const SHARD_CAPACITY: usize = 1024;

/// Who a limit is counted for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerKey {
    /// An authenticated user (the token's `oid` or `sub`).
    User(Box<str>),
    /// A client address: an IPv4 address, or the /64 network of an IPv6 one (what one subscriber
    /// holds). `None` when no address is known.
    Address(Option<u128>),
}

impl CallerKey {
    /// The key of a client address (IPv6 by its /64, IPv4-mapped IPv6 as IPv4).
    pub fn address(ip: Option<IpAddr>) -> Self {
        let bits = ip.map(|ip| match ip.to_canonical() {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 64) - 1),
        });
        CallerKey::Address(bits)
    }
}

/// A rate in the algorithm's terms, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rate {
    /// Time one request costs.
    interval: i64,
    /// How far ahead of now a caller's schedule may run: `interval * (burst - 1)`.
    tolerance: i64,
}

impl Rate {
    /// `None` when `per_minute` is 0 (no limit).
    fn new(per_minute: u32, burst: u32) -> Option<Self> {
        (per_minute > 0).then(|| {
            let interval = (60_000_000 / i64::from(per_minute)).max(1);
            Rate { interval, tolerance: interval * (i64::from(burst.max(1)) - 1) }
        })
    }
}

/// Remembers, per caller, when its bucket is next full ("theoretical arrival time").
pub struct RateLimiter {
    user: Option<Rate>,
    anonymous: Option<Rate>,
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<CallerKey, i64>>]>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("user", &self.user).field("anonymous", &self.anonymous).finish()
    }
}

impl RateLimiter {
    /// A limiter with the configured rates.
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            user: Rate::new(settings.user_per_minute, settings.user_burst),
            anonymous: Rate::new(settings.anonymous_per_minute, settings.anonymous_burst),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Counts one request of `key` at `now`. `Ok` lets it through; `Err(seconds)` says how long
    /// until the caller may send one again (at least 1).
    pub fn check(&self, key: CallerKey, now: DateTime<Utc>) -> Result<(), u64> {
        let rate = match key {
            CallerKey::User(_) => self.user,
            CallerKey::Address(_) => self.anonymous,
        };
        let Some(rate) = rate else { return Ok(()) };
        let now = now.timestamp_micros();
        let shard = &self.shards[self.hasher.hash_one(&key) as usize % SHARDS];
        let mut callers = shard.lock().unwrap_or_else(|e| e.into_inner());
        let tat = callers.get(&key).copied().unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > rate.tolerance {
            // Positive here, so unsigned ceiling division is exact.
            let wait_us = (ahead - rate.tolerance) as u64;
            return Err(wait_us.div_ceil(1_000_000).max(1));
        }
        if callers.len() >= SHARD_CAPACITY && !callers.contains_key(&key) {
            // A caller whose schedule is not ahead of now has a full bucket: forgetting it
            // changes nothing.
            callers.retain(|_, t| *t > now);
            if callers.len() >= SHARD_CAPACITY {
                tracing::warn!(callers = callers.len(), "rate limiter shard full of active callers; starting it over");
                callers.clear();
            }
        }
        callers.insert(key, tat + rate.interval);
        Ok(())
    }
}

/// What the rate-limit middleware needs.
#[derive(Clone)]
pub(super) struct Limits {
    pub limiter: Arc<RateLimiter>,
    pub state: AppState,
}

/// Counts the request for its caller and answers 429 over the limit. Never limited: `GET /` (the
/// Functions host's readiness and health probe) and the web client's embedded files under
/// `/app` (one page load fetches several, behind one address for a whole office, and serving
/// them touches neither the store nor Janus), and the Janus hosts' event posts that carry the
/// deployment's event handler credentials (one host posts every join and departure of all its
/// rooms from one address; a refused post would only be retried). The caller's token is verified
/// here; the handler reuses the result (see [`Caller`]).
pub(super) async fn rate_limit(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let app = crate::web::APP_PREFIX;
    if path == "/" || path == app || path.strip_prefix(app).is_some_and(|rest| rest.starts_with('/')) {
        return next.run(req).await;
    }
    if path == JANUS_EVENTS_PATH && super::janus_events::from_event_handler(&limits.state, req.headers()) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let key = caller_key(&mut parts, &limits.state).await;
    let now = limits.state.clock.now();
    if let Err(retry_after) = limits.limiter.check(key.clone(), now) {
        match &key {
            CallerKey::User(user) => tracing::info!(user = %user, retry_after, "rate limited"),
            CallerKey::Address(_) => tracing::info!(retry_after, "rate limited (anonymous)"),
        }
        let who = if matches!(key, CallerKey::User(_)) { "this user" } else { "this address" };
        return ApiError::TooManyRequests {
            detail: format!("too many requests from {who}; try again in {retry_after} s"),
            retry_after,
        }
        .into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Where the Janus hosts post their events.
const JANUS_EVENTS_PATH: &str = "/api/v1/janus/events";

async fn caller_key(parts: &mut Parts, state: &AppState) -> CallerKey {
    if parts.headers.contains_key(header::AUTHORIZATION) {
        if let Ok(caller) = Caller::from_request_parts(parts, state).await {
            return CallerKey::User(caller.user.into_boxed_str());
        }
    }
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let settings = &state.settings;
    let platform = settings.under_functions_host.then_some(&settings.client_address_header);
    CallerKey::address(client_address(&parts.headers, peer, platform))
}

/// The address a request comes from. `platform_header`: under the Functions host, the header the
/// platform's front end names the client in (`CLIENT_ADDRESS_HEADER`); its last entry counts,
/// then the last `X-Forwarded-For` entry (`ip`, `ip:port` or `[ipv6]:port`). `None` (standalone),
/// or neither header readable: the TCP peer.
pub fn client_address(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    platform_header: Option<&HeaderName>,
) -> Option<IpAddr> {
    if let Some(header) = platform_header {
        let last = |name: &str| super::headers::last_list_entry(headers, name).and_then(parse_address);
        if let Some(ip) = last(header.as_str()).or_else(|| last("x-forwarded-for")) {
            return Some(ip);
        }
    }
    peer.map(|p| p.ip())
}

fn parse_address(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok().or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn limiter(per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(&RateLimitSettings {
            user_per_minute: per_minute,
            user_burst: burst,
            anonymous_per_minute: 0,
            anonymous_burst: 1,
        })
    }

    fn user(name: &str) -> CallerKey {
        CallerKey::User(name.into())
    }

    #[test]
    fn a_burst_then_the_rate() {
        let l = limiter(6, 3);
        let t0 = Utc::now();
        for _ in 0..3 {
            assert_eq!(l.check(user("a"), t0), Ok(()));
        }
        assert_eq!(l.check(user("a"), t0), Err(10), "one request per 10 s after the burst");
        assert_eq!(l.check(user("b"), t0), Ok(()), "callers are counted apart");
        assert_eq!(l.check(user("a"), t0 + Duration::seconds(9)), Err(1));
        assert_eq!(l.check(user("a"), t0 + Duration::seconds(10)), Ok(()));
        assert_eq!(l.check(user("a"), t0 + Duration::seconds(10)), Err(10));
        // After a quiet minute the whole burst is back.
        let later = t0 + Duration::seconds(60);
        for _ in 0..3 {
            assert_eq!(l.check(user("a"), later), Ok(()));
        }
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let l = limiter(6, 1);
        let now = Utc::now();
        for _ in 0..1000 {
            assert_eq!(l.check(CallerKey::address(None), now), Ok(()));
        }
    }

    #[test]
    fn memory_stays_bounded_under_many_callers() {
        let l = limiter(60, 5);
        let now = Utc::now();
        for i in 0..SHARDS * SHARD_CAPACITY * 3 {
            let _ = l.check(user(&i.to_string()), now);
        }
        for shard in l.shards.iter() {
            assert!(shard.lock().unwrap().len() <= SHARD_CAPACITY);
        }
    }

    #[test]
    fn ipv6_callers_are_counted_by_their_64_network() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(CallerKey::address(Some(a)), CallerKey::address(Some(b)));
        assert_ne!(CallerKey::address(Some(a)), CallerKey::address(Some(c)));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(CallerKey::address(Some(mapped)), CallerKey::address(Some("192.0.2.7".parse().unwrap())));
    }

    #[test]
    fn under_the_host_the_platform_header_then_the_last_forwarded_entry_else_the_peer() {
        let platform = HeaderName::from_static("x-client-ip");
        let host = Some(&platform);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.1, 203.0.113.9:51234".parse().unwrap());
        let peer = Some("127.0.0.1:40000".parse().unwrap());
        assert_eq!(client_address(&h, peer, host), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(client_address(&h, peer, None), Some("127.0.0.1".parse().unwrap()), "standalone: the peer");
        h.insert("x-client-ip", "192.0.2.44".parse().unwrap());
        assert_eq!(client_address(&h, peer, host), Some("192.0.2.44".parse().unwrap()));
        h.remove("x-client-ip");
        h.insert("x-forwarded-for", "[2001:db8::5]:443".parse().unwrap());
        assert_eq!(client_address(&h, peer, host), Some("2001:db8::5".parse().unwrap()));
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_address(&h, peer, host), Some("127.0.0.1".parse().unwrap()));
    }
}
