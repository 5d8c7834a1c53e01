//! What the history writer tells once runs' last words are in the database: whose children
//! (jobs that run `after` them) may run now.

use crate::store::{Record, RunStatus};

/// What the writer tells once runs' last words are in the database: whose children may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// These jobs' runs ended for good (no retry follows) and are written.
    Jobs(Vec<String>),
    /// Records kept through an outage are written: any job's may be among them.
    All,
    /// Another node wrote these children's parents' ends and may not run them (`run_on`):
    /// the nodes that may look at them.
    Children(Vec<String>),
}

/// The jobs whose runs end for good in `batch` (each once).
pub(super) fn last_words(batch: &[Record]) -> Vec<String> {
    let mut jobs: Vec<String> = batch
        .iter()
        .filter_map(|r| match r {
            Record::Finished(e) | Record::Complete(_, e)
                if e.status != RunStatus::Skipped && !e.retried =>
            {
                Some(e.job.clone())
            }
            _ => None,
        })
        .collect();
    jobs.sort_unstable();
    jobs.dedup();
    jobs
}
