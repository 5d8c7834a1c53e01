//! `hourglass next "<cron>"`: the next fire times of an expression, as the daemon computes
//! them (the same parser and DST rule), in a zone.

use std::process::ExitCode;

use chrono::Utc;
use chrono_tz::Tz;

use crate::config;
use crate::schedule::{CronCache, Schedule};

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
        let local = at.with_timezone(&zone);
        let label = if i == 1 { "Next elapse" } else { "" };
        println!(
            "{label:>15}: {}  ({} UTC)",
            local.format("%a %Y-%m-%d %H:%M:%S %Z"),
            at.format("%Y-%m-%d %H:%M:%S")
        );
        t = at;
    }
    ExitCode::SUCCESS
}
