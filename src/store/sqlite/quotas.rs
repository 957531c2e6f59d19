//! SQLite: per-user quota ledgers (table `quota_ledgers`). A ledger is one row, the JSON
//! document and its version; the compare-and-set reads the version and writes the row inside
//! one write transaction on the writer thread, so of two writers that read one version, one wins.

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::rows::corrupt;
use crate::store::{QuotaLedger, StoreError, StoreResult, StoredLedger};

/// The table, applied as one schema migration.
pub(super) const MIGRATION: &str = r#"
-- One user's quota ledger (live bookings and recent room creations it counts, JSON) and its version.
CREATE TABLE quota_ledgers (
    user    TEXT    PRIMARY KEY,
    version INTEGER NOT NULL,
    ledger  TEXT    NOT NULL
) WITHOUT ROWID;
"#;

/// See [`crate::store::Store::quota_ledger`].
pub(super) async fn ledger(store: &SqliteStore, user: &str) -> StoreResult<Option<StoredLedger>> {
    let user = user.to_owned();
    store
        .read(move |tx| {
            Ok(tx
                .prepare_cached("SELECT ledger, version FROM quota_ledgers WHERE user = ?1")?
                .query_row([user], |r| {
                    let text: String = r.get(0)?;
                    let version: i64 = r.get(1)?;
                    Ok(StoredLedger {
                        ledger: serde_json::from_str(&text).map_err(|e| corrupt(0, rusqlite::types::Type::Text, e))?,
                        version: version as u64,
                    })
                })
                .optional()?)
        })
        .await
}

/// See [`crate::store::Store::put_quota_ledger`].
pub(super) async fn put(
    store: &SqliteStore,
    user: &str,
    ledger: &QuotaLedger,
    expected: Option<u64>,
) -> StoreResult<u64> {
    let user = user.to_owned();
    let text = to_text(ledger)?;
    store.write(move |tx| put_in(tx, &user, &text, expected)).await
}

/// A ledger as its row holds it.
pub(super) fn to_text(ledger: &QuotaLedger) -> StoreResult<String> {
    serde_json::to_string(ledger).map_err(|e| StoreError::Internal(e.to_string()))
}

/// The compare-and-set of `user`'s ledger inside the caller's write transaction:
/// `PreconditionFailed` when the stored version is not `expected`. Returns the new version.
pub(super) fn put_in(tx: &Connection, user: &str, text: &str, expected: Option<u64>) -> StoreResult<u64> {
    let stored: Option<i64> = tx
        .prepare_cached("SELECT version FROM quota_ledgers WHERE user = ?1")?
        .query_row([user], |r| r.get(0))
        .optional()?;
    let next = match (stored, expected) {
        (None, None) => 1,
        (Some(v), Some(e)) if v as u64 == e => e + 1,
        _ => return Err(StoreError::PreconditionFailed),
    };
    tx.prepare_cached(
        "INSERT INTO quota_ledgers (user, version, ledger) VALUES (?1, ?2, ?3)
         ON CONFLICT (user) DO UPDATE SET version = excluded.version, ledger = excluded.ledger",
    )?
    .execute(params![user, next as i64, text])?;
    Ok(next)
}
