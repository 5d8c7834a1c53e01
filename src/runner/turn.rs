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
use crate::store::Trigger;

/// How often a waiting firing asks for the turn again.
const POLL: Duration = Duration::from_millis(250);
/// How many failed tries (a database that does not answer, a pool whose connections are all
/// busy with a burst) a `skip` firing makes before it is recorded skipped for it.
const MAX_FAILURES: u32 = 4;

impl Firing {
    /// Takes the job's turn across nodes; `false` when the firing gives up (recorded).
    pub(super) async fn cluster_turn(&self) -> bool {
        // Catch-up firings are never skipped by the overlap policy (they run one after
        // another): they wait their turn as `queue` does.
        let overlap = match (self.job.overlap, self.trigger) {
            (Overlap::Skip, Trigger::CatchUp) => Overlap::Queue,
            (overlap, _) => overlap,
        };
        let store = &self.ctx.services.store;
        let (mut asked, mut failures) = (false, 0);
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
                Err(e) if overlap == Overlap::Skip && failures >= MAX_FAILURES => {
                    self.skip(1, &format!("cannot check the shared database for a run of this job on another node ({e})"));
                    return false;
                }
                Err(e) => {
                    // Busy connections while the database answers are not its failure.
                    if !(e.is_busy() && self.ctx.claims.reachable()) {
                        failures += 1;
                    }
                    tracing::debug!(job = %self.job.name, error = %e, "cannot take the job's turn; trying again");
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

/// Gives the job's turn back. When the database does not answer, the turn is kept to give
/// back first thing once it does (before the firings missed meanwhile are caught up), so a
/// finished run never blocks the job's next firings for longer than the outage.
pub(super) async fn give_turn(ctx: &Arc<Context>, job: &str, at: DateTime<Utc>) {
    if let Err(e) = ctx.services.store.give_turn(job, at, &ctx.node).await {
        tracing::debug!(job, error = %e, "cannot give the job's turn back; given back when the database answers");
        ctx.claims.keep_turn(job, at);
    }
}
