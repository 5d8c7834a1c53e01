//! `hourglass stats`: per job, runs, success rate, p50/p95 duration, p95 lateness, p50/p95
//! CPU time and peak memory, last success and last failure, from the history database.

use std::path::Path;
use std::process::ExitCode;

use super::print::local;
use super::{open_store, parse_since};
use crate::store::{bytes_in_words, cpu_in_words};

/// `hourglass stats [--job J] [--since 7d] [--json]`.
pub(super) async fn stats(
    path: &Path,
    job: Option<&str>,
    since: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let since = parse_since(since)?;
    let store = open_store(path).await?;
    let stats = store.stats(since, job).await?;
    store.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<28} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {:<25} LAST FAILURE",
        "JOB",
        "RUNS",
        "SUCCESS",
        "P50(ms)",
        "P95(ms)",
        "LATE P95",
        "CPU P50",
        "CPU P95",
        "MEM P50",
        "MEM P95",
        "LAST SUCCESS"
    );
    let opt = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let cpu = |v: Option<i64>| v.map_or_else(|| "-".to_string(), cpu_in_words);
    let mem =
        |v: Option<i64>| v.map_or_else(|| "-".to_string(), |b| bytes_in_words(b.unsigned_abs()));
    for s in &stats {
        let rate = s
            .success_rate
            .map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0));
        println!(
            "{:<28} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {:<25} {}",
            s.job,
            s.runs,
            rate,
            opt(s.duration_p50_ms),
            opt(s.duration_p95_ms),
            opt(s.lateness_p95_ms),
            cpu(s.cpu_p50_us),
            cpu(s.cpu_p95_us),
            mem(s.peak_rss_p50_bytes),
            mem(s.peak_rss_p95_bytes),
            s.last_success.map_or_else(|| "never".to_string(), local),
            s.last_failure.map_or_else(|| "never".to_string(), local),
        );
    }
    if stats.is_empty() {
        println!("(no run ended since {})", local(since));
    }
    Ok(ExitCode::SUCCESS)
}
