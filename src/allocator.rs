//! The binary's allocator: mimalloc. A request allocates and frees many small buffers across the
//! runtime's threads, where mimalloc costs a fraction of the C library's allocator (15% more
//! bookings a second in `cargo bench --bench api -- sustained-store`). It gives freed memory back
//! to the operating system at once ([`configure`]) and commits its arenas only as they fill (a
//! compile-time default, `CFLAGS` in `.cargo/config.toml`: the first arena is committed before
//! `main`): with its defaults (a purge delay of one second, arenas committed whole), the server's
//! resident memory under full load grows from 40 to 62 MB.

use std::ffi::{c_int, c_long};

// Links the allocator into every binary of this crate, which `configure` calls into.
use mimalloc as _;

/// `mi_option_arena_eager_commit`: the option's number in `mi_option_e` of the vendored
/// mimalloc 3 (`mimalloc.h`). The test below pins both numbers to their options' defaults.
#[cfg(test)]
const ARENA_EAGER_COMMIT: c_int = 4;
/// `mi_option_purge_delay`, in milliseconds.
const PURGE_DELAY: c_int = 15;

unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    #[cfg(test)]
    fn mi_option_get(option: c_int) -> c_long;
}

/// Purges freed memory at once. Call first thing in `main`.
pub fn configure() {
    // SAFETY: setting an option is allowed at any time; it is a plain number.
    unsafe { mi_option_set(PURGE_DELAY, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_numbers_name_the_options_of_the_vendored_mimalloc() {
        // SAFETY: reading an option is allowed at any time.
        let (eager, delay) = unsafe { (mi_option_get(ARENA_EAGER_COMMIT), mi_option_get(PURGE_DELAY)) };
        // 0 from the build's define (mimalloc's own default is 2), and the documented 1000 ms.
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            assert_eq!(
                eager, 0,
                "option {ARENA_EAGER_COMMIT} is not arena_eager_commit, or CFLAGS did not reach mimalloc"
            );
        }
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(delay, 1000, "option {PURGE_DELAY} is not purge_delay");
        }
    }
}
