//! A thin file layer under the writer's connection that hands each commit's WAL frames to the
//! operating system in one `pwrite` instead of two per page.
//!
//! SQLite writes a WAL frame as two calls, its 24-byte header and then its page, so a commit of
//! 160 pages costs 320 system calls on the writer thread, which under sustained bookings spent
//! half its time in them. This layer (a VFS named [`NAME`] that wraps the platform's own)
//! gathers a run of appended frames in memory and writes the run at once:
//!
//! - **Only appends wait.** A write that starts where the previous write to the WAL ended joins
//!   the run; any other write (a frame rewritten in place within a transaction, a checksum
//!   rewrite, a new WAL's header) first writes the run, then goes straight through.
//! - **A commit is on the file before it is visible.** SQLite marks a transaction's last frame
//!   (a non-zero database size in its header) and makes the transaction visible to other
//!   connections only after writing that frame, without another call into the file. So the
//!   write of that frame's page writes the run and returns its error: a commit whose frames
//!   cannot be written fails like any other failed write, and nothing unwritten is ever visible.
//!   This leans on how SQLite writes a frame (its header, then its page, in two calls): the
//!   unit tests below open a copy of the files after every commit and fail if that changes.
//! - **Anything that looks at the file writes the run first:** reads, size, truncate, sync,
//!   file controls and close. A run also goes out once it reaches [`MAX_RUN`].
//!
//! Durability is unchanged: the same bytes reach the same offsets before the same syncs. Files
//! other than WALs pass straight through. Only the writer opens files through this layer.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The VFS name the writer opens its database with.
pub(super) const NAME: &CStr = c"suroga-wal-batch";

/// Most bytes a run holds before it is written regardless: a batch of ordinary bookings writes
/// about 170 KB.
const MAX_RUN: usize = 1024 * 1024;

/// Most bytes one write hands the wrapped file: the platform VFS writes less than 128 KiB per
/// call (it masks a larger count, and answers a short write as a full disk).
const MAX_WRITE: usize = 120 * 1024;

/// Size of a WAL frame's header; bytes 4..8 hold the database size on a commit's last frame.
const FRAME_HEADER: usize = 24;

/// Registers the VFS (once per process) and answers its name, or `None` when SQLite has no
/// default VFS to wrap (then the writer opens its file with the default, as before).
pub(super) fn register() -> Option<&'static str> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find(NULL)` answers the default VFS (or NULL), which lives for the
        // whole process; the copy made here is leaked, so it too lives for the whole process,
        // as a registered VFS must.
        unsafe {
            let inner = ffi::sqlite3_vfs_find(std::ptr::null());
            if inner.is_null() {
                return false;
            }
            let mut vfs: ffi::sqlite3_vfs = std::ptr::read(inner);
            vfs.pNext = std::ptr::null_mut();
            vfs.zName = NAME.as_ptr();
            vfs.pAppData = inner.cast();
            vfs.szOsFile = (inner_offset() + (*inner).szOsFile as usize) as c_int;
            vfs.xOpen = Some(open);
            let vfs = Box::leak(Box::new(vfs));
            ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK
        }
    });
    ok.then(|| NAME.to_str().expect("the VFS name is ASCII"))
}

/// An open file of this VFS: SQLite's base struct first, then the wrapped file (at
/// [`inner_offset`] in the same allocation, which SQLite sizes from `szOsFile`).
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// A WAL file: appends gather into runs. Other files pass straight through.
    wal: bool,
    /// The run not yet written, and where in the file it starts.
    run: Vec<u8>,
    run_at: i64,
    /// Where the last write to the file ended: a write starting there is an append.
    end: i64,
    /// The last write was a commit's last frame header: its page completes the commit.
    commit_page_next: bool,
}

const fn inner_offset() -> usize {
    let size = std::mem::size_of::<File>();
    let align = 16;
    size.div_ceil(align) * align
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite gives `file` `szOsFile` bytes, so the wrapped file fits at `inner_offset`;
    // `pAppData` is the wrapped VFS (set in `register`).
    unsafe {
        let inner_vfs = (*vfs).pAppData as *mut ffi::sqlite3_vfs;
        let inner = file.cast::<u8>().add(inner_offset()).cast::<ffi::sqlite3_file>();
        (*inner).pMethods = std::ptr::null();
        let me = file.cast::<File>();
        let Some(inner_open) = (*inner_vfs).xOpen else {
            (*file).pMethods = std::ptr::null();
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = inner_open(inner_vfs, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // SQLite closes a file whose open failed only through its `pMethods`.
            if let Some(m) = (*inner).pMethods.as_ref()
                && let Some(close) = m.xClose
            {
                close(inner);
            }
            (*file).pMethods = std::ptr::null();
            return rc;
        }
        std::ptr::write(
            me,
            File {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                inner,
                wal: flags & ffi::SQLITE_OPEN_WAL != 0,
                run: Vec::new(),
                run_at: 0,
                end: 0,
                commit_page_next: false,
            },
        );
        ffi::SQLITE_OK
    }
}

/// The file behind SQLite's handle.
///
/// # Safety
/// `file` is a handle this VFS opened and has not closed.
unsafe fn this<'a>(file: *mut ffi::sqlite3_file) -> &'a mut File {
    unsafe { &mut *file.cast::<File>() }
}

impl File {
    fn methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: the wrapped file opened successfully, so its methods are set and live.
        unsafe { &*(*self.inner).pMethods }
    }

    /// Writes the pending run, if any.
    fn flush(&mut self) -> c_int {
        if self.run.is_empty() {
            return ffi::SQLITE_OK;
        }
        let Some(write) = self.methods().xWrite else { return ffi::SQLITE_IOERR_WRITE };
        let mut rc = ffi::SQLITE_OK;
        let mut at = self.run_at;
        for chunk in self.run.chunks(MAX_WRITE) {
            // SAFETY: `chunk` holds its length in initialised bytes; the wrapped file is open.
            rc = unsafe { write(self.inner, chunk.as_ptr().cast(), chunk.len() as c_int, at) };
            if rc != ffi::SQLITE_OK {
                break;
            }
            at += chunk.len() as i64;
        }
        self.run.clear();
        rc
    }

    fn write(&mut self, data: &[u8], at: i64) -> c_int {
        if at == self.end {
            if self.run.is_empty() {
                self.run_at = at;
            }
            self.run.extend_from_slice(data);
        } else {
            // Anything but an append writes the pending run first, then itself.
            let rc = self.flush();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            let Some(write) = self.methods().xWrite else { return ffi::SQLITE_IOERR_WRITE };
            // SAFETY: `data` is the caller's live buffer; the wrapped file is open.
            let rc = unsafe { write(self.inner, data.as_ptr().cast(), data.len() as c_int, at) };
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        self.end = at + data.len() as i64;
        let completes_commit =
            std::mem::replace(&mut self.commit_page_next, data.len() == FRAME_HEADER && data[4..8] != [0, 0, 0, 0]);
        if completes_commit || self.run.len() >= MAX_RUN {
            return self.flush();
        }
        ffi::SQLITE_OK
    }
}

/// Passes a call straight to the wrapped file: `pass!(file, xMethod, args…)`, or
/// `pass!(file, xMethod [answer], args…)` to give `answer` when the wrapped file lacks the method
/// (`SQLITE_IOERR` otherwise).
macro_rules! pass {
    ($file:expr, $method:ident $(, $arg:expr)*) => {
        pass!($file, $method [ffi::SQLITE_IOERR] $(, $arg)*)
    };
    ($file:expr, $method:ident [$missing:expr] $(, $arg:expr)*) => {{
        // SAFETY: SQLite calls a file's methods only on a handle this VFS opened.
        let me = unsafe { this($file) };
        match me.methods().$method {
            // SAFETY: the wrapped file is open; the arguments are SQLite's own, passed on.
            Some(f) => unsafe { f(me.inner $(, $arg)*) },
            None => $missing,
        }
    }};
}

/// Writes a WAL file's pending run, then passes the call on (see [`pass`]); a run that cannot be
/// written answers its error instead.
macro_rules! after_flush {
    ($file:expr, $method:ident $(, $arg:expr)*) => {{
        // SAFETY: SQLite calls a file's methods only on a handle this VFS opened.
        let rc = unsafe { this($file) }.flush();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        pass!($file, $method $(, $arg)*)
    }};
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a handle this VFS opened, once; `File` is read out and dropped.
    let mut me = unsafe { std::ptr::read(file.cast::<File>()) };
    let flushed = me.flush();
    // SAFETY: the wrapped file is open and closed once, here.
    let closed = me.methods().xClose.map_or(ffi::SQLITE_OK, |close| unsafe { close(me.inner) });
    // SAFETY: as above: SQLite calls nothing on a closed handle.
    unsafe { (*file).pMethods = std::ptr::null() };
    if flushed != ffi::SQLITE_OK { flushed } else { closed }
}

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amount: c_int, at: i64) -> c_int {
    after_flush!(file, xRead, buf, amount, at)
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, buf: *const c_void, amount: c_int, at: i64) -> c_int {
    // SAFETY: SQLite calls a file's methods only on a handle this VFS opened.
    if !unsafe { this(file) }.wal {
        return pass!(file, xWrite, buf, amount, at);
    }
    // SAFETY: as above.
    let me = unsafe { this(file) };
    // SAFETY: SQLite passes `amount` readable bytes at `buf`.
    let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), amount.max(0) as usize) };
    me.write(data, at)
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    after_flush!(file, xTruncate, size)
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    after_flush!(file, xSync, flags)
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    after_flush!(file, xFileSize, size)
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    after_flush!(file, xLock, level)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    after_flush!(file, xUnlock, level)
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    pass!(file, xCheckReservedLock, out)
}

unsafe extern "C" fn file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    after_flush!(file, xFileControl, op, arg)
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    pass!(file, xSectorSize[4096])
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    pass!(file, xDeviceCharacteristics[0])
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    pass!(file, xShmMap, region, size, extend, out)
}

unsafe extern "C" fn shm_lock(file: *mut ffi::sqlite3_file, offset: c_int, n: c_int, flags: c_int) -> c_int {
    pass!(file, xShmLock, offset, n, flags)
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite calls a file's methods only on a handle this VFS opened.
    let me = unsafe { this(file) };
    if let Some(f) = me.methods().xShmBarrier {
        // SAFETY: the wrapped file is open.
        unsafe { f(me.inner) }
    }
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    pass!(file, xShmUnmap, delete)
}

unsafe extern "C" fn fetch(file: *mut ffi::sqlite3_file, at: i64, amount: c_int, out: *mut *mut c_void) -> c_int {
    after_flush!(file, xFetch, at, amount, out)
}

unsafe extern "C" fn unfetch(file: *mut ffi::sqlite3_file, at: i64, page: *mut c_void) -> c_int {
    pass!(file, xUnfetch, at, page)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use rusqlite::{Connection, OpenFlags};

    /// A connection through this VFS to a new WAL database of 1 KiB pages in a folder of its own.
    fn writer() -> (Connection, PathBuf) {
        let path = super::super::temp_path();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let conn = Connection::open_with_flags_and_vfs(&path, flags, super::register().unwrap()).unwrap();
        conn.pragma_update(None, "page_size", 1024).unwrap();
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)").unwrap();
        (conn, path)
    }

    /// The rows a process that starts after a crash finds: the database and WAL files as they
    /// are on disk now, copied without the shared-memory index, so SQLite rebuilds it from the
    /// WAL. The copy is removed after.
    fn rows_after_a_crash(path: &Path) -> (i64, i64) {
        let copy = super::super::temp_path();
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        for suffix in ["", "-wal"] {
            let from = format!("{}{suffix}", path.display());
            std::fs::copy(&from, format!("{}{suffix}", copy.display())).unwrap();
        }
        let conn = Connection::open(&copy).unwrap();
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
        let found = rows(&conn);
        drop(conn);
        remove(&copy);
        found
    }

    fn rows(conn: &Connection) -> (i64, i64) {
        conn.query_row("SELECT count(*), coalesce(sum(length(v)), 0) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
    }

    fn remove(path: &Path) {
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn every_commit_is_in_the_wal_file_when_commit_returns() {
        let (conn, path) = writer();
        let reader = Connection::open(&path).unwrap();
        for n in 1..=20i64 {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            for i in 0..n {
                conn.execute("INSERT INTO t (v) VALUES (randomblob(?1))", [100 + i * 37]).unwrap();
            }
            conn.execute_batch("COMMIT").unwrap();
            let written = rows(&conn);
            // Another connection of this process, and a process started after a crash now.
            assert_eq!(rows(&reader), written);
            assert_eq!(rows_after_a_crash(&path), written);
        }
        remove(&path);
    }

    /// A transaction larger than the page cache writes frames before its commit and then writes
    /// some pages again in place (and rewrites checksums); one larger than a run or a single
    /// write of the platform VFS goes out in pieces.
    #[test]
    fn a_transaction_that_spills_and_rewrites_its_pages_commits_whole() {
        let (conn, path) = writer();
        conn.pragma_update(None, "cache_size", 8).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO t (k, v) SELECT i, randomblob(300) FROM n",
            [],
        )
        .unwrap();
        conn.execute("UPDATE t SET v = randomblob(200) WHERE k % 3 = 0", []).unwrap();
        conn.execute("DELETE FROM t WHERE k % 7 = 0", []).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        let written = rows(&conn);
        assert_eq!(written.0, 3000 - 3000 / 7);
        assert_eq!(rows(&Connection::open(&path).unwrap()), written);
        assert_eq!(rows_after_a_crash(&path), written);
        // A write after a rolled-back spill, then a checkpoint and a WAL that starts over.
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn.execute("UPDATE t SET v = randomblob(500)", []).unwrap();
        conn.execute_batch("ROLLBACK").unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        conn.execute("INSERT INTO t (v) VALUES (randomblob(50))", []).unwrap();
        let written = rows(&conn);
        assert_eq!(written.0, 3000 - 3000 / 7 + 1);
        assert_eq!(rows_after_a_crash(&path), written);
        remove(&path);
    }
}
