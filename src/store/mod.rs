//! The history database: all SQL lives here, behind one [`Store`] with two implementations:
//! SQLite (`sqlite`, the default: one file, one daemon) and PostgreSQL (`postgres`:
//! several daemons, "nodes", sharing one database, each firing claimed by one of them). Both
//! have the same tables, views and CLI behaviour; run records are written in batches by the
//! recorder through a [`HistoryWriter`].

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};

/// The run columns [`RunRow::from_columns`] reads, from `runs_timed` or `last_runs`, with the
/// output column named by `$output` (written once for every query that reads runs).
macro_rules! run_columns {
    ($output:literal) => {
        concat!(
            "SELECT id, job, scheduled_for, started_at, finished_at, status, attempt, trigger, \
             exit_code, error, ",
            $output,
            ", node, lateness_ms, duration_ms, details, ",
            usage_columns!(),
            " "
        )
    };
}

/// The usage columns of `runs`, in the order [`Usage::from_columns`] reads them.
macro_rules! usage_columns {
    () => {
        "cpu_user_us, cpu_system_us, peak_rss_bytes, blocks_read, blocks_written, \
         voluntary_switches, involuntary_switches"
    };
}

/// Runs `$body` on the backend's pool, named `$pool`: one statement text (with `$N`
/// placeholders and [`Ts`] timestamps) written once for both backends.
macro_rules! on_pool {
    ($self:ident, $pool:ident => $body:expr) => {
        match &$self.0 {
            Backend::Sqlite(s) => {
                let $pool = &s.pool;
                $body
            }
            Backend::Postgres(p) => {
                let $pool = &p.pool;
                $body
            }
        }
    };
}

mod actions;
mod dashboard;
mod decode;
mod dependencies;
mod postgres;
mod records;
mod runs;
mod sqlite;
mod stale_watch;
mod stats;
mod triggers;
mod ts;
mod upkeep;
mod uploads;
mod usage;
mod writer;

pub use actions::{Event, Pause};
pub use dashboard::{NotificationRow, RunDot};
pub use dependencies::{
    CauseClaim, ChildRun, EVERY_CHILD, Lineage, NO_RUN, Newest, ParentRun, RunDetail,
};
use postgres::PgStore;
pub use postgres::{Cluster, ClusterEvent, ClusterEvents, GroupHolder};
pub use records::*;
use sqlite::SqliteStore;
pub use stale_watch::StaleState;
pub use stats::JobStats;
pub use ts::Ts;
pub use usage::{Usage, bytes_in_words, cpu_in_words};
use writer::SqliteWriter;

use crate::secret::Secret;

/// Errors from the history database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be created or opened. (`why` is told in the message, not as a
    /// cause, so that a chain of causes does not tell it twice.)
    #[error("cannot open history database {path}: {why}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        why: std::io::Error,
    },
    /// A query failed. (Its message is told here, not as a cause: sqlx's errors tell their
    /// own cause again, which printed the same words three times.)
    #[error("history database: {0}")]
    Sql(sqlx::Error),
    /// A migration failed.
    #[error("history database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The file at the database's path is gone or is another file than the one opened: what
    /// was written may have gone into a deleted file.
    #[error("the history database file {0} was removed or replaced")]
    Replaced(PathBuf),
    /// The node's heartbeat found the shared database out of reach.
    #[error("history database: out of reach (the node's heartbeat fails)")]
    Unreachable,
    /// A live node of this name runs elsewhere (shared database): on another machine, or
    /// in another process of this one.
    #[error(
        "{where_} runs a node named {name:?} whose lease holds: give this daemon another daemon.node (nothing of that node was touched)"
    )]
    NodeNameTaken {
        /// The name.
        name: String,
        /// Where its holder runs, in words ("another machine", "this machine (pid 123)").
        where_: String,
    },
    /// The database's password could not be read.
    #[error("database.password: {0}")]
    Password(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Sql(e)
    }
}

impl StoreError {
    /// Whether every connection was busy (a burst of queries), rather than the database out
    /// of reach.
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Sql(sqlx::Error::PoolTimedOut))
    }
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

/// Where the history is.
#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, which several daemons may share.
    Postgres(PostgresTarget),
}

impl Database {
    /// The path this daemon's own files (instance lock, spill file) are named after: the
    /// SQLite file, or a per-node name in the state folder.
    pub fn local_path(&self) -> &Path {
        match self {
            Database::Sqlite(p) => p,
            Database::Postgres(t) => &t.local,
        }
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "{}", p.display()),
            Database::Postgres(t) => f.write_str(&t.url),
        }
    }
}

/// A PostgreSQL database to connect to.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresTarget {
    /// `postgres://user@host:port/db?options`, without a password.
    pub url: String,
    /// The password, when not from the PostgreSQL environment (`PGPASSWORD`, `~/.pgpass`).
    pub password: Option<Secret>,
    /// `sslmode`: disable, allow, prefer, require, verify-ca or verify-full.
    pub tls: Option<String>,
    /// CA certificate file for `verify-ca` / `verify-full`.
    pub ca_file: Option<PathBuf>,
    /// This node's own files are named after this path (see [`Database::local_path`]).
    pub local: PathBuf,
}

/// A handle on the history database.
#[derive(Debug, Clone)]
pub struct Store(Backend);

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(Box<SqliteStore>),
    Postgres(PgStore),
}

/// Calls the same method on whichever database this is.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match &$self.0 {
            Backend::Sqlite($s) => $call,
            Backend::Postgres($s) => $call,
        }
    };
}

impl Store {
    /// Opens (creating with mode 0600 if missing) and migrates a SQLite database.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self(Backend::Sqlite(Box::new(
            SqliteStore::open(path).await?,
        ))))
    }

    /// Opens and migrates `database`.
    pub async fn connect(database: &Database) -> Result<Self, StoreError> {
        match database {
            Database::Sqlite(p) => Self::open(p).await,
            Database::Postgres(t) => Ok(Self(Backend::Postgres(PgStore::open(t).await?))),
        }
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
            let io = |why| StoreError::Open {
                path: path.clone(),
                why,
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
                why: std::io::Error::other("the thread opening it panicked"),
            })
        })
    }

    /// The statements of a database several daemons share (PostgreSQL); `None` on SQLite,
    /// where this daemon is the only one and runs every firing it has.
    pub fn cluster(&self) -> Option<Cluster> {
        match &self.0 {
            Backend::Sqlite(_) => None,
            Backend::Postgres(p) => Some(Cluster(p.clone())),
        }
    }

    /// A connection of its own for the run recorder: see [`HistoryWriter`].
    pub fn writer(&self) -> HistoryWriter {
        match &self.0 {
            Backend::Sqlite(s) => HistoryWriter(WriterBackend::Sqlite(Box::new(s.writer()))),
            Backend::Postgres(p) => HistoryWriter(WriterBackend::Postgres(p.clone())),
        }
    }

    /// The database file (SQLite), or the path this node's own files are named after.
    pub fn path(&self) -> &Path {
        each!(self, s => s.path())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        each!(self, s => s.close().await);
    }

    /// Marks runs left `running` by this daemon's previous life as `abandoned` (on a shared
    /// database: the runs of node `node` only); returns how many.
    pub async fn mark_abandoned(&self, now: DateTime<Utc>, node: &str) -> Result<u64, StoreError> {
        match &self.0 {
            Backend::Sqlite(s) => s.mark_abandoned(now).await,
            Backend::Postgres(p) => p.mark_abandoned(now, node).await,
        }
    }

    /// The first run id never handed out and a first block of ids from it: `(first,
    /// through)`. On SQLite the ids above a reservation follow on from it (see
    /// [`Store::reserve_run_ids`]); on a shared database every block is taken by one node.
    pub async fn take_run_ids(&self, above: i64, size: i64) -> Result<(i64, i64), StoreError> {
        match &self.0 {
            Backend::Sqlite(s) => {
                let first = s.next_run_id().await?.max(above.saturating_add(1));
                let through = first.saturating_add(size - 1);
                s.reserve_run_ids(through).await?;
                Ok((first, through))
            }
            Backend::Postgres(p) => p.take_run_ids(size).await,
        }
    }

    /// Extends the reservation to `through` (never lowers it); on a shared database, takes
    /// the next block instead and returns it.
    pub async fn reserve_run_ids(&self, through: i64, size: i64) -> Result<(i64, i64), StoreError> {
        match &self.0 {
            Backend::Sqlite(s) => {
                s.reserve_run_ids(through).await?;
                Ok((through - size + 1, through))
            }
            Backend::Postgres(p) => p.take_run_ids(size).await,
        }
    }

    /// Gives back the reserved ids above `last_used`, at a clean stop (SQLite only: on a
    /// shared database other nodes may have taken blocks above).
    pub async fn release_run_ids(&self, last_used: i64) -> Result<(), StoreError> {
        match &self.0 {
            Backend::Sqlite(s) => s.release_run_ids(last_used).await,
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// Writes a batch of records in one transaction (see [`HistoryWriter::write_batch`]).
    pub async fn write_batch(&self, records: &[Record]) -> Result<(), StoreError> {
        each!(self, s => s.write_batch(records).await)
    }

    /// Claims pending manual trigger requests for `jobs` (the jobs `node` has), oldest
    /// first; each request is claimed by one node only: `(request, job, no_deps)`.
    pub async fn claim_triggers(
        &self,
        node: &str,
        jobs: &[String],
    ) -> Result<Vec<(i64, String, bool)>, StoreError> {
        match &self.0 {
            Backend::Sqlite(s) => s.claim_triggers(node).await,
            Backend::Postgres(p) => p.claim_triggers(node, jobs).await,
        }
    }

    /// Runs matching `filter`, newest first.
    pub async fn history(&self, filter: &HistoryFilter) -> Result<Vec<RunRow>, StoreError> {
        each!(self, s => s.history(filter).await)
    }
}

/// The least time between two of the history writer's batches on PostgreSQL: records wait
/// at most this long, and a burst of thousands of runs takes a few dozen transactions.
pub const PG_BATCH_GAP: std::time::Duration = std::time::Duration::from_millis(50);

/// The recorder's connection to the history database. A write that fails is rolled back and
/// its connection closed, so no lock outlives a fault; the next write connects again.
#[derive(Debug)]
pub struct HistoryWriter(WriterBackend);

#[derive(Debug)]
enum WriterBackend {
    /// A connection of its own, which also notices when the file was replaced.
    Sqlite(Box<SqliteWriter>),
    /// The pool (PostgreSQL has no file to watch).
    Postgres(PgStore),
}

impl HistoryWriter {
    /// Writes `records` in one transaction, in few statements: a run started and ended within
    /// the batch becomes one complete row, rows go in multi-row upserts, and per-job firing
    /// times keep only their latest. Writing the same records again changes nothing (replays
    /// of the spill file rely on it).
    pub async fn write_batch(&mut self, records: &[Record]) -> Result<(), StoreError> {
        match &mut self.0 {
            WriterBackend::Sqlite(w) => w.write_batch(records).await,
            WriterBackend::Postgres(p) => p.write_batch(records).await,
        }
    }

    /// The least time between two batches: none for a SQLite file; for PostgreSQL (a
    /// server, often over a network, shared by nodes) [`PG_BATCH_GAP`], so that a burst costs
    /// a transaction per gap, not one per round trip.
    pub fn batch_gap(&self) -> std::time::Duration {
        match &self.0 {
            WriterBackend::Sqlite(_) => std::time::Duration::ZERO,
            WriterBackend::Postgres(_) => PG_BATCH_GAP,
        }
    }

    /// Gives back the memory the connection caches (SQLite's page cache; PostgreSQL's pool
    /// keeps none worth it).
    pub async fn release_memory(&mut self) {
        if let WriterBackend::Sqlite(w) = &mut self.0 {
            w.release_memory().await;
        }
    }

    /// Closes the connection.
    pub async fn close(&mut self) {
        if let WriterBackend::Sqlite(w) = &mut self.0 {
            w.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new SQLite database, and a new PostgreSQL one when the test server is there
    /// (`scripts/test.sh` starts it): the same assertions hold on both.
    async fn stores(label: &str) -> (Vec<Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut stores = vec![Store::open(&dir.path().join("h.db")).await.unwrap()];
        let url = harness::fresh_postgres_database(label).unwrap();
        // Never a silent skip: without PostgreSQL the backends' conformance is not shown.
        assert!(
            url.is_some() || std::env::var_os("HOURGLASS_TEST_SQLITE_ONLY").is_some(),
            "HOURGLASS_TEST_PG_URL is not set: run the tests with scripts/test.sh (it starts \
             PostgreSQL), or set HOURGLASS_TEST_SQLITE_ONLY=1 to try SQLite alone"
        );
        if let Some(url) = url {
            let target = PostgresTarget {
                url,
                password: None,
                tls: None,
                ca_file: None,
                local: dir.path().join("node"),
            };
            stores.push(Store::connect(&Database::Postgres(target)).await.unwrap());
        }
        (stores, dir)
    }

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

    /// A command's usage, every column its own value.
    const USAGE: Usage = Usage {
        cpu_user_us: 2_000_001,
        cpu_system_us: 30_002,
        peak_rss_bytes: Some(210 << 20),
        blocks_read: 8,
        blocks_written: 16,
        voluntary_switches: 40,
        involuntary_switches: 7,
    };

    fn end(id: i64, status: RunStatus, output: &str) -> RunEnd {
        RunEnd {
            id,
            job: String::new(),
            finished_at: parse_ts("2026-01-01T00:01:00.000Z").unwrap(),
            status,
            exit_code: Some(i32::from(status != RunStatus::Succeeded)),
            error: None,
            output: Some(output.into()),
            details: None,
            retried: false,
            usage: None,
        }
    }

    #[tokio::test]
    async fn batches_merge_starts_and_ends_and_update_earlier_rows() {
        let (stores, _dir) = stores("batches").await;
        for store in stores {
            batches_merge_on(&store).await;
        }
    }

    async fn batches_merge_on(store: &Store) {
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
        assert_eq!(
            store.run(2).await.unwrap().unwrap().status,
            RunStatus::Succeeded
        );
        assert_eq!(
            store.run(3).await.unwrap().unwrap().status,
            RunStatus::Running
        );
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
            assert_eq!(r.finished_at, parse_ts("2026-01-01T00:01:00.000Z"));
        }
        assert_eq!(
            store.last_fired().await.unwrap()["a"],
            at("2026-01-01T00:00:05Z")
        );
        // No run is left `running`.
        assert_eq!(store.mark_abandoned(Utc::now(), "n1").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn records_round_trip_and_crash_leftovers_are_abandoned() {
        let (stores, dir) = stores("round_trip").await;
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("h.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        for store in stores {
            round_trip_on(&store).await;
        }
    }

    async fn round_trip_on(store: &Store) {
        assert_eq!(store.take_run_ids(0, 1).await.unwrap(), (1, 1));
        store
            .write_batch(&[
                Record::Started(start(1, "a", "2026-01-01T00:00:00.000Z")),
                Record::Started(start(2, "b", "2026-01-01T00:00:01.000Z")),
                Record::Finished(RunEnd {
                    id: 1,
                    job: "a".into(),
                    finished_at: parse_ts("2026-01-01T00:00:02.003Z").unwrap(),
                    status: RunStatus::Succeeded,
                    exit_code: Some(0),
                    error: None,
                    output: Some("hi\n".into()),
                    details: Some(r#"{"k":1}"#.into()),
                    retried: false,
                    usage: Some(USAGE),
                }),
                Record::Fired {
                    job: "a".into(),
                    scheduled_for: parse_ts("2026-01-01T00:00:00Z").unwrap(),
                },
            ])
            .await
            .unwrap();
        let one = store.run(1).await.unwrap().unwrap();
        assert_eq!(one.status, RunStatus::Succeeded);
        assert_eq!(one.lateness_ms, Some(3));
        assert_eq!(one.duration_ms, Some(2000));
        assert_eq!(one.output.as_deref(), Some("hi\n"));
        assert_eq!(one.details, Some(serde_json::json!({"k": 1})));
        assert_eq!(one.usage, Some(USAGE));
        assert_eq!(store.take_run_ids(0, 1).await.unwrap(), (3, 3));
        if store.cluster().is_some() {
            // Another node's restart leaves this node's runs alone.
            assert_eq!(store.mark_abandoned(Utc::now(), "other").await.unwrap(), 0);
        }
        assert_eq!(store.mark_abandoned(Utc::now(), "n1").await.unwrap(), 1);
        assert_eq!(
            store.run(2).await.unwrap().unwrap().status,
            RunStatus::Abandoned
        );
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
        trigger_requests_on(store).await;
        assert_eq!(
            store
                .prune(parse_ts("2026-01-01T00:00:00.500Z").unwrap())
                .await
                .unwrap(),
            1
        );
        assert!(store.run(1).await.unwrap().is_none());
    }

    /// A trigger request is claimed once and keeps its outcome.
    async fn trigger_requests_on(store: &Store) {
        let req = store.request_trigger("a", false).await.unwrap();
        assert_eq!(
            store.trigger_state(req).await.unwrap(),
            TriggerState::default()
        );
        let jobs = ["a".to_string()];
        assert_eq!(
            store.claim_triggers("n1", &jobs).await.unwrap(),
            [(req, "a".into(), false)]
        );
        assert!(store.claim_triggers("n1", &jobs).await.unwrap().is_empty());
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
    }

    /// The statements written once for both backends answer the same on both: pauses and
    /// events, the stale watch, stats and last successes, the dashboard's counts, dots and
    /// notifications, trigger requests and upload marks.
    #[tokio::test]
    async fn every_shared_statement_answers_the_same_on_both_backends() {
        let (stores, _dir) = stores("conformance").await;
        let answers: Vec<String> = {
            let mut all = Vec::new();
            for store in &stores {
                all.push(conformance_on(store).await);
            }
            all
        };
        for a in &answers[1..] {
            assert_eq!(a, &answers[0]);
        }
    }

    /// Runs every shared statement on `store`; returns what they answered, written out.
    async fn conformance_on(store: &Store) -> String {
        let mut out = String::new();
        seed_conformance(store).await;
        pauses_and_events(store, &mut out).await;
        stale_watch_and_reads(store, &mut out).await;
        requests_and_marks(store, &mut out).await;
        pages_dots_and_ids(store, &mut out).await;
        out
    }

    /// History in pages (each backend's keyset order), a job's dots and one firing's
    /// attempts, run-id blocks.
    async fn pages_dots_and_ids(store: &Store, out: &mut String) {
        use std::fmt::Write as _;
        let mut filter = HistoryFilter {
            job: Some("a".into()),
            limit: 2,
            ..Default::default()
        };
        for page in 1..=2 {
            let rows = store.history(&filter).await.unwrap();
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            writeln!(out, "page {page} {ids:?}").unwrap();
            filter.after = rows.last().map(Cursor::after);
        }
        writeln!(out, "dots {:?}", store.recent_dots("a", 10).await.unwrap()).unwrap();
        let at = parse_ts(T1).unwrap();
        writeln!(out, "attempts {:?}", store.attempts("a", at).await.unwrap()).unwrap();
        assert!(!store.database_id().await.unwrap().is_empty());
        let (first, through) = store.take_run_ids(100, 10).await.unwrap();
        writeln!(out, "block of {}", through - first + 1).unwrap();
        let (_, next) = store.reserve_run_ids(through + 10, 10).await.unwrap();
        writeln!(out, "reserved through the ask {}", next >= through + 10).unwrap();
        store.release_run_ids(first).await.unwrap();
    }

    const T0: &str = "2026-01-01T00:00:00.000Z";
    const T1: &str = "2026-01-01T00:00:10.000Z";
    const T2: &str = "2026-01-01T00:00:20.000Z";

    /// Runs of job a: a success, a failure, a skip; a notification of the failure.
    async fn seed_conformance(store: &Store) {
        let mut skipped = start(3, "a", T2);
        skipped.started_at = None;
        store
            .write_batch(&[
                Record::Started(start(1, "a", T0)),
                Record::Finished(end(1, RunStatus::Succeeded, "ok")),
                Record::Started(start(2, "a", T1)),
                Record::Finished(end(2, RunStatus::Failed, "no")),
                Record::Complete(skipped, end(3, RunStatus::Skipped, "")),
                Record::Notification(NotificationRecord {
                    run_id: 2,
                    job: "a".into(),
                    event: "failure".into(),
                    channel: "email".into(),
                    sent_at: parse_ts("2026-01-01T00:01:01.500Z").unwrap(),
                    error: Some("refused".into()),
                }),
            ])
            .await
            .unwrap();
    }

    async fn pauses_and_events(store: &Store, out: &mut String) {
        use std::fmt::Write as _;
        let at = |s: &str| parse_ts(s).unwrap();
        let pause = Pause {
            job: "a".into(),
            since: at(T0),
            until: Some(at("2026-01-02T00:00:00.250Z")),
            actor: "uid:0".into(),
        };
        store.pause(&pause).await.unwrap();
        writeln!(out, "pauses {:?}", store.pauses().await.unwrap()).unwrap();
        writeln!(out, "resumed {}", store.resume("a", at(T1)).await.unwrap()).unwrap();
        writeln!(
            out,
            "resumed again {}",
            store.resume("a", at(T1)).await.unwrap()
        )
        .unwrap();
        for (i, job) in [Some("a"), None].into_iter().enumerate() {
            let event = Event {
                at: at(T0) + chrono::TimeDelta::seconds(i64::try_from(i).unwrap()),
                action: "trigger".into(),
                job: job.map(str::to_string),
                actor: "token".into(),
                node: "n1".into(),
                detail: None,
            };
            store.record_event(&event).await.unwrap();
        }
        writeln!(out, "events {:?}", store.events(None, 10).await.unwrap()).unwrap();
        writeln!(
            out,
            "events of a {:?}",
            store.events(Some("a"), 10).await.unwrap()
        )
        .unwrap();
    }

    async fn stale_watch_and_reads(store: &Store, out: &mut String) {
        use std::fmt::Write as _;
        let at = |s: &str| parse_ts(s).unwrap();
        let state = store.stale_state("a", at(T1)).await.unwrap();
        writeln!(out, "stale {state:?}").unwrap();
        writeln!(
            out,
            "marked {}",
            store.mark_stale("a", at(T2)).await.unwrap()
        )
        .unwrap();
        writeln!(
            out,
            "marked again {}",
            store.mark_stale("a", at(T2)).await.unwrap()
        )
        .unwrap();
        writeln!(out, "stale jobs {:?}", store.stale_jobs().await.unwrap()).unwrap();
        writeln!(out, "cleared {}", store.clear_stale("a").await.unwrap()).unwrap();
        writeln!(out, "stats {:?}", store.stats(at(T0), None).await.unwrap()).unwrap();
        writeln!(
            out,
            "stats of b {:?}",
            store.stats(at(T0), Some("b")).await.unwrap()
        )
        .unwrap();
        writeln!(
            out,
            "last successes {:?}",
            store.last_successes().await.unwrap()
        )
        .unwrap();
        writeln!(
            out,
            "counts {:?}",
            store.status_counts("a", at(T0)).await.unwrap()
        )
        .unwrap();
        writeln!(out, "run count {}", store.run_count("a").await.unwrap()).unwrap();
        let last: std::collections::BTreeMap<_, _> =
            store.last_runs().await.unwrap().into_iter().collect();
        writeln!(out, "last runs {last:?}").unwrap();
        let lost = [start(50, "c", T1)];
        for _ in 0..2 {
            let written = store.insert_abandoned(&lost, at(T2), "lost").await.unwrap();
            writeln!(out, "abandoned rows written {written}").unwrap();
        }
        writeln!(out, "abandoned {:?}", store.run(50).await.unwrap()).unwrap();
        writeln!(
            out,
            "notifications {:?}",
            store.notifications(2).await.unwrap()
        )
        .unwrap();
    }

    async fn requests_and_marks(store: &Store, out: &mut String) {
        use std::fmt::Write as _;
        let req = store.request_trigger("a", false).await.unwrap();
        writeln!(out, "request {:?}", store.trigger_state(req).await.unwrap()).unwrap();
        store
            .set_trigger_outcome(req, TriggerOutcome::Started, Some(9), None)
            .await
            .unwrap();
        writeln!(
            out,
            "request then {:?}",
            store.trigger_state(req).await.unwrap()
        )
        .unwrap();
        let mark = UploadMark {
            job: "up".into(),
            destination: "s3://b".into(),
            key: "k".into(),
            size: 7,
            mtime_ns: 42,
            scheduled_for: parse_ts("2026-01-01T00:00:00.125Z").unwrap(),
        };
        writeln!(
            out,
            "mark before {:?}",
            store.upload_mark(&mark).await.unwrap()
        )
        .unwrap();
        store.set_upload_mark(&mark).await.unwrap();
        writeln!(out, "mark {:?}", store.upload_mark(&mark).await.unwrap()).unwrap();
    }

    /// A parent's newest last word (a retried attempt is none), the claim of its child (a
    /// parent's run claimed once), the run a dead daemon claimed but never started, a child
    /// held back (claimed for no run), and a run's lineage: the same on both backends.
    #[tokio::test]
    async fn dependencies_answer_the_same_on_both_backends() {
        let (stores, _dir) = stores("deps").await;
        for store in &stores {
            write_parents(store).await;
            let parents = ["p".to_string(), "q".to_string(), "never".to_string()];
            let last = store.last_words(&parents).await.unwrap();
            assert_eq!(last.len(), 2, "a job that never ended has no last word");
            assert_eq!(last["p"].run_id, 1, "the retried attempt is no last word");
            assert_eq!(last["q"].run_id, 3);
            assert_eq!(last["q"].status, RunStatus::Succeeded);
            assert!(store.fired_children(&[1, 3]).await.unwrap().is_empty());
            let claim = |child: &str, run_id: i64, causes: &[i64]| CauseClaim {
                child: child.into(),
                run_id,
                causes: causes.to_vec(),
            };
            let won = store
                .claim_causes("n1", &[claim("c", 10, &[3, 1]), claim("e", 13, &[3])])
                .await
                .unwrap();
            assert_eq!(won, [true, true]);
            // A claim whose causes fired the child already is lost whole, the others won.
            let won = store
                .claim_causes(
                    "n2",
                    &[
                        claim("c", 11, &[3]),
                        claim("c", 12, &[1, 99]),
                        claim("f", 14, &[1]),
                    ],
                )
                .await
                .unwrap();
            assert_eq!(won, [false, false, true]);
            let fired = store.fired_children(&[1, 3, 99]).await.unwrap();
            let mut fired: Vec<(String, i64)> = fired.into_iter().collect();
            fired.sort();
            let want = [("c", 1), ("c", 3), ("e", 3), ("f", 1)].map(|(c, i)| (c.to_string(), i));
            assert_eq!(fired, want, "run 99 of the lost claim was not kept");
            claimed_runs_and_lineage(store, &claim).await;
        }
    }

    /// Runs 1 (`p`, succeeded), 2 (`p`, failed, a retry follows) and 3 (`q`, succeeded).
    async fn write_parents(store: &Store) {
        let ended = |id: i64, job: &str, status: RunStatus, secs: i64, retried: bool| {
            let mut e = end(id, status, "");
            e.job = job.into();
            e.finished_at += chrono::TimeDelta::seconds(secs);
            e.retried = retried;
            Record::Finished(e)
        };
        store
            .write_batch(&[
                Record::Started(start(1, "p", "2026-01-01T00:00:00.000Z")),
                ended(1, "p", RunStatus::Succeeded, 0, false),
                Record::Started(start(2, "p", "2026-01-01T00:00:10.000Z")),
                ended(2, "p", RunStatus::Failed, 10, true),
                Record::Started(start(3, "q", "2026-01-01T00:00:00.000Z")),
                ended(3, "q", RunStatus::Succeeded, 5, false),
            ])
            .await
            .unwrap();
    }

    /// What `dependencies_answer_the_same_on_both_backends` claimed, seen again: the runs
    /// not started, a held-back child claimed for no run, each run's lineage.
    async fn claimed_runs_and_lineage(
        store: &Store,
        claim: &impl Fn(&str, i64, &[i64]) -> CauseClaim,
    ) {
        // Held back: claimed for no run; not to start, not a child.
        assert_eq!(
            store
                .claim_causes("n1", &[claim("d", 0, &[1])])
                .await
                .unwrap(),
            [true]
        );
        let unstarted = store.unstarted_dependents("n1").await.unwrap();
        assert_eq!(unstarted.len(), 2, "c and e, not the held-back d");
        assert_eq!((unstarted[0].0.as_str(), unstarted[0].1), ("c", 10));
        let ids: Vec<i64> = unstarted[0].2.iter().map(|p| p.run_id).collect();
        assert_eq!(ids, [1, 3]);
        let n2: Vec<i64> = store
            .unstarted_dependents("n2")
            .await
            .unwrap()
            .iter()
            .map(|u| u.1)
            .collect();
        assert_eq!(n2, [14]);
        let of_parent = store.lineage(1).await.unwrap();
        let children: Vec<i64> = of_parent.children.iter().map(|c| c.run_id).collect();
        assert_eq!(children, [10, 14]);
        assert_eq!(of_parent.children[0].status, None);
        store
            .write_batch(&[Record::Started(start(10, "c", "2026-01-01T00:00:05.000Z"))])
            .await
            .unwrap();
        let unstarted = store.unstarted_dependents("n1").await.unwrap();
        assert_eq!(unstarted.iter().map(|u| u.1).collect::<Vec<_>>(), [13]);
        let of_child = store.lineage(10).await.unwrap();
        let ids: Vec<i64> = of_child.parents.iter().map(|p| p.run_id).collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(
            store.lineage(1).await.unwrap().children[0].status,
            Some(RunStatus::Running)
        );
    }
}
