//! The batched writer's side of the store: one transaction per batch, multi-row statements,
//! and a connection of its own that notices when the database file was replaced.

use std::path::{Path, PathBuf};

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};

use super::{NotificationRecord, Record, RunEnd, RunStart, RunStatus, StoreError, format_ts};

/// The recorder's own connection to the history database. A write that fails is rolled back
/// and the connection closed, so no lock outlives a fault (another process can write as soon
/// as it clears); the next write connects again. After each commit the file at the path must
/// still be the one written to: a database deleted or replaced under the daemon is a fault,
/// not a silent loss.
#[derive(Debug)]
pub(crate) struct SqliteWriter {
    options: SqliteConnectOptions,
    path: PathBuf,
    conn: Option<(SqliteConnection, FileId)>,
}

/// Which file a path named when it was opened (device and inode).
pub(crate) type FileId = (u64, u64);

impl SqliteWriter {
    pub(super) fn new(options: SqliteConnectOptions, path: PathBuf) -> Self {
        Self {
            options,
            path,
            conn: None,
        }
    }

    /// Writes `records` in one transaction, in few statements: a run started and ended within
    /// the batch becomes one complete row, rows go in multi-row upserts and
    /// `UPDATE ... FROM (VALUES ...)`s, and per-job firing times keep only their latest.
    /// Writing the same records again changes nothing (replays of the spill file rely on it).
    pub(crate) async fn write_batch(&mut self, records: &[Record]) -> Result<(), StoreError> {
        let (mut conn, id) = match self.conn.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let written = write_records(&mut conn, records)
            .await
            .map_err(StoreError::from);
        let same_file = file_id(&self.path).await.ok() == Some(id);
        match written {
            Ok(()) if same_file => {
                self.conn = Some((conn, id));
                Ok(())
            }
            Ok(()) => {
                let _ = conn.close_hard().await;
                Err(StoreError::Replaced(self.path.clone()))
            }
            Err(e) => {
                let _ = conn.close_hard().await;
                Err(e)
            }
        }
    }

    /// Closes the connection.
    /// Gives back the memory of the connection's page cache (`PRAGMA shrink_memory`); the
    /// pages are read again as writes need them.
    pub(crate) async fn release_memory(&mut self) {
        if let Some((conn, _)) = &mut self.conn {
            let _ = sqlx::query("PRAGMA shrink_memory").execute(conn).await;
        }
    }

    pub(crate) async fn close(&mut self) {
        if let Some((conn, _)) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    async fn connect(&self) -> Result<(SqliteConnection, FileId), StoreError> {
        let id = file_id(&self.path)
            .await
            .map_err(|_| StoreError::Replaced(self.path.clone()))?;
        let conn = SqliteConnection::connect_with(&self.options).await?;
        Ok((conn, id))
    }
}

pub(crate) async fn file_id(path: &Path) -> std::io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = tokio::fs::metadata(path).await?;
    Ok((m.dev(), m.ino()))
}

/// One transaction (`BEGIN IMMEDIATE`: the write lock is taken, or waited for, up front);
/// rolled back on any error.
pub(crate) async fn write_records(
    conn: &mut SqliteConnection,
    records: &[Record],
) -> Result<(), sqlx::Error> {
    let plan = BatchPlan::of(records);
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    match plan.write(&mut tx).await {
        Ok(()) => tx.commit().await,
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Rows per multi-row statement (at most 14 values a row: far below SQLite's variable limit).
pub(crate) const ROWS_PER_STATEMENT: usize = 256;

/// A batch of records grouped into what few statements write it.
#[derive(Debug, Default)]
pub(crate) struct BatchPlan<'a> {
    /// New rows, complete when their end is known.
    pub(super) inserts: Vec<(&'a RunStart, Option<&'a RunEnd>)>,
    /// Ends of runs whose row was written by an earlier batch.
    pub(super) updates: Vec<&'a RunEnd>,
    /// The latest intended firing per job.
    pub(super) fired: HashMap<&'a str, DateTime<Utc>>,
    pub(super) notifications: Vec<&'a NotificationRecord>,
    /// Turns given back (job, firing, node): a shared database's only.
    pub(super) turns_given: Vec<(&'a str, DateTime<Utc>, &'a str)>,
}

impl<'a> BatchPlan<'a> {
    pub(super) fn of(records: &'a [Record]) -> Self {
        let mut plan = Self::default();
        let mut pending: HashMap<i64, usize> = HashMap::new();
        for r in records {
            match r {
                Record::Started(s) => {
                    pending.insert(s.id, plan.inserts.len());
                    plan.inserts.push((s, None));
                }
                Record::Complete(s, e) => plan.inserts.push((s, Some(e))),
                Record::Finished(e) => match pending.remove(&e.id) {
                    Some(i) => {
                        if let Some(row) = plan.inserts.get_mut(i) {
                            row.1 = Some(e);
                        }
                    }
                    None => plan.updates.push(e),
                },
                Record::Notification(n) => plan.notifications.push(n),
                Record::Fired { job, scheduled_for } => {
                    let latest = plan.fired.entry(job).or_insert(*scheduled_for);
                    *latest = (*latest).max(*scheduled_for);
                }
                Record::TurnGiven {
                    job,
                    scheduled_for,
                    node,
                } => plan.turns_given.push((job, *scheduled_for, node)),
            }
        }
        plan
    }

    async fn write(self, tx: &mut sqlx::Transaction<'_, Sqlite>) -> Result<(), sqlx::Error> {
        for rows in self.inserts.chunks(ROWS_PER_STATEMENT) {
            insert_runs(tx, rows).await?;
        }
        for ends in self.updates.chunks(ROWS_PER_STATEMENT) {
            update_runs(tx, ends).await?;
        }
        let fired: Vec<(&str, DateTime<Utc>)> = self.fired.into_iter().collect();
        for chunk in fired.chunks(ROWS_PER_STATEMENT) {
            let now = format_ts(Utc::now());
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO job_state (job, last_fired_for, updated_at) ",
            );
            q.push_values(chunk, |mut row, (job, at)| {
                row.push_bind(job.to_string())
                    .push_bind(format_ts(*at))
                    .push_bind(now.clone());
            });
            q.push(
                " ON CONFLICT (job) DO UPDATE SET \
                 last_fired_for = max(last_fired_for, excluded.last_fired_for), \
                 updated_at = excluded.updated_at",
            );
            q.build().persistent(false).execute(&mut **tx).await?;
        }
        for n in self.notifications {
            // Once per (run, event, channel, time): a replayed record is not a second attempt.
            sqlx::query(
                "INSERT INTO notifications (run_id, job, event, channel, sent_at, error) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE NOT EXISTS (SELECT 1 FROM notifications \
                 WHERE run_id = ?1 AND event = ?3 AND channel = ?4 AND sent_at = ?5)",
            )
            .bind(n.run_id)
            .bind(&n.job)
            .bind(n.event.as_ref())
            .bind(n.channel.as_ref())
            .bind(format_ts(n.sent_at))
            .bind(n.error.as_deref())
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

pub(crate) async fn insert_runs(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    rows: &[(&RunStart, Option<&RunEnd>)],
) -> Result<(), sqlx::Error> {
    let mut q = QueryBuilder::<Sqlite>::new(concat!(
        "INSERT INTO runs (id, job, scheduled_for, started_at, finished_at, status, attempt, \
             trigger, exit_code, error, output, node, details, pid, retried, ",
        usage_columns!(),
        ") "
    ));
    q.push_values(rows, |mut row, (s, end)| {
        row.push_bind(s.id)
            .push_bind(s.job.clone())
            .push_bind(format_ts(s.scheduled_for))
            .push_bind(s.started_at.map(format_ts))
            .push_bind(end.map(|e| format_ts(e.finished_at)))
            .push_bind(end.map_or(RunStatus::Running, |e| e.status).as_str())
            .push_bind(s.attempt)
            .push_bind(s.trigger.as_str())
            .push_bind(end.and_then(|e| e.exit_code))
            .push_bind(end.and_then(|e| e.error.clone()))
            .push_bind(end.and_then(|e| e.output.clone()))
            .push_bind(s.node.clone())
            .push_bind(end.and_then(|e| e.details.clone()))
            .push_bind(s.pid)
            .push_bind(end.is_some_and(|e| e.retried));
        for value in usage_values(end.and_then(|e| e.usage)) {
            row.push_bind(value);
        }
    });
    // A row written before (a replayed record) only takes an end it did not have.
    q.push(
        " ON CONFLICT (id) DO UPDATE SET finished_at = excluded.finished_at, \
         status = excluded.status, exit_code = excluded.exit_code, error = excluded.error, \
         output = excluded.output, details = excluded.details, retried = excluded.retried, \
         cpu_user_us = excluded.cpu_user_us, cpu_system_us = excluded.cpu_system_us, \
         peak_rss_bytes = excluded.peak_rss_bytes, blocks_read = excluded.blocks_read, \
         blocks_written = excluded.blocks_written, \
         voluntary_switches = excluded.voluntary_switches, \
         involuntary_switches = excluded.involuntary_switches \
         WHERE excluded.status <> 'running'",
    );
    q.build().persistent(false).execute(&mut **tx).await?;
    Ok(())
}

pub(crate) async fn update_runs(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    ends: &[&RunEnd],
) -> Result<(), sqlx::Error> {
    let mut q = QueryBuilder::<Sqlite>::new(
        "UPDATE runs SET finished_at = v.column2, status = v.column3, exit_code = v.column4, \
         error = v.column5, output = v.column6, details = v.column7, retried = v.column8, \
         cpu_user_us = v.column9, cpu_system_us = v.column10, peak_rss_bytes = v.column11, \
         blocks_read = v.column12, blocks_written = v.column13, \
         voluntary_switches = v.column14, involuntary_switches = v.column15 FROM (",
    );
    q.push_values(ends, |mut row, e| {
        row.push_bind(e.id)
            .push_bind(format_ts(e.finished_at))
            .push_bind(e.status.as_str())
            .push_bind(e.exit_code)
            .push_bind(e.error.clone())
            .push_bind(e.output.clone())
            .push_bind(e.details.clone())
            .push_bind(e.retried);
        for value in usage_values(e.usage) {
            row.push_bind(value);
        }
    });
    q.push(") AS v WHERE runs.id = v.column1");
    q.build().persistent(false).execute(&mut **tx).await?;
    Ok(())
}

/// A run's usage columns, in their stored order (NULL each when it has none).
fn usage_values(usage: Option<super::Usage>) -> [Option<i64>; 7] {
    usage.map_or([None; 7], |u| u.columns())
}
