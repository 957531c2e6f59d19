//! Janus hosts on demand, end to end: the reconciler with the local power backend and real Janus
//! processes, time driven by the manual clock (no sleeps for schedule time), the timer functions
//! invoked as the Functions host does, and an alert webhook fake on loopback.

mod support;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::app::{TestApp, user};
use suroga::{
    config::Secret,
    domain::TimeSlot,
    fleet::{
        control::{HostOverride, OverrideAction},
        power::{PowerControl, PowerError, PowerOutcome, PowerState, TransientCause},
        reconciler::PowerStep,
    },
    janus::{CreateRoom, Credential, JanusError, JoinRoom, Session},
    store::{OpAction, Operation},
};
use uuid::Uuid;

const VIDEOROOM: &str = "janus.plugin.videoroom";

fn base_of(app: &TestApp, host: &str) -> String {
    app.app.janus.host(host).unwrap().backend_url.clone()
}

async fn exists_on(app: &TestApp, host: &str, room: u64) -> bool {
    app.app.janus.client().room_exists(&base_of(app, host), room).await.unwrap()
}

/// Joins the session of a `/join` answer as a publisher, through Janus's own API with the
/// answer's tokens and pin; the returned session keeps the participant.
async fn join_janus(app: &TestApp, join: &Value, display: &str) -> Result<Session, JanusError> {
    let token = Credential::Token(Secret::new(join["token"].as_str().unwrap()));
    let session = app.app.janus.client().session_with(join["janus"]["http"].as_str().unwrap(), token).await?;
    let handle = session.attach(VIDEOROOM).await?;
    let req = JoinRoom {
        room: join["room_id"].as_u64().unwrap(),
        display,
        pin: join["pin"].as_str(),
        room_token: join["room_token"].as_str(),
    };
    handle.join(&req).await?;
    Ok(session)
}

/// The Janus room of a booking's current session.
async fn session_room_of(app: &TestApp, booking: &str) -> u64 {
    let b = app.app.state.store.get_booking(booking.parse().unwrap()).await.unwrap();
    app.app.state.sessions.credentials(&b).room.get()
}

async fn power_of(app: &TestApp, host: &str) -> PowerState {
    app.app.fleet.power.power_state(host).await.unwrap()
}

/// The operations log of the test's time range.
async fn operations(app: &TestApp) -> Vec<Operation> {
    let now = app.now();
    let window = TimeSlot::new(now - Duration::days(2), now + Duration::days(2)).unwrap();
    app.app.state.store.operations(window).await.unwrap()
}

fn ops<'a>(all: &'a [Operation], action: OpAction, host: &str) -> Vec<&'a Operation> {
    all.iter().filter(|o| o.action == action && o.host.as_deref() == Some(host)).collect()
}

/// The Functions host's timer envelope for `name` at `at` (first run: `Last` without offset).
fn envelope(name: &str, at: DateTime<Utc>) -> Value {
    json!({"Data":{"timer":{"Schedule":{"AdjustForDST":true},
        "ScheduleStatus":{"Last":"0001-01-01T00:00:00","Next":(at + Duration::minutes(1)).to_rfc3339(),"LastUpdated":at.to_rfc3339()},
        "IsPastDue":false}},
     "Metadata":{"sys":{"MethodName":name,"UtcNow":at.to_rfc3339(),"RandGuid":Uuid::new_v4().to_string()}}})
}

/// Invokes a timer function as the host does; returns the reply's `Logs`.
async fn invoke_timer(app: &TestApp, name: &str) -> Vec<String> {
    let res = app.http.post(format!("{}/{name}", app.base)).json(&envelope(name, app.now())).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["ReturnValue"], Value::Null);
    body["Logs"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect()
}

/// `GET /bookings/{id}/join` as `user`: status, `Retry-After`, body.
async fn join_api(app: &TestApp, user: &str, booking: &str) -> (StatusCode, Option<String>, Value) {
    let res = app
        .http
        .get(format!("{}/api/v1/bookings/{booking}/join", app.base))
        .bearer_auth(app.token(user, false))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let retry = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (status, retry, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_booking_starts_its_host_opens_its_session_room_and_the_host_stops_after_it() {
    let app = TestApp::spawn().await;
    let local = app.app.local.clone().unwrap();

    // Idle at start: the first run deallocates the local host.
    let first = app.app.reconciler.run_once().await;
    assert_eq!(
        first.host("local-1").unwrap().step,
        PowerStep::Done { action: OpAction::Deallocate },
        "{:?}",
        first.lines()
    );
    assert_eq!(local.pid("local-1").await, None, "the Janus process is gone");

    // A booking whose host window has opened (starts in 20 min, lead 30): the room waits in the store.
    let u = user();
    let b = app.book(&u, 20, 80, None).await;
    let booking = b["booking_id"].as_str().unwrap().to_string();
    let room = session_room_of(&app, &booking).await;
    app.clock.advance(Duration::minutes(6));
    let (st, retry, body) = join_api(&app, &u, &booking).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "join window open, host off: {body}");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);

    // The timer, as the Functions host invokes it, starts the host and makes the booking ready.
    let logs = invoke_timer(&app, "fleet-reconcile").await;
    assert!(logs.iter().any(|l| l.contains("started [local-1]")), "{logs:?}");
    assert_eq!(power_of(&app, "local-1").await, PowerState::Running);
    assert!(local.pid("local-1").await.is_some());
    assert!(exists_on(&app, "local-1", room).await, "the session room is open on the started host");
    let id: Uuid = booking.parse().unwrap();
    let a = app.app.state.store.assignments(&[id]).await.unwrap().pop().expect("assigned");
    assert_eq!((a.host.as_str(), a.ready_at), ("local-1", Some(app.now())));
    let all = operations(&app).await;
    let start = ops(&all, OpAction::Start, "local-1");
    assert_eq!(start.len(), 1, "{all:?}");
    assert_eq!(
        (start[0].booking_id, start[0].result.as_str(), start[0].actor.as_str()),
        (Some(id), "ok", "reconciler")
    );
    assert!(start[0].duration_ms > 0, "the start took the time Janus needs");

    // /join works now, and the grant's tokens and the pin admit a participant.
    let (st, _, join) = join_api(&app, &u, &booking).await;
    assert_eq!(st, StatusCode::OK, "{join}");
    assert_eq!(join["room_id"].as_u64(), Some(room));
    let session = join_janus(&app, &join, &u).await.expect("the participant joins with the tokens and the pin");
    session.destroy().await.unwrap();

    // Past the end and the grace, the host goes down.
    app.clock.advance(Duration::minutes(85));
    let last = app.app.reconciler.run_once().await;
    assert_eq!(
        last.host("local-1").unwrap().step,
        PowerStep::Done { action: OpAction::Deallocate },
        "{:?}",
        last.lines()
    );
    assert_eq!(local.pid("local-1").await, None);
    let all = operations(&app).await;
    assert_eq!(
        ops(&all, OpAction::Deallocate, "local-1").last().unwrap().booking_id,
        Some(id),
        "the booking that ended caused it"
    );
}

#[tokio::test]
async fn live_participants_keep_the_host_on_until_the_overrun_limit() {
    let app = TestApp::spawn_with(|env| {
        env.insert("FLEET_OVERRUN_LIMIT_MINUTES".into(), "30".into());
    })
    .await;
    let u = user();
    app.book(&u, 5, 35, None).await;
    let r = app.app.reconciler.run_once().await;
    assert_eq!(r.host("local-1").unwrap().made_ready.len(), 1, "{:?}", r.lines());
    // Someone sits in a room the sessions layer does not close (not a session room: an
    // operator's own), so only the overrun limit ends it.
    let base = base_of(&app, "local-1");
    let room = suroga::domain::RoomId::random().get();
    let admin = app.app.janus.client();
    let spec = CreateRoom {
        room,
        description: "operator's test room",
        secret: "operator-secret",
        pin: "operator-pin",
        publishers: 2,
        signed_tokens: false,
        lock_record: true,
        require_pvtid: false,
    };
    admin.create_room(&base, &spec).await.unwrap();
    let alice = admin.session(&base).await.unwrap();
    let handle = alice.attach(VIDEOROOM).await.unwrap();
    handle.join(&JoinRoom { room, display: "alice", pin: Some("operator-pin"), room_token: None }).await.unwrap();

    // Ended, grace over, somebody is still there: kept on.
    app.clock.advance(Duration::minutes(46));
    let r = app.app.reconciler.run_once().await;
    assert!(
        matches!(&r.host("local-1").unwrap().step, PowerStep::KeptOn { reason } if reason.contains("participants")),
        "{:?}",
        r.lines()
    );
    assert_eq!(power_of(&app, "local-1").await, PowerState::Running);
    assert!(exists_on(&app, "local-1", room).await, "a room that is not a session room is left alone");

    // Still there when the overrun limit (end + 30) has passed: deallocated anyway.
    app.clock.advance(Duration::minutes(20));
    let r = app.app.reconciler.run_once().await;
    assert_eq!(r.host("local-1").unwrap().step, PowerStep::Done { action: OpAction::Deallocate }, "{:?}", r.lines());
    assert_eq!(power_of(&app, "local-1").await, PowerState::Deallocated);
}

#[tokio::test]
async fn replaying_an_occurrence_starts_nothing_twice_and_logs_nothing_new() {
    let app = TestApp::spawn().await;
    app.app.reconciler.run_once().await; // idle: deallocated
    app.clock.advance(Duration::minutes(1));
    let b = app.book(&user(), 10, 40, None).await;
    let room = session_room_of(&app, b["booking_id"].as_str().unwrap()).await;

    let (x, y) = tokio::join!(app.app.reconciler.run_once(), app.app.reconciler.run_once());
    let steps = [&x.host("local-1").unwrap().step, &y.host("local-1").unwrap().step];
    assert_eq!(
        steps.iter().filter(|s| matches!(s, PowerStep::Done { action: OpAction::Start })).count(),
        1,
        "{steps:?}"
    );
    let all = operations(&app).await;
    assert_eq!(ops(&all, OpAction::Start, "local-1").len(), 1, "one start for one occurrence: {all:?}");
    assert!(exists_on(&app, "local-1", room).await);

    let before = operations(&app).await.len();
    let again = app.app.reconciler.run_once().await;
    assert_eq!(again.host("local-1").unwrap().step, PowerStep::None, "{:?}", again.lines());
    assert_eq!(operations(&app).await.len(), before, "a replay writes nothing to the operations log");
    assert_eq!(power_of(&app, "local-1").await, PowerState::Running);
}

/// A power backend that fails every start of one host and passes everything else through.
struct FailingStart {
    inner: Arc<dyn PowerControl>,
    host: &'static str,
}

#[async_trait]
impl PowerControl for FailingStart {
    async fn power_state(&self, host: &str) -> Result<PowerState, PowerError> {
        self.inner.power_state(host).await
    }
    async fn start(&self, host: &str) -> Result<PowerOutcome, PowerError> {
        if host == self.host {
            return Err(PowerError::Transient {
                host: host.into(),
                cause: TransientCause::LocalProcess { detail: "injected start failure".into() },
                retry_after: std::time::Duration::from_secs(60),
            });
        }
        self.inner.start(host).await
    }
    async fn deallocate(&self, host: &str) -> Result<PowerOutcome, PowerError> {
        self.inner.deallocate(host).await
    }
}

/// A Slack-style webhook on loopback that records every `text` it gets.
async fn webhook_fake() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(v["text"].as_str().unwrap_or_default().to_string());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn a_host_that_fails_to_start_does_not_stop_the_others_and_alerts_once() {
    let (hook, seen) = webhook_fake().await;
    let app = TestApp::spawn_wrapping(
        |env| {
            env.insert("FLEET_LOCAL_HOSTS".into(), "2".into());
            env.insert("ALERT_WEBHOOK_URL".into(), hook.clone());
        },
        |inner| Arc::new(FailingStart { inner, host: "local-1" }),
    )
    .await;
    let fleet = app.app.fleet.clone();
    // local-1 is off; an operator keeps local-2 off for the day, so the booking must go to local-1.
    fleet.power.deallocate("local-1").await.unwrap();
    let now = app.now();
    let o = HostOverride {
        action: OverrideAction::Deallocate,
        until: now + Duration::hours(24),
        by: "admin-ops".into(),
        at: now,
    };
    fleet.set_override("local-2", &o).await.unwrap();
    let b = app.book(&user(), 25, 85, None).await;
    let booking: Uuid = b["booking_id"].as_str().unwrap().parse().unwrap();

    let r = app.app.reconciler.run_once().await;
    assert!(
        matches!(r.host("local-1").unwrap().step, PowerStep::Failed { action: OpAction::Start, .. }),
        "{:?}",
        r.lines()
    );
    assert_eq!(
        r.host("local-2").unwrap().step,
        PowerStep::Done { action: OpAction::Deallocate },
        "the other host still acts"
    );
    assert_eq!(power_of(&app, "local-2").await, PowerState::Deallocated);
    let all = operations(&app).await;
    let failed = ops(&all, OpAction::Start, "local-1");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].booking_id, Some(booking));
    assert!(failed[0].result.contains("injected start failure"), "{}", failed[0].result);

    // Failing on and on: one alert when the streak reaches 3 runs, none after.
    for _ in 0..5 {
        app.clock.advance(Duration::minutes(1));
        let r = app.app.reconciler.run_once().await;
        assert!(matches!(r.host("local-1").unwrap().step, PowerStep::Failed { .. }));
    }
    let texts = seen.lock().unwrap().clone();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(texts[0].contains("local-1") && texts[0].contains("start failed 3 runs in a row"), "{texts:?}");

    // Ten minutes before the session and still not ready: one more alert, once.
    app.clock.set(now + Duration::minutes(16));
    app.app.reconciler.run_once().await;
    app.clock.advance(Duration::minutes(1));
    app.app.reconciler.run_once().await;
    let texts = seen.lock().unwrap().clone();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[1].contains("not ready") && texts[1].contains(&booking.to_string()), "{texts:?}");
    assert_eq!(ops(&operations(&app).await, OpAction::Alert, "local-1").len(), 2);
}

#[tokio::test]
async fn an_operator_start_override_keeps_an_idle_host_on_until_it_expires() {
    let app = TestApp::spawn().await;
    let now = app.now();
    let o = HostOverride {
        action: OverrideAction::Start,
        until: now + Duration::minutes(30),
        by: "admin-ops".into(),
        at: now,
    };
    app.app.fleet.set_override("local-1", &o).await.unwrap();
    let r = app.app.reconciler.run_once().await;
    assert_eq!(r.host("local-1").unwrap().step, PowerStep::None, "held on: {:?}", r.lines());
    app.clock.advance(Duration::minutes(31));
    let r = app.app.reconciler.run_once().await;
    assert_eq!(
        r.host("local-1").unwrap().step,
        PowerStep::Done { action: OpAction::Deallocate },
        "the plan again: {:?}",
        r.lines()
    );
    assert_eq!(app.app.fleet.clock.now(), now + Duration::minutes(31));
}

/// `GET /bookings/{id}`'s `session`, polled until `done` holds (Janus's events arrive on their
/// own); panics after 15 s.
async fn wait_session(app: &TestApp, owner: &str, booking: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (_, b) = app.get(&format!("/api/v1/bookings/{booking}"), owner).await;
        if done(&b["session"]) {
            return b["session"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the session record is {}", b["session"]);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A session whose participant joined and left (through Janus, with the answer's participant id),
/// recorded as ended; returns the booking id.
async fn a_session_that_ended_early(app: &TestApp, owner: &str) -> String {
    app.app.reconciler.run_once().await; // idle: deallocated
    let b = app.book(owner, 10, 70, None).await;
    let booking = b["booking_id"].as_str().unwrap().to_string();
    let r = app.app.reconciler.run_once().await;
    assert_eq!(r.host("local-1").unwrap().step, PowerStep::Done { action: OpAction::Start }, "{:?}", r.lines());
    let (st, _, join) = join_api(app, owner, &booking).await;
    assert_eq!(st, StatusCode::OK, "{join}");
    let token = Credential::Token(Secret::new(join["token"].as_str().unwrap()));
    let session = app.app.janus.client().session_with(join["janus"]["http"].as_str().unwrap(), token).await.unwrap();
    let handle = session.attach(VIDEOROOM).await.unwrap();
    let req = JoinRoom {
        room: join["room_id"].as_u64().unwrap(),
        display: "Ana",
        pin: join["pin"].as_str(),
        room_token: join["room_token"].as_str(),
    };
    handle.join_as(&req, join["participant_id"].as_u64()).await.unwrap();
    wait_session(app, owner, &booking, |s| s["participants"].as_array().is_some_and(|p| p.len() == 1)).await;
    session.destroy().await.unwrap();
    wait_session(app, owner, &booking, |s| !s["ended_at"].is_null()).await;
    booking
}

#[tokio::test]
async fn a_host_is_released_when_its_session_ends_early_and_started_again_for_a_late_rejoin() {
    let app = TestApp::spawn().await;
    let owner = user();
    let booking = a_session_that_ended_early(&app, &owner).await;
    let id: Uuid = booking.parse().unwrap();

    // Before the start, people who left may come back: the host stays.
    let r = app.app.reconciler.run_once().await;
    assert_eq!(r.host("local-1").unwrap().step, PowerStep::None, "{:?}", r.lines());
    // Past the start, with everyone gone, the next tick releases it (not at end + grace).
    app.clock.advance(Duration::minutes(11));
    let r = app.app.reconciler.run_once().await;
    assert_eq!(r.host("local-1").unwrap().step, PowerStep::Done { action: OpAction::Deallocate }, "{:?}", r.lines());
    assert_eq!(power_of(&app, "local-1").await, PowerState::Deallocated);
    let all = operations(&app).await;
    let early = ops(&all, OpAction::EarlyRelease, "local-1");
    assert_eq!(early.len(), 1, "every early release is logged: {all:?}");
    assert_eq!(early[0].booking_id, Some(id));
    assert!(early[0].result.contains("min saved"), "{}", early[0].result);
    let dealloc = ops(&all, OpAction::Deallocate, "local-1");
    assert_eq!(dealloc.last().unwrap().result, "ok", "billing still reads a plain deallocate");
    // Nothing is said to be late about a session that ended on purpose.
    assert!(!all.iter().any(|o| o.action == OpAction::Alert), "{all:?}");

    // A late rejoin inside the booked window: 503 with Retry-After while the host starts again.
    let (st, retry, _) = join_api(&app, &owner, &booking).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    app.clock.advance(Duration::minutes(1));
    let r = app.app.reconciler.run_once().await;
    assert_eq!(r.host("local-1").unwrap().step, PowerStep::Done { action: OpAction::Start }, "{:?}", r.lines());
    let (st, _, join) = join_api(&app, &owner, &booking).await;
    assert_eq!(st, StatusCode::OK, "{join}");
    assert!(exists_on(&app, "local-1", join["room_id"].as_u64().unwrap()).await);
}

#[tokio::test]
async fn with_early_release_off_the_host_waits_for_the_booked_end() {
    let app = TestApp::spawn_with(|env| {
        env.insert("FLEET_RELEASE_EARLY".into(), "false".into());
    })
    .await;
    let owner = user();
    a_session_that_ended_early(&app, &owner).await;
    app.clock.advance(Duration::minutes(11));
    let r = app.app.reconciler.run_once().await;
    assert_eq!(r.host("local-1").unwrap().step, PowerStep::None, "kept on as booked: {:?}", r.lines());
    assert_eq!(power_of(&app, "local-1").await, PowerState::Running);
}

#[tokio::test]
async fn a_hosts_lead_is_learned_from_its_boots_and_shown_in_get_hosts() {
    let app = TestApp::spawn().await;
    let lead = |hosts: &Value| hosts.as_array().unwrap()[0]["lead"].clone();
    let (st, hosts) = app.get("/api/v1/hosts", &support::app::admin()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(lead(&hosts), json!({"minutes": 30, "learned": false, "boots": 0, "boot_p90_seconds": null}));

    // A start by the reconciler is timed until Janus answers.
    app.app.reconciler.run_once().await; // idle: deallocated
    let owner = user();
    let first = app.book(&owner, 10, 40, None).await;
    let r = app.app.reconciler.run_once().await;
    assert_eq!(r.host("local-1").unwrap().step, PowerStep::Done { action: OpAction::Start });
    let (st, _) = app.delete(&format!("/api/v1/bookings/{}", first["booking_id"].as_str().unwrap()), &owner).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, hosts) = app.get("/api/v1/hosts", &support::app::admin()).await;
    assert_eq!(lead(&hosts)["boots"], 1, "{hosts}");

    // Two more boots of two minutes (as a VM takes): the lead is their 90th percentile plus 5 min.
    let fleet = &app.app.fleet;
    for _ in 0..2 {
        let t = app.now();
        fleet.boot_started("local-1", t).await.unwrap();
        fleet.boot_answered("local-1", t + Duration::minutes(2)).await.unwrap();
    }
    let (_, hosts) = app.get("/api/v1/hosts", &support::app::admin()).await;
    assert_eq!(lead(&hosts), json!({"minutes": 7, "learned": true, "boots": 3, "boot_p90_seconds": 120}));

    // The plan follows: a session in 20 minutes leaves the host off until 7 minutes before it.
    app.app.fleet.power.deallocate("local-1").await.unwrap();
    let b = app.book(&user(), 60, 90, None).await;
    let start = chrono::DateTime::parse_from_rfc3339(b["start_time"].as_str().unwrap()).unwrap().to_utc();
    let (_, plan) = app.get("/api/v1/plan", &support::app::admin()).await;
    let on = &plan["hosts"][0]["on_intervals"];
    assert_eq!(on.as_array().unwrap().len(), 1, "{plan}");
    let from = chrono::DateTime::parse_from_rfc3339(on[0]["start"].as_str().unwrap()).unwrap().to_utc();
    assert_eq!(from, start - Duration::minutes(7), "{plan}");
    app.clock.advance(Duration::minutes(52));
    let r = app.app.reconciler.run_once().await;
    assert_eq!(r.host("local-1").unwrap().step, PowerStep::None, "not yet: {:?}", r.lines());
    app.clock.advance(Duration::minutes(1));
    let r = app.app.reconciler.run_once().await;
    assert_eq!(r.host("local-1").unwrap().step, PowerStep::Done { action: OpAction::Start }, "{:?}", r.lines());
}
