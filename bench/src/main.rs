//! hourglass benchmark suite: starts the real release binary on generated configs in a temp
//! dir, measures from its history database and from `/proc`, runs the same jobs on
//! tokio-cron-scheduler (the peer, [`peer`]) interleaved round by round, and prints one markdown
//! table.
//!
//! `cargo run --release -p bench -- all` (full, by hand) or `-- smoke` (seconds, in CI);
//! `--only burst,scale` picks scenarios. The history writer's own harness is
//! `cargo bench -p bench` ([`divan`], `benches/history.rs`).

mod accounting;
mod burst;
mod chains;
mod cluster;
mod daemons;
mod dashboard;
mod delay_proxy;
mod http_server;
mod isolation;
mod operate;
mod peer;
mod pg_counters;
mod proc;
mod steady;
mod summary;

use burst::*;
use daemons::*;
use isolation::*;
use steady::*;
use summary::*;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hourglass::store::{Database, HistoryFilter, RunRow, Store};

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    suite: Suite,
    /// The daemon binary (default: target/release/hourglass beside this binary).
    #[arg(long, global = true)]
    bin: Option<PathBuf>,
    /// Only the scenarios whose name contains one of these (seed, isolation, spawn, burst,
    /// http, scale, reload, history, idle, memory, api, dashboard, chains, accounting, cluster).
    #[arg(long, global = true, value_delimiter = ',')]
    only: Vec<String>,
    /// Rounds per compared scenario (medians are over rounds).
    #[arg(long, global = true)]
    rounds: Option<usize>,
    /// A daemon binary of the previous release, for the accounting scenario's comparison.
    #[arg(long, global = true)]
    previous: Option<PathBuf>,
}

#[derive(Debug, Clone, Subcommand)]
enum Suite {
    /// Every scenario at full size (about 15 minutes on 2 cores).
    All,
    /// Every scenario, tiny (seconds): proves the bench still runs.
    Smoke,
    /// Internal: the tokio-cron-scheduler peer process.
    #[command(hide = true)]
    Peer(peer::PeerArgs),
}

/// One row of the result table: a metric for hourglass and, where compared, for the peer.
#[derive(Debug)]
struct Row {
    scenario: String,
    metric: String,
    hourglass: String,
    peer: String,
    ratio: String,
}

/// Everything a scenario needs.
#[derive(Debug)]
struct Bench {
    bin: PathBuf,
    me: PathBuf,
    /// The previous release's binary (`--previous`).
    previous: Option<PathBuf>,
    rounds: usize,
    rows: Vec<Row>,
}

impl Bench {
    fn row(&mut self, scenario: &str, metric: &str, hourglass: String) {
        self.compare(scenario, metric, hourglass, "—".into(), "—".into());
    }

    fn compare(&mut self, scenario: &str, metric: &str, hg: String, peer: String, ratio: String) {
        println!("  {scenario}: {metric}: hourglass {hg} | peer {peer} | {ratio}");
        self.rows.push(Row {
            scenario: scenario.into(),
            metric: metric.into(),
            hourglass: hg,
            peer,
            ratio,
        });
    }
}

/// The row of hourglass's median lateness over rounds (scenarios without the peer); the medians.
fn lateness_row(b: &mut Bench, scenario: &str, hg: &[Summary]) -> Summary {
    let h = median(hg);
    b.row(
        scenario,
        &format!("lateness p50 / p99 / max, median of {} rounds", hg.len()),
        show(&h),
    );
    h
}

/// Rows comparing hourglass's and the peer's medians (and the peer at its default channel).
fn compare_rows(
    b: &mut Bench,
    scenario: &str,
    hg: &[Summary],
    peer: &[Summary],
    default: Option<&Summary>,
) {
    let (h, p) = (median(hg), median(peer));
    b.compare(
        scenario,
        &format!("lateness p50 / p99 / max, median of {} rounds", hg.len()),
        show(&h),
        show(&p),
        format!("p99 {}", ratio(p.p99, h.p99)),
    );
    b.compare(
        scenario,
        "firings started; missed; doubled (all rounds)",
        format!("{}; {}; {}", h.count, h.missed, h.doubled),
        format!("{}; {}; {}", p.count, p.missed, p.doubled),
        "—".into(),
    );
    if let Some(d) = default {
        b.compare(
            scenario,
            "peer at its default channel size (200), one round",
            "—".into(),
            format!("{}; {} started, {} missed", show(d), d.count, d.missed),
            "—".into(),
        );
    }
}

/// An RFC 3339 instant `secs` from now, on a whole second.
fn at_in(secs: i64) -> chrono::DateTime<chrono::Utc> {
    let t = chrono::Utc::now() + chrono::TimeDelta::seconds(secs);
    chrono::DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !f()? {
        if Instant::now() > deadline {
            bail!("timed out");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// When the last of `runs` finished.
fn last_finished(runs: &[RunRow]) -> Result<chrono::DateTime<chrono::Utc>> {
    runs.iter()
        .filter_map(|r| r.finished_at)
        .max()
        .context("no run finished")
}

/// Three `sleep 2` jobs due at the same instant: time until all finished.
fn seed(b: &mut Bench) -> Result<()> {
    let at = at_in(3).to_rfc3339();
    let jobs: String = (1..=3)
        .map(|i| format!("[jobs.seed{i}]\nat = \"{at}\"\ncommand = \"sleep 2\"\n"))
        .collect();
    let d = Daemon::start(&b.bin, "", &jobs)?;
    wait_until(Duration::from_secs(30), || {
        Ok(d.runs()?.iter().filter(|r| r.finished_at.is_some()).count() == 3)
    })?;
    let runs = d.runs()?;
    let due = runs[0].scheduled_for;
    let last = last_finished(&runs)?;
    d.stop()?;
    b.row(
        "seed",
        "3 × sleep 2 due together: all done after",
        format!("{} ms", (last - due).num_milliseconds()),
    );
    Ok(())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs, Linux {}", kernel.trim())
}

/// Runs the scenarios `only` names (all when empty), tiny when `smoke`.
fn run_scenarios(b: &mut Bench, smoke: bool, only: &[String]) -> Result<()> {
    let want = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o));
    if want("seed") {
        seed(b)?;
    }
    if want("isolation") {
        let (fast, secs) = if smoke { (5, 3) } else { (100, 20) };
        isolation(b, fast, secs, false)?;
        isolation(b, fast, secs, true)?;
    }
    if want("isolation-http") {
        let (fast, secs) = if smoke { (5, 3) } else { (100, 20) };
        isolation_http(b, fast, secs)?;
    }
    if want("spawn") {
        spawn_floor(b, if smoke { 50 } else { 10_000 })?;
    }
    if want("burst") {
        if smoke {
            burst(b, 50, None)?;
        } else {
            burst(b, 1000, None)?;
            burst(b, 10_000, None)?;
            burst(b, 10_000, Some(64))?;
        }
    }
    if want("http") {
        http_floor(b, if smoke { 50 } else { 10_000 })?;
        http_burst(b, if smoke { 50 } else { 10_000 })?;
    }
    if want("reload") {
        if smoke {
            reload(b, 500, 5, 2)?;
        } else {
            reload(b, 10_000, 100, 5)?;
        }
    }
    if want("history") {
        history(b, if smoke { 2_000 } else { 100_000 })?;
    }
    if want("scale") {
        if smoke {
            scale(b, 1000, 2)?;
        } else {
            scale(b, 100_000, 30)?;
        }
    }
    run_operations(b, smoke, &want)
}

/// The scenarios of a daemon in operation: idle, memory, the API, the dashboard, chains of
/// jobs, accounting, several nodes.
fn run_operations(b: &mut Bench, smoke: bool, want: &dyn Fn(&str) -> bool) -> Result<()> {
    if want("idle") {
        idle(b, if smoke { 2 } else { 60 })?;
    }
    if want("memory") {
        if smoke {
            operate::memory_after_burst(b, 50, Duration::from_secs(1))?;
        } else {
            operate::memory_after_burst(b, 10_000, Duration::from_secs(60))?;
        }
    }
    if want("api") {
        if smoke {
            operate::api_under_load(b, 200, 5, 2, 50)?;
        } else {
            operate::api_under_load(b, 10_000, 100, 20, 1000)?;
        }
    }
    if want("dashboard") {
        if smoke {
            dashboard::pages(b, 200, 5, 10_000, 10)?;
        } else {
            dashboard::pages(b, 10_000, 100, 1_000_000, 200)?;
        }
    }
    if want("accounting") {
        let n = if smoke { 50 } else { 10_000 };
        accounting::accounting(b, n, b.previous.clone().as_deref())?;
    }
    if want("chains") {
        chains::chains(b, if smoke { 20 } else { 1000 })?;
    }
    if want("cluster") {
        let sizes = cluster::Sizes::new(smoke);
        cluster::cluster(b, &sizes)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let smoke = match &args.suite {
        Suite::Peer(p) => return peer::run(p),
        Suite::Smoke => true,
        Suite::All => false,
    };
    let me = std::env::current_exe()?;
    let bin = match args.bin {
        Some(b) => b,
        None => me.with_file_name("hourglass"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release)",
            bin.display()
        );
    }
    let mut b = Bench {
        bin,
        me,
        previous: args.previous,
        rounds: args.rounds.unwrap_or(if smoke { 1 } else { 3 }),
        rows: Vec::new(),
    };
    let started = Instant::now();
    run_scenarios(&mut b, smoke, &args.only)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "\n## hourglass bench ({}), {}, {}, {} s\n",
        if smoke { "smoke" } else { "all" },
        machine(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        started.elapsed().as_secs()
    )?;
    writeln!(
        stdout,
        "| scenario | metric | hourglass | tokio-cron-scheduler | peer / hourglass |\n| --- | --- | --- | --- | --- |"
    )?;
    for r in &b.rows {
        writeln!(
            stdout,
            "| {} | {} | {} | {} | {} |",
            r.scenario, r.metric, r.hourglass, r.peer, r.ratio
        )?;
    }
    Ok(())
}
