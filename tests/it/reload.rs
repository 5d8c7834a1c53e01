//! Reloads of a running daemon (SIGHUP and file changes): jobs added, changed and removed;
//! a bad configuration refused while the previous one runs on, and what the CLI, the API, the
//! dashboard and systemd say of it meanwhile.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{Daemon, wait_for};
use hourglass::store::RunStatus;

const SEC: Duration = Duration::from_secs(1);

#[test]
fn reload_adds_changes_removes_and_rejects_bad_config() {
    let mut d = Daemon::start("", "[jobs.a]\nevery = \"1s\"\ncommand = \"echo v1\"\n");
    d.wait_runs("a", 20 * SEC, "a v1", |r| {
        r.iter().any(|r| r.status == RunStatus::Succeeded)
    });

    // Add b (SIGHUP).
    d.write_jobs("b.toml", "[jobs.b]\nevery = \"1s\"\ncommand = \"echo b\"\n");
    d.signal(Signal::SIGHUP);
    d.wait_note("RELOADING=1", 10 * SEC);
    d.wait_note("READY=1", 10 * SEC);
    d.wait_runs("b", 20 * SEC, "b to run", |r| {
        r.iter().any(|r| r.status == RunStatus::Succeeded)
    });

    // Change a, by editing the file only (the watcher reloads).
    d.write_jobs(
        "jobs.toml",
        "[jobs.a]\nevery = \"1s\"\ncommand = \"echo v2\"\n",
    );
    let runs = d.wait_runs("a", 20 * SEC, "a v2", |r| {
        r.iter().any(|r| {
            r.status == RunStatus::Succeeded
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
    let api = crate::http::Api::socket(&d.path("hourglass.sock"));
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
