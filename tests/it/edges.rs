//! The edges, end to end on the real binary: the wall clock stepping forward and back (under
//! libfaketime, the monotonic clock left real), a stop and a reload with firings queued, `TZ`,
//! and what `hourglass trigger` says.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::{Daemon, finished, ts, wait_for};
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use hourglass::store::{RunRow, RunStatus, Trigger};
use nix::sys::signal::Signal;

const SEC: Duration = Duration::from_secs(1);

/// A row standing for several missed firings: (count, first, last).
fn summary(r: &RunRow) -> Option<(i64, DateTime<Utc>, DateTime<Utc>)> {
    let d = r.details.as_ref()?;
    Some((
        d["missed_firings"].as_i64()?,
        ts(d["first"].as_str()?),
        ts(d["last"].as_str()?),
    ))
}

/// How many times each occurrence (every `period`) from the job's first to its last row is
/// accounted for, by a row of its own or inside a summary row's range.
fn coverage(rows: &[RunRow], period: TimeDelta) -> BTreeMap<DateTime<Utc>, u32> {
    let mut seen: BTreeMap<DateTime<Utc>, u32> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.attempt == 1) {
        match summary(r) {
            Some((n, first, last)) => {
                let mut t = first;
                let mut counted = 0;
                while t <= last {
                    *seen.entry(t).or_default() += 1;
                    counted += 1;
                    t += period;
                }
                assert_eq!(counted, n, "summary row count: {r:#?}");
            }
            None => *seen.entry(r.scheduled_for).or_default() += 1,
        }
    }
    let (first, last) = (*seen.keys().next().unwrap(), *seen.keys().last().unwrap());
    let mut t = first;
    while t <= last {
        seen.entry(t).or_default();
        t += period;
    }
    seen
}

fn assert_each_once(job: &str, rows: &[RunRow], period: TimeDelta) {
    let cov = coverage(rows, period);
    let wrong: Vec<_> = cov.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        wrong.is_empty(),
        "{job}: occurrences not accounted for exactly once: {:?}",
        &wrong[..wrong.len().min(10)]
    );
}

/// When (by the daemon's clock, as in its rows) it logged the `nth` line containing `needle`.
fn logged_at(d: &Daemon, needle: &str, nth: usize) -> DateTime<Utc> {
    let log = d.log();
    let line = log
        .lines()
        .filter(|l| l.contains(needle))
        .nth(nth)
        .unwrap_or_else(|| panic!("no line {nth} with {needle:?} in the log:\n{log}"));
    let stamp = line.split_whitespace().next().unwrap();
    DateTime::parse_from_rfc3339(stamp)
        .unwrap()
        .with_timezone(&Utc)
}

/// The errors of a job's `skipped` rows.
fn skipped_errors(rows: &[RunRow]) -> Vec<String> {
    rows.iter()
        .filter(|r| r.status == RunStatus::Skipped)
        .map(|r| r.error.clone().unwrap_or_default())
        .collect()
}

/// Every run of `rows` started before `at`.
fn none_started_after(name: &str, rows: &[RunRow], at: DateTime<Utc>) {
    for r in rows {
        if let Some(s) = r.started_at {
            assert!(s < at, "{name} started a run after {at}: {r:#?}");
        }
    }
}

const FORWARD_JOBS: &str = r#"
[jobs.skip]
schedule = "* * * * * *"
command = "true"

[jobs.latest]
schedule = "* * * * * *"
catch_up = "latest"
catch_up_window = "3h"
command = "true"

[jobs.all]
schedule = "* * * * * *"
catch_up = "all"
catch_up_window = "3h"
command = "true"

[jobs.all10]
schedule = "*/10 * * * * *"
catch_up = "all"
catch_up_window = "3h"
command = "true"
"#;

/// The wall clock steps forward 1 h, and 2 h: each occurrence in between is accounted for
/// exactly once (a run, or inside one `skipped` row per reason with its count); `skip` runs
/// none of the missed ones, `latest` one, `all` each one up to the cap of 1000 (the newest),
/// none beyond; firings at most 60 s late run as `schedule`, older ones as `catch_up`.
#[test]
fn forward_steps_follow_each_catch_up_policy() {
    for hours in [1, 2] {
        let mut d = Daemon::prepare("", FORWARD_JOBS);
        let clock = d.fake_clock();
        d.spawn_ready();
        d.wait_runs("all10", 15 * SEC, "a first firing", |r| !r.is_empty());
        clock.set_offset(hours * 3600);
        let missed_10s = (hours * 360 - 6) as usize;
        d.wait_runs("all10", 60 * SEC, "its catch-up", |r| {
            r.iter().filter(|r| r.trigger == Trigger::CatchUp).count() >= missed_10s
                && r.iter().all(finished)
        });
        d.wait_runs("all", 90 * SEC, "its catch-up", |r| {
            r.iter()
                .filter(|r| r.trigger == Trigger::CatchUp && r.status == RunStatus::Succeeded)
                .count()
                >= 1000
        });
        std::thread::sleep(2 * SEC);
        d.signal(Signal::SIGTERM);
        assert!(d.wait_exit(20 * SEC).success());
        let noticed = logged_at(&d, "system clock jumped", 0);
        for (job, period) in [("skip", 1), ("latest", 1), ("all", 1), ("all10", 10)] {
            let rows = d.runs_of(job);
            assert_each_once(job, &rows, TimeDelta::seconds(period));
            let ran_catch_up = rows
                .iter()
                .filter(|r| r.trigger == Trigger::CatchUp && summary(r).is_none())
                .count();
            let expected = match job {
                "skip" => 0,
                "latest" => 1,
                "all" => 1000,
                _ => missed_10s,
            };
            assert_eq!(ran_catch_up, expected, "{job}, {hours} h: catch-up runs");
            for r in &rows {
                let at = r.scheduled_for;
                let lateness = noticed - at;
                if r.trigger == Trigger::CatchUp && summary(r).is_none() {
                    assert!(lateness > TimeDelta::seconds(59), "{job}: {r:#?}");
                    assert_eq!(r.status, RunStatus::Succeeded, "{job}: {r:#?}");
                } else if r.trigger == Trigger::Schedule && lateness > TimeDelta::seconds(61) {
                    // Only the firings before the step, run on time.
                    let started = r.started_at.unwrap_or(r.scheduled_for);
                    assert!(started - at < TimeDelta::seconds(2), "{job}: {r:#?}");
                }
            }
            let summaries: Vec<_> = rows.iter().filter_map(summary).collect();
            match job {
                "all10" => assert!(summaries.is_empty(), "{summaries:?}"),
                "all" => {
                    // Past the cap: everything missed before the newest 1000. The step is seen
                    // at the timer's wake, a whole second (the occurrence due then is one of
                    // the 60 s late grace, leaving one more missed), or between two (the
                    // minute backstop, the kernel's word on a real step).
                    let past_cap: i64 = summaries.iter().map(|s| s.0).sum();
                    let whole = hours * 3600 - 60 - 1000;
                    assert!(
                        past_cap == whole || past_cap == whole + 1,
                        "{past_cap} past the cap: {summaries:?}"
                    );
                }
                _ => assert_eq!(summaries.len(), 1, "{job}: {summaries:?}"),
            }
        }
    }
}

/// The wall clock steps back 30 s, then 10 min: an every-second cron job and an `every = "1s"`
/// job go on at the new times at once (missing at most the second of each step), no
/// occurrence runs twice, and no run is intended for a time ahead of the clock. Then 4 h (over
/// the bound): a WARN, and they go on from the new time.
#[test]
fn backward_steps_keep_every_second_jobs_firing() {
    let jobs = "[jobs.sec]\nschedule = \"* * * * * *\"\ncommand = \"true\"\n\n\
                [jobs.every]\nevery = \"1s\"\ncommand = \"true\"\n";
    let mut d = Daemon::prepare("", jobs);
    let clock = d.fake_clock();
    d.spawn_ready();
    d.wait_runs("sec", 15 * SEC, "three firings", |r| r.len() >= 3);
    clock.set_offset(-30);
    std::thread::sleep(5 * SEC);
    clock.set_offset(-630);
    std::thread::sleep(5 * SEC);
    // Over the 3 h bound: schedules start again from the new time, with a WARN.
    clock.set_offset(-630 - 4 * 3600);
    std::thread::sleep(4 * SEC);
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(20 * SEC).success());
    let log = d.log();
    assert_eq!(
        log.matches("WARN the clock stepped back: occurrences already run are not run again")
            .count(),
        2,
        "{log}"
    );
    assert_eq!(
        log.matches("WARN the clock stepped back by more than 3 hours")
            .count(),
        1,
        "{log}"
    );
    for job in ["sec", "every"] {
        let rows = d.runs_of(job);
        let times: Vec<_> = rows.iter().map(|r| r.scheduled_for).collect();
        let mut unique = times.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            times.len(),
            "{job}: an occurrence ran twice: {times:?}"
        );
        for r in &rows {
            assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
            assert!(
                r.started_at.unwrap() >= r.scheduled_for,
                "{job}: intended for a time ahead of the clock: {r:#?}"
            );
        }
        // Three stretches, each one second after another; each step lands where the clock
        // went (the step itself is 30 s, then 600 s, minus the second it took).
        let mut stretches: Vec<Vec<DateTime<Utc>>> = vec![vec![times[0]]];
        for w in times.windows(2) {
            if w[1] < w[0] {
                stretches.push(Vec::new());
            } else {
                assert_eq!(
                    w[1] - w[0],
                    TimeDelta::seconds(1),
                    "{job}: a second was missed: {times:?}"
                );
            }
            stretches.last_mut().unwrap().push(w[1]);
        }
        assert_eq!(stretches.len(), 4, "{job}: {times:?}");
        for (k, step) in [(1, 30), (2, 600), (3, 4 * 3600)] {
            let before = *stretches[k - 1].last().unwrap();
            let back = before - stretches[k][0];
            assert!(
                back >= TimeDelta::seconds(step - 2) && back <= TimeDelta::seconds(step),
                "{job}: step {k} went back {back} from {before}: {times:?}"
            );
            assert!(stretches[k].len() >= 3, "{job}: {times:?}");
        }
    }
}

/// SIGTERM with firings queued behind a run (`overlap = "queue"`): the run finishes within
/// the grace, no queued firing starts after the signal, and each is recorded `skipped`
/// ("daemon stopping"). The signal lands in the middle of a run, seconds away from the
/// instant the queue starts its next firing (a firing whose process is being spawned as the
/// signal arrives started before it).
#[test]
fn sigterm_with_a_queue_starts_nothing_and_records_each_firing() {
    let jobs = "[jobs.q]\nevery = \"1s\"\noverlap = \"queue\"\ncommand = \"sleep 5\"\n";
    let mut d = Daemon::start("", jobs);
    wait_for(
        Duration::from_secs(60),
        "a signal 2.5-3.5 s into a run",
        || {
            let rows = d.runs_of("q");
            let started = rows
                .iter()
                .filter(|r| r.status == RunStatus::Running)
                .find_map(|r| r.started_at)?;
            let aim = started + TimeDelta::milliseconds(2500);
            if let Ok(wait) = (aim - Utc::now()).to_std() {
                std::thread::sleep(wait);
            }
            if Utc::now() > started + TimeDelta::milliseconds(3500) {
                return None;
            }
            d.signal(Signal::SIGTERM);
            Some(())
        },
    );
    assert!(d.wait_exit(20 * SEC).success());
    let rows = d.runs_of("q");
    none_started_after("q", &rows, logged_at(&d, "shutting down", 0));
    let stopping = skipped_errors(&rows);
    assert!(stopping.len() >= 2, "{rows:#?}");
    assert!(
        stopping.iter().all(|e| e.starts_with("daemon stopping")),
        "{stopping:?}"
    );
    assert!(
        rows.iter().any(|r| r.status == RunStatus::Succeeded),
        "{rows:#?}"
    );
}

/// A reload renames a job with firings queued, then removes the new name: the old name's
/// queued firings are recorded `skipped` and none starts after the reload; the new name is a
/// new job that fires; once removed, it too starts nothing more.
#[test]
fn rename_and_removal_drop_the_queue() {
    let job = |name: &str| {
        format!("[jobs.{name}]\nevery = \"1s\"\noverlap = \"queue\"\ncommand = \"sleep 2\"\n")
    };
    let mut d = Daemon::start("", &job("r"));
    d.wait_runs("r", 15 * SEC, "a run", |r| !r.is_empty());
    std::thread::sleep(Duration::from_millis(2500));
    d.drain_notes();
    d.write_jobs("jobs.toml", &job("r2"));
    d.wait_note("READY=1", 10 * SEC);
    d.wait_runs("r2", 10 * SEC, "the new name's run", |r| !r.is_empty());
    std::thread::sleep(Duration::from_millis(2500));
    d.write_jobs("jobs.toml", "");
    d.wait_note("READY=1", 10 * SEC);
    std::thread::sleep(4 * SEC);
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(20 * SEC).success());
    for (k, name) in ["r", "r2"].into_iter().enumerate() {
        let rows = d.runs_of(name);
        none_started_after(name, &rows, logged_at(&d, "configuration reloaded", k));
        let dropped = skipped_errors(&rows);
        assert!(!dropped.is_empty(), "{name}: {rows:#?}");
        assert!(
            dropped.iter().all(|e| e.starts_with("job removed")),
            "{name}: {dropped:?}"
        );
    }
}

/// `TZ` (`Area/City` and `:Area/City`) is the default zone when `daemon.timezone` is unset:
/// `list` shows it, and the daemon fires a cron job at that zone's wall-clock time.
#[test]
fn tz_is_the_default_zone_for_list_and_the_daemon() {
    let ny: chrono_tz::Tz = "America/New_York".parse().unwrap();
    // Every second of one New York hour (never the same hour in UTC): the hour 10 s from now.
    let hour = (Utc::now() + TimeDelta::seconds(10))
        .with_timezone(&ny)
        .hour();
    let jobs = format!("[jobs.ny]\nschedule = \"* * {hour} * * *\"\ncommand = \"true\"\n");
    let mut d = Daemon::prepare("[daemon]\nshutdown_grace = \"5s\"\n", &jobs);
    for tz in ["America/New_York", ":America/New_York"] {
        let out = std::process::Command::new(crate::harness::BIN)
            .env("TZ", tz)
            .arg("--config")
            .arg(d.config())
            .arg("list")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("(America/New_York)"), "TZ={tz}: {text}");
    }
    d.extra_env.push(("TZ".into(), ":America/New_York".into()));
    d.spawn_ready();
    let rows = d.wait_runs("ny", 20 * SEC, "a New York firing", |r| {
        !r.is_empty() && finished(&r[0])
    });
    assert_eq!(rows[0].scheduled_for.with_timezone(&ny).hour(), hour);
}

/// `hourglass trigger` says what happened, with an exit status for each: 0 and the run id
/// when it started; 4 and why when `overlap = "skip"` skipped it; 3 and behind which run
/// when `overlap = "queue"` queued it.
#[test]
fn trigger_says_started_queued_or_skipped() {
    let jobs = "[jobs.s]\nevery = \"1h\"\nenabled = false\ncommand = \"sleep 3\"\n\n\
                [jobs.q]\nevery = \"1h\"\nenabled = false\noverlap = \"queue\"\ncommand = \"sleep 3\"\n";
    let d = Daemon::start("", jobs);
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    // "run 42 of "s" started ...": exit 0 and the id.
    let started = |job: &str| -> i64 {
        let out = d.cli(&["trigger", job]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        text(&out)
            .split_whitespace()
            .nth(1)
            .and_then(|w| w.parse().ok())
            .unwrap()
    };
    let id = started("s");
    let second = d.cli(&["trigger", "s"]);
    assert_eq!(second.status.code(), Some(4), "{}", text(&second));
    assert!(
        text(&second).contains(&format!("run {id} is still active (overlap = \"skip\")")),
        "{}",
        text(&second)
    );
    let qid = started("q");
    let q2 = d.cli(&["trigger", "q"]);
    assert_eq!(q2.status.code(), Some(3), "{}", text(&q2));
    assert!(
        text(&q2).contains(&format!("behind run {qid}")),
        "{}",
        text(&q2)
    );
    // The queued firing runs after the first.
    let runs = d.wait_runs("q", 20 * SEC, "both runs", |r| {
        r.len() == 2 && r.iter().all(finished)
    });
    assert!(
        runs.iter().all(|r| r.status == RunStatus::Succeeded),
        "{runs:#?}"
    );
    let help = d.cli(&["trigger", "--help"]);
    let help = text(&help);
    assert!(
        help.contains("3 queued") && help.contains("4 not run"),
        "{help}"
    );
    wait_for(5 * SEC, "the skipped row", || {
        d.runs_of("s")
            .iter()
            .any(|r| r.status == RunStatus::Skipped)
            .then_some(())
    });
}

/// Whether the run `holder` held the job's turn when `skip` was recorded: it had not ended.
fn was_going(holder: &RunRow, skip: &RunRow) -> bool {
    let recorded = skip.finished_at;
    holder.finished_at >= recorded
        || holder.status == RunStatus::Running
        || holder.finished_at.is_none()
}

/// The row of what a `skipped` row says held the job's turn: "run N ..." or "the firing of T
/// holds the job's turn ..." (that firing's run). Panics on a skip that names nothing.
fn holder_of<'a>(skip: &RunRow, rows: &'a [RunRow]) -> Option<&'a RunRow> {
    let why = skip.error.as_deref().unwrap_or_default();
    if let Some(id) = why
        .strip_prefix("run ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|id| id.parse::<i64>().ok())
    {
        rows.iter().find(|r| r.id == id)
    } else if let Some(at) = why
        .strip_prefix("the firing of ")
        .and_then(|r| r.split_whitespace().next())
    {
        rows.iter().find(|r| {
            hourglass::store::format_ts(r.scheduled_for) == at && r.status != RunStatus::Skipped
        })
    } else {
        panic!("a skipped row that names nothing: {skip:?}")
    }
}

/// A restart after a few seconds down (every firing missed is late, within the late grace):
/// the late firings due at once meet `overlap = "skip"`; every `skipped` row names what held
/// the job's turn (a run, or the firing whose run was starting), and that was going then.
#[test]
fn late_firings_after_a_restart_name_what_they_were_skipped_for() {
    let jobs = "[jobs.s]\nevery = \"2s\"\noverlap = \"skip\"\ncommand = \"sleep 5\"\ncatch_up = \"skip\"\n";
    let mut d = Daemon::start("", jobs);
    d.wait_runs("s", 15 * SEC, "a run", |r| !r.is_empty());
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(20 * SEC).success());
    std::thread::sleep(8 * SEC);
    let before = d.runs_of("s").len();
    d.spawn_ready();
    // A skipped row is written at once; the run it names gets its row as it starts: the
    // rows are read once every skip's holder has one.
    let rows = d.wait_runs(
        "s",
        20 * SEC,
        "the late firings' rows and their holders",
        |r| {
            let skips: Vec<&RunRow> = r
                .iter()
                .filter(|r| r.status == RunStatus::Skipped)
                .collect();
            r.len() >= before + 3
                && skips.len() >= 2
                && skips.iter().all(|s| holder_of(s, r).is_some())
        },
    );
    for skip in rows.iter().filter(|r| r.status == RunStatus::Skipped) {
        let holder = holder_of(skip, &rows).unwrap();
        assert!(
            was_going(holder, skip),
            "{holder:?} was not going at {skip:?}"
        );
    }
    // The late firings due together met the first one's turn before its run had an id.
    assert!(
        rows.iter().any(|r| r
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("the firing of "))),
        "{rows:#?}"
    );
}

/// After a minute of running, the wall clock steps back 30 s: an every-second job, whose
/// occurrences of those 30 s all ran, is quiet until the clock reaches its last run again
/// (about 30 s), then fires every second again, no occurrence twice and none missed; the WARN
/// says until when.
#[test]
fn a_step_back_after_a_minute_of_running_is_quiet_until_the_old_time() {
    let jobs = "[jobs.sec]\nschedule = \"* * * * * *\"\ncommand = \"true\"\n";
    let mut d = Daemon::prepare("", jobs);
    let clock = d.fake_clock();
    d.spawn_ready();
    d.wait_runs("sec", 90 * SEC, "a minute of firings", |r| r.len() >= 60);
    let newest = |d: &Daemon| d.runs_of("sec").iter().map(|r| r.scheduled_for).max();
    let before = newest(&d).unwrap();
    clock.set_offset(-30);
    let stepped = std::time::Instant::now();
    // Rows of the second or two before the daemon saw the step may still come; then nothing
    // until the clock is back at the old time.
    wait_for(60 * SEC, "a firing after the quiet stretch", || {
        (newest(&d).unwrap() > before + TimeDelta::seconds(3)).then_some(())
    });
    let quiet = stepped.elapsed();
    assert!(
        quiet >= 27 * SEC && quiet <= 40 * SEC,
        "quiet for {quiet:?} after a 30 s step"
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(20 * SEC).success());
    let mut rows = d.runs_of("sec");
    rows.sort_by_key(|r| r.id);
    let times: Vec<DateTime<Utc>> = rows.iter().map(|r| r.scheduled_for).collect();
    for w in times.windows(2) {
        assert_eq!(
            w[1] - w[0],
            TimeDelta::seconds(1),
            "not every second once: {times:?}"
        );
    }
    let log = d.log();
    let warn = log
        .lines()
        .find(|l| l.contains("WARN the clock stepped back: occurrences already run"))
        .unwrap_or_else(|| panic!("no WARN:\n{log}"));
    assert!(warn.contains("quiet_until="), "{warn}");
}
