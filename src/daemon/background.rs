//! The daemon's background work beside the timers: manual trigger requests, reloads (SIGHUP and
//! file changes), retention, the systemd watchdog, the stale-job watch's start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::node::LoadedJobs;
use super::systemd;
use crate::alert::AlertPolicies;
use crate::config::{self, ConfigInForce, Settings};
use crate::runner::{Context, Dispatched};
use crate::scheduler::Scheduler;
use crate::store::Store;

/// How often manual trigger requests are polled.
pub(super) const TRIGGER_POLL: Duration = Duration::from_millis(250);
/// How often old history is pruned.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Writes what became of a manual trigger request once the firing knows.
pub(super) async fn record_trigger_outcome(
    store: Store,
    request: i64,
    news: tokio::sync::oneshot::Receiver<Dispatched>,
) {
    let Ok(news) = news.await else { return };
    let (outcome, run_id, detail) = news.outcome();
    if let Err(e) = store
        .set_trigger_outcome(request, outcome, run_id, detail.as_deref())
        .await
    {
        tracing::warn!(error = %e, "cannot record what became of a manual trigger");
    }
}

/// Claims manual trigger requests for the jobs in `jobs` (the jobs this daemon has: on a
/// shared database, another node's request is not taken): once, then every `every` if given
/// and whenever `wake` is notified (the database said a request was made), until the daemon
/// begins to stop (`stopping`: no request is taken that nothing would fire;
/// another node, or the next start, takes it).
pub(super) async fn poll_triggers(
    store: Store,
    node: String,
    jobs: watch::Receiver<Arc<LoadedJobs>>,
    (tx, every, wake): (mpsc::Sender<TriggerRequest>, Option<Duration>, Arc<Notify>),
    stopping: CancellationToken,
) {
    let mut tick = tokio::time::interval(every.unwrap_or(TRIGGER_POLL));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tokio::select! {
            _ = tick.tick(), if first || every.is_some() => {}
            () = wake.notified() => {}
            () = stopping.cancelled() => return,
        }
        first = false;
        let loaded = Arc::clone(&jobs.borrow());
        match store.claim_triggers(&node, &loaded.names).await {
            Ok(reqs) => {
                for (request, job, no_deps) in reqs {
                    let handed = tokio::select! {
                        sent = tx.send((request, job.clone(), no_deps)) => sent.is_ok(),
                        () = stopping.cancelled() => false,
                    };
                    if !handed {
                        answer_stopping(&store, request, &job).await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read manual trigger requests"),
        }
    }
}

/// A manual trigger request taken from the database: its id, the job, and whether the run
/// fires none of the jobs after it (`--no-deps`).
pub(super) type TriggerRequest = (i64, String, bool);

/// Answers a manual trigger request taken as the daemon stops: not run (the CLI says so, and
/// nothing is left claimed without an answer).
pub(super) async fn answer_stopping(store: &Store, request: i64, job: &str) {
    tracing::info!(
        request,
        job,
        "manual trigger not run: the daemon is stopping"
    );
    let why = Some("daemon stopping: not run");
    let outcome = crate::store::TriggerOutcome::Skipped;
    if let Err(e) = store.set_trigger_outcome(request, outcome, None, why).await {
        tracing::warn!(request, error = %e, "cannot record that a manual trigger was not run");
    }
}

pub(super) async fn prune_loop(store: Store, retention: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cancel.cancelled() => return,
        }
        let Some(before) = chrono::TimeDelta::from_std(retention)
            .ok()
            .and_then(|r| Utc::now().checked_sub_signed(r))
        else {
            continue;
        };
        match store.prune(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, "pruned old run history"),
            Err(e) => tracing::warn!(error = %e, "cannot prune run history"),
        }
    }
}

pub(super) async fn watchdog_loop(every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => systemd::watchdog(),
            () = cancel.cancelled() => return,
        }
    }
}

/// Watches the main file and the jobs folder; sends `()` on a relevant change. Returns the
/// watcher, which must be kept alive; `None` (logged) when watching is not possible.
pub(super) fn watch_files(
    settings: &Settings,
    tx: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let main = settings.config_path.clone();
    let main_dir = main
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let jobs_dir = settings.jobs_dir.clone();
    let relevant = {
        let jobs_dir = jobs_dir.clone();
        move |p: &Path| {
            p == main
                || (p.parent() == Some(jobs_dir.as_path())
                    && p.extension().is_some_and(|e| e == "toml"))
        }
    };
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && written(ev.kind)
            && ev.paths.iter().any(|p| relevant(p))
        {
            let _ = tx.send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch configuration files; reload with SIGHUP");
            return None;
        }
    };
    for dir in [&main_dir, &jobs_dir] {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(path = %dir.display(), error = %e, "cannot watch folder; reload with SIGHUP");
        }
    }
    Some(watcher)
}

/// Whether a file event leaves a file whole: closed after writing, renamed into place (an
/// editor's save), or removed. A file being written (created, truncated, appended to) is read
/// once it is closed, never half-written, however long its writer pauses.
fn written(kind: notify::EventKind) -> bool {
    use notify::EventKind::{Access, Modify, Remove};
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    matches!(
        kind,
        Access(AccessKind::Close(AccessMode::Write)) | Modify(ModifyKind::Name(_)) | Remove(_)
    )
}

/// Loads the config again (reading and parsing on a blocking thread) and applies it; a bad
/// config is rejected and the old one kept.
pub(super) async fn reload(
    scheduler: &mut Scheduler,
    current: &Settings,
    jobs_now: Option<&watch::Sender<Arc<LoadedJobs>>>,
    in_force: &ConfigInForce,
) -> Option<crate::alert::AlertPolicies> {
    systemd::reloading();
    let path = current.config_path.clone();
    let loaded = match tokio::task::spawn_blocking(move || config::load(&path)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the configuration loader failed: {e}")),
    };
    match loaded {
        Ok(new) => {
            for w in &new.warnings {
                tracing::warn!(problem = %w, "configuration warning");
            }
            if new.settings != *current {
                tracing::warn!(
                    "daemon settings changed; they take effect at the next restart (job changes apply now)"
                );
            }
            if let Some(jobs_now) = jobs_now {
                jobs_now.send_replace(Arc::new(LoadedJobs::of(&new.jobs, true)));
            }
            let c = scheduler.apply(new.jobs, &new.alerts, &HashMap::new());
            in_force.accepted(Utc::now());
            super::memory::release_freed();
            tracing::info!(
                added = ?c.added,
                removed = ?c.removed,
                changed = ?c.changed,
                jobs = scheduler.len(),
                "configuration reloaded"
            );
            // An edge added or removed may complete (or hold back) a half-met condition.
            scheduler.parents_ended(None);
            Some(new.alerts)
        }
        Err(e) => {
            // The operator must fix the files: the daemon keeps the previous jobs meanwhile.
            tracing::error!(error = %e, "configuration rejected; the previous configuration stays in effect");
            in_force.rejected(Utc::now(), e);
            None
        }
    }
}

/// The systemd status line: jobs, runs, and what is wrong (history writes failing, files
/// refused).
pub(super) fn status_line(
    scheduler: &Scheduler,
    ctx: &Context,
    in_force: &ConfigInForce,
) -> String {
    use std::fmt::Write as _;
    let mut line = format!(
        "{} jobs scheduled, {} runs in progress",
        scheduler.len(),
        ctx.running()
    );
    if let Some(n) = ctx.recorder().health().pending() {
        let _ = write!(line, "; history database failing: {n} run records waiting");
    }
    if let Some(rejected) = in_force.now().rejected_since() {
        let _ = write!(line, "; {rejected}");
    }
    line
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
pub(super) async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Starts the stale-job watch on these policies; returns where new policies go at reloads.
pub(super) fn spawn_stale_watch(
    store: &Store,
    ctx: &Context,
    alerts: &AlertPolicies,
    successes: mpsc::UnboundedReceiver<String>,
    background: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> watch::Sender<Arc<AlertPolicies>> {
    let (policies, policies_rx) = watch::channel(Arc::new(alerts.clone()));
    let watch = super::stale::StaleWatch {
        store: store.clone(),
        alerts: ctx.alerts().clone(),
        policies: policies_rx,
        successes,
        tracker: ctx.tracker().clone(),
    };
    tasks.spawn(super::stale::stale_loop(watch, background.clone()));
    policies
}

/// Gives the metrics each configured job's last success from the history (one query, off the
/// start's path).
async fn recall_last_successes(
    store: Store,
    metrics: Arc<crate::metrics::Metrics>,
    jobs: Vec<String>,
) {
    match store.last_successes().await {
        Ok(found) => {
            let jobs: std::collections::HashSet<String> = jobs.into_iter().collect();
            for (job, at) in found.iter().filter(|(job, _)| jobs.contains(job)) {
                metrics.last_success_was(job, *at);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the jobs' last successes; the metric shows those since the start")
        }
    }
}

/// The tasks that follow the scheduler's jobs: their children (`after`), the processes that
/// leave their runs' groups, and each job's last success for the metrics.
pub(super) fn spawn_followers(
    tasks: &mut JoinSet<()>,
    (scheduler, store, node, ended, background): Followers,
    ctx: &Context,
    metrics: &Arc<crate::metrics::Metrics>,
) {
    let names = scheduler.names();
    tasks.spawn(recall_last_successes(
        store.clone(),
        Arc::clone(metrics),
        names,
    ));
    tasks.spawn(super::leftovers::sweep_loop(
        Arc::clone(ctx.processes()),
        scheduler.clone(),
        background.clone(),
    ));
    tasks.spawn(super::dependents::follow(
        scheduler, store, node, ended, background,
    ));
}

/// What [`spawn_followers`] needs.
pub(super) type Followers = (
    Scheduler,
    Store,
    String,
    mpsc::UnboundedReceiver<crate::history::recorder::Ended>,
    CancellationToken,
);
