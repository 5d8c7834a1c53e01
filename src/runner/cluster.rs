//! The runner on a database several nodes share ([`Cluster`]): before anything of a firing
//! runs or is recorded, the node claims `(job, scheduled_for)` in one statement, and only the
//! node that wins runs it; a job's overlap policy holds across nodes through its turn. A
//! node that cannot reach the database claims nothing (another node may), says so once per
//! outage, and keeps the firings it could not claim: when the database answers again they
//! follow the job's `catch_up` policy, claimed like any firing (so once across the nodes).
//!
//! A job's turn: before its first attempt a firing takes the job's row in `active_runs`; a
//! `skip` firing that finds another node's run is recorded skipped, a `queue` firing waits,
//! a `replace` firing asks the holder to stop and waits.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;

use super::claim_batch::ClaimBatches;
use super::firing::Firing;
use super::rendezvous::{HEAD_START, Members};
use super::{Context, JobSlot, fire_series};
use crate::due::MAX_CATCH_UP;
use crate::job::{CatchUp, JobSpec, Overlap};
use crate::store::{Claim, Cluster, Record, Trigger, format_ts};

/// Firings kept while the database does not answer, at most (the oldest go first).
const MAX_KEPT: usize = 100_000;

/// Whether claims are failing, and the firings not claimed meanwhile.
#[derive(Debug, Default)]
pub struct ClaimHealth {
    failing: AtomicBool,
    /// The node's heartbeat (on connections of its own) failed last: the database is out of
    /// reach, not merely busy.
    unreachable: AtomicBool,
    unclaimed: Mutex<Vec<Unclaimed>>,
    /// The claims under way, a statement per batch.
    batches: ClaimBatches,
    /// The other live nodes, for which firings this node claims first.
    members: Members,
    /// Firings claimed, by round and answer.
    counts: ClaimCounts,
}

/// Firings this node asked to claim: as their preferred node (at once) or after the head
/// start, won or found claimed by another node.
#[derive(Debug, Default)]
pub struct ClaimCounts {
    first_won: AtomicU64,
    first_lost: AtomicU64,
    later_won: AtomicU64,
    later_lost: AtomicU64,
}

impl ClaimCounts {
    fn count(&self, first: bool, won: bool) {
        let c = match (first, won) {
            (true, true) => &self.first_won,
            (true, false) => &self.first_lost,
            (false, true) => &self.later_won,
            (false, false) => &self.later_lost,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// `(round, result, count)`: round `first` (this node preferred) or `later` (after the
    /// head start); result `won` or `lost`.
    pub fn all(&self) -> [(&'static str, &'static str, u64); 4] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("first", "won", get(&self.first_won)),
            ("first", "lost", get(&self.first_lost)),
            ("later", "won", get(&self.later_won)),
            ("later", "lost", get(&self.later_lost)),
        ]
    }
}

#[derive(Debug)]
struct Unclaimed {
    slot: Arc<JobSlot>,
    job: Arc<JobSpec>,
    at: DateTime<Utc>,
}

impl ClaimHealth {
    /// Whether claims are failing now.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// What the node's last heartbeat found: whether the database answered.
    pub fn set_reachable(&self, reachable: bool) {
        self.unreachable.store(!reachable, Ordering::Relaxed);
    }

    /// Whether the database answers the heartbeat (a claim that found every connection
    /// busy waits for one then, instead of giving up).
    pub fn reachable(&self) -> bool {
        !self.unreachable.load(Ordering::Relaxed)
    }

    /// The other live nodes, as the heartbeat last saw them.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// The firings this node asked to claim so far.
    pub fn counts(&self) -> &ClaimCounts {
        &self.counts
    }

    /// Keeps a firing that could not be claimed, for when the database answers again.
    pub(super) fn keep(&self, slot: &Arc<JobSlot>, job: &Arc<JobSpec>, at: DateTime<Utc>) {
        if let Ok(mut kept) = self.unclaimed.lock() {
            if kept.len() >= MAX_KEPT {
                kept.remove(0);
            }
            kept.push(Unclaimed {
                slot: Arc::clone(slot),
                job: Arc::clone(job),
                at,
            });
        }
    }
}

/// Whether this node runs a firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// This node runs and records it.
    Mine,
    /// Another node does (or this node may not: `run_on`).
    NotMine,
    /// The database did not answer.
    Unreachable,
}

/// Claims the firing of `spec` for `scheduled_for` (always this node's on a database of its
/// own). A firing not due yet by the database's clock (this node's clock is ahead) is claimed
/// when it is due there.
pub async fn claim(ctx: &Arc<Context>, spec: &JobSpec, scheduled_for: DateTime<Utc>) -> Claimed {
    claim_with_turn(ctx, spec, scheduled_for, false).await.0
}

/// [`claim`], taking the job's turn across nodes in the same statement when `turn` (a `skip`
/// job's firing); the second value says whether it was taken (when not, the firing asks for it
/// as a `queue` or `replace` firing does, and learns who holds it). The firing's preferred
/// node (see [`super::rendezvous`]) claims at once; this node, when it is not that node or has
/// no free run slot, claims what is still unclaimed [`HEAD_START`] later.
pub(super) async fn claim_with_turn(
    ctx: &Arc<Context>,
    spec: &JobSpec,
    scheduled_for: DateTime<Utc>,
    turn: bool,
) -> (Claimed, bool) {
    if !ctx.may_run(spec) {
        return (Claimed::NotMine, false);
    }
    let Some(cluster) = &ctx.cluster else {
        return (Claimed::Mine, false);
    };
    let first = ctx
        .claims
        .members
        .prefers(&ctx.node, &spec.name, scheduled_for, &spec.run_on)
        && ctx.limit.available_permits() > 0;
    if !first {
        tokio::select! {
            () = tokio::time::sleep(HEAD_START) => {}
            () = ctx.draining.cancelled() => return (Claimed::NotMine, false),
        }
    }
    for _ in 0..MAX_EARLY_RETRIES {
        match try_claim(ctx, cluster, &spec.name, scheduled_for, turn).await {
            Some(Claim::Won { turn }) => {
                ctx.claims.counts.count(first, true);
                return (Claimed::Mine, turn);
            }
            Some(Claim::Early(wait)) => {
                tokio::select! {
                    () = tokio::time::sleep(wait.min(MAX_EARLY_WAIT)) => {}
                    () = ctx.draining.cancelled() => return (Claimed::NotMine, false),
                }
            }
            Some(Claim::Lost) => {
                ctx.claims.counts.count(first, false);
                return (Claimed::NotMine, false);
            }
            None => return (Claimed::Unreachable, false),
        }
    }
    (Claimed::NotMine, false)
}

/// How many more times a claim waits for a connection while all are busy (15 s each).
const MAX_BUSY_RETRIES: usize = 3;

/// How many times a firing early by the database's clock is claimed again.
const MAX_EARLY_RETRIES: usize = 4;
/// The longest wait for a firing to be due by the database's clock: a clock further ahead is
/// far past `database.max_clock_skew`, and the other nodes run the firing.
const MAX_EARLY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn try_claim(
    ctx: &Arc<Context>,
    cluster: &Cluster,
    job: &str,
    scheduled_for: DateTime<Utc>,
    turn: bool,
) -> Option<Claim> {
    let batches = &ctx.claims.batches;
    let mut answer = if ctx.claims.reachable() {
        batches
            .claim(cluster, &ctx.node, (job, scheduled_for, turn))
            .await
    } else {
        // The heartbeat found the database out of reach: no waiting for a connection.
        Err(Arc::new(crate::store::StoreError::Unreachable))
    };
    // Every connection busy while the heartbeat says the database answers: wait for one
    // (the firing runs late) rather than count it as an outage.
    for _ in 0..MAX_BUSY_RETRIES {
        match &answer {
            Err(e) if e.is_busy() && ctx.claims.reachable() && !ctx.draining.is_cancelled() => {
                answer = batches
                    .claim(cluster, &ctx.node, (job, scheduled_for, turn))
                    .await;
            }
            _ => break,
        }
    }
    match answer {
        Ok(claim) => {
            recovered(ctx);
            Some(claim)
        }
        Err(e) => {
            if !ctx.claims.failing.swap(true, Ordering::Relaxed) {
                tracing::error!(error = %e, job, scheduled_for = %scheduled_for, "cannot reach the shared database: this node claims no firing until it answers (the other nodes may run them; the missed ones follow catch_up then)");
            } else {
                tracing::debug!(error = %e, job, "firing not claimed: the shared database does not answer");
            }
            None
        }
    }
}

/// The shared database answered: if claims were failing, the firings kept meanwhile follow
/// their jobs' `catch_up` policy now.
pub fn recovered(ctx: &Arc<Context>) {
    // Until the heartbeat has seen the database answer, claims still fail at once.
    if !ctx.claims.reachable() || !ctx.claims.failing.swap(false, Ordering::Relaxed) {
        return;
    }
    let kept = take_all(&ctx.claims.unclaimed);
    tracing::info!(
        firings = kept.len(),
        "the shared database answers again: this node claims firings again"
    );
    // (The turns of runs that ended meanwhile are given back by the history writer, which
    // kept them with the runs' ends.)
    catch_up_kept(ctx, kept);
}

/// Empties `kept`, returning what it held.
fn take_all<T>(kept: &Mutex<Vec<T>>) -> Vec<T> {
    kept.lock()
        .map(|mut k| std::mem::take(&mut *k))
        .unwrap_or_default()
}

/// The firings kept during an outage, per job, under each job's `catch_up` policy.
fn catch_up_kept(ctx: &Arc<Context>, kept: Vec<Unclaimed>) {
    let mut by_job: BTreeMap<String, JobFirings> = BTreeMap::new();
    for u in kept {
        let entry = by_job
            .entry(u.job.name.clone())
            .or_insert_with(|| (Arc::clone(&u.slot), Arc::clone(&u.job), Vec::new()));
        entry.2.push(u.at);
    }
    for (_, (slot, job, mut times)) in by_job {
        times.sort();
        times.dedup();
        catch_up_unclaimed(ctx, &slot, &job, &times);
    }
}

/// A job's slot and definition with some of its firings.
type JobFirings = (Arc<JobSlot>, Arc<JobSpec>, Vec<DateTime<Utc>>);

/// The firings of `job` not claimed during an outage, oldest first, under its `catch_up`
/// policy: those it runs are claimed as catch-up firings; the others get one `skipped` row.
fn catch_up_unclaimed(
    ctx: &Arc<Context>,
    slot: &Arc<JobSlot>,
    job: &Arc<JobSpec>,
    times: &[DateTime<Utc>],
) {
    let now = ctx.clock.now();
    let window = chrono::TimeDelta::from_std(job.catch_up_window).unwrap_or(chrono::TimeDelta::MAX);
    let in_window: Vec<DateTime<Utc>> = times
        .iter()
        .copied()
        .filter(|t| now.signed_duration_since(*t) <= window)
        .collect();
    let keep = match job.catch_up {
        CatchUp::Skip => 0,
        CatchUp::Latest => 1,
        CatchUp::All => MAX_CATCH_UP,
    };
    let run: Vec<DateTime<Utc>> = in_window.iter().rev().take(keep).rev().copied().collect();
    let not_run: Vec<DateTime<Utc>> = times.iter().filter(|t| !run.contains(t)).copied().collect();
    if !not_run.is_empty() {
        let (ctx2, slot2, job2) = (Arc::clone(ctx), Arc::clone(slot), Arc::clone(job));
        ctx.tracker.spawn(async move {
            // Each firing is claimed (together, in one batch): a row covers only firings this
            // node won, so never one that another node ran or recorded.
            let claims = join_all(not_run.iter().map(|t| claim(&ctx2, &job2, *t))).await;
            let mut won = Vec::new();
            for (t, c) in not_run.iter().zip(claims) {
                match c {
                    Claimed::Mine => won.push(*t),
                    // Out of reach again: kept for the next time it answers.
                    Claimed::Unreachable => ctx2.claims.keep(&slot2, &job2, *t),
                    Claimed::NotMine => {}
                }
            }
            for stretch in stretches(&job2, &won) {
                record_not_run(&ctx2, &slot2, &job2, stretch);
            }
        });
    }
    if job.catch_up == CatchUp::Latest {
        if let (Some(latest), Some(first)) = (run.last().copied(), times.first().copied()) {
            run_latest(ctx, slot, job, latest, first);
        }
        return;
    }
    let series = run.into_iter().map(|t| (t, Trigger::CatchUp)).collect();
    fire_series(ctx, slot, job, series);
}

/// `times` (oldest first) cut where a firing of the job between two of them is not among them.
fn stretches<'a>(job: &JobSpec, times: &'a [DateTime<Utc>]) -> Vec<&'a [DateTime<Utc>]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=times.len() {
        let next_is_his = times
            .get(i)
            .is_some_and(|t| job.next_fire_after(times[i - 1]) == Some(*t));
        if !next_is_his {
            out.push(&times[start..i]);
            start = i;
        }
    }
    out
}

/// One `skipped` row for firings of the job not run during an outage (claimed by this node),
/// with their count and range in `details`, as a downtime's row has.
fn record_not_run(
    ctx: &Arc<Context>,
    slot: &Arc<JobSlot>,
    job: &Arc<JobSpec>,
    times: &[DateTime<Utc>],
) {
    let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
        return;
    };
    let reason = format!(
        "not run: the shared database could not be reached; {} firing(s) from {} to {} (catch_up = \"{}\", catch_up_window = \"{}\")",
        times.len(),
        format_ts(first),
        format_ts(last),
        match job.catch_up {
            CatchUp::Skip => "skip",
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
        },
        humantime::format_duration(job.catch_up_window)
    );
    let count = u64::try_from(times.len()).ok();
    let details = crate::due::missed_details(count, first, last);
    Firing::new(ctx, slot, job, first, Trigger::CatchUp).skip_with(1, &reason, Some(details));
}

/// Runs the one `catch_up = "latest"` firing after an outage, when this node claims it
/// first (see [`crate::store::Store::claim_latest`]).
fn run_latest(
    ctx: &Arc<Context>,
    slot: &Arc<JobSlot>,
    job: &Arc<JobSpec>,
    latest: DateTime<Utc>,
    first_missed: DateTime<Utc>,
) {
    // Another node's catch-up run of this outage is its latest missed firing, at or after
    // the first one this node missed (the outages overlap); one of an earlier outage is
    // before it (this outage began after that one ended).
    let since = first_missed;
    let Some(cluster) = ctx.cluster.clone() else {
        return super::run_claimed_series(ctx, slot, job, vec![(latest, Trigger::CatchUp)]);
    };
    let (ctx2, slot, job) = (Arc::clone(ctx), Arc::clone(slot), Arc::clone(job));
    ctx.tracker.spawn(async move {
        match cluster.claim_latest(&job.name, latest, since, &ctx2.node).await {
            Ok(true) => super::run_claimed_series(&ctx2, &slot, &job, vec![(latest, Trigger::CatchUp)]),
            // Another node runs this outage's catch-up: this firing is one it did not run,
            // recorded here unless a node recorded it already (it may be the one it ran).
            Ok(false) => match claim(&ctx2, &job, latest).await {
                Claimed::Mine => record_not_run(&ctx2, &slot, &job, &[latest]),
                Claimed::Unreachable => ctx2.claims.keep(&slot, &job, latest),
                Claimed::NotMine => {}
            },
            Err(e) => {
                tracing::debug!(job = %job.name, error = %e, "cannot claim the catch-up run after the outage; kept for later");
                ctx2.claims.keep(&slot, &job, latest);
            }
        }
    });
}

/// How often a waiting firing asks for the turn again.
const POLL: Duration = Duration::from_millis(250);
/// How many failed tries (a database that does not answer, a pool whose connections are all
/// busy with a burst) a `skip` firing makes before it is recorded skipped for it.
const MAX_FAILURES: u32 = 4;

impl Firing {
    /// Takes the job's turn across nodes; `false` when the firing gives up (recorded).
    pub(super) async fn cluster_turn(&self) -> bool {
        // Catch-up firings are never skipped by the overlap policy (they run one after
        // another): they wait their turn as `queue` does.
        let overlap = match (self.job.overlap, self.trigger) {
            (Overlap::Skip, Trigger::CatchUp) => Overlap::Queue,
            (overlap, _) => overlap,
        };
        let Some(cluster) = &self.ctx.cluster else {
            return true;
        };
        let (mut asked, mut failures) = (false, 0);
        loop {
            let replace = overlap == Overlap::Replace && !asked;
            match cluster
                .take_turn(&self.job.name, self.scheduled_for, &self.ctx.node, replace)
                .await
            {
                Ok(None) => {
                    self.turn_held.store(true, Ordering::Relaxed);
                    return true;
                }
                Ok(Some((node, held_for))) => {
                    asked |= replace;
                    if overlap == Overlap::Skip {
                        let at = crate::store::format_ts(held_for);
                        self.skip(
                            1,
                            &format!("the run of {at} is still active on node {node} (overlap = \"skip\")"),
                        );
                        return false;
                    }
                }
                Err(e) if overlap == Overlap::Skip && failures >= MAX_FAILURES => {
                    self.skip(1, &format!("cannot check the shared database for a run of this job on another node ({e})"));
                    return false;
                }
                Err(e) => {
                    // Busy connections while the database answers are not its failure.
                    if !(e.is_busy() && self.ctx.claims.reachable()) {
                        failures += 1;
                    }
                    tracing::debug!(job = %self.job.name, error = %e, "cannot take the job's turn; trying again");
                }
            }
            let what = "waiting for the job's run on another node to end";
            if self
                .unless_halted(1, what, tokio::time::sleep(POLL))
                .await
                .is_none()
            {
                return false;
            }
        }
    }
}

/// Gives the job's turn back, with the history's next batch (which keeps it while the
/// database does not answer and writes it when it does, after the run's end): a finished run
/// never blocks the job's next firings for longer than an outage.
pub(super) fn give_turn(ctx: &Context, job: &str, at: DateTime<Utc>) {
    if ctx.cluster.is_some() {
        ctx.recorder.record(Record::TurnGiven {
            job: job.to_string(),
            scheduled_for: at,
            node: ctx.node.clone(),
        });
    }
}
