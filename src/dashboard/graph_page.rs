//! The dependency graph (`/graph`): the jobs that run after others and their parents, drawn
//! server-side as SVG in layers (each job right of its furthest parent), each with its last
//! status and a link to its page; and the upstream and downstream lines of a job's page.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};

use super::layout::{self, Problem, Section, Visitor, status_class};
use crate::api::ApiState;
use crate::job::graph::Graph;
use crate::store::RunStatus;

/// A job's box: width, height; the gaps between layers and rows; the margin.
const BOX_W: usize = 168;
const BOX_H: usize = 36;
const COL: usize = 224;
const ROW: usize = 56;
const MARGIN: usize = 16;

/// `GET /graph`.
pub(super) async fn page(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let views = state.0.scheduler.views();
    let graph = Graph::of(views.iter().map(|v| &*v.spec));
    let last: HashMap<String, RunStatus> = state
        .0
        .store
        .last_runs()
        .await?
        .into_iter()
        .map(|(job, run)| (job, run.status))
        .collect();
    let visitor = Visitor::of(&state, &headers);
    let body = html! {
        h1 { "Dependencies" }
        @if graph.edges.is_empty() {
            p { "No job runs after another. A job runs after others with " code { "after" } " (see the README's \"Dependencies and groups\")." }
        } @else {
            p.lead { "Which jobs run after which, left to right, each with its last status; a job's box leads to its page." }
            (svg(&graph, &last))
            (as_list(&graph))
        }
    };
    Ok(layout::page(
        &state,
        &visitor,
        "Dependencies",
        Section::Graph,
        body,
    ))
}

/// Where each job's box is: (x, y) of its top left corner.
fn places(graph: &Graph) -> HashMap<&str, (usize, usize)> {
    let mut at = HashMap::new();
    for (col, jobs) in graph.layers().iter().enumerate() {
        for (row, job) in jobs.iter().enumerate() {
            at.insert(*job, (MARGIN + col * COL, MARGIN + row * ROW));
        }
    }
    at
}

/// The drawing: a box per job, a curve per edge (parent's right side to child's left).
fn svg(graph: &Graph, last: &HashMap<String, RunStatus>) -> Markup {
    let at = places(graph);
    let layers = graph.layers();
    let rows = layers.iter().map(Vec::len).max().unwrap_or(1);
    let width = 2 * MARGIN + (layers.len() - 1) * COL + BOX_W;
    let height = 2 * MARGIN + (rows - 1) * ROW + BOX_H;
    html! {
        figure.graph {
            svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="graph-title"
                viewBox=(format!("0 0 {width} {height}")) width=(width) height=(height) {
                title id="graph-title" { "Which jobs run after which" }
                defs {
                    marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse" {
                        path d="M 0 0 L 10 5 L 0 10 z" {}
                    }
                }
                @for (parent, child) in &graph.edges {
                    @if let (Some((px, py)), Some((cx, cy))) = (at.get(parent.as_str()), at.get(child.as_str())) {
                        path.edge data-from=(parent) data-to=(child) marker-end="url(#arrow)"
                            d=(curve(px + BOX_W, py + BOX_H / 2, *cx, cy + BOX_H / 2)) {}
                    }
                }
                @for (job, (x, y)) in sorted(&at) {
                    @let status = last.get(job).copied();
                    a href={ "/jobs/" (super::path_segment(job)) } {
                        g.job data-job=(job) data-status=(status.map_or("never", RunStatus::as_str)) {
                            rect class={ "box s-" (status.map_or("quiet", status_class)) }
                                x=(x) y=(y) width=(BOX_W) height=(BOX_H) rx="6" {}
                            text x=(x + 10) y=(y + BOX_H / 2 + 5) { (job) }
                        }
                    }
                }
            }
        }
    }
}

/// A cubic curve from (x1, y1) to (x2, y2), leaving and arriving level.
fn curve(x1: usize, y1: usize, x2: usize, y2: usize) -> String {
    let bend = (x2.saturating_sub(x1)) / 2;
    format!(
        "M {x1} {y1} C {} {y1}, {} {y2}, {x2} {y2}",
        x1 + bend,
        x2 - bend
    )
}

fn sorted<'a>(at: &HashMap<&'a str, (usize, usize)>) -> Vec<(&'a str, (usize, usize))> {
    let mut v: Vec<_> = at.iter().map(|(j, p)| (*j, *p)).collect();
    v.sort_unstable();
    v
}

/// The same as words, for screen readers and text browsers: each child and its condition.
fn as_list(graph: &Graph) -> Markup {
    html! {
        section aria-labelledby="edges" {
            h2 id="edges" { "As a list" }
            ul.edges {
                @for (child, condition) in &graph.condition {
                    li data-child=(child) {
                        a href={ "/jobs/" (super::path_segment(child)) } { (child) } " runs " (condition)
                    }
                }
            }
        }
    }
}

/// A job's place in the graph for its page: the jobs it runs after (and when), and those
/// that run after it; nothing when it has neither.
pub(super) fn upstream_downstream(graph: &Graph, job: &str) -> Markup {
    let parents = graph.parents(job);
    let children = graph.children(job);
    html! {
        @if !parents.is_empty() || !children.is_empty() {
            section aria-labelledby="deps" {
                h2 id="deps" { "Dependencies" }
                dl.facts {
                    @if !parents.is_empty() {
                        dt { "Runs after" }
                        dd data-upstream=(parents.join(" ")) {
                            (job_links(&parents))
                            @if let Some(c) = graph.condition.get(job) { " (" (c) ")" }
                        }
                    }
                    @if !children.is_empty() {
                        dt { "Runs before" }
                        dd data-downstream=(children.join(" ")) { (job_links(&children)) }
                    }
                    dt { "Graph" }
                    dd { a href="/graph" { "all dependencies" } }
                }
            }
        }
    }
}

/// Jobs as links to their pages, comma-separated.
fn job_links(jobs: &[&str]) -> Markup {
    html! {
        @for (i, job) in jobs.iter().enumerate() {
            @if i > 0 { ", " }
            a href={ "/jobs/" (super::path_segment(job)) } { (job) }
        }
    }
}
