//! Several daemons (nodes) on one real PostgreSQL database (`scripts/test.sh` starts a
//! throw-away server and sets `HOURGLASS_TEST_PG_URL`): each firing runs exactly once, a
//! killed node's runs are taken over, overlap holds across nodes, clock skew and definition
//! drift are reported, and every CLI command works against PostgreSQL.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use hourglass::store::{Database, HistoryFilter, PostgresTarget, RunRow, Store};
use nix::sys::signal::Signal;

use crate::harness::{Daemon, ts, wait_for};

/// A fresh database on the test server; panics when there is none (the cluster tests need it).
pub fn fresh_database(label: &str) -> String {
    harness::fresh_postgres_database(label)
        .unwrap()
        .expect("HOURGLASS_TEST_PG_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
}

/// The main file of node `node` on the database at `url`.
pub fn node_main(url: &str, node: &str, extra: &str) -> String {
    format!(
        "[database]\nurl = \"{url}\"\nlease = \"10s\"\n\n[daemon]\nnode = \"{node}\"\ntimezone = \"UTC\"\nshutdown_grace = \"5s\"\n{extra}\n"
    )
}

/// Every run in the database at `url`, oldest first.
fn all_runs(url: &str) -> Vec<RunRow> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let target = PostgresTarget {
            url: url.to_string(),
            password: None,
            tls: None,
            ca_file: None,
            local: std::env::temp_dir().join("hourglass-test-reader"),
        };
        let store = Store::connect(&Database::Postgres(target)).await.unwrap();
        let mut rows = store
            .history(&HistoryFilter {
                limit: 10_000_000,
                ..Default::default()
            })
            .await
            .unwrap();
        store.close().await;
        rows.reverse();
        rows
    })
}

/// Firings recorded more than once (same job and intended time, first attempts).
fn duplicates(runs: &[RunRow]) -> Vec<(String, String, usize)> {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for r in runs.iter().filter(|r| r.attempt == 1) {
        *seen.entry((&r.job, &r.scheduled_for)).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((j, s), n)| (j.to_string(), s.to_string(), n))
        .collect()
}

/// Starts `n` nodes `n1`... on `url` with `jobs`; `extra(i)` goes in node i's main file.
fn start_nodes(url: &str, n: usize, jobs: &str, extra: impl Fn(usize) -> String) -> Vec<Daemon> {
    let mut nodes: Vec<Daemon> = (1..=n)
        .map(|i| Daemon::prepare_main(&node_main(url, &format!("n{i}"), &extra(i)), jobs))
        .collect();
    for d in &mut nodes {
        d.spawn();
    }
    for d in &mut nodes {
        d.wait_note("READY=1", Duration::from_secs(30));
    }
    nodes
}

/// SIGTERM to every node; each must exit within 30 s, successfully (else its log is shown).
fn stop_all(nodes: &mut [Daemon]) {
    for d in nodes.iter() {
        d.signal(Signal::SIGTERM);
    }
    for d in nodes.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let child = d.child.as_mut().unwrap();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let pid = child.id();
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let mut threads = String::new();
                for t in std::fs::read_dir(format!("/proc/{pid}/task"))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let p = t.path();
                    let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
                    let wchan = std::fs::read_to_string(p.join("wchan")).unwrap_or_default();
                    let stack = std::fs::read_to_string(p.join("stack")).unwrap_or_default();
                    threads.push_str(&format!("{stat}\nwchan {wchan}\n{stack}\n"));
                }
                eprintln!("STUCK pid {pid}\n{status}\n{threads}");
                let log = d.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "a node did not stop within 30 s; its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status:?}: {}", d.log());
    }
}

/// `count` every-second jobs (`overlap = "allow"`: a run slowed past a second by the load of
/// the machine must not turn a firing into a skip; overlap has tests of its own).
fn every_second_jobs(count: usize) -> String {
    (0..count)
        .map(|i| {
            format!("[jobs.j{i:03}]\nevery = \"1s\"\ncommand = \"true\"\noverlap = \"allow\"\n")
        })
        .collect()
}

/// 3 nodes, 200 every-second jobs for 2 minutes (24,000 firings): every firing in the
/// stretch all nodes were up has exactly one row; each node ran a share.
#[test]
fn three_nodes_run_every_firing_exactly_once() {
    let url = fresh_database("three_nodes");
    let nodes = start_nodes(&url, 3, &every_second_jobs(200), |_| String::new());
    let from = Utc::now() + chrono::TimeDelta::seconds(2);
    std::thread::sleep(Duration::from_secs(120));
    let to = Utc::now() - chrono::TimeDelta::seconds(3);
    let mut nodes = nodes;
    stop_all(&mut nodes);
    let runs = all_runs(&url);
    assert_eq!(duplicates(&runs), [], "firings recorded twice");
    let mut per_job: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &runs {
        per_job
            .entry(&r.job)
            .or_default()
            .push(ts(&r.scheduled_for));
        *per_node.entry(&r.node).or_default() += 1;
        if ts(&r.scheduled_for) < to {
            assert_eq!(r.status, "succeeded", "{r:?}");
        }
    }
    let mut checked = 0;
    for i in 0..200 {
        let job = format!("j{i:03}");
        let times = &per_job[job.as_str()];
        let mut t = from.with_nanosecond(0).unwrap() + chrono::TimeDelta::seconds(1);
        while t < to {
            assert!(times.contains(&t), "{job} has no row for {t} (missed)");
            checked += 1;
            t += chrono::TimeDelta::seconds(1);
        }
    }
    println!("checked {checked} firings; runs per node: {per_node:?}");
    assert!(checked >= 200 * 110, "only {checked} firings checked");
    assert_eq!(per_node.len(), 3, "every node runs a share: {per_node:?}");
    for (node, n) in &per_node {
        assert!(
            *n >= runs.len() / 20,
            "node {node} ran only {n} of {}",
            runs.len()
        );
    }
}

/// A node killed mid-run: its running runs are abandoned within lease + 5 s (and, with
/// `on_node_loss = "retry"`, run again elsewhere as the next attempt); the other nodes go on
/// with every firing; it restarts and rejoins; no firing runs twice.
#[test]
fn a_killed_node_is_taken_over_and_rejoins() {
    let url = fresh_database("killed");
    let jobs = format!(
        "{}[jobs.slow_retry]\nevery = \"2s\"\ncommand = \"sleep 4\"\noverlap = \"allow\"\non_node_loss = \"retry\"\n\
         [jobs.slow_abandon]\nevery = \"2s\"\ncommand = \"sleep 4\"\noverlap = \"allow\"\n",
        every_second_jobs(10)
    );
    let mut nodes = start_nodes(&url, 3, &jobs, |_| String::new());
    // Wait until n3 holds a run of each slow job, then kill it.
    wait_for(Duration::from_secs(30), "n3 running both slow jobs", || {
        let runs = all_runs(&url);
        let running = |job: &str| {
            runs.iter()
                .any(|r| r.node == "n3" && r.job == job && r.status == "running")
        };
        (running("slow_retry") && running("slow_abandon")).then_some(())
    });
    let killed_at = Instant::now();
    nodes[2].signal(Signal::SIGKILL);
    nodes[2].wait_exit(Duration::from_secs(10));
    let lost = wait_for(
        Duration::from_secs(10 + 5 + 5),
        "n3's runs abandoned",
        || {
            let runs = all_runs(&url);
            let lost: Vec<RunRow> = runs
                .into_iter()
                .filter(|r| r.node == "n3" && r.status == "abandoned")
                .collect();
            let both = ["slow_retry", "slow_abandon"]
                .iter()
                .all(|j| lost.iter().any(|r| r.job == *j));
            both.then_some(lost)
        },
    );
    let took = killed_at.elapsed();
    println!("n3's runs abandoned {took:?} after the kill (lease 10 s)");
    assert!(took <= Duration::from_secs(15), "took {took:?}");
    let retried = lost.iter().find(|r| r.job == "slow_retry").unwrap().clone();
    let again = wait_for(Duration::from_secs(15), "the lost run run again", || {
        all_runs(&url).into_iter().find(|r| {
            r.job == "slow_retry"
                && r.scheduled_for == retried.scheduled_for
                && r.attempt == retried.attempt + 1
        })
    });
    assert_eq!(again.trigger, "retry");
    assert_ne!(again.node, "n3");
    // n3 comes back and rejoins.
    nodes[2].spawn();
    nodes[2].wait_note("READY=1", Duration::from_secs(30));
    let rejoined = Utc::now();
    wait_for(Duration::from_secs(20), "n3 running firings again", || {
        all_runs(&url)
            .iter()
            .any(|r| r.node == "n3" && ts(&r.scheduled_for) > rejoined)
            .then_some(())
    });
    stop_all(&mut nodes);
    let runs = all_runs(&url);
    assert_eq!(duplicates(&runs), [], "firings recorded twice");
    // The every-second jobs missed nothing while n3 was dead.
    let from = ts(&runs[0].scheduled_for) + chrono::TimeDelta::seconds(3);
    let to = ts(&runs[runs.len() - 1].scheduled_for) - chrono::TimeDelta::seconds(3);
    for i in 0..10 {
        let job = format!("j{i:03}");
        let times: Vec<DateTime<Utc>> = runs
            .iter()
            .filter(|r| r.job == job)
            .map(|r| ts(&r.scheduled_for))
            .collect();
        let mut t = from.with_nanosecond(0).unwrap();
        while t < to {
            assert!(times.contains(&t), "{job} has no row for {t}");
            t += chrono::TimeDelta::seconds(1);
        }
    }
}

/// `overlap = "skip"` across nodes: a 3 s job every second on 3 nodes never runs twice at
/// once; the firings during a run are recorded skipped, naming the run's node.
#[test]
fn overlap_skip_holds_across_nodes() {
    let url = fresh_database("overlap");
    let jobs = "[jobs.long]\nevery = \"1s\"\ncommand = \"sleep 3\"\noverlap = \"skip\"\n";
    let mut nodes = start_nodes(&url, 3, jobs, |_| String::new());
    wait_for(Duration::from_secs(40), "4 finished runs", || {
        let runs = all_runs(&url);
        (runs.iter().filter(|r| r.status == "succeeded").count() >= 4).then_some(())
    });
    stop_all(&mut nodes);
    let runs = all_runs(&url);
    assert_eq!(duplicates(&runs), []);
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>, &str)> = runs
        .iter()
        .filter(|r| r.status != "skipped")
        .filter_map(|r| {
            Some((
                ts(r.started_at.as_deref()?),
                ts(r.finished_at.as_deref()?),
                r.node.as_str(),
            ))
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "two runs at once: {w:?}");
    }
    let nodes_used: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.2).collect();
    let elsewhere = runs.iter().any(|r| {
        r.status == "skipped"
            && r.error
                .as_deref()
                .is_some_and(|e| e.contains("is still active on node"))
    });
    println!("runs by nodes {nodes_used:?}; a skip named another node: {elsewhere}");
    assert!(elsewhere || nodes_used.len() == 1, "{runs:#?}");
}

/// A node whose clock is 2 s ahead (libfaketime) runs nothing early or twice, and its skew
/// is reported: an ERROR in its log and the skew in `hourglass nodes`.
#[test]
fn a_node_with_a_skewed_clock_runs_nothing_twice_and_is_reported() {
    let url = fresh_database("skew");
    let jobs = every_second_jobs(5);
    let mut a = Daemon::prepare_main(&node_main(&url, "n1", ""), &jobs);
    let mut b = Daemon::prepare_main(&node_main(&url, "n2", ""), &jobs);
    let clock = b.fake_clock();
    clock.set_offset(2);
    a.spawn_ready();
    b.spawn_ready();
    std::thread::sleep(Duration::from_secs(12));
    let out = a.cli(&["nodes"]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    a.signal(Signal::SIGTERM);
    b.signal(Signal::SIGTERM);
    a.wait_exit(Duration::from_secs(30));
    b.wait_exit(Duration::from_secs(30));
    let runs = all_runs(&url);
    assert_eq!(duplicates(&runs), []);
    for r in &runs {
        let late = r.lateness_ms.unwrap_or(0);
        assert!(
            late > -50,
            "started {late} ms before its time (by the database's clock): {r:?}"
        );
    }
    assert!(
        b.log().contains("ERROR") && b.log().contains("database.max_clock_skew"),
        "{}",
        b.log()
    );
    let n2 = table
        .lines()
        .find(|l| l.starts_with("n2"))
        .unwrap_or_default();
    let skew: i64 = n2.split_whitespace().nth(4).unwrap_or("0").parse().unwrap();
    assert!((1500..2500).contains(&skew), "{table}");
}

/// A node started with another definition of a job: the WARN appears, `nodes` shows the
/// job, and nothing runs twice.
#[test]
fn a_changed_definition_on_one_node_is_reported() {
    let url = fresh_database("drift");
    let a_jobs = "[jobs.same]\nevery = \"1s\"\ncommand = \"true\"\n[jobs.differs]\nevery = \"1s\"\ncommand = \"true\"\n";
    let b_jobs = "[jobs.same]\nevery = \"1s\"\ncommand = \"true\"\n[jobs.differs]\nevery = \"1s\"\ncommand = \"echo changed\"\n";
    let mut a = Daemon::prepare_main(&node_main(&url, "n1", ""), a_jobs);
    let mut b = Daemon::prepare_main(&node_main(&url, "n2", ""), b_jobs);
    a.spawn_ready();
    b.spawn_ready();
    wait_for(Duration::from_secs(30), "the drift WARN", || {
        let log = a.log() + &b.log();
        log.lines()
            .any(|l| {
                l.contains("WARN")
                    && l.contains("differs between live nodes")
                    && l.contains("differs")
            })
            .then_some(())
    });
    let out = a.cli(&["nodes"]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("job \"differs\" differs between live nodes"),
        "{table}"
    );
    assert!(!table.contains("job \"same\""), "{table}");
    a.signal(Signal::SIGTERM);
    b.signal(Signal::SIGTERM);
    a.wait_exit(Duration::from_secs(30));
    b.wait_exit(Duration::from_secs(30));
    assert_eq!(duplicates(&all_runs(&url)), []);
}

/// Every CLI command against PostgreSQL: history, show (with output), trigger, nodes, prune.
#[test]
fn the_cli_works_against_postgres() {
    let url = fresh_database("cli");
    let jobs = "[jobs.hello]\nevery = \"1h\"\ncommand = \"echo hello from postgres\"\n";
    let mut d = Daemon::prepare_main(&node_main(&url, "solo", ""), jobs);
    d.spawn_ready();
    let out = d.cli(&["trigger", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let id = wait_for(Duration::from_secs(20), "the manual run", || {
        all_runs(&url)
            .into_iter()
            .find(|r| r.trigger == "manual" && r.status == "succeeded")
            .map(|r| r.id)
    });
    let history = d.cli(&["history", "--job", "hello"]);
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(text.contains("hello") && text.contains("manual"), "{text}");
    let show = d.cli(&["show", &id.to_string()]);
    assert!(
        String::from_utf8_lossy(&show.stdout).contains("hello from postgres"),
        "{show:?}"
    );
    let json = d.cli(&["history", "--json", "--status", "succeeded"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows.len(), 1);
    let nodes = d.cli(&["nodes"]);
    let table = String::from_utf8_lossy(&nodes.stdout);
    assert!(table.contains("solo") && table.contains("alive"), "{table}");
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(30));
    let nodes = d.cli(&["nodes", "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&nodes.stdout).unwrap();
    assert_eq!(list[0]["alive"], false, "a clean stop ends the lease");
    let pruned = d.cli(&["prune", "--older-than", "0s"]);
    assert!(
        String::from_utf8_lossy(&pruned.stdout).contains("deleted 1 runs"),
        "{pruned:?}"
    );
}

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
        .filter(|r| r.job == "slow" && ts(&r.scheduled_for) < down_at)
        .all(|r| r.status != "running");
    let skipped = runs.iter().any(|r| {
        r.job == "tick"
            && r.status == "skipped"
            && ts(&r.scheduled_for) > down_at
            && r.error
                .as_deref()
                .is_some_and(|e| e.contains("shared database could not be reached"))
    });
    let newest_ran = runs.iter().any(|r| {
        r.job == "newest"
            && r.trigger == "catch_up"
            && r.status == "succeeded"
            && ts(&r.scheduled_for) > down_at
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
                .any(|r| r.job == "slow" && r.status == "running")
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
        .filter(|r| r.job == "slow" && r.started_at.is_some() && ts(&r.scheduled_for) < last_down)
        .filter(|r| r.status != "succeeded")
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
        let t = ts(&r.scheduled_for);
        outages.iter().any(|&(down, up)| {
            t > down + chrono::TimeDelta::seconds(6) && t < up - chrono::TimeDelta::seconds(2)
        })
    };
    let newest = runs
        .iter()
        .filter(|r| r.job == "newest" && r.trigger == "catch_up" && r.status == "succeeded")
        .count();
    assert_eq!(
        newest, OUTAGES,
        "latest ran {newest} times in {OUTAGES} outages"
    );
    let tick_ran: Vec<&RunRow> = runs
        .iter()
        .filter(|r| r.job == "tick" && r.status == "succeeded")
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
                .filter(|r| r.status != "succeeded" || r.trigger != "schedule")
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
    let first = rows.iter().map(|r| ts(&r.scheduled_for)).min().unwrap();
    let last = rows
        .iter()
        .map(|r| {
            r.details
                .as_ref()
                .and_then(|d| d["last"].as_str())
                .map_or_else(|| ts(&r.scheduled_for), ts)
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
        .filter(|r| r.job == job && r.status == "skipped" && r.trigger == "catch_up")
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
            .filter(|o| (first..=last).contains(&ts(&o.scheduled_for)))
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

/// `overlap = "replace"` across nodes: a newer firing claimed by another node stops the run
/// within 2 s, and two runs never overlap for longer than that.
#[test]
fn overlap_replace_stops_the_run_on_the_other_node() {
    let url = fresh_database("replace");
    let jobs = "[jobs.long]\nevery = \"3s\"\ncommand = \"sleep 30\"\noverlap = \"replace\"\n";
    let mut nodes = start_nodes(&url, 2, jobs, |_| String::new());
    let across = wait_for(Duration::from_secs(60), "a replace across nodes", || {
        let runs = all_runs(&url);
        runs.windows(2)
            .find(|w| {
                w[0].status == "cancelled" && w[1].started_at.is_some() && w[0].node != w[1].node
            })
            .map(|w| (w[0].clone(), w[1].clone()))
    });
    stop_all(&mut nodes);
    let (old, new) = across;
    let stopped = ts(old.finished_at.as_deref().unwrap());
    let started = ts(new.started_at.as_deref().unwrap());
    let due = ts(&new.scheduled_for);
    println!(
        "run {} on {} stopped {} ms after the newer firing was due; run {} on {} started {} ms after",
        old.id,
        old.node,
        (stopped - due).num_milliseconds(),
        new.id,
        new.node,
        (started - due).num_milliseconds()
    );
    assert!(
        stopped - due <= chrono::TimeDelta::seconds(2),
        "{old:?} {new:?}"
    );
    assert!(started >= stopped, "{old:?} {new:?}");
    assert!(
        old.error.as_deref().unwrap_or("").contains("replaced"),
        "{old:?}"
    );
}

/// `run_on`: a job asking for a tag runs only on the node that has it.
#[test]
fn run_on_places_a_job_on_the_nodes_with_its_tags() {
    let url = fresh_database("run_on");
    let jobs = "[jobs.gpu]\nevery = \"1s\"\ncommand = \"true\"\nrun_on = [\"gpu\"]\n\
                [jobs.any]\nevery = \"1s\"\ncommand = \"true\"\n";
    let mut nodes = start_nodes(&url, 2, jobs, |i| {
        if i == 2 {
            "tags = [\"gpu\"]".into()
        } else {
            String::new()
        }
    });
    wait_for(Duration::from_secs(30), "10 runs of the gpu job", || {
        (all_runs(&url).iter().filter(|r| r.job == "gpu").count() >= 10).then_some(())
    });
    stop_all(&mut nodes);
    let runs = all_runs(&url);
    assert!(
        runs.iter()
            .filter(|r| r.job == "gpu")
            .all(|r| r.node == "n2"),
        "{runs:#?}"
    );
    assert_eq!(duplicates(&runs), []);
}

/// `query`'s rows on the database at `url`, as `psql -At` prints them.
fn psql(url: &str, query: &str) -> String {
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-At", "-c", query])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What the nodes own, as the database has it: running runs, turns, the nodes' rows.
fn owned(url: &str) -> [String; 3] {
    [
        psql(
            url,
            "SELECT id, job, status, node, pid FROM runs WHERE status = 'running' ORDER BY id",
        ),
        psql(
            url,
            "SELECT job, node, scheduled_for FROM active_runs ORDER BY job",
        ),
        psql(
            url,
            "SELECT name, machine, process, started_at, lease_until > now() FROM nodes ORDER BY name",
        ),
    ]
}

/// A second daemon taking a live node's name, from another folder of the same machine and
/// from another machine (its own host name and process namespace), is refused at start, and
/// nothing of the live node is touched: its running run, its turn, its row, its job's
/// process. A node name another machine holds is refused naming the setting.
#[test]
fn a_live_nodes_name_is_refused_from_this_machine_and_another_and_nothing_of_it_is_touched() {
    let url = fresh_database("name_taken");
    let jobs = "[jobs.hold]\nevery = \"1h\"\noverlap = \"queue\"\ncommand = \"sleep 600\"\n";
    let mut live = Daemon::prepare_main(&node_main(&url, "web-1", ""), jobs);
    live.spawn_ready();
    let out = live.cli(&["trigger", "hold"]);
    assert!(out.status.success(), "{out:?}");
    let pid: i32 = wait_for(Duration::from_secs(20), "the run's process", || {
        psql(
            &url,
            "SELECT pid FROM runs WHERE status = 'running' AND pid IS NOT NULL",
        )
        .parse()
        .ok()
    });
    let before = owned(&url);
    assert!(before[1].starts_with("hold|web-1|"), "{before:?}");
    let beat = || psql(&url, "SELECT heartbeat_at FROM nodes WHERE name = 'web-1'");
    let first_beat = beat();

    let mut twin = Daemon::prepare_main(&node_main(&url, "web-1", ""), jobs);
    twin.spawn();
    assert!(!twin.wait_exit(Duration::from_secs(30)).success());
    let expected = format!(
        "another daemon on this machine (pid {}) runs a node named \"web-1\" whose lease holds: give this daemon another daemon.node",
        live.pid()
    );
    assert!(twin.log().contains(&expected), "{}", twin.log());
    assert_eq!(owned(&url), before);
    assert!(crate::harness::alive(pid));

    let mut other = Daemon::prepare_main(&node_main(&url, "web-1", ""), jobs);
    other.wrap = [
        "unshare",
        "--uts",
        "--pid",
        "--fork",
        "--mount-proc",
        "sh",
        "-c",
        "hostname other-machine && exec \"$0\" \"$@\"",
    ]
    .map(String::from)
    .to_vec();
    other.spawn();
    assert!(!other.wait_exit(Duration::from_secs(30)).success());
    let host = hourglass::config::host_name();
    assert!(
        other.log().contains(&format!(
            "another machine ({host}) runs a node named \"web-1\""
        )),
        "{}",
        other.log()
    );
    assert_eq!(owned(&url), before);
    assert!(crate::harness::alive(pid));

    // The live node goes on: it still beats, and its run ends as its own.
    wait_for(Duration::from_secs(20), "a beat after the refusals", || {
        (beat() != first_beat).then_some(())
    });
    stop_all(std::slice::from_mut(&mut live));
    let runs = all_runs(&url);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(
        (runs[0].node.as_str(), runs[0].status.as_str()),
        ("web-1", "interrupted")
    );
}

/// The API, pauses, events, stats, keyset pages and the stale watch on PostgreSQL (their SQL
/// is per backend): through the daemon, then with the daemon down.
#[test]
fn the_api_pauses_events_and_stats_work_against_postgres() {
    let url = fresh_database("api");
    let jobs = "[jobs.tick]\nevery = \"1s\"\ncommand = \"echo tick\"\n";
    // The stale watch reads its state at start (nothing is stale within an hour).
    let extra = "[notify]\non = []\nalert_if_no_success_within = \"1h\"\n\
                 [notify.webhook]\nurl = \"http://127.0.0.1:9/never\"\n";
    let mut d = Daemon::prepare_main(&node_main(&url, "solo", extra), jobs);
    d.spawn_ready();
    let api = crate::api::Api::socket(&d.path("hourglass.sock"));
    wait_for(Duration::from_secs(20), "5 runs", || {
        (all_runs(&url).len() >= 5).then_some(())
    });
    let listed = api.get("/v1/jobs");
    assert_eq!(listed[0]["last_run"]["job"], "tick", "{listed}");
    let p1 = api.get("/v1/runs?limit=2");
    let next = p1["next"].as_str().unwrap();
    let p2 = api.get(&format!("/v1/runs?limit=2&after={next}"));
    let ids = |p: &serde_json::Value| -> Vec<i64> {
        p["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    let (a, b) = (ids(&p1), ids(&p2));
    assert!(
        a.len() == 2 && b.len() == 2 && a.iter().all(|i| !b.contains(i)),
        "{a:?} {b:?}"
    );
    // The dashboard's pages read their own queries (dots, counts, attempts, notifications).
    let (code, page) = api.call("GET", "/jobs/tick", None, None);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    let (code, page) = api.call("GET", &format!("/runs/{}", a[0]), None, None);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("tick"), "{page}");
    assert!(d.cli(&["pause", "tick"]).status.success());
    let status = String::from_utf8_lossy(&d.cli(&["status"]).stdout).to_string();
    assert!(status.contains("paused     tick"), "{status}");
    let events = api.get("/v1/events");
    assert_eq!(events[0]["action"], "pause");
    assert_eq!(events[0]["node"], "solo");
    let stats = d.cli(&["stats", "--json"]);
    let stats: Vec<serde_json::Value> = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats[0]["job"], "tick");
    assert!(stats[0]["runs"].as_u64().unwrap() >= 5, "{stats:?}");
    assert!(d.cli(&["resume", "tick"]).status.success());
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(30));
    // With the daemon down, a pause goes to the database; the list shows it.
    assert!(d.cli(&["pause", "tick", "--until", "1h"]).status.success());
    let list = String::from_utf8_lossy(&d.cli(&["list"]).stdout).to_string();
    assert!(
        list.contains("paused since") && list.contains("until"),
        "{list}"
    );
}
