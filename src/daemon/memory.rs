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
//! load and when the last run has ended). jemalloc serves Rust's allocations only: C code
//! (SQLite) keeps glibc's malloc, which is trimmed at the same moments. Replacing `malloc` for
//! the whole process deadlocked it at start under libfaketime (which the clock tests use:
//! its start-up looks symbols up, which allocates, inside jemalloc's own start-up).

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start: freed pages are returned by a background thread;
/// each thread caches fewer and only small freed pieces (objects up to 4 KiB, a quarter of
/// the default count), which an idle thread would otherwise hold for good (measured on the
/// burst of 10,000 runs: 60 s later +18 % of before with the default cache, +14 % with this
/// one, +11 % with none).
#[cfg(feature = "jemalloc")]
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 = &b"background_thread:true,tcache_max:4096,lg_tcache_nslots_mul:-2\0"[0];

/// Every arena at once, for `arena.<i>.purge`.
#[cfg(feature = "jemalloc")]
const ALL_ARENAS_PURGE: &std::ffi::CStr = c"arena.4096.purge";

/// Returns the pages the allocators hold free to the system: jemalloc's purge of every arena,
/// then glibc's trim for what C code freed. Takes a few milliseconds.
#[cfg(feature = "jemalloc")]
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
    trim_glibc();
}

/// Without jemalloc (the bench's build): glibc's trim only.
#[cfg(not(feature = "jemalloc"))]
pub fn release_freed() {
    trim_glibc();
}

/// glibc's `malloc_trim`: returns the free pages of its heaps.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_glibc() {
    // SAFETY: `malloc_trim` takes no pointer and only walks glibc's own free lists under its
    // locks; it is safe to call from any thread at any time.
    let _ = unsafe { nix::libc::malloc_trim(0) };
}

/// Another C library: nothing to ask.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_glibc() {}
