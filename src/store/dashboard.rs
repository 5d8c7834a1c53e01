//! What the dashboard reads beyond the history pages: a job's newest runs as dots (status,
//! duration, lateness, CPU time, peak memory), its runs by status over a stretch, the attempts of one firing, a
//! run's notification attempts, and which jobs are stale.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Backend, RunStatus, Store, StoreError, Ts};

/// One run, as a strip or a plot shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunDot {
    /// Its row.
    pub id: i64,
    /// Its firing.
    pub scheduled_for: DateTime<Utc>,
    /// Its status.
    pub status: RunStatus,
    /// Which attempt of the firing.
    pub attempt: i64,
    /// finished_at − started_at.
    pub duration_ms: Option<i64>,
    /// started_at − scheduled_for.
    pub lateness_ms: Option<i64>,
    /// User and system CPU time (command runs).
    pub cpu_us: Option<i64>,
    /// Peak memory (command runs whose peak was measured).
    pub peak_rss_bytes: Option<i64>,
}

/// One notification attempt of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationRow {
    /// `failure`, `recovery` or `success`.
    pub event: String,
    /// `email` or `webhook`.
    pub channel: String,
    /// When it was tried.
    pub sent_at: DateTime<Utc>,
    /// Why it was not sent, if it was not.
    pub error: Option<String>,
}

type DotRow = (
    i64,
    Ts,
    RunStatus,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// The columns of a dot, in [`DotRow`]'s order, of a job's runs (the job's parameter next).
macro_rules! dots_of_job {
    () => {
        "SELECT id, scheduled_for, status, attempt, duration_ms, lateness_ms, \
         cpu_user_us + cpu_system_us, peak_rss_bytes FROM runs_timed WHERE job = "
    };
}

fn dots(rows: Vec<DotRow>) -> Vec<RunDot> {
    rows.into_iter()
        .map(
            |(id, at, status, attempt, duration_ms, lateness_ms, cpu_us, peak_rss_bytes)| RunDot {
                id,
                scheduled_for: at.0,
                status,
                attempt,
                duration_ms,
                lateness_ms,
                cpu_us,
                peak_rss_bytes,
            },
        )
        .collect()
}

impl Store {
    /// The newest `limit` runs of `job`, newest first.
    pub async fn recent_dots(&self, job: &str, limit: u32) -> Result<Vec<RunDot>, StoreError> {
        let rows: Vec<DotRow> = match &self.0 {
            Backend::Sqlite(s) => {
                sqlx::query_as(concat!(dots_of_job!(), "?1 ORDER BY id DESC LIMIT ?2"))
                    .bind(job)
                    .bind(i64::from(limit))
                    .fetch_all(&s.pool)
                    .await?
            }
            Backend::Postgres(p) => {
                sqlx::query_as(concat!(
                    dots_of_job!(),
                    "$1 ORDER BY scheduled_for DESC, id DESC LIMIT $2"
                ))
                .bind(job)
                .bind(i64::from(limit))
                .fetch_all(&p.pool)
                .await?
            }
        };
        Ok(dots(rows))
    }

    /// The attempts of `job`'s firing at `scheduled_for` (to the millisecond), by attempt.
    pub async fn attempts(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
    ) -> Result<Vec<RunDot>, StoreError> {
        let rows: Vec<DotRow> = match &self.0 {
            Backend::Sqlite(s) => {
                sqlx::query_as(concat!(
                    dots_of_job!(),
                    "?1 AND scheduled_for = ?2 ORDER BY attempt, id"
                ))
                .bind(job)
                .bind(Ts(scheduled_for))
                .fetch_all(&s.pool)
                .await?
            }
            Backend::Postgres(p) => {
                sqlx::query_as(concat!(
                    dots_of_job!(),
                    "$1 AND date_trunc('milliseconds', scheduled_for) = $2 ORDER BY attempt, id"
                ))
                .bind(job)
                .bind(scheduled_for)
                .fetch_all(&p.pool)
                .await?
            }
        };
        Ok(dots(rows))
    }

    /// How many of `job`'s runs fired since `since` ended in each status (`running` too).
    pub async fn status_counts(
        &self,
        job: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<(RunStatus, i64)>, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT status, count(*) FROM runs WHERE job = $1 AND scheduled_for >= $2 \
                 GROUP BY status ORDER BY status",
            )
            .bind(job)
            .bind(Ts(since))
            .fetch_all(pool)
            .await?
        }))
    }

    /// How many runs of `job` the history holds.
    pub async fn run_count(&self, job: &str) -> Result<i64, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar("SELECT count(*) FROM runs WHERE job = $1")
                .bind(job)
                .fetch_one(pool)
                .await?
        }))
    }

    /// The notification attempts made for run `id`, oldest first.
    pub async fn notifications(&self, id: i64) -> Result<Vec<NotificationRow>, StoreError> {
        type Row = (String, String, Ts, Option<String>);
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT event, channel, sent_at, error FROM notifications \
                 WHERE run_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(event, channel, sent_at, error)| NotificationRow {
                event,
                channel,
                sent_at: sent_at.0,
                error,
            })
            .collect())
    }

    /// The jobs whose stale alert was sent and that have not succeeded since.
    pub async fn stale_jobs(&self) -> Result<HashSet<String>, StoreError> {
        let jobs: Vec<String> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT job FROM stale_watch WHERE stale_since IS NOT NULL")
                .fetch_all(pool)
                .await?
        });
        Ok(jobs.into_iter().collect())
    }
}
