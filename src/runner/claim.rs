//! Claiming a firing on a shared database: before anything of a firing runs or is recorded,
//! the node claims `(job, scheduled_for)` in one statement; only the node that wins runs it.
//! A node that cannot reach the database claims nothing (another node may) and says so once
//! per outage.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};

use super::Context;

/// Whether the last claims failed (the database is out of reach).
#[derive(Debug, Default)]
pub struct ClaimHealth {
    failing: AtomicBool,
}

impl ClaimHealth {
    /// Whether claims are failing now.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

/// Claims the firing of `job` for `scheduled_for`: `true` when this node is to run and
/// record it (always, on a database of its own).
pub async fn claim(ctx: &Context, job: &str, scheduled_for: DateTime<Utc>) -> bool {
    if !ctx.shared {
        return true;
    }
    let health = &ctx.claims;
    match ctx
        .services
        .store
        .claim_firing(job, scheduled_for, &ctx.node)
        .await
    {
        Ok(won) => {
            if health.failing.swap(false, Ordering::Relaxed) {
                tracing::info!("the shared database answers again: this node claims firings again");
            }
            won
        }
        Err(e) => {
            if !health.failing.swap(true, Ordering::Relaxed) {
                tracing::error!(error = %e, job, scheduled_for = %scheduled_for, "cannot reach the shared database: this node claims no firing until it answers (the other nodes may run them)");
            } else {
                tracing::debug!(error = %e, job, "firing not claimed: the shared database does not answer");
            }
            false
        }
    }
}
