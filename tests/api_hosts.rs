//! The operators' surface: hosts, manual overrides, the dry-run plan and usage, with a real local
//! Janus host and an injected clock.

mod support;

use chrono::Duration;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::app::{TestApp, admin, user};

fn host<'a>(hosts: &'a Value, name: &str) -> &'a Value {
    hosts.as_array().unwrap().iter().find(|h| h["name"] == name).unwrap_or_else(|| panic!("{name} in {hosts}"))
}

#[tokio::test]
async fn operator_routes_are_admin_only() {
    let app = TestApp::spawn().await;
    let u = user();
    assert_eq!(app.get("/api/v1/hosts", &u).await.0, StatusCode::FORBIDDEN);
    assert_eq!(app.get("/api/v1/plan", &u).await.0, StatusCode::FORBIDDEN);
    assert_eq!(app.get("/api/v1/usage", &u).await.0, StatusCode::FORBIDDEN);
    assert_eq!(app.post("/api/v1/hosts/local-1/start", &u, json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(app.call(reqwest::Method::GET, "/api/v1/hosts", None, None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn hosts_show_power_state_and_the_plan() {
    let app = TestApp::spawn().await;
    let b = app.book(&user(), 20, 80, None).await;
    let (st, hosts) = app.get("/api/v1/hosts", &admin()).await;
    assert_eq!(st, StatusCode::OK, "{hosts}");
    let h = host(&hosts, "local-1");
    assert_eq!(h["power_state"], "running", "{h}");
    assert!(h["bookings"].as_array().unwrap().contains(&b["booking_id"]), "{h}");
    assert_eq!(h["next_action"]["action"], "keep_on", "{h}");

    let (st, plan) = app.get("/api/v1/plan", &admin()).await;
    assert_eq!(st, StatusCode::OK, "{plan}");
    assert_eq!(plan["assignments"][b["booking_id"].as_str().unwrap()], "local-1");
    let on = &plan["hosts"][0]["on_intervals"][0];
    let start =
        |k: &str| chrono::DateTime::parse_from_rfc3339(b[k].as_str().unwrap()).unwrap().with_timezone(&chrono::Utc);
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().with_timezone(&chrono::Utc);
    assert!(at(&on["start"]) <= start("start_time") - Duration::minutes(30), "{on}");
    assert!(at(&on["end"]) >= start("end_time") + Duration::minutes(10), "{on}");
    assert_eq!(
        app.get("/api/v1/plan?from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z", &admin()).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.get("/api/v1/plan?from=2030-01-01T00:00:00Z&to=2030-06-01T00:00:00Z", &admin()).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn manual_overrides_switch_the_host_and_are_logged_into_usage() {
    let app = TestApp::spawn().await;
    let root = admin();
    let t0 = app.now();
    let until = (t0 + Duration::hours(2)).to_rfc3339();
    let (st, r) = app.post("/api/v1/hosts/local-1/deallocate", &root, json!({"until": until})).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["result"], "ok");
    let (_, hosts) = app.get("/api/v1/hosts", &root).await;
    assert_eq!(host(&hosts, "local-1")["power_state"], "deallocated");
    assert_eq!(host(&hosts, "local-1")["override"]["action"], "deallocate");
    assert_eq!(host(&hosts, "local-1")["override"]["by"], root.as_str());
    let (_, health) = app.get("/api/v1/health", &root).await;
    assert_eq!(health["janus"]["local-1"], "unavailable");

    app.clock.advance(Duration::minutes(30));
    let (st, r) = app.call(reqwest::Method::POST, "/api/v1/hosts/local-1/start", Some(&root), None).await;
    assert_eq!(st, StatusCode::OK, "start without a body: {r}");
    let (_, hosts) = app.get("/api/v1/hosts", &root).await;
    assert_eq!(host(&hosts, "local-1")["power_state"], "running");
    app.clock.advance(Duration::minutes(60));

    let from = (t0 - Duration::hours(1)).to_rfc3339().replace('+', "%2B");
    let (st, usage) = app.get(&format!("/api/v1/usage?from={from}"), &root).await;
    assert_eq!(st, StatusCode::OK, "{usage}");
    let h = host(&usage["hosts"], "local-1");
    assert_eq!(h["vm_minutes"], 60.0, "on from the manual start until now: {usage}");
    assert_eq!(h["starts"], 1);
    assert!(usage["saving_vm_minutes"].as_f64().unwrap() > 0.0);

    assert_eq!(app.post("/api/v1/hosts/nope/start", &root, json!({})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        app.post("/api/v1/hosts/local-1/start", &root, json!({"until": "2001-01-01T00:00:00Z"})).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.post("/api/v1/hosts/local-1/start", &root, json!({"until": "soon"})).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn deallocating_a_host_with_a_session_in_progress_needs_force() {
    let app = TestApp::spawn().await;
    let root = admin();
    app.book(&user(), 5, 65, None).await;
    app.clock.advance(Duration::minutes(10));
    let (st, body) = app.post("/api/v1/hosts/local-1/deallocate", &root, json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    let (st, _) = app.post("/api/v1/hosts/local-1/deallocate", &root, json!({"force": true})).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn extending_a_booking_moves_its_host_window_in_the_plan_at_once() {
    let app = TestApp::spawn().await;
    let u = user();
    let b = app.book(&u, 60, 120, None).await;
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().with_timezone(&chrono::Utc);
    let plan_end = |plan: &Value| at(&plan["hosts"][0]["on_intervals"][0]["end"]);
    let (_, before) = app.get("/api/v1/plan", &admin()).await;
    assert_eq!(plan_end(&before), app.now() + Duration::minutes(130));
    let end = (app.now() + Duration::minutes(180)).to_rfc3339();
    let (st, _) = app
        .post(&format!("/api/v1/bookings/{}/extend", b["booking_id"].as_str().unwrap()), &u, json!({"end_time": end}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, after) = app.get("/api/v1/plan", &admin()).await;
    assert_eq!(plan_end(&after), app.now() + Duration::minutes(190), "{after}");
}
