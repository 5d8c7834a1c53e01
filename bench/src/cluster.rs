//! The cluster rows: daemons sharing one PostgreSQL database (a fresh database on the server
//! `HOURGLASS_TEST_PG_URL` names; `scripts/test.sh` starts one, with `pg_stat_statements`
//! preloaded, or point it at your own). What the database does per firing (statements and
//! transactions) in bursts and at a steady rate for 1, 3 and 10 nodes, per idle node per
//! second, the shares of the nodes, and a burst with the database 0, 1 and 5 ms away (through
//! [`DelayProxy`]).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use hourglass::store::{Database, PostgresTarget, RunRow};

use crate::delay_proxy::{DelayProxy, host_port};
use crate::pg_counters::{self, Counters, STATS_LAG};
use crate::{
    Bench, Daemon, at_in, burst_jobs, fires_of, last_finished, proc, read_history, show,
    summarize_between, summarize_once, summarize_periodic, wait_until,
};

/// The sizes of the cluster rows.
#[derive(Debug, Clone)]
pub(crate) struct Sizes {
    /// Every-second jobs, and for how long (s).
    pub(crate) every: (usize, u64),
    /// Node counts of the burst and steady rows.
    pub(crate) nodes: Vec<usize>,
    /// Burst sizes.
    pub(crate) bursts: Vec<usize>,
    /// The burst run with the database far away, and the delays each way (ms).
    pub(crate) far: (usize, Vec<u64>),
    /// How long idle nodes are watched (s).
    pub(crate) idle_secs: u64,
}

impl Sizes {
    /// The full sizes, or tiny ones for the smoke run.
    pub(crate) fn new(smoke: bool) -> Self {
        if smoke {
            Self {
                every: (5, 3),
                nodes: vec![1, 3],
                bursts: vec![50],
                far: (50, vec![0, 1]),
                idle_secs: 2,
            }
        } else {
            Self {
                every: (100, 20),
                nodes: vec![1, 3, 10],
                bursts: vec![1_000, 10_000],
                far: (10_000, vec![0, 1, 5]),
                idle_secs: 30,
            }
        }
    }
}

/// One daemon on the shared database.
struct Node {
    dir: tempfile::TempDir,
    child: Child,
}

/// Claims asked, over nodes: first round won, lost; later round won, lost.
type Claims = [u64; 4];

impl Node {
    fn start(bin: &Path, url: &str, name: &str, jobs: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("api.sock");
        let main = format!(
            "[database]\nurl = \"{url}\"\n[daemon]\nnode = \"{name}\"\ntimezone = \"UTC\"\n\
             [api]\nsocket = \"{}\"\n",
            socket.display()
        );
        let config = harness::write_config(dir.path(), &main, jobs)?;
        let mut notify = harness::Notifications::bind(dir.path().join("notify.sock"))?;
        let mut cmd = harness::run_command(&[bin.as_os_str()], &config, &notify);
        cmd.env("RUST_LOG", "warn").stderr(Stdio::null());
        let (child, _) = harness::start_ready(&mut cmd, &mut notify, Duration::from_secs(120))
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("starting node {name}"))?;
        Ok(Self { dir, child })
    }

    /// The node's `hourglass_cluster_claims_total` counters (from its API socket).
    fn claims(&self) -> Result<Claims> {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.dir.path().join("api.sock"))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let mut out = [0; 4];
        for line in text
            .lines()
            .filter(|l| l.starts_with("hourglass_cluster_claims_total{"))
        {
            let value = line
                .rsplit(' ')
                .next()
                .unwrap_or("0")
                .parse::<f64>()
                .unwrap_or(0.0);
            let first = line.contains("round=\"first\"");
            let won = line.contains("result=\"won\"");
            out[usize::from(!first) * 2 + usize::from(!won)] += value as u64;
        }
        Ok(out)
    }

    fn stop(mut self) -> Result<()> {
        proc::signal(self.child.id(), "TERM")?;
        self.child.wait()?;
        Ok(())
    }
}

/// Starts `n` nodes together (each parses the jobs on its own core time).
fn start_nodes(bin: &Path, url: &str, n: usize, jobs: &str) -> Result<Vec<Node>> {
    std::thread::scope(|s| {
        let started: Vec<_> = (1..=n)
            .map(|i| s.spawn(move || Node::start(bin, url, &format!("n{i}"), jobs)))
            .collect();
        started
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("node start panicked"))?
            })
            .collect()
    })
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

/// A fresh database; whether `pg_stat_statements` counts in it.
fn database(label: &str) -> Result<(String, bool)> {
    let url = harness::fresh_postgres_database(label)?.context("no server")?;
    let counted = pg_counters::enable(&url);
    Ok((url, counted))
}

/// The cluster rows; a row saying why when there is no PostgreSQL server.
pub(crate) fn cluster(b: &mut Bench, sizes: &Sizes) -> Result<()> {
    if harness::postgres_url().is_none() {
        b.row(
            "cluster",
            "skipped",
            "no PostgreSQL server (set HOURGLASS_TEST_PG_URL)".into(),
        );
        return Ok(());
    }
    every_second(b, sizes)?;
    idle(b, sizes.idle_secs)?;
    for &n in &sizes.bursts {
        burst_rows(b, n, &sizes.nodes)?;
    }
    far_rows(b, sizes.far.0, &sizes.far.1)
}

/// `statements; transactions` per `n`, or why not measured.
fn per(c: Option<Counters>, n: f64) -> String {
    c.map_or_else(
        || "not measured (pg_stat_statements not loaded)".into(),
        |c| c.per(n),
    )
}

fn every_second(b: &mut Bench, sizes: &Sizes) -> Result<()> {
    let (n, secs) = sizes.every;
    let jobs: String = (0..n)
        .map(|i| format!("[jobs.c{i}]\nevery = \"1s\"\ncommand = [\"true\"]\n"))
        .collect();
    let solo = Daemon::start(&b.bin, "", &jobs)?;
    std::thread::sleep(Duration::from_secs(secs));
    let one = summarize_periodic(&fires_of(&solo.runs()?, "c"), n);
    solo.stop()?;
    let name = format!("cluster: {n} every-second jobs, {secs} s");
    b.row(
        &name,
        "1 node on SQLite: lateness p50 / p99 / max; started; missed; doubled",
        format!(
            "{}; {}; {}; {}",
            show(&one),
            one.count,
            one.missed,
            one.doubled
        ),
    );
    for &nodes in &sizes.nodes {
        let (url, counted) = database("bench_every")?;
        let started = start_nodes(&b.bin, &url, nodes, &jobs)?;
        // Past the nodes' start, whose statements are not the steady state's.
        std::thread::sleep(Duration::from_secs(3));
        let from = chrono::Utc::now();
        let before = counted.then(|| pg_counters::read(&url)).transpose()?;
        std::thread::sleep(Duration::from_secs(secs));
        let after = counted.then(|| pg_counters::read(&url)).transpose()?;
        let to = chrono::Utc::now();
        let all = runs(&url)?;
        stop_nodes(started)?;
        let s = summarize_between(&fires_of(&all, "c"), n, from, to);
        let cost = after.zip(before).map(|(a, b)| a.since(b));
        b.row(
            &name,
            &format!(
                "{nodes} node(s) on PostgreSQL: lateness p50 / p99 / max; started; missed; doubled"
            ),
            format!("{}; {}; {}; {}", show(&s), s.count, s.missed, s.doubled),
        );
        b.row(
            &name,
            &format!("{nodes} node(s): statements; transactions per firing"),
            per(cost, s.count.max(1) as f64),
        );
    }
    Ok(())
}

/// Nodes with nothing due: what each costs the database per second.
fn idle(b: &mut Bench, secs: u64) -> Result<()> {
    let nodes = 3;
    let (url, counted) = database("bench_idle")?;
    let jobs = "[jobs.later]\nevery = \"1d\"\ncommand = [\"true\"]\n";
    let started = start_nodes(&b.bin, &url, nodes, jobs)?;
    std::thread::sleep(STATS_LAG);
    let before = counted.then(|| pg_counters::read(&url)).transpose()?;
    std::thread::sleep(Duration::from_secs(secs));
    let after = counted.then(|| pg_counters::read(&url)).transpose()?;
    stop_nodes(started)?;
    let cost = after.zip(before).map(|(a, b)| a.since(b));
    b.row(
        &format!("cluster: {nodes} idle nodes, {secs} s"),
        "statements; transactions per second per node",
        per(cost, (secs * nodes as u64) as f64),
    );
    Ok(())
}

/// One burst's measures.
struct Burst {
    nodes: usize,
    late: crate::Summary,
    /// Last run finished, ms after the due time.
    done_ms: i64,
    cost: Option<Counters>,
    /// Runs per node, least to most.
    shares: Vec<usize>,
    claims: Claims,
}

/// `n` commands due at one instant on `nodes` nodes, the database `delay` away each way.
fn burst(b: &Bench, n: usize, nodes: usize, delay: Duration) -> Result<Burst> {
    let (url, counted) = database("bench_burst")?;
    let proxy = (!delay.is_zero())
        .then(|| DelayProxy::start(&host_port(&url)?, delay))
        .transpose()?;
    let node_url = match &proxy {
        Some(p) => p.url_through(&url)?,
        None => url.clone(),
    };
    // Time to start, then for the server to publish the starts' transaction counts.
    let lead = 8 + i64::try_from(n / 1000 + nodes).unwrap_or(0) + STATS_LAG.as_secs() as i64;
    let at = at_in(lead);
    let jobs = burst_jobs(n, at);
    let started = start_nodes(&b.bin, &node_url, nodes, &jobs)?;
    let snapshot_at = at - chrono::TimeDelta::seconds(1);
    let wait = (snapshot_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    if wait < STATS_LAG {
        eprintln!(
            "cluster burst: the nodes started late; the transaction count includes part of their start"
        );
    }
    std::thread::sleep(wait);
    let before = counted.then(|| pg_counters::read(&url)).transpose()?;
    // Polled as the reader (its statements and transactions are not counted).
    wait_until(Duration::from_secs(600), || {
        let done = pg_counters::read_as_reader(
            &url,
            "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL",
        )?;
        Ok(done.trim().parse::<usize>().unwrap_or(0) >= n)
    })?;
    std::thread::sleep(STATS_LAG);
    let after = counted.then(|| pg_counters::read(&url)).transpose()?;
    let all = runs(&url)?;
    let mut claims = [0; 4];
    for node in &started {
        let c = node.claims()?;
        for (sum, n) in claims.iter_mut().zip(c) {
            *sum += n;
        }
    }
    stop_nodes(started)?;
    drop(proxy);
    let mut per_node = std::collections::BTreeMap::<&str, usize>::new();
    for r in &all {
        *per_node.entry(r.node.as_str()).or_default() += 1;
    }
    let mut shares: Vec<usize> = per_node.into_values().collect();
    shares.sort_unstable();
    Ok(Burst {
        nodes,
        late: summarize_once(&fires_of(&all, "b"), n),
        done_ms: (last_finished(&all)? - at).num_milliseconds(),
        cost: after.zip(before).map(|(a, b)| a.since(b)),
        shares,
        claims,
    })
}

fn burst_rows(b: &mut Bench, n: usize, nodes: &[usize]) -> Result<()> {
    let name = format!("cluster: burst of {n} commands due at one instant, PostgreSQL");
    for &count in nodes {
        let r = burst(b, n, count, Duration::ZERO)?;
        let who = format!("{} node(s)", r.nodes);
        b.row(
            &name,
            &format!("{who}: lateness p50 / p99 / max; started; missed; doubled"),
            format!(
                "{}; {}; {}; {}",
                show(&r.late),
                r.late.count,
                r.late.missed,
                r.late.doubled
            ),
        );
        b.row(
            &name,
            &format!("{who}: statements; transactions per firing"),
            per(r.cost, n as f64),
        );
        b.row(
            &name,
            &format!("{who}: last run finished after its time; runs per node (least .. most)"),
            format!("{} ms; {:?}", r.done_ms, r.shares),
        );
        let [fw, fl, lw, ll] = r.claims;
        b.row(
            &name,
            &format!("{who}: claims as preferred node won / lost; after the head start won / lost"),
            format!("{fw} / {fl}; {lw} / {ll}"),
        );
    }
    Ok(())
}

/// The burst on one node with the database `delays` ms away each way.
fn far_rows(b: &mut Bench, n: usize, delays: &[u64]) -> Result<()> {
    let name = format!("cluster: burst of {n} commands, 1 node, the database far away");
    let mut base = None;
    for &ms in delays {
        let r = burst(b, n, 1, Duration::from_millis(ms))?;
        let all_started = r.late.max;
        let vs = base.map_or(String::new(), |b0: i64| {
            format!(" ({:.2}× of 0 ms)", all_started as f64 / b0.max(1) as f64)
        });
        base.get_or_insert(all_started);
        b.row(
            &name,
            &format!("{ms} ms each way: all claimed and started after; lateness p50; statements; transactions per firing"),
            format!(
                "{all_started} ms{vs}; {} ms; {}",
                r.late.p50,
                per(r.cost, n as f64)
            ),
        );
    }
    Ok(())
}
