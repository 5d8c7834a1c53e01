//! How the CLI prints jobs (`list`) and runs (`history`'s table, `show`).

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::store::{Pause, RunRow};

pub(super) fn list(cfg: &Config, pauses: &[Pause]) {
    let now = Utc::now();
    println!("{:<28} {:<8} {:<44} NEXT", "JOB", "KIND", "SCHEDULE");
    for job in &cfg.jobs {
        if let Some(p) = pauses.iter().find(|p| p.job == job.name) {
            let until = p
                .until
                .map_or_else(String::new, |u| format!(" until {}", local(u)));
            println!(
                "{:<28} {:<8} {:<44} paused since {}{until} (by {})",
                job.name,
                job.kind.label(),
                job.schedule.describe(),
                local(p.since),
                p.actor
            );
            continue;
        }
        let next = if job.enabled {
            job.next_fire_after(now)
        } else {
            None
        };
        let never = if job.enabled {
            "never (one-shot time passed)"
        } else {
            "disabled (runs only by `hourglass trigger`)"
        };
        let next = next.map_or_else(
            || never.to_string(),
            |t| {
                t.with_timezone(&job.tz)
                    .format("%Y-%m-%d %H:%M:%S%.3f %Z")
                    .to_string()
            },
        );
        println!(
            "{:<28} {:<8} {:<44} {next}",
            job.name,
            job.kind.label(),
            job.schedule.describe()
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
        "{:>6}  {:<24} {:<24} {:<11} {:<9} {:>4} {:>9} {:>10}  ERROR",
        "ID", "JOB", "SCHEDULED (UTC)", "STATUS", "TRIGGER", "TRY", "LATE(ms)", "TOOK(ms)"
    );
}

/// One line of `history`'s table.
pub(super) fn print_row(r: &RunRow) {
    {
        let opt = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        let err = r
            .error
            .as_deref()
            .map(|e| {
                e.lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(60)
                    .collect::<String>()
            })
            .unwrap_or_default();
        println!(
            "{:>6}  {:<24} {:<24} {:<11} {:<9} {:>4} {:>9} {:>10}  {err}",
            r.id,
            r.job,
            r.scheduled_for,
            r.status,
            r.trigger,
            r.attempt,
            opt(r.lateness_ms),
            opt(r.duration_ms),
        );
    }
}

pub(super) fn print_run(r: &RunRow) {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!("run {} of job {:?}", r.id, r.job);
    println!("  status:        {}", r.status);
    println!("  trigger:       {} (attempt {})", r.trigger, r.attempt);
    println!("  scheduled for: {}", r.scheduled_for);
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
    println!("  node:          {}", r.node);
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
