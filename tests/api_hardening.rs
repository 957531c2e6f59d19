//! What the service does to face the internet, as a client (or an attacker) sees it over HTTP:
//! per-caller rate limits, security headers, CORS, the cheap anonymous health and the power-state
//! cache behind it, dates bounded at parse time, the booking horizon, who may call the timer
//! routes, and private files in the data folder.

mod support;

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;
use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Request, header},
};
use chrono::Duration;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::app::{TestApp, admin, user};
use suroga::fleet::power::{PowerControl, PowerError, PowerOutcome, PowerState};
use tower::ServiceExt as _;

async fn problem(res: reqwest::Response) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, res.json().await.unwrap())
}

// ---------------------------------------------------------------------------------------------
// Rate limits

#[tokio::test]
async fn a_user_over_the_limit_gets_429_with_retry_after_and_others_do_not() {
    let app = TestApp::spawn_with(|env| {
        env.insert("RATE_LIMIT_USER_PER_MINUTE".into(), "6".into());
        env.insert("RATE_LIMIT_USER_BURST".into(), "3".into());
    })
    .await;
    let u = user();
    for _ in 0..3 {
        assert_eq!(app.get("/api/v1/bookings", &u).await.0, StatusCode::OK);
    }
    let res = app.http.get(format!("{}/api/v1/bookings", app.base)).bearer_auth(app.token(&u, false)).send().await;
    let (st, headers, body) = problem(res.unwrap()).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(headers[header::RETRY_AFTER], "10", "one request per 10 s once the burst is spent");
    assert_eq!(body["status"], 429);
    assert!(body["detail"].as_str().unwrap().contains("10 s"), "{body}");
    // Counted per user: someone else is not slowed down, even from the same address.
    assert_eq!(app.get("/api/v1/bookings", &user()).await.0, StatusCode::OK);
    // The rate refills with time.
    app.clock.advance(Duration::seconds(10));
    assert_eq!(app.get("/api/v1/bookings", &u).await.0, StatusCode::OK);
    assert_eq!(app.get("/api/v1/bookings", &u).await.0, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn anonymous_callers_are_limited_per_address_and_cannot_dodge_with_forwarded_headers() {
    let app = TestApp::spawn_with(|env| {
        env.insert("RATE_LIMIT_ANONYMOUS_PER_MINUTE".into(), "1".into());
        env.insert("RATE_LIMIT_ANONYMOUS_BURST".into(), "2".into());
    })
    .await;
    let health = format!("{}/api/v1/health", app.base);
    for _ in 0..2 {
        assert_eq!(app.http.get(&health).send().await.unwrap().status(), StatusCode::OK);
    }
    let (st, headers, body) = problem(app.http.get(&health).send().await.unwrap()).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(headers[header::RETRY_AFTER], "60");
    // Standalone, X-Forwarded-For is the client's own word: it does not make a new caller.
    let res = app.http.get(&health).header("x-forwarded-for", "198.51.100.23").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // A token that does not verify is no way around it either.
    let res = app.http.get(&health).bearer_auth("not.a.jwt").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // The Functions host's readiness probe is never limited; a good token is counted per user.
    for _ in 0..20 {
        assert_eq!(app.http.get(format!("{}/", app.base)).send().await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(app.get("/api/v1/health", &user()).await.0, StatusCode::OK);
}

/// A Janus host posts every join and departure of all its rooms from one address: its posts with
/// the deployment's event handler credentials are never limited; without them they count as any
/// anonymous caller's.
#[tokio::test]
async fn the_janus_hosts_event_posts_are_not_limited_but_wrong_credentials_are() {
    let app = TestApp::spawn_with(|env| {
        env.insert("RATE_LIMIT_ANONYMOUS_PER_MINUTE".into(), "1".into());
        env.insert("RATE_LIMIT_ANONYMOUS_BURST".into(), "2".into());
    })
    .await;
    let secret = app.app.state.janus_events_secret.as_ref().unwrap().expose().to_string();
    let post = |auth: String| {
        let event = json!({"type": 64, "timestamp": 1, "event": {"plugin": "janus.plugin.videoroom",
            "data": {"event": "destroyed", "room": 424242}}});
        app.http
            .post(format!("{}/api/v1/janus/events", app.base))
            .header(header::AUTHORIZATION, format!("Basic {}", base64_of(&auth)))
            .json(&event)
            .send()
    };
    for _ in 0..20 {
        assert_eq!(post(format!("janus:{secret}")).await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(post("janus:wrong".into()).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(post("janus:wrong".into()).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(post("janus:wrong".into()).await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

// ---------------------------------------------------------------------------------------------
// Security headers and CORS

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_hsts_only_over_https() {
    let app = TestApp::spawn().await;
    let token = app.token(&user(), false);
    for (method, path) in [
        (Method::GET, "/api/v1/health"),
        (Method::GET, "/api/v1/bookings"),
        (Method::GET, "/api/v1/nothing"),
        (Method::GET, "/api/v1/openapi.json"),
        (Method::GET, "/"),
        (Method::POST, "/purge-keys"),
    ] {
        let res = app.http.request(method.clone(), format!("{}{path}", app.base)).bearer_auth(&token).send().await;
        let res = res.unwrap();
        let h = res.headers();
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{method} {path}");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{method} {path}");
        assert!(!h.contains_key(header::STRICT_TRANSPORT_SECURITY), "{method} {path}: plain HTTP");
    }
    let res = app.http.get(format!("{}/api/v1/health", app.base)).header("x-forwarded-proto", "https").send().await;
    assert_eq!(res.unwrap().headers()[header::STRICT_TRANSPORT_SECURITY], "max-age=31536000");
}

#[tokio::test]
async fn the_docs_page_has_a_csp_that_admits_only_its_own_script_and_style() {
    let app = TestApp::spawn().await;
    let res = app.http.get(format!("{}/api/docs", app.base)).send().await.unwrap();
    let csp = res.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'sha256-") && csp.contains("style-src 'sha256-"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    // JSON answers carry no CSP (nothing there runs).
    let res = app.http.get(format!("{}/api/v1/openapi.json", app.base)).send().await.unwrap();
    assert!(!res.headers().contains_key(header::CONTENT_SECURITY_POLICY));
}

#[tokio::test]
async fn html_gets_a_strict_csp_unless_the_handler_set_its_own() {
    use axum::{response::Html, routing::get};
    let router = axum::Router::new()
        .route("/plain", get(|| async { Html("<p>hi</p>") }))
        .route(
            "/own",
            get(|| async {
                ([(header::CONTENT_SECURITY_POLICY, "default-src 'none'; script-src 'self'")], Html("<p>app</p>"))
            }),
        )
        .layer(axum::middleware::from_fn(suroga::api::headers::security_headers));
    let csp = |path: &'static str| {
        let router = router.clone();
        async move {
            let res = router.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
            res.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(csp("/plain").await, suroga::api::headers::DEFAULT_HTML_CSP);
    assert_eq!(csp("/own").await, "default-src 'none'; script-src 'self'");
}

#[tokio::test]
async fn cors_answers_only_the_allowed_origins() {
    let preflight = |app: &TestApp, origin: &str| {
        app.http
            .request(Method::OPTIONS, format!("{}/api/v1/bookings", app.base))
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type,idempotency-key")
            .send()
    };
    // None by default.
    let closed = TestApp::spawn().await;
    let res = preflight(&closed, "https://app.example.test").await.unwrap();
    assert!(!res.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), "{:?}", res.headers());

    let app = TestApp::spawn_with(|env| {
        env.insert("CORS_ALLOWED_ORIGINS".into(), "https://app.example.test, http://localhost:5173".into());
    })
    .await;
    let res = preflight(&app, "https://app.example.test").await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let h = res.headers();
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.test");
    let allowed = h[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("idempotency-key"), "{allowed}");
    assert!(h[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().contains("POST"));
    assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));

    let res = preflight(&app, "https://evil.example.test").await.unwrap();
    assert!(!res.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));

    let res = app
        .http
        .get(format!("{}/api/v1/bookings", app.base))
        .header(header::ORIGIN, "http://localhost:5173")
        .bearer_auth(app.token(&user(), false))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://localhost:5173");
    let exposed = res.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS].to_str().unwrap().to_ascii_lowercase();
    assert!(exposed.contains("retry-after"), "{exposed}");
}

// ---------------------------------------------------------------------------------------------
// Health and the power-state cache

/// Counts the power backend's state reads.
struct CountingPower {
    inner: Arc<dyn PowerControl>,
    reads: Arc<AtomicUsize>,
}

#[async_trait]
impl PowerControl for CountingPower {
    async fn power_state(&self, host: &str) -> Result<PowerState, PowerError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.power_state(host).await
    }
    async fn start(&self, host: &str) -> Result<PowerOutcome, PowerError> {
        self.inner.start(host).await
    }
    async fn deallocate(&self, host: &str) -> Result<PowerOutcome, PowerError> {
        self.inner.deallocate(host).await
    }
}

async fn counting_app() -> (TestApp, Arc<AtomicUsize>) {
    let reads = Arc::new(AtomicUsize::new(0));
    let counter = reads.clone();
    let app = TestApp::spawn_wrapping(|_| {}, move |inner| Arc::new(CountingPower { inner, reads: counter })).await;
    reads.store(0, Ordering::SeqCst);
    (app, reads)
}

#[tokio::test]
async fn anonymous_health_never_asks_the_power_backend() {
    let (app, reads) = counting_app().await;
    for _ in 0..20 {
        let (st, h) = app.call(Method::GET, "/api/v1/health", None, None).await;
        assert_eq!(st, StatusCode::OK, "{h}");
    }
    assert_eq!(reads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_burst_of_api_requests_asks_each_host_once_per_cache_period_and_the_reconciler_always() {
    let (app, reads) = counting_app().await;
    let root = admin();
    // Admin health, the hosts list and joins, all at once.
    let u = user();
    let b = app.book(&u, 10, 70, None).await;
    let join = format!("/api/v1/bookings/{}/join", b["booking_id"].as_str().unwrap());
    let calls = (0..30).map(|i| {
        let path = match i % 3 {
            0 => "/api/v1/health".to_string(),
            1 => "/api/v1/hosts".to_string(),
            _ => join.clone(),
        };
        let who = if i % 3 == 2 { u.clone() } else { root.clone() };
        let app = &app;
        async move { app.get(&path, &who).await }
    });
    for (st, body) in futures::future::join_all(calls).await {
        assert!(st.is_success(), "{st}: {body}");
    }
    assert_eq!(reads.load(Ordering::SeqCst), 1, "one host, one backend read for the whole burst");
    // The reconciler reads the backend itself, every run, whatever the cache holds.
    app.app.reconciler.run_once().await;
    app.app.reconciler.run_once().await;
    assert_eq!(reads.load(Ordering::SeqCst), 3);
    // An old entry is asked again.
    app.clock.advance(Duration::seconds(11));
    assert_eq!(app.get("/api/v1/hosts", &root).await.0, StatusCode::OK);
    assert_eq!(reads.load(Ordering::SeqCst), 4);
}

// ---------------------------------------------------------------------------------------------
// Dates and the booking horizon

#[tokio::test]
async fn far_dates_are_400s_never_500s() {
    let app = TestApp::spawn().await;
    let u = user();
    let room = app.create_room(&u).await["room_id"].as_u64().unwrap();
    let far = [
        "2263-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2199-12-31T23:00:00-05:00",
        "1969-12-31T23:59:59Z",
        "0000-01-01T00:00:00Z",
    ];
    for t in far {
        let body = json!({ "start_time": t, "end_time": "2300-01-01T00:00:00Z" });
        let (st, b) = app.post("/api/v1/bookings", &u, body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{t}: {b}");
        assert!(b["detail"].as_str().unwrap().contains("years 1970 to 2199"), "{b}");
        let now = app.now().to_rfc3339();
        let body = json!({ "start_time": now, "end_time": t, "room_id": room });
        assert_eq!(app.post("/api/v1/bookings", &u, body).await.0, StatusCode::BAD_REQUEST, "{t}");
        let q = t.replace('+', "%2B");
        for path in [
            format!("/api/v1/rooms/availability?start_time=2030-01-01T00:00:00Z&end_time={q}"),
            format!("/api/v1/rooms?created_before={q}"),
            format!("/api/v1/rooms?available=true&start_time={q}&end_time=2030-01-01T00:00:00Z"),
            format!("/api/v1/plan?from={q}"),
            format!("/api/v1/usage?to={q}"),
        ] {
            let (st, b) = app.get(&path, &admin()).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{path}: {b}");
        }
    }
    let b = app.book(&u, 60, 120, Some(room)).await;
    let extend = format!("/api/v1/bookings/{}/extend", b["booking_id"].as_str().unwrap());
    let (st, body) = app.post(&extend, &u, json!({ "end_time": "2263-01-01T00:00:00Z" })).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    for day in ["262143-12-31", "+262143-12-31", "-262143-01-01", "2200-01-01", "1969-12-31", "9999-12-31"] {
        let (st, b) = app.get(&format!("/api/v1/bookings?date={}", day.replace('+', "%2B")), &u).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{day}: {b}");
    }
    assert_eq!(app.get("/api/v1/bookings?date=2199-12-31", &u).await.0, StatusCode::OK);
}

#[tokio::test]
async fn bookings_may_start_at_most_the_horizon_ahead() {
    let app = TestApp::spawn().await;
    let u = user();
    let day = 24 * 60;
    let (st, b) = app.post("/api/v1/bookings", &u, app.slot_body(181 * day, 181 * day + 60, None)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["detail"].as_str().unwrap().contains("at most 180 days ahead"), "{b}");
    app.book(&u, 179 * day, 179 * day + 60, None).await;

    let short = TestApp::spawn_with(|env| {
        env.insert("BOOKING_HORIZON_DAYS".into(), "7".into());
    })
    .await;
    let (st, b) = short.post("/api/v1/bookings", &u, short.slot_body(8 * day, 8 * day + 60, None)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["detail"].as_str().unwrap().contains("at most 7 days ahead"), "{b}");
}

// ---------------------------------------------------------------------------------------------
// Timer routes

#[tokio::test]
async fn timer_routes_refuse_relayed_and_remote_callers() {
    let app = TestApp::spawn().await;
    let url = format!("{}/purge-keys", app.base);
    let envelope = json!({"Data": {"timer": {"IsPastDue": false}}, "Metadata": {}});
    // A local process may fire a timer by hand on a standalone listener.
    assert_eq!(app.http.post(&url).json(&envelope).send().await.unwrap().status(), StatusCode::OK);
    // A proxy on this machine relaying an outside caller may not.
    let res = app.http.post(&url).header("x-forwarded-for", "203.0.113.4").json(&envelope).send().await.unwrap();
    let (st, headers, body) = problem(res).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert!(body["detail"].as_str().unwrap().contains("Functions host"), "{body}");
    // Nor a caller on another machine (a standalone listener bound to a public address).
    let remote = app
        .app
        .router()
        .layer(axum::Extension(ConnectInfo(SocketAddr::from(([192, 0, 2, 10], 40000)))))
        .oneshot(
            Request::post("/purge-keys")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(envelope.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(remote.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn under_the_functions_host_timer_routes_need_the_hosts_invocation_header() {
    let app = TestApp::spawn_with(|env| {
        env.insert("FUNCTIONS_CUSTOMHANDLER_PORT".into(), "7099".into());
    })
    .await;
    let url = format!("{}/purge-keys", app.base);
    let envelope = json!({"Data": {"timer": {"IsPastDue": false}}, "Metadata": {}});
    assert_eq!(app.http.post(&url).json(&envelope).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let res = app
        .http
        .post(&url)
        .header("x-azure-functions-invocationid", uuid::Uuid::new_v4().to_string())
        .json(&envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Files

#[tokio::test]
async fn the_data_folder_is_0700_and_its_secret_and_database_files_0600() {
    let parent = support::app::temp_dir("files");
    let data = parent.join("data");
    let data_str = data.display().to_string();
    let app = TestApp::spawn_with(move |env| {
        env.insert("SUROGA_DATA_DIR".into(), data_str);
        env.remove("AUTH_HS256_SECRET");
    })
    .await;
    // A write (with a token of the generated secret), so the WAL and its index exist.
    let secret = suroga::auth::load_or_create_dev_secret(&data).unwrap();
    let token = suroga::auth::mint_dev_token(&secret, &user(), false, "admin", Duration::hours(1), chrono::Utc::now());
    let res = app.http.post(format!("{}/api/v1/rooms", app.base)).bearer_auth(token).json(&json!({})).send().await;
    assert_eq!(res.unwrap().status(), StatusCode::CREATED);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for file in [
        "suroga.sqlite3",
        "suroga.sqlite3-wal",
        "suroga.sqlite3-shm",
        "auth-hs256.secret",
        "janus/local-1/secrets.json",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    drop(app);
    let _ = std::fs::remove_dir_all(parent);
}
