//! Mutual exclusion groups with the real daemon: three jobs every second in a group of
//! `max_running = 1` never run at once (by their processes' own clocks and by the history),
//! and the firings a full group skips name the run that held it; on three nodes of one
//! PostgreSQL database too.

use std::path::Path;
use std::time::Duration;

use hourglass::store::{RunRow, RunStatus};
use nix::sys::signal::Signal;

use crate::harness::Daemon;

/// Three jobs of the group `exclusive`, every second, 0.2 s each: `a` and `b` skip a firing
/// that finds the group full, `c` queues. Each process notes its start and end (ns) in `log`.
fn jobs(log: &Path) -> String {
    let log = log.display();
    [("a", "skip"), ("b", "skip"), ("c", "queue")]
        .iter()
        .map(|(job, overlap)| {
            format!(
                "[jobs.{job}]\nevery = \"1s\"\ngroup = \"exclusive\"\noverlap = \"{overlap}\"\n\
                 command = 'echo \"$(date +%s%N) start\" >> {log}; sleep 0.2; echo \"$(date +%s%N) end\" >> {log}'\n"
            )
        })
        .collect()
}

const GROUP: &str = "[groups.exclusive]\nmax_running = 1\n";

/// The processes' (start, end) in ns, from `log`: never two at once when the starts and
/// ends alternate.
fn assert_alternating(log: &Path) -> usize {
    let text = std::fs::read_to_string(log).unwrap();
    let mut marks: Vec<(u128, bool)> = text
        .lines()
        .map(|l| {
            let (t, what) = l.split_once(' ').unwrap();
            (t.parse().unwrap(), what == "start")
        })
        .collect();
    marks.sort_unstable();
    for pair in marks.chunks(2) {
        assert!(
            pair.len() == 2 && pair[0].1 && !pair[1].1,
            "two processes of the group at once: {pair:?} in {marks:?}"
        );
    }
    marks.len() / 2
}

/// The history's runs of the group: no two overlap; every skip names the run that held the
/// group. Returns (runs, skips).
fn assert_history(runs: &[RunRow]) -> (usize, usize) {
    let mut ran: Vec<&RunRow> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .collect();
    ran.sort_by_key(|r| r.started_at);
    for w in ran.windows(2) {
        assert!(
            w[0].finished_at.unwrap() <= w[1].started_at.unwrap(),
            "runs overlap: {:#?}",
            w
        );
    }
    // A firing due as its node stops is skipped for the stop, not for the group.
    let skips: Vec<&RunRow> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Skipped)
        .filter(|r| {
            !r.error
                .as_deref()
                .is_some_and(|e| e.starts_with("daemon stopping"))
        })
        .collect();
    for s in &skips {
        let error = s.error.as_deref().unwrap_or("");
        let holder = ["a", "b", "c"].iter().any(|j| {
            error.contains(&format!(" of job {j} (due "))
                || error.contains(&format!("job {j}'s run due "))
        });
        assert!(
            error.contains("its group \"exclusive\" is full (max_running = 1): ") && holder,
            "the skip names the run that held the group: {s:#?}"
        );
    }
    (ran.len(), skips.len())
}

#[test]
fn a_group_of_one_never_runs_two_of_its_jobs_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("intervals.log");
    let mut d = Daemon::start(GROUP, &jobs(&log));
    // The window observed: a minute of firings.
    std::thread::sleep(Duration::from_secs(60));
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(30));
    let processes = assert_alternating(&log);
    let (ran, skipped) = assert_history(&d.runs());
    println!("a minute: {processes} processes, {ran} runs, {skipped} skips");
    assert_eq!(processes, ran);
    // Each second: whichever of a, b and c comes first runs, c runs after it when it came
    // later (queued), and the skipping ones that find the group held are skipped.
    assert!(ran >= 50 && skipped >= 50, "{ran} runs, {skipped} skips");
    let c = d
        .runs_of("c")
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .count();
    assert!(c >= 50, "c queued for its turn every second: {c}");
}

#[test]
fn a_group_of_one_holds_across_three_nodes() {
    let url = crate::cluster::fresh_database("groups");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("intervals.log");
    let mut nodes: Vec<Daemon> = ["n1", "n2", "n3"]
        .iter()
        .map(|node| {
            let main = crate::cluster::node_main(&url, node, "");
            let mut d = Daemon::prepare_main(&format!("{main}\n{GROUP}"), &jobs(&log));
            d.spawn_ready();
            d
        })
        .collect();
    // The window observed: a minute of firings.
    std::thread::sleep(Duration::from_secs(60));
    crate::cluster::stop_all(&mut nodes);
    let processes = assert_alternating(&log);
    let runs = crate::cluster::all_runs(&url);
    let (ran, skipped) = assert_history(&runs);
    let on: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.node.as_str()).collect();
    println!("a minute on {on:?}: {processes} processes, {ran} runs, {skipped} skips");
    assert_eq!(processes, ran);
    assert!(on.len() >= 2, "the runs spread over the nodes: {on:?}");
    assert!(ran >= 60 && skipped >= 20, "{ran} runs, {skipped} skips");
    let c = runs
        .iter()
        .filter(|r| r.job == "c" && r.status == RunStatus::Succeeded)
        .count();
    assert!(c >= 30, "c queued for its turn: {c}");
}
