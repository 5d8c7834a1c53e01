//! A run's output as kept in the history: the last `output_limit` bytes of a stream, with a
//! marker saying how much came before.

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

    /// The kept text (lossy UTF-8), with a marker when the start was cut; `None` when empty.
    pub fn finish(self) -> Option<String> {
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
}
