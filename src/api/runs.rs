//! Runs through the API: the history with `history`'s filters and keyset pagination, one run,
//! and a run's output as it grows (server-sent events: `output` events of `{"text": ...}`,
//! then one `end` event with the run's row).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{ApiState, Failure, parse_time};
use crate::job::output::LiveRun;
use crate::store::{Cursor, HistoryFilter, RunDetail, RunRow, RunStatus, StoreError};

/// Rows per page unless `limit` says otherwise, and the most a page holds.
const PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;
/// How often a run that is not followed live here is looked up until it ends.
const ROW_POLL: Duration = Duration::from_millis(500);

/// Filters of `GET /v1/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RunsQuery {
    job: Option<String>,
    status: Option<String>,
    /// RFC 3339, or a duration ago (`"7d"`).
    since: Option<String>,
    limit: Option<u32>,
    /// The `next` of the page before.
    after: Option<String>,
}

/// A page of runs, newest first; `next` fetches the page after it.
#[derive(Debug, Serialize)]
pub(super) struct RunsPage {
    runs: Vec<RunRow>,
    next: Option<String>,
}

/// `GET /v1/runs`.
pub(super) async fn list(
    State(state): State<ApiState>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<RunsPage>, Failure> {
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let filter = HistoryFilter {
        job: q.job,
        status: q
            .status
            .as_deref()
            .map(str::parse::<RunStatus>)
            .transpose()
            .map_err(Failure::bad_request)?,
        since: q
            .since
            .as_deref()
            .map(|s| parse_time(s, false))
            .transpose()
            .map_err(Failure::bad_request)?,
        limit,
        after: q
            .after
            .as_deref()
            .map(str::parse::<Cursor>)
            .transpose()
            .map_err(Failure::bad_request)?,
    };
    let runs = state.0.store.history(&filter).await?;
    let next = (runs.len() == limit as usize)
        .then(|| runs.last().map(|r| Cursor::after(r).to_string()))
        .flatten();
    Ok(Json(RunsPage { runs, next }))
}

/// `GET /v1/runs/{id}`: one run, with its output (so far, for a run in progress here), the
/// parents' runs that fired it and the runs it fired (`parents`, `children`).
pub(super) async fn one(
    State(state): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<Json<RunDetail>, Failure> {
    let run = run_so_far(&state, id)
        .await?
        .ok_or_else(|| Failure::not_found(format!("run {id}")))?;
    let lineage = state.0.store.lineage(id).await?;
    Ok(Json(RunDetail { run, lineage }))
}

/// Run `id`'s row, with its output so far when it is running here (the row's output is
/// written only at its end).
pub(crate) async fn run_so_far(state: &ApiState, id: i64) -> Result<Option<RunRow>, StoreError> {
    let mut row = state.0.store.run(id).await?;
    if let Some(row) = &mut row
        && let Some(live) = state.0.ctx.services().live.get(id)
    {
        let (bytes, _) = live.since(0);
        row.output = Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    Ok(row)
}

/// Where a stream of a run's output stands.
enum Follow {
    /// Its output grows here: what was sent goes up to `offset`.
    Live {
        run: Arc<LiveRun>,
        progress: watch::Receiver<(u64, bool)>,
        offset: u64,
    },
    /// Wait for its row to end, then send what it kept (unless sent live) and the end.
    Ending {
        sent_live: bool,
    },
    Done,
}

/// `GET /v1/runs/{id}/output`: the output as it grows, then the run's end.
pub(super) async fn output(
    State(state): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Failure> {
    let live = state.0.ctx.services().live.get(id);
    if live.is_none() && state.0.store.run(id).await?.is_none() {
        return Err(Failure::not_found(format!("run {id}")));
    }
    let start = match live {
        Some(run) => Follow::Live {
            progress: run.watch(),
            run,
            offset: 0,
        },
        None => Follow::Ending { sent_live: false },
    };
    let events = stream::unfold((start, state, id), |(phase, state, id)| async move {
        let (event, next) = step(phase, &state, id).await?;
        Some((Ok(event), (next, state, id)))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The next event of a stream, and where it stands after; `None` when it is over.
async fn step(phase: Follow, state: &ApiState, id: i64) -> Option<(Event, Follow)> {
    match phase {
        Follow::Live {
            run,
            mut progress,
            offset,
        } => loop {
            let (bytes, end) = run.since(offset);
            if !bytes.is_empty() {
                let event = text_event(&String::from_utf8_lossy(&bytes));
                let next = Follow::Live {
                    run,
                    progress,
                    offset: end,
                };
                return Some((event, next));
            }
            if progress.borrow_and_update().1 {
                return Box::pin(step(Follow::Ending { sent_live: true }, state, id)).await;
            }
            tokio::select! {
                changed = progress.changed() => if changed.is_err() {
                    return Box::pin(step(Follow::Ending { sent_live: true }, state, id)).await;
                },
                () = state.0.stop.cancelled() => return None,
            }
        },
        Follow::Ending { sent_live } => {
            let row = ended_row(state, id).await?;
            if !sent_live && let Some(text) = row.output.as_deref() {
                return Some((text_event(text), Follow::Ending { sent_live: true }));
            }
            let mut row = row;
            row.output = None;
            let event = Event::default().event("end").json_data(&row).ok()?;
            Some((event, Follow::Done))
        }
        Follow::Done => None,
    }
}

/// The run's row once it is no longer `running` (its end may still be on its way to the
/// database); `None` at shutdown.
async fn ended_row(state: &ApiState, id: i64) -> Option<RunRow> {
    loop {
        if let Ok(Some(row)) = state.0.store.run(id).await
            && row.status != RunStatus::Running
        {
            return Some(row);
        }
        tokio::select! {
            () = tokio::time::sleep(ROW_POLL) => {}
            () = state.0.stop.cancelled() => return None,
        }
    }
}

fn text_event(text: &str) -> Event {
    Event::default()
        .event("output")
        .json_data(serde_json::json!({ "text": text }))
        .unwrap_or_default()
}
