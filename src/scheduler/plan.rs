//! What one wake's plan for a job does (see [`crate::due::plan`]): the firings it runs are
//! started, alone or as a catch-up series, and the missed ones it does not run get one
//! `skipped` row per stretch (on a shared database, claimed like a firing, so once).

use std::sync::Arc;

use crate::due::{Missed, Plan};
use crate::job::JobSpec;
use crate::runner::{Context, JobSlot, fire, fire_series, once_claimed, record_newest};
use crate::store::{Record, RunEnd, RunStart, RunStatus, Trigger};

/// Most occurrences counted one by one for a row of missed firings (a cron pattern firing
/// every second, missed for a year, would take seconds to count).
const MAX_COUNTED: u64 = 10_000_000;

/// Starts what a plan runs and records what it does not.
pub(super) fn apply_plan(ctx: &Arc<Context>, slot: &Arc<JobSlot>, spec: &Arc<JobSpec>, p: Plan) {
    for m in &p.not_run {
        record_missed(ctx, spec, *m);
    }
    if let Some(newest) = p.newest {
        record_newest(ctx, &spec.name, newest);
    }
    if p.catch_up.is_empty() {
        for at in p.late {
            fire(ctx, slot, spec, at);
        }
        return;
    }
    tracing::info!(job = %spec.name, count = p.catch_up.len(), first = %p.catch_up[0], "catching up on missed firings");
    let series = p
        .catch_up
        .into_iter()
        .map(|at| (at, Trigger::CatchUp))
        .chain(p.late.into_iter().map(|at| (at, Trigger::Schedule)))
        .collect();
    fire_series(ctx, slot, spec, series);
}

/// Records missed occurrences not run as one `skipped` row: scheduled for the first, with
/// their count and range in `details` and the reason in `error`. Counting a cron pattern's
/// occurrences walks them, so it happens on a blocking thread.
fn record_missed(ctx: &Arc<Context>, spec: &Arc<JobSpec>, m: Missed) {
    // In a cluster the row is claimed like a firing (by its first occurrence), so that one
    // node writes it.
    let spec2 = Arc::clone(spec);
    once_claimed(ctx, spec, m.first, move |ctx| write_missed(ctx, &spec2, m));
}

fn write_missed(ctx: &Arc<Context>, spec: &Arc<JobSpec>, m: Missed) {
    let id = ctx.ids().next();
    let (ctx2, spec) = (Arc::clone(ctx), Arc::clone(spec));
    ctx.tracker().spawn_blocking(move || {
        let count = spec.count_fires(m.first, m.last, MAX_COUNTED);
        let n = count.map_or_else(|| format!("more than {MAX_COUNTED}"), |n| n.to_string());
        let error = format!(
            "{}: {n} firing(s) from {} to {}",
            m.why.reason(&spec),
            crate::store::format_ts(m.first),
            crate::store::format_ts(m.last)
        );
        tracing::info!(job = %spec.name, run_id = id, firings = %n, first = %m.first, last = %m.last, reason = %m.why.reason(&spec), "missed firings not run");
        let details = crate::due::missed_details(count, m.first, m.last);
        let now = ctx2.clock().now();
        ctx2.recorder().record(Record::Complete(
            RunStart {
                id,
                job: spec.name.clone(),
                scheduled_for: m.first,
                started_at: None,
                attempt: 1,
                trigger: Trigger::CatchUp,
                node: ctx2.node().to_string(),
                pid: None,
            },
            RunEnd {
                id,
                job: spec.name.clone(),
                finished_at: now,
                status: RunStatus::Skipped,
                exit_code: None,
                error: Some(error),
                output: None,
                details: Some(details),
                retried: false,
                usage: None,
            },
        ));
    });
}
