//! A thin layer over SQLite's own page cache that skips the whole-cache scan SQLite's cache runs
//! at nearly every commit of a growing b-tree.
//!
//! At the end of every transaction SQLite drops the cached pages past the end of the database
//! (`xTruncate`). Its cache answers that with a loop over the pages from the end of the database
//! to the highest page number it ever held, and over its whole hash table when that gap is wider
//! than the table. When a b-tree splits a page, SQLite orders the new pages by swapping their
//! numbers through a spare one, the page that holds the file's lock bytes (page 1,048,577 with 1 KiB
//! pages), so from the first split on the cache believes it holds a page a million pages past
//! the end, and every commit scans all 4,096 slots of the writer's table (6% of the writer
//! thread under sustained bookings in `perf`).
//!
//! This layer keeps, per cache, the highest page number a page of it really has (every page
//! enters through a fetch that creates it or a change of number, both seen here), leaving out the
//! spare page, which only exists between two of the swap's renumberings. A truncation past that
//! number has nothing to drop and is not passed on; any other goes through unchanged. Every other
//! call goes straight to SQLite's cache.
//!
//! SQLite takes a page cache only before it starts ([`install`]); a process where something
//! opened a database first keeps SQLite's own, which is only slower.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// SQLite's own page cache, which every call ends in.
static INNER: OnceLock<Methods> = OnceLock::new();

/// A copy of a page cache's methods, kept for the whole process.
struct Methods(ffi::sqlite3_pcache_methods2);

// SAFETY: function pointers, and an argument SQLite passes only to its own cache's `xInit` and
// `xShutdown`, which SQLite may call from any thread.
unsafe impl Send for Methods {}
// SAFETY: as above; never written after it is set.
unsafe impl Sync for Methods {}

/// The byte offset of SQLite's lock bytes (`PENDING_BYTE`): the page that holds it is never a
/// page of the database, and b-tree balancing borrows its number.
const PENDING_BYTE: c_uint = 0x4000_0000;

/// One cache: SQLite's, and what this layer knows of its page numbers.
struct Cache {
    /// SQLite's cache methods (a stand-in's in unit tests).
    methods: &'static ffi::sqlite3_pcache_methods2,
    inner: *mut ffi::sqlite3_pcache,
    /// The number of the page that holds the lock bytes, for this cache's page size.
    spare: c_uint,
    /// At least the highest number of a page in the cache, the spare page left out.
    highest: c_uint,
    /// A page holds the spare number (between two renumberings of a b-tree balance).
    spare_held: bool,
}

/// Puts this layer under every SQLite connection the process opens from now on. `false` when
/// SQLite had already started (then its own cache stays, which only costs the scans).
pub(super) fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let mut own: ffi::sqlite3_pcache_methods2 = unsafe { std::mem::zeroed() };
        // SAFETY: both calls take a pointer to a methods struct, as documented for these
        // options; SQLite copies it. They fail (SQLITE_MISUSE) once SQLite has started.
        unsafe {
            if ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &mut own as *mut ffi::sqlite3_pcache_methods2)
                != ffi::SQLITE_OK
            {
                return false;
            }
        }
        let Ok(()) = INNER.set(Methods(own)) else { return false };
        let layer = ffi::sqlite3_pcache_methods2 {
            iVersion: 1,
            pArg: std::ptr::null_mut(),
            xInit: Some(init),
            xShutdown: Some(shutdown),
            xCreate: Some(create),
            xCachesize: Some(cachesize),
            xPagecount: Some(pagecount),
            xFetch: Some(fetch),
            xUnpin: Some(unpin),
            xRekey: Some(rekey),
            xTruncate: Some(truncate),
            xDestroy: Some(destroy),
            xShrink: Some(shrink),
        };
        // SAFETY: as above.
        unsafe {
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &layer as *const ffi::sqlite3_pcache_methods2)
                == ffi::SQLITE_OK
        }
    })
}

fn inner() -> &'static ffi::sqlite3_pcache_methods2 {
    &INNER.get().expect("the page cache layer is installed only after SQLite's cache is known").0
}

/// SQLite's cache behind `cache`.
///
/// # Safety
/// `cache` is a pointer [`create`] answered and [`destroy`] has not taken back. SQLite calls a
/// cache's methods from one connection at a time, so no other reference to it is alive.
unsafe fn this<'a>(cache: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    // SAFETY: the caller's promise.
    unsafe { &mut *cache.cast::<Cache>() }
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    let own = inner();
    // SAFETY: SQLite's own method, with its own argument.
    own.xInit.map_or(ffi::SQLITE_OK, |f| unsafe { f(own.pArg) })
}

unsafe extern "C" fn shutdown(_: *mut c_void) {
    let own = inner();
    if let Some(f) = own.xShutdown {
        // SAFETY: as in `init`.
        unsafe { f(own.pArg) }
    }
}

unsafe extern "C" fn create(page_size: c_int, extra: c_int, purgeable: c_int) -> *mut ffi::sqlite3_pcache {
    let methods = inner();
    // SAFETY: SQLite's own method, with SQLite's arguments.
    let own = unsafe { (methods.xCreate.expect("a page cache creates caches"))(page_size, extra, purgeable) };
    if own.is_null() {
        return own;
    }
    let spare = PENDING_BYTE / c_uint::try_from(page_size.max(1)).unwrap_or(1) + 1;
    Box::into_raw(Box::new(Cache { methods, inner: own, spare, highest: 0, spare_held: false })).cast()
}

unsafe extern "C" fn cachesize(cache: *mut ffi::sqlite3_pcache, pages: c_int) {
    // SAFETY: `cache` came from `create` (SQLite's promise); SQLite's own method on its cache.
    let c = unsafe { this(cache) };
    // SAFETY: SQLite's own method on its cache.
    unsafe { (c.methods.xCachesize.expect("a page cache sizes"))(c.inner, pages) }
}

unsafe extern "C" fn pagecount(cache: *mut ffi::sqlite3_pcache) -> c_int {
    // SAFETY: as in `cachesize`.
    let c = unsafe { this(cache) };
    // SAFETY: SQLite's own method on its cache.
    unsafe { (c.methods.xPagecount.expect("a page cache counts"))(c.inner) }
}

unsafe extern "C" fn fetch(
    cache: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    // SAFETY: as in `cachesize`.
    let c = unsafe { this(cache) };
    // SAFETY: SQLite's own method on its cache, with SQLite's arguments.
    let page = unsafe { (c.methods.xFetch.expect("a page cache fetches"))(c.inner, key, create) };
    if !page.is_null() {
        c.saw(key);
    }
    page
}

unsafe extern "C" fn unpin(cache: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, discard: c_int) {
    // SAFETY: as in `cachesize`.
    let c = unsafe { this(cache) };
    // SAFETY: SQLite's own method on its cache.
    unsafe { (c.methods.xUnpin.expect("a page cache unpins"))(c.inner, page, discard) }
}

unsafe extern "C" fn rekey(
    cache: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    // SAFETY: as in `cachesize`.
    let c = unsafe { this(cache) };
    // SAFETY: as in `fetch`.
    unsafe { (c.methods.xRekey.expect("a page cache renumbers"))(c.inner, page, old, new) };
    if old == c.spare {
        c.spare_held = false;
    }
    c.saw(new);
}

unsafe extern "C" fn truncate(cache: *mut ffi::sqlite3_pcache, limit: c_uint) {
    // SAFETY: as in `cachesize`.
    let c = unsafe { this(cache) };
    if limit > c.highest && !c.spare_held {
        return;
    }
    // SAFETY: as in `fetch`.
    unsafe { (c.methods.xTruncate.expect("a page cache truncates"))(c.inner, limit) };
    c.highest = c.highest.min(limit.saturating_sub(1));
    c.spare_held = c.spare_held && c.spare < limit;
}

unsafe extern "C" fn destroy(cache: *mut ffi::sqlite3_pcache) {
    // SAFETY: `cache` came from `create`'s `Box::into_raw` and SQLite destroys it once.
    let c = unsafe { Box::from_raw(cache.cast::<Cache>()) };
    // SAFETY: SQLite's own method on its cache.
    unsafe { (c.methods.xDestroy.expect("a page cache is destroyed"))(c.inner) }
}

unsafe extern "C" fn shrink(cache: *mut ffi::sqlite3_pcache) {
    // SAFETY: as in `cachesize`.
    let c = unsafe { this(cache) };
    // SAFETY: SQLite's own method on its cache.
    unsafe { (c.methods.xShrink.expect("a page cache shrinks"))(c.inner) }
}

impl Cache {
    /// A page numbered `key` is in the cache.
    fn saw(&mut self, key: c_uint) {
        if key == self.spare {
            self.spare_held = true;
        } else if key > self.highest {
            self.highest = key;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        /// The stand-in cache's pages, and the truncations passed on to it.
        static PAGES: RefCell<(Vec<c_uint>, Vec<c_uint>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }

    /// A page handle for the stand-in: any non-null pointer (the layer never reads it).
    fn handle() -> *mut ffi::sqlite3_pcache_page {
        std::ptr::NonNull::dangling().as_ptr()
    }

    unsafe extern "C" fn fake_fetch(
        _: *mut ffi::sqlite3_pcache,
        key: c_uint,
        create: c_int,
    ) -> *mut ffi::sqlite3_pcache_page {
        PAGES.with_borrow_mut(|(pages, _)| {
            if pages.contains(&key) {
                handle()
            } else if create != 0 {
                pages.push(key);
                handle()
            } else {
                std::ptr::null_mut()
            }
        })
    }

    unsafe extern "C" fn fake_rekey(
        _: *mut ffi::sqlite3_pcache,
        _: *mut ffi::sqlite3_pcache_page,
        old: c_uint,
        new: c_uint,
    ) {
        PAGES.with_borrow_mut(|(pages, _)| {
            let at = pages.iter().position(|&p| p == old).expect("renumbers a page it holds");
            pages[at] = new;
        });
    }

    unsafe extern "C" fn fake_truncate(_: *mut ffi::sqlite3_pcache, limit: c_uint) {
        PAGES.with_borrow_mut(|(pages, passed)| {
            pages.retain(|&p| p < limit);
            passed.push(limit);
        });
    }

    const FAKE: ffi::sqlite3_pcache_methods2 = ffi::sqlite3_pcache_methods2 {
        iVersion: 1,
        pArg: std::ptr::null_mut(),
        xInit: None,
        xShutdown: None,
        xCreate: None,
        xCachesize: None,
        xPagecount: None,
        xFetch: Some(fake_fetch),
        xUnpin: None,
        xRekey: Some(fake_rekey),
        xTruncate: Some(fake_truncate),
        xDestroy: None,
        xShrink: None,
    };

    /// Truncates through the layer; answers whether the stand-in saw it.
    fn commit_end(c: &mut Cache, limit: c_uint) -> bool {
        let before = PAGES.with_borrow(|(_, passed)| passed.len());
        // SAFETY: `c` is a live cache; the stand-in ignores its inner pointer.
        unsafe { truncate((c as *mut Cache).cast(), limit) };
        PAGES.with_borrow(|(_, passed)| passed.len()) > before
    }

    fn fetch_new(c: &mut Cache, key: c_uint) {
        // SAFETY: as in `commit_end`.
        assert!(!unsafe { fetch((c as *mut Cache).cast(), key, 1) }.is_null());
    }

    fn renumber(c: &mut Cache, old: c_uint, new: c_uint) {
        // SAFETY: as in `commit_end`.
        unsafe { rekey((c as *mut Cache).cast(), handle(), old, new) };
    }

    /// A b-tree balance swaps two pages' numbers through the lock-byte page: a commit after it
    /// has nothing past the end to drop, and the layer does not pass its truncation on (SQLite's
    /// cache would scan every slot of its table); a truncation that drops pages goes through.
    #[test]
    fn only_truncations_that_drop_pages_reach_sqlites_cache() {
        let spare = PENDING_BYTE / 1024 + 1;
        let methods: &'static _ = Box::leak(Box::new(FAKE));
        let mut c = Cache { methods, inner: std::ptr::null_mut(), spare, highest: 0, spare_held: false };
        for key in 1..=10 {
            fetch_new(&mut c, key);
        }
        assert!(!commit_end(&mut c, 11), "nothing past page 10");
        // The swap of pages 5 and 7, as `balance_nonroot` does it.
        renumber(&mut c, 5, spare);
        renumber(&mut c, 7, 5);
        assert!(c.spare_held, "the spare number is in use between two renumberings");
        renumber(&mut c, spare, 7);
        assert!(!commit_end(&mut c, 11), "the swap is over: still nothing past page 10");
        // A rolled-back transaction had grown the file to 12 pages, now 8 again.
        fetch_new(&mut c, 11);
        fetch_new(&mut c, 12);
        assert!(commit_end(&mut c, 9));
        assert_eq!(PAGES.with_borrow(|(pages, _)| pages.iter().copied().max()), Some(8));
        assert!(!commit_end(&mut c, 9), "pages 9 to 12 are gone");
    }
}
