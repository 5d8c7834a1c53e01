//! The command line without a running daemon, the systemd unit, and the README's sqlite3 queries.

use std::process::Command;
use std::time::Duration;

use crate::harness::{BIN, Daemon, cli, fails_with};
use hourglass::store::RunStatus;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_accepts_the_example_and_rejects_bad_configs_with_located_errors() {
    let d = Daemon::prepare("", include_str!("../../config/jobs.d/examples.toml"));
    let ok = d.cli(&["check"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("ok, 4 jobs (1 of them disabled)"));

    let bad = Daemon::prepare(
        "",
        "[jobs.nightly-backup]\nschedule = \"61 3 * * *\"\ncommand = \"true\"\n\
         [jobs.x]\nevery = \"1m\"\ncommand = \"true\"\ntimeout = \"soon\"\n",
    );
    std::fs::write(
        bad.path("jobs.d/other.toml"),
        "[jobs.x]\nevery = \"1m\"\ncommand = \"true\"\n",
    )
    .unwrap();
    let out = bad.cli(&["check"]);
    let err = fails_with(&out, &[]);
    assert!(err.contains(r#"jobs.d/jobs.toml: job "nightly-backup": schedule: "61 3 * * *": minute 61 is out of range 0-59"#), "{err}");
    assert!(
        err.contains(r#"jobs.d/jobs.toml: job "x": timeout: "soon" is not a duration"#),
        "{err}"
    );
    assert!(
        err.contains(r#"jobs.d/other.toml: job "x": duplicate job name"#)
            || err.contains(r#"jobs.d/jobs.toml: job "x": duplicate job name"#),
        "{err}"
    );

    let syntax = Daemon::prepare("", "[jobs.a\nevery = 1");
    let out = syntax.cli(&["check"]);
    fails_with(&out, &["jobs.d/jobs.toml: TOML parse error at line 1"]);

    let missing = cli(
        std::path::Path::new("/nonexistent/hourglass.toml"),
        &["check"],
    );
    fails_with(&missing, &["hourglass.toml: file not found"]);
}

#[test]
fn environment_overrides_the_main_file() {
    let d = Daemon::prepare("", "");
    let out = Command::new(BIN)
        .args(["--config", d.config().to_str().unwrap(), "check"])
        .env("HOURGLASS__DAEMON__MAX_CONCURRENT_RUNS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("daemon.max_concurrent_runs: 0 is out of range; expected 1 to 100000"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn list_shows_next_fire_times_in_each_zone() {
    let d = Daemon::prepare(
        "",
        "[jobs.berlin]\nschedule = \"30 3 * * *\"\ntimezone = \"Europe/Berlin\"\ncommand = \"true\"\n\
         [jobs.gone]\nat = \"2001-01-01T00:00:00Z\"\ncommand = \"true\"\n",
    );
    let out = d.cli(&["list"]);
    assert!(out.status.success());
    let s = text(&out.stdout);
    let berlin = s.lines().find(|l| l.starts_with("berlin")).unwrap();
    assert!(berlin.contains("03:30:00.000 CE"), "{berlin}");
    assert!(
        s.lines()
            .any(|l| l.starts_with("gone") && l.contains("never")),
        "{s}"
    );
}

#[test]
fn example_config_prints_files_the_daemon_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let main = Command::new(BIN).arg("example-config").output().unwrap();
    assert!(main.status.success());
    std::fs::write(dir.path().join("hourglass.toml"), &main.stdout).unwrap();
    std::fs::create_dir(dir.path().join("jobs.d")).unwrap();
    let jobs = Command::new(BIN)
        .args(["example-config", "--jobs"])
        .output()
        .unwrap();
    assert!(text(&jobs.stdout).contains("[jobs.heartbeat]"));
    std::fs::write(dir.path().join("jobs.d/examples.toml"), &jobs.stdout).unwrap();
    let out = cli(&dir.path().join("hourglass.toml"), &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok, 4 jobs (1 of them disabled)"));
}

#[test]
fn history_prune_and_readme_queries_work_with_the_stock_sqlite3() {
    let mut d = Daemon::start(
        "",
        "[jobs.ok]\nevery = \"1s\"\ncommand = \"echo fine\"\n[jobs.bad]\nevery = \"1s\"\ncommand = \"exit 3\"\n",
    );
    d.wait_runs("bad", Duration::from_secs(20), "two failures", |r| {
        r.iter().filter(|r| r.status == RunStatus::Failed).count() >= 2
    });
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(20));
    let table = text(&d.cli(&["history", "--job", "bad", "--limit", "1"]).stdout);
    assert!(table.contains("exited with status 3"), "{table}");
    assert_eq!(table.lines().count(), 2);

    let db = d.path("history.db");
    let sql = |q: &str| {
        let out = Command::new("sqlite3")
            .arg(&db)
            .arg(q)
            .output()
            .expect("sqlite3 is installed by scripts/test.sh");
        assert!(out.status.success(), "{q}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    // The three queries shown in the README.
    let last = sql("SELECT job, status, exit_code FROM last_runs ORDER BY job;");
    assert!(
        last.contains("bad|failed|3") && last.contains("ok|succeeded|0"),
        "{last}"
    );
    let failures = sql("SELECT job, count(*) FROM recent_failures GROUP BY job;");
    assert!(failures.starts_with("bad|"), "{failures}");
    let late = sql(
        "SELECT job, max(lateness_ms) < 1000 FROM runs_timed WHERE trigger = 'schedule' AND status = 'succeeded' \
         AND scheduled_for >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 hour') GROUP BY job;",
    );
    assert_eq!(late.trim(), "ok|1");
    let mode = std::fs::metadata(&db).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let out = d.cli(&["prune", "--older-than", "0s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(d.runs().is_empty());
}

#[test]
fn the_systemd_unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let unit =
        include_str!("../../systemd/hourglass.service").replace("/usr/local/bin/hourglass", BIN);
    for key in [
        "Type=notify",
        "ExecStartPre=",
        "ExecReload=",
        "WatchdogSec=",
        "StateDirectory=",
        "KillMode=mixed",
    ] {
        assert!(unit.contains(key), "unit lacks {key}");
    }
    let path = dir.path().join("hourglass.service");
    std::fs::write(&path, &unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--recursive-errors=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed by scripts/test.sh");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // A typo must fail the same check.
    std::fs::write(&path, unit.replace("Type=notify", "Tpye=notify")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--recursive-errors=no"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    // The sandbox: `systemd-analyze security` rates the unit's exposure at most 3.5 (of 10).
    std::fs::write(&path, &unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&path)
        .output()
        .unwrap();
    let report = text(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for hourglass.service: ")
                .nth(1)
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}{}", text(&out.stderr)));
    assert!(exposure <= 3.5, "exposure {exposure}:\n{report}");
    // TimeoutStopSec must exceed the default drain grace (30 s) plus kill grace (10 s).
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .unwrap();
    assert!(stop > 40);
}

#[test]
fn commands_that_need_no_secret_work_without_the_daemons_environment() {
    let d = Daemon::prepare(
        "[smtp.main]\nhost = \"localhost\"\nusername = \"u\"\npassword = { env = \"HG_TEST_UNSET_PW\" }\n",
        "[jobs.m]\nevery = \"1h\"\n[jobs.m.email]\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n\
         subject = \"s\"\nbody = \"{{ env.HG_TEST_UNSET_URL }}\"\nenv = [\"HG_TEST_UNSET_URL\"]\n",
    );
    let check = d.cli(&["check"]);
    let err = fails_with(&check, &[]);
    assert!(
        err.contains("HG_TEST_UNSET_PW") && err.contains("HG_TEST_UNSET_URL"),
        "{err}"
    );
    let list = d.cli(&["list"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(
        text(&list.stdout)
            .lines()
            .any(|l| l.starts_with("m ") && l.contains("email"))
    );
}

#[test]
fn out_of_range_durations_and_counts_are_errors_not_panics() {
    let d = Daemon::prepare(
        "",
        "[jobs.far]\nevery = \"1m\"\ncommand = \"true\"\njitter = \"99999999999d\"\n\
         [jobs.zero]\nevery = \"1m\"\ncommand = \"true\"\ntimeout = \"0s\"\n\
         [jobs.many]\nevery = \"1m\"\ncommand = \"true\"\nretries = 4000000000\n\
         [jobs.midnight]\nschedule = \"@midnight\"\ncommand = \"true\"\n",
    );
    let out = d.cli(&["check"]);
    let err = fails_with(&out, &[]);
    for expected in [
        r#"job "far": jitter: "99999999999d" is longer than the longest duration allowed, "3650d" (10 years)"#,
        r#"job "zero": timeout: a zero timeout would stop every run at once; leave timeout out for no limit"#,
        r#"job "many": retries: at most 1000 retries are allowed"#,
    ] {
        assert!(err.contains(expected), "{expected}\nin:\n{err}");
    }
    assert!(!err.contains("midnight"), "@midnight is accepted:\n{err}");
    // The same limits on the command line: an error, never a panic (exit 101).
    let ok = Daemon::prepare("", "[jobs.a]\nevery = \"1m\"\ncommand = \"true\"\n");
    for args in [
        &["history", "--since", "99999999999d"][..],
        &["prune", "--older-than", "99999999999d"][..],
    ] {
        let out = ok.cli(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("longer than the longest duration allowed"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn job_folder_entries_that_are_not_job_files_are_named() {
    let d = Daemon::prepare("", "[jobs.ok]\nevery = \"1m\"\ncommand = \"true\"\n");
    let jobs = d.path("jobs.d");
    std::os::unix::fs::symlink("/nonexistent/hg.toml", jobs.join("dangling.toml")).unwrap();
    std::os::unix::fs::symlink("loop-b.toml", jobs.join("loop-a.toml")).unwrap();
    std::os::unix::fs::symlink("loop-a.toml", jobs.join("loop-b.toml")).unwrap();
    std::fs::create_dir(jobs.join("x.toml")).unwrap();
    let out = d.cli(&["check"]);
    let err = fails_with(&out, &[]);
    for line in [
        "jobs.d/dangling.toml: is a broken symbolic link (to /nonexistent/hg.toml, which does not exist)",
        "jobs.d/loop-a.toml: is a symbolic link in a loop (to loop-b.toml)",
        "jobs.d/x.toml: is a folder, not a job file",
    ] {
        assert!(err.contains(line), "{line:?} not in:\n{err}");
    }
}

#[test]
fn a_missing_jobs_folder_or_a_main_file_that_is_a_folder_is_an_error() {
    let d = Daemon::prepare("", "");
    std::fs::remove_dir_all(d.path("jobs.d")).unwrap();
    let out = d.cli(&["check"]);
    fails_with(&out, &["jobs.d: the jobs folder does not exist"]);
    let out = cli(d.dir.path(), &["check"]);
    fails_with(&out, &["is a folder; expected the main file"]);
}

#[test]
fn main_file_and_job_file_problems_are_listed_together() {
    let d = Daemon::prepare(
        "[log]\nformat = \"xml\"\n[daemon]\ntimezone = \"UTC\"\nmax_concurrent_runs = 0\nshutdwon_grace = \"1s\"\n",
        "[jobs.a]\nschedule = \"0 5-2 * * *\"\ncommand = \"true\"\n",
    );
    let out = d.cli(&["check"]);
    let err = fails_with(&out, &[]);
    for line in [
        r#"hourglass.toml: log.format: "xml" is not one of "plain", "json""#,
        r#"hourglass.toml: daemon.shutdwon_grace: unknown key "shutdwon_grace" (did you mean "shutdown_grace"?)"#,
        r#"jobs.d/jobs.toml: job "a": schedule: "0 5-2 * * *": hours 5-2: a range must go upwards"#,
    ] {
        assert!(err.contains(line), "{line:?} not in:\n{err}");
    }
}

#[test]
fn check_warns_about_what_a_user_may_mean_but_accepts_it() {
    let d = Daemon::prepare(
        "",
        "[jobs.a]\nschedule = \"0 3 * * *\"\ncommand = \"true\"\ncatch_up = \"latest\"\ncatch_up_window = \"1m\"\n\
         [jobs.b]\nevery = \"1h\"\ncommand = \"true\"\nworking_dir = \"/nonexistent/hg-data\"\n",
    );
    let out = d.cli(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            r#"warning: jobs.d/jobs.toml: job "a": catch_up_window: "1m" cannot catch anything"#
        ),
        "{err}"
    );
    assert!(
        err.contains(r#"warning: jobs.d/jobs.toml: job "b": working_dir: "/nonexistent/hg-data" does not exist"#),
        "{err}"
    );
}

/// The daemon and every CLI command on the same main file reach the same database, wherever
/// each is started from (default: beside the main file); reading and trigger commands never
/// create one.
#[test]
fn daemon_and_cli_share_the_database_and_reading_creates_none() {
    let mut d = Daemon::prepare(
        "",
        "[jobs.manual]\nevery = \"1h\"\ncommand = \"echo hi\"\nenabled = false\n",
    );
    std::fs::write(d.config(), "[daemon]\ntimezone = \"UTC\"\n").unwrap();
    d.db = "hourglass.db".into();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = d.config();
    let in_elsewhere = |args: &[&str]| {
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(args)
            .current_dir(elsewhere.path())
            .output()
            .unwrap()
    };
    // Before any daemon ran: reading and triggering fail and create nothing.
    for args in [
        &["history"][..],
        &["show", "1"],
        &["trigger", "manual", "--no-wait"],
    ] {
        let out = in_elsewhere(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains("no history database at"),
            "{}",
            text(&out.stderr)
        );
    }
    assert!(!d.path("hourglass.db").exists());
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    d.spawn_ready();
    assert!(d.path("hourglass.db").exists());
    // A disabled job runs by hand, and trigger says which run it became.
    let out = in_elsewhere(&["trigger", "manual"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    let id: i64 = said
        .strip_prefix("run ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no run id in {said:?}"));
    let runs = d.wait_runs("manual", Duration::from_secs(10), "the manual run", |r| {
        r.len() == 1 && crate::harness::finished(&r[0])
    });
    assert_eq!((runs[0].id, runs[0].trigger.as_str()), (id, "manual"));
    let history = in_elsewhere(&["history", "--job", "manual"]);
    assert!(
        text(&history.stdout).contains("manual"),
        "{}",
        text(&history.stdout)
    );
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

/// A typo in one job file blinds no command: `list` shows the other jobs and names the
/// problem (exit 1), `history` and `trigger` work.
#[test]
fn a_job_file_with_a_typo_leaves_the_cli_working() {
    let mut d = Daemon::prepare("", "[jobs.good]\nevery = \"1h\"\ncommand = \"true\"\n");
    d.spawn_ready();
    d.write_jobs(
        "broken.toml",
        "[jobs.bad]\nevery = \"1h\"\ncomand = \"true\"\n",
    );
    let list = d.cli(&["list"]);
    assert_eq!(list.status.code(), Some(1));
    assert!(
        text(&list.stdout).contains("good"),
        "{}",
        text(&list.stdout)
    );
    assert!(
        text(&list.stderr).contains(r#"jobs.d/broken.toml: job "bad": comand: unknown key "comand" (did you mean "command"?)"#),
        "{}",
        text(&list.stderr)
    );
    let trigger = d.cli(&["trigger", "good"]);
    assert!(trigger.status.success(), "{}", text(&trigger.stderr));
    let bad = d.cli(&["trigger", "bad"]);
    fails_with(
        &bad,
        &["the daemon runs; the files on disk define it with a mistake"],
    );
    let history = d.cli(&["history"]);
    assert!(history.status.success(), "{}", text(&history.stderr));
    assert!(text(&history.stdout).contains("good"));
}

/// Completions for each shell and the man page come from the command line's definition.
#[test]
fn completions_and_man_pages_cover_every_command() {
    let out = |args: &[&str]| {
        let o = Command::new(BIN).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let bash = out(&["completions", "bash"]);
    assert!(bash.contains("_hourglass()") && bash.contains("history") && bash.contains("nodes"));
    assert!(out(&["completions", "zsh"]).starts_with("#compdef hourglass"));
    assert!(out(&["completions", "fish"]).contains("complete -c hourglass"));
    let man = out(&["man"]);
    assert!(man.contains(".TH hourglass 1"), "{man}");
    // One page per command, and every page the main one names is there.
    let dir = tempfile::tempdir().unwrap();
    let written = out(&["man", "--dir", dir.path().to_str().unwrap()]);
    let main = std::fs::read_to_string(dir.path().join("hourglass.1")).unwrap();
    // Pages named as `hourglass\-trigger(1)` (roff escapes hyphens).
    let main = main.replace("\\-", "-");
    let mut named: Vec<&str> = main
        .split("hourglass-")
        .skip(1)
        .filter_map(|s| {
            let end = s.find(|c: char| !(c.is_ascii_lowercase() || c == '-'))?;
            s[end..].starts_with("(1)").then(|| &s[..end])
        })
        .collect();
    named.sort_unstable();
    named.dedup();
    assert!(named.contains(&"trigger"), "{main}");
    assert_eq!(written.lines().count(), 1 + named.len(), "{written}");
    for command in named {
        let page = std::fs::read_to_string(dir.path().join(format!("hourglass-{command}.1")))
            .unwrap_or_else(|e| panic!("hourglass-{command}(1) is named, not written: {e}"));
        assert!(page.starts_with(".ie") || page.contains(&format!(".TH hourglass-{command} 1")));
    }
}
