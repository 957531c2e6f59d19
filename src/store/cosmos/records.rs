//! Cosmos DB: session records, session room lookups and the webhook outbox. The
//! [`super::CosmosStore`] trait impl delegates here.
//!
//! | document | container, `pk` | id |
//! |---|---|---|
//! | session record | `rooms`, the booked room | `session-<booking id>` |
//! | outbox event and its delivery | `rooms`, the booked room | `wh-<event id>` |
//! | session room lookup | `ops`, its own id | `sroom-<janus room id>` |
//!
//! A booking's events and its session record live in its room's partition, next to the
//! booking: a booking write and its event are one transactional batch ([`outbox_doc`] is added
//! to the booking writes' batches), and so are a session record and the events it announces.
//! Finding due events is a fan-out query (the delivery timer, once a minute); a delivery's
//! lease is a compare-and-set on the event's own document.

use azure_data_cosmos::{FeedScope, Query, TransactionalBatch};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CosmosStore, Fail, if_match, if_match_batch, map_err, parse_ts, pk, query, read_doc, run_batch, ts};
use crate::domain::{RoomId, events::OutboxEvent, session::SessionRecord};
use crate::store::{Attempt, Delivery, DeliveryStatus, SessionRoom, StoreError, StoreResult, StoredRecord};

/// Attempts of a lease or outcome write that keeps losing to another writer of the same event.
const OUTBOX_ATTEMPTS: usize = 5;

/// A session record in its booking's room partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionDoc {
    id: String,
    pk: String,
    kind: String,
    booking_id: Uuid,
    version: u64,
    /// Names this write, so an unknown outcome can be read back.
    nonce: String,
    record: SessionRecord,
}

/// An outbox event and its delivery state, in its booking's room partition. Times are fixed-width
/// strings, so the due query compares them as text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OutboxDoc {
    id: String,
    pk: String,
    kind: String,
    event_id: String,
    at: String,
    status: DeliveryStatus,
    attempts: u32,
    enqueued_at: String,
    next_attempt_at: String,
    leased_until: Option<String>,
    last_error: Option<String>,
    delivered_at: Option<String>,
    event: OutboxEvent,
}

/// The lookup from a Janus session room to its booking, in `ops`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionRoomDoc {
    id: String,
    pk: String,
    kind: String,
    room: SessionRoom,
}

fn session_id(booking: Uuid) -> String {
    format!("session-{booking}")
}

fn outbox_id(event_id: &str) -> String {
    format!("wh-{event_id}")
}

fn session_room_id(janus_room: u64) -> String {
    format!("sroom-{janus_room}")
}

/// The outbox document of `event`, pending and due at `now`: what a booking write's batch creates.
pub(super) fn outbox_doc(event: &OutboxEvent, now: DateTime<Utc>) -> OutboxDoc {
    OutboxDoc {
        id: outbox_id(&event.id),
        pk: pk(event.room_id),
        kind: "outbox".into(),
        event_id: event.id.clone(),
        at: ts(event.at),
        status: DeliveryStatus::Pending,
        attempts: 0,
        enqueued_at: ts(now),
        next_attempt_at: ts(now),
        leased_until: None,
        last_error: None,
        delivered_at: None,
        event: event.clone(),
    }
}

/// Adds the creation of `events`' outbox documents to `batch`.
pub(super) fn with_outbox(
    mut batch: TransactionalBatch,
    events: &[OutboxEvent],
    now: DateTime<Utc>,
) -> StoreResult<TransactionalBatch> {
    for e in events {
        batch = batch.create_item(outbox_doc(e, now)).map_err(map_err)?;
    }
    Ok(batch)
}

impl OutboxDoc {
    pub(super) fn to_delivery(&self) -> StoreResult<Delivery> {
        Ok(Delivery {
            event: self.event.clone(),
            status: self.status,
            attempts: self.attempts,
            enqueued_at: parse_ts(&self.enqueued_at)?,
            next_attempt_at: parse_ts(&self.next_attempt_at)?,
            leased_until: self.leased_until.as_deref().map(parse_ts).transpose()?,
            last_error: self.last_error.clone(),
            delivered_at: self.delivered_at.as_deref().map(parse_ts).transpose()?,
        })
    }

    fn leased_at(&self, now: &str) -> bool {
        self.leased_until.as_deref().is_some_and(|l| l > now)
    }
}

fn sorted(mut docs: Vec<OutboxDoc>, newest_first: bool) -> Vec<OutboxDoc> {
    if newest_first {
        docs.sort_by(|a, b| b.at.cmp(&a.at).then(a.event_id.cmp(&b.event_id)));
    } else {
        docs.sort_by(|a, b| a.next_attempt_at.cmp(&b.next_attempt_at).then(a.event_id.cmp(&b.event_id)));
    }
    docs
}

impl CosmosStore {
    pub(super) async fn put_session_room_impl(&self, room: &SessionRoom) -> StoreResult<()> {
        let id = session_room_id(room.janus_room);
        let doc = SessionRoomDoc { id: id.clone(), pk: id.clone(), kind: "session-room".into(), room: room.clone() };
        self.ops.upsert_item(id.clone(), &id, &doc, None).await.map(|_| ()).map_err(map_err)
    }

    pub(super) async fn session_room_impl(&self, janus_room: u64) -> StoreResult<Option<SessionRoom>> {
        let id = session_room_id(janus_room);
        Ok(read_doc::<SessionRoomDoc>(&self.ops, id.clone(), &id).await?.map(|(d, _)| d.room))
    }

    pub(super) async fn session_record_impl(&self, room: RoomId, booking: Uuid) -> StoreResult<Option<StoredRecord>> {
        Ok(read_doc::<SessionDoc>(&self.rooms, pk(room), &session_id(booking))
            .await?
            .map(|(d, _)| StoredRecord { record: d.record, version: d.version }))
    }

    pub(super) async fn session_records_impl(&self, bookings: &[Uuid]) -> StoreResult<Vec<StoredRecord>> {
        if bookings.is_empty() {
            return Ok(vec![]);
        }
        let ids: Vec<String> = bookings.iter().map(|b| b.to_string()).collect();
        let q = Query::from("SELECT * FROM c WHERE c.kind = 'session' AND ARRAY_CONTAINS(@ids, c.bookingId)")
            .with_parameter("@ids", ids)
            .map_err(map_err)?;
        let docs: Vec<SessionDoc> = query(&self.rooms, q, FeedScope::full_container()).await?;
        Ok(docs.into_iter().map(|d| StoredRecord { record: d.record, version: d.version }).collect())
    }

    pub(super) async fn put_session_record_impl(
        &self,
        record: &SessionRecord,
        expected: Option<u64>,
        outbox: &[OutboxEvent],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let room = record.room_id;
        let id = session_id(record.booking_id);
        let current = read_doc::<SessionDoc>(&self.rooms, pk(room), &id).await?;
        let (next, batch) = match (&current, expected) {
            (None, None) => {
                let doc = self.session_doc(record, 1);
                (doc.clone(), TransactionalBatch::new(pk(room)).create_item(doc).map_err(map_err)?)
            }
            (Some((d, etag)), Some(e)) if d.version == e => {
                let doc = self.session_doc(record, e + 1);
                let batch = TransactionalBatch::new(pk(room))
                    .replace_item(id.clone(), doc.clone(), Some(if_match_batch(etag)))
                    .map_err(map_err)?;
                (doc, batch)
            }
            _ => return Err(StoreError::PreconditionFailed),
        };
        let batch = with_outbox(batch, outbox, now)?;
        match run_batch(&self.rooms, batch).await {
            Ok(()) => Ok(next.version),
            Err(fail) => {
                // Our write may have committed with its answer lost: the nonce says.
                let stored = read_doc::<SessionDoc>(&self.rooms, pk(room), &id).await?;
                if let Some((found, _)) = &stored {
                    if found.nonce == next.nonce {
                        return Ok(found.version);
                    }
                }
                match fail.status {
                    // Another writer created the record first.
                    409 if current.is_none() && stored.is_some() => Err(StoreError::PreconditionFailed),
                    409 => Err(StoreError::AlreadyExists),
                    412 | 404 => Err(StoreError::PreconditionFailed),
                    _ => Err(fail.error),
                }
            }
        }
    }

    fn session_doc(&self, record: &SessionRecord, version: u64) -> SessionDoc {
        SessionDoc {
            id: session_id(record.booking_id),
            pk: pk(record.room_id),
            kind: "session".into(),
            booking_id: record.booking_id,
            version,
            nonce: Uuid::new_v4().to_string(),
            record: record.clone(),
        }
    }

    async fn outbox_query(&self, text: &str, params: Vec<(&str, String)>) -> StoreResult<Vec<OutboxDoc>> {
        let mut q = Query::from(text.to_string());
        for (name, value) in params {
            q = q.with_parameter(name, value).map_err(map_err)?;
        }
        query(&self.rooms, q, FeedScope::full_container()).await
    }

    pub(super) async fn due_deliveries_impl(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Delivery>> {
        let now_s = ts(now);
        let docs = self
            .outbox_query(
                "SELECT * FROM c WHERE c.kind = 'outbox' AND c.status = 'pending' AND c.nextAttemptAt <= @now",
                vec![("@now", now_s.clone())],
            )
            .await?;
        sorted(docs, false).iter().filter(|d| !d.leased_at(&now_s)).take(limit).map(OutboxDoc::to_delivery).collect()
    }

    pub(super) async fn claim_delivery_impl(
        &self,
        room: RoomId,
        id: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<Delivery>> {
        let now_s = ts(now);
        let Some((doc, etag)) = read_doc::<OutboxDoc>(&self.rooms, pk(room), &outbox_id(id)).await? else {
            return Err(StoreError::NotFound);
        };
        if doc.status != DeliveryStatus::Pending || doc.next_attempt_at > now_s || doc.leased_at(&now_s) {
            return Ok(None);
        }
        let leased = OutboxDoc { leased_until: Some(ts(until)), ..doc };
        match self.rooms.replace_item(pk(room), &leased.id, &leased, Some(if_match(&etag))).await {
            Ok(_) => Ok(Some(leased.to_delivery()?)),
            Err(e) => {
                let fail = Fail::from(e);
                match fail.status {
                    // Another caller took it first.
                    412 => Ok(None),
                    404 => Err(StoreError::NotFound),
                    _ => Err(fail.error),
                }
            }
        }
    }

    pub(super) async fn finish_delivery_impl(
        &self,
        room: RoomId,
        id: &str,
        attempt: &Attempt,
    ) -> StoreResult<Delivery> {
        for _ in 0..OUTBOX_ATTEMPTS {
            let Some((doc, etag)) = read_doc::<OutboxDoc>(&self.rooms, pk(room), &outbox_id(id)).await? else {
                return Err(StoreError::NotFound);
            };
            if doc.status == DeliveryStatus::Delivered {
                return doc.to_delivery();
            }
            let mut next = OutboxDoc { attempts: doc.attempts + 1, leased_until: None, ..doc };
            match attempt {
                Attempt::Delivered { at } => {
                    next.status = DeliveryStatus::Delivered;
                    next.delivered_at = Some(ts(*at));
                }
                Attempt::Retry { next_at, error, .. } => {
                    next.status = DeliveryStatus::Pending;
                    next.next_attempt_at = ts(*next_at);
                    next.last_error = Some(error.clone());
                }
                Attempt::Failed { error, .. } => {
                    next.status = DeliveryStatus::Failed;
                    next.last_error = Some(error.clone());
                }
            }
            match self.rooms.replace_item(pk(room), &next.id, &next, Some(if_match(&etag))).await {
                Ok(_) => return next.to_delivery(),
                Err(e) => {
                    let fail = Fail::from(e);
                    match fail.status {
                        412 => continue,
                        404 => return Err(StoreError::NotFound),
                        _ => return Err(fail.error),
                    }
                }
            }
        }
        Err(StoreError::Unavailable { message: format!("outbox event {id} kept changing"), retry_after: None })
    }

    pub(super) async fn deliveries_impl(
        &self,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let docs = match status {
            Some(s) => {
                self.outbox_query(
                    "SELECT * FROM c WHERE c.kind = 'outbox' AND c.status = @status",
                    vec![("@status", s.as_str().to_string())],
                )
                .await?
            }
            None => self.outbox_query("SELECT * FROM c WHERE c.kind = 'outbox'", vec![]).await?,
        };
        sorted(docs, true).iter().take(limit).map(OutboxDoc::to_delivery).collect()
    }

    pub(super) async fn redeliver_impl(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Delivery> {
        for _ in 0..OUTBOX_ATTEMPTS {
            let found = self
                .outbox_query("SELECT * FROM c WHERE c.kind = 'outbox' AND c.id = @id", vec![("@id", outbox_id(id))])
                .await?;
            let Some(doc) = found.into_iter().next() else { return Err(StoreError::NotFound) };
            let room = RoomId::new(doc.event.room_id.get()).map_err(|e| StoreError::Internal(e.0))?;
            let Some((doc, etag)) = read_doc::<OutboxDoc>(&self.rooms, pk(room), &doc.id).await? else {
                return Err(StoreError::NotFound);
            };
            let next = OutboxDoc {
                status: DeliveryStatus::Pending,
                next_attempt_at: ts(now),
                enqueued_at: ts(now),
                leased_until: None,
                delivered_at: None,
                ..doc
            };
            match self.rooms.replace_item(pk(room), &next.id, &next, Some(if_match(&etag))).await {
                Ok(_) => return next.to_delivery(),
                Err(e) => {
                    let fail = Fail::from(e);
                    if fail.status != 412 {
                        return Err(fail.error);
                    }
                }
            }
        }
        Err(StoreError::Unavailable { message: format!("outbox event {id} kept changing"), retry_after: None })
    }

    pub(super) async fn purge_deliveries_impl(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let docs = self
            .outbox_query(
                "SELECT * FROM c WHERE c.kind = 'outbox' AND c.status = 'delivered' AND c.deliveredAt < @before",
                vec![("@before", ts(before))],
            )
            .await?;
        let mut n = 0;
        for d in docs {
            match self.rooms.delete_item(d.pk.clone(), &d.id, None).await {
                Ok(_) => n += 1,
                Err(e) if e.status().is_not_found() => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        Ok(n)
    }
}
