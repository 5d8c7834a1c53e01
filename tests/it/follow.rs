//! Following runs as they go: `show --follow` prints a running run's lines as they come,
//! `history --follow` prints runs as they start and end.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use crate::harness::{BIN, Daemon};
use hourglass::store::RunStatus;

#[test]
fn show_follow_prints_lines_as_they_come_and_history_follow_prints_runs() {
    let d = Daemon::start("", crate::api::JOBS);
    let mut follow = Command::new(BIN)
        .arg("--config")
        .arg(d.config())
        .args(["history", "--follow", "--job", "slow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = d.cli(&["trigger", "slow"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let run: i64 = said.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut show = Command::new(BIN)
        .arg("--config")
        .arg(d.config())
        .args(["show", "--follow", &run.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(show.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "line 1");
    // The first line came while the run was still going.
    let row = d.runs_of("slow").into_iter().find(|r| r.id == run).unwrap();
    assert_eq!(row.status, RunStatus::Running);
    assert_eq!(lines.next().unwrap().unwrap(), "line 2");
    assert_eq!(lines.next().unwrap().unwrap(), "line 3");
    let end = lines.next().unwrap().unwrap();
    assert!(
        end.starts_with(&format!(
            "--- run {run} of \"slow\" succeeded (exit code 0) in "
        )),
        "{end}"
    );
    assert!(show.wait().unwrap().success());
    // `history --follow` printed the run when it started and again when it ended.
    let mut follow_lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut statuses = Vec::new();
    while statuses.len() < 2 {
        let line = follow_lines.next().unwrap().unwrap();
        if line.trim_start().starts_with(&run.to_string()) {
            statuses.push(line.split_whitespace().nth(3).unwrap().to_string());
        }
    }
    assert_eq!(statuses, ["running", "succeeded"]);
    let _ = follow.kill();
    let _ = follow.wait();
}
