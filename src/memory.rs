//! The daemon's allocator (jemalloc) and handing the memory it freed back to the system.
//!
//! A burst of thousands of runs allocates tens of megabytes of short-lived buffers among a
//! few long-lived ones (history pages, per-job counters). glibc's malloc kept most of it
//! resident for good (measured: 24 MiB before a burst of 10,000 runs, 39 MiB a minute after
//! and still after `malloc_trim`): its free pieces sit between live ones, and its per-thread
//! arenas never give back the top of their heaps. jemalloc keeps sizes apart in slabs, so the
//! pages a burst freed are whole and are returned: by jemalloc's background thread as they
//! age (`dirty_decay_ms`, 10 s; the thread sleeps while nothing is left to return, so an idle
//! daemon gets no wake-ups from it), and at once when the daemon asks (after a configuration
//! load and when the last run has ended).

use tikv_jemallocator::Jemalloc;

#[global_allocator]
static GLOBAL: Jemalloc = Jemalloc;

/// jemalloc's options, read at its start: freed pages are returned by a background thread.
#[allow(unsafe_code)]
#[unsafe(export_name = "malloc_conf")]
static MALLOC_CONF: &u8 = &b"background_thread:true\0"[0];

/// Every arena at once, for `arena.<i>.purge`.
const ALL_ARENAS_PURGE: &std::ffi::CStr = c"arena.4096.purge";

/// Returns the pages the allocator holds free to the system (jemalloc's purge of every
/// arena). Takes a few milliseconds; call it off the runtime threads.
#[allow(unsafe_code)]
pub fn release_freed() {
    // SAFETY: `arena.<i>.purge` is a void control: no old or new value, so every pointer is
    // null and the lengths zero, as jemalloc requires; the name is a NUL-terminated constant.
    let _ = unsafe {
        tikv_jemalloc_sys::mallctl(
            ALL_ARENAS_PURGE.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
}
