//! The stale-job watch's state in the history database: since when a job is watched, since
//! when it is stale, and its last success. Marking and clearing are conditional updates, so
//! that of several nodes sharing the database one sends each `stale` and `recovered` alert.

use chrono::{DateTime, Utc};

use super::{Backend, Store, StoreError, format_ts, parse_ts};

/// A watched job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleState {
    /// Since when it is watched (the reference for a job that never succeeded).
    pub watched_since: DateTime<Utc>,
    /// Since when it is stale (its alert was sent), if it is.
    pub stale_since: Option<DateTime<Utc>>,
    /// When it last succeeded, if ever (the end of its newest successful run).
    pub last_success: Option<DateTime<Utc>>,
    /// Its newest run.
    pub last_run_id: Option<i64>,
}

type StateRow = (String, Option<String>, Option<String>, Option<i64>);

impl Store {
    /// Starts watching `job` (from `now`, unless it was watched before) and returns its state.
    pub async fn stale_state(
        &self,
        job: &str,
        now: DateTime<Utc>,
    ) -> Result<StaleState, StoreError> {
        let row: StateRow = match &self.0 {
            Backend::Sqlite(s) => {
                sqlx::query(
                    "INSERT INTO stale_watch (job, watched_since) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                )
                .bind(job)
                .bind(format_ts(now))
                .execute(&s.pool)
                .await?;
                sqlx::query_as(
                    "SELECT watched_since, stale_since, \
                     (SELECT max(finished_at) FROM runs WHERE job = ?1 AND status = 'succeeded'), \
                     (SELECT max(id) FROM runs WHERE job = ?1) \
                     FROM stale_watch WHERE job = ?1",
                )
                .bind(job)
                .fetch_one(&s.pool)
                .await?
            }
            Backend::Postgres(p) => {
                sqlx::query(
                    "INSERT INTO stale_watch (job, watched_since) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(job)
                .bind(now)
                .execute(&p.pool)
                .await?;
                sqlx::query_as(
                    "SELECT hg_ts(watched_since), hg_ts(stale_since), \
                     (SELECT hg_ts(max(finished_at)) FROM runs WHERE job = $1 AND status = 'succeeded'), \
                     (SELECT id FROM runs WHERE job = $1 ORDER BY scheduled_for DESC, id DESC LIMIT 1) \
                     FROM stale_watch WHERE job = $1",
                )
                .bind(job)
                .fetch_one(&p.pool)
                .await?
            }
        };
        let (watched, stale, success, run) = row;
        Ok(StaleState {
            watched_since: parse_ts(&watched).unwrap_or(now),
            stale_since: stale.as_deref().and_then(parse_ts),
            last_success: success.as_deref().and_then(parse_ts),
            last_run_id: run,
        })
    }

    /// Marks `job` stale at `now`; whether this call did (not already stale).
    pub async fn mark_stale(&self, job: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = match &self.0 {
            Backend::Sqlite(s) => sqlx::query(
                "UPDATE stale_watch SET stale_since = ?2 WHERE job = ?1 AND stale_since IS NULL",
            )
            .bind(job)
            .bind(format_ts(now))
            .execute(&s.pool)
            .await?
            .rows_affected(),
            Backend::Postgres(p) => sqlx::query(
                "UPDATE stale_watch SET stale_since = $2 WHERE job = $1 AND stale_since IS NULL",
            )
            .bind(job)
            .bind(now)
            .execute(&p.pool)
            .await?
            .rows_affected(),
        };
        Ok(done == 1)
    }

    /// Clears `job`'s stale mark (it succeeded); whether this call did (it was stale).
    pub async fn clear_stale(&self, job: &str) -> Result<bool, StoreError> {
        let sql = match &self.0 {
            Backend::Sqlite(_) => {
                "UPDATE stale_watch SET stale_since = NULL WHERE job = ?1 AND stale_since IS NOT NULL"
            }
            Backend::Postgres(_) => {
                "UPDATE stale_watch SET stale_since = NULL WHERE job = $1 AND stale_since IS NOT NULL"
            }
        };
        let done = match &self.0 {
            Backend::Sqlite(s) => sqlx::query(sql)
                .bind(job)
                .execute(&s.pool)
                .await?
                .rows_affected(),
            Backend::Postgres(p) => sqlx::query(sql)
                .bind(job)
                .execute(&p.pool)
                .await?
                .rows_affected(),
        };
        Ok(done == 1)
    }
}
