//! The README's examples as a user copies them.

use std::time::Duration;

use crate::harness::{Daemon, finished};

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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
    assert_eq!(run.status, "failed", "{run:?}");
    let shown = String::from_utf8_lossy(&d.cli(&["show", &run.id.to_string()]).stdout).to_string();
    assert!(
        shown.contains("pg_dump: error: connection to server"),
        "{shown}"
    );
}
