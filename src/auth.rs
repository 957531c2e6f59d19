//! Authentication and authorization of API callers: `Authorization: Bearer <JWT>`.
//!
//! The map of this module:
//! - [`Authenticator`]: built once at start from [`AuthConfig`]; [`Authenticator::authenticate`]
//!   turns an `Authorization` header into a [`Caller`] or an [`AuthError`].
//! - [`Caller`] / [`AdminCaller`]: axum extractors over an `Arc<Authenticator>` in the app state
//!   (`Option<Caller>` is the optional form: no header is anonymous, a bad token is still refused).
//! - [`AuthError`]: every refusal, mapped in one place to RFC 9457 problem+json with an RFC 6750
//!   `WWW-Authenticate` challenge.
//! - Local tokens: [`local_secret`], [`load_or_create_dev_secret`], [`mint_dev_token`], [`parse_ttl`]
//!   (what `suroga token` uses).
//! - The issuer's keys: a private JWKS cache, refreshed on an unknown `kid`.
//!
//! Which tokens are accepted:
//! - **RS256** when `AUTH_ISSUER` + `AUTH_AUDIENCE` are set (Entra ID). Keys come from the issuer's
//!   JWKS (`AUTH_JWKS_URL`, or `jwks_uri` of `<issuer>/.well-known/openid-configuration`). The `iss`
//!   and `aud` checks are what bind a token to *our* tenant and app: Entra's signing keys are shared by
//!   every tenant, so a JWKS without an issuer is refused at start ([`AuthSetupError::JwksWithoutIssuer`]).
//!   Every issuer's token must also carry a delegated scope named in `AUTH_SCOPES` (in `scp`) or an
//!   app role named in `AUTH_APP_ROLES` or `AUTH_ADMIN_ROLE` (in `roles`): a token the tenant issued
//!   for this API but to an app or user the API never granted anything is refused (403).
//! - **HS256** with `iss` = `aud` = [`LOCAL_ISSUER`] when a local secret exists: `AUTH_HS256_SECRET`
//!   if set, otherwise (only when no issuer is configured) a secret generated into
//!   `<data_dir>/auth-hs256.secret`. With an issuer configured, HS256 is refused unless
//!   `AUTH_ALLOW_LOCAL_TOKENS=true` and `AUTH_HS256_SECRET` are both set: production never trusts a
//!   file it generated itself, nor a secret left over from development.
//! - Known placeholder secrets (the one in `local.settings.json.example`, `changeme`, ...) are
//!   refused at start ([`AuthSetupError::PlaceholderSecret`]).
//! - The issuer's keys are refreshed after [`JWKS_MAX_AGE_SECS`]; when refreshes fail, cached keys
//!   keep verifying for at most `AUTH_JWKS_MAX_STALE_HOURS` after the last successful fetch, then
//!   the answer is 503 until the issuer can be reached again.
//! - The token's `alg` header picks the verifier and must be exactly that verifier's algorithm; every
//!   other `alg` (`none`, `HS384`, `PS256`, ...) is refused. RSA key material is never used as an HMAC
//!   secret, so the HS256-signed-with-the-public-key confusion cannot verify.
//!   `AUTH_ISSUER` must equal the tokens' `iss` exactly: for Entra that is
//!   `https://login.microsoftonline.com/<tenant>/v2.0` for v2 access tokens (the app registration's
//!   `accessTokenAcceptedVersion: 2`) and `https://sts.windows.net/<tenant>/` for v1 ones.
//!   `AUTH_AUDIENCE` may list several values separated by commas (Entra puts the client id or the
//!   App ID URI in `aud`, depending on the token version); a token naming any of them is accepted.
//! - `exp` is required and `nbf` honoured, both with [`CLOCK_SKEW_LEEWAY_SECS`] of leeway.
//! - The user is `oid` when present, else `sub`; admin iff the configured admin role is in `roles`.
//!
//! Statuses: a client's bad or missing token is 401, a non-admin on an admin route 403. When the
//! token names a key we do not hold and the issuer's JWKS cannot be fetched, the answer is 503 (we
//! cannot tell whether the token is good; it is not the client's fault). Nothing here answers 500.

use std::{
    collections::HashMap,
    fmt,
    fs::{self, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration as StdDuration,
};

use axum::{
    extract::{FromRef, FromRequestParts, OptionalFromRequestParts},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tracing::field::Empty;

use crate::config::{AuthConfig, Secret};

/// `iss` and `aud` of local (HS256) tokens; checked on every local token.
pub const LOCAL_ISSUER: &str = "suroga-local";
/// Leeway for clock skew on `exp` and `nbf`, in seconds.
pub const CLOCK_SKEW_LEEWAY_SECS: i64 = 60;
/// At most one JWKS fetch per this many seconds, whatever `kid`s clients send.
pub const JWKS_MIN_REFRESH_SECS: i64 = 30;
/// Cached keys older than this (or than half of `AUTH_JWKS_MAX_STALE_HOURS`, if less) are
/// refreshed on the next request, so keys the issuer withdrew stop verifying; if that refresh
/// fails, the old keys keep serving until `AUTH_JWKS_MAX_STALE_HOURS` have passed.
pub const JWKS_MAX_AGE_SECS: i64 = 24 * 3600;
/// `AUTH_HS256_SECRET` values copied from examples and documentation; refused at start.
pub const PLACEHOLDER_SECRETS: &[&str] = &[
    "local-only-placeholder-replace-me-with-32-random-bytes",
    "changeme",
    "change-me",
    "secret",
    "your-secret",
    "your-256-bit-secret",
];
/// A secret containing one of these (case-insensitively) was never meant to be used as is.
const PLACEHOLDER_WORDS: &[&str] = &["placeholder", "replace-me", "replace_me", "changeme", "change-me", "your-secret"];
/// The generated local secret's file name inside the data dir.
pub const DEV_SECRET_FILE: &str = "auth-hs256.secret";
/// RFC 7518 §3.2: an HS256 key MUST be at least as long as the hash output (256 bits).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// How long one discovery or JWKS request may take.
const FETCH_TIMEOUT: StdDuration = StdDuration::from_secs(5);
/// Discovery documents and JWKS are a few KiB; anything bigger is not one.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// The `realm` in every challenge.
const REALM: &str = "suroga";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `oid` (Entra object id) when present, else its `sub`. Never empty.
    pub user: String,
    /// True iff the configured admin role is in the token's `roles` array.
    pub admin: bool,
    /// The token's `name` claim (a display name), when it carries a non-empty one.
    pub name: Option<String>,
}

impl Caller {
    /// `Ok(())` for admins, [`AuthError::NotAdmin`] (403) for everyone else.
    pub fn require_admin(&self) -> Result<(), AuthError> {
        if self.admin { Ok(()) } else { Err(AuthError::NotAdmin) }
    }
}

/// A caller who is an admin; extracting it answers 401 without a good token and 403 for non-admins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCaller(pub Caller);

/// Why a request was refused. Each variant states its status; the `Display` text is the problem
/// `detail` and the challenge's `error_description`, so it never holds client input or secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401, challenge without an error code (RFC 6750 §3.1): no `Authorization` header.
    #[error("this endpoint needs an Authorization: Bearer <token> header")]
    MissingCredentials,
    /// 401, challenge without an error code: a scheme other than `Bearer` (e.g. `Basic`).
    #[error("only Bearer tokens are accepted")]
    NotBearer,
    /// 401 `invalid_token`: several `Authorization` headers, a non-ASCII value, or `Bearer` without a
    /// single token after it.
    #[error("the Authorization header must be a single Bearer <token> value")]
    MalformedHeader,
    /// 401 `invalid_token`: not a compact JWS, or its header or claims are not the JSON we expect.
    #[error("the bearer token is not a well-formed JWT")]
    MalformedToken,
    /// 401 `invalid_token`: the `alg` is not one this service is configured to accept (`none`
    /// included), or the header carries `crit` extensions.
    #[error("tokens signed with this algorithm are not accepted")]
    UnsupportedAlgorithm,
    /// 401 `invalid_token`: the signature does not verify with the key the token names.
    #[error("the token signature does not verify")]
    BadSignature,
    /// 401 `invalid_token`: `exp` (plus leeway) has passed.
    #[error("the token has expired")]
    Expired,
    /// 401 `invalid_token`: `nbf` is further in the future than the leeway.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// 401 `invalid_token`: `iss` is not the configured issuer.
    #[error("the token was issued by an issuer this service does not trust")]
    WrongIssuer,
    /// 401 `invalid_token`: `aud` does not name this service.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// 401 `invalid_token`: a claim this service needs (`exp`, `iss`, `aud`, `sub`/`oid`) is absent.
    #[error("the token lacks the {0} claim")]
    MissingClaim(&'static str),
    /// 401 `invalid_token`: the token's `kid` is absent or not among the issuer's keys, even after a
    /// refresh (or a refresh was not allowed yet, see [`JWKS_MIN_REFRESH_SECS`]).
    #[error("the token signing key is not among the issuer's published keys")]
    UnknownKey,
    /// 503: the token names a key we do not hold and the issuer's keys could not be fetched.
    #[error("the issuer's signing keys could not be fetched; try again shortly")]
    KeysUnavailable,
    /// 403 `insufficient_scope`: authenticated, but the route is for admins.
    #[error("this endpoint is for administrators")]
    NotAdmin,
    /// 403 `insufficient_scope`: an issuer's token with none of the scopes (`scp`) or app roles
    /// (`roles`) this API accepts (`AUTH_SCOPES`, `AUTH_APP_ROLES`, `AUTH_ADMIN_ROLE`).
    #[error("the token carries none of the scopes or app roles this API accepts")]
    MissingScope,
}

impl AuthError {
    /// The HTTP status this refusal answers with: 401, 403 or 503.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::NotAdmin | AuthError::MissingScope => StatusCode::FORBIDDEN,
            AuthError::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750 §3), if this refusal carries one.
    pub fn challenge(&self) -> Option<String> {
        let code = match self {
            AuthError::MissingCredentials | AuthError::NotBearer => {
                return Some(format!("Bearer realm=\"{REALM}\""));
            }
            AuthError::KeysUnavailable => return None,
            AuthError::NotAdmin | AuthError::MissingScope => "insufficient_scope",
            _ => "invalid_token",
        };
        Some(format!(
            "Bearer realm=\"{REALM}\", error=\"{code}\", error_description=\"{}\"",
            quoted_string_safe(&self.to_string())
        ))
    }
}

/// RFC 6750 §3: `error_description` is limited to %x20-21 / %x23-5B / %x5D-7E.
fn quoted_string_safe(s: &str) -> String {
    s.chars().filter(|c| matches!(*c, ' ' | '!' | '#'..='[' | ']'..='~')).collect()
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(challenge) = self.challenge().and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if self == AuthError::KeysUnavailable {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(JWKS_MIN_REFRESH_SECS));
        }
        response
    }
}

/// Why an [`Authenticator`] could not be built (a start-up error; the message names the setting).
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The generated local secret could not be read or written.
    #[error("local token secret {path}: {source}")]
    DevSecret { path: PathBuf, source: io::Error },
    /// `AUTH_HS256_SECRET` is shorter than [`MIN_HS256_SECRET_BYTES`].
    #[error("AUTH_HS256_SECRET must be at least {MIN_HS256_SECRET_BYTES} bytes (RFC 7518 section 3.2), got {len}")]
    WeakSecret { len: usize },
    /// `AUTH_HS256_SECRET` is a placeholder from an example ([`PLACEHOLDER_SECRETS`]).
    #[error(
        "AUTH_HS256_SECRET is a placeholder from an example, not a secret: set 32 random bytes \
         (openssl rand -base64 32), or leave it unset locally to have one generated"
    )]
    PlaceholderSecret,
    /// `AUTH_JWKS_URL` without `AUTH_ISSUER`/`AUTH_AUDIENCE`: keys alone do not say whose tokens to trust.
    #[error("AUTH_JWKS_URL needs AUTH_ISSUER and AUTH_AUDIENCE")]
    JwksWithoutIssuer,
    /// Only one of `AUTH_ISSUER` and `AUTH_AUDIENCE` is set.
    #[error("AUTH_ISSUER and AUTH_AUDIENCE go together")]
    IssuerWithoutAudience,
}

/// Verifies bearer tokens. Build one at start and share it (`Arc<Authenticator>` in the app state);
/// all methods take `&self` and are safe to call concurrently.
pub struct Authenticator {
    local: Option<Verifier>,
    issuer: Option<IssuerKeys>,
    admin_role: String,
    /// `AUTH_SCOPES`: an issuer's token needs one of these in `scp`...
    scopes: Vec<String>,
    /// ...or one of these (`AUTH_APP_ROLES` and the admin role) in `roles`.
    app_roles: Vec<String>,
}

impl fmt::Debug for Authenticator {
    // Hand-written: the derived form would print key bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("local_hs256", &self.local.is_some())
            .field("issuer", &self.issuer.as_ref().map(|i| &i.issuer))
            .field("admin_role", &self.admin_role)
            .field("scopes", &self.scopes)
            .field("app_roles", &self.app_roles)
            .finish()
    }
}

/// The HS256 secret local tokens are signed with, by the rule in the module docs: without an
/// issuer, `AUTH_HS256_SECRET` if set, else the generated secret in `data_dir` (created on first
/// call, reused after); with an issuer, `AUTH_HS256_SECRET` only when `AUTH_ALLOW_LOCAL_TOKENS` is
/// true, else `None` (local tokens refused). A configured secret is checked even when unused.
/// `suroga token` and [`Authenticator::new`] both call this, so they always agree.
/// Errors: [`AuthSetupError::WeakSecret`], [`AuthSetupError::PlaceholderSecret`],
/// [`AuthSetupError::DevSecret`].
pub fn local_secret(config: &AuthConfig, data_dir: &Path) -> Result<Option<Secret>, AuthSetupError> {
    if let Some(configured) = &config.hs256_secret {
        check_secret(configured)?;
    }
    let secret = match (&config.hs256_secret, &config.issuer) {
        (Some(s), None) => s.clone(),
        (Some(s), Some(_)) if config.allow_local_tokens => s.clone(),
        (_, Some(_)) => return Ok(None),
        (None, None) => load_or_create_dev_secret(data_dir)
            .map_err(|source| AuthSetupError::DevSecret { path: data_dir.join(DEV_SECRET_FILE), source })?,
    };
    Ok(Some(secret))
}

/// Refuses secrets too short for HS256 and placeholders copied from examples.
fn check_secret(secret: &Secret) -> Result<(), AuthSetupError> {
    let text = secret.expose();
    let lower = text.to_ascii_lowercase();
    if PLACEHOLDER_SECRETS.contains(&lower.as_str()) || PLACEHOLDER_WORDS.iter().any(|w| lower.contains(w)) {
        return Err(AuthSetupError::PlaceholderSecret);
    }
    if text.len() < MIN_HS256_SECRET_BYTES {
        return Err(AuthSetupError::WeakSecret { len: text.len() });
    }
    Ok(())
}

impl Authenticator {
    /// Builds the verifiers `config` asks for (see the module docs). May create
    /// `<data_dir>/auth-hs256.secret`; does no network I/O (the issuer's keys are fetched on first
    /// use with `client`).
    pub fn new(config: &AuthConfig, data_dir: &Path, client: reqwest::Client) -> Result<Self, AuthSetupError> {
        let local = local_secret(config, data_dir)?.map(|secret| Verifier {
            key: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation: validation(Algorithm::HS256, LOCAL_ISSUER, LOCAL_ISSUER),
        });
        if config.issuer.is_some() && config.hs256_secret.is_some() && !config.allow_local_tokens {
            tracing::warn!("AUTH_HS256_SECRET is ignored: AUTH_ISSUER is set and AUTH_ALLOW_LOCAL_TOKENS is not true");
        }
        let issuer = match (&config.issuer, &config.audience) {
            (Some(issuer), Some(audience)) => Some(IssuerKeys {
                client,
                issuer: issuer.clone(),
                jwks_url: config.jwks_url.clone(),
                validation: validation(Algorithm::RS256, issuer, audience),
                max_stale: config.jwks_max_stale,
                cache: RwLock::new(Arc::new(KeyCache::default())),
                refresh: tokio::sync::Mutex::new(RefreshState::default()),
            }),
            (None, None) if config.jwks_url.is_some() => {
                return Err(AuthSetupError::JwksWithoutIssuer);
            }
            (None, None) => None,
            _ => return Err(AuthSetupError::IssuerWithoutAudience),
        };
        tracing::info!(
            local_hs256 = local.is_some(),
            issuer = issuer.as_ref().map(|i| i.issuer.as_str()),
            "authentication configured"
        );
        let mut app_roles = config.app_roles.clone();
        app_roles.push(config.admin_role.clone());
        Ok(Self { local, issuer, admin_role: config.admin_role.clone(), scopes: config.scopes.clone(), app_roles })
    }

    /// True when HS256 local tokens are accepted.
    pub fn accepts_local_tokens(&self) -> bool {
        self.local.is_some()
    }

    /// True when RS256 tokens of the configured issuer are accepted.
    pub fn accepts_issuer_tokens(&self) -> bool {
        self.issuer.is_some()
    }

    /// [`Self::authenticate_at`] at the current time.
    pub async fn authenticate(&self, authorization_header: Option<&str>) -> Result<Caller, AuthError> {
        self.authenticate_at(authorization_header, Utc::now()).await
    }

    /// Verifies `Authorization: Bearer <JWT>` as of `now`, which also paces JWKS refreshes. May
    /// fetch the issuer's keys (at most once per [`JWKS_MIN_REFRESH_SECS`]; concurrent callers wait
    /// for one fetch). Errors: every [`AuthError`] but `NotAdmin`; only `KeysUnavailable` is not the
    /// client's fault. Refusals are logged with their reason, never with the token.
    #[tracing::instrument(name = "authenticate", skip_all, fields(alg = Empty, kid = Empty, user = Empty))]
    pub async fn authenticate_at(
        &self,
        authorization_header: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Caller, AuthError> {
        let result = self.verify(authorization_header, now).await;
        match &result {
            Ok(caller) => {
                tracing::Span::current().record("user", caller.user.as_str());
                tracing::debug!(admin = caller.admin, "token accepted");
            }
            Err(AuthError::KeysUnavailable) => {
                tracing::warn!(reason = %AuthError::KeysUnavailable, "token not checked")
            }
            Err(e) => tracing::info!(reason = %e, "token refused"),
        }
        result
    }

    async fn verify(&self, authorization_header: Option<&str>, now: DateTime<Utc>) -> Result<Caller, AuthError> {
        let token = bearer_token(authorization_header)?;
        let head = peek_header(token)?;
        let span = tracing::Span::current();
        span.record("alg", clip(&head.alg));
        if let Some(kid) = &head.kid {
            span.record("kid", clip(kid));
        }
        if head.crit.is_some() {
            // RFC 7515 §4.1.11: we understand no extensions, so a token that makes one critical fails.
            return Err(AuthError::UnsupportedAlgorithm);
        }
        let (claims, from_issuer): (Claims, bool) = match (head.alg.as_str(), &self.local, &self.issuer) {
            ("HS256", Some(local), _) => (local.decode(token)?, false),
            ("RS256", _, Some(issuer)) => {
                let key = issuer.key_for(head.kid.as_deref(), now).await?;
                (Verifier::decode_with(token, &key, &issuer.validation)?, true)
            }
            _ => return Err(AuthError::UnsupportedAlgorithm),
        };
        claims.check_times(now)?;
        let roles: &[serde_json::Value] = match &claims.roles {
            Some(serde_json::Value::Array(roles)) => roles,
            // A `roles` of another shape grants nothing.
            _ => &[],
        };
        let has_role = |wanted: &str| roles.iter().any(|r| r.as_str() == Some(wanted));
        if from_issuer {
            // `scp` is one space-separated string (RFC 8693 section 4.2; Entra's delegated scopes).
            let scoped = claims
                .scp
                .as_ref()
                .and_then(|scp| scp.as_str())
                .is_some_and(|scp| scp.split(' ').any(|s| self.scopes.iter().any(|want| want == s)));
            if !scoped && !self.app_roles.iter().any(|r| has_role(r)) {
                return Err(AuthError::MissingScope);
            }
        }
        let user = [claims.oid, claims.sub]
            .into_iter()
            .flatten()
            .find(|u| !u.is_empty())
            .ok_or(AuthError::MissingClaim("sub"))?;
        let admin = has_role(&self.admin_role);
        // A `name` of another shape, or a blank one, names nobody.
        let name = match claims.name {
            Some(serde_json::Value::String(n)) if !n.trim().is_empty() => Some(n.trim().to_string()),
            _ => None,
        };
        Ok(Caller { user, admin, name })
    }
}

/// Attacker-chosen header values go to logs clipped.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 7235 §2.1).
fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let header = header.ok_or(AuthError::MissingCredentials)?.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(AuthError::MalformedHeader);
    }
    Ok(token)
}

/// The JOSE header fields we act on. Parsed by hand rather than with `jsonwebtoken::decode_header`
/// so that `alg: none` and other unknown algorithms are reported as such, not as malformed.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

fn peek_header(token: &str) -> Result<JoseHeader, AuthError> {
    let mut segments = token.split('.');
    let (Some(head), Some(_), Some(_), None) = (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return Err(AuthError::MalformedToken);
    };
    let bytes = URL_SAFE_NO_PAD.decode(head).map_err(|_| AuthError::MalformedToken)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::MalformedToken)
}

/// The claims we read. `exp`/`nbf` are checked here rather than by `jsonwebtoken`, so that `now`
/// is a parameter; `iss`/`aud` are checked by `jsonwebtoken` (required, see [`validation`]).
#[derive(Deserialize)]
struct Claims {
    exp: Option<f64>,
    nbf: Option<f64>,
    sub: Option<String>,
    oid: Option<String>,
    roles: Option<serde_json::Value>,
    /// Delegated scopes, one space-separated string (issuer tokens); another shape grants nothing.
    scp: Option<serde_json::Value>,
    name: Option<serde_json::Value>,
}

impl Claims {
    fn check_times(&self, now: DateTime<Utc>) -> Result<(), AuthError> {
        let now = now.timestamp() as f64;
        let leeway = CLOCK_SKEW_LEEWAY_SECS as f64;
        let exp = self.exp.ok_or(AuthError::MissingClaim("exp"))?;
        // RFC 7519 §4.1.4: the token is good only *before* `exp`.
        if now >= exp + leeway {
            return Err(AuthError::Expired);
        }
        if self.nbf.is_some_and(|nbf| now + leeway < nbf) {
            return Err(AuthError::NotYetValid);
        }
        Ok(())
    }
}

/// `jsonwebtoken` validation for one algorithm, one issuer and the audiences in `audiences`
/// (comma-separated); times are ours.
fn validation(alg: Algorithm, issuer: &str, audiences: &str) -> Validation {
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.set_issuer(&[issuer]);
    let audiences: Vec<&str> = audiences.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    v.set_audience(&audiences);
    v.set_required_spec_claims(&["iss", "aud"]);
    v.validate_exp = false;
    v.validate_nbf = false;
    v
}

/// One key with its validation (the local HS256 secret).
struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        Self::decode_with(token, &self.key, &self.validation)
    }

    fn decode_with(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(token, key, validation).map(|data| data.claims).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::MissingClaim("iss"),
            ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::MissingClaim("aud"),
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::InvalidAlgorithmName => {
                AuthError::UnsupportedAlgorithm
            }
            _ => AuthError::MalformedToken,
        })
    }
}

/// The configured issuer's RS256 keys, fetched lazily and cached.
struct IssuerKeys {
    client: reqwest::Client,
    issuer: String,
    /// `AUTH_JWKS_URL`; when `None` the URL comes from discovery.
    jwks_url: Option<String>,
    validation: Validation,
    /// `AUTH_JWKS_MAX_STALE_HOURS`: keys fetched longer ago than this verify nothing.
    max_stale: Duration,
    /// Read on every request without waiting; replaced whole by a successful refresh.
    cache: RwLock<Arc<KeyCache>>,
    /// Held for the whole of a refresh, so concurrent misses wait for its result.
    refresh: tokio::sync::Mutex<RefreshState>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<DateTime<Utc>>,
}

impl KeyCache {
    /// True while the keys need no refresh.
    fn is_fresh(&self, now: DateTime<Utc>, max_stale: Duration) -> bool {
        let refresh_after = Duration::seconds(JWKS_MAX_AGE_SECS).min(max_stale / 2);
        self.fetched_at.is_some_and(|t| now - t < refresh_after)
    }

    /// True while the keys may still verify tokens (a refresh may have failed since).
    fn is_trusted(&self, now: DateTime<Utc>, max_stale: Duration) -> bool {
        self.fetched_at.is_some_and(|t| now - t < max_stale)
    }
}

#[derive(Default)]
struct RefreshState {
    last_attempt: Option<DateTime<Utc>>,
    last_failed: bool,
    /// `jwks_uri` from discovery, kept until a JWKS fetch fails.
    discovered: Option<String>,
}

/// Why the issuer's keys could not be fetched (logged; clients see [`AuthError::KeysUnavailable`]).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("GET {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: reqwest::StatusCode },
    #[error("GET {url}: more than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("GET {url}: not the JSON expected: {source}")]
    Json { url: String, source: serde_json::Error },
    #[error("{url} holds no RSA signing key")]
    NoKeys { url: String },
}

impl IssuerKeys {
    fn snapshot(&self) -> Arc<KeyCache> {
        // A poisoned lock only means a panic elsewhere while swapping an Arc; the Arc is whole.
        self.cache.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn key_for(&self, kid: Option<&str>, now: DateTime<Utc>) -> Result<DecodingKey, AuthError> {
        let kid = kid.ok_or(AuthError::UnknownKey)?;
        let cache = self.snapshot();
        if let (Some(key), true) = (cache.keys.get(kid), cache.is_fresh(now, self.max_stale)) {
            return Ok(key.clone());
        }
        // Misses queue here. The first one fetches; the ones behind it are inside the interval, so
        // they fetch nothing and find its keys below: one fetch serves them all.
        let mut state = self.refresh.lock().await;
        // Measured both ways: a request stamped a moment before the last fetch (it waited here
        // behind it) must not fetch again, and a clock that jumped back must not block refreshes for good.
        let interval = Duration::seconds(JWKS_MIN_REFRESH_SECS);
        let allowed = state.last_attempt.is_none_or(|t| (now - t).abs() >= interval);
        if allowed {
            state.last_attempt = Some(now);
            match self.fetch(&mut state).await {
                Ok(keys) => {
                    tracing::info!(keys = keys.len(), "fetched the issuer's signing keys");
                    state.last_failed = false;
                    let fresh = Arc::new(KeyCache { keys, fetched_at: Some(now) });
                    *self.cache.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not fetch the issuer's signing keys");
                    state.last_failed = true;
                }
            }
        }
        // A stale key still verifies while the issuer cannot be reached, for a bounded time: an
        // issuer kept out of reach (an outage, or an attacker blocking it) must not keep a
        // withdrawn key trusted forever.
        let cache = self.snapshot();
        match cache.keys.get(kid) {
            Some(_) if !cache.is_trusted(now, self.max_stale) => {
                tracing::warn!(
                    fetched_at = ?cache.fetched_at,
                    "the issuer's cached signing keys are too old to trust and could not be refreshed"
                );
                Err(AuthError::KeysUnavailable)
            }
            Some(key) => Ok(key.clone()),
            None if state.last_failed => Err(AuthError::KeysUnavailable),
            None => Err(AuthError::UnknownKey),
        }
    }

    async fn fetch(&self, state: &mut RefreshState) -> Result<HashMap<String, DecodingKey>, FetchError> {
        let url = match (&self.jwks_url, &state.discovered) {
            (Some(url), _) | (None, Some(url)) => url.clone(),
            (None, None) => {
                // https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfig
                #[derive(Deserialize)]
                struct Discovery {
                    jwks_uri: String,
                }
                let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
                let doc: Discovery = get_json(&self.client, &url).await?;
                state.discovered = Some(doc.jwks_uri.clone());
                doc.jwks_uri
            }
        };
        let result = get_json::<JwkSet>(&self.client, &url).await.and_then(|set| {
            let keys = set.rsa_signing_keys();
            if keys.is_empty() { Err(FetchError::NoKeys { url: url.clone() }) } else { Ok(keys) }
        });
        if result.is_err() {
            // The issuer may have moved its keys; discover again next time.
            state.discovered = None;
        }
        result
    }
}

/// RFC 7517 §5, read leniently: keys we cannot use (other types, encryption keys, bad numbers) are
/// skipped rather than failing the whole set.
#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

impl JwkSet {
    fn rsa_signing_keys(&self) -> HashMap<String, DecodingKey> {
        let field = |k: &serde_json::Value, name: &str| k.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        self.keys
            .iter()
            .filter(|k| field(k, "kty").as_deref() == Some("RSA"))
            .filter(|k| field(k, "use").is_none_or(|u| u == "sig"))
            .filter(|k| field(k, "alg").is_none_or(|a| a == "RS256"))
            .filter_map(|k| {
                let key = DecodingKey::from_rsa_components(&field(k, "n")?, &field(k, "e")?).ok()?;
                Some((field(k, "kid")?, key))
            })
            .collect()
    }
}

async fn get_json<T: DeserializeOwned>(client: &reqwest::Client, url: &str) -> Result<T, FetchError> {
    let http = |source| FetchError::Http { url: url.to_owned(), source };
    let mut response = client.get(url).timeout(FETCH_TIMEOUT).send().await.map_err(http)?;
    if !response.status().is_success() {
        return Err(FetchError::Status { url: url.to_owned(), status: response.status() });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(http)? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge { url: url.to_owned() });
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|source| FetchError::Json { url: url.to_owned(), source })
}

/// Reads the local secret from `<data_dir>/auth-hs256.secret`, creating it (32 random bytes,
/// base64url, mode 0600) and `data_dir` if missing. Idempotent and safe against a concurrent first
/// start: the file appears whole (written aside, then hard-linked into place) and the loser of a race
/// reads the winner's secret. Errors: I/O, or `InvalidData` when the file holds fewer than
/// [`MIN_HS256_SECRET_BYTES`] (never overwritten: delete it to get a new one).
pub fn load_or_create_dev_secret(data_dir: &Path) -> io::Result<Secret> {
    let path = data_dir.join(DEV_SECRET_FILE);
    match read_dev_secret(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    crate::files::create_private_dir(data_dir)?;
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let text = URL_SAFE_NO_PAD.encode(bytes);
    let aside = data_dir.join(format!(".{DEV_SECRET_FILE}.{}", uuid::Uuid::new_v4()));
    let written = write_private(&aside, text.as_bytes()).and_then(|()| fs::hard_link(&aside, &path));
    let _ = fs::remove_file(&aside);
    match written {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated the local token secret");
            Ok(Secret::new(text))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_dev_secret(&path),
        Err(e) => Err(e),
    }
}

fn read_dev_secret(path: &Path) -> io::Result<Secret> {
    let text = fs::read_to_string(path)?;
    let text = text.trim();
    if text.len() < MIN_HS256_SECRET_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("holds fewer than {MIN_HS256_SECRET_BYTES} bytes; delete it to generate a new secret"),
        ));
    }
    Ok(Secret::new(text))
}

fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// The claims of a local token.
#[derive(Serialize)]
struct LocalClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    roles: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

/// A local HS256 token for `sub`, valid from `now` for `ttl`, with `roles: [admin_role]` when
/// `admin` (else `roles: []`), `iss` = `aud` = [`LOCAL_ISSUER`]. Pure; accepted by an
/// [`Authenticator`] whose local secret is `secret` and whose admin role is `admin_role`.
pub fn mint_dev_token(
    secret: &Secret,
    sub: &str,
    admin: bool,
    admin_role: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> String {
    mint_named_dev_token(secret, sub, None, admin, admin_role, ttl, now)
}

/// [`mint_dev_token`] with a `name` claim (the display name the other participant sees).
pub fn mint_named_dev_token(
    secret: &Secret,
    sub: &str,
    name: Option<&str>,
    admin: bool,
    admin_role: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> String {
    let claims = LocalClaims {
        name,
        iss: LOCAL_ISSUER,
        aud: LOCAL_ISSUER,
        sub,
        iat: now.timestamp(),
        nbf: now.timestamp(),
        exp: (now + ttl).timestamp(),
        roles: if admin { vec![admin_role] } else { vec![] },
    };
    let key = EncodingKey::from_secret(secret.expose().as_bytes());
    // HMAC signing of a plain struct has no failure path (no key parsing, serialization of strings
    // and integers cannot fail).
    jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &claims, &key)
        .expect("HS256 signing of local claims cannot fail")
}

/// A `--ttl` value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a time to live is a positive number with a unit s, m, h or d (e.g. 90s, 15m, 1h, 7d), got {0:?}")]
pub struct TtlError(pub String);

/// Reads a token lifetime: `90s`, `15m`, `1h`, `7d`; a bare number is seconds. Errors: [`TtlError`]
/// for anything else, zero, or more than 366 days.
pub fn parse_ttl(s: &str) -> Result<Duration, TtlError> {
    let err = || TtlError(s.to_owned());
    let t = s.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = digits.parse().map_err(|_| err())?;
    let secs_per = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(err()),
    };
    let secs = n.checked_mul(secs_per).filter(|s| (1..=366 * 86_400).contains(s)).ok_or_else(err)?;
    Ok(Duration::seconds(secs))
}

/// The single `Authorization` value of a request; several, or one that is not visible ASCII, is
/// [`AuthError::MalformedHeader`].
fn authorization_header(parts: &Parts) -> Result<Option<&str>, AuthError> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v.to_str().map(Some).map_err(|_| AuthError::MalformedHeader),
        (Some(_), Some(_)) => Err(AuthError::MalformedHeader),
    }
}

/// Requires a good bearer token. The result (the caller, or the refusal) is kept in the request's
/// extensions, so a middleware and the handler extracting `Caller` and `AdminCaller` verify the
/// token once.
impl<S> FromRequestParts<S> for Caller
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        if let Some(refusal) = parts.extensions.get::<AuthError>() {
            return Err(refusal.clone());
        }
        let authenticator = Arc::<Authenticator>::from_ref(state);
        let result = match authorization_header(parts) {
            Ok(header) => authenticator.authenticate(header).await,
            Err(e) => Err(e),
        };
        match &result {
            Ok(caller) => {
                parts.extensions.insert(caller.clone());
            }
            Err(refusal) => {
                parts.extensions.insert(refusal.clone());
            }
        }
        result
    }
}

/// `Option<Caller>`: `None` without an `Authorization` header; a header that is present must hold a
/// good token (a bad token is never quietly anonymous).
impl<S> OptionalFromRequestParts<S> for Caller
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if parts.extensions.get::<Caller>().is_none() && !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(None);
        }
        <Caller as FromRequestParts<S>>::from_request_parts(parts, state).await.map(Some)
    }
}

/// Requires a good bearer token of an admin: 401 as [`Caller`], then 403 for non-admins.
impl<S> FromRequestParts<S> for AdminCaller
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = <Caller as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        caller.require_admin()?;
        Ok(AdminCaller(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_one_token() {
        assert_eq!(bearer_token(Some("bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("Bearer  abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("Basic dXNlcjpwdw==")), Err(AuthError::NotBearer));
        assert_eq!(bearer_token(Some("Bearer")), Err(AuthError::MalformedHeader));
        assert_eq!(bearer_token(Some("Bearer a b")), Err(AuthError::MalformedHeader));
        assert_eq!(bearer_token(None), Err(AuthError::MissingCredentials));
    }

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::hours(1)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::minutes(15)));
        assert_eq!(parse_ttl("90"), Ok(Duration::seconds(90)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::days(7)));
        for bad in ["", "0s", "h", "1w", "-1h", "1.5h", "400d"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn every_challenge_is_a_valid_header_value() {
        let all = [
            AuthError::MissingCredentials,
            AuthError::NotBearer,
            AuthError::MalformedHeader,
            AuthError::MalformedToken,
            AuthError::UnsupportedAlgorithm,
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::WrongIssuer,
            AuthError::WrongAudience,
            AuthError::MissingClaim("exp"),
            AuthError::UnknownKey,
            AuthError::NotAdmin,
            AuthError::MissingScope,
        ];
        for e in all {
            let c = e.challenge().expect("401 and 403 carry a challenge");
            assert!(HeaderValue::from_str(&c).is_ok(), "{c}");
            if matches!(e, AuthError::MissingCredentials | AuthError::NotBearer) {
                assert!(!c.contains("error="), "{c}");
            } else {
                // The description is passed through unchanged, so nothing useful was filtered away.
                assert!(c.contains(&e.to_string()), "{c}");
            }
        }
    }
}
