//! One firing, from due to recorded: the overlap policy, the global concurrency limit, each
//! attempt under its timeout and the daemon's stop signals, retries with backoff, and the
//! history records. Every firing is its own task, so nothing one job does can delay another.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::{AlertPolicy, AlertState, Alerts, FiringEnd};
use crate::clock::Clock;
use crate::job::{AttemptContext, JobSpec, Outcome, Overlap, Services, StartMark, StopSignal};
use crate::processes::Processes;
use crate::recorder::Recorder;
use crate::run_ids::RunIds;
use crate::store::{Record, RunEnd, RunStart, RunStatus, Trigger};

/// Most firings waiting behind an active run with `overlap = "queue"`; more are skipped.
pub const MAX_QUEUED: usize = 100;

/// What every firing shares.
#[derive(Debug)]
pub struct Context {
    /// The scheduler's clock.
    pub clock: Arc<Clock>,
    /// Where records go.
    pub recorder: Recorder,
    /// Global limit on runs in progress.
    pub limit: Arc<Semaphore>,
    /// Run ids.
    pub ids: Arc<RunIds>,
    /// This daemon's node name.
    pub node: String,
    /// Tracks every firing task.
    pub tracker: TaskTracker,
    /// Cancelled when shutdown begins: no new retries, queued firings give up.
    pub draining: CancellationToken,
    /// `soft`: stop runs (drain grace over); `hard`: kill now (second signal).
    pub stop: StopSignal,
    /// The commands' processes (shared with the daemon's signal thread).
    pub processes: Arc<Processes>,
    /// Attempts in progress.
    running: AtomicUsize,
    /// SMTP transports and HTTP clients.
    pub services: Services,
    /// Sends failure/recovery notifications.
    pub alerts: Alerts,
}

impl Context {
    /// A context allocating run ids from `ids`.
    pub fn new(
        clock: Arc<Clock>,
        recorder: Recorder,
        max_concurrent_runs: usize,
        ids: Arc<RunIds>,
        node: String,
        services: Services,
    ) -> Self {
        let alerts = Alerts::new(
            services.mailers.clone(),
            services.http.clone(),
            recorder.clone(),
            node.clone(),
        );
        Self {
            services,
            alerts,
            clock,
            recorder,
            limit: Arc::new(Semaphore::new(max_concurrent_runs.max(1))),
            ids,
            node,
            tracker: TaskTracker::new(),
            draining: CancellationToken::new(),
            stop: StopSignal::default(),
            processes: Arc::default(),
            running: AtomicUsize::new(0),
        }
    }

    fn next_id(&self) -> i64 {
        self.ids.next()
    }

    /// Attempts in progress.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }
}

/// What became of a manual firing (`hourglass trigger`), as soon as it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatched {
    /// A run started: its id.
    Started(i64),
    /// It waits for its turn: behind the active run (`behind`), with `ahead` firings queued
    /// before it; or, with `behind = None`, for a free run slot (`max_concurrent_runs`).
    Queued {
        /// The active run it waits for.
        behind: Option<i64>,
        /// Firings queued before it.
        ahead: usize,
    },
    /// It was not run: the skipped row's id and why.
    Skipped {
        /// The history row recording the skip.
        run_id: i64,
        /// Why.
        reason: String,
    },
}

/// Why a firing that has not started (or a retry not yet begun) gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    /// The daemon is stopping.
    Stopping,
    /// The job was removed (or disabled) by a reload.
    Removed,
    /// A newer firing replaced it (`overlap = "replace"`).
    Replaced,
}

impl Halt {
    /// The history row's reason, for a firing that was `what` ("waiting in the queue").
    fn reason(self, what: &str) -> String {
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
    serial: Arc<Semaphore>,
    /// The id of the run holding `serial` (0: none).
    active: AtomicI64,
    /// The newest firing's "replaced" token (`overlap = "replace"`).
    current: Mutex<Option<CancellationToken>>,
    /// Firings waiting their turn (`overlap = "queue"`), oldest first.
    queue: Mutex<QueueState>,
    /// The job's definition now: a firing that waited runs with the definition in force when
    /// each attempt starts.
    spec: Mutex<Option<Arc<JobSpec>>>,
    /// Cancelled when the job is removed or disabled: firings made before give up.
    removed: Mutex<CancellationToken>,
    /// Who hears about the job's failures (set by the scheduler, updated at each reload).
    alert_policy: Mutex<Option<Arc<AlertPolicy>>>,
    /// What the last firing's end was, for recovery notices and rate limits.
    alert: AlertState,
}

#[derive(Debug, Default)]
struct QueueState {
    pending: std::collections::VecDeque<Firing>,
    worker: bool,
}

impl Default for JobSlot {
    fn default() -> Self {
        Self {
            serial: Arc::new(Semaphore::new(1)),
            active: AtomicI64::new(0),
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

    /// Sets who hears about the job's failures.
    pub fn set_alert_policy(&self, policy: Option<Arc<AlertPolicy>>) {
        if let Ok(mut p) = self.alert_policy.lock() {
            *p = policy;
        }
    }

    fn alert_policy(&self) -> Option<Arc<AlertPolicy>> {
        self.alert_policy.lock().ok().and_then(|p| p.clone())
    }

    fn spec(&self) -> Option<Arc<JobSpec>> {
        self.spec.lock().ok().and_then(|s| s.clone())
    }

    fn removed_token(&self) -> CancellationToken {
        self.removed
            .lock()
            .map(|t| t.clone())
            .unwrap_or_else(|_| CancellationToken::new())
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

    fn active_run(&self) -> Option<i64> {
        match self.active.load(Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }
}

/// What a queued firing was doing, in the reason of its row.
const QUEUED: &str = "waiting in the queue (overlap = \"queue\")";

/// Runs queued firings one after another, in the order they were queued.
async fn queue_worker(slot: Arc<JobSlot>) {
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

/// Starts a firing of `job` for `scheduled_for` under the job's overlap policy. Returns at once.
pub fn fire(
    ctx: &Arc<Context>,
    slot: &Arc<JobSlot>,
    job: &Arc<JobSpec>,
    scheduled_for: DateTime<Utc>,
) {
    let firing = Firing::new(ctx, slot, job, scheduled_for, Trigger::Schedule);
    dispatch(firing, job.overlap);
}

/// Fires a manual run (`hourglass trigger`) now, under the job's overlap policy; `reply` hears
/// what became of it.
pub fn fire_manual(
    ctx: &Arc<Context>,
    slot: &Arc<JobSlot>,
    job: &Arc<JobSpec>,
    reply: tokio::sync::oneshot::Sender<Dispatched>,
) {
    let now = ctx.clock.now();
    let firing = Firing::new(ctx, slot, job, now, Trigger::Manual);
    if let Ok(mut r) = firing.reply.lock() {
        *r = Some(reply);
    }
    dispatch(firing, job.overlap);
}

/// Runs `firings` (oldest first) one after another in a task of their own: each waits for
/// the previous one, and for the job's active run unless its policy is `allow`; the overlap
/// policy skips or replaces none of them, and the queue's bound does not apply. Used for
/// catch-up, and for the late firings due at the same moment as a catch-up.
pub fn fire_series(
    ctx: &Arc<Context>,
    slot: &Arc<JobSlot>,
    job: &Arc<JobSpec>,
    firings: Vec<(DateTime<Utc>, Trigger)>,
) {
    if firings.is_empty() {
        return;
    }
    let series: Vec<Firing> = firings
        .into_iter()
        .map(|(at, trigger)| Firing::new(ctx, slot, job, at, trigger))
        .collect();
    ctx.tracker.spawn(async move {
        for firing in series {
            let spec = firing.job();
            if spec.overlap == Overlap::Allow {
                if let Some(h) = firing.halted_now() {
                    firing.skip(1, &h.reason("waiting in a catch-up series"));
                } else {
                    firing.run(None).await;
                }
            } else if let Some(p) = firing.wait_turn("waiting in a catch-up series").await {
                firing.run(Some(p)).await;
            }
        }
    });
}

fn dispatch(firing: Firing, overlap: Overlap) {
    let ctx = Arc::clone(&firing.ctx);
    let slot = Arc::clone(&firing.slot);
    match overlap {
        Overlap::Allow => {
            ctx.tracker.spawn(firing.run(None));
        }
        Overlap::Skip => match Arc::clone(&slot.serial).try_acquire_owned() {
            Ok(permit) => {
                ctx.tracker.spawn(firing.run(Some(permit)));
            }
            Err(_) => {
                let reason = match slot.active_run() {
                    Some(id) => format!("run {id} is still active (overlap = \"skip\")"),
                    None => "the previous run is still active (overlap = \"skip\")".into(),
                };
                firing.skip(1, &reason);
            }
        },
        Overlap::Queue => {
            let Ok(mut q) = slot.queue.lock() else {
                return;
            };
            if q.pending.len() >= MAX_QUEUED {
                drop(q);
                firing.skip(
                    1,
                    &format!("{MAX_QUEUED} firings already queued (overlap = \"queue\")"),
                );
                return;
            }
            if !q.pending.is_empty() || slot.serial.available_permits() == 0 {
                firing.tell(Dispatched::Queued {
                    behind: slot.active_run(),
                    ahead: q.pending.len(),
                });
            }
            q.pending.push_back(firing);
            if !q.worker {
                q.worker = true;
                ctx.tracker.spawn(queue_worker(Arc::clone(&slot)));
            }
        }
        Overlap::Replace => {
            if let Ok(mut cur) = slot.current.lock()
                && let Some(old) = cur.replace(firing.replaced.clone())
            {
                old.cancel();
            }
            if slot.serial.available_permits() == 0 {
                firing.tell(Dispatched::Queued {
                    behind: slot.active_run(),
                    ahead: 0,
                });
            }
            ctx.tracker.spawn(async move {
                if let Some(p) = firing
                    .wait_turn("waiting for the run it replaces to stop")
                    .await
                {
                    firing.run(Some(p)).await;
                }
            });
        }
    }
}

/// Why an attempt was stopped, for its error.
fn why_stopped(reason: RunStatus, job: &JobSpec) -> String {
    match reason {
        RunStatus::TimedOut => format!(
            "timed out after {}",
            humantime::format_duration(job.timeout.unwrap_or_default())
        ),
        RunStatus::Interrupted => "interrupted: the daemon shut down".to_string(),
        _ => "cancelled: replaced by a newer firing (overlap = \"replace\")".to_string(),
    }
}

/// The outcome of an attempt whose job kind panicked.
fn panicked(kind: &str, payload: &(dyn std::any::Any + Send)) -> Outcome {
    let msg = payload
        .downcast_ref::<&str>()
        .map(ToString::to_string)
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    tracing::error!(kind, panic = %msg, "internal error: a job kind panicked (please report this)");
    Outcome::failed(
        format!("internal error in the {kind} job kind: {msg}"),
        false,
    )
}

#[derive(Debug)]
struct Firing {
    ctx: Arc<Context>,
    slot: Arc<JobSlot>,
    /// The definition when it fired (each attempt runs with the one in force then).
    job: Arc<JobSpec>,
    scheduled_for: DateTime<Utc>,
    trigger: Trigger,
    replaced: CancellationToken,
    /// Cancelled when the job is removed or disabled.
    removed: CancellationToken,
    /// Told what became of the firing, for `hourglass trigger`.
    reply: Mutex<Option<tokio::sync::oneshot::Sender<Dispatched>>>,
}

impl Firing {
    fn new(
        ctx: &Arc<Context>,
        slot: &Arc<JobSlot>,
        job: &Arc<JobSpec>,
        scheduled_for: DateTime<Utc>,
        trigger: Trigger,
    ) -> Self {
        Self {
            ctx: Arc::clone(ctx),
            slot: Arc::clone(slot),
            job: Arc::clone(job),
            scheduled_for,
            trigger,
            replaced: CancellationToken::new(),
            removed: slot.removed_token(),
            reply: Mutex::new(None),
        }
    }

    /// The job's definition in force now.
    fn job(&self) -> Arc<JobSpec> {
        self.slot
            .spec()
            .filter(|s| s.name == self.job.name)
            .unwrap_or_else(|| Arc::clone(&self.job))
    }

    fn start_record(&self, id: i64, attempt: u32, started_at: Option<DateTime<Utc>>) -> RunStart {
        RunStart {
            id,
            job: self.job.name.clone(),
            scheduled_for: self.scheduled_for,
            started_at,
            attempt,
            trigger: if attempt > 1 {
                Trigger::Retry
            } else {
                self.trigger
            },
            node: self.ctx.node.clone(),
            pid: None,
        }
    }

    /// Tells who fired this by hand what became of it (the first news only).
    fn tell(&self, news: Dispatched) {
        if let Some(reply) = self.reply.lock().ok().and_then(|mut r| r.take()) {
            let _ = reply.send(news);
        }
    }

    /// Whether the firing must give up now, and why.
    fn halted_now(&self) -> Option<Halt> {
        if self.ctx.draining.is_cancelled() {
            Some(Halt::Stopping)
        } else if self.removed.is_cancelled() {
            Some(Halt::Removed)
        } else if self.replaced.is_cancelled() {
            Some(Halt::Replaced)
        } else {
            None
        }
    }

    /// Waits until the firing must give up; returns why.
    async fn halted(&self) -> Halt {
        tokio::select! {
            biased;
            () = self.ctx.draining.cancelled() => Halt::Stopping,
            () = self.removed.cancelled() => Halt::Removed,
            () = self.replaced.cancelled() => Halt::Replaced,
        }
    }

    /// Records attempt `attempt` of this firing as skipped (not run) because of `reason`.
    fn skip(&self, attempt: u32, reason: &str) {
        let id = self.ctx.next_id();
        self.tell(Dispatched::Skipped {
            run_id: id,
            reason: reason.to_string(),
        });
        tracing::info!(job = %self.job.name, run_id = id, scheduled_for = %self.scheduled_for, attempt, reason, "firing skipped");
        self.ctx.recorder.record(Record::Complete(
            self.start_record(id, attempt, None),
            RunEnd {
                id,
                finished_at: self.ctx.clock.now(),
                status: RunStatus::Skipped,
                exit_code: None,
                error: Some(reason.to_string()),
                output: None,
                details: None,
            },
        ));
    }

    /// Waits for the job's turn (`what` says what it waits in); `None`, recorded `skipped`, if
    /// the daemon stops, the job is removed or a newer firing replaces this one first.
    async fn wait_turn(&self, what: &str) -> Option<OwnedSemaphorePermit> {
        if let Some(h) = self.halted_now() {
            self.skip(1, &h.reason(what));
            return None;
        }
        tokio::select! {
            biased;
            h = self.halted() => {
                self.skip(1, &h.reason(what));
                None
            }
            p = Arc::clone(&self.slot.serial).acquire_owned() => p.ok(),
        }
    }

    /// Waits for a free run slot (`max_concurrent_runs`); `None`, recorded, if the firing
    /// must give up first.
    async fn wait_run_slot(&self, attempt: u32) -> Option<OwnedSemaphorePermit> {
        let what = "waiting for a free run slot (max_concurrent_runs)";
        if let Some(h) = self.halted_now() {
            self.skip(attempt, &h.reason(what));
            return None;
        }
        if let Ok(p) = Arc::clone(&self.ctx.limit).try_acquire_owned() {
            return Some(p);
        }
        self.tell(Dispatched::Queued {
            behind: None,
            ahead: 0,
        });
        tokio::select! {
            biased;
            h = self.halted() => {
                self.skip(attempt, &h.reason(what));
                None
            }
            p = Arc::clone(&self.ctx.limit).acquire_owned() => p.ok(),
        }
    }

    /// Runs every attempt of the firing. `turn` holds the job's serial permit, if any.
    async fn run(self, turn: Option<OwnedSemaphorePermit>) {
        let mut attempt = 1;
        loop {
            let Some(global) = self.wait_run_slot(attempt).await else {
                return;
            };
            let job = self.job();
            let id = self.ctx.next_id();
            if turn.is_some() {
                self.slot.active.store(id, Ordering::Relaxed);
            }
            let (status, outcome) = self.attempt(&job, id, attempt).await;
            if turn.is_some() {
                self.slot.active.store(0, Ordering::Relaxed);
            }
            drop(global);
            let retry = matches!(status, RunStatus::Failed | RunStatus::TimedOut)
                && outcome.retryable
                && attempt <= job.retry.retries;
            if !retry {
                let end = FiringEnd {
                    run_id: id,
                    scheduled_for: self.scheduled_for,
                    status,
                    attempt,
                    error: outcome.error,
                    output: outcome.output,
                };
                if let Some(policy) = self.slot.alert_policy()
                    && let Some(send) =
                        self.ctx
                            .alerts
                            .after_firing(&job.name, &policy, &self.slot.alert, &end)
                {
                    self.ctx.tracker.spawn(send);
                }
                return;
            }
            attempt += 1;
            let delay = job.retry.delay(attempt);
            tracing::info!(job = %job.name, attempt, delay_ms = delay.as_millis() as u64, "retrying");
            let what = "a retry waiting for its backoff delay";
            if let Some(h) = self.halted_now() {
                self.skip(attempt, &h.reason(what));
                return;
            }
            tokio::select! {
                biased;
                h = self.halted() => {
                    self.skip(attempt, &h.reason(what));
                    return;
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Logs and records the end of an attempt. Work that never began (a program that could
    /// not start) still gets its start row.
    fn record_end(
        &self,
        job: &JobSpec,
        id: i64,
        started: &StartMark,
        status: RunStatus,
        outcome: &Outcome,
    ) {
        let started_at = started.mark();
        let finished_at = self.ctx.clock.now();
        let duration_ms = (finished_at - started_at).num_milliseconds();
        if status == RunStatus::Succeeded {
            tracing::info!(job = %job.name, run_id = id, status = status.as_str(), duration_ms, exit_code = outcome.exit_code, "run finished");
        } else {
            tracing::warn!(
                job = %job.name,
                run_id = id,
                status = status.as_str(),
                duration_ms,
                exit_code = outcome.exit_code,
                error = outcome.error.as_deref().unwrap_or(""),
                "run finished"
            );
        }
        self.ctx.recorder.record(Record::Finished(RunEnd {
            id,
            finished_at,
            status,
            exit_code: outcome.exit_code,
            error: outcome.error.clone(),
            output: outcome.output.clone(),
            details: outcome.details.as_ref().map(ToString::to_string),
        }));
    }

    /// One attempt: start record, execution under timeout and stop signals, end record.
    async fn attempt(&self, job: &Arc<JobSpec>, id: i64, attempt: u32) -> (RunStatus, Outcome) {
        let ctx = &self.ctx;
        self.tell(Dispatched::Started(id));
        ctx.running.fetch_add(1, Ordering::Relaxed);
        let started = StartMark::new(
            self.start_record(id, attempt, None),
            Arc::clone(&ctx.clock),
            ctx.recorder.clone(),
        );
        let actx = AttemptContext {
            job,
            run_id: id,
            scheduled_for: self.scheduled_for,
            attempt,
            trigger: if attempt > 1 {
                Trigger::Retry
            } else {
                self.trigger
            },
            processes: &ctx.processes,
            started: &started,
            services: &ctx.services,
        };
        let stop = StopSignal {
            soft: CancellationToken::new(),
            hard: ctx.stop.hard.clone(),
        };
        // A bug in a job kind must not leave its run `running` forever: a panic becomes a
        // failed run with the panic's message.
        let exec = std::panic::AssertUnwindSafe(job.kind.execute(&actx, &stop))
            .catch_unwind()
            .map(|r| r.unwrap_or_else(|p| panicked(job.kind.label(), p.as_ref())));
        tokio::pin!(exec);
        let deadline = job.timeout.map(|t| Instant::now() + t);
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let stopped: Result<Outcome, RunStatus> = tokio::select! {
            out = &mut exec => Ok(out),
            () = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => Err(RunStatus::TimedOut),
            () = ctx.stop.soft.cancelled() => Err(RunStatus::Interrupted),
            () = self.replaced.cancelled() => Err(RunStatus::Cancelled),
        };
        let (status, outcome) = match stopped {
            Ok(out) => {
                let s = if out.success {
                    RunStatus::Succeeded
                } else {
                    RunStatus::Failed
                };
                (s, out)
            }
            Err(reason) => {
                stop.soft.cancel();
                let mut out = exec.await;
                let why = why_stopped(reason, job);
                out.error = Some(match out.error.take() {
                    Some(e) => format!("{why}: {e}"),
                    None => why,
                });
                out.success = false;
                (reason, out)
            }
        };
        ctx.running.fetch_sub(1, Ordering::Relaxed);
        self.record_end(job, id, &started, status, &outcome);
        (status, outcome)
    }
}
