//! Jobs that run after other jobs, with the real daemon: a chain with a fan-in and a failure
//! path over 20 rounds (each child once per qualifying round, its causes recorded, a retry
//! counted once), and a kill -9 between a parent's end and its child's start.

use std::collections::BTreeMap;
use std::time::Duration;

use hourglass::store::{Lineage, RunRow, RunStatus, Trigger};
use nix::sys::signal::Signal;

use crate::harness::{Daemon, at_in, on_store, wait_for};

/// `extract` and `rates` every second; `rates` fails for good when its second is 2 mod 5
/// (exit 3), and fails its first attempt then succeeds on its retry when it is 0 mod 5.
/// `load` runs after both succeed (within 5 s), `report` after `load`, `on_fail` after
/// `rates` fails.
pub(crate) const CHAIN: &str = r#"
[jobs.extract]
every = "1s"
command = "echo extracted"

[jobs.rates]
every = "1s"
retries = 1
retry_backoff = "100ms"
retry_backoff_max = "100ms"
command = '''m=$(expr $(echo $HOURGLASS_SCHEDULED_FOR | cut -c18-19) % 5); if [ $m = 2 ]; then exit 3; fi; if [ $m = 0 ] && [ $HOURGLASS_ATTEMPT = 1 ]; then exit 4; fi; echo rates'''

[jobs.load]
after = { jobs = ["extract", "rates"], when = "all_succeeded", within = "5s" }
command = 'echo "$HOURGLASS_PARENT_EXTRACT_RUN_ID $HOURGLASS_PARENT_RATES_RUN_ID $HOURGLASS_PARENT_RATES_STATUS"'

[jobs.report]
after = "load"
command = 'echo "$HOURGLASS_PARENT_JOB $HOURGLASS_PARENT_RUN_ID"'

[jobs.on_fail]
after = { jobs = ["rates"], when = "any_failed" }
command = 'echo "$HOURGLASS_PARENT_RUN_ID $HOURGLASS_PARENT_EXIT_CODE"'
"#;

/// The second of a run's intended time, mod 5 (what `rates` decides by).
fn phase(r: &RunRow) -> u32 {
    use chrono::Timelike;
    r.scheduled_for.second() % 5
}

#[test]
fn a_chain_with_a_fan_in_runs_each_child_once_per_qualifying_round() {
    let mut d = Daemon::start("", CHAIN);
    d.wait_runs("extract", Duration::from_secs(60), "23 rounds", |r| {
        r.len() >= 23
    });
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(20));
    let runs = d.runs();
    let of = |job: &str| {
        runs.iter()
            .filter(|r| r.job == job)
            .cloned()
            .collect::<Vec<_>>()
    };
    // The first 20 rounds, by `rates`' intended time: each long settled at the stop.
    let mut rounds: Vec<_> = of("rates").iter().map(|r| r.scheduled_for).collect();
    rounds.dedup();
    rounds.truncate(20);
    let last = *rounds.last().unwrap();
    let lineage = |id: i64| {
        on_store(&d.path("history.db"), async |s| {
            s.lineage(id).await.unwrap()
        })
    };
    // Who each dependent run ran after, by job and parents' run ids.
    let mut fired: BTreeMap<(String, Vec<i64>), Vec<RunRow>> = BTreeMap::new();
    for child in runs.iter().filter(|r| r.trigger == Trigger::Dependency) {
        let Lineage { parents, .. } = lineage(child.id);
        let ids = sorted(&parents.iter().map(|p| p.run_id).collect::<Vec<_>>());
        fired
            .entry((child.job.clone(), ids))
            .or_default()
            .push(child.clone());
    }
    let (mut loads, mut fails, mut retried) = (0, 0, 0);
    for at in &rounds {
        match round(&d, &runs, &fired, *at) {
            Path::Loaded => loads += 1,
            Path::Failed => fails += 1,
            Path::Retried => {
                loads += 1;
                retried += 1;
            }
        }
    }
    // Nothing else ran after the parents' runs of these rounds.
    let in_rounds = |id: i64| runs.iter().any(|r| r.id == id && r.scheduled_for <= last);
    let children_in_rounds: usize = fired
        .iter()
        .filter(|((job, ids), _)| job != "report" && ids.iter().all(|i| in_rounds(*i)))
        .map(|(_, runs)| runs.len())
        .sum();
    assert_eq!(children_in_rounds, loads + fails);
    assert!(
        fails >= 3 && retried >= 3,
        "each path taken: {fails} failures, {retried} retries"
    );
    println!("20 rounds: {loads} loads, {fails} failure paths, {retried} retried rounds");
}

/// What a round of the chain took.
enum Path {
    /// `rates` succeeded: `load` and `report` ran.
    Loaded,
    /// `rates` succeeded on its retry: `load` and `report` ran.
    Retried,
    /// `rates` failed: `on_fail` ran.
    Failed,
}

/// Checks the children of the round due `at`: once each, after the right parents' runs.
fn round(
    d: &Daemon,
    runs: &[RunRow],
    fired: &BTreeMap<(String, Vec<i64>), Vec<RunRow>>,
    at: chrono::DateTime<chrono::Utc>,
) -> Path {
    let rates: Vec<&RunRow> = runs
        .iter()
        .filter(|r| r.job == "rates" && r.scheduled_for == at)
        .collect();
    let extract = runs
        .iter()
        .find(|r| r.job == "extract" && r.scheduled_for == at)
        .unwrap();
    let last_word = *rates.iter().max_by_key(|r| r.attempt).unwrap();
    let p = phase(last_word);
    if p == 0 {
        assert_eq!(
            rates.len(),
            2,
            "a failed first attempt and its retry: {rates:#?}"
        );
    }
    let load = fired.get(&("load".into(), sorted(&[extract.id, last_word.id])));
    let fail = fired.get(&("on_fail".into(), vec![last_word.id]));
    if p == 2 {
        assert_eq!(last_word.status, RunStatus::Failed);
        assert!(load.is_none(), "load ran after a failed rates: {load:#?}");
        let fail = fail.unwrap_or_else(|| panic!("no on_fail after {last_word:#?}"));
        assert_eq!(fail.len(), 1, "on_fail once: {fail:#?}");
        assert_eq!(output(d, fail[0].id), format!("{} 3", last_word.id));
    } else {
        assert_eq!(last_word.status, RunStatus::Succeeded, "{rates:#?}");
        assert!(
            fail.is_none(),
            "on_fail after a success or a retried attempt: {fail:#?}"
        );
        let load = load.unwrap_or_else(|| panic!("no load after {extract:#?} and {last_word:#?}"));
        assert_eq!(load.len(), 1, "load once per round: {load:#?}");
        let out = format!("{} {} succeeded", extract.id, last_word.id);
        assert_eq!(output(d, load[0].id), out);
        let report = fired.get(&("report".into(), vec![load[0].id]));
        assert_eq!(
            report.map(Vec::len),
            Some(1),
            "report once after load {}",
            load[0].id
        );
    }
    // A retried attempt fires nothing: nothing ran after rates' first attempts.
    for r in rates.iter().filter(|r| r.attempt == 1 && rates.len() == 2) {
        assert!(
            fired.keys().all(|(_, ids)| !ids.contains(&r.id)),
            "{r:#?} fired a child"
        );
    }
    match p {
        0 => Path::Retried,
        2 => Path::Failed,
        _ => Path::Loaded,
    }
}

/// Run `id`'s output, trimmed (history pages leave it out).
fn output(d: &Daemon, id: i64) -> String {
    on_store(&d.path("history.db"), async |s| s.run(id).await.unwrap())
        .and_then(|r| r.output)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn sorted(ids: &[i64]) -> Vec<i64> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v
}

/// The child is claimed at the parent's end but cannot start (both run slots are held, and a
/// firing waiting since before has the next one): `kill -9` then. After the restart the child
/// runs once, as the run its parents fired.
#[test]
fn a_child_claimed_when_the_daemon_is_killed_runs_once_after_the_restart() {
    let t0 = at_in(2);
    let t1 = at_in(3);
    let jobs = format!(
        "[jobs.block1]\nat = \"{t0}\"\ncommand = \"sleep 60\"\n\
         [jobs.parent]\nat = \"{t0}\"\ncommand = \"sleep 2\"\n\
         [jobs.block2]\nat = \"{t1}\"\ncommand = \"sleep 60\"\n\
         [jobs.child]\nafter = \"parent\"\ncommand = 'echo \"after $HOURGLASS_PARENT_RUN_ID\"'\n"
    );
    let mut d = Daemon::start(
        "[daemon]\ntimezone = \"UTC\"\nmax_concurrent_runs = 2\n",
        &jobs,
    );
    let parent = d.wait_runs("parent", Duration::from_secs(30), "the parent's end", |r| {
        r.len() == 1 && r[0].status == RunStatus::Succeeded
    })[0]
        .clone();
    let db = d.path("history.db");
    let claimed = wait_for(Duration::from_secs(30), "the child's claim", || {
        on_store(&db, async |s| s.lineage(parent.id).await.unwrap())
            .children
            .into_iter()
            .next()
    });
    assert_eq!(
        claimed.status, None,
        "the child waits for a run slot, no row yet"
    );
    d.signal(Signal::SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    assert!(d.runs_of("child").is_empty());
    d.spawn_ready();
    d.wait_runs("child", Duration::from_secs(30), "the child's run", |r| {
        r.first().is_some_and(|r| r.status == RunStatus::Succeeded)
    });
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(20));
    let child = d.runs_of("child");
    assert_eq!(child.len(), 1, "once: {child:#?}");
    assert_eq!(child[0].id, claimed.run_id);
    assert_eq!(child[0].trigger, Trigger::Dependency);
    assert_eq!(output(&d, child[0].id), format!("after {}", parent.id));
    assert_eq!(d.runs_of("parent").len(), 1, "the parent did not run again");
    assert!(
        d.log()
            .contains("starting a run its parents fired before the daemon was killed")
    );
}

/// `check` names a cycle by its path, a parent that is no job, and a window that can do
/// nothing, each with its file, job and field.
#[test]
fn check_names_a_cycle_by_its_path() {
    let jobs = "[jobs.extract]\nafter = \"load\"\ncommand = \"true\"\n\
                [jobs.load]\nafter = { jobs = [\"extract\", \"rates\"] }\ncommand = \"true\"\n\
                [jobs.report]\nafter = { jobs = [\"load\"], within = \"1h\" }\ncommand = \"true\"\n";
    let d = Daemon::prepare("", jobs);
    let out = d.cli(&["check"]);
    crate::harness::fails_with(
        &out,
        &[
            "jobs.d/jobs.toml: job \"extract\": after: the jobs run after each other in a circle: extract → load → extract",
            "jobs.d/jobs.toml: job \"load\": after: names \"rates\", which is no job",
            "jobs.d/jobs.toml: job \"report\": after.within: has no effect here",
        ],
    );
}

/// A paused child lets its parent's runs pass (they do not run it, now or after the resume);
/// a reload that adds a parent makes the child wait for a run of each.
#[test]
fn a_paused_child_lets_runs_pass_and_a_reload_adds_a_parent() {
    let jobs = "[jobs.p]\nevery = \"1s\"\ncommand = \"true\"\n\
                [jobs.c]\nafter = \"p\"\ncommand = \"true\"\n";
    let mut d = Daemon::start("", jobs);
    d.wait_runs("c", Duration::from_secs(30), "a first child", |r| {
        !r.is_empty()
    });
    assert!(d.cli(&["pause", "c"]).status.success());
    let paused = chrono::Utc::now();
    d.wait_runs("p", Duration::from_secs(30), "runs while paused", |r| {
        r.iter()
            .filter(|r| r.started_at.is_some_and(|s| s > paused))
            .count()
            >= 3
    });
    let resumed = chrono::Utc::now();
    assert!(d.cli(&["resume", "c"]).status.success());
    let db = d.path("history.db");
    let children = |id: i64| on_store(&db, async |s| s.lineage(id).await.unwrap()).children;
    let passed: Vec<RunRow> = d
        .runs_of("p")
        .into_iter()
        .filter(|r| {
            r.started_at.is_some_and(|s| s > paused) && r.finished_at.is_some_and(|f| f < resumed)
        })
        .collect();
    assert!(passed.len() >= 2, "{passed:#?}");
    for r in &passed {
        assert!(
            children(r.id).is_empty(),
            "run {} ran its paused child",
            r.id
        );
    }
    // After the resume, the parent's next runs run it again.
    d.wait_runs(
        "c",
        Duration::from_secs(30),
        "a child after the resume",
        |r| r.iter().any(|r| r.scheduled_for > resumed),
    );
    // Add q as a second parent.
    let two = "[jobs.p]\nevery = \"1s\"\ncommand = \"true\"\n\
               [jobs.q]\nevery = \"2s\"\ncommand = \"true\"\n\
               [jobs.c]\nafter = { jobs = [\"p\", \"q\"] }\ncommand = \"true\"\n";
    d.write_jobs("jobs.toml", two);
    d.signal(Signal::SIGHUP);
    d.wait_note("RELOADING=1", Duration::from_secs(10));
    d.wait_note("READY=1", Duration::from_secs(10));
    let reloaded = chrono::Utc::now();
    let after_reload = d.wait_runs(
        "c",
        Duration::from_secs(30),
        "two children after the reload",
        |r| {
            r.iter()
                .filter(|r| r.started_at.is_some_and(|s| s > reloaded))
                .count()
                >= 2
        },
    );
    for r in after_reload
        .iter()
        .filter(|r| r.started_at.is_some_and(|s| s > reloaded))
    {
        let parents = on_store(&db, async |s| s.lineage(r.id).await.unwrap()).parents;
        let jobs: Vec<&str> = parents.iter().map(|p| p.job.as_str()).collect();
        assert_eq!(jobs, ["p", "q"], "run {} waited for both parents", r.id);
    }
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(20));
}

/// Manual runs of a parent count (`trigger`), one with `--no-deps` fires nothing, a child
/// still running when its parent ends again follows its overlap policy (`skip`: recorded
/// `skipped`, naming the active run), and a parent that timed out is a failure
/// (`any_failed`).
#[test]
fn manual_runs_count_no_deps_fires_nothing_and_a_running_child_follows_its_policy() {
    let jobs = "[jobs.p]\nat = \"2099-01-01T00:00:00Z\"\ncommand = \"sleep 0.2\"\n\
                [jobs.c]\nafter = \"p\"\noverlap = \"skip\"\ncommand = \"sleep 3\"\n\
                [jobs.slow]\nat = \"2099-01-01T00:00:00Z\"\ntimeout = \"1s\"\ncommand = \"sleep 30\"\n\
                [jobs.t]\nafter = { jobs = [\"slow\"], when = \"any_failed\" }\ncommand = 'echo \"$HOURGLASS_PARENT_STATUS\"'\n";
    let mut d = Daemon::start("", jobs);
    let ended = |d: &Daemon, job: &str, n: usize| {
        d.wait_runs(job, Duration::from_secs(30), "its end", |r| {
            r.len() >= n && r.iter().all(crate::harness::finished)
        })
    };
    // --no-deps first: p ends, nothing fires; then a plain trigger fires c once.
    assert!(d.cli(&["trigger", "p", "--no-deps"]).status.success());
    let alone = ended(&d, "p", 1)[0].clone();
    assert!(d.cli(&["trigger", "p"]).status.success());
    let second = ended(&d, "p", 2)[1].clone();
    let c = d.wait_runs("c", Duration::from_secs(30), "c", |r| !r.is_empty());
    assert_eq!(c.len(), 1);
    let db = d.path("history.db");
    let parents = on_store(&db, async |s| s.lineage(c[0].id).await.unwrap()).parents;
    assert_eq!(
        parents.iter().map(|p| p.run_id).collect::<Vec<_>>(),
        [second.id]
    );
    assert!(
        on_store(&db, async |s| s.lineage(alone.id).await.unwrap())
            .children
            .is_empty()
    );
    // c (3 s) is still running when p ends again: its next firing is skipped, naming it.
    assert!(d.cli(&["trigger", "p"]).status.success());
    let c = d.wait_runs("c", Duration::from_secs(30), "a skipped c", |r| {
        r.iter().any(|r| r.status == RunStatus::Skipped)
    });
    let skipped = c.iter().find(|r| r.status == RunStatus::Skipped).unwrap();
    assert_eq!(skipped.trigger, Trigger::Dependency);
    assert!(
        skipped
            .error
            .as_deref()
            .unwrap_or("")
            .contains(&format!("run {} is still active", c[0].id)),
        "{skipped:#?}"
    );
    // A parent that timed out fires its any_failed child, which sees the status.
    assert!(d.cli(&["trigger", "slow"]).status.success());
    let t = d.wait_runs("t", Duration::from_secs(30), "t", |r| {
        r.iter().any(crate::harness::finished)
    });
    assert_eq!(output(&d, t[0].id), "timed_out");
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(20));
    assert_eq!(d.runs_of("t").len(), 1);
}

/// The daemon stops (SIGTERM) while a parent runs: the parent finishes within the grace, its
/// child does not start during the stop, and the next start fires the child once.
#[test]
fn a_parent_ending_during_a_stop_fires_its_child_at_the_next_start() {
    let jobs = "[jobs.p]\nat = \"2099-01-01T00:00:00Z\"\ncommand = \"sleep 2\"\n\
                [jobs.c]\nafter = \"p\"\ncommand = \"true\"\n";
    let mut d = Daemon::start("", jobs);
    assert!(d.cli(&["trigger", "p"]).status.success());
    d.wait_runs("p", Duration::from_secs(30), "p running", |r| !r.is_empty());
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(30));
    let p = d.runs_of("p");
    assert_eq!(
        p[0].status,
        RunStatus::Succeeded,
        "it finished within the grace: {p:#?}"
    );
    assert!(
        d.runs_of("c").is_empty(),
        "nothing starts once the stop has begun"
    );
    d.spawn_ready();
    d.wait_runs("c", Duration::from_secs(30), "the child", |r| {
        r.iter().any(crate::harness::finished)
    });
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(20));
    let c = d.runs_of("c");
    assert_eq!(c.len(), 1, "{c:#?}");
    let parents = on_store(&d.path("history.db"), async |s| {
        s.lineage(c[0].id).await.unwrap()
    })
    .parents;
    assert_eq!(
        parents.iter().map(|p| p.run_id).collect::<Vec<_>>(),
        [p[0].id]
    );
}
