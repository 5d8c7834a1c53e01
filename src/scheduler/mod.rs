//! The timing core: one timer task over a heap of every job's next occurrence, sleeping until
//! the earliest (`sleep_until`, millisecond resolution), firing each due occurrence as its own
//! task, catching up on missed firings per the job's policy (see [`crate::due`]), following the
//! clock when it steps back, and applying reloads as a diff (added jobs start, removed jobs stop
//! firing and drop their waiting firings, changed jobs are rescheduled; runs in progress are
//! left alone). One task and one heap entry per job instead of a task per job: 100,000
//! schedules cost a few hundred bytes each.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::alert::{AlertPolicies, AlertPolicy};
use crate::job::JobSpec;
use crate::runner::{Context, Dispatched, JobSlot};
use crate::schedule::Schedule;

mod dependents;
mod entry;
mod pause;
mod plan;
mod view;

use entry::{Entry, Wake};
pub use view::JobView;

pub use crate::due::MAX_CATCH_UP;
pub use crate::schedule::LATE_GRACE;

/// A backward clock step up to this long keeps what each job already ran (those occurrences
/// are not run again when the clock reaches them a second time); a longer one rebuilds every
/// schedule from the new time.
pub const STEP_BACK_BOUND: TimeDelta = TimeDelta::hours(3);

/// Stale heap entries (of jobs changed or removed since) tolerated before the heap is rebuilt.
const STALE_SLACK: usize = 1024;

/// Every job's timer state, shared by the scheduler handle and the timer task.
struct Timers {
    jobs: HashMap<String, Entry>,
    heap: BinaryHeap<Reverse<Wake>>,
    /// Heap entries known to be stale.
    stale: usize,
    /// Slots of removed jobs whose runs are still going (a job added back waits for them).
    retired: HashMap<String, Arc<JobSlot>>,
    /// The newest time the timer has seen (the clock stepped back when `now` is below it).
    seen: DateTime<Utc>,
    /// Paused jobs (kept across reloads; a pause whose end passed may linger harmlessly).
    paused: HashMap<String, crate::store::Pause>,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            jobs: HashMap::new(),
            heap: BinaryHeap::new(),
            stale: 0,
            retired: HashMap::new(),
            seen: DateTime::<Utc>::MIN_UTC,
            paused: HashMap::new(),
        }
    }
}

impl Timers {
    /// Takes a job out of the timers (its heap entry goes stale).
    fn remove(&mut self, name: &str) -> Option<Entry> {
        let old = self.jobs.remove(name)?;
        if old.next.is_some() {
            self.stale += 1;
        }
        Some(old)
    }

    /// Forgets a removed job; its slot is kept aside while a run of it holds it.
    fn retire(&mut self, name: &str) {
        if let Some(slot) = self.remove(name).and_then(|old| old.slot) {
            slot.drop_waiting();
            if Arc::strong_count(&slot) > 1 {
                self.retired.insert(name.to_string(), slot);
            }
        }
    }

    /// Rebuilds the heap when stale entries outnumber live ones (many reloads of far-apart
    /// jobs would otherwise keep them until their old times).
    fn compact(&mut self) {
        if self.stale > STALE_SLACK && self.stale > self.jobs.len() {
            self.heap = self.jobs.values().filter_map(Entry::wake).collect();
            self.stale = 0;
        }
        self.retired.retain(|_, slot| Arc::strong_count(slot) > 1);
    }

    /// Fires every occurrence due at `now`; returns the earliest one still ahead.
    fn fire_due(&mut self, ctx: &Arc<Context>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if now < self.seen {
            self.step_back(now);
        }
        self.seen = now;
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.at > now {
                return Some(top.at);
            }
            let Some(Reverse(wake)) = self.heap.pop() else {
                break;
            };
            let Some(entry) = self
                .jobs
                .get_mut(&wake.spec.name)
                .filter(|e| e.next == Some(wake.at) && Arc::ptr_eq(&e.spec, &wake.spec))
            else {
                self.stale = self.stale.saturating_sub(1);
                continue;
            };
            let pause = self.paused.get(&wake.spec.name);
            entry.due(ctx, now, pause);
            entry.reschedule(pause);
            match entry.wake() {
                Some(w) => self.heap.push(w),
                None => {
                    tracing::debug!(job = %entry.spec.name, "no further occurrence; timer ends")
                }
            }
        }
        None
    }

    /// The clock went back from `self.seen` to `now`: every job whose schedule had gone past
    /// `now` goes on from `now` (see [`Entry::step_back`]); the heap is rebuilt.
    fn step_back(&mut self, now: DateTime<Utc>) {
        let step = self.seen - now;
        let rebuild = step > STEP_BACK_BOUND;
        if rebuild {
            tracing::warn!(
                step_s = step.num_seconds(),
                "the clock stepped back by more than 3 hours: every schedule is rebuilt from the new time (occurrences already run may run again)"
            );
        } else {
            tracing::warn!(
                step_ms = step.num_milliseconds(),
                quiet_until = %crate::store::format_ts(self.seen),
                "the clock stepped back: occurrences already run are not run again, so a job that had run up to the old time stays quiet until the clock reaches it again (an every-second job: the whole step)"
            );
        }
        for e in self.jobs.values_mut().filter(|e| rebuild || e.last > now) {
            e.step_back(now, rebuild, self.paused.get(&e.spec.name));
        }
        self.heap = self.jobs.values().filter_map(Entry::wake).collect();
        self.stale = 0;
    }
}

struct Shared {
    timers: Mutex<Timers>,
    /// Wakes the timer task when the set of jobs changed.
    changed: Notify,
    /// Counts the timer task's turns (for [`Scheduler::responsive`]).
    turns: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Timers> {
        // A panic while holding the lock cannot leave the timers half-changed in a way that
        // matters more than stopping all firing would: keep going with what is there.
        self.timers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// New jobs.
    pub added: Vec<String>,
    /// Jobs no longer defined.
    pub removed: Vec<String>,
    /// Jobs whose definition changed.
    pub changed: Vec<String>,
}

/// All job timers. Clones are handles on the same timers.
#[derive(Clone)]
pub struct Scheduler {
    ctx: Arc<Context>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("jobs", &self.len())
            .finish()
    }
}

impl Scheduler {
    /// A scheduler whose timer task stops when `shutdown` is cancelled.
    pub fn new(ctx: Arc<Context>, shutdown: CancellationToken) -> Self {
        let shared = Arc::new(Shared {
            timers: Mutex::new(Timers::default()),
            changed: Notify::new(),
            turns: tokio::sync::watch::Sender::new(0),
        });
        tokio::spawn(timer(Arc::clone(&ctx), Arc::clone(&shared), shutdown));
        Self { ctx, shared }
    }

    /// Whether the timer task takes a turn within `within` when woken (it is not wedged).
    pub async fn responsive(&self, within: std::time::Duration) -> bool {
        let mut turns = self.shared.turns.subscribe();
        turns.borrow_and_update();
        self.shared.changed.notify_one();
        matches!(
            tokio::time::timeout(within, turns.changed()).await,
            Ok(Ok(()))
        )
    }

    /// Forgets the slots of jobs that nothing runs or waits in and whose alert state holds
    /// nothing (the next firing makes a fresh one): after a burst of runs of many jobs, their
    /// slots would otherwise stay in memory for good. Called when the last run has ended.
    pub fn forget_idle_slots(&self) {
        let mut t = self.shared.lock();
        for entry in t.jobs.values_mut() {
            if entry.slot.as_ref().is_some_and(JobSlot::holds_nothing) {
                entry.slot = None;
            }
        }
        t.retired.retain(|_, slot| Arc::strong_count(slot) > 1);
    }

    /// Jobs scheduled.
    pub fn len(&self) -> usize {
        self.shared
            .lock()
            .jobs
            .values()
            .filter(|e| e.spec.enabled)
            .count()
    }

    /// The names of the jobs scheduled.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .shared
            .lock()
            .jobs
            .iter()
            .filter(|(_, e)| e.spec.enabled)
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// Whether no job is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the scheduled set equal to `specs`. `last_fired` (from the history database, at
    /// start-up) lets jobs catch up on what they missed; jobs without an entry start from now.
    pub fn apply(
        &mut self,
        specs: Vec<JobSpec>,
        alerts: &AlertPolicies,
        last_fired: &HashMap<String, DateTime<Utc>>,
    ) -> Changes {
        let now = self.ctx.clock().now();
        let mut changes = Changes::default();
        let mut wanted: HashMap<String, JobSpec> =
            specs.into_iter().map(|s| (s.name.clone(), s)).collect();
        let mut t = self.shared.lock();
        let names: Vec<String> = t.jobs.keys().cloned().collect();
        for name in names {
            match wanted.remove(&name) {
                None => {
                    t.retire(&name);
                    changes.removed.push(name);
                }
                Some(spec) => {
                    if t.jobs.get(&name).is_some_and(|old| {
                        *old.spec == spec && old.alert.as_ref() == alerts.get(&name)
                    }) {
                        continue;
                    }
                    let (slot, done) = t
                        .remove(&name)
                        .map(|old| {
                            let done = old.done_ahead(now);
                            (old.slot, done)
                        })
                        .unwrap_or_default();
                    let alert = alerts.get(&name).cloned();
                    schedule(&mut t, spec, alert, slot, done, last_fired, now);
                    changes.changed.push(name);
                }
            }
        }
        t.jobs.reserve(wanted.len());
        for (name, spec) in wanted {
            let slot = t.retired.remove(&name);
            let alert = alerts.get(&name).cloned();
            schedule(&mut t, spec, alert, slot, Vec::new(), last_fired, now);
            changes.added.push(name);
        }
        t.compact();
        drop(t);
        self.shared.changed.notify_one();
        changes.added.sort();
        changes.removed.sort();
        changes.changed.sort();
        changes
    }

    /// Runs `job` now (trigger `manual`), under its overlap policy, disabled or not; the
    /// receiver hears what became of it. `None` if there is no such job. `alone`: the run
    /// fires none of the jobs that run after it (`--no-deps`).
    pub fn trigger(
        &self,
        job: &str,
        alone: bool,
    ) -> Option<tokio::sync::oneshot::Receiver<Dispatched>> {
        let mut t = self.shared.lock();
        let entry = t.jobs.get_mut(job)?;
        let slot = entry.slot();
        let spec = Arc::clone(&entry.spec);
        drop(t);
        let (tx, rx) = tokio::sync::oneshot::channel();
        crate::runner::fire_manual(&self.ctx, &slot, &spec, tx, alone);
        Some(rx)
    }
}

impl Scheduler {
    /// Runs the firing of a run lost with its node again, as attempt `attempt`, if the job
    /// is still here; `false` when it is not.
    pub fn run_lost_again(&self, job: &str, scheduled_for: DateTime<Utc>, attempt: u32) -> bool {
        let mut t = self.shared.lock();
        let Some(entry) = t.jobs.get_mut(job) else {
            return false;
        };
        let slot = entry.slot();
        let spec = Arc::clone(&entry.spec);
        drop(t);
        crate::runner::fire_lost_again(&self.ctx, &slot, &spec, scheduled_for, attempt);
        true
    }

    /// Stops the job's active run for another node's newer firing (`overlap = "replace"`).
    pub fn replace_active(&self, job: &str) {
        let mut t = self.shared.lock();
        if let Some(entry) = t.jobs.get_mut(job) {
            entry.slot().replace_active();
        }
    }

    /// The job's definition now, if it is here.
    pub fn spec(&self, job: &str) -> Option<Arc<JobSpec>> {
        self.shared
            .lock()
            .jobs
            .get(job)
            .map(|e| Arc::clone(&e.spec))
    }
}

/// Adds `spec` to the timers, its first occurrence the one after what it fired last.
fn schedule(
    t: &mut Timers,
    spec: JobSpec,
    alert: Option<Arc<AlertPolicy>>,
    slot: Option<Arc<JobSlot>>,
    done: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    last_fired: &HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) {
    let last = match last_fired.get(&spec.name) {
        Some(t) => (*t).min(now),
        // A one-shot time that passed and never fired is due: late (it runs) if it passed at
        // most 60 s ago, else missed (its `catch_up` policy says whether it runs; either way
        // it gets a row).
        None => match spec.schedule {
            Schedule::At(at) if at <= now => at - TimeDelta::milliseconds(1),
            _ => now,
        },
    };
    // Occurrences under a pause pass: from now while it holds, from its end after it ended.
    let pause = t.paused.get(&spec.name);
    let last = match pause {
        Some(p) if p.holds_at(now) => now,
        Some(p) => p.until.map_or(last, |until| last.max(until.min(now))),
        None => last,
    };
    // The first occurrence after `last` that was not handled (before a backward step of the
    // clock): if it is due already, the timer handles it at once.
    let spec = Arc::new(spec);
    if let Some(slot) = &slot {
        slot.set_spec(&spec);
        slot.set_alert_policy(alert.clone());
        if !spec.enabled {
            slot.drop_waiting();
        }
    }
    let mut entry = Entry {
        spec,
        slot,
        last,
        next: None,
        alert,
        since: last,
        done,
    };
    entry.reschedule(pause);
    if entry.next.is_none() {
        tracing::debug!(job = %entry.spec.name, "no further occurrence");
    }
    t.heap.extend(entry.wake());
    t.jobs.insert(entry.spec.name.clone(), entry);
}

/// The timer task: fires what is due, then sleeps until the earliest next occurrence, a
/// change of the job set, or a step of the clock.
async fn timer(ctx: Arc<Context>, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut clock_changed = ctx.clock().subscribe();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        // A step of the system clock is seen here before anything fires, not up to a second
        // later by the clock's watcher: no firing gets an intended time from the old clock.
        ctx.clock().resync();
        let now = ctx.clock().now();
        let next = shared.lock().fire_due(&ctx, now);
        shared.turns.send_modify(|n| *n = n.wrapping_add(1));
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(ctx.clock().instant_at(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = sleep => {}
            () = shared.changed.notified() => {}
            _ = clock_changed.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::history::recorder::Recorder;
    use crate::job::{CatchUp, CommandJob, JobKind, Overlap};
    use crate::schedule::CronCache;
    use crate::store::{Record, RunStatus, Trigger};
    use chrono::DurationRound;
    use std::time::Duration;

    /// What runs share, with a real history database: one for the whole test process,
    /// opened on a runtime of its own (a database opened on a test's paused clock would move
    /// virtual time off the timer's millisecond grid). Its folder is removed at once; the
    /// open database lives on, unlinked.
    fn services() -> crate::job::Services {
        static SHARED: std::sync::OnceLock<(tokio::runtime::Runtime, crate::store::Store)> =
            std::sync::OnceLock::new();
        let (_, store) = SHARED.get_or_init(|| crate::store::Store::scratch().unwrap());
        crate::job::Services {
            mailers: crate::smtp::Mailers::default(),
            http: crate::http_client::HttpClients::default(),
            store: store.clone(),
            live: crate::job::output::LiveOutputs::default(),
        }
    }

    /// A scheduler on a manual clock starting at `start`, its records going to the receiver.
    async fn scheduler_at(
        start: &str,
    ) -> (Scheduler, tokio::sync::mpsc::UnboundedReceiver<Record>) {
        let (sched, rx, _clock) = scheduler_with_clock(start).await;
        (sched, rx)
    }

    /// A scheduler on a manual clock starting at `start`, its records going to the receiver.
    async fn scheduler_with_clock(
        start: &str,
    ) -> (
        Scheduler,
        tokio::sync::mpsc::UnboundedReceiver<Record>,
        Arc<Clock>,
    ) {
        let services = services();
        let clock = Arc::new(Clock::manual(utc(start)));
        let (recorder, rx) = Recorder::channel();
        let ctx = Arc::new(Context::new(
            Arc::clone(&clock),
            recorder,
            8,
            Arc::new(crate::history::run_ids::RunIds::unreserved(1)),
            "test".into(),
            services,
        ));
        (Scheduler::new(ctx, CancellationToken::new()), rx, clock)
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn job(name: &str, schedule: Schedule) -> JobSpec {
        JobSpec::test_command(name, schedule, &["true"])
    }

    /// Drives the real timers through New York's spring-forward night in virtual time: each
    /// firing starts exactly at its intended instant (0 ms late), the missing 02:30 runs once
    /// right after the jump, and nothing runs twice.
    #[tokio::test(start_paused = true)]
    async fn timers_fire_exactly_on_time_across_dst_in_virtual_time() {
        let (mut sched, mut rx) = scheduler_at("2026-03-07T00:00:00Z").await;
        let mut cache = CronCache::default();
        let ny = "America/New_York".parse().unwrap();
        let spec = job(
            "ny",
            Schedule::Cron {
                expr: "30 2 * * *".into(),
                cron: cache.parse("30 2 * * *").unwrap(),
                tz: ny,
            },
        );
        let changes = sched.apply(vec![spec], &AlertPolicies::new(), &HashMap::new());
        assert_eq!(changes.added, ["ny"]);
        let mut started = Vec::new();
        while started.len() < 3 {
            if let Some(Record::Started(s)) = rx.recv().await {
                assert_eq!(s.started_at, Some(s.scheduled_for), "late firing");
                started.push(s.scheduled_for);
            }
        }
        assert_eq!(
            started,
            [
                utc("2026-03-07T07:30:00Z"),
                utc("2026-03-08T07:00:00Z"),
                utc("2026-03-09T06:30:00Z")
            ]
        );
    }

    /// `catch_up = "latest"` after ten missed minutes, the newest occurrence on time: the
    /// newest missed firing runs once as a catch-up (whatever the late grace), then the on-time
    /// one; nothing older.
    #[tokio::test(start_paused = true)]
    async fn catch_up_latest_runs_the_newest_missed_firing_even_when_the_last_is_on_time() {
        let (mut sched, mut rx) = scheduler_at("2026-01-01T00:10:30Z").await;
        let spec = JobSpec {
            catch_up: CatchUp::Latest,
            ..job("minutely", Schedule::Every(Duration::from_secs(60)))
        };
        let last = HashMap::from([("minutely".to_string(), utc("2026-01-01T00:00:00Z"))]);
        sched.apply(vec![spec], &AlertPolicies::new(), &last);
        let mut started = Vec::new();
        let mut missed = Vec::new();
        while started.len() < 2 || missed.is_empty() {
            match rx.recv().await {
                // (Later on-time firings may start meanwhile: the job allows overlap.)
                Some(Record::Started(s)) if s.scheduled_for < utc("2026-01-01T00:11:00Z") => {
                    started.push((s.scheduled_for, s.trigger));
                }
                Some(Record::Complete(s, e)) => missed.push((s.scheduled_for, e.details)),
                _ => {}
            }
        }
        assert_eq!(
            started,
            [
                (utc("2026-01-01T00:09:00Z"), Trigger::CatchUp),
                (utc("2026-01-01T00:10:00Z"), Trigger::Schedule),
            ]
        );
        // 00:01 .. 00:08: one row.
        assert_eq!(missed.len(), 1);
        assert_eq!(missed[0].0, utc("2026-01-01T00:01:00Z"));
        assert!(
            missed[0]
                .1
                .as_deref()
                .unwrap()
                .contains("\"missed_firings\":8"),
            "{missed:?}"
        );
    }

    /// A reload that changes one job and removes another: the changed job keeps firing on its
    /// new schedule, the removed one stops.
    #[tokio::test(start_paused = true)]
    async fn reload_diff_reschedules_changed_and_stops_removed_jobs() {
        let (mut sched, mut rx) = scheduler_at("2026-01-01T00:00:00Z").await;
        let a = job("a", Schedule::Every(Duration::from_secs(10)));
        let b = job("b", Schedule::Every(Duration::from_secs(10)));
        sched.apply(vec![a.clone(), b], &AlertPolicies::new(), &HashMap::new());
        let mut fired = Vec::new();
        while fired.len() < 2 {
            if let Some(Record::Fired { job, scheduled_for }) = rx.recv().await {
                fired.push((job, scheduled_for));
            }
        }
        fired.sort();
        assert_eq!(fired[0], ("a".into(), utc("2026-01-01T00:00:10Z")));
        assert_eq!(fired[1], ("b".into(), utc("2026-01-01T00:00:10Z")));
        let a2 = JobSpec {
            schedule: Schedule::Every(Duration::from_secs(7)),
            ..a
        };
        let changes = sched.apply(vec![a2], &AlertPolicies::new(), &HashMap::new());
        assert_eq!(changes.changed, ["a"]);
        assert_eq!(changes.removed, ["b"]);
        let mut fired = Vec::new();
        while fired.len() < 3 {
            if let Some(Record::Fired { job, scheduled_for }) = rx.recv().await {
                fired.push((job, scheduled_for));
            }
        }
        // Every 7 s on the epoch grid: ...:14, :21, :28 (1767225600 is a multiple of 7).
        assert!(fired.iter().all(|(j, _)| j == "a"), "{fired:?}");
        assert_eq!(fired[0].1, utc("2026-01-01T00:00:14Z"));
        assert_eq!(fired[2].1, utc("2026-01-01T00:00:28Z"));
    }

    /// Reloads that keep changing a far-apart job leave stale heap entries behind; the heap is
    /// rebuilt before they pile up, and the job still fires once, at its latest schedule.
    #[tokio::test(start_paused = true)]
    async fn many_reloads_do_not_grow_the_heap() {
        let (mut sched, mut rx) = scheduler_at("2026-01-01T00:00:00Z").await;
        for i in 0..3 * STALE_SLACK as u64 {
            let every = Schedule::Every(Duration::from_secs(86_400 + i % 2));
            sched.apply(
                vec![job("far", every)],
                &AlertPolicies::new(),
                &HashMap::new(),
            );
            let heap = sched.shared.lock().heap.len();
            assert!(
                heap <= STALE_SLACK + 2,
                "{heap} heap entries after {i} reloads"
            );
        }
        let only = job("near", Schedule::Every(Duration::from_secs(5)));
        sched.apply(vec![only], &AlertPolicies::new(), &HashMap::new());
        assert_eq!(sched.len(), 1);
        let mut fired = Vec::new();
        while fired.len() < 2 {
            if let Some(Record::Fired { job, .. }) = rx.recv().await {
                fired.push(job);
            }
        }
        assert_eq!(fired, ["near", "near"]);
    }

    /// A job removed while its run goes on and added back does not start a second run beside
    /// it: its slot (who runs) outlives the removal while the run holds it.
    #[tokio::test(start_paused = true)]
    async fn a_job_added_back_while_its_run_goes_on_keeps_its_overlap() {
        let (mut sched, mut rx) = scheduler_at("2026-01-01T00:00:00Z").await;
        let mut spec = job("s", Schedule::Every(Duration::from_secs(10)));
        spec.overlap = Overlap::Skip;
        spec.kind = JobKind::Command(Box::new(CommandJob {
            line: crate::job::command::CommandLine::Argv(vec!["sleep".into(), "30".into()]),
            env: Default::default(),
            working_dir: None,
            user: None,
            umask: None,
            clean_env: false,
            shell: crate::job::shell::Shell::Sh,
            limits: crate::job::command::Limits::default(),
        }));
        sched.apply(vec![spec.clone()], &AlertPolicies::new(), &HashMap::new());
        loop {
            if let Some(Record::Started(_)) = rx.recv().await {
                break;
            }
        }
        assert_eq!(
            sched
                .apply(Vec::new(), &AlertPolicies::new(), &HashMap::new())
                .removed,
            ["s"]
        );
        assert_eq!(
            sched
                .apply(vec![spec], &AlertPolicies::new(), &HashMap::new())
                .added,
            ["s"]
        );
        let next = loop {
            match rx.recv().await {
                Some(Record::Started(s)) => break format!("started run {}", s.id),
                Some(Record::Complete(s, end)) => {
                    break format!("{} {:?}", s.job, end.status);
                }
                _ => {}
            }
        };
        assert_eq!(next, "s Skipped");
    }

    /// A one-shot time that passed seconds before the job was scheduled still runs (late);
    /// one that passed minutes before is missed: with `catch_up = "skip"` it gets a `skipped`
    /// row, with `catch_up = "latest"` it runs as a catch-up.
    #[tokio::test(start_paused = true)]
    async fn a_just_missed_one_shot_still_runs() {
        let (mut sched, mut rx) = scheduler_at("2026-01-01T12:00:00Z").await;
        let recent = job("recent", Schedule::At(utc("2026-01-01T11:59:50Z")));
        let old = job("old", Schedule::At(utc("2026-01-01T11:58:00Z")));
        let caught = JobSpec {
            catch_up: CatchUp::Latest,
            ..job("caught", Schedule::At(utc("2026-01-01T11:58:00Z")))
        };
        let later = job("later", Schedule::At(utc("2026-01-01T12:00:05Z")));
        sched.apply(
            vec![recent, old, caught, later],
            &AlertPolicies::new(),
            &HashMap::new(),
        );
        let mut started = Vec::new();
        let mut skipped = Vec::new();
        while started.len() < 3 || skipped.is_empty() {
            match rx.recv().await {
                Some(Record::Started(s)) => started.push((s.job, s.scheduled_for, s.trigger)),
                Some(Record::Complete(s, e)) => skipped.push((s.job, e.error.unwrap())),
                _ => {}
            }
        }
        started.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            started,
            [
                (
                    "caught".to_string(),
                    utc("2026-01-01T11:58:00Z"),
                    Trigger::CatchUp
                ),
                (
                    "later".to_string(),
                    utc("2026-01-01T12:00:05Z"),
                    Trigger::Schedule
                ),
                (
                    "recent".to_string(),
                    utc("2026-01-01T11:59:50Z"),
                    Trigger::Schedule
                ),
            ]
        );
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].0, "old");
        assert!(
            skipped[0]
                .1
                .starts_with("missed (catch_up = \"skip\"): 1 firing(s)"),
            "{skipped:?}"
        );
    }

    fn command(spec: JobSpec, argv: &[&str]) -> JobSpec {
        JobSpec {
            kind: JobSpec::test_command(&spec.name, spec.schedule.clone(), argv).kind,
            ..spec
        }
    }

    /// The intended times of the runs started, until `n` of them. (With real processes on a
    /// paused clock, virtual time may run ahead while a process starts: a start can be late,
    /// never early.)
    async fn started(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<Record>,
        n: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        while out.len() < n {
            if let Some(Record::Started(s)) = rx.recv().await {
                assert!(
                    s.started_at >= Some(s.scheduled_for),
                    "ahead of the clock: {s:?}"
                );
                out.push(s.scheduled_for);
            }
        }
        out
    }

    /// The clock steps back 10 s after an every-second job ran a few times (and a reload
    /// changes the job): the job goes on at the new times at once, skips what it already ran
    /// when the clock reaches it again, and goes on after it: every second runs exactly once,
    /// none ahead of the clock.
    #[tokio::test(start_paused = true)]
    async fn a_backward_step_goes_on_at_the_new_times_and_runs_nothing_twice() {
        let (mut sched, mut rx, clock) = scheduler_with_clock("2026-01-01T00:00:00.500Z").await;
        sched.apply(
            vec![job("s", Schedule::Every(Duration::from_secs(1)))],
            &AlertPolicies::new(),
            &HashMap::new(),
        );
        let mut times = started(&mut rx, 5).await;
        let ran_before = sched.shared.lock().jobs["s"].last;
        let to = clock.now() - TimeDelta::seconds(10);
        clock.set(to);
        tokio::task::yield_now().await;
        // A reload that changes the job keeps what it already ran.
        let changed = JobSpec {
            kill_grace: Duration::from_secs(2),
            ..job("s", Schedule::Every(Duration::from_secs(1)))
        };
        assert_eq!(
            sched
                .apply(vec![changed], &AlertPolicies::new(), &HashMap::new())
                .changed,
            ["s"]
        );
        while !times.contains(&(ran_before + TimeDelta::seconds(2))) {
            times.extend(started(&mut rx, 1).await);
        }
        let mut sorted = times.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            times.len(),
            "an occurrence ran twice: {times:?}"
        );
        // The first occurrence after the new time (at most the second of the step is missed).
        let first_new = to.duration_trunc(TimeDelta::seconds(1)).unwrap() + TimeDelta::seconds(1);
        assert_eq!(sorted[0], first_new, "{times:?}");
        for w in sorted.windows(2) {
            assert_eq!(
                w[1] - w[0],
                TimeDelta::seconds(1),
                "a second was missed: {sorted:?}"
            );
        }
    }

    /// A daily 00:00:03 job that ran, then a step back of 1 h (under the bound): it does not
    /// run again when the clock reaches 00:00:03 a second time. A step of 4 h (over the
    /// bound) rebuilds the schedule from the new time: it does.
    #[tokio::test(start_paused = true)]
    async fn a_fixed_time_job_reruns_only_after_a_step_over_the_bound() {
        for (back_h, runs_again) in [(1, false), (4, true)] {
            let (mut sched, mut rx, clock) = scheduler_with_clock("2026-01-01T00:00:00Z").await;
            let mut cache = CronCache::default();
            let daily = Schedule::Cron {
                expr: "3 0 0 * * *".into(),
                cron: cache.parse("3 0 0 * * *").unwrap(),
                tz: chrono_tz::Tz::UTC,
            };
            sched.apply(
                vec![job("d", daily)],
                &AlertPolicies::new(),
                &HashMap::new(),
            );
            assert_eq!(started(&mut rx, 1).await, [utc("2026-01-01T00:00:03Z")]);
            tokio::time::sleep(Duration::from_secs(2)).await;
            clock.set(clock.now() - TimeDelta::hours(back_h));
            let again =
                tokio::time::timeout(Duration::from_secs(5 * 3600), started(&mut rx, 1)).await;
            assert_eq!(again.is_ok(), runs_again, "step back {back_h} h: {again:?}");
        }
    }

    /// Waits (in virtual time) until `job`'s queue holds `n` firings.
    async fn queued(sched: &Scheduler, job: &str, n: usize) {
        loop {
            let len = {
                let t = sched.shared.lock();
                t.jobs[job].slot.as_ref().map_or(0, |s| s.waiting())
            };
            if len >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every record until the scheduler's runs are all over.
    async fn records_until_idle(
        sched: &Scheduler,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<Record>,
    ) -> Vec<Record> {
        sched.ctx.tracker().close();
        sched.ctx.tracker().wait().await;
        let mut out = Vec::new();
        while let Ok(r) = rx.try_recv() {
            out.push(r);
        }
        out
    }

    fn skipped_reasons(records: &[Record], job: &str) -> Vec<String> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Complete(s, e) if s.job == job && e.status == RunStatus::Skipped => {
                    e.error.clone()
                }
                _ => None,
            })
            .collect()
    }

    fn starts(records: &[Record], job: &str) -> usize {
        records
            .iter()
            .filter(|r| matches!(r, Record::Started(s) if s.job == job))
            .count()
    }

    /// Shutdown with firings queued behind a run: the run finishes, no queued firing starts,
    /// and each is recorded `skipped` "daemon stopping".
    #[tokio::test(start_paused = true)]
    async fn at_stop_queued_firings_are_recorded_and_never_start() {
        let (mut sched, mut rx) = scheduler_at("2026-01-01T00:00:00Z").await;
        let mut spec = command(
            job("q", Schedule::Every(Duration::from_secs(1))),
            &["sleep", "1"],
        );
        spec.overlap = Overlap::Queue;
        sched.apply(vec![spec], &AlertPolicies::new(), &HashMap::new());
        started(&mut rx, 1).await;
        queued(&sched, "q", 3).await;
        sched.ctx.begin_drain();
        sched.shared.lock().jobs.clear();
        let records = records_until_idle(&sched, &mut rx).await;
        assert_eq!(starts(&records, "q"), 0, "{records:#?}");
        let reasons = skipped_reasons(&records, "q");
        assert!(reasons.len() >= 3, "{records:#?}");
        assert!(
            reasons.iter().all(|r| r.starts_with("daemon stopping")),
            "{reasons:?}"
        );
        assert!(
            records
                .iter()
                .any(|r| matches!(r, Record::Finished(e) if e.status == RunStatus::Succeeded))
        );
    }

    /// A reload that renames a job with firings queued: the old name's queued firings are
    /// recorded `skipped` and never start; the new name is a new job and fires.
    #[tokio::test(start_paused = true)]
    async fn a_renamed_job_drops_its_queue_and_the_new_name_fires() {
        let (mut sched, mut rx) = scheduler_at("2026-01-01T00:00:00Z").await;
        let mut spec = command(
            job("old", Schedule::Every(Duration::from_secs(1))),
            &["sleep", "1"],
        );
        spec.overlap = Overlap::Queue;
        sched.apply(vec![spec.clone()], &AlertPolicies::new(), &HashMap::new());
        started(&mut rx, 1).await;
        queued(&sched, "old", 3).await;
        let renamed = JobSpec {
            name: "new".into(),
            ..spec
        };
        let changes = sched.apply(vec![renamed], &AlertPolicies::new(), &HashMap::new());
        assert_eq!(
            (changes.added, changes.removed),
            (vec!["new".to_string()], vec!["old".to_string()])
        );
        let mut new_starts = 0;
        let mut seen = Vec::new();
        while new_starts < 2 {
            let r = rx.recv().await.unwrap();
            if let Record::Started(s) = &r {
                assert_eq!(s.job, "new", "the removed job started a run: {s:?}");
                new_starts += 1;
            }
            seen.push(r);
        }
        sched.ctx.begin_drain();
        seen.extend(records_until_idle(&sched, &mut rx).await);
        let reasons = skipped_reasons(&seen, "old");
        assert!(reasons.len() >= 3, "{seen:#?}");
        assert!(
            reasons.iter().all(|r| r.starts_with("job removed")),
            "{reasons:?}"
        );
        assert_eq!(starts(&seen, "old"), 0);
    }

    /// What `hourglass trigger` hears: started with the run id; skipped behind that run
    /// (overlap = "skip"); queued behind it (overlap = "queue").
    #[tokio::test(start_paused = true)]
    async fn a_manual_trigger_says_started_queued_or_skipped() {
        let (mut sched, _rx) = scheduler_at("2026-01-01T00:00:00Z").await;
        let mut skip = command(
            job("skip", Schedule::Every(Duration::from_secs(3600))),
            &["sleep", "1"],
        );
        skip.enabled = false;
        let queue = JobSpec {
            name: "queue".into(),
            overlap: Overlap::Queue,
            ..skip.clone()
        };
        skip.overlap = Overlap::Skip;
        sched.apply(vec![skip, queue], &AlertPolicies::new(), &HashMap::new());
        let first = sched.trigger("skip", false).unwrap().await.unwrap();
        let Dispatched::Started(id) = first else {
            panic!("{first:?}")
        };
        match sched.trigger("skip", false).unwrap().await.unwrap() {
            Dispatched::Skipped { reason, .. } => {
                assert_eq!(
                    reason,
                    format!("run {id} is still active (overlap = \"skip\")")
                );
            }
            other => panic!("{other:?}"),
        }
        let Dispatched::Started(q) = sched.trigger("queue", false).unwrap().await.unwrap() else {
            panic!("not started")
        };
        let second = sched.trigger("queue", false).unwrap().await.unwrap();
        assert_eq!(
            second,
            Dispatched::Queued {
                behind: Some(q),
                ahead: 0
            }
        );
        let third = sched.trigger("queue", false).unwrap().await.unwrap();
        assert_eq!(
            third,
            Dispatched::Queued {
                behind: Some(q),
                ahead: 1
            }
        );
        assert!(sched.trigger("nope", false).is_none());
    }

    /// Once the last run has ended, a job's slot is forgotten when it holds nothing (a burst
    /// of many jobs' runs leaves none behind), and kept when a failure awaits its recovery
    /// notice.
    #[tokio::test(start_paused = true)]
    async fn idle_slots_are_forgotten_unless_a_failure_awaits_its_recovery() {
        let (mut sched, mut rx) = scheduler_at("2026-01-01T00:00:00Z").await;
        let hourly = || Schedule::Every(Duration::from_secs(3600));
        let good = job("good", hourly());
        let bad = JobSpec::test_command("bad", hourly(), &["false"]);
        let policy = crate::alert::AlertPolicy {
            on: Vec::new(),
            email: None,
            webhook: None,
            min_interval: Duration::ZERO,
            stale_after: None,
        };
        let alerts = AlertPolicies::from([("bad".to_string(), Arc::new(policy))]);
        sched.apply(vec![good, bad], &alerts, &HashMap::new());
        let mut ended = 0;
        while ended < 2 {
            if let Some(Record::Finished(_) | Record::Complete(..)) = rx.recv().await {
                ended += 1;
            }
        }
        sched.ctx.tracker().close();
        sched.ctx.tracker().wait().await;
        let has_slot = |name: &str| sched.shared.lock().jobs[name].slot.is_some();
        assert!(has_slot("good") && has_slot("bad"));
        sched.forget_idle_slots();
        assert!(!has_slot("good"), "an idle slot that holds nothing is kept");
        assert!(
            has_slot("bad"),
            "a failure awaiting its recovery notice was forgotten"
        );
    }
}
