//! The API on this daemon's parts: its state (timers, history, metrics, token) and where it
//! listens; what the daemon does for it at start (pauses from the history) and at stop
//! (the socket file goes).

use std::sync::Arc;

use chrono::Utc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiState, Listening, Shared, token_digest};
use crate::config::{ConfigInForce, ConnectionLimits, Settings};
use crate::metrics::Metrics;
use crate::runner::Context;
use crate::scheduler::Scheduler;
use crate::store::Store;

/// Binds the API's listeners and serves it on `tasks` until `stop`.
pub(super) fn start(
    settings: &Settings,
    parts: (
        &Scheduler,
        &Store,
        &Arc<Context>,
        &Arc<Metrics>,
        &ConfigInForce,
    ),
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> anyhow::Result<Listening> {
    let (scheduler, store, ctx, metrics, in_force) = parts;
    let token_digest = settings
        .api
        .token
        .as_ref()
        .map(|t| t.read().map(token_digest))
        .transpose()
        .map_err(|e| anyhow::anyhow!("api.token: {e}"))?;
    let state = ApiState::new(Shared {
        scheduler: scheduler.clone(),
        store: store.clone(),
        ctx: Arc::clone(ctx),
        metrics: Arc::clone(metrics),
        node: settings.node.clone(),
        database: settings.database.to_string(),
        started_at: Utc::now(),
        token_digest,
        allowed_hosts: settings.api.allowed_hosts.clone(),
        dashboard_actions: settings.api.dashboard_actions,
        cookie_secure: settings.api.cookie_secure,
        sessions: crate::api::Sessions::default(),
        throttle: crate::api::Throttle::default(),
        stop: stop.clone(),
        jobs_cache: tokio::sync::Mutex::default(),
        in_force: in_force.clone(),
    });
    let mut api_settings = settings.api.clone();
    api_settings.limits = fit_to_descriptors(api_settings.limits);
    let listening = crate::api::start(
        &api_settings,
        &state,
        crate::dashboard::routes(),
        tasks,
        stop,
    )?;
    if let Some(socket) = &listening.socket {
        tracing::info!(socket = %socket.display(), "API listening on its unix socket");
    }
    if let Some(addr) = listening.tcp {
        tracing::info!(address = %addr, token = settings.api.token.is_some(), "API listening on TCP");
    }
    Ok(listening)
}

/// Removes the socket file at stop (a file left by a crash is replaced at the next start).
pub(super) fn remove_socket(listening: &Listening) {
    if let Some(path) = &listening.socket
        && let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(socket = %path.display(), error = %e, "cannot remove the API socket");
    }
}

/// Descriptors kept for everything but the API's connections: runs (their pipes), the
/// database, logs, notifications.
const RESERVED_DESCRIPTORS: u64 = 512;

/// Raises this process's soft limit on open files to its hard limit and lowers the API's cap
/// in all to fit under it with [`RESERVED_DESCRIPTORS`] to spare, so that no number of clients
/// can leave a run without the descriptors it needs.
fn fit_to_descriptors(mut limits: ConnectionLimits) -> ConnectionLimits {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open files limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open files limit");
            return limits;
        }
    };
    let budget = usize::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX);
    let room = budget
        .saturating_sub(crate::api::DESCRIPTORS_BEYOND_CONNECTIONS)
        .max(8);
    if room < limits.in_all {
        tracing::warn!(
            open_files_limit = soft,
            max_connections = limits.in_all,
            lowered_to = room,
            "the open files limit is low: the API's connections are capped lower (raise LimitNOFILE)"
        );
        limits.in_all = room;
        limits.per_listener = limits.per_listener.min(room);
    }
    limits
}
