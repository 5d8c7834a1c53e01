//! The dashboard's actions (trigger, pause, resume) against a real daemon: refused without the
//! token, from another site or without the form's anti-forgery field; done when signed in, in
//! headless Chromium too; signing out ends the session.

use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

use crate::browser::Chromium;
use crate::dashboard::{
    TOKEN, get_page, http_sign_in, post_form, seeded_daemon, sql, sql_i64, visit,
};
use crate::harness::{Daemon, wait_for};
use crate::http::Api;

#[test]
fn actions_are_refused_without_the_token_or_from_another_site() {
    let (d, port) = seeded_daemon("dashboard_actions = true\n");
    let (cookie, csrf) = http_sign_in(port, TOKEN);
    assert!(
        cookie.starts_with("hourglass_session=") && csrf.len() == 64,
        "{cookie} {csrf}"
    );
    let origin = format!("http://127.0.0.1:{port}");
    let form = format!("csrf={csrf}");
    let runs = || sql_i64(&d, "SELECT count(*) FROM runs WHERE job = 'report'");
    let before = runs();
    // No cookie: sent to the sign-in; another site, no Origin, no field: refused.
    let (status, to) = post_form(port, "/jobs/report/trigger", None, Some(&origin), &form);
    assert_eq!(
        (status, to.as_str()),
        (303, "/login?next=/jobs/report/trigger")
    );
    let evil = Some("http://evil.example");
    assert_eq!(
        post_form(port, "/jobs/report/trigger", Some(&cookie), evil, &form).0,
        403
    );
    assert_eq!(
        post_form(port, "/jobs/report/trigger", Some(&cookie), None, &form).0,
        403
    );
    assert_eq!(
        post_form(
            port,
            "/jobs/report/trigger",
            Some(&cookie),
            Some(&origin),
            "csrf=forged"
        )
        .0,
        403
    );
    assert_eq!(
        post_form(port, "/jobs/report/pause", Some(&cookie), evil, &form).0,
        403
    );
    let wrong = format!("hourglass_session={}", "0".repeat(64));
    assert_eq!(
        post_form(
            port,
            "/jobs/report/trigger",
            Some(&wrong),
            Some(&origin),
            &form
        )
        .0,
        303
    );
    // The cookie reads the API but does not act through it (only the bearer token does).
    let api_post = post_form(
        port,
        "/v1/jobs/report/trigger",
        Some(&cookie),
        Some(&origin),
        "",
    );
    assert_eq!(api_post.0, 401);
    assert_eq!(runs(), before, "a refused action ran the job");
    assert_eq!(sql(&d, "SELECT count(*) FROM events"), "0");
    assert_eq!(sql(&d, "SELECT count(*) FROM pauses"), "0");
    sign_out_ends_the_session(&d, port, &cookie, &form);
    signed_in_browser_acts(&d, &origin);
}

/// Sign-out ends the session on the daemon: the old cookie no longer reads or acts.
fn sign_out_ends_the_session(d: &Daemon, port: u16, cookie: &str, form: &str) {
    let origin = format!("http://127.0.0.1:{port}");
    let api_get = |cookie: &str| {
        let (status, _) =
            Api::tcp(port, TOKEN).call_with("GET", "/v1/runs", &[("cookie", cookie)], None);
        status
    };
    assert_eq!(api_get(cookie), 200);
    let out = post_form(port, "/logout", Some(cookie), Some(&origin), form);
    assert_eq!(out, (303, "/login".to_string()));
    assert_eq!(api_get(cookie), 401);
    assert!(
        get_page(port, "/jobs/report", Some(cookie)).is_empty(),
        "sent to the login"
    );
    assert_eq!(
        post_form(
            port,
            "/jobs/report/pause",
            Some(cookie),
            Some(&origin),
            form
        ),
        (303, "/login?next=/jobs/report/pause".to_string())
    );
    assert_eq!(sql(d, "SELECT count(*) FROM pauses"), "0");
}

/// Signs in with a wrong token, then the right one, and runs, pauses and resumes `report`.
fn signed_in_browser_acts(d: &Daemon, origin: &str) {
    // With the token, in a browser: sign in (a wrong token first), run the job, pause, resume.
    let b = Chromium::launch();
    visit(&b, origin, "/login", "login");
    b.open(&format!("{origin}/jobs/report"), 1280);
    assert!(
        b.url().starts_with(&format!("{origin}/login?next=")),
        "{}",
        b.url()
    );
    b.navigate_by("document.getElementById('token').value = 'guess'; document.querySelector('form.login').submit()");
    assert!(
        b.eval::<String>("document.querySelector('[role=alert]').textContent")
            .contains("not the token")
    );
    b.take_problems(); // the 401 of the wrong token
    b.navigate_by(&format!("document.getElementById('token').value = '{TOKEN}'; document.querySelector('form.login').submit()"));
    assert_eq!(b.url(), format!("{origin}/jobs/report"));
    b.navigate_by("[...document.querySelectorAll('.actions button')].find(x => x.textContent === 'Run now').click()");
    let id: i64 = b.url().rsplit('/').next().unwrap().parse().unwrap();
    assert_eq!(
        b.take_problems(),
        Vec::<String>::new(),
        "the run's page after Run now: {}",
        b.eval::<String>("document.body.innerText"),
    );
    wait_for(20 * SEC, "the triggered run", || {
        (sql(
            d,
            &format!("SELECT status FROM runs WHERE id = {id} AND job = 'report'"),
        ) == "succeeded")
            .then_some(())
    });
    assert_eq!(
        sql(d, "SELECT action || ' ' || actor FROM events"),
        "trigger token"
    );
    b.open(&format!("{origin}/jobs/report"), 1280);
    b.navigate_by("document.querySelector('input[name=until]').value = '2h'; [...document.querySelectorAll('.actions button')].find(x => x.textContent === 'Pause').click()");
    assert!(b.eval::<bool>("!!document.querySelector('h1 [data-marker=paused]')"));
    assert_eq!(sql(d, "SELECT job FROM pauses"), "report");
    b.navigate_by("[...document.querySelectorAll('.actions button')].find(x => x.textContent === 'Resume').click()");
    assert!(b.eval::<bool>("!document.querySelector('h1 [data-marker=paused]')"));
    assert_eq!(sql(d, "SELECT count(*) FROM pauses"), "0");
    assert_eq!(b.take_problems(), Vec::<String>::new());
}
