//! The SQLite history database: one file, one daemon (the daemon holds its instance lock).
//! WAL mode, `synchronous=NORMAL`, a busy timeout, the file created with mode 0600, migrations
//! (`migrations/sqlite`) applied on open. Timestamps are UTC text (`2026-11-26T04:43:00.123Z`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, SqlitePool};

use super::writer::{SqliteWriter, write_records};
use super::{HistoryFilter, Record, RunRow, RunStatus, StoreError, format_ts};

/// A handle on a SQLite history database.
#[derive(Debug, Clone)]
pub(super) struct SqliteStore {
    pub(super) pool: SqlitePool,
    path: PathBuf,
    options: SqliteConnectOptions,
}

/// How long a writer waits for a lock held by another connection (e.g. a user's `sqlite3`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl SqliteStore {
    /// Opens (creating with mode 0600 if missing) and migrates the database.
    pub(super) async fn open(path: &Path) -> Result<Self, StoreError> {
        create_private(path).map_err(|why| StoreError::Open {
            path: path.to_path_buf(),
            why,
        })?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // One connection stays open: the recorder's own connection, closed after a failed
        // write, is then never the last one, whose close would checkpoint a failing database.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                why: std::io::Error::other(match e {
                    sqlx::Error::Database(d) => d.message().to_string(),
                    e => e.to_string(),
                }),
            })?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            path: path.to_path_buf(),
            options: options.create_if_missing(false),
        })
    }

    /// A connection of its own for the run recorder: see [`SqliteWriter`].
    pub(super) fn writer(&self) -> SqliteWriter {
        SqliteWriter::new(self.options.clone(), self.path.clone())
    }

    /// The database file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the pool, waiting for connections to finish.
    pub(super) async fn close(&self) {
        self.pool.close().await;
    }

    /// Marks runs left `running` by a previous daemon as `abandoned`; returns how many.
    pub(super) async fn mark_abandoned(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE runs SET status = 'abandoned', finished_at = ?1, \
             error = 'the daemon stopped without recording the end of this run (crash, SIGKILL or power loss)' \
             WHERE status = 'running'",
        )
        .bind(format_ts(now))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// The first run id never handed out: above every row and every id a previous daemon
    /// reserved (it may be in a job's environment without a row).
    pub(super) async fn next_run_id(&self) -> Result<i64, StoreError> {
        let max: Option<i64> = sqlx::query_scalar(
            "SELECT max(coalesce((SELECT max(id) FROM runs), 0), \
             coalesce((SELECT run_ids_reserved_through FROM daemon_state), 0))",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(max.unwrap_or(0) + 1)
    }

    /// Reserves run ids up to `through` (never lowers the reservation).
    pub(super) async fn reserve_run_ids(&self, through: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE daemon_state SET run_ids_reserved_through = \
             max(run_ids_reserved_through, ?1)",
        )
        .bind(through)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives back the reserved ids above `last_used`, at a clean stop (every id handed out is
    /// then in a row or the spill file), so that ids go on without a gap.
    pub(super) async fn release_run_ids(&self, last_used: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE daemon_state SET run_ids_reserved_through = ?1")
            .bind(last_used)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Writes a batch of records in one transaction (see [`SqliteWriter::write_batch`]);
    /// a connection whose write failed is closed, never handed back holding a lock.
    pub(super) async fn write_batch(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        match write_records(&mut conn, records).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = conn.detach().close_hard().await;
                Err(e.into())
            }
        }
    }

    /// Claims pending manual trigger requests, oldest first.
    pub(super) async fn claim_triggers(
        &self,
        node: &str,
    ) -> Result<Vec<(i64, String, bool)>, StoreError> {
        let mut rows: Vec<(i64, String, bool)> = sqlx::query_as(
            "UPDATE trigger_requests SET claimed_at = ?1, claimed_by = ?2 \
             WHERE claimed_at IS NULL RETURNING id, job, no_deps",
        )
        .bind(format_ts(Utc::now()))
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        rows.sort();
        Ok(rows)
    }

    /// Runs matching `filter`, newest first.
    pub(super) async fn history(&self, filter: &HistoryFilter) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(concat!(
            run_columns!("NULL AS output"),
            "FROM runs_timed WHERE (?1 IS NULL OR job = ?1) AND (?2 IS NULL OR status = ?2) \
             AND (?3 IS NULL OR scheduled_for >= ?3) AND (?5 IS NULL OR id < ?5) \
             ORDER BY id DESC LIMIT ?4"
        ))
        .bind(filter.job.as_deref())
        .bind(filter.status.map(RunStatus::as_str))
        .bind(filter.since.map(format_ts))
        .bind(i64::from(filter.limit))
        .bind(filter.after.map(|c| c.id))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(RunRow::from_columns)
            .collect::<Result<_, _>>()?)
    }
}

/// Creates the file with mode 0600 when it does not exist (SQLite gives its WAL and shared
/// memory files the same mode).
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn check_constraint_rejects_unknown_status() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("h.db")).await.unwrap();
        let r = sqlx::query(
            "INSERT INTO runs (job, scheduled_for, status, trigger, node) VALUES ('a', 'x', 'bogus', 'schedule', 'n')",
        )
        .execute(&store.pool)
        .await;
        assert!(r.is_err());
    }
}
