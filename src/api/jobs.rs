//! Jobs through the API: the list and one job (definition summary, next firings, last run,
//! pause), and the actions (trigger, pause, resume), each written to the events log with
//! who asked.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse as _, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Actor;
use super::{ApiState, Failure, parse_time};
use crate::scheduler::JobView;
use crate::store::{Event, HistoryFilter, Pause, RunRow};

/// How many next firings one job's answer lists.
const NEXT_FIRINGS: usize = 5;
/// How long a trigger waits to hear whether its run started, queued or was skipped.
const TRIGGER_NEWS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A job as the API shows it (and the CLI's `list` prints it while a daemon answers).
#[derive(Debug, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job's name.
    pub name: String,
    /// Its kind (`command`, `email`, ...).
    pub kind: String,
    /// Its schedule in words.
    pub schedule: String,
    /// Its IANA time zone.
    pub timezone: String,
    /// Whether it fires on its schedule.
    pub enabled: bool,
    /// The next firings that will run (RFC 3339 in the job's zone).
    pub next: Vec<String>,
    /// Its pause, if one holds.
    pub paused: Option<Pause>,
    /// Its run in progress.
    pub active_run: Option<i64>,
    /// Its firings waiting for their turn.
    pub waiting: usize,
    /// Its newest run.
    pub last_run: Option<RunRow>,
    /// What it runs after, in words (`after extract and rates succeed`), if anything.
    #[serde(default)]
    pub after: Option<String>,
}

impl JobSummary {
    fn of(view: &JobView, next: usize, last: Option<RunRow>) -> Self {
        let spec = &view.spec;
        let times = view
            .upcoming(next)
            .into_iter()
            .map(|t| t.with_timezone(&spec.tz).to_rfc3339())
            .collect();
        Self {
            name: spec.name.clone(),
            kind: spec.kind.label().to_string(),
            schedule: spec.schedule.describe(),
            timezone: spec.tz.to_string(),
            enabled: spec.enabled,
            next: times,
            paused: view.pause.clone(),
            active_run: view.active_run,
            waiting: view.waiting,
            last_run: last,
            after: spec.after.as_ref().map(crate::job::after::After::in_words),
        }
    }
}

/// How long a built job list is served again: under load the list (10,000 jobs: 2 MB of
/// JSON) is built at most this often, off the runtime's threads.
const JOBS_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /v1/jobs`: every job, by name (at most [`JOBS_FRESH_FOR`] old).
pub(super) async fn list(State(state): State<ApiState>) -> Result<Response, Failure> {
    let mut cached = state.0.jobs_cache.lock().await;
    // A reload applied since the list was built makes it stale at once.
    let generation = state.0.in_force.generation();
    let fresh = cached
        .as_ref()
        .filter(|(at, built_for, _)| at.elapsed() < JOBS_FRESH_FOR && *built_for == generation)
        .map(|(_, _, body)| body.clone());
    let body = match fresh {
        Some(body) => body,
        None => {
            let last: HashMap<String, RunRow> = state.0.store.last_runs().await?;
            let views = state.0.scheduler.views();
            let built = tokio::task::spawn_blocking(move || {
                let mut last = last;
                let jobs: Vec<JobSummary> = views
                    .iter()
                    .map(|v| JobSummary::of(v, 1, last.remove(&v.spec.name)))
                    .collect();
                serde_json::to_vec(&jobs)
            })
            .await;
            let body = match built {
                Ok(Ok(bytes)) => axum::body::Bytes::from(bytes),
                _ => {
                    return Err(Failure::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot build the job list",
                    ));
                }
            };
            *cached = Some((tokio::time::Instant::now(), generation, body.clone()));
            body
        }
    };
    drop(cached);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /v1/jobs/{name}`: one job, with its next firings.
pub(super) async fn one(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<JobSummary>, Failure> {
    let view = state
        .0
        .scheduler
        .view(&name)
        .ok_or_else(|| Failure::not_found(format!("job {name:?}")))?;
    let newest = HistoryFilter {
        job: Some(name),
        limit: 1,
        ..HistoryFilter::default()
    };
    let last = state.0.store.history(&newest).await?.into_iter().next();
    Ok(Json(JobSummary::of(&view, NEXT_FIRINGS, last)))
}

/// What a trigger did.
#[derive(Debug, Serialize)]
pub(crate) struct Triggered {
    /// `started`, `queued` or `skipped`.
    pub(crate) outcome: &'static str,
    /// The run it started or skipped.
    pub(crate) run_id: Option<i64>,
    /// Why it queued or skipped.
    pub(crate) detail: Option<String>,
}

/// `?no_deps=true` of a trigger: the run fires none of the jobs that run after it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct TriggerQuery {
    no_deps: bool,
}

/// `POST /v1/jobs/{name}/trigger`: runs the job now under its overlap policy
/// (`?no_deps=true`: alone, firing none of the jobs that run after it).
pub(super) async fn trigger(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<TriggerQuery>,
) -> Result<Json<Triggered>, Failure> {
    Ok(Json(trigger_job(&state, &actor, &name, q.no_deps).await?))
}

/// Runs `name` now under its overlap policy, as `actor` asked; what came of it within a few
/// seconds.
pub(crate) async fn trigger_job(
    state: &ApiState,
    actor: &Actor,
    name: &str,
    no_deps: bool,
) -> Result<Triggered, Failure> {
    let news = state
        .0
        .scheduler
        .trigger(name, no_deps)
        .ok_or_else(|| Failure::not_found(format!("job {name:?}")))?;
    tracing::info!(job = %name, actor = %actor.0, no_deps, "manual trigger");
    let news = tokio::time::timeout(TRIGGER_NEWS_WAIT, news).await;
    let answer = match news {
        Ok(Ok(news)) => {
            let (outcome, run_id, detail) = news.outcome();
            Triggered {
                outcome: outcome.as_str(),
                run_id,
                detail,
            }
        }
        Ok(Err(_)) | Err(_) => Triggered {
            outcome: "queued",
            run_id: None,
            detail: Some("no news of the firing yet".to_string()),
        },
    };
    let detail = match answer.run_id {
        Some(id) => format!("{} (run {id})", answer.outcome),
        None => answer.outcome.to_string(),
    };
    record(state, actor, "trigger", name, Some(detail)).await;
    Ok(answer)
}

/// The body of a pause: until when (RFC 3339, or a duration from now such as `"2h"`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PauseRequest {
    until: Option<String>,
}

/// `POST /v1/jobs/{name}/pause`: its firings are not run until resumed (or `until`).
pub(super) async fn pause(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Pause>, Failure> {
    if state.0.scheduler.view(&name).is_none() {
        return Err(Failure::not_found(format!("job {name:?}")));
    }
    // No body, `null` and `{}` all mean "until resumed".
    let body: Option<PauseRequest> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            Failure::bad_request(format!(
                "the body is not {{\"until\": \"<RFC 3339 time or duration>\"}}: {e}"
            ))
        })?
    };
    let until = body.and_then(|b| b.until);
    Ok(Json(
        pause_job(&state, &actor, &name, until.as_deref()).await?,
    ))
}

/// The furthest a pause's end may be (100 years).
const MAX_PAUSE_DAYS: i64 = 36_525;

/// Pauses `name` (until `until`, RFC 3339 or a duration from now, when given), as `actor`
/// asked.
pub(crate) async fn pause_job(
    state: &ApiState,
    actor: &Actor,
    name: &str,
    until: Option<&str>,
) -> Result<Pause, Failure> {
    if state.0.scheduler.view(name).is_none() {
        return Err(Failure::not_found(format!("job {name:?}")));
    }
    let now = Utc::now();
    let until: Option<DateTime<Utc>> = match until {
        None => None,
        Some(u) => {
            let t = parse_time(u, true).map_err(Failure::bad_request)?;
            if t <= now + chrono::TimeDelta::seconds(1) {
                return Err(Failure::bad_request(format!(
                    "until {u:?} is not ahead; expected a time or a duration ahead (\"2h\"), or no until for a pause until resumed"
                )));
            }
            if t > now + chrono::TimeDelta::days(MAX_PAUSE_DAYS) {
                return Err(Failure::bad_request(format!(
                    "until {u:?} is more than 100 years ahead; for a pause until resumed, give no until"
                )));
            }
            Some(t)
        }
    };
    let pause = Pause {
        job: name.to_string(),
        since: now,
        until,
        actor: actor.0.clone(),
    };
    state.0.store.pause(&pause).await?;
    state.0.scheduler.pause(pause.clone());
    // The next list shows it (an API reads its own writes).
    *state.0.jobs_cache.lock().await = None;
    let until_text = until.map_or_else(|| "resumed".to_string(), crate::store::format_ts);
    tracing::info!(job = %name, actor = %actor.0, until = %until_text, "job paused");
    let detail = until.map(|u| format!("until {}", u.to_rfc3339()));
    record(state, actor, "pause", name, detail).await;
    Ok(pause)
}

/// What a resume did.
#[derive(Debug, Serialize)]
pub(crate) struct Resumed {
    job: String,
    /// Whether it was paused.
    pub(crate) was_paused: bool,
}

/// `POST /v1/jobs/{name}/resume`: the job goes on from now; what passed under the pause does
/// not run.
pub(super) async fn resume(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<Json<Resumed>, Failure> {
    Ok(Json(resume_job(&state, &actor, &name).await?))
}

/// Resumes `name` from now, as `actor` asked.
pub(crate) async fn resume_job(
    state: &ApiState,
    actor: &Actor,
    name: &str,
) -> Result<Resumed, Failure> {
    if state.0.scheduler.view(name).is_none() {
        return Err(Failure::not_found(format!("job {name:?}")));
    }
    let was_paused = state.0.store.resume(name, Utc::now()).await?;
    state.0.scheduler.resume(name);
    *state.0.jobs_cache.lock().await = None;
    tracing::info!(job = %name, actor = %actor.0, was_paused, "job resumed");
    let detail = (!was_paused).then(|| "was not paused".to_string());
    record(state, actor, "resume", name, detail).await;
    Ok(Resumed {
        job: name.to_string(),
        was_paused,
    })
}

/// Filters of `GET /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    job: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/events`: the newest actions, newest first.
pub(super) async fn events(
    State(state): State<ApiState>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<Event>>, Failure> {
    let limit = q.limit.unwrap_or(100).min(10_000);
    Ok(Json(state.0.store.events(q.job.as_deref(), limit).await?))
}

/// Writes an action to the events log (a failure is logged: the action itself happened).
async fn record(state: &ApiState, actor: &Actor, action: &str, job: &str, detail: Option<String>) {
    let event = Event {
        at: Utc::now(),
        action: action.to_string(),
        job: Some(job.to_string()),
        actor: actor.0.clone(),
        node: state.0.node.clone(),
        detail,
    };
    if let Err(e) = state.0.store.record_event(&event).await {
        tracing::warn!(job, action, error = %e, "cannot write an API action to the events table");
    }
}
