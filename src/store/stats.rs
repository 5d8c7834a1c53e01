//! Per-job figures over a stretch of history (`hourglass stats`): runs, success rate,
//! duration, lateness, CPU time and peak memory percentiles, last success and failure.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Backend, RunStatus, Store, StoreError, Ts};

/// One job's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobStats {
    /// The job.
    pub job: String,
    /// Rows that ended (skipped ones included).
    pub runs: u64,
    /// Of them, succeeded.
    pub succeeded: u64,
    /// Of them, skipped (not run).
    pub skipped: u64,
    /// Succeeded among the runs that ran (not skipped), 0 to 1.
    pub success_rate: Option<f64>,
    /// Median duration.
    pub duration_p50_ms: Option<i64>,
    /// 95th percentile of the duration.
    pub duration_p95_ms: Option<i64>,
    /// 95th percentile of the lateness.
    pub lateness_p95_ms: Option<i64>,
    /// Median CPU time (user and system) of the runs that have one (commands).
    pub cpu_p50_us: Option<i64>,
    /// 95th percentile of the CPU time.
    pub cpu_p95_us: Option<i64>,
    /// Median peak memory of the runs that have one.
    pub peak_rss_p50_bytes: Option<i64>,
    /// 95th percentile of the peak memory.
    pub peak_rss_p95_bytes: Option<i64>,
    /// When it last succeeded.
    pub last_success: Option<DateTime<Utc>>,
    /// When it last failed (failed, timed out, abandoned or interrupted).
    pub last_failure: Option<DateTime<Utc>>,
}

type StatRow = (
    String,
    RunStatus,
    Option<i64>,
    Option<i64>,
    Option<Ts>,
    Option<i64>,
    Option<i64>,
);

impl Store {
    /// When each job last succeeded (the end of its newest successful run), for the jobs that
    /// ever did.
    pub async fn last_successes(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let rows: Vec<(String, Option<Ts>)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT job, max(finished_at) FROM runs WHERE status = 'succeeded' GROUP BY job",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(job, at)| Some((job, at?.0)))
            .collect())
    }

    /// Figures per job (of `job` only, when given) over the runs scheduled since `since`
    /// that ended; by job name.
    pub async fn stats(
        &self,
        since: DateTime<Utc>,
        job: Option<&str>,
    ) -> Result<Vec<JobStats>, StoreError> {
        let rows: Vec<StatRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT job, status, duration_ms, lateness_ms, finished_at, \
                 cpu_user_us + cpu_system_us, peak_rss_bytes FROM runs_timed \
                 WHERE scheduled_for >= $1 AND (CAST($2 AS TEXT) IS NULL OR job = $2) \
                 AND status <> 'running'",
            )
            .bind(Ts(since))
            .bind(job)
            .fetch_all(pool)
            .await?
        });
        Ok(aggregate(rows))
    }
}

/// What one job's rows add up to while they are read.
#[derive(Default)]
struct Tally {
    stats: JobStats,
    durations: Vec<i64>,
    lateness: Vec<i64>,
    cpu: Vec<i64>,
    peaks: Vec<i64>,
}

fn aggregate(rows: Vec<StatRow>) -> Vec<JobStats> {
    let mut jobs: BTreeMap<String, Tally> = BTreeMap::new();
    for (job, status, duration, lateness, finished, cpu, peak) in rows {
        let t = jobs.entry(job).or_default();
        t.stats.runs += 1;
        let finished = finished.map(|t| t.0);
        match status {
            RunStatus::Succeeded => {
                t.stats.succeeded += 1;
                t.stats.last_success = t.stats.last_success.max(finished);
            }
            RunStatus::Skipped => t.stats.skipped += 1,
            s if s.is_failure() => {
                t.stats.last_failure = t.stats.last_failure.max(finished);
            }
            // Cancelled or still running: neither.
            _ => {}
        }
        t.durations.extend(duration);
        t.lateness.extend(lateness);
        t.cpu.extend(cpu);
        t.peaks.extend(peak);
    }
    jobs.into_iter()
        .map(|(job, mut t)| {
            let ran = t.stats.runs - t.stats.skipped;
            t.stats.job = job;
            t.stats.success_rate = (ran > 0).then(|| t.stats.succeeded as f64 / ran as f64);
            t.stats.duration_p50_ms = percentile(&mut t.durations, 50);
            t.stats.duration_p95_ms = percentile(&mut t.durations, 95);
            t.stats.lateness_p95_ms = percentile(&mut t.lateness, 95);
            t.stats.cpu_p50_us = percentile(&mut t.cpu, 50);
            t.stats.cpu_p95_us = percentile(&mut t.cpu, 95);
            t.stats.peak_rss_p50_bytes = percentile(&mut t.peaks, 50);
            t.stats.peak_rss_p95_bytes = percentile(&mut t.peaks, 95);
            t.stats
        })
        .collect()
}

/// The nearest-rank percentile `p` of `values` (sorted in place).
fn percentile(values: &mut [i64], p: usize) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (p * values.len()).div_ceil(100).max(1);
    values.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_and_skips_do_not_count_against_success() {
        let row = |status, d: i64| {
            let peak = (d > 100).then_some(d << 20);
            (
                "a".to_string(),
                status,
                Some(d),
                Some(d),
                None,
                Some(d * 1000),
                peak,
            )
        };
        let mut rows: Vec<StatRow> = (1..=19)
            .map(|d| row(RunStatus::Succeeded, d * 10))
            .collect();
        rows.push(row(RunStatus::Failed, 1000));
        rows.push(("a".into(), RunStatus::Skipped, None, None, None, None, None));
        let s = &aggregate(rows)[0];
        assert_eq!((s.runs, s.succeeded, s.skipped), (21, 19, 1));
        assert_eq!(s.success_rate, Some(0.95));
        assert_eq!(s.duration_p50_ms, Some(100));
        assert_eq!(s.duration_p95_ms, Some(190));
        assert_eq!((s.cpu_p50_us, s.cpu_p95_us), (Some(100_000), Some(190_000)));
        // Only the runs with a peak count (110..190 and the failed 1000).
        assert_eq!(s.peak_rss_p50_bytes, Some(150 << 20));
        assert_eq!(s.peak_rss_p95_bytes, Some(1000 << 20));
        assert_eq!(percentile(&mut [7], 95), Some(7));
        assert_eq!(percentile(&mut [], 50), None);
    }
}
