//! Webhooks out, against a receiver on loopback that verifies every delivery as the Standard
//! Webhooks specification says (`webhook-id`, `webhook-timestamp` within five minutes of its
//! clock, `webhook-signature` = `v1,` + base64 HMAC-SHA256 over `<id>.<timestamp>.<body>` with the
//! key of the `whsec_` secret; several space-separated signatures allowed). The service runs with
//! a real local Janus (its events make the session's events), the manual clock, and the timer
//! functions invoked as the Functions host does.

mod support;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration as StdDuration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus},
    routing::post,
};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use support::app::{TestApp, admin, temp_dir, user};
use support::participant::join_answer;
use suroga::{
    clock::{Clock, ManualClock},
    domain::{Booking, TimeSlot},
    store::{Store, sqlite::SqliteStore},
};
use uuid::Uuid;

/// The receiver's secret, as an integrator would configure it.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// 200 for every verified delivery.
    Up,
    /// 503 for everything.
    Down,
    /// Holds every request without answering.
    Hang,
}

/// One verified delivery.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    body: Value,
}

struct Receiver {
    clock: ManualClock,
    key: Vec<u8>,
    mode: Mutex<Mode>,
    received: Mutex<Vec<Received>>,
    /// Requests that failed verification (with why).
    rejected: Mutex<Vec<String>>,
    /// Requests answered 503.
    refused: Mutex<usize>,
}

impl Receiver {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
    fn types(&self) -> Vec<String> {
        self.received().iter().map(|r| r.body["type"].as_str().unwrap().to_string()).collect()
    }
}

/// Verifies a delivery by the Standard Webhooks rules, with the receiver's own clock.
fn verify(key: &[u8], now: DateTime<Utc>, headers: &HeaderMap, body: &[u8]) -> Result<String, String> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).ok_or(format!("no {n}"));
    let (id, ts, sigs) = (h("webhook-id")?, h("webhook-timestamp")?, h("webhook-signature")?);
    let ts: i64 = ts.parse().map_err(|_| "webhook-timestamp is not a number".to_string())?;
    if (now.timestamp() - ts).abs() > 5 * 60 {
        return Err(format!("timestamp {ts} is more than 5 minutes from {}", now.timestamp()));
    }
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(body);
    for sig in sigs.split(' ') {
        let Some(b64) = sig.strip_prefix("v1,") else { continue };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else { continue };
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(&signed);
        if mac.verify_slice(&raw).is_ok() {
            return Ok(id.to_string());
        }
    }
    Err("no valid v1 signature".into())
}

async fn deliver(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    let mode = *r.mode.lock().unwrap();
    match mode {
        Mode::Hang => {
            tokio::time::sleep(StdDuration::from_secs(3600)).await;
            AxumStatus::OK
        }
        Mode::Down => {
            *r.refused.lock().unwrap() += 1;
            AxumStatus::SERVICE_UNAVAILABLE
        }
        Mode::Up => match verify(&r.key, r.clock.now(), &headers, &body) {
            Ok(id) => {
                let body: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(body["id"], id.as_str(), "the body's id is the webhook-id");
                r.received.lock().unwrap().push(Received { id, body });
                AxumStatus::NO_CONTENT
            }
            Err(why) => {
                r.rejected.lock().unwrap().push(why);
                AxumStatus::UNAUTHORIZED
            }
        },
    }
}

/// A receiver on loopback with `mode`; its clock is the app's (the test's world has one time).
async fn receiver(clock: ManualClock, mode: Mode) -> (String, Arc<Receiver>) {
    let key = base64::engine::general_purpose::STANDARD.decode(SECRET.trim_start_matches("whsec_")).unwrap();
    let r = Arc::new(Receiver {
        clock,
        key,
        mode: Mutex::new(mode),
        received: Mutex::new(vec![]),
        rejected: Mutex::new(vec![]),
        refused: Mutex::new(0),
    });
    let router = Router::new().route("/hooks", post(deliver)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks?tenant=t1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, r)
}

/// An app whose webhooks go to a fresh receiver in `mode` (the receiver shares the app's clock).
async fn app_with_receiver(mode: Mode, extra: &[(&str, &str)]) -> (TestApp, Arc<Receiver>) {
    let clock = ManualClock::new(support::app::base_now());
    let (url, r) = receiver(clock.clone(), mode).await;
    let app = TestApp::spawn_with_clock(clock, |env| {
        env.insert("WEBHOOK_URL".into(), url);
        env.insert("WEBHOOK_SECRET".into(), SECRET.into());
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
    })
    .await;
    (app, r)
}

/// Waits until `done` holds for the receiver (deliveries happen in the background); panics
/// after 15 s with what it got.
async fn wait_for(r: &Receiver, what: &str, done: impl Fn(&Receiver) -> bool) {
    let deadline = Instant::now() + StdDuration::from_secs(15);
    while !done(r) {
        assert!(
            Instant::now() < deadline,
            "{what}: received {:?}, rejected {:?}",
            r.types(),
            r.rejected.lock().unwrap()
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

/// The Functions host's timer envelope for `name` at `at`.
fn envelope(name: &str, at: DateTime<Utc>) -> Value {
    json!({"Data":{"timer":{"Schedule":{"AdjustForDST":true},
        "ScheduleStatus":{"Last":"0001-01-01T00:00:00","Next":(at + Duration::minutes(1)).to_rfc3339(),"LastUpdated":at.to_rfc3339()},
        "IsPastDue":false}},
     "Metadata":{"sys":{"MethodName":name,"UtcNow":at.to_rfc3339(),"RandGuid":Uuid::new_v4().to_string()}}})
}

/// Invokes the `deliver-webhooks` timer as the Functions host does; returns its log lines.
async fn run_timer(app: &TestApp) -> Vec<String> {
    let res = app
        .http
        .post(format!("{}/deliver-webhooks", app.base))
        .json(&envelope("deliver-webhooks", app.now()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["Logs"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect()
}

async fn deliveries(app: &TestApp, query: &str) -> Vec<Value> {
    let (st, v) = app.get(&format!("/api/v1/webhooks/deliveries{query}"), &admin()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

/// Joins with a join answer's credentials and participant id; the session keeps the participant.
async fn join(answer: &Value, display: &str) -> suroga::janus::Session {
    join_answer(answer, display, answer["participant_id"].as_u64()).await.0
}

#[tokio::test]
async fn every_booking_and_session_event_arrives_signed() {
    let (app, r) = app_with_receiver(Mode::Up, &[]).await;
    let owner = user();
    let b = app.book(&owner, 5, 65, None).await;
    let booking = b["booking_id"].as_str().unwrap().to_string();
    let end = chrono::DateTime::parse_from_rfc3339(b["end_time"].as_str().unwrap()).unwrap().to_utc();
    let (st, _) = app
        .post(
            &format!("/api/v1/bookings/{booking}/extend"),
            &owner,
            json!({"end_time": (end + Duration::minutes(15)).to_rfc3339()}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let other = app.book(&owner, 120, 180, None).await;
    let (st, _) = app.delete(&format!("/api/v1/bookings/{}", other["booking_id"].as_str().unwrap()), &owner).await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    let (_, host) = app.get(&format!("/api/v1/bookings/{booking}/join"), &owner).await;
    let (_, inv) = app.post(&format!("/api/v1/bookings/{booking}/invitation"), &owner, json!({})).await;
    let (_, guest) = app
        .call(
            Method::POST,
            &format!("/api/v1/invitations/{}/join", inv["code"].as_str().unwrap()),
            None,
            Some(json!({"display_name": "Bea"})),
        )
        .await;
    let ana = join(&host, "Ana").await;
    let bea = join(&guest, "Bea").await;
    wait_for(&r, "both joined", |r| r.types().iter().filter(|t| *t == "participant.joined").count() == 2).await;
    bea.destroy().await.unwrap();
    ana.destroy().await.unwrap();
    wait_for(&r, "the session ended", |r| r.types().contains(&"session.ended".to_string())).await;

    let got = r.received();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for g in &got {
        *counts.entry(g.body["type"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = [
        ("booking.created", 2),
        ("booking.extended", 1),
        ("booking.cancelled", 1),
        ("session.started", 1),
        ("participant.joined", 2),
        ("participant.left", 2),
        ("session.ended", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(counts, want, "every event, once each");
    assert!(r.rejected.lock().unwrap().is_empty(), "every delivery verifies");
    let mut ids: Vec<&str> = got.iter().map(|g| g.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "event ids are unique");

    let of = |t: &str| got.iter().filter(|g| g.body["type"] == t).map(|g| g.body.clone()).collect::<Vec<_>>();
    let created = of("booking.created");
    assert!(
        created.iter().any(|c| c["data"]["booking_id"] == booking.as_str() && c["data"]["owner"] == owner.as_str())
    );
    assert_eq!(of("booking.extended")[0]["data"]["previous_end_time"], b["end_time"]);
    let joined = of("participant.joined");
    let mut roles: Vec<&str> = joined.iter().map(|j| j["data"]["role"].as_str().unwrap()).collect();
    roles.sort();
    assert_eq!(roles, ["guest", "host"]);
    let ended = &of("session.ended")[0]["data"];
    let (s, e) = (ended["started_at"].as_str().unwrap(), ended["ended_at"].as_str().unwrap());
    let real = chrono::DateTime::parse_from_rfc3339(e).unwrap() - chrono::DateTime::parse_from_rfc3339(s).unwrap();
    assert_eq!(ended["duration_seconds"], real.num_seconds(), "the real duration: {ended}");
    // The session's record and the events agree.
    let (_, view) = app.get(&format!("/api/v1/bookings/{booking}"), &owner).await;
    let shown = chrono::DateTime::parse_from_rfc3339(view["session"]["ended_at"].as_str().unwrap()).unwrap();
    assert_eq!(shown, chrono::DateTime::parse_from_rfc3339(e).unwrap());
    // Everything shows as delivered to operators; nobody else sees the outbox.
    assert!(deliveries(&app, "?status=pending").await.is_empty());
    assert_eq!(deliveries(&app, "?status=delivered").await.len(), got.len());
    let (st, _) = app.get("/api/v1/webhooks/deliveries", &owner).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = app.get("/api/v1/webhooks/deliveries?status=lost", &admin()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_everything_once_it_is_back() {
    let (app, r) = app_with_receiver(Mode::Down, &[]).await;
    let owner = user();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(app.book(&owner, 30 + i * 60, 60 + i * 60, None).await["booking_id"].as_str().unwrap().to_string());
    }
    // The first attempts fail (in the background) and are scheduled again.
    let deadline = Instant::now() + StdDuration::from_secs(15);
    loop {
        let pending = deliveries(&app, "?status=pending").await;
        if pending.len() == 3 && pending.iter().all(|d| d["attempts"] == 1) {
            assert!(pending.iter().all(|d| d["last_error"] == "HTTP 503"), "{pending:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{pending:?}");
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    // Still down at the next run: another attempt each, the wait doubles.
    app.clock.advance(Duration::minutes(1));
    assert!(run_timer(&app).await[0].starts_with("0 webhook events delivered, 3 to retry"));
    app.clock.advance(Duration::minutes(1));
    assert!(run_timer(&app).await[0].starts_with("0 webhook events delivered, 0 to retry"), "not due yet");
    assert_eq!(*r.refused.lock().unwrap(), 6);

    r.set(Mode::Up);
    app.clock.advance(Duration::minutes(1));
    let logs = run_timer(&app).await;
    assert!(logs[0].starts_with("3 webhook events delivered"), "{logs:?}");
    let mut got: Vec<String> =
        r.received().iter().map(|g| g.body["data"]["booking_id"].as_str().unwrap().to_string()).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "every booking's event, once");
    assert!(deliveries(&app, "?status=pending").await.is_empty());
}

#[tokio::test]
async fn a_slow_receiver_never_slows_the_api() {
    let (app, r) = app_with_receiver(Mode::Hang, &[]).await;
    let owner = user();
    for i in 0..5 {
        let started = Instant::now();
        app.book(&owner, 30 + i * 60, 60 + i * 60, None).await;
        assert!(started.elapsed() < StdDuration::from_secs(1), "booking {i} took {:?}", started.elapsed());
    }
    let started = Instant::now();
    let report = app.app.reconciler.run_once().await;
    assert!(report.errors.is_empty());
    assert!(started.elapsed() < StdDuration::from_secs(5), "the reconciler does not wait for webhooks");
    assert!(r.received().is_empty());
}

#[tokio::test]
async fn an_event_too_old_to_deliver_is_dead_lettered_visible_and_redeliverable() {
    let (app, r) = app_with_receiver(Mode::Down, &[("WEBHOOK_MAX_AGE_MINUTES", "10")]).await;
    let owner = user();
    let booking = app.book(&owner, 60, 120, None).await["booking_id"].as_str().unwrap().to_string();
    for _ in 0..12 {
        app.clock.advance(Duration::minutes(1));
        run_timer(&app).await;
    }
    let failed = deliveries(&app, "?status=failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    let d = &failed[0];
    assert_eq!((d["type"].clone(), d["booking_id"].clone()), (json!("booking.created"), json!(booking)));
    assert_eq!(d["last_error"], "HTTP 503");
    assert!(d["attempts"].as_u64().unwrap() >= 3, "{d}");
    assert_eq!(d["body"]["data"]["booking_id"], booking.as_str());
    let id = d["id"].as_str().unwrap().to_string();
    // Dead letters are not retried.
    let refused = *r.refused.lock().unwrap();
    app.clock.advance(Duration::hours(2));
    run_timer(&app).await;
    assert_eq!(*r.refused.lock().unwrap(), refused);

    r.set(Mode::Up);
    let (st, v) = app.post(&format!("/api/v1/webhooks/deliveries/{id}/redeliver"), &admin(), json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "pending");
    wait_for(&r, "the redelivery", |r| r.received().len() == 1).await;
    assert_eq!(r.received()[0].id, id);
    let (st, _) = app.post("/api/v1/webhooks/deliveries/evt_nope/redeliver", &admin(), json!({})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = app.post(&format!("/api/v1/webhooks/deliveries/{id}/redeliver"), &owner, json!({})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_crash_after_the_store_write_loses_nothing() {
    // The write happens and the process dies before any delivery: here the store alone writes
    // (as the sessions layer does) and nothing ever hands the event to a sender.
    let dir = temp_dir("webhook-crash");
    let clock = ManualClock::new(support::app::base_now());
    let (url, r) = receiver(clock.clone(), Mode::Up).await;
    let now = clock.now();
    let room = suroga::domain::Room::generate(None, 2, Default::default(), now);
    let booking = Booking {
        id: Uuid::new_v4(),
        room_id: room.id,
        owner: "alice".into(),
        slot: TimeSlot::new(now + Duration::hours(1), now + Duration::hours(2)).unwrap(),
        created_at: now,
        cancelled_at: None,
        access: Default::default(),
    };
    {
        let store = SqliteStore::open(&dir.join("suroga.sqlite3")).unwrap();
        store.book_any_room_notify(&booking, Some(&room), None, Some(now)).await.unwrap();
    } // the process is gone

    // A new instance on the same data: its timer delivers what the outbox holds.
    let env_dir = dir.display().to_string();
    let app = TestApp::spawn_with_clock(clock.clone(), |env| {
        env.insert("SUROGA_DATA_DIR".into(), env_dir);
        env.insert("WEBHOOK_URL".into(), url.clone());
        env.insert("WEBHOOK_SECRET".into(), SECRET.into());
    })
    .await;
    let logs = run_timer(&app).await;
    assert!(logs[0].starts_with("1 webhook events delivered"), "{logs:?}");
    assert_eq!(r.types(), ["booking.created"]);
    assert_eq!(r.received()[0].body["data"]["booking_id"], booking.id.to_string());
    drop(app);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_instance_that_dies_during_a_delivery_loses_nothing() {
    // The first instance writes the booking and starts delivering; the receiver accepts the
    // connection and never answers; the instance dies with the attempt in flight.
    let dir = temp_dir("webhook-died");
    let clock = ManualClock::new(support::app::base_now());
    let (url, r) = receiver(clock.clone(), Mode::Hang).await;
    let env_dir = dir.display().to_string();
    let settings = |env: &mut std::collections::HashMap<String, String>| {
        env.insert("SUROGA_DATA_DIR".into(), env_dir.clone());
        env.insert("WEBHOOK_URL".into(), url.clone());
        env.insert("WEBHOOK_SECRET".into(), SECRET.into());
    };
    let first = TestApp::spawn_with_clock(clock.clone(), settings).await;
    let booking = first.book(&user(), 60, 120, None).await["booking_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + StdDuration::from_secs(15);
    while deliveries(&first, "?status=pending").await.first().is_none_or(|d| d["attempts"] != 0) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    tokio::time::sleep(StdDuration::from_millis(200)).await; // the attempt is in flight
    first.app.shutdown().await;
    drop(first);

    r.set(Mode::Up);
    let second = TestApp::spawn_with_clock(clock.clone(), settings).await;
    // The dead attempt's lease holds the event for a minute, then the timer sends it.
    let logs = run_timer(&second).await;
    assert!(logs[0].starts_with("0 webhook events delivered"), "leased by the attempt that died: {logs:?}");
    clock.advance(Duration::seconds(61));
    let logs = run_timer(&second).await;
    assert!(logs[0].starts_with("1 webhook events delivered"), "{logs:?}");
    assert_eq!(r.received()[0].body["data"]["booking_id"], booking.as_str());
    drop(second);
    let _ = std::fs::remove_dir_all(dir);
}
