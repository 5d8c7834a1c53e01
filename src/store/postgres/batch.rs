//! Writing a batch of run records to PostgreSQL: multi-row statements, fenced by the firing
//! claims so that a node taken for dead writes nothing more for firings it no longer owns.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};

use crate::store::writer::{BatchPlan, ROWS_PER_STATEMENT};
use crate::store::{RunEnd, RunStart, RunStatus};

/// Writes a batch's plan: new rows in multi-row upserts, ends of earlier rows in
/// `UPDATE ... FROM (VALUES ...)`, each firing time kept at its latest, notifications once.
pub(super) async fn write_plan(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    plan: BatchPlan<'_>,
) -> Result<(), sqlx::Error> {
    for rows in plan.inserts.chunks(ROWS_PER_STATEMENT) {
        insert_runs(tx, rows).await?;
    }
    for ends in plan.updates.chunks(ROWS_PER_STATEMENT) {
        update_runs(tx, ends).await?;
    }
    // In one order on every node: two nodes' batches never wait for each other's rows.
    let mut fired: Vec<(&str, DateTime<Utc>)> = plan.fired.into_iter().collect();
    fired.sort_unstable();
    for chunk in fired.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO job_state (job, last_fired_for, updated_at) ",
        );
        q.push_values(chunk, |mut row, (job, at)| {
            row.push_bind(job.to_string()).push_bind(*at).push("now()");
        });
        q.push(
            " ON CONFLICT (job) DO UPDATE SET \
             last_fired_for = greatest(job_state.last_fired_for, excluded.last_fired_for), \
             updated_at = excluded.updated_at",
        );
        q.build().persistent(false).execute(&mut **tx).await?;
    }
    if !plan.turns_given.is_empty() {
        give_turns(tx, &plan.turns_given).await?;
    }
    for n in plan.notifications {
        sqlx::query(
            "INSERT INTO notifications (run_id, job, event, channel, sent_at, error) \
             SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM notifications \
             WHERE run_id = $1 AND event = $3 AND channel = $4 AND sent_at = $5)",
        )
        .bind(n.run_id)
        .bind(&n.job)
        .bind(n.event.as_ref())
        .bind(n.channel.as_ref())
        .bind(n.sent_at)
        .bind(n.error.as_deref())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Gives the turns back, in one statement.
async fn give_turns(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    turns: &[(&str, DateTime<Utc>, &str)],
) -> Result<(), sqlx::Error> {
    let mut jobs = Vec::with_capacity(turns.len());
    let mut times = Vec::with_capacity(turns.len());
    let mut nodes = Vec::with_capacity(turns.len());
    for (job, at, node) in turns {
        jobs.push(*job);
        times.push(*at);
        nodes.push(*node);
    }
    sqlx::query(
        "DELETE FROM active_runs a USING unnest($1::text[], $2::timestamptz[], $3::text[]) \
         AS t (job, scheduled_for, node) \
         WHERE a.job = t.job AND a.node = t.node AND a.scheduled_for = t.scheduled_for",
    )
    .bind(jobs)
    .bind(times)
    .bind(nodes)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_runs(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    rows: &[(&RunStart, Option<&RunEnd>)],
) -> Result<(), sqlx::Error> {
    let mut q = QueryBuilder::<Postgres>::new(
        "INSERT INTO runs (id, job, scheduled_for, started_at, finished_at, status, attempt, \
         trigger, exit_code, error, output, node, details, pid) SELECT v.* FROM (",
    );
    q.push_values(rows, |mut row, (s, end)| {
        row.push_bind(s.id)
            .push_bind(s.job.clone())
            .push_bind(s.scheduled_for)
            .push_bind(s.started_at)
            .push_bind(end.map(|e| e.finished_at))
            .push_bind(end.map_or(RunStatus::Running, |e| e.status).as_str())
            .push_bind(i64::from(s.attempt))
            .push_bind(s.trigger.as_str())
            .push_bind(end.and_then(|e| e.exit_code).map(i64::from))
            .push_bind(end.and_then(|e| e.error.clone()))
            .push_bind(end.and_then(|e| e.output.clone()))
            .push_bind(s.node.clone())
            .push_bind(end.and_then(|e| e.details.clone()))
            .push_bind(s.pid.map(i64::from));
    });
    // Fenced: nothing is written for a firing whose claim another node holds or reaped (this
    // node was taken for dead). A row written before (a replayed record) only takes an end it
    // did not have, and only while it is still `running`.
    q.push(
        ") AS v (id, job, scheduled_for, started_at, finished_at, status, attempt, trigger, \
         exit_code, error, output, node, details, pid) \
         WHERE v.trigger = 'manual' OR NOT EXISTS (SELECT 1 FROM claims c \
         WHERE c.job = v.job AND c.scheduled_for = v.scheduled_for \
         AND (c.node <> v.node OR c.reaped_by IS NOT NULL)) \
         ON CONFLICT (id) DO UPDATE SET finished_at = excluded.finished_at, \
         status = excluded.status, exit_code = excluded.exit_code, error = excluded.error, \
         output = excluded.output, details = excluded.details \
         WHERE excluded.status <> 'running' AND runs.status = 'running'",
    );
    q.build().persistent(false).execute(&mut **tx).await?;
    Ok(())
}

async fn update_runs(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    ends: &[&RunEnd],
) -> Result<(), sqlx::Error> {
    let mut q = QueryBuilder::<Postgres>::new(
        "UPDATE runs SET finished_at = v.finished_at, status = v.status, \
         exit_code = v.exit_code, error = v.error, output = v.output, details = v.details FROM (",
    );
    q.push_values(ends, |mut row, e| {
        row.push_bind(e.id)
            .push_bind(e.finished_at)
            .push_bind(e.status.as_str())
            .push_bind(e.exit_code.map(i64::from))
            .push_bind(e.error.clone())
            .push_bind(e.output.clone())
            .push_bind(e.details.clone());
    });
    q.push(
        ") AS v (id, finished_at, status, exit_code, error, output, details) \
         WHERE runs.id = v.id AND runs.status = 'running'",
    );
    q.build().persistent(false).execute(&mut **tx).await?;
    Ok(())
}
