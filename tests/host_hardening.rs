//! Behind the emulated Functions host (the real binary, requests through `handlers/`): anonymous
//! callers are told apart by the address the platform's front end names (here the test plays the
//! front end and sets its headers), in both of the host's modes; the timer routes answer only the
//! host's own invocations.

#[path = "support/functions_host.rs"]
mod functions_host;

use functions_host::{FunctionsHost, HttpMode};
use reqwest::StatusCode;

const LIMITS: [(&str, &str); 2] = [("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "1"), ("RATE_LIMIT_ANONYMOUS_BURST", "2")];

async fn health(host: &FunctionsHost, header: &str, value: &str) -> reqwest::Response {
    reqwest::Client::new().get(format!("{}/api/v1/health", host.url())).header(header, value).send().await.unwrap()
}

#[tokio::test]
async fn a_proxying_host_counts_anonymous_callers_by_the_front_ends_client_ip_header() {
    // A current host proxies (YARP): X-Forwarded-For reaches the app as the host's own view.
    let host = FunctionsHost::start_in(Some(HttpMode::Proxying), &LIMITS).await;
    assert_eq!(health(&host, "x-client-ip", "203.0.113.1").await.status(), StatusCode::OK);
    assert_eq!(health(&host, "x-client-ip", "203.0.113.1").await.status(), StatusCode::OK);
    let third = health(&host, "x-client-ip", "203.0.113.1").await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().contains_key(reqwest::header::RETRY_AFTER));
    assert_eq!(health(&host, "x-client-ip", "203.0.113.2").await.status(), StatusCode::OK, "another client");
    assert_eq!(health(&host, "x-client-ip", "2001:db8:7::1").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_forwarding_host_counts_anonymous_callers_by_the_last_forwarded_address() {
    // An older host forwards the front end's X-Forwarded-For as it came.
    let host = FunctionsHost::start_in(Some(HttpMode::Forwarding), &LIMITS).await;
    // The client may send its own X-Forwarded-For; the front end appends the address it saw.
    let xff = "x-forwarded-for";
    assert_eq!(health(&host, xff, "198.51.100.7, 203.0.113.1:50123").await.status(), StatusCode::OK);
    assert_eq!(health(&host, xff, "203.0.113.1:50999").await.status(), StatusCode::OK);
    let third = health(&host, xff, "10.0.0.1, 203.0.113.1:51000").await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS, "same last address, whatever the client wrote");
    assert_eq!(health(&host, xff, "203.0.113.2:40000").await.status(), StatusCode::OK, "another client");
    assert_eq!(health(&host, xff, "[2001:db8:7::1]:443").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn hsts_follows_the_front_ends_https_header_through_a_proxying_host() {
    let host = FunctionsHost::start_in(Some(HttpMode::Proxying), &[]).await;
    let res = health(&host, "x-appservice-proto", "https").await;
    assert_eq!(res.headers()[reqwest::header::STRICT_TRANSPORT_SECURITY], "max-age=31536000");
    let res = health(&host, "x-appservice-proto", "http").await;
    assert!(!res.headers().contains_key(reqwest::header::STRICT_TRANSPORT_SECURITY));
}

#[tokio::test]
async fn timer_routes_answer_only_the_hosts_invocations() {
    let host = FunctionsHost::start(&[]).await;
    host.invoke_timer("purge-keys", false, false).await;
    // Straight to the handler's port, as any other local process could: no invocation header.
    let port = host.setting("FUNCTIONS_CUSTOMHANDLER_PORT").unwrap();
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/purge-keys"))
        .json(&serde_json::json!({"Data": {"timer": {}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Through the host's front door there is no such route at all.
    let res = reqwest::Client::new().post(format!("{}/purge-keys", host.url())).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}
