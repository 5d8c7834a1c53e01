//! The jobs that run after other jobs, as the timers have them: which children to look at
//! once parents' runs are written (and every child at a start or reload), and the dependent
//! runs a dead daemon claimed but never started.

use std::sync::Arc;

use super::Scheduler;
use crate::job::JobSpec;
use crate::job::after::After;
use crate::runner::Dependent;
use crate::store::ParentRun;

impl Scheduler {
    /// The jobs that run after others and that `which` picks: each with its slot, definition,
    /// and whether it is held back now (disabled, paused).
    fn dependents(&self, which: impl Fn(&JobSpec, &After) -> bool) -> Vec<Dependent> {
        let now = self.ctx.clock().now();
        let mut t = self.shared.lock();
        let paused: Vec<String> = t
            .paused
            .values()
            .filter(|p| p.holds_at(now))
            .map(|p| p.job.clone())
            .collect();
        let mut out = Vec::new();
        for entry in t.jobs.values_mut() {
            let Some(after) = &entry.spec.after else {
                continue;
            };
            if !which(&entry.spec, after) {
                continue;
            }
            let held = !entry.spec.enabled || paused.contains(&entry.spec.name);
            out.push(Dependent {
                slot: entry.slot(),
                spec: Arc::clone(&entry.spec),
                held,
            });
        }
        out
    }

    /// Looks at the parents of `children` (named by another node, which may not run them):
    /// those this node may run; none is named to the other nodes again.
    pub fn look_at(&self, children: &[String]) {
        let named = self.dependents(|spec, _| children.contains(&spec.name));
        crate::runner::consider(&self.ctx, named, false);
    }

    /// Looks at the parents of the jobs that run after any of `ended` (every such job when
    /// `None`), all in one task, and fires those whose condition is met.
    pub fn parents_ended(&self, ended: Option<&[String]>) {
        let children = self.dependents(|_, after| {
            ended.is_none_or(|e| after.parents.iter().any(|p| e.contains(p)))
        });
        crate::runner::consider(&self.ctx, children, true);
    }

    /// Fires run `run_id` of `job`, claimed for its parents' runs `causes` by a daemon that
    /// died before it started; `false` if the job is no longer here or runs after no job.
    pub fn fire_claimed(&self, job: &str, run_id: i64, causes: Vec<ParentRun>) -> bool {
        let Some(child) = self.dependents(|spec, _| spec.name == job).pop() else {
            return false;
        };
        crate::runner::fire_dependent(&self.ctx, &child.slot, &child.spec, causes, run_id);
        true
    }
}
