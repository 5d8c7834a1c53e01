//! The history under real faults of its database: a full disk (tmpfs), immutable files, a
//! write lock held by another program, the database's folder gone; and a daemon stopped
//! during a fault. Five every-second jobs append their run id to their own log: after the
//! fault clears, every logged run has its row. Needs root (mount, chattr), as CI runs.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Daemon, wait_for};
use hourglass::store::{RunRow, RunStatus};
use nix::sys::signal::Signal;

const SEC: Duration = Duration::from_secs(1);
/// How long each fault lasts.
const FAULT: Duration = Duration::from_secs(15);

/// Five every-second jobs, each appending `$HOURGLASS_RUN_ID` to `logs/jN`.
fn loggers(dir: &Path) -> String {
    (1..=5)
        .map(|i| {
            format!(
                "[jobs.j{i}]\nevery = \"1s\"\ncommand = \"echo $HOURGLASS_RUN_ID >> {}/logs/j{i}\"\n",
                dir.display()
            )
        })
        .collect()
}

/// Starts the daemon on the five loggers with its database at `db` (relative).
fn start_loggers(db: &str) -> Daemon {
    let mut d = Daemon::prepare_with_db(db, "", "");
    if let Some(dir) = d.path(db).parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::create_dir(d.path("logs")).unwrap();
    d.write_jobs("jobs.toml", &loggers(d.dir.path()));
    d.spawn_ready();
    d
}

/// Every run id the jobs logged, with its job.
fn logged(d: &Daemon) -> HashMap<i64, String> {
    let mut ids = HashMap::new();
    for i in 1..=5 {
        let text = std::fs::read_to_string(d.path(&format!("logs/j{i}"))).unwrap_or_default();
        for line in text.lines() {
            ids.insert(line.trim().parse().unwrap(), format!("j{i}"));
        }
    }
    ids
}

/// Waits until every run logged so far has a finished, succeeded row of its job; returns
/// how many runs that was.
fn every_logged_run_has_its_row(d: &Daemon, timeout: Duration) -> usize {
    let ids = logged(d);
    let deadline = Instant::now() + timeout;
    loop {
        let rows: HashMap<i64, RunRow> = d.runs().into_iter().map(|r| (r.id, r)).collect();
        let missing: Vec<_> = ids
            .iter()
            .filter(|(id, job)| {
                rows.get(id)
                    .is_none_or(|r| r.job != **job || r.status != RunStatus::Succeeded)
            })
            .collect();
        if missing.is_empty() {
            return ids.len();
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} logged runs have no finished row: {:?}\nlog:\n{}",
            missing.len(),
            ids.len(),
            missing.iter().take(10).collect::<Vec<_>>(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for the daemon to report the fault (log and STATUS=).
fn fault_is_reported(d: &mut Daemon) {
    wait_for(30 * SEC, "the write failure in the log", || {
        d.log().contains("cannot write run history").then_some(())
    });
    d.wait_note_containing("history database failing", 10 * SEC);
}

/// After the fault cleared: one ERROR for the streak, one recovery line, every run has its
/// row, and another program can take the write lock within a second.
fn recovered_completely(d: &Daemon, db: &Path) -> usize {
    let runs = every_logged_run_has_its_row(d, 60 * SEC);
    let log = d.log();
    assert_eq!(
        log.matches("cannot write run history").count(),
        1,
        "one ERROR per failure streak:\n{log}"
    );
    wait_for(30 * SEC, "the recovery line", || {
        d.log().contains("run history written again").then_some(())
    });
    take_write_lock(db);
    runs
}

/// Takes and releases the database's write lock from another process, waiting at most 1 s.
fn take_write_lock(db: &Path) {
    let out = Command::new("sqlite3")
        .arg("-cmd")
        .arg(".timeout 1000")
        .arg(db)
        .arg("BEGIN IMMEDIATE; ROLLBACK;")
        .output()
        .expect("sqlite3 is installed by scripts/test.sh");
    assert!(
        out.status.success(),
        "another process cannot take the write lock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tmpfs mounted on a folder, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs needs root");
        Self(at)
    }

    /// Fills it to the last byte.
    fn fill(&self) {
        let _ = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", self.0.join("fill").display()))
            .args(["bs=64k"])
            .stderr(Stdio::null())
            .status();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("fill")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn chattr(flag: &str, files: &[PathBuf]) {
    let ok = Command::new("chattr")
        .arg(flag)
        .args(files)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chattr {flag} needs root and ext4");
}

fn db_files(d: &Daemon) -> Vec<PathBuf> {
    ["history.db", "history.db-wal", "history.db-shm"]
        .iter()
        .map(|f| d.path(f))
        .filter(|p| p.exists())
        .collect()
}

/// Makes the database files immutable until dropped.
struct Immutable(Vec<PathBuf>);

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

/// Runs the five loggers on the database at `db`, makes `fault` for [`FAULT`], then clears
/// it: the fault is reported, and every logged run ends up with its row. Returns the daemon.
fn survives<F>(
    name: &str,
    db: &str,
    fault: impl FnOnce(&Daemon) -> F,
    clear: impl FnOnce(F),
) -> Daemon {
    let mut d = start_loggers(db);
    // Some runs first, each with its row.
    wait_for(20 * SEC, "the first runs", || {
        (logged(&d).len() >= 10).then_some(())
    });
    let before = every_logged_run_has_its_row(&d, 20 * SEC);
    let made = fault(&d);
    fault_is_reported(&mut d);
    std::thread::sleep(FAULT);
    let during = logged(&d).len() - before;
    clear(made);
    let runs = recovered_completely(&d, &d.path(db));
    assert!(runs >= 75, "only {runs} runs");
    // For the record (the assertions above already hold every logged run to its row).
    eprintln!(
        "{name}: {before} runs before the fault, {during} logged during its {} s, {runs} logged in all, each with its row after recovery: 0 lost",
        FAULT.as_secs()
    );
    d
}

#[test]
fn a_full_disk_loses_no_record() {
    let mnt = tempfile::tempdir().unwrap();
    let tmpfs = Tmpfs::mount(mnt.path().to_path_buf(), "8m");
    let db = mnt.path().join("history.db");
    survives(
        "disk full (tmpfs)",
        db.to_str().unwrap(),
        |_| tmpfs.fill(),
        |()| tmpfs.free(),
    );
}

/// The database and its WAL immutable: writes fail, records wait, nothing is lost. (The
/// `-shm` file stays writable: see the next test for what an immutable one does.)
#[test]
fn immutable_database_files_lose_no_record() {
    let d = survives(
        "database and WAL immutable (chattr +i)",
        "history.db",
        |d| {
            let files = Immutable(
                db_files(d)
                    .into_iter()
                    .filter(|f| !f.to_string_lossy().ends_with("-shm"))
                    .collect(),
            );
            chattr("+i", &files.0);
            files
        },
        |files| {
            // Records went to the spill file meanwhile (its folder is writable).
            assert!(files.0[0].with_file_name("history.db-spill").exists());
            drop(files);
        },
    );
    wait_for(10 * SEC, "the replayed spill file to go", || {
        (!d.path("history.db-spill").exists()).then_some(())
    });
}

/// An immutable `-shm` file: SQLite keeps its WAL index in a shared memory map of it, and its
/// next write there (the next commit, or the first read after one) once the page was written
/// back is a SIGBUS, in any program (python's sqlite3 as well). The daemon dies as under kill -9; restarted once the
/// file is writable again, every logged run has its row: those it had not recorded yet are
/// `abandoned`, and they are the runs of the last moments only. (A test that read the
/// database just before making all three files immutable survived by luck: that read had
/// brought the index's read mark up to date, so nothing was written to the map afterwards.)
#[test]
fn an_immutable_shm_file_ends_the_daemon_as_a_kill_would() {
    use crate::processes::{KILL_BOUND_MS, logged_before};
    use std::os::unix::process::ExitStatusExt as _;
    let mut d = start_loggers("history.db");
    wait_for(20 * SEC, "the first runs", || {
        (logged(&d).len() >= 20).then_some(())
    });
    let shm = Immutable(vec![d.path("history.db-shm")]);
    let made = chrono::Utc::now();
    chattr("+i", &shm.0);
    // A map page already dirty takes writes until the kernel writes it back (within about
    // 30 s, dirty_expire_centisecs); written back now, the next write to it faults.
    std::fs::File::open(&shm.0[0]).unwrap().sync_all().unwrap();
    let status = d.wait_exit(60 * SEC);
    assert_eq!(
        status.signal(),
        Some(nix::libc::SIGBUS),
        "{status:?}: {}",
        d.log()
    );
    // What a kill at the moment the file became immutable may lose, and no more.
    let bound = made - chrono::TimeDelta::milliseconds(KILL_BOUND_MS);
    let log = d.log();
    let (started, finished) = (
        logged_before(&log, "run started", bound),
        logged_before(&log, "run finished", bound),
    );
    drop(shm);
    d.spawn_ready();
    let rows: HashMap<i64, RunRow> = d.runs().into_iter().map(|r| (r.id, r)).collect();
    for id in &started {
        assert!(rows.contains_key(id), "run {id} started, has no row");
    }
    for id in &finished {
        assert_eq!(
            rows[id].status,
            RunStatus::Succeeded,
            "run {id} finished: {:?}",
            rows[id]
        );
    }
    // The first life's runs (the restarted daemon's own, ids from a block above, may be
    // running as the rows are read).
    let first_life = logged_before(
        &log,
        "run started",
        chrono::DateTime::<chrono::Utc>::MAX_UTC,
    );
    let last_of_first = first_life.iter().max().copied().unwrap_or_default();
    let others: Vec<&RunRow> = rows
        .values()
        .filter(|r| r.id <= last_of_first)
        .filter(|r| !matches!(r.status, RunStatus::Succeeded | RunStatus::Abandoned))
        .collect();
    assert!(others.is_empty(), "{others:#?}");
    let abandoned = rows
        .values()
        .filter(|r| r.status == RunStatus::Abandoned)
        .count();
    eprintln!(
        "immutable -shm: SIGBUS; {} runs had started and {} finished {KILL_BOUND_MS} ms before: each has its row; {abandoned} abandoned",
        started.len(),
        finished.len()
    );
}

/// Another program holding the write lock, through the sqlite3 shell.
struct HeldLock(Child);

impl HeldLock {
    fn take(db: &Path) -> Self {
        let mut child = Command::new("sqlite3")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sqlite3 is installed by scripts/test.sh");
        let stdin = child.stdin.as_mut().unwrap();
        stdin
            .write_all(b".timeout 5000\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n")
            .unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        Self(child)
    }

    fn release(mut self) {
        let stdin = self.0.stdin.as_mut().unwrap();
        stdin.write_all(b"COMMIT;\n.quit\n").unwrap();
        drop(self.0.stdin.take());
        self.0.wait().unwrap();
    }
}

#[test]
fn a_lock_held_by_another_writer_loses_no_record() {
    let d = survives(
        "write lock held by sqlite3",
        "history.db",
        |d| HeldLock::take(&d.path("history.db")),
        HeldLock::release,
    );
    // Every second is in the history once per job: no gap, no double.
    for i in 1..=5 {
        let times: Vec<_> = d
            .runs_of(&format!("j{i}"))
            .iter()
            .map(|r| r.scheduled_for)
            .collect();
        let distinct: HashSet<_> = times.iter().collect();
        assert_eq!(distinct.len(), times.len(), "a firing recorded twice");
        for w in times.windows(2) {
            assert_eq!((w[1] - w[0]).num_seconds(), 1, "a gap in {times:?}");
        }
    }
}

#[test]
fn a_database_whose_folder_disappears_loses_no_record() {
    // The folder goes away (an unmounted volume), then comes back.
    survives(
        "database folder gone",
        "db/history.db",
        |d| {
            let (from, to) = (d.path("db"), d.path("db.away"));
            std::fs::rename(&from, &to).unwrap();
            (from, to)
        },
        |(from, to)| std::fs::rename(to, from).unwrap(),
    );
}

#[test]
fn a_daemon_stopped_during_a_fault_spills_and_the_next_start_replays() {
    let mut d = start_loggers("history.db");
    every_logged_run_has_its_row(&d, 20 * SEC);
    let files = Immutable(db_files(&d));
    chattr("+i", &files.0);
    fault_is_reported(&mut d);
    std::thread::sleep(Duration::from_secs(5));
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(30 * SEC);
    assert!(
        status.success(),
        "exit {status}: every record was spilled\n{}",
        d.log()
    );
    let log = d.log();
    assert!(log.contains("run records kept in the spill file"), "{log}");
    assert!(d.path("history.db-spill").exists());
    drop(files);
    d.spawn_ready();
    assert!(!d.path("history.db-spill").exists(), "replayed and removed");
    assert!(
        d.log()
            .contains("run records kept in the spill file by the previous daemon written")
    );
    let runs = every_logged_run_has_its_row(&d, 30 * SEC);
    assert!(runs >= 25, "only {runs} runs");
    // No run of the first daemon is left `running`, and none was marked abandoned: their
    // ends were in the spill file.
    let first: Vec<RunRow> = d
        .runs()
        .into_iter()
        .filter(|r| r.status == RunStatus::Abandoned)
        .collect();
    assert!(first.is_empty(), "{first:#?}");
}

#[test]
fn a_second_daemon_on_the_same_database_refuses_to_start() {
    let d = Daemon::start("", "[jobs.t]\nevery = \"1h\"\ncommand = \"true\"\n");
    let err = refused_start(&d);
    assert!(
        err.contains(&format!("pid {}", d.pid())) && err.contains("history.db"),
        "{err}"
    );
    // Through a hard link to the database, from another folder: refused too, naming it.
    let other = Daemon::prepare_with_db(
        "linked.db",
        "",
        "[jobs.t]\nevery = \"1h\"\ncommand = \"true\"\n",
    );
    std::fs::hard_link(d.path("history.db"), other.path("linked.db")).unwrap();
    let err = refused_start(&other);
    assert!(
        err.contains(&format!("pid {}", d.pid())) && err.contains("another path to the same file"),
        "{err}"
    );
    // A lock left by a daemon killed with SIGKILL does not block the next start.
    let mut d = d;
    d.signal(Signal::SIGKILL);
    d.wait_exit(10 * SEC);
    d.spawn_ready();
}

/// Runs `hourglass run` on `d`'s config, which must fail; returns what it said.
fn refused_start(d: &Daemon) -> String {
    let out = Command::new(crate::harness::BIN)
        .arg("--config")
        .arg(d.config())
        .arg("run")
        .current_dir(d.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Two daemons started at the same instant on a database that does not exist yet, five
/// times: one runs, the other is refused in words (never a migration's error).
#[test]
fn two_daemons_started_at_once_on_a_new_database_one_is_refused() {
    for round in 0..5 {
        let d = Daemon::prepare("", "[jobs.t]\nevery = \"1h\"\ncommand = \"true\"\n");
        let spawn = || {
            Command::new(crate::harness::BIN)
                .arg("--config")
                .arg(d.config())
                .arg("run")
                .current_dir(d.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut both = [spawn(), spawn()];
        let refused = wait_for(20 * SEC, "one of the two to exit", || {
            both.iter_mut()
                .position(|c| c.try_wait().unwrap().is_some())
        });
        let running = &mut both[1 - refused];
        assert!(
            running.try_wait().unwrap().is_none(),
            "round {round}: both exited"
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(running.id() as i32),
            Signal::SIGTERM,
        )
        .unwrap();
        running.wait().unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut both[refused].stderr.take().unwrap(), &mut out).unwrap();
        assert!(
            out.contains("another hourglass daemon") && !out.contains("migrat"),
            "round {round}: {out}"
        );
    }
}

#[test]
fn a_stop_when_no_record_can_be_saved_anywhere_exits_non_zero() {
    let mnt = tempfile::tempdir().unwrap();
    let tmpfs = Tmpfs::mount(mnt.path().to_path_buf(), "8m");
    let mut d = start_loggers(mnt.path().join("history.db").to_str().unwrap());
    every_logged_run_has_its_row(&d, 20 * SEC);
    // The spill file sits beside the database, on the same full disk.
    tmpfs.fill();
    fault_is_reported(&mut d);
    wait_for(20 * SEC, "the spill failure in the log", || {
        d.log()
            .contains("cannot write the spill file either")
            .then_some(())
    });
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(30 * SEC);
    let log = d.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("could be saved neither in the history database nor in its spill file"),
        "{log}"
    );
    assert!(!log.contains("run records kept in the spill file"), "{log}");
}

#[test]
fn healthz_is_unhealthy_while_history_writes_fail_and_healthy_after() {
    let d = Daemon::start("", "[jobs.tick]\nevery = \"1s\"\ncommand = \"true\"\n");
    let api = crate::http::Api::socket(&d.path("hourglass.sock"));
    d.wait_runs("tick", 20 * SEC, "a first run", |r| !r.is_empty());
    assert_eq!(api.call("GET", "/healthz", None, None).0, 200);
    let lock = HeldLock::take(&d.path("history.db"));
    let body = wait_for(60 * SEC, "/healthz to say unhealthy", || {
        let (code, body) = api.call("GET", "/healthz", None, None);
        (code == 503).then_some(body)
    });
    assert!(
        body.contains("history writes have been failing for"),
        "{body}"
    );
    // The status says so too.
    let status = String::from_utf8_lossy(&d.cli(&["status"]).stdout).to_string();
    assert!(status.contains("history    FAILING for"), "{status}");
    lock.release();
    wait_for(60 * SEC, "/healthz to say ok again", || {
        (api.call("GET", "/healthz", None, None).0 == 200).then_some(())
    });
}
