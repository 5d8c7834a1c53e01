//! The jobs page (`/`): every job with its schedule in words, next firing in its zone, last
//! status, success over seven days and a strip of its last 50 runs; filtered by name, status
//! and tag, sorted, a hundred jobs a page.

use std::collections::{BTreeSet, HashMap, HashSet};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;
use futures_util::future::try_join_all;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Problem, Section, Visitor, status_badge, zoned};
use crate::api::ApiState;
use crate::scheduler::JobView;
use crate::store::{RunDot, RunRow, RunStatus, Store, StoreError};

/// Jobs on one page.
const PER_PAGE: usize = 100;
/// Runs in a job's strip.
pub(super) const STRIP: u32 = 50;
/// The stretch the success rate covers.
pub(super) const RATE_DAYS: i64 = 7;

/// The page's filters, as the form sends them (empty fields mean "any").
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct JobsQuery {
    q: String,
    status: String,
    tag: String,
    sort: String,
    page: usize,
}

/// The status filter's choices: (value, label).
const STATUSES: &[(&str, &str)] = &[
    ("", "any status"),
    ("succeeded", "last run succeeded"),
    ("failing", "last run failed"),
    ("running", "running now"),
    ("never", "never ran"),
    ("paused", "paused"),
    ("stale", "stale"),
    ("disabled", "disabled"),
];

/// The sorts: (value, label).
const SORTS: &[(&str, &str)] = &[
    ("name", "name"),
    ("next", "next firing"),
    ("last", "last run, newest first"),
    ("status", "failing first"),
];

/// One job as the list knows it before its runs are read.
struct Listed {
    view: JobView,
    last: Option<RunRow>,
    stale: bool,
}

impl Listed {
    fn matches(&self, q: &JobsQuery) -> bool {
        let spec = &self.view.spec;
        let name_ok = q.q.is_empty() || spec.name.to_lowercase().contains(&q.q.to_lowercase());
        let tag_ok = q.tag.is_empty() || spec.tags.contains(&q.tag);
        let last = self.last.as_ref().map(|r| r.status);
        let status_ok = match q.status.as_str() {
            "succeeded" => last == Some(RunStatus::Succeeded),
            "failing" => last.is_some_and(RunStatus::is_failure),
            "running" => self.view.active_run.is_some() || last == Some(RunStatus::Running),
            "never" => last.is_none(),
            "paused" => self.view.pause.is_some(),
            "stale" => self.stale,
            "disabled" => !spec.enabled,
            _ => true,
        };
        name_ok && tag_ok && status_ok
    }
}

/// What a listed job's row shows beyond the list: its strip and its week's counts.
struct Figures {
    strip: Vec<RunDot>,
    ran: i64,
    succeeded: i64,
}

/// `GET /`.
pub(super) async fn page(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<JobsQuery>,
) -> Result<Response, Problem> {
    let store = &state.0.store;
    let mut last: HashMap<String, RunRow> = store.last_runs().await?;
    let stale: HashSet<String> = store.stale_jobs().await?;
    let views = state.0.scheduler.views();
    let total = views.len();
    let tags: BTreeSet<String> = views.iter().flat_map(|v| v.spec.tags.clone()).collect();
    let mut listed: Vec<Listed> = views
        .into_iter()
        .map(|view| Listed {
            last: last.remove(&view.spec.name),
            stale: stale.contains(&view.spec.name),
            view,
        })
        .filter(|l| l.matches(&q))
        .collect();
    sort(&mut listed, &q.sort);
    let pages = listed.len().div_ceil(PER_PAGE).max(1);
    let page_no = q.page.min(pages - 1);
    let shown: Vec<Listed> = listed
        .drain(..)
        .skip(page_no * PER_PAGE)
        .take(PER_PAGE)
        .collect();
    let figures = try_join_all(shown.iter().map(|l| figures(store, &l.view.spec.name))).await?;
    let visitor = Visitor::of(&state, &headers);
    let body = html! {
        h1 { "Jobs" }
        (filters(&q, &tags))
        p.count role="status" data-matching=(listed_len(page_no, pages, shown.len()))
            { (matching_text(shown.len(), total, page_no, pages)) }
        @if shown.is_empty() {
            p { "No job matches." }
        } @else {
            (table(&shown, &figures))
        }
        (pager(&q, page_no, pages))
    };
    Ok(layout::page(&state, &visitor, "Jobs", Section::Jobs, body))
}

fn listed_len(page_no: usize, pages: usize, shown: usize) -> String {
    format!("{shown} on page {} of {pages}", page_no + 1)
}

fn matching_text(shown: usize, total: usize, page_no: usize, pages: usize) -> String {
    let page = if pages > 1 {
        format!(", page {} of {pages}", page_no + 1)
    } else {
        String::new()
    };
    format!("{shown} of {total} jobs shown{page}")
}

fn sort(listed: &mut [Listed], by: &str) {
    match by {
        "next" => listed.sort_by_key(|l| (l.view.next.is_none(), l.view.next)),
        "last" => listed.sort_by(|a, b| {
            let at = |l: &Listed| l.last.as_ref().map(|r| r.id);
            at(b).cmp(&at(a))
        }),
        "status" => listed.sort_by_key(|l| {
            let s = l.last.as_ref().map(|r| r.status);
            (
                !s.is_some_and(RunStatus::is_failure),
                !l.stale,
                s != Some(RunStatus::Running),
            )
        }),
        _ => {}
    }
}

async fn figures(store: &Store, job: &str) -> Result<Figures, StoreError> {
    let since = Utc::now() - chrono::TimeDelta::days(RATE_DAYS);
    let strip = store.recent_dots(job, STRIP).await?;
    let counts = store.status_counts(job, since).await?;
    let (ran, succeeded) = rate_counts(&counts);
    Ok(Figures {
        strip,
        ran,
        succeeded,
    })
}

/// Of the runs counted by status: how many ran to an end (not skipped, cancelled or still
/// running), and how many of them succeeded.
pub(super) fn rate_counts(counts: &[(RunStatus, i64)]) -> (i64, i64) {
    let mut ran = 0;
    let mut succeeded = 0;
    for (status, n) in counts {
        match status {
            RunStatus::Succeeded => {
                succeeded += n;
                ran += n;
            }
            RunStatus::Skipped | RunStatus::Cancelled | RunStatus::Running => {}
            _ => ran += n,
        }
    }
    (ran, succeeded)
}

/// A success rate in words: `96 % (48 of 50)`, or a dash when nothing ran.
pub(super) fn rate_text(ran: i64, succeeded: i64) -> String {
    if ran == 0 {
        return "—".to_string();
    }
    let pct = (succeeded as f64 * 100.0 / ran as f64).floor();
    format!("{pct} % ({succeeded} of {ran})")
}

fn filters(q: &JobsQuery, tags: &BTreeSet<String>) -> Markup {
    html! {
        form.filters method="get" action="/" role="search" {
            label { "Name " input type="search" name="q" value=(q.q) placeholder="part of a name"; }
            label { "Status "
                select name="status" {
                    @for (value, label) in STATUSES {
                        option value=(value) selected[q.status == *value] { (label) }
                    }
                }
            }
            label { "Tag "
                select name="tag" {
                    option value="" { "any tag" }
                    @for tag in tags {
                        option value=(tag) selected[q.tag == *tag] { (tag) }
                    }
                }
            }
            label { "Sort by "
                select name="sort" {
                    @for (value, label) in SORTS {
                        option value=(value) selected[q.sort == *value] { (label) }
                    }
                }
            }
            button type="submit" { "Apply" }
        }
    }
}

fn table(shown: &[Listed], figures: &[Figures]) -> Markup {
    html! {
        div.scroll {
            table.jobs {
                caption.visually-hidden { "Jobs, with their schedules, next firings and recent runs" }
                thead { tr {
                    th scope="col" { "Job" }
                    th scope="col" { "Schedule" }
                    th scope="col" { "Next firing" }
                    th scope="col" { "Last run" }
                    th scope="col" { "Success, " (RATE_DAYS) " days" }
                    th scope="col" { "Last " (STRIP) " runs" }
                } }
                tbody {
                    @for (l, f) in shown.iter().zip(figures) { (row(l, f)) }
                }
            }
        }
    }
}

fn row(l: &Listed, f: &Figures) -> Markup {
    let spec = &l.view.spec;
    html! {
        tr data-job=(spec.name) {
            th scope="row" {
                a href={ "/jobs/" (super::path_segment(&spec.name)) } { (spec.name) }
                " " span.kind { (spec.kind.label()) }
                (markers(l))
                @for tag in &spec.tags { " " span.tag { (tag) } }
            }
            td data-label="Schedule" { (spec.schedule.in_words()) br; code.expr { (spec.schedule.expression()) } }
            td data-label="Next firing" data-next=[l.view.next.map(|t| t.to_rfc3339())] {
                @match l.view.next {
                    Some(t) => (zoned(t, spec.tz)),
                    None => "—",
                }
            }
            td data-label="Last run" data-last-status=[l.last.as_ref().map(|r| r.status.as_str())] {
                @match &l.last {
                    Some(r) => {
                        a href={ "/runs/" (r.id) } { (status_badge(r.status)) }
                        br; (last_when(r))
                    }
                    None => span.quiet { "never ran" },
                }
            }
            td data-label={ "Success, " (RATE_DAYS) " days" } data-ran=(f.ran) data-succeeded=(f.succeeded) { (rate_text(f.ran, f.succeeded)) }
            td data-label={ "Last " (STRIP) " runs" } { (strip(&f.strip)) }
        }
    }
}

/// When the last row was: its intended time, or for a row standing for several missed
/// firings (after downtime) how many and from when to when, not only the first one's time.
fn last_when(r: &RunRow) -> Markup {
    let details = r.details.as_ref();
    let field = |k: &str| {
        details
            .and_then(|d| d.get(k))
            .and_then(|v| v.as_str())
            .and_then(crate::store::parse_ts)
    };
    match (field("first"), field("last")) {
        (Some(first), Some(last)) if first != last => {
            let count = details
                .and_then(|d| d.get("missed_firings"))
                .and_then(serde_json::Value::as_u64)
                .map_or_else(String::new, |n| format!("{n} "));
            html! {
                span data-missed-firings=(count.trim()) { (count) "firings not run, " }
                (layout::utc(first)) " to " (layout::utc(last))
            }
        }
        _ => layout::utc(r.scheduled_for),
    }
}

/// Paused, stale and disabled, in words.
fn markers(l: &Listed) -> Markup {
    marker_list(l.view.pause.is_some(), l.stale, !l.view.spec.enabled)
}

/// The markers of a job: paused, stale, disabled.
pub(super) fn marker_list(paused: bool, stale: bool, disabled: bool) -> Markup {
    html! {
        @if paused { " " span.marker.m-paused data-marker="paused" { "⏸ paused" } }
        @if stale { " " span.marker.m-stale data-marker="stale" { "⚠ stale" } }
        @if disabled { " " span.marker.m-off data-marker="disabled" { "disabled" } }
    }
}

/// The last runs, oldest left: each a bar whose colour, symbol-free height and title say its
/// status and duration; summed up in words for screen readers.
pub(super) fn strip(dots: &[RunDot]) -> Markup {
    let longest = dots
        .iter()
        .filter_map(|d| d.duration_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    let failed = dots.iter().filter(|d| d.status.is_failure()).count();
    let ok = dots
        .iter()
        .filter(|d| d.status == RunStatus::Succeeded)
        .count();
    let last = if dots.len() == 1 {
        "the last run".to_string()
    } else {
        format!("last {} runs", dots.len())
    };
    let label = format!(
        "{last}: {ok} succeeded, {failed} failed, {} other",
        dots.len() - ok - failed
    );
    if dots.is_empty() {
        return html! { span.quiet { "—" } };
    }
    html! {
        span.strip role="img" aria-label=(label) data-runs=(dots.len()) data-failed=(failed) {
            @for d in dots.iter().rev() {
                @let tenth = d.duration_ms.map_or(1, |ms| 1 + (ms.max(0) * 9 / longest));
                span class={ "bar s-" (layout::status_class(d.status)) " h" (tenth) }
                    title={ "#" (d.id) " " (d.status) " " (layout::maybe_millis(d.duration_ms)) } {}
            }
        }
    }
}

fn pager(q: &JobsQuery, page_no: usize, pages: usize) -> Markup {
    let link = |n: usize| {
        let mut params = vec![
            ("q", q.q.clone()),
            ("status", q.status.clone()),
            ("tag", q.tag.clone()),
            ("sort", q.sort.clone()),
        ];
        params.push(("page", n.to_string()));
        format!("/?{}", super::query_string(&params))
    };
    html! {
        @if pages > 1 {
            nav.pager aria-label="Pages of jobs" {
                @if page_no > 0 { a href=(link(page_no - 1)) rel="prev" { "← Previous" } }
                span { "Page " (page_no + 1) " of " (pages) }
                @if page_no + 1 < pages { a href=(link(page_no + 1)) rel="next" { "Next →" } }
            }
        }
    }
}
