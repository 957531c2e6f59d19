//! Who may call the timer routes (`POST /fleet-reconcile`, ...): only the Functions host, or,
//! for a standalone `suroga serve`, a process on the same machine.
//!
//! How the host's calls are recognised (facts from the host's source, see
//! /work/shared/reference/functions-host.md):
//! - The host connects to the handler on `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT`, which the
//!   handler binds on loopback: the TCP peer of a host call is a loopback address.
//! - Outside requests reach the handler only as forwarded HTTP functions, whose paths all carry
//!   the `api` route prefix (`/api/...`); a timer route is never one of them. The platform's front
//!   end adds `X-Forwarded-For` to those requests; the host's own timer invocations carry none.
//! - The host adds `X-Azure-Functions-InvocationId` to every invocation it sends.
//!
//! So a timer call is accepted when its peer is loopback, it carries no forwarding header
//! (`X-Forwarded-For`, `Forwarded`, `X-Forwarded-Host`: a proxy on the same machine relaying an
//! outside caller is not a local caller), and, under the host, it carries the invocation header.
//! Everything else is 403. A standalone listener bound to a public address therefore still
//! refuses timer calls from other machines.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Request, State},
    http::HeaderMap,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::api::error::ApiError;

/// The header the host adds to every invocation.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";
/// Headers a proxy adds when it relays someone else's request.
const RELAY_HEADERS: [&str; 3] = ["x-forwarded-for", "forwarded", "x-forwarded-host"];

/// True when a request with these headers from `peer` is the Functions host's call (under the
/// host) or a local process's (standalone), by the rules in the module docs.
pub fn is_trusted_timer_call(headers: &HeaderMap, peer: Option<SocketAddr>, under_functions_host: bool) -> bool {
    let local = peer.is_some_and(|p| p.ip().to_canonical().is_loopback());
    let relayed = RELAY_HEADERS.iter().any(|h| headers.contains_key(*h));
    let from_host = headers.contains_key(INVOCATION_ID_HEADER);
    local && !relayed && (from_host || !under_functions_host)
}

/// Middleware for the timer routes: 403 problem+json unless [`is_trusted_timer_call`]. The state
/// is whether the service runs under the Functions host.
pub async fn only_the_host(State(under_functions_host): State<bool>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    if is_trusted_timer_call(req.headers(), peer, under_functions_host) {
        return next.run(req).await;
    }
    tracing::warn!(path = %req.uri().path(), peer = ?peer, "timer call refused: not from the Functions host or this machine");
    ApiError::Forbidden("timer functions are invoked by the Functions host only".into()).into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_rules() {
        let local: Option<SocketAddr> = Some("127.0.0.1:5000".parse().unwrap());
        let remote: Option<SocketAddr> = Some("192.0.2.1:5000".parse().unwrap());
        let mut host = HeaderMap::new();
        host.insert(INVOCATION_ID_HEADER, HeaderValue::from_static("5a1b"));
        let none = HeaderMap::new();
        let mut relayed = host.clone();
        relayed.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.1"));

        assert!(is_trusted_timer_call(&host, local, true));
        assert!(!is_trusted_timer_call(&none, local, true), "under the host, only the host's calls");
        assert!(is_trusted_timer_call(&none, local, false), "standalone, any local process");
        assert!(!is_trusted_timer_call(&host, remote, true));
        assert!(!is_trusted_timer_call(&none, remote, false));
        assert!(!is_trusted_timer_call(&relayed, local, true));
        assert!(!is_trusted_timer_call(&host, None, false));
        assert!(is_trusted_timer_call(&none, Some("[::1]:1".parse().unwrap()), false));
    }
}
