//! Jobs that run after other jobs, at run time: once parents' runs are written, each of their
//! children looks at its parents' newest last words in the history; when they meet its
//! `after`, it claims them (`run_causes`: a parent's run fires a child once, on one node) and
//! fires with trigger `dependency`, under its overlap policy. A child held back (disabled or
//! paused) lets its parents' runs pass: claimed for no run.

use std::sync::Arc;
use std::time::Duration;

use super::{Context, JobSlot, dispatch};
use crate::job::JobSpec;
use crate::job::after::met;
use crate::store::{CauseClaim, EVERY_CHILD, NO_RUN, Newest, ParentRun, StoreError, Trigger};

use super::firing::Firing;

/// First wait before looking again when the database did not answer.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two looks while the database does not answer.
const RETRY_MOST: Duration = Duration::from_secs(30);

/// A job that runs after others, as the scheduler has it now.
#[derive(Debug, Clone)]
pub struct Dependent {
    /// Its slot (who runs, who waits).
    pub slot: Arc<JobSlot>,
    /// Its definition.
    pub spec: Arc<JobSpec>,
    /// Whether it is held back now (disabled or paused).
    pub held: bool,
}

/// Looks at the parents of `children` and fires those whose condition is met, all in one
/// task: the parents' last words in one statement, which children they fired in another, the
/// claims in one transaction. While the database does not answer it looks again (1 s,
/// doubling to 30 s) until it does or the daemon stops. On a shared database, the children
/// this node may not run (`run_on`) are named to the other nodes when `tell` (they look at
/// them), not looked at here.
pub fn consider(ctx: &Arc<Context>, children: Vec<Dependent>, tell: bool) {
    let (children, elsewhere): (Vec<Dependent>, Vec<Dependent>) =
        children.into_iter().partition(|c| ctx.may_run(&c.spec));
    if tell && !elsewhere.is_empty() {
        tell_others(ctx, &elsewhere);
    }
    if children.is_empty() {
        return;
    }
    let ctx2 = Arc::clone(ctx);
    ctx.tracker.spawn(async move {
        let mut delay = RETRY_FIRST;
        loop {
            match look(&ctx2, &children).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(jobs = children.len(), error = %e, retry_in_ms = delay.as_millis() as u64, "cannot look at the parents' runs of jobs that run after others; looking again");
                }
            }
            tokio::select! {
                () = ctx2.draining.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RETRY_MOST);
        }
    });
}

/// Names `children` to the other nodes of the shared database (in a task; a lost
/// notification is made up by their next start or reload, said in the README).
fn tell_others(ctx: &Arc<Context>, children: &[Dependent]) {
    let Some(cluster) = ctx.cluster.clone() else {
        return;
    };
    let names: Vec<String> = children.iter().map(|c| c.spec.name.clone()).collect();
    ctx.tracker.spawn(async move {
        if let Err(e) = cluster.name_children(&names).await {
            tracing::warn!(jobs = ?names, error = %e, "cannot tell the other nodes to look at jobs this node may not run (run_on)");
        }
    });
}

/// One look at every child: the parents' newest last words, then the claims and firings of
/// the children whose condition they meet.
async fn look(ctx: &Arc<Context>, children: &[Dependent]) -> Result<(), StoreError> {
    let store = &ctx.services.store;
    let mut parents: Vec<String> = children
        .iter()
        .filter_map(|c| c.spec.after.as_ref())
        .flat_map(|a| a.parents.iter().cloned())
        .collect();
    parents.sort_unstable();
    parents.dedup();
    let last = store.last_words(&parents).await?;
    let ids: Vec<i64> = last.values().map(|r| r.run_id).collect();
    let fired = store.fired_children(&ids).await?;
    // A daemon stopping fires nothing more: the next start looks again and fires it.
    if ctx.draining.is_cancelled() {
        return Ok(());
    }
    let mut claims = Vec::new();
    let mut met_children = Vec::new();
    for child in children {
        let Some(after) = &child.spec.after else {
            continue;
        };
        let newest: Vec<Newest> = after
            .parents
            .iter()
            .filter_map(|p| last.get(p))
            .map(|r| {
                let used = fired.contains(&(child.spec.name.clone(), r.run_id))
                    || fired.contains(&(EVERY_CHILD.to_string(), r.run_id));
                (r.clone(), used)
            })
            .collect();
        let Some(causes) = met(after, &newest) else {
            continue;
        };
        let run_id = if child.held { NO_RUN } else { ctx.next_id() };
        claims.push(CauseClaim {
            child: child.spec.name.clone(),
            run_id,
            causes: causes.iter().map(|c| c.run_id).collect(),
        });
        met_children.push((child, causes));
    }
    if claims.is_empty() {
        return Ok(());
    }
    let won = store.claim_causes(&ctx.node, &claims).await?;
    for ((child, causes), (claim, won)) in met_children.into_iter().zip(claims.iter().zip(won)) {
        if !won {
            continue;
        }
        if child.held {
            tracing::info!(job = %child.spec.name, parent_runs = ?claim.causes, "parents' runs passed: the job is disabled or paused");
        } else {
            fire(ctx, &child.slot, &child.spec, causes, claim.run_id);
        }
    }
    Ok(())
}

/// Fires `spec` as run `run_id` for its parents' runs `causes` (claimed), under its overlap
/// policy; its intended time is the end of the newest of them.
pub fn fire(
    ctx: &Arc<Context>,
    slot: &Arc<JobSlot>,
    spec: &Arc<JobSpec>,
    causes: Vec<ParentRun>,
    run_id: i64,
) {
    let Some(at) = causes.iter().map(|c| c.finished_at).max() else {
        return;
    };
    if ctx.draining.is_cancelled() {
        // Claimed but not started: the next start of this node starts it.
        tracing::info!(job = %spec.name, run_id, "the daemon is stopping: this run its parents fired starts at the next start");
        return;
    }
    let mut firing = Firing::new(ctx, slot, spec, at, Trigger::Dependency);
    tracing::info!(job = %spec.name, run_id, parents = ?causes.iter().map(|c| &c.job).collect::<Vec<_>>(), "parents' runs met its condition; firing");
    firing.parents = Arc::from(causes);
    firing.reserved_id = run_id.into();
    dispatch(firing, spec.overlap);
}
