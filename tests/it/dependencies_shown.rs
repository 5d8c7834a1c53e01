//! How jobs that run after jobs are shown and told: the dashboard's graph against the config
//! in Chromium (a job's upstream and downstream, a run's parents), and an HTTP child's
//! request naming its parent's run.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{Daemon, on_store};

/// The dashboard in Chromium with the chain running: the graph draws exactly the config's
/// jobs and edges, each job with its last status, without a console error; a job's page
/// names its upstream and downstream jobs; a run's page links the parents' runs that fired it.
#[test]
fn the_dashboard_draws_the_graph_the_config_says() {
    use crate::browser::Chromium;
    use crate::dashboard::{TOKEN, browser_sign_in, visit};
    let port = crate::harness::free_port();
    let api = format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ env = \"HOURGLASS_TEST_DASHBOARD_TOKEN\" }}\n"
    );
    let mut d = Daemon::prepare(&api, crate::dependencies::CHAIN);
    d.extra_env
        .push(("HOURGLASS_TEST_DASHBOARD_TOKEN".into(), TOKEN.into()));
    d.spawn_ready();
    let load = d.wait_runs("report", Duration::from_secs(30), "a report", |r| {
        !r.is_empty()
    });
    let base = format!("http://127.0.0.1:{port}");
    let b = Chromium::launch();
    browser_sign_in(&b, &base);
    let ran_before: Vec<String> = ["extract", "rates", "load", "report", "on_fail"]
        .iter()
        .filter(|j| !d.runs_of(j).is_empty())
        .map(ToString::to_string)
        .collect();
    visit(&b, &base, "/graph", "graph");
    let edges: Vec<(String, String)> = b.eval(
        "[...document.querySelectorAll('path.edge')].map(e => [e.dataset.from, e.dataset.to]).sort()",
    );
    let want: Vec<(String, String)> = [
        ("extract", "load"),
        ("load", "report"),
        ("rates", "load"),
        ("rates", "on_fail"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(edges, want);
    let jobs: Vec<(String, String)> = b.eval(
        "[...document.querySelectorAll('g.job')].map(g => [g.dataset.job, g.dataset.status]).sort()",
    );
    let names: Vec<&str> = jobs.iter().map(|(j, _)| j.as_str()).collect();
    assert_eq!(names, ["extract", "load", "on_fail", "rates", "report"]);
    // Each box's status is the job's last run's as the page was made: a job with a run
    // before it has a status, one with a status has a run.
    for (job, status) in &jobs {
        let ran = !d.runs_of(job).is_empty();
        let before = ran_before.contains(job);
        assert!(
            status == "never" && !before || status != "never" && ran,
            "{job}: {status}"
        );
    }
    // `report` (an echo) only succeeds, and fires every second: as the page was made its last
    // run may have been under way.
    let report_status = &jobs.iter().find(|(j, _)| j == "report").unwrap().1;
    assert!(
        ["succeeded", "running"].contains(&report_status.as_str()),
        "{report_status}"
    );
    visit(&b, &base, "/jobs/load", "job-after");
    assert_eq!(
        b.eval::<String>("document.querySelector('[data-upstream]').dataset.upstream"),
        "extract rates"
    );
    assert_eq!(
        b.eval::<String>("document.querySelector('[data-downstream]').dataset.downstream"),
        "report"
    );
    let report = &load[0];
    let parents = on_store(&d.path("history.db"), async |s| {
        s.lineage(report.id).await.unwrap()
    })
    .parents;
    visit(&b, &base, &format!("/runs/{}", report.id), "run-after");
    let shown: Vec<i64> =
        b.eval("[...document.querySelectorAll('ul.parents [data-run]')].map(l => +l.dataset.run)");
    assert_eq!(shown, parents.iter().map(|p| p.run_id).collect::<Vec<_>>());
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(20));
}

/// An HTTP job that runs after a parent tells the receiver which run of which job fired it
/// (`Hourglass-Parent-*` headers), beside its own headers.
#[test]
fn an_http_child_names_its_parent_run_in_its_request() {
    let tmp = tempfile::tempdir().unwrap();
    let http = crate::servers::Http::start(tmp.path());
    let jobs = format!(
        "[jobs.p]\nat = \"2099-01-01T00:00:00Z\"\ncommand = \"exit 0\"\n\
         [jobs.hook]\nafter = \"p\"\n[jobs.hook.http]\nmethod = \"POST\"\nurl = \"{}\"\nbody = '{{\"a\": 1}}'\n",
        http.url("/hook")
    );
    let mut d = Daemon::start("", &jobs);
    assert!(d.cli(&["trigger", "p"]).status.success());
    let p = d.wait_runs("p", Duration::from_secs(30), "p", |r| {
        r.iter().any(crate::harness::finished)
    })[0]
        .clone();
    d.wait_runs("hook", Duration::from_secs(30), "the hook", |r| {
        r.iter().any(crate::harness::finished)
    });
    let headers = http.headers(1);
    for want in [
        "Hourglass-Parents: p".to_string(),
        "Hourglass-Parent-Job: p".to_string(),
        format!("Hourglass-Parent-Run-Id: {}", p.id),
        "Hourglass-Parent-Status: succeeded".to_string(),
        "Hourglass-Parent-Exit-Code: 0".to_string(),
    ] {
        assert!(
            headers.to_lowercase().contains(&want.to_lowercase()),
            "{want} in {headers}"
        );
    }
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(20));
}
