//! The API on a real daemon, through a real HTTP client on its unix socket and on TCP: every
//! endpoint; the token off loopback; pause and resume (across a restart); `/healthz` while
//! the history database fails; `/metrics` checked by Prometheus's `promtool` and against the
//! history rows; `history --follow` and `show --follow` as runs go.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{BIN, Daemon, wait_for};
use crate::http::Api;
use hourglass::store::{RunStatus, Trigger};

const SEC: Duration = Duration::from_secs(1);

/// Runs `promtool check metrics` (Debian package `prometheus`) on `text`; its complaints.
pub(crate) fn promtool(text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is not installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The value of one sample line (`name{labels} value`) of the metrics text, if present.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub(crate) const JOBS: &str = r#"
[jobs.tick]
every = "1s"
command = "echo tick"

[jobs.slow]
every = "1h"
command = "echo line 1; sleep 1; echo line 2; sleep 1; echo line 3"

[jobs.broken]
every = "1h"
command = "exit 3"
"#;

#[test]
fn every_endpoint_answers_on_the_socket() {
    let d = Daemon::start("", JOBS);
    let api = Api::socket(&d.path("hourglass.sock"));
    let me = format!("uid:{}", nix::unistd::getuid().as_raw());

    let status = api.get("/v1/status");
    assert_eq!(status["jobs"], 3);
    assert_eq!(
        status["database"],
        d.path("history.db").display().to_string()
    );
    assert_eq!(api.get("/healthz")["status"], "ok");

    let jobs = api.get("/v1/jobs");
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["broken", "slow", "tick"]);
    let slow = api.get("/v1/jobs/slow");
    assert_eq!(slow["kind"], "command");
    assert_eq!(slow["next"].as_array().unwrap().len(), 5);
    assert_eq!(api.call("GET", "/v1/jobs/nope", None, None).0, 404);

    trigger_streams_its_output(&api);
    keyset_pages_go_on(&api, &d);
    actions_are_in_the_events_log(&api, &me);
    // The socket is 0660.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(d.path("hourglass.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
}

#[test]
fn metrics_pass_promtool_and_match_the_history() {
    let d = Daemon::start("", JOBS);
    let api = Api::socket(&d.path("hourglass.sock"));
    api.post("/v1/jobs/broken/trigger", Value::Null);
    wait_for(20 * SEC, "4 runs of tick", || {
        (d.runs_of("tick").len() >= 4).then_some(())
    });
    // Quiet: no new run while the rows and the counters are compared. The job list (served
    // from a cache a second old at most) shows the pause at once: the API reads its writes.
    let paused = |jobs: &Value| {
        jobs.as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "tick")
            .unwrap()["paused"]
            .clone()
    };
    assert_eq!(paused(&api.get("/v1/jobs")), Value::Null);
    api.post("/v1/jobs/tick/pause", Value::Null);
    assert_ne!(paused(&api.get("/v1/jobs")), Value::Null);
    let runs = wait_for(10 * SEC, "every row ended", || {
        let runs = d.runs();
        runs.iter().all(crate::harness::finished).then_some(runs)
    });
    let (code, text) = api.call("GET", "/metrics", None, None);
    assert_eq!(code, 200);
    promtool(&text).unwrap_or_else(|e| panic!("promtool check metrics: {e}\n{text}"));
    let count = |job: &str, status: &str| {
        let status: RunStatus = status.parse().unwrap();
        runs.iter()
            .filter(|r| r.job == job && r.status == status)
            .count() as f64
    };
    // Every job shows its succeeded and failed counts, 0 for those it never had.
    let jobs = ["tick", "broken", "slow"];
    for (job, status) in jobs
        .iter()
        .flat_map(|j| [(*j, "succeeded"), (*j, "failed")])
    {
        let series = format!("hourglass_runs_total{{job=\"{job}\",status=\"{status}\"}}");
        assert_eq!(
            sample(&text, &series),
            Some(count(job, status)),
            "{series}\n{text}"
        );
    }
    assert_eq!(
        sample(&text, "hourglass_job_paused{job=\"tick\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "hourglass_runs_running"), Some(0.0));
    assert!(
        sample(
            &text,
            "hourglass_job_last_success_timestamp_seconds{job=\"tick\"}"
        )
        .is_some()
    );
    assert!(
        sample(
            &text,
            "hourglass_job_next_firing_timestamp_seconds{job=\"slow\"}"
        )
        .is_some()
    );
    assert_eq!(
        sample(&text, "hourglass_firing_lateness_seconds_count"),
        Some(runs.len() as f64)
    );
    assert!(text.contains("hourglass_build_info{version=\""));
}

#[test]
fn tcp_needs_the_token_and_a_wrong_one_does_nothing() {
    let port = crate::harness::free_port();
    let mut d = Daemon::prepare(
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ env = \"HG_API_TOKEN\" }}\n"),
        JOBS,
    );
    d.extra_env
        .push(("HG_API_TOKEN".into(), "s3cret-token-of-20b".into()));
    d.spawn_ready();
    let api = Api::tcp(port, "s3cret-token-of-20b");
    for token in [None, Some("wrong")] {
        for (method, path) in [
            ("GET", "/v1/jobs"),
            ("POST", "/v1/jobs/slow/trigger"),
            ("GET", "/metrics"),
        ] {
            let (code, body) = api.call(method, path, token, None);
            assert_eq!(code, 401, "{method} {path} with {token:?}: {body}");
        }
    }
    let token = Some("s3cret-token-of-20b");
    let (code, body) = api.call("GET", "/v1/jobs", token, None);
    assert_eq!(code, 200, "{body}");
    // The scheme's case does not matter (RFC 9110).
    let (code, body) = api.call_with(
        "GET",
        "/v1/jobs",
        &[("authorization", "bearer s3cret-token-of-20b")],
        None,
    );
    assert_eq!(code, 200, "{body}");
    // A change must be JSON: a bodyless or text/plain POST (what a page of another site can
    // send without asking) is refused even with the token.
    let (code, body) = api.call("POST", "/v1/jobs/slow/trigger", token, None);
    assert_eq!(code, 415, "{body}");
    // Nothing was done by the refused triggers: no run of slow, no event.
    std::thread::sleep(SEC);
    assert!(d.runs_of("slow").is_empty());
    let (code, body) = api.call("GET", "/v1/events", token, None);
    assert_eq!((code, body.as_str()), (200, "[]"));
    let (code, body) = api.call(
        "POST",
        "/v1/jobs/slow/trigger",
        token,
        Some(serde_json::json!({})),
    );
    assert_eq!(code, 200, "{body}");
    let (_, events) = api.call("GET", "/v1/events", token, None);
    assert!(events.contains("\"actor\":\"token\""), "{events}");
    // The token is nowhere in the log; the wrong one's client address is.
    assert!(!d.log().contains("s3cret-token"));
    assert!(d.log().contains("client=127.0.0.1"), "{}", d.log());
}

#[test]
fn a_tcp_listener_without_a_token_is_refused_by_check_loopback_too() {
    for addr in ["0.0.0.0:8787", "127.0.0.1:8787"] {
        let d = Daemon::prepare(&format!("[api]\nlisten = \"{addr}\"\n"), JOBS);
        let out = d.cli(&["check"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("api.token: required with api.listen ({addr})"))
                && err.contains("openssl rand -hex 32"),
            "{err}"
        );
    }
}

#[test]
fn a_paused_job_does_not_run_until_resumed_even_across_a_restart() {
    let mut d = Daemon::start("", "[jobs.tick]\nevery = \"1s\"\ncommand = \"true\"\n");
    d.wait_runs("tick", 20 * SEC, "a first run", |r| !r.is_empty());
    let out = d.cli(&["pause", "tick"]);
    assert!(out.status.success(), "{out:?}");
    let paused_at = Instant::now();
    let after_pause = |d: &Daemon| {
        let resumed = d.runs_of("tick");
        resumed.len()
    };
    // Rows that were on their way when it was paused are in; then nothing for 5 firings.
    std::thread::sleep(SEC);
    let n = after_pause(&d);
    std::thread::sleep(5 * SEC);
    assert_eq!(after_pause(&d), n, "runs while paused");
    let list = String::from_utf8_lossy(&d.cli(&["list"]).stdout).to_string();
    assert!(list.contains("paused since"), "{list}");
    // A restart keeps the pause.
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(20 * SEC);
    d.spawn_ready();
    std::thread::sleep(3 * SEC);
    assert_eq!(after_pause(&d), n, "runs after the restart while paused");
    let status = String::from_utf8_lossy(&d.cli(&["status"]).stdout).to_string();
    assert!(status.contains("paused     tick since"), "{status}");
    let out = d.cli(&["resume", "tick"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("is resumed"),
        "{out:?}"
    );
    d.wait_runs("tick", 10 * SEC, "runs after the resume", |r| {
        r.len() >= n + 2
    });
    // Nothing that passed under the pause was caught up: the new rows are after the resume.
    let runs = d.runs_of("tick");
    let new = &runs[n..];
    let gap = new[0].scheduled_for - runs[n - 1].scheduled_for;
    assert!(
        gap.num_seconds() as u64 >= paused_at.elapsed().as_secs() - 3,
        "caught up: {new:?}"
    );
    assert!(
        new.iter().all(|r| r.trigger == Trigger::Schedule),
        "{new:?}"
    );
}

/// A job's last success survives a restart in `hourglass_job_last_success_timestamp_seconds`
/// (the README's staleness alert compares it with the time): a job that succeeded, then only
/// fails after the restart, still shows the end of its last successful run.
#[test]
fn the_last_success_metric_is_read_from_the_history_at_start() {
    let mut d = Daemon::start("", "[jobs.flaky]\nevery = \"1s\"\ncommand = \"true\"\n");
    d.wait_runs("flaky", 20 * SEC, "a success", |r| {
        r.iter().any(|r| r.status == RunStatus::Succeeded)
    });
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(20 * SEC);
    let last = d
        .runs_of("flaky")
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .filter_map(|r| r.finished_at)
        .max()
        .unwrap();
    d.write_jobs(
        "jobs.toml",
        "[jobs.flaky]\nevery = \"1s\"\ncommand = \"false\"\n",
    );
    d.spawn_ready();
    let api = Api::socket(&d.path("hourglass.sock"));
    let series = "hourglass_job_last_success_timestamp_seconds{job=\"flaky\"}";
    let shown = wait_for(10 * SEC, "the last success in the metrics", || {
        let (_, text) = api.call("GET", "/metrics", None, None);
        sample(&text, series)
    });
    assert_eq!(shown, last.timestamp_millis() as f64 / 1000.0);
}

#[test]
fn blank_whitespace_and_short_tokens_are_refused_by_check_and_at_start() {
    let port = crate::harness::free_port();
    let cases: [(&str, &str, &str); 5] = [
        ("file", "", "the token is empty"),
        ("file", "  \t \n", "the token is empty"),
        (
            "file",
            "a\n",
            "the token is 1 bytes long; a token is at least 16 bytes",
        ),
        ("env", "", "the token is empty"),
        ("file", "two words here and more", "the token has blanks"),
    ];
    for (source, value, expect) in cases {
        let reference = match source {
            "file" => "{ file = \"api-token\" }",
            _ => "{ env = \"HG_API_TOKEN\" }",
        };
        let mut d = Daemon::prepare(
            &format!("[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = {reference}\n"),
            JOBS,
        );
        std::fs::write(d.path("api-token"), value).unwrap();
        d.extra_env.push(("HG_API_TOKEN".into(), value.into()));
        let check = Command::new(BIN)
            .arg("--config")
            .arg(d.config())
            .arg("check")
            .current_dir(d.dir.path())
            .env("HG_API_TOKEN", value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&check.stderr);
        assert!(!check.status.success(), "{value:?} accepted");
        assert!(
            err.contains("api.token: ") && err.contains(expect),
            "{value:?}: {err}"
        );
        assert!(err.contains("openssl rand -hex 32"), "{err}");
        // The daemon refuses to start on it, saying the same.
        d.spawn();
        let status = d.wait_exit(20 * SEC);
        assert!(!status.success());
        assert!(d.log().contains(expect), "{}", d.log());
    }
    // At a reload too: the configuration is rejected and the running one stays.
    let mut d = Daemon::prepare(
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ file = \"api-token\" }}\n"),
        JOBS,
    );
    std::fs::write(d.path("api-token"), "a-token-of-24-bytes-long\n").unwrap();
    d.spawn_ready();
    std::fs::write(d.path("api-token"), "short\n").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(20 * SEC, "the reload's rejection", || {
        d.log().contains("configuration rejected").then_some(())
    });
    assert!(d.log().contains("the token is 5 bytes long"), "{}", d.log());
    let (code, _) = Api::tcp(port, "a-token-of-24-bytes-long").call(
        "GET",
        "/v1/jobs",
        Some("a-token-of-24-bytes-long"),
        None,
    );
    assert_eq!(code, 200);
}

/// A trigger starts a run; its output streams as it grows, then its end.
fn trigger_streams_its_output(api: &Api) {
    let t = api.post("/v1/jobs/slow/trigger", Value::Null);
    assert_eq!(t["outcome"], "started", "{t}");
    let run = t["run_id"].as_i64().unwrap();
    let (code, sse) = api.call("GET", &format!("/v1/runs/{run}/output"), None, None);
    assert_eq!(code, 200);
    let text: String = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, "line 1\nline 2\nline 3\n");
    assert!(sse.contains("event: end"), "{sse}");
    let one = api.get(&format!("/v1/runs/{run}"));
    assert_eq!(one["status"], "succeeded");
    assert_eq!(one["output"], "line 1\nline 2\nline 3\n");
    assert_eq!(api.call("GET", "/v1/runs/999999", None, None).0, 404);
}

/// Keyset pages: the second page goes on where the first ended, nothing twice.
fn keyset_pages_go_on(api: &Api, d: &Daemon) {
    wait_for(20 * SEC, "6 runs of tick", || {
        (d.runs_of("tick").len() >= 6).then_some(())
    });
    let p1 = api.get("/v1/runs?job=tick&limit=3");
    let ids1: Vec<i64> = p1["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    let next = p1["next"].as_str().unwrap();
    let p2 = api.get(&format!("/v1/runs?job=tick&limit=3&after={next}"));
    let ids2: Vec<i64> = p2["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids1.len(), 3);
    assert_eq!(ids2.len(), 3);
    assert!(
        ids1.windows(2).all(|w| w[0] > w[1]) && ids1[2] > ids2[0],
        "{ids1:?} then {ids2:?}"
    );
    assert_eq!(api.call("GET", "/v1/runs?status=bogus", None, None).0, 400);
}

/// Pause with an end, resume; each action is in the events log with who asked.
fn actions_are_in_the_events_log(api: &Api, me: &str) {
    let p = api.post(
        "/v1/jobs/broken/pause",
        serde_json::json!({ "until": "1h" }),
    );
    assert_eq!(p["actor"], me);
    assert!(api.get("/v1/jobs/broken")["paused"]["until"].is_string());
    assert_eq!(
        api.call(
            "POST",
            "/v1/jobs/broken/pause",
            None,
            Some(serde_json::json!({ "until": "yesterday" }))
        )
        .0,
        400
    );
    assert_eq!(
        api.post("/v1/jobs/broken/resume", Value::Null)["was_paused"],
        true
    );
    let events = api.get("/v1/events");
    let actions: Vec<(&str, &str, &str)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["job"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("resume", "broken", me),
            ("pause", "broken", me),
            ("trigger", "slow", me)
        ]
    );
}
