//! The API keeps a real Janus in step: a Janus room per session, faults, participants, join tokens.

mod support;

use std::time::{Duration, Instant};

use chrono::Duration as ChronoDuration;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    app::{TestApp, admin, over_own_janus, static_fleet, user},
    participant::client,
    proxy::delaying_proxy,
};
use suroga::{
    config::Secret,
    fleet::local::{HostSecrets, LocalJanusHost, LocalJanusOptions},
    janus::{Credential, JanusError, JoinRoom, token},
};

const VIDEOROOM: &str = "janus.plugin.videoroom";

fn secrets(app: &TestApp) -> HostSecrets {
    HostSecrets::load_or_generate(&app.data_dir.join("janus/local-1/secrets.json")).unwrap()
}

fn janus_base(app: &TestApp) -> String {
    app.app.janus.hosts()[0].backend_url.clone()
}

/// Joins the session of a `/join` answer through Janus's own API as a participant, with the
/// answer's tokens and `pin`; the session keeps it there.
async fn join_janus(join: &Value, pin: &str, display: &str) -> Result<suroga::janus::Session, JanusError> {
    let token = Credential::Token(Secret::new(join["token"].as_str().unwrap()));
    let session = client().session_with(join["janus"]["http"].as_str().unwrap(), token).await?;
    let handle = session.attach(VIDEOROOM).await?;
    let req = JoinRoom {
        room: join["room_id"].as_u64().unwrap(),
        display,
        pin: Some(pin),
        room_token: join["room_token"].as_str(),
    };
    handle.join(&req).await?;
    Ok(session)
}

async fn exists(app: &TestApp, room: u64) -> bool {
    app.app.janus.client().room_exists(&janus_base(app), room).await.unwrap()
}

#[tokio::test]
async fn rooms_and_bookings_are_store_writes_and_janus_gets_a_room_per_session() {
    let app = TestApp::spawn().await;
    let u = user();
    let r = app.create_room(&u).await;
    let id = r["room_id"].as_u64().unwrap();
    assert!(!exists(&app, id).await, "a room is what is booked: Janus holds none for it");
    let b = app.book(&u, 10, 70, Some(id)).await;
    let found = app.book(&user(), 10, 70, None).await;
    assert!(!exists(&app, found["room_id"].as_u64().unwrap()).await);

    let (st, join) = app.get(&format!("/api/v1/bookings/{}/join", b["booking_id"].as_str().unwrap()), &u).await;
    assert_eq!(st, StatusCode::OK, "{join}");
    let session_room = join["room_id"].as_u64().unwrap();
    assert_ne!(session_room, id, "the session has its own Janus room");
    assert!(exists(&app, session_room).await, "/join opened the session room");
    assert!(!exists(&app, id).await);
    join_janus(&join, join["pin"].as_str().unwrap(), "first").await.expect("the session's credentials admit");

    // A room whose sessions are all cancelled can go; Janus never knew it.
    app.delete(&format!("/api/v1/bookings/{}", b["booking_id"].as_str().unwrap()), &u).await;
    assert!(!exists(&app, session_room).await, "cancelling closed the session room at once");
    assert_eq!(app.delete(&format!("/api/v1/rooms/{id}"), &admin()).await.0, StatusCode::NO_CONTENT);
}

/// An app over one always-on (`FLEET=static`) host: a Janus this test owns, so it can stop it
/// behind the service's back (a local host the service owns would count as switched off).
async fn spawn_over_own_janus(tag: &str) -> (TestApp, LocalJanusHost, std::path::PathBuf) {
    over_own_janus(tag, LocalJanusOptions::default()).await
}

#[tokio::test]
async fn janus_down_stops_joins_with_503_and_nothing_else() {
    let (app, mut janus, dir) = spawn_over_own_janus("janus-down").await;
    let u = user();
    let b = app.book(&u, 10, 70, None).await;
    let booking = b["booking_id"].as_str().unwrap().to_string();
    let (st, join) = app.get(&format!("/api/v1/bookings/{booking}/join"), &u).await;
    assert_eq!(st, StatusCode::OK, "{join}");
    janus.stop().await.unwrap();

    // Rooms and bookings are store writes: they go on.
    let (st, r) = app.post("/api/v1/rooms", &u, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    let other = app.book(&u, 100, 160, None).await;
    // Joining needs Janus: 503 at once, with a detail.
    let started = Instant::now();
    let (st, body) = app.get(&format!("/api/v1/bookings/{booking}/join"), &u).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["detail"].is_string());
    assert!(started.elapsed() < Duration::from_secs(3));
    // Cancelling works: the store leads; the reconciler closes the room when Janus is back
    // (here Janus lost it anyway).
    let (st, _) = app.delete(&format!("/api/v1/bookings/{}", other["booking_id"].as_str().unwrap()), &u).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // Health reports Janus without failing.
    let (st, h) = app.get("/api/v1/health", &admin()).await;
    assert_eq!(st, StatusCode::OK);
    assert!(h["janus"].as_object().unwrap().values().all(|v| v == "unavailable"), "{h}");
    // Participants of a session whose always-on host does not answer: 503.
    let (st, body) = app.get(&format!("/api/v1/bookings/{booking}/participants"), &u).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "Janus unreachable: {body}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_local_host_switched_off_answers_join_with_503_and_retry_after() {
    let app = TestApp::spawn().await;
    let u = user();
    app.app.fleet.power.deallocate("local-1").await.unwrap();
    let b = app.book(&u, 10, 70, None).await;
    let booking = b["booking_id"].as_str().unwrap();
    let res = app
        .http
        .get(format!("{}/api/v1/bookings/{booking}/join", app.base))
        .bearer_auth(app.token(&u, false))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    let (st, p) = app.get(&format!("/api/v1/bookings/{booking}/participants"), &u).await;
    assert_eq!((st, p["participant_count"].clone()), (StatusCode::OK, json!(0)), "a host that is off has nobody: {p}");
}

#[tokio::test]
async fn a_slow_janus_hits_the_timeout_and_join_answers_503_within_the_limit() {
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
        static_fleet(env, &hosts, &secrets);
        env.insert("JANUS_REQUEST_TIMEOUT_MS".into(), "800".into());
    })
    .await;
    let u = user();
    let b = app.book(&u, 10, 70, None).await;
    let started = Instant::now();
    let (st, body) = app.get(&format!("/api/v1/bookings/{}/join", b["booking_id"].as_str().unwrap()), &u).await;
    let took = started.elapsed();
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(3), "answered after {took:?}");
    janus.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn participants_come_from_janus_for_the_owner_from_the_window_opening_or_an_admin() {
    let app = TestApp::spawn().await;
    let u = user();
    let b = app.book(&u, 20, 80, None).await;
    let id = b["room_id"].as_u64().unwrap();
    let booking = b["booking_id"].as_str().unwrap();
    let room_path = format!("/api/v1/rooms/{id}/participants");
    let booking_path = format!("/api/v1/bookings/{booking}/participants");
    assert_eq!(app.get(&room_path, &u).await.0, StatusCode::FORBIDDEN, "the window has not opened");
    let (st, early) = app.get(&booking_path, &u).await;
    assert_eq!(st, StatusCode::TOO_EARLY, "{early}");
    // The window opens 15 minutes before the start: the owner is already in the room then.
    app.clock.advance(ChronoDuration::minutes(6));
    let (st, empty) = app.get(&room_path, &u).await;
    assert_eq!(st, StatusCode::OK, "{empty}");
    assert_eq!(empty["participant_count"], 0);
    let (st, join) = app.get(&format!("/api/v1/bookings/{booking}/join"), &u).await;
    assert_eq!(st, StatusCode::OK, "{join}");
    let _alice = join_janus(&join, join["pin"].as_str().unwrap(), "alice").await.unwrap();
    let wrong = join_janus(&join, "not-the-pin", "mallory").await;
    assert!(matches!(wrong, Err(ref e) if e.videoroom_code() == Some(433)), "wrong pin refused: {wrong:?}");
    // The API caches for 5 s; a first look in this process may be cached, so poll.
    let deadline = Instant::now() + Duration::from_secs(8);
    for path in [&booking_path, &room_path] {
        let listed = loop {
            let (st, p) = app.get(path, &admin()).await;
            assert_eq!(st, StatusCode::OK, "{p}");
            if p["participant_count"] == 1 || Instant::now() > deadline {
                break p;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(listed["participant_count"], 1, "{listed}");
        assert_eq!(listed["participants"][0]["display"], "alice");
        assert_eq!(
            listed["room_id"].as_u64(),
            Some(if path == &room_path { id } else { join["room_id"].as_u64().unwrap() })
        );
    }
    assert_eq!(app.get(&room_path, &user()).await.0, StatusCode::FORBIDDEN, "another user");
    assert_eq!(app.get(&booking_path, &user()).await.0, StatusCode::NOT_FOUND, "another user");
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
    assert_eq!(join["booking_id"], b["booking_id"]);
    assert_ne!(join["room_id"], b["room_id"], "the session's own Janus room");
    assert_eq!(join["pin"], b["password"], "the booking's own pin");
    assert_eq!(join["role"], "host");
    assert_eq!(join["display"], "Host", "a neutral label, never the user id");
    assert_eq!(join["ice_servers"], json!([]));
    assert!(join["janus"]["http"].as_str().unwrap().starts_with("http://127.0.0.1:"));
    assert!(join["janus"]["ws"].as_str().unwrap().starts_with("ws://127.0.0.1:"));
    assert!(join["room_token"].as_str().unwrap().contains(&format!("room={}", join["room_id"])));
    let expires = chrono::DateTime::parse_from_rfc3339(join["token_expires_at"].as_str().unwrap()).unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(b["end_time"].as_str().unwrap()).unwrap();
    assert_eq!(expires, end + ChronoDuration::minutes(5), "the tokens last to the end plus the session grace");
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

#[tokio::test]
async fn the_join_token_opens_a_janus_session_and_forged_ones_do_not() {
    let app = TestApp::spawn().await;
    let u = user();
    let b = app.book(&u, 10, 70, None).await;
    let (st, join) = app.get(&format!("/api/v1/bookings/{}/join", b["booking_id"].as_str().unwrap()), &u).await;
    assert_eq!(st, StatusCode::OK, "{join}");
    let http = join["janus"]["http"].as_str().unwrap();
    let tok = join["token"].as_str().unwrap();
    let client = client();
    let session =
        client.session_with(http, Credential::Token(Secret::new(tok))).await.expect("the token opens a session");
    let handle = session.attach(VIDEOROOM).await.expect("and attaches the VideoRoom");
    let req = JoinRoom {
        room: join["room_id"].as_u64().unwrap(),
        display: "me",
        pin: join["pin"].as_str(),
        room_token: join["room_token"].as_str(),
    };
    handle.join(&req).await.expect("and joins with the pin and the room token");

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

/// A room whose session's host is off has no participants: 200 with an empty list, never 502.
#[tokio::test]
async fn participants_of_a_room_whose_host_is_off_are_an_empty_list() {
    let app = TestApp::spawn().await;
    let u = user();
    let b = app.book(&u, 10, 70, None).await;
    let id = b["room_id"].as_u64().unwrap();
    let booking = b["booking_id"].as_str().unwrap();
    let (st, r) = app.post("/api/v1/hosts/local-1/deallocate", &admin(), json!({"force": true})).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    for (path, who) in [
        (format!("/api/v1/rooms/{id}/participants"), u.clone()),
        (format!("/api/v1/rooms/{id}/participants"), admin()),
        (format!("/api/v1/bookings/{booking}/participants"), u.clone()),
    ] {
        let (st, p) = app.get(&path, &who).await;
        assert_eq!(st, StatusCode::OK, "{path}: {p}");
        assert_eq!(
            (p["participant_count"].as_u64(), p["participants"].as_array().map(Vec::len)),
            (Some(0), Some(0)),
            "{p}"
        );
    }
}
