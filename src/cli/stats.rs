//! `hourglass stats`: per job, runs, success rate, p50/p95 duration, p95 lateness, last
//! success and last failure, from the history database.

use std::path::Path;
use std::process::ExitCode;

use super::print::local;
use super::{open_store, parse_since};

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
        "{:<28} {:>7} {:>8} {:>9} {:>9} {:>9}  {:<25} LAST FAILURE",
        "JOB", "RUNS", "SUCCESS", "P50(ms)", "P95(ms)", "LATE P95", "LAST SUCCESS"
    );
    let opt = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    for s in &stats {
        let rate = s
            .success_rate
            .map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0));
        println!(
            "{:<28} {:>7} {:>8} {:>9} {:>9} {:>9}  {:<25} {}",
            s.job,
            s.runs,
            rate,
            opt(s.duration_p50_ms),
            opt(s.duration_p95_ms),
            opt(s.lateness_p95_ms),
            s.last_success.map_or_else(|| "never".to_string(), local),
            s.last_failure.map_or_else(|| "never".to_string(), local),
        );
    }
    if stats.is_empty() {
        println!("(no run ended since {})", local(since));
    }
    Ok(ExitCode::SUCCESS)
}
