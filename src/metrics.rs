//! Prometheus metrics (prometheus-client, OpenMetrics text): runs by job and status, run
//! duration and firing lateness, last success per job, notifications that failed. Counted
//! where the history rows are made (the recorder), so the counters agree with the rows; the
//! values the daemon knows at any moment (runs in progress, next firings, pending records)
//! are set by the scrape itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::store::{Record, RunEnd, RunStart, RunStatus};

/// A job's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    /// The job name.
    pub job: String,
}

/// A job and a run status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    job: String,
    status: String,
}

/// A notification channel.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    duration: Histogram,
    lateness: Histogram,
    last_success: Family<JobLabel, FloatGauge>,
    /// Next firing per job (set at each scrape).
    pub next_firing: Family<JobLabel, FloatGauge>,
    /// Paused jobs (set at each scrape).
    pub paused: Family<JobLabel, Gauge>,
    /// Runs in progress (set at each scrape).
    pub running: Gauge,
    /// Firings waiting for a run slot or their turn (set at each scrape).
    pub waiting: Gauge,
    /// History records waiting for the database (set at each scrape).
    pub pending_records: Gauge,
    /// Failed history writes.
    pub write_errors: Counter,
    notifications_failed: Family<ChannelLabel, Counter>,
    /// Runs started and not yet ended: their job and start, for the end's labels.
    open: Mutex<HashMap<i64, (String, Option<DateTime<Utc>>)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("hourglass"),
            runs: Family::default(),
            // 1 ms to ~4.6 h.
            duration: Histogram::new(exponential_buckets(0.001, 4.0, 13)),
            // 1 ms to ~65 s.
            lateness: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            last_success: Family::default(),
            next_firing: Family::default(),
            paused: Family::default(),
            running: Gauge::default(),
            waiting: Gauge::default(),
            pending_records: Gauge::default(),
            write_errors: Counter::default(),
            notifications_failed: Family::default(),
            open: Mutex::new(HashMap::new()),
        };
        m.register();
        m
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "build",
            "The daemon's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register("runs", "Runs ended (history rows), by job and status", self.runs.clone());
        r.register("run_duration_seconds", "How long runs took", self.duration.clone());
        r.register(
            "firing_lateness_seconds",
            "How long after its intended time a run started",
            self.lateness.clone(),
        );
        r.register(
            "job_last_success_timestamp_seconds",
            "When each job last succeeded (since the daemon started)",
            self.last_success.clone(),
        );
        r.register(
            "job_next_firing_timestamp_seconds",
            "Each job's next intended firing",
            self.next_firing.clone(),
        );
        r.register("job_paused", "1 for a paused job", self.paused.clone());
        r.register("runs_running", "Runs in progress", self.running.clone());
        r.register(
            "runs_waiting",
            "Firings waiting for a run slot or their turn",
            self.waiting.clone(),
        );
        r.register(
            "history_pending_records",
            "Run records waiting for the history database",
            self.pending_records.clone(),
        );
        r.register(
            "history_write_errors",
            "History writes that failed",
            self.write_errors.clone(),
        );
        r.register(
            "notifications_failed",
            "Notifications that could not be sent, by channel",
            self.notifications_failed.clone(),
        );
    }

    /// Counts a record on its way to the history.
    pub fn record(&self, record: &Record) {
        match record {
            Record::Started(s) => {
                self.started(s);
                if let Ok(mut open) = self.open.lock() {
                    open.insert(s.id, (s.job.clone(), s.started_at));
                }
            }
            Record::Finished(e) => {
                let opened = self.open.lock().ok().and_then(|mut o| o.remove(&e.id));
                if let Some((job, started)) = opened {
                    self.ended(&job, started, e);
                }
            }
            Record::Complete(s, e) => {
                self.started(s);
                self.ended(&s.job, s.started_at, e);
            }
            Record::Notification(n) => {
                if n.error.is_some() {
                    self.notifications_failed
                        .get_or_create(&ChannelLabel {
                            channel: n.channel.to_string(),
                        })
                        .inc();
                }
            }
            Record::Fired { .. } => {}
        }
    }

    fn started(&self, s: &RunStart) {
        if let Some(at) = s.started_at {
            let late = (at - s.scheduled_for).num_milliseconds().max(0);
            self.lateness.observe(late as f64 / 1000.0);
        }
    }

    fn ended(&self, job: &str, started: Option<DateTime<Utc>>, e: &RunEnd) {
        let labels = RunLabels {
            job: job.to_string(),
            status: e.status.as_str().to_string(),
        };
        self.runs.get_or_create(&labels).inc();
        if let Some(at) = started {
            let took = (e.finished_at - at).num_milliseconds().max(0);
            self.duration.observe(took as f64 / 1000.0);
        }
        if e.status == RunStatus::Succeeded {
            let label = JobLabel {
                job: job.to_string(),
            };
            self.last_success
                .get_or_create(&label)
                .set(e.finished_at.timestamp_millis() as f64 / 1000.0);
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
