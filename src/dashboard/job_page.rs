//! One job's page (`/jobs/{name}`): its definition (never a secret), upcoming firings, the
//! week's figures, plots of duration and lateness, failure streaks, and its runs fifty at a
//! time (keyset pages, as the API's).

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::jobs_page::{RATE_DAYS, STRIP, marker_list, rate_counts, rate_text, strip};
use super::layout::{self, Problem, Section, Visitor, status_badge, utc, zoned};
use super::plot::{self, Measure};
use crate::api::ApiState;
use crate::job::JobSpec;
use crate::scheduler::JobView;
use crate::store::{Cursor, HistoryFilter, RunDot, RunRow, RunStatus};

/// Runs per page of the table.
const PAGE: u32 = 50;
/// Upcoming firings listed.
const UPCOMING: usize = 10;
/// Runs the plots and the streaks look at.
const PLOTTED: u32 = 500;

/// `?after=` the cursor of the page before.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct PageQuery {
    after: String,
}

/// `GET /jobs/{name}`.
pub(super) async fn page(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, Problem> {
    let view = state
        .0
        .scheduler
        .view(&name)
        .ok_or_else(|| Problem::not_found(format!("job named {name:?}")))?;
    let after = match q.after.as_str() {
        "" => None,
        s => Some(
            s.parse::<Cursor>()
                .map_err(|e| Problem(axum::http::StatusCode::BAD_REQUEST, e))?,
        ),
    };
    let store = &state.0.store;
    let filter = HistoryFilter {
        job: Some(name.clone()),
        limit: PAGE,
        after,
        ..HistoryFilter::default()
    };
    let runs = store.history(&filter).await?;
    let recent = store.recent_dots(&name, PLOTTED).await?;
    let since = Utc::now() - chrono::TimeDelta::days(RATE_DAYS);
    let counts = store.status_counts(&name, since).await?;
    let total = store.run_count(&name).await?;
    let stale = store.stale_jobs().await?.contains(&name);
    let visitor = Visitor::of(&state, &headers);
    let views = state.0.scheduler.views();
    let graph = crate::job::graph::Graph::of(views.iter().map(|v| &*v.spec));
    let plots = tokio::task::spawn_blocking({
        let recent = recent.clone();
        move || {
            [
                plot::svg(&recent, Measure::Duration),
                plot::svg(&recent, Measure::Lateness),
                plot::svg(&recent, Measure::Cpu),
                plot::svg(&recent, Measure::PeakMemory),
            ]
        }
    })
    .await
    .unwrap_or_default();
    let [duration, lateness, cpu, memory] = plots;
    let body = html! {
        h1 { (name) (marker_list(view.pause.is_some(), stale, !view.spec.enabled)) }
        @if let Some(d) = &view.spec.description { p.lead { (d) } }
        (super::actions::forms(&view, &visitor))
        (summary(&view, &counts, total, &recent))
        (definition(&view.spec))
        (super::graph_page::upstream_downstream(&graph, &name))
        (upcoming(&view))
        section aria-labelledby="plots" {
            h2 id="plots" { "Duration and lateness of the last " (recent.len()) " runs" }
            (figure("Duration of each run over time", duration))
            (figure("Lateness of each run (start minus intended time) over time", lateness))
        }
        @if cpu.is_some() || memory.is_some() {
            section aria-labelledby="cost" {
                h2 id="cost" { "CPU time and peak memory of the last " (recent.len()) " runs" }
                (figure("CPU time (user and system) of each run over time", cpu))
                (figure("Peak memory of each run over time (empty: below the daemon's own, not measured)", memory))
            }
        }
        (streaks(&recent))
        (runs_table(&name, &runs, after.is_some()))
    };
    Ok(layout::page(&state, &visitor, &name, Section::Jobs, body))
}

fn summary(view: &JobView, counts: &[(RunStatus, i64)], total: i64, recent: &[RunDot]) -> Markup {
    let (ran, succeeded) = rate_counts(counts);
    html! {
        section aria-labelledby="summary" {
            h2 id="summary" { "Summary" }
            dl.facts {
                dt { "Next firing" }
                dd data-next=[view.next.map(|t| t.to_rfc3339())] {
                    @match (view.next, &view.spec.after) {
                        (Some(t), _) => (zoned(t, view.spec.tz)),
                        (None, Some(after)) => (after.in_words()),
                        (None, None) => "none",
                    }
                }
                dt { "Last run" }
                dd data-last-status=[recent.first().map(|d| d.status.as_str())] {
                    @match recent.first() {
                        Some(d) => a href={ "/runs/" (d.id) } { (status_badge(d.status)) },
                        None => "never ran",
                    }
                }
                dt { "Success, " (RATE_DAYS) " days" }
                dd data-ran=(ran) data-succeeded=(succeeded) { (rate_text(ran, succeeded)) }
                dt { "Runs in the history" }
                dd data-total=(total) { (total) }
                @for (status, n) in counts {
                    dt { "Runs " (status.as_str().replace('_', " ")) ", " (RATE_DAYS) " days" }
                    dd data-count=(status) { (n) }
                }
                dt { "Last " (STRIP) " runs" }
                dd { (strip(&recent[..recent.len().min(STRIP as usize)])) }
            }
        }
    }
}

fn definition(spec: &JobSpec) -> Markup {
    let retry = if spec.retry.retries == 0 {
        "none".to_string()
    } else {
        format!(
            "{} (backoff {} up to {})",
            spec.retry.retries,
            humantime::format_duration(spec.retry.backoff),
            humantime::format_duration(spec.retry.backoff_max)
        )
    };
    let common: Vec<(&str, String)> = vec![
        ("kind", spec.kind.label().to_string()),
        (
            "schedule",
            format!(
                "{} ({})",
                spec.schedule.in_words(),
                spec.schedule.expression()
            ),
        ),
        ("time zone", spec.tz.to_string()),
        ("jitter", format!("{} ms", spec.jitter.num_milliseconds())),
        ("overlap", format!("{:?}", spec.overlap).to_lowercase()),
        ("catch-up", format!("{:?}", spec.catch_up).to_lowercase()),
        (
            "timeout",
            spec.timeout.map_or_else(
                || "none".to_string(),
                |t| humantime::format_duration(t).to_string(),
            ),
        ),
        ("retries", retry),
        ("tags", spec.tags.join(", ")),
        ("runs on nodes tagged", spec.run_on.join(", ")),
        ("defined in", spec.source.display().to_string()),
    ];
    html! {
        section aria-labelledby="definition" {
            h2 id="definition" { "Definition" }
            dl.facts {
                @for (label, value) in common.iter().chain(spec.kind.describe().iter()) {
                    @if !value.is_empty() {
                        dt { (label) }
                        dd { code { (value) } }
                    }
                }
            }
        }
    }
}

fn upcoming(view: &JobView) -> Markup {
    let times = view.upcoming(UPCOMING);
    html! {
        section aria-labelledby="upcoming" {
            h2 id="upcoming" { "Upcoming firings (" (view.spec.tz) ")" }
            @if times.is_empty() {
                p { "None: the job is disabled, paused without end, or has no firing ahead." }
            } @else {
                ol.upcoming { @for t in &times { li { (zoned(*t, view.spec.tz)) } } }
            }
        }
    }
}

fn figure(caption: &str, svg: Option<String>) -> Markup {
    html! {
        figure.plot {
            @match svg {
                Some(svg) => div role="img" aria-label=(caption) { (PreEscaped(svg)) },
                None => p.quiet { "No run to plot yet." },
            }
            figcaption { (caption) ": green succeeded, red failed, amber other." }
        }
    }
}

/// Consecutive failed runs among `recent` (newest first): (newest run, oldest run, length),
/// newest streak first.
fn failure_streaks(recent: &[RunDot]) -> Vec<(&RunDot, &RunDot, usize)> {
    let mut streaks = Vec::new();
    let mut open: Option<(&RunDot, &RunDot, usize)> = None;
    for d in recent
        .iter()
        .filter(|d| !matches!(d.status, RunStatus::Skipped | RunStatus::Running))
    {
        if d.status.is_failure() {
            open = Some(match open {
                Some((newest, _, n)) => (newest, d, n + 1),
                None => (d, d, 1),
            });
        } else if let Some(s) = open.take() {
            streaks.push(s);
        }
    }
    streaks.extend(open);
    streaks
}

fn streaks(recent: &[RunDot]) -> Markup {
    let streaks = failure_streaks(recent);
    let failing_now = recent
        .iter()
        .find(|d| !matches!(d.status, RunStatus::Skipped | RunStatus::Running))
        .is_some_and(|d| d.status.is_failure());
    html! {
        section aria-labelledby="streaks" {
            h2 id="streaks" { "Failure streaks in the last " (recent.len()) " runs" }
            @if streaks.is_empty() {
                p data-streaks="0" { "No failures." }
            } @else {
                @if failing_now { p.problem { "Failing now: the last " (streaks[0].2) " runs failed." } }
                div.scroll { table data-streaks=(streaks.len()) {
                    caption.visually-hidden { "Failure streaks, newest first" }
                    thead { tr {
                        th scope="col" { "Runs failed in a row" }
                        th scope="col" { "From" }
                        th scope="col" { "To" }
                    } }
                    tbody { @for (newest, oldest, n) in streaks.iter().take(20) { tr {
                        td { (n) }
                        td { a href={ "/runs/" (oldest.id) } { "#" (oldest.id) } " " (firing(oldest)) }
                        td { a href={ "/runs/" (newest.id) } { "#" (newest.id) } " " (firing(newest)) }
                    } } }
                } }
            }
        }
    }
}

fn firing(d: &RunDot) -> String {
    d.scheduled_for.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn runs_table(name: &str, runs: &[RunRow], paged: bool) -> Markup {
    let next = (runs.len() == PAGE as usize)
        .then(|| runs.last().map(|r| Cursor::after(r).to_string()))
        .flatten();
    let job = super::path_segment(name);
    html! {
        section aria-labelledby="runs" {
            h2 id="runs" { "Runs, newest first" }
            div.scroll { table.runs data-rows=(runs.len()) {
                caption.visually-hidden { "Runs of " (name) }
                thead { tr {
                    th scope="col" { "Run" }
                    th scope="col" { "Intended time" }
                    th scope="col" { "Status" }
                    th scope="col" { "Attempt" }
                    th scope="col" { "Why" }
                    th scope="col" { "Duration" }
                    th scope="col" { "Lateness" }
                    th scope="col" { "CPU" }
                    th scope="col" { "Peak memory" }
                    th scope="col" { "Node" }
                } }
                tbody { @for r in runs { tr data-run=(r.id) {
                    th scope="row" { a href={ "/runs/" (r.id) } { "#" (r.id) } }
                    td { (utc(r.scheduled_for)) }
                    td { (status_badge(r.status)) }
                    td { (r.attempt) }
                    td { (r.trigger.as_str().replace('_', " ")) }
                    td { (layout::maybe_millis(r.duration_ms)) }
                    td { (layout::maybe_millis(r.lateness_ms)) }
                    td data-cpu-us=[r.usage.map(|u| u.cpu_us())] { (cpu_text(r)) }
                    td data-peak-bytes=[r.usage.and_then(|u| u.peak_rss_bytes)] { (peak_text(r)) }
                    td { (r.node) }
                } } }
            } }
            nav.pager aria-label="Pages of runs" {
                @if paged { a href={ "/jobs/" (job) } { "↑ Newest runs" } }
                @if let Some(c) = next { a href={ "/jobs/" (job) "?after=" (c) } rel="next" { "Older runs →" } }
            }
        }
    }
}

/// A run's CPU time in words, or a dash.
pub(super) fn cpu_text(r: &RunRow) -> String {
    r.usage.map_or_else(
        || "—".to_string(),
        |u| crate::store::cpu_in_words(u.cpu_us()),
    )
}

/// A run's peak memory in words, or a dash.
pub(super) fn peak_text(r: &RunRow) -> String {
    r.usage
        .and_then(|u| u.peak_words())
        .unwrap_or_else(|| "—".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaks_count_consecutive_failures_newest_first_skips_aside() {
        let d = |id, status: &str| RunDot {
            cpu_us: None,
            peak_rss_bytes: None,
            id,
            scheduled_for: Utc::now(),
            status: status.parse().unwrap(),
            attempt: 1,
            duration_ms: None,
            lateness_ms: None,
        };
        let recent = [
            d(9, "failed"),
            d(8, "skipped"),
            d(7, "timed_out"),
            d(6, "succeeded"),
            d(5, "failed"),
            d(4, "succeeded"),
        ];
        let s = failure_streaks(&recent);
        let ids: Vec<(i64, i64, usize)> = s.iter().map(|(a, b, n)| (a.id, b.id, *n)).collect();
        assert_eq!(ids, vec![(9, 7, 2), (5, 5, 1)]);
    }
}
