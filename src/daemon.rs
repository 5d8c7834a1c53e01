//! The daemon's life: open the history, mark crash leftovers abandoned, schedule every job,
//! tell systemd it is ready, then serve reloads (SIGHUP, file changes), manual triggers and
//! retention until the shutdown signal; then drain runs for the grace period, stop what is
//! left, and write the last records.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{self, Config, Settings};
use crate::http_client::HttpClients;
use crate::job::Services;
use crate::processes::{Orphan, Processes};
use crate::recorder::Recorder;
use crate::run_ids::RunIds;
use crate::runner::{Context, Dispatched};
use crate::scheduler::Scheduler;
use crate::smtp::Mailers;
use crate::store::Store;
use crate::systemd;

/// How the daemon is asked to stop.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop firing, wait for runs up to the grace period, then stop them.
    pub drain: CancellationToken,
    /// Stop at once: kill every run's process group (a second signal).
    pub now: CancellationToken,
    /// Process groups of running commands, for a stop that cannot wait for the runtime.
    pub processes: Arc<Processes>,
}

/// The umask jobs run with.
pub const JOB_UMASK: nix::libc::mode_t = 0o022;
/// How often manual trigger requests are polled.
const TRIGGER_POLL: Duration = Duration::from_millis(250);
/// Quiet time after a config file change before reloading (editors write in several steps).
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(300);
/// How often old history is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Longest wait for the last history writes at exit: one try of the database (its busy
/// timeout is 5 s), then the spill file.
const FINAL_WRITE_WAIT: Duration = Duration::from_secs(15);
/// How often the systemd status line is refreshed (sent only when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Runs the daemon on an already loaded config.
pub async fn run_with(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let Config {
        settings,
        jobs,
        alerts,
        warnings,
    } = config;
    for w in &warnings {
        tracing::warn!(problem = %w, "configuration warning");
    }
    // Jobs inherit the daemon's umask: 022, as under cron, whatever the service manager set
    // (the unit's `UMask=0077`). The daemon's own files are created 0600 explicitly.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(JOB_UMASK));
    crate::http_client::install_crypto_provider();
    let store = Store::open(&settings.database).await?;
    let _instance = crate::instance::acquire(&settings.database)?;
    let replayed = crate::recorder::replay_spill(&store)
        .await
        .context("cannot replay the spill file into the history database")?;
    if replayed > 0 {
        tracing::info!(
            records = replayed,
            "run records kept in the spill file by the previous daemon written to the history database"
        );
    }
    let above = stop_previous_runs(&store, &shutdown.processes, &settings.node).await?;
    let ids = Arc::new(RunIds::reserve(&store, above).await?);
    let last_fired = store.last_fired().await?;
    let (recorder, writer) = Recorder::start(&store);
    let clock = Arc::new(Clock::system());
    let services = Services {
        mailers: Mailers::new(settings.smtp.values())?,
        http: HttpClients::default(),
        store: Some(store.clone()),
    };
    let mut ctx = Context::new(
        Arc::clone(&clock),
        recorder,
        settings.max_concurrent_runs,
        Arc::clone(&ids),
        settings.node.clone(),
        services,
    );
    ctx.processes = Arc::clone(&shutdown.processes);
    let ctx = Arc::new(ctx);
    let timers = CancellationToken::new();
    let background = CancellationToken::new();
    let mut scheduler = Scheduler::new(Arc::clone(&ctx), timers.clone());
    scheduler.apply(jobs, &alerts, &last_fired);
    release_freed_memory();

    let mut tasks = tokio::task::JoinSet::new();
    {
        let clock = Arc::clone(&clock);
        let cancel = background.clone();
        tasks.spawn(async move { clock.watch(cancel).await });
    }
    {
        let (ids, store, cancel) = (Arc::clone(&ids), store.clone(), background.clone());
        tasks.spawn(async move { ids.keep_reserved(store, cancel).await });
    }
    tasks.spawn(sweep_loop(Arc::clone(&ctx.processes), background.clone()));
    let (trigger_tx, mut trigger_rx) = mpsc::channel(64);
    tasks.spawn(poll_triggers(
        store.clone(),
        settings.node.clone(),
        trigger_tx,
        background.clone(),
    ));
    if let Some(retention) = settings.retention {
        tasks.spawn(prune_loop(store.clone(), retention, background.clone()));
    }
    if let Some(every) = systemd::watchdog_interval() {
        tasks.spawn(watchdog_loop(every, background.clone()));
    }
    let (change_tx, mut change_rx) = mpsc::unbounded_channel();
    let _watcher = watch_files(&settings, change_tx);
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;

    let status = |s: &Scheduler, ctx: &Context| {
        let mut line = format!(
            "{} jobs scheduled, {} runs in progress",
            s.len(),
            ctx.running()
        );
        if let Some(n) = ctx.recorder.health().pending() {
            use std::fmt::Write as _;
            let _ = write!(line, "; history database failing: {n} run records waiting");
        }
        line
    };
    tracing::info!(
        jobs = scheduler.len(),
        database = %settings.database.display(),
        node = %settings.node,
        "hourglass started"
    );
    systemd::ready(&status(&scheduler, &ctx));

    let mut reload_at: Option<tokio::time::Instant> = None;
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    let mut last_status = String::new();
    loop {
        tokio::select! {
            () = shutdown.drain.cancelled() => break,
            () = shutdown.now.cancelled() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading configuration");
                // This reload reads the files as they are: a pending file-change reload is
                // folded into it.
                reload_at = None;
                reload(&mut scheduler, &settings).await;
                systemd::ready(&status(&scheduler, &ctx));
            }
            Some(()) = change_rx.recv() => {
                // Let the editor finish, and fold a burst of events into one reload; the loop
                // goes on meanwhile (triggers, signals).
                reload_at = Some(tokio::time::Instant::now() + RELOAD_DEBOUNCE);
            }
            () = sleep_until_some(reload_at) => {
                reload_at = None;
                tracing::info!("configuration files changed: reloading");
                reload(&mut scheduler, &settings).await;
                systemd::ready(&status(&scheduler, &ctx));
            }
            Some((request, job)) = trigger_rx.recv() => {
                if let Some(news) = scheduler.trigger(&job) {
                    tracing::info!(job = %job, "manual trigger");
                    tasks.spawn(record_trigger_outcome(store.clone(), request, news));
                } else {
                    tracing::warn!(job = %job, "manual trigger for a job that is not in the configuration; ignored");
                }
            }
            _ = status_tick.tick() => {
                let line = status(&scheduler, &ctx);
                if line != last_status {
                    systemd::status(&line);
                    last_status = line;
                }
            }
        }
    }

    // Drain.
    let running = ctx.running();
    systemd::stopping(&format!("stopping: waiting for {running} runs"));
    tracing::info!(
        runs = running,
        grace_s = settings.shutdown_grace.as_secs(),
        "shutting down: no new firings; waiting for runs to finish"
    );
    timers.cancel();
    ctx.draining.cancel();
    ctx.tracker.close();
    let drained = tokio::select! {
        () = ctx.tracker.wait() => true,
        () = tokio::time::sleep(settings.shutdown_grace) => false,
        () = shutdown.now.cancelled() => false,
    };
    if !drained {
        let left = ctx.running();
        if shutdown.now.is_cancelled() {
            tracing::warn!(runs = left, "second signal: killing runs now");
            ctx.stop.hard.cancel();
        } else {
            tracing::warn!(
                runs = left,
                "grace period over: stopping the runs still going"
            );
        }
        ctx.stop.soft.cancel();
        tokio::select! {
            () = ctx.tracker.wait() => {}
            () = shutdown.now.cancelled() => {
                ctx.stop.hard.cancel();
                ctx.processes.signal_all(Signal::SIGKILL);
                // Give the runs a moment to record their end; the next start marks any
                // that could not as abandoned.
                let _ = tokio::time::timeout(Duration::from_secs(1), ctx.tracker.wait()).await;
            }
        }
    }
    let killed = ctx.processes.signal_all(Signal::SIGKILL);
    if killed > 0 {
        tracing::warn!(groups = killed, "killed leftover process groups");
    }
    let escaped = final_sweep(Arc::clone(&ctx.processes)).await;
    if escaped > 0 {
        tracing::warn!(
            processes = escaped,
            "killed processes that had left their run's process group"
        );
    }
    background.cancel();
    while tasks.join_next().await.is_some() {}
    drop(scheduler);
    drop(ctx);
    let report = tokio::time::timeout(FINAL_WRITE_WAIT, writer).await;
    let lost = match report {
        Ok(Ok(report)) => {
            if report.spilled > 0 {
                tracing::warn!(
                    records = report.spilled,
                    path = %crate::spill::Spill::beside(store.path()).path().display(),
                    "run records kept in the spill file; the next start writes them to the history database"
                );
            }
            report.lost
        }
        Ok(Err(_)) | Err(_) => usize::MAX,
    };
    let path = store.path().to_path_buf();
    if matches!(report, Ok(Ok(r)) if r == crate::recorder::WriterReport::default()) {
        // Every id handed out is in a row: the next daemon goes on from the last one.
        if let Err(e) = store.release_run_ids(ids.last()).await {
            tracing::warn!(error = %e, "cannot give back the unused run ids; the next ids skip them");
        }
        store.close().await;
    } else {
        // The database is failing: its connections are left open to the exit. Closing the last
        // one checkpoints, which with files made immutable wrote to SQLite's shared-memory
        // mapping and killed the daemon with SIGBUS after the records were safe in the spill
        // file.
        std::mem::forget(store);
    }
    if lost > 0 {
        let records = if lost == usize::MAX {
            "some".to_string()
        } else {
            lost.to_string()
        };
        tracing::error!(
            database = %path.display(),
            records = %records,
            "run records could be saved neither in the history database nor in its spill file"
        );
        anyhow::bail!("{records} run records were lost");
    }
    tracing::info!("hourglass stopped");
    Ok(())
}

/// What the error of a run found only by its processes says.
const ORPHAN_ERROR: &str = "the daemon was killed before it recorded this run; the next start \
     found its processes still running and stopped them";
/// How often the daemon looks for processes that left their run's group and outlived it.
const SWEEP_EVERY: Duration = Duration::from_secs(3);
/// Least time between two sweeps (a burst of runs ending asks for one each).
const SWEEP_GAP: Duration = Duration::from_secs(1);

/// Stops what the runs of a daemon that died on this database left (crash, `kill -9`), before
/// anything fires: kills every process carrying the database's id, gives a row to each run
/// found only that way, and marks the runs still `running` abandoned. Becomes the subreaper of
/// the runs to come and marks them with the database's id. Returns the highest run id found.
async fn stop_previous_runs(
    store: &Store,
    processes: &Processes,
    node: &str,
) -> anyhow::Result<i64> {
    if let Err(e) = Processes::become_subreaper() {
        tracing::warn!(error = %e, "cannot become the subreaper of jobs' processes: processes that leave their run's process group will outlive it");
    }
    let database_id = store.database_id().await?;
    processes.set_marker(&database_id);
    let orphans = tokio::task::spawn_blocking(move || crate::processes::stop_orphans(&database_id))
        .await
        .unwrap_or_default();
    if !orphans.is_empty() {
        tracing::warn!(
            processes = orphans.len(),
            "processes left by the runs of a daemon that died killed"
        );
    }
    let abandoned = store.mark_abandoned(Utc::now()).await?;
    let found = orphan_runs(&orphans, node);
    let unknown = store
        .insert_abandoned(&found, Utc::now(), ORPHAN_ERROR)
        .await?;
    if abandoned + unknown > 0 {
        tracing::warn!(
            runs = abandoned + unknown,
            unrecorded = unknown,
            "runs left running by a daemon that died marked abandoned"
        );
    }
    Ok(found.iter().map(|r| r.id).max().unwrap_or(0))
}

/// One start record per run id found in orphans' environments.
fn orphan_runs(orphans: &[Orphan], node: &str) -> Vec<crate::store::RunStart> {
    use crate::store::{RunStart, Trigger};
    let mut runs: std::collections::BTreeMap<i64, RunStart> = std::collections::BTreeMap::new();
    for o in orphans {
        let Some(id) = o.run_id else { continue };
        runs.entry(id).or_insert_with(|| RunStart {
            id,
            job: o.job.clone().unwrap_or_else(|| "(unknown)".to_string()),
            scheduled_for: o
                .scheduled_for
                .as_deref()
                .and_then(crate::store::parse_ts)
                .unwrap_or_else(Utc::now),
            started_at: None,
            attempt: o.attempt.unwrap_or(1).max(1),
            trigger: o
                .trigger
                .as_deref()
                .and_then(Trigger::from_name)
                .unwrap_or(Trigger::Schedule),
            node: node.to_string(),
            pid: None,
        });
    }
    runs.into_values().collect()
}

/// Sweeps for processes that outlived their run (see [`Processes::sweep`]): soon after a run
/// ended with processes left in its group, and every [`SWEEP_EVERY`] (a sweep reads all of
/// /proc, so it is not done after every run).
async fn sweep_loop(processes: Arc<Processes>, cancel: CancellationToken) {
    loop {
        let asked = tokio::select! {
            () = processes.sweep_asked() => true,
            () = tokio::time::sleep(SWEEP_EVERY) => false,
            () = cancel.cancelled() => return,
        };
        // When asked: lets the run's group die and be re-parented, and folds a burst of ends
        // into one sweep. Either way the sweep comes in the middle of a wall-clock second,
        // away from the whole seconds where most schedules fire.
        let gap = if asked { SWEEP_GAP } else { Duration::ZERO };
        tokio::time::sleep(gap + until_mid_second()).await;
        let p = Arc::clone(&processes);
        if let Ok(swept) = tokio::task::spawn_blocking(move || p.sweep(false)).await
            && swept.killed > 0
        {
            tracing::warn!(
                processes = swept.killed,
                "killed processes that outlived their run (they had left its process group)"
            );
        }
    }
}

/// The time from now to the next half second of the wall clock.
fn until_mid_second() -> Duration {
    let ms = u64::from(Utc::now().timestamp_subsec_millis());
    Duration::from_millis((1500 - ms) % 1000)
}

/// At stop, after every run ended: kills every process re-parented to the daemon until none
/// is left (each killed one may leave children of its own), for at most a second. Returns how
/// many were killed.
async fn final_sweep(processes: Arc<Processes>) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut killed = 0;
    loop {
        let p = Arc::clone(&processes);
        let Ok(swept) = tokio::task::spawn_blocking(move || p.sweep(true)).await else {
            return killed;
        };
        killed += swept.killed;
        if swept == crate::processes::Swept::default() || tokio::time::Instant::now() > deadline {
            return killed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes what became of a manual trigger request once the firing knows.
async fn record_trigger_outcome(
    store: Store,
    request: i64,
    news: tokio::sync::oneshot::Receiver<Dispatched>,
) {
    use crate::store::TriggerOutcome;
    let Ok(news) = news.await else { return };
    let (outcome, run_id, detail) = match news {
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
    };
    if let Err(e) = store
        .set_trigger_outcome(request, outcome, run_id, detail.as_deref())
        .await
    {
        tracing::warn!(error = %e, "cannot record what became of a manual trigger");
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Loads the config again (reading and parsing on a blocking thread) and applies it; a bad
/// config is rejected and the old one kept.
async fn reload(scheduler: &mut Scheduler, current: &Settings) {
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
            let c = scheduler.apply(new.jobs, &new.alerts, &HashMap::new());
            release_freed_memory();
            tracing::info!(
                added = ?c.added,
                removed = ?c.removed,
                changed = ?c.changed,
                jobs = scheduler.len(),
                "configuration reloaded"
            );
        }
        Err(e) => {
            // The operator must fix the files: the daemon keeps the previous jobs meanwhile.
            tracing::error!(error = %e, "configuration rejected; the previous configuration stays in effect");
        }
    }
}

/// Gives the memory a config load freed back to the system. glibc returns freed memory inside
/// its heaps only when asked: parsing 100,000 jobs frees ~250 MB of temporaries (in the
/// parser's own arena, see `config::load`), and without this call the daemon stayed at
/// 230 MiB RSS instead of 82 MiB. Takes a few milliseconds.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_freed_memory() {
    // SAFETY: `malloc_trim` takes no pointer and only walks glibc's own free lists under its
    // locks; it is safe to call from any thread at any time.
    let _ = unsafe { nix::libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}

async fn poll_triggers(
    store: Store,
    node: String,
    tx: mpsc::Sender<(i64, String)>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(TRIGGER_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cancel.cancelled() => return,
        }
        match store.claim_triggers(&node).await {
            Ok(reqs) => {
                for req in reqs {
                    if tx.send(req).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read manual trigger requests"),
        }
    }
}

async fn prune_loop(store: Store, retention: Duration, cancel: CancellationToken) {
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

async fn watchdog_loop(every: Duration, cancel: CancellationToken) {
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
fn watch_files(
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
            && !ev.kind.is_access()
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
