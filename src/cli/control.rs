//! The commands that act on the daemon: `trigger`, `pause`, `resume` and `status`: through
//! its API when it is up, on the history database otherwise (a pause made while the daemon
//! is down holds from its next start).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;

use super::client::Daemon;
use super::print::local;
use super::{load_lenient, note_problems, open_existing};
use crate::config::Config;
use crate::store::{Database, Event, Pause, Store, TriggerOutcome, TriggerState};

/// Exit status of `trigger` when the firing waits (behind the job's active run, or for a free
/// run slot).
pub const TRIGGER_QUEUED: u8 = 3;
/// Exit status of `trigger` when the firing was not run.
pub const TRIGGER_SKIPPED: u8 = 4;
/// Exit status of `status` when no daemon answers (as `systemctl status`).
pub const NOT_RUNNING: u8 = 3;

/// The configuration, with `job` known in it (else a message and `Err(exit status)`).
fn config_with_job(path: &Path, job: &str) -> anyhow::Result<Result<Config, ExitCode>> {
    let (cfg, problems) = load_lenient(path)?;
    if !cfg.jobs.iter().any(|j| j.name == job) {
        if problems.iter().any(|p| p.job.as_deref() == Some(job)) {
            eprintln!("job {job:?} has a mistake and cannot run; `hourglass check` says what");
        } else {
            eprintln!("no job named {job:?} in the configuration");
        }
        return Ok(Err(ExitCode::FAILURE));
    }
    note_problems(&problems);
    Ok(Ok(cfg))
}

/// What the API answers to a trigger.
#[derive(Debug, Deserialize)]
struct Triggered {
    outcome: String,
    run_id: Option<i64>,
    detail: Option<String>,
}

/// `hourglass trigger JOB`.
pub(super) async fn trigger(path: &Path, job: &str, no_wait: bool) -> anyhow::Result<ExitCode> {
    let cfg = match config_with_job(path, job)? {
        Ok(cfg) => cfg,
        Err(code) => return Ok(code),
    };
    // Job names are letters, digits, '-', '_' and '.': one path segment as they are.
    if let Some(daemon) = Daemon::find(&cfg.settings).await {
        let url = format!("/v1/jobs/{job}/trigger");
        match daemon.post::<Triggered>(&url, &serde_json::json!({})).await {
            Ok(t) => {
                let state = TriggerState {
                    claimed: true,
                    outcome: TriggerOutcome::from_name(&t.outcome),
                    run_id: t.run_id,
                    detail: t.detail,
                };
                return Ok(report_trigger(job, &state, &cfg.settings.database));
            }
            // On a shared database the job may be another node's only: the request goes
            // through the database, as when no daemon answers here.
            Err(e) if e.status == 404 && cfg.settings.database.is_shared() => {}
            Err(e) => {
                eprintln!("{}", e.message);
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    let store = open_existing(&cfg.settings.database).await?;
    let req = store.request_trigger(job).await?;
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
    let cfg = match config_with_job(path, job)? {
        Ok(cfg) => cfg,
        Err(code) => return Ok(code),
    };
    let paused: Pause = if let Some(daemon) = Daemon::find(&cfg.settings).await {
        let url = format!("/v1/jobs/{job}/pause");
        match daemon
            .post(&url, &serde_json::json!({ "until": until }))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{}", e.message);
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
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
    let cfg = match config_with_job(path, job)? {
        Ok(cfg) => cfg,
        Err(code) => return Ok(code),
    };
    let was_paused = if let Some(daemon) = Daemon::find(&cfg.settings).await {
        let url = format!("/v1/jobs/{job}/resume");
        match daemon.post::<Resumed>(&url, &serde_json::json!({})).await {
            Ok(r) => r.was_paused,
            Err(e) => {
                eprintln!("{}", e.message);
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        let store = open_existing(&cfg.settings.database).await?;
        let was = store.resume(job, Utc::now()).await?;
        record_offline(&store, "resume", job, None).await;
        was
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
    note_problems(&problems);
    let Some(daemon) = Daemon::find(&cfg.settings).await else {
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
