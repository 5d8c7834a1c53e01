//! The run recorder: runs hand their records to an unbounded channel and never wait for the
//! disk; one writer task, on a thread of its own, drains the channel in batches, one
//! transaction per batch, as records come.
//!
//! When the history database fails (disk full, read-only or immutable files, I/O errors, a
//! lock held too long, the file removed), nothing is dropped: the failed transaction is rolled
//! back and its connection closed, the records go to the spill file beside the database
//! (fsync'd), or stay in memory while that cannot be written either, and the writer retries
//! every second at most. Once the database takes writes again the spill file is replayed,
//! oldest first, then the records in memory. At a stop during a fault, what is in memory is
//! spilled; the next start replays the file before anything else.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use crate::history::ended::Ended;
use crate::history::ended::last_words;
pub use crate::history::health::HistoryHealth;
use crate::history::spill::{Spill, SpillError};
use crate::metrics::Metrics;
use crate::store::{HistoryWriter, Record, Store, StoreError};

/// Most records written in one transaction.
const BATCH: usize = 4096;
/// Records the queue keeps room for once it is empty.
const KEPT_CAPACITY: usize = 64;
/// First wait before retrying a failed write; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Longest wait between two tries while the database fails.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Output kept in memory for records that neither the database nor the spill file could take;
/// past it the oldest records' output tails are replaced by [`OUTPUT_DROPPED`] (their rows,
/// status and error are always kept).
pub const MEMORY_OUTPUT_BOUND: usize = 64 << 20;
/// What replaces an output tail dropped under [`MEMORY_OUTPUT_BOUND`].
pub const OUTPUT_DROPPED: &str =
    "[output not kept: the history database and its spill file could not be written]";

/// Errors of replaying a spill file.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    /// The database refused the records.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The spill file could not be read.
    #[error(transparent)]
    Spill(#[from] SpillError),
}

/// What the writer could do with the records it had when it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterReport {
    /// Records left in the spill file (replayed at the next start).
    pub spilled: usize,
    /// Records saved nowhere (the database and the spill file both failed).
    pub lost: usize,
}

/// Sends records to the writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Record>,
    health: Arc<HistoryHealth>,
    metrics: Option<Arc<Metrics>>,
}

impl Recorder {
    /// Starts the writer task on `store`. The task ends once every `Recorder` clone is dropped
    /// and the queue is written or spilled. `ended` hears whose runs' last words each batch
    /// wrote (see [`Ended`]).
    pub fn start(
        store: &Store,
        ended: Option<mpsc::UnboundedSender<Ended>>,
    ) -> (Self, JoinHandle<WriterReport>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let health = Arc::new(HistoryHealth::default());
        let spill = Spill::beside(store.path());
        let writer = Writer {
            spill_pending: spill.has_records(),
            db: store.writer(),
            spill,
            memory: VecDeque::new(),
            memory_output: 0,
            since_release: 0,
            spilled: 0,
            fault: None,
            health: Arc::clone(&health),
            last_batch: None,
            ended,
        };
        let task = writer_runtime().spawn(writer.run(rx));
        (
            Self {
                tx,
                health,
                metrics: None,
            },
            task,
        )
    }

    /// A recorder whose records go to the returned receiver instead of a database (for tests
    /// and benchmarks of the scheduling path).
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Record>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let health = Arc::default();
        (
            Self {
                tx,
                health,
                metrics: None,
            },
            rx,
        )
    }

    /// The same recorder, counting each record in `metrics` on its way.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Queues a record; never blocks.
    pub fn record(&self, record: Record) {
        if let Some(m) = &self.metrics {
            m.record(&record);
        }
        if self.tx.send(record).is_err() {
            tracing::error!("history writer has stopped; a run record was not saved");
        }
    }

    /// Whether history writes fail, and how many records wait.
    pub fn health(&self) -> &HistoryHealth {
        &self.health
    }
}

/// Where the writer runs: a runtime of its own (one thread, kept for the life of the
/// process), so that however busy the daemon's runtime is (a burst of 1,000 firings spawning
/// their processes), records reach the database as they come, not after the burst: on the
/// shared runtime no row was written until the whole burst had been spawned (0.8 s for 1,000
/// quick runs). The runtime where the recorder starts, if that thread cannot be had.
fn writer_runtime() -> tokio::runtime::Handle {
    static WRITER: std::sync::OnceLock<Option<tokio::runtime::Runtime>> =
        std::sync::OnceLock::new();
    let own = WRITER.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("history-writer")
            .enable_all()
            .build()
            .inspect_err(|e| {
                tracing::warn!(error = %e, "cannot start the history writer's thread; it shares the daemon's");
            })
            .ok()
    });
    own.as_ref()
        .map_or_else(tokio::runtime::Handle::current, |rt| rt.handle().clone())
}

/// Writes the spill file a previous daemon left into the database and removes it; returns
/// how many records it held. Called at start, before run ids are handed out and before runs
/// left `running` are marked abandoned.
pub async fn replay_spill(store: &Store) -> Result<usize, RecorderError> {
    let spill = Spill::beside(store.path());
    if !spill.has_records() {
        return Ok(0);
    }
    let mut db = store.writer();
    let (spill, result) = replay(&mut db, spill).await;
    db.close().await;
    let (count, unreadable) = result?;
    if unreadable > 0 {
        tracing::warn!(path = %spill.path().display(), lines = unreadable, "spill file lines that were not records skipped (a write cut short)");
    }
    Ok(count)
}

/// Replays `spill` into `db`, chunk by chunk, then removes it. Returns the spill and the
/// records replayed and lines skipped; a failure leaves the file for the next try.
async fn replay(
    db: &mut HistoryWriter,
    mut spill: Spill,
) -> (Spill, Result<(usize, usize), RecorderError>) {
    let mut reader = match blocking(move || {
        let r = spill.reader();
        (spill, r)
    })
    .await
    {
        (s, Ok(r)) => {
            spill = s;
            r
        }
        (s, Err(e)) => return (s, Err(e.into())),
    };
    let mut count = 0;
    loop {
        let (back, chunk) = blocking(move || {
            let c = reader.next_chunk(BATCH);
            (reader, c)
        })
        .await;
        reader = back;
        let chunk = match chunk {
            Ok(c) if c.is_empty() => break,
            Ok(c) => c,
            Err(e) => return (spill, Err(e.into())),
        };
        if let Err(e) = db.write_batch(&chunk).await {
            return (spill, Err(e.into()));
        }
        count += chunk.len();
    }
    let unreadable = reader.unreadable;
    let (spill, removed) = blocking(move || {
        let r = spill.replayed(&reader);
        (spill, r)
    })
    .await;
    if let Err(e) = removed {
        // Replaying it again would change nothing (writes are idempotent); it is skipped
        // until then.
        tracing::warn!(error = %e, "cannot remove the replayed spill file");
    }
    (spill, Ok((count, unreadable)))
}

/// Runs blocking file work off the runtime threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A failure streak of the history database.
#[derive(Debug)]
struct Fault {
    since: Instant,
    retry_at: Instant,
    delay: Duration,
    /// Whether the spill file failed too (reported once).
    spill_failing: bool,
    /// Whether records went to the spill file in this streak (reported once).
    spill_used: bool,
    /// Records written since the streak began.
    written: usize,
}

#[derive(Debug)]
struct Writer {
    db: HistoryWriter,
    /// Told whose runs' last words were written.
    ended: Option<mpsc::UnboundedSender<Ended>>,
    spill: Spill,
    /// Whether the spill file holds records not yet in the database.
    spill_pending: bool,
    /// Records appended to the spill file since it was last replayed.
    spilled: usize,
    /// Records neither in the database nor in the spill file, oldest first; every one comes
    /// after every record of the spill file.
    memory: VecDeque<Record>,
    /// Bytes of output tails in `memory`.
    memory_output: usize,
    /// Records written since the connection's cache was last given back.
    since_release: usize,
    fault: Option<Fault>,
    health: Arc<HistoryHealth>,
    /// When the last batch began (for the database's least gap between batches).
    last_batch: Option<Instant>,
}

fn output_len(r: &mut Record) -> usize {
    r.output_mut()
        .and_then(|o| o.as_ref().map(String::len))
        .unwrap_or(0)
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Record>) -> WriterReport {
        let mut open = true;
        loop {
            if open {
                open = self.receive(&mut rx).await;
            }
            if open {
                open = self.linger(&mut rx).await;
            }
            if !open && self.memory.is_empty() && !self.spill_pending {
                break;
            }
            let due = self
                .fault
                .as_ref()
                .is_none_or(|f| Instant::now() >= f.retry_at);
            if due || !open {
                match self.flush().await {
                    Ok(()) => self.recovered(),
                    Err(e) => {
                        self.failed(&e);
                        if !open {
                            self.spill_memory().await;
                            break;
                        }
                    }
                }
            }
            if self.fault.is_some() {
                self.spill_memory().await;
            }
            self.health
                .pending
                .store(self.memory.len() + self.spilled, Ordering::Relaxed);
            self.health
                .failing
                .store(self.fault.is_some(), Ordering::Relaxed);
        }
        self.db.close().await;
        WriterReport {
            spilled: if self.spill_pending { self.spilled } else { 0 },
            lost: self.memory.len(),
        }
    }

    /// Takes what has arrived: waits for records when all is written, or for the next retry
    /// while the database fails; returns `false` once the channel is closed and empty.
    async fn receive(&mut self, rx: &mut mpsc::UnboundedReceiver<Record>) -> bool {
        let mut buf = Vec::new();
        let open = match &self.fault {
            None if self.memory.is_empty() && !self.spill_pending => {
                rx.recv_many(&mut buf, BATCH).await > 0
            }
            None => loop {
                match rx.try_recv() {
                    Ok(r) if buf.len() < BATCH => buf.push(r),
                    Ok(r) => {
                        buf.push(r);
                        break true;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break true,
                    Err(mpsc::error::TryRecvError::Disconnected) => break false,
                }
            },
            Some(f) => {
                let retry_at = f.retry_at;
                tokio::select! {
                    n = rx.recv_many(&mut buf, BATCH) => n > 0,
                    () = tokio::time::sleep_until(retry_at) => true,
                }
            }
        };
        self.take(buf);
        open
    }

    /// Queues records that arrived, counting their output.
    fn take(&mut self, buf: Vec<Record>) {
        for mut r in buf {
            self.memory_output += output_len(&mut r);
            self.memory.push_back(r);
        }
    }

    /// Waits out the database's least gap since the last batch began (none for SQLite),
    /// taking what arrives meanwhile; `false` once the channel is closed.
    async fn linger(&mut self, rx: &mut mpsc::UnboundedReceiver<Record>) -> bool {
        let gap = self.db.batch_gap();
        let Some(last) = self.last_batch else {
            return true;
        };
        if gap.is_zero() || self.fault.is_some() {
            return true;
        }
        let until = last + gap;
        while self.memory.len() < BATCH && Instant::now() < until {
            let mut buf = Vec::new();
            let open = tokio::select! {
                n = rx.recv_many(&mut buf, BATCH) => n > 0,
                () = tokio::time::sleep_until(until) => true,
            };
            self.take(buf);
            if !open {
                return false;
            }
        }
        true
    }

    /// Replays the spill file if it holds records, then writes one batch from memory.
    async fn flush(&mut self) -> Result<(), RecorderError> {
        if self.spill_pending {
            let (spill, result) = replay(&mut self.db, self.spill.clone()).await;
            self.spill = spill;
            let (count, _) = result?;
            self.note_written(count);
            self.spill_pending = false;
            self.spilled = 0;
            self.tell(Ended::All);
        }
        let n = self.memory.len().min(BATCH);
        if n == 0 {
            return Ok(());
        }
        let batch = &self.memory.make_contiguous()[..n];
        let began = Instant::now();
        self.last_batch = Some(began);
        self.db.write_batch(batch).await?;
        let ended = last_words(batch);
        if !ended.is_empty() {
            self.tell(Ended::Jobs(ended));
        }
        tracing::debug!(
            records = n,
            ms = began.elapsed().as_millis(),
            "run records written"
        );
        for mut r in self.memory.drain(..n) {
            self.memory_output -= output_len(&mut r);
        }
        self.note_written(n);
        self.since_release += n;
        if self.memory.is_empty() {
            // A burst's queue of thousands of records leaves no table behind, and the pages
            // its writes cached go back (once per batch's worth of records, so a steady
            // trickle of runs keeps its cache).
            self.memory.shrink_to(KEPT_CAPACITY);
            if self.since_release >= BATCH {
                self.db.release_memory().await;
                self.since_release = 0;
            }
        }
        Ok(())
    }

    fn tell(&self, ended: Ended) {
        if let Some(tx) = &self.ended {
            let _ = tx.send(ended);
        }
    }

    fn note_written(&mut self, n: usize) {
        if let Some(f) = &mut self.fault {
            f.written += n;
        }
    }

    /// Ends a failure streak once everything it kept is written.
    fn recovered(&mut self) {
        if !self.memory.is_empty() || self.spill_pending {
            return;
        }
        if let Some(f) = self.fault.take() {
            self.health.set_failing_since(None);
            tracing::info!(
                records = f.written,
                fault_ms = f.since.elapsed().as_millis() as u64,
                "run history written again; every record kept during the fault is now in the database"
            );
        }
    }

    fn failed(&mut self, e: &RecorderError) {
        let pending = self.memory.len() + self.spilled;
        let now = Instant::now();
        self.health.errors.fetch_add(1, Ordering::Relaxed);
        match &mut self.fault {
            None => {
                self.health.set_failing_since(Some(now));
                // One line per streak: the operator must act (disk full, permissions, a lock
                // held by another program, a removed file).
                tracing::error!(
                    error = %e,
                    pending,
                    "cannot write run history; keeping the records (spill file, then memory) and retrying every second"
                );
                self.fault = Some(Fault {
                    since: now,
                    retry_at: now + FIRST_RETRY_DELAY,
                    delay: FIRST_RETRY_DELAY,
                    spill_failing: false,
                    spill_used: false,
                    written: 0,
                });
            }
            Some(f) => {
                f.delay = (f.delay * 2).min(MAX_RETRY_DELAY);
                f.retry_at = now + f.delay;
                tracing::debug!(error = %e, pending, "run history still cannot be written");
            }
        }
    }

    /// Moves the records in memory to the spill file; keeps them in memory when it fails.
    async fn spill_memory(&mut self) {
        // Only during a fault: otherwise the records go to the database.
        if self.memory.is_empty() || self.fault.is_none() {
            return;
        }
        let records: Vec<Record> = self.memory.iter().cloned().collect();
        let n = records.len();
        let mut spill = self.spill.clone();
        let (spill, result) = blocking(move || {
            let r = spill.append(&records);
            (spill, r)
        })
        .await;
        self.spill = spill;
        let Some(fault) = &mut self.fault else {
            return;
        };
        match result {
            Ok(()) => {
                self.memory.clear();
                self.memory_output = 0;
                self.spilled += n;
                self.spill_pending = true;
                if !fault.spill_used {
                    fault.spill_used = true;
                    tracing::warn!(path = %self.spill.path().display(), records = n, "run records written to the spill file; replayed when the database takes writes again");
                }
                fault.spill_failing = false;
            }
            Err(e) => {
                if !fault.spill_failing {
                    fault.spill_failing = true;
                    tracing::error!(error = %e, records = self.memory.len(), "cannot write the spill file either; keeping the records in memory");
                }
                self.bound_memory();
            }
        }
    }

    /// Drops the oldest output tails while memory holds more than [`MEMORY_OUTPUT_BOUND`].
    fn bound_memory(&mut self) {
        let mut dropped = 0;
        for r in &mut self.memory {
            if self.memory_output <= MEMORY_OUTPUT_BOUND {
                break;
            }
            if let Some(out) = r.output_mut()
                && let Some(text) = out.as_mut()
                && text != OUTPUT_DROPPED
            {
                self.memory_output -= text.len();
                *text = OUTPUT_DROPPED.to_string();
                self.memory_output += text.len();
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::warn!(
                runs = dropped,
                "output tails of the oldest waiting run records dropped to bound memory"
            );
        }
    }
}
