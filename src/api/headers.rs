//! What every answer tells browsers: security headers ([`security_headers`]) and CORS for the
//! allowed origins only ([`cors`]).
//!
//! - `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer` on every answer.
//! - A strict `Content-Security-Policy` ([`DEFAULT_HTML_CSP`]) on HTML answers that carry none: a
//!   handler that sets its own (the docs page, the web client) keeps it. No header a handler set
//!   is replaced.
//! - `Strict-Transport-Security` when the request reached the platform over HTTPS. The service
//!   itself speaks plain HTTP (under the Functions host, on loopback); Azure App Service's front
//!   end terminates TLS and says so in `X-AppService-Proto: https` and `X-ARR-SSL`, which reach
//!   the handler in both of the host's modes, and in `X-Forwarded-Proto: https` (its last value
//!   counts), which only a forwarding host passes through (a proxying host sets it to its own
//!   `http`). A client could send those headers over plain HTTP itself, but browsers ignore HSTS
//!   received over HTTP (RFC 6797 section 8.1), so a forged one does nothing.
//! - CORS (`CORS_ALLOWED_ORIGINS`): none by default, so browsers keep other sites' pages from
//!   reading answers. Listed origins may send the API's methods with `Authorization`,
//!   `Content-Type` and `Idempotency-Key`, and read `Retry-After`, `Location`, `Link` and
//!   `WWW-Authenticate`. Bearer tokens, not cookies: credentials mode stays off.

use std::time::Duration;

use axum::{
    extract::Request,
    http::{HeaderMap, HeaderName, HeaderValue, Method, header},
    middleware::Next,
    response::Response,
};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The policy of HTML answers that set none: nothing but same-origin resources, no inline
/// script or style, no framing.
pub const DEFAULT_HTML_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// HSTS for answers served over HTTPS: one year, this host only (the service does not own the
/// subdomains of the platform's host name).
pub const HSTS: &str = "max-age=31536000";

/// Adds the security headers to every answer (see the module docs).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let https = served_over_https(req.headers());
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    headers.entry(header::X_CONTENT_TYPE_OPTIONS).or_insert(HeaderValue::from_static("nosniff"));
    headers.entry(header::REFERRER_POLICY).or_insert(HeaderValue::from_static("no-referrer"));
    if html {
        headers.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(DEFAULT_HTML_CSP));
    }
    if https {
        headers.entry(header::STRICT_TRANSPORT_SECURITY).or_insert(HeaderValue::from_static(HSTS));
    }
    res
}

/// True when the platform says the client used HTTPS: `X-AppService-Proto: https`, an
/// `X-ARR-SSL` header, or a last `X-Forwarded-Proto` value of `https`.
fn served_over_https(headers: &HeaderMap) -> bool {
    let last_is_https = |name: &str| last_list_entry(headers, name).is_some_and(|p| p.eq_ignore_ascii_case("https"));
    last_is_https("x-appservice-proto") || headers.contains_key("x-arr-ssl") || last_is_https("x-forwarded-proto")
}

/// The last entry of a comma-separated header that proxies append to (`X-Forwarded-For`, ...),
/// across repeated headers, trimmed: the one the nearest proxy wrote.
pub fn last_list_entry<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).next_back().map(str::trim)
}

/// The CORS layer for `origins` (validated by the configuration), or `None` when there are none.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("idempotency-key")])
            .expose_headers([header::RETRY_AFTER, header::LOCATION, header::LINK, header::WWW_AUTHENTICATE])
            .max_age(Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_the_last_forwarded_proto() {
        let mut h = HeaderMap::new();
        assert!(!served_over_https(&h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(served_over_https(&h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https, http"));
        assert!(!served_over_https(&h));
        h.insert("x-appservice-proto", HeaderValue::from_static("https"));
        assert!(served_over_https(&h), "what App Service's front end says wins over a proxy's http");
        h.remove("x-appservice-proto");
        h.insert("x-arr-ssl", HeaderValue::from_static("2048|256|CN=...|CN=..."));
        assert!(served_over_https(&h));
    }
}
