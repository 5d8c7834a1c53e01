//! This daemon as one node of a shared (PostgreSQL) database: it renews its lease from a task
//! of its own (so a busy node is never taken for dead), measures its clock against the
//! database's at each beat, and publishes a digest of its job definitions.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::history::run_ids::RunIds;
use crate::job::JobSpec;
use crate::store::{Cluster, LostRun, NodeBeat};

/// This node, as its heartbeat describes it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// `daemon.node`.
    pub name: String,
    /// How long a lease lasts.
    pub lease: Duration,
    /// Skew over which the node logs an ERROR.
    pub max_skew: Duration,
    /// The machine it runs on ([`machine`]).
    pub machine: String,
    /// This daemon's process on it ([`this_process`]).
    pub process: String,
    /// Its tags (`daemon.tags`).
    pub tags: Vec<String>,
    /// How often a heartbeat also looks for what a lost notification would have said
    /// (`database.fallback_poll`).
    pub fallback_poll: Duration,
}

impl NodeInfo {
    /// What a heartbeat of this node with `digest` says.
    fn beat<'a>(&'a self, digest: &'a str, first: bool) -> NodeBeat<'a> {
        NodeBeat {
            node: &self.name,
            version: env!("CARGO_PKG_VERSION"),
            config_digest: digest,
            lease: self.lease,
            first,
            machine: &self.machine,
            process: &self.process,
            replaces: "",
            tags: &self.tags,
            poll: false,
        }
    }
}

/// This process, as a node's row names its holder: `pid/start time` (the start time, in
/// clock ticks since boot, tells a live process from a later one given the same pid).
pub fn this_process() -> String {
    process_id(std::process::id()).unwrap_or_default()
}

fn process_id(pid: u32) -> Option<String> {
    crate::processes::start_time(pid).map(|start| format!("{pid}/{start}"))
}

/// Whether the process a node's row names (`pid/start time`) still runs on this machine.
fn process_alive(holder: &str) -> bool {
    holder
        .split_once('/')
        .and_then(|(pid, _)| pid.parse().ok())
        .and_then(process_id)
        .is_some_and(|now| now == holder)
}

/// This machine, for the nodes table: its host name and `/etc/machine-id`.
pub fn machine() -> String {
    let id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    format!("{}/{}", crate::job::template::host_name(), id.trim())
}

/// The node's first heartbeat: it takes its name before it touches anything the name owns
/// (the runs a dead life of it left, their processes, its turns).
///
/// # Errors
/// When the database does not answer, or a live node holds the name: on another machine
/// (its lease holds), or in another process of this machine that still runs.
pub async fn join(
    cluster: &Cluster,
    node: &NodeInfo,
    jobs: &LoadedJobs,
) -> Result<(), crate::store::StoreError> {
    let taken = |where_: String| crate::store::StoreError::NodeNameTaken {
        name: node.name.clone(),
        where_,
    };
    let replaces = match cluster.node_holder(&node.name).await? {
        Some(h) if h.alive && h.process != node.process => {
            if h.machine != node.machine {
                let host = h.machine.split('/').next().unwrap_or_default();
                return Err(taken(format!("another machine ({host})")));
            }
            if process_alive(&h.process) {
                let pid = h.process.split('/').next().unwrap_or_default();
                return Err(taken(format!("another daemon on this machine (pid {pid})")));
            }
            h.process
        }
        _ => String::new(),
    };
    let mut beat = node.beat(&jobs.digest, true);
    beat.replaces = &replaces;
    cluster.heartbeat(&beat).await.map(|_| ())
}

/// What the node has loaded: its job names (for trigger requests) and their digest.
#[derive(Debug, Clone, Default)]
pub struct LoadedJobs {
    /// Names of the enabled jobs, sorted.
    pub names: Vec<String>,
    /// A digest of every job's definition.
    pub digest: String,
    /// Each job's name and digest.
    pub jobs: Vec<(String, String)>,
}

impl LoadedJobs {
    /// The names and digest of `jobs` on a shared database (nothing on a database of its own,
    /// where no other node asks).
    pub fn of(jobs: &[JobSpec], shared: bool) -> Self {
        if !shared {
            return Self::default();
        }
        let mut hasher = Sha256::new();
        let mut names = Vec::with_capacity(jobs.len());
        let mut digests = Vec::with_capacity(jobs.len());
        for job in jobs {
            let digest = job_digest(job);
            hasher.update(digest.as_bytes());
            if job.enabled {
                names.push(job.name.clone());
            }
            digests.push((job.name.clone(), digest));
        }
        names.sort();
        Self {
            names,
            digest: hex(&hasher.finalize()),
            jobs: digests,
        }
    }
}

/// A digest of a job's definition: the same on every node that loaded the same definition
/// (its file's path is left out; secrets enter as `[REDACTED]` only).
pub fn job_digest(job: &JobSpec) -> String {
    let text = format!(
        "{}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{:?}|{}",
        job.name,
        job.schedule,
        job.tz,
        job.jitter,
        job.catch_up,
        job.catch_up_window,
        job.overlap,
        job.timeout,
        job.kill_grace,
        job.retry,
        job.output_limit,
        job.kind,
        job.enabled,
    );
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().take(8).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// What the heartbeat task works with.
#[derive(Debug)]
pub struct Membership {
    /// The shared database.
    pub cluster: Cluster,
    /// This node.
    pub node: NodeInfo,
    /// The jobs loaded now (for the digest).
    pub jobs: watch::Receiver<Arc<LoadedJobs>>,
    /// Run ids, for rows of firings a dead node claimed without recording them.
    pub ids: Arc<RunIds>,
    /// Where runs lost with a dead node go (the daemon retries them per `on_node_loss`).
    pub lost: mpsc::Sender<LostRun>,
    /// The runner: told whether the database answers each heartbeat, and which nodes live.
    pub ctx: Arc<crate::runner::Context>,
    /// Who acts on what a polling beat finds waiting.
    pub routes: super::listen::Routes,
    /// Cancelled when the daemon begins to stop: it takes over from no dead node then (it
    /// could run none of their firings again).
    pub stopping: CancellationToken,
}

/// What the heartbeat has seen so far.
#[derive(Debug, Default)]
struct BeatState {
    /// The job digests are written (since the last load).
    jobs_written: bool,
    /// Jobs whose definition differs between live nodes, as last logged.
    drift: std::collections::BTreeMap<String, Vec<String>>,
    skewed: bool,
    failing: bool,
    /// Since when beats have been succeeding without a break.
    healthy_since: Option<tokio::time::Instant>,
    /// When a beat last polled.
    polled_at: Option<tokio::time::Instant>,
    /// The pauses' digest the last poll found.
    pauses: Option<String>,
}

/// Renews the node's lease every sixth of it (and at once when a node joins or leaves) until
/// `cancel`. Once its own beats have held for a whole lease (after an outage every node gets
/// time to renew first), it takes over from nodes whose lease ran out. Logs an ERROR when the
/// node's clock is further from the database's than `max_skew` (once per crossing) and a WARN
/// when the database does not answer. Every `fallback_poll`, a beat also looks for what a lost
/// notification would have said.
pub async fn heartbeat_loop(mut m: Membership, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(m.node.lease / 6);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = BeatState::default();
    let beat_now = Arc::clone(&m.routes.beat);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = beat_now.notified() => {}
            () = cancel.cancelled() => break,
        }
        let Some(answer) = beat(&m, &mut state).await else {
            continue;
        };
        if let Some(waiting) = &answer.waiting {
            follow_waiting(&m, &mut state, waiting).await;
        }
        check_definitions(&mut m, &mut state, answer.configs).await;
        let held = state
            .healthy_since
            .is_some_and(|t| t.elapsed() >= m.node.lease);
        if held && answer.dead_to_reap && !m.stopping.is_cancelled() {
            reap(&m).await;
        }
    }
    if let Err(e) = m.cluster.leave(&m.node.name).await {
        tracing::warn!(node = %m.node.name, error = %e, "cannot end this node's lease; the other nodes see it stopped when the lease runs out");
    }
}

/// Hands what a polling beat found waiting to who acts on it.
async fn follow_waiting(m: &Membership, state: &mut BeatState, waiting: &crate::store::Waiting) {
    if waiting.triggers {
        m.routes.triggers.notify_one();
    }
    if waiting.replace {
        m.routes
            .route(crate::store::ClusterEvent::Replace(m.node.name.clone()))
            .await;
    }
    if state.pauses.as_ref() != Some(&waiting.pauses) {
        if state.pauses.is_some() {
            m.routes.route(crate::store::ClusterEvent::Pauses).await;
        }
        state.pauses = Some(waiting.pauses.clone());
    }
}

/// One heartbeat; what it learned when it was written.
async fn beat(m: &Membership, state: &mut BeatState) -> Option<crate::store::BeatAnswer> {
    let digest = m.jobs.borrow().digest.clone();
    let mut beat = m.node.beat(&digest, false);
    beat.poll = state
        .polled_at
        .is_none_or(|t| t.elapsed() >= m.node.fallback_poll);
    let max_ms = i64::try_from(m.node.max_skew.as_millis()).unwrap_or(i64::MAX);
    let answer = m.cluster.heartbeat(&beat).await;
    m.ctx.claims().set_reachable(answer.is_ok());
    match answer {
        Ok(answer) => {
            if beat.poll {
                state.polled_at = Some(tokio::time::Instant::now());
            }
            state
                .healthy_since
                .get_or_insert_with(tokio::time::Instant::now);
            if std::mem::take(&mut state.failing) {
                tracing::info!(node = %m.node.name, "heartbeat written again");
            }
            // Firings kept while the database did not answer follow catch_up now.
            crate::runner::recovered(&m.ctx);
            m.ctx.claims().members().set_others(answer.others.clone());
            let skew_ms = answer.skew_ms;
            let over = skew_ms.abs() > max_ms;
            if over && !state.skewed {
                tracing::error!(node = %m.node.name, skew_ms, max_skew_ms = max_ms, "this node's clock is off from the database's by more than database.max_clock_skew: fix its time synchronisation (firings are claimed by the database's clock, so none runs twice, but this node's start off time)");
            } else if !over && state.skewed {
                tracing::info!(node = %m.node.name, skew_ms, "this node's clock is back within database.max_clock_skew");
            }
            state.skewed = over;
            Some(answer)
        }
        Err(e) => {
            if !state.failing {
                tracing::warn!(node = %m.node.name, error = %e, "cannot write this node's heartbeat; its lease runs out unless the database answers");
            }
            state.failing = true;
            state.healthy_since = None;
            None
        }
    }
}

/// Writes this node's job digests when they changed, and logs a WARN for each job whose
/// definition differs between live nodes (once per change; INFO when they agree again). The
/// jobs are compared only when the live nodes' `configs` differ, or differed.
async fn check_definitions(m: &mut Membership, state: &mut BeatState, configs: i64) {
    if m.jobs.has_changed().unwrap_or(false) {
        m.jobs.mark_unchanged();
        state.jobs_written = false;
    }
    if !state.jobs_written {
        let jobs = Arc::clone(&m.jobs.borrow());
        match m.cluster.set_node_jobs(&m.node.name, &jobs.jobs).await {
            Ok(()) => state.jobs_written = true,
            Err(e) => tracing::warn!(error = %e, "cannot record this node's job definitions"),
        }
    }
    if configs <= 1 && state.drift.is_empty() {
        return;
    }
    let Ok(drift) = m.cluster.job_drift().await else {
        return;
    };
    let drift: std::collections::BTreeMap<String, Vec<String>> = drift.into_iter().collect();
    for (job, digests) in &drift {
        if state.drift.get(job) != Some(digests) {
            tracing::warn!(job = %job, digests = %digests.join(" "), "the job's definition differs between live nodes: each firing runs with the definition of the node that claims it");
        }
    }
    for job in state.drift.keys().filter(|j| !drift.contains_key(*j)) {
        tracing::info!(job = %job, "the job's definition is the same on every live node again");
    }
    state.drift = drift;
}

/// Takes over from dead nodes; hands what they lost to the daemon.
async fn reap(m: &Membership) {
    let ids = Arc::clone(&m.ids);
    let next_id = move || ids.next();
    match m.cluster.reap_dead_nodes(&m.node.name, &next_id).await {
        Ok(lost) => {
            for run in lost {
                tracing::warn!(job = %run.job, run_id = run.id, node = %run.node, scheduled_for = %run.scheduled_for, attempt = run.attempt, "run abandoned: its node stopped answering (lease ran out)");
                let (job, run_id) = (run.job.clone(), run.id);
                tokio::select! {
                    sent = m.lost.send(run) => if sent.is_err() { return },
                    () = m.stopping.cancelled() => {
                        tracing::warn!(job, run_id, "the abandoned run is not run again (on_node_loss): this node began to stop as it took it over");
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot look for dead nodes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_its_pid_and_start_time_and_is_alive() {
        let me = this_process();
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let start = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(19)
            .unwrap();
        assert_eq!(me, format!("{}/{start}", std::process::id()));
        assert!(process_alive(&me));
        assert!(
            !process_alive(&format!("{}/1", std::process::id())),
            "another start time"
        );
        assert!(!process_alive("not-a-process"));
    }
}
