//! Whether history writes fail, since when, and how many records wait (the daemon's status
//! line, `/healthz` and the metrics read it; the writer keeps it).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Whether history writes fail, since when, and how many records wait, for the daemon's
/// status line, `/healthz` and the metrics.
#[derive(Debug, Default)]
pub struct HistoryHealth {
    pub(super) failing: AtomicBool,
    pub(super) pending: AtomicUsize,
    /// When the failure streak began (`None`: writes succeed).
    pub(super) failing_since: Mutex<Option<Instant>>,
    /// Batch writes that failed since the daemon started.
    pub(super) errors: AtomicU64,
}

impl HistoryHealth {
    /// Records waiting for the database while its writes fail; `None` when they succeed.
    pub fn pending(&self) -> Option<usize> {
        self.failing
            .load(Ordering::Relaxed)
            .then(|| self.pending.load(Ordering::Relaxed))
    }

    /// How long writes have been failing; `None` when they succeed.
    pub fn failing_for(&self) -> Option<Duration> {
        self.failing_since
            .lock()
            .ok()
            .and_then(|s| s.map(|since| since.elapsed()))
    }

    /// Batch writes that failed since the daemon started.
    pub fn write_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub(super) fn set_failing_since(&self, since: Option<Instant>) {
        if let Ok(mut s) = self.failing_since.lock() {
            *s = since;
        }
    }
}
