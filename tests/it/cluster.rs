//! Several daemons (nodes) on one real PostgreSQL database (`scripts/test.sh` starts a
//! throw-away server and sets `HOURGLASS_TEST_PG_URL`): each firing runs exactly once, a
//! killed node's runs are taken over, overlap holds across nodes, clock skew and definition
//! drift are reported, and every CLI command works against PostgreSQL.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use hourglass::store::{
    Database, HistoryFilter, PostgresTarget, RunRow, RunStatus, Store, Trigger,
};
use nix::sys::signal::Signal;

use crate::harness::{Daemon, wait_for};

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

/// The history database at `url`, as a reader (not a node) opens it.
pub(crate) async fn connect(url: &str) -> Store {
    let target = PostgresTarget {
        url: url.to_string(),
        password: None,
        tls: None,
        ca_file: None,
        local: std::env::temp_dir().join("hourglass-test-reader"),
    };
    Store::connect(&Database::Postgres(target)).await.unwrap()
}

/// Every run in the database at `url`, oldest first.
pub(crate) fn all_runs(url: &str) -> Vec<RunRow> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = connect(url).await;
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
pub(crate) fn duplicates(runs: &[RunRow]) -> Vec<(String, String, usize)> {
    let mut seen: HashMap<(&str, DateTime<Utc>), usize> = HashMap::new();
    for r in runs.iter().filter(|r| r.attempt == 1) {
        *seen.entry((&r.job, r.scheduled_for)).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((j, s), n)| (j.to_string(), hourglass::store::format_ts(s), n))
        .collect()
}

/// Starts `n` nodes `n1`... on `url` with `jobs`; `extra(i)` goes in node i's main file.
pub(crate) fn start_nodes(
    url: &str,
    n: usize,
    jobs: &str,
    extra: impl Fn(usize) -> String,
) -> Vec<Daemon> {
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
pub(crate) fn stop_all(nodes: &mut [Daemon]) {
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
        per_job.entry(&r.job).or_default().push(r.scheduled_for);
        *per_node.entry(&r.node).or_default() += 1;
        if r.scheduled_for < to {
            assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
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
                .any(|r| r.node == "n3" && r.job == job && r.status == RunStatus::Running)
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
                .filter(|r| r.node == "n3" && r.status == RunStatus::Abandoned)
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
    assert_eq!(again.trigger, Trigger::Retry);
    assert_ne!(again.node, "n3");
    // n3 comes back and rejoins.
    nodes[2].spawn();
    nodes[2].wait_note("READY=1", Duration::from_secs(30));
    let rejoined = Utc::now();
    wait_for(Duration::from_secs(20), "n3 running firings again", || {
        all_runs(&url)
            .iter()
            .any(|r| r.node == "n3" && r.scheduled_for > rejoined)
            .then_some(())
    });
    stop_all(&mut nodes);
    let runs = all_runs(&url);
    assert_eq!(duplicates(&runs), [], "firings recorded twice");
    // The every-second jobs missed nothing while n3 was dead.
    let from = runs[0].scheduled_for + chrono::TimeDelta::seconds(3);
    let to = runs[runs.len() - 1].scheduled_for - chrono::TimeDelta::seconds(3);
    for i in 0..10 {
        let job = format!("j{i:03}");
        let times: Vec<DateTime<Utc>> = runs
            .iter()
            .filter(|r| r.job == job)
            .map(|r| r.scheduled_for)
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
        (runs
            .iter()
            .filter(|r| r.status == RunStatus::Succeeded)
            .count()
            >= 4)
            .then_some(())
    });
    stop_all(&mut nodes);
    let runs = all_runs(&url);
    assert_eq!(duplicates(&runs), []);
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>, &str)> = runs
        .iter()
        .filter(|r| r.status != RunStatus::Skipped)
        .filter_map(|r| Some((r.started_at?, r.finished_at?, r.node.as_str())))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "two runs at once: {w:?}");
    }
    let nodes_used: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.2).collect();
    let elsewhere = runs.iter().any(|r| {
        r.status == RunStatus::Skipped
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
            .find(|r| r.trigger == Trigger::Manual && r.status == RunStatus::Succeeded)
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

/// `overlap = "replace"` across nodes: a newer firing claimed by another node stops the run
/// within 2 s, and two runs never overlap for longer than that.
#[test]
fn overlap_replace_stops_the_run_on_the_other_node() {
    let url = fresh_database("replace");
    let jobs = "[jobs.long]\nevery = \"3s\"\ncommand = \"sleep 30\"\noverlap = \"replace\"\n";
    let mut nodes = start_nodes(&url, 2, jobs, |_| String::new());
    let across = replace_across(&url, "long");
    stop_all(&mut nodes);
    let (old, new) = across;
    let stopped = old.finished_at.unwrap();
    let started = new.started_at.unwrap();
    let due = new.scheduled_for;
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

/// The first run of `job` stopped by a newer firing on another node, and that firing's run
/// (waited for up to a minute).
pub(crate) fn replace_across(url: &str, job: &str) -> (RunRow, RunRow) {
    wait_for(Duration::from_secs(60), "a replace across nodes", || {
        let runs: Vec<RunRow> = all_runs(url).into_iter().filter(|r| r.job == job).collect();
        runs.windows(2)
            .find(|w| {
                w[0].status == RunStatus::Cancelled
                    && w[1].started_at.is_some()
                    && w[0].node != w[1].node
            })
            .map(|w| (w[0].clone(), w[1].clone()))
    })
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
pub(crate) fn psql(url: &str, query: &str) -> String {
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-At", "-c", query])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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
    let api = crate::http::Api::socket(&d.path("hourglass.sock"));
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
