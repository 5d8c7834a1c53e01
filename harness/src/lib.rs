//! Starting the real `hourglass` binary, one way for the tests and the bench alike: its config
//! files in a folder, the systemd notification socket it reports to, the `run` command, and
//! its notifications read back until `READY=1` (or any other line).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Writes `hourglass.toml` (`main`) and `jobs.d/jobs.toml` (`jobs`) in `dir`; returns the main
/// file's path.
pub fn write_config(dir: &Path, main: &str, jobs: &str) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("jobs.d"))?;
    std::fs::write(dir.join("hourglass.toml"), main)?;
    std::fs::write(dir.join("jobs.d/jobs.toml"), jobs)?;
    Ok(dir.join("hourglass.toml"))
}

/// `program --config CONFIG run` (`program` is the binary, or a wrapper given the binary as
/// its first arguments), reporting to `notify`, with stdin and stdout closed.
pub fn run_command(program: &[&std::ffi::OsStr], config: &Path, notify: &Notifications) -> Command {
    let mut cmd = Command::new(program[0]);
    cmd.args(&program[1..])
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("NOTIFY_SOCKET", notify.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// The notifications a daemon sends (systemd's protocol) to a socket file of its own, as
/// lines, kept until waited for.
#[derive(Debug)]
pub struct Notifications {
    socket: UnixDatagram,
    path: PathBuf,
    notes: Vec<String>,
}

impl Notifications {
    /// A socket at `path` (which must not exist).
    pub fn bind(path: PathBuf) -> io::Result<Self> {
        let socket = UnixDatagram::bind(&path)?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(Self {
            socket,
            path,
            notes: Vec::new(),
        })
    }

    /// The socket's path, for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what arrived (waiting at most 100 ms for the first datagram); returns every line
    /// received and not yet waited for.
    pub fn drain(&mut self) -> &[String] {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.notes.extend(msg.lines().map(str::to_string));
        }
        &self.notes
    }

    /// Forgets the lines received so far.
    pub fn forget(&mut self) {
        self.drain();
        self.notes.clear();
    }

    /// Waits until a line starts with `prefix` (consuming the lines up to it), for at most
    /// `timeout`, while `running()` says the daemon is still there.
    pub fn wait(
        &mut self,
        prefix: &str,
        timeout: Duration,
        mut running: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(pos) = self.notes.iter().position(|n| n.starts_with(prefix)) {
                self.notes.drain(..=pos);
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no {prefix:?} from the daemon within {timeout:?}; got {:?}",
                    self.notes
                ));
            }
            if !running() {
                return Err(format!("the daemon exited before {prefix:?}"));
            }
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.notes.extend(msg.lines().map(str::to_string));
            }
        }
    }
}

/// Starts `cmd` and waits for its `READY=1` on `notify`, at most `timeout`; returns the child
/// and how long it took. A daemon that is not ready in time is killed.
pub fn start_ready(
    cmd: &mut Command,
    notify: &mut Notifications,
    timeout: Duration,
) -> Result<(Child, Duration), String> {
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the daemon: {e}"))?;
    let waited = notify.wait("READY=1", timeout, || matches!(child.try_wait(), Ok(None)));
    match waited {
        Ok(()) => Ok((child, started.elapsed())),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// The test PostgreSQL server's URL (`HOURGLASS_TEST_PG_URL`, set by `scripts/test.sh`), if
/// there is one.
pub fn postgres_url() -> Option<String> {
    std::env::var("HOURGLASS_TEST_PG_URL").ok()
}

/// A new, empty database on the test PostgreSQL server (through `psql`); returns its URL, or
/// `None` when there is no test server.
///
/// # Errors
/// When `psql` cannot run or the server refuses.
pub fn fresh_postgres_database(label: &str) -> io::Result<Option<String>> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let Some(admin) = postgres_url() else {
        return Ok(None);
    };
    let name = format!(
        "hg_{}_{}_{}",
        label.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    );
    let out = Command::new("psql")
        .arg(&admin)
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "cannot create database {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Ok(Some(format!("{base}/{name}")))
}
