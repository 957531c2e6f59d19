//! One [`Config`] read from the environment (Functions app settings) at start, validated, with
//! secrets redacted in `Debug`. Nothing is required for the local default.

use std::{collections::HashMap, fmt, net::SocketAddr, path::PathBuf, time::Duration as StdDuration};

use chrono::Duration;

use crate::domain::BookingPolicy;

mod ice;
pub use ice::{IceConfig, IceTransportPolicy, IceUrlKind, TurnUrls, ice_url_kind};

/// A secret value: shown as `***` in logs and `Debug`. Shared, so copies (the API state is
/// copied for every request) allocate nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(std::sync::Arc<str>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into().into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A configuration value that could not be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// Which store backend.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreKind {
    Sqlite,
    Cosmos(CosmosConfig),
}

/// Cosmos DB settings (`STORE=cosmos`).
#[derive(Debug, Clone, PartialEq)]
pub struct CosmosConfig {
    /// `COSMOS_ENDPOINT`, e.g. `https://suroga.documents.azure.com:443/`.
    pub endpoint: String,
    /// `COSMOS_DATABASE` (default `suroga`).
    pub database: String,
    /// `COSMOS_CONTAINER` (default `rooms`): rooms, bookings and their idempotency keys.
    pub container: String,
    /// `COSMOS_OPS_CONTAINER` (default `ops`): operations log, markers, state.
    pub ops_container: String,
    /// `COSMOS_KEY`: an account key, only as an explicit development option.
    pub key: Option<Secret>,
    /// `COSMOS_REGION` (default `West Europe`): the preferred region.
    pub region: String,
    /// `COSMOS_CREDENTIAL`: which Entra ID credential to use when `COSMOS_KEY` is unset.
    pub credential: CosmosCredentialKind,
}

/// The Entra ID credential the Cosmos backend uses (`COSMOS_CREDENTIAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CosmosCredentialKind {
    /// `managed-identity`: the Function App's managed identity. The default when
    /// `IDENTITY_ENDPOINT` is set, which App Service and Functions do.
    ManagedIdentity,
    /// `developer`: the Azure CLI / Azure Developer CLI login of whoever runs the binary.
    /// The default everywhere else.
    DeveloperTools,
}

/// Which fleet of Janus hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetKind {
    Local,
    Static,
    Azure,
}

/// A Janus host given in configuration (`JANUS_HOSTS`, for `FLEET=static` and `FLEET=azure`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub name: String,
    /// Backend URL of Janus's HTTP API (`http://10.0.0.4:8088/janus`), used by the server.
    pub backend_url: String,
    /// Public Janus HTTP API URL given to clients.
    pub public_http_url: String,
    /// Public Janus WebSocket URL given to clients.
    pub public_ws_url: String,
    /// Concurrent sessions this host takes (default 20).
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// Azure VM resource group (`FLEET=azure`).
    #[serde(default)]
    pub resource_group: Option<String>,
    /// Azure VM name (`FLEET=azure`).
    #[serde(default)]
    pub vm_name: Option<String>,
}

fn default_capacity() -> u32 {
    20
}

/// How the fleet scheduler runs hosts (`FLEET_*`, `ALERT_WEBHOOK_URL`, `AZURE_SUBSCRIPTION_ID`).
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSettings {
    /// `FLEET_LEAD_MINUTES` (30): a host is on this long before its first session starts.
    pub lead: Duration,
    /// `FLEET_GRACE_MINUTES` (10): a host stays on this long after its last session ends.
    pub grace: Duration,
    /// `FLEET_KEEP_WARM_MINUTES` (30): gaps between sessions shorter than this keep the host on.
    pub keep_warm: Duration,
    /// `FLEET_MAX_HOSTS` (unset: no limit): most hosts on at the same time.
    pub max_hosts: Option<usize>,
    /// `FLEET_OVERRUN_LIMIT_MINUTES` (60): a session still occupied after its end keeps its host
    /// on until it empties or this long after the end has passed.
    pub overrun_limit: Duration,
    /// `FLEET_LOCAL_HOSTS` (1): how many local Janus hosts `FLEET=local` runs (1 to 16).
    pub local_hosts: usize,
    /// `ALERT_WEBHOOK_URL` (unset: alerts go to the log and the operations log only):
    /// a Slack-compatible incoming webhook that gets `{"text": ...}`.
    pub alert_webhook_url: Option<Secret>,
    /// `AZURE_SUBSCRIPTION_ID`: the subscription of the Janus VMs (required for `FLEET=azure`).
    pub azure_subscription_id: Option<String>,
    /// `FLEET_POWER_CACHE_SECONDS` (10; 0 turns the cache off): how old a host's power state may
    /// be when the API reads it. The reconciler always asks the backend itself.
    pub power_cache: Duration,
    /// `FLEET_RELEASE_EARLY` (on): a host whose sessions have all ended early (everyone left)
    /// is deallocated on the next tick instead of at the booked end plus grace.
    pub release_early: bool,
}

impl Default for FleetSettings {
    fn default() -> Self {
        Self {
            lead: Duration::minutes(30),
            grace: Duration::minutes(10),
            keep_warm: Duration::minutes(30),
            max_hosts: None,
            overrun_limit: Duration::minutes(60),
            local_hosts: 1,
            alert_webhook_url: None,
            azure_subscription_id: None,
            power_cache: Duration::seconds(10),
            release_early: true,
        }
    }
}

/// Outgoing webhooks (`WEBHOOK_URL`, `WEBHOOK_SECRET`, `WEBHOOK_MAX_AGE_MINUTES`).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// `WEBHOOK_URL`: the one endpoint every event goes to (a secret: URLs often carry tokens).
    pub url: Secret,
    /// `WEBHOOK_SECRET`: `whsec_` + base64 of the signing key (Standard Webhooks).
    pub secret: Secret,
    /// `WEBHOOK_MAX_AGE_MINUTES` (1440): an event not delivered this long after it entered the
    /// outbox is dead-lettered.
    pub max_age: Duration,
}

/// Default of `WEBHOOK_MAX_AGE_MINUTES`: a day of retries.
pub const DEFAULT_WEBHOOK_MAX_AGE_MINUTES: i64 = 24 * 60;

/// The signing key of a Standard Webhooks secret (`whsec_` + base64); `None` when malformed.
pub fn webhook_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let b64 = secret.strip_prefix("whsec_")?;
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

/// Authentication settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `AUTH_HS256_SECRET`: local tokens. Generated into the data dir when unset and no issuer is set.
    pub hs256_secret: Option<Secret>,
    /// `AUTH_ISSUER`: Entra ID issuer (RS256 via the issuer's JWKS).
    pub issuer: Option<String>,
    /// `AUTH_AUDIENCE`.
    pub audience: Option<String>,
    /// `AUTH_JWKS_URL`: overrides discovery from the issuer.
    pub jwks_url: Option<String>,
    /// `AUTH_ADMIN_ROLE` (default `admin`).
    pub admin_role: String,
    /// `AUTH_ALLOW_LOCAL_TOKENS` (default false): with an issuer configured, also accept local
    /// HS256 tokens signed with `AUTH_HS256_SECRET`. Without an issuer local tokens are always on.
    pub allow_local_tokens: bool,
    /// `AUTH_SCOPES` (default `access_as_user`): delegated scopes; an issuer's token must carry
    /// one of them in `scp`, or one of [`Self::app_roles`] (or the admin role) in `roles`.
    pub scopes: Vec<String>,
    /// `AUTH_APP_ROLES` (default none): app roles that admit an issuer's token without a scope
    /// (application callers with the client-credentials flow).
    pub app_roles: Vec<String>,
    /// `AUTH_JWKS_MAX_STALE_HOURS` (48): cached signing keys stop verifying tokens this long after
    /// the last successful JWKS fetch; until then they serve while the issuer cannot be reached.
    pub jwks_max_stale: Duration,
}

impl Default for AuthConfig {
    /// Local tokens only, with the defaults of every setting.
    fn default() -> Self {
        Self {
            hs256_secret: None,
            issuer: None,
            audience: None,
            jwks_url: None,
            admin_role: "admin".into(),
            allow_local_tokens: false,
            scopes: vec!["access_as_user".into()],
            app_roles: vec![],
            jwks_max_stale: Duration::hours(48),
        }
    }
}

/// The largest value of a `QUOTA_*` setting: a user's ledger holds one entry per counted item and
/// stays one small document.
pub const MAX_QUOTA: i64 = 1000;

/// Where Azure App Service's front end names the client's address (see [`Config::client_address_header`]).
pub const DEFAULT_CLIENT_ADDRESS_HEADER: &str = "x-client-ip";

/// Per-caller request limits of one instance (`RATE_LIMIT_*`). A rate of 0 turns that limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// `RATE_LIMIT_USER_PER_MINUTE` (300): sustained requests per minute of one authenticated user.
    pub user_per_minute: u32,
    /// `RATE_LIMIT_USER_BURST` (100): requests one user may send at once before the rate applies.
    pub user_burst: u32,
    /// `RATE_LIMIT_ANONYMOUS_PER_MINUTE` (60): sustained requests per minute from one client
    /// address without a valid token (health, the OpenAPI document, the docs page, bad tokens).
    pub anonymous_per_minute: u32,
    /// `RATE_LIMIT_ANONYMOUS_BURST` (30).
    pub anonymous_burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self { user_per_minute: 300, user_burst: 100, anonymous_per_minute: 60, anonymous_burst: 30 }
    }
}

/// Everything the service reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `SUROGA_ADDR` (default `127.0.0.1:7071`); under the Functions host
    /// `FUNCTIONS_CUSTOMHANDLER_PORT` wins and the address is `127.0.0.1:<port>`.
    pub addr: SocketAddr,
    /// True when started by the Functions host (`FUNCTIONS_CUSTOMHANDLER_PORT` set): timers
    /// then come from the host, not from the in-process scheduler.
    pub under_functions_host: bool,
    /// `SUROGA_DATA_DIR` (default `./data`).
    pub data_dir: PathBuf,
    pub store: StoreKind,
    pub auth: AuthConfig,
    pub fleet: FleetKind,
    /// `JANUS_HOSTS`: JSON list of [`HostConfig`].
    pub hosts: Vec<HostConfig>,
    /// Scheduler policy, alerts and the Azure subscription.
    pub fleet_settings: FleetSettings,
    /// `JANUS_API_SECRET` (generated for local hosts).
    pub janus_api_secret: Option<Secret>,
    /// `JANUS_ADMIN_KEY` (generated for local hosts).
    pub janus_admin_key: Option<Secret>,
    /// `JANUS_TOKEN_SECRET` (generated for local hosts).
    pub janus_token_secret: Option<Secret>,
    /// `JANUS_EVENTS_SECRET` (generated for local hosts; required for `static` and `azure`): the
    /// password Janus's event handler sends (basic auth, user `janus`) to `POST /janus/events`.
    pub janus_events_secret: Option<Secret>,
    /// Outgoing webhooks; `None` when `WEBHOOK_URL` is unset (no events are written then).
    pub webhook: Option<WebhookConfig>,
    /// `JANUS_TOKEN_ALGORITHM`: `hmac-sha1` (Janus 1.1.x, default) or `hmac-sha256`.
    pub janus_token_algorithm: String,
    /// `JANUS_CONNECT_TIMEOUT_MS` (default 2000).
    pub janus_connect_timeout: StdDuration,
    /// `JANUS_REQUEST_TIMEOUT_MS` (default 5000).
    pub janus_request_timeout: StdDuration,
    /// `SESSION_GRACE_MINUTES` (default 5): how long a session (its Janus room and its tokens)
    /// outlives the booked end; never past the start of the room's next booking.
    pub session_grace: Duration,
    /// `PUBLIC_BASE_URL` (default `http://<listen address>`): the app's public address, without a
    /// trailing slash; invitation links are `<it>/app/i/<code>`.
    pub public_base_url: String,
    /// Booking rules: `MAX_SESSION_MINUTES` (480), `MIN_CANCEL_NOTICE_MINUTES` (0),
    /// `PASSWORD_REVEAL_MINUTES` (15), `BOOKING_HORIZON_DAYS` (180).
    pub policy: BookingPolicy,
    /// Per-caller request limits.
    pub rate_limits: RateLimitSettings,
    /// Per-user quotas kept in the store: `QUOTA_LIVE_BOOKINGS_PER_USER` (20),
    /// `QUOTA_ROOMS_PER_USER_PER_DAY` (50); 0 turns one off.
    pub quotas: crate::sessions::QuotaSettings,
    /// `CORS_ALLOWED_ORIGINS` (default none): browser origins (`https://app.example.com`) that
    /// may call the API from another site. Without any, browsers keep cross-site calls out.
    pub cors_allowed_origins: Vec<String>,
    /// `CLIENT_ADDRESS_HEADER` (default `X-Client-IP`): under the Functions host, the request
    /// header in which the platform's front end names the client's address (rate limits of
    /// anonymous callers); `X-Forwarded-For` is the fallback.
    pub client_address_header: axum::http::HeaderName,
    /// `LOG_FORMAT`: `json` (default) or `text`.
    pub log_json: bool,
    /// The web client's sign-in and timing (`AUTH_CLIENT_ID`, `WEB_*`; see [`crate::web::settings`]).
    pub web: crate::web::WebSettings,
    /// What browsers get for ICE: `TURN_URLS`, `TURN_SHARED_SECRET`, `ICE_TRANSPORT_POLICY`.
    pub ice: IceConfig,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads settings from a map (tests pass their own).
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        refuse_unresolved_references(env)?;
        let get = |k: &str| env.get(k).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let secret = |k: &str| get(k).map(Secret::new);
        let minutes = |k: &str, default: i64| -> Result<Duration, ConfigError> {
            match get(k) {
                None => Ok(Duration::minutes(default)),
                Some(v) => v
                    .parse::<i64>()
                    .ok()
                    .filter(|m| *m >= 0)
                    .map(Duration::minutes)
                    .ok_or_else(|| ConfigError(format!("{k} must be a whole number of minutes, got {v:?}"))),
            }
        };
        let millis = |k: &str, default: u64| -> Result<StdDuration, ConfigError> {
            match get(k) {
                None => Ok(StdDuration::from_millis(default)),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|m| *m > 0)
                    .map(StdDuration::from_millis)
                    .ok_or_else(|| ConfigError(format!("{k} must be a positive number of milliseconds, got {v:?}"))),
            }
        };

        let (addr, under_functions_host) = match get("FUNCTIONS_CUSTOMHANDLER_PORT") {
            Some(port) => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| ConfigError(format!("FUNCTIONS_CUSTOMHANDLER_PORT must be a port, got {port:?}")))?;
                (SocketAddr::from(([127, 0, 0, 1], port)), true)
            }
            None => {
                let a = get("SUROGA_ADDR").unwrap_or_else(|| "127.0.0.1:7071".into());
                let addr = a.parse().map_err(|_| ConfigError(format!("SUROGA_ADDR must be host:port, got {a:?}")))?;
                (addr, false)
            }
        };

        let store = match get("STORE").as_deref() {
            None | Some("sqlite") => StoreKind::Sqlite,
            Some("cosmos") => StoreKind::Cosmos(CosmosConfig {
                endpoint: get("COSMOS_ENDPOINT")
                    .ok_or_else(|| ConfigError("STORE=cosmos needs COSMOS_ENDPOINT".into()))?,
                database: get("COSMOS_DATABASE").unwrap_or_else(|| "suroga".into()),
                container: get("COSMOS_CONTAINER").unwrap_or_else(|| "rooms".into()),
                ops_container: get("COSMOS_OPS_CONTAINER").unwrap_or_else(|| "ops".into()),
                key: secret("COSMOS_KEY"),
                region: get("COSMOS_REGION").unwrap_or_else(|| "West Europe".into()),
                credential: match get("COSMOS_CREDENTIAL").as_deref() {
                    Some("managed-identity") => CosmosCredentialKind::ManagedIdentity,
                    Some("developer") => CosmosCredentialKind::DeveloperTools,
                    None if get("IDENTITY_ENDPOINT").is_some() => CosmosCredentialKind::ManagedIdentity,
                    None => CosmosCredentialKind::DeveloperTools,
                    Some(other) => {
                        return Err(ConfigError(format!(
                            "COSMOS_CREDENTIAL must be managed-identity or developer, got {other:?}"
                        )));
                    }
                },
            }),
            Some(other) => return Err(ConfigError(format!("STORE must be sqlite or cosmos, got {other:?}"))),
        };

        let fleet = match get("FLEET").as_deref() {
            None | Some("local") => FleetKind::Local,
            Some("static") => FleetKind::Static,
            Some("azure") => FleetKind::Azure,
            Some(other) => return Err(ConfigError(format!("FLEET must be local, static or azure, got {other:?}"))),
        };
        let hosts: Vec<HostConfig> = match get("JANUS_HOSTS") {
            None => vec![],
            Some(j) => serde_json::from_str(&j).map_err(|e| ConfigError(format!("JANUS_HOSTS: {e}")))?,
        };
        if fleet != FleetKind::Local && hosts.is_empty() {
            return Err(ConfigError("FLEET=static and FLEET=azure need JANUS_HOSTS (a JSON list of hosts)".into()));
        }
        if fleet != FleetKind::Local && get("JANUS_API_SECRET").is_none() {
            return Err(ConfigError("FLEET=static and FLEET=azure need JANUS_API_SECRET".into()));
        }
        if fleet != FleetKind::Local && get("JANUS_EVENTS_SECRET").is_none() {
            return Err(ConfigError(
                "FLEET=static and FLEET=azure need JANUS_EVENTS_SECRET (the password of Janus's event handler)".into(),
            ));
        }
        let flag = |k: &str, default: bool| -> Result<bool, ConfigError> {
            match get(k).map(|v| v.to_ascii_lowercase()).as_deref() {
                None => Ok(default),
                Some("true" | "1" | "on" | "yes") => Ok(true),
                Some("false" | "0" | "off" | "no") => Ok(false),
                Some(_) => Err(ConfigError(format!("{k} must be true or false"))),
            }
        };

        let count =
            |k: &str, min: usize, max: usize| -> Result<Option<usize>, ConfigError> {
                match get(k) {
                    None => Ok(None),
                    Some(v) => v.parse::<usize>().ok().filter(|n| (min..=max).contains(n)).map(Some).ok_or_else(|| {
                        ConfigError(format!("{k} must be a whole number from {min} to {max}, got {v:?}"))
                    }),
                }
            };
        let whole =
            |k: &str, min: i64, max: i64, default: i64| -> Result<i64, ConfigError> {
                match get(k) {
                    None => Ok(default),
                    Some(v) => v.parse::<i64>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
                        ConfigError(format!("{k} must be a whole number from {min} to {max}, got {v:?}"))
                    }),
                }
            };
        let fleet_settings = FleetSettings {
            lead: minutes("FLEET_LEAD_MINUTES", 30)?,
            grace: minutes("FLEET_GRACE_MINUTES", 10)?,
            keep_warm: minutes("FLEET_KEEP_WARM_MINUTES", 30)?,
            max_hosts: count("FLEET_MAX_HOSTS", 1, 10_000)?,
            overrun_limit: minutes("FLEET_OVERRUN_LIMIT_MINUTES", 60)?,
            local_hosts: count("FLEET_LOCAL_HOSTS", 1, 16)?.unwrap_or(1),
            alert_webhook_url: match get("ALERT_WEBHOOK_URL") {
                None => None,
                Some(u) => match url::Url::parse(&u) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Some(Secret::new(u)),
                    // The URL carries the webhook's token: never echo it.
                    _ => return Err(ConfigError("ALERT_WEBHOOK_URL must be an http(s) URL".into())),
                },
            },
            azure_subscription_id: get("AZURE_SUBSCRIPTION_ID"),
            power_cache: Duration::seconds(whole(
                "FLEET_POWER_CACHE_SECONDS",
                0,
                300,
                FleetSettings::default().power_cache.num_seconds(),
            )?),
            release_early: flag("FLEET_RELEASE_EARLY", true)?,
        };
        if fleet == FleetKind::Azure && fleet_settings.azure_subscription_id.is_none() {
            return Err(ConfigError("FLEET=azure needs AZURE_SUBSCRIPTION_ID".into()));
        }

        let janus_token_algorithm = get("JANUS_TOKEN_ALGORITHM").unwrap_or_else(|| "hmac-sha1".into());
        if !matches!(janus_token_algorithm.as_str(), "hmac-sha1" | "hmac-sha256") {
            return Err(ConfigError(format!(
                "JANUS_TOKEN_ALGORITHM must be hmac-sha1 or hmac-sha256, got {janus_token_algorithm:?}"
            )));
        }

        let list = |k: &str| -> Option<Vec<String>> {
            get(k).map(|v| v.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        };
        let auth_defaults = AuthConfig::default();
        let auth = AuthConfig {
            hs256_secret: secret("AUTH_HS256_SECRET"),
            issuer: get("AUTH_ISSUER"),
            audience: get("AUTH_AUDIENCE"),
            jwks_url: get("AUTH_JWKS_URL"),
            admin_role: get("AUTH_ADMIN_ROLE").unwrap_or(auth_defaults.admin_role),
            allow_local_tokens: match get("AUTH_ALLOW_LOCAL_TOKENS").as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(ConfigError(format!("AUTH_ALLOW_LOCAL_TOKENS must be true or false, got {other:?}")));
                }
            },
            scopes: list("AUTH_SCOPES").unwrap_or(auth_defaults.scopes),
            app_roles: list("AUTH_APP_ROLES").unwrap_or(auth_defaults.app_roles),
            jwks_max_stale: Duration::hours(whole(
                "AUTH_JWKS_MAX_STALE_HOURS",
                1,
                24 * 30,
                auth_defaults.jwks_max_stale.num_hours(),
            )?),
        };
        if auth.issuer.is_some() != auth.audience.is_some() {
            return Err(ConfigError("AUTH_ISSUER and AUTH_AUDIENCE go together".into()));
        }
        if auth.allow_local_tokens && auth.hs256_secret.is_none() {
            return Err(ConfigError(
                "AUTH_ALLOW_LOCAL_TOKENS=true needs AUTH_HS256_SECRET (no local secret is generated when AUTH_ISSUER is set)"
                    .into(),
            ));
        }
        let limits = RateLimitSettings::default();
        let rate_limits = RateLimitSettings {
            user_per_minute: whole("RATE_LIMIT_USER_PER_MINUTE", 0, 1_000_000, limits.user_per_minute.into())? as u32,
            user_burst: whole("RATE_LIMIT_USER_BURST", 1, 1_000_000, limits.user_burst.into())? as u32,
            anonymous_per_minute: whole(
                "RATE_LIMIT_ANONYMOUS_PER_MINUTE",
                0,
                1_000_000,
                limits.anonymous_per_minute.into(),
            )? as u32,
            anonymous_burst: whole("RATE_LIMIT_ANONYMOUS_BURST", 1, 1_000_000, limits.anonymous_burst.into())? as u32,
        };
        let quota_defaults = crate::sessions::QuotaSettings::default();
        let quotas = crate::sessions::QuotaSettings {
            live_bookings_per_user: whole(
                "QUOTA_LIVE_BOOKINGS_PER_USER",
                0,
                MAX_QUOTA,
                quota_defaults.live_bookings_per_user.into(),
            )? as u32,
            rooms_per_user_per_day: whole(
                "QUOTA_ROOMS_PER_USER_PER_DAY",
                0,
                MAX_QUOTA,
                quota_defaults.rooms_per_user_per_day.into(),
            )? as u32,
        };
        let client_address_header = {
            let name = get("CLIENT_ADDRESS_HEADER").unwrap_or_else(|| DEFAULT_CLIENT_ADDRESS_HEADER.into());
            axum::http::HeaderName::try_from(name.to_ascii_lowercase())
                .map_err(|_| ConfigError(format!("CLIENT_ADDRESS_HEADER must be a header name, got {name:?}")))?
        };
        let cors_allowed_origins = list("CORS_ALLOWED_ORIGINS").unwrap_or_default();
        for origin in &cors_allowed_origins {
            if !is_origin(origin) {
                return Err(ConfigError(format!(
                    "CORS_ALLOWED_ORIGINS must list origins like https://app.example.com (scheme, host and \
                     optional port; no path, no *), got {origin:?}"
                )));
            }
        }

        let public_base_url = match get("PUBLIC_BASE_URL") {
            None => format!("http://{addr}"),
            Some(v) => match url::Url::parse(&v) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() && u.query().is_none() => {
                    v.trim_end_matches('/').to_string()
                }
                _ => {
                    return Err(ConfigError(format!(
                        "PUBLIC_BASE_URL must be an http(s) URL without a query, like https://stream.example.com; got {v:?}"
                    )));
                }
            },
        };

        let webhook = match (get("WEBHOOK_URL"), secret("WEBHOOK_SECRET")) {
            (None, None) => None,
            (Some(u), Some(secret)) => {
                if !matches!(url::Url::parse(&u), Ok(parsed) if matches!(parsed.scheme(), "http" | "https")) {
                    // The URL may carry a token: never echo it.
                    return Err(ConfigError("WEBHOOK_URL must be an http(s) URL".into()));
                }
                if webhook_key(secret.expose()).is_none() {
                    return Err(ConfigError(
                        "WEBHOOK_SECRET must be whsec_ followed by the base64 of a 24 to 64 byte key".into(),
                    ));
                }
                let max_age = minutes("WEBHOOK_MAX_AGE_MINUTES", DEFAULT_WEBHOOK_MAX_AGE_MINUTES)?;
                if max_age <= Duration::zero() {
                    return Err(ConfigError("WEBHOOK_MAX_AGE_MINUTES must be positive".into()));
                }
                Some(WebhookConfig { url: Secret::new(u), secret, max_age })
            }
            (Some(_), None) => return Err(ConfigError("WEBHOOK_URL needs WEBHOOK_SECRET".into())),
            (None, Some(_)) => return Err(ConfigError("WEBHOOK_SECRET needs WEBHOOK_URL".into())),
        };

        let max_session = minutes("MAX_SESSION_MINUTES", 480)?;
        if max_session <= Duration::zero() {
            return Err(ConfigError("MAX_SESSION_MINUTES must be positive".into()));
        }

        let web = crate::web::WebSettings::from_map(env, &auth).map_err(|e| ConfigError(e.0))?;
        // The names the fleet gives its hosts: JANUS_HOSTS's, or local-1.. (fleet::local).
        let host_names: Vec<String> = match fleet {
            FleetKind::Local => (1..=fleet_settings.local_hosts).map(|i| format!("local-{i}")).collect(),
            _ => hosts.iter().map(|h| h.name.clone()).collect(),
        };
        let ice = IceConfig::from_map(env, &host_names)?;

        Ok(Config {
            addr,
            under_functions_host,
            data_dir: PathBuf::from(get("SUROGA_DATA_DIR").unwrap_or_else(|| "./data".into())),
            store,
            auth,
            fleet,
            hosts,
            fleet_settings,
            janus_api_secret: secret("JANUS_API_SECRET"),
            janus_admin_key: secret("JANUS_ADMIN_KEY"),
            janus_token_secret: secret("JANUS_TOKEN_SECRET"),
            janus_events_secret: secret("JANUS_EVENTS_SECRET"),
            webhook,
            janus_token_algorithm,
            janus_connect_timeout: millis("JANUS_CONNECT_TIMEOUT_MS", 2000)?,
            janus_request_timeout: millis("JANUS_REQUEST_TIMEOUT_MS", 5000)?,
            session_grace: minutes("SESSION_GRACE_MINUTES", 5)?,
            public_base_url,
            policy: BookingPolicy {
                max_duration: max_session,
                min_cancel_notice: minutes("MIN_CANCEL_NOTICE_MINUTES", 0)?,
                reveal_before: minutes("PASSWORD_REVEAL_MINUTES", 15)?,
                horizon: Duration::days(whole(
                    "BOOKING_HORIZON_DAYS",
                    1,
                    3650,
                    BookingPolicy::default().horizon.num_days(),
                )?),
            },
            rate_limits,
            quotas,
            cors_allowed_origins,
            client_address_header,
            log_json: get("LOG_FORMAT").as_deref() != Some("text"),
            web,
            ice,
        })
    }
}

/// True for a serialized origin (RFC 6454): `http(s)://host[:port]`, nothing after it.
fn is_origin(s: &str) -> bool {
    match url::Url::parse(s) {
        Ok(u) => {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && u.query().is_none()
                && u.fragment().is_none()
                // `Url` adds the root path; anything more (even a trailing slash) is not an origin.
                && u.path() == "/"
                && !s.ends_with('/')
        }
        Err(_) => false,
    }
}

/// Refuses settings that still hold an App Service Key Vault reference (`@Microsoft.KeyVault(...)`):
/// the platform passes the reference text through when it cannot resolve it (the secret is
/// missing, or the app's identity may not read it), and a secret used as that text would fail
/// every Janus call or every alert much later, far from the cause. The error names the settings,
/// never their values.
fn refuse_unresolved_references(env: &HashMap<String, String>) -> Result<(), ConfigError> {
    const REFERENCE: &str = "@Microsoft.KeyVault(";
    let mut unresolved: Vec<&str> = env
        .iter()
        .filter(|(_, v)| v.trim_start().get(..REFERENCE.len()).is_some_and(|p| p.eq_ignore_ascii_case(REFERENCE)))
        .map(|(k, _)| k.as_str())
        .collect();
    if unresolved.is_empty() {
        return Ok(());
    }
    unresolved.sort_unstable();
    Err(ConfigError(format!(
        "{} {} an unresolved Key Vault reference: check that the secret exists and that the app's identity \
         may read it, then refresh the references (docs/deploy.md, \"Key Vault references\")",
        unresolved.join(", "),
        if unresolved.len() == 1 { "is" } else { "are" }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_environment_is_the_local_default() {
        let c = Config::from_map(&HashMap::new()).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:7071");
        assert_eq!(c.store, StoreKind::Sqlite);
        assert_eq!(c.fleet, FleetKind::Local);
        assert!(!c.under_functions_host);
        assert_eq!(c.public_base_url, "http://127.0.0.1:7071");
        assert_eq!(c.session_grace, Duration::minutes(5));
    }

    #[test]
    fn public_base_url_is_an_http_url_without_its_trailing_slash() {
        let with = |v: &str| Config::from_map(&HashMap::from([("PUBLIC_BASE_URL".to_string(), v.to_string())]));
        assert_eq!(with("https://stream.example.com/").unwrap().public_base_url, "https://stream.example.com");
        assert_eq!(with("https://example.com/suroga").unwrap().public_base_url, "https://example.com/suroga");
        for bad in ["stream.example.com", "ftp://example.com", "https://example.com/?a=1"] {
            let e = with(bad).unwrap_err();
            assert!(e.0.contains("PUBLIC_BASE_URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn functions_port_wins_and_binds_loopback() {
        let env = HashMap::from([("FUNCTIONS_CUSTOMHANDLER_PORT".to_string(), "41234".to_string())]);
        let c = Config::from_map(&env).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:41234");
        assert!(c.under_functions_host);
    }

    #[test]
    fn secrets_are_redacted() {
        let env = HashMap::from([("AUTH_HS256_SECRET".to_string(), "hunter2hunter2".to_string())]);
        let c = Config::from_map(&env).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn fleet_settings_default_to_the_design_values() {
        let f = Config::from_map(&HashMap::new()).unwrap().fleet_settings;
        assert_eq!(f, FleetSettings::default());
        assert_eq!(
            (f.lead, f.grace, f.keep_warm),
            (Duration::minutes(30), Duration::minutes(10), Duration::minutes(30))
        );
        assert_eq!((f.max_hosts, f.overrun_limit, f.local_hosts), (None, Duration::minutes(60), 1));
    }

    #[test]
    fn fleet_settings_are_read() {
        let c = Config::from_map(&env(&[
            ("FLEET_LEAD_MINUTES", "20"),
            ("FLEET_GRACE_MINUTES", "5"),
            ("FLEET_KEEP_WARM_MINUTES", "0"),
            ("FLEET_MAX_HOSTS", "3"),
            ("FLEET_OVERRUN_LIMIT_MINUTES", "90"),
            ("FLEET_LOCAL_HOSTS", "2"),
            ("ALERT_WEBHOOK_URL", "https://hooks.example.test/T0/B0/secret-token"),
        ]))
        .unwrap();
        let f = &c.fleet_settings;
        assert_eq!((f.lead, f.grace, f.keep_warm), (Duration::minutes(20), Duration::minutes(5), Duration::zero()));
        assert_eq!((f.max_hosts, f.overrun_limit, f.local_hosts), (Some(3), Duration::minutes(90), 2));
        assert_eq!(f.alert_webhook_url.as_ref().unwrap().expose(), "https://hooks.example.test/T0/B0/secret-token");
        assert!(!format!("{c:?}").contains("secret-token"), "the webhook URL is a secret");
    }

    #[test]
    fn bad_fleet_settings_name_the_setting() {
        for (k, v) in [
            ("FLEET_LEAD_MINUTES", "-5"),
            ("FLEET_MAX_HOSTS", "0"),
            ("FLEET_LOCAL_HOSTS", "17"),
            ("FLEET_OVERRUN_LIMIT_MINUTES", "soon"),
            ("ALERT_WEBHOOK_URL", "not a url"),
        ] {
            let e = Config::from_map(&env(&[(k, v)])).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }

    #[test]
    fn azure_needs_a_subscription() {
        let hosts = r#"[{"name":"j1","backend_url":"http://10.0.0.4:8088/janus","public_http_url":"https://j1/janus","public_ws_url":"wss://j1/ws","resource_group":"rg","vm_name":"vm1"}]"#;
        let base =
            [("FLEET", "azure"), ("JANUS_HOSTS", hosts), ("JANUS_API_SECRET", "s"), ("JANUS_EVENTS_SECRET", "e")];
        let e = Config::from_map(&env(&base)).unwrap_err().to_string();
        assert!(e.contains("AZURE_SUBSCRIPTION_ID"), "{e}");
        let mut with = base.to_vec();
        with.push(("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000"));
        let c = Config::from_map(&env(&with)).unwrap();
        assert_eq!(c.fleet_settings.azure_subscription_id.as_deref(), Some("00000000-0000-0000-0000-000000000000"));
    }

    #[test]
    fn cosmos_credential_is_managed_identity_under_app_service_and_developer_elsewhere() {
        let cosmos = |extra: &[(&str, &str)]| {
            let mut env = HashMap::from([
                ("STORE".to_string(), "cosmos".to_string()),
                ("COSMOS_ENDPOINT".to_string(), "https://a.documents.azure.com:443/".to_string()),
            ]);
            env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            match Config::from_map(&env).map(|c| c.store) {
                Ok(StoreKind::Cosmos(c)) => Ok(c.credential),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(cosmos(&[]), Ok(CosmosCredentialKind::DeveloperTools));
        assert_eq!(
            cosmos(&[("IDENTITY_ENDPOINT", "http://127.0.0.1:41000/msi")]),
            Ok(CosmosCredentialKind::ManagedIdentity)
        );
        assert_eq!(
            cosmos(&[("IDENTITY_ENDPOINT", "http://x"), ("COSMOS_CREDENTIAL", "developer")]),
            Ok(CosmosCredentialKind::DeveloperTools)
        );
        assert!(cosmos(&[("COSMOS_CREDENTIAL", "password")]).unwrap_err().contains("COSMOS_CREDENTIAL"));
    }

    #[test]
    fn hardening_settings_default_and_are_read() {
        let c = Config::from_map(&HashMap::new()).unwrap();
        assert_eq!(c.rate_limits, RateLimitSettings::default());
        assert!(c.cors_allowed_origins.is_empty());
        assert_eq!(c.client_address_header, "x-client-ip");
        assert_eq!(c.policy.horizon, Duration::days(180));
        assert_eq!(c.fleet_settings.power_cache, Duration::seconds(10));
        assert!(!c.auth.allow_local_tokens);
        assert_eq!(c.auth.scopes, vec!["access_as_user".to_string()]);
        assert!(c.auth.app_roles.is_empty());
        assert_eq!(c.auth.jwks_max_stale, Duration::hours(48));

        let c = Config::from_map(&env(&[
            ("RATE_LIMIT_USER_PER_MINUTE", "0"),
            ("RATE_LIMIT_ANONYMOUS_BURST", "5"),
            ("CORS_ALLOWED_ORIGINS", "https://a.example.test, http://localhost:5173"),
            ("BOOKING_HORIZON_DAYS", "30"),
            ("FLEET_POWER_CACHE_SECONDS", "0"),
            ("AUTH_ISSUER", "https://login.example.test/t/v2.0"),
            ("AUTH_AUDIENCE", "api://x"),
            ("AUTH_HS256_SECRET", "0123456789abcdef0123456789abcdef"),
            ("AUTH_ALLOW_LOCAL_TOKENS", "true"),
            ("AUTH_SCOPES", "Bookings.ReadWrite access_as_user"),
            ("AUTH_APP_ROLES", "Suroga.Daemon,Suroga.Ops"),
            ("AUTH_JWKS_MAX_STALE_HOURS", "12"),
            ("CLIENT_ADDRESS_HEADER", "X-Azure-ClientIP"),
        ]))
        .unwrap();
        assert_eq!((c.rate_limits.user_per_minute, c.rate_limits.anonymous_burst), (0, 5));
        assert_eq!(c.cors_allowed_origins, vec!["https://a.example.test", "http://localhost:5173"]);
        assert_eq!((c.policy.horizon, c.fleet_settings.power_cache), (Duration::days(30), Duration::zero()));
        assert!(c.auth.allow_local_tokens);
        assert_eq!(c.auth.scopes, vec!["Bookings.ReadWrite", "access_as_user"]);
        assert_eq!(c.auth.app_roles, vec!["Suroga.Daemon", "Suroga.Ops"]);
        assert_eq!(c.auth.jwks_max_stale, Duration::hours(12));
        assert_eq!(c.client_address_header, "x-azure-clientip");
    }

    #[test]
    fn bad_hardening_settings_name_the_setting() {
        for (k, v) in [
            ("CORS_ALLOWED_ORIGINS", "*"),
            ("CORS_ALLOWED_ORIGINS", "https://a.example.test/"),
            ("CORS_ALLOWED_ORIGINS", "https://a.example.test/app"),
            ("CORS_ALLOWED_ORIGINS", "a.example.test"),
            ("RATE_LIMIT_USER_BURST", "0"),
            ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "-1"),
            ("CLIENT_ADDRESS_HEADER", "X Client"),
            ("BOOKING_HORIZON_DAYS", "0"),
            ("FLEET_POWER_CACHE_SECONDS", "3600"),
            ("AUTH_ALLOW_LOCAL_TOKENS", "yes"),
            ("AUTH_ALLOW_LOCAL_TOKENS", "true"),
            ("AUTH_JWKS_MAX_STALE_HOURS", "0"),
        ] {
            let e = Config::from_map(&env(&[(k, v)])).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }

    #[test]
    fn quotas_default_are_read_and_bounded() {
        let c = Config::from_map(&HashMap::new()).unwrap();
        assert_eq!((c.quotas.live_bookings_per_user, c.quotas.rooms_per_user_per_day), (20, 50));
        let c = Config::from_map(&env(&[("QUOTA_LIVE_BOOKINGS_PER_USER", "0"), ("QUOTA_ROOMS_PER_USER_PER_DAY", "7")]))
            .unwrap();
        assert_eq!((c.quotas.live_bookings_per_user, c.quotas.rooms_per_user_per_day), (0, 7));
        for (k, v) in [
            ("QUOTA_LIVE_BOOKINGS_PER_USER", "-1"),
            ("QUOTA_LIVE_BOOKINGS_PER_USER", "1001"),
            ("QUOTA_ROOMS_PER_USER_PER_DAY", "many"),
        ] {
            let e = Config::from_map(&env(&[(k, v)])).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }

    #[test]
    fn an_unresolved_key_vault_reference_is_refused_naming_the_setting() {
        let reference = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/janus-api-secret/)";
        let e =
            Config::from_map(&env(&[("JANUS_API_SECRET", reference), ("STORE", "sqlite")])).unwrap_err().to_string();
        assert!(e.contains("JANUS_API_SECRET") && e.contains("Key Vault"), "{e}");
        assert!(!e.contains("kv.vault.azure.net"), "the reference itself is not echoed: {e}");
        let two =
            [("ALERT_WEBHOOK_URL", " @microsoft.keyvault(VaultName=kv;SecretName=x)"), ("JANUS_ADMIN_KEY", reference)];
        let e = Config::from_map(&env(&two)).unwrap_err().to_string();
        assert!(e.contains("ALERT_WEBHOOK_URL, JANUS_ADMIN_KEY are"), "{e}");
        // A resolved value is just a value.
        assert!(Config::from_map(&env(&[("JANUS_API_SECRET", "resolved-secret")])).is_ok());
    }

    #[test]
    fn webhooks_need_an_http_url_and_a_standard_webhooks_secret() {
        assert_eq!(Config::from_map(&HashMap::new()).unwrap().webhook, None);
        let key = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let c = Config::from_map(&env(&[
            ("WEBHOOK_URL", "https://hooks.example.test/x?token=t0k3n"),
            ("WEBHOOK_SECRET", key),
        ]))
        .unwrap();
        let w = c.webhook.clone().unwrap();
        assert_eq!(w.max_age, Duration::minutes(DEFAULT_WEBHOOK_MAX_AGE_MINUTES));
        assert_eq!(webhook_key(w.secret.expose()).unwrap().len(), 24);
        assert!(!format!("{c:?}").contains("t0k3n") && !format!("{c:?}").contains(key));
        for bad in [
            vec![("WEBHOOK_URL", "https://h.test/")],
            vec![("WEBHOOK_SECRET", key)],
            vec![("WEBHOOK_URL", "ftp://h.test/"), ("WEBHOOK_SECRET", key)],
            vec![("WEBHOOK_URL", "https://h.test/"), ("WEBHOOK_SECRET", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
            vec![("WEBHOOK_URL", "https://h.test/"), ("WEBHOOK_SECRET", "whsec_c2hvcnQ=")],
            vec![("WEBHOOK_URL", "https://h.test/"), ("WEBHOOK_SECRET", key), ("WEBHOOK_MAX_AGE_MINUTES", "0")],
        ] {
            let e = Config::from_map(&env(&bad)).unwrap_err().to_string();
            assert!(e.contains("WEBHOOK_"), "{bad:?}: {e}");
            assert!(!e.contains("MfKQ9r8"), "the secret is never echoed: {e}");
        }
    }

    #[test]
    fn early_release_is_on_unless_switched_off() {
        assert!(Config::from_map(&HashMap::new()).unwrap().fleet_settings.release_early);
        assert!(!Config::from_map(&env(&[("FLEET_RELEASE_EARLY", "false")])).unwrap().fleet_settings.release_early);
        let e = Config::from_map(&env(&[("FLEET_RELEASE_EARLY", "maybe")])).unwrap_err().to_string();
        assert!(e.contains("FLEET_RELEASE_EARLY"), "{e}");
    }

    #[test]
    fn static_and_azure_fleets_need_the_events_secret() {
        let hosts = r#"[{"name":"j1","backend_url":"http://10.0.0.4:8088/janus","public_http_url":"https://j1/janus","public_ws_url":"wss://j1/ws"}]"#;
        let base = [("FLEET", "static"), ("JANUS_HOSTS", hosts), ("JANUS_API_SECRET", "s")];
        let e = Config::from_map(&env(&base)).unwrap_err().to_string();
        assert!(e.contains("JANUS_EVENTS_SECRET"), "{e}");
        let mut with = base.to_vec();
        with.push(("JANUS_EVENTS_SECRET", "hunter22"));
        let c = Config::from_map(&env(&with)).unwrap();
        assert_eq!(c.janus_events_secret.as_ref().unwrap().expose(), "hunter22");
        assert!(!format!("{c:?}").contains("hunter22"));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let env = HashMap::from([("STORE".to_string(), "postgres".to_string())]);
        assert!(Config::from_map(&env).unwrap_err().to_string().contains("STORE"));
    }
}
