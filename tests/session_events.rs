//! What happened in a session, from Janus's own events: a real Janus posts its event handler's
//! events to the service (`POST /api/v1/janus/events`), real clients join and leave through
//! Janus's API, and `GET /bookings/{id}` shows the record. Where a test must control what
//! reaches the service (events lost, repeated, reordered), Janus posts to a recorder on
//! loopback and the test forwards what it chooses; the reconciler's participant checks fill
//! the gaps.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration as StdDuration,
};

use axum::{Router, body::Bytes, routing::post};
use base64::Engine;
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::app::{TestApp, over_own_janus, user};
use support::participant::join_answer;
use suroga::{
    fleet::local::{LocalJanusHost, LocalJanusOptions},
    janus::Session,
};

/// Joins the session of a join answer as a publisher, as the web client does: with the
/// answer's tokens, pin and (when `with_id`) its `participant_id`. The session keeps the
/// participant in the room until it is destroyed (Janus then reports `leaving`).
async fn join(answer: &Value, display: &str, with_id: bool) -> Session {
    let id = with_id.then(|| answer["participant_id"].as_u64().expect("the answer carries participant_id"));
    let (session, joined) = join_answer(answer, display, id).await;
    if let Some(id) = id {
        assert_eq!(joined, id, "Janus took the participant id the service handed out");
    }
    session
}

/// The owner's join answer.
async fn host_answer(app: &TestApp, owner: &str, booking: &str) -> Value {
    let (st, v) = app.get(&format!("/api/v1/bookings/{booking}/join"), owner).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

/// An invitation and the guest's join answer.
async fn guest_answer(app: &TestApp, owner: &str, booking: &str, name: &str) -> Value {
    let (st, inv) = app.post(&format!("/api/v1/bookings/{booking}/invitation"), owner, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{inv}");
    let path = format!("/api/v1/invitations/{}/join", inv["code"].as_str().unwrap());
    let (st, v) = app.call(Method::POST, &path, None, Some(json!({ "display_name": name }))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

/// `GET /bookings/{id}`'s `session`.
async fn session_of(app: &TestApp, owner: &str, booking: &str) -> Value {
    let (st, b) = app.get(&format!("/api/v1/bookings/{booking}"), owner).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b["session"].clone()
}

/// Polls the booking's session until `done` holds (Janus's events arrive on their own
/// schedule); panics with the last record after 15 s.
async fn wait_session(app: &TestApp, owner: &str, booking: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(15);
    loop {
        let s = session_of(app, owner, booking).await;
        if done(&s) {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: the record is {s:#}");
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

fn participants(s: &Value) -> &Vec<Value> {
    s["participants"].as_array().unwrap()
}

fn by_role<'a>(s: &'a Value, role: &str) -> Vec<&'a Value> {
    participants(s).iter().filter(|p| p["role"] == role).collect()
}

fn instant(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap().to_utc()
}

fn basic(secret: &str) -> String {
    basic_as("janus", secret)
}

fn basic_as(user: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")))
}

/// POSTs `body` to the events route with `auth` as the `Authorization` header.
async fn post_events(app: &TestApp, auth: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = app
        .http
        .post(format!("{}/api/v1/janus/events", app.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn real_clients_joining_and_leaving_are_recorded_from_janus_events() {
    let app = TestApp::spawn().await;
    let owner = user();
    let b = app.book(&owner, 5, 65, None).await;
    let booking = b["booking_id"].as_str().unwrap();
    let before = session_of(&app, &owner, booking).await;
    assert_eq!(before, json!({"started_at": null, "ended_at": null, "participants": []}));

    let host = host_answer(&app, &owner, booking).await;
    let guest = guest_answer(&app, &owner, booking, "Bea").await;
    assert_ne!(host["participant_id"], guest["participant_id"], "each role has its own id");
    let ana = join(&host, "Ana", true).await;
    let bea = join(&guest, "Bea", true).await;

    let s = wait_session(&app, &owner, booking, "both joined", |s| participants(s).len() == 2).await;
    let (h, g) = (by_role(&s, "host"), by_role(&s, "guest"));
    assert_eq!((h.len(), g.len()), (1, 1), "{s:#}");
    assert_eq!((h[0]["display"].clone(), g[0]["display"].clone()), (json!("Ana"), json!("Bea")));
    assert!(h[0]["left_at"].is_null() && g[0]["left_at"].is_null());
    assert_eq!(s["started_at"], h[0]["joined_at"], "the session started with the first join");
    assert!(s["ended_at"].is_null());

    bea.destroy().await.unwrap();
    let s = wait_session(&app, &owner, booking, "the guest left", |s| {
        by_role(s, "guest").first().is_some_and(|g| !g["left_at"].is_null())
    })
    .await;
    assert!(s["ended_at"].is_null(), "the host is still in: {s:#}");
    ana.destroy().await.unwrap();
    let s = wait_session(&app, &owner, booking, "both left", |s| !s["ended_at"].is_null()).await;
    let left: Vec<DateTime<Utc>> = participants(&s).iter().map(|p| instant(&p["left_at"])).collect();
    assert_eq!(instant(&s["ended_at"]), *left.iter().max().unwrap(), "the session ended with the last departure");
    for p in participants(&s) {
        assert!(instant(&p["joined_at"]) <= instant(&p["left_at"]), "{p}");
    }
    // Others still see nothing of it.
    let (st, _) = app.get(&format!("/api/v1/bookings/{booking}"), &user()).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_client_that_joins_without_its_participant_id_is_recorded_without_a_role() {
    let app = TestApp::spawn().await;
    let owner = user();
    let booking = app.book(&owner, 5, 65, None).await["booking_id"].as_str().unwrap().to_string();
    let host = host_answer(&app, &owner, &booking).await;
    let old_client = join(&host, "Ana (old client)", false).await;
    let s = wait_session(&app, &owner, &booking, "the join", |s| participants(s).len() == 1).await;
    let p = &participants(&s)[0];
    assert_eq!((p["role"].clone(), p["display"].clone()), (Value::Null, json!("Ana (old client)")));
    old_client.destroy().await.unwrap();
    wait_session(&app, &owner, &booking, "the departure", |s| !s["ended_at"].is_null()).await;
}

#[tokio::test]
async fn unauthenticated_or_malformed_event_posts_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let owner = user();
    let booking = app.book(&owner, 5, 65, None).await["booking_id"].as_str().unwrap().to_string();
    let host = host_answer(&app, &owner, &booking).await;
    let room = host["room_id"].as_u64().unwrap();
    let pid = host["participant_id"].as_u64().unwrap();
    let joined = json!({"type": 64, "timestamp": Utc::now().timestamp_micros(), "emitter": "local-1",
        "event": {"plugin": "janus.plugin.videoroom", "data": {"event": "joined", "room": room, "id": pid, "display": "Forged"}}});
    let secret =
        app.app.state.janus_events_secret.as_ref().expect("local hosts have an events secret").expose().to_string();

    for auth in [None, Some(basic("wrong")), Some(format!("Bearer {secret}")), Some(basic_as("jan", &secret))] {
        let res = post_events(&app, auth.as_deref(), &joined.to_string()).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(res.headers()["www-authenticate"], "Basic realm=\"janus-events\"");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    let good = basic(&secret);
    for bad in [
        "not json".to_string(),
        "\"text\"".to_string(),
        json!([joined, {"type": 64}]).to_string(),
        json!({"type": 64, "timestamp": 1, "event": {"plugin": "janus.plugin.videoroom", "data": {"event": "joined", "room": "r"}}}).to_string(),
    ] {
        let res = post_events(&app, Some(&good), &bad).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = res.json().await.unwrap();
        assert!(body["detail"].is_string(), "{body}");
    }
    assert_eq!(session_of(&app, &owner, &booking).await["participants"], json!([]), "nothing was recorded");

    // The same event, authenticated and well formed, is recorded (once, however often it comes).
    for _ in 0..3 {
        let res = post_events(&app, Some(&good), &joined.to_string()).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let s = session_of(&app, &owner, &booking).await;
    assert_eq!(participants(&s).len(), 1, "{s:#}");
    assert_eq!(participants(&s)[0]["role"], "host");
    // Events about rooms that are no session room are accepted and ignored.
    let other = json!({"type": 64, "timestamp": 1, "event": {"plugin": "janus.plugin.videoroom",
        "data": {"event": "destroyed", "room": 424242}}});
    let res = post_events(&app, Some(&good), &other.to_string()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"recorded": 0, "ignored": 1}));
}

/// A loopback server that records every event Janus posts to it and answers 200.
async fn recorder() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let app = Router::new().route(
        "/events",
        post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    match v {
                        Value::Array(items) => kept.lock().unwrap().extend(items),
                        one => kept.lock().unwrap().push(one),
                    }
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// The recorded VideoRoom events `name` about `room` (and participant `id`, when given).
fn recorded(seen: &Mutex<Vec<Value>>, room: u64, name: &str, id: Option<u64>) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|e| {
            let d = &e["event"]["data"];
            d["room"] == room && d["event"] == name && id.is_none_or(|id| d["id"] == id)
        })
        .cloned()
        .collect()
}

/// Waits until the recorder holds `name` about `room` and `id`; returns it.
async fn recorded_one(seen: &Mutex<Vec<Value>>, room: u64, name: &str, id: u64) -> Value {
    for _ in 0..300 {
        if let Some(e) = recorded(seen, room, name, Some(id)).pop() {
            return e;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    panic!("Janus never reported {name} of {id} in room {room}");
}

fn micros(e: &Value) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(e["timestamp"].as_i64().unwrap()).unwrap()
}

/// An app over an always-on Janus this test owns, whose events go to a recorder the test reads.
async fn app_with_recorded_janus(tag: &str) -> (TestApp, LocalJanusHost, Arc<Mutex<Vec<Value>>>, std::path::PathBuf) {
    let (url, seen) = recorder().await;
    let options = LocalJanusOptions { events_backend: Some(url), ..LocalJanusOptions::default() };
    let (app, janus, dir) = over_own_janus(tag, options).await;
    (app, janus, seen, dir)
}

#[tokio::test]
async fn duplicated_and_reordered_events_give_the_record_of_what_happened() {
    let (app, _janus, seen, dir) = app_with_recorded_janus("events-reordered").await;
    let auth = basic(app.app.state.janus_events_secret.as_ref().unwrap().expose());
    let owner = user();
    let booking = app.book(&owner, 5, 65, None).await["booking_id"].as_str().unwrap().to_string();
    let host = host_answer(&app, &owner, &booking).await;
    let guest = guest_answer(&app, &owner, &booking, "Bea").await;
    let room = host["room_id"].as_u64().unwrap();
    let (hid, gid) = (host["participant_id"].as_u64().unwrap(), guest["participant_id"].as_u64().unwrap());

    // What really happens: both join, the guest drops and comes back, both leave.
    let ana = join(&host, "Ana", true).await;
    let bea = join(&guest, "Bea", true).await;
    recorded_one(&seen, room, "joined", gid).await;
    bea.destroy().await.unwrap();
    recorded_one(&seen, room, "leaving", gid).await;
    let bea = join(&guest, "Bea", true).await;
    tokio::time::sleep(StdDuration::from_millis(20)).await;
    bea.destroy().await.unwrap();
    ana.destroy().await.unwrap();
    recorded_one(&seen, room, "leaving", hid).await;
    let (g_joins, g_leaves) = loop {
        let (j, l) = (recorded(&seen, room, "joined", Some(gid)), recorded(&seen, room, "leaving", Some(gid)));
        if j.len() == 2 && l.len() == 2 {
            break (j, l);
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    };
    let mut events =
        vec![recorded_one(&seen, room, "joined", hid).await, recorded_one(&seen, room, "leaving", hid).await];
    events.extend(g_joins.iter().cloned());
    events.extend(g_leaves.iter().cloned());

    // They reach the service reversed, each twice, in posts of one and of several.
    let mut shuffled: Vec<Value> = events.iter().rev().chain(events.iter()).cloned().collect();
    shuffled.swap(1, 6);
    for chunk in shuffled.chunks(3) {
        let res = post_events(&app, Some(&auth), &json!(chunk).to_string()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = post_events(&app, Some(&auth), &chunk[0].to_string()).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let s = session_of(&app, &owner, &booking).await;
    // The record says exactly what Janus saw happen.
    let (h, g) = (by_role(&s, "host"), by_role(&s, "guest"));
    assert_eq!((h.len(), g.len()), (1, 2), "{s:#}");
    assert_eq!(instant(&h[0]["joined_at"]), micros(&events[0]));
    assert_eq!(instant(&h[0]["left_at"]), micros(&events[1]));
    let mut gj: Vec<DateTime<Utc>> = g_joins.iter().map(micros).collect();
    let mut gl: Vec<DateTime<Utc>> = g_leaves.iter().map(micros).collect();
    gj.sort();
    gl.sort();
    for (i, p) in g.iter().enumerate() {
        assert_eq!((instant(&p["joined_at"]), instant(&p["left_at"])), (gj[i], gl[i]), "{s:#}");
        assert_eq!(p["display"], "Bea");
    }
    assert_eq!(instant(&s["started_at"]), micros(&events[0]).min(gj[0]));
    assert_eq!(instant(&s["ended_at"]), micros(&events[1]).max(gl[1]));
    // In order, again: nothing changes.
    let res = post_events(&app, Some(&auth), &json!(events).to_string()).await;
    assert_eq!(res.json::<Value>().await.unwrap()["recorded"], 0);
    assert_eq!(session_of(&app, &owner, &booking).await, s);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_reconcilers_participant_checks_fill_the_events_that_never_came() {
    let (app, _janus, seen, dir) = app_with_recorded_janus("events-missing").await;
    let auth = basic(app.app.state.janus_events_secret.as_ref().unwrap().expose());
    let owner = user();
    let booking = app.book(&owner, 5, 65, None).await["booking_id"].as_str().unwrap().to_string();
    let host = host_answer(&app, &owner, &booking).await;
    let guest = guest_answer(&app, &owner, &booking, "Bea").await;
    let room = host["room_id"].as_u64().unwrap();
    let (hid, gid) = (host["participant_id"].as_u64().unwrap(), guest["participant_id"].as_u64().unwrap());
    // The reconciler's checks are stamped with the service's clock: the real one here.
    app.clock.set(Utc::now());

    let ana = join(&host, "Ana", true).await;
    let bea = join(&guest, "Bea", true).await;
    // Only the host's join reaches the service; the guest's is lost.
    let host_joined = recorded_one(&seen, room, "joined", hid).await;
    recorded_one(&seen, room, "joined", gid).await;
    post_events(&app, Some(&auth), &host_joined.to_string()).await;
    let s = session_of(&app, &owner, &booking).await;
    assert_eq!(participants(&s).len(), 1, "{s:#}");

    app.clock.set(Utc::now());
    let checked_in = app.now();
    app.app.reconciler.run_once().await;
    let s = session_of(&app, &owner, &booking).await;
    let g = by_role(&s, "guest");
    assert_eq!(g.len(), 1, "the check found the guest in the room: {s:#}");
    assert_eq!((instant(&g[0]["joined_at"]), g[0]["display"].clone()), (checked_in, json!("Bea")));

    // Both leave; the guest's departure arrives, the host's is lost.
    bea.destroy().await.unwrap();
    ana.destroy().await.unwrap();
    let guest_left = recorded_one(&seen, room, "leaving", gid).await;
    recorded_one(&seen, room, "leaving", hid).await;
    post_events(&app, Some(&auth), &guest_left.to_string()).await;
    let s = session_of(&app, &owner, &booking).await;
    assert!(s["ended_at"].is_null(), "the host seems still in: {s:#}");

    // A check a little later (beyond the clocks' tolerance) finds the room empty.
    app.clock.set(Utc::now() + chrono::Duration::seconds(15));
    let checked_out = app.now();
    app.app.reconciler.run_once().await;
    let s = session_of(&app, &owner, &booking).await;
    let h = by_role(&s, "host");
    assert_eq!(instant(&h[0]["joined_at"]), micros(&host_joined));
    assert_eq!(instant(&h[0]["left_at"]), checked_out, "{s:#}");
    assert_eq!(instant(&by_role(&s, "guest")[0]["left_at"]), micros(&guest_left));
    assert_eq!(instant(&s["ended_at"]), checked_out);
    // The lost events, when they come after all, correct the times the checks filled in.
    let lost: Vec<Value> =
        vec![recorded_one(&seen, room, "joined", gid).await, recorded_one(&seen, room, "leaving", hid).await];
    post_events(&app, Some(&auth), &json!(lost).to_string()).await;
    let s = session_of(&app, &owner, &booking).await;
    assert_eq!(instant(&by_role(&s, "guest")[0]["joined_at"]), micros(&lost[0]), "{s:#}");
    assert_eq!(instant(&by_role(&s, "host")[0]["left_at"]), micros(&lost[1]));
    assert_eq!(participants(&s).len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}
