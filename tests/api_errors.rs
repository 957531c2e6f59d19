//! Cross-cutting API behaviour: authentication, problem+json errors, limits, health, docs.

mod support;

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use support::app::{TestApp, user};

#[tokio::test]
async fn every_api_route_needs_a_token() {
    let app = TestApp::spawn().await;
    for (m, p) in [
        (Method::GET, "/api/v1/rooms"),
        (Method::POST, "/api/v1/rooms"),
        (Method::GET, "/api/v1/rooms/1"),
        (Method::GET, "/api/v1/rooms/availability?start_time=2030-01-01T10:00:00Z&end_time=2030-01-01T11:00:00Z"),
        (Method::GET, "/api/v1/bookings"),
        (Method::POST, "/api/v1/bookings"),
    ] {
        let res = app.http.request(m.clone(), format!("{}{p}", app.base)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{m} {p}");
        assert!(res.headers().contains_key(header::WWW_AUTHENTICATE), "{m} {p}");
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
    }
    let res = app.http.get(format!("{}/api/v1/rooms", app.base)).bearer_auth("not.a.jwt").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn public_routes_need_no_token() {
    let app = TestApp::spawn().await;
    for p in ["/", "/api/v1/health", "/api/v1/openapi.json", "/api/docs"] {
        let res = app.http.get(format!("{}{p}", app.base)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{p}");
    }
}

#[tokio::test]
async fn health_reports_database_and_version_to_anyone_and_janus_to_admins() {
    let app = TestApp::spawn().await;
    let (st, h) = app.call(Method::GET, "/api/v1/health", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["database"], "ok");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert!(h.get("janus").is_none(), "the hosts are for admins: {h}");
    let (st, h) = app.get("/api/v1/health", &user()).await;
    assert_eq!(st, StatusCode::OK);
    assert!(h.get("janus").is_none(), "the hosts are for admins: {h}");
    let (st, h) = app.get("/api/v1/health", &support::app::admin()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["database"], "ok");
    assert!(!h["janus"].as_object().unwrap().is_empty(), "{h}");
    assert!(h["janus"].as_object().unwrap().values().all(|v| v == "ok"), "{h}");
}

#[tokio::test]
async fn malformed_bodies_are_problem_400s() {
    let app = TestApp::spawn().await;
    let token = app.token(&user(), false);
    for raw in ["{", "[]", "null", "{\"start_time\": }"] {
        let res = app
            .http
            .post(format!("{}/api/v1/bookings", app.base))
            .bearer_auth(&token)
            .header(header::CONTENT_TYPE, "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{raw}");
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], 400);
        assert!(body["detail"].is_string());
    }
    let res =
        app.http.post(format!("{}/api/v1/bookings", app.base)).bearer_auth(&token).body("{}").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn bodies_over_64_kib_are_413() {
    let app = TestApp::spawn().await;
    let big = json!({"metadata": {"x": "y".repeat(70 * 1024)}});
    let (st, body) = app.post("/api/v1/rooms", &user(), big).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["detail"].is_string());
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = TestApp::spawn().await;
    let res = app.http.get(format!("{}/api/v1/nothing", app.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
    let res = app.http.put(format!("{}/api/v1/rooms", app.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
}

#[tokio::test]
async fn openapi_document_lists_the_api() {
    let app = TestApp::spawn().await;
    let (st, doc) = app.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/rooms",
        "/api/v1/rooms/{room_id}",
        "/api/v1/bookings",
        "/api/v1/bookings/{booking_id}/join",
        "/api/v1/health",
    ] {
        assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys().collect::<Vec<_>>());
    }
    let page = app.http.get(format!("{}/api/docs", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("/api/v1/openapi.json") && !page.contains("https://"), "self-contained docs page");
}

/// An empty body is no body, whatever the headers say: the Functions host's proxying mode keeps a
/// bare `Content-Type` (with `Content-Length: 0`) on requests that carry nothing.
#[tokio::test]
async fn an_empty_body_is_no_body_whatever_its_content_type_says() {
    let app = TestApp::spawn().await;
    let root = app.token(&support::app::admin(), true);
    let post = |path: &str, content_type: Option<&str>| {
        let mut req =
            app.http.post(format!("{}{path}", app.base)).bearer_auth(&root).header(header::CONTENT_LENGTH, "0");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        req.send()
    };
    // Optional bodies: the manual override takes its defaults.
    for ct in [Some("application/json"), Some("text/plain"), None] {
        let res = post("/api/v1/hosts/local-1/start", ct).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "Content-Type {ct:?}: {}", res.text().await.unwrap());
    }
    // Required bodies: 400 "a JSON body is required", never 415 for a body that is not there.
    for ct in [Some("application/json"), None] {
        let res = post("/api/v1/bookings", ct).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "Content-Type {ct:?}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["detail"], "a JSON body is required");
    }
}
