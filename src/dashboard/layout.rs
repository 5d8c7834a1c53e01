//! The frame every page shares (head, navigation, footer, security headers) and the small
//! pieces pages are made of: status badges (a symbol and a word, never colour alone), times,
//! durations, and the error page.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use maud::{DOCTYPE, Markup, html};

use crate::api::ApiState;
use crate::store::{RunStatus, StoreError};

/// Which part of the dashboard a page belongs to (marked in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Jobs,
    Graph,
    Nodes,
    None,
}

/// What a page knows of the browser asking: signed in (gave the token), and the form field
/// its actions must carry.
#[derive(Debug, Clone)]
pub(super) struct Visitor {
    /// It carries the session cookie.
    pub(super) signed_in: bool,
    /// Actions are offered to it (`dashboard_actions`, and signed in).
    pub(super) may_act: bool,
    /// The anti-forgery field of its forms.
    pub(super) csrf: String,
}

impl Visitor {
    pub(super) fn of(state: &ApiState, headers: &HeaderMap) -> Self {
        let session = state
            .0
            .token_digest
            .and_then(|_| state.0.sessions.find(headers));
        let signed_in = session.is_some();
        Self {
            signed_in,
            may_act: signed_in && state.0.dashboard_actions,
            csrf: session.map(|s| s.csrf).unwrap_or_default(),
        }
    }
}

/// A whole page: `title`, the navigation with `section` marked, `body`.
pub(super) fn page(
    state: &ApiState,
    visitor: &Visitor,
    title: &str,
    section: Section,
    body: Markup,
) -> Response {
    let nav = |href: &str, label: &str, this: Section| {
        html! {
            a href=(href) aria-current=[(section == this).then_some("page")] { (label) }
        }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "hourglass" }
                    nav aria-label="Sections" {
                        (nav("/", "Jobs", Section::Jobs))
                        (nav("/graph", "Dependencies", Section::Graph))
                        (nav("/nodes", "Nodes", Section::Nodes))
                    }
                    @if visitor.signed_in {
                        form.signout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(visitor.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                @if let Some(warning) = state.0.in_force.now().warning() {
                    p.problem role="alert" { (warning) }
                }
                main id="main" { (body) }
                footer {
                    "node " (state.0.node) " · hourglass " (env!("CARGO_PKG_VERSION"))
                    " · times in UTC unless a zone is named"
                }
            }
        }
    };
    with_headers(markup.into_response())
}

/// The `head` of every page: `title`, the viewport, both colour schemes, the stylesheet (and
/// an empty icon, so that the browser asks for none).
fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            title { (title) " · hourglass" }
            link rel="icon" href="data:,";
            link rel="stylesheet" href="/assets/style.css";
        }
    }
}

/// The headers every page carries: no framing, no scripts but ours, no caching.
pub(super) fn with_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A page that could not be shown: its status and why, in words.
#[derive(Debug)]
pub(super) struct Problem(pub(super) StatusCode, pub(super) String);

impl Problem {
    pub(super) fn not_found(what: impl std::fmt::Display) -> Self {
        Self(StatusCode::NOT_FOUND, format!("There is no {what}."))
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        Self(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("The history database did not answer: {e}"),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                (head("Error"))
                body {
                    main id="main" {
                        h1 { (self.0.canonical_reason().unwrap_or("Error")) }
                        p.problem role="alert" { (self.1) }
                        p { a href="/" { "Back to the jobs" } }
                    }
                }
            }
        };
        with_headers((self.0, markup).into_response())
    }
}

/// How a status reads: a symbol, a word, and its colour class.
pub(super) fn status_badge(status: RunStatus) -> Markup {
    let (symbol, word) = match status {
        RunStatus::Succeeded => ("✓", "succeeded"),
        RunStatus::Failed => ("✗", "failed"),
        RunStatus::TimedOut => ("⏱", "timed out"),
        RunStatus::Running => ("▶", "running"),
        RunStatus::Skipped => ("↷", "skipped"),
        RunStatus::Abandoned => ("⚠", "abandoned"),
        RunStatus::Interrupted => ("■", "interrupted"),
        RunStatus::Cancelled => ("⊘", "cancelled"),
    };
    html! {
        span class={ "status s-" (status_class(status)) } data-status=(status) {
            span aria-hidden="true" { (symbol) } " " (word)
        }
    }
}

/// The colour family of a status: ok, bad, busy or quiet.
pub(super) fn status_class(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Succeeded => "ok",
        s if s.is_failure() => "bad",
        RunStatus::Running => "busy",
        _ => "quiet",
    }
}

/// A UTC time as stored (`2026-11-27T08:00:00.000Z`), shown to the second.
pub(super) fn utc(t: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(crate::store::format_ts(t)) { (t.format("%Y-%m-%d %H:%M:%S")) }
    }
}

/// An instant in a job's zone, with the zone's abbreviation.
pub(super) fn zoned(t: DateTime<Utc>, tz: Tz) -> Markup {
    let local = t.with_timezone(&tz);
    html! {
        time datetime=(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) {
            (local.format("%Y-%m-%d %H:%M:%S %Z"))
        }
    }
}

/// A span of milliseconds in words: `850 ms`, `12.3 s`, `4 min 3 s`, `2 h 5 min`.
pub(super) fn millis(ms: i64) -> String {
    let sign = if ms < 0 { "−" } else { "" };
    let ms = ms.unsigned_abs();
    let text = match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    };
    format!("{sign}{text}")
}

/// `millis` of an optional span, or a dash.
pub(super) fn maybe_millis(ms: Option<i64>) -> String {
    ms.map_or_else(|| "—".to_string(), millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_in_the_unit_that_fits() {
        assert_eq!(millis(850), "850 ms");
        assert_eq!(millis(12_345), "12.3 s");
        assert_eq!(millis(243_000), "4 min 3 s");
        assert_eq!(millis(7_500_000), "2 h 5 min");
        assert_eq!(millis(-40), "−40 ms");
        assert_eq!(maybe_millis(None), "—");
    }
}
