//! `hourglass nodes`: the daemons sharing a PostgreSQL history database.

use std::path::Path;
use std::process::ExitCode;

use super::open_store;
use crate::store::format_ts;

/// `hourglass nodes`.
pub(super) async fn nodes(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store(path).await?;
    let Some(cluster) = store.cluster() else {
        eprintln!(
            "the history database is a SQLite file, used by one daemon; several daemons share a PostgreSQL database (`[database] url`)"
        );
        return Ok(ExitCode::SUCCESS);
    };
    let nodes = cluster.nodes().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(ExitCode::SUCCESS);
    }
    let differ = crate::store::live_digests_differ(&nodes);
    println!(
        "{:<20} {:<5} {:<24} {:<24} {:>8} {:<9} {:<16}",
        "NODE", "STATE", "HEARTBEAT", "LEASE UNTIL", "SKEW MS", "VERSION", "JOBS DIGEST"
    );
    for n in &nodes {
        let drift = if n.alive && differ { " (differs)" } else { "" };
        println!(
            "{:<20} {:<5} {:<24} {:<24} {:>8} {:<9} {}{drift}",
            n.name,
            if n.alive { "alive" } else { "dead" },
            format_ts(n.heartbeat_at),
            format_ts(n.lease_until),
            n.skew_ms,
            n.version,
            n.config_digest,
        );
    }
    for (job, digests) in cluster.job_drift().await? {
        println!(
            "job {job:?} differs between live nodes: {}",
            digests.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
