//! The web dashboard, served beside the API on its listeners under the same rules: pages
//! rendered on the server (maud), a stylesheet and one small script for live output, no
//! build chain. Read-only unless `[api] dashboard_actions` is set and the browser gave the
//! token. Pages: the jobs (`jobs_page`), one job (`job_page`, with `plot`s), one run
//! (`run_page`), the nodes (`nodes_page`); `session` signs a browser in, `actions` acts,
//! `layout` is the frame they share, `assets` the files they load.

mod actions;
mod assets;
mod graph_page;
mod job_page;
mod jobs_page;
mod layout;
mod nodes_page;
mod plot;
mod run_page;
mod session;

use axum::Router;
use axum::routing::{get, post};

use crate::api::{ApiState, LOGIN_PATH};

/// The dashboard's routes, for the API to serve.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(jobs_page::page))
        .route("/jobs/{name}", get(job_page::page))
        .route("/jobs/{name}/trigger", post(actions::trigger))
        .route("/jobs/{name}/pause", post(actions::pause))
        .route("/jobs/{name}/resume", post(actions::resume))
        .route("/runs/{id}", get(run_page::page))
        .route("/graph", get(graph_page::page))
        .route("/nodes", get(nodes_page::page))
        .route(LOGIN_PATH, get(session::form).post(session::login))
        .route("/logout", post(session::logout))
        .route("/assets/style.css", get(assets::style))
        .route("/assets/live.js", get(assets::live))
}

/// `s` as one path segment (a job name may hold any character but `/`).
fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `params` as a query string, empty values left out.
fn query_string(params: &[(&str, String)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params.iter().filter(|(_, v)| !v.is_empty()) {
        out.append_pair(k, v);
    }
    out.finish()
}
