//! The web client as the service serves it, over HTTP against the real router: `/app/` pages with
//! a strict CSP and no caching, content-hashed assets cached for a year, the public
//! `GET /api/v1/client-config`, `POST /api/v1/client-events` (who may send, how much, when) and
//! the operators' view of them, and `suroga token --url`.
//! What the pages do in a browser is tested by the browser suite in `web/tests/`.

mod support;

use std::process::Command;

use chrono::Duration;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use support::app::{TestApp, admin, user};
use uuid::Uuid;

async fn get_raw(app: &TestApp, path: &str) -> reqwest::Response {
    app.http.get(format!("{}{path}", app.base)).send().await.unwrap()
}

fn header_of(res: &reqwest::Response, name: &str) -> String {
    res.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

/// Every path of the app answers the same HTML with the page headers.
#[tokio::test]
async fn app_pages_carry_a_strict_csp_and_are_never_cached() {
    let app = TestApp::spawn().await;
    let janus = app.app.janus.hosts()[0].clone();
    let paths = ["/app", "/app/", "/app/book", "/app/i/Zm9vYmFy-code_1", &format!("/app/bookings/{}", Uuid::new_v4())];
    let mut first = None;
    for path in paths {
        let res = get_raw(&app, path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(header_of(&res, "content-type"), "text/html; charset=utf-8", "{path}");
        assert_eq!(header_of(&res, "cache-control"), "no-store", "{path}");
        assert_eq!(header_of(&res, "referrer-policy"), "no-referrer", "{path}: an invitation code is in the path");
        assert_eq!(header_of(&res, "x-frame-options"), "DENY");
        let csp = header_of(&res, "content-security-policy");
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {part} missing from {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval") && !csp.contains('*'), "{csp}");
        let http_origin = janus.public_http_url.trim_end_matches("/janus");
        assert!(
            csp.contains(http_origin) && csp.contains(&janus.public_ws_url),
            "the page may reach its Janus host: {csp}"
        );
        let body = res.text().await.unwrap();
        assert!(body.contains("/app/assets/main-") && !body.contains("<script>"), "{body}");
        assert_eq!(first.get_or_insert_with(|| body.clone()), &body, "one page for every route");
    }
    let head = app.http.head(format!("{}/app/", app.base)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.bytes().await.unwrap().is_empty());
    let post = app.http.post(format!("{}/app/", app.base)).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn assets_have_hashed_names_and_are_cached_for_a_year() {
    let app = TestApp::spawn().await;
    let html = get_raw(&app, "/app/").await.text().await.unwrap();
    let names: Vec<&str> = html.split("/app/assets/").skip(1).map(|s| s.split('"').next().unwrap()).collect();
    assert_eq!(names.len(), 3, "icon, stylesheet, script: {html}");
    for name in names {
        let res = get_raw(&app, &format!("/app/assets/{name}")).await;
        assert_eq!(res.status(), StatusCode::OK, "{name}");
        assert_eq!(header_of(&res, "cache-control"), "public, max-age=31536000, immutable");
        assert_eq!(header_of(&res, "x-content-type-options"), "nosniff");
        let ct = header_of(&res, "content-type");
        let expected = match name.rsplit('.').next().unwrap() {
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("unexpected asset type {other}"),
        };
        assert_eq!(ct, expected, "{name}");
        let body = res.bytes().await.unwrap();
        let embedded = suroga::web::Asset::get(&format!("assets/{name}")).unwrap();
        assert_eq!(&body[..], embedded.bytes);
    }
    for missing in ["/app/assets/main-00000000.js", "/app/assets/", "/app/assets/sub/index.html"] {
        let res = get_raw(&app, missing).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(header_of(&res, "content-type"), "application/problem+json");
    }
}

#[tokio::test]
async fn client_config_is_public_and_says_how_to_sign_in() {
    let app = TestApp::spawn().await;
    let (st, c) = app.call(Method::GET, "/api/v1/client-config", None, None).await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert_eq!(
        c,
        json!({"auth": {"mode": "local"}, "join_opens_before_minutes": 15, "end_warning_minutes": 5,
               "extend_minutes": 15, "languages": ["en", "pt-PT"]})
    );

    let entra = TestApp::spawn_with(|env| {
        env.insert("AUTH_ISSUER".into(), "https://login.microsoftonline.com/tenant-a/v2.0".into());
        env.insert("AUTH_AUDIENCE".into(), "api://suroga".into());
        env.insert("AUTH_JWKS_URL".into(), "http://127.0.0.1:9/keys".into());
        env.insert("AUTH_CLIENT_ID".into(), "spa-client".into());
        env.insert("WEB_EXTEND_MINUTES".into(), "30".into());
    })
    .await;
    let (st, c) = entra.call(Method::GET, "/api/v1/client-config", None, None).await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert_eq!(
        c["auth"],
        json!({"mode": "entra", "client_id": "spa-client",
               "authority": "https://login.microsoftonline.com/tenant-a", "scopes": ["api://suroga/.default"]})
    );
    assert_eq!(c["extend_minutes"], 30);
    let csp = header_of(&get_raw(&entra, "/app/").await, "content-security-policy");
    assert!(csp.contains("frame-src https://login.microsoftonline.com") && csp.contains("connect-src 'self'"), "{csp}");
}

fn events(n: usize) -> Value {
    let e = json!({"type": "connected", "at": "2026-01-01T10:00:00Z", "data": {"ms": 830, "rejoins": 0}});
    Value::Array(vec![e; n])
}

async fn post_events(app: &TestApp, as_user: Option<&str>, body: Value) -> (StatusCode, Value) {
    app.call(Method::POST, "/api/v1/client-events", as_user, Some(body)).await
}

#[tokio::test]
async fn the_host_reports_client_events_and_operators_read_them() {
    let app = TestApp::spawn().await;
    let host = user();
    let b = app.book(&host, 10, 70, None).await;
    let id = b["booking_id"].as_str().unwrap();
    let (st, r) = post_events(&app, Some(&host), json!({"booking_id": id, "events": events(3)})).await;
    assert_eq!((st, r), (StatusCode::ACCEPTED, json!({"accepted": 3})));
    let quality = json!({"booking_id": id, "events": [{"type": "quality", "at": "2026-01-01T10:30:00+01:00",
        "data": {"avg_kbps": 1200, "avg_loss_pct": 0.1, "avg_rtt_ms": 3}}]});
    assert_eq!(post_events(&app, Some(&host), quality).await.0, StatusCode::ACCEPTED);

    let (st, list) = app.get(&format!("/api/v1/bookings/{id}/client-events"), &admin()).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list[0]["type"], "connected");
    assert_eq!(list[0]["role"], "host");
    assert_eq!(list[0]["data"], json!({"ms": 830, "rejoins": 0}));
    assert_eq!(list[3]["type"], "quality");
    assert_eq!(list[3]["at"], "2026-01-01T09:30:00Z");
    assert_eq!(app.get(&format!("/api/v1/bookings/{id}/client-events"), &host).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn client_events_need_the_bookings_own_credential() {
    let app = TestApp::spawn().await;
    let host = user();
    let b = app.book(&host, 10, 70, None).await;
    let id = b["booking_id"].as_str().unwrap();
    let body = json!({"booking_id": id, "events": events(1)});
    assert_eq!(post_events(&app, None, body.clone()).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(post_events(&app, Some(&user()), body).await.0, StatusCode::NOT_FOUND, "another user's booking");
    let (st, _) = post_events(&app, None, json!({"invitation": "no-such-code", "events": events(1)})).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "an unknown invitation code");
    let unknown = json!({"booking_id": Uuid::new_v4(), "events": events(1)});
    assert_eq!(post_events(&app, Some(&host), unknown).await.0, StatusCode::NOT_FOUND);
    let (st, _) = post_events(&app, Some(&host), json!({"events": events(1)})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn client_events_are_bounded_in_size_and_shape() {
    let app = TestApp::spawn().await;
    let host = user();
    let id = app.book(&host, 10, 70, None).await["booking_id"].as_str().unwrap().to_string();
    let send = |events: Value| post_events(&app, Some(&host), json!({"booking_id": id, "events": events}));
    assert_eq!(send(events(0)).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(send(events(21)).await.0, StatusCode::BAD_REQUEST, "at most 20 per request");
    for bad in [
        json!([{"type": "Connected!", "at": "2026-01-01T10:00:00Z"}]),
        json!([{"type": "x".repeat(33), "at": "2026-01-01T10:00:00Z"}]),
        json!([{"type": "ok", "at": "yesterday"}]),
        json!([{"type": "ok", "at": "2026-01-01T10:00:00Z", "data": [1, 2]}]),
        json!([{"type": "ok", "at": "2026-01-01T10:00:00Z", "data": {"blob": "x".repeat(1100)}}]),
        json!([{"type": "ok", "at": "2026-01-01T10:00:00Z", "extra": 1}]),
    ] {
        let (st, p) = send(bad.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {p}");
        assert!(p["detail"].is_string());
    }
    let big = json!({"booking_id": id, "events": events(1), "pad": "x".repeat(17 * 1024)});
    let (st, _) = post_events(&app, Some(&host), big).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    let res = app
        .http
        .post(format!("{}/api/v1/client-events", app.base))
        .bearer_auth(app.token(&host, false))
        .header(header::CONTENT_TYPE, "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn client_events_are_rate_limited_per_booking() {
    let app = TestApp::spawn().await;
    let host = user();
    let id = app.book(&host, 10, 70, None).await["booking_id"].as_str().unwrap().to_string();
    for _ in 0..3 {
        let (st, r) = post_events(&app, Some(&host), json!({"booking_id": id, "events": events(20)})).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{r}");
    }
    let res = app
        .http
        .post(format!("{}/api/v1/client-events", app.base))
        .bearer_auth(app.token(&host, false))
        .json(&json!({"booking_id": id, "events": events(1)}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "61 in one minute");
    assert_eq!(header_of(&res, "retry-after"), "60");
    assert_eq!(header_of(&res, "content-type"), "application/problem+json");
    app.clock.advance(Duration::minutes(1));
    assert_eq!(
        post_events(&app, Some(&host), json!({"booking_id": id, "events": events(1)})).await.0,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn client_events_are_taken_only_around_the_session() {
    let app = TestApp::spawn().await;
    let host = user();
    let early = app.book(&host, 60, 90, None).await["booking_id"].as_str().unwrap().to_string();
    let (st, p) = post_events(&app, Some(&host), json!({"booking_id": early, "events": events(1)})).await;
    assert_eq!(st, StatusCode::CONFLICT, "before the join window: {p}");
    let soon = app.book(&host, 10, 20, None).await["booking_id"].as_str().unwrap().to_string();
    app.clock.advance(Duration::minutes(20 + 59));
    assert_eq!(
        post_events(&app, Some(&host), json!({"booking_id": soon, "events": events(1)})).await.0,
        StatusCode::ACCEPTED
    );
    app.clock.advance(Duration::minutes(2));
    assert_eq!(
        post_events(&app, Some(&host), json!({"booking_id": soon, "events": events(1)})).await.0,
        StatusCode::CONFLICT
    );
}

/// The guest has no account: the invitation code it joined with is its credential, as long as the
/// code is the booking's current invitation.
#[tokio::test]
async fn the_guest_reports_client_events_with_its_invitation_code() {
    use suroga::domain::{Access, Invitation};
    let app = TestApp::spawn().await;
    let host = user();
    let id: Uuid = app.book(&host, 10, 70, None).await["booking_id"].as_str().unwrap().parse().unwrap();
    let code = format!("guest-code-{}", Uuid::new_v4());
    let store = &app.app.state.store;
    let before = store.get_booking(id).await.unwrap().access;
    let invited = Access {
        invitation: Some(Invitation {
            code_hash: suroga::sessions::code_hash(&code),
            guest: None,
            host_display: "Ana".into(),
            created_at: app.now(),
            joined_at: None,
        }),
        ..before.clone()
    };
    store.set_booking_access(id, &before, &invited).await.unwrap();

    let (st, r) = post_events(&app, None, json!({"invitation": code, "events": events(2)})).await;
    assert_eq!((st, r), (StatusCode::ACCEPTED, json!({"accepted": 2})));
    let (_, list) = app.get(&format!("/api/v1/bookings/{id}/client-events"), &admin()).await;
    assert!(list.as_array().unwrap().iter().all(|e| e["role"] == "guest"), "{list}");

    // A revoked code is no credential any more.
    store.set_booking_access(id, &invited, &before).await.unwrap();
    let (st, _) = post_events(&app, None, json!({"invitation": code, "events": events(1)})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[test]
fn token_url_prints_the_web_clients_sign_in_link() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_suroga"))
        .args(["token", "--sub", "alice", "--url"])
        .env("SUROGA_DATA_DIR", dir.path())
        .env("SUROGA_ADDR", "127.0.0.1:7999")
        .env_remove("AUTH_HS256_SECRET")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let link = String::from_utf8(out.stdout).unwrap();
    let token = link.trim().strip_prefix("http://127.0.0.1:7999/app/#token=").expect("a link to the app");
    assert_eq!(token.split('.').count(), 3, "a JWT: {link}");
}
