//! The API and the dashboard against a hostile user, with real processes: a page of another
//! site in Chromium, a rebound DNS name, token guesses, the socket's group, and a `trace` log
//! searched for every secret. (Slow and half-open clients by the thousand: `tests/alone.rs`;
//! a second node taking a live node's name: `cluster.rs`.)

use std::net::TcpStream;
use std::time::Duration;

use crate::harness::Daemon;

const SEC: Duration = Duration::from_secs(1);
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// Python's `http.server` serving `dir` on a free loopback port: a site of its own.
struct StaticSite {
    child: std::process::Child,
    port: u16,
}

impl StaticSite {
    fn serve(dir: &std::path::Path) -> Self {
        let port = crate::harness::free_port();
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
    let port = crate::harness::free_port();
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
    let api = crate::http::Api::tcp(port, DASHBOARD_TOKEN);
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
    let port = crate::harness::free_port();
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
            hourglass::store::RunStatus::Failed
        } else {
            hourglass::store::RunStatus::Succeeded
        };
        assert_eq!(runs[0].status, want, "{job}: {runs:#?}");
    }
    smtp.wait_messages(1, 20 * SEC);
    crate::harness::wait_for(20 * SEC, "the webhook", || {
        (!http.posts().is_empty()).then_some(())
    });
    let api = crate::http::Api::tcp(port, SECRETS[0].1);
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
    let port = crate::harness::free_port();
    let mut d = Daemon::prepare(
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ env = \"HG_API_TOKEN\" }}\n"),
        "[jobs.a]\nevery = \"1h\"\ncommand = \"true\"\n",
    );
    d.extra_env.push(("HG_API_TOKEN".into(), TOKEN.into()));
    d.spawn_ready();
    let tcp = crate::http::Api::tcp(port, TOKEN);
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
    let socket = crate::http::Api::socket(&d.path("hourglass.sock"));
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
    let events = crate::http::Api::socket(&sock).get("/v1/events");
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
