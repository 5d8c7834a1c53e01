//! The commands that act on the daemon: `trigger`, `pause`, `resume` and `status`: through
//! its API when it is up, on the history database otherwise (a pause made while the daemon
//! is down holds from its next start).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;

use super::client::{Daemon, Refused};
use super::print::local;
use super::running::note_in_force;
use super::{load_lenient, note_problems, open_existing};
use crate::config::{Config, InForce, Problem};
use crate::store::{Database, Event, Pause, Store, TriggerOutcome, TriggerState};

/// Exit status of `trigger` when the firing waits (behind the job's active run, or for a free
/// run slot).
pub const TRIGGER_QUEUED: u8 = 3;
/// Exit status of `trigger` when the firing was not run.
pub const TRIGGER_SKIPPED: u8 = 4;
/// Exit status of `status` when no daemon answers (as `systemctl status`).
pub const NOT_RUNNING: u8 = 3;

/// Where an action on a job goes: the daemon that answers (it knows the jobs it runs,
/// whatever the files on disk say now), or the history database, for a job the files define.
enum Target {
    Daemon(Answering),
    Database(Config),
}

/// A daemon that answers, with the configuration on disk (and its problems) beside it.
struct Answering {
    daemon: Daemon,
    cfg: Config,
    problems: Vec<Problem>,
}

/// Where an action on `job` goes (else a message and `Err(exit status)`).
async fn target(path: &Path, job: &str) -> anyhow::Result<Result<Target, ExitCode>> {
    // The name goes into the API's path as one segment: only a job name can be one.
    if !crate::config::valid_job_name(job) {
        eprintln!(
            "no job named {job:?} (job names are letters, digits, '-', '_' and '.', starting with a letter or digit)"
        );
        return Ok(Err(ExitCode::FAILURE));
    }
    let (cfg, problems) = load_lenient(path)?;
    if let Some(daemon) = Daemon::find(&cfg.settings).await {
        note_in_force(daemon.in_force.as_ref(), &problems);
        return Ok(Ok(Target::Daemon(Answering {
            daemon,
            cfg,
            problems,
        })));
    }
    Ok(job_in_files(cfg, &problems, job).map(Target::Database))
}

/// `cfg` if its files define `job` without a mistake (else a message and the exit status).
fn job_in_files(cfg: Config, problems: &[Problem], job: &str) -> Result<Config, ExitCode> {
    if !cfg.jobs.iter().any(|j| j.name == job) {
        if problems.iter().any(|p| p.job.as_deref() == Some(job)) {
            eprintln!("job {job:?} has a mistake and cannot run; `hourglass check` says what");
        } else {
            eprintln!("no job named {job:?} in the configuration");
        }
        return Err(ExitCode::FAILURE);
    }
    note_problems(problems);
    Ok(cfg)
}

impl Answering {
    /// Says why the daemon refused an action on `job` (for a job it does not run: what the
    /// files on disk say of it); exit status 1.
    fn refused(&self, e: &Refused, job: &str) -> ExitCode {
        if e.status != 404 {
            eprintln!("{}", e.message);
            return ExitCode::FAILURE;
        }
        let files = if self.problems.iter().any(|p| p.job.as_deref() == Some(job)) {
            "; the files on disk define it with a mistake (`hourglass check` says what)"
        } else if self.cfg.jobs.iter().any(|j| j.name == job) {
            "; the files on disk define it, but the daemon has not loaded them (`systemctl reload hourglass`)"
        } else {
            ""
        };
        eprintln!("no job named {job:?} in the configuration the daemon runs{files}");
        ExitCode::FAILURE
    }
}

/// What the API answers to a trigger.
#[derive(Debug, Deserialize)]
struct Triggered {
    outcome: String,
    run_id: Option<i64>,
    detail: Option<String>,
}

/// `hourglass trigger JOB`.
pub(super) async fn trigger(
    path: &Path,
    job: &str,
    no_wait: bool,
    no_deps: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = match target(path, job).await? {
        Ok(Target::Daemon(answering)) => {
            let url = if no_deps {
                format!("/v1/jobs/{job}/trigger?no_deps=true")
            } else {
                format!("/v1/jobs/{job}/trigger")
            };
            match answering
                .daemon
                .post::<Triggered>(&url, &serde_json::json!({}))
                .await
            {
                Ok(t) => {
                    let state = TriggerState {
                        claimed: true,
                        outcome: TriggerOutcome::from_name(&t.outcome),
                        run_id: t.run_id,
                        detail: t.detail,
                    };
                    return Ok(report_trigger(
                        job,
                        &state,
                        &answering.cfg.settings.database,
                    ));
                }
                // On a shared database the job may be another node's only: the request goes
                // through the database, as when no daemon answers here.
                Err(e)
                    if e.status == 404
                        && matches!(answering.cfg.settings.database, Database::Postgres(_)) =>
                {
                    match job_in_files(answering.cfg, &answering.problems, job) {
                        Ok(cfg) => cfg,
                        Err(code) => return Ok(code),
                    }
                }
                Err(e) => return Ok(answering.refused(&e, job)),
            }
        }
        Ok(Target::Database(cfg)) => cfg,
        Err(code) => return Ok(code),
    };
    let store = open_existing(&cfg.settings.database).await?;
    let req = store.request_trigger(job, no_deps).await?;
    if no_wait {
        println!("requested a manual run of {job:?}");
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut state = TriggerState::default();
    while tokio::time::Instant::now() < deadline {
        state = store.trigger_state(req).await?;
        if state.outcome.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(report_trigger(job, &state, &cfg.settings.database))
}

/// Says what became of a trigger request; returns the exit status.
fn report_trigger(job: &str, state: &TriggerState, database: &Database) -> ExitCode {
    let detail = state.detail.as_deref().unwrap_or("");
    match (state.outcome, state.run_id) {
        (Some(TriggerOutcome::Started), Some(id)) => {
            println!("run {id} of {job:?} started (`hourglass show {id}` for its result)");
            ExitCode::SUCCESS
        }
        (Some(TriggerOutcome::Skipped), id) => {
            let row = id.map(|i| format!(" (run {i})")).unwrap_or_default();
            println!("{job:?} was not run{row}: {detail}");
            ExitCode::from(TRIGGER_SKIPPED)
        }
        (Some(_), _) => {
            println!(
                "{job:?} is queued: {detail}; it runs when its turn comes (`hourglass history --job {job}`)"
            );
            ExitCode::from(TRIGGER_QUEUED)
        }
        (None, _) if state.claimed => {
            println!(
                "{job:?} was picked up by the daemon and waits for its turn (`hourglass history --job {job}`)"
            );
            ExitCode::from(TRIGGER_QUEUED)
        }
        (None, _) => {
            eprintln!(
                "requested a manual run of {job:?}, but no daemon picked it up within 5 s (is `hourglass run` running on {database}?)"
            );
            ExitCode::FAILURE
        }
    }
}

/// `hourglass pause JOB [--until TIME]`.
pub(super) async fn pause(path: &Path, job: &str, until: Option<&str>) -> anyhow::Result<ExitCode> {
    let paused: Pause = match target(path, job).await? {
        Ok(Target::Daemon(answering)) => {
            let url = format!("/v1/jobs/{job}/pause");
            match answering
                .daemon
                .post(&url, &serde_json::json!({ "until": until }))
                .await
            {
                Ok(p) => p,
                Err(e) => return Ok(answering.refused(&e, job)),
            }
        }
        Ok(Target::Database(cfg)) => {
            let until = until
                .map(|u| crate::api::parse_time(u, true))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let pause = Pause {
                job: job.to_string(),
                since: Utc::now(),
                until,
                actor: me(),
            };
            let store = open_existing(&cfg.settings.database).await?;
            store.pause(&pause).await?;
            let detail = until.map(|u| format!("until {}", u.to_rfc3339()));
            record_offline(&store, "pause", job, detail).await;
            pause
        }
        Err(code) => return Ok(code),
    };
    match paused.until {
        Some(u) => println!("{job:?} is paused until {}", local(u)),
        None => println!("{job:?} is paused (`hourglass resume {job}` to go on)"),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Deserialize)]
struct Resumed {
    was_paused: bool,
}

/// `hourglass resume JOB`.
pub(super) async fn resume(path: &Path, job: &str) -> anyhow::Result<ExitCode> {
    let was_paused = match target(path, job).await? {
        Ok(Target::Daemon(answering)) => {
            let url = format!("/v1/jobs/{job}/resume");
            match answering
                .daemon
                .post::<Resumed>(&url, &serde_json::json!({}))
                .await
            {
                Ok(r) => r.was_paused,
                Err(e) => return Ok(answering.refused(&e, job)),
            }
        }
        Ok(Target::Database(cfg)) => {
            let store = open_existing(&cfg.settings.database).await?;
            let was = store.resume(job, Utc::now()).await?;
            record_offline(&store, "resume", job, None).await;
            was
        }
        Err(code) => return Ok(code),
    };
    if was_paused {
        println!("{job:?} is resumed: it goes on from its next firing");
    } else {
        println!("{job:?} was not paused");
    }
    Ok(ExitCode::SUCCESS)
}

/// Who runs the CLI, as the events table names API callers.
fn me() -> String {
    format!("uid:{}", nix::unistd::getuid().as_raw())
}

/// Writes an action done on the database while no daemon answered.
async fn record_offline(store: &Store, action: &str, job: &str, detail: Option<String>) {
    let event = Event {
        at: Utc::now(),
        action: action.to_string(),
        job: Some(job.to_string()),
        actor: me(),
        node: "cli".to_string(),
        detail,
    };
    if let Err(e) = store.record_event(&event).await {
        eprintln!("note: cannot write the action to the events table: {e}");
    }
}

/// `hourglass status`.
pub(super) async fn status(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (cfg, problems) = load_lenient(path)?;
    let Some(daemon) = Daemon::find(&cfg.settings).await else {
        note_problems(&problems);
        let socket = cfg.settings.api.socket.as_deref().map_or_else(
            || "no socket (api.socket = \"\")".to_string(),
            |p| p.display().to_string(),
        );
        println!(
            "hourglass is not running on {} (no answer at {socket})",
            cfg.settings.database
        );
        return Ok(ExitCode::from(NOT_RUNNING));
    };
    let s: crate::api::Status = daemon.get("/v1/status").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    let up = (Utc::now() - s.started_at).to_std().unwrap_or_default();
    let up = humantime::format_duration(Duration::from_secs(up.as_secs()));
    println!(
        "hourglass {} running as node {:?} on {}",
        s.version, s.node, s.database
    );
    println!("up since   {} ({up})", local(s.started_at));
    println!("jobs       {} scheduled, {} paused", s.jobs, s.paused.len());
    println!("runs       {} running, {} waiting", s.running, s.waiting);
    match s.history_failing_s {
        Some(f) => println!(
            "history    FAILING for {f} s: {} run records waiting",
            s.pending_records
        ),
        None => println!("history    written ({} records pending)", s.pending_records),
    }
    print_in_force(&s.configuration);
    for p in &s.paused {
        let until = p
            .until
            .map_or_else(String::new, |u| format!(" until {}", local(u)));
        println!(
            "paused     {} since {}{until} (by {})",
            p.job,
            local(p.since),
            p.actor
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `status`'s lines on the configuration: when it was loaded, and the files' refusal.
fn print_in_force(c: &InForce) {
    let Some(r) = &c.rejected else {
        println!("config     loaded {}", local(c.loaded_at));
        return;
    };
    let last = if r.last == r.since {
        String::new()
    } else {
        format!(" (last tried {})", local(r.last))
    };
    println!(
        "config     REJECTED since {}{last}: the daemon runs the configuration loaded {}",
        local(r.since),
        local(c.loaded_at)
    );
    for line in r.error.lines() {
        println!("           {line}");
    }
}
