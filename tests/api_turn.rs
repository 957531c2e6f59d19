//! TURN through the API: each join answers the session host's STUN and TURN servers, the TURN
//! ones with credentials minted for that join (coturn's TURN REST API scheme) that expire with
//! the session's Janus tokens, and the ICE transport policy the deployment chose. A real coturn
//! accepting these credentials, and relaying a call, is proved by the browser suite
//! (`web/tests/turn.test.mjs`).

mod support;

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Duration};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::app::{TestApp, user};

const TURN_SECRET: &str = "api-test-turn-shared-secret-4b1d";

fn turn_urls() -> Value {
    json!([{"name": "local-1", "urls": [
        "stun:198.18.7.1:3478",
        "turn:198.18.7.1:3478?transport=udp",
        "turns:turn.example.test:443?transport=tcp",
    ]}])
}

async fn spawn(policy: Option<&str>) -> TestApp {
    TestApp::spawn_with(|env| {
        env.insert("TURN_URLS".into(), turn_urls().to_string());
        env.insert("TURN_SHARED_SECRET".into(), TURN_SECRET.into());
        if let Some(p) = policy {
            env.insert("ICE_TRANSPORT_POLICY".into(), p.into());
        }
    })
    .await
}

/// base64(HMAC-SHA1(secret, username)): what coturn computes with `use-auth-secret`.
fn coturn_credential(username: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(TURN_SECRET.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a join answer's `ice_servers` and returns the TURN username.
fn check_ice_servers(join: &Value, booking: &str, role: &str) -> String {
    let servers = join["ice_servers"].as_array().unwrap_or_else(|| panic!("no ice_servers in {join}"));
    assert_eq!(servers.len(), 2, "{join}");
    assert_eq!(servers[0], json!({"urls": ["stun:198.18.7.1:3478"]}), "STUN goes without credentials");
    let turn = &servers[1];
    assert_eq!(
        turn["urls"],
        json!(["turn:198.18.7.1:3478?transport=udp", "turns:turn.example.test:443?transport=tcp"])
    );
    let username = turn["username"].as_str().unwrap();
    let expires = DateTime::parse_from_rfc3339(join["token_expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(username, format!("{}:{booking}.{role}", expires.timestamp()), "expires with the Janus tokens");
    assert_eq!(turn["credential"], coturn_credential(username));
    assert!(!join.to_string().contains(TURN_SECRET), "the shared secret never leaves the server");
    username.to_string()
}

#[tokio::test]
async fn each_join_gets_the_hosts_stun_and_turn_servers_with_its_own_credentials() {
    let app = spawn(Some("relay")).await;
    let host = user();
    let b = app.book(&host, 10, 70, None).await;
    let booking = b["booking_id"].as_str().unwrap();
    let (st, join) = app.get(&format!("/api/v1/bookings/{booking}/join"), &host).await;
    assert_eq!(st, StatusCode::OK, "{join}");
    let host_user = check_ice_servers(&join, booking, "host");
    assert_eq!(join["ice_transport_policy"], "relay");

    let (st, inv) = app.call(Method::POST, &format!("/api/v1/bookings/{booking}/invitation"), Some(&host), None).await;
    assert_eq!(st, StatusCode::CREATED, "{inv}");
    let res = app
        .http
        .post(format!("{}/api/v1/invitations/{}/join", app.base, inv["code"].as_str().unwrap()))
        .json(&json!({"display_name": "Bea"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let guest: Value = res.json().await.unwrap();
    let guest_user = check_ice_servers(&guest, booking, "guest");
    assert_ne!(guest_user, host_user, "each participant has its own TURN username");
    assert_eq!(guest["ice_transport_policy"], "relay");

    // An extension moves the session's end: the next join's TURN credential lasts to the new end.
    let end = DateTime::parse_from_rfc3339(b["end_time"].as_str().unwrap()).unwrap() + Duration::minutes(30);
    let (st, moved) =
        app.post(&format!("/api/v1/bookings/{booking}/extend"), &host, json!({"end_time": end.to_rfc3339()})).await;
    assert_eq!(st, StatusCode::OK, "{moved}");
    let (_, again) = app.get(&format!("/api/v1/bookings/{booking}/join"), &host).await;
    let renewed = check_ice_servers(&again, booking, "host");
    let expiry = |u: &str| u.split(':').next().unwrap().parse::<i64>().unwrap();
    assert_eq!(expiry(&renewed) - expiry(&host_user), 30 * 60, "{host_user} then {renewed}");
}

#[tokio::test]
async fn the_policy_is_all_unless_configured_and_the_contract_documents_it() {
    let app = spawn(None).await;
    let host = user();
    let b = app.book(&host, 10, 70, None).await;
    let (st, join) = app.get(&format!("/api/v1/bookings/{}/join", b["booking_id"].as_str().unwrap()), &host).await;
    assert_eq!(st, StatusCode::OK, "{join}");
    assert_eq!(join["ice_transport_policy"], "all");

    let (st, doc) = app.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    let schemas = &doc["components"]["schemas"];
    let info = &schemas["JoinInfo"];
    let required: Vec<&str> = info["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(required.contains(&"ice_servers") && required.contains(&"ice_transport_policy"), "{info}");
    assert_eq!(schemas["IceTransportPolicy"]["enum"], json!(["all", "relay"]), "{schemas}");
    for field in ["urls", "username", "credential"] {
        assert!(!schemas["IceServer"]["properties"][field].is_null(), "IceServer.{field}: {}", schemas["IceServer"]);
    }
}
