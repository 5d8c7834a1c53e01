//! The runner's stop, which the daemon asks for and never reaches into: the drain begins (no
//! new firing, retry or queued start; no new task), the runs get their grace, then those left
//! are stopped: politely (SIGTERM, `kill_grace`, SIGKILL), or at once on a second signal.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

use super::Context;

/// How long runs killed at a second signal get to record their end (the next start marks any
/// that could not as abandoned).
const RECORD_AFTER_KILL: Duration = Duration::from_secs(1);

impl Context {
    /// Cancelled when the drain begins: what must not start anything then (trigger polls, a
    /// node taking over a dead node's runs) waits on it.
    pub fn drain_begun(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// Begins the drain: no new firing, retry or queued start from now on; the firings in
    /// progress go on.
    pub fn begin_drain(&self) {
        self.draining.cancel();
        self.tracker.close();
    }

    /// Waits up to `grace` for the firings in progress (or until `now`, a second signal);
    /// stops those left; returns whether all had ended within the grace.
    pub async fn drain(&self, grace: Duration, now: &CancellationToken) -> bool {
        let drained = tokio::select! {
            () = self.tracker.wait() => true,
            () = tokio::time::sleep(grace) => false,
            () = now.cancelled() => false,
        };
        if !drained {
            self.stop_runs(now).await;
        }
        drained
    }

    /// Stops the runs still going: politely, or at once when `now` is (or becomes) cancelled.
    async fn stop_runs(&self, now: &CancellationToken) {
        let left = self.running();
        if now.is_cancelled() {
            tracing::warn!(runs = left, "second signal: killing runs now");
            self.stop.hard.cancel();
        } else {
            tracing::warn!(
                runs = left,
                "grace period over: stopping the runs still going"
            );
        }
        self.stop.soft.cancel();
        tokio::select! {
            () = self.tracker.wait() => {}
            () = now.cancelled() => {
                self.stop.hard.cancel();
                self.processes.signal_all(Signal::SIGKILL);
                let _ = tokio::time::timeout(RECORD_AFTER_KILL, self.tracker.wait()).await;
            }
        }
    }
}
