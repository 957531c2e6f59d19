//! The embedded SQLite backend of [`super::Store`].
//!
//! # How it is built
//! - **One writer thread, group commit.** Every write of this process goes to ONE connection
//!   owned by a dedicated thread (`writer_loop`). The thread takes every write queued at that
//!   moment (up to `MAX_BATCH`) and runs them in ONE `BEGIN IMMEDIATE … COMMIT`, each under
//!   its own savepoint: a write that fails rolls back alone, the others commit together. Each
//!   caller gets its answer only after the COMMIT, so nothing is reported that is not stored.
//!   Writers queue in FIFO order instead of spinning on `SQLITE_BUSY`, and a burst of bookings
//!   costs one commit instead of one each.
//! - **A few readers.** Reads run on a small pool of separate connections (`Readers`) that
//!   WAL lets proceed while a write is in flight, each on `tokio::task::spawn_blocking`.
//! - **Many processes.** The check (overlap, idempotency key, future bookings) and the write
//!   happen under SQLite's write lock (`BEGIN IMMEDIATE`), so the contract also holds when
//!   several processes share the file; a process that finds the lock taken waits up to
//!   [`BUSY_TIMEOUT`] and then answers [`StoreError::Unavailable`].
//! - **Checkpoints off the write path.** A checkpoint thread copies the WAL back into the
//!   database (`checkpoint_loop`); the writer never does, so no booking waits for its fsync.
//! - **Durability.** WAL with `synchronous=NORMAL`: a commit survives a process crash; the last
//!   commits before a power loss may be lost, never corrupted.
//! - **Instants** are INTEGER nanoseconds since the Unix epoch: exact round trips, comparable
//!   in SQL. The price is the range, 1677-09-21 to 2262-04-11; instants outside it are refused
//!   with [`StoreError::Internal`] (the API bounds booking dates long before that).
//! - **Schema** lives in `MIGRATIONS`; `PRAGMA user_version` counts the applied ones, and
//!   [`SqliteStore::open`] applies the missing ones inside one write transaction, so two
//!   processes starting at once migrate once.
//!
//! Tables: `rooms`, `bookings` (cascade-deleted with their room; each row carries its access as
//! JSON and its current invitation's code hash, uniquely indexed), `idempotency` (one row per
//! scope, user and key), `limits` (the longest booking, which bounds every overlap query's index
//! range), `assignments`, `operations`, `markers`, `state`, `client_events` ([`client_events`]);
//! session records, session room lookups and the webhook outbox ([`records`]); per-user quota
//! ledgers ([`quotas`]).

mod client_events;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Type;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::{
    Assignment, Attempt, ClientEvent, ClientEventLimits, Created, Delivery, DeliveryStatus, IDEMPOTENCY_TTL,
    IdempotencyClaim, OpAction, Operation, RoomFilter, SessionRoom, Store, StoreError, StoreResult, StoredRecord,
};
use super::{BookingKey, BookingQuery, DeliveryKey, RoomKey};
use crate::domain::session::SessionRecord;
use crate::domain::{Access, Booking, Room, RoomId, TimeSlot, events::OutboxEvent, format_instant};

mod pages;
mod quotas;
mod records;

/// How long a connection waits for another process's write lock before giving up.
pub const BUSY_TIMEOUT: StdDuration = StdDuration::from_secs(5);

/// Reader connections kept open. Reads are short; a few suffice on a small machine.
const READERS: usize = 4;

/// Page cache of each connection, in KiB.
const CACHE_KIB: i64 = 32 * 1024;

/// How much of the file each connection maps into memory instead of copying pages with `pread`.
const MMAP_BYTES: i64 = 256 * 1024 * 1024;

/// Write batches between two nudges of the checkpoint thread.
const CHECKPOINT_AFTER_BATCHES: u32 = 16;

/// A WAL larger than this is emptied even if that briefly holds up writers.
const WAL_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// Most writes the writer thread commits together.
const MAX_BATCH: usize = 256;

/// Writes that may wait for the writer thread before callers wait to enqueue.
const QUEUE: usize = 1024;

/// What a client is told to wait after the database stayed locked past [`BUSY_TIMEOUT`].
const BUSY_RETRY_AFTER: StdDuration = StdDuration::from_secs(1);

/// The schema, one entry per version; entry `i` takes `user_version` from `i` to `i + 1`.
/// Never edit an applied entry: append a new one.
const MIGRATIONS: &[&str] = &[
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
    client_events::MIGRATION,
    records::MIGRATION,
    pages::MIGRATION,
    quotas::MIGRATION,
];

/// The embedded store: one SQLite file in WAL mode. Cheap to clone (shared connections).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The queue of the writer thread; the thread ends when the last store handle drops it.
    jobs: mpsc::Sender<Box<dyn Job>>,
    readers: Readers,
}

/// A small pool of read-only (`query_only`) connections.
struct Readers {
    idle: Mutex<Vec<Connection>>,
    /// Bounds concurrent reads to the pool size, so a burst queues instead of opening files.
    permits: Semaphore,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.path).finish()
    }
}

impl SqliteStore {
    /// Opens (creating the folder and file on first start) the database at `path`, switches it to
    /// WAL, and applies missing schema migrations atomically. Blocks: call it at start-up, not on
    /// a busy runtime thread. Fails with `Unavailable` when the file cannot be opened or stays
    /// locked, `Internal` when it holds a schema newer than this build knows.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        // The file holds pins and Janus room secrets: private before SQLite first opens it.
        crate::files::prepare_private_file(path, &["-wal", "-shm"]).map_err(|e| StoreError::Unavailable {
            message: format!("cannot create {} privately: {e}", path.display()),
            retry_after: None,
        })?;
        let mut writer = open_connection(path)?;
        // WAL is a property of the file: set once, every later connection (and process) uses it.
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Internal(format!("{} refused WAL mode (got {mode})", path.display())));
        }
        migrate(&mut writer)?;

        let mut idle = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            idle.push(open_reader(path)?);
        }
        // Checkpoints run on their own thread: a checkpoint fsyncs, and on the writer it would
        // stall every queued booking behind it.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = open_connection(path)?;
        let wal = wal_path(path);
        let (nudge, nudges) = std::sync::mpsc::sync_channel(1);
        spawn_thread("sqlite-checkpoint", move || checkpoint_loop(checkpointer, wal, nudges))?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        spawn_thread("sqlite-writer", move || writer_loop(writer, queue, nudge))?;
        tracing::info!(path = %path.display(), "sqlite store open");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                jobs,
                readers: Readers { idle: Mutex::new(idle), permits: Semaphore::new(READERS) },
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the writer thread inside a write transaction (shared with other writes queued
    /// at the same time) under its own savepoint, and answers once the transaction committed.
    /// An `Err` from `f` undoes what `f` wrote and nothing else.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(WriteJob { work: Some(f), out: None, reply });
        self.inner.jobs.send(job).await.map_err(|_| StoreError::Internal("sqlite writer thread is gone".into()))?;
        answer.await.map_err(|_| StoreError::Internal("sqlite writer thread dropped a write".into()))?
    }

    /// Runs `f` inside one read transaction (one consistent snapshot) on a pooled reader.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let readers = &self.inner.readers;
        let _permit =
            readers.permits.acquire().await.map_err(|_| StoreError::Internal("sqlite reader pool closed".into()))?;
        let pooled = readers.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        // A reader lost to a panicking task is replaced here.
        let mut conn = match pooled {
            Some(c) => c,
            None => open_reader(&self.inner.path)?,
        };
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let out = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
                let out = f(&tx)?;
                tx.finish()?;
                Ok(out)
            })();
            (conn, out)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("sqlite read task failed: {e}")))?;
        readers.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        out
    }
}

fn open_connection(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Unavailable {
        message: format!("cannot open {}: {e}", path.display()),
        retry_after: None,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Keep the working set in memory: the booking id index takes inserts at random places.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = open_connection(path)?;
    // A guard against a write slipping onto a reader, where it would bypass the writer lock.
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

/// One queued write, its result type erased so that one batch holds many kinds.
trait Job: Send {
    /// Runs the write under its own savepoint in the open transaction. `Err` only when the
    /// savepoint itself failed: then the transaction is in an unknown state and must go.
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<()>;
    /// Answers the caller once the batch committed (`Ok`) or failed as a whole (`Err`).
    fn finish(self: Box<Self>, commit: Result<(), &rusqlite::Error>);
}

struct WriteJob<T, F> {
    work: Option<F>,
    out: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Job for WriteJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let Some(work) = self.work.take() else { return Ok(()) };
        conn.prepare_cached("SAVEPOINT job")?.execute([])?;
        // A panicking write must not take the writer thread (and every later write) with it.
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(StoreError::Internal("a sqlite write panicked".into())));
        if out.is_err() {
            conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
        }
        conn.prepare_cached("RELEASE job")?.execute([])?;
        self.out = Some(out);
        Ok(())
    }

    fn finish(self: Box<Self>, commit: Result<(), &rusqlite::Error>) {
        let answer = match (commit, self.out) {
            (Ok(()), Some(out)) => out,
            (Err(e), _) => Err(store_error(e)),
            (Ok(()), None) => Err(StoreError::Internal("a sqlite write was committed without running".into())),
        };
        // The caller may have gone (a dropped request); the write stands all the same.
        let _ = self.reply.send(answer);
    }
}

/// The writer thread: waits for a write, takes every other one already queued, and commits
/// them together. Ends when every store handle is dropped.
fn writer_loop(conn: Connection, mut queue: mpsc::Receiver<Box<dyn Job>>, checkpoint: SyncSender<()>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut since_nudge = 0;
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = run_batch(&conn, &mut batch);
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, writes = batch.len(), "sqlite write batch failed");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        for job in batch.drain(..) {
            job.finish(outcome.as_ref().map(|_| ()));
        }
        since_nudge += 1;
        if since_nudge >= CHECKPOINT_AFTER_BATCHES {
            // A full channel means a checkpoint is already due: nothing to add.
            let _ = checkpoint.try_send(());
            since_nudge = 0;
        }
    }
    // Dropping `checkpoint` here ends the checkpoint thread.
}

/// The checkpoint thread: copies the WAL back into the database when the writer nudges it or a
/// second passes, without blocking writers (`PASSIVE`). Should the WAL still outgrow
/// `WAL_LIMIT_BYTES` (readers holding old snapshots, a writer that never pauses), a
/// `TRUNCATE` checkpoint waits for a gap between writes and empties it. Ends with the writer.
fn checkpoint_loop(conn: Connection, wal: PathBuf, nudges: Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        match nudges.recv_timeout(StdDuration::from_secs(1)) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let mode = match std::fs::metadata(&wal) {
            Ok(m) if m.len() > WAL_LIMIT_BYTES => "TRUNCATE",
            _ => "PASSIVE",
        };
        if let Err(e) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
            tracing::warn!(error = %e, mode, "sqlite checkpoint failed");
        }
    }
}

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> StoreResult<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(|e| StoreError::Internal(format!("cannot start the {name} thread: {e}")))
}

fn run_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> rusqlite::Result<()> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    for job in batch.iter_mut() {
        job.run(conn)?;
    }
    conn.prepare_cached("COMMIT")?.execute([])?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
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

// ----- errors -----

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        store_error(&e)
    }
}

fn store_error(e: &rusqlite::Error) -> StoreError {
    use rusqlite::ffi;
    match e {
        rusqlite::Error::SqliteFailure(err, _) => match err.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Unavailable {
                message: format!("database locked: {e}"),
                retry_after: Some(BUSY_RETRY_AFTER),
            },
            ErrorCode::ConstraintViolation => match err.extended_code {
                ffi::SQLITE_CONSTRAINT_PRIMARYKEY | ffi::SQLITE_CONSTRAINT_UNIQUE => StoreError::AlreadyExists,
                ffi::SQLITE_CONSTRAINT_FOREIGNKEY => StoreError::NotFound,
                _ => StoreError::Internal(e.to_string()),
            },
            ErrorCode::CannotOpen | ErrorCode::DiskFull | ErrorCode::SystemIoFailure | ErrorCode::ReadOnly => {
                StoreError::Unavailable { message: e.to_string(), retry_after: None }
            }
            _ => StoreError::Internal(e.to_string()),
        },
        _ => StoreError::Internal(e.to_string()),
    }
}

fn corrupt(col: usize, ty: Type, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, ty, Box::new(e))
}

// ----- encodings -----

fn ns(t: DateTime<Utc>) -> StoreResult<i64> {
    t.timestamp_nanos_opt()
        .ok_or_else(|| StoreError::Internal(format!("instant {} is outside the storable range", format_instant(t))))
}

fn instant(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(n)
}

fn room_key(id: RoomId) -> i64 {
    // Room ids are below 2^53, so they always fit.
    id.get() as i64
}

const ROOM_COLUMNS: &str = "id, name, password, max_participants, metadata, created_at, updated_at";

fn room_from_row(r: &Row<'_>) -> rusqlite::Result<Room> {
    let id: i64 = r.get(0)?;
    let id = RoomId::new(id as u64).map_err(|e| corrupt(0, Type::Integer, e))?;
    let max_participants: i64 = r.get(3)?;
    let max_participants = u8::try_from(max_participants).map_err(|e| corrupt(3, Type::Integer, e))?;
    let metadata: String = r.get(4)?;
    let metadata = serde_json::from_str(&metadata).map_err(|e| corrupt(4, Type::Text, e))?;
    Ok(Room {
        id,
        name: r.get(1)?,
        password: r.get(2)?,
        max_participants,
        metadata,
        created_at: instant(r.get(5)?),
        updated_at: instant(r.get(6)?),
    })
}

const BOOKING_COLUMNS: &str = "id, room_id, owner, slot_start, slot_end, created_at, cancelled_at, access";

fn booking_from_row(r: &Row<'_>) -> rusqlite::Result<Booking> {
    let id: String = r.get(0)?;
    let id = Uuid::parse_str(&id).map_err(|e| corrupt(0, Type::Text, e))?;
    let room: i64 = r.get(1)?;
    let room_id = RoomId::new(room as u64).map_err(|e| corrupt(1, Type::Integer, e))?;
    let slot = TimeSlot::new(instant(r.get(3)?), instant(r.get(4)?)).map_err(|e| corrupt(3, Type::Integer, e))?;
    Ok(Booking {
        id,
        room_id,
        owner: r.get(2)?,
        slot,
        created_at: instant(r.get(5)?),
        cancelled_at: r.get::<_, Option<i64>>(6)?.map(instant),
        access: {
            let access: String = r.get(7)?;
            serde_json::from_str(&access).map_err(|e| corrupt(7, Type::Text, e))?
        },
    })
}

/// The access column's JSON and the current invitation's code hash.
fn access_columns(access: &Access) -> StoreResult<(String, Option<String>)> {
    let json = serde_json::to_string(access).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok((json, access.invitation.as_ref().map(|i| i.code_hash.clone())))
}

fn operation_from_row(r: &Row<'_>) -> rusqlite::Result<Operation> {
    let id: String = r.get(0)?;
    let booking_id = r
        .get::<_, Option<String>>(5)?
        .map(|s| Uuid::parse_str(&s))
        .transpose()
        .map_err(|e| corrupt(5, Type::Text, e))?;
    let room_id = r
        .get::<_, Option<i64>>(6)?
        .map(|v| RoomId::new(v as u64))
        .transpose()
        .map_err(|e| corrupt(6, Type::Integer, e))?;
    let duration_ms: i64 = r.get(8)?;
    Ok(Operation {
        id: Uuid::parse_str(&id).map_err(|e| corrupt(0, Type::Text, e))?,
        at: instant(r.get(1)?),
        actor: r.get(2)?,
        action: OpAction::from_name(&r.get::<_, String>(3)?),
        host: r.get(4)?,
        booking_id,
        room_id,
        result: r.get(7)?,
        duration_ms: u64::try_from(duration_ms).map_err(|e| corrupt(8, Type::Integer, e))?,
    })
}

// ----- statements shared by several operations -----

fn load_room(tx: &Connection, id: RoomId) -> StoreResult<Option<Room>> {
    let mut st = tx.prepare_cached(&format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE id = ?1"))?;
    Ok(st.query_row([room_key(id)], room_from_row).optional()?)
}

fn load_booking(tx: &Connection, id: Uuid) -> StoreResult<Option<Booking>> {
    let mut st = tx.prepare_cached(&format!("SELECT {BOOKING_COLUMNS} FROM bookings WHERE id = ?1"))?;
    Ok(st.query_row([id.to_string()], booking_from_row).optional()?)
}

fn room_exists(tx: &Connection, id: RoomId) -> StoreResult<bool> {
    let mut st = tx.prepare_cached("SELECT 1 FROM rooms WHERE id = ?1")?;
    Ok(st.exists([room_key(id)])?)
}

/// The longest booking ever stored, in nanoseconds: no booking starts more than this before it ends.
fn longest_booking(tx: &Connection) -> StoreResult<i64> {
    Ok(tx.prepare_cached("SELECT longest_booking_ns FROM limits WHERE id = 1")?.query_row([], |r| r.get(0))?)
}

/// The lowest start a booking ending after `t` can have (exclusive).
fn start_floor(tx: &Connection, t: i64) -> StoreResult<i64> {
    Ok(t.saturating_sub(longest_booking(tx)?))
}

/// Raises the longest-booking bound to cover `[start, end)`.
fn cover_duration(tx: &Connection, start: i64, end: i64) -> StoreResult<()> {
    tx.prepare_cached("UPDATE limits SET longest_booking_ns = ?1 WHERE id = 1 AND longest_booking_ns < ?1")?
        .execute([end.saturating_sub(start)])?;
    Ok(())
}

/// The first live booking of `room` overlapping `[start, end)`, other than `except`.
fn overlapping(
    tx: &Connection,
    room: RoomId,
    start: i64,
    end: i64,
    except: Option<Uuid>,
) -> StoreResult<Option<Booking>> {
    let mut st = tx.prepare_cached(&format!(
        "SELECT {BOOKING_COLUMNS} FROM bookings
         WHERE room_id = ?1 AND cancelled_at IS NULL AND slot_start > ?5 AND slot_start < ?3 AND slot_end > ?2
           AND id IS NOT ?4
         ORDER BY slot_start LIMIT 1"
    ))?;
    let floor = start_floor(tx, start)?;
    Ok(st
        .query_row(params![room_key(room), start, end, except.map(|u| u.to_string()), floor], booking_from_row)
        .optional()?)
}

fn overlap_conflict(room: RoomId, taken: &Booking) -> StoreError {
    StoreError::Conflict(format!(
        "room {room} is already booked from {} to {}",
        format_instant(taken.slot.start()),
        format_instant(taken.slot.end())
    ))
}

fn insert_booking_row(tx: &Connection, b: &Booking, room: RoomId) -> StoreResult<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO bookings (id, room_id, owner, slot_start, slot_end, created_at, cancelled_at, access, invite_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let (access, invite_hash) = access_columns(&b.access)?;
    st.execute(params![
        b.id.to_string(),
        room_key(room),
        b.owner,
        ns(b.slot.start())?,
        ns(b.slot.end())?,
        ns(b.created_at)?,
        b.cancelled_at.map(ns).transpose()?,
        access,
        invite_hash,
    ])?;
    cover_duration(tx, ns(b.slot.start())?, ns(b.slot.end())?)
}

fn insert_room_row(tx: &Connection, room: &Room) -> StoreResult<()> {
    let metadata = serde_json::to_string(&room.metadata).map_err(|e| StoreError::Internal(e.to_string()))?;
    let mut st =
        tx.prepare_cached(&format!("INSERT INTO rooms ({ROOM_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"))?;
    st.execute(params![
        room_key(room.id),
        room.name,
        room.password,
        room.max_participants,
        metadata,
        ns(room.created_at)?,
        ns(room.updated_at)?,
    ])?;
    Ok(())
}

/// What an idempotency key says about the request presenting it.
enum Prior {
    /// Unknown or expired: go ahead and record it with the write.
    Absent,
    /// Seen with the same request: replay this resource id.
    Replay(String),
}

/// Looks the claim up inside the write transaction, so two requests with one key serialize.
fn check_claim(tx: &Connection, claim: Option<&IdempotencyClaim>) -> StoreResult<Prior> {
    let Some(c) = claim else { return Ok(Prior::Absent) };
    let mut st = tx.prepare_cached(
        "SELECT fingerprint, resource_id, created_at FROM idempotency WHERE scope = ?1 AND user = ?2 AND key = ?3",
    )?;
    let row: Option<(String, String, i64)> =
        st.query_row(params![c.scope, c.user, c.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?;
    match row {
        Some((fingerprint, resource, at)) if c.now - instant(at) < IDEMPOTENCY_TTL => {
            if fingerprint == c.fingerprint {
                Ok(Prior::Replay(resource))
            } else {
                Err(StoreError::IdempotencyMismatch)
            }
        }
        _ => Ok(Prior::Absent),
    }
}

/// Records (or replaces an expired) key in the same transaction as the entity it created.
fn record_claim(tx: &Connection, claim: Option<&IdempotencyClaim>, resource: &str) -> StoreResult<()> {
    let Some(c) = claim else { return Ok(()) };
    let mut st = tx.prepare_cached(
        "INSERT INTO idempotency (scope, user, key, fingerprint, resource_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (scope, user, key) DO UPDATE SET
           fingerprint = excluded.fingerprint, resource_id = excluded.resource_id, created_at = excluded.created_at",
    )?;
    st.execute(params![c.scope, c.user, c.key, c.fingerprint, resource, ns(c.now)?])?;
    Ok(())
}

/// The room a key names, or `None` when it is gone (the key then counts as absent).
fn replayed_room(tx: &Connection, resource: &str) -> StoreResult<Option<Room>> {
    let id: RoomId =
        resource.parse().map_err(|_| StoreError::Internal(format!("idempotency record names room {resource:?}")))?;
    load_room(tx, id)
}

/// The booking a key names, or `None` when it is gone (the key then counts as absent).
fn replayed_booking(tx: &Connection, resource: &str) -> StoreResult<Option<Booking>> {
    let id = Uuid::parse_str(resource)
        .map_err(|_| StoreError::Internal(format!("idempotency record names booking {resource:?}")))?;
    load_booking(tx, id)
}

fn collect<T>(rows: impl Iterator<Item = rusqlite::Result<T>>) -> StoreResult<Vec<T>> {
    rows.collect::<rusqlite::Result<Vec<T>>>().map_err(Into::into)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read(|tx| {
            tx.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// See [`Store::insert_room`].
    async fn insert_room(&self, room: &Room, claim: Option<&IdempotencyClaim>) -> StoreResult<Created<Room>> {
        let room = room.clone();
        let claim = claim.cloned();
        self.write(move |tx| {
            if let Prior::Replay(resource) = check_claim(tx, claim.as_ref())?
                && let Some(room) = replayed_room(tx, &resource)?
            {
                return Ok(Created::Replayed(room));
            }
            insert_room_row(tx, &room)?;
            record_claim(tx, claim.as_ref(), &room.id.to_string())?;
            Ok(Created::New(room))
        })
        .await
    }

    async fn get_room(&self, id: RoomId) -> StoreResult<Room> {
        self.read(move |tx| load_room(tx, id)?.ok_or(StoreError::NotFound)).await
    }

    /// See [`Store::list_rooms`]. `created_before` and `created_after` are strict bounds;
    /// `max_participants` must match exactly.
    async fn list_rooms(&self, filter: &RoomFilter) -> StoreResult<Vec<Room>> {
        let mut sql = format!("SELECT {ROOM_COLUMNS} FROM rooms r WHERE 1");
        let mut args: Vec<i64> = Vec::new();
        if let Some(m) = filter.max_participants {
            args.push(m.into());
            sql += &format!(" AND r.max_participants = ?{}", args.len());
        }
        if let Some(t) = filter.created_before {
            args.push(ns(t)?);
            sql += &format!(" AND r.created_at < ?{}", args.len());
        }
        if let Some(t) = filter.created_after {
            args.push(ns(t)?);
            sql += &format!(" AND r.created_at > ?{}", args.len());
        }
        // The index floor of the overlap probe is only known inside the snapshot; its slot is
        // filled in there.
        let mut floor_arg = None;
        if let Some(slot) = filter.free_during {
            args.push(ns(slot.start())?);
            args.push(ns(slot.end())?);
            args.push(0);
            floor_arg = Some(args.len() - 1);
            sql += &format!(
                " AND NOT EXISTS (SELECT 1 FROM bookings b WHERE b.room_id = r.id AND b.cancelled_at IS NULL
                   AND b.slot_start > ?{} AND b.slot_start < ?{} AND b.slot_end > ?{})",
                args.len(),
                args.len() - 1,
                args.len() - 2
            );
        }
        sql += " ORDER BY r.created_at, r.id";
        self.read(move |tx| {
            let mut args = args;
            if let Some(i) = floor_arg {
                args[i] = start_floor(tx, args[i - 2])?;
            }
            let mut st = tx.prepare_cached(&sql)?;
            collect(st.query_map(rusqlite::params_from_iter(args.iter()), room_from_row)?)
        })
        .await
    }

    async fn delete_room(&self, id: RoomId, now: DateTime<Utc>) -> StoreResult<()> {
        let now = ns(now)?;
        self.write(move |tx| {
            if !room_exists(tx, id)? {
                return Err(StoreError::NotFound);
            }
            let floor = start_floor(tx, now)?;
            let mut st = tx.prepare_cached(
                "SELECT slot_end FROM bookings
                 WHERE room_id = ?1 AND cancelled_at IS NULL AND slot_start > ?3 AND slot_end > ?2
                 ORDER BY slot_start DESC LIMIT 1",
            )?;
            if let Some(until) = st.query_row(params![room_key(id), now, floor], |r| r.get::<_, i64>(0)).optional()? {
                return Err(StoreError::Conflict(format!(
                    "room {id} has a booking until {}",
                    format_instant(instant(until))
                )));
            }
            // Assignments carry no foreign key (the scheduler may write one for a booking it
            // read a moment ago); clear those of the bookings that cascade away.
            tx.prepare_cached(
                "DELETE FROM assignments WHERE booking_id IN (SELECT id FROM bookings WHERE room_id = ?1)",
            )?
            .execute([room_key(id)])?;
            tx.prepare_cached("DELETE FROM rooms WHERE id = ?1")?.execute([room_key(id)])?;
            Ok(())
        })
        .await
    }

    async fn set_room_password(&self, id: RoomId, expected: &str, new: &str, now: DateTime<Utc>) -> StoreResult<Room> {
        let (expected, new, now) = (expected.to_owned(), new.to_owned(), ns(now)?);
        self.write(move |tx| {
            let changed = tx
                .prepare_cached("UPDATE rooms SET password = ?3, updated_at = ?4 WHERE id = ?1 AND password = ?2")?
                .execute(params![room_key(id), expected, new, now])?;
            match load_room(tx, id)? {
                None => Err(StoreError::NotFound),
                Some(_) if changed == 0 => Err(StoreError::PreconditionFailed),
                Some(room) => Ok(room),
            }
        })
        .await
    }

    async fn room_bookings(&self, id: RoomId, after: DateTime<Utc>) -> StoreResult<Vec<Booking>> {
        let after = ns(after)?;
        self.read(move |tx| {
            if !room_exists(tx, id)? {
                return Err(StoreError::NotFound);
            }
            let mut st = tx.prepare_cached(&format!(
                "SELECT {BOOKING_COLUMNS} FROM bookings
                 WHERE room_id = ?1 AND cancelled_at IS NULL AND slot_start > ?3 AND slot_end > ?2
                 ORDER BY slot_start, id"
            ))?;
            let floor = start_floor(tx, after)?;
            collect(st.query_map(params![room_key(id), after, floor], booking_from_row)?)
        })
        .await
    }

    /// See [`Store::book_room`]. A booking id already taken answers `AlreadyExists`.
    async fn book_room_notify(
        &self,
        booking: &Booking,
        claim: Option<&IdempotencyClaim>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Created<Booking>> {
        let booking = booking.clone();
        let claim = claim.cloned();
        let (start, end) = (ns(booking.slot.start())?, ns(booking.slot.end())?);
        self.write(move |tx| {
            if let Prior::Replay(resource) = check_claim(tx, claim.as_ref())?
                && let Some(b) = replayed_booking(tx, &resource)?
            {
                return Ok(Created::Replayed(b));
            }
            if !room_exists(tx, booking.room_id)? {
                return Err(StoreError::NotFound);
            }
            if let Some(taken) = overlapping(tx, booking.room_id, start, end, None)? {
                return Err(overlap_conflict(booking.room_id, &taken));
            }
            insert_booking_row(tx, &booking, booking.room_id)?;
            record_claim(tx, claim.as_ref(), &booking.id.to_string())?;
            if let Some(at) = notify {
                records::insert_outbox(tx, &[OutboxEvent::booking_created(&booking)], at)?;
            }
            Ok(Created::New(booking))
        })
        .await
    }

    /// See [`Store::book_any_room`]. Picks the free room with the lowest id.
    async fn book_any_room_notify(
        &self,
        booking: &Booking,
        new_room: Option<&Room>,
        claim: Option<&IdempotencyClaim>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Created<(Booking, Room)>> {
        let mut booking = booking.clone();
        let new_room = new_room.cloned();
        let claim = claim.cloned();
        let (start, end) = (ns(booking.slot.start())?, ns(booking.slot.end())?);
        self.write(move |tx| {
            if let Prior::Replay(resource) = check_claim(tx, claim.as_ref())?
                && let Some(b) = replayed_booking(tx, &resource)?
                && let Some(room) = load_room(tx, b.room_id)?
            {
                return Ok(Created::Replayed((b, room)));
            }
            // Walks rooms by id and probes each one's live bookings starting in
            // (start - longest, end): a short index range per room.
            let floor = start_floor(tx, start)?;
            let free = tx
                .prepare_cached(&format!(
                    "SELECT {ROOM_COLUMNS} FROM rooms r WHERE r.max_participants >= 2 AND NOT EXISTS (
                       SELECT 1 FROM bookings b WHERE b.room_id = r.id AND b.cancelled_at IS NULL
                         AND b.slot_start > ?3 AND b.slot_start < ?2 AND b.slot_end > ?1)
                     ORDER BY r.id LIMIT 1"
                ))?
                .query_row(params![start, end, floor], room_from_row)
                .optional()?;
            let room = match (free, new_room) {
                (Some(room), _) => room,
                (None, Some(room)) => {
                    insert_room_row(tx, &room)?;
                    room
                }
                (None, None) => return Err(StoreError::NoFreeRoom),
            };
            booking.room_id = room.id;
            insert_booking_row(tx, &booking, room.id)?;
            record_claim(tx, claim.as_ref(), &booking.id.to_string())?;
            if let Some(at) = notify {
                records::insert_outbox(tx, &[OutboxEvent::booking_created(&booking)], at)?;
            }
            Ok(Created::New((booking, room)))
        })
        .await
    }

    async fn get_booking(&self, id: Uuid) -> StoreResult<Booking> {
        self.read(move |tx| load_booking(tx, id)?.ok_or(StoreError::NotFound)).await
    }

    async fn list_bookings(&self, owner: &str, during: Option<TimeSlot>) -> StoreResult<Vec<Booking>> {
        let owner = owner.to_owned();
        let window = during.map(|s| Ok::<_, StoreError>((ns(s.start())?, ns(s.end())?))).transpose()?;
        self.read(move |tx| match window {
            None => {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT {BOOKING_COLUMNS} FROM bookings WHERE owner = ?1 ORDER BY slot_start, id"
                ))?;
                collect(st.query_map([owner], booking_from_row)?)
            }
            Some((start, end)) => {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT {BOOKING_COLUMNS} FROM bookings
                     WHERE owner = ?1 AND slot_start > ?4 AND slot_start < ?3 AND slot_end > ?2
                     ORDER BY slot_start, id"
                ))?;
                let floor = start_floor(tx, start)?;
                collect(st.query_map(params![owner, start, end, floor], booking_from_row)?)
            }
        })
        .await
    }

    async fn bookings_between(&self, window: TimeSlot) -> StoreResult<Vec<Booking>> {
        let (start, end) = (ns(window.start())?, ns(window.end())?);
        self.read(move |tx| {
            let mut st = tx.prepare_cached(&format!(
                "SELECT {BOOKING_COLUMNS} FROM bookings
                 WHERE cancelled_at IS NULL AND slot_start > ?3 AND slot_start < ?2 AND slot_end > ?1
                 ORDER BY slot_start, id"
            ))?;
            let floor = start_floor(tx, start)?;
            collect(st.query_map(params![start, end, floor], booking_from_row)?)
        })
        .await
    }

    async fn cancel_booking_notify(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Booking> {
        let at = now;
        let now = ns(now)?;
        self.write(move |tx| {
            let n = tx
                .prepare_cached("UPDATE bookings SET cancelled_at = ?2 WHERE id = ?1 AND cancelled_at IS NULL")?
                .execute(params![id.to_string(), now])?;
            let b = load_booking(tx, id)?.ok_or(StoreError::NotFound)?;
            if let (1, Some(enqueued)) = (n, notify) {
                records::insert_outbox(tx, &[OutboxEvent::booking_cancelled(&b, at)], enqueued)?;
            }
            Ok(b)
        })
        .await
    }

    /// See [`Store::set_booking_end`]. An `end` not after the booking's start answers `Conflict`
    /// too (the API validates it first).
    async fn set_booking_end_notify(
        &self,
        id: Uuid,
        end: DateTime<Utc>,
        notify: Option<DateTime<Utc>>,
    ) -> StoreResult<Booking> {
        self.write(move |tx| {
            let mut b = load_booking(tx, id)?.ok_or(StoreError::NotFound)?;
            if b.cancelled_at.is_some() {
                return Err(StoreError::Conflict(format!("booking {id} is cancelled")));
            }
            let slot = TimeSlot::new(b.slot.start(), end)
                .map_err(|_| StoreError::Conflict(format!("booking {id} cannot end before it starts")))?;
            let (start_ns, end_ns) = (ns(slot.start())?, ns(slot.end())?);
            if let Some(taken) = overlapping(tx, b.room_id, start_ns, end_ns, Some(id))? {
                return Err(overlap_conflict(b.room_id, &taken));
            }
            tx.prepare_cached("UPDATE bookings SET slot_end = ?2 WHERE id = ?1")?
                .execute(params![id.to_string(), end_ns])?;
            cover_duration(tx, start_ns, end_ns)?;
            let previous_end = b.slot.end();
            b.slot = slot;
            if let Some(at) = notify.filter(|_| previous_end != end) {
                records::insert_outbox(tx, &[OutboxEvent::booking_extended(&b, previous_end, at)], at)?;
            }
            Ok(b)
        })
        .await
    }

    async fn set_booking_access(&self, id: Uuid, expected: &Access, new: &Access) -> StoreResult<Booking> {
        let (expected, new) = (expected.clone(), new.clone());
        self.write(move |tx| {
            let mut b = load_booking(tx, id)?.ok_or(StoreError::NotFound)?;
            if b.access != expected {
                return Err(StoreError::PreconditionFailed);
            }
            let (access, invite_hash) = access_columns(&new)?;
            tx.prepare_cached("UPDATE bookings SET access = ?2, invite_hash = ?3 WHERE id = ?1")?.execute(params![
                id.to_string(),
                access,
                invite_hash
            ])?;
            b.access = new;
            Ok(b)
        })
        .await
    }

    async fn booking_by_invitation(&self, code_hash: &str) -> StoreResult<Booking> {
        let hash = code_hash.to_owned();
        self.read(move |tx| {
            let mut st =
                tx.prepare_cached(&format!("SELECT {BOOKING_COLUMNS} FROM bookings WHERE invite_hash = ?1"))?;
            st.query_row([hash], booking_from_row).optional()?.ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn purge_idempotency(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let before = ns(before)?;
        self.write(move |tx| {
            let n = tx.prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?.execute([before])?;
            Ok(n as u64)
        })
        .await
    }

    async fn put_assignment(&self, a: &Assignment) -> StoreResult<()> {
        let (booking, host) = (a.booking_id.to_string(), a.host.clone());
        let ready = a.ready_at.map(ns).transpose()?;
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO assignments (booking_id, host, ready_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (booking_id) DO UPDATE SET host = excluded.host, ready_at = excluded.ready_at",
            )?
            .execute(params![booking, host, ready])?;
            Ok(())
        })
        .await
    }

    /// See [`Store::assignments`]. Answers in the order of `booking_ids`.
    async fn assignments(&self, booking_ids: &[Uuid]) -> StoreResult<Vec<Assignment>> {
        let ids = booking_ids.to_vec();
        self.read(move |tx| {
            let mut st = tx.prepare_cached("SELECT host, ready_at FROM assignments WHERE booking_id = ?1")?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let row = st
                    .query_row([id.to_string()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)))
                    .optional()?;
                if let Some((host, ready)) = row {
                    out.push(Assignment { booking_id: id, host, ready_at: ready.map(instant) });
                }
            }
            Ok(out)
        })
        .await
    }

    /// See [`Store::append_operation`]. An id logged before answers `AlreadyExists`.
    async fn append_operation(&self, op: &Operation) -> StoreResult<()> {
        let op = op.clone();
        let at = ns(op.at)?;
        let duration = i64::try_from(op.duration_ms).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO operations (id, at, actor, action, host, booking_id, room_id, result, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                op.id.to_string(),
                at,
                op.actor,
                op.action.as_str(),
                op.host,
                op.booking_id.map(|u| u.to_string()),
                op.room_id.map(room_key),
                op.result,
                duration,
            ])?;
            Ok(())
        })
        .await
    }

    /// See [`Store::operations`]. Entries at the same instant come in the order they were appended.
    async fn operations(&self, window: TimeSlot) -> StoreResult<Vec<Operation>> {
        let (start, end) = (ns(window.start())?, ns(window.end())?);
        self.read(move |tx| {
            let mut st = tx.prepare_cached(
                "SELECT id, at, actor, action, host, booking_id, room_id, result, duration_ms FROM operations
                 WHERE at >= ?1 AND at < ?2 ORDER BY at, seq",
            )?;
            collect(st.query_map(params![start, end], operation_from_row)?)
        })
        .await
    }

    async fn claim_marker(&self, key: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let (key, now) = (key.to_owned(), ns(now)?);
        self.write(move |tx| {
            let n = tx
                .prepare_cached("INSERT OR IGNORE INTO markers (key, at) VALUES (?1, ?2)")?
                .execute(params![key, now])?;
            Ok(n == 1)
        })
        .await
    }

    async fn get_state(&self, key: &str) -> StoreResult<Option<serde_json::Value>> {
        let key = key.to_owned();
        self.read(move |tx| {
            let text: Option<String> = tx
                .prepare_cached("SELECT value FROM state WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?;
            text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Internal(format!("corrupt state: {e}"))))
                .transpose()
        })
        .await
    }

    async fn put_state(&self, key: &str, value: &serde_json::Value) -> StoreResult<()> {
        let key = key.to_owned();
        let text = value.to_string();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, text])?;
            Ok(())
        })
        .await
    }

    async fn append_client_events(
        &self,
        booking_id: Uuid,
        events: &[ClientEvent],
        limits: ClientEventLimits,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        client_events::append(self, booking_id, events, limits, now).await
    }

    async fn client_events(&self, booking_id: Uuid) -> StoreResult<Vec<ClientEvent>> {
        client_events::list(self, booking_id).await
    }

    // ----- session records and the webhook outbox (see `records`) -----

    async fn put_session_room(&self, room: &SessionRoom) -> StoreResult<()> {
        self.put_session_room_impl(room).await
    }

    async fn session_room(&self, janus_room: u64) -> StoreResult<Option<SessionRoom>> {
        self.session_room_impl(janus_room).await
    }

    async fn session_record(&self, _room: RoomId, booking: Uuid) -> StoreResult<Option<StoredRecord>> {
        self.session_record_impl(booking).await
    }

    async fn session_records(&self, bookings: &[Uuid]) -> StoreResult<Vec<StoredRecord>> {
        self.session_records_impl(bookings).await
    }

    async fn put_session_record(
        &self,
        record: &SessionRecord,
        expected: Option<u64>,
        outbox: &[OutboxEvent],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        self.put_session_record_impl(record, expected, outbox, now).await
    }

    async fn due_deliveries(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Delivery>> {
        self.due_deliveries_impl(now, limit).await
    }

    async fn claim_delivery(
        &self,
        _room: RoomId,
        id: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<Delivery>> {
        self.claim_delivery_impl(id, now, until).await
    }

    async fn finish_delivery(&self, _room: RoomId, id: &str, attempt: &Attempt) -> StoreResult<Delivery> {
        self.finish_delivery_impl(id, attempt).await
    }

    async fn deliveries(&self, status: Option<DeliveryStatus>, limit: usize) -> StoreResult<Vec<Delivery>> {
        self.deliveries_impl(status, limit).await
    }

    async fn redeliver(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Delivery> {
        self.redeliver_impl(id, now).await
    }

    async fn purge_deliveries(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.purge_deliveries_impl(before).await
    }

    // ----- keyset pages (see `pages`) -----

    async fn rooms_page(&self, filter: &RoomFilter, after: Option<&RoomKey>, limit: usize) -> StoreResult<Vec<Room>> {
        self.rooms_page_impl(filter, after, limit).await
    }

    async fn bookings_page(
        &self,
        q: &BookingQuery,
        after: Option<&BookingKey>,
        limit: usize,
    ) -> StoreResult<Vec<Booking>> {
        self.bookings_page_impl(q, after, limit).await
    }

    async fn deliveries_page(
        &self,
        status: Option<DeliveryStatus>,
        after: Option<&DeliveryKey>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        self.deliveries_page_impl(status, after, limit).await
    }

    async fn quota_ledger(&self, user: &str) -> StoreResult<Option<super::StoredLedger>> {
        quotas::ledger(self, user).await
    }

    async fn put_quota_ledger(
        &self,
        user: &str,
        ledger: &super::QuotaLedger,
        expected: Option<u64>,
    ) -> StoreResult<u64> {
        quotas::put(self, user, ledger, expected).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path() -> PathBuf {
        std::env::temp_dir().join(format!("suroga-sqlite-unit-{}", Uuid::new_v4())).join("store.db")
    }

    #[test]
    fn open_creates_the_folder_and_a_wal_database_at_the_latest_schema() {
        let path = temp_path();
        let store = SqliteStore::open(&path).unwrap();
        assert!(path.exists());
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(version, MIGRATIONS.len() as i64);
        drop((store, conn));
        // A second open (a restart) keeps the data and applies nothing twice.
        SqliteStore::open(&path).unwrap();
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_database_from_a_newer_build_is_refused() {
        let path = temp_path();
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(SqliteStore::open(&path), Err(StoreError::Internal(_))));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn instants_round_trip_to_the_nanosecond() {
        let t = DateTime::parse_from_rfc3339("2199-12-31T23:59:59.123456789Z").unwrap().with_timezone(&Utc);
        assert_eq!(instant(ns(t).unwrap()), t);
        let far = DateTime::parse_from_rfc3339("2300-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        assert!(matches!(ns(far), Err(StoreError::Internal(_))));
    }

    /// The overlap probes must stay short index ranges, not scans of a room's history.
    #[test]
    fn overlap_probes_search_a_bounded_index_range() {
        let path = temp_path();
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let plan = |sql: &str| -> String {
            let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let args = vec![1i64; st.parameter_count()];
            let rows = st.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let probe = "USING INDEX bookings_room_live_start (room_id=? AND slot_start>? AND slot_start<?)";
        let one_room = plan(&format!(
            "SELECT {BOOKING_COLUMNS} FROM bookings WHERE room_id = ?1 AND cancelled_at IS NULL
             AND slot_start > ?5 AND slot_start < ?3 AND slot_end > ?2 AND id IS NOT ?4 ORDER BY slot_start LIMIT 1"
        ));
        assert!(one_room.contains(probe), "{one_room}");
        let any_room = plan(
            "SELECT id FROM rooms r WHERE r.max_participants >= 2 AND NOT EXISTS (
               SELECT 1 FROM bookings b WHERE b.room_id = r.id AND b.cancelled_at IS NULL
                 AND b.slot_start > ?3 AND b.slot_start < ?2 AND b.slot_end > ?1)
             ORDER BY r.id LIMIT 1",
        );
        assert!(any_room.contains(probe), "{any_room}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_lock_held_past_the_busy_timeout_is_unavailable() {
        let path = temp_path();
        let store = SqliteStore::open(&path).unwrap();
        // Another process holding the write lock, simulated by a foreign connection.
        let mut other = Connection::open(&path).unwrap();
        let tx = other.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
        let started = std::time::Instant::now();
        let err = store.claim_marker("busy", Utc::now()).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { retry_after: Some(_), .. }), "{err:?}");
        assert!(started.elapsed() >= BUSY_TIMEOUT);
        tx.rollback().unwrap();
        assert!(store.claim_marker("busy", Utc::now()).await.unwrap());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
