//! The history writer's workload: run records as a command run leaves them (a start, then an
//! end with exit code and output tail) through the recorder into a fresh SQLite file, and the
//! same records written by the store directly in batches of a given size.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use hourglass::history::recorder::Recorder;
use hourglass::store::{Record, RunEnd, RunStart, RunStatus, Store, StoreError, Trigger};

/// How the runs' records arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Each run's end right after its start (quick runs: the writer can merge them).
    Quick,
    /// Every start, then every end (long runs: ends update rows of earlier batches).
    Long,
}

/// The records of `runs` runs of 100 jobs, as the daemon sends them: the firing, the start
/// and the end of each.
pub fn records(runs: usize, shape: Shape) -> Vec<Record> {
    let t0 = Utc::now();
    let mut out = Vec::with_capacity(runs * 3);
    let mut ends = Vec::with_capacity(runs);
    for i in 0..runs {
        let id = i64::try_from(i).unwrap_or(i64::MAX) + 1;
        let due = t0 + TimeDelta::seconds(id);
        let job = format!("job-{}", i % 100);
        out.push(Record::Fired {
            job: job.clone(),
            scheduled_for: due,
        });
        out.push(Record::Started(RunStart {
            id,
            job: job.clone(),
            scheduled_for: due,
            started_at: Some(due + TimeDelta::milliseconds(2)),
            attempt: 1,
            trigger: Trigger::Schedule,
            node: "bench".into(),
            pid: Some(10_000 + u32::try_from(i % 50_000).unwrap_or(0)),
        }));
        let end = Record::Finished(RunEnd {
            id,
            job: job.clone(),
            finished_at: due + TimeDelta::milliseconds(40),
            status: RunStatus::Succeeded,
            exit_code: Some(0),
            error: None,
            output: Some("backup done: 1234 files, 56 MiB\n".into()),
            details: None,
            retried: false,
            // What a command's row carries since runs are accounted.
            usage: Some(hourglass::store::Usage {
                cpu_user_us: 12_345,
                cpu_system_us: 6_789,
                peak_rss_bytes: Some(64 << 20),
                blocks_read: 0,
                blocks_written: 8,
                voluntary_switches: 12,
                involuntary_switches: 3,
            }),
        });
        match shape {
            Shape::Quick => out.push(end),
            Shape::Long => ends.push(end),
        }
    }
    out.extend(ends);
    out
}

/// A fresh history database in `dir`.
pub async fn store_in(dir: &Path) -> Result<Store, StoreError> {
    Store::open(&dir.join("history.db")).await
}

/// Sends every record through a new recorder on `store` and waits until the writer has
/// written them all; returns the time taken.
pub async fn through_recorder(store: Store, records: Vec<Record>) -> Duration {
    let t0 = Instant::now();
    let (recorder, writer) = Recorder::start(&store, None);
    for r in records {
        recorder.record(r);
    }
    drop(recorder);
    let _ = writer.await;
    t0.elapsed()
}

/// Writes `records` with the store directly, `batch` records per transaction.
pub async fn in_batches(store: &Store, records: &[Record], batch: usize) -> Result<(), StoreError> {
    for chunk in records.chunks(batch.max(1)) {
        store.write_batch(chunk).await?;
    }
    Ok(())
}
