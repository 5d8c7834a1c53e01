//! The stale-job watch's state in the history database: since when a job is watched, since
//! when it is stale, and its last success. Marking and clearing are conditional updates, so
//! that of several nodes sharing the database one sends each `stale` and `recovered` alert.

use chrono::{DateTime, Utc};

use super::{Backend, Store, StoreError, Ts};

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

type StateRow = (Ts, Option<Ts>, Option<Ts>, Option<i64>);

impl Store {
    /// Starts watching `job` (from `now`, unless it was watched before) and returns its state.
    pub async fn stale_state(
        &self,
        job: &str,
        now: DateTime<Utc>,
    ) -> Result<StaleState, StoreError> {
        let (watched, stale, success, run): StateRow = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO stale_watch (job, watched_since) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(job)
            .bind(Ts(now))
            .execute(pool)
            .await?;
            // The newest run by intended time (on a shared database ids come in blocks).
            sqlx::query_as(
                "SELECT watched_since, stale_since, \
                 (SELECT max(finished_at) FROM runs WHERE job = $1 AND status = 'succeeded'), \
                 (SELECT id FROM runs WHERE job = $1 ORDER BY scheduled_for DESC, id DESC LIMIT 1) \
                 FROM stale_watch WHERE job = $1",
            )
            .bind(job)
            .fetch_one(pool)
            .await?
        });
        Ok(StaleState {
            watched_since: watched.0,
            stale_since: stale.map(|t| t.0),
            last_success: success.map(|t| t.0),
            last_run_id: run,
        })
    }

    /// Marks `job` stale at `now`; whether this call did (not already stale).
    pub async fn mark_stale(&self, job: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE stale_watch SET stale_since = $2 WHERE job = $1 AND stale_since IS NULL",
            )
            .bind(job)
            .bind(Ts(now))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Clears `job`'s stale mark (it succeeded); whether this call did (it was stale).
    pub async fn clear_stale(&self, job: &str) -> Result<bool, StoreError> {
        let done = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE stale_watch SET stale_since = NULL WHERE job = $1 AND stale_since IS NOT NULL",
            )
            .bind(job)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }
}
