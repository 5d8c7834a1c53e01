//! Trigger, pause and resume from the dashboard: offered only with `[api] dashboard_actions`
//! to a browser signed in with the token, from a form of this site carrying the session's
//! anti-forgery field; done by the API's own actions (so the events log says `token`).

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Problem, Visitor};
use super::session::{check_csrf, same_site};
use crate::api::jobs::{pause_job, resume_job, trigger_job};
use crate::api::{Actor, ApiState};
use crate::scheduler::JobView;

/// An action form's fields.
#[derive(Debug, Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    /// For a pause: until when (a duration such as `2h`, or RFC 3339); empty: until resumed.
    #[serde(default)]
    until: String,
}

/// The forms of a job's page, when the visitor may act.
pub(super) fn forms(view: &JobView, visitor: &Visitor) -> Markup {
    let job = super::path_segment(&view.spec.name);
    html! {
        @if visitor.may_act {
            section.actions aria-label="Actions" {
                form method="post" action={ "/jobs/" (job) "/trigger" } {
                    input type="hidden" name="csrf" value=(visitor.csrf);
                    button type="submit" { "Run now" }
                }
                @if view.pause.is_some() {
                    form method="post" action={ "/jobs/" (job) "/resume" } {
                        input type="hidden" name="csrf" value=(visitor.csrf);
                        button type="submit" { "Resume" }
                    }
                } @else {
                    form method="post" action={ "/jobs/" (job) "/pause" } {
                        input type="hidden" name="csrf" value=(visitor.csrf);
                        label { "Pause for " input name="until" size="6" placeholder="2h"; }
                        button type="submit" { "Pause" }
                    }
                }
            }
        }
    }
}

/// Lets an action through, or says why not (403, nothing done).
fn allowed(state: &ApiState, headers: &HeaderMap, form: &ActionForm) -> Result<Actor, Problem> {
    if !state.0.dashboard_actions {
        return Err(Problem(
            StatusCode::FORBIDDEN,
            "The dashboard is read-only: actions need dashboard_actions = true in [api].".into(),
        ));
    }
    let visitor = Visitor::of(state, headers);
    if !visitor.signed_in {
        return Err(Problem(
            StatusCode::FORBIDDEN,
            "Actions need the API token: sign in first.".into(),
        ));
    }
    same_site(headers)?;
    check_csrf(&visitor, &form.csrf)?;
    Ok(Actor("token".to_string()))
}

/// Back to `to` after an action.
fn back(to: String) -> Response {
    layout::with_headers((StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response())
}

fn refused(f: &crate::api::Failure) -> Problem {
    Problem(f.status(), f.message().to_string())
}

/// `POST /jobs/{name}/trigger`: to the run it started, else back to the job.
pub(super) async fn trigger(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, Problem> {
    let actor = allowed(&state, &headers, &form)?;
    let done = trigger_job(&state, &actor, &name, false)
        .await
        .map_err(|f| refused(&f))?;
    let started = done.run_id.filter(|_| done.outcome == "started");
    if let Some(id) = started
        && row_written(&state, id).await
    {
        return Ok(back(format!("/runs/{id}")));
    }
    Ok(back(format!("/jobs/{}", super::path_segment(&name))))
}

/// Whether run `id`'s row is in the history within a few seconds (the recorder writes it in
/// its next batch), so that its page can be shown.
async fn row_written(state: &ApiState, id: i64) -> bool {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(_)) = state.0.store.run(id).await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    false
}

/// `POST /jobs/{name}/pause`.
pub(super) async fn pause(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, Problem> {
    let actor = allowed(&state, &headers, &form)?;
    let until = Some(form.until.trim()).filter(|u| !u.is_empty());
    pause_job(&state, &actor, &name, until)
        .await
        .map_err(|f| refused(&f))?;
    Ok(back(format!("/jobs/{}", super::path_segment(&name))))
}

/// `POST /jobs/{name}/resume`.
pub(super) async fn resume(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, Problem> {
    let actor = allowed(&state, &headers, &form)?;
    resume_job(&state, &actor, &name)
        .await
        .map_err(|f| refused(&f))?;
    Ok(back(format!("/jobs/{}", super::path_segment(&name))))
}
