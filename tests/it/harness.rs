//! Test harness: starts the real `hourglass` binary on a temp dir with a real SQLite file,
//! listens on a real unix datagram socket for its systemd notifications, and reads the history.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hourglass::store::{HistoryFilter, RunRow, RunStatus, Store};

pub const BIN: &str = env!("CARGO_BIN_EXE_hourglass");

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub notify: harness::Notifications,
    pub extra_env: Vec<(String, String)>,
    /// The history database, relative to `dir`.
    pub db: String,
    /// The umask the daemon is started with (as under the unit's `UMask=0077`), if any.
    pub umask: Option<&'static str>,
    /// A command the daemon is started under (`setpriv ...`), if any.
    pub wrap: Vec<String>,
}

/// A whole second `secs` from now, as RFC 3339 (for one-shot `at` jobs).
pub fn at_in(secs: i64) -> String {
    let t = Utc::now() + chrono::TimeDelta::seconds(secs);
    chrono::DateTime::from_timestamp(t.timestamp(), 0)
        .unwrap_or(t)
        .to_rfc3339()
}

pub fn ts(s: &str) -> DateTime<Utc> {
    hourglass::store::parse_ts(s).unwrap_or_else(|| panic!("bad timestamp {s}"))
}

/// Opens the SQLite history at `db` (creating it if missing), runs `f` on it on a runtime of
/// its own, and closes it: how a test reads or seeds the database beside the daemon.
pub fn on_store<T>(db: &Path, f: impl AsyncFnOnce(&Store) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(db).await.unwrap();
        let out = f(&store).await;
        store.close().await;
        out
    })
}

/// Asserts that a command failed (exit status 1) saying each of `expected` on stderr; returns
/// its stderr.
pub fn fails_with(out: &Output, expected: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    for e in expected {
        assert!(err.contains(e), "no {e:?} in:\n{err}");
    }
    err
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Daemon {
    /// Writes `hourglass.toml` (database `history.db`, UTC, plus `main_extra`) and
    /// `jobs.d/jobs.toml`, without starting.
    pub fn prepare(main_extra: &str, jobs: &str) -> Self {
        Self::prepare_with_db("history.db", main_extra, jobs)
    }

    /// Like [`Daemon::prepare`], with the database at `db` (relative to the temp dir).
    pub fn prepare_with_db(db: &str, main_extra: &str, jobs: &str) -> Self {
        let main = format!("[database]\npath = \"{db}\"\n\n{main_extra}\n");
        let main = if main_extra.contains("[daemon]") {
            main
        } else {
            format!("{main}\n[daemon]\ntimezone = \"UTC\"\nshutdown_grace = \"5s\"\n")
        };
        let mut d = Self::prepare_main(&main, jobs);
        d.db = db.to_string();
        d
    }

    /// Writes `main` as the main file (as is) and `jobs` as `jobs.d/jobs.toml`, without
    /// starting.
    pub fn prepare_main(main: &str, jobs: &str) -> Self {
        let db = "history.db";
        let dir = tempfile::tempdir().unwrap();
        harness::write_config(dir.path(), main, jobs).unwrap();
        let notify = harness::Notifications::bind(dir.path().join("notify.sock")).unwrap();
        Self {
            dir,
            child: None,
            notify,
            extra_env: Vec::new(),
            db: db.to_string(),
            umask: None,
            wrap: Vec::new(),
        }
    }

    /// Prepares and starts, waiting for READY=1.
    pub fn start(main_extra: &str, jobs: &str) -> Self {
        let mut d = Self::prepare(main_extra, jobs);
        d.spawn_ready();
        d
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config(&self) -> PathBuf {
        self.path("hourglass.toml")
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .unwrap();
        let umask = self
            .umask
            .map(|mask| format!("umask {mask} && exec \"$0\" \"$@\""));
        let mut program: Vec<&std::ffi::OsStr> = match &umask {
            Some(script) => vec!["/bin/sh".as_ref(), "-c".as_ref(), script.as_ref()],
            None => self.wrap.iter().map(AsRef::as_ref).collect(),
        };
        program.push(BIN.as_ref());
        let mut cmd = harness::run_command(&program, &self.config(), &self.notify);
        cmd.current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .stderr(log);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
    }

    /// Spawns and waits for READY=1.
    pub fn spawn_ready(&mut self) {
        self.spawn();
        self.wait_note("READY=1", Duration::from_secs(20));
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Reads notifications until one line equals or starts with `needle`.
    pub fn wait_note(&mut self, needle: &str, timeout: Duration) {
        let child = self.child.as_mut().unwrap();
        let waited = self
            .notify
            .wait(needle, timeout, || matches!(child.try_wait(), Ok(None)));
        if let Err(e) = waited {
            panic!("{e}; log:\n{}", self.log());
        }
    }

    /// Reads notifications until one line contains `needle`; returns it.
    pub fn wait_note_containing(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(n) = self.notify.drain().iter().find(|n| n.contains(needle)) {
                return n.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no note with {needle:?} within {timeout:?}; got {:?}",
                self.notify.drain()
            );
        }
    }

    /// Drains pending notifications (waiting at most 100 ms); returns every line received
    /// and not yet waited for.
    pub fn drain_notes(&mut self) -> Vec<String> {
        self.notify.drain().to_vec()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        wait_for(timeout, "the daemon to exit", || child.try_wait().unwrap())
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> Vec<RunRow> {
        let db = self.path(&self.db);
        if !db.exists() {
            return Vec::new();
        }
        let mut rows = on_store(&db, async |store| {
            store
                .history(&HistoryFilter {
                    limit: 1_000_000,
                    ..Default::default()
                })
                .await
                .unwrap()
        });
        rows.reverse();
        rows
    }

    pub fn runs_of(&self, job: &str) -> Vec<RunRow> {
        self.runs().into_iter().filter(|r| r.job == job).collect()
    }

    /// Waits until `pred` holds for the runs of `job`; returns them.
    pub fn wait_runs(
        &self,
        job: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[RunRow]) -> bool,
    ) -> Vec<RunRow> {
        let deadline = Instant::now() + timeout;
        loop {
            let runs = self.runs_of(job);
            if pred(&runs) {
                return runs;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what} (job {job}); runs: {runs:#?}\nlog:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the CLI against this daemon's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.config(), args)
    }

    /// Run `id` as `hourglass show <id> --json` prints it.
    pub fn show_json(&self, id: i64) -> serde_json::Value {
        let shown = self.cli(&["show", &id.to_string(), "--json"]);
        serde_json::from_slice(&shown.stdout).unwrap_or_else(|e| {
            panic!(
                "show {id} --json: {e}: {}",
                String::from_utf8_lossy(&shown.stderr)
            )
        })
    }

    pub fn write_jobs(&self, file: &str, text: &str) {
        let tmp = self.path(&format!("jobs.d/.{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.path(&format!("jobs.d/{file}"))).unwrap();
    }
}

/// The daemon's wall clock, moved by libfaketime (Debian package `faketime`) through a file it
/// reads at every clock call; the monotonic clock stays real, as after a `settimeofday` step.
pub struct FakeClock {
    file: PathBuf,
}

impl FakeClock {
    /// Sets the daemon's wall clock to the real one plus `secs` (negative: behind).
    pub fn set_offset(&self, secs: i64) {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{secs:+}\n")).unwrap();
        std::fs::rename(tmp, &self.file).unwrap();
    }
}

impl Daemon {
    /// Starts the daemon (at the next `spawn`) under libfaketime, its clock at offset 0.
    pub fn fake_clock(&mut self) -> FakeClock {
        let lib = std::fs::read_dir("/usr/lib")
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
            .find(|p| p.exists())
            .expect("libfaketime (Debian package faketime) is not installed");
        let clock = FakeClock {
            file: self.path("faketime"),
        };
        clock.set_offset(0);
        for (k, v) in [
            ("LD_PRELOAD", lib.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE", clock.file.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".into()),
            ("DONT_FAKE_MONOTONIC", "1".into()),
        ] {
            self.extra_env.push((k.into(), v));
        }
        clock
    }
}

pub fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn finished(r: &RunRow) -> bool {
    r.status != RunStatus::Running
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap_or("").trim().chars().next();
            state != Some('Z') && state != Some('X')
        }
        Err(_) => false,
    }
}
