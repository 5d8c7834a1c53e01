//! The corpus of bad configs in `tests/bad-configs/`: each file is a job file (or, when its
//! first line is `# main file`, the main file) with the message(s) it must produce in
//! `# expect:` lines. `hourglass check` must reject each with that message, naming the file,
//! in the user's words; and each one sent to a running daemon as a reload must be rejected
//! with the same message while the running configuration goes on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{BIN, Daemon};
use nix::sys::signal::Signal;

/// The main file job-file cases are checked under (an SMTP server for the email cases).
const MAIN: &str = "[database]\npath = \"history.db\"\n[daemon]\ntimezone = \"UTC\"\n\
                    [smtp.main]\nhost = \"localhost\"\nport = 2525\ntls = \"none\"\n";
/// The job file main-file cases are checked with.
const GOOD_JOBS: &str = "[jobs.heartbeat]\nevery = \"1s\"\ncommand = \"true\"\n";
/// Words of Rust and of its libraries that a message for a user must not contain.
const RUST_WORDS: &[&str] = &[
    "struct ",
    "variant",
    "untagged",
    "u32",
    "u16",
    "usize",
    "Component error",
    "RawSecret",
    "panicked",
    "CronPattern",
];

struct Case {
    name: String,
    main: bool,
    text: String,
    expect: Vec<String>,
}

impl Case {
    /// The file as `check` names it.
    fn shown_file(&self) -> String {
        if self.main {
            "hourglass.toml".into()
        } else {
            format!("jobs.d/{}", self.name)
        }
    }

    /// The lines `check` must print.
    fn expected_lines(&self) -> Vec<String> {
        self.expect
            .iter()
            .map(|e| {
                if e.starts_with('/') {
                    e.clone()
                } else {
                    format!("{}: {e}", self.shown_file())
                }
            })
            .collect()
    }
}

fn corpus() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bad-configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let expect: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("# expect: "))
                .map(str::to_string)
                .collect();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!expect.is_empty(), "{name} has no `# expect:` line");
            Case {
                main: text.starts_with("# main file"),
                name,
                text,
                expect,
            }
        })
        .collect()
}

/// Writes `case` into `dir` as `check` and the daemon read it.
fn place(dir: &Path, case: &Case) {
    if case.main {
        std::fs::write(dir.join("hourglass.toml"), &case.text).unwrap();
    } else {
        std::fs::write(dir.join("jobs.d").join(&case.name), &case.text).unwrap();
    }
}

#[test]
fn check_rejects_every_bad_config_with_its_message() {
    let cases = corpus();
    assert!(cases.len() >= 200, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("jobs.d")).unwrap();
        if case.main {
            std::fs::write(dir.path().join("jobs.d/good.toml"), GOOD_JOBS).unwrap();
        } else {
            std::fs::write(dir.path().join("hourglass.toml"), MAIN).unwrap();
        }
        place(dir.path(), case);
        let out = std::process::Command::new(BIN)
            .args(["--config", "hourglass.toml", "check"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) {
            failures.push(format!("{}: exit {:?}\n{stderr}", case.name, out.status));
            continue;
        }
        for line in case.expected_lines() {
            if !stderr.contains(&line) {
                failures.push(format!("{}: expected {line:?}\ngot:\n{stderr}", case.name));
            }
        }
        for word in RUST_WORDS {
            if stderr.contains(word) {
                failures.push(format!("{}: speaks Rust ({word:?}):\n{stderr}", case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_bad_config_sent_as_a_reload_keeps_the_running_one() {
    let mut d = Daemon::prepare("", GOOD_JOBS);
    std::fs::write(d.config(), MAIN).unwrap();
    d.spawn_ready();
    let heartbeats = d.wait_runs("heartbeat", Duration::from_secs(10), "a heartbeat", |r| {
        !r.is_empty()
    });
    let before = heartbeats.len();
    let started = Instant::now();
    for case in corpus() {
        let offset = d.log().len();
        place(d.dir.path(), &case);
        d.signal(Signal::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = d.log();
            let new = &log[offset.min(log.len())..];
            // From this case's SIGHUP on: the file watcher's reload of the good file put back
            // after the case before may come first.
            let new = new
                .rfind("SIGHUP: reloading configuration")
                .map_or("", |at| &new[at..]);
            if new.contains("configuration rejected")
                && case
                    .expected_lines()
                    .iter()
                    .all(|e| new.contains(e.as_str()))
            {
                break;
            }
            assert!(
                !new.contains("configuration reloaded"),
                "{}: the daemon accepted it:\n{new}",
                case.name
            );
            assert!(
                Instant::now() < deadline,
                "{}: no rejection naming {:?}:\n{new}",
                case.name,
                case.expect
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = d
            .drain_notes()
            .into_iter()
            .rev()
            .find(|n| n.starts_with("STATUS="))
            .unwrap_or_default();
        assert!(
            status.starts_with("STATUS=1 jobs scheduled"),
            "{}: {status}",
            case.name
        );
        // Put the good config back for the next case.
        if case.main {
            std::fs::write(d.config(), MAIN).unwrap();
        } else {
            std::fs::remove_file(d.path(&format!("jobs.d/{}", case.name))).unwrap();
        }
    }
    // The heartbeat never stopped: it kept firing through every rejected reload.
    let seconds = started.elapsed().as_secs() as usize;
    let after = d.wait_runs(
        "heartbeat",
        Duration::from_secs(10),
        "more heartbeats",
        |r| r.len() >= before + seconds.saturating_sub(2),
    );
    assert!(after.len() > before);
    assert!(crate::harness::alive(d.pid()));
}
