//! Prometheus metrics (the `prometheus` crate, text exposition format): runs by job and
//! status, run duration and firing lateness, last success per job, notifications that failed.
//! Counted where the history rows are made (the recorder), so the counters agree with the
//! rows; the values the daemon knows at any moment (runs in progress, next firings, pending
//! records) are set by the scrape itself. The per-job series are kept as a few numbers per
//! job and made into metric families only while a scrape encodes them: a crate series costs
//! ~800 bytes, and 10,000 jobs' series made during a burst of runs stayed in the daemon's
//! memory for good.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder, exponential_buckets,
};

use crate::store::{Record, RunEnd, RunStart, RunStatus};

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    duration: Histogram,
    lateness: Histogram,
    /// CPU time of command runs, across jobs (a job's own figures are in `stats`).
    cpu: Histogram,
    /// Peak memory of command runs whose peak was measured, across jobs.
    peak_memory: Histogram,
    /// Runs in progress (set at each scrape).
    pub running: IntGauge,
    /// Firings waiting for a run slot or their turn (set at each scrape).
    pub waiting: IntGauge,
    /// History records waiting for the database (set at each scrape).
    pub pending_records: IntGauge,
    /// Failed history writes (brought up to the recorder's count at each scrape).
    pub write_errors: IntCounter,
    notifications_failed: IntCounterVec,
    /// Firings this node asked to claim on a shared database, by round and result (brought
    /// up to the runner's counts at each scrape).
    claims: IntCounterVec,
    /// Runs ended, by job and status, and each job's last success.
    jobs: Mutex<HashMap<Box<str>, JobCounts>>,
    /// Runs started and not yet ended: their job and start, for the end's labels.
    open: Mutex<HashMap<i64, OpenRun>>,
}

/// A run started and not yet ended: its job and start.
type OpenRun = (String, Option<DateTime<Utc>>);

/// The statuses whose count every job shows, even at 0.
const ALWAYS_SHOWN: [RunStatus; 2] = [RunStatus::Succeeded, RunStatus::Failed];

/// One job's counters: runs ended by status (in [`RunStatus::ALL`]'s order) and when it last
/// succeeded (Unix milliseconds).
#[derive(Debug, Default)]
struct JobCounts {
    runs: [u32; RunStatus::ALL.len()],
    last_success_ms: Option<std::num::NonZeroI64>,
}

/// What a scrape knows of a job now: its next firing and whether a pause holds it.
#[derive(Debug)]
pub struct JobNow<'a> {
    /// The job's name.
    pub name: &'a str,
    /// Its next intended firing.
    pub next: Option<DateTime<Utc>>,
    /// Whether it is paused.
    pub paused: bool,
}

impl Metrics {
    /// A registry with every metric registered.
    ///
    /// # Errors
    /// Only if a metric's definition were invalid (they are constants).
    pub fn new() -> Result<Self, prometheus::Error> {
        let m = Self {
            registry: Registry::new(),
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
            // 1 ms to ~4.6 h.
            cpu: Histogram::with_opts(
                HistogramOpts::new(
                    "hourglass_run_cpu_seconds",
                    "CPU time (user and system) of command runs, their processes together",
                )
                .buckets(exponential_buckets(0.001, 4.0, 13)?),
            )?,
            // 1 MiB to 64 GiB.
            peak_memory: Histogram::with_opts(
                HistogramOpts::new(
                    "hourglass_run_peak_memory_bytes",
                    "Peak resident memory of command runs (the largest of their processes), \
                     where measured",
                )
                .buckets(exponential_buckets(1_048_576.0, 2.0, 17)?),
            )?,
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
            claims: IntCounterVec::new(
                Opts::new(
                    "hourglass_cluster_claims_total",
                    "Firings this node asked to claim on a shared database: round `first` (it is \
                     the firing's preferred node) or `later` (after the head start), result \
                     `won` or `lost` (another node had it)",
                ),
                &["round", "result"],
            )?,
            jobs: Mutex::new(HashMap::new()),
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
        r.register(Box::new(self.duration.clone()))?;
        r.register(Box::new(self.lateness.clone()))?;
        r.register(Box::new(self.cpu.clone()))?;
        r.register(Box::new(self.peak_memory.clone()))?;
        r.register(Box::new(self.running.clone()))?;
        r.register(Box::new(self.waiting.clone()))?;
        r.register(Box::new(self.pending_records.clone()))?;
        r.register(Box::new(self.write_errors.clone()))?;
        r.register(Box::new(self.notifications_failed.clone()))?;
        r.register(Box::new(self.claims.clone()))?;
        Ok(())
    }

    /// Brings the claim counters up to `counts` (`(round, result, total)`).
    pub fn set_claims(&self, counts: &[(&str, &str, u64)]) {
        for (round, result, total) in counts {
            let c = self.claims.with_label_values(&[*round, *result]);
            c.inc_by(total.saturating_sub(c.get()));
        }
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
                let opened = self.open.lock().ok().and_then(|mut o| {
                    let run = o.remove(&e.id);
                    if o.is_empty() {
                        // A burst's thousands of open runs leave no table behind.
                        o.shrink_to_fit();
                    }
                    run
                });
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
            Record::Fired { .. } | Record::TurnGiven { .. } => {}
        }
    }

    fn started(&self, s: &RunStart) {
        if let Some(at) = s.started_at {
            let late = (at - s.scheduled_for).num_milliseconds().max(0);
            self.lateness.observe(late as f64 / 1000.0);
        }
    }

    fn ended(&self, job: &str, started: Option<DateTime<Utc>>, e: &RunEnd) {
        if let Some(at) = started {
            let took = (e.finished_at - at).num_milliseconds().max(0);
            self.duration.observe(took as f64 / 1000.0);
        }
        if let Some(u) = &e.usage {
            self.cpu.observe(u.cpu_us() as f64 / 1e6);
            if let Some(peak) = u.peak_rss_bytes {
                self.peak_memory.observe(peak as f64);
            }
        }
        let Ok(mut jobs) = self.jobs.lock() else {
            return;
        };
        let counts = match jobs.get_mut(job) {
            Some(c) => c,
            None => jobs.entry(job.into()).or_default(),
        };
        if let Some(i) = RunStatus::ALL.iter().position(|s| *s == e.status) {
            counts.runs[i] = counts.runs[i].saturating_add(1);
        }
        if e.status == RunStatus::Succeeded {
            counts.last_success_ms = std::num::NonZeroI64::new(e.finished_at.timestamp_millis());
        }
    }

    /// Takes a job's last success from the history (at start: the gauge does not forget at a
    /// restart); a success counted since wins.
    pub fn last_success_was(&self, job: &str, at: DateTime<Utc>) {
        let Ok(mut jobs) = self.jobs.lock() else {
            return;
        };
        let counts = jobs.entry(job.into()).or_default();
        let ms = std::num::NonZeroI64::new(at.timestamp_millis());
        if counts.last_success_ms < ms {
            counts.last_success_ms = ms;
        }
    }

    /// Forgets the counters of jobs no longer configured (after a reload): their series end.
    pub fn forget_removed_jobs(&self, names: &[String]) {
        let Ok(mut jobs) = self.jobs.lock() else {
            return;
        };
        let wanted: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
        jobs.retain(|name, _| wanted.contains(&**name));
    }

    /// The text exposition of every metric, with what the scrape knows of each job now.
    pub fn encode(&self, now: &[JobNow<'_>]) -> String {
        let mut families = self.registry.gather();
        families.extend(self.job_families(now));
        // A family with no series (no job has a next firing: one-shot jobs all past) would
        // make the encoder refuse the whole text.
        families.retain(|f| !f.get_metric().is_empty());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_default()
    }

    /// The per-job families: runs by status and last success (counted), next firing and
    /// pause (from `now`).
    fn job_families(&self, now: &[JobNow<'_>]) -> [MetricFamily; 4] {
        let mut runs = family(
            "hourglass_runs_total",
            "Runs ended (history rows), by job and status",
            MetricType::COUNTER,
        );
        let mut last_success = family(
            "hourglass_job_last_success_timestamp_seconds",
            "When each job last succeeded (from the history: a restart keeps it)",
            MetricType::GAUGE,
        );
        if let Ok(jobs) = self.jobs.lock() {
            // A job that has not run yet shows its succeeded and failed counts at 0 (so that
            // a rate sees its first run) without keeping counters of its own.
            let never_ran = JobCounts::default();
            let unseen = now
                .iter()
                .filter(|j| !jobs.contains_key(j.name))
                .map(|j| (j.name, &never_ran));
            let seen = jobs.iter().map(|(job, counts)| (&**job, counts));
            for (job, counts) in seen.chain(unseen) {
                for (status, n) in RunStatus::ALL.iter().zip(counts.runs) {
                    if n > 0 || ALWAYS_SHOWN.contains(status) {
                        let mut c = proto::Counter::default();
                        c.set_value(f64::from(n));
                        let mut m = sample(&[("job", job), ("status", status.as_str())]);
                        m.set_counter(c);
                        runs.mut_metric().push(m);
                    }
                }
                if let Some(ms) = counts.last_success_ms {
                    last_success
                        .mut_metric()
                        .push(gauge(job, ms.get() as f64 / 1000.0));
                }
            }
        }
        let mut next_firing = family(
            "hourglass_job_next_firing_timestamp_seconds",
            "Each job's next intended firing",
            MetricType::GAUGE,
        );
        let mut paused = family(
            "hourglass_job_paused",
            "1 for a paused job",
            MetricType::GAUGE,
        );
        for job in now {
            if let Some(next) = job.next {
                let at = next.timestamp_millis() as f64 / 1000.0;
                next_firing.mut_metric().push(gauge(job.name, at));
            }
            let p = if job.paused { 1.0 } else { 0.0 };
            paused.mut_metric().push(gauge(job.name, p));
        }
        [runs, last_success, next_firing, paused]
    }

    /// The text format's content type.
    pub fn content_type() -> &'static str {
        prometheus::TEXT_FORMAT
    }
}

/// An empty metric family.
fn family(name: &str, help: &str, kind: MetricType) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f
}

/// A sample with these labels.
fn sample(labels: &[(&str, &str)]) -> proto::Metric {
    proto::Metric::from_label(
        labels
            .iter()
            .map(|(name, value)| {
                let mut l = LabelPair::default();
                l.set_name((*name).to_string());
                l.set_value((*value).to_string());
                l
            })
            .collect(),
    )
}

/// A job's gauge sample.
fn gauge(job: &str, value: f64) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value);
    let mut m = sample(&[("job", job)]);
    m.set_gauge(g);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_with_no_next_firing_leaves_the_text_whole() {
        let m = Metrics::new().unwrap();
        // A one-shot job whose time has passed: no next firing, so an empty family.
        let now = [JobNow {
            name: "once",
            next: None,
            paused: false,
        }];
        let text = m.encode(&now);
        assert!(text.contains("hourglass_build_info"), "{text}");
        assert!(
            text.contains("hourglass_job_paused{job=\"once\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("hourglass_job_next_firing_timestamp_seconds{"),
            "{text}"
        );
    }
}
