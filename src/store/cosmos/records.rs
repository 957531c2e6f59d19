//! Cosmos DB: session records, session room lookups and the webhook outbox. The
//! [`super::CosmosStore`] trait impl delegates here.
//!
//! | document | container, `pk` | id |
//! |---|---|---|
//! | session record ([`SessionDoc`]) | `rooms`, the booking's home day (`day-YYYY-MM-DD`) | `session-<booking id>` |
//! | outbox event and its delivery ([`OutboxDoc`]) | `rooms`, the booking's home day | `wh-<event id>` |
//! | session room lookup | `ops`, its own id | `sroom-<janus room id>` |
//!
//! A booking's events and its session record live in its home partition, next to the day
//! document that holds the booking (the booking id names it, see [`super::documents::locate`]):
//! a booking write and its event are one transactional batch ([`outbox_doc`] is added to the
//! booking writes' batches), and so are a session record and the events it announces. Reading,
//! leasing and finishing one event, and reading one record, are point reads and writes whatever
//! the size; finding due events is a fan-out query (the delivery timer, once a minute), and so are
//! the operator's listing, redelivery by id and the purge.

use std::collections::HashMap;

use azure_data_cosmos::{Query, TransactionalBatch};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::CosmosStore;
use super::documents::day_pk;
use super::sdk::{Fresh, In, busy, map_err, parse_ts, replace_if, ts};
use crate::domain::{RoomId, events::OutboxEvent, session::SessionRecord};
use crate::store::{Attempt, Delivery, DeliveryStatus, SessionRoom, StoreError, StoreResult, StoredRecord};

/// Attempts of a lease or outcome write that keeps losing to another writer of the same event.
const OUTBOX_ATTEMPTS: u32 = 5;

/// A session record in its booking's home partition.
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

/// An outbox event and its delivery state, in its booking's home partition. Times are
/// fixed-width strings, so the due query compares them as text.
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

pub(super) fn outbox_id(event_id: &str) -> String {
    format!("wh-{event_id}")
}

fn session_room_id(janus_room: u64) -> String {
    format!("sroom-{janus_room}")
}

/// The outbox document of `event` in partition `pk` (its booking's home day), pending and due at
/// `now`: what a booking write's batch creates.
pub(super) fn outbox_doc(event: &OutboxEvent, pk: String, now: DateTime<Utc>) -> OutboxDoc {
    OutboxDoc {
        id: outbox_id(&event.id),
        pk,
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
    /// The partition a booking's records and events live in; `NotFound` for an id that names no
    /// home (not minted by this layout and without a migration lookup).
    async fn home_pk(&self, booking: Uuid) -> StoreResult<String> {
        let (_, day): (RoomId, NaiveDate) = self.home_of(booking).await?.ok_or(StoreError::NotFound)?;
        Ok(day_pk(day))
    }

    pub(super) async fn put_session_room_impl(&self, room: &SessionRoom) -> StoreResult<()> {
        let id = session_room_id(room.janus_room);
        let doc = SessionRoomDoc { id: id.clone(), pk: id.clone(), kind: "session-room".into(), room: room.clone() };
        self.c.upsert(In::Ops, &id, &id, &doc).await
    }

    pub(super) async fn session_room_impl(&self, janus_room: u64) -> StoreResult<Option<SessionRoom>> {
        let id = session_room_id(janus_room);
        Ok(self.c.read::<SessionRoomDoc>(In::Ops, &id, &id, Fresh::Session).await?.map(|(d, _)| d.room))
    }

    pub(super) async fn session_record_impl(&self, booking: Uuid) -> StoreResult<Option<StoredRecord>> {
        let pk = match self.home_pk(booking).await {
            Ok(pk) => pk,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(self
            .c
            .read::<SessionDoc>(In::Rooms, &pk, &session_id(booking), Fresh::Session)
            .await?
            .map(|(d, _)| StoredRecord { record: d.record, version: d.version }))
    }

    /// One query per home day of the bookings (in chunks of 100 ids), never a fan-out.
    pub(super) async fn session_records_impl(&self, bookings: &[Uuid]) -> StoreResult<Vec<StoredRecord>> {
        let mut by_pk: HashMap<String, Vec<String>> = HashMap::new();
        for b in bookings {
            match self.home_pk(*b).await {
                Ok(pk) => by_pk.entry(pk).or_default().push(b.to_string()),
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        let mut out = vec![];
        for (pk, ids) in by_pk {
            for chunk in ids.chunks(100) {
                let q = Query::from("SELECT * FROM c WHERE c.kind = 'session' AND ARRAY_CONTAINS(@ids, c.bookingId)")
                    .with_parameter("@ids", chunk.to_vec())
                    .map_err(map_err)?;
                let docs: Vec<SessionDoc> = self.c.query(In::Rooms, q, Some(&pk), Fresh::Session).await?;
                out.extend(docs.into_iter().map(|d| StoredRecord { record: d.record, version: d.version }));
            }
        }
        Ok(out)
    }

    pub(super) async fn put_session_record_impl(
        &self,
        record: &SessionRecord,
        expected: Option<u64>,
        outbox: &[OutboxEvent],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let pk = self.home_pk(record.booking_id).await?;
        let id = session_id(record.booking_id);
        let current = self.c.read::<SessionDoc>(In::Rooms, &pk, &id, Fresh::Session).await?;
        let next = SessionDoc {
            id: id.clone(),
            pk: pk.clone(),
            kind: "session".into(),
            booking_id: record.booking_id,
            version: expected.map_or(1, |e| e + 1),
            nonce: Uuid::new_v4().to_string(),
            record: record.clone(),
        };
        let batch = TransactionalBatch::new(pk.clone());
        let mut batch = match (&current, expected) {
            (None, None) => batch.create_item(&next).map_err(map_err)?,
            (Some((d, etag)), Some(e)) if d.version == e => {
                batch.replace_item(id.clone(), &next, replace_if(etag)).map_err(map_err)?
            }
            _ => return Err(StoreError::PreconditionFailed),
        };
        for e in outbox {
            batch = batch.create_item(outbox_doc(e, pk.clone(), now)).map_err(map_err)?;
        }
        match self.c.batch(In::Rooms, batch).await {
            Ok(_) => Ok(next.version),
            Err(fail) => {
                // Our write may have committed with its answer lost: the nonce says.
                let stored = self.c.read::<SessionDoc>(In::Rooms, &pk, &id, Fresh::Session).await?;
                if let Some((found, _)) = &stored
                    && found.nonce == next.nonce
                {
                    return Ok(found.version);
                }
                match (fail.op, fail.fail.status) {
                    // Another writer created or changed the record first.
                    (Some(0), 409 | 412 | 404) => Err(StoreError::PreconditionFailed),
                    // An event of this write is in the outbox already.
                    (Some(_), 409) => Err(StoreError::AlreadyExists),
                    _ => Err(fail.fail.error),
                }
            }
        }
    }

    async fn outbox_query(&self, text: &str, params: Vec<(&str, String)>) -> StoreResult<Vec<OutboxDoc>> {
        let mut q = Query::from(text.to_string());
        for (name, value) in params {
            q = q.with_parameter(name, value).map_err(map_err)?;
        }
        self.c.query(In::Rooms, q, None, Fresh::Session).await
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

    /// Event `id` of `booking` and its etag, `NotFound` when missing.
    async fn outbox_entry(&self, booking: Uuid, id: &str) -> StoreResult<(OutboxDoc, String)> {
        let pk = self.home_pk(booking).await?;
        self.c.read::<OutboxDoc>(In::Rooms, &pk, &outbox_id(id), Fresh::Session).await?.ok_or(StoreError::NotFound)
    }

    pub(super) async fn claim_delivery_impl(
        &self,
        booking: Uuid,
        id: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<Delivery>> {
        let now_s = ts(now);
        let (doc, etag) = self.outbox_entry(booking, id).await?;
        if doc.status != DeliveryStatus::Pending || doc.next_attempt_at > now_s || doc.leased_at(&now_s) {
            return Ok(None);
        }
        let leased = OutboxDoc { leased_until: Some(ts(until)), ..doc };
        match self.c.replace(In::Rooms, &leased.pk, &leased.id, &leased, &etag).await {
            Ok(_) => Ok(Some(leased.to_delivery()?)),
            // Another caller took it first.
            Err(f) if f.status == 412 => Ok(None),
            Err(f) if f.status == 404 => Err(StoreError::NotFound),
            Err(f) => Err(f.error),
        }
    }

    pub(super) async fn finish_delivery_impl(
        &self,
        booking: Uuid,
        id: &str,
        attempt: &Attempt,
    ) -> StoreResult<Delivery> {
        for _ in 0..OUTBOX_ATTEMPTS {
            let (doc, etag) = self.outbox_entry(booking, id).await?;
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
            match self.c.replace(In::Rooms, &next.pk, &next.id, &next, &etag).await {
                Ok(_) => return next.to_delivery(),
                Err(f) if f.status == 412 => continue,
                Err(f) if f.status == 404 => return Err(StoreError::NotFound),
                Err(f) => return Err(f.error),
            }
        }
        Err(busy(format!("outbox event {id} kept changing")))
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
            let Some((doc, etag)) = self.c.read::<OutboxDoc>(In::Rooms, &doc.pk, &doc.id, Fresh::Session).await? else {
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
            match self.c.replace(In::Rooms, &next.pk, &next.id, &next, &etag).await {
                Ok(_) => return next.to_delivery(),
                Err(f) if f.status == 412 => {}
                Err(f) => return Err(f.error),
            }
        }
        Err(busy(format!("outbox event {id} kept changing")))
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
            self.c.delete(In::Rooms, &d.pk, &d.id).await?;
            n += 1;
        }
        Ok(n)
    }
}
