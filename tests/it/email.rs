//! Email jobs, HTTP jobs and notifications against real servers on loopback: aiosmtpd with
//! STARTTLS and AUTH (certificates minted here), and a Python HTTP server.

use std::time::Duration;

use crate::harness::free_port;
use crate::harness::{Daemon, at_in, finished, wait_for};
use crate::servers::{Http, Smtp};
use hourglass::store::RunStatus;
use nix::sys::signal::Signal;

const SEC: Duration = Duration::from_secs(1);
const PASSWORD: &str = "s3cret-Pa55word";

fn start_with(main: &str, jobs: &str, password: &str) -> Daemon {
    let mut d = Daemon::prepare(main, jobs);
    d.extra_env.push(("SMTP_PASSWORD".into(), password.into()));
    d.spawn_ready();
    d
}

/// A one-shot email job `mail` due in 2 s, to `to`, with extra job keys.
fn mail_job(to: &str, extra: &str) -> String {
    format!(
        "[jobs.mail]\nat = \"{}\"\n{extra}[jobs.mail.email]\n\
         from = \"a@example.com\"\nto = [\"{to}\"]\nsubject = \"s\"\nbody = \"b\"\n",
        at_in(2)
    )
}

/// The header's value in a raw message (first occurrence, unfolded).
fn header(msg: &str, name: &str) -> Option<String> {
    let head = msg.split("\n\n").next().unwrap_or("");
    let mut lines = head.lines().peekable();
    while let Some(l) = lines.next() {
        if let Some(v) = l.strip_prefix(&format!("{name}: ")) {
            let mut v = v.trim().to_string();
            while lines.peek().is_some_and(|n| n.starts_with([' ', '\t'])) {
                v.push(' ');
                v.push_str(lines.next().unwrap().trim());
            }
            return Some(v);
        }
    }
    None
}

#[test]
fn an_email_job_delivers_headers_body_and_attachment() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(tmp.path(), PASSWORD);
    let attachment = tmp.path().join("report.bin");
    let bytes: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&attachment, &bytes).unwrap();
    let at = at_in(2);
    let jobs = format!(
        "[jobs.report]\nat = \"{at}\"\ntimezone = \"Europe/Berlin\"\n[jobs.report.email]\n\
         from = \"Reports <reports@example.com>\"\nto = [\"Ops <ops@example.com>\", \"b@example.com\"]\n\
         bcc = [\"audit@example.com\"]\nreply_to = \"noreply@example.com\"\n\
         subject = \"Report {{{{ job }}}} for {{{{ date }}}}\"\n\
         body = \"Run {{{{ run_id }}}} at {{{{ scheduled_for }}}}\\nLink: {{{{ env.REPORT_URL }}}}\"\n\
         html = \"<p>Run {{{{ run_id }}}}</p>\"\nenv = [\"REPORT_URL\"]\nattachments = [\"{}\"]\n",
        tmp.path().join("*.bin").display()
    );
    let mut d = Daemon::prepare(&smtp.config("main", "SMTP_PASSWORD", ""), &jobs);
    d.extra_env.push(("SMTP_PASSWORD".into(), PASSWORD.into()));
    d.extra_env
        .push(("REPORT_URL".into(), "https://example.com/r/1".into()));
    d.spawn_ready();
    let runs = d.wait_runs("report", 30 * SEC, "the send", |r| {
        r.len() == 1 && finished(&r[0])
    });
    let run = &runs[0];
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}\n{}", d.log());
    let msgs = smtp.wait_messages(1, 10 * SEC);
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    let berlin = chrono::DateTime::parse_from_rfc3339(&at)
        .unwrap()
        .with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(
        header(m, "Subject").unwrap(),
        format!("Report report for {}", berlin.format("%Y-%m-%d"))
    );
    assert_eq!(header(m, "From").unwrap(), "Reports <reports@example.com>");
    assert_eq!(
        header(m, "To").unwrap(),
        "Ops <ops@example.com>, b@example.com"
    );
    assert_eq!(header(m, "Reply-To").unwrap(), "noreply@example.com");
    assert!(header(m, "Bcc").is_none(), "Bcc must not be in the message");
    let rcpt = header(m, "X-RcptTo").unwrap();
    assert!(
        rcpt.contains("audit@example.com") && rcpt.contains("ops@example.com"),
        "{rcpt}"
    );
    let id = header(m, "Message-ID").unwrap();
    let details = run.details.as_ref().unwrap();
    assert_eq!(details["message_id"], id.as_str());
    assert_eq!(details["recipients"], 3);
    assert!(
        m.contains(&format!(
            "Run {} at {}",
            run.id,
            berlin.format("%Y-%m-%d %H:%M:%S CET")
        )),
        "{m}"
    );
    assert!(m.contains("Link: https://example.com/r/1"));
    assert!(m.contains("text/html") && m.contains(&format!("<p>Run {}</p>", run.id)));
    // The attachment, base64 in the message, decodes to the file's bytes.
    let part = m
        .split("filename=\"report.bin\"")
        .nth(1)
        .expect("attachment part");
    let b64: String = part
        .split("\n\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .collect();
    assert_eq!(decode_base64(&b64), bytes);
}

fn decode_base64(s: &str) -> Vec<u8> {
    let table = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 {c}"),
        }
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= table(*c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn a_wrong_password_fails_clearly_and_is_never_written_anywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(tmp.path(), PASSWORD);
    let wrong = "Wr0ng-Pa55word-xyz";
    let jobs = mail_job("b@example.com", "retries = 2\nretry_backoff = \"100ms\"\n");
    let d = start_with(&smtp.config("main", "SMTP_PASSWORD", ""), &jobs, wrong);
    let runs = d.wait_runs("mail", 30 * SEC, "the failure", |r| {
        r.len() == 1 && finished(&r[0])
    });
    let r = &runs[0];
    assert_eq!(r.status, RunStatus::Failed);
    // 535 is permanent: no retry.
    assert_eq!(r.attempt, 1);
    let err = r.error.as_deref().unwrap();
    assert!(err.contains("535"), "{err}");
    assert!(err.contains("SMTP server \"main\""), "{err}");
    let db = std::fs::read(d.path("history.db")).unwrap();
    let wal = std::fs::read(d.path("history.db-wal")).unwrap_or_default();
    for hay in [&db, &wal] {
        assert!(
            !hay.windows(wrong.len()).any(|w| w == wrong.as_bytes()),
            "password in the database"
        );
    }
    assert!(!d.log().contains(wrong), "password in the log");
    assert!(smtp.messages().is_empty());
}

#[test]
fn a_server_that_is_down_is_retried_then_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let main = format!(
        "[smtp.down]\nhost = \"localhost\"\nport = {port}\ntls = \"none\"\nconnect_timeout = \"2s\"\n"
    );
    let jobs = mail_job("b@example.com", "retries = 2\nretry_backoff = \"100ms\"\n");
    let _keep = tmp;
    let d = start_with(&main, &jobs, "unused");
    let runs = d.wait_runs("mail", 30 * SEC, "three attempts", |r| {
        r.len() == 3 && r.iter().all(finished)
    });
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(r.attempt as usize, i + 1);
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .to_lowercase()
                .contains("connect"),
            "{r:?}"
        );
    }
}

#[test]
fn a_stalling_server_times_out_without_delaying_other_jobs() {
    // Accepts connections and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(4) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let main = format!("[smtp.stall]\nhost = \"localhost\"\nport = {port}\ntls = \"none\"\n");
    let jobs = format!(
        "[jobs.mail]\nat = \"{}\"\ntimeout = \"2s\"\n[jobs.mail.email]\n\
         from = \"a@example.com\"\nto = [\"b@example.com\"]\nsubject = \"s\"\nbody = \"b\"\n\
         [jobs.tick]\nschedule = \"* * * * * *\"\ncommand = \"true\"\n",
        at_in(2)
    );
    let d = start_with(&main, &jobs, "unused");
    let runs = d.wait_runs("mail", 30 * SEC, "the timeout", |r| {
        r.len() == 1 && finished(&r[0])
    });
    assert_eq!(runs[0].status, RunStatus::TimedOut, "{runs:?}");
    let started = runs[0].started_at.unwrap();
    let ended = runs[0].finished_at.unwrap();
    // Every second while the send hung was fired on time.
    let ticks = d.wait_runs("tick", 20 * SEC, "ticks after the timeout", |r| {
        r.iter().any(|t| t.scheduled_for > ended)
    });
    let during: Vec<_> = ticks
        .iter()
        .filter(|t| {
            let s = t.scheduled_for;
            s > started && s < ended
        })
        .collect();
    assert!(!during.is_empty(), "{ticks:#?}");
    for t in during {
        assert!(t.lateness_ms.unwrap() < 500, "{t:?}");
    }
    drop(held);
}

#[test]
fn failure_then_recovery_notify_by_email_and_webhook_once_each() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(tmp.path(), PASSWORD);
    let hook = Http::start(tmp.path());
    let flag = tmp.path().join("ok");
    let main = format!(
        "{}\n[notify]\non = [\"failure\", \"recovery\"]\nmin_interval = \"1h\"\n\
         [notify.email]\nfrom = \"hourglass@example.com\"\nto = [\"ops@example.com\"]\n\
         [notify.webhook]\nurl = \"{}\"\nsecret_headers = {{ Authorization = {{ env = \"HOOK_TOKEN\" }} }}\n",
        smtp.config("main", "SMTP_PASSWORD", ""),
        hook.url("/hook")
    );
    let jobs = format!(
        "[jobs.flaky]\nevery = \"1s\"\ncommand = \"echo checking; test -f {}\"\n",
        flag.display()
    );
    let mut d = Daemon::prepare(&main, &jobs);
    d.extra_env.push(("SMTP_PASSWORD".into(), PASSWORD.into()));
    d.extra_env
        .push(("HOOK_TOKEN".into(), "Bearer hook-secret-123".into()));
    d.spawn_ready();
    // Several failures, one notice per channel.
    d.wait_runs("flaky", 30 * SEC, "three failures", |r| {
        r.iter().filter(|r| r.status == RunStatus::Failed).count() >= 3
    });
    let first = smtp.wait_messages(1, 10 * SEC);
    wait_for(10 * SEC, "the failure webhook", || {
        (!hook.posts().is_empty()).then_some(())
    });
    assert_eq!(first.len(), 1);
    assert_eq!(hook.posts().len(), 1);
    let m = &first[0];
    assert_eq!(
        header(m, "Subject").unwrap().split(" on ").next().unwrap(),
        "[hourglass] flaky failed"
    );
    assert!(m.contains("hourglass show "), "{m}");
    assert!(m.contains("exited with status 1"));
    let post = &hook.posts()[0];
    assert_eq!(post["event"], "failure");
    assert_eq!(post["job"], "flaky");
    assert_eq!(post["status"], "failed");
    assert_eq!(post["output_tail"], "checking\n");
    assert!(
        post["hint"]
            .as_str()
            .unwrap()
            .starts_with("hourglass show ")
    );
    assert!(
        hook.headers(1)
            .to_lowercase()
            .contains("authorization: bearer hook-secret-123")
    );
    // Recovery.
    std::fs::write(&flag, "").unwrap();
    let msgs = smtp.wait_messages(2, 20 * SEC);
    wait_for(10 * SEC, "the recovery webhook", || {
        (hook.posts().len() >= 2).then_some(())
    });
    assert!(
        header(&msgs[1], "Subject")
            .unwrap()
            .starts_with("[hourglass] flaky recovered")
    );
    assert_eq!(hook.posts()[1]["event"], "recovery");
    // Further successes say nothing.
    let n = d.runs_of("flaky").len();
    d.wait_runs("flaky", 20 * SEC, "more successes", |r| r.len() >= n + 2);
    assert_eq!(smtp.messages().len(), 2);
    assert_eq!(hook.posts().len(), 2);
    assert!(!d.log().contains("hook-secret-123"));
}

#[test]
fn http_jobs_check_the_status() {
    let tmp = tempfile::tempdir().unwrap();
    let http = Http::start(tmp.path());
    let jobs = format!(
        "[jobs.ok]\nat = \"{at}\"\n[jobs.ok.http]\nurl = \"{ok}\"\n\
         [jobs.missing]\nat = \"{at}\"\n[jobs.missing.http]\nurl = \"{missing}\"\n\
         [jobs.expected]\nat = \"{at}\"\n[jobs.expected.http]\nmethod = \"POST\"\nurl = \"{missing}\"\nexpect_status = [404]\nbody = '{{\"a\": 1}}'\n\
         [jobs.refused]\nat = \"{at}\"\n[jobs.refused.http]\nurl = \"http://127.0.0.1:{port}/\"\n",
        at = at_in(2),
        ok = http.url("/status/200"),
        missing = http.url("/status/404"),
        port = free_port(),
    );
    let d = Daemon::start("", &jobs);
    let get = |job: &str| {
        d.wait_runs(job, 20 * SEC, "the request", |r| {
            r.len() == 1 && finished(&r[0])
        })
        .remove(0)
    };
    let ok = get("ok");
    assert_eq!(ok.status, RunStatus::Succeeded);
    assert_eq!(ok.details.as_ref().unwrap()["status"], 200);
    let missing = get("missing");
    assert_eq!(missing.status, RunStatus::Failed);
    assert!(
        missing
            .error
            .as_deref()
            .unwrap()
            .contains("unexpected HTTP status 404"),
        "{missing:?}"
    );
    let expected = get("expected");
    assert_eq!(expected.status, RunStatus::Succeeded, "{expected:?}");
    let v = d.show_json(expected.id);
    assert_eq!(v["output"], "status 404 for POST /status/404\n");
    // What the request cost, in place of a process's usage (which an HTTP run has none of).
    let details = &v["details"];
    assert_eq!(details["bytes_sent"], 8, "{v}");
    assert_eq!(details["bytes_received"], 32, "{v}");
    assert!(
        details["response_ms"].is_u64() && details["transfer_ms"].is_u64(),
        "{v}"
    );
    assert_eq!(v["usage"], serde_json::Value::Null, "{v}");
    let refused = get("refused");
    assert_eq!(refused.status, RunStatus::Failed);
    assert!(
        refused
            .error
            .as_deref()
            .unwrap()
            .contains("GET http://127.0.0.1"),
        "{refused:?}"
    );
}

#[test]
fn config_errors_for_email_and_http_name_the_field() {
    let d = Daemon::prepare(
        "[smtp.main]\nhost = \"localhost\"\npassword = { env = \"NOPE_NOT_SET\" }\nusername = \"u\"\n",
        "[jobs.m]\nevery = \"1h\"\n[jobs.m.email]\nfrom = \"not an address\"\nto = [\"ok@example.com\"]\nsubject = \"{{ job\"\nbody = \"b\"\n\
         [jobs.h]\nevery = \"1h\"\n[jobs.h.http]\nurl = \"ftp://example.com/\"\n",
    );
    let out = d.cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "hourglass.toml: smtp.main.password: environment variable NOPE_NOT_SET is not set"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            r#"jobs.d/jobs.toml: job "m": email.from: "not an address" is not an email address"#
        ),
        "{err}"
    );
    assert!(
        err.contains(r#"job "m": email.subject: template error"#),
        "{err}"
    );
    assert!(
        err.contains(r#"job "h": http.url: scheme "ftp" is not http or https"#),
        "{err}"
    );
}

#[test]
fn a_rejected_recipient_fails_with_the_servers_words_and_no_retry() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(tmp.path(), PASSWORD);
    let jobs = mail_job(
        "gone@reject.invalid",
        "retries = 2\nretry_backoff = \"100ms\"\n",
    );
    let d = start_with(&smtp.config("main", "SMTP_PASSWORD", ""), &jobs, PASSWORD);
    let runs = d.wait_runs("mail", 30 * SEC, "the failure", |r| {
        r.len() == 1 && finished(&r[0])
    });
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(runs[0].attempt, 1, "a 5xx is not retried");
    let err = runs[0].error.as_deref().unwrap();
    assert!(
        err.contains("550") && err.contains("mailbox unavailable"),
        "{err}"
    );
    assert!(smtp.messages().is_empty());
}

/// A runaway template: with time to spend its step budget (`mail`), its run fails naming the
/// budget; with a timeout shorter than spending it takes (`cut`, 100 ms: the budget takes
/// about half a second in the tests' debug build, seconds on a loaded machine), its run ends
/// at the timeout, not when the rendering does. Every-second work goes on meanwhile, and the
/// daemon stops on one signal.
#[test]
fn a_runaway_template_fails_its_run_within_its_timeout_and_never_wedges_the_daemon() {
    let port = free_port();
    let main = format!("[smtp.unused]\nhost = \"localhost\"\nport = {port}\ntls = \"none\"\n");
    let loops = "{% for a in range(10000) %}{% for b in range(10000) %}\
                 {% for c in range(10000) %}x{% endfor %}{% endfor %}{% endfor %}";
    let runaway = |name: &str, timeout: &str| {
        mail_job("b@example.com", &format!("timeout = \"{timeout}\"\n"))
            .replace("subject = \"s\"", &format!("subject = \"{loops}\""))
            .replace("[jobs.mail", &format!("[jobs.{name}"))
    };
    let jobs = runaway("mail", "60s")
        + &runaway("cut", "100ms")
        + "[jobs.tick]\nschedule = \"* * * * * *\"\ncommand = \"true\"\n";
    let mut d = start_with(&main, &jobs, "unused");
    let cut = d.wait_runs("cut", 30 * SEC, "the cut run to end", |r| {
        r.len() == 1 && finished(&r[0])
    });
    let cut = &cut[0];
    assert_eq!(cut.status, RunStatus::TimedOut, "{cut:?}");
    assert_eq!(
        cut.error.as_deref(),
        Some("timed out after 100ms: subject: template: stopped before its rendering ended"),
    );
    assert!(cut.duration_ms.unwrap() < 2500, "{cut:?}");
    let runs = d.wait_runs("mail", 90 * SEC, "the run to end", |r| {
        r.len() == 1 && finished(&r[0])
    });
    let run = &runs[0];
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.as_deref().unwrap();
    assert!(
        error.contains("subject: template: stopped after"),
        "{error}"
    );
    let ticks = d.runs_of("tick");
    assert!(
        ticks.iter().all(|r| r.lateness_ms.unwrap_or(0) < 1000),
        "{ticks:?}"
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(10 * SEC).success());
}

/// An email job that runs after a failed parent gets the parent's run in its template
/// (`parent`, `parents`): the failure path's message names what failed.
#[test]
fn an_email_after_a_failed_parent_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(tmp.path(), PASSWORD);
    let jobs = "[jobs.backup]\nat = \"2099-01-01T00:00:00Z\"\ncommand = \"exit 3\"\n\
         [jobs.alarm]\nafter = { jobs = [\"backup\"], when = \"any_failed\" }\n[jobs.alarm.email]\n\
         from = \"a@example.com\"\nto = [\"ops@example.com\"]\n\
         subject = \"{{ parent.job }} {{ parent.status }}\"\n\
         body = \"run {{ parent.run_id }} exit {{ parent.exit_code }}; {{ parents | length }} parent\"\n";
    let d = start_with(&smtp.config("main", "SMTP_PASSWORD", ""), jobs, PASSWORD);
    assert!(d.cli(&["trigger", "backup"]).status.success());
    let backup =
        d.wait_runs("backup", 30 * SEC, "the backup", |r| r.iter().any(finished))[0].clone();
    let runs = d.wait_runs("alarm", 30 * SEC, "the alarm", |r| r.iter().any(finished));
    assert_eq!(runs[0].status, RunStatus::Succeeded, "{}", d.log());
    let msgs = smtp.wait_messages(1, 10 * SEC);
    assert_eq!(
        header(&msgs[0], "Subject").as_deref(),
        Some("backup failed")
    );
    assert!(
        msgs[0].contains(&format!("run {} exit 3; 1 parent", backup.id)),
        "{}",
        msgs[0]
    );
}
