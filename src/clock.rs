//! Wall-clock time for the scheduler, derived from tokio's monotonic clock so that tests can
//! drive it with `tokio::time::pause()`. A watcher re-anchors it when the system clock steps or
//! the machine wakes from sleep (the kernel tells it: no polling), and tells the job timers to
//! recompute.

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

    /// Re-anchors when the system clock is set or the machine resumes (the kernel tells a
    /// timerfd with `TFD_TIMER_CANCEL_ON_SET`, on a thread of its own: no polling), and looks
    /// once a minute besides (slewing, or a clock the kernel does not see change, such as
    /// libfaketime's), until `cancel`. The timer task also looks at each of its turns.
    pub async fn watch(self: &std::sync::Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        if self.follows_system {
            let clock = std::sync::Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("clock-steps".into())
                .spawn(move || watch_steps(&clock));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot watch for clock steps; looking every second instead");
                return self.poll(Duration::from_secs(1), cancel).await;
            }
        }
        self.poll(BACKSTOP, cancel).await;
    }

    async fn poll(&self, every: Duration, cancel: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => { self.resync(); }
                () = cancel.cancelled() => return,
            }
        }
    }
}

/// How often the clock is compared with the system's besides the kernel's word on steps.
const BACKSTOP: Duration = Duration::from_secs(60);

/// Blocks on a timerfd armed far ahead with `TFD_TIMER_CANCEL_ON_SET`: each time the system
/// clock is set, its wait fails with `ECANCELED` and the clock re-anchors. Ends (logged) if
/// the kernel does not offer it; the minute backstop remains.
fn watch_steps(clock: &Clock) {
    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    loop {
        let armed = TimerFd::new(ClockId::CLOCK_REALTIME, TimerFlags::TFD_CLOEXEC).and_then(|fd| {
            // The far future: a wait that ends only when the clock is set.
            let never = TimeSpec::new(i64::from(i32::MAX), 0);
            fd.set(
                Expiration::OneShot(never),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME | TimerSetTimeFlags::TFD_TIMER_CANCEL_ON_SET,
            )?;
            Ok(fd)
        });
        let fd = match armed {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for clock steps (timerfd); looking once a minute");
                return;
            }
        };
        match fd.wait() {
            Err(nix::errno::Errno::ECANCELED) => {
                clock.resync();
            }
            Err(nix::errno::Errno::EINTR) | Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for clock steps (timerfd); looking once a minute");
                return;
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
