//! The API keeps a real Janus in step: room lifecycle, faults, participants, join tokens.

mod support;

use std::time::{Duration, Instant};

use chrono::Duration as ChronoDuration;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    app::{TestApp, admin, user},
    proxy::delaying_proxy,
};
use suroga::{
    config::Secret,
    fleet::local::{HostSecrets, LocalJanusHost, LocalJanusOptions},
    janus::{Credential, JanusClient, JanusClientConfig, JanusError, token},
};

const VIDEOROOM: &str = "janus.plugin.videoroom";

fn secrets(app: &TestApp) -> HostSecrets {
    HostSecrets::load_or_generate(&app.data_dir.join("janus/local-1/secrets.json")).unwrap()
}

fn janus_base(app: &TestApp) -> String {
    app.app.janus.hosts()[0].backend_url.clone()
}

/// Joins `room` through Janus's own API as a participant with `pin`; the session keeps it there.
async fn join_janus(app: &TestApp, room: u64, pin: &str, display: &str) -> Result<suroga::janus::Session, JanusError> {
    let session = app.app.janus.client().session(&janus_base(app)).await?;
    let handle = session.attach(VIDEOROOM).await?;
    handle.join(room, Some(pin), display).await?;
    Ok(session)
}

async fn exists(app: &TestApp, room: u64) -> bool {
    app.app.janus.client().room_exists(&janus_base(app), room).await.unwrap()
}

#[tokio::test]
async fn room_lifecycle_reaches_janus() {
    let app = TestApp::spawn().await;
    let r = app.create_room(&user()).await;
    let id = r["room_id"].as_u64().unwrap();
    let pin = r["password"].as_str().unwrap();
    assert!(exists(&app, id).await, "POST /rooms creates the room in Janus");
    join_janus(&app, id, pin, "first").await.expect("the pin admits a participant");

    let (st, reset) = app.post(&format!("/api/v1/rooms/{id}/password/reset"), &admin(), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    let new_pin = reset["new_password"].as_str().unwrap();
    let old = join_janus(&app, id, pin, "old pin").await;
    assert!(matches!(old, Err(ref e) if e.videoroom_code() == Some(433)), "old pin refused: {old:?}");
    join_janus(&app, id, new_pin, "new pin").await.expect("the new pin admits");

    assert_eq!(app.delete(&format!("/api/v1/rooms/{id}"), &admin()).await.0, StatusCode::NO_CONTENT);
    assert!(!exists(&app, id).await, "DELETE /rooms destroys the room in Janus");
}

#[tokio::test]
async fn find_or_create_bookings_make_their_new_room_in_janus() {
    let app = TestApp::spawn().await;
    let b = app.book(&user(), 60, 120, None).await;
    assert!(exists(&app, b["room_id"].as_u64().unwrap()).await);
}

/// An app over one always-on (`FLEET=static`) host: a Janus this test owns, so it can stop it
/// behind the service's back (a local host the service owns would count as switched off).
async fn spawn_over_own_janus(tag: &str) -> (TestApp, LocalJanusHost, std::path::PathBuf) {
    let dir = support::app::temp_dir(tag);
    let secrets = HostSecrets::generate();
    let mut janus =
        LocalJanusHost::new("own", dir.join("janus"), secrets.clone(), LocalJanusOptions::default()).unwrap();
    janus.start().await.unwrap();
    let hosts = json!([{"name": "own", "backend_url": janus.backend_url(),
        "public_http_url": janus.public_http_url(), "public_ws_url": janus.public_ws_url()}]);
    let app = TestApp::spawn_with(|env| {
        env.insert("FLEET".into(), "static".into());
        env.insert("JANUS_HOSTS".into(), hosts.to_string());
        env.insert("JANUS_API_SECRET".into(), secrets.api_secret.clone());
        env.insert("JANUS_ADMIN_KEY".into(), secrets.admin_key.clone());
        env.insert("JANUS_TOKEN_SECRET".into(), secrets.token_secret.clone());
    })
    .await;
    (app, janus, dir)
}

#[tokio::test]
async fn janus_down_gives_503_and_leaves_no_room_behind() {
    let (app, mut janus, dir) = spawn_over_own_janus("janus-down").await;
    let u = user();
    let kept = app.create_room(&u).await;
    janus.stop().await.unwrap();
    let started = Instant::now();
    let (st, body) = app.post("/api/v1/rooms", &u, json!({})).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["detail"].is_string());
    assert!(started.elapsed() < Duration::from_secs(3));
    let (_, rooms) = app.get("/api/v1/rooms", &u).await;
    assert_eq!(rooms.as_array().unwrap().len(), 1, "only the room made before Janus stopped: {rooms}");
    // Find-or-create that needs a new room fails the same way and writes nothing.
    app.book(&u, 60, 120, Some(kept["room_id"].as_u64().unwrap())).await;
    let (st, _) = app.post("/api/v1/bookings", &u, app.slot_body(60, 120, None)).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.get("/api/v1/bookings", &u).await.1.as_array().unwrap().len(), 1);
    // A delete that cannot reach Janus keeps the room; a reset keeps the old password.
    let id = kept["room_id"].as_u64().unwrap();
    let (st, _) = app.post(&format!("/api/v1/rooms/{id}/password/reset"), &admin(), json!({})).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    let b = app.get("/api/v1/bookings", &u).await.1[0]["booking_id"].as_str().unwrap().to_string();
    app.delete(&format!("/api/v1/bookings/{b}"), &u).await;
    let (st, _) = app.delete(&format!("/api/v1/rooms/{id}"), &admin()).await;
    assert!(st == StatusCode::SERVICE_UNAVAILABLE || st == StatusCode::BAD_GATEWAY, "{st}");
    assert_eq!(app.get(&format!("/api/v1/rooms/{id}"), &u).await.0, StatusCode::OK, "the room stays");
    let pin_now = app.book(&u, 200, 260, Some(id)).await["password"].clone();
    assert_eq!(pin_now, kept["password"], "the old password stays after a failed reset");
    // Health reports Janus without failing.
    let (st, h) = app.get("/api/v1/health", &admin()).await;
    assert_eq!(st, StatusCode::OK);
    assert!(h["janus"].as_object().unwrap().values().all(|v| v == "unavailable"), "{h}");
    // Participants of a room whose always-on host does not answer: 502.
    let (st, body) = app.get(&format!("/api/v1/rooms/{id}/participants"), &admin()).await;
    assert_eq!(st, StatusCode::BAD_GATEWAY, "Janus unreachable: {body}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_local_host_switched_off_keeps_room_changes_waiting_in_the_store() {
    let app = TestApp::spawn().await;
    let u = user();
    app.app.fleet.power.deallocate("local-1").await.unwrap();
    let (st, r) = app.post("/api/v1/rooms", &u, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "the change waits for the host: {r}");
    let id = r["room_id"].as_u64().unwrap();
    let (st, p) = app.get(&format!("/api/v1/rooms/{id}/participants"), &admin()).await;
    assert_eq!((st, p["participant_count"].clone()), (StatusCode::OK, json!(0)), "a host that is off has nobody: {p}");
    app.app.fleet.power.start("local-1").await.unwrap();
    assert!(!exists(&app, id).await, "nothing reached Janus while it was off");
}

#[tokio::test]
async fn a_slow_janus_hits_the_timeout_and_answers_503_within_the_limit() {
    let dir = support::app::temp_dir("slow-janus");
    let secrets = HostSecrets::generate();
    let mut janus =
        LocalJanusHost::new("slow", dir.join("janus"), secrets.clone(), LocalJanusOptions::default()).unwrap();
    janus.start().await.unwrap();
    let url = url::Url::parse(&janus.backend_url()).unwrap();
    let proxy =
        delaying_proxy(format!("127.0.0.1:{}", url.port().unwrap()).parse().unwrap(), Duration::from_secs(10)).await;
    let hosts = json!([{"name": "slow", "backend_url": format!("http://{proxy}/janus"),
        "public_http_url": format!("http://{proxy}/janus"), "public_ws_url": "ws://127.0.0.1:9"}]);
    let app = TestApp::spawn_with(|env| {
        env.insert("FLEET".into(), "static".into());
        env.insert("JANUS_HOSTS".into(), hosts.to_string());
        env.insert("JANUS_API_SECRET".into(), secrets.api_secret.clone());
        env.insert("JANUS_ADMIN_KEY".into(), secrets.admin_key.clone());
        env.insert("JANUS_TOKEN_SECRET".into(), secrets.token_secret.clone());
        env.insert("JANUS_REQUEST_TIMEOUT_MS".into(), "800".into());
    })
    .await;
    let u = user();
    let started = Instant::now();
    let (st, body) = app.post("/api/v1/rooms", &u, json!({})).await;
    let took = started.elapsed();
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(app.get("/api/v1/rooms", &u).await.1, json!([]));
    janus.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn participants_come_from_janus_for_the_active_owner_or_an_admin() {
    let app = TestApp::spawn().await;
    let u = user();
    let b = app.book(&u, 5, 65, None).await;
    let id = b["room_id"].as_u64().unwrap();
    let path = format!("/api/v1/rooms/{id}/participants");
    assert_eq!(app.get(&path, &u).await.0, StatusCode::FORBIDDEN, "not active yet");
    app.clock.advance(ChronoDuration::minutes(6));
    let (st, empty) = app.get(&path, &u).await;
    assert_eq!(st, StatusCode::OK, "{empty}");
    assert_eq!(empty["participant_count"], 0);
    let _alice = join_janus(&app, id, b["password"].as_str().unwrap(), "alice").await.unwrap();
    let wrong = join_janus(&app, id, "not-the-pin", "mallory").await;
    assert!(matches!(wrong, Err(ref e) if e.videoroom_code() == Some(433)), "wrong pin refused: {wrong:?}");
    // The API caches for 5 s; an admin's first look in this process may be cached, so poll.
    let deadline = Instant::now() + Duration::from_secs(8);
    let listed = loop {
        let (st, p) = app.get(&path, &admin()).await;
        assert_eq!(st, StatusCode::OK);
        if p["participant_count"] == 1 || Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(listed["participant_count"], 1, "{listed}");
    assert_eq!(listed["participants"][0]["display"], "alice");
    assert_eq!(app.get(&path, &user()).await.0, StatusCode::FORBIDDEN, "another user");
    assert_eq!(app.get("/api/v1/rooms/77/participants", &admin()).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn join_answers_only_the_owner_inside_the_window() {
    let app = TestApp::spawn().await;
    let u = user();
    let b = app.book(&u, 60, 120, None).await;
    let id = b["booking_id"].as_str().unwrap();
    let path = format!("/api/v1/bookings/{id}/join");
    let (st, early) = app.get(&path, &u).await;
    assert_eq!(st, StatusCode::TOO_EARLY, "{early}");
    assert!(early["opens_at"].is_string());
    assert_eq!(app.get(&path, &user()).await.0, StatusCode::NOT_FOUND);
    app.clock.advance(ChronoDuration::minutes(46));
    let (st, join) = app.get(&path, &u).await;
    assert_eq!(st, StatusCode::OK, "{join}");
    assert_eq!(join["room_id"], b["room_id"]);
    assert_eq!(join["pin"], b["password"]);
    assert!(join["janus"]["http"].as_str().unwrap().starts_with("http://127.0.0.1:"));
    assert!(join["janus"]["ws"].as_str().unwrap().starts_with("ws://127.0.0.1:"));
    assert_eq!(join["display"], u);
    let expires = chrono::DateTime::parse_from_rfc3339(join["token_expires_at"].as_str().unwrap()).unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(b["end_time"].as_str().unwrap()).unwrap();
    assert!(expires > end, "the token outlives the session");
    let text = join.to_string();
    let s = secrets(&app);
    for secret in [&s.api_secret, &s.admin_key, &s.token_secret, &s.admin_secret] {
        assert!(!text.contains(secret.as_str()), "no server secret in /join");
    }
    app.clock.advance(ChronoDuration::minutes(75));
    assert_eq!(app.get(&path, &u).await.0, StatusCode::GONE);

    let c = app.book(&u, 300, 360, None).await;
    app.delete(&format!("/api/v1/bookings/{}", c["booking_id"].as_str().unwrap()), &u).await;
    assert_eq!(
        app.get(&format!("/api/v1/bookings/{}/join", c["booking_id"].as_str().unwrap()), &u).await.0,
        StatusCode::CONFLICT
    );
}

fn token_client() -> JanusClient {
    JanusClient::new(JanusClientConfig {
        api_secret: Secret::new("not-the-secret"),
        admin_key: None,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    })
    .unwrap()
}

#[tokio::test]
async fn the_join_token_opens_a_janus_session_and_forged_ones_do_not() {
    let app = TestApp::spawn().await;
    let u = user();
    let b = app.book(&u, 10, 70, None).await;
    let (st, join) = app.get(&format!("/api/v1/bookings/{}/join", b["booking_id"].as_str().unwrap()), &u).await;
    assert_eq!(st, StatusCode::OK, "{join}");
    let http = join["janus"]["http"].as_str().unwrap();
    let tok = join["token"].as_str().unwrap();
    let client = token_client();
    let session =
        client.session_with(http, Credential::Token(Secret::new(tok))).await.expect("the token opens a session");
    let handle = session.attach(VIDEOROOM).await.expect("and attaches the VideoRoom");
    handle
        .join(b["room_id"].as_u64().unwrap(), Some(join["pin"].as_str().unwrap()), "me")
        .await
        .expect("and joins with the pin");

    let expired = token::sign(
        &secrets(&app).token_secret,
        token::TokenAlgorithm::HmacSha1,
        chrono::Utc::now() - ChronoDuration::minutes(1),
        &[VIDEOROOM],
    );
    let mut tampered: Value = json!(tok);
    let t = tampered.as_str().unwrap().replacen(|c: char| c.is_ascii_digit(), "9", 1);
    tampered = json!(t);
    for bad in [expired, tampered.as_str().unwrap().to_string()] {
        let refused = client.session_with(http, Credential::Token(Secret::new(bad))).await;
        assert!(matches!(refused, Err(ref e) if e.core_code() == Some(403)), "{refused:?}");
    }
}
