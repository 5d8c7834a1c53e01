//! Mutual exclusion groups at run time: at most `max_running` runs of a group's jobs at once.
//! On this node a semaphore per group (first come, first served: the group's jobs take turns
//! fairly); on a shared database also one of the group's slots across nodes
//! (`store::Cluster::take_group_slot`), given back at the run's end.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Context;
use crate::job::JobGroup;

/// How often a run waiting for a group's slot held on another node asks again.
pub(super) const CLUSTER_WAIT: Duration = Duration::from_millis(250);

/// Every group's gate on this node.
#[derive(Debug, Default)]
pub(super) struct Groups {
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

impl Groups {
    /// `group`'s gate (a new one when its `max_running` changed).
    pub(super) fn gate(&self, group: &JobGroup) -> Arc<Gate> {
        let mut gates = self
            .gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let gate = gates
            .entry(group.name.clone())
            .or_insert_with(|| Arc::new(Gate::new(group.max_running)));
        if gate.max != group.max_running {
            *gate = Arc::new(Gate::new(group.max_running));
        }
        Arc::clone(gate)
    }
}

/// One group on this node: its permits and who holds them.
#[derive(Debug)]
pub(super) struct Gate {
    max: usize,
    pub(super) permits: Arc<Semaphore>,
    holders: Mutex<BTreeMap<u64, String>>,
    next: AtomicU64,
}

impl Gate {
    fn new(max: usize) -> Self {
        Self {
            max,
            permits: Arc::new(Semaphore::new(max.max(1))),
            holders: Mutex::default(),
            next: AtomicU64::new(0),
        }
    }

    /// Who holds the group on this node, in words.
    pub(super) fn holders(&self) -> String {
        let holders = self
            .holders
            .lock()
            .map(|h| h.values().cloned().collect::<Vec<_>>());
        holders.unwrap_or_default().join(", ")
    }
}

/// A run's place in its group: given back when dropped (the cluster's slot in a task).
#[derive(Debug)]
pub(crate) struct GroupTurn {
    _permit: OwnedSemaphorePermit,
    gate: Arc<Gate>,
    key: u64,
    /// On a shared database: the context, the group and the slot held there.
    across: Option<(Arc<Context>, String, i32)>,
}

impl GroupTurn {
    pub(super) fn new(permit: OwnedSemaphorePermit, gate: &Arc<Gate>, holder: String) -> Self {
        let key = gate.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut h) = gate.holders.lock() {
            h.insert(key, holder);
        }
        Self {
            _permit: permit,
            gate: Arc::clone(gate),
            key,
            across: None,
        }
    }

    /// Says which run holds it (once the attempt has its id).
    pub(super) fn held_by(&self, holder: String) {
        if let Ok(mut h) = self.gate.holders.lock() {
            h.insert(self.key, holder);
        }
    }

    /// Records the slot it holds across nodes.
    pub(super) fn with_slot(mut self, ctx: &Arc<Context>, group: &str, slot: i32) -> Self {
        self.across = Some((Arc::clone(ctx), group.to_string(), slot));
        self
    }
}

impl Drop for GroupTurn {
    fn drop(&mut self) {
        if let Ok(mut h) = self.gate.holders.lock() {
            h.remove(&self.key);
        }
        let Some((ctx, group, slot)) = self.across.take() else {
            return;
        };
        let Some(cluster) = ctx.cluster.clone() else {
            return;
        };
        let node = ctx.node.clone();
        ctx.tracker.spawn(async move {
            // Until the database takes it (else the slot stays held until this node is
            // taken over or starts again).
            let mut delay = Duration::from_millis(100);
            while let Err(e) = cluster.give_group_slot(&group, slot, &node).await {
                tracing::warn!(group = %group, slot, error = %e, "cannot give back the group's slot; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        });
    }
}

/// A run of `job` for `scheduled_for`, in words (`backup's run for 03:00:00.000`).
pub(super) fn run_in_words(job: &str, scheduled_for: DateTime<Utc>, run_id: Option<i64>) -> String {
    let at = crate::store::format_ts(scheduled_for);
    match run_id {
        Some(id) => format!("run {id} of job {job} (due {at})"),
        None => format!("job {job}'s run due {at}"),
    }
}
