//! The nodes page (`/nodes`): the daemons sharing a PostgreSQL database, their leases, clock
//! skew and definition digests, and the jobs whose definitions differ between them; on
//! SQLite, this one daemon.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;

use super::layout::{self, Problem, Section, Visitor, utc};
use crate::api::ApiState;

/// `GET /nodes`.
pub(super) async fn page(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let store = &state.0.store;
    let visitor = Visitor::of(&state, &headers);
    let Some(cluster) = store.cluster() else {
        let body = html! {
            h1 { "Nodes" }
            p { "This daemon, " strong { (state.0.node) } ", keeps its history in SQLite ("
                code { (state.0.database) } "): it is the only node. Several daemons share a "
                "PostgreSQL database to run each firing exactly once among them." }
        };
        return Ok(layout::page(
            &state,
            &visitor,
            "Nodes",
            Section::Nodes,
            body,
        ));
    };
    let nodes = cluster.nodes().await?;
    let drift = cluster.job_drift().await?;
    let differ = crate::store::live_digests_differ(&nodes);
    let body = html! {
        h1 { "Nodes" }
        p { (nodes.iter().filter(|n| n.alive).count()) " of " (nodes.len())
            " nodes hold a lease on " code { (state.0.database) } "." }
        div.scroll { table.nodes data-nodes=(nodes.len()) {
            caption.visually-hidden { "Nodes sharing the database" }
            thead { tr {
                th scope="col" { "Node" }
                th scope="col" { "State" }
                th scope="col" { "Version" }
                th scope="col" { "Started" }
                th scope="col" { "Last heartbeat" }
                th scope="col" { "Lease until" }
                th scope="col" { "Clock skew" }
                th scope="col" { "Definitions digest" }
            } }
            tbody { @for n in &nodes { tr data-node=(n.name) {
                th scope="row" { (n.name) @if n.name == state.0.node { " (this one)" } }
                td { @if n.alive { span.s-ok { "✓ alive" } } @else { span.s-quiet { "✗ gone" } } }
                td { (n.version) }
                td { (utc(n.started_at)) }
                td { (utc(n.heartbeat_at)) }
                td { (utc(n.lease_until)) }
                td data-skew-ms=(n.skew_ms) { (layout::millis(n.skew_ms)) }
                td { code { (n.config_digest.get(..12).unwrap_or(&n.config_digest)) }
                    @if n.alive && differ { " " span.marker.m-stale { "differs" } } }
            } } }
        } }
        h2 { "Jobs defined differently between nodes" }
        @if drift.is_empty() {
            p data-drift="0" { "None: every live node has the same definitions." }
        } @else {
            ul data-drift=(drift.len()) { @for (job, pairs) in &drift {
                li { strong { (job) } ": " (pairs.join(", ")) }
            } }
        }
    };
    Ok(layout::page(
        &state,
        &visitor,
        "Nodes",
        Section::Nodes,
        body,
    ))
}
