//! The limits a caller meets on the list endpoints, over HTTP: pages of `limit` items with a
//! `Link: <...>; rel="next"` header, walked to the end exactly once while rows are added, the
//! bounds of `limit`, and cursors that are not the list's own.

mod support;

use chrono::{DateTime, Duration, Utc};
use reqwest::{StatusCode, header};
use serde_json::Value;
use support::app::{TestApp, admin, user};

/// An app without rate limits (the walks send many requests).
async fn app() -> TestApp {
    TestApp::spawn_with(|env| {
        env.insert("RATE_LIMIT_USER_PER_MINUTE".into(), "0".into());
    })
    .await
}

/// GET `url` (a full URL) as `who`: status, the next page's URL from `Link`, the body.
async fn get_page(app: &TestApp, url: &str, who: &str) -> (StatusCode, Option<String>, Value) {
    let res = app.http.get(url).bearer_auth(app.token(who, who.starts_with("admin"))).send().await.unwrap();
    let status = res.status();
    let next = res.headers().get(header::LINK).map(|l| {
        let l = l.to_str().unwrap();
        assert!(l.starts_with('<') && l.ends_with(">; rel=\"next\""), "Link header {l:?}");
        l[1..l.find('>').unwrap()].to_owned()
    });
    let body = res.json().await.unwrap();
    (status, next, body)
}

/// Follows `Link` from `first` to the end; `between` runs after each page. Returns every item.
async fn walk(app: &TestApp, first: &str, who: &str, mut between: impl AsyncFnMut(usize)) -> Vec<Value> {
    let (mut url, mut all, mut pages) = (Some(format!("{}{first}", app.base)), Vec::new(), 0);
    while let Some(u) = url {
        let (st, next, body) = get_page(app, &u, who).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let items = body.as_array().expect("the body stays a JSON array").clone();
        assert!(!items.is_empty(), "a Link never leads to an empty page");
        all.extend(items);
        pages += 1;
        between(pages).await;
        url = next;
        assert!(pages < 500, "the walk never ends");
    }
    all
}

fn ids(items: &[Value], field: &str) -> Vec<String> {
    items.iter().map(|v| v[field].to_string()).collect()
}

#[tokio::test]
async fn room_pages_walk_the_whole_list_once_in_order_while_rooms_are_added() {
    let app = app().await;
    let u = user();
    for i in 0..23 {
        app.create_room(&u).await;
        // Several rooms share each creation instant, so the order's tie-break is exercised.
        if i % 4 == 0 {
            app.clock.advance(Duration::milliseconds(5));
        }
    }
    let mut added = Vec::new();
    let walked = walk(&app, "/api/v1/rooms?limit=5", &u, async |page| {
        if page == 2 {
            for _ in 0..3 {
                app.clock.advance(Duration::milliseconds(1));
                added.push(app.create_room(&u).await["room_id"].to_string());
            }
        }
    })
    .await;
    let (st, all) = app.get("/api/v1/rooms?limit=1000", &u).await;
    assert_eq!(st, StatusCode::OK);
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 26);
    assert_eq!(ids(&walked, "room_id"), ids(&all, "room_id"), "every room once, in the list's order");
    assert_eq!(ids(&walked, "room_id")[23..], added[..], "rooms added during the walk come at its end");
    let created: Vec<DateTime<Utc>> = all.iter().map(|r| r["created_at"].as_str().unwrap().parse().unwrap()).collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    // The default page is 100 rooms: all of them, so no Link.
    let (_, next, body) = get_page(&app, &format!("{}/api/v1/rooms", app.base), &u).await;
    assert_eq!((next, body.as_array().unwrap().len()), (None, 26));
}

#[tokio::test]
async fn booking_pages_keep_the_filters_in_the_link_and_show_only_the_callers_bookings() {
    let app = app().await;
    let (u, other) = (user(), user());
    let mut booked = Vec::new();
    for i in 0..11 {
        booked.push(app.book(&u, 60 + i * 60, 90 + i * 60, None).await["booking_id"].to_string());
    }
    app.book(&other, 60, 90, None).await;
    let cancelled = booked[3].trim_matches('"').to_owned();
    assert_eq!(app.delete(&format!("/api/v1/bookings/{cancelled}"), &u).await.0, StatusCode::NO_CONTENT);

    let (st, next, page) = get_page(&app, &format!("{}/api/v1/bookings?status=upcoming&limit=4", app.base), &u).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(page.as_array().unwrap().len(), 4);
    let next = next.expect("a next page");
    assert!(next.starts_with(&format!("{}/api/v1/bookings?", app.base)), "a full URL: {next}");
    assert!(next.contains("status=upcoming") && next.contains("limit=4") && next.contains("cursor="), "{next}");

    let walked = walk(&app, "/api/v1/bookings?status=upcoming&limit=4", &u, async |_| {}).await;
    let mut upcoming = booked.clone();
    upcoming.remove(3);
    assert_eq!(ids(&walked, "booking_id"), upcoming, "by start, the cancelled one left out");
    assert!(walked.iter().all(|b| b["status"] == "upcoming" && b.get("password").is_none()));
    let everything = walk(&app, "/api/v1/bookings?limit=1", &u, async |_| {}).await;
    assert_eq!(ids(&everything, "booking_id"), booked, "all of the caller's bookings, cancelled too");
}

#[tokio::test]
async fn booking_pages_see_each_booking_once_while_bookings_are_added_ahead_and_behind() {
    let app = app().await;
    let u = user();
    for i in 0..9 {
        app.book(&u, 600 + i * 60, 630 + i * 60, None).await;
    }
    let mut ahead = Vec::new();
    let walked = walk(&app, "/api/v1/bookings?limit=3", &u, async |page| {
        if page == 1 {
            // Behind the walk's position (not seen) and ahead of it (seen once).
            app.book(&u, 60, 90, None).await;
            ahead.push(app.book(&u, 6000, 6030, None).await["booking_id"].to_string());
        }
    })
    .await;
    let walked = ids(&walked, "booking_id");
    assert_eq!(walked.len(), 10, "{walked:?}");
    assert_eq!(walked.last(), ahead.last());
    let mut unique = walked.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), walked.len(), "no booking twice");
}

#[tokio::test]
async fn limit_outside_1_to_1000_is_a_400_problem_on_every_list() {
    let app = app().await;
    let a = admin();
    for list in ["/api/v1/rooms", "/api/v1/bookings", "/api/v1/webhooks/deliveries"] {
        for bad in ["0", "-1", "1001", "99999999999999999999", "ten"] {
            let res = app
                .http
                .get(format!("{}{list}?limit={bad}", app.base))
                .bearer_auth(app.token(&a, true))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{list}?limit={bad}");
            assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
            let body: Value = res.json().await.unwrap();
            assert!(body["detail"].as_str().unwrap().contains("limit"), "{body}");
        }
        for good in ["1", "1000"] {
            assert_eq!(app.get(&format!("{list}?limit={good}"), &a).await.0, StatusCode::OK, "{list}?limit={good}");
        }
    }
}

#[tokio::test]
async fn a_cursor_that_this_list_did_not_hand_out_is_a_400() {
    let app = app().await;
    let u = user();
    for _ in 0..3 {
        app.book(&u, 60, 90, None).await;
        app.clock.advance(Duration::minutes(2));
    }
    let (_, next, _) = get_page(&app, &format!("{}/api/v1/bookings?limit=1", app.base), &u).await;
    let bookings_cursor = next.unwrap().split("cursor=").nth(1).unwrap().to_owned();
    let a = admin();
    for (list, cursor) in [
        ("/api/v1/rooms", "not-base64!".to_owned()),
        ("/api/v1/rooms", "e30".to_owned()), // base64url of `{}`
        ("/api/v1/rooms", bookings_cursor.clone()),
        ("/api/v1/webhooks/deliveries", bookings_cursor.clone()),
        ("/api/v1/bookings", "x".repeat(600)),
    ] {
        let (st, body) = app.get(&format!("{list}?cursor={cursor}"), &a).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{list} {cursor}: {body}");
        assert!(body["detail"].as_str().unwrap().contains("cursor"), "{body}");
    }
    // The cursor works where it came from.
    let (st, body) = app.get(&format!("/api/v1/bookings?cursor={bookings_cursor}"), &u).await;
    assert_eq!((st, body.as_array().unwrap().len()), (StatusCode::OK, 2));
}
