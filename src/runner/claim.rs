//! Claiming a firing on a shared database: before anything of a firing runs or is recorded,
//! the node claims `(job, scheduled_for)` in one statement; only the node that wins runs it.
//! A node that cannot reach the database claims nothing (another node may) and says so once
//! per outage.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};

use super::Context;
use crate::job::JobSpec;
use crate::store::Claim;

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
/// record it (always, on a database of its own). A firing not due yet by the database's clock
/// (this node's clock is ahead) is claimed when it is due there.
pub async fn claim(ctx: &Context, spec: &JobSpec, scheduled_for: DateTime<Utc>) -> bool {
    if !spec.run_on.iter().all(|t| ctx.tags.contains(t)) {
        return false;
    }
    if !ctx.shared {
        return true;
    }
    let job = spec.name.as_str();
    let busy = busy_delay(ctx);
    if !busy.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(busy) => {}
            () = ctx.draining.cancelled() => return false,
        }
    }
    for _ in 0..MAX_EARLY_RETRIES {
        match try_claim(ctx, job, scheduled_for).await {
            Some(Claim::Won) => return true,
            Some(Claim::Early(wait)) => {
                tokio::select! {
                    () = tokio::time::sleep(wait.min(MAX_EARLY_WAIT)) => {}
                    () = ctx.draining.cancelled() => return false,
                }
            }
            Some(Claim::Lost) | None => return false,
        }
    }
    false
}

/// How long a busy node lets the others claim first: a millisecond per attempt it runs (up
/// to 20), and 200 ms when it has no free run slot, so that firings go to the nodes with the
/// most room.
fn busy_delay(ctx: &Context) -> std::time::Duration {
    let running = u64::try_from(ctx.running().min(20)).unwrap_or(20);
    let full = if ctx.limit.available_permits() == 0 {
        200
    } else {
        0
    };
    std::time::Duration::from_millis(running + full)
}

/// How many times a firing early by the database's clock is claimed again.
const MAX_EARLY_RETRIES: usize = 4;
/// The longest wait for a firing to be due by the database's clock: a clock further ahead is
/// far past `database.max_clock_skew`, and the other nodes run the firing.
const MAX_EARLY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn try_claim(ctx: &Context, job: &str, scheduled_for: DateTime<Utc>) -> Option<Claim> {
    let health = &ctx.claims;
    match ctx
        .services
        .store
        .claim_firing(job, scheduled_for, &ctx.node)
        .await
    {
        Ok(claim) => {
            if health.failing.swap(false, Ordering::Relaxed) {
                tracing::info!("the shared database answers again: this node claims firings again");
            }
            Some(claim)
        }
        Err(e) => {
            if !health.failing.swap(true, Ordering::Relaxed) {
                tracing::error!(error = %e, job, scheduled_for = %scheduled_for, "cannot reach the shared database: this node claims no firing until it answers (the other nodes may run them)");
            } else {
                tracing::debug!(error = %e, job, "firing not claimed: the shared database does not answer");
            }
            None
        }
    }
}
