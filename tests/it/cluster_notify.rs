//! What a node (or a client) changes reaches the other nodes through the database's
//! notifications, not a poll: with `database.fallback_poll` set to an hour, a pause, a manual
//! trigger and a replace request take effect on another node at once.

use std::time::Duration;

use chrono::{TimeDelta, Timelike, Utc};
use hourglass::store::RunStatus;

use crate::cluster::{all_runs, connect, fresh_database, replace_across, stop_all};
use crate::harness::{Daemon, wait_for};

/// Node `node` on `url`, polling once an hour, with `tags`.
fn main_file(url: &str, node: &str, tags: &str) -> String {
    format!(
        "[database]\nurl = \"{url}\"\nlease = \"10s\"\nfallback_poll = \"1h\"\n\n\
         [daemon]\nnode = \"{node}\"\ntimezone = \"UTC\"\nshutdown_grace = \"5s\"\ntags = [{tags}]\n"
    )
}

/// Both nodes have `tick` (run only on n2, by its tag) and `long`; only n2 has `only2`.
const JOBS: &str = "[jobs.tick]\nevery = \"1s\"\ncommand = \"true\"\nrun_on = [\"b\"]\n\
    [jobs.long]\nevery = \"2s\"\ncommand = \"sleep 30\"\noverlap = \"replace\"\n";
const ONLY2: &str = "[jobs.only2]\nevery = \"1d\"\ncommand = \"true\"\n";

#[test]
fn pauses_triggers_and_replace_requests_reach_the_other_node_without_polling() {
    let url = fresh_database("notify");
    let mut n1 = Daemon::prepare_main(&main_file(&url, "n1", ""), JOBS);
    let mut n2 = Daemon::prepare_main(&main_file(&url, "n2", "\"b\""), &format!("{JOBS}{ONLY2}"));
    n1.spawn_ready();
    n2.spawn_ready();
    let mut nodes = vec![n1, n2];
    replace_reaches_the_holder(&url);
    triggers_reach_the_node_that_has_the_job(&url);
    a_pause_on_n1_stops_n2_within_100_ms(&url, &nodes[0]);
    stop_all(&mut nodes);
}

/// `long` (every 2 s, `sleep 30`, `overlap = "replace"`): each newer firing stops the run
/// before it, on whichever node it runs, at once.
fn replace_reaches_the_holder(url: &str) {
    let across = replace_across(url, "long");
    let (old, new) = across;
    let stopped = (old.finished_at.unwrap() - new.scheduled_for).num_milliseconds();
    println!(
        "replace: run on {} stopped {stopped} ms after the newer firing on {} was due",
        old.node, new.node
    );
    assert!(
        stopped < 1000,
        "no poll within the hour could stop it: {old:?} {new:?}"
    );
}

/// A trigger request for `only2` (which only n2 has) made by a client: n2 runs it at once.
fn triggers_reach_the_node_that_has_the_job(url: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(connect(url));
    let mut delays = Vec::new();
    for _ in 0..5 {
        let asked = Utc::now();
        let request = rt.block_on(store.request_trigger("only2", false)).unwrap();
        let run = wait_for(Duration::from_secs(30), "the triggered run", || {
            all_runs(url)
                .into_iter()
                .find(|r| r.job == "only2" && r.started_at.is_some_and(|s| s >= asked))
        });
        let delay = (run.started_at.unwrap() - asked).num_milliseconds();
        println!(
            "trigger {request}: started on {} after {delay} ms",
            run.node
        );
        assert_eq!(run.node, "n2");
        delays.push(delay);
        wait_for(Duration::from_secs(30), "the run's end", || {
            all_runs(url)
                .into_iter()
                .any(|r| r.id == run.id && r.finished_at.is_some())
                .then_some(())
        });
    }
    rt.block_on(store.close());
    delays.sort_unstable();
    assert!(delays[2] <= 100, "median {} ms: {delays:?}", delays[2]);
    assert!(
        delays[4] < 2000,
        "no poll within the hour could start it: {delays:?}"
    );
}

/// n1 pauses `tick` (which only n2 runs) 100 ms before a firing: n2 does not run it.
fn a_pause_on_n1_stops_n2_within_100_ms(url: &str, n1: &Daemon) {
    wait_for(Duration::from_secs(30), "tick running on n2", || {
        (all_runs(url).iter().filter(|r| r.job == "tick").count() >= 2).then_some(())
    });
    // 100 ms before a whole second.
    let now = Utc::now();
    let wait = 900_u32.saturating_sub(now.nanosecond() / 1_000_000) % 1000;
    std::thread::sleep(Duration::from_millis(u64::from(wait)));
    let api = crate::http::Api::socket(&n1.path("hourglass.sock"));
    api.post("/v1/jobs/tick/pause", serde_json::json!({}));
    let paused = Utc::now();
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<_> = all_runs(url)
        .into_iter()
        .filter(|r| r.job == "tick" && r.status != RunStatus::Skipped)
        .filter(|r| r.scheduled_for >= paused + TimeDelta::milliseconds(100))
        .collect();
    assert!(
        after.is_empty(),
        "paused at {paused}, still ran on n2: {after:?}"
    );
}
