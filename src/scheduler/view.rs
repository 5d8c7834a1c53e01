//! What the API and the dashboard see of each job in the timers ([`JobView`]): its
//! definition, next occurrence, pause, active run and queue.

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
