//! Run ids: handed out from memory on the firing path (an atomic add), and reserved in the
//! history database in blocks ahead of use, so that a daemon killed before its records were
//! written never lets the next one give the same id again.
//!
//! A block of [`BLOCK`] ids is reserved before the daemon fires anything; when half of what is
//! reserved is used, a background task reserves the next block. A clean stop gives back what
//! was not used, so ids go on without a gap; after a `kill -9` the next daemon starts above the
//! reservation. If the database refuses the reservation for longer than half a block of
//! firings, ids go on past it (firing never waits for the database): the next start still
//! begins above every id found in a live process of the dead daemon
//! ([`crate::processes::stop_orphans`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

/// Ids reserved at a time.
pub const BLOCK: i64 = 100_000;

/// The id counter and its durable reservation.
#[derive(Debug)]
pub struct RunIds {
    range: Mutex<IdRange>,
    wanted: Notify,
    warned: AtomicBool,
}

/// The ids this daemon may hand out: the current block and, on a shared database, the next.
#[derive(Debug)]
struct IdRange {
    next: i64,
    through: i64,
    queued: Option<(i64, i64)>,
}

impl RunIds {
    /// Ids from `first`, reserved through `reserved_through`.
    pub fn new(first: i64, reserved_through: i64) -> Self {
        Self {
            range: Mutex::new(IdRange {
                next: first,
                through: reserved_through,
                queued: None,
            }),
            wanted: Notify::new(),
            warned: AtomicBool::new(false),
        }
    }

    /// Ids from `first` that need no reservation (tests, one-off runs).
    pub fn unreserved(first: i64) -> Self {
        Self::new(first, i64::MAX)
    }

    /// Reserves the first block in `store` and starts counting above everything used before.
    ///
    /// # Errors
    /// When the database cannot be read or written.
    pub async fn reserve(store: &Store, above: i64) -> Result<Self, StoreError> {
        let (first, through) = store.take_run_ids(above, BLOCK).await?;
        Ok(Self::new(first, through))
    }

    fn range(&self) -> std::sync::MutexGuard<'_, IdRange> {
        self.range
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next id.
    pub fn next(&self) -> i64 {
        let mut r = self.range();
        if r.next > r.through
            && let Some((first, through)) = r.queued.take()
        {
            r.next = first;
            r.through = through;
        }
        let id = r.next;
        r.next = r.next.saturating_add(1);
        if id > r.through.saturating_sub(BLOCK / 2) && r.queued.is_none() {
            self.wanted.notify_one();
            if id > r.through && !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    run_id = id,
                    reserved_through = r.through,
                    "run ids used past their reservation in the history database (it is failing)"
                );
            }
        }
        id
    }

    /// The last id handed out (`first - 1` when none was).
    pub fn last(&self) -> i64 {
        self.range().next - 1
    }

    /// The last id reserved (of the block in use, or of the next one when it is taken).
    pub fn reserved_through(&self) -> i64 {
        let r = self.range();
        r.queued.map_or(r.through, |(_, through)| through)
    }

    /// Takes a block `(first, through)`: one that follows on from the current block extends
    /// it; one elsewhere (a shared database's) is used when the current block is spent.
    fn add_block(&self, (first, through): (i64, i64)) {
        let mut r = self.range();
        if first <= r.through.saturating_add(1) {
            r.through = r.through.max(through);
        } else {
            r.queued = Some((first, through));
        }
        self.warned.store(false, Ordering::Relaxed);
    }

    /// Keeps a block reserved ahead of use until `cancel`.
    pub async fn keep_reserved(&self, store: Store, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = self.wanted.notified() => {}
                () = cancel.cancelled() => return,
            }
            let through = {
                let r = self.range();
                if r.queued.is_some() {
                    continue;
                }
                r.next.saturating_add(BLOCK)
            };
            if through <= self.reserved_through() {
                continue;
            }
            match store.reserve_run_ids(through, BLOCK).await {
                Ok(block) => self.add_block(block),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reserve run ids in the history database; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        () = cancel.cancelled() => return,
                    }
                    self.wanted.notify_one();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ids_are_reserved_ahead_and_never_reused_after_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.db")).await.unwrap();
        let ids = RunIds::reserve(&store, 0).await.unwrap();
        assert_eq!(ids.next(), 1);
        assert_eq!(ids.next(), 2);
        // Killed here: no row was written, yet the next daemon starts above the reservation.
        let again = RunIds::reserve(&store, 0).await.unwrap();
        assert_eq!(again.next(), BLOCK + 1);
        // A clean stop gives back the rest.
        store.release_run_ids(again.last()).await.unwrap();
        let third = RunIds::reserve(&store, 0).await.unwrap();
        assert_eq!(third.next(), BLOCK + 2);
        // Ids found in a dead daemon's processes count too.
        let fourth = RunIds::reserve(&store, 10 * BLOCK).await.unwrap();
        assert_eq!(fourth.next(), 10 * BLOCK + 1);
    }

    #[tokio::test]
    async fn half_a_block_used_reserves_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.db")).await.unwrap();
        let ids = std::sync::Arc::new(RunIds::reserve(&store, 0).await.unwrap());
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let ids = std::sync::Arc::clone(&ids);
            let store = store.clone();
            let cancel = cancel.clone();
            async move { ids.keep_reserved(store, cancel).await }
        });
        for _ in 0..=BLOCK / 2 {
            ids.next();
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if ids.reserved_through() > BLOCK {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no new block");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        cancel.cancel();
        task.await.unwrap();
        let next = RunIds::reserve(&store, 0).await.unwrap();
        assert!(next.next() > BLOCK + BLOCK / 2);
    }
}
