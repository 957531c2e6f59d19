//! Private sessions for two, against a real Janus: the guest's invitation, credentials that
//! open one booking's session and nothing else, back-to-back bookings, and sessions that end
//! (at the end plus the grace, on cancel, on revocation). Time that the reconciler acts on is
//! driven by the manual clock; Janus checks its tokens against the real clock, which stays
//! before every expiry here.

mod support;

use chrono::Duration;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::app::{TestApp, admin, user};
use support::participant::client;
use suroga::{
    config::Secret,
    janus::{Credential, JanusError, JoinRoom, Session, VIDEOROOM, videoroom_codes},
    store::OpAction,
};
use uuid::Uuid;

/// What a participant holds after a join: the answer's credentials.
#[derive(Clone)]
struct Held {
    http: String,
    token: String,
    room_token: String,
    room: u64,
    pin: String,
}

impl Held {
    fn of(join: &Value) -> Self {
        Self {
            http: join["janus"]["http"].as_str().unwrap().to_string(),
            token: join["token"].as_str().unwrap().to_string(),
            room_token: join["room_token"].as_str().unwrap().to_string(),
            room: join["room_id"].as_u64().unwrap(),
            pin: join["pin"].as_str().unwrap().to_string(),
        }
    }

    /// Opens a Janus session with the core token and joins `room` as a publisher with the
    /// held pin and room token; the session keeps the participant in the room.
    async fn join_room(&self, room: u64, display: &str) -> Result<Session, JanusError> {
        let session = client().session_with(&self.http, Credential::Token(Secret::new(&self.token))).await?;
        let handle = session.attach(VIDEOROOM).await?;
        handle.join(&JoinRoom { room, display, pin: Some(&self.pin), room_token: Some(&self.room_token) }).await?;
        Ok(session)
    }

    async fn join(&self, display: &str) -> Result<Session, JanusError> {
        self.join_room(self.room, display).await
    }

    /// Lists `room`'s participants with the core token, as any token holder could.
    async fn list(&self, room: u64) -> Result<Vec<suroga::janus::ListedParticipant>, JanusError> {
        let session = client().session_with(&self.http, Credential::Token(Secret::new(&self.token))).await?;
        let handle = session.attach(VIDEOROOM).await?;
        handle.list_participants(room).await
    }
}

fn refused_with(r: Result<impl std::fmt::Debug, JanusError>, code: i64) {
    match r {
        Err(e) if e.videoroom_code() == Some(code) => {}
        other => panic!("expected VideoRoom error {code}, got {other:?}"),
    }
}

async fn exists(app: &TestApp, room: u64) -> bool {
    let base = app.app.janus.hosts()[0].backend_url.clone();
    app.app.janus.client().room_exists(&base, room).await.unwrap()
}

async fn live_participants(app: &TestApp, room: u64) -> Vec<String> {
    let host = app.app.janus.hosts()[0].clone();
    let list = app.app.janus.participants_fresh(&host, room).await.unwrap();
    list.into_iter().filter_map(|p| p.display).collect()
}

async fn invite(app: &TestApp, owner: &str, booking: &str, body: Option<Value>) -> Value {
    let (st, inv) = app.call(Method::POST, &format!("/api/v1/bookings/{booking}/invitation"), Some(owner), body).await;
    assert_eq!(st, StatusCode::CREATED, "{inv}");
    inv
}

/// `POST /invitations/{code}/join` with an optional bearer token.
async fn guest_join(app: &TestApp, code: &str, name: &str, bearer: Option<String>) -> (StatusCode, Value) {
    let mut req =
        app.http.post(format!("{}/api/v1/invitations/{code}/join", app.base)).json(&json!({ "display_name": name }));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let st = res.status();
    (st, res.json().await.unwrap_or(Value::Null))
}

async fn landing(app: &TestApp, code: &str) -> (StatusCode, Value) {
    app.call(Method::GET, &format!("/api/v1/invitations/{code}"), None, None).await
}

async fn host_join(app: &TestApp, owner: &str, booking: &str) -> (StatusCode, Value) {
    app.get(&format!("/api/v1/bookings/{booking}/join"), owner).await
}

fn id(b: &Value) -> String {
    b["booking_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_guest_joins_with_the_invitation_into_the_hosts_session() {
    let app = TestApp::spawn().await;
    let host = user();
    let b = app.book(&host, 30, 90, None).await;
    let booking = id(&b);
    // The owner's token carries a name: that is what the guest sees, never the user id.
    let named = app.named_token(&host, "Alice Host");
    let res = app
        .http
        .post(format!("{}/api/v1/bookings/{booking}/invitation", app.base))
        .bearer_auth(&named)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let inv: Value = res.json().await.unwrap();
    let code = inv["code"].as_str().unwrap().to_string();
    assert!(code.len() >= 22, "at least 128 random bits: {code}");
    assert_eq!(
        inv["url"],
        format!("http://127.0.0.1:0/app/i/{code}"),
        "PUBLIC_BASE_URL defaults to the listen address"
    );
    assert_eq!(inv["expires_at"], b["end_time"]);
    assert_eq!(inv["guest"], Value::Null);

    let (st, page) = landing(&app, &code).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    let keys: Vec<&str> = page.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["end_time", "host_display", "opens_at", "start_time", "status"], "no more than the page needs");
    assert_eq!(page["host_display"], "Alice Host");
    assert_eq!(page["status"], "upcoming");
    assert_eq!(page["start_time"], b["start_time"]);
    let opens = chrono::DateTime::parse_from_rfc3339(page["opens_at"].as_str().unwrap()).unwrap();
    let start = chrono::DateTime::parse_from_rfc3339(b["start_time"].as_str().unwrap()).unwrap();
    assert_eq!(opens, start - Duration::minutes(15));

    let (st, early) = guest_join(&app, &code, "Bea", None).await;
    assert_eq!(st, StatusCode::TOO_EARLY, "{early}");
    assert_eq!(early["opens_at"], page["opens_at"]);

    app.clock.advance(Duration::minutes(16));
    let res =
        app.http.get(format!("{}/api/v1/bookings/{booking}/join", app.base)).bearer_auth(&named).send().await.unwrap();
    let host_join: Value = res.json().await.unwrap();
    assert_eq!(host_join["display"], "Alice Host");
    assert_eq!(host_join["role"], "host");
    for bad in ["", "   ", &"x".repeat(65), "Bea\u{7}"] {
        let (st, body) = guest_join(&app, &code, bad, None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
    }
    let (st, guest) = guest_join(&app, &code, "  Bea  ", None).await;
    assert_eq!(st, StatusCode::OK, "{guest}");
    assert_eq!(guest["role"], "guest");
    assert_eq!(guest["display"], "Bea");
    assert_eq!(guest["booking_id"], b["booking_id"]);
    assert_eq!(guest["room_id"], host_join["room_id"], "the same session");
    assert_eq!(guest["pin"], host_join["pin"]);
    for k in ["token", "room_token", "token_expires_at", "janus", "ice_servers", "start_time", "end_time"] {
        assert!(!guest[k].is_null(), "{k} in {guest}");
    }

    let _h = Held::of(&host_join).join("Alice Host").await.expect("the host joins");
    let _g = Held::of(&guest).join("Bea").await.expect("the guest joins with the invitation's credentials");
    let mut seen = live_participants(&app, guest["room_id"].as_u64().unwrap()).await;
    seen.sort();
    assert_eq!(seen, ["Alice Host", "Bea"]);
    let (st, listed) = app.get(&format!("/api/v1/bookings/{booking}/participants"), &host).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(listed["participant_count"], 2, "the owner's list includes the guest: {listed}");
    let (st, shown) = app.get(&format!("/api/v1/bookings/{booking}/invitation"), &host).await;
    assert_eq!((st, shown["joined"].clone()), (StatusCode::OK, json!(true)), "{shown}");
    assert!(shown.get("code").is_none() && shown.get("url").is_none(), "the code is shown once: {shown}");
}

#[tokio::test]
async fn a_replaced_or_revoked_invitation_is_404_and_removes_the_guest_who_used_it() {
    let app = TestApp::spawn().await;
    let host = user();
    let b = app.book(&host, 10, 70, None).await;
    let booking = id(&b);
    let first = invite(&app, &host, &booking, None).await;
    let a = first["code"].as_str().unwrap().to_string();
    let (_, h1) = host_join(&app, &host, &booking).await;
    let (st, g1) = guest_join(&app, &a, "Bea", None).await;
    assert_eq!(st, StatusCode::OK, "{g1}");
    let (host1, guest1) = (Held::of(&h1), Held::of(&g1));
    let _hs = host1.join("Host").await.unwrap();
    let _gs = guest1.join("Bea").await.unwrap();

    // Replaced: the old code is dead at once, and the session moves to a new room.
    let second = invite(&app, &host, &booking, None).await;
    let c = second["code"].as_str().unwrap().to_string();
    assert_eq!(landing(&app, &a).await.0, StatusCode::NOT_FOUND);
    assert_eq!(guest_join(&app, &a, "Bea", None).await.0, StatusCode::NOT_FOUND);
    assert!(!exists(&app, host1.room).await, "the room the removed guest was in is gone");
    assert!(live_participants(&app, host1.room).await.is_empty());
    let (st, h2) = host_join(&app, &host, &booking).await;
    assert_eq!(st, StatusCode::OK);
    let host2 = Held::of(&h2);
    assert_ne!(host2.room, host1.room);
    assert_ne!(host2.pin, host1.pin);
    assert_eq!(app.get(&format!("/api/v1/bookings/{booking}"), &host).await.1["password"], h2["pin"]);
    let _hs2 = host2.join("Host").await.unwrap();
    // What the removed guest held opens nothing: the old room is gone, the new one wants a new
    // pin and a token for its own id.
    refused_with(guest1.join("Bea").await, videoroom_codes::NO_SUCH_ROOM);
    refused_with(guest1.join_room(host2.room, "Bea").await, videoroom_codes::UNAUTHORIZED);

    // Revoked: the second code is dead too, and its guest goes the same way.
    let (st, g2) = guest_join(&app, &c, "Bea", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(g2["room_id"], h2["room_id"]);
    assert_eq!(app.delete(&format!("/api/v1/bookings/{booking}/invitation"), &host).await.0, StatusCode::NO_CONTENT);
    assert_eq!(landing(&app, &c).await.0, StatusCode::NOT_FOUND);
    assert_eq!(guest_join(&app, &c, "Bea", None).await.0, StatusCode::NOT_FOUND);
    assert!(!exists(&app, host2.room).await);
    assert_eq!(app.get(&format!("/api/v1/bookings/{booking}/invitation"), &host).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&format!("/api/v1/bookings/{booking}/invitation"), &host).await.0, StatusCode::NO_CONTENT);
    assert_eq!(landing(&app, "never-issued-code").await.0, StatusCode::NOT_FOUND);

    // Replacing an invitation nobody used changes nothing for the host.
    let (_, h3) = host_join(&app, &host, &booking).await;
    invite(&app, &host, &booking, None).await;
    invite(&app, &host, &booking, None).await;
    let (_, h4) = host_join(&app, &host, &booking).await;
    assert_eq!((h4["room_id"].clone(), h4["pin"].clone()), (h3["room_id"].clone(), h3["pin"].clone()));
    // Another user cannot see or touch the booking's invitation.
    let stranger = user();
    assert_eq!(app.get(&format!("/api/v1/bookings/{booking}/invitation"), &stranger).await.0, StatusCode::NOT_FOUND);
    let (st, _) =
        app.call(Method::POST, &format!("/api/v1/bookings/{booking}/invitation"), Some(&stranger), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_harvested_password_and_a_token_of_ones_own_booking_open_nothing_else() {
    let app = TestApp::spawn().await;
    let (alice, mallory) = (user(), user());
    let r = app.create_room(&admin()).await;
    let room = r["room_id"].as_u64().unwrap();
    // Mallory books a free slot of the room, learns the password the 201 carries, cancels.
    let m = app.book(&mallory, 600, 660, Some(room)).await;
    let harvested = m["password"].as_str().unwrap().to_string();
    app.delete(&format!("/api/v1/bookings/{}", id(&m)), &mallory).await;
    // Alice's live session in that room, and a live booking of Mallory's own elsewhere.
    let a = app.book(&alice, 10, 70, Some(room)).await;
    let (_, aj) = host_join(&app, &alice, &id(&a)).await;
    let alices = Held::of(&aj);
    let _alice_in = alices.join("Alice").await.unwrap();
    let own = app.book(&mallory, 10, 70, None).await;
    let (st, mj) = host_join(&app, &mallory, &id(&own)).await;
    assert_eq!(st, StatusCode::OK, "{mj}");
    let mut mallorys = Held::of(&mj);
    assert_ne!(harvested, alices.pin, "the password she learned is her cancelled booking's own");
    assert_ne!(mallorys.room, alices.room);

    // The room's public id is never a live Janus room: nothing to join or list there.
    mallorys.pin = harvested.clone();
    refused_with(mallorys.join_room(room, "mallory").await, videoroom_codes::NO_SUCH_ROOM);
    refused_with(mallorys.list(room).await, videoroom_codes::NO_SUCH_ROOM);
    // Even knowing Alice's session room, her own room token is for another room.
    refused_with(mallorys.join_room(alices.room, "mallory").await, videoroom_codes::UNAUTHORIZED);
    let session = client().session_with(&mallorys.http, Credential::Token(Secret::new(&mallorys.token))).await.unwrap();
    let sub = session.attach(VIDEOROOM).await.unwrap();
    let listed = live_participants(&app, alices.room).await;
    assert_eq!(listed, ["Alice"]);
    let feed = app.app.janus.participants_fresh(&app.app.janus.hosts()[0], alices.room).await.unwrap()[0].id;
    refused_with(
        sub.subscribe(alices.room, feed, None, Some(&harvested), Some(&mallorys.room_token)).await,
        videoroom_codes::UNAUTHORIZED,
    );
    // And the API shows her nothing of Alice's session.
    assert_eq!(app.get(&format!("/api/v1/rooms/{room}/participants"), &mallory).await.0, StatusCode::FORBIDDEN);
    assert_eq!(app.get(&format!("/api/v1/bookings/{}/participants", id(&a)), &mallory).await.0, StatusCode::NOT_FOUND);
    assert_eq!(host_join(&app, &mallory, &id(&a)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(live_participants(&app, alices.room).await, ["Alice"], "nobody got in");
}

#[tokio::test]
async fn back_to_back_bookings_of_a_room_never_share_a_session() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (user(), user());
    let room = app.create_room(&admin()).await["room_id"].as_u64().unwrap();
    let a = app.book(&alice, 10, 70, Some(room)).await;
    let b = app.book(&bob, 70, 130, Some(room)).await;
    let (_, aj) = host_join(&app, &alice, &id(&a)).await;
    let alices = Held::of(&aj);
    let _alice_in = alices.join("Alice").await.unwrap();

    // Bob's window opens 15 minutes before his start, inside Alice's session.
    app.clock.advance(Duration::minutes(56));
    let (st, bj) = host_join(&app, &bob, &id(&b)).await;
    assert_eq!(st, StatusCode::OK, "{bj}");
    let bobs = Held::of(&bj);
    assert_ne!(bobs.room, alices.room, "his own session room");
    assert_ne!(bobs.pin, alices.pin);
    let _bob_in = bobs.join("Bob").await.unwrap();
    assert_eq!(live_participants(&app, bobs.room).await, ["Bob"], "he sees nobody of hers");
    assert_eq!(live_participants(&app, alices.room).await, ["Alice"]);
    refused_with(bobs.join_room(alices.room, "Bob").await, videoroom_codes::UNAUTHORIZED);
    let (st, p) = app.get(&format!("/api/v1/bookings/{}/participants", id(&b)), &bob).await;
    assert_eq!((st, p["participant_count"].clone()), (StatusCode::OK, json!(1)), "{p}");

    // At her end (his start) her session closes: the grace never reaches into his booking.
    app.clock.advance(Duration::minutes(14));
    let report = app.app.reconciler.run_once().await;
    let closed = &report.host("local-1").unwrap().closed;
    assert_eq!(closed, &vec![alices.room], "{:?}", report.lines());
    assert!(!exists(&app, alices.room).await);
    assert!(exists(&app, bobs.room).await);
    assert_eq!(live_participants(&app, bobs.room).await, ["Bob"]);
}

#[tokio::test]
async fn at_the_end_plus_grace_the_host_and_guest_are_removed_and_cannot_rejoin() {
    let app = TestApp::spawn().await;
    let host = user();
    let b = app.book(&host, 10, 40, None).await;
    let booking = id(&b);
    let code = invite(&app, &host, &booking, None).await["code"].as_str().unwrap().to_string();
    let (_, hj) = host_join(&app, &host, &booking).await;
    let (_, gj) = guest_join(&app, &code, "Bea", None).await;
    let (h, g) = (Held::of(&hj), Held::of(&gj));
    let _hs = h.join("Host").await.unwrap();
    let _gs = g.join("Bea").await.unwrap();
    assert_eq!(
        hj["token_expires_at"],
        json!(
            chrono::DateTime::parse_from_rfc3339(b["end_time"].as_str().unwrap())
                .map(|t| suroga::domain::format_instant((t + Duration::minutes(5)).to_utc()))
                .unwrap()
        )
    );

    // Inside the grace (end + 4 min): the session goes on.
    app.clock.advance(Duration::minutes(44));
    app.app.reconciler.run_once().await;
    assert_eq!(live_participants(&app, h.room).await.len(), 2);
    assert_eq!(host_join(&app, &host, &booking).await.0, StatusCode::GONE, "no new joins after the end");
    // At the end plus the grace, one reconciler tick removes both.
    app.clock.advance(Duration::minutes(1));
    let report = app.app.reconciler.run_once().await;
    assert!(report.host("local-1").unwrap().closed.contains(&h.room), "{:?}", report.lines());
    assert!(!exists(&app, h.room).await);
    assert!(live_participants(&app, h.room).await.is_empty());
    for held in [&h, &g] {
        refused_with(held.join("again").await, videoroom_codes::NO_SUCH_ROOM);
    }
    assert_eq!(guest_join(&app, &code, "Bea", None).await.0, StatusCode::GONE);
    assert_eq!(landing(&app, &code).await.0, StatusCode::NOT_FOUND, "the invitation expired with the session");
    let all = app
        .app
        .state
        .store
        .operations(
            suroga::domain::TimeSlot::new(app.now() - Duration::hours(2), app.now() + Duration::hours(1)).unwrap(),
        )
        .await
        .unwrap();
    assert!(
        all.iter()
            .any(|o| o.action == OpAction::CloseSession && o.booking_id == Some(booking.parse::<Uuid>().unwrap())),
        "the close is in the operations log"
    );
}

#[tokio::test]
async fn a_cancelled_bookings_people_are_removed_at_once() {
    let app = TestApp::spawn().await;
    let host = user();
    let b = app.book(&host, 10, 70, None).await;
    let booking = id(&b);
    let code = invite(&app, &host, &booking, None).await["code"].as_str().unwrap().to_string();
    let (_, hj) = host_join(&app, &host, &booking).await;
    let (_, gj) = guest_join(&app, &code, "Bea", None).await;
    let (h, g) = (Held::of(&hj), Held::of(&gj));
    let _hs = h.join("Host").await.unwrap();
    let _gs = g.join("Bea").await.unwrap();

    assert_eq!(app.delete(&format!("/api/v1/bookings/{booking}"), &host).await.0, StatusCode::NO_CONTENT);
    assert!(!exists(&app, h.room).await, "closed by the cancel itself, before any reconciler tick");
    for held in [&h, &g] {
        refused_with(held.join("again").await, videoroom_codes::NO_SUCH_ROOM);
    }
    assert_eq!(host_join(&app, &host, &booking).await.0, StatusCode::CONFLICT);
    assert_eq!(guest_join(&app, &code, "Bea", None).await.0, StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_reconciler_closes_what_the_fast_path_missed() {
    let app = TestApp::spawn().await;
    let host = user();
    let b = app.book(&host, 10, 70, None).await;
    let booking = id(&b);
    let (_, hj) = host_join(&app, &host, &booking).await;
    let h = Held::of(&hj);
    let _hs = h.join("Host").await.unwrap();
    // Another session keeps the host on.
    app.book(&user(), 10, 70, None).await;
    // The store says cancelled, but nothing told Janus (as if the process died in between).
    app.app.state.store.cancel_booking(booking.parse().unwrap(), app.now()).await.unwrap();
    assert!(exists(&app, h.room).await);
    let report = app.app.reconciler.run_once().await;
    assert_eq!(report.host("local-1").unwrap().closed, vec![h.room], "{:?}", report.lines());
    assert!(!exists(&app, h.room).await);
    refused_with(h.join("again").await, videoroom_codes::NO_SUCH_ROOM);
}

#[tokio::test]
async fn a_shortened_session_closes_at_its_new_end_plus_grace() {
    let app = TestApp::spawn().await;
    let host = user();
    let b = app.book(&host, 10, 70, None).await;
    let booking = id(&b);
    let (_, hj) = host_join(&app, &host, &booking).await;
    let h = Held::of(&hj);
    let _hs = h.join("Host").await.unwrap();
    app.clock.advance(Duration::minutes(20));
    let new_end = (app.now() + Duration::minutes(10)).to_rfc3339();
    let (st, moved) =
        app.post(&format!("/api/v1/bookings/{booking}/extend"), &host, json!({"end_time": new_end})).await;
    assert_eq!(st, StatusCode::OK, "{moved}");
    app.clock.advance(Duration::minutes(14));
    app.app.reconciler.run_once().await;
    assert!(exists(&app, h.room).await, "inside the grace of the new end");
    app.clock.advance(Duration::minutes(1));
    app.app.reconciler.run_once().await;
    assert!(!exists(&app, h.room).await, "closed at the new end plus the grace");
}

#[tokio::test]
async fn an_invitation_that_names_a_guest_admits_only_that_user() {
    let app = TestApp::spawn().await;
    let (host, bob, carol) = (user(), user(), user());
    let b = app.book(&host, 10, 70, None).await;
    let inv = invite(&app, &host, &id(&b), Some(json!({ "guest": bob }))).await;
    assert_eq!(inv["guest"], json!(bob));
    let code = inv["code"].as_str().unwrap();
    assert_eq!(landing(&app, code).await.0, StatusCode::OK, "the landing page needs no token");
    let res = app
        .http
        .post(format!("{}/api/v1/invitations/{code}/join", app.base))
        .json(&json!({"display_name": "Bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_eq!(guest_join(&app, code, "Carol", Some(app.token(&carol, false))).await.0, StatusCode::NOT_FOUND);
    let (st, joined) = guest_join(&app, code, "Bob", Some(app.token(&bob, false))).await;
    assert_eq!(st, StatusCode::OK, "{joined}");
    assert_eq!(joined["display"], "Bob");
    // A malformed token is never quietly anonymous.
    assert_eq!(guest_join(&app, code, "Bob", Some("not-a-jwt".into())).await.0, StatusCode::UNAUTHORIZED);
    let (st, bad) = app
        .call(Method::POST, &format!("/api/v1/bookings/{}/invitation", id(&b)), Some(&host), Some(json!({"guest": ""})))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
}

#[tokio::test]
async fn invitations_of_cancelled_or_ended_bookings_are_refused() {
    let app = TestApp::spawn().await;
    let host = user();
    let b = app.book(&host, 10, 40, None).await;
    app.clock.advance(Duration::minutes(41));
    let (st, body) =
        app.call(Method::POST, &format!("/api/v1/bookings/{}/invitation", id(&b)), Some(&host), None).await;
    assert_eq!(st, StatusCode::GONE, "{body}");
    let c = app.book(&host, 100, 160, None).await;
    app.delete(&format!("/api/v1/bookings/{}", id(&c)), &host).await;
    let (st, body) =
        app.call(Method::POST, &format!("/api/v1/bookings/{}/invitation", id(&c)), Some(&host), None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn no_answer_or_stored_byte_holds_a_server_secret_a_room_secret_or_an_invitation_code() {
    let app = TestApp::spawn().await;
    let host = user();
    let b = app.book(&host, 10, 70, None).await;
    let booking = id(&b);
    let inv = invite(&app, &host, &booking, None).await;
    let code = inv["code"].as_str().unwrap().to_string();
    let mut answers = vec![b.to_string(), inv.to_string()];
    answers.push(landing(&app, &code).await.1.to_string());
    answers.push(host_join(&app, &host, &booking).await.1.to_string());
    answers.push(guest_join(&app, &code, "Bea", None).await.1.to_string());
    answers.push(app.get(&format!("/api/v1/bookings/{booking}"), &host).await.1.to_string());
    answers.push(app.get(&format!("/api/v1/bookings/{booking}/invitation"), &host).await.1.to_string());
    answers.push(app.get(&format!("/api/v1/bookings/{booking}/participants"), &host).await.1.to_string());
    let stored = app.app.state.store.get_booking(booking.parse().unwrap()).await.unwrap();
    let room_secret = app.app.state.sessions.credentials(&stored).secret;
    let secrets =
        suroga::fleet::local::HostSecrets::load_or_generate(&app.data_dir.join("janus/local-1/secrets.json")).unwrap();
    for a in &answers {
        for s in [&secrets.api_secret, &secrets.admin_key, &secrets.token_secret, &secrets.admin_secret, &room_secret] {
            assert!(!a.contains(s.as_str()), "a server secret in an answer: {a}");
        }
    }
    // The store's files hold the invitation's hash, never its code, and no room secret.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&app.data_dir).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("suroga.sqlite3") {
            bytes.extend(std::fs::read(p).unwrap());
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(&suroga::sessions::code_hash(&code)), "the hash is stored (sanity check of the scan)");
    assert!(!text.contains(&code), "the invitation code is stored in clear");
    assert!(!text.contains(&room_secret), "a room secret is stored");
    assert!(!text.contains(&secrets.api_secret));
}

#[tokio::test]
async fn guest_joins_and_invitation_changes_race_without_losing_the_revocation() {
    // Many guests joining with a code while the host revokes it: after the revocation, whatever
    // the interleaving, the code opens nothing and no room of its generation is left.
    let app = TestApp::spawn().await;
    let host = user();
    let b = app.book(&host, 10, 70, None).await;
    let booking = id(&b);
    let code = invite(&app, &host, &booking, None).await["code"].as_str().unwrap().to_string();
    let names: Vec<String> = (0..8).map(|i| format!("guest {i}")).collect();
    let joins = names.iter().map(|n| guest_join(&app, &code, n, None));
    let path = format!("/api/v1/bookings/{booking}/invitation");
    let revoke = app.delete(&path, &host);
    let (results, (st, _)) = tokio::join!(futures::future::join_all(joins), revoke);
    assert_eq!(st, StatusCode::NO_CONTENT);
    let granted: Vec<u64> =
        results.iter().filter(|(s, _)| *s == StatusCode::OK).map(|(_, j)| j["room_id"].as_u64().unwrap()).collect();
    assert!(results.iter().all(|(s, _)| *s == StatusCode::OK || *s == StatusCode::NOT_FOUND), "{results:?}");
    assert_eq!(guest_join(&app, &code, "late", None).await.0, StatusCode::NOT_FOUND);
    let (_, now) = host_join(&app, &host, &booking).await;
    let current = now["room_id"].as_u64().unwrap();
    for room in granted.into_iter().filter(|r| *r != current) {
        assert!(!exists(&app, room).await, "a room a revoked guest could use is left: {room}");
    }
}
