//! What a job is once its config has been validated: schedule, policies and the kind of work.
//! One file per kind of work; each kind turns one attempt into an [`Outcome`].

pub mod after;
pub mod attempt;
pub mod command;
pub mod email;
pub mod graph;
pub mod http;
pub mod output;
pub mod shell;
pub mod template;
pub mod upload;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::schedule::Schedule;

pub use attempt::{AttemptContext, Outcome, Services, StartMark, StopSignal};
pub use command::CommandJob;
pub use email::EmailJob;
pub use http::HttpJob;
pub use upload::UploadJob;

/// A validated job definition.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Unique name across all job files.
    pub name: String,
    /// The file the job was defined in (for messages).
    pub source: std::sync::Arc<std::path::Path>,
    /// When it fires.
    pub schedule: Schedule,
    /// The job's zone (cron fields, and times shown to people: templates, `list`).
    pub tz: chrono_tz::Tz,
    /// Fixed offset added to every occurrence, derived from the name and `jitter`.
    pub jitter: TimeDelta,
    /// What happens to firings missed while the daemon was down or the machine asleep.
    pub catch_up: CatchUp,
    /// How far back missed firings are considered.
    pub catch_up_window: Duration,
    /// What happens when a firing is due while a previous run of the same job is active.
    pub overlap: Overlap,
    /// Limit on one attempt; `None` for no limit.
    pub timeout: Option<Duration>,
    /// Time between the polite stop (SIGTERM) and the forced one (SIGKILL).
    pub kill_grace: Duration,
    /// Retries after a failed attempt.
    pub retry: RetryPolicy,
    /// Bytes of output kept (the tail).
    pub output_limit: usize,
    /// On a shared database: what happens to a run whose node dies under it.
    pub on_node_loss: NodeLoss,
    /// On a shared database: only nodes with every one of these tags run the job.
    pub run_on: Vec<String>,
    /// What the job is for, in the user's words.
    pub description: Option<String>,
    /// Labels to find it by (the dashboard filters on them).
    pub tags: Vec<String>,
    /// The work.
    pub kind: JobKind,
    /// `enabled = false`: never fires on its schedule, but `hourglass trigger` runs it.
    pub enabled: bool,
    /// The jobs whose runs fire this one (`after`), if any.
    pub after: Option<after::After>,
    /// Its mutual exclusion group (`group`), if any.
    pub group: Option<JobGroup>,
}

/// A mutual exclusion group as a job in it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobGroup {
    /// The group's name (`[groups.<name>]`).
    pub name: String,
    /// At most this many runs of the group's jobs at once (across nodes on a shared database).
    pub max_running: usize,
}

impl JobSpec {
    /// The next firing strictly after `t` (jitter included).
    pub fn next_fire_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .next_after(t.checked_sub_signed(self.jitter)?)?
            .checked_add_signed(self.jitter)
    }

    /// The latest firing at or before `t` (jitter included).
    pub fn latest_fire_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .latest_at_or_before(t.checked_sub_signed(self.jitter)?)?
            .checked_add_signed(self.jitter)
    }
}

impl JobSpec {
    /// How many firings lie in `[first, last]` (jitter included); `None` when over `limit`.
    pub fn count_fires(
        &self,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        limit: u64,
    ) -> Option<u64> {
        let (Some(a), Some(b)) = (
            first.checked_sub_signed(self.jitter),
            last.checked_sub_signed(self.jitter),
        ) else {
            return Some(0);
        };
        self.schedule.count_between(a, b, limit)
    }
}

#[cfg(test)]
impl JobSpec {
    /// A command job running `argv` on `schedule`, with the defaults of a config that says
    /// nothing else (except `overlap = "allow"` and a 1 s kill grace), for unit tests.
    pub(crate) fn test_command(name: &str, schedule: Schedule, argv: &[&str]) -> Self {
        JobSpec {
            name: name.into(),
            source: std::path::Path::new("jobs.d/t.toml").into(),
            schedule,
            tz: chrono_tz::Tz::UTC,
            jitter: TimeDelta::zero(),
            catch_up: CatchUp::Skip,
            catch_up_window: Duration::from_secs(86_400),
            overlap: Overlap::Allow,
            timeout: None,
            kill_grace: Duration::from_secs(1),
            retry: RetryPolicy {
                retries: 0,
                backoff: Duration::from_secs(1),
                backoff_max: Duration::from_secs(1),
            },
            output_limit: 1024,
            kind: JobKind::Command(Box::new(CommandJob {
                line: command::CommandLine::Argv(argv.iter().map(ToString::to_string).collect()),
                env: Default::default(),
                working_dir: None,
                user: None,
                umask: None,
                clean_env: false,
                shell: shell::Shell::Sh,
                limits: command::Limits::default(),
            })),
            enabled: true,
            after: None,
            group: None,
            on_node_loss: crate::job::NodeLoss::Abandon,
            run_on: Vec::new(),
            description: None,
            tags: Vec::new(),
        }
    }
}

/// The kinds of work a job can do.
#[derive(Debug, Clone, PartialEq)]
pub enum JobKind {
    /// Run a program or a shell command line.
    Command(Box<CommandJob>),
    /// Send an email. (The rarer, larger kinds are boxed: a command job, the common case,
    /// should not carry an email's size; with 100,000 jobs that is 20 MB.)
    Email(Box<EmailJob>),
    /// Make an HTTP request.
    Http(Box<HttpJob>),
    /// Upload files.
    Upload(Box<UploadJob>),
}

impl JobKind {
    /// Runs one attempt. When `stop` is cancelled the attempt must wind down promptly (for
    /// commands: SIGTERM to the process group, `kill_grace`, SIGKILL) and return.
    pub async fn execute(&self, ctx: &AttemptContext<'_>, stop: &StopSignal) -> Outcome {
        // Each kind's future is boxed: inline, the run's future (and so every spawned run
        // task) would be as large as the largest kind's (uploads, email), and copied at
        // every spawn whatever the kind (measured: a run future 3,024 -> 856 bytes).
        match self {
            JobKind::Command(c) => Box::pin(c.execute(ctx, stop)).await,
            JobKind::Email(e) => Box::pin(e.execute(ctx, stop)).await,
            JobKind::Http(h) => Box::pin(h.execute(ctx, stop)).await,
            JobKind::Upload(u) => Box::pin(u.execute(ctx, stop)).await,
        }
    }

    /// Short label for listings.
    pub fn label(&self) -> &'static str {
        match self {
            JobKind::Command(_) => "command",
            JobKind::Email(_) => "email",
            JobKind::Http(_) => "http",
            JobKind::Upload(_) => "upload",
        }
    }

    /// The kind's settings as the dashboard shows them (label, value): never a secret's
    /// value, nor an environment variable's.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        match self {
            JobKind::Command(c) => c.describe(),
            JobKind::Email(e) => e.describe(),
            JobKind::Http(h) => h.describe(),
            JobKind::Upload(u) => u.describe(),
        }
    }
}

/// What to do with firings missed during downtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Forget them (cron's behaviour).
    Skip,
    /// Run once for all of them (systemd's `Persistent=true`).
    Latest,
    /// Run each of them, oldest first, within the window.
    All,
}

/// What happens, on a shared database, to a run whose node stops answering under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeLoss {
    /// Record it `abandoned` (at most once: it may or may not have done its work).
    #[default]
    Abandon,
    /// Record it `abandoned` and run the firing again on a live node as its next attempt
    /// (at least once).
    Retry,
}

/// What to do when a firing is due while a previous run is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Start another run alongside.
    Allow,
    /// Record the firing as skipped (systemd's behaviour).
    Skip,
    /// Run it after the active one finishes.
    Queue,
    /// Stop the active run, then start this one.
    Replace,
}

/// Retries with exponential backoff and full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// Delay before the first retry; doubles each time.
    pub backoff: Duration,
    /// Upper bound on the delay.
    pub backoff_max: Duration,
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (2 for the first retry): a random value in
    /// `[d/2, d]` where `d = backoff * 2^(next_attempt-2)`, capped at `backoff_max`.
    pub fn delay(&self, next_attempt: u32) -> Duration {
        let exp = next_attempt.saturating_sub(2).min(30);
        let d = self
            .backoff
            .saturating_mul(1u32 << exp)
            .min(self.backoff_max);
        let half = d / 2;
        let spread = u64::try_from((d - half).as_millis()).unwrap_or(0);
        let extra = if spread == 0 {
            0
        } else {
            rand::random_range(0..=spread)
        };
        half + Duration::from_millis(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds() {
        let p = RetryPolicy {
            retries: 5,
            backoff: Duration::from_secs(2),
            backoff_max: Duration::from_secs(10),
        };
        for _ in 0..50 {
            let d2 = p.delay(2);
            assert!(d2 >= Duration::from_secs(1) && d2 <= Duration::from_secs(2));
            let d3 = p.delay(3);
            assert!(d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(4));
            let d9 = p.delay(9);
            assert!(d9 >= Duration::from_secs(5) && d9 <= Duration::from_secs(10));
        }
    }
}
