//! Prometheus metrics (the `prometheus` crate, text exposition format): runs by job and
//! status, run duration and firing lateness, last success per job, notifications that failed.
//! Counted where the history rows are made (the recorder), so the counters agree with the
//! rows; the values the daemon knows at any moment (runs in progress, next firings, pending
//! records) are set by the scrape itself.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder, exponential_buckets,
};

use crate::store::{Record, RunEnd, RunStart, RunStatus};

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: IntCounterVec,
    duration: Histogram,
    lateness: Histogram,
    last_success: GaugeVec,
    /// Next firing per job (set at each scrape).
    pub next_firing: GaugeVec,
    /// Paused jobs (set at each scrape).
    pub paused: IntGaugeVec,
    /// Runs in progress (set at each scrape).
    pub running: IntGauge,
    /// Firings waiting for a run slot or their turn (set at each scrape).
    pub waiting: IntGauge,
    /// History records waiting for the database (set at each scrape).
    pub pending_records: IntGauge,
    /// Failed history writes (brought up to the recorder's count at each scrape).
    pub write_errors: IntCounter,
    notifications_failed: IntCounterVec,
    /// Runs started and not yet ended: their job and start, for the end's labels.
    open: Mutex<HashMap<i64, OpenRun>>,
}

/// A run started and not yet ended: its job and start.
type OpenRun = (String, Option<DateTime<Utc>>);

impl Metrics {
    /// A registry with every metric registered.
    ///
    /// # Errors
    /// Only if a metric's definition were invalid (they are constants).
    pub fn new() -> Result<Self, prometheus::Error> {
        let job = &["job"];
        let m = Self {
            registry: Registry::new(),
            runs: IntCounterVec::new(
                Opts::new(
                    "hourglass_runs_total",
                    "Runs ended (history rows), by job and status",
                ),
                &["job", "status"],
            )?,
            // 1 ms to ~4.6 h.
            duration: Histogram::with_opts(
                HistogramOpts::new("hourglass_run_duration_seconds", "How long runs took")
                    .buckets(exponential_buckets(0.001, 4.0, 13)?),
            )?,
            // 1 ms to ~65 s.
            lateness: Histogram::with_opts(
                HistogramOpts::new(
                    "hourglass_firing_lateness_seconds",
                    "How long after its intended time a run started",
                )
                .buckets(exponential_buckets(0.001, 2.0, 17)?),
            )?,
            last_success: GaugeVec::new(
                Opts::new(
                    "hourglass_job_last_success_timestamp_seconds",
                    "When each job last succeeded (since the daemon started)",
                ),
                job,
            )?,
            next_firing: GaugeVec::new(
                Opts::new(
                    "hourglass_job_next_firing_timestamp_seconds",
                    "Each job's next intended firing",
                ),
                job,
            )?,
            paused: IntGaugeVec::new(Opts::new("hourglass_job_paused", "1 for a paused job"), job)?,
            running: IntGauge::new("hourglass_runs_running", "Runs in progress")?,
            waiting: IntGauge::new(
                "hourglass_runs_waiting",
                "Firings waiting for a run slot or their turn",
            )?,
            pending_records: IntGauge::new(
                "hourglass_history_pending_records",
                "Run records waiting for the history database",
            )?,
            write_errors: IntCounter::new(
                "hourglass_history_write_errors_total",
                "History writes that failed",
            )?,
            notifications_failed: IntCounterVec::new(
                Opts::new(
                    "hourglass_notifications_failed_total",
                    "Notifications that could not be sent, by channel",
                ),
                &["channel"],
            )?,
            open: Mutex::new(HashMap::new()),
        };
        m.register()?;
        Ok(m)
    }

    fn register(&self) -> Result<(), prometheus::Error> {
        let build = Gauge::with_opts(
            Opts::new("hourglass_build_info", "The daemon's version (always 1)")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        build.set(1.0);
        let r = &self.registry;
        r.register(Box::new(build))?;
        r.register(Box::new(self.runs.clone()))?;
        r.register(Box::new(self.duration.clone()))?;
        r.register(Box::new(self.lateness.clone()))?;
        r.register(Box::new(self.last_success.clone()))?;
        r.register(Box::new(self.next_firing.clone()))?;
        r.register(Box::new(self.paused.clone()))?;
        r.register(Box::new(self.running.clone()))?;
        r.register(Box::new(self.waiting.clone()))?;
        r.register(Box::new(self.pending_records.clone()))?;
        r.register(Box::new(self.write_errors.clone()))?;
        r.register(Box::new(self.notifications_failed.clone()))?;
        Ok(())
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
                        .with_label_values(&[n.channel.as_ref()])
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
        self.runs.with_label_values(&[job, e.status.as_str()]).inc();
        if let Some(at) = started {
            let took = (e.finished_at - at).num_milliseconds().max(0);
            self.duration.observe(took as f64 / 1000.0);
        }
        if e.status == RunStatus::Succeeded {
            self.last_success
                .with_label_values(&[job])
                .set(e.finished_at.timestamp_millis() as f64 / 1000.0);
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }

    /// The text format's content type.
    pub fn content_type() -> &'static str {
        prometheus::TEXT_FORMAT
    }
}
