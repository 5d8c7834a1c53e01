//! Stale-job alerts (`alert_if_no_success_within`) through real SMTP and webhook receivers:
//! one `stale` for a job that keeps failing and one for a paused job, none again after a
//! restart, and one `recovered` for each at its next success.

use std::time::Duration;

use crate::harness::{Daemon, wait_for};
use crate::servers::{Http, Smtp};
use hourglass::store::RunStatus;

const SEC: Duration = Duration::from_secs(1);
const PASSWORD: &str = "stale-Pa55word";

/// The webhook posts of `event`, as `(job, event)`.
fn posts(hook: &Http, event: &str) -> Vec<String> {
    hook.posts()
        .iter()
        .filter(|p| p["event"] == event)
        .map(|p| p["job"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn stale_alerts_fire_once_for_a_failing_and_a_paused_job_then_recovered() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(tmp.path(), PASSWORD);
    let hook = Http::start(tmp.path());
    let flag = tmp.path().join("ok");
    // Failure and recovery notices are off (`on = []`): only the stale watch speaks.
    let main = format!(
        "{}\n[notify]\non = []\nalert_if_no_success_within = \"3s\"\n\
         [notify.email]\nfrom = \"hourglass@example.com\"\nto = [\"ops@example.com\"]\n\
         [notify.webhook]\nurl = \"{}\"\n",
        smtp.config("main", "SMTP_PASSWORD", ""),
        hook.url("/hook")
    );
    let jobs = format!(
        "[jobs.failing]\nevery = \"1s\"\ncommand = \"test -f {}\"\n\n\
         [jobs.napping]\nevery = \"1s\"\ncommand = \"true\"\nalert_if_no_success_within = \"4s\"\n",
        flag.display()
    );
    let mut d = Daemon::prepare(&main, &jobs);
    d.extra_env.push(("SMTP_PASSWORD".into(), PASSWORD.into()));
    d.spawn_ready();
    d.wait_runs("napping", 20 * SEC, "a success", |r| {
        r.iter().any(|r| r.status == RunStatus::Succeeded)
    });
    assert!(d.cli(&["pause", "napping"]).status.success());

    // One stale alert each, by webhook and by email.
    wait_for(30 * SEC, "two stale webhooks", || {
        (posts(&hook, "stale").len() >= 2).then_some(())
    });
    let mut stale = posts(&hook, "stale");
    stale.sort();
    assert_eq!(stale, ["failing", "napping"]);
    let mails = smtp.wait_messages(2, 20 * SEC);
    assert!(mails.iter().all(|m| m.contains("is stale")), "{mails:?}");
    let post = hook
        .posts()
        .into_iter()
        .find(|p| p["job"] == "failing")
        .unwrap();
    assert!(
        post["error"]
            .as_str()
            .unwrap()
            .starts_with("no success within 3s"),
        "{post}"
    );

    // Not again: neither while it stays stale nor after a restart.
    std::thread::sleep(5 * SEC);
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(20 * SEC);
    d.spawn_ready();
    std::thread::sleep(6 * SEC);
    assert_eq!(posts(&hook, "stale").len(), 2, "{:?}", hook.posts());
    assert!(posts(&hook, "recovered").is_empty());

    // The next success of each: one `recovered`.
    std::fs::write(&flag, "").unwrap();
    assert!(d.cli(&["resume", "napping"]).status.success());
    wait_for(30 * SEC, "two recovered webhooks", || {
        (posts(&hook, "recovered").len() >= 2).then_some(())
    });
    let mut recovered = posts(&hook, "recovered");
    recovered.sort();
    assert_eq!(recovered, ["failing", "napping"]);
    std::thread::sleep(3 * SEC);
    assert_eq!(hook.posts().len(), 4, "{:?}", hook.posts());
    assert_eq!(smtp.wait_messages(4, 20 * SEC).len(), 4);
}
