//! End-to-end tests of the daemon binary: real processes, a real SQLite file, real signals.

use std::collections::HashSet;
use std::time::Duration;

use crate::harness::{Daemon, alive, at_in, finished, on_store, ts, wait_for};
use chrono::{DateTime, TimeDelta, Utc};
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
        assert_eq!(runs[0].status, "succeeded");
        assert_eq!(
            runs[0].scheduled_for,
            ts(&at).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        ends.push(ts(runs[0].finished_at.as_deref().unwrap()));
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
    let times: Vec<_> = runs.iter().map(|r| ts(&r.scheduled_for)).collect();
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
        assert_eq!(r.trigger, "schedule");
        let late = r.lateness_ms.unwrap();
        assert!(
            (0..500).contains(&late),
            "tick {} started {late} ms late",
            r.id
        );
    }
    // The hung job fired once and then skipped (overlap = skip by default).
    let hung = d.runs_of("hung");
    assert_eq!(hung.iter().filter(|r| r.status == "running").count(), 1);
    assert!(hung.iter().any(|r| r.status == "skipped"));
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
        r.iter().any(|r| r.status == "skipped")
            && r.iter().filter(|r| r.status == "succeeded").count() >= 1
    });
    for r in skip.iter().filter(|r| r.status == "skipped") {
        assert!(r.started_at.is_none());
        assert!(r.error.as_deref().unwrap().contains("still active"));
    }
    let allow = d.wait_runs("allow", 30 * SEC, "overlapping runs", |r| {
        r.iter().filter(|r| r.status == "running").count() >= 2
    });
    assert!(allow.iter().all(|r| r.status != "skipped"));
    let queue = d.wait_runs("queue", 30 * SEC, "three queued runs done", |r| {
        r.iter().filter(|r| r.status == "succeeded").count() >= 3
    });
    let done: Vec<_> = queue.iter().filter(|r| r.status == "succeeded").collect();
    for w in done.windows(2) {
        let prev_end = ts(w[0].finished_at.as_deref().unwrap());
        let next_start = ts(w[1].started_at.as_deref().unwrap());
        assert!(next_start >= prev_end, "queued runs overlapped: {w:#?}");
    }
    assert!(queue.iter().all(|r| r.status != "skipped"));
    let replace = d.wait_runs("replace", 30 * SEC, "a replaced run", |r| {
        r.iter().any(|r| r.status == "cancelled")
    });
    let c = replace.iter().find(|r| r.status == "cancelled").unwrap();
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
    assert_eq!(r.status, "timed_out", "{r:?}");
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
        (ts(b.started_at.as_deref().unwrap()) - ts(a.finished_at.as_deref().unwrap()))
            .num_milliseconds()
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
fn reload_adds_changes_removes_and_rejects_bad_config() {
    let mut d = Daemon::start("", "[jobs.a]\nevery = \"1s\"\ncommand = \"echo v1\"\n");
    d.wait_runs("a", 20 * SEC, "a v1", |r| {
        r.iter().any(|r| r.status == "succeeded")
    });

    // Add b (SIGHUP).
    d.write_jobs("b.toml", "[jobs.b]\nevery = \"1s\"\ncommand = \"echo b\"\n");
    d.signal(Signal::SIGHUP);
    d.wait_note("RELOADING=1", 10 * SEC);
    d.wait_note("READY=1", 10 * SEC);
    d.wait_runs("b", 20 * SEC, "b to run", |r| {
        r.iter().any(|r| r.status == "succeeded")
    });

    // Change a, by editing the file only (the watcher reloads).
    d.write_jobs(
        "jobs.toml",
        "[jobs.a]\nevery = \"1s\"\ncommand = \"echo v2\"\n",
    );
    let runs = d.wait_runs("a", 20 * SEC, "a v2", |r| {
        r.iter().any(|r| {
            r.status == "succeeded"
                && d.cli(&["show", &r.id.to_string()])
                    .stdout
                    .windows(2)
                    .any(|w| w == b"v2")
        })
    });
    assert!(!runs.is_empty());

    // Remove b: no new b firings afterwards.
    std::fs::remove_file(d.path("jobs.d/b.toml")).unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_note("RELOADING=1", 10 * SEC);
    d.wait_note("READY=1", 10 * SEC);
    let b_count = d.runs_of("b").len();
    let a_count = d.runs_of("a").len();
    d.wait_runs("a", 20 * SEC, "a to keep running", |r| {
        r.len() >= a_count + 2
    });
    assert_eq!(d.runs_of("b").len(), b_count, "b fired after its removal");

    // A bad config is rejected and a keeps running.
    d.write_jobs(
        "jobs.toml",
        "[jobs.a]\nevery = \"1 fortnight\"\ncommand = \"echo v3\"\n",
    );
    d.signal(Signal::SIGHUP);
    wait_for(10 * SEC, "the rejection in the log", || {
        d.log().contains("configuration rejected").then_some(())
    });
    assert!(
        d.log().contains(r#"jobs.d/jobs.toml: job \"a\": every"#)
            || d.log().contains(r#"jobs.d/jobs.toml: job "a": every"#),
        "{}",
        d.log()
    );
    let a_count = d.runs_of("a").len();
    d.wait_runs("a", 20 * SEC, "a to keep running on the old config", |r| {
        r.len() >= a_count + 2
    });
    the_cli_tells_the_running_definitions_and_the_refusal(&mut d);
}

/// While the files are refused, `list`, `trigger` and `status` (and `/healthz`) tell what the
/// daemon runs and that the files were refused; once fixed, what it loaded.
fn the_cli_tells_the_running_definitions_and_the_refusal(d: &mut Daemon) {
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    let status = d.wait_note_containing("configuration rejected since", 10 * SEC);
    assert!(
        status.starts_with("STATUS="),
        "systemd's status line: {status}"
    );
    let refused = "note: configuration rejected since ";
    let list = d.cli(&["list"]);
    let (out, err) = (text(&list.stdout), text(&list.stderr));
    assert!(
        out.lines()
            .any(|l| l.starts_with("a ") && l.contains("every 1s")),
        "the running a is listed:\n{out}{err}"
    );
    assert!(
        err.contains(refused) && err.contains("1 fortnight"),
        "{err}"
    );
    assert_eq!(
        list.status.code(),
        Some(1),
        "the files still have a problem"
    );

    let trigger = d.cli(&["trigger", "a"]);
    let (out, err) = (text(&trigger.stdout), text(&trigger.stderr));
    assert!(
        out.contains("of \"a\" started") || out.contains("\"a\" was not run"),
        "the daemon's a takes the trigger: {out}{err}"
    );
    assert!(!err.contains("has a mistake"), "{err}");
    assert!(err.contains(refused), "{err}");

    let status = d.cli(&["status"]);
    let out = text(&status.stdout);
    assert!(out.contains("config     REJECTED since "), "{out}");
    assert!(out.contains("jobs.d/jobs.toml: job \"a\": every"), "{out}");
    let api = crate::api::Api::socket(&d.path("hourglass.sock"));
    let health = api.get("/healthz");
    assert_eq!(health["status"], "ok");
    assert!(
        health["configuration"]
            .as_str()
            .is_some_and(|c| c.starts_with("configuration rejected since ")),
        "{health}"
    );
    let (code, page) = api.call("GET", "/", None, None);
    assert_eq!(code, 200);
    assert!(
        page.contains("configuration rejected since "),
        "the dashboard's banner"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&d.cli(&["status", "--json"]).stdout).expect("status --json");
    assert!(
        json["configuration"]["rejected"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("1 fortnight")),
        "{json}"
    );

    // Fixed, with a job added: what the daemon loaded, at once.
    d.write_jobs(
        "jobs.toml",
        "[jobs.a]\nevery = \"1s\"\ncommand = \"echo v4\"\n[jobs.c]\nevery = \"1h\"\ncommand = \"true\"\n",
    );
    d.drain_notes();
    d.signal(Signal::SIGHUP);
    d.wait_note("RELOADING=1", 10 * SEC);
    d.wait_note("READY=1", 10 * SEC);
    let status = text(&d.cli(&["status"]).stdout);
    assert!(status.contains("config     loaded "), "{status}");
    let list = d.cli(&["list"]);
    assert!(text(&list.stdout).lines().any(|l| l.starts_with("c ")));
    assert_eq!(list.status.code(), Some(0), "{}", text(&list.stderr));
    assert!(api.get("/healthz").get("configuration").is_none());
    assert!(
        !api.call("GET", "/", None, None)
            .1
            .contains("configuration rejected")
    );
}

#[test]
fn sigterm_drains_running_runs() {
    let at = at_in(1);
    let jobs = format!("[jobs.work]\nat = \"{at}\"\ncommand = \"sleep 1.5; echo done\"\n");
    let mut d = Daemon::start("", &jobs);
    d.wait_runs("work", 20 * SEC, "the run to start", |r| r.len() == 1);
    d.signal(Signal::SIGTERM);
    d.wait_note("STOPPING=1", 10 * SEC);
    let status = d.wait_exit(20 * SEC);
    assert!(status.success(), "{status}");
    let runs = d.runs_of("work");
    assert_eq!(runs[0].status, "succeeded", "{runs:?}");
}

#[test]
fn sigterm_after_grace_interrupts_and_a_second_signal_exits_at_once() {
    let jobs = "[jobs.long]\nevery = \"1s\"\ncommand = \"sleep 60\"\nkill_grace = \"30s\"\n\
                [jobs.stubborn]\nevery = \"1s\"\ncommand = \"trap '' TERM; sleep 60 & echo $! > PID; wait\"\nkill_grace = \"30s\"\n";
    let d = Daemon::prepare(
        "[daemon]\ntimezone = \"UTC\"\nshutdown_grace = \"1s\"\n",
        "",
    );
    let jobs = jobs.replace("PID", d.path("stubborn.pid").to_str().unwrap());
    std::fs::write(d.path("jobs.d/jobs.toml"), jobs).unwrap();
    let mut d = d;
    d.spawn_ready();
    d.wait_runs("stubborn", 20 * SEC, "the run to start", |r| r.len() == 1);
    let pid: i32 = wait_for(10 * SEC, "the pid file", || {
        std::fs::read_to_string(d.path("stubborn.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    d.signal(Signal::SIGTERM);
    // After the 1 s grace, `long` gets SIGTERM and ends; `stubborn` ignores it (30 s grace).
    d.wait_runs("long", 20 * SEC, "long interrupted", |r| {
        r.iter().any(|r| r.status == "interrupted")
    });
    // The second signal: gone within 1 s, although `stubborn` ignores SIGTERM.
    d.signal(Signal::SIGTERM);
    d.wait_exit(SEC);
    wait_for(5 * SEC, "the stubborn child to be killed", || {
        (!alive(pid)).then_some(())
    });
    // Runs the stop killed were stopped by it, whichever signal took them: none `failed`.
    for job in ["long", "stubborn"] {
        let rows = d.runs_of(job);
        let ran: Vec<&hourglass::store::RunRow> =
            rows.iter().filter(|r| r.status != "skipped").collect();
        assert!(
            !ran.is_empty() && ran.iter().all(|r| r.status == "interrupted"),
            "{job}: {rows:#?}"
        );
    }
}

#[test]
fn a_crash_leaves_runs_that_the_next_start_marks_abandoned() {
    let at = at_in(1);
    let jobs = format!("[jobs.work]\nat = \"{at}\"\ncommand = \"echo $$ > pid; exec sleep 60\"\n");
    let mut d = Daemon::start("", &jobs);
    let runs = d.wait_runs("work", 20 * SEC, "the run to start", |r| r.len() == 1);
    assert_eq!(runs[0].status, "running");
    let pid: i32 = wait_for(10 * SEC, "the pid file", || {
        std::fs::read_to_string(d.path("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    d.signal(Signal::SIGKILL);
    d.wait_exit(10 * SEC);
    // Like cron, a crashed daemon's runs go on (under systemd, the cgroup stops them) ...
    assert!(alive(pid));
    d.spawn_ready();
    // ... until the next start finds them by pid and run id and stops them.
    wait_for(5 * SEC, "the orphan to die", || (!alive(pid)).then_some(()));
    let runs = d.runs_of("work");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "abandoned");
    assert!(runs[0].finished_at.is_some());
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
    assert_eq!(runs[0].trigger, "manual");
    assert_eq!(runs[0].status, "succeeded");
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
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("job names are letters"));
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
    assert_eq!(latest[0].status, "skipped");
    assert_eq!(latest[0].details.as_ref().unwrap()["missed_firings"], 2);
    assert_eq!(latest[1].trigger, "catch_up");
    let all = d.wait_runs("all", 10 * SEC, "three catch-up runs", |r| {
        r.len() >= 3 && r.iter().all(finished)
    });
    assert!(all.iter().all(|r| r.status == "succeeded"), "{all:#?}");
    let times: Vec<_> = all.iter().map(|r| ts(&r.scheduled_for)).collect();
    assert_eq!(times[0], first_missed);
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], TimeDelta::hours(1), "{times:?}");
    }
    // Oldest first, one after another.
    for w in all.windows(2) {
        assert!(w[1].started_at >= w[0].finished_at, "{w:#?}");
    }
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|r| r.trigger == "catch_up"));
    assert_eq!(ts(&latest[1].scheduled_for), times[2]);
    assert_eq!(ts(&latest[0].scheduled_for), times[0]);
    // `skip` ran none of the three: one `skipped` row says so, and its state moved past them.
    let skip = d.wait_runs("skip", 10 * SEC, "the row of its missed firings", |r| {
        r.len() == 1
    });
    assert_eq!(skip[0].status, "skipped");
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
    let api = crate::api::Api::socket(&d.path("hourglass.sock"));
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
    runs.sort_by_key(|r| r.started_at.clone());
    for r in &runs {
        assert_eq!(ts(&r.scheduled_for), ts(&at));
        assert_eq!(r.status, "succeeded");
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
    let shown = d.cli(&["show", &runs[0].id.to_string(), "--json"]);
    let run: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
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
    let shown = d.cli(&["show", &runs[0].id.to_string(), "--json"]);
    let run: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
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
        let shown = d.cli(&["show", &runs[0].id.to_string(), "--json"]);
        let run: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
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
            r.len() == 1 && r[0].status == "succeeded"
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

/// Manual trigger requests written to the database while no daemon runs (as `trigger` does),
/// and a stop as the starting daemon takes them: every request it took has an answer
/// (started, queued, or "daemon stopping: not run"), none is left taken and unanswered.
#[test]
fn a_stop_while_trigger_requests_come_leaves_none_unanswered() {
    let mut d = Daemon::prepare(
        "",
        "[jobs.t]\nevery = \"1h\"\ncommand = \"true\"\noverlap = \"allow\"\n",
    );
    let db = d.path("history.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(hourglass::store::Store::open(&db)).unwrap();
    let requests: Vec<i64> = (0..300)
        .map(|_| rt.block_on(store.request_trigger("t")).unwrap())
        .collect();
    d.spawn();
    wait_for(10 * SEC, "the daemon to take a request", || {
        let state = rt.block_on(store.trigger_state(requests[0])).unwrap();
        state.claimed.then_some(())
    });
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(30 * SEC).success(), "{}", d.log());
    let states: Vec<_> = requests
        .iter()
        .map(|r| rt.block_on(store.trigger_state(*r)).unwrap())
        .collect();
    let unanswered = states
        .iter()
        .filter(|s| s.claimed && s.outcome.is_none())
        .count();
    assert_eq!(unanswered, 0, "{states:#?}");
    let taken = states.iter().filter(|s| s.claimed).count();
    let stopped = d.log().matches("manual trigger not run").count();
    eprintln!(
        "{taken} of 300 requests taken before the stop, each answered ({stopped} 'not run: the daemon is stopping')"
    );
    rt.block_on(store.close());
}
