//! The dead man's switch (`alert_if_no_success_within`): a job that has had no success for
//! that long, for whatever reason (failing, skipped, paused, disabled, never started, the
//! daemon down), gets one `stale` alert through its notify channels, and one `recovered` at
//! its next success. Computed from the history (last success, and since when the job is
//! watched), so it holds across restarts; the task sleeps until the next job could go stale,
//! and wakes early only for a success or a reload.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::alert::{AlertPolicies, AlertPolicy, Alerts, Event, StaleFacts};
use crate::store::{StaleState, Store};

/// How soon a job whose state could not be read is looked at again.
const RETRY_AFTER: TimeDelta = TimeDelta::seconds(60);

/// What the watch works with.
#[derive(Debug)]
pub struct StaleWatch {
    /// The history.
    pub store: Store,
    /// Sends the notices.
    pub alerts: Alerts,
    /// Every job's alert policy (changes at reloads).
    pub policies: watch::Receiver<Arc<AlertPolicies>>,
    /// The name of each job that succeeds.
    pub successes: mpsc::UnboundedReceiver<String>,
    /// Sent notices are spawned here (they finish before the daemon exits).
    pub tracker: tokio_util::task::TaskTracker,
}

/// Watches until `cancel`.
pub async fn stale_loop(mut w: StaleWatch, cancel: CancellationToken) {
    // When each watched job is next looked at, and the policies that deadline was made for.
    let mut due: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut known = Arc::new(AlertPolicies::new());
    let mut reload = true;
    loop {
        if reload {
            reload = false;
            let policies = Arc::clone(&w.policies.borrow_and_update());
            // A job whose policy a reload left alone keeps its deadline; the others are
            // looked at now.
            due = policies
                .iter()
                .filter(|(_, p)| p.stale_after.is_some())
                .map(|(job, p)| {
                    let kept = due.get(job).filter(|_| known.get(job) == Some(p));
                    (job.clone(), kept.copied().unwrap_or_else(Utc::now))
                })
                .collect();
            known = policies;
        }
        let now = Utc::now();
        let ready: Vec<String> = due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(job, _)| job.clone())
            .collect();
        for job in ready {
            let next = w.look_at(&job, now).await;
            due.insert(job, next);
        }
        let sleep = due.values().min().map_or(Duration::MAX, |at| {
            (*at - Utc::now()).to_std().unwrap_or(Duration::ZERO)
        });
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = w.policies.changed() => match changed {
                Ok(()) => reload = true,
                Err(_) => return,
            },
            Some(job) = w.successes.recv() => w.succeeded(&job, &mut due).await,
            () = tokio::time::sleep(sleep), if sleep != Duration::MAX => {}
        }
    }
}

impl StaleWatch {
    fn policy(&self, job: &str) -> Option<(Arc<AlertPolicy>, TimeDelta)> {
        let policy = Arc::clone(self.policies.borrow().get(job)?);
        let after = TimeDelta::from_std(policy.stale_after?).ok()?;
        Some((policy, after))
    }

    /// Sends `stale` if `job` has had no success within its bound; when to look again.
    async fn look_at(&self, job: &str, now: DateTime<Utc>) -> DateTime<Utc> {
        let Some((policy, after)) = self.policy(job) else {
            return DateTime::<Utc>::MAX_UTC;
        };
        let state = match self.store.stale_state(job, now).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(job, error = %e, "cannot read the job's last success; the stale-job check waits a minute");
                return now + RETRY_AFTER;
            }
        };
        // Stale already: looked at again a bound later (another node may have cleared it).
        if state.stale_since.is_some() {
            return now + after;
        }
        let since = state
            .last_success
            .map_or(state.watched_since, |s| s.max(state.watched_since));
        let deadline = since + after;
        if now < deadline {
            return deadline;
        }
        match self.store.mark_stale(job, now).await {
            Ok(true) => self.send(job, &policy, Event::Stale, &state, after),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(job, error = %e, "cannot mark the job stale; retrying in a minute");
                return now + RETRY_AFTER;
            }
        }
        now + after
    }

    /// `job` succeeded: `recovered` if it was stale; it is looked at again a bound from now.
    async fn succeeded(&self, job: &str, due: &mut HashMap<String, DateTime<Utc>>) {
        let Some((policy, after)) = self.policy(job) else {
            return;
        };
        let now = Utc::now();
        due.insert(job.to_string(), now + after);
        match self.store.clear_stale(job).await {
            Ok(true) => {
                let state = StaleState {
                    watched_since: now,
                    stale_since: None,
                    last_success: Some(now),
                    last_run_id: None,
                };
                self.send(job, &policy, Event::Recovered, &state, after);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(job, error = %e, "cannot clear the job's stale mark; it is looked at again in a minute");
                due.insert(job.to_string(), now + RETRY_AFTER);
            }
        }
    }

    fn send(
        &self,
        job: &str,
        policy: &AlertPolicy,
        event: Event,
        state: &StaleState,
        after: TimeDelta,
    ) {
        let within = humantime::format_duration(after.to_std().unwrap_or_default());
        let detail = match state.last_success {
            Some(t) => format!(
                "no success within {within}; last success {}",
                crate::store::format_ts(t)
            ),
            None => format!(
                "no success within {within}; none since it is watched ({})",
                crate::store::format_ts(state.watched_since)
            ),
        };
        match event {
            Event::Stale => tracing::warn!(job, detail, "job is stale: sending its stale alert"),
            _ => tracing::info!(job, "stale job succeeded: sending its recovered alert"),
        }
        let facts = StaleFacts {
            last_success: state.last_success,
            last_run_id: state.last_run_id,
            detail,
        };
        self.tracker
            .spawn(self.alerts.stale_notice(job, policy, event, facts));
    }
}
