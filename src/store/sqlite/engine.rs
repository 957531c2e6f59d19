//! The engine under the embedded store: connections, the writer thread with group commit, the
//! reader threads, checkpoints, and the mapping of SQLite's errors.
//!
//! - **One writer thread, group commit.** Every write of this process goes to ONE connection
//!   owned by a dedicated thread (`writer_loop`). The thread takes every write queued at that
//!   moment (up to [`MAX_BATCH`]) and runs them in ONE `BEGIN IMMEDIATE … COMMIT`, each under its
//!   own savepoint: a write that fails rolls back alone, the others commit together. Each caller
//!   gets its answer only after the COMMIT, so nothing is reported that is not stored. Writers
//!   queue in FIFO order instead of spinning on `SQLITE_BUSY`, and a burst of bookings costs one
//!   commit instead of one each.
//! - **One write per commit.** The writer opens its file through `wal_batch`, which hands each
//!   commit's WAL frames to the operating system in one `pwrite` instead of two per page.
//! - **A few readers.** Reads run on [`READERS`] reader threads, each owning one read-only
//!   connection that WAL lets proceed while a write is in flight; reads queue for the first free
//!   thread. A fixed set of threads, not the runtime's blocking pool: under load that pool
//!   starts a new thread whenever a read arrives before the last one's thread is idle again
//!   (51 threads after 20 s of bookings for one slot), and each keeps its own allocator caches.
//! - **Checkpoints that keep up without stalling the writer.** A checkpoint thread copies the
//!   WAL back into the database (`PASSIVE`, never blocking anyone) each time the writer has
//!   added [`PASS_FRAMES`] to it, and syncs the database file after each pass: SQLite itself
//!   syncs it only after a pass during which nothing was committed, which under load never
//!   happens, and the whole cycle's sync would otherwise fall on the writer. A WAL only starts
//!   over from its beginning when a checkpoint has copied every frame and the next write begins,
//!   and a background pass never catches a busy writer; so once the WAL holds
//!   [`RESTART_FRAMES`], the background thread runs passes back to back until at most
//!   [`TAIL_FRAMES`] are left (or its passes stop shortening the tail), and then the writer runs
//!   the closing pass itself between two batches: it copies only that tail (a few milliseconds),
//!   the database's sync runs on another thread while the writer prepares its next batch
//!   ([`ClosingPass`]: a read lock keeps every process from starting the WAL over meanwhile),
//!   and that batch's commit starts the WAL over. Past [`FORCE_FRAMES`] the writer
//!   does not wait for a short tail, so the WAL stays under 64 MB. No `TRUNCATE` or `RESTART`
//!   checkpoint ever waits for the writer, and the WAL file keeps its blocks
//!   ([`WAL_KEEP_BYTES`]).
//!   While a checkpoint copies, a small thread starts the writeback of what it has copied so far,
//!   and of the WAL's new frames, every millisecond (`sync_file_range`), so the copy and the disk
//!   overlap and the syncs of the closing pass (the WAL's before it copies, the database's after)
//!   wait for the last pages only.
//! - **Bounded memory.** Each connection has a small page cache and no memory map: the
//!   operating system's file cache holds the rest, outside the process.
//! - **Many processes.** Every write runs under SQLite's write lock (`BEGIN IMMEDIATE`), so the
//!   contract holds when several processes share the file; a process that finds the lock taken
//!   waits up to [`BUSY_TIMEOUT`] and then answers [`StoreError::Unavailable`].
//! - **Durability.** WAL with `synchronous=NORMAL`: a commit survives a process crash; the last
//!   commits before a power loss may be lost, never corrupted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior, ffi};
use tokio::sync::{mpsc, oneshot};

use super::super::{StoreError, StoreResult};
use super::schema;

/// How long a connection waits for another process's write lock before giving up.
pub const BUSY_TIMEOUT: StdDuration = StdDuration::from_secs(5);

/// Reader threads, each with its connection. Reads are short; a few suffice on a small machine.
pub(super) const READERS: usize = 4;

/// Page cache of the writer, in KiB: the interior pages of the indexes bookings touch stay in
/// memory; the operating system's file cache serves the leaves, which land at random places in
/// files far larger than any cache this process may hold. Every sustained run on a new file
/// measured 2 MiB (the size once said 8 MiB, which SQLite counted in its default 4 KiB pages;
/// see [`size_cache`]); a true 8 MiB cost 7 MB more memory and spent no less CPU per booking.
const WRITER_CACHE_KIB: i64 = 2 * 1024;

/// Page cache of each reader and of the checkpointer, in KiB.
const READER_CACHE_KIB: i64 = 2 * 1024;

/// Page size of a NEW database file (an existing file keeps its own). Bookings change a few rows
/// at random places in four indexes; every changed page goes to the WAL whole, so small pages
/// mean a small WAL.
const PAGE_SIZE: i64 = 1024;

/// New WAL frames (pages) after which the checkpoint thread runs a pass: about 2 MB.
const PASS_FRAMES: u64 = 2 * 1024;

/// WAL frames after which the WAL should start over: about 47 MB (a frame is a page and a
/// 24-byte header). Each start over costs the writer a pause (its closing pass copies the tail,
/// a median 5 ms under full load, and the next commit waits for the database's sync if it is not
/// done yet), so it comes about twice a second under full load, not more often.
const RESTART_FRAMES: u64 = 46 * 1024;

/// Frames left to copy at which the background thread hands the writer its closing pass: a
/// pause of a few milliseconds (the copy) for the batches queued behind it.
const TAIL_FRAMES: u64 = 256;

/// WAL frames past which the writer runs its closing pass without waiting for a short tail, so
/// the WAL stays under 64 MB even when the background thread cannot catch up.
const FORCE_FRAMES: u64 = 58 * 1024;

/// The WAL file is trimmed to this size when it starts over. Above the size it reaches before it
/// starts over, so the file keeps its blocks: trimming and growing it again each cycle cost a
/// truncate on the writer and block allocations that every later sync must wait for.
const WAL_KEEP_BYTES: i64 = 62 * 1024 * 1024;

/// How often a running checkpoint's copied pages are sent on to the disk (see [`writeback_loop`]).
const WRITEBACK_EVERY: StdDuration = StdDuration::from_millis(1);

/// Most writes the writer thread commits together.
pub(super) const MAX_BATCH: usize = 256;

/// Writes that may wait for the writer thread before callers wait to enqueue.
const QUEUE: usize = 1024;

/// What a client is told to wait after the database stayed locked past [`BUSY_TIMEOUT`].
const BUSY_RETRY_AFTER: StdDuration = StdDuration::from_secs(1);

/// The connections of one database file: the writer thread's queue and the reader threads' queue.
pub(super) struct Engine {
    path: PathBuf,
    /// The queue of the writer thread; the thread ends when the engine drops it.
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// The queue of the reader threads; they end when the engine drops it.
    reads: std::sync::mpsc::Sender<ReadJob>,
}

/// One queued read: runs on a reader thread's connection and answers its caller itself.
type ReadJob = Box<dyn FnOnce(&mut Connection) + Send>;

impl Engine {
    /// Opens (creating the folder and file on first start) the database at `path`, switches it to
    /// WAL, applies missing schema migrations, and starts the writer and checkpoint threads.
    pub(super) fn open(path: &Path) -> StoreResult<Self> {
        // The file holds pins and Janus room secrets: private before SQLite first opens it.
        crate::files::prepare_private_file(path, &["-wal", "-shm"]).map_err(|e| StoreError::Unavailable {
            message: format!("cannot create {} privately: {e}", path.display()),
            retry_after: None,
        })?;
        // Declared first so that it is dropped last, after any connection opened here (see
        // `RawFiles`).
        let files: Arc<RawFiles>;
        if !super::page_cache::install() {
            tracing::debug!("sqlite started before the store opened: it keeps its own page cache");
        }
        let writer = open_writer(path)?;
        // The writer opened the WAL (it exists from the first read on).
        files = Arc::new(RawFiles::open(path)?);
        // A process that ended between a closing pass and its database sync left that sync
        // undone: it is done before this writer may start the WAL over.
        files.database.sync_data().map_err(|e| StoreError::Unavailable {
            message: format!("cannot sync {}: {e}", path.display()),
            retry_after: None,
        })?;

        let (reads, read_queue) = std::sync::mpsc::channel();
        let read_queue = Arc::new(Mutex::new(read_queue));
        for _ in 0..READERS {
            let conn = open_reader(path)?;
            let (queue, files) = (read_queue.clone(), files.clone());
            spawn_thread("sqlite-reader", move || reader_loop(conn, &queue, files))?;
        }
        // Checkpoints are this engine's business (see the module docs), never a commit's.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        writer.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
        let frames = WalFrames::watch(&writer);
        let checkpointer = open_sized(path, READER_CACHE_KIB)?;
        // SQLite syncs the database file only after a pass during which nothing was committed,
        // which under load is only ever the writer's own pass: the background thread syncs
        // what its passes copied itself (`files`), so that pass does not carry the whole
        // cycle's sync.
        let (nudge, nudges) = std::sync::mpsc::sync_channel(1);
        let turns = Arc::new(Turns::default());
        let (theirs, counted, synced) = (turns.clone(), frames.counter.clone(), files.clone());
        spawn_thread("sqlite-checkpoint", move || checkpoint_loop(checkpointer, synced, counted, theirs, nudges))?;
        let closing = ClosingPass { guard: open_reader(path)?, held: false, files: files.clone() };
        let watched = Arc::downgrade(&turns);
        let written = files.clone();
        spawn_thread("sqlite-writeback", move || writeback_loop(written, watched))?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        spawn_thread("sqlite-writer", move || writer_loop(writer, frames, turns, closing, queue, nudge))?;
        Ok(Self { path: path.to_owned(), jobs, reads })
    }

    /// The database file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the writer thread inside a write transaction (shared with other writes queued
    /// at the same time) under its own savepoint, and answers once the transaction committed.
    /// An `Err` from `f` undoes what `f` wrote and nothing else.
    pub(super) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(WriteJob { work: Some(f), out: None, reply });
        self.jobs.send(job).await.map_err(|_| StoreError::Internal("sqlite writer thread is gone".into()))?;
        answer.await.map_err(|_| StoreError::Internal("sqlite writer thread dropped a write".into()))?
    }

    /// Runs `f` inside one read transaction (one consistent snapshot) on a reader thread.
    pub(super) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let out = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
                let out = f(&tx)?;
                tx.finish()?;
                Ok(out)
            })();
            // The caller may have gone (a dropped request).
            let _ = reply.send(out);
        });
        self.reads.send(job).map_err(|_| StoreError::Internal("sqlite reader threads are gone".into()))?;
        answer.await.map_err(|_| StoreError::Internal("a sqlite read panicked".into()))?
    }
}

/// A reader thread: runs queued reads one at a time on its connection. Ends when the engine
/// drops the queue's sender.
fn reader_loop(mut conn: Connection, queue: &Mutex<std::sync::mpsc::Receiver<ReadJob>>, files: Arc<RawFiles>) {
    loop {
        // Idle threads wait in turn for the lock; the holder waits for the next read.
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(job) = next else { break };
        // A panicking read must not take the thread with it: its transaction rolls back as it
        // unwinds, and its caller is told (the answer's sender is dropped).
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut conn))).is_err() {
            tracing::warn!("a sqlite read panicked");
        }
    }
    drop(conn);
    drop(files);
}

/// Plain handles on the database file and its WAL, for the syncs and the writeback this engine
/// runs outside SQLite, shared by its threads.
///
/// POSIX takes ALL of a process's locks on a file away when ANY of its handles on that file is
/// closed. SQLite's own handles defer their close while another connection of the process holds
/// a lock; these cannot, so they close only after every connection of this engine closed: each
/// thread drops its connections before its reference. (Two engines on one file in one process
/// would still take each other's locks away when one closes; the service opens one.)
struct RawFiles {
    database: std::fs::File,
    wal: std::fs::File,
}

/// The WAL file of the database at `path`.
fn wal_path(path: &Path) -> PathBuf {
    crate::files::with_suffix(path, "-wal")
}

impl RawFiles {
    fn open(path: &Path) -> StoreResult<Self> {
        let open = |p: &Path| {
            std::fs::File::open(p).map_err(|e| StoreError::Unavailable {
                message: format!("cannot open {}: {e}", p.display()),
                retry_after: None,
            })
        };
        Ok(Self { database: open(path)?, wal: open(&wal_path(path))? })
    }
}

fn open_connection(path: &Path) -> StoreResult<Connection> {
    open_connection_with(path, None)
}

/// A connection to `path` through the VFS named `vfs` (the default when `None`).
fn open_connection_with(path: &Path, vfs: Option<&str>) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match vfs {
        Some(vfs) => Connection::open_with_flags_and_vfs(path, flags, vfs),
        None => Connection::open_with_flags(path, flags),
    }
    .map_err(|e| StoreError::Unavailable {
        message: format!("cannot open {}: {e}", path.display()),
        retry_after: None,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Mapped pages would count against this process's memory; `pread` into a small cache
    // leaves the file's pages to the operating system.
    conn.pragma_update(None, "mmap_size", 0)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// The writer's connection: a new file gets its page size and WAL mode, every file the latest
/// schema.
fn open_writer(path: &Path) -> StoreResult<Connection> {
    // Each commit's WAL frames reach the file in one write (see `wal_batch`).
    let mut writer = open_connection_with(path, super::wal_batch::register())?;
    // Only a file without pages takes a page size; WAL mode then fixes it.
    writer.pragma_update(None, "page_size", PAGE_SIZE)?;
    // WAL is a property of the file: set once, every later connection (and process) uses it.
    let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Internal(format!("{} refused WAL mode (got {mode})", path.display())));
    }
    schema::migrate(&mut writer)?;
    size_cache(&writer, WRITER_CACHE_KIB)?;
    Ok(writer)
}

/// Gives `conn` a page cache of `kib` KiB of the file's own pages. SQLite turns a size in KiB into
/// a number of pages with the page size the connection knows at that moment, and does not count
/// again when the page size then changes: set on a new file, before its `page_size` (while the
/// size is SQLite's default 4 KiB), 8 MiB became 1,982 pages, 2 MiB of this store's 1 KiB pages.
/// So the size is set once the file's page size is settled, and its first page read.
fn size_cache(conn: &Connection, kib: i64) -> StoreResult<()> {
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
    conn.pragma_update(None, "cache_size", -kib)?;
    Ok(())
}

/// A connection to a file that exists, with a page cache of `kib` KiB.
fn open_sized(path: &Path, kib: i64) -> StoreResult<Connection> {
    let conn = open_connection(path)?;
    size_cache(&conn, kib)?;
    Ok(conn)
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = open_sized(path, READER_CACHE_KIB)?;
    // A guard against a write slipping onto a reader, where it would bypass the writer lock.
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

/// What this writer thread last saw of the database, for what it remembers across writes
/// (find-or-create's walks, [`super::rows::Walks`]): such a memory holds only while the
/// database is exactly what this thread's own committed writes made it.
struct Seen {
    /// Bumped whenever that may have stopped: another connection committed (SQLite's
    /// `data_version` changed), a write of this thread that recorded such a memory rolled back
    /// (a write refused before it recorded anything, a booking over its quota, leaves every
    /// memory true), or a whole batch did.
    epoch: std::cell::Cell<u64>,
    /// `PRAGMA data_version` at the start of this thread's last batch.
    data_version: std::cell::Cell<Option<i64>>,
    /// The running write recorded such a memory ([`remembering`]).
    remembered: std::cell::Cell<bool>,
}

thread_local! {
    static SEEN: Seen = const {
        Seen {
            epoch: std::cell::Cell::new(0),
            data_version: std::cell::Cell::new(None),
            remembered: std::cell::Cell::new(false),
        }
    };
}

/// The writer thread's epoch (see [`Seen`]): a memory recorded under another epoch is stale.
pub(super) fn writer_epoch() -> u64 {
    SEEN.with(|s| s.epoch.get())
}

/// The running write records a memory that holds only if the write commits: if it rolls back,
/// a new epoch starts.
pub(super) fn remembering() {
    SEEN.with(|s| s.remembered.set(true));
}

/// The database may no longer be what this thread's committed writes made it.
fn new_epoch() {
    SEEN.with(|s| s.epoch.set(s.epoch.get().wrapping_add(1)));
}

/// Starts a new epoch when another connection committed since this thread last looked.
/// `version` is `PRAGMA data_version`, read inside the write transaction (so nobody else can
/// commit before this batch does).
fn saw_data_version(version: i64) {
    let before = SEEN.with(|s| s.data_version.replace(Some(version)));
    if before != Some(version) {
        new_epoch();
    }
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
        SEEN.with(|s| s.remembered.set(false));
        // A panicking write must not take the writer thread (and every later write) with it.
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(StoreError::Internal("a sqlite write panicked".into())));
        if out.is_err() {
            if SEEN.with(|s| s.remembered.get()) {
                new_epoch();
            }
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

/// The number of frames in the writer's WAL after its last commit, kept by SQLite's WAL hook.
struct WalFrames {
    counter: Arc<AtomicU64>,
    /// The hook's argument: one reference of `counter`, given back by [`WalFrames::unwatch`].
    arg: usize,
}

impl WalFrames {
    /// Installs the hook on `conn` (replacing SQLite's own auto-checkpoint hook, which is off).
    fn watch(conn: &Connection) -> Self {
        unsafe extern "C" fn on_commit(
            arg: *mut std::ffi::c_void,
            _db: *mut rusqlite::ffi::sqlite3,
            _name: *const std::ffi::c_char,
            frames: std::ffi::c_int,
        ) -> std::ffi::c_int {
            // SAFETY: `arg` is a reference of the counter held until `unwatch` removes the hook.
            let counter = unsafe { &*(arg as *const AtomicU64) };
            counter.store(frames.max(0) as u64, Ordering::Relaxed);
            rusqlite::ffi::SQLITE_OK
        }
        let counter = Arc::new(AtomicU64::new(0));
        let arg = Arc::into_raw(counter.clone()) as usize;
        // SAFETY: `conn` is a valid open connection; the callback only reads `arg`, which stays
        // alive until `unwatch`.
        unsafe { rusqlite::ffi::sqlite3_wal_hook(conn.handle(), Some(on_commit), arg as *mut std::ffi::c_void) };
        Self { counter, arg }
    }

    fn get(&self) -> u64 {
        self.counter.load(Ordering::Relaxed)
    }

    /// Removes the hook from `conn` (the connection `watch` was given) and frees its argument.
    fn unwatch(self, conn: &Connection) {
        // SAFETY: the hook goes first, so nothing can use `arg` after it is released.
        unsafe {
            rusqlite::ffi::sqlite3_wal_hook(conn.handle(), None, std::ptr::null_mut());
            drop(Arc::from_raw(self.arg as *const AtomicU64));
        }
    }
}

/// Who checkpoints when: the background thread's passes and the writer's closing pass take
/// turns, because two checkpoints cannot run at once and the writer must not wait for one.
#[derive(Default)]
struct Turns {
    /// Set by the writer once the WAL holds [`RESTART_FRAMES`]: the background thread then runs
    /// passes back to back until what is left to copy is short.
    restart: AtomicBool,
    /// Set by the background thread when a restart is due and at most [`TAIL_FRAMES`] are left
    /// to copy: the writer's turn.
    ready: AtomicBool,
    /// Held by whoever runs a checkpoint.
    busy: AtomicBool,
    /// The writeback thread, woken when a checkpoint starts or a database sync is due.
    writeback: std::sync::OnceLock<std::thread::Thread>,
    /// The database sync the writer's closing pass leaves to the writeback thread.
    db_sync: Mutex<DbSync>,
    /// Signalled when the writeback thread finished a database sync.
    db_synced: std::sync::Condvar,
}

/// Where the database sync after a closing pass stands.
#[derive(Default)]
enum DbSync {
    #[default]
    Idle,
    /// Asked for; the writeback thread has not started it.
    Due,
    /// The writeback thread is syncing.
    Running,
    /// The writeback thread's answer, not yet taken by the writer.
    Done(std::io::Result<()>),
}

impl Turns {
    fn try_lock(&self) -> bool {
        let locked = self.busy.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_ok();
        if locked && let Some(t) = self.writeback.get() {
            t.unpark();
        }
        locked
    }

    fn unlock(&self) {
        self.busy.store(false, Ordering::SeqCst);
    }

    /// The writer, whenever the WAL holds fewer than [`RESTART_FRAMES`]: a restart still marked
    /// due (or the writer's turn still handed over) belongs to a WAL that has started over since,
    /// and goes. Seen once in each of two one-slot runs: after a complete closing pass the
    /// background thread's next pass found nothing to copy and handed the writer its turn, so
    /// it then waited for the writer while the writer waited for a full WAL, and that closing
    /// pass copied all of it (84 to 103 ms instead of 5). A commit that wrote no frame right
    /// after the pass would leave the restart marked due like that; that trigger is inferred
    /// from the log, not reproduced. Cleared under the lock, so that a pass in flight cannot
    /// mark it again after.
    fn forget_restart(&self) {
        if (self.restart.load(Ordering::SeqCst) || self.ready.load(Ordering::SeqCst)) && self.try_lock() {
            self.restart.store(false, Ordering::SeqCst);
            self.ready.store(false, Ordering::SeqCst);
            tracing::debug!("sqlite restart no longer due: the WAL started over");
            self.unlock();
        }
    }

    fn db_sync(&self) -> std::sync::MutexGuard<'_, DbSync> {
        self.db_sync.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the writeback thread for a database sync.
    fn ask_db_sync(&self) {
        *self.db_sync() = DbSync::Due;
        if let Some(t) = self.writeback.get() {
            t.unpark();
        }
    }

    /// The writeback thread: runs the database sync if one is due.
    fn run_db_sync(&self, database: &std::fs::File) {
        {
            let mut state = self.db_sync();
            if !matches!(*state, DbSync::Due) {
                return;
            }
            *state = DbSync::Running;
        }
        let outcome = database.sync_data();
        *self.db_sync() = DbSync::Done(outcome);
        self.db_synced.notify_all();
    }

    /// The writer: the outcome of the sync it asked for, waiting while it runs; `None` when the
    /// writeback thread had not started it (it is then no longer due: the caller syncs).
    fn take_db_sync(&self) -> Option<std::io::Result<()>> {
        let mut state = self.db_sync();
        loop {
            match std::mem::take(&mut *state) {
                DbSync::Idle | DbSync::Due => return None,
                DbSync::Running => {
                    *state = DbSync::Running;
                    state = self.db_synced.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                DbSync::Done(outcome) => return Some(outcome),
            }
        }
    }
}

/// The writer's closing pass without its database sync on the writer's path.
///
/// A WAL may start over only once the database holds every frame on disk: SQLite's complete
/// checkpoint syncs the database before it records that every frame was copied, and that sync
/// (about half of the pass) stalled every write queued behind it. Here the closing pass runs
/// with `synchronous=OFF` and the writeback thread syncs the database while the writer prepares
/// its next batch. Until that sync is done:
///
/// - **No connection of any process may start the WAL over.** A read transaction (`guard`), begun
///   before the pass while frames were still left to copy, holds a WAL read lock: SQLite starts a
///   WAL over only when no reader uses it, and otherwise appends (its own rule, no error).
/// - **The WAL is synced before the copy**, as SQLite would have (`wal`): a page copied into the
///   database must not be newer than what the WAL holds on disk.
/// - **The writer commits nothing.** It waits for the sync before its next `COMMIT`
///   ([`ClosingPass::settle`]), ends the guard, and the commit starts the WAL over. A failed sync
///   is retried by the writer itself; while it fails, batches fail (`Unavailable`) and the WAL
///   keeps every frame.
struct ClosingPass {
    /// Declared before `files`, so it closes first.
    guard: Connection,
    /// The guard's read transaction is open (a pass copied the whole WAL, not yet synced).
    held: bool,
    files: Arc<RawFiles>,
}

impl ClosingPass {
    /// Copies what is left of the WAL (see the type's docs); answers SQLite's
    /// `(busy, log, checkpointed)`.
    fn run(&mut self, conn: &Connection, turns: &Turns) -> rusqlite::Result<(i64, i64, i64)> {
        if self.held {
            // The last pass's sync failed and is still owed; nothing was committed since.
            return Ok((0, 0, 0));
        }
        if !self.guard.is_autocommit() {
            // A read whose end failed last time: a guard must start with this pass.
            self.guard.execute_batch("ROLLBACK")?;
        }
        self.guard.execute_batch("BEGIN")?;
        let outcome = self.copy(conn);
        if let Ok((busy, log, done)) = outcome
            && busy == 0
            && done == log
            && done > 0
        {
            self.held = true;
            turns.ask_db_sync();
        } else {
            self.guard.execute_batch("COMMIT")?;
        }
        outcome
    }

    fn copy(&self, conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
        // The read starts now, while frames are left to copy: it takes a WAL read lock.
        self.guard.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        self.files.wal.sync_data().map_err(|e| io_failure(ffi::SQLITE_IOERR_FSYNC, "syncing the WAL", &e))?;
        conn.pragma_update(None, "synchronous", "OFF")?;
        let pass = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)));
        let restored = conn.pragma_update(None, "synchronous", "NORMAL");
        let pass = pass?;
        restored?;
        Ok(pass)
    }

    /// Before the writer's next commit: the database sync of the last complete pass is done (the
    /// writer syncs itself when the writeback thread had not started or failed), and the guard
    /// is gone. `Err` when the database cannot be synced: the batch must not commit.
    fn settle(&mut self, turns: &Turns) -> rusqlite::Result<()> {
        if !self.held {
            return Ok(());
        }
        let waited = std::time::Instant::now();
        let synced = match turns.take_db_sync() {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "sqlite database sync failed; retrying");
                self.files.database.sync_data()
            }
            None => self.files.database.sync_data(),
        };
        synced.map_err(|e| io_failure(ffi::SQLITE_IOERR_FSYNC, "syncing the database", &e))?;
        self.guard.execute_batch("COMMIT")?;
        self.held = false;
        tracing::debug!(waited_us = waited.elapsed().as_micros() as u64, "sqlite closing pass synced");
        Ok(())
    }
}

/// An I/O failure outside SQLite, as SQLite would report it.
fn io_failure(code: std::ffi::c_int, what: &str, e: &std::io::Error) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some(format!("{what}: {e}")))
}

/// The writer thread: waits for a write, takes every other one already queued, and commits
/// them together; between batches it keeps the WAL short (see the module docs). Ends when every
/// store handle is dropped.
fn writer_loop(
    conn: Connection,
    frames: WalFrames,
    turns: Arc<Turns>,
    mut closing: ClosingPass,
    mut queue: mpsc::Receiver<Box<dyn Job>>,
    checkpoint: SyncSender<()>,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut next_pass = PASS_FRAMES;
    let mut tally = Tally::default();
    loop {
        if closing.held
            && queue.is_empty()
            && let Err(e) = closing.settle(&turns)
        {
            tracing::warn!(error = %e, "sqlite closing pass");
        }
        let Some(first) = queue.blocking_recv() else { break };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = run_batch(&conn, &mut batch, || closing.settle(&turns));
        if let Err(e) = &outcome {
            new_epoch();
            tracing::warn!(error = %e, writes = batch.len(), "sqlite write batch failed");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        let batch_len = batch.len();
        for job in batch.drain(..) {
            job.finish(outcome.as_ref().map(|_| ()));
        }
        let now = frames.get();
        tally.add(batch_len, now);
        if now < next_pass.saturating_sub(PASS_FRAMES) {
            // The WAL started over.
            next_pass = now + PASS_FRAMES;
        }
        if now >= next_pass {
            // A full channel means a pass is already due: nothing to add.
            let _ = checkpoint.try_send(());
            next_pass = now + PASS_FRAMES;
        }
        if now < RESTART_FRAMES {
            turns.forget_restart();
            continue;
        }
        if !turns.restart.swap(true, Ordering::SeqCst) {
            let _ = checkpoint.try_send(());
        }
        // The closing pass copies what the background passes left and syncs; the next batch
        // then starts the WAL over. Past FORCE_FRAMES the writer does not wait for a short tail.
        if now >= FORCE_FRAMES {
            // Wait for the background pass in flight, so the WAL stays bounded.
            while !turns.try_lock() {
                std::thread::sleep(StdDuration::from_micros(100));
            }
        } else if !turns.ready.load(Ordering::SeqCst) || !turns.try_lock() {
            continue;
        }
        let started = std::time::Instant::now();
        match closing.run(&conn, &turns) {
            Ok((busy, log, done)) => {
                tracing::debug!(busy, log, done, ms = started.elapsed().as_millis() as u64, "sqlite restart pass");
                if busy == 0 && done == log {
                    turns.restart.store(false, Ordering::SeqCst);
                }
            }
            Err(e) => tracing::warn!(error = %e, "sqlite checkpoint failed"),
        }
        // Not complete (a reader held an old snapshot): the background thread goes on.
        turns.ready.store(false, Ordering::SeqCst);
        turns.unlock();
    }
    // Every store handle is gone: nothing may start the WAL over before the database is synced.
    if let Err(e) = closing.settle(&turns) {
        tracing::warn!(error = %e, "sqlite closing pass");
    }
    frames.unwatch(&conn);
    // The connections close before the plain handles (see `RawFiles`).
    drop(conn);
    drop(closing);
    // Dropping `checkpoint` here ends the checkpoint thread.
}

/// What the writer committed, logged (at debug) about once a second: how many writes per
/// batch, and how many WAL frames (pages) a write adds, which sets how often the WAL starts over.
struct Tally {
    since: std::time::Instant,
    batches: u64,
    writes: u64,
    frames: u64,
    last_frames: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Self { since: std::time::Instant::now(), batches: 0, writes: 0, frames: 0, last_frames: 0 }
    }
}

impl Tally {
    /// Counts a batch of `writes` after which the WAL holds `frames`.
    fn add(&mut self, writes: usize, frames: u64) {
        // Fewer frames than before: the WAL started over with this batch.
        self.frames += frames.checked_sub(self.last_frames).unwrap_or(frames);
        self.last_frames = frames;
        self.batches += 1;
        self.writes += writes as u64;
        let elapsed = self.since.elapsed();
        if elapsed >= StdDuration::from_secs(1) {
            let per = |n: u64, d: u64| n as f64 / d.max(1) as f64;
            tracing::debug!(
                writes_per_s = per(self.writes * 1000, elapsed.as_millis() as u64).round(),
                writes_per_batch = per(self.writes, self.batches),
                frames_per_write = per(self.frames, self.writes),
                "sqlite writer"
            );
            *self = Self { last_frames: frames, ..Self::default() };
        }
    }
}

/// The checkpoint thread: copies the WAL back into the database and syncs it, without blocking
/// anyone (`PASSIVE`), when the writer nudges it or a second passes; once a restart is due, pass
/// after pass until at most [`TAIL_FRAMES`] are left, then it hands the writer its turn. Ends
/// with the writer.
fn checkpoint_loop(
    conn: Connection,
    files: Arc<RawFiles>,
    frames: Arc<AtomicU64>,
    turns: Arc<Turns>,
    nudges: Receiver<()>,
) {
    use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
    // Frames left after the last pass while a restart is due.
    let mut last_left: Option<u64> = None;
    // Frames copied (of this WAL) as of the last pass: a pass that copied none syncs nothing.
    let mut last_done: i64 = 0;
    loop {
        let hurry = turns.restart.load(Ordering::SeqCst) && !turns.ready.load(Ordering::SeqCst);
        let writer_gone = if hurry {
            matches!(nudges.try_recv(), Err(TryRecvError::Disconnected))
        } else {
            matches!(nudges.recv_timeout(StdDuration::from_secs(1)), Err(RecvTimeoutError::Disconnected))
        };
        if writer_gone {
            break;
        }
        if turns.ready.load(Ordering::SeqCst) {
            // The writer's turn.
            continue;
        }
        if !turns.try_lock() {
            // The writer's closing pass runs: no spinning on the core it needs.
            std::thread::sleep(StdDuration::from_millis(1));
            continue;
        }
        let started = std::time::Instant::now();
        let pass =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)));
        match pass {
            Ok((log, done)) => {
                // SQLite syncs the database only when no commit came during the pass, so the
                // pages this pass wrote are synced here, off the writer's path (after a pass
                // SQLite synced, this finds nothing left to write). `done` counts the WAL's
                // copied frames; it is smaller than before when the WAL started over.
                let copied = done > 0 && done != last_done;
                last_done = done;
                if copied && let Err(e) = files.database.sync_data() {
                    tracing::warn!(error = %e, "sqlite database sync failed");
                }
                let now = frames.load(Ordering::Relaxed);
                // Fewer frames than copied: the WAL started over meanwhile.
                let left = if now >= done as u64 { now - done as u64 } else { now };
                if turns.restart.load(Ordering::SeqCst) {
                    // A short tail, or one these passes no longer shorten (the writer adds
                    // nearly as fast as they copy): the writer's turn.
                    let stuck = last_left.is_some_and(|l| left >= l - l / 4);
                    if left <= TAIL_FRAMES || stuck {
                        turns.ready.store(true, Ordering::SeqCst);
                        last_left = None;
                    } else {
                        last_left = Some(left);
                    }
                } else {
                    last_left = None;
                }
                tracing::debug!(log, done, left, ms = started.elapsed().as_millis() as u64, "sqlite checkpoint pass");
            }
            Err(e) => {
                tracing::warn!(error = %e, "sqlite checkpoint failed");
                std::thread::sleep(StdDuration::from_millis(100));
            }
        }
        turns.unlock();
    }
    // The connection closes before the plain handles (see `RawFiles`).
    drop(conn);
    drop(files);
}

/// Runs the database sync a closing pass leaves to it ([`ClosingPass`]). While a checkpoint
/// copies pages into the database file, starts the writeback of the database and the WAL every
/// [`WRITEBACK_EVERY`], so that the syncs
/// find most pages already on their way to disk instead of starting them all at once (and the
/// copy and the disk overlap). Under load checkpoints run back to back, so the WAL's frames go
/// out soon after they are committed. Sleeps while no checkpoint runs; ends with the engine.
fn writeback_loop(files: Arc<RawFiles>, turns: std::sync::Weak<Turns>) {
    if let Some(t) = turns.upgrade() {
        let _ = t.writeback.set(std::thread::current());
    }
    loop {
        // Woken by `Turns::try_lock` and `Turns::ask_db_sync`; the timeout only notices an
        // engine that is gone.
        std::thread::park_timeout(StdDuration::from_secs(1));
        match turns.upgrade() {
            Some(t) => t.run_db_sync(&files.database),
            None => return,
        }
        loop {
            let Some(t) = turns.upgrade() else { return };
            if !t.busy.load(Ordering::SeqCst) {
                break;
            }
            drop(t);
            start_writeback(&files.database);
            start_writeback(&files.wal);
            std::thread::sleep(WRITEBACK_EVERY);
        }
    }
}

/// Starts the writeback of `file`'s dirty pages without waiting for them to reach the disk. A
/// failure changes nothing: the checkpoint's own sync writes them.
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor stays open for the borrow of `file`; the call reads no memory.
    unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Elsewhere the checkpoint's own sync starts the writeback.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File) {}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> StoreResult<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(|e| StoreError::Internal(format!("cannot start the {name} thread: {e}")))
}

/// Runs `batch` in one transaction; `before_commit` may still refuse the commit.
fn run_batch(
    conn: &Connection,
    batch: &mut [Box<dyn Job>],
    before_commit: impl FnOnce() -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    saw_data_version(conn.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))?);
    for job in batch.iter_mut() {
        job.run(conn)?;
    }
    before_commit()?;
    conn.prepare_cached("COMMIT")?.execute([])?;
    Ok(())
}

// ----- errors -----

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        store_error(&e)
    }
}

/// Maps a SQLite failure into the shared variants: locked → `Unavailable` with a retry hint,
/// constraint violations → `AlreadyExists` / `NotFound`, I/O → `Unavailable`, the rest `Internal`.
pub(super) fn store_error(e: &rusqlite::Error) -> StoreError {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A restart marked due, or the writer's turn handed over, for a WAL that has started over
    /// since goes; never while a pass holds the lock.
    #[test]
    fn a_restart_marked_for_a_wal_that_started_over_goes_once_no_pass_runs() {
        let turns = Turns::default();
        turns.restart.store(true, Ordering::SeqCst);
        turns.ready.store(true, Ordering::SeqCst);
        assert!(turns.try_lock(), "a pass in flight");
        turns.forget_restart();
        assert!(turns.restart.load(Ordering::SeqCst) && turns.ready.load(Ordering::SeqCst), "kept while a pass runs");
        turns.unlock();
        turns.forget_restart();
        assert!(!turns.restart.load(Ordering::SeqCst) && !turns.ready.load(Ordering::SeqCst));
        assert!(turns.try_lock(), "the lock is free again");
    }

    /// Bytes the connection's page cache holds now.
    fn cache_used(conn: &Connection) -> i64 {
        let (mut now, mut peak) = (0, 0);
        // SAFETY: the handle is live for the borrow of `conn`; the call only reads counters.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_db_status(
                conn.handle(),
                rusqlite::ffi::SQLITE_DBSTATUS_CACHE_USED,
                &mut now,
                &mut peak,
                0,
            )
        };
        assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
        i64::from(now)
    }

    /// A writer on a new file, with `autocheckpoint` on or off, after it inserted `rows` rows of
    /// 400 random bytes into table `filler`.
    fn filled_writer(rows: usize, autocheckpoint: bool) -> (PathBuf, Connection) {
        let path = super::super::temp_path();
        crate::files::prepare_private_file(&path, &["-wal", "-shm"]).unwrap();
        let writer = open_writer(&path).unwrap();
        if !autocheckpoint {
            writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        }
        writer
            .execute_batch(&format!(
                "CREATE TABLE filler (v BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
                 INSERT INTO filler SELECT randomblob(400) FROM n;"
            ))
            .unwrap();
        (path, writer)
    }

    /// A writer on a new file with a few hundred WAL frames, and its closing pass.
    fn closing_pass_over_a_filled_wal() -> (PathBuf, Connection, ClosingPass) {
        let (path, writer) = filled_writer(400, false);
        let closing = ClosingPass {
            guard: open_reader(&path).unwrap(),
            held: false,
            files: Arc::new(RawFiles::open(&path).unwrap()),
        };
        (path, writer, closing)
    }

    /// The WAL header's checkpoint sequence number: it changes exactly when the WAL starts over.
    fn wal_generation(path: &Path) -> [u8; 4] {
        let header = std::fs::read(wal_path(path)).unwrap();
        header[12..16].try_into().unwrap()
    }

    /// Closes the connections, then removes the file's folder.
    fn clean_up(path: &Path, writer: Connection, closing: ClosingPass) {
        drop((writer, closing));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    fn insert(conn: &Connection) {
        conn.execute("INSERT INTO filler VALUES (randomblob(400))", []).unwrap();
    }

    #[test]
    fn no_connection_starts_the_wal_over_between_a_closing_pass_and_its_database_sync() {
        let (path, writer, mut closing) = closing_pass_over_a_filled_wal();
        let turns = Turns::default();
        let (busy, log, done) = closing.run(&writer, &turns).unwrap();
        assert_eq!((busy, done), (0, log), "the pass copied the whole WAL");
        assert!(closing.held && matches!(*turns.db_sync(), DbSync::Due), "the sync is asked for, not done");

        // Another connection (as another process would) and the writer itself: both append.
        let before = wal_generation(&path);
        insert(&open_connection(&path).unwrap());
        insert(&writer);
        assert_eq!(wal_generation(&path), before, "the WAL started over before the database was synced");
        clean_up(&path, writer, closing);
    }

    #[test]
    fn once_the_database_is_synced_the_next_commit_starts_the_wal_over() {
        for synced_by_the_writeback_thread in [true, false] {
            let (path, writer, mut closing) = closing_pass_over_a_filled_wal();
            let turns = Arc::new(Turns::default());
            closing.run(&writer, &turns).unwrap();
            if synced_by_the_writeback_thread {
                let (theirs, files) = (turns.clone(), closing.files.clone());
                std::thread::spawn(move || theirs.run_db_sync(&files.database)).join().unwrap();
                assert!(matches!(*turns.db_sync(), DbSync::Done(Ok(()))));
            }
            let before = wal_generation(&path);
            closing.settle(&turns).unwrap();
            assert!(!closing.held && matches!(*turns.db_sync(), DbSync::Idle));
            insert(&writer);
            assert_ne!(wal_generation(&path), before, "the WAL did not start over");
            clean_up(&path, writer, closing);
        }
    }

    #[test]
    fn a_new_files_writer_caches_its_size_in_the_files_own_pages() {
        // About 12 MB of rows in 1 KiB pages: more than the cache may hold.
        let (path, writer) = filled_writer(24000, true);
        writer.query_row("SELECT sum(length(v)) FROM filler", [], |r| r.get::<_, i64>(0)).unwrap();
        let used = cache_used(&writer);
        let wanted = WRITER_CACHE_KIB * 1024;
        // Counted in SQLite's default 4 KiB pages, the cache would hold about a quarter of that.
        assert!(used > wanted * 3 / 4, "a {wanted}-byte cache holds only {used} bytes of 1 KiB pages");
        // A cache at its size takes the process's least recently used idle page, which may be
        // another connection's (tests run in parallel), so it may hold a little more.
        assert!(used < wanted * 2, "a {wanted}-byte cache holds {used} bytes");
        drop(writer);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
