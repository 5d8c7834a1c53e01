//! The README's examples as a user copies them.

use std::time::Duration;

use crate::harness::{Daemon, finished};
use hourglass::store::RunStatus;

/// The first fenced block after `heading` in the README.
fn block_after(heading: &str) -> String {
    let readme = include_str!("../../README.md");
    let after = &readme[readme.find(heading).expect("the heading is in the README")..];
    let start = after.find("```toml\n").expect("a toml block follows") + "```toml\n".len();
    let len = after[start..].find("```").unwrap();
    after[start..start + len].to_string()
}

/// What follows the line starting with `marker` in one of the README's fenced blocks, up to
/// the block's end.
pub fn lines_after(marker: &str) -> String {
    let readme = include_str!("../../README.md");
    let after = &readme[readme.find(marker).expect("the marker is in the README")..];
    let start = after.find('\n').unwrap() + 1;
    let len = after[start..].find("```").expect("the block ends");
    after[start..start + len].to_string()
}

/// The README's first job, copied as written, run against a PostgreSQL that does not answer:
/// its run is recorded `failed` (not the `succeeded` of gzip's status), with pg_dump's words.
/// The same line without `shell = "bash"` is warned of by `check`.
#[test]
fn the_readmes_first_job_fails_when_its_backup_fails() {
    let job = block_after("## A first job");
    assert!(job.contains("shell = \"bash\""), "{job}");
    let port = crate::harness::free_port();
    let out = tempfile::tempdir().unwrap();
    // Where the backups go and where the (stopped) database is: the job as written besides.
    let jobs = job.replace("/var/backups", &out.path().display().to_string())
        + &format!("env = {{ PGHOST = \"127.0.0.1\", PGPORT = \"{port}\" }}\n");
    let mut d = Daemon::prepare("", &jobs);
    let check = d.cli(&["check"]);
    let said = String::from_utf8_lossy(&check.stderr).to_string()
        + &String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{said}");
    assert!(!said.contains("pipeline"), "{said}");
    d.write_jobs("jobs.toml", &jobs.replace("shell = \"bash\"", ""));
    let check = d.cli(&["check"]);
    let said = String::from_utf8_lossy(&check.stderr).to_string()
        + &String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains("under /bin/sh a pipeline succeeds when its last command does")
            && said.contains("`pg_dump app` fails"),
        "{said}"
    );
    d.write_jobs("jobs.toml", &jobs);
    d.spawn_ready();
    let trigger = d.cli(&["trigger", "nightly-backup"]);
    assert!(trigger.status.success(), "{trigger:?}");
    let runs = d.wait_runs("nightly-backup", Duration::from_secs(30), "the run", |r| {
        r.iter().any(|r| r.attempt == 1 && finished(r))
    });
    let run = runs.iter().find(|r| r.attempt == 1).unwrap();
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let shown = String::from_utf8_lossy(&d.cli(&["show", &run.id.to_string()]).stdout).to_string();
    assert!(
        shown.contains("pg_dump: error: connection to server"),
        "{shown}"
    );
}

/// The lines of the first `sh` block after `marker` in the README, as written (trailing
/// comments cut).
fn sh_lines_after(marker: &str) -> Vec<String> {
    let readme = include_str!("../../README.md");
    let after = &readme[readme.find(marker).expect("the marker is in the README")..];
    let start = after.find("```sh\n").expect("a sh block follows") + "```sh\n".len();
    let len = after[start..].find("```").unwrap();
    after[start..start + len]
        .lines()
        .map(|l| l.split("  #").next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The README's first command, as written but for the binary (the suite's build instead of
/// `cargo run --release --`), in a copy of the repository's `config/`; then its next lines,
/// `./target/release/hourglass ...` the same way: the daemon starts on the example config,
/// `list` lists the example jobs and `history` answers.
#[test]
fn the_readmes_first_commands_work_as_written() {
    let first = sh_lines_after("## Two commands");
    let run = first[0]
        .strip_prefix("cargo run --release -- ")
        .expect("the first command is cargo run --release -- ...");
    let root = tempfile::tempdir().unwrap();
    let copy = std::process::Command::new("cp")
        .arg("-r")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config"))
        .arg(root.path())
        .status()
        .unwrap();
    assert!(copy.success());
    let log = std::fs::File::create(root.path().join("daemon.log")).unwrap();
    let mut daemon = std::process::Command::new(crate::harness::BIN)
        .args(run.split_whitespace())
        .current_dir(root.path())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let daemon_log = || std::fs::read_to_string(root.path().join("daemon.log")).unwrap();
    crate::harness::wait_for(Duration::from_secs(20), "the daemon to start", || {
        daemon_log().contains("hourglass started").then_some(())
    });
    let next = sh_lines_after("In another terminal");
    let mut ran = 0;
    for line in next
        .iter()
        .filter(|l| l.starts_with("./target/release/hourglass "))
    {
        let args = line.trim_start_matches("./target/release/hourglass ");
        let out = std::process::Command::new(crate::harness::BIN)
            .args(args.split_whitespace())
            .current_dir(root.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{line}: {out:?}\n{}", daemon_log());
        if args.ends_with(" list") {
            let jobs = text.lines().skip(1).count();
            assert!(jobs >= 3, "{line}: {text}");
        }
        ran += 1;
    }
    assert_eq!(ran, 2, "{next:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success(), "{}", daemon_log());
}

/// The README's chain, copied as written (its folder moved to a temporary one): `check`
/// accepts it, `list` says when `load` runs, and when `extract` fails (its table is missing)
/// the failure path runs once, naming it, and `load` does not.
#[test]
fn the_readmes_chain_takes_its_failure_path_when_a_step_fails() {
    let etl = block_after("## Dependencies and groups");
    assert!(etl.contains("[jobs.etl-failed]"), "{etl}");
    let dir = tempfile::tempdir().unwrap();
    let jobs = etl.replace("/srv/etl", &dir.path().display().to_string());
    let mut d = Daemon::prepare("", &jobs);
    let check = d.cli(&["check"]);
    assert!(check.status.success(), "{check:?}");
    let list = String::from_utf8_lossy(&d.cli(&["list"]).stdout).to_string();
    assert!(
        list.contains("after extract and fetch-rates succeed (within 1h)"),
        "{list}"
    );
    d.spawn_ready();
    // The same through the running daemon's API.
    let list = String::from_utf8_lossy(&d.cli(&["list"]).stdout).to_string();
    assert!(
        list.contains("after extract and fetch-rates succeed (within 1h)"),
        "{list}"
    );
    let trigger = d.cli(&["trigger", "extract"]);
    assert!(trigger.status.success(), "started: {trigger:?}");
    let failed = d.wait_runs(
        "etl-failed",
        Duration::from_secs(30),
        "the failure path",
        |r| r.iter().any(finished),
    );
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0].status, RunStatus::Succeeded);
    let extract = d.runs_of("extract");
    assert_eq!(extract[0].status, RunStatus::Failed);
    let shown =
        String::from_utf8_lossy(&d.cli(&["show", &failed[0].id.to_string()]).stdout).to_string();
    assert!(
        shown.contains(&format!(
            "after:         extract run {} (failed)",
            extract[0].id
        )),
        "{shown}"
    );
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(20));
    assert!(
        d.runs_of("load").is_empty(),
        "load ran after a failed extract"
    );
}

/// The README's job with limits, copied as written: `check` accepts it, and run by hand it
/// succeeds under them, its row saying what it cost.
#[test]
fn the_readmes_job_with_limits_runs_under_them() {
    let job = block_after("## What a run costs, and limits");
    assert!(job.contains("limits = {"), "{job}");
    let mut d = Daemon::prepare("", &job);
    let check = d.cli(&["check"]);
    assert!(check.status.success(), "{check:?}");
    d.spawn_ready();
    let trigger = d.cli(&["trigger", "big-files"]);
    assert!(trigger.status.success(), "{trigger:?}");
    let runs = d.wait_runs("big-files", Duration::from_secs(60), "the run", |r| {
        r.iter().any(finished)
    });
    assert_eq!(
        runs[0].status,
        RunStatus::Succeeded,
        "{runs:?}\n{}",
        d.log()
    );
    assert!(runs[0].usage.is_some_and(|u| u.cpu_us() > 0), "{runs:?}");
}
