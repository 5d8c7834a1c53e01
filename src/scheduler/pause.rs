//! Pausing and resuming jobs in the timers: a paused job's next occurrence moves past its
//! pause, and a resumed job goes on from now.

use chrono::{DateTime, Utc};

use super::{Scheduler, Timers};
use crate::store::Pause;

impl Timers {
    /// Reschedules `job` after `change` (its pause or its cursor moved); the heap gets its new
    /// next occurrence.
    fn rewake(&mut self, job: &str, now: DateTime<Utc>, resumed: bool) {
        let Some(entry) = self.jobs.get_mut(job) else {
            return;
        };
        if resumed {
            // What passed under the pause is not run: the job goes on from now.
            entry.last = entry.last.max(now);
        }
        let old = entry.next;
        entry.reschedule(self.paused.get(job));
        if entry.next != old {
            if old.is_some() {
                self.stale += 1;
            }
            self.heap.extend(entry.wake());
        }
    }
}

impl Scheduler {
    /// Pauses a job (in the timers only: the caller keeps it in the history database).
    pub fn pause(&self, pause: Pause) {
        let now = self.ctx.clock().now();
        let mut t = self.shared.lock();
        let job = pause.job.clone();
        t.paused.insert(job.clone(), pause);
        t.rewake(&job, now, false);
        drop(t);
        self.shared.changed.notify_one();
    }

    /// Resumes a job: it goes on from now; what passed under the pause does not run.
    pub fn resume(&self, job: &str) {
        let now = self.ctx.clock().now();
        let mut t = self.shared.lock();
        if t.paused.remove(job).is_some() {
            t.rewake(job, now, true);
        }
        drop(t);
        self.shared.changed.notify_one();
    }

    /// Makes the pauses equal to `pauses` (at start-up, and on a shared database as other
    /// nodes pause and resume).
    pub fn set_pauses(&self, pauses: Vec<Pause>) {
        let now = self.ctx.clock().now();
        let mut t = self.shared.lock();
        let gone: Vec<String> = t
            .paused
            .keys()
            .filter(|job| !pauses.iter().any(|p| &p.job == *job))
            .cloned()
            .collect();
        for job in gone {
            t.paused.remove(&job);
            t.rewake(&job, now, true);
        }
        for pause in pauses {
            if t.paused.get(&pause.job) != Some(&pause) {
                let job = pause.job.clone();
                t.paused.insert(job.clone(), pause);
                t.rewake(&job, now, false);
            }
        }
        drop(t);
        self.shared.changed.notify_one();
    }
}
