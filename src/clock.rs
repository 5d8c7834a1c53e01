//! Wall-clock time for the scheduler, derived from tokio's monotonic clock so that tests can
//! drive it with `tokio::time::pause()`. A watcher re-anchors it when the system clock steps or
//! the machine wakes from sleep, and tells the job timers to recompute.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

/// Drift between the system clock and ours above which we re-anchor.
const MAX_DRIFT: TimeDelta = TimeDelta::milliseconds(50);

/// The scheduler's clock.
#[derive(Debug)]
pub struct Clock {
    anchor: Mutex<(DateTime<Utc>, Instant)>,
    follows_system: bool,
    changed: watch::Sender<u64>,
}

impl Clock {
    /// A clock that follows the system clock.
    pub fn system() -> Self {
        Self::new(Utc::now(), true)
    }

    /// A clock that starts at `start` and advances only with tokio's clock (for tests).
    pub fn manual(start: DateTime<Utc>) -> Self {
        Self::new(start, false)
    }

    fn new(start: DateTime<Utc>, follows_system: bool) -> Self {
        Self {
            anchor: Mutex::new((start, Instant::now())),
            follows_system,
            changed: watch::Sender::new(0),
        }
    }

    fn anchor(&self) -> (DateTime<Utc>, Instant) {
        match self.anchor.lock() {
            Ok(a) => *a,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Now.
    pub fn now(&self) -> DateTime<Utc> {
        let (wall, mono) = self.anchor();
        wall + TimeDelta::from_std(mono.elapsed()).unwrap_or(TimeDelta::MAX)
    }

    /// The monotonic instant at which the wall clock reads `t` (now, if `t` is past).
    pub fn instant_at(&self, t: DateTime<Utc>) -> Instant {
        let (wall, mono) = self.anchor();
        match (t - wall).to_std() {
            Ok(ahead) => mono + ahead,
            Err(_) => mono,
        }
    }

    /// A receiver that sees a new value whenever the clock was re-anchored.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Compares with the system clock and re-anchors on drift; returns whether it did.
    pub fn resync(&self) -> bool {
        if !self.follows_system {
            return false;
        }
        let system = Utc::now();
        let drift = system - self.now();
        if drift.abs() <= MAX_DRIFT {
            return false;
        }
        if let Ok(mut a) = self.anchor.lock() {
            *a = (system, Instant::now());
        }
        self.changed.send_modify(|v| *v += 1);
        tracing::info!(
            drift_ms = drift.num_milliseconds(),
            "system clock jumped (or the machine slept); timers recomputed"
        );
        true
    }

    /// Sets a manual clock to `t` now, as a step of the system clock would (for tests).
    pub fn set(&self, t: DateTime<Utc>) {
        if let Ok(mut a) = self.anchor.lock() {
            *a = (t, Instant::now());
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Checks the system clock every second until `cancel`.
    pub async fn watch(&self, cancel: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => { self.resync(); }
                () = cancel.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn manual_clock_follows_tokio_time() {
        let start = DateTime::parse_from_rfc3339("2026-03-08T06:59:59Z")
            .unwrap()
            .with_timezone(&Utc);
        let c = Clock::manual(start);
        let target = start + TimeDelta::seconds(2);
        let at = c.instant_at(target);
        tokio::time::sleep_until(at).await;
        assert_eq!(c.now(), target);
        assert!(!c.resync());
    }
}
