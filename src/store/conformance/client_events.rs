//! Conformance cases of the client events operations ([`Store::append_client_events`],
//! [`Store::client_events`]). Each case uses fresh booking ids, so cases never meet.

use chrono::{DateTime, Duration, DurationRound, Utc};
use futures::future::join_all;
use serde_json::json;
use uuid::Uuid;

use crate::store::{ClientEvent, ClientEventLimits, Store, StoreError};

const ROOMY: ClientEventLimits = ClientEventLimits { per_booking: 1000, per_minute: 1000 };

fn minute() -> DateTime<Utc> {
    Utc::now().duration_trunc(Duration::minutes(1)).unwrap()
}

fn event(booking: Uuid, now: DateTime<Utc>, kind: &str, n: u64) -> ClientEvent {
    ClientEvent {
        id: Uuid::new_v4(),
        booking_id: booking,
        received_at: now + Duration::nanoseconds(7),
        at: now - Duration::milliseconds(250),
        role: if n % 2 == 0 { "host".into() } else { "guest".into() },
        kind: kind.into(),
        data: json!({"n": n, "ms": 1234, "reason": "reclaim", "nested": {"ok": true}}),
    }
}

pub async fn client_events_come_back_in_append_order(store: &dyn Store) {
    let (booking, other) = (Uuid::new_v4(), Uuid::new_v4());
    let now = minute();
    let first: Vec<ClientEvent> = (0..3).map(|n| event(booking, now, "connected", n)).collect();
    let second: Vec<ClientEvent> = (3..5).map(|n| event(booking, now + Duration::seconds(1), "quality", n)).collect();
    store.append_client_events(booking, &first, ROOMY, now).await.unwrap();
    store.append_client_events(booking, &second, ROOMY, now + Duration::seconds(1)).await.unwrap();
    store.append_client_events(other, &[event(other, now, "ice-failed", 9)], ROOMY, now).await.unwrap();
    let all: Vec<ClientEvent> = first.into_iter().chain(second).collect();
    assert_eq!(store.client_events(booking).await.unwrap(), all, "every field, in append order");
    assert_eq!(store.client_events(other).await.unwrap().len(), 1);
    assert!(store.client_events(Uuid::new_v4()).await.unwrap().is_empty());
}

pub async fn client_event_limits_hold_per_booking_and_per_minute(store: &dyn Store) {
    let booking = Uuid::new_v4();
    let limits = ClientEventLimits { per_booking: 5, per_minute: 3 };
    let now = minute();
    let batch =
        |n: usize, at: DateTime<Utc>| (0..n).map(|i| event(booking, at, "reconnect", i as u64)).collect::<Vec<_>>();
    store.append_client_events(booking, &batch(2, now), limits, now).await.unwrap();
    let over_minute = store.append_client_events(booking, &batch(2, now), limits, now + Duration::seconds(30)).await;
    assert!(matches!(over_minute, Err(StoreError::Conflict(_))), "{over_minute:?}");
    assert_eq!(store.client_events(booking).await.unwrap().len(), 2, "a refused append stores nothing");
    let next = now + Duration::minutes(1);
    store.append_client_events(booking, &batch(2, next), limits, next).await.unwrap();
    let over_total = store.append_client_events(booking, &batch(2, next), limits, next + Duration::minutes(1)).await;
    assert!(matches!(over_total, Err(StoreError::Conflict(_))), "{over_total:?}");
    store.append_client_events(booking, &batch(1, next), limits, next + Duration::minutes(2)).await.unwrap();
    assert_eq!(store.client_events(booking).await.unwrap().len(), 5);
}

pub async fn client_event_ids_are_unique(store: &dyn Store) {
    let booking = Uuid::new_v4();
    let now = minute();
    let e = event(booking, now, "connected", 1);
    store.append_client_events(booking, std::slice::from_ref(&e), ROOMY, now).await.unwrap();
    let again = ClientEvent { kind: "quality".into(), ..e.clone() };
    let r = store.append_client_events(booking, &[again], ROOMY, now).await;
    assert!(matches!(r, Err(StoreError::AlreadyExists)), "{r:?}");
    assert_eq!(store.client_events(booking).await.unwrap(), vec![e]);
}

pub async fn parallel_client_event_appends_never_pass_the_limit(store: &dyn Store) {
    let booking = Uuid::new_v4();
    let limits = ClientEventLimits { per_booking: 7, per_minute: 1000 };
    let now = minute();
    let tries: Vec<ClientEvent> = (0..20).map(|n| event(booking, now, "quality", n)).collect();
    let results =
        join_all(tries.iter().map(|e| store.append_client_events(booking, std::slice::from_ref(e), limits, now))).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    for r in &results {
        assert!(matches!(r, Ok(()) | Err(StoreError::Conflict(_)) | Err(StoreError::Unavailable { .. })), "{r:?}");
    }
    let stored = store.client_events(booking).await.unwrap();
    assert_eq!(stored.len(), won, "exactly the appends that succeeded are stored");
    assert!((1..=7).contains(&won), "{won} appends passed a limit of 7");
    // Whatever contention did, the limit is exactly the limit.
    for n in 0..10 {
        let _ = store.append_client_events(booking, &[event(booking, now, "quality", 100 + n)], limits, now).await;
    }
    assert_eq!(store.client_events(booking).await.unwrap().len(), 7);
}
