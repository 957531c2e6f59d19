//! The web client at `/app/`: the browser app that books, invites and holds the call.
//!
//! The map of this module:
//! - [`assets`]: the files of `web/dist/` (built by `web/build.mjs`, committed), embedded in the
//!   binary by `build.rs`; [`Asset`] lookups by path.
//! - [`router`]: `GET /app/assets/<name>-<hash>.<ext>` answers an embedded file cached for a year
//!   (`immutable`: a new build has new names); every other `/app/...` path answers the app's
//!   HTML, never cached, so `/app/i/<code>` and `/app/bookings/<id>` open directly.
//! - [`content_security_policy`]: the strict CSP every page carries: scripts and styles only
//!   from this origin (no inline code, no CDN), media and network only to this origin, the Janus
//!   hosts' public URLs and, with Entra sign-in, the sign-in authority.
//! - [`settings`]: what the browser needs to know ([`WebSettings`], served as
//!   `GET /api/v1/client-config` by [`crate::api`]).

pub mod settings;

use std::sync::Arc;

use axum::{
    Router,
    extract::Path,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

pub use settings::{AuthMode, WebSettings, WebSettingsError};

/// The embedded build of `web/`.
pub mod assets {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// Where the app lives; the Functions host declares the same paths (see [`crate::functions`]).
pub const APP_PREFIX: &str = "/app";

/// `Cache-Control` of content-hashed assets: a changed file gets a new name, so a year is safe.
pub const ASSET_CACHE: &str = "public, max-age=31536000, immutable";

/// `Cache-Control` of the HTML: always fetched anew, so a deployment shows at once.
pub const HTML_CACHE: &str = "no-store";

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub path: &'static str,
    pub bytes: &'static [u8],
}

impl Asset {
    /// The embedded file at `path` (relative to `web/dist/`, e.g. `assets/main-ABC123.js`).
    pub fn get(path: &str) -> Option<Asset> {
        assets::FILES.iter().find(|(p, _)| *p == path).map(|(path, bytes)| Asset { path, bytes })
    }

    /// Every embedded file.
    pub fn all() -> impl Iterator<Item = Asset> {
        assets::FILES.iter().map(|(path, bytes)| Asset { path, bytes })
    }

    /// The media type by extension.
    pub fn content_type(&self) -> &'static str {
        match self.path.rsplit('.').next().unwrap_or_default() {
            "js" | "mjs" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "html" => "text/html; charset=utf-8",
            "svg" => "image/svg+xml",
            "png" => "image/png",
            "json" => "application/json",
            "txt" => "text/plain; charset=utf-8",
            "woff2" => "font/woff2",
            _ => "application/octet-stream",
        }
    }
}

/// The local sign-in link `suroga token --url` prints: the token travels in the fragment, which
/// browsers never send to a server; the app moves it to `sessionStorage` and clears the address bar.
pub fn sign_in_link(public_base_url: &str, token: &str) -> String {
    format!("{}/app/#token={token}", public_base_url.trim_end_matches('/'))
}

/// The app's HTML page (the same for every route of the app).
pub fn index_html() -> &'static [u8] {
    Asset::get("index.html").map(|a| a.bytes).unwrap_or(b"<!doctype html><title>Suroga Stream</title>")
}

/// The origin (`scheme://host[:port]`) of a URL, for CSP source lists; `None` if it has none.
fn origin(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    // IPv6 hosts come back in brackets already.
    let host = u.host_str()?;
    Some(match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    })
}

/// The Content-Security-Policy of every app page. `janus_urls` are the hosts' public HTTP and
/// WebSocket URLs (the only places the page may connect to besides its own origin); `authority`
/// is the Entra sign-in authority when that sign-in is on.
pub fn content_security_policy<'a>(janus_urls: impl IntoIterator<Item = &'a str>, authority: Option<&str>) -> String {
    let mut connect: Vec<String> = vec!["'self'".into()];
    for o in janus_urls.into_iter().filter_map(origin) {
        if !connect.contains(&o) {
            connect.push(o);
        }
    }
    let login = authority.and_then(origin);
    if let Some(l) = &login {
        connect.push(l.clone());
    }
    let frame = login.map(|l| format!("frame-src {l}")).unwrap_or_else(|| "frame-src 'none'".into());
    [
        "default-src 'none'".to_string(),
        "script-src 'self'".into(),
        "style-src 'self'".into(),
        "img-src 'self' data: blob:".into(),
        "media-src 'self' blob: mediastream:".into(),
        "font-src 'self'".into(),
        format!("connect-src {}", connect.join(" ")),
        frame,
        "worker-src 'self'".into(),
        "manifest-src 'self'".into(),
        "object-src 'none'".into(),
        "base-uri 'none'".into(),
        "form-action 'self'".into(),
        "frame-ancestors 'none'".into(),
    ]
    .join("; ")
}

/// The CSP of a self-contained page with inline `<script>` and `<style>` blocks (the API docs
/// page): each block is allowed by its SHA-256 hash, nothing else runs; fetches only to this origin.
pub fn inline_page_csp(html: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hashes = |tag: &str| -> Vec<String> {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        html.split(&open)
            .skip(1)
            .filter_map(|rest| rest.split_once(&close).map(|(body, _)| body))
            .map(|body| {
                let digest = sha2::Sha256::digest(body.as_bytes());
                format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
            })
            .collect()
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'; object-src 'none'",
        hashes("script").join(" "),
        hashes("style").join(" ")
    )
}

/// The headers of every app page: CSP, no caching, no referrer (an invitation link carries its
/// code in the path), no framing, camera/microphone/screen only for this origin.
fn page_headers(csp: &HeaderValue) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(HTML_CACHE));
    h.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static(
            "camera=(self), microphone=(self), display-capture=(self), geolocation=(), payment=()",
        ),
    );
    h.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    h
}

/// The `/app` routes (stateless: the CSP is fixed at start from the configured hosts).
pub fn router<S: Clone + Send + Sync + 'static>(csp: String) -> Router<S> {
    let csp = Arc::new(HeaderValue::from_str(&csp).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")));
    let page = {
        let csp = csp.clone();
        move || {
            let csp = csp.clone();
            async move { (page_headers(&csp), index_html()).into_response() }
        }
    };
    let any = {
        let csp = csp.clone();
        move |Path(path): Path<String>| {
            let csp = csp.clone();
            async move { app_path(&path, &csp) }
        }
    };
    Router::new().route(APP_PREFIX, get(page.clone())).route("/app/", get(page)).route("/app/{*path}", get(any))
}

fn app_path(path: &str, csp: &HeaderValue) -> Response {
    if let Some(name) = path.strip_prefix("assets/") {
        // Only real files: no `..`, no folders, nothing that is not in the build.
        return match Asset::get(&format!("assets/{name}")) {
            Some(a) => (
                [
                    (header::CONTENT_TYPE, a.content_type()),
                    (header::CACHE_CONTROL, ASSET_CACHE),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                a.bytes,
            )
                .into_response(),
            None => crate::api::error::problem(StatusCode::NOT_FOUND, "no such asset", None),
        };
    }
    (page_headers(csp), index_html()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_is_embedded_with_hashed_names() {
        let html = std::str::from_utf8(index_html()).unwrap();
        let mut referenced = 0;
        for a in Asset::all().filter(|a| a.path.starts_with("assets/")) {
            let name = a.path.trim_start_matches("assets/");
            // name-HASH.ext: esbuild's hash (8 base32 chars) or the icon's hex digest.
            let stem = name.rsplit_once('.').unwrap().0;
            let hash = stem.rsplit_once('-').map(|(_, h)| h).unwrap_or_default();
            assert!(hash.len() >= 8 && hash.chars().all(|c| c.is_ascii_alphanumeric()), "{name} has no content hash");
            if html.contains(&format!("/app/assets/{name}")) {
                referenced += 1;
            }
        }
        assert!(referenced >= 3, "index.html names the script, the stylesheet and the icon: {html}");
        assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style: {html}");
    }

    #[test]
    fn csp_allows_only_this_origin_the_janus_hosts_and_the_authority() {
        let csp = content_security_policy(
            ["http://127.0.0.1:8088/janus", "ws://127.0.0.1:8188", "http://127.0.0.1:8088/janus"],
            Some("https://login.microsoftonline.com/tenant-id"),
        );
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert!(
            csp.contains(
                "connect-src 'self' http://127.0.0.1:8088 ws://127.0.0.1:8188 https://login.microsoftonline.com;"
            ),
            "{csp}"
        );
        assert!(csp.contains("frame-src https://login.microsoftonline.com;"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        let local = content_security_policy([], None);
        assert!(local.contains("connect-src 'self';") && local.contains("frame-src 'none'"), "{local}");
    }

    #[test]
    fn origins_keep_scheme_host_and_port() {
        assert_eq!(origin("wss://janus-1.example.org/ws").as_deref(), Some("wss://janus-1.example.org"));
        assert_eq!(origin("http://[::1]:8088/janus").as_deref(), Some("http://[::1]:8088"));
        assert_eq!(origin("not a url"), None);
    }
}
