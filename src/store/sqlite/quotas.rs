//! SQLite: per-user quota ledgers (table `quota_ledgers`). A ledger is one row, the ledger and
//! its version; the compare-and-set reads the version and writes the row inside one write
//! transaction on the writer thread, so of two writers that read one version, one wins.
//!
//! On this store a ledger counts rooms only: a booking's own write counts its owner's live
//! bookings (`rows::check_cap`). Booking entries that earlier builds wrote are kept and ignored.
//!
//! The row holds the ledger as a compact binary value ([`encode`]), not JSON: a row that fits its
//! B-tree page (about 230 bytes on this store's 1 KiB pages) costs the WAL one page per write
//! instead of a page and its overflow chain. Rows written as JSON text by earlier builds are
//! still read, and become binary at their next write.

use rusqlite::types::{Type, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::SqliteStore;
use super::rows::{corrupt, instant, ns};
use crate::domain::RoomId;
use crate::store::{LedgerBooking, LedgerRoom, QuotaLedger, StoreError, StoreResult, StoredLedger};

/// The table, applied as one schema migration.
pub(super) const MIGRATION: &str = r#"
-- One user's quota ledger (live bookings and recent room creations it counts) and its version.
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
                    let ledger = match r.get_ref(0)? {
                        ValueRef::Blob(b) => decode(b).map_err(|e| corrupt(0, Type::Blob, BadRow(e)))?,
                        ValueRef::Text(t) => serde_json::from_slice(t).map_err(|e| corrupt(0, Type::Text, e))?,
                        other => return Err(corrupt(0, other.data_type(), BadRow("neither text nor blob"))),
                    };
                    Ok(StoredLedger { ledger, version: r.get::<_, i64>(1)? as u64 })
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
    let row = encode(ledger)?;
    store.write(move |tx| put_in(tx, &user, &row, expected)).await
}

/// A row that does not decode as a ledger.
#[derive(Debug, thiserror::Error)]
#[error("quota ledger row: {0}")]
struct BadRow(&'static str);

/// The first byte of the encoding: its format.
const FORMAT: u8 = 1;

/// A key's length that stands for no key.
const NO_KEY: u16 = u16::MAX;

/// The ledger as its row holds it: the format byte; the bookings' count (u16) and each booking's
/// id (16 bytes), end and reservation instant (i64 nanoseconds), key; the rooms' count and each
/// room's id (u64), reservation instant, key. A key is its length (u16, [`NO_KEY`] for none) and
/// its UTF-8 bytes. Integers are little-endian. `Internal` for an instant outside 1677-2262 or
/// more than 65,534 entries or key bytes, which no ledger holds.
fn encode(ledger: &QuotaLedger) -> StoreResult<Vec<u8>> {
    let too_many = || StoreError::Internal("a quota ledger too large to store".into());
    let mut out = Vec::with_capacity(5 + 34 * ledger.bookings.len() + 18 * ledger.rooms.len());
    out.push(FORMAT);
    let key = |out: &mut Vec<u8>, key: &Option<String>| -> StoreResult<()> {
        match key {
            None => out.extend_from_slice(&NO_KEY.to_le_bytes()),
            Some(k) => {
                let n = u16::try_from(k.len()).ok().filter(|&n| n != NO_KEY).ok_or_else(too_many)?;
                out.extend_from_slice(&n.to_le_bytes());
                out.extend_from_slice(k.as_bytes());
            }
        }
        Ok(())
    };
    let count = |n: usize| u16::try_from(n).map(u16::to_le_bytes).map_err(|_| too_many());
    out.extend_from_slice(&count(ledger.bookings.len())?);
    for b in &ledger.bookings {
        out.extend_from_slice(b.id.as_bytes());
        out.extend_from_slice(&ns(b.end)?.to_le_bytes());
        out.extend_from_slice(&ns(b.reserved_at)?.to_le_bytes());
        key(&mut out, &b.key)?;
    }
    out.extend_from_slice(&count(ledger.rooms.len())?);
    for r in &ledger.rooms {
        out.extend_from_slice(&r.id.get().to_le_bytes());
        out.extend_from_slice(&ns(r.reserved_at)?.to_le_bytes());
        key(&mut out, &r.key)?;
    }
    Ok(out)
}

/// Reads what [`encode`] wrote; every byte must be accounted for.
fn decode(bytes: &[u8]) -> Result<QuotaLedger, &'static str> {
    let mut r = Reader(bytes);
    if r.take::<1>()? != [FORMAT] {
        return Err("unknown format");
    }
    let mut ledger = QuotaLedger::default();
    for _ in 0..u16::from_le_bytes(r.take()?) {
        ledger.bookings.push(LedgerBooking {
            id: Uuid::from_bytes(r.take()?),
            end: instant(i64::from_le_bytes(r.take()?)),
            reserved_at: instant(i64::from_le_bytes(r.take()?)),
            key: r.key()?,
        });
    }
    for _ in 0..u16::from_le_bytes(r.take()?) {
        ledger.rooms.push(LedgerRoom {
            id: RoomId::new(u64::from_le_bytes(r.take()?)).map_err(|_| "a room id out of range")?,
            reserved_at: instant(i64::from_le_bytes(r.take()?)),
            key: r.key()?,
        });
    }
    if !r.0.is_empty() { Err("trailing bytes") } else { Ok(ledger) }
}

/// The unread rest of an encoded ledger.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or("truncated")?;
        self.0 = rest;
        Ok(*head)
    }

    fn key(&mut self) -> Result<Option<String>, &'static str> {
        let n = u16::from_le_bytes(self.take()?);
        if n == NO_KEY {
            return Ok(None);
        }
        let (key, rest) = self.0.split_at_checked(n as usize).ok_or("truncated")?;
        self.0 = rest;
        String::from_utf8(key.to_vec()).map(Some).map_err(|_| "a key that is not UTF-8")
    }
}

/// The compare-and-set of `user`'s ledger inside the caller's write transaction:
/// `PreconditionFailed` when the stored version is not `expected`. Returns the new version.
fn put_in(tx: &Connection, user: &str, row: &[u8], expected: Option<u64>) -> StoreResult<u64> {
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
    .execute(params![user, next as i64, row])?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, TimeZone, Utc};

    use super::*;

    fn sample() -> QuotaLedger {
        let t = Utc.with_ymd_and_hms(2026, 11, 30, 3, 0, 0).unwrap() + Duration::nanoseconds(123_456_789);
        QuotaLedger {
            bookings: vec![
                LedgerBooking { id: Uuid::new_v4(), end: t + Duration::hours(1), reserved_at: t, key: None },
                LedgerBooking {
                    id: Uuid::new_v4(),
                    end: t + Duration::days(30),
                    reserved_at: t - Duration::nanoseconds(1),
                    key: Some("0123456789abcdef0123456789abcdef".into()),
                },
            ],
            rooms: vec![
                LedgerRoom { id: RoomId::random(), reserved_at: t, key: Some(String::new()) },
                LedgerRoom { id: RoomId::random(), reserved_at: t, key: None },
            ],
        }
    }

    #[test]
    fn every_field_round_trips_through_the_row() {
        for ledger in [sample(), QuotaLedger::default()] {
            assert_eq!(decode(&encode(&ledger).unwrap()), Ok(ledger));
        }
    }

    #[test]
    fn a_typical_ledger_fits_its_page_without_overflow() {
        let mut ledger = sample();
        ledger.bookings = (0..6).map(|_| ledger.bookings[0].clone()).collect();
        ledger.rooms.clear();
        // About 230 bytes fit a 1 KiB page of a WITHOUT ROWID table before an overflow page.
        assert!(encode(&ledger).unwrap().len() < 210, "{}", encode(&ledger).unwrap().len());
    }

    #[test]
    fn a_damaged_row_is_refused() {
        let row = encode(&sample()).unwrap();
        for cut in [0, 1, 2, 20, row.len() - 1] {
            assert!(decode(&row[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = row.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err("trailing bytes"));
        let mut other = row;
        other[0] = 2;
        assert_eq!(decode(&other), Err("unknown format"));
    }

    #[tokio::test]
    async fn a_json_row_of_an_earlier_build_is_read_and_written_back_binary() {
        use crate::store::Store;
        let path = std::env::temp_dir().join(format!("suroga-sqlite-unit-{}", Uuid::new_v4())).join("store.db");
        let store = super::super::SqliteStore::open(&path).unwrap();
        let ledger = sample();
        let json = serde_json::to_string(&ledger).unwrap();
        let raw = Connection::open(&path).unwrap();
        raw.execute("INSERT INTO quota_ledgers (user, version, ledger) VALUES ('u', 7, ?1)", [&json]).unwrap();
        let stored = store.quota_ledger("u").await.unwrap().unwrap();
        assert_eq!((&stored.ledger, stored.version), (&ledger, 7));
        store.put_quota_ledger("u", &ledger, Some(7)).await.unwrap();
        let kind: String =
            raw.query_row("SELECT typeof(ledger) FROM quota_ledgers WHERE user = 'u'", [], |r| r.get(0)).unwrap();
        assert_eq!(kind, "blob");
        assert_eq!(store.quota_ledger("u").await.unwrap().unwrap().ledger, ledger);
        drop((raw, store));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn an_instant_out_of_range_is_internal() {
        let mut ledger = sample();
        ledger.bookings[0].end = DateTime::<Utc>::MAX_UTC;
        assert!(matches!(encode(&ledger), Err(StoreError::Internal(_))));
    }
}
