//! The processes of runs, through `kill -9` of the daemon and through escapes from a run's
//! process group. A daemon killed at 20 instants of a 1,000-job burst and of steady state,
//! restarted each time on the same database: within 2 s of READY no process of the dead
//! daemon's runs is alive, every run id found in those processes has an `abandoned` row of
//! the same job and firing (so no id was given twice), and no `overlap = "skip"` job ever has
//! two runs at once. Processes that leave their run's group (`setsid`, a double fork) end with
//! the run, and with the daemon.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::harness::{Daemon, alive, wait_for};
use chrono::Utc;
use hourglass::store::RunStatus;
use nix::sys::signal::Signal;

const SEC: Duration = Duration::from_secs(1);
/// Jobs due together.
const JOBS: usize = 1000;
/// They are due every this many seconds.
const PERIOD_S: i64 = 4;

/// A process of a run, read from `/proc`.
#[derive(Debug, Clone)]
pub(crate) struct RunProcess {
    pid: i32,
    pub(crate) run_id: i64,
    job: String,
    scheduled_for: String,
}

/// Every live process carrying `database_id`.
pub(crate) fn run_processes(database_id: &str) -> Vec<RunProcess> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: HashMap<&[u8], &[u8]> = env
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let eq = kv.iter().position(|b| *b == b'=')?;
                Some((&kv[..eq], &kv[eq + 1..]))
            })
            .collect();
        let get = |k: &str| {
            vars.get(k.as_bytes())
                .map(|v| String::from_utf8_lossy(v).to_string())
        };
        if get("HOURGLASS_DATABASE_ID").as_deref() != Some(database_id) || !alive(pid) {
            continue;
        }
        found.push(RunProcess {
            pid,
            run_id: get("HOURGLASS_RUN_ID").unwrap().parse().unwrap(),
            job: get("HOURGLASS_JOB").unwrap(),
            scheduled_for: get("HOURGLASS_SCHEDULED_FOR").unwrap(),
        });
    }
    found
}

pub(crate) fn database_id(d: &Daemon) -> String {
    crate::harness::on_store(&d.path(&d.db), async |store| {
        store.database_id().await.unwrap()
    })
}

/// The next multiple of [`PERIOD_S`] seconds at least 300 ms away.
fn next_burst() -> chrono::DateTime<Utc> {
    let soon = Utc::now() + chrono::TimeDelta::milliseconds(300);
    let s = soon.timestamp();
    let next = (s / PERIOD_S + 1) * PERIOD_S;
    chrono::DateTime::from_timestamp(next, 0).unwrap()
}

fn sleep_until(at: chrono::DateTime<Utc>) {
    if let Ok(d) = (at - Utc::now()).to_std() {
        std::thread::sleep(d);
    }
}

fn start(d: &mut Daemon) {
    d.spawn();
    d.wait_note("READY=1", 60 * SEC);
}

/// The processes left by a killed daemon: no run id given to two firings (across rounds,
/// in `seen`), no `overlap = "skip"` job with two runs. Returns the run ids per job.
fn check_left<'a>(
    left: &'a [RunProcess],
    seen: &mut BTreeMap<i64, (String, String)>,
    round: usize,
    after_ms: i64,
) -> HashMap<&'a str, Vec<i64>> {
    let mut per_job: HashMap<&str, Vec<i64>> = HashMap::new();
    for p in left {
        let ids = per_job.entry(p.job.as_str()).or_default();
        if !ids.contains(&p.run_id) {
            ids.push(p.run_id);
        }
        let firing = (p.job.clone(), p.scheduled_for.clone());
        let before = seen.entry(p.run_id).or_insert_with(|| firing.clone());
        assert_eq!(
            *before, firing,
            "round {round}: run id {} given to two firings",
            p.run_id
        );
    }
    let twice: Vec<_> = per_job.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "round {round} ({after_ms} ms): overlap = \"skip\" jobs with two runs at once: {twice:?}"
    );
    per_job
}

/// After the restart, each left process's run has its `abandoned` row, of its own firing.
fn check_recorded(
    d: &Daemon,
    left: &[RunProcess],
    round: usize,
    after_ms: i64,
) -> HashMap<i64, hourglass::store::RunRow> {
    let rows: HashMap<i64, hourglass::store::RunRow> =
        d.runs().into_iter().map(|r| (r.id, r)).collect();
    for p in left {
        let row = rows.get(&p.run_id).unwrap_or_else(|| {
            panic!(
                "round {round} ({after_ms} ms): run {} of {} (pid {}) has no row",
                p.run_id, p.job, p.pid
            )
        });
        assert_eq!(
            (row.job.as_str(), row.status.as_str()),
            (p.job.as_str(), "abandoned"),
            "round {round}: run {}",
            p.run_id
        );
        assert_eq!(
            hourglass::store::format_ts(row.scheduled_for),
            p.scheduled_for,
            "round {round}: run {} is another firing's id",
            p.run_id
        );
    }
    rows
}

/// No two runs of a job overlap in the history.
fn check_no_overlap(d: &Daemon) {
    let mut by_job: BTreeMap<String, Vec<hourglass::store::RunRow>> = BTreeMap::new();
    for r in d.runs() {
        if r.started_at.is_some() && r.status != RunStatus::Skipped {
            by_job.entry(r.job.clone()).or_default().push(r);
        }
    }
    for (job, runs) in &by_job {
        for pair in runs.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let ended = a
                .finished_at
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
            assert!(
                b.started_at
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
                    >= ended,
                "{job}: run {} started before run {} ended",
                b.id,
                a.id
            );
        }
    }
}

#[test]
fn kill_9_at_twenty_instants_leaves_nothing_unknown_nothing_twice_no_id_reused() {
    let jobs: String = (0..JOBS)
        .map(|i| {
            format!(
                "[jobs.s{i:04}]\nschedule = \"*/{PERIOD_S} * * * * *\"\ncommand = [\"sleep\", \"30\"]\noverlap = \"skip\"\n"
            )
        })
        .collect();
    let mut d = Daemon::prepare(
        "[daemon]\ntimezone = \"UTC\"\nmax_concurrent_runs = 2000\nshutdown_grace = \"1s\"\n",
        &jobs,
    );
    start(&mut d);
    let marker = database_id(&d);
    // Milliseconds after a burst's second: 14 instants inside the burst, 6 in steady state
    // (every run spawned and recorded).
    let instants: Vec<i64> = vec![
        0, 5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 450, 650, 900, 2500, 2600, 2700, 2800, 2900,
        3000,
    ];
    // Every run id ever seen in a process → (job, firing).
    let mut seen: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for (round, after_ms) in instants.iter().enumerate() {
        let burst = next_burst();
        sleep_until(burst + chrono::TimeDelta::milliseconds(*after_ms));
        d.signal(Signal::SIGKILL);
        d.wait_exit(10 * SEC);
        let left = run_processes(&marker);
        let per_job = check_left(&left, &mut seen, round, *after_ms);
        start(&mut d);
        let ready = Instant::now();
        let still: Vec<i32> = wait_for(2 * SEC, "the dead daemon's processes to be gone", || {
            let now: Vec<i32> = run_processes(&marker)
                .into_iter()
                .filter(|p| left.iter().any(|l| l.pid == p.pid && l.run_id == p.run_id))
                .map(|p| p.pid)
                .collect();
            now.is_empty().then_some(now)
        });
        assert!(still.is_empty());
        assert!(ready.elapsed() < 2 * SEC);
        let rows = check_recorded(&d, &left, round, *after_ms);
        let unrecorded = left
            .iter()
            .filter(|p| {
                rows[&p.run_id]
                    .error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("the daemon was killed before it recorded"))
            })
            .count();
        eprintln!(
            "round {round}: killed {after_ms} ms after the burst: {} processes of {} runs left \
             ({unrecorded} of them without a row before the restart), all stopped and recorded",
            left.len(),
            per_job.len()
        );
    }
    // No two runs of a job overlap in the history either.
    check_no_overlap(&d);
    d.signal(Signal::SIGTERM);
    d.signal(Signal::SIGTERM);
    d.wait_exit(10 * SEC);
    wait_for(5 * SEC, "the last daemon's runs to be stopped", || {
        run_processes(&marker).is_empty().then_some(())
    });
}

/// An `at` two seconds from now.
fn soon() -> String {
    let t = Utc::now() + chrono::TimeDelta::seconds(2);
    chrono::DateTime::from_timestamp(t.timestamp(), 0)
        .unwrap()
        .to_rfc3339()
}

/// The pid a job wrote in `file` (beside the config), waiting for it at most 10 s.
pub(crate) fn read_pid(d: &Daemon, file: &str) -> i32 {
    wait_for(10 * SEC, file, || {
        std::fs::read_to_string(d.path(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn processes_that_leave_the_run_group_end_with_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().display();
    let at = soon();
    let jobs = format!(
        r#"
[jobs.setsid]
at = "{at}"
command = "setsid sleep 1000 & echo $! > {p}/setsid.pid"

[jobs.double]
at = "{at}"
command = "( setsid sh -c 'sleep 1000 & echo $! > {p}/double.pid; wait' & ); sleep 0.2"
"#
    );
    let mut d = Daemon::prepare("", &jobs);
    start(&mut d);
    for (job, file) in [("setsid", "setsid.pid"), ("double", "double.pid")] {
        d.wait_runs(job, 10 * SEC, "the run's end", |r| {
            r.len() == 1 && crate::harness::finished(&r[0])
        });
        let pid = wait_for(10 * SEC, file, || {
            std::fs::read_to_string(dir.path().join(file))
                .ok()?
                .trim()
                .parse::<i32>()
                .ok()
        });
        wait_for(
            10 * SEC,
            &format!("the {job} job's escaped process to end"),
            || (!alive(pid)).then_some(()),
        );
    }
    // The line is written after the kill it reports: poll for it (under load the escaped
    // process can be seen gone before the sweep's task gets to log).
    let logged = "killed processes that outlived their run";
    let deadline = Instant::now() + 10 * SEC;
    while !d.log().contains(logged) {
        assert!(
            Instant::now() < deadline,
            "no {logged:?} line; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn processes_that_left_the_run_group_end_with_the_daemon() {
    let jobs = format!(
        "[jobs.long]\nat = \"{}\"\ncommand = \"setsid sleep 1000 & echo $! > escaped.pid; sleep 1000\"\n",
        soon()
    );
    let mut d = Daemon::prepare(
        "[daemon]\ntimezone = \"UTC\"\nshutdown_grace = \"1s\"\n",
        &jobs,
    );
    start(&mut d);
    let pid = read_pid(&d, "escaped.pid");
    assert!(alive(pid));
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(10 * SEC);
    assert!(status.success(), "{status}\n{}", d.log());
    assert!(!alive(pid), "the escaped process outlived the daemon");
}

/// The capabilities the shipped unit keeps (`CapabilityBoundingSet=`), as `setpriv` takes them.
fn unit_bounding_set() -> String {
    let unit = include_str!("../../systemd/hourglass.service");
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet=");
    let mut set = "-all".to_string();
    for cap in caps.split_whitespace() {
        set.push_str(",+");
        set.push_str(&cap.trim_start_matches("CAP_").to_lowercase());
    }
    set
}

/// Under the unit's capability bounding set and no-new-privileges, a `user =` job runs as its
/// user, and what it leaves behind is stopped at its end although its environment cannot be
/// read without CAP_SYS_PTRACE.
#[test]
fn user_jobs_work_under_the_units_capabilities() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    // Beside it, a root job with a negative nice (the unit keeps CAP_SYS_NICE for it) and
    // limits: the limits wrapper works under the same bounds.
    let at = soon();
    let jobs = format!(
        "[jobs.who]\nat = \"{at}\"\nuser = \"nobody\"\n\
         command = \"id -un; setsid sleep 1000 > /dev/null 2>&1 & echo $!\"\n\
         [jobs.first]\nat = \"{at}\"\nnice = -5\nlimits = {{ open_files = 100 }}\n\
         command = \"cut -d' ' -f19 /proc/self/stat; ulimit -n\"\n"
    );
    let mut d = Daemon::prepare("", &jobs);
    d.wrap = vec![
        "setpriv".into(),
        format!("--bounding-set={}", unit_bounding_set()),
        "--no-new-privs".into(),
    ];
    start(&mut d);
    let runs = d.wait_runs("who", 20 * SEC, "the run", |r| {
        r.len() == 1 && crate::harness::finished(&r[0])
    });
    let run = &runs[0];
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}\n{}", d.log());
    let shown = d.show_json(run.id);
    let output = shown["output"].as_str().unwrap_or_default().to_string();
    let mut lines = output.lines();
    assert_eq!(lines.next(), Some("nobody"), "{run:?}\n{}", d.log());
    let pid: i32 = lines.next().unwrap().trim().parse().unwrap();
    wait_for(10 * SEC, "the user job's escaped process to end", || {
        (!alive(pid)).then_some(())
    });
    let caps = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let bounding = caps
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(
        bounding, "000001ffffffffff",
        "setpriv did not bound the daemon"
    );
    let first = d.wait_runs("first", 20 * SEC, "the niced run", |r| {
        r.len() == 1 && crate::harness::finished(&r[0])
    });
    let shown = d.show_json(first[0].id);
    assert_eq!(shown["status"], "succeeded", "{shown}");
    assert_eq!(shown["output"], "-5\n100\n", "{shown}");
}

/// How long before a `kill -9` a run's start or end may have come and still lack its record
/// (the README's bound: the transaction under way and what queued behind it).
pub const KILL_BOUND_MS: i64 = 150;

/// The runs whose `kind` line ("run started", "run finished") is in `log` and came before
/// `before`.
pub fn logged_before(log: &str, kind: &str, before: chrono::DateTime<Utc>) -> Vec<i64> {
    log.lines()
        .filter(|l| l.contains(kind))
        .filter_map(|l| {
            let at = crate::harness::ts(l.split_whitespace().next()?);
            let id = l.split("run_id=").nth(1)?.split_whitespace().next()?;
            (at < before).then(|| id.parse().ok())?
        })
        .collect()
}

/// `kill -9` 0.25 s and 1.0 s into a burst of 1,000 quick runs: after the restart, every run
/// the daemon said had started, or had finished, more than [`KILL_BOUND_MS`] before the kill
/// has that in its row (records are written as they come, not after the burst).
#[test]
fn a_kill_during_a_burst_loses_no_run_that_ended_before_its_last_moment() {
    let jobs: String = (0..JOBS)
        .map(|i| {
            format!("[jobs.q{i:04}]\nschedule = \"*/{PERIOD_S} * * * * *\"\ncommand = \"true\"\n")
        })
        .collect();
    let mut d = Daemon::prepare(
        "[daemon]\ntimezone = \"UTC\"\nmax_concurrent_runs = 2000\nshutdown_grace = \"1s\"\n",
        &jobs,
    );
    start(&mut d);
    for after_ms in [250, 1000] {
        // This life's lines only (the log goes on across restarts).
        let from = d.log().len();
        let burst = next_burst();
        sleep_until(burst + chrono::TimeDelta::milliseconds(after_ms));
        let killed = Utc::now();
        d.signal(Signal::SIGKILL);
        d.wait_exit(10 * SEC);
        let log = d.log()[from..].to_string();
        let bound = killed - chrono::TimeDelta::milliseconds(KILL_BOUND_MS);
        let (started, finished) = (
            logged_before(&log, "run started", bound),
            logged_before(&log, "run finished", bound),
        );
        start(&mut d);
        let rows: HashMap<i64, hourglass::store::RunRow> =
            d.runs().into_iter().map(|r| (r.id, r)).collect();
        for id in &started {
            assert!(
                rows.contains_key(id),
                "{after_ms} ms: run {id} started, has no row"
            );
        }
        for id in &finished {
            assert_eq!(
                rows[id].status,
                RunStatus::Succeeded,
                "{after_ms} ms: run {id} finished: {:?}",
                rows[id]
            );
        }
        // Not a kill before anything ran: runs had started (and, 1 s in, finished) by then.
        assert!(!started.is_empty(), "{after_ms} ms: no run had started");
        assert!(
            after_ms < 1000 || !finished.is_empty(),
            "1 s: none finished"
        );
        eprintln!(
            "killed {after_ms} ms into a burst of {JOBS}: {} runs had started and {} had \
             finished {KILL_BOUND_MS} ms before: each has its row",
            started.len(),
            finished.len()
        );
    }
    d.signal(Signal::SIGTERM);
    d.wait_exit(10 * SEC);
}
