//! The daemon stopping: SIGTERM drains runs within the grace period, a second signal stops
//! them at once, a crash leaves runs the next start marks abandoned, and manual trigger
//! requests taken as it stops are each answered.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{Daemon, alive, at_in, wait_for};
use hourglass::store::RunStatus;

const SEC: Duration = Duration::from_secs(1);

#[test]
fn sigterm_drains_running_runs() {
    let at = at_in(1);
    let jobs = format!("[jobs.work]\nat = \"{at}\"\ncommand = \"sleep 1.5; echo done\"\n");
    let mut d = Daemon::start("", &jobs);
    d.wait_runs("work", 20 * SEC, "the run to start", |r| r.len() == 1);
    d.signal(Signal::SIGTERM);
    d.wait_note("STOPPING=1", 10 * SEC);
    let status = d.wait_exit(20 * SEC);
    assert!(status.success(), "{status}");
    let runs = d.runs_of("work");
    assert_eq!(runs[0].status, RunStatus::Succeeded, "{runs:?}");
}

#[test]
fn sigterm_after_grace_interrupts_and_a_second_signal_exits_at_once() {
    let jobs = "[jobs.long]\nevery = \"1s\"\ncommand = \"sleep 60\"\nkill_grace = \"30s\"\n\
                [jobs.stubborn]\nevery = \"1s\"\ncommand = \"trap '' TERM; sleep 60 & echo $! > PID; wait\"\nkill_grace = \"30s\"\n";
    let d = Daemon::prepare(
        "[daemon]\ntimezone = \"UTC\"\nshutdown_grace = \"1s\"\n",
        "",
    );
    let jobs = jobs.replace("PID", d.path("stubborn.pid").to_str().unwrap());
    std::fs::write(d.path("jobs.d/jobs.toml"), jobs).unwrap();
    let mut d = d;
    d.spawn_ready();
    d.wait_runs("stubborn", 20 * SEC, "the run to start", |r| r.len() == 1);
    let pid = crate::processes::read_pid(&d, "stubborn.pid");
    d.signal(Signal::SIGTERM);
    // After the 1 s grace, `long` gets SIGTERM and ends; `stubborn` ignores it (30 s grace).
    d.wait_runs("long", 20 * SEC, "long interrupted", |r| {
        r.iter().any(|r| r.status == RunStatus::Interrupted)
    });
    // The second signal: gone within 1 s, although `stubborn` ignores SIGTERM.
    d.signal(Signal::SIGTERM);
    d.wait_exit(SEC);
    wait_for(5 * SEC, "the stubborn child to be killed", || {
        (!alive(pid)).then_some(())
    });
    // Runs the stop killed were stopped by it, whichever signal took them: none `failed`.
    for job in ["long", "stubborn"] {
        let rows = d.runs_of(job);
        let ran: Vec<&hourglass::store::RunRow> = rows
            .iter()
            .filter(|r| r.status != RunStatus::Skipped)
            .collect();
        assert!(
            !ran.is_empty() && ran.iter().all(|r| r.status == RunStatus::Interrupted),
            "{job}: {rows:#?}"
        );
    }
}

#[test]
fn a_crash_leaves_runs_that_the_next_start_marks_abandoned() {
    let at = at_in(1);
    let jobs = format!("[jobs.work]\nat = \"{at}\"\ncommand = \"echo $$ > pid; exec sleep 60\"\n");
    let mut d = Daemon::start("", &jobs);
    let runs = d.wait_runs("work", 20 * SEC, "the run to start", |r| r.len() == 1);
    assert_eq!(runs[0].status, RunStatus::Running);
    let pid = crate::processes::read_pid(&d, "pid");
    d.signal(Signal::SIGKILL);
    d.wait_exit(10 * SEC);
    // Like cron, a crashed daemon's runs go on (under systemd, the cgroup stops them) ...
    assert!(alive(pid));
    d.spawn_ready();
    // ... until the next start finds them by pid and run id and stops them.
    wait_for(5 * SEC, "the orphan to die", || (!alive(pid)).then_some(()));
    let runs = d.runs_of("work");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Abandoned);
    assert!(runs[0].finished_at.is_some());
}

/// Manual trigger requests written to the database while no daemon runs (as `trigger` does),
/// and a stop as the starting daemon takes them: every request it took has an answer
/// (started, queued, or "daemon stopping: not run"), none is left taken and unanswered.
#[test]
fn a_stop_while_trigger_requests_come_leaves_none_unanswered() {
    let mut d = Daemon::prepare(
        "",
        "[jobs.t]\nevery = \"1h\"\ncommand = \"true\"\noverlap = \"allow\"\n",
    );
    let db = d.path("history.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(hourglass::store::Store::open(&db)).unwrap();
    let requests: Vec<i64> = (0..300)
        .map(|_| rt.block_on(store.request_trigger("t", false)).unwrap())
        .collect();
    d.spawn();
    wait_for(10 * SEC, "the daemon to take a request", || {
        let state = rt.block_on(store.trigger_state(requests[0])).unwrap();
        state.claimed.then_some(())
    });
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(30 * SEC).success(), "{}", d.log());
    let states: Vec<_> = requests
        .iter()
        .map(|r| rt.block_on(store.trigger_state(*r)).unwrap())
        .collect();
    let unanswered = states
        .iter()
        .filter(|s| s.claimed && s.outcome.is_none())
        .count();
    assert_eq!(unanswered, 0, "{states:#?}");
    let taken = states.iter().filter(|s| s.claimed).count();
    let stopped = d.log().matches("manual trigger not run").count();
    eprintln!(
        "{taken} of 300 requests taken before the stop, each answered ({stopped} 'not run: the daemon is stopping')"
    );
    rt.block_on(store.close());
}
