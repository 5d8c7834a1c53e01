//! What this node hears from the others: the database's notifications (`LISTEN`) routed to
//! who acts on them (the daemon for pauses and replace requests, the trigger poll, the
//! heartbeat for node changes). When the listening connection is lost, everything is read
//! again once it is back; meanwhile the heartbeat's fallback poll (`database.fallback_poll`)
//! finds what was missed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::history::recorder::Ended;
use crate::store::{Cluster, ClusterEvent};

/// How long the listener waits before it connects again after a failure.
const RECONNECT_AFTER: Duration = Duration::from_secs(2);

/// Who acts on what the node hears.
#[derive(Debug, Clone)]
pub struct Routes {
    /// The daemon: pauses, replace requests, and everything after a lost notification.
    pub daemon: mpsc::Sender<ClusterEvent>,
    /// The trigger poll: a manual trigger was requested.
    pub triggers: Arc<Notify>,
    /// The heartbeat: a node joined, came back or left.
    pub beat: Arc<Notify>,
    /// Who looks at the jobs that run after others: children another node named.
    pub ended: mpsc::UnboundedSender<Ended>,
}

impl Routes {
    /// Hands `event` to who acts on it.
    pub async fn route(&self, event: ClusterEvent) {
        match event {
            ClusterEvent::Triggers => self.triggers.notify_one(),
            ClusterEvent::Nodes => self.beat.notify_one(),
            ClusterEvent::Children(jobs) => {
                let _ = self.ended.send(Ended::Children(jobs));
            }
            ClusterEvent::Missed => {
                self.triggers.notify_one();
                self.beat.notify_one();
                let _ = self.ended.send(Ended::All);
                let _ = self.daemon.send(ClusterEvent::Missed).await;
            }
            event @ (ClusterEvent::Pauses | ClusterEvent::Replace(_)) => {
                let _ = self.daemon.send(event).await;
            }
        }
    }
}

/// Listens until `cancel`, connecting again after failures (each followed by a
/// [`ClusterEvent::Missed`]). `fallback` (the poll's period) is only for the log.
pub(super) async fn listen_loop(
    cluster: Cluster,
    routes: Routes,
    fallback: Duration,
    cancel: CancellationToken,
) {
    let mut failing = false;
    loop {
        let error = tokio::select! {
            () = cancel.cancelled() => return,
            e = listen(&cluster, &routes, &mut failing) => e,
        };
        if !failing {
            tracing::warn!(error = %error, fallback_poll = %humantime::format_duration(fallback), "cannot listen for the other nodes' notifications: pauses, manual triggers and replace requests from other nodes are followed at each fallback poll until it can");
        }
        failing = true;
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(RECONNECT_AFTER) => {}
        }
    }
}

/// Listens until the connection fails (returned).
async fn listen(
    cluster: &Cluster,
    routes: &Routes,
    failing: &mut bool,
) -> crate::store::StoreError {
    let mut events = match cluster.listen().await {
        Ok(events) => events,
        Err(e) => return e,
    };
    if std::mem::take(failing) {
        tracing::info!("listening for the other nodes' notifications again");
    }
    // What was said before it listened (since the start, or while it could not).
    routes.route(ClusterEvent::Missed).await;
    loop {
        match events.next().await {
            Ok(event) => routes.route(event).await,
            Err(e) => return e,
        }
    }
}
