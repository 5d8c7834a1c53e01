//! PostgreSQL out of reach under several nodes: a server of the test's own stopped and
//! started again, five times; no node crashes, no firing runs twice, every firing keeps one
//! row or one place in a range row, runs ended meanwhile are recorded from the spill file.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hourglass::store::{RunRow, RunStatus, Trigger};

use crate::cluster::{all_runs, duplicates, psql, start_nodes, stop_all};
use crate::harness::{Daemon, ts, wait_for};

/// A PostgreSQL server of the test's own (the outage test stops it; the shared one serves
/// the other tests meanwhile), run as `postgres` when the tests run as root (initdb refuses
/// root).
struct OwnServer {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl OwnServer {
    fn start() -> Self {
        let pg_ctl = std::env::var("HOURGLASS_TEST_PG_CTL")
            .expect("HOURGLASS_TEST_PG_CTL is not set: run the tests with scripts/test.sh");
        let bin = std::path::Path::new(&pg_ctl)
            .parent()
            .unwrap()
            .to_path_buf();
        let dir = tempfile::tempdir().unwrap();
        if nix::unistd::geteuid().is_root() {
            let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
            nix::unistd::chown(dir.path(), Some(pg.uid), Some(pg.gid)).unwrap();
        }
        let port = crate::harness::free_port();
        let server = Self { dir, bin, port };
        let data = server.dir.path().join("data");
        server.pg(&[
            "initdb",
            "-D",
            data.to_str().unwrap(),
            "--auth=trust",
            "-U",
            "postgres",
        ]);
        server.up();
        server
    }

    /// Runs a PostgreSQL program (as `postgres` when root).
    fn pg(&self, args: &[&str]) {
        let program = self.bin.join(args[0]);
        let mut cmd = if nix::unistd::geteuid().is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            std::process::Command::new(&program)
        };
        let out = cmd.args(&args[1..]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    }

    fn up(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("log");
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.pg(&[
            "pg_ctl",
            "-D",
            data.to_str().unwrap(),
            "-w",
            "-l",
            log.to_str().unwrap(),
            "-o",
            &opts,
            "start",
        ]);
    }

    fn down(&self) {
        let data = self.dir.path().join("data");
        self.pg(&[
            "pg_ctl",
            "-D",
            data.to_str().unwrap(),
            "-m",
            "fast",
            "-w",
            "stop",
        ]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        if data.join("postmaster.pid").exists() {
            let _ = std::panic::catch_unwind(|| {
                self.pg(&[
                    "pg_ctl",
                    "-D",
                    data.to_str().unwrap(),
                    "-m",
                    "immediate",
                    "stop",
                ]);
            });
        }
    }
}

/// Whether the records of an outage that began at `down_at` are in: the slow runs going then
/// ended (written from the spill file), a skipped row for `tick`'s firings of the outage, a
/// catch-up run of `newest` after it.
fn outage_recorded(runs: &[RunRow], down_at: DateTime<Utc>) -> bool {
    let slow_done = runs
        .iter()
        .filter(|r| r.job == "slow" && r.scheduled_for < down_at)
        .all(|r| r.status != RunStatus::Running);
    let skipped = runs.iter().any(|r| {
        r.job == "tick"
            && r.status == RunStatus::Skipped
            && r.scheduled_for > down_at
            && r.error
                .as_deref()
                .is_some_and(|e| e.contains("shared database could not be reached"))
    });
    let newest_ran = runs.iter().any(|r| {
        r.job == "newest"
            && r.trigger == Trigger::CatchUp
            && r.status == RunStatus::Succeeded
            && r.scheduled_for > down_at
    });
    slow_done && skipped && newest_ran
}

/// How many times, and how long, the outage test stops PostgreSQL.
const OUTAGES: usize = 5;
const OUTAGE: Duration = Duration::from_secs(10);

/// PostgreSQL stopped for 10 s, five times, under 3 nodes: no node crashes, no firing runs
/// twice, every firing has one row or one place in a range row (none covers a firing with a
/// row, each says which firings in `details`), the README's missed-firings query counts
/// them all, runs that finished meanwhile are recorded after (the spill file), and the
/// firings missed meanwhile follow `catch_up`: "skip" gets skipped rows, "latest" runs once
/// per outage.
#[test]
fn database_outages_lose_no_record_and_double_no_firing() {
    let server = OwnServer::start();
    let url = server.url();
    let jobs = "[jobs.tick]\nevery = \"1s\"\ncommand = \"true\"\n\
                [jobs.newest]\nevery = \"1s\"\ncommand = \"true\"\ncatch_up = \"latest\"\n\
                [jobs.slow]\nevery = \"5s\"\ncommand = \"sleep 8\"\noverlap = \"allow\"\n";
    let mut nodes = start_nodes(&url, 3, jobs, |_| String::new());
    let mut outages = Vec::new();
    let mut last_down = Utc::now();
    for _ in 0..OUTAGES {
        wait_for(Duration::from_secs(30), "a slow run going", || {
            all_runs(&url)
                .iter()
                .any(|r| r.job == "slow" && r.status == RunStatus::Running)
                .then_some(())
        });
        let down_at = Utc::now();
        server.down();
        let down_done = Utc::now();
        std::thread::sleep(OUTAGE);
        server.up();
        outages.push((down_done, Utc::now()));
        for d in &mut nodes {
            let child = d.child.as_mut().unwrap();
            assert!(
                child.try_wait().unwrap().is_none(),
                "a node died: {}",
                d.log()
            );
        }
        wait_for_the_outages_records(&url, &nodes, down_at);
        last_down = down_at;
    }
    std::thread::sleep(Duration::from_secs(3));
    stop_all(&mut nodes);
    let runs = all_runs(&url);
    assert_eq!(duplicates(&runs), [], "firings recorded twice");
    outage_rows_cover_only_their_own(&runs);
    every_firing_has_its_row(&runs, "tick");
    // The slow runs going when an outage began ended meanwhile: recorded after, from the
    // spill file (the stop may cut short only those of after the last outage).
    let slow_cut: Vec<&RunRow> = runs
        .iter()
        .filter(|r| r.job == "slow" && r.started_at.is_some() && r.scheduled_for < last_down)
        .filter(|r| r.status != RunStatus::Succeeded)
        .collect();
    assert!(slow_cut.is_empty(), "{slow_cut:#?}");
    let missed = missed_firings(&runs, "tick");
    assert!(missed > 0, "the outages missed no firing of tick");
    // psql "$URL" -c "<query>", as the README writes it.
    let command = crate::readme::lines_after("# Missed firings per job, on PostgreSQL");
    let query = command.split('"').nth(3).expect("the query between quotes");
    let counted = psql(&url, query);
    assert!(
        counted.lines().any(|l| l == format!("tick|{missed}")),
        "the README's query says {counted:?}, the rows {missed}"
    );
    // Claims made before the heartbeat saw an outage (within a sixth of the lease, 10 s
    // here, plus its 3 s connection timeout) wait up to 15 s for a connection: those that get
    // one once the database is back run late, as any firing up to 60 s late does. After
    // that, claims fail at once and the missed firings follow catch_up.
    let in_an_outage = |r: &&RunRow| {
        let t = r.scheduled_for;
        outages.iter().any(|&(down, up)| {
            t > down + chrono::TimeDelta::seconds(6) && t < up - chrono::TimeDelta::seconds(2)
        })
    };
    let newest = runs
        .iter()
        .filter(|r| {
            r.job == "newest" && r.trigger == Trigger::CatchUp && r.status == RunStatus::Succeeded
        })
        .count();
    assert_eq!(
        newest, OUTAGES,
        "latest ran {newest} times in {OUTAGES} outages"
    );
    let tick_ran: Vec<&RunRow> = runs
        .iter()
        .filter(|r| r.job == "tick" && r.status == RunStatus::Succeeded)
        .filter(in_an_outage)
        .collect();
    assert!(tick_ran.is_empty(), "catch_up = \"skip\" ran {tick_ran:#?}");
    no_false_alarms(&nodes);
}

/// Waits (60 s at most) for the records of the outage that began at `down_at`; else fails
/// with the nodes' notes and the odd rows.
fn wait_for_the_outages_records(url: &str, nodes: &[Daemon], down_at: DateTime<Utc>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !outage_recorded(&all_runs(url), down_at) {
        if Instant::now() > deadline {
            let notes: Vec<String> = nodes
                .iter()
                .flat_map(|d| {
                    d.log()
                        .lines()
                        .filter(|l| !l.contains("run started") && !l.contains("run finished"))
                        .map(String::from)
                        .collect::<Vec<_>>()
                })
                .collect();
            let runs = all_runs(url);
            let odd: Vec<&RunRow> = runs
                .iter()
                .filter(|r| r.status != RunStatus::Succeeded || r.trigger != Trigger::Schedule)
                .collect();
            panic!(
                "the outage's records are not all in:\n{}\n{odd:#?}",
                notes.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The firings of `job` (every second) from its first row to its last: each has its own row
/// or a place in one range row (no gap; no overlap is [`outage_rows_cover_only_their_own`]).
fn every_firing_has_its_row(runs: &[RunRow], job: &str) {
    let rows: Vec<&RunRow> = runs
        .iter()
        .filter(|r| r.job == job && r.attempt == 1)
        .collect();
    let first = rows.iter().map(|r| r.scheduled_for).min().unwrap();
    let last = rows
        .iter()
        .map(|r| {
            r.details
                .as_ref()
                .and_then(|d| d["last"].as_str())
                .map_or_else(|| r.scheduled_for, ts)
        })
        .max()
        .unwrap();
    let firings = (last - first).num_seconds() + 1;
    let placed: i64 = rows.iter().map(|r| places(r)).sum();
    assert_eq!(
        placed, firings,
        "{job}: {firings} firings from {first} to {last}, {placed} rows or places in a range"
    );
}

/// How many firings a row stands for: its `missed_firings`, else 1.
fn places(r: &RunRow) -> i64 {
    r.details
        .as_ref()
        .and_then(|d| d["missed_firings"].as_i64())
        .unwrap_or(1)
}

/// How many firings of `job` did not run, by the rows: skipped catch-up rows, each for its
/// count.
fn missed_firings(runs: &[RunRow], job: &str) -> i64 {
    runs.iter()
        .filter(|r| r.job == job && r.status == RunStatus::Skipped && r.trigger == Trigger::CatchUp)
        .map(places)
        .sum()
}

/// Each row of firings not run during an outage says how many and which (`details`), and no
/// other row of its job is intended inside its range (it covers no firing that ran or was
/// recorded elsewhere); its count is the firings of the range.
fn outage_rows_cover_only_their_own(runs: &[RunRow]) {
    let not_run = runs.iter().filter(|r| {
        r.error
            .as_deref()
            .is_some_and(|e| e.starts_with("not run: the shared database could not be reached"))
    });
    let mut rows = 0;
    for r in not_run {
        rows += 1;
        let details = r
            .details
            .as_ref()
            .unwrap_or_else(|| panic!("no details: {r:?}"));
        let first = ts(details["first"].as_str().unwrap());
        let last = ts(details["last"].as_str().unwrap());
        let inside: Vec<&RunRow> = runs
            .iter()
            .filter(|o| o.job == r.job && o.id != r.id)
            .filter(|o| (first..=last).contains(&o.scheduled_for))
            .collect();
        assert!(inside.is_empty(), "{r:?} covers {inside:#?}");
        let every_s = if r.job == "slow" { 5 } else { 1 };
        let count = (last - first).num_seconds() / every_s + 1;
        assert_eq!(details["missed_firings"].as_i64(), Some(count), "{r:?}");
    }
    eprintln!("{rows} rows of firings not run during the outage, each its own");
}

/// Every node is on this machine's clock: an outage reports no skew, and its waits are not a
/// WARN per query (the pool's "slow acquire").
fn no_false_alarms(nodes: &[Daemon]) {
    for n in nodes {
        let log = n.log();
        assert!(!log.contains("clock is off"), "a false skew:\n{log}");
        let slow = log
            .lines()
            .filter(|l| l.contains("exceeded slow threshold"))
            .count();
        assert_eq!(slow, 0, "{slow} slow-acquire lines:\n{log}");
    }
}
