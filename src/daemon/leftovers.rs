//! What runs leave behind: at start, what the runs of a daemon that died left (processes
//! found by the database's marker, runs without a row, rows left `running`); while running and
//! at stop, processes that left their run's process group and outlived it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::processes::{Orphan, Processes};
use crate::scheduler::Scheduler;
use crate::store::Store;

/// What the error of a run found only by its processes says.
pub(super) const ORPHAN_ERROR: &str = "the daemon was killed before it recorded this run; the next start \
     found its processes still running and stopped them";
/// How often the daemon looks for processes that left their run's group and outlived it.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(3);
/// Least time between two sweeps (a burst of runs ending asks for one each).
pub(super) const SWEEP_GAP: Duration = Duration::from_secs(1);

/// Stops what the runs of a daemon that died on this database left (crash, `kill -9`), before
/// anything fires: kills every process carrying the database's id, gives a row to each run
/// found only that way, and marks the runs still `running` abandoned. Becomes the subreaper of
/// the runs to come and marks them with the database's id. Returns the highest run id found.
pub(super) async fn stop_previous_runs(
    store: &Store,
    processes: &Processes,
    node: &str,
) -> anyhow::Result<i64> {
    if let Err(e) = Processes::become_subreaper() {
        tracing::warn!(error = %e, "cannot become the subreaper of jobs' processes: processes that leave their run's process group will outlive it");
    }
    // On a shared database every node's jobs carry the node's name too: a node starting
    // stops what its own dead life left, never another node's runs on the same machine.
    let database_id = store.database_id().await?;
    let marker = if store.cluster().is_some() {
        format!("{database_id}/{node}")
    } else {
        database_id
    };
    processes.set_marker(&marker);
    let orphans = tokio::task::spawn_blocking(move || crate::processes::stop_orphans(&marker))
        .await
        .unwrap_or_default();
    if !orphans.is_empty() {
        tracing::warn!(
            processes = orphans.len(),
            "processes left by the runs of a daemon that died killed"
        );
    }
    let abandoned = store.mark_abandoned(Utc::now(), node).await?;
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
pub(super) fn orphan_runs(orphans: &[Orphan], node: &str) -> Vec<crate::store::RunStart> {
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
pub(super) async fn sweep_loop(
    processes: Arc<Processes>,
    scheduler: Scheduler,
    cancel: CancellationToken,
) {
    // Sweeps keep coming every few seconds while runs go and after one killed something;
    // an idle daemon waits for the sweep each run's end asks for (no wake-ups of its own).
    let mut periodic = true;
    loop {
        periodic = periodic || processes.has_runs();
        let asked = tokio::select! {
            () = processes.sweep_asked() => true,
            () = tokio::time::sleep(SWEEP_EVERY), if periodic => false,
            () = cancel.cancelled() => return,
        };
        // When asked: lets the run's group die and be re-parented, and folds a burst of ends
        // into one sweep. Either way the sweep comes in the middle of a wall-clock second,
        // away from the whole seconds where most schedules fire.
        let gap = if asked { SWEEP_GAP } else { Duration::ZERO };
        tokio::time::sleep(gap + until_mid_second()).await;
        let (p, s) = (Arc::clone(&processes), scheduler.clone());
        let swept = tokio::task::spawn_blocking(move || {
            let swept = p.sweep(false);
            // The last run ended: what a burst of runs allocated goes back to the system
            // (glibc keeps freed memory in its heaps until asked), the jobs' idle slots first.
            if !p.has_runs() {
                s.forget_idle_slots();
                super::memory::release_freed();
            }
            swept
        })
        .await;
        periodic = swept.as_ref().is_ok_and(|s| s.killed > 0);
        if let Ok(swept) = swept
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
pub(super) fn until_mid_second() -> Duration {
    let ms = u64::from(Utc::now().timestamp_subsec_millis());
    Duration::from_millis((1500 - ms) % 1000)
}

/// At stop, after every run ended: kills every process re-parented to the daemon until none
/// is left (each killed one may leave children of its own), for at most a second. Returns how
/// many were killed.
pub(super) async fn final_sweep(processes: Arc<Processes>) -> usize {
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
