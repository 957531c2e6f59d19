//! Client events on SQLite (table `client_events`): the limit check and the inserts run in one
//! write transaction on the writer thread, so concurrent appends can never pass a limit.

use chrono::{DateTime, DurationRound, Utc};
use rusqlite::{Connection, Row, params};
use uuid::Uuid;

use super::{SqliteStore, collect, instant, ns};
use crate::store::{ClientEvent, ClientEventLimits, MAX_CLIENT_EVENTS_PER_APPEND, StoreError, StoreResult};

/// The table, applied as one schema migration.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE client_events (
    seq         INTEGER PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    booking_id  TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    role        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    data        TEXT    NOT NULL
);
CREATE INDEX client_events_booking ON client_events (booking_id, received_at);
"#;

fn count(tx: &Connection, booking: &str, since: Option<i64>) -> StoreResult<u64> {
    let n: i64 = match since {
        None => tx
            .prepare_cached("SELECT COUNT(*) FROM client_events WHERE booking_id = ?1")?
            .query_row([booking], |r| r.get(0))?,
        Some(t) => tx
            .prepare_cached("SELECT COUNT(*) FROM client_events WHERE booking_id = ?1 AND received_at >= ?2")?
            .query_row(params![booking, t], |r| r.get(0))?,
    };
    Ok(n as u64)
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<ClientEvent> {
    let text = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    let uuid = |i: usize| -> rusqlite::Result<Uuid> {
        Uuid::parse_str(&text(i)?)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
    };
    let data: String = r.get(6)?;
    Ok(ClientEvent {
        id: uuid(0)?,
        booking_id: uuid(1)?,
        received_at: instant(r.get(2)?),
        at: instant(r.get(3)?),
        role: r.get(4)?,
        kind: r.get(5)?,
        data: serde_json::from_str(&data)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, Box::new(e)))?,
    })
}

/// See [`crate::store::Store::append_client_events`].
pub(super) async fn append(
    store: &SqliteStore,
    booking_id: Uuid,
    events: &[ClientEvent],
    limits: ClientEventLimits,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    if events.len() > MAX_CLIENT_EVENTS_PER_APPEND || events.iter().any(|e| e.booking_id != booking_id) {
        return Err(StoreError::Internal("client events: too many, or of another booking".into()));
    }
    let minute = ns(now.duration_trunc(chrono::Duration::minutes(1)).unwrap_or(now))?;
    let rows = events
        .iter()
        .map(|e| {
            Ok((e.id.to_string(), ns(e.received_at)?, ns(e.at)?, e.role.clone(), e.kind.clone(), e.data.to_string()))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let booking = booking_id.to_string();
    let n = rows.len() as u64;
    store
        .write(move |tx| {
            if count(tx, &booking, None)? + n > u64::from(limits.per_booking) {
                return Err(StoreError::Conflict(format!(
                    "the session keeps at most {} client events",
                    limits.per_booking
                )));
            }
            if count(tx, &booking, Some(minute))? + n > u64::from(limits.per_minute) {
                return Err(StoreError::Conflict(format!("at most {} client events a minute", limits.per_minute)));
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO client_events (id, booking_id, received_at, at, role, kind, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (id, received_at, at, role, kind, data) in rows {
                insert.execute(params![id, booking, received_at, at, role, kind, data]).map_err(|e| match &e {
                    rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                        StoreError::AlreadyExists
                    }
                    _ => StoreError::from(e),
                })?;
            }
            Ok(())
        })
        .await
}

/// See [`crate::store::Store::client_events`].
pub(super) async fn list(store: &SqliteStore, booking_id: Uuid) -> StoreResult<Vec<ClientEvent>> {
    let booking = booking_id.to_string();
    store
        .read(move |tx| {
            let mut st = tx.prepare_cached(
                "SELECT id, booking_id, received_at, at, role, kind, data FROM client_events
                 WHERE booking_id = ?1 ORDER BY seq",
            )?;
            collect(st.query_map([booking], from_row)?)
        })
        .await
}
