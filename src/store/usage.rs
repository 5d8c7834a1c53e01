//! What a command run cost (the history's usage columns), as the kernel accounts it.

use serde::Serialize;

/// What a command run's processes cost, by the kernel's own accounting: `wait4`'s `rusage`
/// of the main process (which holds the descendants it waited for) plus the processes the
/// daemon reaped for the run (left in its group, or re-parented to the daemon while it ran).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Usage {
    /// CPU time in user mode, microseconds.
    pub cpu_user_us: i64,
    /// CPU time in the kernel, microseconds.
    pub cpu_system_us: i64,
    /// The largest resident set of any one of its processes, bytes; `None` when no more than
    /// the daemon's own peak when the run started (the kernel counts the memory of the
    /// process that spawns a program in the program's peak, so a smaller one cannot be told).
    pub peak_rss_bytes: Option<i64>,
    /// Blocks (512 bytes) read from storage (not from the page cache).
    pub blocks_read: i64,
    /// Blocks (512 bytes) written to storage.
    pub blocks_written: i64,
    /// Context switches because a process waited (I/O, sleep, a lock).
    pub voluntary_switches: i64,
    /// Context switches because the scheduler took the CPU away (contention, time slice).
    pub involuntary_switches: i64,
}

impl Usage {
    /// User and system CPU time, microseconds.
    pub fn cpu_us(&self) -> i64 {
        self.cpu_user_us.saturating_add(self.cpu_system_us)
    }

    /// Adds another process's usage: times and counts add up, the peak is the larger one.
    pub fn add(&mut self, other: &Usage) {
        self.cpu_user_us = self.cpu_user_us.saturating_add(other.cpu_user_us);
        self.cpu_system_us = self.cpu_system_us.saturating_add(other.cpu_system_us);
        self.peak_rss_bytes = self.peak_rss_bytes.max(other.peak_rss_bytes);
        self.blocks_read = self.blocks_read.saturating_add(other.blocks_read);
        self.blocks_written = self.blocks_written.saturating_add(other.blocks_written);
        self.voluntary_switches = self
            .voluntary_switches
            .saturating_add(other.voluntary_switches);
        self.involuntary_switches = self
            .involuntary_switches
            .saturating_add(other.involuntary_switches);
    }

    /// The columns in their stored order (see `usage_columns!`).
    pub(super) fn columns(&self) -> [Option<i64>; 7] {
        [
            Some(self.cpu_user_us),
            Some(self.cpu_system_us),
            self.peak_rss_bytes,
            Some(self.blocks_read),
            Some(self.blocks_written),
            Some(self.voluntary_switches),
            Some(self.involuntary_switches),
        ]
    }

    /// From the stored columns; `None` when the run has none (CPU time NULL).
    pub(super) fn from_columns(c: [Option<i64>; 7]) -> Option<Self> {
        Some(Usage {
            cpu_user_us: c[0]?,
            cpu_system_us: c[1].unwrap_or(0),
            peak_rss_bytes: c[2],
            blocks_read: c[3].unwrap_or(0),
            blocks_written: c[4].unwrap_or(0),
            voluntary_switches: c[5].unwrap_or(0),
            involuntary_switches: c[6].unwrap_or(0),
        })
    }
}
