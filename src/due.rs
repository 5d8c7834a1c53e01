//! What becomes of the occurrences of a job that are due at once: each is *late* (at most
//! [`LATE_GRACE`] behind the clock: it runs as a normal firing) or *missed* (older: the job's
//! `catch_up` policy says which run, as catch-up firings, up to [`MAX_CATCH_UP`] within
//! `catch_up_window`). Every occurrence lands in exactly one part of the [`Plan`]: the ones
//! not run are ranges, each recorded as one `skipped` row with its count. Pure: the timer
//! applies the plan.

use chrono::{DateTime, TimeDelta, Utc};

use crate::job::{CatchUp, JobSpec};
use crate::schedule::LATE_GRACE;

/// Most missed firings one catch-up runs for a job (`catch_up = "all"`): the newest ones.
pub const MAX_CATCH_UP: usize = 1000;

/// Why missed occurrences were not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRun {
    /// `catch_up = "skip"`.
    Skip,
    /// `catch_up = "latest"` runs only the newest missed one.
    NotLatest,
    /// Older than `catch_up_window`.
    OutsideWindow,
    /// `catch_up = "all"`: older than the newest [`MAX_CATCH_UP`].
    PastCap,
}

impl NotRun {
    /// The reason in a history row.
    pub fn reason(self, spec: &JobSpec) -> String {
        match self {
            NotRun::Skip => "missed (catch_up = \"skip\")".into(),
            NotRun::NotLatest => {
                "missed; catch_up = \"latest\" runs only the newest missed firing".into()
            }
            NotRun::OutsideWindow => format!(
                "missed, and older than catch_up_window = \"{}\"",
                humantime::format_duration(spec.catch_up_window)
            ),
            NotRun::PastCap => format!(
                "missed; catch_up = \"all\" runs only the newest {MAX_CATCH_UP} missed firings"
            ),
        }
    }
}

/// Consecutive occurrences, `first` to `last` (both occurrences), not run for one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    /// The oldest.
    pub first: DateTime<Utc>,
    /// The newest.
    pub last: DateTime<Utc>,
    /// Why.
    pub why: NotRun,
}

/// The `details` (JSON) of the row recording missed firings `first` to `last` not run:
/// `count` of them (`None`: too many to count), as the README's missed-firings query reads.
pub fn missed_details(count: Option<u64>, first: DateTime<Utc>, last: DateTime<Utc>) -> String {
    serde_json::json!({
        "missed_firings": count,
        "first": crate::store::format_ts(first),
        "last": crate::store::format_ts(last),
    })
    .to_string()
}

/// The occurrences of one job due at one wake, split by what becomes of them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Missed occurrences not run, oldest range first.
    pub not_run: Vec<Missed>,
    /// Missed occurrences to run as catch-up firings, oldest first.
    pub catch_up: Vec<DateTime<Utc>>,
    /// Late occurrences (at most [`LATE_GRACE`] behind `now`), oldest first.
    pub late: Vec<DateTime<Utc>>,
    /// The newest occurrence in the plan.
    pub newest: Option<DateTime<Utc>>,
}

/// Most late occurrences one wake runs for a job (a `every = "1s"` job has 61 at most).
const MAX_LATE: usize = 1000;

const MS: TimeDelta = TimeDelta::milliseconds(1);
/// Just before an instant (`now` and what derives from it are finer than occurrences).
const NS: TimeDelta = TimeDelta::nanoseconds(1);

/// Splits the occurrences of `spec` in `(after, upto]` (`upto <= now`).
pub fn plan(spec: &JobSpec, after: DateTime<Utc>, upto: DateTime<Utc>, now: DateTime<Utc>) -> Plan {
    // The common case, one occurrence due and on time or late, costs two forward searches
    // (a backward one can walk a whole year for a yearly pattern).
    let grace_start = now - LATE_GRACE;
    if let Some(first) = spec.next_fire_after(after).filter(|t| *t <= upto)
        && first >= grace_start
        && spec.next_fire_after(first).is_none_or(|t| t > upto)
    {
        return Plan {
            late: vec![first],
            newest: Some(first),
            ..Plan::default()
        };
    }
    let mut p = Plan {
        newest: spec.latest_fire_at_or_before(upto).filter(|t| *t > after),
        ..Plan::default()
    };
    if p.newest.is_none() {
        return p;
    }
    p.late = late(spec, after.max(grace_start - NS), upto);
    let missed_upto = p
        .late
        .first()
        .map_or(upto, |t| *t - MS)
        .min(grace_start - NS);
    let Some(newest_missed) = spec
        .latest_fire_at_or_before(missed_upto)
        .filter(|t| *t > after)
    else {
        return p;
    };
    let window_start = TimeDelta::from_std(spec.catch_up_window)
        .ok()
        .and_then(|w| now.checked_sub_signed(w))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    p.catch_up = catch_up(spec, after, newest_missed, window_start);
    // What is left, (after, oldest run or newest missed], is not run.
    let left_last = match p.catch_up.first() {
        Some(oldest) => spec.latest_fire_at_or_before(*oldest - MS),
        None => Some(newest_missed),
    }
    .filter(|t| *t > after);
    if let (Some(left_last), Some(left_first)) = (left_last, spec.next_fire_after(after)) {
        p.not_run = not_run(spec, left_first, left_last, window_start);
    }
    p
}

/// The occurrences in `(from, upto]`, oldest first, at most [`MAX_LATE`].
fn late(spec: &JobSpec, from: DateTime<Utc>, upto: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut t = from;
    while let Some(n) = spec.next_fire_after(t).filter(|n| *n <= upto) {
        if out.len() >= MAX_LATE {
            break;
        }
        out.push(n);
        t = n;
    }
    out
}

/// The missed occurrences that run: the newest ones from `newest_missed` back, after `after`
/// and within the window, up to the policy's cap; oldest first. (Searched backwards, so that a
/// long outage costs the cap, not the outage.)
fn catch_up(
    spec: &JobSpec,
    after: DateTime<Utc>,
    newest_missed: DateTime<Utc>,
    window_start: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let cap = match spec.catch_up {
        CatchUp::Skip => 0,
        CatchUp::Latest => 1,
        CatchUp::All => MAX_CATCH_UP,
    };
    let mut out = Vec::new();
    let mut t = Some(newest_missed);
    while let Some(at) = t.filter(|t| *t > after && *t >= window_start) {
        if out.len() >= cap {
            break;
        }
        out.push(at);
        t = spec.latest_fire_at_or_before(at - MS);
    }
    out.reverse();
    out
}

/// The missed occurrences `first..=last` that do not run, as ranges: the part inside the
/// window for the policy's reason, the part before it as outside the window.
fn not_run(
    spec: &JobSpec,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    window_start: DateTime<Utc>,
) -> Vec<Missed> {
    let in_window = match spec.catch_up {
        CatchUp::Skip => NotRun::Skip,
        CatchUp::Latest => NotRun::NotLatest,
        CatchUp::All => NotRun::PastCap,
    };
    if spec.catch_up == CatchUp::Skip || first >= window_start {
        return vec![Missed {
            first,
            last,
            why: in_window,
        }];
    }
    let outside_last = spec
        .latest_fire_at_or_before(window_start - NS)
        .filter(|t| *t >= first)
        .unwrap_or(first)
        .min(last);
    let mut out = vec![Missed {
        first,
        last: outside_last,
        why: NotRun::OutsideWindow,
    }];
    if let Some(inside_first) = spec.next_fire_after(outside_last).filter(|t| *t <= last) {
        out.push(Missed {
            first: inside_first,
            last,
            why: in_window,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Schedule;
    use std::time::Duration;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn every(secs: u64, catch_up: CatchUp, window: u64) -> JobSpec {
        JobSpec {
            catch_up,
            catch_up_window: Duration::from_secs(window),
            ..JobSpec::test_command("j", Schedule::Every(Duration::from_secs(secs)), &["true"])
        }
    }

    /// Every occurrence in `(after, upto]` is in exactly one part of the plan.
    fn accounted(spec: &JobSpec, p: &Plan) -> u64 {
        let ranges: u64 = p
            .not_run
            .iter()
            .map(|m| spec.count_fires(m.first, m.last, u64::MAX).unwrap())
            .sum();
        ranges + p.catch_up.len() as u64 + p.late.len() as u64
    }

    #[test]
    fn two_hours_of_an_every_second_job_with_each_policy() {
        let after = utc("2026-01-01T00:00:00Z");
        let now = utc("2026-01-01T02:00:00.400Z");
        for policy in [CatchUp::Skip, CatchUp::Latest, CatchUp::All] {
            let spec = every(1, policy, 7200);
            let p = plan(&spec, after, now, now);
            assert_eq!(accounted(&spec, &p), 7200, "{policy:?}: {p:?}");
            // 60 late: 01:59:01 .. 02:00:00 (01:59:00 is 60.4 s late).
            assert_eq!(p.late.len(), 60, "{policy:?}");
            assert_eq!(p.late[0], utc("2026-01-01T01:59:01Z"));
            let expected_catch_up = match policy {
                CatchUp::Skip => 0,
                CatchUp::Latest => 1,
                CatchUp::All => MAX_CATCH_UP,
            };
            assert_eq!(p.catch_up.len(), expected_catch_up, "{policy:?}");
            if let Some(last) = p.catch_up.last() {
                assert_eq!(*last, utc("2026-01-01T01:59:00Z"));
                assert!(p.catch_up.windows(2).all(|w| w[0] < w[1]));
            }
            assert_eq!(p.newest, Some(utc("2026-01-01T02:00:00Z")));
        }
    }

    #[test]
    fn the_window_splits_what_is_not_run() {
        let after = utc("2026-01-01T00:00:00Z");
        let now = utc("2026-01-01T02:00:00Z");
        let spec = every(60, CatchUp::All, 3600);
        let p = plan(&spec, after, now, now);
        assert_eq!(accounted(&spec, &p), 120);
        // 02:00 and 01:59 are late (0 s and 60 s); 01:00 .. 01:58 run as catch-up.
        assert_eq!(p.late.len(), 2);
        assert_eq!(p.catch_up.len(), 59);
        assert_eq!(p.catch_up[0], utc("2026-01-01T01:00:00Z"));
        assert_eq!(
            p.not_run,
            [Missed {
                first: utc("2026-01-01T00:01:00Z"),
                last: utc("2026-01-01T00:59:00Z"),
                why: NotRun::OutsideWindow
            }]
        );
        let latest = every(60, CatchUp::Latest, 3600);
        let p = plan(&latest, after, now, now);
        assert_eq!(accounted(&latest, &p), 120);
        assert_eq!(p.catch_up, [utc("2026-01-01T01:58:00Z")]);
        assert_eq!(p.not_run.len(), 2);
        assert_eq!(p.not_run[1].why, NotRun::NotLatest);
        assert_eq!(p.not_run[1].first, utc("2026-01-01T01:00:00Z"));
    }

    #[test]
    fn lateness_is_compared_to_the_microsecond() {
        let spec = every(1, CatchUp::Skip, 86_400);
        let now = utc("2026-01-01T00:01:01.000845Z");
        let p = plan(&spec, utc("2026-01-01T00:00:00Z"), now, now);
        // 00:00:01 is 60.000845 s late: missed.
        assert_eq!(p.late.first(), Some(&utc("2026-01-01T00:00:02Z")));
        assert_eq!(p.late.len(), 60);
        assert_eq!(p.not_run[0].last, utc("2026-01-01T00:00:01Z"));
        assert_eq!(accounted(&spec, &p), 61);
    }

    #[test]
    fn a_single_late_occurrence_is_only_late() {
        let spec = every(60, CatchUp::Skip, 86_400);
        let now = utc("2026-01-01T00:01:00.250Z");
        let p = plan(&spec, utc("2026-01-01T00:00:00Z"), now, now);
        assert_eq!(p.late, [utc("2026-01-01T00:01:00Z")]);
        assert!(p.catch_up.is_empty() && p.not_run.is_empty());
    }

    #[test]
    fn a_missed_daily_firing_beyond_the_window_is_one_row() {
        let mut spec = every(86_400, CatchUp::All, 3600);
        spec.catch_up_window = Duration::from_secs(3600);
        let now = utc("2026-01-03T12:00:00Z");
        let p = plan(&spec, utc("2026-01-01T00:00:00Z"), now, now);
        assert!(p.late.is_empty() && p.catch_up.is_empty());
        assert_eq!(p.not_run.len(), 1);
        assert_eq!(p.not_run[0].why, NotRun::OutsideWindow);
        assert_eq!(accounted(&spec, &p), 2);
    }

    fn cron(expr: &str) -> Schedule {
        let mut cache = crate::schedule::CronCache::default();
        Schedule::Cron {
            expr: expr.into(),
            cron: cache.parse(expr).unwrap(),
            tz: "America/New_York".parse().unwrap(),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// Whatever the schedule, gap, window and policy: every occurrence in the gap is in
        /// exactly one part of the plan; late ones are at most 60 s old and missed ones older;
        /// catch-up firings are within the window, oldest first, at most the cap, and the
        /// newest missed ones; nothing not run is newer than a catch-up firing in the window.
        #[test]
        fn every_occurrence_is_in_exactly_one_part(
            kind in 0usize..6,
            gap_s in 0i64..6 * 3600,
            now_ms in 0i64..1000,
            window_s in proptest::sample::select(vec![60u64, 600, 3600, 7200, 86_400]),
            policy in proptest::sample::select(vec![CatchUp::Skip, CatchUp::Latest, CatchUp::All]),
        ) {
            let schedule = match kind {
                0 => Schedule::Every(Duration::from_secs(1)),
                1 => Schedule::Every(Duration::from_secs(7)),
                2 => cron("* * * * * *"),
                3 => cron("*/10 * * * * *"),
                4 => cron("30 2 * * *"),
                _ => cron("0 */5 * * * *"),
            };
            let mut spec = every(1, policy, window_s);
            spec.schedule = schedule;
            // Around New York's spring-forward night.
            let after = utc("2026-03-08T05:00:00.250Z");
            let now = after + TimeDelta::seconds(gap_s) + TimeDelta::milliseconds(now_ms);
            let p = plan(&spec, after, now, now);
            let first = spec.next_fire_after(after).filter(|t| *t <= now);
            let total = match (first, spec.latest_fire_at_or_before(now)) {
                (Some(a), Some(b)) if b > after => spec.count_fires(a, b, u64::MAX).unwrap(),
                _ => 0,
            };
            proptest::prop_assert_eq!(accounted(&spec, &p), total, "{:?}", p);
            proptest::prop_assert_eq!(p.newest.is_some(), total > 0);
            let grace_start = now - LATE_GRACE;
            let window_start = now - TimeDelta::seconds(window_s as i64);
            proptest::prop_assert!(p.late.iter().all(|t| *t >= grace_start && *t <= now));
            proptest::prop_assert!(p.catch_up.iter().all(|t| *t < grace_start && *t >= window_start));
            proptest::prop_assert!(p.catch_up.windows(2).all(|w| w[0] < w[1]));
            proptest::prop_assert!(p.late.windows(2).all(|w| w[0] < w[1]));
            let cap = match policy { CatchUp::Skip => 0, CatchUp::Latest => 1, CatchUp::All => MAX_CATCH_UP };
            proptest::prop_assert!(p.catch_up.len() <= cap);
            for m in &p.not_run {
                proptest::prop_assert!(m.first <= m.last && m.last < grace_start && m.first > after);
                if let Some(oldest) = p.catch_up.first() {
                    proptest::prop_assert!(m.last < *oldest);
                }
                // A missed firing inside the window is left out only by the policy or the cap.
                if m.why == NotRun::OutsideWindow {
                    proptest::prop_assert!(m.last < window_start);
                } else if p.catch_up.len() < cap {
                    proptest::prop_assert!(m.last < window_start, "{:?}", p);
                }
            }
        }
    }
}
