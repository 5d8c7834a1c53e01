//! hourglass benchmark suite: starts the real release binary on generated configs in a temp
//! dir, measures from its history database and from `/proc`, runs the same jobs on
//! tokio-cron-scheduler (the peer, [`peer`]) interleaved round by round, and prints one markdown
//! table.
//!
//! `cargo run --release -p bench -- all` (full, by hand) or `-- smoke` (seconds, in CI);
//! `--only burst,scale` picks scenarios. The history writer's own harness is
//! `cargo bench -p bench` ([`divan`], `benches/history.rs`).

mod cluster;
mod dashboard;
mod http_server;
mod operate;
mod peer;
mod proc;

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
    /// http, scale, reload, history, idle, memory, api, dashboard, cluster).
    #[arg(long, global = true, value_delimiter = ',')]
    only: Vec<String>,
    /// Rounds per compared scenario (medians are over rounds).
    #[arg(long, global = true)]
    rounds: Option<usize>,
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

/// A running daemon on a generated config.
struct Daemon {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    child: Child,
    bin: PathBuf,
    notify: harness::Notifications,
    ready_after: Duration,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("dir", &self.dir).finish()
    }
}

impl Daemon {
    fn start(bin: &Path, main_extra: &str, jobs: &str) -> Result<Self> {
        Self::start_seeded(bin, main_extra, jobs, "")
    }

    /// Like [`Daemon::start`], on a history database made beforehand and given `seed` (SQL,
    /// run by `sqlite3`) when it is not empty.
    fn start_seeded(bin: &Path, main_extra: &str, jobs: &str, seed: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_path_buf();
        let config = harness::write_config(
            &path,
            &format!(
                "[database]\npath = \"history.db\"\n[daemon]\ntimezone = \"UTC\"\n{main_extra}\n"
            ),
            jobs,
        )?;
        if !seed.is_empty() {
            let db = path.join("history.db");
            tokio::runtime::Runtime::new()?.block_on(async {
                Store::open(&db).await?.close().await;
                anyhow::Ok(())
            })?;
            let st = Command::new("sqlite3").arg(&db).arg(seed).status()?;
            if !st.success() {
                bail!("sqlite3 could not seed the history: {st}");
            }
        }
        let mut notify = harness::Notifications::bind(path.join("notify.sock"))?;
        let mut cmd = harness::run_command(&[bin.as_os_str()], &config, &notify);
        cmd.env("RUST_LOG", "warn").stderr(Stdio::null());
        let (child, ready_after) =
            harness::start_ready(&mut cmd, &mut notify, Duration::from_secs(120))
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self {
            _dir: dir,
            dir: path,
            child,
            bin: bin.to_path_buf(),
            notify,
            ready_after,
        })
    }

    /// Forgets sd_notify messages already sent.
    fn drain_notes(&mut self) {
        self.notify.forget();
    }

    /// Waits for a line of the daemon's sd_notify messages.
    fn wait_note(&mut self, line: &str) -> Result<()> {
        let child = &mut self.child;
        self.notify
            .wait(line, Duration::from_secs(120), || {
                matches!(child.try_wait(), Ok(None))
            })
            .map_err(anyhow::Error::msg)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn runs(&self) -> Result<Vec<RunRow>> {
        read_history(&Database::Sqlite(self.dir.join("history.db")))
    }

    fn trigger(&self, job: &str) -> Result<()> {
        let st = Command::new(&self.bin)
            .arg("--config")
            .arg(self.dir.join("hourglass.toml"))
            .args(["trigger", job])
            .stdout(Stdio::null())
            .status();
        match st {
            Ok(s) if s.success() => Ok(()),
            _ => bail!("trigger {job} failed"),
        }
    }

    fn stop(mut self) -> Result<()> {
        proc::signal(self.pid(), "TERM")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("daemon did not stop");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// Every run in `database`, newest first.
fn read_history(database: &Database) -> Result<Vec<RunRow>> {
    read_history_filtered(
        database,
        &HistoryFilter {
            limit: u32::MAX,
            ..Default::default()
        },
    )
}

/// The rows of `database` that `filter` picks.
fn read_history_filtered(database: &Database, filter: &HistoryFilter) -> Result<Vec<RunRow>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rows = rt.block_on(async {
        let store = Store::connect(database).await?;
        let rows = store.history(filter).await;
        store.close().await;
        rows
    })?;
    Ok(rows)
}

/// A running peer process (see [`peer`]).
struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
    ready_after: Duration,
}

impl Peer {
    fn start(me: &Path, args: &[String]) -> Result<Self> {
        let started = Instant::now();
        let mut child = Command::new(me)
            .arg("peer")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the peer")?;
        let stdout = child.stdout.take().context("peer stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(300))
            .context("waiting for the peer's READY")?;
        if !first.starts_with("READY") {
            bail!("peer said {first:?}");
        }
        Ok(Self {
            child,
            lines,
            ready_after: started.elapsed(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the peer to end; its firings.
    fn finish(mut self) -> Result<Vec<Fire>> {
        let mut fires = Vec::new();
        for line in self.lines.iter() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let ["F", job, intended, started] = f[..] {
                fires.push(Fire {
                    job: format!("j{job}"),
                    intended: intended.parse()?,
                    started: started.parse()?,
                });
            }
        }
        self.child.wait()?;
        Ok(fires)
    }
}

/// One firing, in ms since the epoch.
#[derive(Debug, Clone)]
struct Fire {
    job: String,
    intended: i64,
    started: i64,
}

fn fires_of(runs: &[RunRow], prefix: &str) -> Vec<Fire> {
    runs.iter()
        .filter(|r| r.job.starts_with(prefix) && r.trigger == "schedule")
        .filter_map(|r| {
            let intended = hourglass::store::parse_ts(&r.scheduled_for)?;
            let started = hourglass::store::parse_ts(r.started_at.as_deref()?)?;
            Some(Fire {
                job: r.job.clone(),
                intended: intended.timestamp_millis(),
                started: started.timestamp_millis(),
            })
        })
        .collect()
}

/// The summary of the `fires` of `jobs` periodic jobs whose intended time is in `[from, to)`.
fn summarize_between(
    fires: &[Fire],
    jobs: usize,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Summary {
    let (from, to) = (from.timestamp_millis(), to.timestamp_millis());
    let within: Vec<Fire> = fires
        .iter()
        .filter(|f| f.intended >= from && f.intended < to)
        .cloned()
        .collect();
    summarize_periodic(&within, jobs)
}

/// Lateness percentiles and firing counts of one round.
#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    p50: i64,
    p99: i64,
    max: i64,
    count: usize,
    missed: usize,
    doubled: usize,
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Every-second jobs: missed and doubled firings are counted per job over the whole seconds
/// strictly inside the observed span (its edges may be cut by the start and the stop).
fn summarize_periodic(fires: &[Fire], jobs: usize) -> Summary {
    let mut s = summarize_once(fires, jobs);
    let (Some(first), Some(last)) = (
        fires.iter().map(|f| f.intended / 1000).min(),
        fires.iter().map(|f| f.intended / 1000).max(),
    ) else {
        return s;
    };
    let mut per_job: std::collections::HashMap<&str, Vec<i64>> = Default::default();
    for f in fires {
        let sec = f.intended / 1000;
        if sec > first && sec < last {
            per_job.entry(&f.job).or_default().push(sec);
        }
    }
    let inside = usize::try_from(last - first - 1).unwrap_or(0);
    s.missed = jobs.saturating_sub(per_job.len()) * inside;
    s.doubled = 0;
    for secs in per_job.values_mut() {
        secs.sort_unstable();
        let n = secs.len();
        secs.dedup();
        s.doubled += n - secs.len();
        s.missed += inside.saturating_sub(secs.len());
    }
    s
}

/// One-shot jobs: each of `jobs` should fire once.
fn summarize_once(fires: &[Fire], jobs: usize) -> Summary {
    let mut late: Vec<i64> = fires.iter().map(|f| f.started - f.intended).collect();
    late.sort_unstable();
    let mut names: Vec<&str> = fires.iter().map(|f| f.job.as_str()).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    Summary {
        p50: percentile(&late, 0.5),
        p99: percentile(&late, 0.99),
        max: late.last().copied().unwrap_or(-1),
        count: fires.len(),
        missed: jobs.saturating_sub(names.len()),
        doubled: n - names.len(),
    }
}

/// The median of each figure over rounds; counts are summed.
fn median(rounds: &[Summary]) -> Summary {
    let med = |f: fn(&Summary) -> i64| {
        let mut v: Vec<i64> = rounds.iter().map(f).collect();
        v.sort_unstable();
        percentile(&v, 0.5)
    };
    Summary {
        p50: med(|s| s.p50),
        p99: med(|s| s.p99),
        max: med(|s| s.max),
        count: rounds.iter().map(|s| s.count).sum(),
        missed: rounds.iter().map(|s| s.missed).sum(),
        doubled: rounds.iter().map(|s| s.doubled).sum(),
    }
}

fn show(s: &Summary) -> String {
    format!("{} / {} / {} ms", s.p50, s.p99, s.max)
}

fn ratio(peer: i64, hg: i64) -> String {
    if hg <= 0 {
        format!("peer {peer} ms vs ≤ 1 ms")
    } else {
        format!("{:.1}×", peer as f64 / hg as f64)
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
        .filter_map(|r| {
            r.finished_at
                .as_deref()
                .and_then(hourglass::store::parse_ts)
        })
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
    let due = hourglass::store::parse_ts(&runs[0].scheduled_for).context("timestamp")?;
    let last = last_finished(&runs)?;
    d.stop()?;
    b.row(
        "seed",
        "3 × sleep 2 due together: all done after",
        format!("{} ms", (last - due).num_milliseconds()),
    );
    Ok(())
}

/// The CPU-burning slow job. `--foreground`: otherwise timeout moves to a process group of its
/// own, out of reach of the group kill at stop.
const CPU_BURNER: &str = "timeout --foreground 300 sh -c 'while :; do :; done'";

/// A slow job (sleep, or burning CPU) beside N every-second jobs, on both schedulers.
fn isolation(b: &mut Bench, fast: usize, secs: u64, cpu: bool) -> Result<()> {
    let slow_line = if cpu { CPU_BURNER } else { "sleep 300" };
    let mut jobs = format!("[jobs.slow]\nevery = \"1h\"\ncommand = \"{slow_line}\"\n");
    for i in 0..fast {
        jobs.push_str(&format!(
            "[jobs.fast{i}]\nschedule = \"* * * * * *\"\ncommand = [\"true\"]\n"
        ));
    }
    let peer_args = |channel: usize| -> Vec<String> {
        vec![
            format!("--jobs={fast}"),
            "--schedule=* * * * * *".into(),
            format!("--slow={slow_line}"),
            format!("--channel={channel}"),
            format!("--secs={secs}"),
        ]
    };
    let (mut hg, mut pe) = (Vec::new(), Vec::new());
    for _ in 0..b.rounds {
        hg.push(isolation_round(b, &jobs, fast, secs)?);
        let p = Peer::start(&b.me, &peer_args(fast * 100))?;
        pe.push(summarize_periodic(&p.finish()?, fast));
    }
    let name = if cpu {
        format!("isolation: {fast} every-second jobs + a CPU-burning job, {secs} s")
    } else {
        format!("isolation: {fast} every-second jobs + a sleeping job, {secs} s")
    };
    compare_rows(b, &name, &hg, &pe, None);
    Ok(())
}

/// One hourglass round of an isolation scenario: start, trigger the slow job, wait, read.
fn isolation_round(b: &Bench, jobs: &str, fast: usize, secs: u64) -> Result<Summary> {
    let d = Daemon::start(&b.bin, "", jobs)?;
    d.trigger("slow")?;
    std::thread::sleep(Duration::from_secs(secs));
    let runs = d.runs()?;
    d.stop()?;
    Ok(summarize_periodic(&fires_of(&runs, "fast"), fast))
}

/// Runs a daemon on `jobs` until `n` runs finished; their history.
fn until_finished(b: &Bench, extra: &str, jobs: &str, n: usize) -> Result<Vec<RunRow>> {
    let d = Daemon::start(&b.bin, extra, jobs)?;
    wait_until(Duration::from_secs(300), || {
        Ok(d.runs()?.iter().filter(|r| r.finished_at.is_some()).count() >= n)
    })?;
    let runs = d.runs()?;
    d.stop()?;
    Ok(runs)
}

/// The isolation scenario with in-process jobs: N every-second HTTP jobs (local server) beside
/// a CPU-burning command, so that the timers are measured rather than the machine's spawn rate.
fn isolation_http(b: &mut Bench, fast: usize, secs: u64) -> Result<()> {
    let port = http_server::start()?;
    let mut jobs = format!("[jobs.slow]\nevery = \"1h\"\ncommand = \"{CPU_BURNER}\"\n");
    for i in 0..fast {
        jobs.push_str(&format!(
            "[jobs.fast{i}]\nschedule = \"* * * * * *\"\nhttp = {{ url = \"http://127.0.0.1:{port}/\" }}\n"
        ));
    }
    let hg = (0..b.rounds)
        .map(|_| isolation_round(b, &jobs, fast, secs))
        .collect::<Result<Vec<_>>>()?;
    let label = format!("isolation: {fast} every-second HTTP jobs + a CPU-burning job, {secs} s");
    let h = lateness_row(b, &label, &hg);
    b.row(
        &label,
        "firings started; missed; doubled (all rounds)",
        format!("{}; {}; {}", h.count, h.missed, h.doubled),
    );
    Ok(())
}

/// N command jobs due in the same second, on both schedulers.
fn burst(b: &mut Bench, n: usize, limit: Option<usize>) -> Result<()> {
    let lead = if n > 2000 { 8 } else { 3 };
    let extra = limit.map_or(String::new(), |l| format!("max_concurrent_runs = {l}\n"));
    let mut hg = Vec::new();
    let mut last_done = Vec::new();
    let mut pe = Vec::new();
    let mut default = None;
    let peer_rounds = if limit.is_some() { 0 } else { b.rounds };
    for round in 0..b.rounds.max(1) {
        let at = at_in(lead);
        let jobs = burst_jobs(n, at);
        let runs = until_finished(b, &extra, &jobs, n)?;
        hg.push(summarize_once(&fires_of(&runs, "b"), n));
        last_done.push((last_finished(&runs)? - at).num_milliseconds());
        if round < peer_rounds {
            pe.push(burst_peer(b, n, n * 2, lead)?);
            if round == 0 {
                default = Some(burst_peer(b, n, 200, lead)?);
            }
        }
    }
    last_done.sort_unstable();
    let label = match limit {
        Some(l) => format!("burst: {n} commands due in one second, max_concurrent_runs = {l}"),
        None => format!("burst: {n} commands due in one second"),
    };
    if pe.is_empty() {
        let h = lateness_row(b, &label, &hg);
        b.row(
            &label,
            "started; missed (all rounds)",
            format!("{}; {}", h.count, h.missed),
        );
    } else {
        compare_rows(b, &label, &hg, &pe, default.as_ref());
    }
    b.row(
        &label,
        "last run finished after its time (median)",
        format!("{} ms", percentile(&last_done, 0.5)),
    );
    Ok(())
}

/// `n` one-shot commands `b0`... all due at `at`.
fn burst_jobs(n: usize, at: chrono::DateTime<chrono::Utc>) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[jobs.b{i}]\nat = \"{}\"\ncommand = [\"true\"]\n",
                at.to_rfc3339()
            )
        })
        .collect()
}

fn burst_peer(b: &Bench, n: usize, channel: usize, lead: i64) -> Result<Summary> {
    // The peer needs the due instant in its cron line; it is given time to add every job.
    let at = at_in(lead + if n > 2000 { 12 } else { 2 });
    let cron = at.format("%S %M %H %d %m *").to_string();
    let p = Peer::start(
        &b.me,
        &[
            format!("--jobs={n}"),
            format!("--schedule={cron}"),
            format!("--channel={channel}"),
            format!("--due={}", at.timestamp_millis()),
            format!("--until={n}"),
            format!(
                "--secs={}",
                (at - chrono::Utc::now()).num_seconds().max(0) + 120
            ),
        ],
    )?;
    if chrono::Utc::now() > at {
        bail!("the peer took longer than {lead} s to add {n} jobs");
    }
    Ok(summarize_once(&p.finish()?, n))
}

/// N HTTP jobs due in the same second against a local server: scheduling cost without fork.
fn http_burst(b: &mut Bench, n: usize) -> Result<()> {
    let port = http_server::start()?;
    let mut hg = Vec::new();
    let mut last_done = Vec::new();
    for _ in 0..b.rounds {
        let at = at_in(if n > 2000 { 8 } else { 3 });
        let jobs: String = (0..n)
            .map(|i| {
                format!(
                    "[jobs.h{i}]\nat = \"{}\"\nhttp = {{ url = \"http://127.0.0.1:{port}/\" }}\n",
                    at.to_rfc3339()
                )
            })
            .collect();
        let runs = until_finished(b, "", &jobs, n)?;
        let failed = runs.iter().filter(|r| r.status != "succeeded").count();
        if failed > 0 {
            bail!("{failed} of {n} HTTP runs did not succeed");
        }
        hg.push(summarize_once(&fires_of(&runs, "h"), n));
        last_done.push((last_finished(&runs)? - at).num_milliseconds());
    }
    last_done.sort_unstable();
    let label = format!("burst: {n} HTTP jobs due in one second (local server)");
    let h = lateness_row(b, &label, &hg);
    b.row(
        &label,
        "started; missed; last response after its time (median)",
        format!(
            "{}; {}; {} ms",
            h.count,
            h.missed,
            percentile(&last_done, 0.5)
        ),
    );
    Ok(())
}

/// `total` jobs, `fast` of them every second; a reload that changes one of the others,
/// `reloads` times: SIGHUP to READY=1, and the fast jobs' firings across it all.
fn reload(b: &mut Bench, total: usize, fast: usize, reloads: usize) -> Result<()> {
    let jobs = |version: usize| {
        let mut s = String::with_capacity(total * 64);
        for i in 0..fast {
            s.push_str(&format!(
                "[jobs.f{i}]\nschedule = \"* * * * * *\"\ncommand = [\"true\"]\n"
            ));
        }
        for i in fast..total.saturating_sub(1) {
            let (m, h) = (i % 60, (i / 60) % 24);
            s.push_str(&format!(
                "[jobs.s{i}]\nschedule = \"{m} {h} 1 1 *\"\ncommand = [\"true\"]\n"
            ));
        }
        s.push_str(&format!(
            "[jobs.changing]\nschedule = \"{} 3 1 1 *\"\ncommand = [\"true\"]\n",
            version % 60
        ));
        s
    };
    let mut d = Daemon::start(&b.bin, "", &jobs(0))?;
    std::thread::sleep(Duration::from_secs(2));
    let mut took = Vec::new();
    for k in 1..=reloads {
        let tmp = d.dir.join("jobs.next");
        std::fs::write(&tmp, jobs(k))?;
        std::fs::rename(&tmp, d.dir.join("jobs.d/jobs.toml"))?;
        d.drain_notes();
        let t0 = Instant::now();
        proc::signal(d.pid(), "HUP")?;
        d.wait_note("READY=1")?;
        took.push(i64::try_from(t0.elapsed().as_millis()).unwrap_or(i64::MAX));
        // The file watcher reloads once more (same content): let it pass.
        std::thread::sleep(Duration::from_millis(1500));
    }
    std::thread::sleep(Duration::from_secs(1));
    let runs = d.runs()?;
    d.stop()?;
    took.sort_unstable();
    let s = summarize_periodic(&fires_of(&runs, "f"), fast);
    let label = format!("reload: 1 of {total} jobs changed, {reloads} times");
    b.row(
        &label,
        "SIGHUP to READY=1 p50 / max",
        format!(
            "{} / {} ms",
            percentile(&took, 0.5),
            took.last().copied().unwrap_or(-1)
        ),
    );
    b.row(
        &label,
        &format!("{fast} every-second jobs meanwhile: lateness; missed; doubled"),
        format!("{}; {}; {}", show(&s), s.missed, s.doubled),
    );
    Ok(())
}

/// The recorder's sustained throughput into SQLite, median over rounds, for quick runs (start
/// and end in one batch) and long runs (ends in later batches).
fn history(b: &mut Bench, runs: usize) -> Result<()> {
    use bench::history::Shape;
    let rt = bench::runtime()?;
    for (shape, name) in [(Shape::Quick, "quick"), (Shape::Long, "long")] {
        let mut rates = Vec::new();
        for _ in 0..b.rounds {
            let dir = tempfile::tempdir()?;
            let store = rt.block_on(bench::history::store_in(dir.path()))?;
            let records = bench::history::records(runs, shape);
            let took = rt.block_on(bench::history::through_recorder(store, records));
            rates.push((runs as f64 / took.as_secs_f64()) as i64);
        }
        rates.sort_unstable();
        b.row(
            &format!("history: {runs} {name} runs (firing, start, end) through the recorder"),
            &format!("runs written per second, median of {} rounds", rates.len()),
            format!("{}", percentile(&rates, 0.5)),
        );
    }
    Ok(())
}

/// Spawns `n` tasks at once on a bare 2-worker runtime (each made by `task` from the common
/// start instant) and waits for all: their results, and the time until the last one ended.
fn all_at_once<T, F>(n: usize, task: impl Fn(Instant) -> F) -> Result<(Vec<T>, Duration)>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    bench::runtime()?.block_on(async {
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(task(t0))).collect();
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            out.push(t.await??);
        }
        Ok((out, t0.elapsed()))
    })
}

/// The machine's floor for the burst scenarios: N `true` processes spawned at once from a
/// 2-worker tokio runtime (each in its own process group, `posix_spawn`, as the daemon does),
/// with no scheduling or recording around them.
fn spawn_floor(b: &mut Bench, n: usize) -> Result<()> {
    let (spawned, done) = all_at_once(n, |t0| async move {
        let mut child = tokio::process::Command::new("true")
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()?;
        let at = t0.elapsed();
        child.wait().await?;
        Ok(at)
    })?;
    let last = spawned.iter().max().copied().unwrap_or_default();
    b.row(
        &format!("spawn floor: {n} × `true` from a bare 2-worker tokio runtime"),
        "all spawned after; rate; all exited after",
        format!(
            "{} ms; {:.0} spawns/s; {} ms",
            last.as_millis(),
            n as f64 / last.as_secs_f64(),
            done.as_millis()
        ),
    );
    Ok(())
}

/// The floor for the HTTP burst: N GETs to the local server started at once from a bare
/// 2-worker tokio runtime with one reqwest client, each task noting its first poll and
/// yielding once before its request, as the daemon's HTTP runs do; no timers, no history.
fn http_floor(b: &mut Bench, n: usize) -> Result<()> {
    let port = http_server::start()?;
    let url = format!("http://127.0.0.1:{port}/");
    hourglass::http_client::install_crypto_provider();
    let client = reqwest::Client::new();
    let (mut first, done) = all_at_once(n, |t0| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let at = t0.elapsed();
            tokio::task::yield_now().await;
            client.get(&url).send().await?.bytes().await?;
            Ok(at.as_millis() as i64)
        }
    })?;
    first.sort_unstable();
    b.row(
        &format!("HTTP floor: {n} GETs to the local server from a bare 2-worker tokio runtime"),
        "task first polled p50 / p99 / max; all responses after",
        format!(
            "{} / {} / {} ms; {} ms",
            percentile(&first, 0.5),
            percentile(&first, 0.99),
            first.last().copied().unwrap_or_default(),
            done.as_millis()
        ),
    );
    Ok(())
}

/// N schedules, mostly far apart: time to READY, RSS, idle CPU; the peer beside.
fn scale(b: &mut Bench, n: usize, idle_secs: u64) -> Result<()> {
    let mut jobs = String::with_capacity(n * 64);
    for i in 0..n {
        let (m, h) = (i % 60, (i / 60) % 24);
        jobs.push_str(&format!(
            "[jobs.s{i}]\nschedule = \"{m} {h} 1 1 *\"\ncommand = [\"true\"]\n"
        ));
    }
    let d = Daemon::start(&b.bin, "", &jobs)?;
    let ready = d.ready_after;
    let cpu = proc::cpu_percent_over(d.pid(), Duration::from_secs(idle_secs));
    let rss = proc::rss_mib(d.pid());
    let mem = proc::memory(d.pid());
    d.stop()?;
    // The peer: one cron line per job too (its parser wants seconds first).
    let p = Peer::start(
        &b.me,
        &[
            format!("--jobs={n}"),
            "--schedule=0 0 0 1 1 *".into(),
            format!("--channel={}", n.max(200)),
            format!("--secs={}", idle_secs + 2),
        ],
    );
    let label = format!("scale: {n} schedules, mostly far apart");
    match p {
        Ok(p) => {
            let p_ready = p.ready_after;
            let p_cpu = proc::cpu_percent_over(p.pid(), Duration::from_secs(idle_secs));
            let p_rss = proc::rss_mib(p.pid());
            let p_mem = proc::memory(p.pid());
            p.finish()?;
            b.compare(
                &label,
                "READY (all jobs scheduled) after",
                format!("{} ms", ready.as_millis()),
                format!("{} ms", p_ready.as_millis()),
                ratio(p_ready.as_millis() as i64, ready.as_millis() as i64),
            );
            b.compare(&label, "RSS", mem, p_mem, format!("{:.1}×", p_rss / rss));
            b.compare(
                &label,
                &format!("idle CPU over {idle_secs} s"),
                format!("{cpu:.2} % of a core"),
                format!("{p_cpu:.2} % of a core"),
                "—".into(),
            );
        }
        Err(e) => {
            b.row(&label, "READY after", format!("{} ms", ready.as_millis()));
            b.row(&label, "RSS", mem);
            b.row(&label, "idle CPU", format!("{cpu:.2} % of a core"));
            b.row(&label, "peer", format!("failed: {e:#}"));
        }
    }
    Ok(())
}

/// One job: RSS and CPU of both, side by side over the same span.
fn idle(b: &mut Bench, secs: u64) -> Result<()> {
    let d = Daemon::start(
        &b.bin,
        "",
        "[jobs.one]\nschedule = \"0 3 * * *\"\ncommand = [\"true\"]\n",
    )?;
    let p = Peer::start(
        &b.me,
        &[
            "--jobs=1".into(),
            "--schedule=0 0 3 * * *".into(),
            format!("--secs={}", secs + 2),
        ],
    )?;
    let (hg_pid, peer_pid) = (d.pid(), p.pid());
    let peer_cpu =
        std::thread::spawn(move || proc::cpu_percent_over(peer_pid, Duration::from_secs(secs)));
    let cpu = proc::cpu_percent_over(hg_pid, Duration::from_secs(secs));
    let p_cpu = peer_cpu.join().unwrap_or(-1.0);
    let (mem, p_mem) = (proc::memory(hg_pid), proc::memory(peer_pid));
    d.stop()?;
    p.finish()?;
    b.compare(
        "idle: 1 job",
        &format!("RSS; CPU over {secs} s"),
        format!("{mem}; {cpu:.2} % of a core"),
        format!("{p_mem}; {p_cpu:.2} % of a core"),
        "—".into(),
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
    if want("cluster") {
        if smoke {
            cluster::cluster(b, 5, 3, 50)?;
        } else {
            cluster::cluster(b, 100, 20, 10_000)?;
        }
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
