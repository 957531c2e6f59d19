//! Client events on Cosmos DB: one partition of the `ops` container per booking
//! (`pk = cevents-<booking id>`), holding a `quota` document (the booking's event count and the
//! current minute's) and the events. An append is ONE transactional batch in that partition:
//! {create or replace the quota document with `If-Match` = the etag read before the check, create
//! every event}. Another append in between changes the etag, the batch fails with 412 and is
//! tried again from the read, so no two instances can pass the limits together.

use azure_data_cosmos::{Query, TransactionalBatch};
use chrono::{DateTime, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::CosmosStore;
use super::sdk::{Fresh, In, backoff, busy, map_err, parse_ts, replace_if, ts};
use crate::store::{ClientEvent, ClientEventLimits, MAX_CLIENT_EVENTS_PER_APPEND, StoreError, StoreResult};

const QUOTA_ID: &str = "quota";

fn events_pk(booking: Uuid) -> String {
    format!("cevents-{booking}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QuotaDoc {
    id: String,
    pk: String,
    kind: String,
    total: u64,
    /// The UTC minute `in_minute` counts, as a timestamp.
    minute: String,
    in_minute: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventDoc {
    id: String,
    pk: String,
    kind: String,
    /// The position within the booking's events (the quota's total before it, plus one).
    seq: u64,
    booking_id: String,
    received_at: String,
    at: String,
    role: String,
    event: String,
    data: serde_json::Value,
}

impl EventDoc {
    fn to_event(&self) -> StoreResult<ClientEvent> {
        let uuid = |s: &str| Uuid::parse_str(s).map_err(|e| StoreError::Internal(format!("stored id {s:?}: {e}")));
        Ok(ClientEvent {
            id: uuid(&self.id)?,
            booking_id: uuid(&self.booking_id)?,
            received_at: parse_ts(&self.received_at)?,
            at: parse_ts(&self.at)?,
            role: self.role.clone(),
            kind: self.event.clone(),
            data: self.data.clone(),
        })
    }
}

/// See [`crate::store::Store::append_client_events`].
pub(super) async fn append(
    store: &CosmosStore,
    booking_id: Uuid,
    events: &[ClientEvent],
    limits: ClientEventLimits,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    if events.len() > MAX_CLIENT_EVENTS_PER_APPEND || events.iter().any(|e| e.booking_id != booking_id) {
        return Err(StoreError::Internal("client events: too many, or of another booking".into()));
    }
    let pk = events_pk(booking_id);
    let minute = ts(now.duration_trunc(chrono::Duration::minutes(1)).unwrap_or(now));
    let n = events.len() as u64;
    for attempt in 0..store.tuning.contention_attempts {
        let current = store.c.read::<QuotaDoc>(In::Ops, &pk, QUOTA_ID, Fresh::Session).await?;
        let (total, in_minute, etag) = match &current {
            Some((q, etag)) => (q.total, if q.minute == minute { q.in_minute } else { 0 }, Some(etag.clone())),
            None => (0, 0, None),
        };
        if total + n > u64::from(limits.per_booking) {
            return Err(StoreError::Conflict(format!(
                "the session keeps at most {} client events",
                limits.per_booking
            )));
        }
        if in_minute + n > u64::from(limits.per_minute) {
            return Err(StoreError::Conflict(format!("at most {} client events a minute", limits.per_minute)));
        }
        let quota = QuotaDoc {
            id: QUOTA_ID.into(),
            pk: pk.clone(),
            kind: "client-events-quota".into(),
            total: total + n,
            minute: minute.clone(),
            in_minute: in_minute + n,
        };
        let mut batch = TransactionalBatch::new(pk.clone());
        batch = match &etag {
            Some(etag) => batch.replace_item(QUOTA_ID, &quota, replace_if(etag)).map_err(map_err)?,
            None => batch.create_item(&quota).map_err(map_err)?,
        };
        for (i, e) in events.iter().enumerate() {
            let doc = EventDoc {
                id: e.id.to_string(),
                pk: pk.clone(),
                kind: "client-event".into(),
                seq: total + i as u64 + 1,
                booking_id: booking_id.to_string(),
                received_at: ts(e.received_at),
                at: ts(e.at),
                role: e.role.clone(),
                event: e.kind.clone(),
                data: e.data.clone(),
            };
            batch = batch.create_item(&doc).map_err(map_err)?;
        }
        match store.c.batch(In::Ops, batch).await {
            Ok(_) => return Ok(()),
            Err(failed) => {
                let fail = failed.fail;
                // A lost answer to a batch that committed: the first event is there, with our data.
                if (fail.unknown_outcome() || fail.status == 409)
                    && let Some((found, _)) =
                        store.c.read::<EventDoc>(In::Ops, &pk, &events[0].id.to_string(), Fresh::Session).await?
                {
                    return if found.to_event()? == events[0] { Ok(()) } else { Err(StoreError::AlreadyExists) };
                }
                match fail.status {
                    // Another append changed the quota (412), or created it first (409): read again.
                    412 | 409 => backoff(attempt).await,
                    _ => return Err(fail.error),
                }
            }
        }
    }
    Err(busy(format!("client events of booking {booking_id} kept changing")))
}

/// See [`crate::store::Store::client_events`].
pub(super) async fn list(store: &CosmosStore, booking_id: Uuid) -> StoreResult<Vec<ClientEvent>> {
    let q = Query::from("SELECT * FROM c WHERE c.kind = 'client-event'");
    let mut docs: Vec<EventDoc> = store.c.query(In::Ops, q, Some(&events_pk(booking_id)), Fresh::Session).await?;
    docs.sort_by_key(|d| d.seq);
    docs.iter().map(EventDoc::to_event).collect()
}
