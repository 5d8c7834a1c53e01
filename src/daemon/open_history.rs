//! The history a starting daemon opens: the instance lock first, then the store; on a shared
//! database the node's name; then what a dead daemon left (its spill file, its runs'
//! leftovers) and run ids above any it handed out.

use std::sync::Arc;

use anyhow::Context as _;

use super::leftovers::stop_previous_runs;
use super::node::LoadedJobs;
use super::{Shutdown, node_info};
use crate::config::Settings;
use crate::history::run_ids::RunIds;
use crate::job::JobSpec;
use crate::store::Store;

/// The history opened for this daemon: the store, the instance lock, run ids above any a
/// dead daemon handed out (its spill file replayed, its runs' leftovers stopped), and each
/// job's last firing. On a shared database the node takes its name (with `jobs`' digest)
/// before anything its name owns is touched.
pub(super) async fn open_history(
    settings: &Settings,
    jobs: &[JobSpec],
    shutdown: &Shutdown,
) -> anyhow::Result<(
    Store,
    super::instance::InstanceLock,
    Arc<RunIds>,
    std::collections::HashMap<String, chrono::DateTime<chrono::Utc>>,
)> {
    let instance = super::instance::acquire(
        settings.database.local_path(),
        matches!(settings.database, crate::store::Database::Sqlite(_)),
    )?;
    let store = Store::connect(&settings.database).await?;
    if let Some(cluster) = store.cluster() {
        super::node::join(&cluster, &node_info(settings), &LoadedJobs::of(jobs, true))
            .await
            .context("cannot join the nodes sharing the database")?;
    }
    let replayed = crate::history::recorder::replay_spill(&store)
        .await
        .context("cannot replay the spill file into the history database")?;
    if replayed > 0 {
        tracing::info!(
            records = replayed,
            "run records kept in the spill file by the previous daemon written to the history database"
        );
    }
    let above = stop_previous_runs(&store, &shutdown.processes, &settings.node).await?;
    let ids = Arc::new(RunIds::reserve(&store, above).await?);
    let last_fired = store.last_fired().await?;
    Ok((store, instance, ids, last_fired))
}
