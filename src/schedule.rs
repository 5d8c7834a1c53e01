//! When a job fires: cron (5 or 6 fields, macros), fixed intervals and one-shot times, each
//! evaluated in the job's IANA time zone, plus a per-job stable jitter.
//!
//! DST rules (inherited from `croner`, pinned by tests below):
//! - a fixed time that does not exist (spring forward) fires once, at the first instant after
//!   the jump;
//! - a fixed time that occurs twice (fall back) fires once, at its first occurrence;
//! - patterns with a wildcard or step in the hour/minute/second fields follow the wall clock,
//!   so `*/15 * * * *` fires in both copies of the repeated hour (as Vixie cron does).
//!
//! Day-of-month and day-of-week follow Vixie cron: when both are restricted, a day matches if
//! *either* matches (`0 0 1 * MON` = the 1st and every Monday). Prefix the day-of-week field with
//! `+` to require both.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A firing at most this late still runs as a normal scheduled firing; older ones count as
/// missed and follow the job's `catch_up` policy.
pub const LATE_GRACE: TimeDelta = TimeDelta::seconds(60);

/// A parsed schedule. Cron patterns are shared (`Arc`) between jobs with the same expression,
/// since each parsed pattern holds a few KB of bitfields.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// A cron expression evaluated in a time zone.
    Cron {
        /// The expression as written.
        expr: String,
        /// The parsed pattern.
        cron: Arc<Cron>,
        /// The zone the pattern's wall-clock fields refer to.
        tz: Tz,
    },
    /// Every `period`, aligned on the Unix epoch (so restarts do not shift it).
    Every(Duration),
    /// Once, at this instant.
    At(DateTime<Utc>),
    /// No schedule: the job runs after its parents (`after`) and by hand only.
    Unscheduled,
}

/// Parses cron expressions and shares the parsed patterns.
#[derive(Debug, Default)]
pub struct CronCache {
    parsed: HashMap<String, Arc<Cron>>,
}

/// The macros of Vixie cron, and what each stands for.
const MACROS: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

impl CronCache {
    /// Parses `expr` (or returns the shared parse of an identical expression). The error is a
    /// sentence meant for a human, without the expression itself.
    pub fn parse(&mut self, expr: &str) -> Result<Arc<Cron>, String> {
        let key = expr.trim().to_string();
        if let Some(cron) = self.parsed.get(&key) {
            return Ok(Arc::clone(cron));
        }
        let expanded = expand_macro(&key)?;
        precheck(expanded)?;
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(expanded).map_err(|e| e.to_string())?;
        let cron = Arc::new(cron);
        self.parsed.insert(key, Arc::clone(&cron));
        Ok(cron)
    }
}

/// The expression a macro (`@daily`) stands for; other expressions as they are.
fn expand_macro(expr: &str) -> Result<&str, String> {
    if !expr.starts_with('@') {
        return Ok(expr);
    }
    let lower = expr.to_ascii_lowercase();
    MACROS
        .iter()
        .find(|(name, _)| *name == lower)
        .map(|(_, e)| *e)
        .ok_or_else(|| {
            let names: Vec<&str> = MACROS.iter().map(|(n, _)| *n).collect();
            format!("unknown macro (expected one of {})", names.join(", "))
        })
}

/// Checks the shape and numeric ranges of an expression, to give errors that say which field
/// is wrong. `croner` parses it afterwards and has the last word.
fn precheck(expr: &str) -> Result<(), String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let names: &[(&str, u32, u32)] = match fields.len() {
        5 => &FIELDS[1..],
        6 => &FIELDS[..],
        n => {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with seconds first), found {n}"
            ));
        }
    };
    for (field, &(name, min, max)) in fields.iter().zip(names) {
        for part in field.trim_start_matches('+').split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            if let Some(step) = step {
                match step.parse::<u32>() {
                    Ok(0) => return Err(format!("{name} step 0 is not allowed")),
                    Ok(_) => {}
                    Err(_) => return Err(format!("{name} step {step:?} is not a number")),
                }
            }
            check_names(name, range)?;
            for value in range.split('-') {
                if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                    let n: u64 = value.parse().unwrap_or(u64::MAX);
                    if n < u64::from(min) || n > u64::from(max) {
                        return Err(format!("{name} {value} is out of range {min}-{max}"));
                    }
                }
            }
            if let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) = (lo.parse::<u32>(), hi.parse::<u32>())
                && lo > hi
            {
                let plural = plural(name);
                let span = |a: u32, b: u32| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                };
                return Err(format!(
                    "{plural} {lo}-{hi}: a range must go upwards (write {hi}-{lo}, or a list such as {},{} to wrap around)",
                    span(lo, max),
                    span(min, hi)
                ));
            }
        }
    }
    never_fires(&fields)
}

/// Words in a field: only month names (JAN-DEC) in months, day names (SUN-SAT) in days of
/// week, and `L`/`W`/`#` forms in days.
fn check_names(name: &str, range: &str) -> Result<(), String> {
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    for value in range.split('-') {
        if !value.bytes().any(|b| b.is_ascii_alphabetic()) {
            continue;
        }
        let upper = value.to_ascii_uppercase();
        let ok = match name {
            "month" => MONTHS.contains(&upper.as_str()),
            "day-of-week" => {
                DAYS.contains(&upper.trim_end_matches('L').split('#').next().unwrap_or(""))
                    || upper == "L"
            }
            "day-of-month" => upper == "L" || upper == "LW" || upper.ends_with('W'),
            _ => false,
        };
        if !ok {
            let expected = match name {
                "month" => "a number 1-12 or a name JAN-DEC",
                "day-of-week" => "a number 0-7 or a name SUN-SAT",
                "day-of-month" => "a number 1-31, L or W",
                _ => "a number",
            };
            return Err(format!("{name} {value:?} is not {expected}"));
        }
    }
    Ok(())
}

fn plural(name: &str) -> &'static str {
    match name {
        "second" => "seconds",
        "minute" => "minutes",
        "hour" => "hours",
        "day-of-month" => "days of month",
        "month" => "months",
        _ => "days of week",
    }
}

/// A pattern whose days of month exist in none of its months (`0 0 30 2 *`) never fires; said
/// here rather than found by a search through the years. Only numeric fields are judged, and
/// only when the day of week is unrestricted (a restricted one fires on its weekdays).
fn never_fires(fields: &[&str]) -> Result<(), String> {
    let [.., dom, month, dow] = fields else {
        return Ok(());
    };
    if !matches!(*dow, "*" | "?") {
        return Ok(());
    }
    let (Some(days), Some(months)) = (numbers(dom, 1, 31), numbers(month, 1, 12)) else {
        return Ok(());
    };
    const LONGEST: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let possible = months.iter().any(|m| {
        let longest = LONGEST[usize::try_from(*m).unwrap_or(1).saturating_sub(1).min(11)];
        days.iter().any(|d| *d <= longest)
    });
    if possible {
        Ok(())
    } else {
        Err(format!(
            "never fires: day {dom} of month {month} does not exist in any year"
        ))
    }
}

/// The values of a numeric field (`*`, `a`, `a-b`, `*/n`, `a-b/n`, lists); `None` when it uses
/// names or special characters.
fn numbers(field: &str, min: u32, max: u32) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok()?.max(1)),
            None => (part, 1),
        };
        let (lo, hi) = match range {
            "*" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                None => {
                    let v = r.parse().ok()?;
                    (v, if part.contains('/') { max } else { v })
                }
            },
        };
        out.extend((lo..=hi.min(max)).step_by(usize::try_from(step).ok()?));
    }
    Some(out)
}

const FIELDS: [(&str, u32, u32); 6] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

impl Schedule {
    /// The first occurrence strictly after `t`, or `None` when there is none (a one-shot time
    /// already passed, or a pattern that never matches again).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { cron, tz, .. } => {
                if t >= cron_horizon_end() {
                    return None;
                }
                // croner works in whole seconds: start from the second `t` falls in. Before
                // the horizon, the first occurrence after its start is the answer.
                let start = truncate_to_second(t.max(cron_horizon_start())).with_timezone(tz);
                cron.find_next_occurrence(&start, false)
                    .ok()
                    .map(|d| d.with_timezone(&Utc))
            }
            Schedule::Every(period) => {
                let p = period_ms(*period);
                let ms = t.timestamp_millis();
                let next = (ms.div_euclid(p) + 1).checked_mul(p)?;
                DateTime::from_timestamp_millis(next)
            }
            Schedule::At(at) => (*at > t).then_some(*at),
            Schedule::Unscheduled => None,
        }
    }

    /// The last occurrence at or before `t`, or `None` when there is none.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { cron, tz, .. } => {
                if t < cron_horizon_start() {
                    return None;
                }
                let start = truncate_to_second(t.min(cron_horizon_end())).with_timezone(tz);
                cron.find_previous_occurrence(&start, true)
                    .ok()
                    .map(|d| d.with_timezone(&Utc))
            }
            Schedule::Every(period) => {
                let p = period_ms(*period);
                let ms = t.timestamp_millis();
                DateTime::from_timestamp_millis(ms.div_euclid(p).checked_mul(p)?)
            }
            Schedule::At(at) => (*at <= t).then_some(*at),
            Schedule::Unscheduled => None,
        }
    }

    /// How many occurrences lie in `[first, last]`; `None` when more than `limit` (cron
    /// patterns are counted one by one; intervals by arithmetic).
    pub fn count_between(
        &self,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        limit: u64,
    ) -> Option<u64> {
        if last < first {
            return Some(0);
        }
        let n = match self {
            Schedule::Every(period) => {
                let p = period_ms(*period);
                let span = (last - first).num_milliseconds();
                // `first` is an occurrence or before one: count the grid points in the span.
                let below = |t: i64| t.div_euclid(p);
                let first_ms = first.timestamp_millis();
                let n = below(first_ms + span) - below(first_ms - 1);
                u64::try_from(n).unwrap_or(0)
            }
            Schedule::At(at) => u64::from(*at >= first && *at <= last),
            Schedule::Unscheduled => 0,
            Schedule::Cron { .. } => {
                let mut n = 0;
                let mut t = first - TimeDelta::milliseconds(1);
                while let Some(next) = self.next_after(t).filter(|x| *x <= last) {
                    n += 1;
                    if n > limit {
                        return None;
                    }
                    t = next;
                }
                n
            }
        };
        (n <= limit).then_some(n)
    }

    /// The schedule in words, e.g. `At 03:00` or `Every 30s` (croner's English; the
    /// expression itself should its description fail).
    pub fn in_words(&self) -> String {
        match self {
            Schedule::Cron { expr, cron, .. } => {
                let described =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cron.describe()));
                described.map_or_else(|_| expr.clone(), |d| plain_english(&d))
            }
            Schedule::Every(p) => format!("Every {}", humantime::format_duration(*p)),
            Schedule::At(at) => format!("Once, at {}", at.format("%Y-%m-%d %H:%M:%S UTC")),
            Schedule::Unscheduled => "After its parents, and by hand".to_string(),
        }
    }

    /// The expression as written (cron), or the period or instant.
    pub fn expression(&self) -> String {
        match self {
            Schedule::Cron { expr, .. } => expr.clone(),
            Schedule::Every(p) => format!("every = \"{}\"", humantime::format_duration(*p)),
            Schedule::At(at) => format!("at = \"{}\"", at.to_rfc3339()),
            Schedule::Unscheduled => "no schedule".to_string(),
        }
    }

    /// A short human description, e.g. `cron "0 3 * * *" (Europe/Berlin)`.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Cron { expr, tz, .. } => format!("cron {expr:?} ({tz})"),
            Schedule::Every(p) => format!("every {}", humantime::format_duration(*p)),
            Schedule::At(at) => format!("at {}", at.to_rfc3339()),
            Schedule::Unscheduled => "no schedule (after its parents, or by hand)".to_string(),
        }
    }
}

/// croner's description in plainer English: "At every 10 seconds." is "Every 10 seconds",
/// "At minute 0, of every 2 hours." is "At minute 0 of every 2 hours" (a label, not a
/// sentence: no final full stop).
fn plain_english(described: &str) -> String {
    let d = described.trim().trim_end_matches('.');
    let d = d
        .strip_prefix("At every ")
        .map_or_else(|| d.to_string(), |rest| format!("Every {rest}"));
    d.replace(", of ", " of ")
}

/// Cron patterns are evaluated between 1970 and 9000: at the edges of what dates can hold,
/// converting an instant to a zone's local time overflows (a timestamp in the year 262143
/// would panic), and no job means a time that far.
fn cron_horizon_start() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

fn cron_horizon_end() -> DateTime<Utc> {
    DateTime::from_timestamp(221_845_392_000, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn period_ms(period: Duration) -> i64 {
    i64::try_from(period.as_millis()).unwrap_or(i64::MAX).max(1)
}

fn truncate_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// A job's fixed jitter offset: a stable hash of its name mapped into `[0, jitter)`, so that
/// restarts do not move a job around (like systemd's `FixedRandomDelay=`).
pub fn jitter_offset(job: &str, jitter: Duration) -> TimeDelta {
    let span = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
    if span == 0 {
        return TimeDelta::zero();
    }
    // FNV-1a: stable across Rust versions and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in job.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    TimeDelta::milliseconds(i64::try_from(hash % span).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_in_words_read_as_labels() {
        let mut cache = CronCache::default();
        for (expr, words) in [
            ("*/10 * * * * *", "Every 10 seconds"),
            ("0 3 * * *", "At 03:00"),
            ("0 */2 * * *", "At minute 0 of every 2 hours"),
        ] {
            let cron = cache.parse(expr).unwrap();
            let tz = chrono_tz::UTC;
            let s = Schedule::Cron {
                expr: expr.into(),
                cron,
                tz,
            };
            assert_eq!(s.in_words(), words);
        }
    }
    use chrono::TimeZone;

    fn cron(expr: &str, tz: Tz) -> Schedule {
        let mut cache = CronCache::default();
        Schedule::Cron {
            expr: expr.into(),
            cron: cache.parse(expr).unwrap(),
            tz,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// All occurrences in `[from, to)`, as UTC RFC 3339 strings.
    fn occurrences(s: &Schedule, from: &str, to: &str) -> Vec<String> {
        let (mut t, end) = (utc(from), utc(to));
        let mut out = vec![];
        while let Some(n) = s.next_after(t) {
            if n >= end {
                break;
            }
            out.push(n.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            t = n;
        }
        out
    }

    #[test]
    fn backward_ranges_and_impossible_days_are_errors() {
        let mut cache = CronCache::default();
        assert_eq!(
            cache.parse("0 5-2 * * *").unwrap_err(),
            "hours 5-2: a range must go upwards (write 2-5, or a list such as 5-23,0-2 to wrap around)"
        );
        assert!(
            cache
                .parse("0 0 30 2 *")
                .unwrap_err()
                .starts_with("never fires")
        );
        assert!(
            cache
                .parse("0 0 31 4,6,9,11 *")
                .unwrap_err()
                .starts_with("never fires")
        );
        // Possible once every four years, or on a weekday: accepted.
        assert!(cache.parse("0 0 29 2 *").is_ok());
        assert!(cache.parse("0 0 30 2 MON").is_ok());
        assert!(cache.parse("0 0 30 1-2 *").is_ok());
    }

    #[test]
    fn precise_errors_name_the_field() {
        let mut c = CronCache::default();
        assert_eq!(
            c.parse("0 61 * * *").unwrap_err(),
            "hour 61 is out of range 0-23"
        );
        assert_eq!(
            c.parse("61 * * * *").unwrap_err(),
            "minute 61 is out of range 0-59"
        );
        assert_eq!(
            c.parse("* 0 61 * * *").unwrap_err(),
            "hour 61 is out of range 0-23"
        );
        assert!(c.parse("* * *").unwrap_err().contains("found 3"));
        assert!(c.parse("@reboot").unwrap_err().contains("unknown macro"));
        assert!(c.parse("*/0 * * * *").unwrap_err().contains("step 0"));
        assert!(
            c.parse("0 0 32 * *")
                .unwrap_err()
                .contains("day-of-month 32")
        );
        assert!(c.parse("0 0 * 13 *").unwrap_err().contains("month 13"));
        assert!(c.parse("0 0 * * 8").unwrap_err().contains("day-of-week 8"));
        assert!(c.parse("x * * * *").is_err());
        assert!(c.parse("@daily").is_ok());
        // Every macro the error names is accepted, and means what Vixie cron means.
        let t = DateTime::parse_from_rfc3339("2026-03-04T05:06:07Z")
            .unwrap()
            .with_timezone(&Utc);
        for (name, expr) in MACROS {
            let by_macro = c.parse(name).unwrap();
            let by_expr = c.parse(expr).unwrap();
            assert_eq!(
                by_macro.find_next_occurrence(&t, false).unwrap(),
                by_expr.find_next_occurrence(&t, false).unwrap(),
                "{name}"
            );
        }
        assert!(c.parse("0 3 * JAN MON-FRI").is_ok());
    }

    #[test]
    fn identical_expressions_share_one_parse() {
        let mut c = CronCache::default();
        let a = c.parse("*/5 * * * *").unwrap();
        let b = c.parse(" */5 * * * * ").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn six_fields_fire_every_second_and_five_every_minute() {
        let s = cron("* * * * * *", Tz::UTC);
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:00.400Z")),
            Some(utc("2026-01-01T00:00:01Z"))
        );
        let m = cron("* * * * *", Tz::UTC);
        assert_eq!(
            m.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2026-01-01T00:01:00Z"))
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_as_vixie_cron() {
        // 2026-06-01 is a Monday; the 1st or any Friday.
        let s = cron("0 12 1 * FRI", Tz::UTC);
        let got = occurrences(&s, "2026-06-01T13:00:00Z", "2026-06-16T00:00:00Z");
        assert_eq!(got, ["2026-06-05T12:00:00Z", "2026-06-12T12:00:00Z"]);
        let got = occurrences(&s, "2026-06-20T00:00:00Z", "2026-07-04T00:00:00Z");
        assert_eq!(
            got,
            [
                "2026-06-26T12:00:00Z",
                "2026-07-01T12:00:00Z",
                "2026-07-03T12:00:00Z"
            ]
        );
    }

    #[test]
    fn new_york_spring_forward_runs_missing_time_once_after_the_jump() {
        // 2026-03-08 02:00 EST jumps to 03:00 EDT; 02:30 does not exist.
        let ny: Tz = "America/New_York".parse().unwrap();
        let s = cron("30 2 * * *", ny);
        let got = occurrences(&s, "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z");
        // 07 02:30 EST = 07:30Z; 08: first instant after the gap, 03:00 EDT = 07:00Z; 09 02:30 EDT = 06:30Z
        assert_eq!(
            got,
            [
                "2026-03-07T07:30:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-09T06:30:00Z"
            ]
        );
    }

    #[test]
    fn new_york_fall_back_runs_repeated_time_once() {
        // 2026-11-01 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let ny: Tz = "America/New_York".parse().unwrap();
        let s = cron("30 1 * * *", ny);
        let got = occurrences(&s, "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z");
        assert_eq!(
            got,
            [
                "2026-10-31T05:30:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:30:00Z"
            ]
        );
        // An hourly pattern follows the wall clock through both copies of 01:xx.
        let h = cron("0 * * * *", ny);
        let got = occurrences(&h, "2026-11-01T04:30:00Z", "2026-11-01T07:30:00Z");
        assert_eq!(
            got,
            [
                "2026-11-01T05:00:00Z",
                "2026-11-01T06:00:00Z",
                "2026-11-01T07:00:00Z"
            ]
        );
    }

    #[test]
    fn berlin_spring_forward_and_fall_back() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-29 02:00 CET jumps to 03:00 CEST: 02:15 does not exist.
        let s = cron("15 2 * * *", berlin);
        let got = occurrences(&s, "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z");
        assert_eq!(
            got,
            [
                "2026-03-28T01:15:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:15:00Z"
            ]
        );
        // 2026-10-25 03:00 CEST falls back to 02:00 CET: 02:15 happens twice, runs once.
        let got = occurrences(&s, "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z");
        assert_eq!(
            got,
            [
                "2026-10-24T00:15:00Z",
                "2026-10-25T00:15:00Z",
                "2026-10-26T01:15:00Z"
            ]
        );
    }

    #[test]
    fn zone_is_not_frozen_to_one_offset() {
        // 09:00 Berlin is 08:00Z in winter and 07:00Z in summer.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let s = cron("0 9 * * *", berlin);
        assert_eq!(
            s.next_after(utc("2026-03-01T00:00:00Z")),
            Some(utc("2026-03-01T08:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-04-01T00:00:00Z")),
            Some(utc("2026-04-01T07:00:00Z"))
        );
        let at = berlin.with_ymd_and_hms(2026, 4, 1, 9, 0, 0).unwrap();
        assert_eq!(
            s.latest_at_or_before(at.with_timezone(&Utc)),
            Some(at.with_timezone(&Utc))
        );
    }

    #[test]
    fn intervals_align_on_the_epoch() {
        let s = Schedule::Every(Duration::from_secs(90));
        let t = utc("2026-01-01T00:00:00Z"); // 1767225600 = 19635840 * 90
        assert_eq!(s.next_after(t), Some(utc("2026-01-01T00:01:30Z")));
        assert_eq!(s.latest_at_or_before(t), Some(t));
        assert_eq!(
            s.latest_at_or_before(utc("2026-01-01T00:01:29.999Z")),
            Some(t)
        );
    }

    #[test]
    fn one_shot_fires_once() {
        let at = utc("2026-05-01T10:00:00Z");
        let s = Schedule::At(at);
        assert_eq!(s.next_after(utc("2026-05-01T09:00:00Z")), Some(at));
        assert_eq!(s.next_after(at), None);
        assert_eq!(s.latest_at_or_before(utc("2026-05-01T09:00:00Z")), None);
    }

    #[test]
    fn jitter_is_stable_and_bounded() {
        let j = Duration::from_secs(30);
        let a = jitter_offset("nightly-backup", j);
        assert_eq!(a, jitter_offset("nightly-backup", j));
        assert!(a >= TimeDelta::zero() && a < TimeDelta::seconds(30));
        assert_ne!(a, jitter_offset("other-job", j));
        assert_eq!(jitter_offset("x", Duration::ZERO), TimeDelta::zero());
    }
}
