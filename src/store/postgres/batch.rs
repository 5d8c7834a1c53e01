//! Writing a batch of run records to PostgreSQL in one statement: new rows, ends of earlier
//! rows, each job's latest firing time and the turns given back go as arrays (`unnest`), so a
//! batch of any size is one round trip and one transaction (notifications, rare, add theirs).
//! New rows are fenced by the firing claims, so that a node taken for dead writes nothing more
//! for firings it no longer owns.

use chrono::{DateTime, Utc};
use sqlx::Postgres;

use crate::store::writer::BatchPlan;
use crate::store::{RunEnd, RunStart, RunStatus};

/// The batch: every part a data-modifying `WITH` (each runs to completion, on one snapshot).
/// Rows written before (a replayed record) only take an end they did not have, and only
/// while still `running`. Firing times and turns go in one order on every node, so that two
/// nodes' batches never wait for each other's rows the other way round.
const BATCH: &str = "WITH inserted AS (INSERT INTO runs (id, job, scheduled_for, started_at, \
     finished_at, status, attempt, trigger, exit_code, error, output, node, details, pid, \
     retried, cpu_user_us, cpu_system_us, peak_rss_bytes, blocks_read, blocks_written, \
     voluntary_switches, involuntary_switches) \
     SELECT v.* FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[], \
     $5::timestamptz[], $6::text[], $7::bigint[], $8::text[], $9::bigint[], $10::text[], \
     $11::text[], $12::text[], $13::text[], $14::bigint[], $27::boolean[], $29::bigint[], \
     $30::bigint[], $31::bigint[], $32::bigint[], $33::bigint[], $34::bigint[], $35::bigint[]) \
     AS v (id, job, scheduled_for, started_at, finished_at, status, attempt, trigger, \
     exit_code, error, output, node, details, pid, retried, cpu_user_us, cpu_system_us, \
     peak_rss_bytes, blocks_read, blocks_written, voluntary_switches, involuntary_switches) \
     WHERE v.trigger IN ('manual', 'dependency') OR NOT EXISTS (SELECT 1 FROM claims c \
     WHERE c.job = v.job AND c.scheduled_for = v.scheduled_for \
     AND (c.node <> v.node OR c.reaped_by IS NOT NULL)) \
     ON CONFLICT (id) DO UPDATE SET finished_at = excluded.finished_at, \
     status = excluded.status, exit_code = excluded.exit_code, error = excluded.error, \
     output = excluded.output, details = excluded.details, retried = excluded.retried, \
     cpu_user_us = excluded.cpu_user_us, cpu_system_us = excluded.cpu_system_us, \
     peak_rss_bytes = excluded.peak_rss_bytes, blocks_read = excluded.blocks_read, \
     blocks_written = excluded.blocks_written, voluntary_switches = excluded.voluntary_switches, \
     involuntary_switches = excluded.involuntary_switches \
     WHERE excluded.status <> 'running' AND runs.status = 'running' RETURNING 1), \
     ended AS (UPDATE runs SET finished_at = e.finished_at, status = e.status, \
     exit_code = e.exit_code, error = e.error, output = e.output, details = e.details, \
     retried = e.retried, cpu_user_us = e.cpu_user_us, cpu_system_us = e.cpu_system_us, \
     peak_rss_bytes = e.peak_rss_bytes, blocks_read = e.blocks_read, \
     blocks_written = e.blocks_written, voluntary_switches = e.voluntary_switches, \
     involuntary_switches = e.involuntary_switches \
     FROM unnest($15::bigint[], $16::timestamptz[], $17::text[], $18::bigint[], $19::text[], \
     $20::text[], $21::text[], $28::boolean[], $36::bigint[], $37::bigint[], $38::bigint[], \
     $39::bigint[], $40::bigint[], $41::bigint[], $42::bigint[]) \
     AS e (id, finished_at, status, exit_code, error, output, details, retried, cpu_user_us, \
     cpu_system_us, peak_rss_bytes, blocks_read, blocks_written, voluntary_switches, \
     involuntary_switches) \
     WHERE runs.id = e.id AND runs.status = 'running' RETURNING 1), \
     fired AS (INSERT INTO job_state (job, last_fired_for, updated_at) \
     SELECT f.job, f.at, now() FROM unnest($22::text[], $23::timestamptz[]) AS f (job, at) \
     ORDER BY f.job ON CONFLICT (job) DO UPDATE SET \
     last_fired_for = greatest(job_state.last_fired_for, excluded.last_fired_for), \
     updated_at = excluded.updated_at RETURNING 1), \
     given AS (DELETE FROM active_runs a \
     USING unnest($24::text[], $25::timestamptz[], $26::text[]) AS t (job, scheduled_for, node) \
     WHERE a.job = t.job AND a.node = t.node AND a.scheduled_for = t.scheduled_for RETURNING 1) \
     SELECT 1";

/// Writes a batch's plan (in a transaction when it has notifications; else its one statement
/// is its own).
pub(super) async fn write_plan(
    pool: &sqlx::PgPool,
    plan: BatchPlan<'_>,
) -> Result<(), sqlx::Error> {
    if plan.notifications.is_empty() {
        return batch_statement(&plan).execute(pool).await.map(|_| ());
    }
    let mut tx = pool.begin().await?;
    batch_statement(&plan).execute(&mut *tx).await?;
    for n in &plan.notifications {
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
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// The columns of the new rows, each an array.
#[derive(Default)]
struct NewRows<'a> {
    id: Vec<i64>,
    job: Vec<&'a str>,
    scheduled_for: Vec<DateTime<Utc>>,
    started_at: Vec<Option<DateTime<Utc>>>,
    finished_at: Vec<Option<DateTime<Utc>>>,
    status: Vec<&'static str>,
    attempt: Vec<i64>,
    trigger: Vec<&'static str>,
    exit_code: Vec<Option<i64>>,
    error: Vec<Option<&'a str>>,
    output: Vec<Option<&'a str>>,
    node: Vec<&'a str>,
    details: Vec<Option<&'a str>>,
    pid: Vec<Option<i64>>,
    retried: Vec<bool>,
    usage: UsageColumns,
}

/// The usage columns of a batch's rows, each an array (in their stored order).
#[derive(Default)]
struct UsageColumns([Vec<Option<i64>>; 7]);

impl UsageColumns {
    fn push(&mut self, usage: Option<crate::store::Usage>) {
        let values = usage.map_or([None; 7], |u| u.columns());
        for (column, value) in self.0.iter_mut().zip(values) {
            column.push(value);
        }
    }
}

impl<'a> NewRows<'a> {
    fn push(&mut self, s: &'a RunStart, end: Option<&'a RunEnd>) {
        self.id.push(s.id);
        self.job.push(&s.job);
        self.scheduled_for.push(s.scheduled_for);
        self.started_at.push(s.started_at);
        self.finished_at.push(end.map(|e| e.finished_at));
        self.status
            .push(end.map_or(RunStatus::Running, |e| e.status).as_str());
        self.attempt.push(i64::from(s.attempt));
        self.trigger.push(s.trigger.as_str());
        self.exit_code
            .push(end.and_then(|e| e.exit_code).map(i64::from));
        self.error.push(end.and_then(|e| e.error.as_deref()));
        self.output.push(end.and_then(|e| e.output.as_deref()));
        self.node.push(&s.node);
        self.details.push(end.and_then(|e| e.details.as_deref()));
        self.pid.push(s.pid.map(i64::from));
        self.retried.push(end.is_some_and(|e| e.retried));
        self.usage.push(end.and_then(|e| e.usage));
    }
}

/// The columns of the ends of earlier rows, each an array.
#[derive(Default)]
struct Ends<'a> {
    id: Vec<i64>,
    finished_at: Vec<DateTime<Utc>>,
    status: Vec<&'static str>,
    exit_code: Vec<Option<i64>>,
    error: Vec<Option<&'a str>>,
    output: Vec<Option<&'a str>>,
    details: Vec<Option<&'a str>>,
    retried: Vec<bool>,
    usage: UsageColumns,
}

fn batch_statement<'q>(
    plan: &'q BatchPlan<'q>,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let mut rows = NewRows::default();
    for (s, end) in &plan.inserts {
        rows.push(s, *end);
    }
    let mut ends = Ends::default();
    for e in &plan.updates {
        ends.id.push(e.id);
        ends.finished_at.push(e.finished_at);
        ends.status.push(e.status.as_str());
        ends.exit_code.push(e.exit_code.map(i64::from));
        ends.error.push(e.error.as_deref());
        ends.output.push(e.output.as_deref());
        ends.details.push(e.details.as_deref());
        ends.retried.push(e.retried);
        ends.usage.push(e.usage);
    }
    let mut fired: Vec<(&str, DateTime<Utc>)> = plan.fired.iter().map(|(j, t)| (*j, *t)).collect();
    fired.sort_unstable();
    let (fired_jobs, fired_at): (Vec<&str>, Vec<DateTime<Utc>>) = fired.into_iter().unzip();
    let mut turns = plan.turns_given.clone();
    turns.sort_unstable();
    let mut given = (Vec::new(), Vec::new(), Vec::new());
    for (job, at, node) in turns {
        given.0.push(job);
        given.1.push(at);
        given.2.push(node);
    }
    let mut q = sqlx::query(BATCH)
        .bind(rows.id)
        .bind(rows.job)
        .bind(rows.scheduled_for)
        .bind(rows.started_at)
        .bind(rows.finished_at)
        .bind(rows.status)
        .bind(rows.attempt)
        .bind(rows.trigger)
        .bind(rows.exit_code)
        .bind(rows.error)
        .bind(rows.output)
        .bind(rows.node)
        .bind(rows.details)
        .bind(rows.pid)
        .bind(ends.id)
        .bind(ends.finished_at)
        .bind(ends.status)
        .bind(ends.exit_code)
        .bind(ends.error)
        .bind(ends.output)
        .bind(ends.details)
        .bind(fired_jobs)
        .bind(fired_at)
        .bind(given.0)
        .bind(given.1)
        .bind(given.2)
        .bind(rows.retried)
        .bind(ends.retried);
    for column in rows.usage.0.into_iter().chain(ends.usage.0) {
        q = q.bind(column);
    }
    q
}
