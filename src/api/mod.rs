//! The daemon's HTTP API (axum, JSON, versioned paths under `/v1`): on a unix socket (mode
//! 0660) by default, on TCP when `[api] listen` is set (always with a bearer token). Jobs
//! (`jobs`), runs and their live output (`runs`), health, status and metrics (`health`);
//! who asks is known by `auth`, every action is written to the `events` table; `serve`
//! holds the connections within their caps and timeouts (`stream`: a connection and its
//! head read first), `sessions` and `throttle` are the dashboard's sign-ins and the brake on
//! wrong tokens.

mod auth;
mod health;
pub(crate) mod jobs;
pub(crate) mod runs;
mod serve;
mod sessions;
mod stream;
mod throttle;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub(crate) use auth::{Actor, TokenGuess, judge_token, same_origin, too_many};
pub use auth::{LOGIN_PATH, Peer, token_digest};
pub use health::{HISTORY_FAILING_BOUND, Status};
pub use jobs::JobSummary;
pub use serve::BEYOND_CONNECTIONS as DESCRIPTORS_BEYOND_CONNECTIONS;
pub use sessions::{
    IDLE as SESSION_IDLE, LIFETIME as SESSION_LIFETIME, SESSION_COOKIE, Sessions, SignedIn,
};
pub use throttle::{BURST as THROTTLE_BURST, REFILL as THROTTLE_REFILL, Throttle};

use crate::config::{ApiSettings, ConfigInForce};
use crate::metrics::Metrics;
use crate::runner::Context;
use crate::scheduler::Scheduler;
use crate::store::{Store, StoreError};

/// What the handlers work on. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiState(pub(crate) Arc<Shared>);

/// The daemon's parts the API reads and acts on.
pub struct Shared {
    /// The timers (jobs, trigger, pause).
    pub scheduler: Scheduler,
    /// The history.
    pub store: Store,
    /// What firings share (runs in progress, history health, live output).
    pub ctx: Arc<Context>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// This daemon's node name.
    pub node: String,
    /// The history database, as the CLI names it (to tell it found the right daemon).
    pub database: String,
    /// When the daemon started.
    pub started_at: DateTime<Utc>,
    /// SHA-256 of the bearer token TCP requests must carry.
    pub token_digest: Option<[u8; 32]>,
    /// Host names TCP requests may name besides IP addresses and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// Whether the dashboard offers trigger, pause and resume (`[api] dashboard_actions`).
    pub dashboard_actions: bool,
    /// Whether the session cookie is marked `Secure` (`[api] cookie_secure`).
    pub cookie_secure: bool,
    /// The dashboard's sign-in sessions.
    pub sessions: Sessions,
    /// Wrong tokens by client address.
    pub throttle: Throttle,
    /// Stops the live output streams at shutdown.
    pub stop: CancellationToken,
    /// The job list last built, when, and for which generation of the configuration (see
    /// `jobs::list`).
    pub jobs_cache: tokio::sync::Mutex<Option<(tokio::time::Instant, u64, axum::body::Bytes)>>,
    /// Which configuration the daemon runs, and whether the files were refused since.
    pub in_force: ConfigInForce,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.node)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// A state over `shared`.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

/// Why the API cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Another daemon answers on the socket.
    #[error("another daemon listens on {0} (api.socket); stop it or give this one another socket")]
    SocketTaken(PathBuf),
    /// The socket or address cannot be bound.
    #[error("cannot listen on {what}: {source}")]
    Bind {
        /// The socket or address.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Where the API listens, once bound.
#[derive(Debug, Default)]
pub struct Listening {
    /// The unix socket (removed at stop).
    pub socket: Option<PathBuf>,
    /// The TCP address.
    pub tcp: Option<SocketAddr>,
}

/// Binds the listeners and serves the API on tasks in `tasks` until `stop`.
/// The dashboard's pages (`pages`) are served beside the API, under the same rules.
pub fn start(
    settings: &ApiSettings,
    state: &ApiState,
    pages: Router<ApiState>,
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> Result<Listening, ApiError> {
    let app = router(state.clone(), pages);
    let connections = serve::Connections::new(settings.limits);
    let mut listening = Listening::default();
    if let Some(path) = &settings.socket {
        let listener = bind_socket(path, settings)?;
        let serving = serve::serve(
            serve::Listener::Unix(listener),
            app.clone(),
            Arc::clone(&connections),
            stop.clone(),
        );
        tasks.spawn(serving);
        listening.socket = Some(path.clone());
    }
    if let Some(addr) = settings.listen {
        let std_listener = std::net::TcpListener::bind(addr).map_err(|source| ApiError::Bind {
            what: addr.to_string(),
            source,
        })?;
        let bound = std_listener.local_addr().unwrap_or(addr);
        let listener = long_queue(&std_listener)
            .and_then(|()| std_listener.set_nonblocking(true))
            .and_then(|()| TcpListener::from_std(std_listener))
            .map_err(|source| ApiError::Bind {
                what: addr.to_string(),
                source,
            })?;
        let serving = serve::serve(
            serve::Listener::Tcp(listener),
            app,
            connections,
            stop.clone(),
        );
        tasks.spawn(serving);
        listening.tcp = Some(bound);
    }
    Ok(listening)
}

/// Binds the unix socket with its mode (and group): a file left by a dead daemon is
/// replaced, a live one is an error. The socket is made with no access for anyone and given
/// its mode once its group is set, so that no one outside the group can open it meanwhile.
fn bind_socket(path: &Path, settings: &ApiSettings) -> Result<UnixListener, ApiError> {
    let bind_error = |source| ApiError::Bind {
        what: path.display().to_string(),
        source,
    };
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ApiError::SocketTaken(path.to_path_buf()));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(bind_error(e)),
        _ => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind_error)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    long_queue(&listener).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000)).map_err(bind_error)?;
    if let Some(gid) = settings.socket_group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(bind_error)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.socket_mode))
        .map_err(bind_error)?;
    Ok(listener)
}

/// Lets the kernel queue up to 4,096 connections (within `net.core.somaxconn`) that the
/// daemon does not accept yet while its connections are at their cap (see `serve`).
fn long_queue(listener: &impl std::os::fd::AsFd) -> std::io::Result<()> {
    let backlog = nix::sys::socket::Backlog::new(4096).map_err(std::io::Error::from)?;
    nix::sys::socket::listen(listener, backlog).map_err(std::io::Error::from)
}

fn router(state: ApiState, pages: Router<ApiState>) -> Router {
    Router::new()
        .merge(pages)
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/v1/status", get(health::status))
        .route("/v1/jobs", get(jobs::list))
        .route("/v1/jobs/{name}", get(jobs::one))
        .route("/v1/jobs/{name}/trigger", post(jobs::trigger))
        .route("/v1/jobs/{name}/pause", post(jobs::pause))
        .route("/v1/jobs/{name}/resume", post(jobs::resume))
        .route("/v1/events", get(jobs::events))
        .route("/v1/runs", get(runs::list))
        .route("/v1/runs/{id}", get(runs::one))
        .route("/v1/runs/{id}/output", get(runs::output))
        .fallback(|| async { Failure::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .with_state(state)
}

/// The API's errors are JSON (`{"error": ...}`), those of axum's extractors (a bad query, path
/// or body, answered as plain text) included.
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = request.uri().path().starts_with("/v1/");
    let response = next.run(request).await;
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !api
        || !plain
        || !(response.status().is_client_error() || response.status().is_server_error())
    {
        return response;
    }
    let status = response.status();
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Failure::new(status, text).into_response()
}

/// An error answer: its status and `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct Failure(StatusCode, String);

impl Failure {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }

    /// Its HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        self.0
    }

    /// Why, in words.
    pub(crate) fn message(&self) -> &str {
        &self.1
    }

    pub(crate) fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no {what}"))
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("history database: {e}"),
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// A time given as RFC 3339, or as a duration from now (`"2h"`: in two hours when `ahead`,
/// two hours ago otherwise).
pub fn parse_time(s: &str, ahead: bool) -> Result<DateTime<Utc>, String> {
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) => return Ok(t.with_timezone(&Utc)),
        // A date (it starts like `2026-`): say what is wrong with it as a time, not as a
        // duration.
        Err(e) if looks_like_a_date(s) => {
            return Err(format!(
                "{s:?} is not a time in RFC 3339 ({e}); expected e.g. \"2026-11-27T18:00:00Z\", or a duration such as \"2h\""
            ));
        }
        Err(_) => {}
    }
    let span = crate::config::parse_duration(s)
        .map_err(|e| format!("{e}; or a time in RFC 3339 (\"2026-11-27T18:00:00Z\")"))?;
    let span = chrono::TimeDelta::from_std(span)
        .map_err(|_| format!("{s:?} is longer than the longest duration allowed here"))?;
    let now = Utc::now();
    let t = if ahead {
        now.checked_add_signed(span)
    } else {
        now.checked_sub_signed(span)
    };
    t.ok_or_else(|| format!("{s:?} is longer than the longest duration allowed here"))
}

/// Whether `s` starts as a date does (four digits and a dash).
fn looks_like_a_date(s: &str) -> bool {
    let b = s.trim().as_bytes();
    b.len() > 4 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_date_is_told_as_a_date_and_durations_still_parse() {
        let e = parse_time("2026-13-01T00:00:00Z", true).unwrap_err();
        assert!(e.contains("is not a time in RFC 3339"), "{e}");
        assert!(
            !e.contains("duration") || e.contains("or a duration such as"),
            "{e}"
        );
        let e = parse_time("2026-12-01", true).unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
        assert!(parse_time("2h", true).unwrap() > Utc::now());
        assert!(parse_time("2026-12-01T00:00:00Z", true).is_ok());
    }
}
