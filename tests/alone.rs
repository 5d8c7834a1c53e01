//! Tests that load the whole machine (thousands of client connections): a test binary of its
//! own, which cargo runs after the others, never beside them, so that neither skews the
//! other's timing. Slow and half-open clients by the thousand on both of the API's listeners,
//! under systemd's default of 1,024 open files.
// A test binary: its helpers are `pub` for the test modules, and tests may unwrap and panic.
#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

// The harness of the other end-to-end tests, of which this binary uses a part.
#[allow(dead_code)]
#[path = "it/harness.rs"]
mod harness;

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::harness::{Daemon, free_port};
use hourglass::store::RunStatus;

const SEC: Duration = Duration::from_secs(1);
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// Where a slow client connects.
#[derive(Clone)]
enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A half-open connection: a request head never finished.
enum Slow {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Slow {
    fn open(target: &Target) -> Option<Self> {
        let mut s = match target {
            Target::Tcp(addr) => Self::Tcp(TcpStream::connect_timeout(addr, SEC / 5).ok()?),
            Target::Unix(path) => Self::Unix(UnixStream::connect(path).ok()?),
        };
        s.io().ok()?;
        s.write(b"GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")?;
        Some(s)
    }

    fn io(&mut self) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_nonblocking(true),
            Self::Unix(s) => s.set_nonblocking(true),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Option<()> {
        let written = match self {
            Self::Tcp(s) => s.write(bytes),
            Self::Unix(s) => s.write(bytes),
        };
        written.ok().filter(|n| *n > 0).map(|_| ())
    }

    /// Whether the daemon closed it (end of file, or an error other than "nothing yet").
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 512];
        let read = match self {
            Self::Tcp(s) => s.read(&mut buf),
            Self::Unix(s) => s.read(&mut buf),
        };
        match read {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != ErrorKind::WouldBlock,
        }
    }
}

/// Holds `count` half-open connections to `target` for `hold`, sending one more byte of the
/// head on each every 5 s and opening a new one for each the daemon closes (each pass over
/// them once a second: a bounded loop). How many the daemon closed.
fn hold_half_open(target: &Target, count: usize, hold: Duration) -> u64 {
    let end = Instant::now() + hold;
    let mut slow: Vec<Option<Slow>> = (0..count).map(|_| Slow::open(target)).collect();
    let mut closed = 0;
    let mut last_byte = Instant::now();
    while Instant::now() < end {
        let trickle = last_byte.elapsed() >= 5 * SEC;
        for s in &mut slow {
            let gone = s
                .as_mut()
                .is_none_or(|c| c.closed() || (trickle && c.write(b"x").is_none()));
            if gone {
                closed += u64::from(s.is_some());
                *s = Slow::open(target);
            }
        }
        if trickle {
            last_byte = Instant::now();
        }
        std::thread::sleep(SEC);
    }
    closed
}

/// Raises this test process's open files limit for its thousands of client sockets.
fn room_for_clients(needed: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= needed,
        "this test needs {needed} open files; the hard limit is {hard}"
    );
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// `GET /healthz` on a new connection: how long the answer took, or what went wrong.
fn healthz(target: &Target) -> Result<Duration, String> {
    let start = Instant::now();
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let e = |what: &str, e: std::io::Error| format!("{what}: {e}");
    match target {
        Target::Tcp(addr) => {
            let mut s = TcpStream::connect_timeout(addr, SEC).map_err(|x| e("connect", x))?;
            s.set_read_timeout(Some(SEC)).map_err(|x| e("timeout", x))?;
            s.write_all(request.as_bytes()).map_err(|x| e("write", x))?;
            s.read_to_string(&mut answer).map_err(|x| e("read", x))?;
        }
        Target::Unix(path) => {
            let mut s = UnixStream::connect(path).map_err(|x| e("connect", x))?;
            s.set_read_timeout(Some(SEC)).map_err(|x| e("timeout", x))?;
            s.write_all(request.as_bytes()).map_err(|x| e("write", x))?;
            s.read_to_string(&mut answer).map_err(|x| e("read", x))?;
        }
    }
    if answer.starts_with("HTTP/1.1 200") {
        Ok(start.elapsed())
    } else {
        Err(format!(
            "answer {:?} after {:?}",
            answer.lines().next(),
            start.elapsed()
        ))
    }
}

fn open_files(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// `/healthz` asked on every target four times a second until stopped, with the daemon's
/// open files counted each time: how long each answer took, what went wrong, the most files.
struct Prober {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<Duration>, Vec<String>, usize)>,
}

impl Prober {
    fn start(targets: &[Target], pid: i32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let targets = targets.to_vec();
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut took, mut failed, mut files) = (Vec::new(), Vec::new(), 0);
            let mut next = Instant::now();
            while !stopped.load(Ordering::Relaxed) {
                for t in &targets {
                    match healthz(t) {
                        Ok(d) => took.push(d),
                        Err(why) => failed.push(format!("{}: {why}", t.name())),
                    }
                }
                files = files.max(open_files(pid));
                // Paced from the start, not after each round's work: four rounds a second.
                next += SEC / 4;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            (took, failed, files)
        });
        Self { stop, thread }
    }

    fn finish(self) -> (Vec<Duration>, Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Self::Tcp(_) => "tcp",
            Self::Unix(_) => "unix",
        }
    }
}

/// `job`'s runs scheduled between `from` and `to`: there are about one a second, each
/// succeeded, and they started on time (p99 of lateness under 200 ms).
fn ran_on_time(d: &Daemon, job: &str, from: DateTime<Utc>, to: DateTime<Utc>) {
    let runs: Vec<_> = d
        .runs_of(job)
        .into_iter()
        .filter(|r| r.scheduled_for > from && r.scheduled_for < to)
        .collect();
    let expected = (to - from).num_seconds() - 2;
    assert!(runs.len() as i64 >= expected, "{job}: {} runs", runs.len());
    let failed: Vec<_> = runs
        .iter()
        .filter(|r| r.status != RunStatus::Succeeded)
        .collect();
    assert!(failed.is_empty(), "{job}: {failed:#?}");
    let mut late: Vec<i64> = runs.iter().map(|r| r.lateness_ms.unwrap()).collect();
    late.sort_unstable();
    let p99 = late[(late.len() * 99 / 100).min(late.len() - 1)];
    assert!(p99 < 200, "{job}: lateness p99 {p99} ms: {late:?}");
}

/// 2,000 half-open connections on each listener held 30 s, the daemon under 1,024 open
/// files: every every-second run starts on time and succeeds, `/healthz` answers within 1 s
/// on both listeners throughout, and the daemon's descriptors stay under its cap.
#[test]
fn half_open_connections_by_the_thousand_neither_fail_runs_nor_silence_healthz() {
    const EACH: usize = 2_000;
    room_for_clients(2 * EACH as u64 + 1_000);
    let port = free_port();
    let mut d = Daemon::prepare(
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ env = \"HG_API_TOKEN\" }}\n"),
        "[jobs.tick]\nevery = \"1s\"\ncommand = \"echo tick\"\n\
         [jobs.tock]\nevery = \"1s\"\ncommand = \"printf tock; cat /etc/hostname > /dev/null\"\n",
    );
    d.extra_env.push(("HG_API_TOKEN".into(), TOKEN.into()));
    d.wrap = ["prlimit", "--nofile=1024:1024", "--"]
        .map(String::from)
        .to_vec();
    d.spawn_ready();
    d.wait_runs("tick", 20 * SEC, "a first run", |r| !r.is_empty());
    let targets = [
        Target::Tcp(SocketAddr::from(([127, 0, 0, 1], port))),
        Target::Unix(d.path("hourglass.sock")),
    ];
    let started = Utc::now();
    let prober = Prober::start(&targets, d.pid());
    let attackers: Vec<_> = targets
        .iter()
        .map(|t| {
            let t = t.clone();
            std::thread::spawn(move || hold_half_open(&t, EACH, 30 * SEC))
        })
        .collect();
    let closed: u64 = attackers.into_iter().map(|a| a.join().unwrap()).sum();
    let ended = Utc::now();
    let (mut took, failed, files) = prober.finish();

    assert!(
        failed.is_empty(),
        "/healthz went unanswered: {failed:?}; log:\n{}",
        tail(&d)
    );
    took.sort();
    let worst = *took.last().unwrap();
    eprintln!(
        "healthz under attack: median {:?}, worst {worst:?} of {}",
        took[took.len() / 2],
        took.len()
    );
    assert!(took.len() >= 200, "{} answers", took.len());
    assert!(worst < SEC, "/healthz took {worst:?}");
    assert!(
        closed > 1_000,
        "the daemon closed only {closed} waiting connections"
    );
    assert!(
        files <= 1024 - 256,
        "{files} open files under attack (limit 1,024)"
    );
    ran_on_time(&d, "tick", started, ended);
    ran_on_time(&d, "tock", started, ended);
    assert!(
        d.log().contains("API connections at their cap"),
        "{}",
        tail(&d)
    );
}

fn tail(d: &Daemon) -> String {
    let log = d.log();
    log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
}
