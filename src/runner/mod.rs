//! One firing, from due to recorded: the overlap policy, the global concurrency limit, each
//! attempt under its timeout and the daemon's stop signals, retries with backoff, and the
//! history records. Every firing is its own task, so nothing one job does can delay another.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::Alerts;
use crate::clock::Clock;
use crate::history::recorder::Recorder;
use crate::history::run_ids::RunIds;
use crate::job::{JobSpec, Outcome, Overlap, Services, StopSignal};
use crate::processes::Processes;
use crate::store::{Cluster, RunStatus, Trigger};

mod claim_batch;
mod cluster;
mod dependents;
mod firing;
mod group;
mod lifecycle;
mod rendezvous;
mod slot;

pub use cluster::{ClaimCounts, ClaimHealth, Claimed, claim, recovered};
use firing::Firing;
use slot::queue_worker;

pub use dependents::{Dependent, consider, fire as fire_dependent};
pub use rendezvous::{HEAD_START, Members, preferred_node};
pub use slot::JobSlot;

/// Most firings waiting behind an active run with `overlap = "queue"`; more are skipped.
pub const MAX_QUEUED: usize = 100;

/// What every firing shares.
#[derive(Debug)]
pub struct Context {
    /// The scheduler's clock.
    clock: Arc<Clock>,
    /// Where records go.
    recorder: Recorder,
    /// Global limit on runs in progress.
    limit: Arc<Semaphore>,
    /// Run ids.
    ids: Arc<RunIds>,
    /// This daemon's node name.
    node: String,
    /// Tracks every firing task.
    tracker: TaskTracker,
    /// Cancelled when shutdown begins: no new retries, queued firings give up.
    draining: CancellationToken,
    /// `soft`: stop runs (drain grace over); `hard`: kill now (second signal).
    stop: StopSignal,
    /// The commands' processes (shared with the daemon's signal thread).
    processes: Arc<Processes>,
    /// Attempts in progress.
    running: AtomicUsize,
    /// Firings waiting for their turn or a free run slot.
    waiting: AtomicUsize,
    /// Signalled when a run starts or ends (the systemd status line follows).
    activity: tokio::sync::Notify,
    /// SMTP transports and HTTP clients.
    services: Services,
    /// Sends failure/recovery notifications.
    alerts: Alerts,
    /// The nodes sharing the history database, if it is shared: each firing is then claimed
    /// before it runs, and runs on the node that wins the claim only.
    cluster: Option<Cluster>,
    /// Whether claims are failing (shared with the heartbeat, which says whether the
    /// database answers).
    claims: Arc<ClaimHealth>,
    /// This node's tags: a job whose `run_on` asks for others does not run here.
    tags: Vec<String>,
    /// The mutual exclusion groups' gates on this node.
    groups: group::Groups,
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
            waiting: AtomicUsize::new(0),
            activity: tokio::sync::Notify::new(),
            cluster: None,
            claims: Arc::default(),
            tags: Vec::new(),
            groups: group::Groups::default(),
        }
    }

    /// The same, with the commands' processes kept in `processes` (shared with the daemon's
    /// signal thread).
    #[must_use]
    pub fn with_processes(mut self, processes: Arc<Processes>) -> Self {
        self.processes = processes;
        self
    }

    /// The same, telling `successes` each job that succeeds (the stale-job watch).
    #[must_use]
    pub fn with_successes(mut self, successes: tokio::sync::mpsc::UnboundedSender<String>) -> Self {
        self.alerts = self.alerts.with_successes(successes);
        self
    }

    /// The same, as a node with `tags`, in `cluster` when the history database is shared
    /// with other nodes (each firing claimed before it runs).
    #[must_use]
    pub fn in_cluster(mut self, cluster: Option<Cluster>, tags: Vec<String>) -> Self {
        self.cluster = cluster;
        self.tags = tags;
        self
    }

    /// The scheduler's clock.
    pub fn clock(&self) -> &Arc<Clock> {
        &self.clock
    }

    /// Where records go.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Run ids.
    pub fn ids(&self) -> &Arc<RunIds> {
        &self.ids
    }

    /// This daemon's node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Tracks every firing task: what runs for a firing is spawned on it, so the drain waits
    /// for it.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// The commands' processes.
    pub fn processes(&self) -> &Arc<Processes> {
        &self.processes
    }

    /// SMTP transports and HTTP clients (and the runs' live output).
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Sends failure/recovery notifications.
    pub fn alerts(&self) -> &Alerts {
        &self.alerts
    }

    /// Whether claims are failing (the heartbeat says whether the database answers).
    pub fn claims(&self) -> &Arc<ClaimHealth> {
        &self.claims
    }

    /// Told when a run starts or ends.
    pub fn activity(&self) -> &tokio::sync::Notify {
        &self.activity
    }

    fn next_id(&self) -> i64 {
        self.ids.next()
    }

    /// Whether this node may run `spec`: its tags hold every one of the job's `run_on`.
    fn may_run(&self, spec: &JobSpec) -> bool {
        spec.run_on.iter().all(|t| self.tags.contains(t))
    }

    /// Whether the daemon is stopping its runs (grace over, or a second signal).
    fn stopping(&self) -> bool {
        self.stop.soft.is_cancelled() || self.stop.hard.is_cancelled()
    }

    /// Attempts in progress.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Firings waiting for their turn or a free run slot.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Counts a firing as waiting while the guard lives.
    fn wait_guard(&self) -> Counted<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Counted {
            count: &self.waiting,
            activity: None,
        }
    }

    /// Counts an attempt as running while the guard lives (however its future ends, dropped
    /// included); its start and its end wake the status line.
    fn run_guard(&self) -> Counted<'_> {
        self.running.fetch_add(1, Ordering::Relaxed);
        self.activity.notify_one();
        Counted {
            count: &self.running,
            activity: Some(&self.activity),
        }
    }
}

/// A firing counted as waiting, or an attempt as running (see [`Context::waiting`],
/// [`Context::running`]), until dropped.
struct Counted<'a> {
    count: &'a AtomicUsize,
    /// Told when the count goes down.
    activity: Option<&'a tokio::sync::Notify>,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        if let Some(activity) = self.activity {
            activity.notify_one();
        }
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

impl Dispatched {
    /// What a trigger request reports of it: the outcome, the run it started (or the skipped
    /// row), and in words what it waits for or why it did not run.
    pub fn outcome(self) -> (crate::store::TriggerOutcome, Option<i64>, Option<String>) {
        use crate::store::TriggerOutcome;
        match self {
            Dispatched::Started(id) => (TriggerOutcome::Started, Some(id), None),
            Dispatched::Queued { behind, ahead } => {
                let detail = match behind {
                    Some(id) => format!("behind run {id}, with {ahead} firing(s) queued before it"),
                    None if ahead > 0 => format!("behind {ahead} queued firing(s)"),
                    None => "waiting for a free run slot (max_concurrent_runs)".to_string(),
                };
                (TriggerOutcome::Queued, None, Some(detail))
            }
            Dispatched::Skipped { run_id, reason } => {
                (TriggerOutcome::Skipped, Some(run_id), Some(reason))
            }
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
    if ctx.cluster.is_some() || !job.run_on.is_empty() {
        let ctx = Arc::clone(ctx);
        ctx.tracker.clone().spawn(async move {
            // A `skip` firing takes the job's turn with its claim, in the same statement.
            let wants_turn = firing.job.overlap == Overlap::Skip;
            let (claimed, turn) =
                cluster::claim_with_turn(&ctx, &firing.job, scheduled_for, wants_turn).await;
            firing
                .turn_held
                .store(turn, std::sync::atomic::Ordering::Relaxed);
            match claimed {
                Claimed::Mine => {
                    firing.record_fired();
                    let overlap = firing.job.overlap;
                    dispatch(firing, overlap);
                }
                Claimed::Unreachable => ctx.claims.keep(&firing.slot, &firing.job, scheduled_for),
                Claimed::NotMine => {}
            }
        });
    } else {
        dispatch(firing, job.overlap);
    }
}

/// Records `at` as the newest firing time of `job`, unless in a cluster: there the node
/// that claims a firing records it (see [`fire`]).
pub fn record_newest(ctx: &Context, job: &str, at: DateTime<Utc>) {
    if ctx.cluster.is_none() {
        ctx.recorder.record(crate::store::Record::Fired {
            job: job.to_string(),
            scheduled_for: at,
        });
    }
}

/// Does `then` for the firing of `spec` at `at` on the one node that has it: at once on a
/// database of its own; in a cluster, once this node has claimed it.
pub fn once_claimed(
    ctx: &Arc<Context>,
    spec: &Arc<JobSpec>,
    at: DateTime<Utc>,
    then: impl FnOnce(&Arc<Context>) + Send + 'static,
) {
    if ctx.cluster.is_none() {
        return then(ctx);
    }
    let (ctx, spec) = (Arc::clone(ctx), Arc::clone(spec));
    ctx.tracker.clone().spawn(async move {
        if claim(&ctx, &spec, at).await == Claimed::Mine {
            then(&ctx);
        }
    });
}

/// Fires a manual run (`hourglass trigger`) now, under the job's overlap policy; `reply` hears
/// what became of it. `alone`: its runs fire none of the jobs that run after it.
pub fn fire_manual(
    ctx: &Arc<Context>,
    slot: &Arc<JobSlot>,
    job: &Arc<JobSpec>,
    reply: tokio::sync::oneshot::Sender<Dispatched>,
    alone: bool,
) {
    let now = ctx.clock.now();
    let mut firing = Firing::new(ctx, slot, job, now, Trigger::Manual);
    firing.alone = alone;
    if let Ok(mut r) = firing.reply.lock() {
        *r = Some(reply);
    }
    dispatch(firing, job.overlap);
}

/// Runs attempt `attempt` of the firing for `scheduled_for` of `job`, whose previous attempt
/// was lost with its node (`on_node_loss = "retry"`), under the job's overlap policy.
pub fn fire_lost_again(
    ctx: &Arc<Context>,
    slot: &Arc<JobSlot>,
    job: &Arc<JobSpec>,
    scheduled_for: DateTime<Utc>,
    attempt: u32,
) {
    let mut firing = Firing::new(ctx, slot, job, scheduled_for, Trigger::Retry);
    firing.first_attempt = attempt.max(2);
    dispatch(firing, job.overlap);
}

/// What a firing in a catch-up series was, in the reason of its row.
const SERIES: &str = "waiting in a catch-up series";

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
    series(ctx, slot, job, firings, false);
}

/// A series (see [`fire_series`]) whose firings this node has claimed already.
fn run_claimed_series(
    ctx: &Arc<Context>,
    slot: &Arc<JobSlot>,
    job: &Arc<JobSpec>,
    firings: Vec<(DateTime<Utc>, Trigger)>,
) {
    series(ctx, slot, job, firings, true);
}

fn series(
    ctx: &Arc<Context>,
    slot: &Arc<JobSlot>,
    job: &Arc<JobSpec>,
    firings: Vec<(DateTime<Utc>, Trigger)>,
    claimed: bool,
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
            let claimed = if claimed {
                Claimed::Mine
            } else {
                claim(&firing.ctx, &firing.job, firing.scheduled_for).await
            };
            match claimed {
                Claimed::Mine if firing.ctx.cluster.is_some() => firing.record_fired(),
                Claimed::Mine => {}
                Claimed::Unreachable => {
                    let ctx = &firing.ctx;
                    ctx.claims
                        .keep(&firing.slot, &firing.job, firing.scheduled_for);
                    continue;
                }
                Claimed::NotMine => continue,
            }
            let spec = firing.job();
            if spec.overlap == Overlap::Allow {
                if !firing.gives_up_now(1, SERIES) {
                    firing.run(None).await;
                }
            } else if let Some(p) = firing.wait_turn(SERIES).await {
                firing.run(Some(p)).await;
            }
        }
    });
}

fn dispatch(firing: Firing, overlap: Overlap) {
    // A firing made as the daemon stops (a manual trigger) is told so at once, not queued.
    if firing.gives_up_now(1, "just fired") {
        return;
    }
    let ctx = Arc::clone(&firing.ctx);
    let slot = Arc::clone(&firing.slot);
    match overlap {
        Overlap::Allow => {
            ctx.tracker.spawn(firing.run(None));
        }
        Overlap::Skip => match Arc::clone(&slot.serial).try_acquire_owned() {
            Ok(permit) => {
                slot.took_turn(firing.scheduled_for);
                ctx.tracker.spawn(firing.run(Some(permit)));
            }
            Err(_) => {
                let reason = format!("{} (overlap = \"skip\")", slot.turn_holder());
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
