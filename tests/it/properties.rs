//! Property tests: whatever a config says, `check` answers without panicking, and whatever
//! `check` accepts, `list`, `run` and a reload take without panicking; the same for the CLI's
//! arguments. Durations, cron expressions, zones and whole job tables are generated from
//! pieces a user might write (and some nobody would), at the edges of every range.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

const MAIN: &str = "[database]\npath = \"history.db\"\n[daemon]\ntimezone = \"UTC\"\n";

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..100).prop_map(|n| n.to_string()),
        Just("0".to_string()),
        Just("4294967296".to_string()),
        Just("99999999999".to_string()),
        Just("18446744073709551615".to_string()),
        Just("-1".to_string()),
        Just("1.5".to_string()),
    ]
}

fn duration() -> impl Strategy<Value = String> {
    let unit = prop_oneof![
        Just("ms"),
        Just("s"),
        Just("m"),
        Just("h"),
        Just("d"),
        Just("w"),
        Just("y"),
        Just(""),
        Just("x"),
        Just("ns"),
    ];
    let valid_unit = prop::sample::select(vec!["ms", "s", "m", "h", "d", "w"]);
    prop_oneof![
        8 => (1u64..5000, valid_unit).prop_map(|(n, u)| format!("{n}{u}")),
        1 => Just("3650d".to_string()),
        1 => (number(), unit).prop_map(|(n, u)| format!("{n}{u}")),
        1 => (number(), number()).prop_map(|(a, b)| format!("{a}h {b}m")),
        1 => "[ -~]{0,12}",
    ]
}

fn cron_field() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("*".to_string()),
        4 => (0u32..12).prop_map(|n| n.to_string()),
        2 => (0u32..12, 0u32..12).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        2 => (1u32..30).prop_map(|n| format!("*/{n}")),
        1 => (0u32..70).prop_map(|n| n.to_string()),
        1 => (0u32..70, 0u32..70).prop_map(|(a, b)| format!("{a}-{b}")),
        1 => (0u32..70).prop_map(|n| format!("*/{n}")),
        1 => (0u32..40, 0u32..40, 0u32..9).prop_map(|(a, b, s)| format!("{a}-{b}/{s}")),
        1 => (0u32..40, 0u32..40).prop_map(|(a, b)| format!("{a},{b}")),
        1 => prop::sample::select(vec!["MON", "jan", "L", "5L", "MON#2", "15W", "?", "+1", "x", ""])
            .prop_map(str::to_string),
    ]
}

fn cron() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => prop::collection::vec(cron_field(), 5..=6).prop_map(|f| f.join(" ")),
        1 => prop::collection::vec(cron_field(), 0..9).prop_map(|f| f.join(" ")),
        1 => prop::sample::select(vec!["@daily", "@midnight", "@annually", "@reboot", "@", "0 0 29 2 *", "0 0 30 2 *"])
            .prop_map(str::to_string),
    ]
}

fn zone() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe",
            "Pacific/Kiritimati",
            "Asia/Kathmandu",
            "America/St_Johns",
            "Mars/Olympus",
            "",
        ])
        .prop_map(str::to_string),
        1 => "[A-Za-z/_+-]{0,20}",
    ]
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// One job table: a schedule, a command, and any of the optional keys, with odd values.
fn job_table() -> impl Strategy<Value = String> {
    let schedule = prop_oneof![
        cron().prop_map(|c| format!("schedule = {}", quoted(&c))),
        duration().prop_map(|d| format!("every = {}", quoted(&d))),
        prop::sample::select(vec![
            "2026-12-24T18:00:00Z",
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "tomorrow",
        ])
        .prop_map(|a| format!("at = {}", quoted(a))),
    ];
    let optional = prop::collection::vec(
        prop_oneof![
            (
                prop::sample::select(vec![
                    "jitter",
                    "timeout",
                    "kill_grace",
                    "retry_backoff",
                    "retry_backoff_max",
                    "catch_up_window",
                ]),
                duration()
            )
                .prop_map(|(k, v)| format!("{k} = {}", quoted(&v))),
            zone().prop_map(|z| format!("timezone = {}", quoted(&z))),
            prop_oneof![4 => (0u32..20).prop_map(|n| n.to_string()), 1 => number()]
                .prop_map(|n| format!("retries = {n}")),
            prop::sample::select(vec!["skip", "latest", "all", "all", "latest", "maybe"])
                .prop_map(|c| format!("catch_up = {}", quoted(c))),
            prop::sample::select(vec!["allow", "skip", "queue", "replace", "queue", "x"])
                .prop_map(|o| format!("overlap = {}", quoted(o))),
            prop::sample::select(vec!["1", "64KiB", "1GiB", "1MiB", "2GiB", "x", "0"])
                .prop_map(|s| format!("output_limit = {}", quoted(s))),
            any::<bool>().prop_map(|b| format!("enabled = {b}")),
        ],
        0..5,
    );
    (schedule, optional).prop_map(|(s, o)| {
        let mut lines = vec![s, "command = \"true\"".to_string()];
        // A key given twice is a TOML error; keep the first of each.
        for line in o {
            let key = line.split(" =").next().unwrap_or("").to_string();
            if !lines.iter().any(|l| l.starts_with(&format!("{key} ="))) {
                lines.push(line);
            }
        }
        lines.join("\n")
    })
}

fn job_file() -> impl Strategy<Value = String> {
    prop::collection::vec(job_table(), 1..3).prop_map(|jobs| {
        jobs.iter()
            .enumerate()
            .map(|(i, j)| format!("[jobs.j{i}]\n{j}\n"))
            .collect()
    })
}

/// Loads `jobs` beside the standard main file, failing the property on a panic.
fn load(jobs: &str) -> Result<hourglass::config::Config, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hourglass.toml"), MAIN).unwrap();
    std::fs::create_dir(dir.path().join("jobs.d")).unwrap();
    std::fs::write(dir.path().join("jobs.d/p.toml"), jobs).unwrap();
    match hourglass::config::load(&dir.path().join("hourglass.toml")) {
        Ok(c) => Ok(c),
        Err(e) => {
            let text = e.to_string();
            assert!(
                !text.contains("panicked"),
                "check panicked on:\n{jobs}\n{text}"
            );
            Err(text)
        }
    }
}

/// What `list` and the scheduler compute for a job, from instants at the edges of time.
fn walk_the_schedule(job: &hourglass::job::JobSpec) {
    let instants = [
        Utc::now(),
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::MAX_UTC,
        DateTime::<Utc>::MAX_UTC - TimeDelta::days(1),
        DateTime::from_timestamp(0, 0).unwrap(),
    ];
    for t in instants {
        let _ = job.schedule.describe();
        let _ = job.latest_fire_at_or_before(t);
        let mut at = t;
        for _ in 0..3 {
            match job.next_fire_after(at) {
                Some(n) => {
                    assert!(n > at, "{}: next {n} not after {at}", job.name);
                    at = n;
                }
                None => break,
            }
        }
    }
}

/// One history database for every case (a database per case would cost a second of
/// migrations every 50 cases), with the runtime its pool lives on.
fn shared_store() -> &'static (tokio::runtime::Runtime, hourglass::store::Store) {
    static SHARED: std::sync::OnceLock<(tokio::runtime::Runtime, hourglass::store::Store)> =
        std::sync::OnceLock::new();
    SHARED.get_or_init(|| hourglass::store::Store::scratch().unwrap())
}

/// Schedules the jobs as `run` does, then applies them again as a reload does.
fn schedule_and_reload(jobs: Vec<hourglass::job::JobSpec>) {
    let store = &shared_store().1;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let clock = Arc::new(hourglass::clock::Clock::manual(Utc::now()));
        let (recorder, _rx) = hourglass::history::recorder::Recorder::channel();
        let ctx = Arc::new(hourglass::runner::Context::new(
            clock,
            recorder,
            8,
            Arc::new(hourglass::history::run_ids::RunIds::unreserved(1)),
            "p".into(),
            hourglass::job::Services {
                mailers: hourglass::smtp::Mailers::default(),
                http: hourglass::http_client::HttpClients::default(),
                store: store.clone(),
                live: hourglass::job::output::LiveOutputs::default(),
            },
        ));
        let cancel = tokio_util::sync::CancellationToken::new();
        let mut s = hourglass::scheduler::Scheduler::new(ctx, cancel.clone());
        let last: HashMap<String, DateTime<Utc>> = jobs
            .iter()
            .map(|j| (j.name.clone(), DateTime::<Utc>::MIN_UTC))
            .collect();
        s.apply(jobs.clone(), &Default::default(), &last);
        let _ = s.len();
        s.apply(jobs, &Default::default(), &HashMap::new());
        s.apply(Vec::new(), &Default::default(), &HashMap::new());
        cancel.cancel();
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    /// `check` never panics, and what it accepts never panics `list`, `run` or a reload.
    #[test]
    fn whatever_check_accepts_list_run_and_reload_take(jobs in job_file()) {
        if let Ok(cfg) = load(&jobs) {
            for job in &cfg.jobs {
                walk_the_schedule(job);
            }
            schedule_and_reload(cfg.jobs);
        }
    }

    /// Durations at any size: an error or a value within the documented maximum.
    #[test]
    fn durations_parse_or_fail_within_bounds(d in duration()) {
        if let Ok(v) = hourglass::config::parse_duration(&d) {
            prop_assert!(v <= hourglass::config::MAX_DURATION);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every CLI argument, odd or not, gets an answer and an exit status, never a panic.
    #[test]
    fn cli_arguments_never_panic(
        since in duration(),
        older in duration(),
        run_id in prop_oneof![Just("0".to_string()), Just("-1".to_string()), Just("9223372036854775807".to_string()), Just("x".to_string()), (0i64..100).prop_map(|n| n.to_string())],
        limit in prop_oneof![Just("0".to_string()), Just("4294967295".to_string()), Just("4294967296".to_string()), Just("-5".to_string())],
        job in "[ -~]{0,10}",
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hourglass.toml"), MAIN).unwrap();
        std::fs::create_dir(dir.path().join("jobs.d")).unwrap();
        let config = dir.path().join("hourglass.toml");
        // A database to read from.
        crate::harness::on_store(&dir.path().join("history.db"), async |_| ());
        let commands: Vec<Vec<&str>> = vec![
            vec!["history", "--since", &since, "--limit", &limit],
            vec!["history", "--job", &job, "--status", "failed"],
            vec!["prune", "--older-than", &older],
            vec!["show", &run_id],
            vec!["trigger", &job, "--no-wait"],
            vec!["list"],
        ];
        for args in commands {
            let out = crate::harness::cli(&config, &args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            prop_assert!(
                matches!(out.status.code(), Some(0..=2)) && !stderr.contains("panicked"),
                "{args:?}: {:?}\n{stderr}",
                out.status
            );
        }
    }
}
