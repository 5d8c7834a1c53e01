//! What the bench reads of a process from `/proc` (memory, CPU time) and the signals it sends.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Sends `kill -<sig> <pid>`.
pub(crate) fn signal(pid: u32, sig: &str) -> Result<()> {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    if !st.success() {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// A `kB` field of `/proc/<pid>/status` (0 when unreadable).
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident memory in MiB.
pub(crate) fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:") as f64 / 1024.0
}

/// Anonymous resident memory (heap, stacks: what is not the executable's own pages) in MiB.
pub(crate) fn anon_mib(pid: u32) -> f64 {
    status_kib(pid, "RssAnon:") as f64 / 1024.0
}

/// Resident memory and its anonymous part, as shown in the table.
pub(crate) fn memory(pid: u32) -> String {
    format!(
        "{:.1} MiB ({:.1} MiB anonymous)",
        rss_mib(pid),
        anon_mib(pid)
    )
}

/// CPU time (user + system) in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
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

/// The process's CPU time so far (user + system), milliseconds (100 ticks/s).
pub(crate) fn cpu_ms(pid: u32) -> u64 {
    cpu_ticks(pid) * 10
}

/// The process's CPU use over the next `span`, in percent of one core (100 ticks/s).
pub(crate) fn cpu_percent_over(pid: u32, span: Duration) -> f64 {
    let (ticks, t0) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(span);
    cpu_ticks(pid).saturating_sub(ticks) as f64 / t0.elapsed().as_secs_f64()
}
