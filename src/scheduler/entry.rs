//! One job in the timers: its definition, where its schedule stands, what it handled ahead
//! of a backward clock step, and whether a pause holds it (a paused job's occurrences pass
//! without running and without rows; it goes on from its `until` or from a resume).

use std::cmp::{Ordering, Reverse};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::plan::apply_plan;
use crate::alert::AlertPolicy;
use crate::due::plan;
use crate::job::JobSpec;
use crate::runner::{Context, JobSlot};
use crate::store::Pause;

/// One scheduled job.
pub(super) struct Entry {
    pub(super) spec: Arc<JobSpec>,
    /// Who runs and who waits; made at the first firing, kept across reloads.
    pub(super) slot: Option<Arc<JobSlot>>,
    /// The occurrence fired last (or the instant the job was scheduled from).
    pub(super) last: DateTime<Utc>,
    /// The next occurrence; `None` when there is none (a one-shot that ran).
    pub(super) next: Option<DateTime<Utc>>,
    /// Who hears about its failures.
    pub(super) alert: Option<Arc<AlertPolicy>>,
    /// Where the stretch of occurrences this timer handled began: `(since, last]` were run or
    /// recorded.
    pub(super) since: DateTime<Utc>,
    /// Stretches `(from, to]` already handled, ahead of the clock after it stepped back: their
    /// occurrences are not run again.
    pub(super) done: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Entry {
    pub(super) fn slot(&mut self) -> Arc<JobSlot> {
        let (spec, alert) = (&self.spec, &self.alert);
        Arc::clone(self.slot.get_or_insert_with(|| {
            let slot = Arc::new(JobSlot::default());
            slot.set_spec(spec);
            slot.set_alert_policy(alert.clone());
            slot
        }))
    }

    /// The first occurrence after `t` that was not handled already.
    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut n = self.spec.next_fire_after(t)?;
        for &(from, to) in &self.done {
            if n > from && n <= to {
                n = self.spec.next_fire_after(to)?;
            }
        }
        Some(n)
    }

    /// What this timer handled ahead of `now` (after the clock stepped back), for the timer
    /// that replaces it at a reload.
    pub(super) fn done_ahead(&self, now: DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut done = self.done.clone();
        if self.last > now {
            done.push((self.since.max(now), self.last));
        }
        done.retain(|(_, to)| *to > now);
        done.sort();
        done
    }

    /// Handles every occurrence in `(last, now]` that was not handled already; the cursor
    /// jumps over each stretch handled before the clock stepped back. Under a pause that
    /// holds at `now` nothing is handled (the occurrences pass); after one that ended, the
    /// occurrences before its end pass.
    pub(super) fn due(&mut self, ctx: &Arc<Context>, now: DateTime<Utc>, pause: Option<&Pause>) {
        if let Some(p) = pause {
            if p.holds_at(now) {
                self.last = self.last.max(now);
                return;
            }
            if let Some(until) = p.until {
                self.last = self.last.max(until);
            }
        }
        loop {
            let hole = self.done.first().copied().filter(|(from, _)| *from < now);
            let upto = hole.map_or(now, |(from, _)| from);
            if upto > self.last {
                let p = plan(&self.spec, self.last, upto, now);
                if let Some(newest) = p.newest {
                    let slot = self.slot();
                    apply_plan(ctx, &slot, &self.spec, p);
                    self.last = newest;
                }
            }
            match hole {
                Some((_, to)) => {
                    self.last = self.last.max(to);
                    self.done.remove(0);
                }
                None => return,
            }
        }
    }

    /// The clock stepped back to `now`, before this job's last occurrence: what was handled
    /// ahead of `now` is kept aside (not run again), or, after a step longer than
    /// [`STEP_BACK_BOUND`], forgotten.
    pub(super) fn step_back(&mut self, now: DateTime<Utc>, rebuild: bool, pause: Option<&Pause>) {
        self.done = if rebuild {
            Vec::new()
        } else {
            self.done_ahead(now)
        };
        self.since = now;
        self.last = now;
        self.reschedule(pause);
    }

    /// Sets `next`: the first occurrence after `last` not handled already; none when the job
    /// is disabled, or paused with no end; the first after the end of its pause otherwise.
    pub(super) fn reschedule(&mut self, pause: Option<&Pause>) {
        self.next = match pause.map(|p| p.until) {
            _ if !self.spec.enabled => None,
            Some(None) => None,
            Some(Some(until)) if until > self.last => self.next_after(until),
            _ => self.next_after(self.last),
        };
    }

    /// The heap entry of its next occurrence, if it has one.
    pub(super) fn wake(&self) -> Option<Reverse<Wake>> {
        self.next.map(|at| {
            Reverse(Wake {
                at,
                spec: Arc::clone(&self.spec),
            })
        })
    }
}

/// A heap entry: `spec` is due at `at`. Stale once the job changed (another `spec`) or moved on.
pub(super) struct Wake {
    pub(super) at: DateTime<Utc>,
    pub(super) spec: Arc<JobSpec>,
}

impl PartialEq for Wake {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Wake {}
impl PartialOrd for Wake {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Wake {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at.cmp(&other.at)
    }
}
