//! One firing, from due to recorded: the overlap policy, the global concurrency limit, each
//! attempt under its timeout and the daemon's stop signals, retries with backoff, and the
//! history records. Every firing is its own task, so nothing one job does can delay another.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::job::{AttemptContext, JobSpec, Outcome, Overlap, Services, StopSignal};
use crate::notify::{FiringEnd, Notifier, NotifyState};
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
    pub notifier: Notifier,
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
        let notifier = Notifier::new(
            services.mailers.clone(),
            services.http.clone(),
            recorder.clone(),
            node.clone(),
        );
        Self {
            services,
            notifier,
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

/// Per-job state that outlives reloads: who is running, who waits.
#[derive(Debug)]
pub struct JobSlot {
    /// Held by the active run of a job whose policy is not `allow`.
    serial: Arc<Semaphore>,
    /// The newest firing's "replaced" token (`overlap = "replace"`).
    current: Mutex<Option<CancellationToken>>,
    /// Firings waiting their turn (`overlap = "queue"`), oldest first.
    queue: Mutex<QueueState>,
    /// What the last firing's end was, for recovery notices and rate limits.
    notify: NotifyState,
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
            current: Mutex::new(None),
            queue: Mutex::new(QueueState::default()),
            notify: NotifyState::default(),
        }
    }
}

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
        if let Some(p) = firing.wait_turn(&slot.serial).await {
            firing.run(Some(p)).await;
        }
    }
}

/// Starts a firing of `job` for `scheduled_for` under the overlap policy `overlap` (the job's
/// own, except for catch-up series, which queue). Returns at once.
pub fn fire(
    ctx: &Arc<Context>,
    slot: &Arc<JobSlot>,
    job: &Arc<JobSpec>,
    scheduled_for: DateTime<Utc>,
    trigger: Trigger,
    overlap: Overlap,
) {
    fire_with(ctx, slot, job, scheduled_for, trigger, overlap, None);
}

/// Fires a manual run (`hourglass trigger`) now, under the job's overlap policy; `reply` gets
/// the id of the run it started or skipped.
pub fn fire_manual(
    ctx: &Arc<Context>,
    slot: &Arc<JobSlot>,
    job: &Arc<JobSpec>,
    reply: tokio::sync::oneshot::Sender<i64>,
) {
    let now = ctx.clock.now();
    fire_with(
        ctx,
        slot,
        job,
        now,
        Trigger::Manual,
        job.overlap,
        Some(reply),
    );
}

fn fire_with(
    ctx: &Arc<Context>,
    slot: &Arc<JobSlot>,
    job: &Arc<JobSpec>,
    scheduled_for: DateTime<Utc>,
    trigger: Trigger,
    overlap: Overlap,
    reply: Option<tokio::sync::oneshot::Sender<i64>>,
) {
    if matches!(trigger, Trigger::Schedule | Trigger::CatchUp) {
        ctx.recorder.record(Record::Fired {
            job: job.name.clone(),
            scheduled_for,
        });
    }
    let replaced = CancellationToken::new();
    let firing = Firing {
        ctx: Arc::clone(ctx),
        slot: Arc::clone(slot),
        job: Arc::clone(job),
        scheduled_for,
        trigger,
        replaced: replaced.clone(),
        reply: Mutex::new(reply),
    };
    match overlap {
        Overlap::Allow => {
            ctx.tracker.spawn(firing.run(None));
        }
        Overlap::Skip => match Arc::clone(&slot.serial).try_acquire_owned() {
            Ok(permit) => {
                ctx.tracker.spawn(firing.run(Some(permit)));
            }
            Err(_) => firing.skip("the previous run is still active (overlap = \"skip\")"),
        },
        Overlap::Queue => {
            let Ok(mut q) = slot.queue.lock() else {
                return;
            };
            if q.pending.len() >= MAX_QUEUED {
                drop(q);
                firing.skip("too many firings already queued (overlap = \"queue\")");
                return;
            }
            q.pending.push_back(firing);
            if !q.worker {
                q.worker = true;
                ctx.tracker.spawn(queue_worker(Arc::clone(slot)));
            }
        }
        Overlap::Replace => {
            if let Ok(mut cur) = slot.current.lock()
                && let Some(old) = cur.replace(replaced.clone())
            {
                old.cancel();
            }
            let slot = Arc::clone(slot);
            ctx.tracker.spawn(async move {
                if let Some(p) = firing.wait_turn(&slot.serial).await {
                    firing.run(Some(p)).await;
                }
            });
        }
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

/// The moment an attempt really began; marking it records the run's start (row `running`)
/// and logs "run started". Only the first call counts.
#[derive(Debug)]
pub struct StartMark {
    at: OnceLock<DateTime<Utc>>,
    run: RunStart,
    ctx: Arc<Context>,
}

impl StartMark {
    /// Marks the start (now) if not yet marked; returns the start time.
    pub fn mark(&self) -> DateTime<Utc> {
        self.mark_process(None)
    }

    /// Marks the start (now) of a run whose main process is `pid`, if not yet marked.
    pub fn mark_process(&self, pid: Option<u32>) -> DateTime<Utc> {
        *self.at.get_or_init(|| {
            let now = self.ctx.clock.now();
            let run = RunStart {
                started_at: Some(now),
                pid,
                ..self.run.clone()
            };
            tracing::info!(
                job = %run.job,
                run_id = run.id,
                attempt = run.attempt,
                trigger = run.trigger.as_str(),
                lateness_ms = (now - run.scheduled_for).num_milliseconds(),
                "run started"
            );
            self.ctx.recorder.record(Record::Started(run));
            now
        })
    }
}

#[derive(Debug)]
struct Firing {
    ctx: Arc<Context>,
    slot: Arc<JobSlot>,
    job: Arc<JobSpec>,
    scheduled_for: DateTime<Utc>,
    trigger: Trigger,
    replaced: CancellationToken,
    /// Told the id of the firing's first run (or skip), for `hourglass trigger`.
    reply: Mutex<Option<tokio::sync::oneshot::Sender<i64>>>,
}

impl Firing {
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

    /// Tells who fired this by hand which run it became.
    fn announce(&self, id: i64) {
        if let Some(reply) = self.reply.lock().ok().and_then(|mut r| r.take()) {
            let _ = reply.send(id);
        }
    }

    /// Records this firing as skipped.
    fn skip(&self, reason: &str) {
        let id = self.ctx.next_id();
        self.announce(id);
        tracing::info!(job = %self.job.name, run_id = id, scheduled_for = %self.scheduled_for, reason, "firing skipped");
        self.ctx.recorder.record(Record::Complete(
            self.start_record(id, 1, None),
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

    /// Waits for the job's turn (queue/replace); `None` if the daemon shuts down first or a
    /// newer firing replaced this one.
    async fn wait_turn(&self, serial: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            p = Arc::clone(serial).acquire_owned() => p.ok(),
            () = self.ctx.draining.cancelled() => {
                self.skip("the daemon shut down before the previous run finished");
                None
            }
            () = self.replaced.cancelled() => {
                self.skip("replaced by a newer firing before it started (overlap = \"replace\")");
                None
            }
        }
    }

    /// Runs every attempt of the firing. `_turn` holds the job's serial permit, if any.
    async fn run(self, _turn: Option<OwnedSemaphorePermit>) {
        let retries = self.job.retry.retries;
        let mut attempt = 1;
        loop {
            let global = tokio::select! {
                p = Arc::clone(&self.ctx.limit).acquire_owned() => p.ok(),
                () = self.ctx.draining.cancelled() => None,
            };
            let Some(global) = global else {
                self.skip("the daemon shut down before a run slot was free");
                return;
            };
            let (run_id, status, outcome) = self.attempt(attempt).await;
            drop(global);
            let retry = matches!(status, RunStatus::Failed | RunStatus::TimedOut)
                && outcome.retryable
                && attempt <= retries;
            if !retry {
                let end = FiringEnd {
                    run_id,
                    scheduled_for: self.scheduled_for,
                    status,
                    attempt,
                    error: outcome.error,
                    output: outcome.output,
                };
                if let Some(send) =
                    self.ctx
                        .notifier
                        .after_firing(&self.job, &self.slot.notify, &end)
                {
                    self.ctx.tracker.spawn(send);
                }
                return;
            }
            attempt += 1;
            let delay = self.job.retry.delay(attempt);
            tracing::info!(job = %self.job.name, attempt, delay_ms = delay.as_millis() as u64, "retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.ctx.draining.cancelled() => return,
                () = self.replaced.cancelled() => return,
            }
        }
    }

    /// One attempt: start record, execution under timeout and stop signals, end record.
    async fn attempt(&self, attempt: u32) -> (i64, RunStatus, Outcome) {
        let ctx = &self.ctx;
        let job = &self.job;
        let id = ctx.next_id();
        self.announce(id);
        ctx.running.fetch_add(1, Ordering::Relaxed);
        let started = StartMark {
            at: OnceLock::new(),
            run: self.start_record(id, attempt, None),
            ctx: Arc::clone(ctx),
        };
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
                let why = match reason {
                    RunStatus::TimedOut => format!(
                        "timed out after {}",
                        humantime::format_duration(job.timeout.unwrap_or_default())
                    ),
                    RunStatus::Interrupted => "interrupted: the daemon shut down".to_string(),
                    _ => {
                        "cancelled: replaced by a newer firing (overlap = \"replace\")".to_string()
                    }
                };
                out.error = Some(match out.error.take() {
                    Some(e) => format!("{why}: {e}"),
                    None => why,
                });
                out.success = false;
                (reason, out)
            }
        };
        ctx.running.fetch_sub(1, Ordering::Relaxed);
        // Work that never began (a program that could not start) still gets its start row.
        let started_at = started.mark();
        let finished_at = ctx.clock.now();
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
        ctx.recorder.record(Record::Finished(RunEnd {
            id,
            finished_at,
            status,
            exit_code: outcome.exit_code,
            error: outcome.error.clone(),
            output: outcome.output.clone(),
            details: outcome.details.as_ref().map(ToString::to_string),
        }));
        (id, status, outcome)
    }
}
