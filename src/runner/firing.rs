//! One firing from its turn to its end: waiting (for its turn, a run slot, a retry's
//! backoff) under the stop, removal and replace signals, each attempt under its timeout, and
//! the records and alerts of its end.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::group::{CLUSTER_WAIT, GroupTurn, run_in_words};
use super::slot::{Halt, JobSlot};
use super::{Context, Dispatched, panicked, why_stopped};
use crate::alert::FiringEnd;
use crate::job::{AttemptContext, JobSpec, Outcome, Overlap, StartMark, StopSignal};
use crate::store::{ParentRun, Record, RunEnd, RunStart, RunStatus, Trigger};

#[derive(Debug)]
pub(crate) struct Firing {
    pub(super) ctx: Arc<Context>,
    pub(super) slot: Arc<JobSlot>,
    /// The definition when it fired (each attempt runs with the one in force then).
    pub(super) job: Arc<JobSpec>,
    pub(super) scheduled_for: DateTime<Utc>,
    pub(super) trigger: Trigger,
    pub(super) replaced: CancellationToken,
    /// Cancelled when the job is removed or disabled.
    pub(super) removed: CancellationToken,
    /// Told what became of the firing, for `hourglass trigger`.
    pub(super) reply: Mutex<Option<tokio::sync::oneshot::Sender<Dispatched>>>,
    /// The attempt it starts with: 1, or the next one of a run lost with its node.
    pub(super) first_attempt: u32,
    /// It holds the job's turn across nodes (a shared database's), given back when it is
    /// dropped: after its last attempt, or when it gives up.
    pub(super) turn_held: AtomicBool,
    /// The parents' runs that fired it (trigger `dependency`), newest last.
    pub(super) parents: Arc<[ParentRun]>,
    /// The id its first row takes (claimed with its causes), if one was reserved.
    pub(super) reserved_id: AtomicI64,
    /// Its runs fire none of the jobs that run after it (`hourglass trigger --no-deps`).
    pub(super) alone: bool,
}

impl Drop for Firing {
    fn drop(&mut self) {
        if self.turn_held.load(Ordering::Relaxed) {
            super::cluster::give_turn(&self.ctx, &self.job.name, self.scheduled_for);
        }
    }
}

impl Firing {
    pub(super) fn new(
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
            first_attempt: 1,
            turn_held: AtomicBool::new(false),
            parents: Arc::from(Vec::new()),
            reserved_id: AtomicI64::new(0),
            alone: false,
        }
    }

    /// The id of the firing's next row: the one reserved for it first, then new ones.
    fn next_id(&self) -> i64 {
        match self.reserved_id.swap(0, Ordering::Relaxed) {
            0 => self.ctx.next_id(),
            id => id,
        }
    }

    /// The job's definition in force now.
    pub(super) fn job(&self) -> Arc<JobSpec> {
        self.slot
            .spec()
            .filter(|s| s.name == self.job.name)
            .unwrap_or_else(|| Arc::clone(&self.job))
    }

    /// What fired attempt `attempt`: the firing's trigger, or `retry` after the first.
    fn trigger_of(&self, attempt: u32) -> Trigger {
        if attempt > 1 {
            Trigger::Retry
        } else {
            self.trigger
        }
    }

    pub(super) fn start_record(
        &self,
        id: i64,
        attempt: u32,
        started_at: Option<DateTime<Utc>>,
    ) -> RunStart {
        RunStart {
            id,
            job: self.job.name.clone(),
            scheduled_for: self.scheduled_for,
            started_at,
            attempt,
            trigger: self.trigger_of(attempt),
            node: self.ctx.node.clone(),
            pid: None,
        }
    }

    /// Records that the job fired for this firing's time (its `job_state`).
    pub(super) fn record_fired(&self) {
        self.ctx.recorder.record(Record::Fired {
            job: self.job.name.clone(),
            scheduled_for: self.scheduled_for,
        });
    }

    /// Tells who fired this by hand what became of it (the first news only).
    pub(super) fn tell(&self, news: Dispatched) {
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

    /// Whether attempt `attempt`, which was `what`, must give up now; if so it is recorded
    /// `skipped` with the reason.
    pub(super) fn gives_up_now(&self, attempt: u32, what: &str) -> bool {
        let halt = self.halted_now();
        if let Some(h) = halt {
            self.skip(attempt, &h.reason(what));
        }
        halt.is_some()
    }

    /// Waits for `work` unless the firing must give up first (checked first, also when
    /// `work` is ready at once); then attempt `attempt`, which was `what`, is recorded
    /// `skipped` and `None` returned.
    pub(super) async fn unless_halted<T>(
        &self,
        attempt: u32,
        what: &str,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::select! {
            biased;
            h = self.halted() => {
                self.skip(attempt, &h.reason(what));
                None
            }
            v = work => Some(v),
        }
    }

    /// Records attempt `attempt` of this firing as skipped (not run) because of `reason`.
    pub(super) fn skip(&self, attempt: u32, reason: &str) {
        self.skip_with(attempt, reason, None);
    }

    /// [`Firing::skip`], with `details` (JSON) in the row.
    pub(super) fn skip_with(&self, attempt: u32, reason: &str, details: Option<String>) {
        let id = self.next_id();
        self.tell(Dispatched::Skipped {
            run_id: id,
            reason: reason.to_string(),
        });
        tracing::info!(job = %self.job.name, run_id = id, scheduled_for = %self.scheduled_for, attempt, reason, "firing skipped");
        self.ctx.recorder.record(Record::Complete(
            self.start_record(id, attempt, None),
            RunEnd {
                id,
                job: self.job.name.clone(),
                finished_at: self.ctx.clock.now(),
                status: RunStatus::Skipped,
                exit_code: None,
                error: Some(reason.to_string()),
                output: None,
                details,
                retried: false,
                usage: None,
            },
        ));
    }

    /// Waits for the job's turn (`what` says what it waits in); `None`, recorded `skipped`, if
    /// the daemon stops, the job is removed or a newer firing replaces this one first.
    pub(super) async fn wait_turn(&self, what: &str) -> Option<OwnedSemaphorePermit> {
        let turn = Arc::clone(&self.slot.serial).acquire_owned();
        let _waiting = self.ctx.wait_guard();
        let permit = self.unless_halted(1, what, turn).await?.ok()?;
        self.slot.took_turn(self.scheduled_for);
        Some(permit)
    }

    /// Waits for a free run slot (`max_concurrent_runs`); `None`, recorded, if the firing
    /// must give up first.
    async fn wait_run_slot(&self, attempt: u32) -> Option<OwnedSemaphorePermit> {
        let what = "waiting for a free run slot (max_concurrent_runs)";
        if self.gives_up_now(attempt, what) {
            return None;
        }
        if let Ok(p) = Arc::clone(&self.ctx.limit).try_acquire_owned() {
            return Some(p);
        }
        self.tell(Dispatched::Queued {
            behind: None,
            ahead: 0,
        });
        let slot = Arc::clone(&self.ctx.limit).acquire_owned();
        let _waiting = self.ctx.wait_guard();
        self.unless_halted(attempt, what, slot).await?.ok()
    }

    /// Waits for a place in the job's group (none without a group; `None`, recorded, if the
    /// firing gives up): on this node, and across nodes on a shared database. A `skip` job's
    /// first attempt that finds the group full is skipped, naming who holds it.
    async fn wait_group(&self, attempt: u32) -> Option<Option<GroupTurn>> {
        let job = self.job();
        let Some(group) = &job.group else {
            return Some(None);
        };
        let skip = attempt == self.first_attempt && job.overlap == Overlap::Skip;
        let what = "waiting for its group (max_running)";
        let full = |holders: String| {
            format!(
                "its group {:?} is full (max_running = {}): {holders} (overlap = \"skip\")",
                group.name, group.max_running
            )
        };
        let gate = self.ctx.groups.gate(group);
        let me = run_in_words(&job.name, self.scheduled_for, None);
        let permit = match Arc::clone(&gate.permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) if skip => {
                self.skip(attempt, &full(gate.holders()));
                return None;
            }
            Err(_) => {
                let _waiting = self.ctx.wait_guard();
                let acquire = Arc::clone(&gate.permits).acquire_owned();
                self.unless_halted(attempt, what, acquire).await?.ok()?
            }
        };
        let turn = GroupTurn::new(permit, &gate, me);
        let Some(cluster) = self.ctx.cluster.clone() else {
            return Some(Some(turn));
        };
        loop {
            let (node, at) = (&self.ctx.node, self.scheduled_for);
            match cluster
                .take_group_slot(&group.name, group.max_running, node, &job.name, at)
                .await
            {
                Ok(Some(slot)) => return Some(Some(turn.with_slot(&self.ctx, &group.name, slot))),
                Ok(None) if skip => {
                    let holders = cluster.group_holders(&group.name).await.unwrap_or_default();
                    let words: Vec<String> = holders
                        .iter()
                        .map(|h| {
                            format!(
                                "{} on {}",
                                run_in_words(&h.job, h.scheduled_for, None),
                                h.node
                            )
                        })
                        .collect();
                    self.skip(attempt, &full(words.join(", ")));
                    return None;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(job = %job.name, error = %e, "cannot take a slot of the job's group; asking again")
                }
            }
            let _waiting = self.ctx.wait_guard();
            self.unless_halted(attempt, what, tokio::time::sleep(CLUSTER_WAIT))
                .await?;
        }
    }

    /// Marks run `id` as firing none of the jobs that run after it, before it starts; when
    /// the database cannot take the mark, the attempt is recorded `skipped` and `false`
    /// returned (it would fire them).
    async fn fires_no_child(&self, id: i64, attempt: u32) -> bool {
        match self
            .ctx
            .services
            .store
            .fire_no_child(id, &self.ctx.node)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                self.reserved_id.store(id, Ordering::Relaxed);
                self.skip(
                    attempt,
                    &format!("--no-deps: cannot mark the run as firing no job after it: {e}"),
                );
                false
            }
        }
    }

    /// Runs every attempt of the firing. `turn` holds the job's serial permit, if any; on a
    /// shared database the job's turn across nodes is taken too (see [`Firing::cluster_turn`]).
    pub(super) async fn run(self, turn: Option<OwnedSemaphorePermit>) {
        let needs_turn = turn.is_some() && self.ctx.cluster.is_some();
        if needs_turn && !self.turn_held.load(Ordering::Relaxed) && !self.cluster_turn().await {
            return;
        }
        self.attempts(turn).await;
    }

    async fn attempts(self, turn: Option<OwnedSemaphorePermit>) {
        let mut attempt = self.first_attempt;
        loop {
            let Some(group) = self.wait_group(attempt).await else {
                return;
            };
            let Some(global) = self.wait_run_slot(attempt).await else {
                return;
            };
            let job = self.job();
            let id = self.next_id();
            if self.alone && !self.fires_no_child(id, attempt).await {
                return;
            }
            if let Some(g) = &group {
                g.held_by(run_in_words(&job.name, self.scheduled_for, Some(id)));
            }
            if turn.is_some() {
                self.slot.active.store(id, Ordering::Relaxed);
            }
            let (status, outcome) = self.attempt(&job, id, attempt).await;
            if turn.is_some() {
                self.slot.active.store(0, Ordering::Relaxed);
            }
            drop(global);
            drop(group);
            if !retries(&job, attempt, status, &outcome) {
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
            let backoff = tokio::time::sleep(delay);
            if self.unless_halted(attempt, what, backoff).await.is_none() {
                return;
            }
        }
    }

    /// Logs and records the end of an attempt. Work that never began (a program that could
    /// not start) still gets its start row.
    pub(super) fn record_end(
        &self,
        job: &JobSpec,
        id: i64,
        attempt: u32,
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
            job: job.name.clone(),
            finished_at,
            status,
            exit_code: outcome.exit_code,
            error: outcome.error.clone(),
            output: outcome.output.clone(),
            details: outcome.details.as_ref().map(ToString::to_string),
            retried: retries(job, attempt, status, outcome),
            usage: outcome.usage,
        }));
    }

    /// One attempt: start record, execution under timeout and stop signals, end record.
    pub(super) async fn attempt(
        &self,
        job: &Arc<JobSpec>,
        id: i64,
        attempt: u32,
    ) -> (RunStatus, Outcome) {
        let ctx = &self.ctx;
        self.tell(Dispatched::Started(id));
        let running = ctx.run_guard();
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
            trigger: self.trigger_of(attempt),
            processes: &ctx.processes,
            started: &started,
            services: &ctx.services,
            parents: &self.parents,
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
            // Killed by the daemon's stop (the second signal's SIGKILL) before its stop was
            // seen here: stopped, not failed on its own.
            Ok(out) if !out.success && out.exit_code.is_none() && ctx.stopping() => {
                let reason = RunStatus::Interrupted;
                (reason, stopped_outcome(reason, job, out))
            }
            Ok(out) if out.success => (RunStatus::Succeeded, out),
            Ok(out) => (RunStatus::Failed, out),
            Err(reason) => {
                stop.soft.cancel();
                (reason, stopped_outcome(reason, job, exec.await))
            }
        };
        drop(running);
        self.record_end(job, id, attempt, &started, status, &outcome);
        (status, outcome)
    }
}

/// Whether attempt `attempt` of `job`, which ended `status`, is retried.
fn retries(job: &JobSpec, attempt: u32, status: RunStatus, outcome: &Outcome) -> bool {
    matches!(status, RunStatus::Failed | RunStatus::TimedOut)
        && outcome.retryable
        && attempt <= job.retry.retries
}

/// The outcome of an attempt stopped for `reason`: its error says why first.
fn stopped_outcome(reason: RunStatus, job: &JobSpec, mut out: Outcome) -> Outcome {
    let why = why_stopped(reason, job);
    out.error = Some(match out.error.take() {
        Some(e) => format!("{why}: {e}"),
        None => why,
    });
    out.success = false;
    out
}
