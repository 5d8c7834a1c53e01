//! The API, the dashboard and the cluster against a hostile user, with real processes: slow
//! and half-open clients by the thousand on both listeners (under systemd's default of 1,024
//! open files), a page of another site in Chromium, a second node taking a live node's name,
//! and a `trace` log searched for every secret.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

use crate::harness::{Daemon, ts};

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
            while !stopped.load(Ordering::Relaxed) {
                for t in &targets {
                    match healthz(t) {
                        Ok(d) => took.push(d),
                        Err(why) => failed.push(format!("{}: {why}", t.name())),
                    }
                }
                files = files.max(open_files(pid));
                std::thread::sleep(SEC / 4);
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
        .filter(|r| ts(&r.scheduled_for) > from && ts(&r.scheduled_for) < to)
        .collect();
    let expected = (to - from).num_seconds() - 2;
    assert!(runs.len() as i64 >= expected, "{job}: {} runs", runs.len());
    let failed: Vec<_> = runs.iter().filter(|r| r.status != "succeeded").collect();
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
    let port = crate::servers::free_port();
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

/// Python's `http.server` serving `dir` on a free loopback port: a site of its own.
struct StaticSite {
    child: std::process::Child,
    port: u16,
}

impl StaticSite {
    fn serve(dir: &std::path::Path) -> Self {
        let port = crate::servers::free_port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        crate::harness::wait_for(10 * SEC, "the static site", || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Self { child, port }
    }
}

impl Drop for StaticSite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A page of another site, in a browser signed in to the dashboard (with its actions on),
/// makes every request a page can make without asking first (no-cors fetches with cookies,
/// form posts of each encoding): nothing is paused, triggered or resumed, the session is not
/// ended, and the page reads nothing. A page whose DNS name was rebound to this machine is
/// refused for its `Host`, and so is any client naming another host, token or not.
#[test]
fn a_page_of_another_site_cannot_act_or_read_and_a_rebound_name_is_refused() {
    use crate::dashboard::TOKEN as DASHBOARD_TOKEN;
    let port = crate::servers::free_port();
    let mut d = Daemon::prepare(
        &format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ env = \"HG_API_TOKEN\" }}\ndashboard_actions = true\n"
        ),
        "[jobs.target]\nevery = \"1h\"\ncommand = \"true\"\n[jobs.other]\nevery = \"1h\"\ncommand = \"true\"\n",
    );
    d.extra_env
        .push(("HG_API_TOKEN".into(), DASHBOARD_TOKEN.into()));
    d.spawn_ready();
    let site = StaticSite::serve(&crate::servers::support("evil"));
    let b = crate::browser::Chromium::launch_with(&[(
        "host-resolver-rules",
        "MAP evil.example 127.0.0.1",
    )]);
    let base = format!("http://127.0.0.1:{port}");
    crate::dashboard::browser_sign_in(&b, &base);

    b.open(&format!("http://127.0.0.1:{}/#{base}", site.port), 1280);
    b.wait_until("document.title === 'done'", 30 * SEC);
    let read: String = b.eval("window.result.read_jobs");
    assert_eq!(read, "blocked", "the page read the jobs");
    let api = crate::api::Api::tcp(port, DASHBOARD_TOKEN);
    assert_eq!(api.get("/v1/events"), serde_json::json!([]));
    let jobs = api.get("/v1/jobs");
    for job in jobs.as_array().unwrap() {
        assert!(job["pause"].is_null(), "{job}");
    }
    assert!(d.runs().is_empty(), "{:?}", d.runs());
    // The session the page tried to end still works.
    b.open(&format!("{base}/jobs/target"), 1280);
    assert_eq!(b.url(), format!("{base}/jobs/target"));
    assert!(b.eval::<bool>("!!document.querySelector('.actions')"));

    // DNS rebinding: evil.example now resolves to this machine.
    for path in ["/v1/jobs", "/", "/login"] {
        b.open(&format!("http://evil.example:{port}{path}"), 1280);
        let text: String = b.eval("document.body.innerText");
        assert!(
            text.contains("does not answer to the host"),
            "{path}: {text}"
        );
    }
    let bearer = format!("Bearer {DASHBOARD_TOKEN}");
    let named = |host: &str| {
        api.call_with(
            "GET",
            "/v1/jobs",
            &[("host", host), ("authorization", &bearer)],
            None,
        )
        .0
    };
    assert_eq!(named("evil.example"), 421);
    assert_eq!(named(&format!("evil.example:{port}")), 421);
    assert_eq!(named(&format!("localhost:{port}")), 200);
    assert_eq!(named(&format!("127.0.0.1:{port}")), 200);
}

/// Every secret of the trace-log test, and where it comes from.
const SECRETS: [(&str, &str); 6] = [
    ("api token (file)", "api-token-0123456789abcdef-trace"),
    ("SMTP password (env)", "smtp-Pa55word-for-the-trace-log"),
    (
        "HTTP job header (file)",
        "Bearer http-job-secret-9876543210",
    ),
    ("webhook header (env)", "Bearer webhook-secret-5678901234"),
    ("S3 key id (env)", "hourglassTestKeyId"),
    (
        "S3 secret key (file)",
        "hourglass-test-secret-access-key-0123",
    ),
];

/// A daemon at `RUST_LOG=trace` runs one job of every kind with every secret set (from files
/// and from the environment): an email through SMTP with AUTH, an HTTP job with a secret
/// header, an upload to S3, a failing command that notifies a webhook with a secret header,
/// and API requests with the token. Its log holds none of the secrets, nor their base64;
/// written into the folder the daemon watches, it does not feed itself.
#[test]
fn a_trace_log_of_every_job_kind_holds_no_secret() {
    use base64::Engine as _;
    let tmp = tempfile::tempdir().unwrap();
    let smtp = crate::servers::Smtp::start(tmp.path(), SECRETS[1].1);
    let http = crate::servers::Http::start(tmp.path());
    let port = crate::servers::free_port();
    let src = tmp.path().join("upload");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "a").unwrap();
    let endpoint = std::env::var("HOURGLASS_TEST_S3_ENDPOINT").expect("run under scripts/test.sh");
    let main = format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ file = \"api-token\" }}\n{}\n\
         [notify]\non = [\"failure\"]\n[notify.webhook]\nurl = \"{}\"\n\
         secret_headers = {{ Authorization = {{ env = \"HOOK_TOKEN\" }} }}\n",
        smtp.config("main", "SMTP_PASSWORD", ""),
        http.url("/hook")
    );
    let at = crate::harness::at_in(3);
    let jobs = format!(
        "[jobs.mail]\nat = \"{at}\"\n[jobs.mail.email]\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\nsubject = \"s\"\nbody = \"b\"\n\
         [jobs.call]\nat = \"{at}\"\n[jobs.call.http]\nurl = \"{}\"\nsecret_headers = {{ Authorization = {{ file = \"http-token\" }} }}\n\
         [jobs.up]\nat = \"{at}\"\n[jobs.up.upload]\nsource = \"{}/*.txt\"\ndestination = \"s3://hourglass-test/trace-{}/\"\n\
         endpoint = \"{endpoint}\"\naccess_key_id = {{ env = \"S3_KEY\" }}\nsecret_access_key = {{ file = \"s3-secret\" }}\n\
         [jobs.fails]\nat = \"{at}\"\ncommand = \"false\"\n",
        http.url("/status/200"),
        src.display(),
        std::process::id(),
    );
    let mut d = Daemon::prepare(&main, &jobs);
    for (file, secret) in [("api-token", 0), ("http-token", 2), ("s3-secret", 5)] {
        std::fs::write(d.path(file), format!("{}\n", SECRETS[secret].1)).unwrap();
    }
    for (var, secret) in [("SMTP_PASSWORD", 1), ("HOOK_TOKEN", 3), ("S3_KEY", 4)] {
        d.extra_env.push((var.into(), SECRETS[secret].1.into()));
    }
    d.extra_env.push(("RUST_LOG".into(), "trace".into()));
    d.spawn_ready();
    for job in ["mail", "call", "up", "fails"] {
        let runs = d.wait_runs(job, 60 * SEC, "its run", |r| {
            r.len() == 1 && crate::harness::finished(&r[0])
        });
        let want = if job == "fails" {
            "failed"
        } else {
            "succeeded"
        };
        assert_eq!(runs[0].status, want, "{job}: {runs:#?}");
    }
    smtp.wait_messages(1, 20 * SEC);
    crate::harness::wait_for(20 * SEC, "the webhook", || {
        (!http.posts().is_empty()).then_some(())
    });
    let api = crate::api::Api::tcp(port, SECRETS[0].1);
    api.get("/v1/jobs");
    let (code, _) = api.call("GET", "/v1/jobs", Some("wrong-token-guess-0000"), None);
    assert_eq!(code, 401);

    let log = d.log();
    assert!(log.contains(" DEBUG "), "not a trace log:\n{log}");
    // The log is written in the config folder the daemon watches: it does not feed itself.
    assert!(log.len() < 1 << 20, "{} bytes of log", log.len());
    assert!(
        !log.contains("daemon.log"),
        "file events of the log itself were logged"
    );
    for (what, secret) in SECRETS {
        let forms = [
            secret.to_string(),
            base64::engine::general_purpose::STANDARD.encode(secret),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(secret),
        ];
        for form in forms {
            assert!(!log.contains(&form), "{what} in the log as {form:?}");
        }
    }
}

/// Token guesses from one address are slowed after 10 (429 with Retry-After, the right token
/// too, one WARN naming the address) while the socket goes on; extractors' errors are JSON;
/// a pause's end must be ahead and within 100 years, and a wrong date is told as a date.
#[test]
fn guesses_are_slowed_errors_are_json_and_pauses_are_bounded() {
    let port = crate::servers::free_port();
    let mut d = Daemon::prepare(
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ env = \"HG_API_TOKEN\" }}\n"),
        "[jobs.a]\nevery = \"1h\"\ncommand = \"true\"\n",
    );
    d.extra_env.push(("HG_API_TOKEN".into(), TOKEN.into()));
    d.spawn_ready();
    let tcp = crate::api::Api::tcp(port, TOKEN);
    let codes: Vec<u16> = (0..15)
        .map(|i| {
            tcp.call("GET", "/v1/jobs", Some(&format!("guess-{i:020}")), None)
                .0
        })
        .collect();
    assert_eq!(codes[..10], [401; 10], "{codes:?}");
    assert_eq!(codes[10..], [429; 5], "{codes:?}");
    let (code, body) = tcp.call("GET", "/v1/jobs", Some(TOKEN), None);
    assert_eq!(code, 429, "the right token waits too: {body}");
    assert!(body.contains("too many wrong tokens"), "{body}");
    let warned = d
        .log()
        .lines()
        .filter(|l| l.contains("slowed down"))
        .count();
    assert_eq!(warned, 1, "{}", d.log());
    assert!(d.log().contains("client=127.0.0.1"), "{}", d.log());
    let socket = crate::api::Api::socket(&d.path("hourglass.sock"));
    socket.get("/v1/jobs");
    // One more guess is allowed after the refill (6 s).
    crate::harness::wait_for(15 * SEC, "the refill", || {
        (tcp.call("GET", "/v1/jobs", Some(TOKEN), None).0 == 200).then_some(())
    });

    for (path, word) in [("/v1/runs?limit=lots", "limit"), ("/v1/runs/abc", "")] {
        let (code, body) = socket.call("GET", path, None, None);
        assert_eq!(code, 400, "{path}: {body}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {body}: {e}"));
        assert!(v["error"].as_str().unwrap().contains(word), "{body}");
    }
    for (until, says) in [
        ("0s", "is not ahead"),
        ("9999-12-31T00:00:00Z", "more than 100 years ahead"),
        ("2026-13-01T00:00:00Z", "is not a time in RFC 3339"),
    ] {
        let (code, body) = socket.call(
            "POST",
            "/v1/jobs/a/pause",
            None,
            Some(serde_json::json!({ "until": until })),
        );
        assert_eq!(code, 400, "{until}: {body}");
        assert!(body.contains(says), "{until}: {body}");
    }
    assert!(socket.get("/v1/jobs/a")["pause"].is_null());
}

/// The socket takes `api.socket_group` (and its mode) at every start: a member of the group
/// uses the API, and the events log names it by uid.
#[test]
fn the_sockets_group_lets_its_members_in_across_restarts() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
    let mut d = Daemon::prepare(
        "[api]\nsocket_group = \"nogroup\"\n",
        "[jobs.a]\nevery = \"1h\"\ncommand = \"true\"\n",
    );
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = d.path("hourglass.sock");
    for round in 0..2 {
        d.spawn_ready();
        let meta = std::fs::metadata(&sock).unwrap();
        assert_eq!(meta.gid(), nogroup.gid.as_raw(), "round {round}");
        assert_eq!(meta.mode() & 0o777, 0o660, "round {round}");
        d.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(d.wait_exit(20 * SEC).success());
    }
    d.spawn_ready();
    let script = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); \
         s.sendall(b'POST /v1/jobs/a/pause HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n'); \
         print(s.recv(200).decode())",
        sock.display().to_string()
    );
    let as_nobody = |groups: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534"])
            .args(groups)
            .args(["/usr/bin/python3", "-c", &script])
            .output()
            .unwrap()
    };
    let out = as_nobody(&["--regid=65534", "--clear-groups"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 200"),
        "{out:?}"
    );
    let events = crate::api::Api::socket(&sock).get("/v1/events");
    assert_eq!(events[0]["actor"], "uid:65534", "{events}");
    // Outside the group: the socket's mode keeps it out.
    let daemon_group = nix::unistd::Group::from_name("daemon").unwrap().unwrap();
    let other = format!("--regid={}", daemon_group.gid);
    let out = as_nobody(&[&other, "--clear-groups"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PermissionError"),
        "{out:?}"
    );
}
