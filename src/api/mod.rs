//! The HTTP API (axum): one router for the REST API under `/api/v1`, the OpenAPI document and the
//! docs page, and `GET /` for the Functions host's readiness probe.
//!
//! Each resource module ([`rooms`], [`bookings`], [`invitations`], [`health`], [`hosts`],
//! [`janus_events`] (Janus's own reports), [`webhooks`] (the outbox for operators)) exposes its own `router()`
//! built with `utoipa-axum`, so the route table, the OpenAPI document and the generated
//! `handlers/*/function.json` come from the same code and cannot drift.
//!
//! Every list endpoint pages through [`paging`] (`limit`, `cursor`, `Link: <...>; rel="next"`).
//!
//! Around every route: [`limits`] (per-caller rate limits, 429), the access log, [`headers::cors`]
//! for the allowed origins; [`headers::security_headers`] wraps the whole service (see
//! [`crate::app::App::router`]).

pub mod bookings;
pub mod client;
pub mod docs;
pub mod error;
pub mod extract;
pub mod headers;
pub mod health;
pub mod hosts;
pub mod invitations;
pub mod janus_events;
pub mod limits;
pub mod paging;
pub mod rooms;
pub mod webhooks;

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{DefaultBodyLimit, FromRef, Request},
    http::{HeaderName, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::{
    auth::Authenticator,
    clock::Clock,
    config::{Config, RateLimitSettings, Secret},
    fleet::control::Fleet,
    sessions::Sessions,
    store::Store,
    webhooks::Webhooks,
};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Where the REST API lives; the Functions host's route prefix is `api`.
pub const API_PREFIX: &str = "/api/v1";

/// Everything a handler needs, behind ONE reference count: the router clones the state for each
/// request (every `State` extractor, every middleware given it), and dropping a clone whose
/// fields each held their own count took 1.9% of the server's samples under sustained bookings
/// (`perf`: `drop_in_place<AppState>`, the busiest symbol on the runtime's threads).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    /// Reads (lists, details). Every write that Janus must follow goes through `sessions`.
    pub store: Arc<dyn Store>,
    /// The sessions layer: bookings, rooms, invitations, joins.
    pub sessions: Arc<Sessions>,
    /// The hosts for the operators' endpoints: power states, overrides, dry-run plans.
    pub fleet_ops: Arc<Fleet>,
    pub auth: Arc<Authenticator>,
    pub clock: Arc<dyn Clock>,
    /// The web client's sign-in and timing (`GET /client-config`, the pages' CSP).
    pub web: Arc<crate::web::WebSettings>,
    /// How the HTTP edge behaves: rate limits, CORS, where client addresses come from.
    pub settings: Arc<ApiSettings>,
    /// The password Janus's event handler sends to `POST /janus/events` (none: every post is 401).
    pub janus_events_secret: Option<Secret>,
    /// The webhook sender, when `WEBHOOK_URL` is set.
    pub webhooks: Option<Arc<Webhooks>>,
}

/// HTTP behaviour that comes from configuration.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Under the Functions host: client addresses come from the platform's headers (see
    /// [`limits::client_address`]) and timer routes need the host's invocation header.
    pub under_functions_host: bool,
    /// `CLIENT_ADDRESS_HEADER`: the header the platform's front end names the client in.
    pub client_address_header: HeaderName,
    /// Per-caller request limits.
    pub rate_limits: RateLimitSettings,
    /// Origins allowed to call the API from browsers on other sites.
    pub cors_allowed_origins: Vec<String>,
}

impl ApiSettings {
    /// The API's part of `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            under_functions_host: config.under_functions_host,
            client_address_header: config.client_address_header.clone(),
            rate_limits: config.rate_limits.clone(),
            cors_allowed_origins: config.cors_allowed_origins.clone(),
        }
    }
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(s: &AppState) -> Self {
        s.auth.clone()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Suroga Stream API",
        description = "Rooms and bookings for private one-to-one WebRTC sessions on Janus.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "rooms", description = "What is booked: seats, name, metadata"),
        (name = "bookings", description = "A room for a time window: a private session for its owner and one guest"),
        (name = "invitations", description = "The guest's way into a session"),
        (name = "health", description = "Service health"),
        (name = "hosts", description = "Janus hosts, their schedule and usage (operators)"),
        (name = "web", description = "The web client's configuration and its event reports"),
        (name = "janus", description = "What Janus hosts report (their event handler)"),
        (name = "webhooks", description = "The webhook outbox (operators)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::builder().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components
            .add_security_scheme("basic", SecurityScheme::Http(Http::builder().scheme(HttpAuthScheme::Basic).build()));
    }
}

/// Every route is behind [`limits::rate_limit`], so every operation may answer 429: documented
/// here once rather than in each handler, so no route can forget it. Applied to the finished
/// document ([`split_api`]): the `#[openapi]` modifiers run before the routes add their paths.
struct RateLimited;

impl utoipa::Modify for RateLimited {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, ResponseBuilder, header::HeaderBuilder};
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in operations.into_iter().flatten() {
                op.responses.responses.entry("429".into()).or_insert_with(|| {
                    RefOr::T(
                        ResponseBuilder::new()
                            .description("Too many requests from this caller; see Retry-After")
                            .header("Retry-After", HeaderBuilder::new().description(Some("Seconds to wait")).build())
                            .build(),
                    )
                });
            }
        }
    }
}

/// The API routes with their OpenAPI description (paths include `/api/v1`).
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest(
        API_PREFIX,
        OpenApiRouter::new()
            .merge(health::router())
            .merge(rooms::router())
            .merge(bookings::router())
            .merge(invitations::router())
            .merge(hosts::router())
            .merge(client::router())
            .merge(janus_events::router())
            .merge(webhooks::router()),
    )
}

/// The OpenAPI document of the API, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    split_api().1
}

/// The routes and their finished OpenAPI document (the modifiers that need every path applied).
fn split_api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa::Modify;
    let (api, mut doc) = api_router().split_for_parts();
    RateLimited.modify(&mut doc);
    (api, doc)
}

/// The whole HTTP surface: API, OpenAPI document, docs page, `GET /`, problem+json fallbacks.
pub fn router(state: AppState) -> Router {
    let (api, doc) = split_api();
    let doc = Arc::new(doc.to_pretty_json().expect("the OpenAPI document serializes"));
    let router = api
        .route("/", get(|| async { "Suroga Stream" }))
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], (*doc).clone()) }
            }),
        )
        .route("/api/docs", get(docs::page))
        .merge(crate::web::router(web_csp(&state)))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    let limits = limits::Limits {
        limiter: Arc::new(limits::RateLimiter::new(&state.settings.rate_limits)),
        state: state.clone(),
    };
    let router =
        router.layer(middleware::from_fn_with_state(limits, limits::rate_limit)).layer(middleware::from_fn(access_log));
    // Outside the limits: a preflight is answered without counting against the caller.
    let router = match headers::cors(&state.settings.cors_allowed_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}

/// The app's CSP: this origin, the Janus hosts' public URLs, the sign-in authority.
fn web_csp(state: &AppState) -> String {
    let hosts = state.fleet_ops.janus.hosts();
    let urls = hosts.iter().flat_map(|h| [h.public_http_url.as_str(), h.public_ws_url.as_str()]);
    crate::web::content_security_policy(urls, state.web.authority())
}

async fn not_found() -> Response {
    error::problem(StatusCode::NOT_FOUND, "no such route", None)
}

async fn method_not_allowed() -> Response {
    error::problem(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route", None)
}

/// Where invitation codes appear in paths: `/api/v1/invitations/<code>[/...]`.
const INVITATIONS_PATH: &str = "/api/v1/invitations/";

/// The path as logs show it: an invitation code is a bearer capability, so it is replaced.
fn loggable_path(path: &str) -> String {
    match path.strip_prefix(INVITATIONS_PATH) {
        Some(rest) => {
            let tail = rest.find('/').map_or("", |i| &rest[i..]);
            format!("{INVITATIONS_PATH}{{code}}{tail}")
        }
        None => path.to_owned(),
    }
}

/// One JSON log line per request: method, path (no query: it may carry user data; no invitation
/// code), status, time.
async fn access_log(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = loggable_path(req.uri().path());
    let invocation =
        req.headers().get("x-azure-functions-invocationid").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let res = next.run(req).await.into_response();
    let status = res.status().as_u16();
    let micros = start.elapsed().as_micros() as u64;
    if status >= 500 {
        tracing::warn!(%method, %path, status, micros, invocation, "request");
    } else if path != "/" {
        tracing::info!(%method, %path, status, micros, invocation, "request");
    }
    res
}

#[cfg(test)]
mod tests {
    use super::loggable_path;

    #[test]
    fn invitation_codes_never_reach_the_access_log() {
        assert_eq!(loggable_path("/api/v1/invitations/abc123"), "/api/v1/invitations/{code}");
        assert_eq!(loggable_path("/api/v1/invitations/abc123/join"), "/api/v1/invitations/{code}/join");
        assert_eq!(loggable_path("/api/v1/bookings/42/invitation"), "/api/v1/bookings/42/invitation");
    }
}
