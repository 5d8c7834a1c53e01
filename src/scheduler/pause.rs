//! Pausing and resuming jobs in the timers, and what the API shows of each job (its
//! definition, next occurrence and pause).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Scheduler, Timers};
use crate::job::JobSpec;
use crate::store::Pause;

/// One job as the timers hold it now.
#[derive(Debug, Clone)]
pub struct JobView {
    /// Its definition.
    pub spec: Arc<JobSpec>,
    /// Its next occurrence that will run (none: disabled, paused without end, or no more).
    pub next: Option<DateTime<Utc>>,
    /// Its pause, when one holds now.
    pub pause: Option<Pause>,
    /// The run holding its turn (a job whose overlap policy is not `allow`).
    pub active_run: Option<i64>,
    /// Firings waiting in its queue.
    pub waiting: usize,
}

impl JobView {
    /// Its next `n` firings that will run, from [`JobView::next`] on.
    pub fn upcoming(&self, n: usize) -> Vec<DateTime<Utc>> {
        let mut times = Vec::new();
        let mut at = self.next;
        while let Some(t) = at.filter(|_| times.len() < n) {
            times.push(t);
            at = self.spec.next_fire_after(t);
        }
        times
    }
}

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

    fn view(&self, name: &str, now: DateTime<Utc>) -> Option<JobView> {
        let entry = self.jobs.get(name)?;
        let slot = entry.slot.as_ref();
        Some(JobView {
            spec: Arc::clone(&entry.spec),
            next: entry.next,
            pause: self.paused.get(name).filter(|p| p.holds_at(now)).cloned(),
            active_run: slot.and_then(|s| s.active_run()),
            waiting: slot.map_or(0, |s| s.waiting()),
        })
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

    /// One job as the timers hold it, if it is here.
    pub fn view(&self, job: &str) -> Option<JobView> {
        let now = self.ctx.clock().now();
        self.shared.lock().view(job, now)
    }

    /// Every job (the disabled ones too), by name.
    pub fn views(&self) -> Vec<JobView> {
        let now = self.ctx.clock().now();
        let t = self.shared.lock();
        let mut names: Vec<&String> = t.jobs.keys().collect();
        names.sort();
        names.into_iter().filter_map(|n| t.view(n, now)).collect()
    }
}
