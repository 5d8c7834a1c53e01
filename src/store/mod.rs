//! The history database (SQLite through sqlx): all SQL lives here. WAL mode,
//! `synchronous=NORMAL`, a busy timeout, the file created with mode 0600, migrations applied on
//! open. Timestamps are UTC text (`2026-11-26T04:43:00.123Z`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, Row, SqlitePool};

mod records;
mod writer;

pub use records::*;
pub use writer::HistoryWriter;
use writer::write_records;

/// Errors from the history database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be created or opened.
    #[error("cannot open history database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A query failed.
    #[error("history database: {0}")]
    Sql(#[from] sqlx::Error),
    /// A migration failed.
    #[error("history database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The file at the database's path is gone or is another file than the one opened: what
    /// was written may have gone into a deleted file.
    #[error("the history database file {0} was removed or replaced")]
    Replaced(PathBuf),
}

/// Formats a timestamp the way the database stores it.
pub fn format_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a stored timestamp.
pub fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A handle on the history database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
    options: SqliteConnectOptions,
}

/// How long a writer waits for a lock held by another connection (e.g. a user's `sqlite3`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// Opens (creating with mode 0600 if missing) and migrates the database.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        create_private(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
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
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self {
            pool,
            path: path.to_path_buf(),
            options: options.create_if_missing(false),
        })
    }

    /// A throw-away database, opened on a current-thread runtime of its own (returned with
    /// it; the pool lives on it) in a thread of its own: for tests that share one database
    /// between runtimes, such as a paused clock, which a database opened on it would move off
    /// the timer's millisecond grid. Its folder is removed at once; the open database lives
    /// on, unlinked.
    ///
    /// # Errors
    /// When the runtime, the folder or the database cannot be made.
    #[doc(hidden)]
    pub fn scratch() -> Result<(tokio::runtime::Runtime, Self), StoreError> {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("hourglass-scratch-{}-{n}", std::process::id()));
        let path = dir.join("history.db");
        let open = move || {
            let io = |source| StoreError::Open {
                path: path.clone(),
                source,
            };
            std::fs::create_dir_all(&dir).map_err(io)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io)?;
            let store = rt.block_on(Self::open(&path));
            std::fs::remove_dir_all(&dir).map_err(io)?;
            Ok((rt, store?))
        };
        std::thread::spawn(open).join().unwrap_or_else(|_| {
            Err(StoreError::Open {
                path: std::env::temp_dir(),
                source: std::io::Error::other("the thread opening it panicked"),
            })
        })
    }

    /// A connection of its own for the run recorder: see [`HistoryWriter`].
    pub fn writer(&self) -> HistoryWriter {
        HistoryWriter::new(self.options.clone(), self.path.clone())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Marks runs left `running` by a previous daemon as `abandoned`; returns how many.
    pub async fn mark_abandoned(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
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
    pub async fn next_run_id(&self) -> Result<i64, StoreError> {
        let max: Option<i64> = sqlx::query_scalar(
            "SELECT max(coalesce((SELECT max(id) FROM runs), 0), \
             coalesce((SELECT run_ids_reserved_through FROM daemon_state), 0))",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(max.unwrap_or(0) + 1)
    }

    /// Reserves run ids up to `through` (never lowers the reservation).
    pub async fn reserve_run_ids(&self, through: i64) -> Result<(), StoreError> {
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
    pub async fn release_run_ids(&self, last_used: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE daemon_state SET run_ids_reserved_through = ?1")
            .bind(last_used)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// This database's own id, which every job carries in `HOURGLASS_DATABASE_ID`.
    pub async fn database_id(&self) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar("SELECT database_id FROM daemon_state")
            .fetch_one(&self.pool)
            .await?)
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
        let mut tx = self.pool.begin().await?;
        for run in runs {
            let r = sqlx::query(
                "INSERT INTO runs (id, job, scheduled_for, started_at, finished_at, status, \
                 attempt, trigger, error, node, pid) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'abandoned', ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT(id) DO NOTHING",
            )
            .bind(run.id)
            .bind(&run.job)
            .bind(format_ts(run.scheduled_for))
            .bind(run.started_at.map(format_ts))
            .bind(format_ts(now))
            .bind(run.attempt)
            .bind(run.trigger.as_str())
            .bind(error)
            .bind(&run.node)
            .bind(run.pid)
            .execute(&mut *tx)
            .await?;
            written += r.rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Writes a batch of records in one transaction (see [`HistoryWriter::write_batch`]);
    /// a connection whose write failed is closed, never handed back holding a lock.
    pub async fn write_batch(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        match write_records(&mut conn, records).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = conn.detach().close_hard().await;
                Err(e.into())
            }
        }
    }

    /// The last intended firing time of each job.
    pub async fn last_fired(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let rows = sqlx::query("SELECT job, last_fired_for FROM job_state")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let job: String = r.get(0);
                let at: String = r.get(1);
                parse_ts(&at).map(|t| (job, t))
            })
            .collect())
    }

    /// The last upload of `mark`'s file (same job, destination and key), if any.
    pub async fn upload_mark(&self, mark: &UploadMark) -> Result<Option<UploadMark>, StoreError> {
        let row: Option<(i64, i64, String)> = sqlx::query_as(
            "SELECT size, mtime_ns, scheduled_for FROM uploads \
             WHERE job = ?1 AND destination = ?2 AND key = ?3",
        )
        .bind(&mark.job)
        .bind(&mark.destination)
        .bind(&mark.key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(size, mtime_ns, at)| {
            Some(UploadMark {
                size: u64::try_from(size).ok()?,
                mtime_ns,
                scheduled_for: parse_ts(&at)?,
                ..mark.clone()
            })
        }))
    }

    /// Remembers an upload.
    pub async fn set_upload_mark(&self, mark: &UploadMark) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO uploads (job, destination, key, size, mtime_ns, scheduled_for, uploaded_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (job, destination, key) DO UPDATE SET \
             size = excluded.size, mtime_ns = excluded.mtime_ns, \
             scheduled_for = excluded.scheduled_for, uploaded_at = excluded.uploaded_at",
        )
        .bind(&mark.job)
        .bind(&mark.destination)
        .bind(&mark.key)
        .bind(i64::try_from(mark.size).unwrap_or(i64::MAX))
        .bind(mark.mtime_ns)
        .bind(format_ts(mark.scheduled_for))
        .bind(format_ts(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Queues a manual run of `job`; returns the request id.
    pub async fn request_trigger(&self, job: &str) -> Result<i64, StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO trigger_requests (job, requested_at) VALUES (?1, ?2) RETURNING id",
        )
        .bind(job)
        .bind(format_ts(Utc::now()))
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// Claims pending manual trigger requests, oldest first.
    pub async fn claim_triggers(&self, node: &str) -> Result<Vec<(i64, String)>, StoreError> {
        let mut rows: Vec<(i64, String)> = sqlx::query_as(
            "UPDATE trigger_requests SET claimed_at = ?1, claimed_by = ?2 \
             WHERE claimed_at IS NULL RETURNING id, job",
        )
        .bind(format_ts(Utc::now()))
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        rows.sort();
        Ok(rows)
    }

    /// Where a trigger request stands.
    pub async fn trigger_state(&self, request: i64) -> Result<TriggerState, StoreError> {
        type Row = (Option<String>, Option<String>, Option<i64>, Option<String>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT claimed_at, outcome, run_id, detail FROM trigger_requests WHERE id = ?1",
        )
        .bind(request)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map_or_else(TriggerState::default, |(c, o, r, d)| TriggerState {
                claimed: c.is_some(),
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
        sqlx::query(
            "UPDATE trigger_requests SET outcome = ?2, run_id = ?3, detail = ?4 WHERE id = ?1",
        )
        .bind(request)
        .bind(outcome.as_str())
        .bind(run_id)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Runs matching `filter`, newest first.
    pub async fn history(&self, filter: &HistoryFilter) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, job, scheduled_for, started_at, finished_at, status, attempt, trigger, \
             exit_code, error, NULL AS output, node, lateness_ms, duration_ms, details FROM runs_timed \
             WHERE (?1 IS NULL OR job = ?1) AND (?2 IS NULL OR status = ?2) \
             AND (?3 IS NULL OR scheduled_for >= ?3) \
             ORDER BY id DESC LIMIT ?4",
        )
        .bind(filter.job.as_deref())
        .bind(filter.status.map(RunStatus::as_str))
        .bind(filter.since.map(format_ts))
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(run_row).collect())
    }

    /// One run, with its output.
    pub async fn run(&self, id: i64) -> Result<Option<RunRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, job, scheduled_for, started_at, finished_at, status, attempt, trigger, \
             exit_code, error, output, node, lateness_ms, duration_ms, details FROM runs_timed WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(run_row))
    }

    /// Deletes finished runs scheduled before `before` and old trigger requests; returns how
    /// many runs went.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let cut = format_ts(before);
        let r = sqlx::query("DELETE FROM runs WHERE scheduled_for < ?1 AND status <> 'running'")
            .bind(&cut)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "DELETE FROM trigger_requests WHERE requested_at < ?1 AND claimed_at IS NOT NULL",
        )
        .bind(&cut)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}

fn run_row(r: &sqlx::sqlite::SqliteRow) -> RunRow {
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

    fn start(id: i64, job: &str, at: &str) -> RunStart {
        RunStart {
            id,
            job: job.into(),
            scheduled_for: parse_ts(at).unwrap(),
            started_at: Some(parse_ts(at).unwrap() + chrono::TimeDelta::milliseconds(3)),
            attempt: 1,
            trigger: Trigger::Schedule,
            node: "n1".into(),
            pid: None,
        }
    }

    fn end(id: i64, status: RunStatus, output: &str) -> RunEnd {
        RunEnd {
            id,
            finished_at: parse_ts("2026-01-01T00:01:00.000Z").unwrap(),
            status,
            exit_code: Some(i32::from(status != RunStatus::Succeeded)),
            error: None,
            output: Some(output.into()),
            details: None,
        }
    }

    #[tokio::test]
    async fn batches_merge_starts_and_ends_and_update_earlier_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.db")).await.unwrap();
        let at = |s: &str| parse_ts(s).unwrap();
        let fired = |t: &str| Record::Fired {
            job: "a".into(),
            scheduled_for: at(t),
        };
        // 600 runs (more than one multi-row statement); the even ones end in this batch.
        let mut first = vec![fired("2026-01-01T00:00:05Z"), fired("2026-01-01T00:00:03Z")];
        for id in 1..=600 {
            let mut s = start(id, "a", "2026-01-01T00:00:00.000Z");
            s.pid = Some(1000);
            first.push(Record::Started(s));
            if id % 2 == 0 {
                first.push(Record::Finished(end(id, RunStatus::Succeeded, "even")));
            }
        }
        store.write_batch(&first).await.unwrap();
        assert_eq!(store.run(2).await.unwrap().unwrap().status, "succeeded");
        assert_eq!(store.run(3).await.unwrap().unwrap().status, "running");
        assert_eq!(
            store.last_fired().await.unwrap()["a"],
            at("2026-01-01T00:00:05Z")
        );
        // The odd ones end in the next batch, beside a notification and an older firing.
        let mut second: Vec<Record> = (1..=600)
            .filter(|id| id % 2 == 1)
            .map(|id| Record::Finished(end(id, RunStatus::Failed, "odd")))
            .collect();
        second.push(Record::Notification(NotificationRecord {
            run_id: 3,
            job: "a".into(),
            event: "failure".into(),
            channel: "webhook".into(),
            sent_at: at("2026-01-01T00:01:01Z"),
            error: None,
        }));
        second.push(fired("2026-01-01T00:00:04Z"));
        store.write_batch(&second).await.unwrap();
        let rows = store
            .history(&HistoryFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rows.len(), 600);
        for r in &rows {
            let r = store.run(r.id).await.unwrap().unwrap();
            let (status, output) = if r.id % 2 == 0 {
                ("succeeded", "even")
            } else {
                ("failed", "odd")
            };
            assert_eq!(
                (r.status.as_str(), r.output.as_deref()),
                (status, Some(output))
            );
            assert_eq!(r.finished_at.as_deref(), Some("2026-01-01T00:01:00.000Z"));
        }
        assert_eq!(
            store.last_fired().await.unwrap()["a"],
            at("2026-01-01T00:00:05Z")
        );
        // No run is left `running`.
        assert_eq!(store.mark_abandoned(Utc::now()).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn records_round_trip_and_crash_leftovers_are_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let store = Store::open(&path).await.unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(store.next_run_id().await.unwrap(), 1);
        store
            .write_batch(&[
                Record::Started(start(1, "a", "2026-01-01T00:00:00.000Z")),
                Record::Started(start(2, "b", "2026-01-01T00:00:01.000Z")),
                Record::Finished(RunEnd {
                    id: 1,
                    finished_at: parse_ts("2026-01-01T00:00:02.003Z").unwrap(),
                    status: RunStatus::Succeeded,
                    exit_code: Some(0),
                    error: None,
                    output: Some("hi\n".into()),
                    details: Some(r#"{"k":1}"#.into()),
                }),
                Record::Fired {
                    job: "a".into(),
                    scheduled_for: parse_ts("2026-01-01T00:00:00Z").unwrap(),
                },
            ])
            .await
            .unwrap();
        let one = store.run(1).await.unwrap().unwrap();
        assert_eq!(one.status, "succeeded");
        assert_eq!(one.lateness_ms, Some(3));
        assert_eq!(one.duration_ms, Some(2000));
        assert_eq!(one.output.as_deref(), Some("hi\n"));
        assert_eq!(one.details, Some(serde_json::json!({"k": 1})));
        assert_eq!(store.next_run_id().await.unwrap(), 3);
        assert_eq!(store.mark_abandoned(Utc::now()).await.unwrap(), 1);
        assert_eq!(store.run(2).await.unwrap().unwrap().status, "abandoned");
        let fired = store.last_fired().await.unwrap();
        assert_eq!(fired["a"], parse_ts("2026-01-01T00:00:00Z").unwrap());
        let failed = store
            .history(&HistoryFilter {
                status: Some(RunStatus::Abandoned),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].job, "b");
        let req = store.request_trigger("a").await.unwrap();
        assert_eq!(
            store.trigger_state(req).await.unwrap(),
            TriggerState::default()
        );
        assert_eq!(
            store.claim_triggers("n1").await.unwrap(),
            [(req, "a".into())]
        );
        assert!(store.claim_triggers("n1").await.unwrap().is_empty());
        assert!(store.trigger_state(req).await.unwrap().claimed);
        store
            .set_trigger_outcome(req, TriggerOutcome::Skipped, Some(7), Some("why"))
            .await
            .unwrap();
        assert_eq!(
            store.trigger_state(req).await.unwrap(),
            TriggerState {
                claimed: true,
                outcome: Some(TriggerOutcome::Skipped),
                run_id: Some(7),
                detail: Some("why".into())
            }
        );
        assert_eq!(
            store
                .prune(parse_ts("2026-01-01T00:00:00.500Z").unwrap())
                .await
                .unwrap(),
            1
        );
        assert!(store.run(1).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn check_constraint_rejects_unknown_status() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.db")).await.unwrap();
        let r = sqlx::query(
            "INSERT INTO runs (job, scheduled_for, status, trigger, node) VALUES ('a', 'x', 'bogus', 'schedule', 'n')",
        )
        .execute(&store.pool)
        .await;
        assert!(r.is_err());
    }
}
