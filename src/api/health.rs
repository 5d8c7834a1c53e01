//! `/healthz` (the timer loop answers within 2 s, and history writes are not failing past
//! their bound; refused configuration files are told beside), `/v1/status` (what
//! `hourglass status` shows) and `/metrics` (Prometheus).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ApiState;
use crate::config::InForce;
use crate::metrics::{JobNow, Metrics};
use crate::store::Pause;

/// How long the timer loop has to answer a health probe.
const TIMER_ANSWER: Duration = Duration::from_secs(2);
/// History writes failing for longer than this make the daemon unhealthy (a lock held for a
/// few seconds by someone's `sqlite3` does not).
pub const HISTORY_FAILING_BOUND: Duration = Duration::from_secs(10);

/// `GET /healthz`: 200 `{"status": "ok"}`, or 503 with the problems.
pub(super) async fn healthz(State(state): State<ApiState>) -> Response {
    let mut problems = Vec::new();
    if !state.0.scheduler.responsive(TIMER_ANSWER).await {
        problems.push(format!(
            "the timer loop did not answer within {} s",
            TIMER_ANSWER.as_secs()
        ));
    }
    let health = state.0.ctx.recorder().health();
    if let Some(failing) = health.failing_for().filter(|f| *f > HISTORY_FAILING_BOUND) {
        problems.push(format!(
            "history writes have been failing for {} s ({} records waiting)",
            failing.as_secs(),
            health.pending().unwrap_or(0)
        ));
    }
    // Refused files do not make the daemon unhealthy (it runs what it loaded, and a restart
    // would not start at all): the answer says so beside the status.
    let in_force = state.0.in_force.now();
    let mut body = if problems.is_empty() {
        serde_json::json!({ "status": "ok" })
    } else {
        serde_json::json!({ "status": "unhealthy", "problems": problems })
    };
    if let Some(warning) = in_force.warning() {
        body["configuration"] = warning.into();
    }
    let code = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// What `GET /v1/status` answers (and `hourglass status` shows).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Status {
    /// The daemon's version.
    pub version: String,
    /// Its node name.
    pub node: String,
    /// Its history database.
    pub database: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Jobs scheduled (enabled).
    pub jobs: usize,
    /// Runs in progress.
    pub running: usize,
    /// Firings waiting for their turn or a run slot.
    pub waiting: usize,
    /// Records waiting while history writes fail (0 when they succeed).
    pub pending_records: usize,
    /// How long history writes have been failing, if they are.
    pub history_failing_s: Option<u64>,
    /// Paused jobs.
    pub paused: Vec<Pause>,
    /// When the configuration it runs was loaded, and whether files changed since were
    /// refused.
    pub configuration: InForce,
}

/// `GET /v1/status`.
pub(super) async fn status(State(state): State<ApiState>) -> Json<Status> {
    let s = &state.0;
    let views = s.scheduler.views();
    let health = s.ctx.recorder().health();
    Json(Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        node: s.node.clone(),
        database: s.database.clone(),
        started_at: s.started_at,
        jobs: views.iter().filter(|v| v.spec.enabled).count(),
        running: s.ctx.running(),
        waiting: s.ctx.waiting(),
        pending_records: health.pending().unwrap_or(0),
        history_failing_s: health.failing_for().map(|d| d.as_secs()),
        paused: views.into_iter().filter_map(|v| v.pause).collect(),
        configuration: s.in_force.now(),
    })
}

/// `GET /metrics`: the OpenMetrics text, with what the daemon knows now set first.
pub(super) async fn metrics(State(state): State<ApiState>) -> Response {
    let s = &state.0;
    let m = &s.metrics;
    let health = s.ctx.recorder().health();
    m.running.set(gauge(s.ctx.running()));
    m.waiting.set(gauge(s.ctx.waiting()));
    m.pending_records.set(gauge(health.pending().unwrap_or(0)));
    if s.store.cluster().is_some() {
        m.set_claims(&s.ctx.claims().counts().all());
    }
    let errors = health.write_errors();
    m.write_errors
        .inc_by(errors.saturating_sub(m.write_errors.get()));
    let views = s.scheduler.views();
    let now: Vec<JobNow<'_>> = views
        .iter()
        .map(|v| JobNow {
            name: &v.spec.name,
            next: v.next,
            paused: v.pause.is_some(),
        })
        .collect();
    (
        [(header::CONTENT_TYPE, Metrics::content_type())],
        m.encode(&now),
    )
        .into_response()
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
