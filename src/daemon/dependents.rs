//! Following the parents' runs for the jobs that run after them: at start, the dependent runs
//! a dead life of this node claimed but never started, then every child's condition once (a
//! stop between a parent's end and its child's start); then, each time the history writer
//! has written runs' last words, the children of their jobs.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::history::recorder::Ended;
use crate::scheduler::Scheduler;
use crate::store::Store;

/// Runs until `stop`: see the module's description.
pub(super) async fn follow(
    scheduler: Scheduler,
    store: Store,
    node: String,
    mut ended: mpsc::UnboundedReceiver<Ended>,
    stop: CancellationToken,
) {
    start_claimed(&scheduler, &store, &node, &stop).await;
    scheduler.parents_ended(None);
    let mut news = Vec::new();
    loop {
        let got = tokio::select! {
            () = stop.cancelled() => return,
            n = ended.recv_many(&mut news, 256) => n,
        };
        if got == 0 {
            return;
        }
        // What arrived meanwhile, each job once.
        let (mut jobs, mut children) = (Vec::new(), Vec::new());
        let mut all = false;
        for e in news.drain(..) {
            match e {
                Ended::Jobs(j) => jobs.extend(j),
                Ended::Children(c) => children.extend(c),
                Ended::All => all = true,
            }
        }
        if all {
            scheduler.parents_ended(None);
            continue;
        }
        for list in [&mut jobs, &mut children] {
            list.sort_unstable();
            list.dedup();
        }
        if !jobs.is_empty() {
            scheduler.parents_ended(Some(&jobs));
        }
        if !children.is_empty() {
            scheduler.look_at(&children);
        }
    }
}

/// Starts the dependent runs this node claimed in a life that died before they started
/// (retried while the database does not answer, until `stop`).
async fn start_claimed(scheduler: &Scheduler, store: &Store, node: &str, stop: &CancellationToken) {
    let mut delay = std::time::Duration::from_secs(1);
    let claimed = loop {
        match store.unstarted_dependents(node).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the dependent runs claimed before a crash; reading again");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(30));
    };
    for (job, run_id, causes) in claimed {
        if scheduler.fire_claimed(&job, run_id, causes) {
            tracing::info!(job = %job, run_id, "starting a run its parents fired before the daemon was killed");
        } else {
            tracing::warn!(job = %job, run_id, "a run its parents fired before the daemon was killed is not started: the job no longer runs after them");
        }
    }
}
