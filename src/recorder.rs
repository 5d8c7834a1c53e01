//! The run recorder: runs hand their records to an unbounded channel and never wait for the
//! disk; one writer task drains the channel in batches, one transaction per batch. A failed
//! write keeps the batch and retries with backoff, so no record is lost while the daemon lives.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::store::{Record, Store};

/// Most records written in one transaction.
const BATCH: usize = 4096;

/// Sends records to the writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Record>,
}

impl Recorder {
    /// Starts the writer task on `store`. The task ends once every `Recorder` clone is dropped
    /// and the queue is written.
    pub fn start(store: Store) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(write_loop(store, rx));
        (Self { tx }, task)
    }

    /// A recorder whose records go to the returned receiver instead of a database (for tests
    /// and benchmarks of the scheduling path).
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Record>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Queues a record; never blocks.
    pub fn record(&self, record: Record) {
        if self.tx.send(record).is_err() {
            tracing::error!("history writer has stopped; a run record was not saved");
        }
    }
}

async fn write_loop(store: Store, mut rx: mpsc::UnboundedReceiver<Record>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut delay = Duration::from_millis(100);
        let mut failures = 0u32;
        while let Err(e) = store.write_batch(&batch).await {
            failures += 1;
            // One line per failure streak step, not per record: the operator must act
            // (disk full, permissions, a lock held by another program).
            tracing::error!(
                error = %e,
                records = batch.len(),
                attempt = failures,
                retry_in_ms = delay.as_millis() as u64,
                "cannot write run history; keeping the records and retrying"
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        if failures > 0 {
            tracing::info!(records = batch.len(), "run history written after retrying");
        }
        batch.clear();
    }
}
