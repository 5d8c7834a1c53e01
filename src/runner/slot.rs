//! Per-job state that outlives reloads ([`JobSlot`]: who runs, who waits in the queue, the
//! definition and alert policy in force), and why a waiting firing gives up ([`Halt`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::firing::Firing;
use crate::alert::{AlertPolicy, AlertState};
use crate::job::JobSpec;

/// Why a firing that has not started (or a retry not yet begun) gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Halt {
    /// The daemon is stopping.
    Stopping,
    /// The job was removed (or disabled) by a reload.
    Removed,
    /// A newer firing replaced it (`overlap = "replace"`).
    Replaced,
}

impl Halt {
    /// The history row's reason, for a firing that was `what` ("waiting in the queue").
    pub(super) fn reason(self, what: &str) -> String {
        let cause = match self {
            Halt::Stopping => "daemon stopping",
            Halt::Removed => "job removed or disabled by a reload",
            Halt::Replaced => "replaced by a newer firing (overlap = \"replace\")",
        };
        format!("{cause}: not started; it was {what}")
    }
}

/// Per-job state that outlives reloads: who is running, who waits.
#[derive(Debug)]
pub struct JobSlot {
    /// Held by the active run of a job whose policy is not `allow`.
    pub(super) serial: Arc<Semaphore>,
    /// The id of the run holding `serial` (0: none).
    pub(super) active: AtomicI64,
    /// The intended time (Unix ms) of the firing that took `serial` last, which holds it
    /// while it does: named in a skip row before its run has an id (0: none yet).
    holder: AtomicI64,
    /// The newest firing's "replaced" token (`overlap = "replace"`).
    pub(super) current: Mutex<Option<CancellationToken>>,
    /// Firings waiting their turn (`overlap = "queue"`), oldest first.
    pub(super) queue: Mutex<QueueState>,
    /// The job's definition now: a firing that waited runs with the definition in force when
    /// each attempt starts.
    pub(super) spec: Mutex<Option<Arc<JobSpec>>>,
    /// Cancelled when the job is removed or disabled: firings made before give up.
    pub(super) removed: Mutex<CancellationToken>,
    /// Who hears about the job's failures (set by the scheduler, updated at each reload).
    pub(super) alert_policy: Mutex<Option<Arc<AlertPolicy>>>,
    /// What the last firing's end was, for recovery notices and rate limits.
    pub(super) alert: AlertState,
}

#[derive(Debug, Default)]
pub(crate) struct QueueState {
    pub(super) pending: std::collections::VecDeque<Firing>,
    pub(super) worker: bool,
}

impl Default for JobSlot {
    fn default() -> Self {
        Self {
            serial: Arc::new(Semaphore::new(1)),
            active: AtomicI64::new(0),
            holder: AtomicI64::new(0),
            current: Mutex::new(None),
            queue: Mutex::new(QueueState::default()),
            spec: Mutex::new(None),
            removed: Mutex::new(CancellationToken::new()),
            alert_policy: Mutex::new(None),
            alert: AlertState::default(),
        }
    }
}

impl JobSlot {
    /// Sets the job's definition in force (at scheduling and at each reload that changes it).
    pub fn set_spec(&self, spec: &Arc<JobSpec>) {
        if let Ok(mut s) = self.spec.lock() {
            *s = Some(Arc::clone(spec));
        }
    }

    /// Whether a fresh slot would do as well: no run holds it or waits in it (the caller
    /// holds the only reference), and its alert state remembers nothing.
    pub fn holds_nothing(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1
            && self
                .queue
                .lock()
                .is_ok_and(|q| q.pending.is_empty() && !q.worker)
            && self.alert.remembers_nothing()
    }

    /// Sets who hears about the job's failures.
    pub fn set_alert_policy(&self, policy: Option<Arc<AlertPolicy>>) {
        if let Ok(mut p) = self.alert_policy.lock() {
            *p = policy;
        }
    }

    pub(super) fn alert_policy(&self) -> Option<Arc<AlertPolicy>> {
        self.alert_policy.lock().ok().and_then(|p| p.clone())
    }

    pub(super) fn spec(&self) -> Option<Arc<JobSpec>> {
        self.spec.lock().ok().and_then(|s| s.clone())
    }

    pub(super) fn removed_token(&self) -> CancellationToken {
        self.removed
            .lock()
            .map(|t| t.clone())
            .unwrap_or_else(|_| CancellationToken::new())
    }

    /// Another node asks, for its newer firing (`overlap = "replace"` across nodes), that the
    /// job's run here stop: it is cancelled as a local replace would.
    pub fn replace_active(&self) {
        if let Some(token) = self.current.lock().ok().and_then(|mut c| c.take()) {
            token.cancel();
        }
    }

    /// The job was removed or disabled: every firing made so far that has not started gives
    /// up, each recorded `skipped` (the queued ones now, the others where they wait); firings
    /// made from now on are not affected.
    pub fn drop_waiting(&self) {
        if let Ok(mut t) = self.removed.lock() {
            std::mem::replace(&mut *t, CancellationToken::new()).cancel();
        }
        let queued: Vec<Firing> = self
            .queue
            .lock()
            .map(|mut q| q.pending.drain(..).collect())
            .unwrap_or_default();
        for firing in queued {
            firing.skip(1, &Halt::Removed.reason(QUEUED));
        }
    }

    /// Firings waiting in the job's queue (`overlap = "queue"`).
    pub fn waiting(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.pending.len())
    }

    /// The firing intended for `at` took the job's turn.
    pub(super) fn took_turn(&self, at: DateTime<Utc>) {
        self.holder.store(at.timestamp_millis(), Ordering::Relaxed);
    }

    /// What holds the job's turn, in words: its run, or the firing whose run is starting.
    pub(super) fn turn_holder(&self) -> String {
        let firing = match self.holder.load(Ordering::Relaxed) {
            0 => None,
            ms => DateTime::from_timestamp_millis(ms),
        };
        match (self.active_run(), firing) {
            (Some(id), _) => format!("run {id} is still active"),
            (None, Some(at)) => format!(
                "the firing of {} holds the job's turn (its run is starting)",
                crate::store::format_ts(at)
            ),
            (None, None) => "the previous run is still active".into(),
        }
    }

    /// The run holding the job's turn (a job whose overlap policy is not `allow`), if any.
    pub fn active_run(&self) -> Option<i64> {
        match self.active.load(Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }
}

/// What a queued firing was doing, in the reason of its row.
pub(crate) const QUEUED: &str = "waiting in the queue (overlap = \"queue\")";

/// Runs queued firings one after another, in the order they were queued.
pub(crate) async fn queue_worker(slot: Arc<JobSlot>) {
    loop {
        let next = match slot.queue.lock() {
            Ok(mut q) => {
                let f = q.pending.pop_front();
                if f.is_none() {
                    q.worker = false;
                }
                f
            }
            Err(_) => None,
        };
        let Some(firing) = next else { return };
        if let Some(p) = firing.wait_turn(QUEUED).await {
            firing.run(Some(p)).await;
        }
    }
}
