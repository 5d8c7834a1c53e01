//! `hourglass next "<cron>"`: the next fire times of an expression, as the daemon computes
//! them (the same parser and DST rule), in a zone.

use std::process::ExitCode;

use chrono::Utc;
use chrono_tz::Tz;

use crate::config;
use crate::schedule::{CronCache, Schedule};

/// When `name` is a job of the files at `path`: prints its next `count` firings in its zone
/// and what it runs after (a job with no schedule: only that), and returns the exit status.
pub(super) fn of_job(path: &std::path::Path, name: &str, count: u32) -> Option<ExitCode> {
    if name.contains(char::is_whitespace) || name.starts_with('@') {
        return None;
    }
    let (cfg, _) = config::load_lenient(path).ok()?;
    let job = cfg.jobs.iter().find(|j| j.name == name)?;
    println!("            Job: {name}");
    if job.schedule == Schedule::Unscheduled {
        println!(
            "    Next elapse: {}",
            job.after.as_ref().map_or_else(
                || "only by hand (`hourglass trigger`)".to_string(),
                crate::job::after::After::in_words,
            )
        );
        return Some(ExitCode::SUCCESS);
    }
    if let Some(after) = &job.after {
        println!("      Runs also: {}", after.in_words());
    }
    println!("      Time zone: {}", job.tz.name());
    let mut t = Utc::now();
    for i in 1..=count {
        let Some(at) = job.next_fire_after(t) else {
            println!("   (no further fire time)");
            break;
        };
        print_elapse(i, at, job.tz);
        t = at;
    }
    Some(ExitCode::SUCCESS)
}

fn print_elapse(i: u32, at: chrono::DateTime<Utc>, zone: Tz) {
    let local = at.with_timezone(&zone);
    let label = if i == 1 { "Next elapse" } else { "" };
    println!(
        "{label:>15}: {}  ({} UTC)",
        local.format("%a %Y-%m-%d %H:%M:%S %Z"),
        at.format("%Y-%m-%d %H:%M:%S")
    );
}

/// Prints the next `count` fire times of `expr` in `tz` (default: the daemon's default zone).
pub(super) fn next(expr: &str, tz: Option<&str>, count: u32) -> ExitCode {
    let zone: Tz = match tz {
        Some(name) => match name.parse() {
            Ok(z) => z,
            Err(_) => {
                eprintln!(
                    "--tz: {name:?} is not an IANA time zone (e.g. \"Europe/Berlin\", \"UTC\")"
                );
                return ExitCode::FAILURE;
            }
        },
        None => config::default_zone(),
    };
    let cron = match CronCache::default().parse(expr) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{expr:?}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let schedule = Schedule::Cron {
        expr: expr.to_string(),
        cron,
        tz: zone,
    };
    println!("  Original form: {expr}");
    println!("      Time zone: {}", zone.name());
    let mut t = Utc::now();
    for i in 1..=count {
        let Some(at) = schedule.next_after(t) else {
            println!("   (no further fire time)");
            break;
        };
        print_elapse(i, at, zone);
        t = at;
    }
    ExitCode::SUCCESS
}
