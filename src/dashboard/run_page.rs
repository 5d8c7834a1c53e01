//! One run's page (`/runs/{id}`): every field of its row, the other attempts of its firing,
//! its notification attempts, and its output with ANSI colours rendered; while the run goes
//! on, its output grows on the page (the API's server-sent events, read by `live.js`).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, PreEscaped, html};

use super::layout::{self, Problem, Section, Visitor, status_badge, utc};
use crate::api::ApiState;
use crate::api::runs::run_so_far;
use crate::store::{Lineage, NotificationRow, RunDot, RunRow, RunStatus};

/// `GET /runs/{id}`.
pub(super) async fn page(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, Problem> {
    let store = &state.0.store;
    let row = run_so_far(&state, id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("run {id}")))?;
    let attempts = store.attempts(&row.job, row.scheduled_for).await?;
    let notifications = store.notifications(id).await?;
    let lineage = store.lineage(id).await?;
    let running = row.status == RunStatus::Running;
    let visitor = Visitor::of(&state, &headers);
    let title = format!("Run {id} of {}", row.job);
    let body = html! {
        h1 { "Run #" (id) " of " a href={ "/jobs/" (super::path_segment(&row.job)) } { (row.job) } }
        (fields(&row))
        (lineage_links(&lineage))
        (attempt_list(id, &attempts))
        (notification_table(&notifications))
        (output(&row, running))
    };
    Ok(layout::page(&state, &visitor, &title, Section::None, body))
}

/// The parents' runs that fired this run and the runs it fired, linked.
fn lineage_links(lineage: &Lineage) -> Markup {
    let parents: Vec<(&str, i64, Option<RunStatus>)> = lineage
        .parents
        .iter()
        .map(|p| (p.job.as_str(), p.run_id, Some(p.status)))
        .collect();
    let children: Vec<(&str, i64, Option<RunStatus>)> = lineage
        .children
        .iter()
        .map(|c| (c.job.as_str(), c.run_id, c.status))
        .collect();
    html! {
        @if !parents.is_empty() || !children.is_empty() {
            section aria-labelledby="lineage" {
                h2 id="lineage" { "Parents and children" }
                dl.facts {
                    @if !parents.is_empty() { dt { "Ran after" } dd { (run_list("parents", &parents)) } }
                    @if !children.is_empty() { dt { "Fired" } dd { (run_list("children", &children)) } }
                }
            }
        }
    }
}

/// Runs as links with their status (`class` names the list).
fn run_list(class: &str, runs: &[(&str, i64, Option<RunStatus>)]) -> Markup {
    html! {
        ul class={ "runs-list " (class) } {
            @for (job, id, status) in runs {
                li data-run=(id) {
                    a href={ "/runs/" (id) } { (job) " #" (id) }
                    " " @match status { Some(s) => (status_badge(*s)), None => "not started" }
                }
            }
        }
    }
}

fn fields(r: &RunRow) -> Markup {
    let time = |t: &Option<DateTime<Utc>>| match *t {
        Some(t) => utc(t),
        None => html! { "—" },
    };
    html! {
        section aria-labelledby="fields" {
            h2 id="fields" { "Record" }
            dl.facts {
                dt { "Status" } dd id="run-status" data-status=(r.status) { (status_badge(r.status)) }
                dt { "Intended time" } dd { (utc(r.scheduled_for)) }
                dt { "Started" } dd { (time(&r.started_at)) }
                dt { "Finished" } dd { (time(&r.finished_at)) }
                dt { "Duration" } dd data-ms=[r.duration_ms] { (layout::maybe_millis(r.duration_ms)) }
                dt { "Lateness" } dd data-ms=[r.lateness_ms] { (layout::maybe_millis(r.lateness_ms)) }
                dt { "Attempt" } dd { (r.attempt) }
                dt { "Why it ran" } dd { (r.trigger.as_str().replace('_', " ")) }
                dt { "Exit code" } dd { (r.exit_code.map_or_else(|| "—".to_string(), |c| c.to_string())) }
                @if let Some(u) = &r.usage {
                    dt { "CPU time" } dd #run-cpu data-cpu-us=(u.cpu_us()) { (u.cpu_in_words()) }
                    dt { "Peak memory" } dd #run-peak data-peak-bytes=[u.peak_rss_bytes] { (u.peak_in_words()) }
                    dt { "Disk" } dd { (u.blocks_read) " blocks read, " (u.blocks_written) " written (512 bytes each)" }
                    dt { "Context switches" } dd { (u.voluntary_switches) " voluntary, " (u.involuntary_switches) " involuntary" }
                }
                dt { "Node" } dd { (r.node) }
                dt { "Error" } dd { @match &r.error { Some(e) => pre.error { (e) }, None => "—" } }
                @if let Some(d) = &r.details {
                    dt { "Details" }
                    dd { pre { (serde_json::to_string_pretty(d).unwrap_or_default()) } }
                }
            }
        }
    }
}

fn attempt_list(id: i64, attempts: &[RunDot]) -> Markup {
    html! {
        @if attempts.len() > 1 {
            section aria-labelledby="attempts" {
                h2 id="attempts" { "Attempts of this firing" }
                ol.attempts data-attempts=(attempts.len()) {
                    @for a in attempts { li {
                        @if a.id == id {
                            span aria-current="page" { "Attempt " (a.attempt) " (this run) " (status_badge(a.status)) }
                        } @else {
                            a href={ "/runs/" (a.id) } { "Attempt " (a.attempt) ", run #" (a.id) }
                            " " (status_badge(a.status))
                        }
                    } }
                }
            }
        }
    }
}

fn notification_table(rows: &[NotificationRow]) -> Markup {
    html! {
        section aria-labelledby="notifications" {
            h2 id="notifications" { "Notifications" }
            @if rows.is_empty() {
                p data-notifications="0" { "None sent for this run." }
            } @else {
                div.scroll { table data-notifications=(rows.len()) {
                    caption.visually-hidden { "Notification attempts, oldest first" }
                    thead { tr {
                        th scope="col" { "Event" }
                        th scope="col" { "Channel" }
                        th scope="col" { "Tried at" }
                        th scope="col" { "Result" }
                    } }
                    tbody { @for n in rows { tr {
                        td { (n.event) }
                        td { (n.channel) }
                        td { (utc(n.sent_at)) }
                        td { @match &n.error {
                            Some(e) => span.s-bad { "✗ not sent: " (e) },
                            None => span.s-ok { "✓ sent" },
                        } }
                    } } }
                } }
            }
        }
    }
}

fn output(r: &RunRow, running: bool) -> Markup {
    let text = r.output.as_deref().unwrap_or("");
    let rendered = ansi_to_html::Converter::new()
        .four_bit_var_prefix(Some("ansi-".to_string()))
        .convert(&without_bad_colours(text));
    html! {
        section aria-labelledby="output-heading" {
            h2 id="output-heading" { "Output" }
            @if running {
                p id="live-state" role="status" data-live-state="connecting" {
                    "The run is going on; its output follows here."
                }
                noscript { p { "Reload the page to see more of the output." } }
            }
            pre id="output" tabindex="0" aria-label="Output"
                data-live=[running.then(|| format!("/v1/runs/{}/output", r.id))] {
                @match rendered {
                    Ok(html) => (PreEscaped(html)),
                    Err(_) => (text),
                }
            }
            @if text.is_empty() && !running { p.quiet { "No output was kept." } }
            @if running { script src="/assets/live.js" defer {} }
        }
    }
}

/// `text` without the colour sequences (`ESC[...m`) whose numbers are out of range (a colour
/// above 255, say): dropped one by one, so that one bad code does not cost the whole output
/// its colours.
fn without_bad_colours(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("\x1b[") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\x1b[") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after.find(|c: char| !(c.is_ascii_digit() || c == ';'));
        match end {
            Some(e) if after[e..].starts_with('m') => {
                let params = &after[..e];
                let fine = params
                    .split(';')
                    .all(|p| p.is_empty() || p.parse::<u8>().is_ok());
                if fine {
                    out.push_str(&rest[at..at + 2 + e + 1]);
                }
                rest = &after[e + 1..];
            }
            _ => {
                out.push_str("\x1b[");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_colour_out_of_range_is_dropped_and_the_others_stay() {
        let text = "\x1b[32mok\x1b[0m \x1b[38;5;300mbad\x1b[0m \x1b[1;31merr\x1b[0m";
        let clean = without_bad_colours(text);
        assert_eq!(clean, "\x1b[32mok\x1b[0m bad\x1b[0m \x1b[1;31merr\x1b[0m");
        let html = ansi_to_html::Converter::new().convert(&clean).unwrap();
        assert!(
            html.contains("ok") && html.contains("err") && !html.contains('\x1b'),
            "{html}"
        );
        assert!(
            ansi_to_html::Converter::new().convert(text).is_err(),
            "the converter refuses 300"
        );
        assert_eq!(without_bad_colours("plain"), "plain");
        assert_eq!(without_bad_colours("\x1b[2Kline"), "\x1b[2Kline");
    }
}
