//! The schema of the embedded store and its migrations.
//!
//! [`MIGRATIONS`] holds one entry per schema version; `PRAGMA user_version` counts the applied
//! ones, and [`migrate`] applies the missing ones inside one write transaction, so two processes
//! starting at once migrate once. Never edit an applied entry: append a new one.
//!
//! Tables: `rooms` (with `seq`, their creation order), `bookings` (cascade-deleted with their
//! room; each row carries its access as JSON and its current invitation's code hash, uniquely
//! indexed), `limits` (the longest booking, which bounds every overlap query's index range, and
//! the room counter), `vacancy` (find-or-create's per-slot hint), `idempotency` (one row per
//! scope, user and key), `assignments`, `operations`, `markers`, `state`; `client_events`
//! ([`super::client_events`]); `session_rooms`, `session_records` and `outbox` ([`super::records`]).

use rusqlite::{Connection, TransactionBehavior};

use super::super::{StoreError, StoreResult};

/// The schema, one entry per version; entry `i` takes `user_version` from `i` to `i + 1`.
/// Never edit an applied entry: append a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE rooms (
    id               INTEGER PRIMARY KEY,
    name             TEXT,
    password         TEXT    NOT NULL,
    admin_secret     TEXT    NOT NULL,
    max_participants INTEGER NOT NULL,
    metadata         TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
-- rowid tables append the id to every index: this orders by (created_at, id).
CREATE INDEX rooms_created ON rooms (created_at);
-- The rooms find-or-create may pick, in id order, a few hundred to a page.
CREATE INDEX rooms_shared ON rooms (id) WHERE max_participants >= 2;

CREATE TABLE bookings (
    id           TEXT    PRIMARY KEY,
    room_id      INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    owner        TEXT    NOT NULL,
    slot_start   INTEGER NOT NULL,
    slot_end     INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    cancelled_at INTEGER
);
-- Every query for bookings overlapping [s, e) also asks `slot_start > s - longest`, where
-- `longest` (table `limits`) is the longest booking ever stored: then the index range holds
-- only the bookings that start within one longest booking before s, not the room's whole
-- past or future.
-- slot_end rides along so that a probe that finds a booking needs no table lookup to check it.
CREATE INDEX bookings_room_live_start ON bookings (room_id, slot_start, slot_end) WHERE cancelled_at IS NULL;
CREATE INDEX bookings_owner_start ON bookings (owner, slot_start);
CREATE INDEX bookings_live_start ON bookings (slot_start) WHERE cancelled_at IS NULL;

-- One row. `longest_booking_ns` only grows: written in the same transaction as the booking that
-- grows it, so every overlap query (of any process) sees a bound that covers every booking.
CREATE TABLE limits (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    longest_booking_ns INTEGER NOT NULL
);
INSERT INTO limits (id, longest_booking_ns) VALUES (1, 0);

CREATE TABLE idempotency (
    scope       TEXT    NOT NULL,
    user        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    resource_id TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (scope, user, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_created ON idempotency (created_at);

CREATE TABLE assignments (
    booking_id TEXT PRIMARY KEY,
    host       TEXT NOT NULL,
    ready_at   INTEGER
) WITHOUT ROWID;

CREATE TABLE operations (
    seq         INTEGER PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    at          INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    host        TEXT,
    booking_id  TEXT,
    room_id     INTEGER,
    result      TEXT    NOT NULL,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX operations_at ON operations (at);

CREATE TABLE markers (
    key TEXT PRIMARY KEY,
    at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- A booking's access (credential generation, guest invitation) as JSON; the current
-- invitation's code hash is also a column so a guest's code finds its booking by index.
ALTER TABLE bookings ADD COLUMN access TEXT NOT NULL DEFAULT '{"generation":0}';
ALTER TABLE bookings ADD COLUMN invite_hash TEXT;
CREATE UNIQUE INDEX bookings_invite ON bookings (invite_hash) WHERE invite_hash IS NOT NULL;
"#,
    r#"
-- Rooms hold no Janus secret any more: every session room's secret is derived.
ALTER TABLE rooms DROP COLUMN admin_secret;
"#,
    super::client_events::MIGRATION,
    super::records::MIGRATION,
    r#"
-- Find-or-create walks the rooms with two seats in creation order (`seq`, from the counter in
-- `limits`, never reused) from a per-slot hint instead of from the first room, so its cost does
-- not grow with the rooms already taken in that slot.
ALTER TABLE rooms ADD COLUMN seq INTEGER;
UPDATE rooms SET seq = ranked.n
  FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) - 1 AS n FROM rooms) AS ranked
  WHERE rooms.id = ranked.id;
ALTER TABLE limits ADD COLUMN next_room_seq INTEGER NOT NULL DEFAULT 0;
UPDATE limits SET next_room_seq = (SELECT count(*) FROM rooms);
DROP INDEX rooms_shared;
CREATE UNIQUE INDEX rooms_shared_seq ON rooms (seq) WHERE max_participants >= 2;

-- One row per slot (exact start and end) find-or-create has booked: every room with two seats
-- and `seq < next_seq` has a live booking overlapping the slot. Written in the transactions
-- that book, cancel and shorten, so every process sees a bound that holds; only a hint for
-- where the first free room may be, never a decision (the overlap probe decides).
CREATE TABLE vacancy (
    slot_start INTEGER NOT NULL,
    slot_end   INTEGER NOT NULL,
    next_seq   INTEGER NOT NULL,
    PRIMARY KEY (slot_start, slot_end)
) WITHOUT ROWID;
CREATE INDEX vacancy_end ON vacancy (slot_end);
"#,
    super::pages::MIGRATION,
    super::quotas::MIGRATION,
    r#"
-- Every booking wrote a page of this index at a random place, and only the hourly purge read
-- it: the purge now reads the key's range of starts (a slot that ended started before then).
DROP INDEX vacancy_end;
"#,
    r#"
-- An owner's bookings by (start, id), the order of GET /bookings, now with each one's end and
-- cancellation: a booking counts the owner's live bookings (the live bookings quota) from this
-- index alone, in the leaf its own entry goes into, instead of a ledger row of its own.
CREATE INDEX bookings_by_owner ON bookings (owner, slot_start, id, slot_end, cancelled_at);
DROP INDEX bookings_owner_page;
"#,
    r#"
-- The owner's index without the booking's 36-character id: each entry shrinks by almost half,
-- and a booking wrote a quarter fewer WAL frames in it (a leaf takes more entries before it
-- splits). A page of GET /bookings still reads one range of it in start order; SQLite orders
-- each start's few bookings by id itself.
DROP INDEX bookings_by_owner;
CREATE INDEX bookings_by_owner ON bookings (owner, slot_start, slot_end, cancelled_at);
"#,
];

/// Brings the database to the latest schema in one write transaction. `Internal` when the file
/// holds a schema newer than this build knows.
pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Internal(format!(
            "database schema version {version} is newer than this build knows ({known})"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tracing::info!(version = i + 1, "sqlite schema migrated");
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    Ok(())
}
