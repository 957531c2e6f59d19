//! SQLite: session records, session room lookups and the webhook outbox (tables
//! `session_rooms`, `session_records`, `outbox`, migration 4). The [`super::SqliteStore`]
//! trait impl delegates here; [`insert_outbox`] runs inside the booking writes' own
//! transactions, so an event and its cause commit together.

use chrono::{DateTime, Utc};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

use super::{SqliteStore, corrupt, instant, ns, room_key};
use crate::domain::{RoomId, events::OutboxEvent, session::SessionRecord};
use crate::store::{Attempt, Delivery, DeliveryStatus, SessionRoom, StoreError, StoreResult, StoredRecord};

/// The schema of this part (appended to the store's migrations).
pub(super) const MIGRATION: &str = r#"
-- Which booking a Janus session room belongs to (written before the room is created).
CREATE TABLE session_rooms (
    janus_room INTEGER PRIMARY KEY,
    booking_id TEXT    NOT NULL,
    room_id    INTEGER NOT NULL,
    generation INTEGER NOT NULL
);
-- A booking's session record (observations and announced facts, JSON) with its version.
CREATE TABLE session_records (
    booking_id TEXT    PRIMARY KEY,
    room_id    INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    record     TEXT    NOT NULL
) WITHOUT ROWID;
-- Webhook events and their delivery; written in the transaction of the change they report.
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    event           TEXT    NOT NULL,
    at              INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    enqueued_at     INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    leased_until    INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_status ON outbox (status, at);
"#;

/// Puts `events` in the outbox, pending and due at `now`, inside the caller's transaction.
/// An id already there fails the whole write with `AlreadyExists`.
pub(super) fn insert_outbox(tx: &Connection, events: &[OutboxEvent], now: DateTime<Utc>) -> StoreResult<()> {
    let now = ns(now)?;
    let mut st = tx.prepare_cached(
        "INSERT INTO outbox (id, event, at, status, attempts, enqueued_at, next_attempt_at)
         VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4)",
    )?;
    for e in events {
        let json = serde_json::to_string(e).map_err(|e| StoreError::Internal(e.to_string()))?;
        st.execute(params![e.id, json, ns(e.at)?, now])?;
    }
    Ok(())
}

const DELIVERY_COLUMNS: &str =
    "event, status, attempts, enqueued_at, next_attempt_at, leased_until, last_error, delivered_at";

fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    let event: String = r.get(0)?;
    let status: String = r.get(1)?;
    let attempts: i64 = r.get(2)?;
    Ok(Delivery {
        event: serde_json::from_str(&event).map_err(|e| corrupt(0, Type::Text, e))?,
        status: status.parse().map_err(|e: String| corrupt(1, Type::Text, std::io::Error::other(e)))?,
        attempts: u32::try_from(attempts).map_err(|e| corrupt(2, Type::Integer, e))?,
        enqueued_at: instant(r.get(3)?),
        next_attempt_at: instant(r.get(4)?),
        leased_until: r.get::<_, Option<i64>>(5)?.map(instant),
        last_error: r.get(6)?,
        delivered_at: r.get::<_, Option<i64>>(7)?.map(instant),
    })
}

fn load_delivery(tx: &Connection, id: &str) -> StoreResult<Option<Delivery>> {
    let mut st = tx.prepare_cached(&format!("SELECT {DELIVERY_COLUMNS} FROM outbox WHERE id = ?1"))?;
    Ok(st.query_row([id], delivery_from_row).optional()?)
}

fn record_from_row(r: &Row<'_>) -> rusqlite::Result<StoredRecord> {
    let text: String = r.get(0)?;
    let version: i64 = r.get(1)?;
    Ok(StoredRecord {
        record: serde_json::from_str::<SessionRecord>(&text).map_err(|e| corrupt(0, Type::Text, e))?,
        version: version as u64,
    })
}

impl SqliteStore {
    pub(super) async fn put_session_room_impl(&self, room: &SessionRoom) -> StoreResult<()> {
        let r = room.clone();
        let janus = i64::try_from(r.janus_room).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO session_rooms (janus_room, booking_id, room_id, generation) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (janus_room) DO UPDATE SET booking_id = excluded.booking_id,
                   room_id = excluded.room_id, generation = excluded.generation",
            )?
            .execute(params![janus, r.booking_id.to_string(), room_key(r.room_id), r.generation])?;
            Ok(())
        })
        .await
    }

    pub(super) async fn session_room_impl(&self, janus_room: u64) -> StoreResult<Option<SessionRoom>> {
        let Ok(janus) = i64::try_from(janus_room) else { return Ok(None) };
        self.read(move |tx| {
            let row = tx
                .prepare_cached("SELECT booking_id, room_id, generation FROM session_rooms WHERE janus_room = ?1")?
                .query_row([janus], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
                .optional()?;
            row.map(|(b, room, generation)| {
                Ok(SessionRoom {
                    janus_room,
                    booking_id: Uuid::parse_str(&b).map_err(|e| StoreError::Internal(e.to_string()))?,
                    room_id: RoomId::new(room as u64).map_err(|e| StoreError::Internal(e.0))?,
                    generation: u32::try_from(generation).map_err(|e| StoreError::Internal(e.to_string()))?,
                })
            })
            .transpose()
        })
        .await
    }

    pub(super) async fn session_record_impl(&self, booking: Uuid) -> StoreResult<Option<StoredRecord>> {
        self.read(move |tx| {
            Ok(tx
                .prepare_cached("SELECT record, version FROM session_records WHERE booking_id = ?1")?
                .query_row([booking.to_string()], record_from_row)
                .optional()?)
        })
        .await
    }

    pub(super) async fn session_records_impl(&self, bookings: &[Uuid]) -> StoreResult<Vec<StoredRecord>> {
        let ids = bookings.to_vec();
        self.read(move |tx| {
            let mut st = tx.prepare_cached("SELECT record, version FROM session_records WHERE booking_id = ?1")?;
            let mut out = Vec::new();
            for id in ids {
                if let Some(r) = st.query_row([id.to_string()], record_from_row).optional()? {
                    out.push(r);
                }
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn put_session_record_impl(
        &self,
        record: &SessionRecord,
        expected: Option<u64>,
        outbox: &[OutboxEvent],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let record = record.clone();
        let outbox = outbox.to_vec();
        let text = serde_json::to_string(&record).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.write(move |tx| {
            let id = record.booking_id.to_string();
            let current: Option<i64> = tx
                .prepare_cached("SELECT version FROM session_records WHERE booking_id = ?1")?
                .query_row([&id], |r| r.get(0))
                .optional()?;
            let next = match (current, expected) {
                (None, None) => {
                    tx.prepare_cached(
                        "INSERT INTO session_records (booking_id, room_id, version, record) VALUES (?1, ?2, 1, ?3)",
                    )?
                    .execute(params![id, room_key(record.room_id), text])?;
                    1
                }
                (Some(v), Some(e)) if v as u64 == e => {
                    tx.prepare_cached("UPDATE session_records SET version = ?2, record = ?3 WHERE booking_id = ?1")?
                        .execute(params![id, v + 1, text])?;
                    (v + 1) as u64
                }
                _ => return Err(StoreError::PreconditionFailed),
            };
            insert_outbox(tx, &outbox, now)?;
            Ok(next)
        })
        .await
    }

    pub(super) async fn due_deliveries_impl(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Delivery>> {
        let now = ns(now)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |tx| {
            let mut st = tx.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM outbox
                 WHERE status = 'pending' AND next_attempt_at <= ?1 AND (leased_until IS NULL OR leased_until <= ?1)
                 ORDER BY next_attempt_at, seq LIMIT ?2"
            ))?;
            super::collect(st.query_map(params![now, limit], delivery_from_row)?)
        })
        .await
    }

    pub(super) async fn claim_delivery_impl(
        &self,
        id: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<Delivery>> {
        let (id, now, until) = (id.to_owned(), ns(now)?, ns(until)?);
        self.write(move |tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE outbox SET leased_until = ?3
                     WHERE id = ?1 AND status = 'pending' AND next_attempt_at <= ?2
                       AND (leased_until IS NULL OR leased_until <= ?2)",
                )?
                .execute(params![id, now, until])?;
            match load_delivery(tx, &id)? {
                None => Err(StoreError::NotFound),
                Some(d) if n == 1 => Ok(Some(d)),
                Some(_) => Ok(None),
            }
        })
        .await
    }

    pub(super) async fn finish_delivery_impl(&self, id: &str, attempt: &Attempt) -> StoreResult<Delivery> {
        let id = id.to_owned();
        let (status, next, error, delivered) = match attempt {
            Attempt::Delivered { at } => (DeliveryStatus::Delivered, None, None, Some(ns(*at)?)),
            Attempt::Retry { next_at, error, .. } => {
                (DeliveryStatus::Pending, Some(ns(*next_at)?), Some(error.clone()), None)
            }
            Attempt::Failed { error, .. } => (DeliveryStatus::Failed, None, Some(error.clone()), None),
        };
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE outbox SET status = ?2, attempts = attempts + 1, leased_until = NULL,
                       next_attempt_at = COALESCE(?3, next_attempt_at), last_error = COALESCE(?4, last_error),
                       delivered_at = COALESCE(?5, delivered_at)
                     WHERE id = ?1 AND status != 'delivered'",
            )?
            .execute(params![id, status.as_str(), next, error, delivered])?;
            load_delivery(tx, &id)?.ok_or(StoreError::NotFound)
        })
        .await
    }

    pub(super) async fn deliveries_impl(
        &self,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |tx| match status {
            Some(s) => {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM outbox WHERE status = ?1 ORDER BY at DESC, id LIMIT ?2"
                ))?;
                super::collect(st.query_map(params![s.as_str(), limit], delivery_from_row)?)
            }
            None => {
                let mut st =
                    tx.prepare_cached(&format!("SELECT {DELIVERY_COLUMNS} FROM outbox ORDER BY at DESC, id LIMIT ?1"))?;
                super::collect(st.query_map(params![limit], delivery_from_row)?)
            }
        })
        .await
    }

    pub(super) async fn redeliver_impl(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Delivery> {
        let (id, now) = (id.to_owned(), ns(now)?);
        self.write(move |tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE outbox SET status = 'pending', next_attempt_at = ?2, enqueued_at = ?2,
                       leased_until = NULL, delivered_at = NULL
                     WHERE id = ?1",
                )?
                .execute(params![id, now])?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            load_delivery(tx, &id)?.ok_or(StoreError::NotFound)
        })
        .await
    }

    pub(super) async fn purge_deliveries_impl(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let before = ns(before)?;
        self.write(move |tx| {
            let n = tx
                .prepare_cached("DELETE FROM outbox WHERE status = 'delivered' AND delivered_at < ?1")?
                .execute([before])?;
            Ok(n as u64)
        })
        .await
    }
}
