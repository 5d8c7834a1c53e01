//! Manual trigger requests kept in the history database (what `hourglass trigger` writes when
//! no daemon answers; on a shared database, what any node may take): asked, where each
//! stands, what became of it. Claiming them differs by backend (`sqlite`, `postgres`).

use chrono::Utc;

use super::{Backend, Store, StoreError, TriggerOutcome, TriggerState, Ts};

impl Store {
    /// Queues a manual run of `job` (`no_deps`: one that fires none of the jobs that run
    /// after it); returns the request id.
    pub async fn request_trigger(&self, job: &str, no_deps: bool) -> Result<i64, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar(
                "INSERT INTO trigger_requests (job, requested_at, no_deps) VALUES ($1, $2, $3) \
                 RETURNING id",
            )
            .bind(job)
            .bind(Ts(Utc::now()))
            .bind(no_deps)
            .fetch_one(pool)
            .await?
        }))
    }

    /// Where a trigger request stands.
    pub async fn trigger_state(&self, request: i64) -> Result<TriggerState, StoreError> {
        type Row = (bool, Option<String>, Option<i64>, Option<String>);
        let row: Option<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT claimed_at IS NOT NULL, outcome, run_id, detail \
                 FROM trigger_requests WHERE id = $1",
            )
            .bind(request)
            .fetch_optional(pool)
            .await?
        });
        Ok(
            row.map_or_else(TriggerState::default, |(claimed, o, r, d)| TriggerState {
                claimed,
                outcome: o.as_deref().and_then(TriggerOutcome::from_name),
                run_id: r,
                detail: d,
            }),
        )
    }

    /// Records what became of a trigger request.
    pub async fn set_trigger_outcome(
        &self,
        request: i64,
        outcome: TriggerOutcome,
        run_id: Option<i64>,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE trigger_requests SET outcome = $2, run_id = $3, detail = $4 WHERE id = $1",
            )
            .bind(request)
            .bind(outcome.as_str())
            .bind(run_id)
            .bind(detail)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
