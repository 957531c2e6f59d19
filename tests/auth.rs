//! Bearer authentication as a client sees it: a tiny router using the `Caller`, `AdminCaller` and
//! `Option<Caller>` extractors, local HS256 tokens, and RS256 tokens checked against a fake issuer
//! (discovery document + JWKS) served on loopback that counts its hits.
//!
//! RSA keys are fixed test keys in tests/fixtures (`a`, `b`, `c`; `c` is never published).

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use axum::{
    Json, Router,
    body::Body,
    extract::{FromRef, State},
    http::{HeaderMap, Request, StatusCode, header},
    routing::get,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use suroga::{
    auth::{
        AdminCaller, AuthError, AuthSetupError, Authenticator, Caller, DEV_SECRET_FILE, LOCAL_ISSUER,
        load_or_create_dev_secret, mint_dev_token,
    },
    config::{AuthConfig, Secret},
};
use tower::ServiceExt as _;
use uuid::Uuid;

const AUDIENCE: &str = "api://suroga-test";

// ---------------------------------------------------------------------------------------------
// The app under test

#[derive(Clone)]
struct AppState {
    auth: Arc<Authenticator>,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

fn app(auth: Authenticator) -> Router {
    async fn me(caller: Caller) -> Json<Value> {
        Json(json!({ "user": caller.user, "admin": caller.admin }))
    }
    async fn admin(AdminCaller(caller): AdminCaller) -> Json<Value> {
        Json(json!({ "user": caller.user }))
    }
    async fn maybe(caller: Option<Caller>) -> Json<Value> {
        Json(json!({ "user": caller.map(|c| c.user) }))
    }
    async fn state_is_shared(State(_): State<AppState>, caller: Caller) -> String {
        caller.user
    }
    Router::new()
        .route("/me", get(me))
        .route("/admin", get(admin))
        .route("/maybe", get(maybe))
        .route("/state", get(state_is_shared))
        .with_state(AppState { auth: Arc::new(auth) })
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn challenge(&self) -> &str {
        self.headers.get(header::WWW_AUTHENTICATE).expect("a refusal carries WWW-Authenticate").to_str().unwrap()
    }

    /// A 401 in the shape every refusal must have; returns the challenge.
    fn assert_unauthorized(&self) -> &str {
        assert_eq!(self.status, StatusCode::UNAUTHORIZED, "{:?}", self.body);
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(self.body["type"], "about:blank");
        assert_eq!(self.body["title"], "Unauthorized");
        assert_eq!(self.body["status"], 401);
        assert!(self.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
        self.challenge()
    }

    /// A 401 `invalid_token` whose description says `why`.
    fn assert_invalid_token(&self, why: &str) {
        let challenge = self.assert_unauthorized().to_owned();
        assert!(challenge.starts_with("Bearer realm=\"suroga\""), "{challenge}");
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        assert!(challenge.contains(why), "{challenge} should say {why:?}");
        assert!(self.body["detail"].as_str().unwrap().contains(why), "{:?}", self.body);
    }
}

async fn call(app: &Router, path: &str, authorization: &[&str]) -> Reply {
    let mut request = Request::get(path);
    for value in authorization {
        request = request.header(header::AUTHORIZATION, *value);
    }
    let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply { status, headers, body }
}

async fn get_with_token(app: &Router, path: &str, token: &str) -> Reply {
    call(app, path, &[&format!("Bearer {token}")]).await
}

// ---------------------------------------------------------------------------------------------
// Configuration and tokens

/// A fresh data dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("suroga-auth-test-{}", Uuid::new_v4())))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn random_secret() -> Secret {
    Secret::new(format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()))
}

fn config(secret: Option<Secret>, issuer: Option<&str>, jwks_url: Option<&str>) -> AuthConfig {
    captured_logs();
    AuthConfig {
        hs256_secret: secret,
        issuer: issuer.map(str::to_owned),
        audience: issuer.map(|_| AUDIENCE.to_owned()),
        jwks_url: jwks_url.map(str::to_owned),
        ..AuthConfig::default()
    }
}

/// An authenticator that accepts local tokens signed with `secret` only.
fn local_only(secret: &Secret) -> Authenticator {
    let dir = TempDir::new();
    Authenticator::new(&config(Some(secret.clone()), None, None), &dir.0, reqwest::Client::new()).unwrap()
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hs256(secret: &Secret, claims: &Value) -> String {
    sign(Algorithm::HS256, None, claims, &EncodingKey::from_secret(secret.expose().as_bytes()))
}

/// Good local claims for `sub` as of `now`; tests change one field.
fn local_claims(sub: &str, now: DateTime<Utc>) -> Value {
    json!({
        "iss": LOCAL_ISSUER,
        "aud": LOCAL_ISSUER,
        "sub": sub,
        "iat": now.timestamp(),
        "nbf": now.timestamp(),
        "exp": (now + Duration::minutes(10)).timestamp(),
    })
}

fn fresh_user() -> String {
    format!("user-{}", Uuid::new_v4())
}

fn rsa_key(name: &str) -> EncodingKey {
    let pem: &[u8] = match name {
        "a" => include_bytes!("fixtures/rsa-a.pem"),
        "b" => include_bytes!("fixtures/rsa-b.pem"),
        "c" => include_bytes!("fixtures/rsa-c.pem"),
        other => panic!("no fixture key {other}"),
    };
    EncodingKey::from_rsa_pem(pem).unwrap()
}

/// The public JWK of fixture key `name`, published under `kid`.
fn jwk(name: &str, kid: &str) -> Value {
    let all: Value = serde_json::from_str(include_str!("fixtures/rsa-public-components.json")).unwrap();
    json!({ "kty": "RSA", "use": "sig", "kid": kid, "n": all[name]["n"], "e": all[name]["e"] })
}

/// An RS256 token from `issuer` signed with fixture key `name` under `kid`.
fn rs256(name: &str, kid: &str, issuer: &str, sub: &str, now: DateTime<Utc>) -> String {
    let claims = json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": format!("pairwise-{sub}"),
        "oid": sub,
        "exp": (now + Duration::minutes(10)).timestamp(),
        "nbf": now.timestamp(),
        "roles": ["reader"],
        "scp": "User.Read access_as_user",
    });
    sign(Algorithm::RS256, Some(kid), &claims, &rsa_key(name))
}

// ---------------------------------------------------------------------------------------------
// A fake issuer on loopback

struct Idp {
    issuer: String,
    jwks_url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    jwks_hits: Arc<AtomicUsize>,
    discovery_hits: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

impl Idp {
    async fn spawn(keys: Vec<Value>) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let tenant = Uuid::new_v4();
        let issuer = format!("{base}/{tenant}/v2.0");
        let jwks_url = format!("{base}/{tenant}/discovery/v2.0/keys");
        let idp = Idp {
            issuer: issuer.clone(),
            jwks_url: jwks_url.clone(),
            keys: Arc::new(Mutex::new(keys)),
            jwks_hits: Arc::default(),
            discovery_hits: Arc::default(),
            failing: Arc::default(),
        };
        let (keys, jwks_hits, discovery_hits, failing) =
            (idp.keys.clone(), idp.jwks_hits.clone(), idp.discovery_hits.clone(), idp.failing.clone());
        let router = Router::new()
            .route(
                &format!("/{tenant}/v2.0/.well-known/openid-configuration"),
                get(move || async move {
                    discovery_hits.fetch_add(1, Ordering::SeqCst);
                    Json(json!({ "issuer": issuer, "jwks_uri": jwks_url }))
                }),
            )
            .route(
                &format!("/{tenant}/discovery/v2.0/keys"),
                get(move || async move {
                    jwks_hits.fetch_add(1, Ordering::SeqCst);
                    if failing.load(Ordering::SeqCst) {
                        return Err(StatusCode::INTERNAL_SERVER_ERROR);
                    }
                    // Real sets hold keys we must skip; one rides along.
                    let mut keys = keys.lock().unwrap().clone();
                    keys.push(
                        json!({ "kty": "EC", "use": "sig", "kid": "ec-key", "crv": "P-256", "x": "AA", "y": "AA" }),
                    );
                    Ok(Json(json!({ "keys": keys })))
                }),
            );
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        idp
    }

    /// An authenticator for this issuer (discovery unless `explicit_jwks`), no local tokens.
    fn authenticator(&self, explicit_jwks: bool) -> Authenticator {
        let dir = TempDir::new();
        let jwks = explicit_jwks.then_some(self.jwks_url.as_str());
        Authenticator::new(&config(None, Some(&self.issuer), jwks), &dir.0, reqwest::Client::new()).unwrap()
    }

    fn jwks_hits(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }

    fn publish(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }
}

// ---------------------------------------------------------------------------------------------
// Local HS256 tokens

#[tokio::test]
async fn a_minted_admin_token_names_its_user_and_opens_admin_routes() {
    let secret = random_secret();
    let app = app(local_only(&secret));
    let user = fresh_user();
    let token = mint_dev_token(&secret, &user, true, "admin", Duration::hours(1), Utc::now());

    let me = get_with_token(&app, "/me", &token).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body, json!({ "user": user, "admin": true }));
    let admin = get_with_token(&app, "/admin", &token).await;
    assert_eq!(admin.status, StatusCode::OK);
    assert_eq!(admin.body["user"], user);
}

#[tokio::test]
async fn the_user_is_oid_when_present_else_sub() {
    let secret = random_secret();
    let app = app(local_only(&secret));
    let (sub, oid) = (fresh_user(), fresh_user());
    let mut claims = local_claims(&sub, Utc::now());
    claims["oid"] = json!(oid);

    let with_oid = get_with_token(&app, "/me", &hs256(&secret, &claims)).await;
    assert_eq!(with_oid.body, json!({ "user": oid, "admin": false }));
    let without = get_with_token(&app, "/me", &hs256(&secret, &local_claims(&sub, Utc::now()))).await;
    assert_eq!(without.body, json!({ "user": sub, "admin": false }));
}

#[tokio::test]
async fn the_configured_admin_role_makes_an_admin_and_nothing_else_does() {
    let secret = random_secret();
    let dir = TempDir::new();
    let mut cfg = config(Some(secret.clone()), None, None);
    cfg.admin_role = "Suroga.Admin".into();
    let app = app(Authenticator::new(&cfg, &dir.0, reqwest::Client::new()).unwrap());
    let user = fresh_user();

    for (roles, admin) in [
        (json!(["Suroga.Admin"]), true),
        (json!(["reader", "Suroga.Admin"]), true),
        (json!(["admin"]), false),
        (json!("Suroga.Admin"), false),
        (json!([]), false),
    ] {
        let mut claims = local_claims(&user, Utc::now());
        claims["roles"] = roles.clone();
        let me = get_with_token(&app, "/me", &hs256(&secret, &claims)).await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.body["admin"], admin, "roles {roles}");
    }
}

#[tokio::test]
async fn a_non_admin_on_an_admin_route_is_403() {
    let secret = random_secret();
    let app = app(local_only(&secret));
    let token = mint_dev_token(&secret, &fresh_user(), false, "admin", Duration::hours(1), Utc::now());

    let reply = get_with_token(&app, "/admin", &token).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(reply.body["title"], "Forbidden");
    assert_eq!(reply.body["status"], 403);
    assert!(reply.challenge().contains("error=\"insufficient_scope\""), "{}", reply.challenge());
    assert_eq!(get_with_token(&app, "/me", &token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn no_authorization_header_is_401_with_a_bare_challenge() {
    let app = app(local_only(&random_secret()));
    let reply = call(&app, "/me", &[]).await;
    assert_eq!(reply.assert_unauthorized(), "Bearer realm=\"suroga\"");
    assert_eq!(call(&app, "/admin", &[]).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn another_scheme_is_401_with_a_bare_challenge() {
    let app = app(local_only(&random_secret()));
    let reply = call(&app, "/me", &["Basic YWxpY2U6c2VjcmV0"]).await;
    assert_eq!(reply.assert_unauthorized(), "Bearer realm=\"suroga\"");
    assert!(reply.body["detail"].as_str().unwrap().contains("Bearer"));
}

#[tokio::test]
async fn a_token_that_is_not_a_jwt_is_401() {
    let app = app(local_only(&random_secret()));
    for garbage in ["not-a-jwt", "a.b.c", "e30.e30.e30.e30", "%%%.e30.sig"] {
        get_with_token(&app, "/me", garbage).await.assert_invalid_token("well-formed");
    }
    call(&app, "/me", &["Bearer"]).await.assert_invalid_token("single Bearer");
}

#[tokio::test]
async fn two_authorization_headers_are_401() {
    let secret = random_secret();
    let app = app(local_only(&secret));
    let token = mint_dev_token(&secret, &fresh_user(), false, "admin", Duration::hours(1), Utc::now());
    let good = format!("Bearer {token}");
    call(&app, "/me", &[&good, &good]).await.assert_invalid_token("single Bearer");
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let secret = random_secret();
    let app = app(local_only(&secret));
    let now = Utc::now();
    let mut claims = local_claims(&fresh_user(), now - Duration::hours(1));
    claims["exp"] = json!((now - Duration::minutes(5)).timestamp());
    get_with_token(&app, "/me", &hs256(&secret, &claims)).await.assert_invalid_token("expired");
}

#[tokio::test]
async fn a_token_expired_within_the_clock_skew_leeway_is_accepted() {
    let secret = random_secret();
    let app = app(local_only(&secret));
    let now = Utc::now();
    let mut claims = local_claims(&fresh_user(), now - Duration::hours(1));
    claims["exp"] = json!((now - Duration::seconds(20)).timestamp());
    assert_eq!(get_with_token(&app, "/me", &hs256(&secret, &claims)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_token_without_exp_is_401() {
    let secret = random_secret();
    let app = app(local_only(&secret));
    let mut claims = local_claims(&fresh_user(), Utc::now());
    claims.as_object_mut().unwrap().remove("exp");
    get_with_token(&app, "/me", &hs256(&secret, &claims)).await.assert_invalid_token("exp");
}

#[tokio::test]
async fn a_token_not_valid_yet_is_401() {
    let secret = random_secret();
    let app = app(local_only(&secret));
    let mut claims = local_claims(&fresh_user(), Utc::now());
    claims["nbf"] = json!((Utc::now() + Duration::minutes(5)).timestamp());
    get_with_token(&app, "/me", &hs256(&secret, &claims)).await.assert_invalid_token("not valid yet");
}

#[tokio::test]
async fn a_token_from_a_clock_slightly_ahead_is_accepted() {
    let secret = random_secret();
    let app = app(local_only(&secret));
    let mut claims = local_claims(&fresh_user(), Utc::now());
    claims["nbf"] = json!((Utc::now() + Duration::seconds(20)).timestamp());
    assert_eq!(get_with_token(&app, "/me", &hs256(&secret, &claims)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_401() {
    let app = app(local_only(&random_secret()));
    let token = hs256(&random_secret(), &local_claims(&fresh_user(), Utc::now()));
    get_with_token(&app, "/me", &token).await.assert_invalid_token("signature");
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_401() {
    let app = app(local_only(&random_secret()));
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(local_claims(&fresh_user(), Utc::now()).to_string());
    for token in [format!("{head}.{claims}."), format!("{head}.{claims}.c2ln")] {
        get_with_token(&app, "/me", &token).await.assert_invalid_token("algorithm");
    }
}

#[tokio::test]
async fn another_hmac_algorithm_is_401() {
    let secret = random_secret();
    let app = app(local_only(&secret));
    let token = sign(
        Algorithm::HS512,
        None,
        &local_claims(&fresh_user(), Utc::now()),
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    );
    get_with_token(&app, "/me", &token).await.assert_invalid_token("algorithm");
}

#[tokio::test]
async fn a_token_of_another_issuer_is_401() {
    let secret = random_secret();
    let app = app(local_only(&secret));
    let mut claims = local_claims(&fresh_user(), Utc::now());
    claims["iss"] = json!("https://login.example.invalid/v2.0");
    get_with_token(&app, "/me", &hs256(&secret, &claims)).await.assert_invalid_token("issuer");
}

#[tokio::test]
async fn a_token_for_another_audience_is_401() {
    let secret = random_secret();
    let app = app(local_only(&secret));
    let mut claims = local_claims(&fresh_user(), Utc::now());
    claims["aud"] = json!("some-other-api");
    get_with_token(&app, "/me", &hs256(&secret, &claims)).await.assert_invalid_token("audience");
    claims.as_object_mut().unwrap().remove("aud");
    get_with_token(&app, "/me", &hs256(&secret, &claims)).await.assert_invalid_token("aud");
}

#[tokio::test]
async fn an_optional_caller_is_anonymous_without_a_header_but_a_bad_token_is_still_refused() {
    let secret = random_secret();
    let app = app(local_only(&secret));
    let user = fresh_user();
    assert_eq!(call(&app, "/maybe", &[]).await.body, json!({ "user": null }));
    let token = mint_dev_token(&secret, &user, false, "admin", Duration::hours(1), Utc::now());
    assert_eq!(get_with_token(&app, "/maybe", &token).await.body, json!({ "user": user }));
    get_with_token(&app, "/maybe", "garbage").await.assert_invalid_token("well-formed");
}

#[tokio::test]
async fn the_extractor_works_beside_other_state_extractors() {
    let secret = random_secret();
    let app = app(local_only(&secret));
    let user = fresh_user();
    let token = mint_dev_token(&secret, &user, false, "admin", Duration::hours(1), Utc::now());
    assert_eq!(get_with_token(&app, "/state", &token).await.body, json!(user));
}

// ---------------------------------------------------------------------------------------------
// The generated local secret

#[tokio::test]
async fn the_dev_secret_is_created_once_private_and_reused() {
    let dir = TempDir::new();
    let path = dir.0.join(DEV_SECRET_FILE);
    let first = load_or_create_dev_secret(&dir.0).unwrap();
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written.trim(), first.expose());
    assert!(first.expose().len() >= 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let second = load_or_create_dev_secret(&dir.0).unwrap();
    assert_eq!(second, first);
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1, "no leftovers beside the secret");

    // With nothing configured, the server uses that same file, so `suroga token` output is accepted.
    let auth = Authenticator::new(&config(None, None, None), &dir.0, reqwest::Client::new()).unwrap();
    assert!(auth.accepts_local_tokens() && !auth.accepts_issuer_tokens());
    let user = fresh_user();
    let token = mint_dev_token(&first, &user, true, "admin", Duration::hours(1), Utc::now());
    let reply = get_with_token(&app(auth), "/me", &token).await;
    assert_eq!(reply.body, json!({ "user": user, "admin": true }));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), written);
}

#[tokio::test]
async fn a_server_started_on_a_fresh_data_dir_generates_the_secret_the_cli_then_reads() {
    let dir = TempDir::new();
    let auth = Authenticator::new(&config(None, None, None), &dir.0, reqwest::Client::new()).unwrap();
    let secret = load_or_create_dev_secret(&dir.0).unwrap();
    let user = fresh_user();
    let token = mint_dev_token(&secret, &user, false, "admin", Duration::minutes(5), Utc::now());
    assert_eq!(auth.authenticate(Some(&format!("Bearer {token}"))).await.unwrap().user, user);
}

#[tokio::test]
async fn concurrent_first_starts_agree_on_one_secret() {
    let dir = TempDir::new();
    let path = dir.0.clone();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || load_or_create_dev_secret(&path).unwrap())
        })
        .collect();
    let secrets: Vec<Secret> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(secrets.iter().all(|s| *s == secrets[0]));
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1);
}

#[tokio::test]
async fn a_weak_configured_secret_is_refused_at_start() {
    let dir = TempDir::new();
    let cfg = config(Some(Secret::new("too-short")), None, None);
    let err = Authenticator::new(&cfg, &dir.0, reqwest::Client::new()).unwrap_err();
    assert!(matches!(err, AuthSetupError::WeakSecret { len: 9 }), "{err}");
    assert!(err.to_string().contains("AUTH_HS256_SECRET"));
    assert!(!err.to_string().contains("too-short"));
}

#[tokio::test]
async fn a_placeholder_secret_is_refused_at_start_naming_the_setting() {
    let dir = TempDir::new();
    for placeholder in [
        // What local.settings.json.example used to carry.
        "local-only-placeholder-replace-me-with-32-random-bytes",
        "CHANGEME-changeme-changeme-changeme-changeme",
        "please-replace-me-with-a-real-secret-of-32-bytes",
    ] {
        let cfg = config(Some(Secret::new(placeholder)), None, None);
        let err = Authenticator::new(&cfg, &dir.0, reqwest::Client::new()).unwrap_err();
        assert!(matches!(err, AuthSetupError::PlaceholderSecret), "{placeholder}: {err}");
        assert!(err.to_string().contains("AUTH_HS256_SECRET"), "{err}");
        assert!(!err.to_string().contains(placeholder), "{err}");
    }
    // Also when an issuer is configured and the secret would not be used.
    let cfg = config(Some(Secret::new("changeme")), Some("https://login.example.test/t/v2.0"), None);
    let err = Authenticator::new(&cfg, &dir.0, reqwest::Client::new()).unwrap_err();
    assert!(matches!(err, AuthSetupError::PlaceholderSecret), "{err}");
}

#[tokio::test]
async fn a_jwks_url_without_an_issuer_is_refused_at_start() {
    let dir = TempDir::new();
    let cfg = config(Some(random_secret()), None, Some("http://127.0.0.1:9/keys"));
    let err = Authenticator::new(&cfg, &dir.0, reqwest::Client::new()).unwrap_err();
    assert!(matches!(err, AuthSetupError::JwksWithoutIssuer), "{err}");
}

// ---------------------------------------------------------------------------------------------
// RS256 via the issuer's JWKS

#[tokio::test]
async fn an_issuer_token_is_accepted_via_discovery_and_keys_are_cached() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let app = app(idp.authenticator(false));
    let user = fresh_user();
    let token = rs256("a", "kid-a", &idp.issuer, &user, Utc::now());

    for _ in 0..3 {
        let reply = get_with_token(&app, "/me", &token).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.body, json!({ "user": user, "admin": false }));
    }
    assert_eq!(idp.discovery_hits.load(Ordering::SeqCst), 1);
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn an_explicit_jwks_url_skips_discovery() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let app = app(idp.authenticator(true));
    let token = rs256("a", "kid-a", &idp.issuer, &fresh_user(), Utc::now());
    assert_eq!(get_with_token(&app, "/me", &token).await.status, StatusCode::OK);
    assert_eq!(idp.discovery_hits.load(Ordering::SeqCst), 0);
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn an_issuer_token_signed_with_an_unpublished_key_is_401() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let app = app(idp.authenticator(false));
    let forged = rs256("c", "kid-a", &idp.issuer, &fresh_user(), Utc::now());
    get_with_token(&app, "/me", &forged).await.assert_invalid_token("signature");
}

#[tokio::test]
async fn an_issuer_token_for_another_tenant_or_audience_is_401() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let app = app(idp.authenticator(false));
    let other_tenant = rs256("a", "kid-a", "https://login.microsoftonline.com/other/v2.0", &fresh_user(), Utc::now());
    get_with_token(&app, "/me", &other_tenant).await.assert_invalid_token("issuer");

    let claims = json!({
        "iss": idp.issuer, "aud": "api://someone-else", "sub": fresh_user(),
        "exp": (Utc::now() + Duration::minutes(5)).timestamp(),
    });
    let other_app = sign(Algorithm::RS256, Some("kid-a"), &claims, &rsa_key("a"));
    get_with_token(&app, "/me", &other_app).await.assert_invalid_token("audience");
}

#[tokio::test]
async fn any_of_several_configured_audiences_is_accepted() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let dir = TempDir::new();
    let mut cfg = config(None, Some(&idp.issuer), None);
    let client_id = Uuid::new_v4().to_string();
    cfg.audience = Some(format!("{client_id}, {AUDIENCE}"));
    let app = app(Authenticator::new(&cfg, &dir.0, reqwest::Client::new()).unwrap());
    for (aud, status) in [
        (client_id.as_str(), StatusCode::OK),
        (AUDIENCE, StatusCode::OK),
        ("api://someone-else", StatusCode::UNAUTHORIZED),
    ] {
        let claims = json!({
            "iss": idp.issuer, "aud": aud, "sub": fresh_user(), "scp": "access_as_user",
            "exp": (Utc::now() + Duration::minutes(5)).timestamp(),
        });
        let token = sign(Algorithm::RS256, Some("kid-a"), &claims, &rsa_key("a"));
        assert_eq!(get_with_token(&app, "/me", &token).await.status, status, "aud {aud}");
    }
}

#[tokio::test]
async fn many_concurrent_first_requests_share_one_jwks_fetch() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let auth = idp.authenticator(true);
    let now = Utc::now();
    let header = format!("Bearer {}", rs256("a", "kid-a", &idp.issuer, &fresh_user(), now));
    let results = futures::future::join_all((0..50).map(|_| auth.authenticate_at(Some(&header), now))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_a_refresh_and_a_withdrawn_one_is_not() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let auth = idp.authenticator(false);
    let t0 = Utc::now();
    let user = fresh_user();
    let old = format!("Bearer {}", rs256("a", "kid-a", &idp.issuer, &user, t0));
    assert_eq!(auth.authenticate_at(Some(&old), t0).await.unwrap().user, user);

    idp.publish(vec![jwk("b", "kid-b")]);
    let t1 = t0 + Duration::seconds(31);
    let new = format!("Bearer {}", rs256("b", "kid-b", &idp.issuer, &user, t1));
    assert_eq!(auth.authenticate_at(Some(&new), t1).await.unwrap().user, user);
    assert_eq!(idp.jwks_hits(), 2);
    assert_eq!(auth.authenticate_at(Some(&old), t1).await, Err(AuthError::UnknownKey));
    assert_eq!(idp.jwks_hits(), 2, "the refresh just happened; no second one within the interval");
}

#[tokio::test]
async fn a_storm_of_unknown_kids_refreshes_at_most_once_per_interval() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let auth = idp.authenticator(false);
    let t0 = Utc::now();
    let good = format!("Bearer {}", rs256("a", "kid-a", &idp.issuer, &fresh_user(), t0));
    auth.authenticate_at(Some(&good), t0).await.unwrap();
    assert_eq!(idp.jwks_hits(), 1);

    let storm = |at: DateTime<Utc>| {
        let headers: Vec<String> = (0..100)
            .map(|_| format!("Bearer {}", rs256("c", &Uuid::new_v4().to_string(), &idp.issuer, "x", at)))
            .collect();
        let auth = &auth;
        async move {
            let results = futures::future::join_all(headers.iter().map(|h| auth.authenticate_at(Some(h), at))).await;
            assert!(results.iter().all(|r| *r == Err(AuthError::UnknownKey)), "{results:?}");
        }
    };
    storm(t0 + Duration::seconds(10)).await;
    assert_eq!(idp.jwks_hits(), 1, "within the interval of the first fetch");
    storm(t0 + Duration::seconds(31)).await;
    assert_eq!(idp.jwks_hits(), 2);
    storm(t0 + Duration::seconds(50)).await;
    assert_eq!(idp.jwks_hits(), 2);
    storm(t0 + Duration::seconds(62)).await;
    assert_eq!(idp.jwks_hits(), 3);
    // Known keys never wait on refreshes.
    assert!(auth.authenticate_at(Some(&good), t0 + Duration::seconds(63)).await.is_ok());
    assert_eq!(idp.jwks_hits(), 3);
}

#[tokio::test]
async fn a_request_stamped_just_before_the_last_refresh_does_not_refresh_again() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let auth = idp.authenticator(false);
    let t0 = Utc::now();
    let good = format!("Bearer {}", rs256("a", "kid-a", &idp.issuer, &fresh_user(), t0));
    auth.authenticate_at(Some(&good), t0).await.unwrap();
    // Concurrent requests take `now` before queueing for the refresh, so some are a little older.
    let earlier = t0 - Duration::seconds(2);
    let unknown = format!("Bearer {}", rs256("c", "kid-c", &idp.issuer, "x", earlier));
    assert_eq!(auth.authenticate_at(Some(&unknown), earlier).await, Err(AuthError::UnknownKey));
    assert_eq!(idp.jwks_hits(), 1);
    // A clock set back far does not block refreshes.
    let much_earlier = t0 - Duration::minutes(5);
    let unknown = format!("Bearer {}", rs256("c", "kid-c", &idp.issuer, "x", much_earlier));
    assert_eq!(auth.authenticate_at(Some(&unknown), much_earlier).await, Err(AuthError::UnknownKey));
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn an_hs256_token_is_401_where_only_the_issuer_is_configured() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let app = app(idp.authenticator(false));
    let claims = json!({
        "iss": idp.issuer, "aud": AUDIENCE, "sub": fresh_user(),
        "exp": (Utc::now() + Duration::minutes(5)).timestamp(),
    });
    // Algorithm confusion: HMAC keyed with the issuer's own public key.
    let public_pem = include_bytes!("fixtures/rsa-a.pub.pem");
    let confused = sign(Algorithm::HS256, Some("kid-a"), &claims, &EncodingKey::from_secret(public_pem));
    get_with_token(&app, "/me", &confused).await.assert_invalid_token("algorithm");
    let local = mint_dev_token(&random_secret(), &fresh_user(), true, "admin", Duration::hours(1), Utc::now());
    get_with_token(&app, "/me", &local).await.assert_invalid_token("algorithm");
    assert_eq!(idp.jwks_hits(), 0);
}

#[tokio::test]
async fn an_hs256_token_is_401_where_an_issuer_is_configured_unless_local_tokens_are_allowed() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let dir = TempDir::new();
    let secret = random_secret();
    // The secret alone (left over from development) does not open the door.
    let cfg = config(Some(secret.clone()), Some(&idp.issuer), None);
    let auth = Authenticator::new(&cfg, &dir.0, reqwest::Client::new()).unwrap();
    assert!(!auth.accepts_local_tokens());
    let local = mint_dev_token(&secret, &fresh_user(), true, "admin", Duration::hours(1), Utc::now());
    get_with_token(&app(auth), "/me", &local).await.assert_invalid_token("algorithm");
    // AUTH_ALLOW_LOCAL_TOKENS=true does.
    let allowed = AuthConfig { allow_local_tokens: true, ..cfg };
    let auth = Authenticator::new(&allowed, &dir.0, reqwest::Client::new()).unwrap();
    assert_eq!(get_with_token(&app(auth), "/me", &local).await.status, StatusCode::OK);
    assert!(!dir.0.join(DEV_SECRET_FILE).exists());
}

#[tokio::test]
async fn an_issuer_token_without_an_accepted_scope_or_app_role_is_403() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let dir = TempDir::new();
    let cfg = AuthConfig {
        scopes: vec!["access_as_user".into()],
        app_roles: vec!["Suroga.Daemon".into()],
        ..config(None, Some(&idp.issuer), None)
    };
    let app = app(Authenticator::new(&cfg, &dir.0, reqwest::Client::new()).unwrap());
    let token = |extra: Value| {
        let mut claims = json!({
            "iss": idp.issuer, "aud": AUDIENCE, "sub": fresh_user(),
            "exp": (Utc::now() + Duration::minutes(5)).timestamp(),
        });
        claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        sign(Algorithm::RS256, Some("kid-a"), &claims, &rsa_key("a"))
    };
    for refused in [
        json!({}),
        json!({ "scp": "User.Read openid" }),
        json!({ "scp": "access_as_user_not" }),
        json!({ "roles": ["reader"] }),
        json!({ "scp": ["access_as_user"] }),
    ] {
        let reply = get_with_token(&app, "/me", &token(refused.clone())).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{refused}: {:?}", reply.body);
        assert_eq!(reply.headers[header::CONTENT_TYPE], "application/problem+json");
        let challenge = reply.challenge();
        assert!(challenge.contains("error=\"insufficient_scope\""), "{challenge}");
        assert!(reply.body["detail"].as_str().unwrap().contains("scopes or app roles"), "{:?}", reply.body);
    }
    for accepted in [
        json!({ "scp": "openid access_as_user" }),
        json!({ "roles": ["Suroga.Daemon"] }),
        json!({ "roles": ["admin"] }),
    ] {
        let reply = get_with_token(&app, "/me", &token(accepted.clone())).await;
        assert_eq!(reply.status, StatusCode::OK, "{accepted}: {:?}", reply.body);
    }
}

#[tokio::test]
async fn the_display_name_comes_from_the_name_claim() {
    let secret = random_secret();
    let auth = local_only(&secret);
    let now = Utc::now();
    let mut claims = local_claims(&fresh_user(), now);
    claims["name"] = json!("  Ada Lovelace ");
    let caller = auth.authenticate_at(Some(&format!("Bearer {}", hs256(&secret, &claims))), now).await.unwrap();
    assert_eq!(caller.name.as_deref(), Some("Ada Lovelace"));
    for nobody in [json!("   "), json!(42), json!(["Ada"])] {
        claims["name"] = nobody;
        let caller = auth.authenticate_at(Some(&format!("Bearer {}", hs256(&secret, &claims))), now).await.unwrap();
        assert_eq!(caller.name, None);
    }
    let nameless = format!("Bearer {}", hs256(&secret, &local_claims("u", now)));
    assert_eq!(auth.authenticate_at(Some(&nameless), now).await.unwrap().name, None);
}

#[tokio::test]
async fn an_rs256_token_is_401_where_only_local_tokens_are_configured() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let app = app(local_only(&random_secret()));
    let token = rs256("a", "kid-a", &idp.issuer, &fresh_user(), Utc::now());
    get_with_token(&app, "/me", &token).await.assert_invalid_token("algorithm");
}

#[tokio::test]
async fn with_an_issuer_configured_no_secret_is_generated() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let dir = TempDir::new();
    let auth = Authenticator::new(&config(None, Some(&idp.issuer), None), &dir.0, reqwest::Client::new()).unwrap();
    assert!(!auth.accepts_local_tokens());
    assert!(!dir.0.join(DEV_SECRET_FILE).exists());
}

#[tokio::test]
async fn an_issuer_and_an_explicit_secret_with_local_tokens_allowed_accept_both_kinds_of_token() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let dir = TempDir::new();
    let secret = random_secret();
    let cfg = AuthConfig { allow_local_tokens: true, ..config(Some(secret.clone()), Some(&idp.issuer), None) };
    let app = app(Authenticator::new(&cfg, &dir.0, reqwest::Client::new()).unwrap());
    let (alice, bob) = (fresh_user(), fresh_user());
    let local = mint_dev_token(&secret, &alice, false, "admin", Duration::hours(1), Utc::now());
    let issued = rs256("a", "kid-a", &idp.issuer, &bob, Utc::now());
    assert_eq!(get_with_token(&app, "/me", &local).await.body["user"], json!(alice));
    assert_eq!(get_with_token(&app, "/me", &issued).await.body["user"], json!(bob));
    // A local token cannot pass as the issuer's, nor the reverse.
    let mut claims = local_claims(&alice, Utc::now());
    claims["iss"] = json!(idp.issuer);
    claims["aud"] = json!(AUDIENCE);
    get_with_token(&app, "/me", &hs256(&secret, &claims)).await.assert_invalid_token("issuer");
}

#[tokio::test]
async fn an_unreachable_issuer_is_503_never_500() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    idp.failing.store(true, Ordering::SeqCst);
    let app = app(idp.authenticator(false));
    let token = rs256("a", "kid-a", &idp.issuer, &fresh_user(), Utc::now());

    let reply = get_with_token(&app, "/me", &token).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(reply.headers[header::RETRY_AFTER], "30");
    assert_eq!(reply.body["status"], 503);
    assert_eq!(idp.jwks_hits(), 1);
    // Within the interval the failure is remembered, not retried.
    assert_eq!(get_with_token(&app, "/me", &token).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn the_issuer_recovering_is_noticed_after_the_interval() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    idp.failing.store(true, Ordering::SeqCst);
    let auth = idp.authenticator(false);
    let t0 = Utc::now();
    let header = format!("Bearer {}", rs256("a", "kid-a", &idp.issuer, &fresh_user(), t0));
    assert_eq!(auth.authenticate_at(Some(&header), t0).await, Err(AuthError::KeysUnavailable));
    idp.failing.store(false, Ordering::SeqCst);
    assert!(auth.authenticate_at(Some(&header), t0 + Duration::seconds(31)).await.is_ok());
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn cached_keys_keep_serving_when_a_periodic_refresh_fails() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let auth = idp.authenticator(false);
    let t0 = Utc::now();
    let user = fresh_user();
    auth.authenticate_at(Some(&format!("Bearer {}", rs256("a", "kid-a", &idp.issuer, &user, t0))), t0).await.unwrap();

    idp.failing.store(true, Ordering::SeqCst);
    let day_later = t0 + Duration::hours(25);
    let known = format!("Bearer {}", rs256("a", "kid-a", &idp.issuer, &user, day_later));
    assert_eq!(auth.authenticate_at(Some(&known), day_later).await.unwrap().user, user);
    assert_eq!(idp.jwks_hits(), 2, "stale keys trigger one refresh");
    let unknown = format!("Bearer {}", rs256("b", "kid-b", &idp.issuer, &user, day_later));
    assert_eq!(auth.authenticate_at(Some(&unknown), day_later).await, Err(AuthError::KeysUnavailable));
}

// ---------------------------------------------------------------------------------------------
// Logs

/// Every test's logs, from one global subscriber. It is installed by [`config`], before any test
/// builds an authenticator: a per-test (scoped) subscriber can miss events when another thread
/// registers the same callsite at the same moment, so the log test finds its lines by a fresh `kid`.
fn captured_logs() -> &'static LogBuffer {
    static LOGS: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = LogBuffer::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("suroga=debug"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        logs
    })
}

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_refusal_is_logged_with_its_reason_but_never_the_token_or_secret() {
    let secret = random_secret();
    let auth = local_only(&secret);
    let now = Utc::now();
    let key = EncodingKey::from_secret(secret.expose().as_bytes());
    let mut old = local_claims(&fresh_user(), now - Duration::hours(1));
    old["exp"] = json!((now - Duration::minutes(30)).timestamp());
    let (expired_kid, forged_kid) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let expired = sign(Algorithm::HS256, Some(&expired_kid), &old, &key);
    let forged = sign(
        Algorithm::HS256,
        Some(&forged_kid),
        &local_claims(&fresh_user(), now),
        &EncodingKey::from_secret(random_secret().expose().as_bytes()),
    );
    for token in [&expired, &forged] {
        let header = format!("Bearer {token}");
        assert!(auth.authenticate(Some(&header)).await.is_err());
    }

    let text = captured_logs().text();
    let line = |kid: &str| text.lines().find(|l| l.contains(kid)).unwrap_or_default().to_owned();
    let expired_line = line(&expired_kid);
    assert!(expired_line.contains("token refused"), "{text}");
    assert!(expired_line.contains("the token has expired"), "{expired_line}");
    assert!(expired_line.contains("alg=\"HS256\""), "{expired_line}");
    assert!(line(&forged_kid).contains("the token signature does not verify"), "{text}");
    for token in [&expired, &forged] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!text.contains(signature), "a token leaked into the logs: {text}");
    }
    assert!(!text.contains(secret.expose()), "the secret leaked into the logs: {text}");
}

#[tokio::test]
async fn cached_keys_stop_verifying_once_they_are_too_old_to_trust() {
    let idp = Idp::spawn(vec![jwk("a", "kid-a")]).await;
    let dir = TempDir::new();
    let cfg = AuthConfig { jwks_max_stale: Duration::hours(6), ..config(None, Some(&idp.issuer), None) };
    let auth = Authenticator::new(&cfg, &dir.0, reqwest::Client::new()).unwrap();
    let t0 = Utc::now();
    let user = fresh_user();
    let at = |t: DateTime<Utc>| format!("Bearer {}", rs256("a", "kid-a", &idp.issuer, &user, t));
    auth.authenticate_at(Some(&at(t0)), t0).await.unwrap();

    idp.failing.store(true, Ordering::SeqCst);
    // Refreshed after half the bound; while it fails, the cached key still serves...
    let t1 = t0 + Duration::hours(4);
    assert_eq!(auth.authenticate_at(Some(&at(t1)), t1).await.unwrap().user, user);
    assert_eq!(idp.jwks_hits(), 2);
    // ...until the bound has passed since the last successful fetch: then 503, not a pass.
    let t2 = t0 + Duration::hours(6) + Duration::seconds(1);
    assert_eq!(auth.authenticate_at(Some(&at(t2)), t2).await, Err(AuthError::KeysUnavailable));
    // The issuer back: the next refresh restores trust.
    idp.failing.store(false, Ordering::SeqCst);
    let t3 = t2 + Duration::seconds(31);
    assert_eq!(auth.authenticate_at(Some(&at(t3)), t3).await.unwrap().user, user);
}
