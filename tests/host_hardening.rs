//! Behind the emulated Functions host (the real binary, requests through `handlers/`): anonymous
//! callers are told apart by the address the platform's front end appended to `X-Forwarded-For`,
//! and the timer routes answer only the host's own invocations.

#[path = "support/functions_host.rs"]
mod functions_host;

use functions_host::FunctionsHost;
use reqwest::StatusCode;

#[tokio::test]
async fn anonymous_callers_are_counted_by_the_last_forwarded_address() {
    let host =
        FunctionsHost::start(&[("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "1"), ("RATE_LIMIT_ANONYMOUS_BURST", "2")]).await;
    let http = reqwest::Client::new();
    let health = |forwarded: &'static str| {
        http.get(format!("{}/api/v1/health", host.url())).header("x-forwarded-for", forwarded).send()
    };
    // The client may send its own X-Forwarded-For; the front end appends the address it saw.
    assert_eq!(health("198.51.100.7, 203.0.113.1:50123").await.unwrap().status(), StatusCode::OK);
    assert_eq!(health("203.0.113.1:50999").await.unwrap().status(), StatusCode::OK);
    let third = health("10.0.0.1, 203.0.113.1:51000").await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS, "same last address, whatever the client wrote");
    assert!(third.headers().contains_key(reqwest::header::RETRY_AFTER));
    assert_eq!(health("203.0.113.2:40000").await.unwrap().status(), StatusCode::OK, "another client");
    assert_eq!(health("[2001:db8:7::1]:443").await.unwrap().status(), StatusCode::OK);
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
