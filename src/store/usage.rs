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

impl Usage {
    /// CPU time in words: "1.93 s (user 1.80 s, system 0.13 s)".
    pub fn cpu_in_words(&self) -> String {
        format!(
            "{} (user {}, system {})",
            cpu_in_words(self.cpu_us()),
            cpu_in_words(self.cpu_user_us),
            cpu_in_words(self.cpu_system_us)
        )
    }

    /// The peak in words: "210 MiB", or why there is none.
    pub fn peak_in_words(&self) -> String {
        self.peak_words()
            .unwrap_or_else(|| "not measured (below the daemon's own)".to_string())
    }

    /// The peak in words ("210 MiB"), when it was measured.
    pub fn peak_words(&self) -> Option<String> {
        self.peak_rss_bytes
            .map(|p| bytes_in_words(u64::try_from(p).unwrap_or(0)))
    }
}

/// CPU time (microseconds) as a person says it: "12 ms", "1.93 s", "2 min 5 s".
pub fn cpu_in_words(us: i64) -> String {
    match us {
        us if us < 1_000 => format!("{us} µs"),
        us if us < 1_000_000 => format!("{} ms", us / 1_000),
        us if us < 60_000_000 => format!("{:.2} s", us as f64 / 1e6),
        us => format!(
            "{} min {} s",
            us / 60_000_000,
            (us % 60_000_000) / 1_000_000
        ),
    }
}

/// Bytes as a person says them: "512 MiB", "3.1 GiB".
pub fn bytes_in_words(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_say_them() {
        assert_eq!(bytes_in_words(512 << 20), "512 MiB");
        assert_eq!(bytes_in_words(3_328_599_654), "3.1 GiB");
        assert_eq!(bytes_in_words(100), "100 bytes");
        assert_eq!(cpu_in_words(999), "999 µs");
        assert_eq!(cpu_in_words(12_345), "12 ms");
        assert_eq!(cpu_in_words(1_934_000), "1.93 s");
        assert_eq!(cpu_in_words(125_000_000), "2 min 5 s");
    }

    #[test]
    fn processes_add_up_and_the_peak_is_the_largest() {
        let mut a = Usage {
            cpu_user_us: 1,
            peak_rss_bytes: None,
            blocks_read: 2,
            ..Usage::default()
        };
        a.add(&Usage {
            cpu_user_us: 10,
            peak_rss_bytes: Some(5),
            blocks_read: 3,
            ..Usage::default()
        });
        assert_eq!(
            (a.cpu_user_us, a.peak_rss_bytes, a.blocks_read),
            (11, Some(5), 5)
        );
        a.add(&Usage {
            peak_rss_bytes: Some(4),
            ..Usage::default()
        });
        assert_eq!(a.peak_rss_bytes, Some(5));
    }
}
