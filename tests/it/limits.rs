//! Limits on a run's processes, on a real daemon with real processes: a job over its memory,
//! CPU time or file size limit is stopped and recorded `failed` saying which limit it hit; a
//! fork bomb under `processes = 5` stays within 5 processes while an every-second job beside
//! it keeps firing on time; `nice = 19` gives a CPU burner less CPU than its un-niced twin on
//! the same CPU; the nice value, the I/O class and the open-files limit are what the job sees.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::harness::{Daemon, at_in, finished, wait_for};
use hourglass::store::{RunRow, RunStatus};

const SEC: Duration = Duration::from_secs(1);

fn ended(d: &Daemon, n: usize) -> HashMap<String, RunRow> {
    wait_for(60 * SEC, &format!("{n} runs ended"), || {
        let runs = d.runs();
        (runs.len() >= n && runs.iter().all(finished)).then_some(runs)
    })
    .into_iter()
    .map(|r| (r.job.clone(), r))
    .collect()
}

fn error_of(r: &RunRow) -> &str {
    r.error.as_deref().unwrap_or_default()
}

/// Run `id`'s output (the history's pages leave it out).
fn output_of(d: &Daemon, id: i64) -> String {
    crate::harness::on_store(&d.path(&d.db), async |store| {
        store.run(id).await.unwrap().and_then(|r| r.output)
    })
    .unwrap_or_default()
}

#[test]
fn a_run_over_a_limit_is_stopped_and_says_which() {
    let at = at_in(2);
    let jobs = format!(
        r#"
[jobs.memory]
at = "{at}"
command = ["python3", "-c", "b = b'x' * (500 << 20)"]
limits = {{ memory = "100MiB" }}

[jobs.cpu]
at = "{at}"
command = "python3 -c 'while True: pass'"
limits = {{ cpu_time = "1s" }}

[jobs.file]
at = "{at}"
command = "f=$(mktemp); trap 'rm -f $f' EXIT; head -c 2M /dev/zero > $f"
limits = {{ file_size = "1MiB" }}

[jobs.shown]
at = "{at}"
command = "cut -d' ' -f19 /proc/self/stat; ionice; ulimit -n"
nice = 19
io_class = "idle"
limits = {{ open_files = 64 }}
"#
    );
    let d = Daemon::start("", &jobs);
    let runs = ended(&d, 4);
    let memory = &runs["memory"];
    assert_eq!(memory.status, RunStatus::Failed, "{memory:?}");
    assert!(
        error_of(memory).starts_with("exceeded its memory limit of 100 MiB (limits.memory)"),
        "{memory:?}"
    );
    let cpu = &runs["cpu"];
    assert_eq!(cpu.status, RunStatus::Failed, "{cpu:?}");
    assert!(
        error_of(cpu).starts_with("used its 1 s of CPU time (limits.cpu_time)"),
        "{cpu:?}"
    );
    // Stopped at its limit (the kernel's own tallies of the two differ by a few percent).
    let used = cpu.usage.map(|u| u.cpu_us()).unwrap_or_default();
    assert!((800_000..3_000_000).contains(&used), "{cpu:?}");
    let file = &runs["file"];
    assert_eq!(file.status, RunStatus::Failed, "{file:?}");
    assert!(
        error_of(file).starts_with("wrote past its file size limit of 1 MiB"),
        "{file:?}"
    );
    let shown = &runs["shown"];
    assert_eq!(shown.status, RunStatus::Succeeded, "{shown:?}");
    assert_eq!(output_of(&d, shown.id), "19\nidle\n64\n", "{shown:?}");
}

/// A system user of this test's own, removed at its end: `processes` counts every process of
/// the user, and other tests run jobs as `nobody` (with 5 of them alive, the bomb's shell could
/// not fork at all).
struct OwnUser(&'static str);

impl OwnUser {
    fn add(name: &'static str) -> Self {
        let known = std::process::Command::new("id").arg(name).output().unwrap();
        if !known.status.success() {
            let added = std::process::Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(name)
                .output()
                .unwrap();
            assert!(added.status.success(), "useradd {name}: {added:?}");
        }
        Self(name)
    }
}

impl Drop for OwnUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel").arg(self.0).output();
    }
}

#[test]
fn a_fork_bomb_under_a_process_limit_is_contained_and_the_schedule_goes_on() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to add a user and run a job as it (CI runs as root)");
        return;
    }
    let user = OwnUser::add("hg-test-bomb");
    let jobs = format!(
        r#"
[jobs.tick]
every = "1s"
command = "true"

[jobs.bomb]
at = "{}"
user = "{}"
timeout = "6s"
command = "f() {{ f | f & }}; sleep 5 & s=$!; (f) & wait $s"
limits = {{ processes = 5 }}
"#,
        at_in(2),
        user.0
    );
    // The job's own shell forks twice (its sleep, then the bomb's first subshell) before the
    // bomb fills the user's 5 and then only waits: a shell that cannot fork exits, and one that
    // went on forking (`f; sleep 5`) ended at once about half of the time.
    let d = Daemon::start("", &jobs);
    let bomb = d.wait_runs("bomb", 20 * SEC, "the bomb's start", |r| !r.is_empty());
    let id = bomb[0].id;
    // While it runs: never more than 5 of its processes (every sample).
    let database = crate::processes::database_id(&d);
    let mut most = 0;
    let until = Instant::now() + 4 * SEC;
    while Instant::now() < until {
        let of_run = crate::processes::run_processes(&database)
            .iter()
            .filter(|p| p.run_id == id)
            .count();
        most = most.max(of_run);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        (1..=5).contains(&most),
        "{most} processes of the bomb at once"
    );
    let bomb = d.wait_runs("bomb", 20 * SEC, "the bomb's end", |r| finished(&r[0]));
    let (start, end) = (bomb[0].started_at.unwrap(), bomb[0].finished_at.unwrap());
    let output = output_of(&d, id);
    assert!(output.contains("Cannot fork"), "{output}");
    // Beside it, the every-second job fired each second, on time.
    let ticks: Vec<RunRow> = d
        .runs_of("tick")
        .into_iter()
        .filter(|r| r.scheduled_for > start && r.scheduled_for < end)
        .collect();
    let seconds = (end - start).num_seconds();
    assert!(
        ticks.len() as i64 >= seconds - 1,
        "{} ticks in {seconds} s",
        ticks.len()
    );
    for t in &ticks {
        assert_eq!(t.status, RunStatus::Succeeded, "{t:?}");
        assert!(t.lateness_ms.is_some_and(|l| l < 500), "{t:?}");
    }
}

#[test]
fn a_niced_burner_gets_less_cpu_than_its_twin_on_the_same_cpu() {
    // Both on CPU 0 for 3 s of wall time: the CPU time each got is its share.
    let burn = "taskset -c 0 timeout 3 sh -c 'while :; do :; done' || true";
    let at = at_in(2);
    let jobs = format!(
        "[jobs.niced]\nat = \"{at}\"\nnice = 19\ncommand = \"{burn}\"\n\
         [jobs.plain]\nat = \"{at}\"\ncommand = \"{burn}\"\n"
    );
    let d = Daemon::start("", &jobs);
    let runs = ended(&d, 2);
    let cpu = |job: &str| runs[job].usage.map(|u| u.cpu_us()).unwrap_or_default();
    let (niced, plain) = (cpu("niced"), cpu("plain"));
    // Other tests may share CPU 0: the plain one's share is not known, their ratio is (nice 19
    // weighs 15 against nice 0's 1024).
    assert!(plain > 300_000, "plain {plain} µs");
    assert!(niced * 3 < plain, "niced {niced} µs, plain {plain} µs");
}

/// The wrapper a limited run goes through, as the daemon starts it: a ceiling above the one the
/// daemon itself has is the daemon's (no run fails for it), one below is the job's.
#[test]
fn a_limit_above_the_daemon_s_own_is_the_daemon_s() {
    let run = |files: u32| {
        let out = std::process::Command::new("prlimit")
            .args(["--nofile=256:512", "--"])
            .arg(crate::harness::BIN)
            .args(["__limits", &format!("files={files}"), "sh", "-c"])
            .arg("ulimit -n; ulimit -Hn")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run(100_000), "512\n512\n");
    assert_eq!(run(64), "64\n64\n");
}
