//! A run's output as kept in the history: the last `output_limit` bytes of a stream, with a
//! marker saying how much came before; and the output of runs in progress, which the API
//! streams to whoever follows them ([`LiveOutputs`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The last `limit` bytes of a stream, and how many bytes came before them.
#[derive(Debug)]
pub struct Tail {
    limit: usize,
    buf: std::collections::VecDeque<u8>,
    dropped: u64,
}

impl Tail {
    /// A tail keeping at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            buf: std::collections::VecDeque::new(),
            dropped: 0,
        }
    }

    /// Appends bytes, dropping the oldest past the limit.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes);
        let excess = self.buf.len().saturating_sub(self.limit);
        if excess > 0 {
            self.buf.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    /// The bytes of the stream from offset `from` that are still kept, and the offset after
    /// them (bytes cut from the start are skipped).
    pub fn since(&self, from: u64) -> (Vec<u8>, u64) {
        let end = self.dropped + self.buf.len() as u64;
        let skip = usize::try_from(from.saturating_sub(self.dropped)).unwrap_or(usize::MAX);
        (self.buf.iter().skip(skip).copied().collect(), end)
    }

    /// The kept text (lossy UTF-8), with a marker when the start was cut; `None` when empty.
    pub fn finish(self) -> Option<String> {
        self.text()
    }

    /// The kept text so far (see [`Tail::finish`]).
    pub fn text(&self) -> Option<String> {
        if self.buf.is_empty() {
            return None;
        }
        let (a, b) = self.buf.as_slices();
        let mut bytes = Vec::with_capacity(a.len() + b.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        let text = String::from_utf8_lossy(&bytes);
        Some(if self.dropped > 0 {
            format!("[... {} earlier bytes not kept ...]\n{text}", self.dropped)
        } else {
            text.into_owned()
        })
    }
}

/// The output of one run in progress: its tail, and a signal each time it grows or ends.
#[derive(Debug)]
pub struct LiveRun {
    tail: Mutex<Tail>,
    /// Bytes seen so far, and whether the run's output ended.
    progress: watch::Sender<(u64, bool)>,
}

impl LiveRun {
    /// Appends bytes (the run's processes wrote them).
    pub fn push(&self, bytes: &[u8]) {
        if let Ok(mut t) = self.tail.lock() {
            t.push(bytes);
        }
        self.progress.send_modify(|(n, _)| *n += bytes.len() as u64);
    }

    /// What came from offset `from` on (see [`Tail::since`]).
    pub fn since(&self, from: u64) -> (Vec<u8>, u64) {
        self.tail
            .lock()
            .map_or_else(|_| (Vec::new(), from), |t| t.since(from))
    }

    /// Signals growth and the end: `(bytes so far, ended)`.
    pub fn watch(&self) -> watch::Receiver<(u64, bool)> {
        self.progress.subscribe()
    }

    /// The output ended: the kept tail, for the history (followers still read what they
    /// have not yet sent).
    pub fn finish(&self) -> Option<String> {
        self.progress.send_modify(|(_, ended)| *ended = true);
        self.tail.lock().ok().and_then(|t| t.text())
    }
}

/// The output of every run in progress, by run id.
#[derive(Debug, Clone, Default)]
pub struct LiveOutputs(Arc<Mutex<HashMap<i64, Arc<LiveRun>>>>);

impl LiveOutputs {
    /// Starts keeping run `id`'s output (at most `limit` bytes, the tail); it is followed
    /// until the guard is dropped.
    pub fn open(&self, id: i64, limit: usize) -> LiveGuard {
        let (progress, _) = watch::channel((0, false));
        let run = Arc::new(LiveRun {
            tail: Mutex::new(Tail::new(limit)),
            progress,
        });
        if let Ok(mut m) = self.0.lock() {
            m.insert(id, Arc::clone(&run));
        }
        LiveGuard {
            outputs: self.clone(),
            id,
            run,
        }
    }

    /// Run `id`'s output, while the run is in progress.
    pub fn get(&self, id: i64) -> Option<Arc<LiveRun>> {
        self.0.lock().ok().and_then(|m| m.get(&id).cloned())
    }
}

/// A run's live output, dropped from [`LiveOutputs`] with the guard.
#[derive(Debug)]
pub struct LiveGuard {
    outputs: LiveOutputs,
    id: i64,
    run: Arc<LiveRun>,
}

impl std::ops::Deref for LiveGuard {
    type Target = LiveRun;
    fn deref(&self) -> &LiveRun {
        &self.run
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.run.progress.send_modify(|(_, ended)| *ended = true);
        if let Ok(mut m) = self.outputs.0.lock() {
            m.remove(&self.id);
            if m.is_empty() {
                // A burst's thousands of runs leave no table behind.
                m.shrink_to(64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end() {
        let mut t = Tail::new(5);
        t.push(b"hello ");
        t.push(b"world");
        assert_eq!(
            t.finish().unwrap(),
            "[... 6 earlier bytes not kept ...]\nworld"
        );
        assert_eq!(Tail::new(5).finish(), None);
    }

    #[test]
    fn since_skips_what_was_cut() {
        let mut t = Tail::new(5);
        t.push(b"hello ");
        assert_eq!(t.since(0), (b"ello ".to_vec(), 6));
        t.push(b"wo");
        assert_eq!(t.since(6), (b"wo".to_vec(), 8));
        assert_eq!(t.since(8), (Vec::new(), 8));
    }
}
