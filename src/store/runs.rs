//! Reading runs back: one run with its output, and the newest run of each job (the page of
//! history, whose keyset order differs by backend, is in `sqlite` and `postgres`).

use std::collections::HashMap;

use super::{Backend, RunRow, Store, StoreError};

impl Store {
    /// The newest run of each job, by job name.
    pub async fn last_runs(&self) -> Result<HashMap<String, RunRow>, StoreError> {
        let rows: Vec<RunRow> = on_pool!(self, pool => {
            sqlx::query(concat!(run_columns!("CAST(NULL AS TEXT)"), "FROM last_runs"))
                .fetch_all(pool)
                .await?
                .iter()
                .map(RunRow::from_columns)
                .collect::<Result<_, _>>()?
        });
        Ok(rows.into_iter().map(|r| (r.job.clone(), r)).collect())
    }

    /// One run, with its output.
    pub async fn run(&self, id: i64) -> Result<Option<RunRow>, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query(concat!(run_columns!("output"), "FROM runs_timed WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(RunRow::from_columns)
                .transpose()?
        }))
    }
}
