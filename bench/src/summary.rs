//! What a round of firings comes to: lateness percentiles, counts of firings run, missed and
//! doubled, medians over rounds and ratios against the peer.

use super::*;

/// One firing, in ms since the epoch.
#[derive(Debug, Clone)]
pub(crate) struct Fire {
    pub(crate) job: String,
    pub(crate) intended: i64,
    pub(crate) started: i64,
}

pub(crate) fn fires_of(runs: &[RunRow], prefix: &str) -> Vec<Fire> {
    runs.iter()
        .filter(|r| r.job.starts_with(prefix) && r.trigger == hourglass::store::Trigger::Schedule)
        .filter_map(|r| {
            let intended = r.scheduled_for;
            let started = r.started_at?;
            Some(Fire {
                job: r.job.clone(),
                intended: intended.timestamp_millis(),
                started: started.timestamp_millis(),
            })
        })
        .collect()
}

/// The summary of the `fires` of `jobs` periodic jobs whose intended time is in `[from, to)`.
pub(crate) fn summarize_between(
    fires: &[Fire],
    jobs: usize,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Summary {
    let (from, to) = (from.timestamp_millis(), to.timestamp_millis());
    let within: Vec<Fire> = fires
        .iter()
        .filter(|f| f.intended >= from && f.intended < to)
        .cloned()
        .collect();
    summarize_periodic(&within, jobs)
}

/// Lateness percentiles and firing counts of one round.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Summary {
    pub(crate) p50: i64,
    pub(crate) p99: i64,
    pub(crate) max: i64,
    pub(crate) count: usize,
    pub(crate) missed: usize,
    pub(crate) doubled: usize,
}

pub(crate) fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Every-second jobs: missed and doubled firings are counted per job over the whole seconds
/// strictly inside the observed span (its edges may be cut by the start and the stop).
pub(crate) fn summarize_periodic(fires: &[Fire], jobs: usize) -> Summary {
    let mut s = summarize_once(fires, jobs);
    let (Some(first), Some(last)) = (
        fires.iter().map(|f| f.intended / 1000).min(),
        fires.iter().map(|f| f.intended / 1000).max(),
    ) else {
        return s;
    };
    let mut per_job: std::collections::HashMap<&str, Vec<i64>> = Default::default();
    for f in fires {
        let sec = f.intended / 1000;
        if sec > first && sec < last {
            per_job.entry(&f.job).or_default().push(sec);
        }
    }
    let inside = usize::try_from(last - first - 1).unwrap_or(0);
    s.missed = jobs.saturating_sub(per_job.len()) * inside;
    s.doubled = 0;
    for secs in per_job.values_mut() {
        secs.sort_unstable();
        let n = secs.len();
        secs.dedup();
        s.doubled += n - secs.len();
        s.missed += inside.saturating_sub(secs.len());
    }
    s
}

/// One-shot jobs: each of `jobs` should fire once.
pub(crate) fn summarize_once(fires: &[Fire], jobs: usize) -> Summary {
    let mut late: Vec<i64> = fires.iter().map(|f| f.started - f.intended).collect();
    late.sort_unstable();
    let mut names: Vec<&str> = fires.iter().map(|f| f.job.as_str()).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    Summary {
        p50: percentile(&late, 0.5),
        p99: percentile(&late, 0.99),
        max: late.last().copied().unwrap_or(-1),
        count: fires.len(),
        missed: jobs.saturating_sub(names.len()),
        doubled: n - names.len(),
    }
}

/// The median of each figure over rounds; counts are summed.
pub(crate) fn median(rounds: &[Summary]) -> Summary {
    let med = |f: fn(&Summary) -> i64| {
        let mut v: Vec<i64> = rounds.iter().map(f).collect();
        v.sort_unstable();
        percentile(&v, 0.5)
    };
    Summary {
        p50: med(|s| s.p50),
        p99: med(|s| s.p99),
        max: med(|s| s.max),
        count: rounds.iter().map(|s| s.count).sum(),
        missed: rounds.iter().map(|s| s.missed).sum(),
        doubled: rounds.iter().map(|s| s.doubled).sum(),
    }
}

pub(crate) fn show(s: &Summary) -> String {
    format!("{} / {} / {} ms", s.p50, s.p99, s.max)
}

pub(crate) fn ratio(peer: i64, hg: i64) -> String {
    if hg <= 0 {
        format!("peer {peer} ms vs ≤ 1 ms")
    } else {
        format!("{:.1}×", peer as f64 / hg as f64)
    }
}
