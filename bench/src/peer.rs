//! The peer: the same jobs driven by tokio-cron-scheduler, in a process of its own (so its
//! memory and CPU read apart from the bench's), spawning the same commands the same way
//! (`tokio::process`, own process group, `posix_spawn`). It prints `READY <ms>` once every job
//! is added and the scheduler started, then one `F <job> <intended ms> <spawn ms>` line per
//! firing when it ends (after `--secs`, or once `--until` firings have exited).
//!
//! tokio-cron-scheduler does not hand a job the instant it was due, so the intended time is
//! taken as the whole second at which the callback began (its jobs here fire on whole seconds
//! and its ticker looks every 500 ms). A callback more than a second late would be credited to
//! a later second, which makes the peer look better, never worse.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::process::Command;
use tokio_cron_scheduler::{Job, JobScheduler};

/// What the peer process runs.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PeerArgs {
    /// How many fast jobs.
    #[arg(long)]
    pub jobs: usize,
    /// Their six-field cron schedule (seconds first), UTC.
    #[arg(long)]
    pub schedule: String,
    /// A slow command started once at the beginning (`sh -c`), beside the jobs.
    #[arg(long)]
    pub slow: Option<String>,
    /// tokio-cron-scheduler's channel size (its default is 200).
    #[arg(long, default_value_t = 200)]
    pub channel: usize,
    /// Stop after this many seconds.
    #[arg(long)]
    pub secs: u64,
    /// Stop as soon as this many firings have exited.
    #[arg(long)]
    pub until: Option<usize>,
    /// The instant every firing was due (ms since the epoch), when the bench knows it.
    #[arg(long)]
    pub due: Option<i64>,
}

/// With `--until`: how long without a firing ends the wait (a peer that dropped firings).
const QUIET: Duration = Duration::from_secs(5);

/// One firing: job index, intended and spawn time in ms since the epoch.
type Firing = (usize, i64, i64);

/// Runs the peer (the `peer` subcommand); prints to stdout.
pub(crate) fn run(args: &PeerArgs) -> Result<()> {
    let rt = bench::runtime()?;
    rt.block_on(drive(args))
}

/// Starts the scenario's slow job (`sh -c LINE`) in a process group of its own.
fn start_slow(line: &str) -> Result<tokio::process::Child> {
    Ok(Command::new("sh")
        .args(["-c", line])
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

async fn drive(args: &PeerArgs) -> Result<()> {
    let started = Instant::now();
    let sched = JobScheduler::new_with_channel_size(args.channel)
        .await
        .context("creating the scheduler")?;
    let fired: Arc<Mutex<Vec<Firing>>> = Arc::default();
    let exited = Arc::new(tokio::sync::Semaphore::new(0));
    for i in 0..args.jobs {
        let fired = Arc::clone(&fired);
        let exited = Arc::clone(&exited);
        let due = args.due;
        let job = Job::new_async(args.schedule.as_str(), move |_id, _sched| {
            let fired = Arc::clone(&fired);
            let exited = Arc::clone(&exited);
            Box::pin(async move {
                let called = chrono::Utc::now().timestamp_millis();
                let intended = due.unwrap_or(called - called.rem_euclid(1000));
                let child = Command::new("true")
                    .process_group(0)
                    .stdin(std::process::Stdio::null())
                    .spawn();
                let spawned = chrono::Utc::now().timestamp_millis();
                if let Ok(mut child) = child {
                    if let Ok(mut f) = fired.lock() {
                        f.push((i, intended, spawned));
                    }
                    let _ = child.wait().await;
                }
                exited.add_permits(1);
            })
        })
        .with_context(|| format!("job {i}"))?;
        sched.add(job).await.context("adding a job")?;
    }
    sched.start().await.context("starting the scheduler")?;
    println!("READY {}", started.elapsed().as_millis());
    let slow = args.slow.as_deref().map(start_slow).transpose()?;
    let deadline = tokio::time::sleep(Duration::from_secs(args.secs));
    match args.until {
        Some(n) => {
            // Until n firings exited, or (it drops firings) nothing exited for QUIET.
            tokio::pin!(deadline);
            let mut seen = 0;
            while seen < n {
                tokio::select! {
                    Ok(p) = exited.acquire() => {
                        p.forget();
                        seen += 1;
                    }
                    () = tokio::time::sleep(QUIET), if seen > 0 => break,
                    () = &mut deadline => break,
                }
            }
        }
        None => deadline.await,
    }
    if let Some(pgid) = slow.as_ref().and_then(tokio::process::Child::id) {
        // The whole group: `sh -c` may have children of its own.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status()
            .await;
    }
    let fired = fired.lock().map(|f| f.clone()).unwrap_or_default();
    let mut out = String::with_capacity(fired.len() * 32);
    for (job, intended, spawned) in fired {
        out.push_str(&format!("F {job} {intended} {spawned}\n"));
    }
    print!("{out}");
    Ok(())
}
