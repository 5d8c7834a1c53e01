//! The daemon's life: open the history, stop what a dead daemon's runs left, schedule every
//! job, tell systemd it is ready (`Running::start`); serve reloads, manual triggers and
//! status until the shutdown signal (`Running::serve`); then drain runs for the grace period
//! and stop what is left (`Running::drain`); and write the last records (`Running::finish`).

mod api;
mod background;
mod dependents;
pub mod instance;
mod leftovers;
mod listen;
pub mod memory;
pub mod node;
mod open_history;
pub mod stale;
pub mod systemd;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::alert::AlertPolicies;
use crate::clock::Clock;
use crate::config::{Config, ConfigInForce, Settings};
use crate::history::recorder::{Recorder, WriterReport};
use crate::history::run_ids::RunIds;
use crate::http_client::HttpClients;
use crate::job::{JobSpec, NodeLoss, Services};
use crate::processes::Processes;
use crate::runner::Context;
use crate::scheduler::Scheduler;
use crate::smtp::Mailers;
use crate::store::{ClusterEvent, LostRun, Store};
use node::{LoadedJobs, Membership, NodeInfo, heartbeat_loop};

use background::{
    TRIGGER_POLL, answer_stopping, poll_triggers, prune_loop, record_trigger_outcome, reload,
    sleep_until_some, spawn_stale_watch, status_line, watch_files, watchdog_loop,
};
use leftovers::final_sweep;
use open_history::open_history;

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
/// Quiet time after a config file change before reloading (editors write in several steps).
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(300);
/// Longest wait for the last history writes at exit: one try of the database (its busy
/// timeout is 5 s), then the spill file.
const FINAL_WRITE_WAIT: Duration = Duration::from_secs(15);
/// How often the systemd status line is refreshed (sent only when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Runs the daemon on an already loaded config until `shutdown`.
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
    let mut daemon = Running::start(settings, jobs, &alerts, &shutdown).await?;
    daemon.serve(&shutdown).await;
    daemon.drain(&shutdown).await;
    daemon.finish().await
}

/// A started daemon: what the serve loop, the drain and the last writes work on.
struct Running {
    settings: Settings,
    store: Store,
    ids: Arc<RunIds>,
    ctx: Arc<Context>,
    scheduler: Scheduler,
    /// Stops the timer task (no new firings).
    timers: CancellationToken,
    /// Stops the background tasks (after the drain).
    background: CancellationToken,
    tasks: JoinSet<()>,
    writer: JoinHandle<WriterReport>,
    triggers: mpsc::Receiver<background::TriggerRequest>,
    /// Runs lost with a dead node (shared database).
    lost: mpsc::Receiver<LostRun>,
    /// What the other nodes said (shared database): pauses and replace requests.
    heard: mpsc::Receiver<ClusterEvent>,
    /// The jobs loaded now (names and digest), for trigger claims and the heartbeat.
    loaded: watch::Sender<Arc<LoadedJobs>>,
    changes: mpsc::UnboundedReceiver<()>,
    _watcher: Option<notify::RecommendedWatcher>,
    hup: SignalStream,
    /// Where the API listens.
    api: crate::api::Listening,
    /// Every job's alert policy, for the stale-job watch (replaced at reloads).
    policies: watch::Sender<Arc<AlertPolicies>>,
    metrics: Arc<crate::metrics::Metrics>,
    in_force: ConfigInForce,
    _instance: instance::InstanceLock,
}

impl Running {
    /// Opens the history (replaying a spill file, stopping what a dead daemon's runs left),
    /// schedules the jobs and starts the background tasks; tells systemd it is ready.
    async fn start(
        settings: Settings,
        jobs: Vec<JobSpec>,
        alerts: &AlertPolicies,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Self> {
        // Jobs inherit the daemon's umask: 022, as under cron, whatever the service manager
        // set (the unit's `UMask=0077`). The daemon's own files are created 0600 explicitly.
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(JOB_UMASK));
        crate::http_client::install_crypto_provider();
        let (store, instance, ids, last_fired) = open_history(&settings, &jobs, shutdown).await?;
        let metrics = Arc::new(crate::metrics::Metrics::new()?);
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let (recorder, writer) = Recorder::start(&store, Some(ended_tx.clone()));
        let (successes_tx, successes) = mpsc::unbounded_channel();
        let recorder = recorder.with_metrics(Arc::clone(&metrics));
        let ctx = Arc::new(context(
            &settings,
            &store,
            recorder,
            &ids,
            shutdown,
            successes_tx,
        )?);
        let timers = CancellationToken::new();
        let mut scheduler = Scheduler::new(Arc::clone(&ctx), timers.clone());
        let (loaded, loaded_rx) =
            watch::channel(Arc::new(LoadedJobs::of(&jobs, store.cluster().is_some())));
        scheduler.set_pauses(store.pauses().await?);
        scheduler.apply(jobs, alerts, &last_fired);
        memory::release_freed();
        let background = CancellationToken::new();
        let (mut tasks, triggers, lost, heard) = spawn_background(
            &settings,
            &store,
            (&ids, &ctx),
            (loaded_rx, ended_tx),
            &background,
        );
        let node = settings.node.clone();
        let followers = (
            scheduler.clone(),
            store.clone(),
            node,
            ended,
            background.clone(),
        );
        background::spawn_followers(&mut tasks, followers, &ctx, &metrics);
        let in_force = ConfigInForce::loaded(chrono::Utc::now());
        let api = api::start(
            &settings,
            (&scheduler, &store, &ctx, &metrics, &in_force),
            &mut tasks,
            &background,
        )?;
        let policies = spawn_stale_watch(&store, &ctx, alerts, successes, &background, &mut tasks);
        let (change_tx, changes) = mpsc::unbounded_channel();
        let watcher = watch_files(&settings, change_tx);
        let hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
        let daemon = Self {
            settings,
            store,
            ids,
            ctx,
            scheduler,
            timers,
            background,
            tasks,
            writer,
            triggers,
            lost,
            heard,
            loaded,
            changes,
            _watcher: watcher,
            hup,
            api,
            policies,
            metrics,
            in_force,
            _instance: instance,
        };
        daemon.announce();
        Ok(daemon)
    }

    /// Says the daemon is up: in the log, and to systemd (READY=1 with the status line).
    fn announce(&self) {
        tracing::info!(
            jobs = self.scheduler.len(),
            database = %self.settings.database,
            node = %self.settings.node,
            "hourglass started"
        );
        systemd::ready(&self.status());
    }

    /// The systemd status line.
    fn status(&self) -> String {
        status_line(&self.scheduler, &self.ctx, &self.in_force)
    }

    /// Serves reloads, manual triggers and status updates until the shutdown signal.
    async fn serve(&mut self, shutdown: &Shutdown) {
        let mut reload_at: Option<tokio::time::Instant> = None;
        // The systemd status line follows runs starting and ending, at most once a second:
        // an idle daemon does not wake for it.
        let mut status_at: Option<tokio::time::Instant> = None;
        let mut last_status = String::new();
        let notify = systemd::listening();
        let ctx = Arc::clone(&self.ctx);
        loop {
            tokio::select! {
                () = shutdown.drain.cancelled() => return,
                () = shutdown.now.cancelled() => return,
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading configuration");
                    // This reload reads the files as they are: a pending file-change reload
                    // is folded into it.
                    reload_at = None;
                    self.reload().await;
                }
                Some(()) = self.changes.recv() => {
                    // Let the editor finish, and fold a burst of events into one reload; the
                    // loop goes on meanwhile (triggers, signals).
                    reload_at = Some(tokio::time::Instant::now() + RELOAD_DEBOUNCE);
                }
                () = sleep_until_some(reload_at) => {
                    reload_at = None;
                    tracing::info!("configuration files changed: reloading");
                    self.reload().await;
                }
                Some((request, job, no_deps)) = self.triggers.recv() => self.trigger(request, &job, no_deps),
                Some(run) = self.lost.recv() => self.lost_run(&run).await,
                Some(heard) = self.heard.recv() => {
                    // A database slow to answer must not keep a stop signal waiting.
                    tokio::select! {
                        () = self.follow(heard) => {}
                        () = shutdown.drain.cancelled() => return,
                        () = shutdown.now.cancelled() => return,
                    }
                }
                () = ctx.activity().notified(), if notify && status_at.is_none() => {
                    status_at = Some(tokio::time::Instant::now() + STATUS_EVERY);
                }
                () = sleep_until_some(status_at) => {
                    status_at = None;
                    let line = self.status();
                    if line != last_status {
                        systemd::status(&line);
                        last_status = line;
                    }
                    // A failing history keeps the line fresh while records wait.
                    if self.ctx.recorder().health().pending().is_some() {
                        status_at = Some(tokio::time::Instant::now() + STATUS_EVERY);
                    }
                }
            }
        }
    }

    async fn reload(&mut self) {
        let shared = self.store.cluster().is_some().then_some(&self.loaded);
        if let Some(alerts) =
            reload(&mut self.scheduler, &self.settings, shared, &self.in_force).await
        {
            self.policies.send_replace(Arc::new(alerts));
            self.metrics.forget_removed_jobs(&self.scheduler.names());
        }
        systemd::ready(&self.status());
    }

    /// Follows what another node said: its pauses, or that its newer firing replaces a run
    /// of this node (`overlap = "replace"`); both after a lost notification.
    async fn follow(&self, heard: ClusterEvent) {
        let Some(cluster) = self.store.cluster() else {
            return;
        };
        let me = &self.settings.node;
        if matches!(heard, ClusterEvent::Pauses | ClusterEvent::Missed) {
            match self.store.pauses().await {
                Ok(pauses) => self.scheduler.set_pauses(pauses),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read paused jobs; read again at the next fallback poll")
                }
            }
        }
        let replace = match &heard {
            ClusterEvent::Replace(node) => node == me,
            other => *other == ClusterEvent::Missed,
        };
        if !replace {
            return;
        }
        match cluster.replace_requests(me).await {
            Ok(jobs) => {
                for job in jobs {
                    tracing::info!(job = %job, "another node's newer firing replaces this node's run (overlap = \"replace\")");
                    self.scheduler.replace_active(&job);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read replace requests; read again at the next fallback poll")
            }
        }
    }

    /// A run lost with its node: run its firing again here when the job says
    /// `on_node_loss = "retry"`.
    async fn lost_run(&mut self, run: &LostRun) {
        let Some(spec) = self.scheduler.spec(&run.job) else {
            return;
        };
        if spec.on_node_loss != NodeLoss::Retry {
            return;
        }
        let Some(cluster) = self.store.cluster() else {
            return;
        };
        if let Err(e) = cluster
            .take_over(&run.job, run.scheduled_for, &self.settings.node)
            .await
        {
            tracing::warn!(job = %run.job, error = %e, "cannot take over a lost run's firing; not run again");
            return;
        }
        let attempt = u32::try_from(run.attempt.saturating_add(1)).unwrap_or(u32::MAX);
        tracing::info!(job = %run.job, lost_run_id = run.id, attempt, "running a lost run's firing again (on_node_loss = \"retry\")");
        self.scheduler
            .run_lost_again(&run.job, run.scheduled_for, attempt);
    }

    /// Fires a manual trigger request; what became of it is written to its request row.
    fn trigger(&mut self, request: i64, job: &str, no_deps: bool) {
        if let Some(news) = self.scheduler.trigger(job, no_deps) {
            tracing::info!(job, no_deps, "manual trigger");
            self.tasks
                .spawn(record_trigger_outcome(self.store.clone(), request, news));
        } else {
            tracing::warn!(
                job,
                "manual trigger for a job that is not in the configuration; ignored"
            );
        }
    }

    /// Stops firing and waits for the runs up to the grace period (or a second signal), then
    /// stops what is left and kills what outlived its run.
    async fn drain(&mut self, shutdown: &Shutdown) {
        let ctx = Arc::clone(&self.ctx);
        self.timers.cancel();
        ctx.begin_drain();
        // Requests handed over that the serve loop had not taken: answered, not dropped.
        self.triggers.close();
        while let Ok((request, job, _)) = self.triggers.try_recv() {
            answer_stopping(&self.store, request, &job).await;
        }
        let running = ctx.running();
        systemd::stopping(&format!("stopping: waiting for {running} runs"));
        tracing::info!(
            runs = running,
            grace_s = self.settings.shutdown_grace.as_secs(),
            "shutting down: no new firings; waiting for runs to finish"
        );
        ctx.drain(self.settings.shutdown_grace, &shutdown.now).await;
        let killed = ctx.processes().signal_all(Signal::SIGKILL);
        if killed > 0 {
            tracing::warn!(groups = killed, "killed leftover process groups");
        }
        let escaped = final_sweep(Arc::clone(ctx.processes())).await;
        if escaped > 0 {
            tracing::warn!(
                processes = escaped,
                "killed processes that had left their run's process group"
            );
        }
        self.background.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits for the last history writes; gives back the unused run ids when every record is
    /// in the database. An error when a record could be saved nowhere.
    async fn finish(self) -> anyhow::Result<()> {
        let Self {
            store,
            ids,
            ctx,
            scheduler,
            writer,
            api,
            ..
        } = self;
        api::remove_socket(&api);
        drop(scheduler);
        drop(ctx);
        let report = tokio::time::timeout(FINAL_WRITE_WAIT, writer).await;
        let report = match report {
            Ok(Ok(report)) => Some(report),
            Ok(Err(_)) | Err(_) => None,
        };
        if let Some(r) = report.as_ref().filter(|r| r.spilled > 0) {
            tracing::warn!(
                records = r.spilled,
                path = %crate::history::spill::Spill::beside(store.path()).path().display(),
                "run records kept in the spill file; the next start writes them to the history database"
            );
        }
        let path = store.path().to_path_buf();
        if report == Some(WriterReport::default()) {
            // Every id handed out is in a row: the next daemon goes on from the last one.
            if let Err(e) = store.release_run_ids(ids.last()).await {
                tracing::warn!(error = %e, "cannot give back the unused run ids; the next ids skip them");
            }
            store.close().await;
        } else {
            // The database is failing: its connections are left open to the exit. Closing the
            // last one checkpoints, which with files made immutable wrote to SQLite's
            // shared-memory mapping and killed the daemon with SIGBUS after the records were
            // safe in the spill file.
            std::mem::forget(store);
        }
        let lost = report.map_or(usize::MAX, |r| r.lost);
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
}

/// What every firing shares, for this daemon.
fn context(
    settings: &Settings,
    store: &Store,
    recorder: Recorder,
    ids: &Arc<RunIds>,
    shutdown: &Shutdown,
    successes: mpsc::UnboundedSender<String>,
) -> anyhow::Result<Context> {
    let services = Services {
        mailers: Mailers::new(settings.smtp.values())?,
        http: HttpClients::default(),
        store: store.clone(),
        live: crate::job::output::LiveOutputs::default(),
    };
    Ok(Context::new(
        Arc::new(Clock::system()),
        recorder,
        settings.max_concurrent_runs,
        Arc::clone(ids),
        settings.node.clone(),
        services,
    )
    .with_processes(Arc::clone(&shutdown.processes))
    .with_successes(successes)
    .in_cluster(store.cluster(), settings.tags.clone()))
}

/// This node, as its heartbeat describes it.
pub(super) fn node_info(settings: &Settings) -> NodeInfo {
    NodeInfo {
        name: settings.node.clone(),
        lease: settings.lease,
        max_skew: settings.max_clock_skew,
        machine: node::machine(),
        process: node::this_process(),
        tags: settings.tags.clone(),
        fallback_poll: settings.fallback_poll,
    }
}

/// The background tasks, with the receivers of what they find: trigger requests and runs
/// lost with a dead node.
type Background = (
    JoinSet<()>,
    mpsc::Receiver<background::TriggerRequest>,
    mpsc::Receiver<LostRun>,
    mpsc::Receiver<ClusterEvent>,
);

/// Starts the background tasks (clock watch, run id reservations, sweeps, trigger polling,
/// retention, watchdog); returns them and the trigger requests' receiver.
fn spawn_background(
    settings: &Settings,
    store: &Store,
    (ids, ctx): (&Arc<RunIds>, &Arc<Context>),
    (loaded, ended): (
        watch::Receiver<Arc<LoadedJobs>>,
        mpsc::UnboundedSender<crate::history::recorder::Ended>,
    ),
    cancel: &CancellationToken,
) -> Background {
    let mut tasks = JoinSet::new();
    {
        let clock = Arc::clone(ctx.clock());
        let cancel = cancel.clone();
        tasks.spawn(async move { clock.watch(cancel).await });
    }
    {
        let (ids, store, cancel) = (Arc::clone(ids), store.clone(), cancel.clone());
        tasks.spawn(async move { ids.keep_reserved(store, cancel).await });
    }
    let (trigger_tx, triggers) = mpsc::channel(64);
    let (heard_tx, heard) = mpsc::channel(64);
    let routes = listen::Routes {
        daemon: heard_tx,
        triggers: Arc::default(),
        beat: Arc::default(),
        ended,
    };
    // With the API, `hourglass trigger` asks this daemon directly: the requests table is read
    // once at start (requests made while it was down), and all along without a listener. On
    // a shared database (for a job only another node has) the database says when.
    let api_listens = settings.api.socket.is_some() || settings.api.listen.is_some();
    let poll_every = (store.cluster().is_none() && !api_listens).then_some(TRIGGER_POLL);
    tasks.spawn(poll_triggers(
        store.clone(),
        settings.node.clone(),
        loaded.clone(),
        (trigger_tx, poll_every, Arc::clone(&routes.triggers)),
        ctx.drain_begun(),
    ));
    let (lost_tx, lost) = mpsc::channel(64);
    if let Some(cluster) = store.cluster() {
        tasks.spawn(listen::listen_loop(
            cluster.clone(),
            routes.clone(),
            settings.fallback_poll,
            cancel.clone(),
        ));
        let membership = Membership {
            cluster,
            node: node_info(settings),
            jobs: loaded,
            ids: Arc::clone(ids),
            lost: lost_tx,
            ctx: Arc::clone(ctx),
            routes,
            stopping: ctx.drain_begun(),
        };
        tasks.spawn(heartbeat_loop(membership, cancel.clone()));
    }
    if let Some(retention) = settings.retention {
        tasks.spawn(prune_loop(store.clone(), retention, cancel.clone()));
    }
    if let Some(every) = systemd::watchdog_interval() {
        tasks.spawn(watchdog_loop(every, cancel.clone()));
    }
    (tasks, triggers, lost, heard)
}
