//! One attempt of a job, as a job kind sees it: what it knows about itself
//! ([`AttemptContext`]), how it marks its real start, what it shares with other runs
//! ([`Services`]), how it is asked to stop ([`StopSignal`]) and what it returns ([`Outcome`]).

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::JobSpec;
use crate::clock::Clock;
use crate::history::recorder::Recorder;
use crate::store::{Record, RunStart};

/// What an attempt knows about itself.
#[derive(Debug)]
pub struct AttemptContext<'a> {
    /// The job.
    pub job: &'a JobSpec,
    /// Run id (history row).
    pub run_id: i64,
    /// The intended time of the firing.
    pub scheduled_for: DateTime<Utc>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// What fired it (schedule, manual, retry, catch-up).
    pub trigger: crate::store::Trigger,
    /// The daemon's command processes (register while alive).
    pub processes: &'a crate::processes::Processes,
    /// Call [`StartMark::mark`] when the work really begins (a command: once
    /// its child is spawned); that instant is the run's `started_at`.
    pub started: &'a StartMark,
    /// Connections shared by all runs.
    pub services: &'a Services,
    /// The parents' runs that fired it (trigger `dependency`; else empty), newest last.
    pub parents: &'a [crate::store::ParentRun],
}

/// What job kinds share: SMTP transports and HTTP clients.
#[derive(Debug, Clone)]
pub struct Services {
    /// Configured SMTP servers.
    pub mailers: crate::smtp::Mailers,
    /// HTTP clients.
    pub http: crate::http_client::HttpClients,
    /// The history database (upload marks).
    pub store: crate::store::Store,
    /// The output of runs in progress, for whoever follows them.
    pub live: super::output::LiveOutputs,
}

/// Asks an attempt to stop: `soft` starts the graceful stop, `hard` skips the grace period.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    /// Stop politely (timeout, shutdown after drain, replaced).
    pub soft: CancellationToken,
    /// Stop now (second signal).
    pub hard: CancellationToken,
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Succeeded or failed; the runner overrides with timed_out/interrupted/cancelled.
    pub success: bool,
    /// Process exit code, when there was one.
    pub exit_code: Option<i32>,
    /// The cause chain, when it failed.
    pub error: Option<String>,
    /// Tail of the output.
    pub output: Option<String>,
    /// Worth retrying (false for errors no retry can fix, such as a missing program).
    pub retryable: bool,
    /// Kind-specific facts for the history (`details` column, JSON).
    pub details: Option<serde_json::Value>,
    /// What a command's processes cost (`None` for the kinds that run in the daemon).
    pub usage: Option<crate::store::Usage>,
}

impl Outcome {
    /// A failure before anything ran.
    pub fn failed(error: impl Into<String>, retryable: bool) -> Self {
        Self {
            success: false,
            exit_code: None,
            error: Some(error.into()),
            output: None,
            retryable,
            details: None,
            usage: None,
        }
    }
}

/// The moment an attempt really began; marking it records the run's start (row `running`)
/// and logs "run started". Only the first call counts.
#[derive(Debug)]
pub struct StartMark {
    at: OnceLock<DateTime<Utc>>,
    run: RunStart,
    clock: Arc<Clock>,
    recorder: Recorder,
}

impl StartMark {
    /// A mark for the run `run` (its `started_at` is set when marked).
    pub fn new(run: RunStart, clock: Arc<Clock>, recorder: Recorder) -> Self {
        Self {
            at: OnceLock::new(),
            run,
            clock,
            recorder,
        }
    }

    /// Marks the start (now) if not yet marked; returns the start time.
    pub fn mark(&self) -> DateTime<Utc> {
        self.mark_process(None)
    }

    /// Marks the start (now) of a run whose main process is `pid`, if not yet marked.
    pub fn mark_process(&self, pid: Option<u32>) -> DateTime<Utc> {
        *self.at.get_or_init(|| {
            let now = self.clock.now();
            let run = RunStart {
                started_at: Some(now),
                pid,
                ..self.run.clone()
            };
            tracing::info!(
                job = %run.job,
                run_id = run.id,
                attempt = run.attempt,
                trigger = run.trigger.as_str(),
                lateness_ms = (now - run.scheduled_for).num_milliseconds(),
                "run started"
            );
            self.recorder.record(Record::Started(run));
            now
        })
    }
}
