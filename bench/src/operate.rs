//! The rows of running hourglass as a service: memory before a burst of command runs, right
//! after, and a minute later; and the API under load (`GET /v1/jobs` on 10,000 jobs at a fixed
//! rate) beside every-second jobs, whose lateness is compared with the same span without load.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::{Bench, Daemon, at_in, burst_jobs, fires_of, percentile, proc, show, wait_until};

/// RSS before a burst of `n` command runs, right after the last ended, and `settle` later.
pub(crate) fn memory_after_burst(b: &mut Bench, n: usize, settle: Duration) -> Result<()> {
    let at = at_in(if n > 2000 { 10 } else { 4 });
    let d = Daemon::start(&b.bin, "", &burst_jobs(n, at))?;
    let before = proc::rss_mib(d.pid());
    let before_text = proc::memory(d.pid());
    wait_until(Duration::from_secs(300), || {
        let runs = d.runs()?;
        Ok(runs.len() >= n
            && runs
                .iter()
                .all(|r| r.status != hourglass::store::RunStatus::Running))
    })?;
    let after_text = proc::memory(d.pid());
    std::thread::sleep(settle);
    let later = proc::rss_mib(d.pid());
    let later_text = proc::memory(d.pid());
    d.stop()?;
    let label = format!("memory: a burst of {n} command runs");
    b.row(&label, "RSS before (READY)", before_text);
    b.row(&label, "RSS right after the last run ended", after_text);
    b.row(
        &label,
        &format!("RSS {} s later", settle.as_secs()),
        format!(
            "{later_text} ({:+.0} % of before)",
            (later / before - 1.0) * 100.0
        ),
    );
    Ok(())
}

/// Every-second jobs' lateness over `secs` without API load, then over `secs` with `rate`
/// requests/s of `GET /v1/jobs` on `total` jobs; the requests' latency (from the instant each
/// was due, so a slow server is not hidden by fewer requests).
pub(crate) fn api_under_load(
    b: &mut Bench,
    total: usize,
    fast: usize,
    secs: u64,
    rate: u32,
) -> Result<()> {
    let mut jobs = String::with_capacity(total * 64);
    for i in 0..fast {
        jobs.push_str(&format!(
            "[jobs.f{i}]\nevery = \"1s\"\ncommand = [\"true\"]\n"
        ));
    }
    for i in fast..total {
        let (m, h) = (i % 60, (i / 60) % 24);
        jobs.push_str(&format!(
            "[jobs.s{i}]\nschedule = \"{m} {h} 1 1 *\"\ncommand = [\"true\"]\n"
        ));
    }
    let d = Daemon::start(&b.bin, "", &jobs)?;
    let socket = d.dir.join("hourglass.sock");
    let quiet_from = chrono::Utc::now();
    std::thread::sleep(Duration::from_secs(secs));
    let load_from = chrono::Utc::now();
    let load = load(&socket, rate, Duration::from_secs(secs))?;
    let load_to = chrono::Utc::now();
    std::thread::sleep(Duration::from_secs(2));
    let runs = d.runs()?;
    d.stop()?;
    let fires = fires_of(&runs, "f");
    let within = |from, to| crate::summarize_between(&fires, fast, from, to);
    let quiet = within(quiet_from, load_from);
    let loaded = within(load_from, load_to);
    let label = format!(
        "api: GET /v1/jobs ({total} jobs) at {rate}/s on the unix socket, {fast} every-second jobs running"
    );
    b.row(
        &label,
        &format!("jobs' lateness without load ({secs} s)"),
        show(&quiet),
    );
    b.row(
        &label,
        &format!("jobs' lateness under load ({secs} s)"),
        show(&loaded),
    );
    b.row(
        &label,
        "requests answered / sent (errors)",
        format!("{} / {} ({})", load.latencies.len(), load.sent, load.errors),
    );
    b.row(
        &label,
        "request latency p50 / p99 / max (from when due)",
        format!(
            "{} / {} / {} ms",
            percentile(&load.latencies, 0.5),
            percentile(&load.latencies, 0.99),
            load.latencies.last().copied().unwrap_or(-1)
        ),
    );
    b.row(
        &label,
        "response size",
        format!("{} KiB", load.bytes / 1024),
    );
    Ok(())
}

/// What an open-loop load run saw.
struct Load {
    sent: usize,
    errors: usize,
    /// Milliseconds from when each answered request was due to its last byte, sorted.
    latencies: Vec<i64>,
    bytes: usize,
}

/// Requests `GET /v1/jobs` every `1/rate` s for `span` (at most 256 in flight: beyond, the
/// due ones wait and their wait counts in their latency).
fn load(socket: &std::path::Path, rate: u32, span: Duration) -> Result<Load> {
    hourglass::http_client::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .unix_socket(socket)
        .pool_max_idle_per_host(256)
        .build()?;
    rt.block_on(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(256));
        let every = Duration::from_secs(1) / rate.max(1);
        let start = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut sent = 0;
        while start.elapsed() < span {
            let due = start + every * u32::try_from(sent).unwrap_or(u32::MAX);
            tokio::time::sleep_until(due).await;
            let permit = Arc::clone(&slots).acquire_owned().await?;
            let client = client.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let got = client.get("http://hourglass/v1/jobs").send().await;
                let body = match got {
                    Ok(r) if r.status().is_success() => r.bytes().await.ok(),
                    _ => None,
                };
                (due.elapsed(), body.map(|b| b.len()))
            });
            sent += 1;
        }
        let mut out = Load {
            sent,
            errors: 0,
            latencies: Vec::with_capacity(sent),
            bytes: 0,
        };
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((took, Some(len))) => {
                    out.latencies
                        .push(i64::try_from(took.as_millis()).unwrap_or(i64::MAX));
                    out.bytes = len;
                }
                _ => out.errors += 1,
            }
        }
        out.latencies.sort_unstable();
        Ok(out)
    })
}
