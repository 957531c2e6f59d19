//! The API on the Cosmos DB backend (the SDK's in-memory emulator): two app instances sharing
//! one account never double-book, and a throttled account answers 503 with `Retry-After` quickly.

mod support;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use azure_data_cosmos_driver::fault_injection::{FaultInjectionErrorType as E, FaultOperationType as Op};
use reqwest::StatusCode;
use serde_json::Value;
use support::{
    app::{TestApp, user},
    cosmos::{Emulator, fault},
};
use suroga::store::Store;

async fn two_instances() -> (Emulator, TestApp, TestApp) {
    let emu = Emulator::new();
    let a = TestApp::spawn_with_store(Arc::new(emu.store().await) as Arc<dyn Store>).await;
    let b = TestApp::spawn_with_store(Arc::new(emu.store().await) as Arc<dyn Store>).await;
    (emu, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_give_exactly_one_201_for_one_room_and_slot() {
    let (_emu, a, b) = two_instances().await;
    let room = a.create_room(&user()).await["room_id"].as_u64().unwrap();
    let body = a.slot_body(60, 120, Some(room));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let app = if i % 2 == 0 { &a } else { &b };
            let (http, url, token, body) =
                (app.http.clone(), format!("{}/api/v1/bookings", app.base), app.token(&user(), false), body.clone());
            tokio::spawn(async move { http.post(url).bearer_auth(token).json(&body).send().await.unwrap().status() })
        })
        .collect();
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for t in tasks {
        *counts.entry(t.await.unwrap().as_u16()).or_default() += 1;
    }
    assert_eq!(counts.get(&201), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&409), Some(&99), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_find_or_create_never_overlap_in_a_room() {
    let (_emu, a, b) = two_instances().await;
    // Some free rooms to race for, then more requests than rooms so new ones are created too.
    for _ in 0..5 {
        a.create_room(&user()).await;
    }
    let body = a.slot_body(60, 120, None);
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let app = if i % 2 == 0 { &a } else { &b };
            let (http, url, token, body) =
                (app.http.clone(), format!("{}/api/v1/bookings", app.base), app.token(&user(), false), body.clone());
            tokio::spawn(async move {
                let r = http.post(url).bearer_auth(token).json(&body).send().await.unwrap();
                (r.status(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut rooms = HashSet::new();
    for t in tasks {
        let (st, b) = t.await.unwrap();
        assert_eq!(st, StatusCode::CREATED, "{b}");
        assert!(rooms.insert(b["room_id"].as_u64().unwrap()), "room {} booked twice for one slot", b["room_id"]);
    }
}

#[tokio::test]
async fn a_throttled_account_answers_503_with_retry_after_within_seconds() {
    let emu = Emulator::new();
    let healthy = TestApp::spawn_with_store(Arc::new(emu.store().await) as Arc<dyn Store>).await;
    let room = healthy.create_room(&user()).await["room_id"].as_u64().unwrap();
    let rule = fault(Op::BatchItem, E::TooManyRequests, None);
    let throttled =
        TestApp::spawn_with_store(Arc::new(emu.store_with_faults(vec![rule.clone()]).await) as Arc<dyn Store>).await;
    rule.enable();
    let started = Instant::now();
    let res = throttled
        .http
        .post(format!("{}/api/v1/bookings", throttled.base))
        .bearer_auth(throttled.token(&user(), false))
        .json(&throttled.slot_body(60, 120, Some(room)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry));
    let body: Value = res.json().await.unwrap();
    assert!(body["detail"].is_string());
    // Nothing half-written: the slot is still free for the healthy instance.
    healthy.book(&user(), 60, 120, Some(room)).await;
}
