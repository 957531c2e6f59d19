//! Rooms through the HTTP API: create, list, filters, availability, delete, password reset.

mod support;

use chrono::Duration;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::app::{TestApp, admin, user};

#[tokio::test]
async fn create_room_answers_201_with_id_and_password_and_defaults() {
    let app = TestApp::spawn().await;
    let (st, r) =
        app.post("/api/v1/rooms", &user(), json!({"optional_name": "Sala X", "metadata": {"team": "blue"}})).await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    let id = r["room_id"].as_u64().unwrap();
    assert!(id > 0 && id < (1u64 << 53));
    assert_eq!(r["max_participants"], 2);
    assert_eq!(r["name"], "Sala X");
    assert_eq!(r["metadata"], json!({"team": "blue"}));
    assert!(r["password"].as_str().unwrap().len() >= 12);
    let (st, detail) = app.get(&format!("/api/v1/rooms/{id}"), &user()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(detail["has_future_booking"], false);
    assert!(detail.get("password").is_none() && detail.get("admin_secret").is_none(), "{detail}");
}

#[tokio::test]
async fn create_room_validates_its_body() {
    let app = TestApp::spawn().await;
    let big = "x".repeat(5000);
    for body in [
        json!({"max_participants": 0}),
        json!({"max_participants": 17}),
        json!({"max_participants": "two"}),
        json!({"metadata": [1, 2]}),
        json!({"metadata": {"blob": big}}),
        json!({"optional_name": "n".repeat(201)}),
        json!({"password": "mine"}),
    ] {
        let (st, res) = app.post("/api/v1/rooms", &user(), body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body} -> {res}");
    }
    let (_, rooms) = app.get("/api/v1/rooms", &user()).await;
    assert_eq!(rooms, json!([]), "nothing was written");
}

#[tokio::test]
async fn list_rooms_with_filters() {
    let app = TestApp::spawn().await;
    let u = user();
    let two = app.create_room(&u).await;
    let (_, four) = app.post("/api/v1/rooms", &u, json!({"max_participants": 4})).await;
    let (_, all) = app.get("/api/v1/rooms", &u).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert!(all.as_array().unwrap().iter().all(|r| r.get("password").is_none()));
    let (_, fours) = app.get("/api/v1/rooms?max_participants=4", &u).await;
    assert_eq!(fours.as_array().unwrap().iter().map(|r| &r["room_id"]).collect::<Vec<_>>(), vec![&four["room_id"]]);
    app.book(&u, 60, 120, Some(two["room_id"].as_u64().unwrap())).await;
    let s = app.slot_body(90, 150, None);
    let q = format!(
        "/api/v1/rooms?available=true&start_time={}&end_time={}",
        urlencode(s["start_time"].as_str().unwrap()),
        urlencode(s["end_time"].as_str().unwrap())
    );
    let (st, free) = app.get(&q, &u).await;
    assert_eq!(st, StatusCode::OK, "{free}");
    assert_eq!(free.as_array().unwrap().iter().map(|r| &r["room_id"]).collect::<Vec<_>>(), vec![&four["room_id"]]);
    let later = (app.now() + Duration::hours(1)).to_rfc3339();
    let (_, none) = app.get(&format!("/api/v1/rooms?created_after={}", urlencode(&later)), &u).await;
    assert_eq!(none, json!([]));
    assert_eq!(app.get("/api/v1/rooms?available=true", &u).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(app.get("/api/v1/rooms?created_before=yesterday", &u).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(app.get("/api/v1/rooms?max_participants=99", &u).await.0, StatusCode::BAD_REQUEST);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn availability_lists_free_rooms_or_an_empty_list() {
    let app = TestApp::spawn().await;
    let u = user();
    let s = app.slot_body(60, 120, None);
    let q = format!(
        "/api/v1/rooms/availability?start_time={}&end_time={}",
        urlencode(s["start_time"].as_str().unwrap()),
        urlencode(s["end_time"].as_str().unwrap())
    );
    let (st, empty) = app.get(&q, &u).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(empty, json!({"available_rooms": []}));
    let r = app.create_room(&u).await;
    let (_, one) = app.get(&q, &u).await;
    assert_eq!(one["available_rooms"][0]["room_id"], r["room_id"]);
    app.book(&u, 60, 120, Some(r["room_id"].as_u64().unwrap())).await;
    assert_eq!(app.get(&q, &u).await.1, json!({"available_rooms": []}));
    let (st, _) =
        app.get("/api/v1/rooms/availability?start_time=2030-01-01T11:00:00Z&end_time=2030-01-01T10:00:00Z", &u).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(app.get("/api/v1/rooms/availability", &u).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn delete_room_is_admin_only_and_refused_with_future_bookings() {
    let app = TestApp::spawn().await;
    let u = user();
    let r = app.create_room(&u).await;
    let id = r["room_id"].as_u64().unwrap();
    assert_eq!(app.delete(&format!("/api/v1/rooms/{id}"), &u).await.0, StatusCode::FORBIDDEN);
    let b = app.book(&u, 60, 120, Some(id)).await;
    let (_, detail) = app.get(&format!("/api/v1/rooms/{id}"), &u).await;
    assert_eq!(detail["has_future_booking"], true);
    let (st, body) = app.delete(&format!("/api/v1/rooms/{id}"), &admin()).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    app.delete(&format!("/api/v1/bookings/{}", b["booking_id"].as_str().unwrap()), &u).await;
    assert_eq!(app.delete(&format!("/api/v1/rooms/{id}"), &admin()).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("/api/v1/rooms/{id}"), &u).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&format!("/api/v1/rooms/{id}"), &admin()).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn password_reset_is_admin_only_and_respects_sessions_in_progress() {
    let app = TestApp::spawn().await;
    let u = user();
    let r = app.create_room(&u).await;
    let id = r["room_id"].as_u64().unwrap();
    let path = format!("/api/v1/rooms/{id}/password/reset");
    assert_eq!(app.post(&path, &u, json!({})).await.0, StatusCode::FORBIDDEN);
    let (st, reset) = app.post(&path, &admin(), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{reset}");
    assert_eq!(reset["room_id"], r["room_id"]);
    assert_ne!(reset["new_password"], r["password"]);
    let b = app.book(&u, 10, 70, Some(id)).await;
    assert_ne!(b["password"], reset["new_password"], "a booking's pin is its own, not the room's password");
    let booking = b["booking_id"].as_str().unwrap();
    app.clock.advance(Duration::minutes(11));
    let (st, body) = app.post(&path, &admin(), json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    let (_, before) = app.get(&format!("/api/v1/bookings/{booking}/join"), &u).await;
    let (st, forced) = app.post(&format!("{path}?force=true"), &admin(), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_ne!(forced["new_password"], reset["new_password"]);
    // The reset rotated the session's credentials: a new pin and a new Janus room.
    let (_, after) = app.get(&format!("/api/v1/bookings/{booking}/join"), &u).await;
    assert_ne!(after["pin"], before["pin"], "{after}");
    assert_ne!(after["room_id"], before["room_id"]);
    assert_eq!(app.get(&format!("/api/v1/bookings/{booking}"), &u).await.1["password"], after["pin"]);
    assert_eq!(app.post("/api/v1/rooms/999/password/reset", &admin(), json!({})).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn room_ids_in_paths_are_validated() {
    let app = TestApp::spawn().await;
    for bad in ["abc", "0", "-1", "9007199254740992", "1.5"] {
        let (st, body) = app.get(&format!("/api/v1/rooms/{bad}"), &user()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert_eq!(app.get("/api/v1/rooms/12345", &user()).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn room_creation_is_idempotent_with_a_key() {
    let app = TestApp::spawn().await;
    let token = app.token(&user(), false);
    let send = |b: Value| {
        let (http, url, token) = (app.http.clone(), format!("{}/api/v1/rooms", app.base), token.clone());
        async move {
            let r =
                http.post(url).bearer_auth(token).header("Idempotency-Key", "room-1").json(&b).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (s1, r1) = send(json!({"max_participants": 3})).await;
    let (s2, r2) = send(json!({"max_participants": 3})).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(r1, r2);
    assert_eq!(send(json!({"max_participants": 4})).await.0, StatusCode::UNPROCESSABLE_ENTITY);
}
