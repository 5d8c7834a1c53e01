//! The API on this daemon's parts: its state (timers, history, metrics, token) and where it
//! listens; what the daemon does for it at start (pauses from the history) and at stop
//! (the socket file goes).

use std::sync::Arc;

use chrono::Utc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiState, Listening, Shared, token_digest};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::runner::Context;
use crate::scheduler::Scheduler;
use crate::store::Store;

/// Binds the API's listeners and serves it on `tasks` until `stop`.
pub(super) fn start(
    settings: &Settings,
    parts: (&Scheduler, &Store, &Arc<Context>, &Arc<Metrics>),
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> anyhow::Result<Listening> {
    let (scheduler, store, ctx, metrics) = parts;
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
        dashboard_actions: settings.api.dashboard_actions,
        stop: stop.clone(),
        jobs_cache: tokio::sync::Mutex::default(),
    });
    let listening = crate::api::start(
        &settings.api,
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
