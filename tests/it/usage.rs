//! What each run cost, from the kernel's own accounting, on a real daemon: a job that takes
//! 200 MiB and burns 2 s of CPU, and one whose child does the same, each have a row saying so;
//! `show`, `history`, `stats`, the API, the metrics (checked by promtool) and the dashboard
//! show the same figures as the rows.

use std::time::Duration;

use serde_json::Value;

use crate::dashboard::{TOKEN, get_page, http_sign_in};
use crate::harness::{Daemon, at_in, finished};
use crate::http::Api;
use hourglass::store::{RunRow, RunStatus, Usage, bytes_in_words, cpu_in_words};

const SEC: Duration = Duration::from_secs(1);

/// Takes 200 MiB (written, so resident) and burns 2 s of its own CPU time.
const WORK: &str = "import time\\nb = b'x' * (200 << 20)\\nt = time.process_time()\\n\
                    while time.process_time() - t < 2.0: pass";

fn jobs(at: &str) -> String {
    format!(
        r#"
[jobs.alone]
at = "{at}"
command = ["python3", "-c", "{WORK}"]

[jobs.forked]
at = "{at}"
env = {{ WORK = "{WORK}" }}
command = "python3 -c \"$WORK\"; echo the child is done"
"#
    )
}

fn usage_of(r: &RunRow) -> Usage {
    r.usage
        .unwrap_or_else(|| panic!("run {} of {} has no usage: {r:?}", r.id, r.job))
}

#[test]
fn a_run_s_cost_is_recorded_and_shown_the_same_everywhere() {
    let port = crate::harness::free_port();
    let mut d = Daemon::prepare(
        &format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ env = \"HOURGLASS_TEST_DASHBOARD_TOKEN\" }}\n"
        ),
        &jobs(&at_in(2)),
    );
    d.extra_env
        .push(("HOURGLASS_TEST_DASHBOARD_TOKEN".into(), TOKEN.into()));
    d.spawn_ready();
    let runs = crate::harness::wait_for(60 * SEC, "both runs ended", || {
        let runs = d.runs();
        (runs.len() == 2 && runs.iter().all(finished)).then_some(runs)
    });
    for r in &runs {
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}\n{}", d.log());
        let u = usage_of(r);
        // The work's own 2 s, in the main process or in the child the shell waited for.
        assert!(u.cpu_user_us + u.cpu_system_us >= 1_800_000, "{u:?}");
        assert!(u.peak_rss_bytes >= Some(200 << 20), "{u:?}");
        assert!(u.voluntary_switches + u.involuntary_switches > 0, "{u:?}");
    }
    shown_by_the_cli(&d, &runs);
    shown_by_the_api_and_the_metrics(&d, &runs);
    shown_by_the_dashboard(port, &runs);
}

fn shown_by_the_cli(d: &Daemon, runs: &[RunRow]) {
    for r in runs {
        let u = usage_of(r);
        let peak = bytes_in_words(u.peak_rss_bytes.unwrap_or(0).unsigned_abs());
        let show = String::from_utf8(d.cli(&["show", &r.id.to_string()]).stdout).unwrap();
        assert!(
            show.contains(&format!("cpu:           {}", u.cpu_in_words())),
            "{show}"
        );
        assert!(show.contains(&format!("peak memory:   {peak}")), "{show}");
        let history = String::from_utf8(d.cli(&["history", "--job", &r.job]).stdout).unwrap();
        let line = history.lines().nth(1).unwrap_or_default();
        assert!(line.contains(&cpu_in_words(u.cpu_us())), "{history}");
        assert!(line.contains(&peak), "{history}");
    }
    let stats = d.cli(&["stats", "--json"]);
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    for s in stats.as_array().unwrap() {
        let r = runs.iter().find(|r| r.job == s["job"]).unwrap();
        let u = usage_of(r);
        // One run each: every percentile is its figure.
        for (field, value) in [
            ("cpu_p50_us", u.cpu_us()),
            ("cpu_p95_us", u.cpu_us()),
            ("peak_rss_p50_bytes", u.peak_rss_bytes.unwrap()),
            ("peak_rss_p95_bytes", u.peak_rss_bytes.unwrap()),
        ] {
            assert_eq!(s[field], value, "{field} of {s}");
        }
    }
}

fn shown_by_the_api_and_the_metrics(d: &Daemon, runs: &[RunRow]) {
    let api = Api::socket(&d.path("hourglass.sock"));
    for r in runs {
        let shown = api.get(&format!("/v1/runs/{}", r.id));
        let u: Usage = serde_json::from_value(shown["usage"].clone()).unwrap();
        assert_eq!(u, usage_of(r), "{shown}");
    }
    let (code, text) = api.call("GET", "/metrics", None, None);
    assert_eq!(code, 200);
    crate::api::promtool(&text).unwrap_or_else(|e| panic!("promtool: {e}\n{text}"));
    let sample = |series: &str| crate::api::sample(&text, series).unwrap_or(-1.0);
    let cpu_s: f64 = runs.iter().map(|r| usage_of(r).cpu_us() as f64 / 1e6).sum();
    let peaks: f64 = runs
        .iter()
        .map(|r| usage_of(r).peak_rss_bytes.unwrap() as f64)
        .sum();
    assert_eq!(sample("hourglass_run_cpu_seconds_count"), 2.0, "{text}");
    assert!(
        (sample("hourglass_run_cpu_seconds_sum") - cpu_s).abs() < 1e-6,
        "{text}"
    );
    assert_eq!(
        sample("hourglass_run_peak_memory_bytes_count"),
        2.0,
        "{text}"
    );
    assert_eq!(
        sample("hourglass_run_peak_memory_bytes_sum"),
        peaks,
        "{text}"
    );
    // Two runs of at least 200 MiB: none in the buckets below 128 MiB, both below 512 MiB.
    let bucket = |le: &str| {
        sample(&format!(
            "hourglass_run_peak_memory_bytes_bucket{{le=\"{le}\"}}"
        ))
    };
    assert_eq!(bucket("134217728"), 0.0, "{text}");
    assert_eq!(bucket("536870912"), 2.0, "{text}");
}

fn shown_by_the_dashboard(port: u16, runs: &[RunRow]) {
    let (cookie, _) = http_sign_in(port, TOKEN);
    for r in runs {
        let u = usage_of(r);
        let cpu = format!("data-cpu-us=\"{}\"", u.cpu_us());
        let peak = format!("data-peak-bytes=\"{}\"", u.peak_rss_bytes.unwrap());
        let run_page = get_page(port, &format!("/runs/{}", r.id), Some(&cookie));
        assert!(
            run_page.contains(&cpu) && run_page.contains(&peak),
            "{run_page}"
        );
        assert!(run_page.contains(&u.cpu_in_words()), "{run_page}");
        let job_page = get_page(port, &format!("/jobs/{}", r.job), Some(&cookie));
        assert!(
            job_page.contains(&cpu) && job_page.contains(&peak),
            "{job_page}"
        );
        let plots = job_page
            .split("id=\"cost\"")
            .nth(1)
            .unwrap_or_else(|| panic!("no cost plots: {job_page}"));
        assert!(plots.contains("CPU time (s)") && plots.contains("peak memory (MiB)"));
    }
}

/// A process that leaves the run's group (`setsid`) and its parent (so the daemon, its
/// subreaper, reaps it) still counts for the run when it ends while the run goes on.
#[test]
fn a_process_that_escaped_its_run_counts_for_it() {
    // It lives longer than the daemon's sweeps are apart (3 s, and up to a second to the
    // middle of one), so that one sees it and knows its run, then burns exactly one second of
    // CPU (`ulimit -t 1`: SIGXCPU), however busy the machine. The run waits until it is gone
    // (reaped), up to 60 s.
    let dir = tempfile::tempdir().unwrap();
    let pid = dir.path().join("pid");
    let pid = pid.display();
    let jobs = format!(
        "[jobs.escape]\nat = \"{}\"\ntimeout = \"90s\"\n\
         command = \"\"\"(setsid sh -c 'echo $$ > {pid}; sleep 4; ulimit -t 1; while :; do :; done' &)\n\
         for i in $(seq 300); do [ -s {pid} ] && ! kill -0 $(cat {pid}) 2>/dev/null && break; sleep 0.2; done\n\
         \"\"\"\n",
        at_in(2)
    );
    let d = Daemon::start("", &jobs);
    let runs = d.wait_runs("escape", 90 * SEC, "the run's end", |r| {
        r.len() == 1 && finished(&r[0])
    });
    assert_eq!(runs[0].status, RunStatus::Succeeded, "{:?}", runs[0]);
    let u = usage_of(&runs[0]);
    // The job's own shells and sleeps take milliseconds; the escaped burner a second.
    assert!(u.cpu_us() >= 950_000, "{u:?}\n{}", d.log());
}
