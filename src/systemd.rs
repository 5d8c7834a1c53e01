//! The systemd notify protocol (`Type=notify`): READY, RELOADING, STOPPING, STATUS and the
//! watchdog. Every call is a no-op when `NOTIFY_SOCKET` is unset.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Start-up (or a reload) is complete.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    // systemd 253+ wants the reload's start time with RELOADING=1.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// Shutdown begins.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// A new status line.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// A watchdog keep-alive.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to send keep-alives: half the `WatchdogSec=` interval, when one is set.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
