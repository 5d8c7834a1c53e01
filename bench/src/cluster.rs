//! The cluster rows: daemons sharing one PostgreSQL database (a fresh database on the server
//! `HOURGLASS_TEST_PG_URL` names; `scripts/test.sh` starts one, or point it at your own).
//! Every-second jobs on 3 nodes against 1 node on SQLite, and a burst of commands due at once
//! on 1 node and spread over 3 (whose 1-node time gives the claims one node sustains).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use hourglass::store::{Database, PostgresTarget, RunRow};

use crate::{
    Bench, Daemon, at_in, burst_jobs, fires_of, last_finished, proc, read_history, show,
    summarize_once, summarize_periodic, wait_until,
};

/// One daemon on the shared database.
struct Node {
    _dir: tempfile::TempDir,
    child: Child,
}

impl Node {
    fn start(bin: &Path, url: &str, name: &str, jobs: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let main = format!(
            "[database]\nurl = \"{url}\"\n[daemon]\nnode = \"{name}\"\ntimezone = \"UTC\"\n"
        );
        let config = harness::write_config(dir.path(), &main, jobs)?;
        let mut notify = harness::Notifications::bind(dir.path().join("notify.sock"))?;
        let mut cmd = harness::run_command(&[bin.as_os_str()], &config, &notify);
        cmd.env("RUST_LOG", "warn").stderr(Stdio::null());
        let (child, _) = harness::start_ready(&mut cmd, &mut notify, Duration::from_secs(120))
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("starting node {name}"))?;
        Ok(Self { _dir: dir, child })
    }

    fn stop(mut self) -> Result<()> {
        proc::signal(self.child.id(), "TERM")?;
        self.child.wait()?;
        Ok(())
    }
}

fn start_nodes(b: &Bench, url: &str, n: usize, jobs: &str) -> Result<Vec<Node>> {
    (1..=n)
        .map(|i| Node::start(&b.bin, url, &format!("n{i}"), jobs))
        .collect()
}

fn stop_nodes(nodes: Vec<Node>) -> Result<()> {
    nodes.into_iter().try_for_each(Node::stop)
}

/// Every run in the database at `url`.
fn runs(url: &str) -> Result<Vec<RunRow>> {
    read_history(&Database::Postgres(PostgresTarget {
        url: url.to_string(),
        password: None,
        tls: None,
        ca_file: None,
        local: std::env::temp_dir().join("hourglass-bench-reader"),
    }))
}

/// The cluster rows; a row saying why when there is no PostgreSQL server.
pub(crate) fn cluster(b: &mut Bench, jobs: usize, secs: u64, burst: usize) -> Result<()> {
    if harness::postgres_url().is_none() {
        b.row(
            "cluster",
            "skipped",
            "no PostgreSQL server (set HOURGLASS_TEST_PG_URL)".into(),
        );
        return Ok(());
    }
    every_second(b, jobs, secs)?;
    burst_rows(b, burst)
}

fn every_second(b: &mut Bench, n: usize, secs: u64) -> Result<()> {
    let jobs: String = (0..n)
        .map(|i| format!("[jobs.c{i}]\nevery = \"1s\"\ncommand = [\"true\"]\n"))
        .collect();
    let solo = Daemon::start(&b.bin, "", &jobs)?;
    std::thread::sleep(Duration::from_secs(secs));
    let one = summarize_periodic(&fires_of(&solo.runs()?, "c"), n);
    solo.stop()?;
    let url = harness::fresh_postgres_database("bench_every")?.context("no server")?;
    let nodes = start_nodes(b, &url, 3, &jobs)?;
    std::thread::sleep(Duration::from_secs(secs));
    let all = runs(&url)?;
    stop_nodes(nodes)?;
    let three = summarize_periodic(&fires_of(&all, "c"), n);
    let name = format!("cluster: {n} every-second jobs, {secs} s");
    b.row(
        &name,
        "lateness p50 / p99 / max: 1 node on SQLite vs 3 nodes on PostgreSQL",
        format!("{} vs {}", show(&one), show(&three)),
    );
    b.row(
        &name,
        "firings started; missed; doubled: 1 node on SQLite vs 3 nodes on PostgreSQL",
        format!(
            "{}; {}; {} vs {}; {}; {}",
            one.count, one.missed, one.doubled, three.count, three.missed, three.doubled
        ),
    );
    Ok(())
}

/// Nodes; lateness; last finished after its time (ms); firings started per second.
type BurstResult = (usize, crate::Summary, i64, f64);

fn burst_rows(b: &mut Bench, n: usize) -> Result<()> {
    let mut rows = Vec::new();
    for nodes in [1, 3] {
        let at = at_in(8);
        let jobs = burst_jobs(n, at);
        let url = harness::fresh_postgres_database("bench_burst")?.context("no server")?;
        let started = start_nodes(b, &url, nodes, &jobs)?;
        wait_until(Duration::from_secs(300), || {
            Ok(runs(&url)?
                .iter()
                .filter(|r| r.finished_at.is_some())
                .count()
                >= n)
        })?;
        let all = runs(&url)?;
        stop_nodes(started)?;
        let s = summarize_once(&fires_of(&all, "b"), n);
        let done = (last_finished(&all)? - at).num_milliseconds();
        let last_start = s.max.max(1);
        rows.push((nodes, s, done, n as f64 * 1000.0 / last_start as f64));
    }
    let name = format!("cluster: burst of {n} commands due in one second, PostgreSQL");
    let both = |f: &dyn Fn(&BurstResult) -> String| format!("{} vs {}", f(&rows[0]), f(&rows[1]));
    b.row(
        &name,
        "lateness p50 / p99 / max: 1 node vs 3 nodes",
        both(&|r| show(&r.1)),
    );
    b.row(
        &name,
        "started; missed; doubled: 1 node vs 3 nodes",
        both(&|r| format!("{}; {}; {}", r.1.count, r.1.missed, r.1.doubled)),
    );
    b.row(
        &name,
        "last run finished after its time; firings claimed and started per second: 1 node vs 3 nodes",
        both(&|r| format!("{} ms; {:.0}/s", r.2, r.3)),
    );
    Ok(())
}
