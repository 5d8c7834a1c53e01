//! Jobs that run after other jobs, in the history database: each parent's newest last word
//! (its newest ended run that no retry follows), the claim of a dependent firing (its causes,
//! `run_causes`: a parent's run fires each child at most once, on one node), the firings a
//! node claimed but never started, and a run's parents and children.

use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Backend, RunStatus, Store, StoreError, Ts};

/// A parent's run, as its child sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRun {
    /// Its run id.
    pub run_id: i64,
    /// The parent job.
    pub job: String,
    /// How it ended.
    pub status: RunStatus,
    /// Its exit code, if it had one.
    pub exit_code: Option<i64>,
    /// When it ended.
    #[serde(serialize_with = "super::records::ts_text")]
    pub finished_at: DateTime<Utc>,
}

/// A parent's run claimed for run id 0 passed while its child was held back (disabled or
/// paused): no run, and no child to show.
/// A run that ran after another (a row of `run_causes` seen from the parent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRun {
    /// The dependent job.
    pub job: String,
    /// The dependent run's id (its firing's first row).
    pub run_id: i64,
    /// Its status, if it has a row yet.
    pub status: Option<RunStatus>,
}

/// A run's parents' runs (those that fired it) and its children (the runs it fired).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The parents' runs that fired it, by job.
    pub parents: Vec<ParentRun>,
    /// The runs it fired, by job.
    pub children: Vec<ChildRun>,
}

/// One run with its lineage (`show`, `GET /v1/runs/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    /// The run's row.
    #[serde(flatten)]
    pub run: super::RunRow,
    /// Its parents and children.
    #[serde(flatten)]
    pub lineage: Lineage,
}

/// A parent's run and whether the child has run after it already.
pub type Newest = (ParentRun, bool);

/// The claim of a dependent firing: the child, the run id it gets (0: none, the child is held
/// back), the parents' runs that fire it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CauseClaim {
    /// The dependent job (`*`: every job, for a run that fires none).
    pub child: String,
    /// The run id its firing gets.
    pub run_id: i64,
    /// The parents' runs.
    pub causes: Vec<i64>,
}

/// The child a run claimed for every child names (`--no-deps`): no job can be called so.
pub const EVERY_CHILD: &str = "*";

/// The run id a parent's run is claimed for when no run follows: its child was held back
/// (disabled, paused), or the run fires no child (`--no-deps`). Rows with it have no run to
/// start and no child to show (`run_id <> 0` below).
pub const NO_RUN: i64 = 0;

/// Most jobs or runs named in one statement.
const CHUNK: usize = 500;

/// `$1, $2, ...` for `n` values, each written by `each` (`"(${i})"` for a `VALUES` row).
fn placeholders(n: usize, each: impl Fn(usize) -> String) -> String {
    (1..=n).map(each).collect::<Vec<_>>().join(", ")
}

/// The newest last word of each of `n` jobs (a `VALUES` list, whose column both backends
/// name `column1`): not running, not skipped, no retry following it; one look per job down
/// the `(job, finished_at)` index, whatever the size of the history.
fn last_words_sql(n: usize) -> String {
    format!(
        "SELECT r.id, r.job, r.status, r.exit_code, r.finished_at FROM runs r WHERE r.id IN \
         (SELECT (SELECT r2.id FROM runs r2 WHERE r2.job = j.column1 AND r2.finished_at IS NOT NULL \
         AND r2.status NOT IN ('running', 'skipped') AND NOT r2.retried \
         ORDER BY r2.finished_at DESC, r2.id DESC LIMIT 1) \
         FROM (VALUES {}) AS j)",
        placeholders(n, |i| format!("(${i})"))
    )
}

/// The parents' runs of a run.
const PARENTS: &str = "SELECT r.id, r.job, r.status, r.exit_code, r.finished_at \
     FROM run_causes c JOIN runs r ON r.id = c.parent_run_id WHERE c.run_id = $1 ORDER BY r.job";

fn parent_run<R>(row: &R) -> Result<ParentRun, sqlx::Error>
where
    R: Row,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> RunStatus: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Ts: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Ok(ParentRun {
        run_id: row.try_get(0)?,
        job: row.try_get(1)?,
        status: row.try_get(2)?,
        exit_code: row.try_get(3)?,
        finished_at: row.try_get::<Ts, _>(4)?.0,
    })
}

impl Store {
    /// Each of `jobs`' newest last word (a job that never ended a run has none): one
    /// statement per 500 jobs.
    pub async fn last_words(
        &self,
        jobs: &[String],
    ) -> Result<HashMap<String, ParentRun>, StoreError> {
        let mut out = HashMap::with_capacity(jobs.len());
        for chunk in jobs.chunks(CHUNK) {
            let sql = last_words_sql(chunk.len());
            let rows = on_pool!(self, pool => {
                // Only numbered placeholders are put in: the values are bound.
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                for job in chunk {
                    q = q.bind(job);
                }
                q.fetch_all(pool).await?.iter().map(parent_run).collect::<Result<Vec<_>, _>>()?
            });
            out.extend(rows.into_iter().map(|r| (r.job.clone(), r)));
        }
        Ok(out)
    }

    /// Which of the runs `run_ids` fired which child already: `(child, parent run id)` (`*`:
    /// a run that fires no child).
    pub async fn fired_children(
        &self,
        run_ids: &[i64],
    ) -> Result<HashSet<(String, i64)>, StoreError> {
        let mut out = HashSet::new();
        for chunk in run_ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT child, parent_run_id FROM run_causes WHERE parent_run_id IN ({})",
                placeholders(chunk.len(), |i| format!("${i}"))
            );
            let rows: Vec<(String, i64)> = on_pool!(self, pool => {
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
                for id in chunk {
                    q = q.bind(id);
                }
                q.fetch_all(pool).await?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    /// Claims each firing of `claims` on `node`, in one transaction, each claim in a savepoint
    /// of its own: whether each was won (`false`: one of its parents' runs fired its child
    /// already, here or on another node). In one order on every node, so that two nodes'
    /// claims never wait for each other's rows the other way round.
    pub async fn claim_causes(
        &self,
        node: &str,
        claims: &[CauseClaim],
    ) -> Result<Vec<bool>, StoreError> {
        let mut order: Vec<usize> = (0..claims.len()).collect();
        order.sort_by(|a, b| {
            (&claims[*a].child, &claims[*a].causes).cmp(&(&claims[*b].child, &claims[*b].causes))
        });
        let mut won = vec![false; claims.len()];
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for i in &order {
                let claim = &claims[*i];
                let mut sorted = claim.causes.clone();
                sorted.sort_unstable();
                let mut sp = sqlx::Acquire::begin(&mut *tx).await?;
                let mut all = true;
                for parent_run_id in &sorted {
                    let done = sqlx::query(
                        "INSERT INTO run_causes (child, parent_run_id, run_id, node) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(&claim.child)
                    .bind(parent_run_id)
                    .bind(claim.run_id)
                    .bind(node)
                    .execute(&mut *sp)
                    .await?
                    .rows_affected();
                    if done == 0 {
                        all = false;
                        break;
                    }
                }
                if all {
                    sp.commit().await?;
                } else {
                    sp.rollback().await?;
                }
                won[*i] = all;
            }
            tx.commit().await?;
        });
        Ok(won)
    }

    /// Marks run `run_id` as firing none of the jobs that run after it (`--no-deps`): claimed
    /// for every child (`*`, a name no job has) and for no run.
    pub async fn fire_no_child(&self, run_id: i64, node: &str) -> Result<(), StoreError> {
        let claim = CauseClaim {
            child: EVERY_CHILD.into(),
            run_id: NO_RUN,
            causes: vec![run_id],
        };
        self.claim_causes(node, &[claim]).await.map(|_| ())
    }

    /// The dependent firings `node` claimed whose run has no row (the daemon died between
    /// the claim and the run's start): `(child, run id, parents' runs)`.
    pub async fn unstarted_dependents(
        &self,
        node: &str,
    ) -> Result<Vec<(String, i64, Vec<ParentRun>)>, StoreError> {
        let claimed: Vec<(String, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT DISTINCT c.child, c.run_id FROM run_causes c WHERE c.node = $1 \
                 AND c.run_id <> 0 AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = c.run_id) ORDER BY c.run_id",
            )
            .bind(node)
            .fetch_all(pool)
            .await?
        });
        let mut out = Vec::with_capacity(claimed.len());
        for (child, run_id) in claimed {
            let parents = self.run_parents(run_id).await?;
            out.push((child, run_id, parents));
        }
        Ok(out)
    }

    /// Run `run_id`'s parents and children.
    pub async fn lineage(&self, run_id: i64) -> Result<Lineage, StoreError> {
        Ok(Lineage {
            parents: self.run_parents(run_id).await?,
            children: self.run_children(run_id).await?,
        })
    }

    /// The parents' runs that fired run `run_id` (none unless its trigger is `dependency`).
    pub async fn run_parents(&self, run_id: i64) -> Result<Vec<ParentRun>, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query(PARENTS)
                .bind(run_id)
                .fetch_all(pool)
                .await?
                .iter()
                .map(parent_run)
                .collect::<Result<Vec<_>, _>>()?
        }))
    }

    /// The runs that run `run_id` fired (its children), by job.
    pub async fn run_children(&self, run_id: i64) -> Result<Vec<ChildRun>, StoreError> {
        let rows: Vec<(String, i64, Option<RunStatus>)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT c.child, c.run_id, r.status FROM run_causes c \
                 LEFT JOIN runs r ON r.id = c.run_id WHERE c.parent_run_id = $1 AND c.run_id <> 0 \
                 ORDER BY c.child",
            )
            .bind(run_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(job, run_id, status)| ChildRun {
                job,
                run_id,
                status,
            })
            .collect())
    }
}
