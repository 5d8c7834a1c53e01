//! The PostgreSQL history database, shared by several daemons (nodes): the same tables and
//! views as SQLite (migrations in `migrations/postgres`, applied under sqlx's advisory lock so
//! that nodes starting together migrate once), timestamps as `timestamptz`, plus the nodes
//! and the firing claims. Every time comparison that decides ownership uses the database's
//! clock (`now()`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use super::writer::{BatchPlan, ROWS_PER_STATEMENT};
use super::{
    Claim, HistoryFilter, LostRun, NodeBeat, NodeRow, PostgresTarget, Record, RunEnd, RunRow,
    RunStart, RunStatus, StoreError, TriggerOutcome, TriggerState, UploadMark,
};

/// How long a node waits for a connection before a query counts as failed.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on a PostgreSQL history database.
#[derive(Debug, Clone)]
pub(super) struct PgStore {
    pool: PgPool,
    /// The node's own files (spill, instance lock) go beside this path.
    local: PathBuf,
}

/// The runs the CLI reads, timestamps as text (see `hg_ts` in the migration).
const HISTORY: &str = "SELECT id, job, hg_ts(scheduled_for), hg_ts(started_at), \
     hg_ts(finished_at), status, attempt, trigger, exit_code, error, NULL::text, node, \
     lateness_ms, duration_ms, details FROM runs_timed WHERE ($1::text IS NULL OR job = $1) \
     AND ($2::text IS NULL OR status = $2) AND ($3::timestamptz IS NULL OR scheduled_for >= $3) \
     ORDER BY scheduled_for DESC, id DESC LIMIT $4";

const ONE_RUN: &str = "SELECT id, job, hg_ts(scheduled_for), hg_ts(started_at), \
     hg_ts(finished_at), status, attempt, trigger, exit_code, error, output, node, \
     lateness_ms, duration_ms, details FROM runs_timed WHERE id = $1";

impl PgStore {
    /// Connects and migrates.
    pub(super) async fn open(target: &PostgresTarget) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(connect_options(target)?)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self {
            pool,
            local: target.local.clone(),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.local
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }

    /// Marks this node's runs left `running` by its previous life as `abandoned`.
    pub(super) async fn mark_abandoned(
        &self,
        now: DateTime<Utc>,
        node: &str,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE runs SET status = 'abandoned', finished_at = $1, \
             error = 'the daemon stopped without recording the end of this run (crash, SIGKILL or power loss)' \
             WHERE status = 'running' AND node = $2",
        )
        .bind(now)
        .bind(node)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM active_runs WHERE node = $1")
            .bind(node)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Takes the next block of `size` run ids, above every id any node was given.
    pub(super) async fn take_run_ids(&self, size: i64) -> Result<(i64, i64), StoreError> {
        let through: i64 = sqlx::query_scalar(
            "UPDATE daemon_state SET run_ids_reserved_through = \
             greatest(run_ids_reserved_through, (SELECT coalesce(max(id), 0) FROM runs)) + $1 \
             RETURNING run_ids_reserved_through",
        )
        .bind(size)
        .fetch_one(&self.pool)
        .await?;
        Ok((through - size + 1, through))
    }

    pub(super) async fn database_id(&self) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar("SELECT database_id FROM daemon_state")
            .fetch_one(&self.pool)
            .await?)
    }

    pub(super) async fn insert_abandoned(
        &self,
        runs: &[RunStart],
        now: DateTime<Utc>,
        error: &str,
    ) -> Result<u64, StoreError> {
        let mut written = 0;
        let mut tx = self.pool.begin().await?;
        for run in runs {
            let r = sqlx::query(
                "INSERT INTO runs (id, job, scheduled_for, started_at, finished_at, status, \
                 attempt, trigger, error, node, pid) \
                 VALUES ($1, $2, $3, $4, $5, 'abandoned', $6, $7, $8, $9, $10) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(run.id)
            .bind(&run.job)
            .bind(run.scheduled_for)
            .bind(run.started_at)
            .bind(now)
            .bind(i64::from(run.attempt))
            .bind(run.trigger.as_str())
            .bind(error)
            .bind(&run.node)
            .bind(run.pid.map(i64::from))
            .execute(&mut *tx)
            .await?;
            written += r.rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Writes a batch in one transaction (see [`BatchPlan`]). The end of a run is written only
    /// over a row still `running`: a node that comes back after another one marked its runs
    /// `abandoned` writes nothing over them.
    pub(super) async fn write_batch(&self, records: &[Record]) -> Result<(), StoreError> {
        let plan = BatchPlan::of(records);
        let mut tx = self.pool.begin().await?;
        write_plan(&mut tx, plan).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn last_fired(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let rows: Vec<(String, DateTime<Utc>)> =
            sqlx::query_as("SELECT job, last_fired_for FROM job_state")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    pub(super) async fn upload_mark(
        &self,
        mark: &UploadMark,
    ) -> Result<Option<UploadMark>, StoreError> {
        let row: Option<(i64, i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT size, mtime_ns, scheduled_for FROM uploads \
             WHERE job = $1 AND destination = $2 AND key = $3",
        )
        .bind(&mark.job)
        .bind(&mark.destination)
        .bind(&mark.key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(size, mtime_ns, scheduled_for)| {
            Some(UploadMark {
                size: u64::try_from(size).ok()?,
                mtime_ns,
                scheduled_for,
                ..mark.clone()
            })
        }))
    }

    pub(super) async fn set_upload_mark(&self, mark: &UploadMark) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO uploads (job, destination, key, size, mtime_ns, scheduled_for, uploaded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, now()) ON CONFLICT (job, destination, key) DO UPDATE SET \
             size = excluded.size, mtime_ns = excluded.mtime_ns, \
             scheduled_for = excluded.scheduled_for, uploaded_at = excluded.uploaded_at",
        )
        .bind(&mark.job)
        .bind(&mark.destination)
        .bind(&mark.key)
        .bind(i64::try_from(mark.size).unwrap_or(i64::MAX))
        .bind(mark.mtime_ns)
        .bind(mark.scheduled_for)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn request_trigger(&self, job: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO trigger_requests (job, requested_at) VALUES ($1, now()) RETURNING id",
        )
        .bind(job)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Claims pending requests for the jobs this node has (one statement: a request another
    /// node claimed meanwhile is skipped, never claimed twice).
    pub(super) async fn claim_triggers(
        &self,
        node: &str,
        jobs: &[String],
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let mut rows: Vec<(i64, String)> = sqlx::query_as(
            "UPDATE trigger_requests SET claimed_at = now(), claimed_by = $1 \
             WHERE id IN (SELECT id FROM trigger_requests WHERE claimed_at IS NULL \
             AND job = ANY($2) ORDER BY id FOR UPDATE SKIP LOCKED) RETURNING id, job",
        )
        .bind(node)
        .bind(jobs)
        .fetch_all(&self.pool)
        .await?;
        rows.sort();
        Ok(rows)
    }

    pub(super) async fn trigger_state(&self, request: i64) -> Result<TriggerState, StoreError> {
        type Row = (bool, Option<String>, Option<i64>, Option<String>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT claimed_at IS NOT NULL, outcome, run_id, detail FROM trigger_requests WHERE id = $1",
        )
        .bind(request)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map_or_else(TriggerState::default, |(claimed, o, r, d)| TriggerState {
                claimed,
                outcome: o.as_deref().and_then(TriggerOutcome::from_name),
                run_id: r,
                detail: d,
            }),
        )
    }

    pub(super) async fn set_trigger_outcome(
        &self,
        request: i64,
        outcome: TriggerOutcome,
        run_id: Option<i64>,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE trigger_requests SET outcome = $2, run_id = $3, detail = $4 WHERE id = $1",
        )
        .bind(request)
        .bind(outcome.as_str())
        .bind(run_id)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Runs matching `filter`, newest first: by intended time, since ids are handed to the
    /// nodes in blocks and so are ordered per node only.
    pub(super) async fn history(&self, filter: &HistoryFilter) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(HISTORY)
            .bind(filter.job.as_deref())
            .bind(filter.status.map(RunStatus::as_str))
            .bind(filter.since)
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(run_row).collect())
    }

    pub(super) async fn run(&self, id: i64) -> Result<Option<RunRow>, StoreError> {
        let row = sqlx::query(ONE_RUN)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(run_row))
    }

    pub(super) async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM runs WHERE scheduled_for < $1 AND status <> 'running'")
            .bind(before)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "DELETE FROM trigger_requests WHERE requested_at < $1 AND claimed_at IS NOT NULL",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM claims WHERE scheduled_for < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Claims the firing of `job` for `scheduled_for` for `node`, by the database's clock: a
    /// firing not due yet there (this node's clock is ahead) is not claimed.
    pub(super) async fn claim_firing(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        node: &str,
    ) -> Result<Claim, StoreError> {
        let (won, early_ms): (bool, f64) = sqlx::query_as(
            "WITH clock AS (SELECT now() AS db_now), \
             won AS (INSERT INTO claims (job, scheduled_for, node) \
                     SELECT $1, $2, $3 FROM clock WHERE $2 <= db_now + interval '2 milliseconds' \
                     ON CONFLICT DO NOTHING RETURNING true) \
             SELECT EXISTS (SELECT 1 FROM won), \
                    (extract(epoch FROM $2 - db_now) * 1000)::float8 FROM clock",
        )
        .bind(job)
        .bind(scheduled_for)
        .bind(node)
        .fetch_one(&self.pool)
        .await?;
        Ok(if won {
            Claim::Won
        } else if early_ms > 2.0 {
            Claim::Early(Duration::from_secs_f64(early_ms / 1000.0))
        } else {
            Claim::Lost
        })
    }

    /// Takes over from dead nodes (lease run out, by the database's clock): their runs still
    /// `running` become `abandoned`, and the firings they claimed but never recorded get an
    /// `abandoned` row (ids from `ids`). The claims of both are marked reaped, so that a dead
    /// node that comes back writes nothing more for them. Returns what was lost.
    pub(super) async fn reap_dead_nodes(
        &self,
        me: &str,
        ids: &(dyn Fn() -> i64 + Sync),
    ) -> Result<Vec<LostRun>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut lost: Vec<LostRun> = sqlx::query_as(
            "UPDATE runs SET status = 'abandoned', finished_at = now(), \
             error = 'node ' || runs.node || ' stopped answering (its lease ran out at ' || \
             hg_ts(n.lease_until) || '): this run may or may not have finished' \
             FROM nodes n WHERE n.name = runs.node AND n.lease_until < now() \
             AND runs.node <> $1 AND runs.status = 'running' \
             RETURNING runs.id, runs.job, runs.scheduled_for, runs.attempt, runs.node",
        )
        .bind(me)
        .fetch_all(&mut *tx)
        .await?;
        let unrecorded: Vec<(String, DateTime<Utc>, String)> = sqlx::query_as(
            "UPDATE claims c SET reaped_by = $1 FROM nodes n \
             WHERE n.name = c.node AND n.lease_until < now() AND c.node <> $1 \
             AND c.reaped_by IS NULL AND c.claimed_at > n.heartbeat_at - interval '1 minute' \
             AND c.claimed_at < now() - interval '2 seconds' \
             AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.job = c.job \
                             AND r.scheduled_for = c.scheduled_for) \
             RETURNING c.job, c.scheduled_for, c.node",
        )
        .bind(me)
        .fetch_all(&mut *tx)
        .await?;
        for (job, scheduled_for, node) in unrecorded {
            let id = ids();
            sqlx::query(
                "INSERT INTO runs (id, job, scheduled_for, finished_at, status, attempt, trigger, \
                 error, node) VALUES ($1, $2, $3, now(), 'abandoned', 1, 'schedule', \
                 'node ' || $4 || ' claimed this firing and stopped answering before recording its start', $4)",
            )
            .bind(id)
            .bind(&job)
            .bind(scheduled_for)
            .bind(&node)
            .execute(&mut *tx)
            .await?;
            lost.push(LostRun {
                id,
                job,
                scheduled_for,
                attempt: 1,
                node,
            });
        }
        sqlx::query(
            "DELETE FROM active_runs a USING nodes n WHERE n.name = a.node \
             AND n.lease_until < now() AND a.node <> $1",
        )
        .bind(me)
        .execute(&mut *tx)
        .await?;
        for run in &lost {
            sqlx::query("UPDATE claims SET reaped_by = $3 WHERE job = $1 AND scheduled_for = $2")
                .bind(&run.job)
                .bind(run.scheduled_for)
                .bind(me)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(lost)
    }

    /// Takes the firing of a lost run over (`on_node_loss = "retry"`): its claim becomes this
    /// node's, so that this node's next attempt is written.
    pub(super) async fn take_over(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        me: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE claims SET node = $3, reaped_by = NULL WHERE job = $1 AND scheduled_for = $2",
        )
        .bind(job)
        .bind(scheduled_for)
        .bind(me)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes the job's turn across nodes for the firing of `scheduled_for`: `None` when this
    /// node has it now, else who holds it (node, firing).
    pub(super) async fn take_turn(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        me: &str,
        replace: bool,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        let taken: Option<bool> = sqlx::query_scalar(
            "INSERT INTO active_runs (job, node, scheduled_for) VALUES ($1, $2, $3) \
             ON CONFLICT (job) DO NOTHING RETURNING true",
        )
        .bind(job)
        .bind(me)
        .bind(scheduled_for)
        .fetch_optional(&self.pool)
        .await?;
        if taken.is_some() {
            return Ok(None);
        }
        let holder: Option<(String, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE active_runs SET replace_requested = replace_requested OR $2 \
             WHERE job = $1 RETURNING node, scheduled_for",
        )
        .bind(job)
        .bind(replace)
        .fetch_optional(&self.pool)
        .await?;
        // Gone meanwhile: free, but taken by whoever asks next.
        Ok(Some(
            holder.unwrap_or_else(|| (String::new(), scheduled_for)),
        ))
    }

    /// Gives the job's turn back.
    pub(super) async fn give_turn(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        me: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM active_runs WHERE job = $1 AND node = $2 AND scheduled_for = $3")
            .bind(job)
            .bind(me)
            .bind(scheduled_for)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The jobs whose run on this node another node asked to replace.
    pub(super) async fn replace_requests(&self, me: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT job FROM active_runs WHERE node = $1 AND replace_requested")
                .bind(me)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Replaces the digests of the job definitions node `me` has loaded.
    pub(super) async fn set_node_jobs(
        &self,
        me: &str,
        jobs: &[(String, String)],
    ) -> Result<(), StoreError> {
        let (names, digests): (Vec<&str>, Vec<&str>) =
            jobs.iter().map(|(n, d)| (n.as_str(), d.as_str())).unzip();
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM node_jobs WHERE node = $1")
            .bind(me)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO node_jobs (node, job, digest) \
             SELECT $1, job, digest FROM unnest($2::text[], $3::text[]) AS t (job, digest)",
        )
        .bind(me)
        .bind(names)
        .bind(digests)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The jobs whose definition differs between live nodes: each with `node=digest` pairs.
    pub(super) async fn job_drift(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT j.job, array_agg(j.node || '=' || j.digest ORDER BY j.node) \
             FROM node_jobs j JOIN nodes n ON n.name = j.node AND n.lease_until > now() \
             WHERE (SELECT count(DISTINCT config_digest) FROM nodes WHERE lease_until > now()) > 1 \
             GROUP BY j.job HAVING count(DISTINCT j.digest) > 1 ORDER BY j.job",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Ends this node's lease at a clean stop: it shows as stopped at once.
    pub(super) async fn leave(&self, me: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET lease_until = now() WHERE name = $1")
            .bind(me)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Renews this node's lease and records its skew (its clock, sent as `beat.local_now`,
    /// minus the database's); returns the skew in milliseconds.
    pub(super) async fn heartbeat(&self, beat: &NodeBeat<'_>) -> Result<i64, StoreError> {
        let lease_ms = i64::try_from(beat.lease.as_millis()).unwrap_or(i64::MAX);
        let skew: i64 = sqlx::query_scalar(
            "INSERT INTO nodes (name, version, config_digest, started_at, heartbeat_at, \
             lease_until, skew_ms) \
             VALUES ($1, $2, $3, now(), now(), now() + $4 * interval '1 millisecond', \
             round(extract(epoch FROM $5::timestamptz - now()) * 1000)::bigint) \
             ON CONFLICT (name) DO UPDATE SET version = excluded.version, \
             config_digest = excluded.config_digest, heartbeat_at = excluded.heartbeat_at, \
             lease_until = excluded.lease_until, skew_ms = excluded.skew_ms, \
             started_at = CASE WHEN $6 THEN excluded.started_at ELSE nodes.started_at END \
             RETURNING skew_ms",
        )
        .bind(beat.node)
        .bind(beat.version)
        .bind(beat.config_digest)
        .bind(lease_ms)
        .bind(beat.local_now)
        .bind(beat.first)
        .fetch_one(&self.pool)
        .await?;
        Ok(skew)
    }

    /// Every node, with whether its lease still holds by the database's clock.
    pub(super) async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, version, config_digest, hg_ts(started_at), hg_ts(heartbeat_at), \
             hg_ts(lease_until), skew_ms, lease_until > now() FROM nodes ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| NodeRow {
                name: r.get(0),
                version: r.get(1),
                config_digest: r.get(2),
                started_at: r.get(3),
                heartbeat_at: r.get(4),
                lease_until: r.get(5),
                skew_ms: r.get(6),
                alive: r.get(7),
            })
            .collect())
    }
}

/// Writes a batch's plan: new rows in multi-row upserts, ends of earlier rows in
/// `UPDATE ... FROM (VALUES ...)`, each firing time kept at its latest, notifications once.
async fn write_plan(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    plan: BatchPlan<'_>,
) -> Result<(), sqlx::Error> {
    for rows in plan.inserts.chunks(ROWS_PER_STATEMENT) {
        insert_runs(tx, rows).await?;
    }
    for ends in plan.updates.chunks(ROWS_PER_STATEMENT) {
        update_runs(tx, ends).await?;
    }
    let fired: Vec<(&str, DateTime<Utc>)> = plan.fired.into_iter().collect();
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

fn connect_options(target: &PostgresTarget) -> Result<PgConnectOptions, StoreError> {
    let mut options: PgConnectOptions = target.url.parse()?;
    // The server's notices ("relation ... already exists, skipping" while migrating) are
    // not the operator's business.
    options = options
        .application_name("hourglass")
        .options([("client_min_messages", "warning")]);
    if let Some(password) = &target.password {
        options = options.password(password.expose());
    }
    if let Some(mode) = &target.tls {
        let mode: PgSslMode = mode.parse()?;
        options = options.ssl_mode(mode);
    }
    if let Some(ca) = &target.ca_file {
        options = options.ssl_root_cert(ca);
    }
    Ok(options)
}

fn run_row(r: &PgRow) -> RunRow {
    RunRow {
        id: r.get(0),
        job: r.get(1),
        scheduled_for: r.get(2),
        started_at: r.get(3),
        finished_at: r.get(4),
        status: r.get(5),
        attempt: r.get(6),
        trigger: r.get(7),
        exit_code: r.get(8),
        error: r.get(9),
        output: r.get(10),
        node: r.get(11),
        lateness_ms: r.get(12),
        duration_ms: r.get(13),
        details: r
            .get::<Option<String>, _>(14)
            .and_then(|d| serde_json::from_str(&d).ok()),
    }
}
