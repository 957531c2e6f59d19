//! Bookings through the HTTP API: find-or-create, no double booking, visibility, cancel rules.

mod support;

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::app::{TestApp, admin, user};

fn at(v: &Value, k: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v[k].as_str().unwrap()).unwrap().with_timezone(&Utc)
}

#[tokio::test]
async fn find_or_create_books_a_new_room_and_shows_the_password() {
    let app = TestApp::spawn().await;
    let u = user();
    let b = app.book(&u, 60, 120, None).await;
    assert!(b["booking_id"].is_string());
    assert!(b["room_id"].as_u64().unwrap() < (1u64 << 53));
    assert_eq!(b["password"].as_str().unwrap().len(), 12);
    assert_eq!(b["status"], "upcoming");
    assert!(b["start_time"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn find_or_create_reuses_a_free_room() {
    let app = TestApp::spawn().await;
    let a = app.book(&user(), 60, 120, None).await;
    let b = app.book(&user(), 120, 180, None).await;
    assert_eq!(a["room_id"], b["room_id"], "back-to-back slots share the room");
    let c = app.book(&user(), 90, 150, None).await;
    assert_ne!(a["room_id"], c["room_id"], "an overlapping slot gets another room");
}

#[tokio::test]
async fn booking_a_taken_room_is_409_and_back_to_back_is_fine() {
    let app = TestApp::spawn().await;
    let room = app.create_room(&user()).await["room_id"].as_u64().unwrap();
    app.book(&user(), 60, 120, Some(room)).await;
    let (st, body) = app.post("/api/v1/bookings", &user(), app.slot_body(119, 180, Some(room))).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert!(body["detail"].as_str().unwrap().contains(&room.to_string()), "{body}");
    app.book(&user(), 120, 180, Some(room)).await;
    app.book(&user(), 0, 60, Some(room)).await;
}

#[tokio::test]
async fn booking_an_unknown_room_is_404() {
    let app = TestApp::spawn().await;
    let (st, body) = app.post("/api/v1/bookings", &user(), app.slot_body(60, 120, Some(424242))).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn bad_slots_are_400() {
    let app = TestApp::spawn().await;
    let u = user();
    let now = app.now();
    let cases = [
        json!({"start_time": (now + Duration::hours(2)).to_rfc3339(), "end_time": (now + Duration::hours(1)).to_rfc3339()}),
        json!({"start_time": (now + Duration::hours(1)).to_rfc3339(), "end_time": (now + Duration::hours(1)).to_rfc3339()}),
        json!({"start_time": (now - Duration::hours(1)).to_rfc3339(), "end_time": (now + Duration::hours(1)).to_rfc3339()}),
        json!({"start_time": (now + Duration::hours(1)).to_rfc3339(), "end_time": (now + Duration::hours(10)).to_rfc3339()}),
        json!({"start_time": "2030-01-01T10:00:00", "end_time": "2030-01-01T11:00:00"}),
        json!({"start_time": "tomorrow", "end_time": "2030-01-01T11:00:00Z"}),
        json!({"start_time": 5, "end_time": "2030-01-01T11:00:00Z"}),
        json!({"end_time": "2030-01-01T11:00:00Z"}),
        json!({"start_time": "2030-01-01T10:00:00Z", "end_time": "2030-01-01T11:00:00Z", "colour": "red"}),
        json!({"start_time": "2030-01-01T10:00:00Z", "end_time": "2030-01-01T11:00:00Z", "room_id": 0}),
        json!({"start_time": "2030-01-01T10:00:00Z", "end_time": "2030-01-01T11:00:00Z", "room_id": -3}),
        json!({"start_time": "2030-01-01T10:00:00Z", "end_time": "2030-01-01T11:00:00Z", "room_id": 9007199254740992u64}),
    ];
    for body in cases {
        let (st, res) = app.post("/api/v1/bookings", &u, body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body} -> {res}");
        assert!(res["detail"].as_str().is_some_and(|d| !d.is_empty()), "{res}");
    }
    let (_, list) = app.get("/api/v1/bookings", &u).await;
    assert_eq!(list, json!([]), "nothing written by refused requests");
}

#[tokio::test]
async fn times_with_offsets_are_stored_and_answered_in_utc() {
    let app = TestApp::spawn().await;
    let start = (app.now() + Duration::hours(3)).with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap());
    let end = start + Duration::hours(1);
    let (st, b) = app
        .post("/api/v1/bookings", &user(), json!({"start_time": start.to_rfc3339(), "end_time": end.to_rfc3339()}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(at(&b, "start_time"), start);
    assert!(b["start_time"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn hundred_parallel_bookings_of_one_room_and_slot_give_exactly_one_201() {
    let app = TestApp::spawn().await;
    let room = app.create_room(&user()).await["room_id"].as_u64().unwrap();
    let body = app.slot_body(60, 120, Some(room));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (http, base, token, body) =
                (app.http.clone(), app.base.clone(), app.token(&user(), false), body.clone());
            tokio::spawn(async move {
                http.post(format!("{base}/api/v1/bookings"))
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for t in tasks {
        *counts.entry(t.await.unwrap().as_u16()).or_default() += 1;
    }
    assert_eq!(counts.get(&201), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&409), Some(&99), "{counts:?}");
}

#[tokio::test]
async fn hundred_parallel_find_or_create_bookings_never_overlap_in_a_room() {
    let app = TestApp::spawn().await;
    let body = app.slot_body(60, 120, None);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (http, base, token, body) =
                (app.http.clone(), app.base.clone(), app.token(&user(), false), body.clone());
            tokio::spawn(async move {
                let res =
                    http.post(format!("{base}/api/v1/bookings")).bearer_auth(token).json(&body).send().await.unwrap();
                (res.status(), res.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut rooms = std::collections::HashSet::new();
    for t in tasks {
        let (st, b) = t.await.unwrap();
        assert_eq!(st, StatusCode::CREATED, "{b}");
        assert!(rooms.insert(b["room_id"].as_u64().unwrap()), "two bookings of one slot share room {}", b["room_id"]);
    }
    assert_eq!(rooms.len(), 100);
}

#[tokio::test]
async fn list_is_the_callers_own_ordered_by_start_without_passwords() {
    let app = TestApp::spawn().await;
    let (u, other) = (user(), user());
    let late = app.book(&u, 300, 360, None).await;
    let early = app.book(&u, 60, 120, None).await;
    app.book(&other, 60, 120, None).await;
    let (st, list) = app.get("/api/v1/bookings", &u).await;
    assert_eq!(st, StatusCode::OK);
    let ids: Vec<&Value> = list.as_array().unwrap().iter().map(|b| &b["booking_id"]).collect();
    assert_eq!(ids, vec![&early["booking_id"], &late["booking_id"]]);
    assert!(list.as_array().unwrap().iter().all(|b| b.get("password").is_none()));
}

#[tokio::test]
async fn list_filters_by_status_and_date() {
    let app = TestApp::spawn().await;
    let u = user();
    let b1 = app.book(&u, 60, 120, None).await;
    let b2 = app.book(&u, 60 * 24 * 3, 60 * 24 * 3 + 60, None).await;
    let (st, _) =
        app.post(&format!("/api/v1/bookings/{}/cancel", b2["booking_id"].as_str().unwrap()), &u, json!({})).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, cancelled) = app.get("/api/v1/bookings?status=cancelled", &u).await;
    assert_eq!(cancelled.as_array().unwrap().len(), 1);
    assert_eq!(cancelled[0]["booking_id"], b2["booking_id"]);
    let day = at(&b1, "start_time").format("%Y-%m-%d").to_string();
    let (_, on_day) = app.get(&format!("/api/v1/bookings?date={day}"), &u).await;
    assert!(on_day.as_array().unwrap().iter().any(|b| b["booking_id"] == b1["booking_id"]));
    assert!(on_day.as_array().unwrap().iter().all(|b| b["booking_id"] != b2["booking_id"]));
    assert_eq!(app.get("/api/v1/bookings?status=soon", &u).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(app.get("/api/v1/bookings?date=2026-13-01", &u).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn status_follows_the_clock() {
    let app = TestApp::spawn().await;
    let u = user();
    let b = app.book(&u, 60, 120, None).await;
    let path = format!("/api/v1/bookings/{}", b["booking_id"].as_str().unwrap());
    app.clock.advance(Duration::minutes(61));
    assert_eq!(app.get(&path, &u).await.1["status"], "active");
    app.clock.advance(Duration::minutes(60));
    assert_eq!(app.get(&path, &u).await.1["status"], "past");
}

#[tokio::test]
async fn password_is_shown_only_to_owner_or_admin_inside_the_window() {
    let app = TestApp::spawn().await;
    let u = user();
    let b = app.book(&u, 60, 120, None).await;
    let path = format!("/api/v1/bookings/{}", b["booking_id"].as_str().unwrap());
    let (st, early) = app.get(&path, &u).await;
    assert_eq!(st, StatusCode::OK);
    assert!(early.get("password").is_none(), "hidden an hour before: {early}");
    app.clock.advance(Duration::minutes(46));
    assert_eq!(app.get(&path, &u).await.1["password"], b["password"], "shown 14 minutes before");
    assert_eq!(app.get(&path, &admin()).await.1["password"], b["password"], "admins see it too");
    let (st, _) = app.get(&path, &user()).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "another user's booking does not exist for them");
    app.clock.advance(Duration::minutes(75));
    assert!(app.get(&path, &u).await.1.get("password").is_none(), "hidden after the end");
}

#[tokio::test]
async fn cancel_rules() {
    let app = TestApp::spawn().await;
    let u = user();
    let b = app.book(&u, 60, 120, None).await;
    let id = b["booking_id"].as_str().unwrap();
    assert_eq!(app.delete(&format!("/api/v1/bookings/{id}"), &user()).await.0, StatusCode::NOT_FOUND);
    let started = app.book(&u, 5, 65, None).await;
    app.clock.advance(Duration::minutes(6));
    let (st, body) = app.delete(&format!("/api/v1/bookings/{}", started["booking_id"].as_str().unwrap()), &u).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(app.delete(&format!("/api/v1/bookings/{id}"), &u).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.delete(&format!("/api/v1/bookings/{id}"), &u).await.0, StatusCode::NO_CONTENT, "idempotent");
    assert_eq!(app.get(&format!("/api/v1/bookings/{id}"), &u).await.1["status"], "cancelled");
    // The slot is free again.
    app.book(&user(), 60, 120, Some(b["room_id"].as_u64().unwrap())).await;
    assert_eq!(app.delete("/api/v1/bookings/not-a-uuid", &u).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn cancel_inside_the_minimum_notice_is_400() {
    let app = TestApp::spawn_with(|env| {
        env.insert("MIN_CANCEL_NOTICE_MINUTES".into(), "60".into());
    })
    .await;
    let u = user();
    let soon = app.book(&u, 30, 90, None).await;
    let later = app.book(&u, 120, 180, None).await;
    let (st, body) = app
        .call(
            Method::POST,
            &format!("/api/v1/bookings/{}/cancel", soon["booking_id"].as_str().unwrap()),
            Some(&u),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        app.delete(&format!("/api/v1/bookings/{}", later["booking_id"].as_str().unwrap()), &u).await.0,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn idempotency_key_replays_and_refuses_a_different_body() {
    let app = TestApp::spawn().await;
    let token = app.token(&user(), false);
    let body = app.slot_body(60, 120, None);
    let send = |b: Value| {
        let (http, url, token) = (app.http.clone(), format!("{}/api/v1/bookings", app.base), token.clone());
        async move {
            let r = http.post(url).bearer_auth(token).header("Idempotency-Key", "k-1").json(&b).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (s1, b1) = send(body.clone()).await;
    let (s2, b2) = send(body.clone()).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(b1, b2, "the replay answers the first response");
    let mut other = body.clone();
    other["end_time"] = app.slot_body(60, 90, None)["end_time"].clone();
    let (s3, b3) = send(other).await;
    assert_eq!(s3, StatusCode::UNPROCESSABLE_ENTITY, "{b3}");
}

#[tokio::test]
async fn extend_moves_the_end_unless_the_room_is_taken() {
    let app = TestApp::spawn().await;
    let u = user();
    let b = app.book(&u, 60, 120, None).await;
    let room = b["room_id"].as_u64().unwrap();
    let id = b["booking_id"].as_str().unwrap();
    let path = format!("/api/v1/bookings/{id}/extend");
    let end = |min: i64| json!({"end_time": (app.now() + Duration::minutes(min)).to_rfc3339()});
    let (st, longer) = app.post(&path, &u, end(150)).await;
    assert_eq!(st, StatusCode::OK, "{longer}");
    assert_eq!(at(&longer, "end_time"), app.now() + Duration::minutes(150));
    app.book(&user(), 150, 200, Some(room)).await;
    assert_eq!(app.post(&path, &u, end(160)).await.0, StatusCode::CONFLICT, "the next booking holds the room");
    assert_eq!(app.post(&path, &user(), end(140)).await.0, StatusCode::NOT_FOUND, "not another user's");
    assert_eq!(app.post(&path, &admin(), end(140)).await.0, StatusCode::OK, "an admin may");
    assert_eq!(app.post(&path, &u, end(30)).await.0, StatusCode::BAD_REQUEST, "before the start");
    assert_eq!(app.post(&path, &u, end(60 * 10)).await.0, StatusCode::BAD_REQUEST, "beyond the maximum session");
    assert_eq!(app.post(&path, &u, json!({"end": "x"})).await.0, StatusCode::BAD_REQUEST);
    app.clock.advance(Duration::minutes(150));
    assert_eq!(app.post(&path, &u, end(30)).await.0, StatusCode::GONE);
}

#[tokio::test]
async fn the_daily_purge_forgets_keys_older_than_a_day() {
    let app = TestApp::spawn().await;
    let token = app.token(&user(), false);
    let res = app
        .http
        .post(format!("{}/api/v1/bookings", app.base))
        .bearer_auth(&token)
        .header("Idempotency-Key", "old-key")
        .json(&app.slot_body(60 * 48, 60 * 49, None))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let now = app.now();
    assert_eq!(
        app.app.jobs.run("purge-keys", now).await.unwrap(),
        vec![format!(
            "forgot 0 idempotency keys recorded before {}",
            suroga::domain::format_instant(now - Duration::hours(24))
        )]
    );
    app.clock.advance(Duration::hours(25));
    let logs = app.app.jobs.run("purge-keys", app.now()).await.unwrap();
    assert!(logs[0].starts_with("forgot 1 "), "{logs:?}");
}
