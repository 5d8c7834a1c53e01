//! hourglass benchmark suite: starts the real release binary on generated configs in a temp
//! dir, measures from its history database and from `/proc`, and prints one markdown table.
//!
//! `cargo run --release -p bench -- all` (full, by hand) or `-- smoke` (seconds, in CI).
//! Scenarios implemented so far: seed, isolation, burst, scale, idle. The tokio-cron-scheduler
//! peer, the reload and history-writer scenarios are still to come (issue 4).

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use hourglass::store::{HistoryFilter, RunRow, Store};

#[derive(Debug, Parser)]
struct Args {
    /// Which scenarios.
    #[arg(value_enum, default_value = "all")]
    suite: Suite,
    /// The daemon binary (default: target/release/hourglass beside this binary).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Only the scenarios whose name contains one of these (seed, isolation, spawn, burst,
    /// scale, idle, ...).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    /// Every scenario at full size (minutes).
    All,
    /// Every scenario, tiny (seconds): proves the bench still runs.
    Smoke,
}

/// One row of the result table.
#[derive(Debug)]
struct Row {
    scenario: String,
    metric: String,
    value: String,
}

struct Daemon {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    child: Child,
    bin: PathBuf,
    ready_after: Duration,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("dir", &self.dir).finish()
    }
}

impl Daemon {
    fn start(bin: &Path, main_extra: &str, jobs: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_path_buf();
        std::fs::create_dir(path.join("jobs.d"))?;
        std::fs::write(
            path.join("hourglass.toml"),
            format!(
                "[database]\npath = \"history.db\"\n[daemon]\ntimezone = \"UTC\"\n{main_extra}\n"
            ),
        )?;
        std::fs::write(path.join("jobs.d/jobs.toml"), jobs)?;
        let sock = UnixDatagram::bind(path.join("notify.sock"))?;
        sock.set_read_timeout(Some(Duration::from_secs(120)))?;
        let started = Instant::now();
        let child = Command::new(bin)
            .arg("--config")
            .arg(path.join("hourglass.toml"))
            .arg("run")
            .env("NOTIFY_SOCKET", path.join("notify.sock"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut buf = [0u8; 4096];
        loop {
            let n = sock.recv(&mut buf).context("waiting for READY=1")?;
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                break;
            }
        }
        Ok(Self {
            _dir: dir,
            dir: path,
            child,
            bin: bin.to_path_buf(),
            ready_after: started.elapsed(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_kib(&self) -> u64 {
        proc_status(self.pid(), "VmRSS:")
    }

    /// CPU time (user + system) in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let get = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // After the command name: state is field 0; utime 11, stime 12.
        get(11) + get(12)
    }

    /// The daemon's CPU use over the next `span`, in percent of one core (100 ticks/s).
    fn cpu_percent_over(&self, span: Duration) -> f64 {
        let (ticks, t0) = (self.cpu_ticks(), Instant::now());
        std::thread::sleep(span);
        (self.cpu_ticks() - ticks) as f64 / t0.elapsed().as_secs_f64()
    }

    fn runs(&self) -> Result<Vec<RunRow>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let db = self.dir.join("history.db");
        let rows = rt.block_on(async {
            let store = Store::open(&db).await?;
            let rows = store
                .history(&HistoryFilter {
                    limit: u32::MAX,
                    ..Default::default()
                })
                .await;
            store.close().await;
            rows
        })?;
        Ok(rows)
    }

    fn stop(mut self) -> Result<()> {
        nix_kill(self.pid(), "TERM")?;
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

fn nix_kill(pid: u32, sig: &str) -> Result<()> {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    if !st.success() {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn lateness(runs: &[RunRow], job_prefix: &str) -> Vec<i64> {
    let mut v: Vec<i64> = runs
        .iter()
        .filter(|r| r.job.starts_with(job_prefix) && r.trigger == "schedule")
        .filter_map(|r| r.lateness_ms)
        .collect();
    v.sort_unstable();
    v
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

/// An RFC 3339 instant `secs` from now, on a whole second.
fn at_in(secs: i64) -> String {
    let t = chrono::Utc::now() + chrono::TimeDelta::seconds(secs);
    chrono::DateTime::from_timestamp(t.timestamp(), 0)
        .unwrap_or(t)
        .to_rfc3339()
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

fn row(out: &mut Vec<Row>, scenario: &str, metric: &str, value: String) {
    println!("  {scenario}: {metric} = {value}");
    out.push(Row {
        scenario: scenario.into(),
        metric: metric.into(),
        value,
    });
}

/// Three `sleep 2` jobs due at the same instant: time until all finished.
fn seed(bin: &Path, out: &mut Vec<Row>) -> Result<()> {
    let at = at_in(3);
    let jobs: String = (1..=3)
        .map(|i| format!("[jobs.seed{i}]\nat = \"{at}\"\ncommand = \"sleep 2\"\n"))
        .collect();
    let d = Daemon::start(bin, "", &jobs)?;
    wait_until(Duration::from_secs(30), || {
        Ok(d.runs()?.iter().filter(|r| r.finished_at.is_some()).count() == 3)
    })?;
    let runs = d.runs()?;
    let due = hourglass::store::parse_ts(&runs[0].scheduled_for).context("timestamp")?;
    let last = last_finished(&runs)?;
    row(
        out,
        "seed",
        "3 × sleep 2 due together: all done after",
        format!("{} ms", (last - due).num_milliseconds()),
    );
    d.stop()
}

/// A slow job (sleep, or burning CPU) beside N every-second jobs.
fn isolation(bin: &Path, out: &mut Vec<Row>, fast: usize, secs: u64, cpu: bool) -> Result<()> {
    let slow = if cpu {
        "[jobs.slow]\nevery = \"1h\"\ncommand = \"timeout 300 sh -c 'while :; do :; done'\"\n"
    } else {
        "[jobs.slow]\nevery = \"1h\"\ncommand = \"sleep 300\"\n"
    };
    let mut jobs = slow.to_string();
    for i in 0..fast {
        jobs.push_str(&format!(
            "[jobs.fast{i}]\nschedule = \"* * * * * *\"\ncommand = [\"true\"]\n"
        ));
    }
    let d = Daemon::start(bin, "", &jobs)?;
    d.trigger("slow")?;
    std::thread::sleep(Duration::from_secs(secs));
    let runs = d.runs()?;
    d.stop()?;
    let late = lateness(&runs, "fast");
    let mut missed = 0i64;
    let mut doubled = 0usize;
    for i in 0..fast {
        let mut t: Vec<i64> = runs
            .iter()
            .filter(|r| r.job == format!("fast{i}") && r.trigger == "schedule")
            .filter_map(|r| hourglass::store::parse_ts(&r.scheduled_for))
            .map(|t| t.timestamp())
            .collect();
        t.sort_unstable();
        let before = t.len();
        t.dedup();
        doubled += before - t.len();
        missed += t.windows(2).map(|w| w[1] - w[0] - 1).sum::<i64>();
    }
    let name = if cpu {
        "isolation (CPU-burning slow job)"
    } else {
        "isolation (sleeping slow job)"
    };
    row(
        out,
        name,
        &format!("{fast} every-second jobs, {secs} s: lateness p50/p99/max"),
        format!(
            "{} / {} / {} ms ({} runs)",
            percentile(&late, 0.5),
            percentile(&late, 0.99),
            late.last().copied().unwrap_or(-1),
            late.len()
        ),
    );
    row(
        out,
        name,
        "missed / doubled firings",
        format!("{missed} / {doubled}"),
    );
    Ok(())
}

impl Daemon {
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
}

/// N command jobs due in the same second.
fn burst(bin: &Path, out: &mut Vec<Row>, n: usize, limit: Option<usize>) -> Result<()> {
    let at = at_in(if n > 2000 { 8 } else { 3 });
    let jobs: String = (0..n)
        .map(|i| format!("[jobs.b{i}]\nat = \"{at}\"\ncommand = [\"true\"]\n"))
        .collect();
    let extra = limit.map_or(String::new(), |l| format!("max_concurrent_runs = {l}\n"));
    let d = Daemon::start(bin, &extra, &jobs)?;
    wait_until(Duration::from_secs(300), || {
        Ok(d.runs()?.iter().filter(|r| r.finished_at.is_some()).count() >= n)
    })?;
    let runs = d.runs()?;
    d.stop()?;
    let late = lateness(&runs, "b");
    let due = chrono::DateTime::parse_from_rfc3339(&at)?.with_timezone(&chrono::Utc);
    let last = last_finished(&runs)?;
    let label = match limit {
        Some(l) => format!("burst {n} (max_concurrent_runs = {l})"),
        None => format!("burst {n}"),
    };
    row(
        out,
        &label,
        "lateness p50/p99/max; all recorded; last finished after",
        format!(
            "{} / {} / {} ms; {}/{n}; {} ms",
            percentile(&late, 0.5),
            percentile(&late, 0.99),
            late.last().copied().unwrap_or(-1),
            runs.len(),
            (last - due).num_milliseconds()
        ),
    );
    Ok(())
}

/// The machine's floor for the burst scenarios: N `true` processes spawned at once from a
/// 2-worker tokio runtime (each in its own process group, `posix_spawn`, as the daemon does),
/// with no scheduling or recording around them.
fn spawn_floor(out: &mut Vec<Row>, n: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (spawned, done) = rt.block_on(async move {
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                tokio::spawn(async move {
                    let mut child = tokio::process::Command::new("true")
                        .process_group(0)
                        .stdin(Stdio::null())
                        .spawn()?;
                    let at = t0.elapsed();
                    child.wait().await?;
                    anyhow::Ok(at)
                })
            })
            .collect();
        let mut spawned = Vec::with_capacity(n);
        for t in tasks {
            spawned.push(t.await??);
        }
        anyhow::Ok((spawned, t0.elapsed()))
    })?;
    let last = spawned.iter().max().copied().unwrap_or_default();
    row(
        out,
        &format!("spawn floor ({n} × true, no daemon)"),
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

/// N schedules, mostly far apart: time to READY, RSS, idle CPU.
fn scale(bin: &Path, out: &mut Vec<Row>, n: usize, idle_secs: u64) -> Result<()> {
    let mut jobs = String::with_capacity(n * 64);
    for i in 0..n {
        let (m, h) = (i % 60, (i / 60) % 24);
        jobs.push_str(&format!(
            "[jobs.s{i}]\nschedule = \"{m} {h} 1 1 *\"\ncommand = [\"true\"]\n"
        ));
    }
    let d = Daemon::start(bin, "", &jobs)?;
    let ready = d.ready_after;
    let cpu = d.cpu_percent_over(Duration::from_secs(idle_secs));
    let rss = d.rss_kib();
    d.stop()?;
    row(
        out,
        &format!("scale {n} schedules"),
        &format!("READY after; RSS; idle CPU over {idle_secs} s"),
        format!(
            "{} ms; {:.1} MiB; {cpu:.2} % of a core",
            ready.as_millis(),
            rss as f64 / 1024.0
        ),
    );
    Ok(())
}

/// One job: RSS and CPU.
fn idle(bin: &Path, out: &mut Vec<Row>, secs: u64) -> Result<()> {
    let d = Daemon::start(
        bin,
        "",
        "[jobs.one]\nschedule = \"0 3 * * *\"\ncommand = [\"true\"]\n",
    )?;
    let cpu = d.cpu_percent_over(Duration::from_secs(secs));
    let rss = d.rss_kib();
    d.stop()?;
    row(
        out,
        "idle (1 job)",
        &format!("RSS; CPU over {secs} s"),
        format!("{:.1} MiB; {cpu:.2} % of a core", rss as f64 / 1024.0),
    );
    Ok(())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs, Linux {}", kernel.trim())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bin = match args.bin {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("hourglass"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release)",
            bin.display()
        );
    }
    let mut out = Vec::new();
    let smoke = args.suite == Suite::Smoke;
    let want = |name: &str| args.only.is_empty() || args.only.iter().any(|o| name.contains(o));
    if want("seed") {
        seed(&bin, &mut out)?;
    }
    if smoke {
        if want("isolation") {
            isolation(&bin, &mut out, 5, 3, false)?;
        }
        if want("spawn") {
            spawn_floor(&mut out, 50)?;
        }
        if want("burst") {
            burst(&bin, &mut out, 50, None)?;
        }
        if want("scale") {
            scale(&bin, &mut out, 1000, 2)?;
        }
        if want("idle") {
            idle(&bin, &mut out, 2)?;
        }
    } else {
        if want("isolation") {
            isolation(&bin, &mut out, 100, 60, false)?;
            isolation(&bin, &mut out, 100, 60, true)?;
        }
        if want("spawn") {
            spawn_floor(&mut out, 10_000)?;
        }
        if want("burst") {
            burst(&bin, &mut out, 1000, None)?;
            burst(&bin, &mut out, 10_000, None)?;
            burst(&bin, &mut out, 10_000, Some(64))?;
        }
        if want("scale") {
            scale(&bin, &mut out, 100_000, 30)?;
        }
        if want("idle") {
            idle(&bin, &mut out, 60)?;
        }
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "\n## hourglass bench ({:?}), {}, {}\n",
        args.suite,
        machine(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    )?;
    writeln!(stdout, "| scenario | metric | value |\n| --- | --- | --- |")?;
    for r in &out {
        writeln!(stdout, "| {} | {} | {} |", r.scenario, r.metric, r.value)?;
    }
    Ok(())
}
