//! What the history holds, as types: a run's start and end, a record for the writer, a row
//! as read back, statuses and triggers, notification and upload marks, trigger requests.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The state of a run, as stored (`status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// In progress.
    Running,
    /// Finished with success.
    Succeeded,
    /// Finished with failure.
    Failed,
    /// Stopped because it exceeded its timeout.
    TimedOut,
    /// Not started (overlap policy).
    Skipped,
    /// Left `running` by a daemon that died.
    Abandoned,
    /// Stopped by the daemon's shutdown.
    Interrupted,
    /// Stopped by a newer firing (`overlap = "replace"`).
    Cancelled,
}

impl RunStatus {
    /// Every status.
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::TimedOut,
        RunStatus::Skipped,
        RunStatus::Abandoned,
        RunStatus::Interrupted,
        RunStatus::Cancelled,
    ];

    /// Whether a run that ended so counts as a failure in the history (its views, stats and
    /// the dashboard): it failed, timed out, or was abandoned or interrupted. (Alerts judge a
    /// job's health by failed and timed out runs only.)
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            RunStatus::Failed | RunStatus::TimedOut | RunStatus::Abandoned | RunStatus::Interrupted
        )
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Skipped => "skipped",
            RunStatus::Abandoned => "abandoned",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Why a run started (`trigger` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Its schedule came due.
    Schedule,
    /// `hourglass trigger`.
    Manual,
    /// A retry of a failed attempt.
    Retry,
    /// A firing missed during downtime.
    CatchUp,
    /// Its parents' runs met its `after` condition.
    Dependency,
}

impl Trigger {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Retry => "retry",
            Trigger::CatchUp => "catch_up",
            Trigger::Dependency => "dependency",
        }
    }

    /// The trigger with this stored name.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Trigger::Schedule,
            Trigger::Manual,
            Trigger::Retry,
            Trigger::CatchUp,
            Trigger::Dependency,
        ]
        .into_iter()
        .find(|t| t.as_str() == name)
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The start of a run.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RunStart {
    /// Run id, allocated by the daemon.
    pub id: i64,
    /// Job name.
    pub job: String,
    /// The intended time.
    pub scheduled_for: DateTime<Utc>,
    /// When it really started (`None` for skipped firings).
    pub started_at: Option<DateTime<Utc>>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Why it ran.
    pub trigger: Trigger,
    /// The daemon's node name.
    pub node: String,
    /// A command's process (and process group) id.
    pub pid: Option<u32>,
}

/// The end of a run.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RunEnd {
    /// Run id.
    pub id: i64,
    /// Job name (what the run's children look for once it is written).
    #[serde(default)]
    pub job: String,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Final status.
    pub status: RunStatus,
    /// Process exit code.
    pub exit_code: Option<i32>,
    /// Cause chain.
    pub error: Option<String>,
    /// Output tail.
    pub output: Option<String>,
    /// Kind-specific facts (JSON).
    pub details: Option<String>,
    /// A retry of the firing follows this attempt: not the firing's last word (its children
    /// wait for the last attempt).
    #[serde(default)]
    pub retried: bool,
    /// What its processes cost (a command's; `None` for the kinds that run in the daemon).
    #[serde(default)]
    pub usage: Option<super::Usage>,
}

/// A notification attempt.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct NotificationRecord {
    /// Run id of the firing's last attempt.
    pub run_id: i64,
    /// Job name.
    pub job: String,
    /// `failure`, `recovery` or `success`.
    pub event: std::borrow::Cow<'static, str>,
    /// `email` or `webhook`.
    pub channel: std::borrow::Cow<'static, str>,
    /// When it was attempted.
    pub sent_at: DateTime<Utc>,
    /// Why it failed; `None` when sent.
    pub error: Option<String>,
}

/// A file an upload job has uploaded.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadMark {
    /// Job name.
    pub job: String,
    /// Destination (rendered, without secrets).
    pub destination: String,
    /// Key below the destination.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (ns since the epoch).
    pub mtime_ns: i64,
    /// The firing that uploaded it.
    pub scheduled_for: DateTime<Utc>,
}

/// One write for the recorder (serialized as one line of the spill file).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub enum Record {
    /// A run started (row inserted as `running`).
    Started(RunStart),
    /// A run ended (row updated).
    Finished(RunEnd),
    /// A run that is complete when first recorded (skipped firings).
    Complete(RunStart, RunEnd),
    /// A notification was attempted.
    Notification(NotificationRecord),
    /// A job fired for this intended time (per-job state).
    Fired {
        /// Job name.
        job: String,
        /// The intended time.
        scheduled_for: DateTime<Utc>,
    },
    /// A firing's run ended on `node`: the job's turn across nodes is given back (a shared
    /// database's; a database of its own has no turns and nothing to write).
    TurnGiven {
        /// Job name.
        job: String,
        /// The firing that held the turn.
        scheduled_for: DateTime<Utc>,
        /// The node that held it.
        node: String,
    },
}

impl Record {
    /// The run this record is about, if any.
    pub fn run_id(&self) -> Option<i64> {
        match self {
            Record::Started(s) | Record::Complete(s, _) => Some(s.id),
            Record::Finished(e) => Some(e.id),
            Record::Notification(n) => Some(n.run_id),
            Record::Fired { .. } | Record::TurnGiven { .. } => None,
        }
    }

    /// The run's output tail, if this record carries one.
    pub fn output_mut(&mut self) -> Option<&mut Option<String>> {
        match self {
            Record::Finished(e) | Record::Complete(_, e) => Some(&mut e.output),
            _ => None,
        }
    }
}

/// One row of history, as shown by the CLI. In JSON its times are written as the database
/// keeps them (`2026-11-26T04:43:00.123Z`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RunRow {
    /// Run id.
    pub id: i64,
    /// Job name.
    pub job: String,
    /// Intended time.
    #[serde(serialize_with = "ts_text")]
    pub scheduled_for: DateTime<Utc>,
    /// Start.
    #[serde(serialize_with = "opt_ts_text")]
    pub started_at: Option<DateTime<Utc>>,
    /// End.
    #[serde(serialize_with = "opt_ts_text")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Status.
    pub status: RunStatus,
    /// Attempt number.
    pub attempt: i64,
    /// Why it ran.
    pub trigger: Trigger,
    /// Exit code.
    pub exit_code: Option<i64>,
    /// Error text.
    pub error: Option<String>,
    /// Output tail (only filled by [`super::Store::run`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Node that ran it.
    pub node: String,
    /// Kind-specific facts (JSON), e.g. an email's message id.
    pub details: Option<serde_json::Value>,
    /// started_at − scheduled_for.
    pub lateness_ms: Option<i64>,
    /// finished_at − started_at.
    pub duration_ms: Option<i64>,
    /// What its processes cost (command runs that ended).
    pub usage: Option<super::Usage>,
}

impl RunRow {
    /// Reads a row of the run columns in their order (`id, job, scheduled_for, started_at,
    /// finished_at, status, attempt, trigger, exit_code, error, output, node, lateness_ms,
    /// duration_ms, details`, then the usage columns), from either backend.
    pub(super) fn from_columns<'r, R>(r: &'r R) -> Result<Self, sqlx::Error>
    where
        R: sqlx::Row,
        usize: sqlx::ColumnIndex<R>,
        i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        RunStatus: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        Trigger: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        super::Ts: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Ok(RunRow {
            id: r.try_get(0)?,
            job: r.try_get(1)?,
            scheduled_for: r.try_get::<super::Ts, _>(2)?.0,
            started_at: r.try_get::<Option<super::Ts>, _>(3)?.map(|t| t.0),
            finished_at: r.try_get::<Option<super::Ts>, _>(4)?.map(|t| t.0),
            status: r.try_get(5)?,
            attempt: r.try_get(6)?,
            trigger: r.try_get(7)?,
            exit_code: r.try_get(8)?,
            error: r.try_get(9)?,
            output: r.try_get(10)?,
            node: r.try_get(11)?,
            lateness_ms: r.try_get(12)?,
            duration_ms: r.try_get(13)?,
            details: r
                .try_get::<Option<String>, _>(14)?
                .and_then(|d| serde_json::from_str(&d).ok()),
            usage: super::Usage::from_columns([
                r.try_get(15)?,
                r.try_get(16)?,
                r.try_get(17)?,
                r.try_get(18)?,
                r.try_get(19)?,
                r.try_get(20)?,
                r.try_get(21)?,
            ]),
        })
    }
}

/// Writes a timestamp as the database keeps it.
pub(super) fn ts_text<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::format_ts(*t))
}

/// Writes a timestamp, if any, as the database keeps it.
#[allow(clippy::ref_option)] // serde's `serialize_with` passes a reference to the field
fn opt_ts_text<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ts_text(t, s),
        None => s.serialize_none(),
    }
}

/// Filters for [`super::Store::history`].
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Only this job.
    pub job: Option<String>,
    /// Only this status.
    pub status: Option<RunStatus>,
    /// Only runs scheduled at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// At most this many rows (newest first).
    pub limit: u32,
    /// Only runs after this one in the order rows come (keyset pagination: the last row of
    /// the page before).
    pub after: Option<Cursor>,
}

/// Where a page of history ends: the order is newest first by run id on SQLite, by intended
/// time then run id on PostgreSQL (whose ids come in blocks per node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The row's intended time.
    pub scheduled_for: DateTime<Utc>,
    /// The row's run id.
    pub id: i64,
}

impl Cursor {
    /// The cursor after `row`.
    pub fn after(row: &RunRow) -> Self {
        Self {
            scheduled_for: row.scheduled_for,
            id: row.id,
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.scheduled_for.timestamp_millis(), self.id)
    }
}

impl FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a cursor (take `next` from the page before)");
        let (ms, id) = s.split_once('_').ok_or_else(bad)?;
        let ms: i64 = ms.parse().map_err(|_| bad())?;
        Ok(Self {
            scheduled_for: DateTime::from_timestamp_millis(ms).ok_or_else(bad)?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("{s:?} is not a run status"))
    }
}

/// What became of a manual trigger request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerOutcome {
    /// A run started.
    Started,
    /// It waits behind an active run, or for a free run slot.
    Queued,
    /// It was not run.
    Skipped,
}

impl TriggerOutcome {
    /// The name stored in `trigger_requests.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerOutcome::Started => "started",
            TriggerOutcome::Queued => "queued",
            TriggerOutcome::Skipped => "skipped",
        }
    }

    /// The outcome of a stored name.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Started, Self::Queued, Self::Skipped]
            .into_iter()
            .find(|o| o.as_str() == name)
    }
}

/// Where a manual trigger request stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerState {
    /// A daemon took it.
    pub claimed: bool,
    /// What became of it, once known.
    pub outcome: Option<TriggerOutcome>,
    /// The run it started, or the row of its skip.
    pub run_id: Option<i64>,
    /// Behind what it waits, or why it was skipped.
    pub detail: Option<String>,
}

/// What a node says of itself at each heartbeat (shared database).
#[derive(Debug, Clone)]
pub struct NodeBeat<'a> {
    /// The node's name (`daemon.node`).
    pub node: &'a str,
    /// Its version.
    pub version: &'a str,
    /// A digest of its job definitions.
    pub config_digest: &'a str,
    /// How long its lease lasts from this beat (by the database's clock).
    pub lease: std::time::Duration,
    /// Whether this is its first beat since it started.
    pub first: bool,
    /// The machine it runs on (host name and machine id).
    pub machine: &'a str,
    /// The daemon's process on it (`pid/start time`).
    pub process: &'a str,
    /// On its first beat: the process of this machine that held the name and is gone (its
    /// place may be taken), or `""`.
    pub replaces: &'a str,
    /// Its tags (`daemon.tags`).
    pub tags: &'a [String],
    /// Whether this beat also looks for what a lost notification would have said (manual
    /// trigger requests, replace requests, pauses).
    pub poll: bool,
}

/// What a heartbeat learned of the other nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BeatAnswer {
    /// This node's clock minus the database's, in milliseconds.
    pub skew_ms: i64,
    /// The other live nodes, by name, with their tags.
    pub others: Vec<(String, Vec<String>)>,
    /// How many different job configurations the live nodes have (this one's included).
    pub configs: i64,
    /// A node's lease ran out and no node has taken its work over since.
    pub dead_to_reap: bool,
    /// On a polling beat, what is waiting (`None` on the others).
    pub waiting: Option<Waiting>,
}

/// What a polling heartbeat found waiting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waiting {
    /// Manual trigger requests no node has taken.
    pub triggers: bool,
    /// A replace request for a run of this node.
    pub replace: bool,
    /// A digest of the pauses.
    pub pauses: String,
}

/// The holder of a node name, as its row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHolder {
    /// Its machine.
    pub machine: String,
    /// Its process there (`pid/start time`; `""` when written by an older version).
    pub process: String,
    /// Whether its lease holds by the database's clock.
    pub alive: bool,
}

/// One node sharing the database, as `hourglass nodes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRow {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Digest of its job definitions.
    pub config_digest: String,
    /// When it started.
    #[serde(serialize_with = "ts_text")]
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat (database clock).
    #[serde(serialize_with = "ts_text")]
    pub heartbeat_at: DateTime<Utc>,
    /// Until when its lease holds (database clock).
    #[serde(serialize_with = "ts_text")]
    pub lease_until: DateTime<Utc>,
    /// Its clock minus the database's, in milliseconds.
    pub skew_ms: i64,
    /// Whether its lease still holds.
    pub alive: bool,
}

/// Whether the live nodes among `nodes` hold different job definitions (then each live
/// node's digest is shown as differing).
pub fn live_digests_differ(nodes: &[NodeRow]) -> bool {
    let digests: std::collections::BTreeSet<&str> = nodes
        .iter()
        .filter(|n| n.alive)
        .map(|n| n.config_digest.as_str())
        .collect();
    digests.len() > 1
}

/// What became of a claim of a firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This node runs it; `turn`: the job's turn across nodes was taken with it (asked for,
    /// and free).
    Won {
        /// Whether the turn was taken.
        turn: bool,
    },
    /// Another node claimed it first.
    Lost,
    /// It is not due yet by the database's clock, for this long (this node's clock is ahead).
    Early(std::time::Duration),
}

/// A run (or a claimed firing) of a node that died under it, now recorded `abandoned`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LostRun {
    /// Its row.
    pub id: i64,
    /// The job.
    pub job: String,
    /// The firing.
    pub scheduled_for: DateTime<Utc>,
    /// The attempt that was lost.
    pub attempt: i64,
    /// The node that died.
    pub node: String,
}
