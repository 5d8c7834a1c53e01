//! The PostgreSQL history database, shared by several daemons (nodes): the same tables and
//! views as SQLite (migrations in `migrations/postgres`, applied under sqlx's advisory lock so
//! that nodes starting together migrate once), timestamps as `timestamptz`, plus the nodes
//! and the firing claims ([`cluster`]). Every time comparison that decides ownership uses the
//! database's clock (`now()`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions as _, PgPool};

mod batch;
mod cluster;
mod groups;
mod listen;

pub use cluster::Cluster;
pub use groups::GroupHolder;
pub use listen::{ClusterEvent, ClusterEvents};

use super::writer::BatchPlan;
use super::{HistoryFilter, PostgresTarget, Record, RunRow, RunStatus, StoreError};
use batch::write_plan;

/// How long a query waits for a connection: a burst of claims (10,000 firings due at once)
/// queues for the pool in order. An outage is seen by the heartbeat, on connections of its
/// own and sooner ([`MEMBERS_TIMEOUT`]); claims then fail at once.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the heartbeat waits for a connection of its own: longer means the database is
/// out of reach.
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections per node (3 nodes take 48 of PostgreSQL's default 100).
const MAX_CONNECTIONS: u32 = 16;

/// A handle on a PostgreSQL history database.
#[derive(Debug, Clone)]
pub(in crate::store) struct PgStore {
    pub(in crate::store) pool: PgPool,
    /// For the heartbeat, the lease and taking over from dead nodes.
    members: PgPool,
    /// The node's own files (spill, instance lock) go beside this path.
    local: PathBuf,
}

/// The runs the CLI reads, a page in keyset order (intended time to the millisecond, then
/// id).
const HISTORY: &str = concat!(
    run_columns!("NULL::text"),
    "FROM runs_timed WHERE ($1::text IS NULL OR job = $1) \
     AND ($2::text IS NULL OR status = $2) AND ($3::timestamptz IS NULL OR scheduled_for >= $3) \
     AND ($5::timestamptz IS NULL OR (date_trunc('milliseconds', scheduled_for), id) < ($5, $6)) \
     ORDER BY date_trunc('milliseconds', scheduled_for) DESC, id DESC LIMIT $4"
);

impl PgStore {
    /// Connects and migrates.
    pub(super) async fn open(target: &PostgresTarget) -> Result<Self, StoreError> {
        let options = connect_options(target)?;
        // A slow acquire is an outage's symptom, which the daemon reports once itself (the
        // pool's own WARN comes once per waiting query: hundreds per outage).
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .acquire_slow_level(log::LevelFilter::Debug)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        // The node's own business (heartbeat, lease, taking over) has connections of its own:
        // a burst of claims filling the main pool must not cost the node its lease.
        let members = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(MEMBERS_TIMEOUT)
            .acquire_slow_level(log::LevelFilter::Debug)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            members,
            local: target.local.clone(),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.local
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
        self.members.close().await;
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
        sqlx::query("DELETE FROM group_runs WHERE node = $1")
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

    /// Writes a batch in one transaction (see [`BatchPlan`]). The end of a run is written only
    /// over a row still `running`: a node that comes back after another one marked its runs
    /// `abandoned` writes nothing over them.
    pub(super) async fn write_batch(&self, records: &[Record]) -> Result<(), StoreError> {
        write_plan(&self.pool, BatchPlan::of(records)).await?;
        Ok(())
    }

    /// Claims pending requests for the jobs this node has (one statement: a request another
    /// node claimed meanwhile is skipped, never claimed twice).
    pub(super) async fn claim_triggers(
        &self,
        node: &str,
        jobs: &[String],
    ) -> Result<Vec<(i64, String, bool)>, StoreError> {
        let mut rows: Vec<(i64, String, bool)> = sqlx::query_as(
            "UPDATE trigger_requests SET claimed_at = now(), claimed_by = $1 \
             WHERE id IN (SELECT id FROM trigger_requests WHERE claimed_at IS NULL \
             AND job = ANY($2) ORDER BY id FOR UPDATE SKIP LOCKED) RETURNING id, job, no_deps",
        )
        .bind(node)
        .bind(jobs)
        .fetch_all(&self.pool)
        .await?;
        rows.sort();
        Ok(rows)
    }

    /// Runs matching `filter`, newest first: by intended time, since ids are handed to the
    /// nodes in blocks and so are ordered per node only.
    pub(super) async fn history(&self, filter: &HistoryFilter) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(HISTORY)
            .bind(filter.job.as_deref())
            .bind(filter.status.map(RunStatus::as_str))
            .bind(filter.since)
            .bind(i64::from(filter.limit))
            .bind(filter.after.map(|c| c.scheduled_for))
            .bind(filter.after.map(|c| c.id))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(RunRow::from_columns)
            .collect::<Result<_, _>>()?)
    }
}

fn connect_options(target: &PostgresTarget) -> Result<PgConnectOptions, StoreError> {
    let mut options: PgConnectOptions = target.url.parse()?;
    // The server's notices ("relation ... already exists, skipping" while migrating) are
    // not the operator's business.
    options = options
        .application_name("hourglass")
        .options([("client_min_messages", "warning")])
        .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
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
