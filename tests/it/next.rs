//! `hourglass next`: fire times of an expression previewed with the daemon's DST rule, at a
//! faked time (libfaketime), and agreeing with the scheduler across a spring-forward.

use std::process::Command;

use crate::harness::BIN;

/// `hourglass next` shows fire times with the daemon's DST rule: a spring-forward gap fires at
/// the first instant after it, a repeated hour once (its first pass). The clock is set with
/// libfaketime (Debian package `faketime`).
/// `hourglass next` for 02:30 daily in Berlin, two fire times.
const BERLIN_0230: [&str; 6] = [
    "next",
    "30 2 * * *",
    "--tz",
    "Europe/Berlin",
    "--count",
    "2",
];

#[test]
fn next_previews_fire_times_across_dst() {
    let (code, out, _) = next_at("2027-03-27 12:00:00", &BERLIN_0230);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("Sun 2027-03-28 03:00:00 CEST  (2027-03-28 01:00:00 UTC)"),
        "{out}"
    );
    assert!(
        out.contains("Mon 2027-03-29 02:30:00 CEST  (2027-03-29 00:30:00 UTC)"),
        "{out}"
    );
    let (_, out, _) = next_at("2027-10-30 12:00:00", &BERLIN_0230);
    assert!(
        out.contains("Sun 2027-10-31 02:30:00 CEST  (2027-10-31 00:30:00 UTC)"),
        "{out}"
    );
    assert!(
        out.contains("Mon 2027-11-01 02:30:00 CET  (2027-11-01 01:30:00 UTC)"),
        "{out}"
    );
    assert_eq!(
        out.matches("2027-10-31").count(),
        2,
        "the repeated hour fires once: {out}"
    );
    let (code, _, err) = next_at("2027-01-01 00:00:00", &["next", "61 * * * *"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("minute 61 is out of range 0-59"), "{err}");
    let (code, _, err) = next_at(
        "2027-01-01 00:00:00",
        &["next", "@daily", "--tz", "Mars/Olympus"],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("\"Mars/Olympus\" is not an IANA time zone"),
        "{err}"
    );
}

/// `hourglass next` at the faked time `at` (libfaketime, `TZ=UTC`): exit code, stdout, stderr.
fn next_at(at: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new("faketime")
        .env("TZ", "UTC")
        .arg(at)
        .arg(BIN)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `next` agrees with the scheduler on a DST transition its own test fires across.
#[test]
fn next_agrees_with_the_scheduler_across_new_yorks_spring_forward() {
    // The times the scheduler fires in its DST test (`timers_fire_exactly_on_time_across_dst_
    // in_virtual_time`: New York's spring-forward, 02:30 does not exist on 2026-03-08).
    let (_, out, _) = next_at(
        "2026-03-07 00:00:00",
        &[
            "next",
            "30 2 * * *",
            "--tz",
            "America/New_York",
            "--count",
            "3",
        ],
    );
    for utc in [
        "2026-03-07 07:30:00 UTC",
        "2026-03-08 07:00:00 UTC",
        "2026-03-09 06:30:00 UTC",
    ] {
        assert!(out.contains(&format!("({utc})")), "{utc}: {out}");
    }
}
