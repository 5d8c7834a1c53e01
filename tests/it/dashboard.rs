//! The dashboard in headless Chromium against a real daemon with a seeded SQLite history:
//! every page loads with no console error; the DOM shows the numbers the database holds
//! (counts, statuses, success rates, next firing); screenshots at 390 and 1280 px; a running
//! run's output appears on its page as it is written; actions are refused without the token
//! (and from another site), and done with it.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::browser::{Chromium, screenshot_dir};
use crate::harness::{Daemon, wait_for};
use crate::http::Api;

const SEC: Duration = Duration::from_secs(1);
const WIDTHS: [u32; 2] = [1280, 390];

/// `sqlite3 db query`'s output, trimmed.
pub(crate) fn sql(d: &Daemon, query: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(d.path("history.db"))
        .arg(query)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{query}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub(crate) fn sql_i64(d: &Daemon, query: &str) -> i64 {
    sql(d, query).parse().unwrap()
}

/// 300 hourly runs of `backup` over the last 12.5 days (failures, timeouts, skips among
/// them, coloured output), a retry of run 294's firing, a notification for it, and `report`
/// stale (its alert sent a day ago).
const SEED: &str = "
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
INSERT INTO runs (id, job, scheduled_for, started_at, finished_at, status, attempt, trigger,
                  exit_code, error, output, node)
SELECT i, 'backup', t,
       CASE WHEN st = 'skipped' THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%fZ', t, printf('+%d seconds', i % 5)) END,
       CASE WHEN st = 'skipped' THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%fZ', t, printf('+%d seconds', i % 5 + 10 + i % 17)) END,
       st, 1, 'schedule', CASE st WHEN 'failed' THEN 1 WHEN 'succeeded' THEN 0 END,
       CASE st WHEN 'failed' THEN 'exited with status 1' END,
       'backup ' || i || ': ' || char(27) || '[32mok' || char(27) || '[0m', 'seed'
FROM (SELECT i, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d hours', 301 - i), '-30 minutes') AS t,
             CASE WHEN i % 7 = 0 THEN 'failed' WHEN i % 13 = 0 THEN 'timed_out'
                  WHEN i % 11 = 0 THEN 'skipped' ELSE 'succeeded' END AS st FROM n);
INSERT INTO runs (id, job, scheduled_for, started_at, finished_at, status, attempt, trigger, exit_code, node)
SELECT 301, job, scheduled_for, finished_at, strftime('%Y-%m-%dT%H:%M:%fZ', finished_at, '+3 seconds'),
       'succeeded', 2, 'retry', 0, 'seed' FROM runs WHERE id = 294;
INSERT INTO notifications (run_id, job, event, channel, sent_at, error)
SELECT 294, 'backup', 'failure', 'email', finished_at, NULL FROM runs WHERE id = 294;
UPDATE daemon_state SET run_ids_reserved_through = 1000;
INSERT INTO stale_watch (job, watched_since, stale_since)
VALUES ('report', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 days'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day'));
";

/// A daemon on TCP with the token [`TOKEN`] (`api_extra` adds to `[api]`) with four jobs
/// and the seeded history.
pub(crate) fn seeded_daemon(api_extra: &str) -> (Daemon, u16) {
    let port = crate::harness::free_port();
    let mut d = Daemon::prepare(
        &format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ env = \"HOURGLASS_TEST_DASHBOARD_TOKEN\" }}\n{api_extra}"
        ),
        "",
    );
    let go = d.path("go");
    d.write_jobs(
        "jobs.toml",
        &format!(
            r#"
[jobs.backup]
description = "The nightly backup."
schedule = "0 30 3 * * *"
timezone = "Europe/Berlin"
tags = ["nightly"]
command = "true"

[jobs.report]
every = "1h"
tags = ["reports"]
command = "echo report"

[jobs.live]
every = "24h"
command = "echo first; while [ ! -e {go} ]; do sleep 0.05; done; echo second"

[jobs.never]
at = "2099-01-01T00:00:00Z"
command = "true"
"#,
            go = go.display()
        ),
    );
    // The database created and migrated, to be seeded.
    crate::harness::on_store(&d.path("history.db"), async |_| ());
    sql(&d, SEED);
    d.extra_env
        .push(("HOURGLASS_TEST_DASHBOARD_TOKEN".into(), TOKEN.into()));
    d.spawn_ready();
    (d, port)
}

/// Loads `path` at each width, saves a screenshot as `name-WIDTH`, and checks that nothing
/// went wrong in the browser.
pub(crate) fn visit(b: &Chromium, base: &str, path: &str, name: &str) {
    for width in WIDTHS {
        b.open(&format!("{base}{path}"), width);
        let shot = b.screenshot(&screenshot_dir(), &format!("{name}-{width}"));
        assert!(
            std::fs::metadata(&shot).unwrap().len() > 1000,
            "{}",
            shot.display()
        );
        assert_eq!(
            b.take_problems(),
            Vec::<String>::new(),
            "{path} at {width} px"
        );
        readable_structure(b, path);
    }
}

/// What a screen reader needs: one `h1`; every table with a caption and its column headers
/// scoped; every form control labelled.
fn readable_structure(b: &Chromium, path: &str) {
    let h1: i64 = b.eval("document.querySelectorAll('h1').length");
    assert_eq!(h1, 1, "{path}: h1 headings");
    let bare: Vec<String> = b.eval(
        "[...document.querySelectorAll('table')].filter(t => !t.caption || [...t.querySelectorAll('thead th')].some(th => th.scope !== 'col')).map(t => t.outerHTML.slice(0, 80))",
    );
    assert_eq!(
        bare,
        Vec::<String>::new(),
        "{path}: tables without caption or scoped headers"
    );
    let unlabelled: Vec<String> = b.eval(
        "[...document.querySelectorAll('input:not([type=hidden]), select')].filter(c => !c.closest('label') && !(c.id && document.querySelector(`label[for=\"${c.id}\"]`))).map(c => c.name)",
    );
    assert_eq!(
        unlabelled,
        Vec::<String>::new(),
        "{path}: form controls without a label"
    );
}

/// The keyboard: the first Tab reaches the skip link, Enter follows it, the next Tab the
/// filters.
fn keyboard_reaches_the_content(b: &Chromium, base: &str) {
    b.open(&format!("{base}/"), 1280);
    b.press("Tab");
    let focused: String = b.eval("document.activeElement.textContent");
    assert_eq!(focused, "Skip to content");
    b.press("Enter");
    b.wait_until("location.hash === '#main'", 5 * SEC);
    b.press("Tab");
    let next: String =
        b.eval("document.activeElement.tagName + ' ' + (document.activeElement.name || '')");
    assert_eq!(
        next, "INPUT q",
        "after the skip link, Tab reaches the filters"
    );
}

/// The system's dark mode is followed: the page's background turns dark.
fn dark_mode_follows_the_system(b: &Chromium, base: &str) {
    b.dark(true);
    b.open(&format!("{base}/"), 1280);
    let bg: String = b.eval("getComputedStyle(document.body).backgroundColor");
    assert_eq!(bg, "rgb(13, 17, 23)");
    b.screenshot(&screenshot_dir(), "jobs-1280-dark");
    b.dark(false);
    b.open(&format!("{base}/"), 1280);
    let bg: String = b.eval("getComputedStyle(document.body).backgroundColor");
    assert_eq!(bg, "rgb(255, 255, 255)");
}

/// Signs the browser in with [`TOKEN`] at `base`'s login page.
pub fn browser_sign_in(b: &Chromium, base: &str) {
    b.open(&format!("{base}/login"), 1280);
    b.navigate_by(&format!("document.getElementById('token').value = '{TOKEN}'; document.querySelector('form.login').submit()"));
    assert_eq!(b.url(), format!("{base}/"));
}

/// Signs in over HTTP with `token`: the session cookie (`name=value`) and the anti-forgery
/// field of its forms (read from a page).
pub fn http_sign_in(port: u16, token: &str) -> (String, String) {
    let origin = format!("http://127.0.0.1:{port}");
    let body = format!("token={token}&next=/jobs/report");
    let (status, to, cookie) = post_form_full(port, "/login", None, Some(&origin), &body);
    assert_eq!((status, to.as_str()), (303, "/jobs/report"));
    let cookie = cookie.split(';').next().unwrap().to_string();
    let page = get_page(port, "/jobs/report", Some(&cookie));
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_string();
    (cookie, csrf)
}

/// `GET path` with the cookie: the body (redirects not followed: empty).
pub(crate) fn get_page(port: u16, path: &str, cookie: Option<&str>) -> String {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    Api::on_port(port).send("GET", path, &headers, None).body
}

#[test]
fn pages_show_what_the_database_holds_without_console_errors() {
    let (d, port) = seeded_daemon("");
    let base = format!("http://127.0.0.1:{port}");
    let b = Chromium::launch();
    browser_sign_in(&b, &base);

    visit(&b, &base, "/", "jobs");
    jobs_page_matches_the_database(&b, &d, port);
    visit(&b, &base, "/jobs/backup", "job");
    job_page_matches_the_database(&b, &d);
    visit(&b, &base, "/runs/294", "run");
    run_page_matches_the_database(&b);
    visit(&b, &base, "/nodes", "nodes");
    assert!(
        b.eval::<String>("document.body.innerText")
            .contains("SQLite")
    );
    keyboard_reaches_the_content(&b, &base);
    dark_mode_follows_the_system(&b, &base);

    // Without dashboard_actions the dashboard is read-only: no action forms, and even a
    // signed-in form with its session's field is refused.
    b.open(&format!("{base}/jobs/backup"), 1280);
    assert!(b.eval::<bool>("document.querySelector('.actions') === null"));
    let (cookie, csrf) = http_sign_in(port, TOKEN);
    let form = format!("csrf={csrf}");
    let (status, _) = post_form(
        port,
        "/jobs/backup/trigger",
        Some(&cookie),
        Some(&base),
        &form,
    );
    assert_eq!(status, 403);
    assert_eq!(sql(&d, "SELECT count(*) FROM events"), "0");

    // Markers and their filters: `live` paused (through the API), `report` stale.
    Api::tcp(port, TOKEN).post("/v1/jobs/live/pause", serde_json::json!({"until": "2h"}));
    let marked = |status: &str| -> Vec<(String, String)> {
        b.open(&format!("{base}/?status={status}"), 1280);
        b.eval("[...document.querySelectorAll('tr[data-job]')].map(r => [r.dataset.job, [...r.querySelectorAll('[data-marker]')].map(m => m.dataset.marker).join(' ')])")
    };
    assert_eq!(
        marked("paused"),
        [("live".to_string(), "paused".to_string())]
    );
    assert_eq!(
        marked("stale"),
        [("report".to_string(), "stale".to_string())]
    );

    // Filters: by tag, by status, by name.
    b.open(&format!("{base}/?tag=nightly"), 1280);
    assert_eq!(
        b.eval::<Vec<String>>(
            "[...document.querySelectorAll('tr[data-job]')].map(r => r.dataset.job)"
        ),
        ["backup"]
    );
    b.open(&format!("{base}/?status=never"), 1280);
    let never: Vec<String> =
        b.eval("[...document.querySelectorAll('tr[data-job]')].map(r => r.dataset.job)");
    assert_eq!(never, ["live", "never", "report"]);
    b.open(&format!("{base}/?q=REP"), 1280);
    assert_eq!(
        b.eval::<Vec<String>>(
            "[...document.querySelectorAll('tr[data-job]')].map(r => r.dataset.job)"
        ),
        ["report"]
    );
    assert_eq!(b.take_problems(), Vec::<String>::new());
    // The watch on the console does see errors (so the checks above can fail).
    b.eval::<bool>("console.error('probe'), true");
    wait_for(10 * SEC, "the console error to be seen", || {
        b.take_problems()
            .iter()
            .any(|p| p.contains("probe"))
            .then_some(())
    });
}

fn jobs_page_matches_the_database(b: &Chromium, d: &Daemon, port: u16) {
    b.open(&format!("http://127.0.0.1:{port}/"), 1280);
    let jobs: Vec<String> =
        b.eval("[...document.querySelectorAll('tr[data-job]')].map(r => r.dataset.job)");
    assert_eq!(jobs, ["backup", "live", "never", "report"]);
    let cell = |job: &str, attr: &str| -> String {
        b.eval(&format!(
            "document.querySelector('tr[data-job=\"{job}\"] [data-{attr}]').getAttribute('data-{attr}')"
        ))
    };
    let last = sql(
        d,
        "SELECT status FROM runs WHERE job = 'backup' ORDER BY id DESC LIMIT 1",
    );
    assert_eq!(cell("backup", "last-status"), last);
    let week =
        "job = 'backup' AND scheduled_for >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-7 days')";
    let succeeded = sql_i64(
        d,
        &format!("SELECT count(*) FROM runs WHERE {week} AND status = 'succeeded'"),
    );
    let ran = sql_i64(
        d,
        &format!(
            "SELECT count(*) FROM runs WHERE {week} AND status NOT IN ('skipped', 'cancelled', 'running')"
        ),
    );
    assert_eq!(cell("backup", "ran"), ran.to_string());
    assert_eq!(cell("backup", "succeeded"), succeeded.to_string());
    let shown: String =
        b.eval("document.querySelector('tr[data-job=\"backup\"] [data-ran]').textContent");
    assert!(
        shown.contains(&format!("({succeeded} of {ran})")),
        "{shown}"
    );
    let failed_of_50 = sql_i64(
        d,
        "SELECT count(*) FROM (SELECT status FROM runs WHERE job = 'backup' ORDER BY id DESC LIMIT 50) WHERE status IN ('failed', 'timed_out', 'abandoned', 'interrupted')",
    );
    let strip: (u32, i64) = b.eval("(s => [+s.dataset.runs, +s.dataset.failed])(document.querySelector('tr[data-job=\"backup\"] .strip'))");
    assert_eq!(strip, (50, failed_of_50));
    // The next firing: the scheduler's (as the API tells it), shown in the job's zone.
    let api: Value = Api::tcp(port, TOKEN).get("/v1/jobs/backup");
    let next = chrono::DateTime::parse_from_rfc3339(api["next"][0].as_str().unwrap()).unwrap();
    let shown: String = b.eval("document.querySelector('tr[data-job=\"backup\"] td[data-next] time').getAttribute('datetime')");
    assert_eq!(chrono::DateTime::parse_from_rfc3339(&shown).unwrap(), next);
    let text: String =
        b.eval("document.querySelector('tr[data-job=\"backup\"] td[data-next]').textContent");
    assert!(text.ends_with(" CET") || text.ends_with(" CEST"), "{text}");
    let never: String =
        b.eval("document.querySelector('tr[data-job=\"never\"] td:nth-of-type(3)').textContent");
    assert_eq!(never, "never ran");
}

fn job_page_matches_the_database(b: &Chromium, d: &Daemon) {
    let total = sql_i64(d, "SELECT count(*) FROM runs WHERE job = 'backup'");
    assert_eq!(
        b.eval::<String>("document.querySelector('[data-total]').dataset.total"),
        total.to_string()
    );
    let ids: Vec<i64> =
        b.eval("[...document.querySelectorAll('tr[data-run]')].map(r => +r.dataset.run)");
    let want: Vec<i64> = sql(
        d,
        "SELECT id FROM runs WHERE job = 'backup' ORDER BY id DESC LIMIT 50",
    )
    .lines()
    .map(|l| l.parse().unwrap())
    .collect();
    assert_eq!(ids, want);
    let plotted = sql_i64(
        d,
        "SELECT count(*) FROM (SELECT * FROM runs_timed WHERE job = 'backup' ORDER BY id DESC LIMIT 500) WHERE duration_ms IS NOT NULL",
    );
    let circles: Vec<i64> = b.eval("[...document.querySelectorAll('figure.plot svg')].map(s => s.querySelectorAll('circle').length)");
    assert_eq!(circles, [plotted, plotted]);
    assert!(b.eval::<i64>("+document.querySelector('[data-streaks]').dataset.streaks") > 0);
    // The next page of runs, by its keyset link.
    b.navigate_by("document.querySelector('a[rel=next]').click()");
    let ids: Vec<i64> =
        b.eval("[...document.querySelectorAll('tr[data-run]')].map(r => +r.dataset.run)");
    let want: Vec<i64> = sql(
        d,
        "SELECT id FROM runs WHERE job = 'backup' ORDER BY id DESC LIMIT 50 OFFSET 50",
    )
    .lines()
    .map(|l| l.parse().unwrap())
    .collect();
    assert_eq!(ids, want);
    assert_eq!(b.take_problems(), Vec::<String>::new());
}

fn run_page_matches_the_database(b: &Chromium) {
    assert_eq!(
        b.eval::<String>("document.getElementById('run-status').dataset.status"),
        "failed"
    );
    let attempts: Vec<String> =
        b.eval("[...document.querySelectorAll('ol.attempts li')].map(l => l.textContent)");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(b.eval::<bool>("!!document.querySelector('ol.attempts a[href=\"/runs/301\"]')"));
    assert_eq!(
        b.eval::<String>("document.querySelector('[data-notifications]').dataset.notifications"),
        "1"
    );
    let output: String = b.eval("document.getElementById('output').innerHTML");
    assert!(
        output.contains("ansi-green") && output.contains("backup 294: "),
        "{output}"
    );
    assert!(!output.contains('\u{1b}'), "{output}");
}

#[test]
fn a_running_runs_output_appears_on_its_page_as_it_is_written() {
    let (d, port) = seeded_daemon("");
    let api = Api::tcp(port, TOKEN);
    let run = api.post("/v1/jobs/live/trigger", serde_json::json!(null));
    let id = run["run_id"].as_i64().unwrap();
    let b = Chromium::launch();
    browser_sign_in(&b, &format!("http://127.0.0.1:{port}"));
    b.open(&format!("http://127.0.0.1:{port}/runs/{id}"), 1280);
    b.wait_until(
        "document.getElementById('live-state').dataset.liveState === 'live' \
         && document.getElementById('output').textContent.includes('first')",
        20 * SEC,
    );
    assert!(
        !b.eval::<String>("document.getElementById('output').textContent")
            .contains("second")
    );
    let url = b.url();
    std::fs::write(d.path("go"), "").unwrap();
    b.wait_until(
        "document.getElementById('output').textContent.includes('second')",
        20 * SEC,
    );
    b.wait_until(
        "document.getElementById('live-state').dataset.liveState === 'ended'",
        20 * SEC,
    );
    assert_eq!(b.url(), url, "the output grew without a reload");
    assert_eq!(
        b.eval::<String>("document.getElementById('run-status').dataset.status"),
        "succeeded"
    );
    wait_for(10 * SEC, "the run's row", || {
        (sql(&d, &format!("SELECT status FROM runs WHERE id = {id}")) == "succeeded").then_some(())
    });
    assert_eq!(
        sql(&d, &format!("SELECT output FROM runs WHERE id = {id}")),
        "first\nsecond"
    );
    assert_eq!(b.take_problems(), Vec::<String>::new());
}

pub const TOKEN: &str = "s3cret-dashboard-token";

/// `POST path` as a browser form would send it, with the cookie and Origin given; the status
/// and where it redirects. Redirects are not followed.
pub(crate) fn post_form(
    port: u16,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
    body: &str,
) -> (u16, String) {
    let (status, to, _) = post_form_full(port, path, cookie, origin, body);
    (status, to)
}

/// Like [`post_form`], with the cookie the answer sets.
pub(crate) fn post_form_full(
    port: u16,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    headers.extend(cookie.map(|c| ("cookie", c)));
    headers.extend(origin.map(|o| ("origin", o)));
    let answer = Api::on_port(port).send("POST", path, &headers, Some(body));
    (answer.status, answer.location, answer.set_cookie)
}
