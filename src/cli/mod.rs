//! The command line: `run` (the daemon), `check`, `list`, `history`, `show`, `trigger`,
//! `prune` and `example-config`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;

use crate::config::{self, Config, LogFormat};
use crate::daemon::{self, Shutdown};
use crate::store::{Database, HistoryFilter, RunStatus, Store};

/// hourglass: a job scheduler daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The main config file (job files live in its `jobs_dir`, default `jobs.d/` beside it).
    #[arg(long, short, global = true, env = "HOURGLASS_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (in the foreground; systemd runs it this way).
    Run {
        /// Log as JSON lines instead of plain text.
        #[arg(long)]
        json_logs: bool,
    },
    /// Validate the configuration: exit 0 if valid, 1 with every problem listed if not.
    Check,
    /// List jobs with their next fire time, in their own time zone.
    List {
        /// Draw which jobs run after which (`after`) instead, as text.
        #[arg(long)]
        graph: bool,
    },
    /// Show run history, newest first.
    History {
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
        /// Only this status.
        #[arg(long, value_parser = status_parser())]
        status: Option<RunStatus>,
        /// Only runs scheduled since: a duration ago ("1h", "7d") or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// JSON (an array of objects) instead of a table.
        #[arg(long)]
        json: bool,
        /// Keep printing runs as they start and end (like `tail -f`), until interrupted.
        #[arg(long, short, conflicts_with = "json")]
        follow: bool,
    },
    /// Show one run, with its output.
    Show {
        /// The run id (first column of `history`).
        run_id: i64,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Print a running run's output as it comes, then its end (needs the daemon).
        #[arg(long, short, conflicts_with = "json")]
        follow: bool,
    },
    /// Run a job now (recorded as `manual`); the running daemon picks it up within a second.
    ///
    /// The job's overlap policy applies. Exit status: 0 a run started (its id is printed);
    /// 3 queued (behind the job's active run, or waiting for a free run slot); 4 not run
    /// (skipped by `overlap = "skip"`, or the daemon stopping; the reason is printed); 1 an
    /// error, or no daemon picked the request up within 5 s.
    Trigger {
        /// The job name.
        job: String,
        /// Return without waiting for the daemon to pick the request up.
        #[arg(long)]
        no_wait: bool,
        /// Run it alone: this run fires none of the jobs that run after it (`after`).
        #[arg(long)]
        no_deps: bool,
    },
    /// Pause a job: its firings are not run (nor recorded one by one) until `resume`, or
    /// until `--until`. Holds across restarts and reloads.
    Pause {
        /// The job name.
        job: String,
        /// Resume by itself then: an RFC 3339 time or a duration from now ("2h").
        #[arg(long)]
        until: Option<String>,
    },
    /// Resume a paused job: it goes on from its next firing (what passed is not run).
    Resume {
        /// The job name.
        job: String,
    },
    /// Whether the daemon runs, since when, its jobs, runs in progress and waiting, history
    /// records pending, paused jobs. Exit status 3 when no daemon answers.
    Status {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Per job: runs, success rate, p50/p95 duration, p95 lateness, last success and last
    /// failure.
    Stats {
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
        /// Runs scheduled since: a duration ago or an RFC 3339 time.
        #[arg(long, default_value = "7d")]
        since: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the daemons (nodes) sharing a PostgreSQL history database: lease, clock skew
    /// against the database, version and a digest of their job definitions.
    Nodes {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete finished runs older than a duration.
    Prune {
        /// E.g. "30d".
        #[arg(long)]
        older_than: String,
    },
    /// Preview a cron expression's next fire times, like `systemd-analyze calendar`: in the
    /// zone given (default: `TZ`, else /etc/localtime), with its DST rule applied (a time skipped by a
    /// spring-forward fires at the first instant after the gap; a repeated one fires once).
    /// Given a job's name instead, that job's next firings (and what it runs after).
    Next {
        /// The expression: 5 fields, 6 with seconds first, or a macro (`@daily`); or a job's name.
        cron: String,
        /// An IANA zone, e.g. "Europe/Berlin".
        #[arg(long)]
        tz: Option<String>,
        /// How many fire times.
        #[arg(long, default_value_t = 5)]
        count: u32,
    },
    /// Print a shell completion script: `hourglass completions bash > /etc/bash_completion.d/hourglass`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `hourglass man > hourglass.1`; with `--dir`, write it and
    /// one page per command (`hourglass-run.1`, ...) into that folder.
    Man {
        /// Write every page into this folder instead of printing the main one.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print the documented example main file (`> hourglass.toml`), or with `--jobs` the
    /// example job file (`> jobs.d/examples.toml`).
    ExampleConfig {
        /// The example job file instead of the main file.
        #[arg(long)]
        jobs: bool,
    },
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    // A command run's limits are set by the daemon's own binary, before anything else starts.
    if let Some(code) = crate::job::command::limits::wrapper_main() {
        return code;
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

mod client;
mod control;
mod docs;
mod follow;
pub mod logging;
mod next;
mod nodes;
mod print;
mod running;
mod stats;

use print::{print_run, print_table};

pub use control::{NOT_RUNNING, TRIGGER_QUEUED, TRIGGER_SKIPPED};

async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = std::path::absolute(&cli.config).unwrap_or_else(|_| cli.config.clone());
    match cli.command {
        Command::ExampleConfig { jobs } => {
            print!(
                "{}",
                if jobs {
                    config::EXAMPLE_JOBS
                } else {
                    config::EXAMPLE_MAIN
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => Ok(check(&path)),
        Command::Run { json_logs } => run(&path, json_logs).await,
        Command::List { graph: false } => running::list(&path).await,
        Command::List { graph: true } => running::graph(&path),
        Command::History {
            job,
            status,
            since,
            limit,
            json,
            follow,
        } => {
            let since = since.as_deref().map(parse_since).transpose()?;
            let filter = HistoryFilter {
                job,
                status,
                since,
                limit,
                after: None,
            };
            if follow {
                return follow::history(&path, filter).await;
            }
            history(&path, &filter, json).await
        }
        Command::Show {
            run_id,
            follow: true,
            ..
        } => follow::show(&path, run_id).await,
        Command::Show { run_id, json, .. } => show(&path, run_id, json).await,
        Command::Trigger {
            job,
            no_wait,
            no_deps,
        } => control::trigger(&path, &job, no_wait, no_deps).await,
        Command::Pause { job, until } => control::pause(&path, &job, until.as_deref()).await,
        Command::Resume { job } => control::resume(&path, &job).await,
        Command::Status { json } => control::status(&path, json).await,
        Command::Stats { job, since, json } => {
            stats::stats(&path, job.as_deref(), &since, json).await
        }
        Command::Prune { older_than } => prune(&path, &older_than).await,
        Command::Nodes { json } => nodes::nodes(&path, json).await,
        Command::Next { cron, tz, count } => Ok(next::of_job(&path, &cron, count)
            .unwrap_or_else(|| next::next(&cron, tz.as_deref(), count))),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(dir.as_deref()),
    }
}

/// The values `history --status` takes, as stored.
fn status_parser() -> impl clap::builder::TypedValueParser<Value = RunStatus> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(RunStatus::ALL.map(RunStatus::as_str))
        .try_map(|s| s.parse::<RunStatus>())
}

/// `hourglass check`: every problem, or "ok" with the number of jobs.
fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            for w in &cfg.warnings {
                eprintln!("{w}");
            }
            let disabled = cfg.jobs.iter().filter(|j| !j.enabled).count();
            let jobs = counted(cfg.jobs.len(), "job", "jobs");
            if disabled > 0 {
                println!(
                    "{}: ok, {jobs} ({disabled} of them disabled)",
                    path.display()
                );
            } else {
                println!("{}: ok, {jobs}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `hourglass run`: the daemon, until a stop signal.
async fn run(path: &Path, json_logs: bool) -> anyhow::Result<ExitCode> {
    let cfg = load(path)?;
    let format = if json_logs {
        LogFormat::Json
    } else {
        cfg.settings.log_format
    };
    crate::cli::logging::init(format, &cfg.settings.log_level);
    let shutdown = Shutdown::default();
    listen_for_signals(shutdown.clone())?;
    if let Err(e) = daemon::run_with(cfg, shutdown).await {
        // Said once, by the log (stderr, or the journal): not printed again.
        tracing::error!(error = %format!("{e:#}"), "hourglass failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `hourglass history`.
async fn history(path: &Path, filter: &HistoryFilter, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store(path).await?;
    let rows = store.history(filter).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

/// `hourglass show RUN_ID`.
async fn show(path: &Path, run_id: i64, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store(path).await?;
    let Some(run) = store.run(run_id).await? else {
        eprintln!("no run with id {run_id}");
        return Ok(ExitCode::FAILURE);
    };
    let lineage = store.lineage(run_id).await?;
    if json {
        let detail = crate::store::RunDetail { run, lineage };
        println!("{}", serde_json::to_string_pretty(&detail)?);
    } else {
        print_run(&run, &lineage);
    }
    Ok(ExitCode::SUCCESS)
}

/// `hourglass prune --older-than AGE`.
async fn prune(path: &Path, older_than: &str) -> anyhow::Result<ExitCode> {
    let age = config::parse_duration(older_than).map_err(anyhow::Error::msg)?;
    let before = ago(age)?;
    let store = open_store(path).await?;
    let n = store.prune(before).await?;
    println!(
        "deleted {n} runs scheduled before {}",
        crate::store::format_ts(before)
    );
    Ok(ExitCode::SUCCESS)
}

fn load(path: &Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))
}

/// The settings and every job without a mistake, with the problems of the others: reading
/// commands work while a job file has a typo.
fn load_lenient(path: &Path) -> anyhow::Result<(Config, Vec<config::Problem>)> {
    config::load_lenient(path).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))
}

/// `n` and the noun in the number it takes: "1 job", "2 jobs".
fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Prints the problems after a listing (`listed` says what the listing shows of them);
/// exit status 1 if any is an error.
fn report_problems(problems: &[config::Problem], listed: &str) -> ExitCode {
    let errors = problems.iter().filter(|p| !p.warning).count();
    if errors > 0 {
        let problems = counted(errors, "problem", "problems");
        eprintln!("\n{problems} in the configuration files ({listed}):");
    }
    for p in problems {
        eprintln!("{p}");
    }
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Opens the history database the daemon on this config writes, without creating one.
pub(super) async fn open_store(path: &Path) -> anyhow::Result<Store> {
    let (cfg, problems) = load_lenient(path)?;
    note_problems(&problems);
    open_existing(&cfg.settings.database).await
}

/// One line saying the configuration has errors (the reading commands go on regardless).
fn note_problems(problems: &[config::Problem]) {
    let errors = problems.iter().filter(|p| !p.warning).count();
    if errors > 0 {
        let problems = counted(errors, "problem", "problems");
        eprintln!("note: the configuration has {problems}; `hourglass check` lists them");
    }
}

/// Opens the history database, which (a SQLite file) the daemon must have created.
async fn open_existing(database: &Database) -> anyhow::Result<Store> {
    match database {
        Database::Sqlite(db) if !db.exists() => anyhow::bail!(
            "no history database at {} (has the daemon run yet?)",
            db.display()
        ),
        Database::Postgres(target) => {
            // The reading commands load the config without reading secrets but this one.
            if let Some(password) = &target.password {
                password
                    .read()
                    .map_err(|e| anyhow::anyhow!("database.password: {e}"))?;
            }
        }
        Database::Sqlite(_) => {}
    }
    Ok(Store::connect(database).await?)
}

/// First SIGTERM/SIGINT drains; a second one stops at once. Signals are taken on a thread of
/// their own, not on the runtime, so that nothing a run does (a busy worker thread, a stuck
/// task) can keep the second signal from acting: if the daemon has not exited
/// [`HARD_STOP_WAIT`] after it, this thread kills every run's process group and exits.
fn listen_for_signals(shutdown: Shutdown) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("cannot listen for SIGTERM and SIGINT")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for _ in signals.forever() {
                seen += 1;
                if seen == 1 {
                    tracing::info!("stop signal received (send another to stop at once)");
                    shutdown.drain.cancel();
                    continue;
                }
                shutdown.now.cancel();
                std::thread::sleep(HARD_STOP_WAIT);
                let groups = shutdown.processes.signal_all(Signal::SIGKILL);
                tracing::error!(
                    groups,
                    "the daemon did not stop after the second signal; run process groups killed, exiting now (the next start marks unfinished runs abandoned)"
                );
                std::process::exit(1);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// How long the runtime has to stop cleanly after a second stop signal before the signal
/// thread ends the process.
const HARD_STOP_WAIT: std::time::Duration = std::time::Duration::from_millis(700);

fn parse_since(s: &str) -> anyhow::Result<DateTime<Utc>> {
    crate::api::parse_time(s, false).map_err(anyhow::Error::msg)
}

/// The instant `age` before now.
fn ago(age: std::time::Duration) -> anyhow::Result<DateTime<Utc>> {
    chrono::TimeDelta::from_std(age)
        .ok()
        .and_then(|d| Utc::now().checked_sub_signed(d))
        .context("the duration reaches before the earliest date")
}

/// The pauses on record, if the history database can be read (`list` goes on without).
async fn paused_jobs(cfg: &Config) -> Vec<crate::store::Pause> {
    let Ok(store) = open_existing(&cfg.settings.database).await else {
        return Vec::new();
    };
    let pauses = store.pauses().await.unwrap_or_default();
    store.close().await;
    let now = Utc::now();
    pauses.into_iter().filter(|p| p.holds_at(now)).collect()
}
