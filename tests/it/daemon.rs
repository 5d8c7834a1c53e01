//! End-to-end tests of the daemon binary: real processes, a real SQLite file, real signals.

use std::collections::HashSet;
use std::time::Duration;

use crate::harness::{Daemon, alive, at_in, fails_with, finished, on_store, ts, wait_for};
use chrono::{DateTime, TimeDelta, Utc};
use hourglass::store::{RunStatus, Trigger};
use nix::sys::signal::Signal;

const SEC: Duration = Duration::from_secs(1);

/// An RFC 3339 instant `secs` seconds from now, on a whole second.

#[test]
fn three_slow_jobs_due_together_run_in_parallel() {
    let at = at_in(2);
    let jobs = (1..=3)
        .map(|i| format!("[jobs.slow{i}]\nat = \"{at}\"\ncommand = \"sleep 2\"\n"))
        .collect::<String>();
    let d = Daemon::start("", &jobs);
    let mut ends = Vec::new();
    for i in 1..=3 {
        let runs = d.wait_runs(&format!("slow{i}"), 20 * SEC, "the run to finish", |r| {
            r.len() == 1 && finished(&r[0])
        });
        assert_eq!(runs[0].status, RunStatus::Succeeded);
        assert_eq!(runs[0].scheduled_for, ts(&at));
        ends.push(runs[0].finished_at.unwrap());
    }
    let last = ends.iter().max().unwrap();
    let took = (*last - ts(&at)).num_milliseconds();
    // Serially they would take 6 s; in parallel about 2 s.
    assert!(
        (2000..4000).contains(&took),
        "all three finished {took} ms after their time"
    );
}

#[test]
fn a_hung_job_does_not_delay_an_every_second_job() {
    let jobs = "[jobs.hung]\nevery = \"1s\"\ncommand = \"sleep 30\"\n\n\
                [jobs.cpu]\nevery = \"1s\"\ncommand = \"timeout 30 sh -c 'while :; do :; done'\"\n\n\
                [jobs.tick]\nschedule = \"* * * * * *\"\ncommand = \"true\"\n";
    let d = Daemon::start("", jobs);
    let runs = d.wait_runs("tick", 30 * SEC, "six ticks", |r| {
        r.iter().filter(|r| finished(r)).count() >= 6
    });
    let times: Vec<_> = runs.iter().map(|r| r.scheduled_for).collect();
    let distinct: HashSet<_> = times.iter().collect();
    assert_eq!(
        distinct.len(),
        times.len(),
        "a firing was recorded twice: {times:?}"
    );
    for w in times.windows(2) {
        assert_eq!(
            w[1] - w[0],
            TimeDelta::seconds(1),
            "a firing is missing: {times:?}"
        );
    }
    for r in &runs {
        assert_eq!(r.trigger, Trigger::Schedule);
        let late = r.lateness_ms.unwrap();
        assert!(
            (0..500).contains(&late),
            "tick {} started {late} ms late",
            r.id
        );
    }
    // The hung job fired once and then skipped (overlap = skip by default).
    let hung = d.runs_of("hung");
    assert_eq!(
        hung.iter()
            .filter(|r| r.status == RunStatus::Running)
            .count(),
        1
    );
    assert!(hung.iter().any(|r| r.status == RunStatus::Skipped));
}

#[test]
fn overlap_policies() {
    let jobs = "[jobs.skip]\nevery = \"1s\"\noverlap = \"skip\"\ncommand = \"sleep 1.5\"\n\n\
                [jobs.allow]\nevery = \"1s\"\noverlap = \"allow\"\ncommand = \"sleep 2.5\"\n\n\
                [jobs.queue]\nevery = \"1s\"\noverlap = \"queue\"\ncommand = \"sleep 1.5\"\n\n\
                [jobs.replace]\nevery = \"1s\"\noverlap = \"replace\"\ncommand = \"sleep 5\"\n";
    let d = Daemon::start("", jobs);
    std::thread::sleep(Duration::from_millis(100));
    let enough = |r: &[hourglass::store::RunRow]| r.len() >= 4;
    let skip = d.wait_runs("skip", 30 * SEC, "skip rows", |r| {
        r.iter().any(|r| r.status == RunStatus::Skipped)
            && r.iter()
                .filter(|r| r.status == RunStatus::Succeeded)
                .count()
                >= 1
    });
    for r in skip.iter().filter(|r| r.status == RunStatus::Skipped) {
        assert!(r.started_at.is_none());
        assert!(r.error.as_deref().unwrap().contains("still active"));
    }
    let allow = d.wait_runs("allow", 30 * SEC, "overlapping runs", |r| {
        r.iter().filter(|r| r.status == RunStatus::Running).count() >= 2
    });
    assert!(allow.iter().all(|r| r.status != RunStatus::Skipped));
    let queue = d.wait_runs("queue", 30 * SEC, "three queued runs done", |r| {
        r.iter()
            .filter(|r| r.status == RunStatus::Succeeded)
            .count()
            >= 3
    });
    let done: Vec<_> = queue
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .collect();
    for w in done.windows(2) {
        let prev_end = w[0].finished_at.unwrap();
        let next_start = w[1].started_at.unwrap();
        assert!(next_start >= prev_end, "queued runs overlapped: {w:#?}");
    }
    assert!(queue.iter().all(|r| r.status != RunStatus::Skipped));
    let replace = d.wait_runs("replace", 30 * SEC, "a replaced run", |r| {
        r.iter().any(|r| r.status == RunStatus::Cancelled)
    });
    let c = replace
        .iter()
        .find(|r| r.status == RunStatus::Cancelled)
        .unwrap();
    assert!(c.error.as_deref().unwrap().contains("replaced"), "{c:?}");
    assert!(enough(&replace));
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let at = at_in(1);
    let jobs = format!(
        "[jobs.slow]\nat = \"{at}\"\ntimeout = \"1s\"\nkill_grace = \"1s\"\n\
         command = \"trap '' TERM; sleep 300 & echo $! > bg.pid; echo started; wait\"\n"
    );
    let d = Daemon::start("", &jobs);
    // The job ignores SIGTERM, so this also covers the SIGKILL after kill_grace.
    let runs = d.wait_runs("slow", 20 * SEC, "the timeout", |r| {
        r.len() == 1 && finished(&r[0])
    });
    let r = &runs[0];
    assert_eq!(r.status, RunStatus::TimedOut, "{r:?}");
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .starts_with("timed out after 1s"),
        "{r:?}"
    );
    let took = r.duration_ms.unwrap();
    assert!((1900..5000).contains(&took), "took {took} ms");
    let shown = d.cli(&["show", &r.id.to_string()]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("started"));
    let pid: i32 = std::fs::read_to_string(d.path("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for(5 * SEC, "the background child to die", || {
        (!alive(pid)).then_some(())
    });
}

#[test]
fn retries_until_success_with_backoff() {
    let at = at_in(1);
    let jobs = format!(
        "[jobs.flaky]\nat = \"{at}\"\nretries = 3\nretry_backoff = \"200ms\"\n\
         command = \"n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo try $n; [ $n -ge 3 ]\"\n\
         working_dir = \"WD\"\n"
    );
    let d = Daemon::prepare("", "");
    let jobs = jobs.replace("WD", d.path("").to_str().unwrap());
    std::fs::write(d.path("jobs.d/jobs.toml"), jobs).unwrap();
    let mut d = d;
    d.spawn_ready();
    let runs = d.wait_runs("flaky", 20 * SEC, "three attempts", |r| {
        r.len() == 3 && r.iter().all(finished)
    });
    let summary: Vec<_> = runs
        .iter()
        .map(|r| {
            (
                r.attempt,
                r.trigger.as_str(),
                r.status.as_str(),
                r.exit_code,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "schedule", "failed", Some(1)),
            (2, "retry", "failed", Some(1)),
            (3, "retry", "succeeded", Some(0)),
        ]
    );
    assert!(
        runs.iter()
            .all(|r| r.scheduled_for == runs[0].scheduled_for)
    );
    // Backoff: at least half of 200 ms, then of 400 ms, between attempts.
    let gap = |a: &hourglass::store::RunRow, b: &hourglass::store::RunRow| {
        (b.started_at.unwrap() - a.finished_at.unwrap()).num_milliseconds()
    };
    assert!(gap(&runs[0], &runs[1]) >= 100);
    assert!(gap(&runs[1], &runs[2]) >= 200);
    assert_eq!(
        d.cli(&["show", &runs[2].id.to_string(), "--json"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn manual_trigger_and_history_json() {
    let d = Daemon::start(
        "",
        "[jobs.yearly]\nschedule = \"@yearly\"\ncommand = \"echo manual\"\n",
    );
    let out = d.cli(&["trigger", "yearly"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = d.wait_runs("yearly", 10 * SEC, "the manual run", |r| {
        r.len() == 1 && finished(&r[0])
    });
    assert_eq!(runs[0].trigger, Trigger::Manual);
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    let out = d.cli(&["history", "--json", "--job", "yearly"]);
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &rows.as_array().unwrap()[0];
    assert_eq!(row["job"], "yearly");
    assert_eq!(row["trigger"], "manual");
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["exit_code"], 0);
    assert!(row["lateness_ms"].as_i64().unwrap() < 1000);
    let out = d.cli(&["history", "--status", "failed", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rows.as_array().unwrap().is_empty());
    let out = d.cli(&["trigger", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    // A name that is no job name never reaches the API's path (it would name another route).
    let out = d.cli(&["trigger", "../../v1/status"]);
    fails_with(&out, &["job names are letters"]);
}

#[test]
fn catch_up_after_downtime_follows_each_policy() {
    // Hourly at a minute half an hour away from now, so no firing is near "now" (a firing
    // less than a minute late would run as a normal one).
    let now = Utc::now().timestamp();
    let minute = (now / 60 % 60 + 30) % 60;
    let offset = minute * 60;
    let latest_missed = (now - offset) / 3600 * 3600 + offset;
    let first_missed = chrono::DateTime::from_timestamp(latest_missed - 7200, 0).unwrap();
    let jobs = ["skip", "latest", "all"]
        .map(|p| format!("[jobs.{p}]\nschedule = \"{minute} * * * *\"\ncatch_up = \"{p}\"\ncommand = \"true\"\n"))
        .concat();
    let mut d = Daemon::prepare("", &jobs);
    // Pretend each job last fired an hour before the first missed firing, then the daemon was
    // down for three firings.
    let last = hourglass::store::format_ts(first_missed - TimeDelta::hours(1));
    let db = d.path("history.db");
    on_store(&db, async |store| {
        for job in ["skip", "latest", "all"] {
            store
                .write_batch(&[hourglass::store::Record::Fired {
                    job: job.into(),
                    scheduled_for: ts(&last),
                }])
                .await
                .unwrap();
        }
    });
    d.spawn_ready();
    let latest = d.wait_runs(
        "latest",
        10 * SEC,
        "one catch-up run and one row for the rest",
        |r| r.len() == 2 && r.iter().all(finished),
    );
    // The two older missed firings: one `skipped` row, with their count and range.
    assert_eq!(latest[0].status, RunStatus::Skipped);
    assert_eq!(latest[0].details.as_ref().unwrap()["missed_firings"], 2);
    assert_eq!(latest[1].trigger, Trigger::CatchUp);
    let all = d.wait_runs("all", 10 * SEC, "three catch-up runs", |r| {
        r.len() >= 3 && r.iter().all(finished)
    });
    assert!(
        all.iter().all(|r| r.status == RunStatus::Succeeded),
        "{all:#?}"
    );
    let times: Vec<_> = all.iter().map(|r| r.scheduled_for).collect();
    assert_eq!(times[0], first_missed);
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], TimeDelta::hours(1), "{times:?}");
    }
    // Oldest first, one after another.
    for w in all.windows(2) {
        assert!(w[1].started_at >= w[0].finished_at, "{w:#?}");
    }
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|r| r.trigger == Trigger::CatchUp));
    assert_eq!(latest[1].scheduled_for, times[2]);
    assert_eq!(latest[0].scheduled_for, times[0]);
    // `skip` ran none of the three: one `skipped` row says so, and its state moved past them.
    let skip = d.wait_runs("skip", 10 * SEC, "the row of its missed firings", |r| {
        r.len() == 1
    });
    assert_eq!(skip[0].status, RunStatus::Skipped);
    assert_eq!(skip[0].details.as_ref().unwrap()["missed_firings"], 3);
    assert!(
        skip[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("missed (catch_up = \"skip\")"),
        "{skip:#?}"
    );
    the_jobs_page_shows_the_whole_range(&d, "skip", 3, (times[0], times[2]));
    wait_for(10 * SEC, "skip's state to advance", || {
        let fired = on_store(&db, async |store| store.last_fired().await.unwrap());
        (fired.get("skip") == Some(&times[2])).then_some(())
    });
}

/// The jobs page shows a row of `count` missed firings as the job's last, with its whole
/// range (not dated at its first missed firing alone).
fn the_jobs_page_shows_the_whole_range(
    d: &Daemon,
    job: &str,
    count: u64,
    (first, last): (DateTime<Utc>, DateTime<Utc>),
) {
    let api = crate::http::Api::socket(&d.path("hourglass.sock"));
    let page = api.call("GET", &format!("/?q={job}"), None, None).1;
    let row = &page[page
        .find(&format!("href=\"/jobs/{job}\""))
        .expect("the job's row")..];
    let row = &row[..row.find("</tr>").unwrap()];
    let shown = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    assert!(row.contains(&format!("{count} firings not run, ")), "{row}");
    assert!(
        row.contains(&shown(first)) && row.contains(&shown(last)),
        "{row}"
    );
}

#[test]
fn watchdog_and_status_notifications() {
    let mut d = Daemon::prepare("", "[jobs.a]\nschedule = \"@yearly\"\ncommand = \"true\"\n");
    d.extra_env.push(("WATCHDOG_USEC".into(), "400000".into()));
    d.spawn_ready();
    let notes = d.drain_notes();
    assert!(
        notes
            .iter()
            .any(|n| n == "STATUS=1 jobs scheduled, 0 runs in progress"),
        "{notes:?}"
    );
    d.wait_note("WATCHDOG=1", 5 * SEC);
    d.wait_note("WATCHDOG=1", 5 * SEC);
    d.signal(Signal::SIGTERM);
    d.wait_note("STOPPING=1", 5 * SEC);
    d.wait_exit(10 * SEC);
}

#[test]
fn firings_waiting_for_a_slot_keep_their_intended_time() {
    let at = at_in(2);
    let jobs = (1..=3)
        .map(|i| format!("[jobs.w{i}]\nat = \"{at}\"\ncommand = \"sleep 0.3\"\n"))
        .collect::<String>();
    let d = Daemon::start(
        "[daemon]\ntimezone = \"UTC\"\nmax_concurrent_runs = 1\n",
        &jobs,
    );
    let mut runs = Vec::new();
    for i in 1..=3 {
        runs.extend(d.wait_runs(&format!("w{i}"), 20 * SEC, "the run", |r| {
            r.len() == 1 && finished(&r[0])
        }));
    }
    runs.sort_by_key(|r| r.started_at);
    for r in &runs {
        assert_eq!(r.scheduled_for, ts(&at));
        assert_eq!(r.status, RunStatus::Succeeded);
    }
    // One at a time: each starts after the previous one finished.
    for w in runs.windows(2) {
        assert!(w[1].started_at >= w[0].finished_at, "{w:#?}");
    }
    assert!(runs[2].lateness_ms.unwrap() >= 600);
}

#[test]
fn runs_as_another_user_with_json_logs() {
    let at = at_in(1);
    let jobs =
        format!("[jobs.who]\nat = \"{at}\"\nuser = \"nobody\"\ncommand = \"id -un; echo $HOME\"\n");
    let d = Daemon::start(
        "[log]\nformat = \"json\"\n[daemon]\ntimezone = \"UTC\"\n",
        &jobs,
    );
    let runs = d.wait_runs("who", 20 * SEC, "the run", |r| {
        r.len() == 1 && finished(&r[0])
    });
    let run = d.show_json(runs[0].id);
    if nix::unistd::geteuid().is_root() {
        assert_eq!(run["status"], "succeeded", "{run}");
        assert!(
            run["output"].as_str().unwrap().starts_with("nobody\n"),
            "{run}"
        );
    }
    // Every log line is a JSON object; run lines carry their fields.
    let log = d.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let started = lines
        .iter()
        .find(|l| l["message"] == "run started")
        .expect("a run started line");
    assert_eq!(started["job"], "who");
    assert_eq!(started["run_id"], runs[0].id);
    let ended = lines
        .iter()
        .find(|l| l["message"] == "run finished")
        .unwrap();
    assert!(ended["duration_ms"].is_i64());
}

/// `clean_env = true`: the job starts from the minimal environment, plus its own `env`.
#[test]
fn a_clean_env_job_sees_only_the_minimal_environment() {
    let at = at_in(1);
    let jobs = format!(
        "[jobs.clean]\nat = \"{at}\"\nclean_env = true\nenv = {{ MINE = \"yes\" }}\ncommand = \"env\"\n"
    );
    let mut d = Daemon::prepare("", &jobs);
    d.extra_env.push(("DAEMON_ONLY".into(), "leak".into()));
    d.spawn_ready();
    let runs = d.wait_runs("clean", 20 * SEC, "the run", |r| {
        r.len() == 1 && finished(&r[0])
    });
    let run = d.show_json(runs[0].id);
    assert_eq!(run["status"], "succeeded", "{run}");
    let names: Vec<&str> = run["output"]
        .as_str()
        .unwrap()
        .lines()
        .filter_map(|l| l.split('=').next())
        .collect();
    assert!(
        names.contains(&"PATH") && names.contains(&"MINE"),
        "{names:?}"
    );
    assert!(names.contains(&"HOURGLASS_RUN_ID"), "{names:?}");
    assert!(!names.contains(&"DAEMON_ONLY"), "{names:?}");
    assert!(!names.contains(&"RUST_LOG"), "{names:?}");
    assert!(!names.contains(&"NOTIFY_SOCKET"), "{names:?}");
}

#[test]
fn secrets_named_by_the_config_reach_no_job() {
    let at = at_in(1);
    let jobs = format!(
        "[jobs.plain]\nat = \"{at}\"\ncommand = \"env\"\n\
         [jobs.other-user]\nat = \"{at}\"\nuser = \"nobody\"\ncommand = \"env\"\n\
         [jobs.api]\nevery = \"1h\"\n[jobs.api.http]\nurl = \"http://127.0.0.1:9/\"\n\
         secret_headers = {{ Authorization = {{ env = \"API_TOKEN\" }} }}\n"
    );
    let mut d = Daemon::prepare(
        "[smtp.main]\nhost = \"localhost\"\nusername = \"u\"\npassword = { env = \"SMTP_PASSWORD\" }\n",
        &jobs,
    );
    for (k, v) in [
        ("SMTP_PASSWORD", "hunter2-smtp"),
        ("API_TOKEN", "hunter2-api"),
        ("PLAIN_SETTING", "visible"),
    ] {
        d.extra_env.push((k.into(), v.into()));
    }
    d.spawn_ready();
    let output = |job: &str| {
        let runs = d.wait_runs(job, 20 * SEC, "the run", |r| {
            r.len() == 1 && finished(&r[0])
        });
        let run = d.show_json(runs[0].id);
        assert_eq!(run["status"], "succeeded", "{run}");
        run["output"].as_str().unwrap().to_string()
    };
    let plain = output("plain");
    assert!(plain.contains("PLAIN_SETTING=visible"), "{plain}");
    let other = output("other-user");
    // Another user's job gets the documented minimal environment.
    let names: Vec<&str> = other
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| !k.starts_with("HOURGLASS_"))
        .collect();
    for n in &names {
        assert!(
            [
                "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TZ", "PWD"
            ]
            .contains(n),
            "{n} in {other}"
        );
    }
    assert!(other.contains("USER=nobody"), "{other}");
    for out in [&plain, &other] {
        assert!(!out.contains("hunter2"), "a secret reached a job: {out}");
        assert!(
            !out.contains("SMTP_PASSWORD") && !out.contains("API_TOKEN"),
            "{out}"
        );
    }
}

#[test]
fn jobs_create_files_with_umask_022_under_a_strict_service_umask() {
    let at = at_in(1);
    let jobs = format!(
        "[jobs.backup]\nat = \"{at}\"\ncommand = \"echo data > backup.out\"\n\
         [jobs.private]\nat = \"{at}\"\numask = \"027\"\ncommand = \"echo data > private.out\"\n\
         [jobs.argv]\nat = \"{at}\"\numask = \"077\"\ncommand = [\"touch\", \"argv.out\"]\n"
    );
    let mut d = Daemon::prepare("", &jobs);
    d.umask = Some("077");
    d.spawn_ready();
    for job in ["backup", "private", "argv"] {
        d.wait_runs(job, 20 * SEC, "the run", |r| {
            r.len() == 1 && r[0].status == RunStatus::Succeeded
        });
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(d.path(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("backup.out"), 0o644);
    // A job's own `umask`, for a shell line and for a program.
    assert_eq!(mode("private.out"), 0o640);
    assert_eq!(mode("argv.out"), 0o600);
    // The daemon's own files stay private.
    assert_eq!(mode("history.db"), 0o600);
    assert_eq!(mode("history.db-lock"), 0o600);
}
