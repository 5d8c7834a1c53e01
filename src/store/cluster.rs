//! The cluster's own statements, on a PostgreSQL database several nodes share: claims of
//! firings, the jobs' turns across nodes, the nodes' leases and what they have loaded. A
//! daemon on SQLite has no [`Cluster`] (see
//! [`Store::cluster`](super::Store::cluster)): it runs every firing it has.

use chrono::{DateTime, Utc};

use super::postgres::PgStore;
use super::{Claim, LostRun, NodeBeat, NodeHolder, NodeRow, StoreError};

/// The statements of a database shared by several nodes.
#[derive(Debug, Clone)]
pub struct Cluster(pub(super) PgStore);

impl Cluster {
    /// Claims `firings` (each `(job, scheduled_for)` once) for `node` in one statement, and
    /// answers each in order: [`Claim::Won`] when this node is the one to run and record it,
    /// or [`Claim::Lost`] when another node has it.
    pub async fn claim_firings(
        &self,
        firings: &[(String, DateTime<Utc>)],
        node: &str,
    ) -> Result<Vec<Claim>, StoreError> {
        self.0.claim_firings(firings, node).await
    }

    /// Claims the one run `catch_up = "latest"` makes after an outage of the shared
    /// database: `true` when this node runs the firing of `scheduled_for` (no node claimed
    /// such a run for the job since `since`).
    pub async fn claim_latest(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        since: DateTime<Utc>,
        node: &str,
    ) -> Result<bool, StoreError> {
        self.0.claim_latest(job, scheduled_for, since, node).await
    }

    /// Renews this node's lease; returns its clock's skew against the database's in
    /// milliseconds.
    pub async fn heartbeat(&self, beat: &NodeBeat<'_>) -> Result<i64, StoreError> {
        self.0.heartbeat(beat).await
    }

    /// Who holds node `name` now: `None` when no row names it.
    pub async fn node_holder(&self, name: &str) -> Result<Option<NodeHolder>, StoreError> {
        self.0.node_holder(name).await
    }

    /// Takes over from dead nodes: see [`LostRun`]. `ids` gives run ids for
    /// firings a dead node claimed without recording them.
    pub async fn reap_dead_nodes(
        &self,
        me: &str,
        ids: &(dyn Fn() -> i64 + Sync),
    ) -> Result<Vec<LostRun>, StoreError> {
        self.0.reap_dead_nodes(me, ids).await
    }

    /// Makes a lost run's firing this node's, to run its next attempt.
    pub async fn take_over(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        me: &str,
    ) -> Result<(), StoreError> {
        self.0.take_over(job, scheduled_for, me).await
    }

    /// Takes the job's turn across nodes for the firing of `scheduled_for`:
    /// `None` when this node has it, else who holds it (node and firing). With `replace`, the
    /// holder is asked to stop its run.
    pub async fn take_turn(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        me: &str,
        replace: bool,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        self.0.take_turn(job, scheduled_for, me, replace).await
    }

    /// Gives the job's turn back.
    pub async fn give_turn(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        me: &str,
    ) -> Result<(), StoreError> {
        self.0.give_turn(job, scheduled_for, me).await
    }

    /// The jobs whose run on node `me` another node asked to replace.
    pub async fn replace_requests(&self, me: &str) -> Result<Vec<String>, StoreError> {
        self.0.replace_requests(me).await
    }

    /// Records the digests of the job definitions node `me` has loaded.
    pub async fn set_node_jobs(
        &self,
        me: &str,
        jobs: &[(String, String)],
    ) -> Result<(), StoreError> {
        self.0.set_node_jobs(me, jobs).await
    }

    /// The jobs whose definition differs between live nodes, each with its `node=digest`
    /// pairs.
    pub async fn job_drift(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        self.0.job_drift().await
    }

    /// Ends this node's lease at a clean stop.
    pub async fn leave(&self, me: &str) -> Result<(), StoreError> {
        self.0.leave(me).await
    }

    /// The nodes sharing this database.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        self.0.nodes().await
    }

    /// Deletes the claims of firings before `before` (pruning, with the runs).
    pub async fn prune_claims(&self, before: DateTime<Utc>) -> Result<(), StoreError> {
        self.0.prune_claims(before).await
    }
}
