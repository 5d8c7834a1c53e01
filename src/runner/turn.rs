//! A job's turn across nodes on a shared database, so that `overlap = "skip" | "queue" |
//! "replace"` hold cluster-wide: before its first attempt a firing takes the job's row in
//! `active_runs`; a `skip` firing that finds another node's run is recorded skipped, a
//! `queue` firing waits, a `replace` firing asks the holder to stop and waits.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Context;
use super::firing::Firing;
use crate::job::Overlap;

/// How often a waiting firing asks for the turn again.
const POLL: Duration = Duration::from_millis(250);

impl Firing {
    /// Takes the job's turn across nodes; `false` when the firing gives up (recorded).
    pub(super) async fn cluster_turn(&self) -> bool {
        let overlap = self.job.overlap;
        let store = &self.ctx.services.store;
        let mut asked = false;
        loop {
            let replace = overlap == Overlap::Replace && !asked;
            match store
                .take_turn(&self.job.name, self.scheduled_for, &self.ctx.node, replace)
                .await
            {
                Ok(None) => return true,
                Ok(Some((node, held_for))) => {
                    asked |= replace;
                    if overlap == Overlap::Skip {
                        let at = crate::store::format_ts(held_for);
                        self.skip(
                            1,
                            &format!("the run of {at} is still active on node {node} (overlap = \"skip\")"),
                        );
                        return false;
                    }
                }
                Err(e) if overlap == Overlap::Skip => {
                    self.skip(1, &format!("cannot check the shared database for a run of this job on another node ({e})"));
                    return false;
                }
                Err(e) => {
                    tracing::debug!(job = %self.job.name, error = %e, "cannot take the job's turn; trying again")
                }
            }
            let what = "waiting for the job's run on another node to end";
            if self
                .unless_halted(1, what, tokio::time::sleep(POLL))
                .await
                .is_none()
            {
                return false;
            }
        }
    }
}

/// Gives the job's turn back, trying again while the database does not answer (the other
/// nodes wait for it meanwhile; a node that dies holding it loses it with its lease).
pub(super) async fn give_turn(ctx: &Arc<Context>, job: &str, at: DateTime<Utc>) {
    let mut wait = POLL;
    for _ in 0..20 {
        match ctx.services.store.give_turn(job, at, &ctx.node).await {
            Ok(()) => return,
            Err(e) => {
                // A stopping node's turns are freed when it starts again (or by its lease).
                if ctx.draining.is_cancelled() {
                    return;
                }
                tracing::debug!(job, error = %e, "cannot give the job's turn back; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::warn!(
        job,
        "cannot give the job's turn back: the other nodes wait for it until this node's lease runs out or it restarts"
    );
}
