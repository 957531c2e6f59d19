//! The web client through the emulated Azure Functions host (the real `suroga` binary behind it,
//! routed only by `handlers/`): every kind of `/app` path, an asset and the web client's API
//! routes answer at the same paths as locally, in both of the host's HTTP modes.

#[path = "support/functions_host.rs"]
mod functions_host;

use functions_host::{FunctionsHost, HttpMode};
use reqwest::{Method, StatusCode};

async fn the_app_is_served_through_the_host(mode: HttpMode) {
    let host = FunctionsHost::start_in(Some(mode), &[]).await;
    let http = reqwest::Client::new();
    let base = host.url();
    let get = |path: String| http.get(format!("{base}{path}")).send();
    let mut page = None;
    for path in [
        "/app",
        "/app/",
        "/app/book",
        "/app/i/vGvrwAN4YTPSynq3qMdscieglHFrbD-C",
        "/app/bookings/0b4d3f4e-8f7e-4a43-9d34-7d6f0c3f6b21",
    ] {
        let res = get(path.to_string()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{mode:?} {path}");
        let h = res.headers();
        assert!(h["content-security-policy"].to_str().unwrap().contains("script-src 'self'"), "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
        page = Some(res.text().await.unwrap());
    }
    let html = page.unwrap();
    let script = html.split("/app/assets/").find(|s| s.starts_with("main-")).unwrap().split('"').next().unwrap();
    let res = get(format!("/app/assets/{script}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "public, max-age=31536000, immutable");
    let head = http.request(Method::HEAD, format!("{base}/app/")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);

    let config = get("/api/v1/client-config".into()).await.unwrap();
    assert_eq!(config.status(), StatusCode::OK);
    assert_eq!(config.json::<serde_json::Value>().await.unwrap()["auth"]["mode"], "local");
    let events = http
        .post(format!("{base}/api/v1/client-events"))
        .json(&serde_json::json!({"booking_id": "0b4d3f4e-8f7e-4a43-9d34-7d6f0c3f6b21", "events": [{"type": "connected", "at": "2026-01-01T10:00:00Z"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::UNAUTHORIZED, "routed to the app, which wants a credential");
    // Paths no function declares are the host's own 404.
    assert_eq!(get("/apps".into()).await.unwrap().status(), StatusCode::NOT_FOUND);
    let journal = host.front_door_journal();
    assert!(journal.iter().any(|e| e.function.as_deref() == Some("app-path")), "{journal:?}");
}

#[tokio::test]
async fn the_app_is_served_through_the_host_forwarding() {
    the_app_is_served_through_the_host(HttpMode::Forwarding).await;
}

#[tokio::test]
async fn the_app_is_served_through_the_host_proxying() {
    the_app_is_served_through_the_host(HttpMode::Proxying).await;
}
