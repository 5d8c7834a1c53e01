//! What the daemon asks of the history at start and on a timer, each statement written once
//! for both backends: the database's own id, the jobs' last firings, rows for the runs a dead
//! daemon left without one, and pruning what is past the retention.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{Backend, RunStart, Store, StoreError, Ts};

impl Store {
    /// This database's own id, which every job carries in `HOURGLASS_DATABASE_ID`.
    pub async fn database_id(&self) -> Result<String, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar("SELECT database_id FROM daemon_state")
                .fetch_one(pool)
                .await?
        }))
    }

    /// The last intended firing time of each job.
    pub async fn last_fired(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let rows: Vec<(String, Ts)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT job, last_fired_for FROM job_state")
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(|(job, at)| (job, at.0)).collect())
    }

    /// Gives rows to runs of a dead daemon found only by their processes (their start was
    /// never written): `abandoned`, finished `now`. Runs that have a row are left alone.
    pub async fn insert_abandoned(
        &self,
        runs: &[RunStart],
        now: DateTime<Utc>,
        error: &str,
    ) -> Result<u64, StoreError> {
        let mut written = 0;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for run in runs {
                let r = sqlx::query(
                    "INSERT INTO runs (id, job, scheduled_for, started_at, finished_at, status, \
                     attempt, trigger, error, node, pid) \
                     VALUES ($1, $2, $3, $4, $5, 'abandoned', $6, $7, $8, $9, $10) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(run.id)
                .bind(&run.job)
                .bind(Ts(run.scheduled_for))
                .bind(run.started_at.map(Ts))
                .bind(Ts(now))
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
        });
        Ok(written)
    }

    /// Deletes finished runs scheduled before `before` and old trigger requests (and, on a
    /// shared database, old claims); returns how many runs went.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let runs = on_pool!(self, pool => {
            let runs =
                sqlx::query("DELETE FROM runs WHERE scheduled_for < $1 AND status <> 'running'")
                    .bind(Ts(before))
                    .execute(pool)
                    .await?;
            sqlx::query(
                "DELETE FROM trigger_requests WHERE requested_at < $1 AND claimed_at IS NOT NULL",
            )
            .bind(Ts(before))
            .execute(pool)
            .await?;
            runs.rows_affected()
        });
        if let Some(cluster) = self.cluster() {
            cluster.prune_claims(before).await?;
        }
        Ok(runs)
    }
}
