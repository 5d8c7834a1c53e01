//! How the CLI prints jobs (`list`) and runs (`history`'s table, `show`).

use chrono::{DateTime, Utc};

use crate::api::JobSummary;
use crate::config::Config;
use crate::store::{Lineage, Pause, RunRow, cpu_in_words, format_ts};

/// One line of `list`: a job as the files on disk define it, or as the daemon runs it.
#[derive(Debug)]
pub(super) struct Listed {
    name: String,
    kind: String,
    schedule: String,
    enabled: bool,
    /// The next firing, in the job's zone.
    next: Option<String>,
    pause: Option<Pause>,
}

/// How `list` writes a next firing.
const NEXT_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f %Z";

impl Listed {
    /// The jobs of `cfg` with the `pauses` on record.
    pub(super) fn of_config(cfg: &Config, pauses: &[Pause]) -> Vec<Self> {
        let now = Utc::now();
        cfg.jobs
            .iter()
            .map(|job| Self {
                name: job.name.clone(),
                kind: job.kind.label().to_string(),
                schedule: job.schedule.describe(),
                enabled: job.enabled,
                next: job
                    .enabled
                    .then(|| job.next_fire_after(now))
                    .flatten()
                    .map(|t| t.with_timezone(&job.tz).format(NEXT_FORMAT).to_string())
                    .or_else(|| {
                        let after = job.after.as_ref().filter(|_| job.enabled)?;
                        Some(after.in_words())
                    }),
                pause: pauses.iter().find(|p| p.job == job.name).cloned(),
            })
            .collect()
    }

    /// The jobs a daemon runs, as its API lists them.
    pub(super) fn of_daemon(jobs: Vec<JobSummary>) -> Vec<Self> {
        let now = Utc::now();
        jobs.into_iter()
            .map(|j| {
                let zone: Option<chrono_tz::Tz> = j.timezone.parse().ok();
                let next = j.next.into_iter().next().map(|t| {
                    match (DateTime::parse_from_rfc3339(&t), zone) {
                        (Ok(at), Some(zone)) => {
                            at.with_timezone(&zone).format(NEXT_FORMAT).to_string()
                        }
                        _ => t,
                    }
                });
                let next = next.or_else(|| j.after.filter(|_| j.enabled));
                Self {
                    name: j.name,
                    kind: j.kind,
                    schedule: j.schedule,
                    enabled: j.enabled,
                    next,
                    pause: j.paused.filter(|p| p.holds_at(now)),
                }
            })
            .collect()
    }
}

/// `list`'s table.
pub(super) fn list(jobs: &[Listed]) {
    println!("{:<28} {:<8} {:<44} NEXT", "JOB", "KIND", "SCHEDULE");
    for job in jobs {
        let when = if let Some(p) = &job.pause {
            let until = p
                .until
                .map_or_else(String::new, |u| format!(" until {}", local(u)));
            format!("paused since {}{until} (by {})", local(p.since), p.actor)
        } else if let Some(next) = &job.next {
            next.clone()
        } else if job.enabled {
            "never (one-shot time passed)".to_string()
        } else {
            "disabled (runs only by `hourglass trigger`)".to_string()
        };
        println!(
            "{:<28} {:<8} {:<44} {when}",
            job.name, job.kind, job.schedule
        );
    }
}

pub(super) fn print_table(rows: &[RunRow]) {
    print_header();
    for r in rows {
        print_row(r);
    }
}

/// The header of `history`'s table.
pub(super) fn print_header() {
    println!(
        "{:>6}  {:<24} {:<24} {:<11} {:<10} {:>4} {:>9} {:>10} {:>9} {:>9}  ERROR",
        "ID",
        "JOB",
        "SCHEDULED (UTC)",
        "STATUS",
        "TRIGGER",
        "TRY",
        "LATE(ms)",
        "TOOK(ms)",
        "CPU",
        "PEAK MEM"
    );
}

/// One line of `history`'s table.
pub(super) fn print_row(r: &RunRow) {
    {
        let opt = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        let err = r.error.as_deref().map(shortened).unwrap_or_default();
        let cpu = r
            .usage
            .map_or_else(|| "-".to_string(), |u| cpu_in_words(u.cpu_us()));
        let peak = r
            .usage
            .and_then(|u| u.peak_words())
            .unwrap_or_else(|| "-".to_string());
        println!(
            "{:>6}  {:<24} {:<24} {:<11} {:<10} {:>4} {:>9} {:>10} {cpu:>9} {peak:>9}  {err}",
            r.id,
            r.job,
            format_ts(r.scheduled_for),
            r.status,
            r.trigger,
            r.attempt,
            opt(r.lateness_ms),
            opt(r.duration_ms),
        );
    }
}

/// How much of an error `history`'s table shows.
const ERROR_SHOWN: usize = 60;

/// The error's first line, cut at a word within [`ERROR_SHOWN`] characters, with "…" (and a
/// pointer to `show`) when anything was left out.
fn shortened(error: &str) -> String {
    let mut lines = error.lines();
    let first = lines.next().unwrap_or("");
    let cut = first.chars().count() > ERROR_SHOWN || lines.next().is_some();
    if !cut {
        return first.to_string();
    }
    let head: String = first.chars().take(ERROR_SHOWN).collect();
    let head = if first.chars().count() > ERROR_SHOWN {
        // Back to the last space, unless that leaves too little.
        match head.rfind(' ') {
            Some(i) if i > ERROR_SHOWN / 2 => head[..i].to_string(),
            _ => head,
        }
    } else {
        head
    };
    format!("{}… (`show` for all)", head.trim_end())
}

pub(super) fn print_run(r: &RunRow, lineage: &Lineage) {
    let opt = |v: &Option<DateTime<Utc>>| v.map_or_else(|| "-".into(), format_ts);
    println!("run {} of job {:?}", r.id, r.job);
    println!("  status:        {}", r.status);
    println!("  trigger:       {} (attempt {})", r.trigger, r.attempt);
    println!("  scheduled for: {}", format_ts(r.scheduled_for));
    println!("  started at:    {}", opt(&r.started_at));
    println!("  finished at:   {}", opt(&r.finished_at));
    if let Some(l) = r.lateness_ms {
        println!("  lateness:      {l} ms");
    }
    if let Some(d) = r.duration_ms {
        println!("  duration:      {d} ms");
    }
    if let Some(c) = r.exit_code {
        println!("  exit code:     {c}");
    }
    if let Some(u) = &r.usage {
        println!("  cpu:           {}", u.cpu_in_words());
        println!("  peak memory:   {}", u.peak_in_words());
        println!(
            "  disk:          {} blocks read, {} written (512 bytes each)",
            u.blocks_read, u.blocks_written
        );
        println!(
            "  switches:      {} voluntary, {} involuntary",
            u.voluntary_switches, u.involuntary_switches
        );
    }
    println!("  node:          {}", r.node);
    if !lineage.parents.is_empty() {
        let parents: Vec<String> = lineage
            .parents
            .iter()
            .map(|p| format!("{} run {} ({})", p.job, p.run_id, p.status))
            .collect();
        println!("  after:         {}", parents.join(", "));
    }
    if !lineage.children.is_empty() {
        let children: Vec<String> = lineage
            .children
            .iter()
            .map(|c| {
                let status = c.status.map_or("not started", |s| s.as_str());
                format!("{} run {} ({status})", c.job, c.run_id)
            })
            .collect();
        println!("  fired:         {}", children.join(", "));
    }
    if let Some(e) = &r.error {
        println!("  error:         {e}");
    }
    match &r.output {
        Some(o) => println!("--- output ---\n{}", o.trim_end()),
        None => println!("--- no output ---"),
    }
}

/// A time in the system's zone, to the second.
pub(super) fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&crate::config::default_zone())
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long error is cut at a word and says so; a short one is whole; a second line is
    /// left out with the marker.
    #[test]
    fn errors_are_cut_at_a_word_with_a_marker() {
        let long = "exit code 1: pg_dump: error: connection to server at localhost failed: Connection refused";
        let s = shortened(long);
        assert_eq!(
            s,
            "exit code 1: pg_dump: error: connection to server at… (`show` for all)"
        );
        assert_eq!(shortened("timed out after 30s"), "timed out after 30s");
        assert_eq!(shortened("first\nsecond"), "first… (`show` for all)");
    }
}
