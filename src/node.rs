//! This daemon as one node of a shared (PostgreSQL) database: it renews its lease from a task
//! of its own (so a busy node is never taken for dead), measures its clock against the
//! database's at each beat, and publishes a digest of its job definitions.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::job::JobSpec;
use crate::store::{NodeBeat, Store};

/// This node, as its heartbeat describes it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// `daemon.node`.
    pub name: String,
    /// How long a lease lasts.
    pub lease: Duration,
    /// Skew over which the node logs an ERROR.
    pub max_skew: Duration,
}

/// What the node has loaded: its job names (for trigger requests) and their digest.
#[derive(Debug, Clone, Default)]
pub struct LoadedJobs {
    /// Names of the enabled jobs, sorted.
    pub names: Vec<String>,
    /// A digest of every job's definition.
    pub digest: String,
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
        for job in jobs {
            hasher.update(job_digest(job).as_bytes());
            if job.enabled {
                names.push(job.name.clone());
            }
        }
        names.sort();
        Self {
            names,
            digest: hex(&hasher.finalize()),
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

/// Renews the node's lease every sixth of it until `cancel`; logs an ERROR when the node's
/// clock is further from the database's than `max_skew` (once per crossing) and a WARN when
/// the database does not answer.
pub async fn heartbeat_loop(
    store: Store,
    node: NodeInfo,
    jobs: watch::Receiver<Arc<LoadedJobs>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(node.lease / 6);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut first, mut skewed, mut failing) = (true, false, false);
    let max_ms = i64::try_from(node.max_skew.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cancel.cancelled() => return,
        }
        let digest = jobs.borrow().digest.clone();
        let beat = NodeBeat {
            node: &node.name,
            version: env!("CARGO_PKG_VERSION"),
            config_digest: &digest,
            lease: node.lease,
            local_now: Utc::now(),
            first,
        };
        match store.heartbeat(&beat).await {
            Ok(skew_ms) => {
                first = false;
                if failing {
                    failing = false;
                    tracing::info!(node = %node.name, "heartbeat written again");
                }
                let over = skew_ms.abs() > max_ms;
                if over && !skewed {
                    tracing::error!(node = %node.name, skew_ms, max_skew_ms = max_ms, "this node's clock is off from the database's by more than database.max_clock_skew: fix its time synchronisation (firings are claimed by their intended time, so nothing runs twice, but they start off time)");
                } else if !over && skewed {
                    tracing::info!(node = %node.name, skew_ms, "this node's clock is back within database.max_clock_skew");
                }
                skewed = over;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(node = %node.name, error = %e, "cannot write this node's heartbeat; its lease runs out unless the database answers");
                }
                failing = true;
            }
        }
    }
}
