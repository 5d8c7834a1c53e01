//! Alerts after a firing's last attempt (a job's `notify` settings): on `failure`, on
//! `recovery` (the first success after failures) and optionally on `success`, by email and/or
//! webhook. At most one failure alert per job per `min_interval`. An alert that cannot be sent
//! is logged and recorded and never changes the run's status. Knows jobs only by name.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::Mailbox;
use serde::Serialize;
use tokio::time::Instant;

use crate::history::recorder::Recorder;
use crate::http_client::{HttpClients, chain, redacted};
use crate::problem::{Located, RawSecret, headers, mailbox, mailboxes, url};
use crate::secret::Secret;
use crate::smtp::Mailers;
use crate::smtp::{SmtpServer, smtp_name};
use crate::store::{NotificationRecord, Record, RunStatus};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Who hears about each job's failures: job name → its alert policy; jobs without one are
/// absent.
pub type AlertPolicies = std::collections::BTreeMap<String, std::sync::Arc<AlertPolicy>>;

/// What happened to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The firing failed (failed or timed out, after its retries).
    Failure,
    /// The first success after a failure.
    Recovery,
    /// Any other success.
    Success,
    /// No success within `alert_if_no_success_within`.
    Stale,
    /// The first success after a `stale` notice.
    Recovered,
}

impl Event {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Failure => "failure",
            Event::Recovery => "recovery",
            Event::Success => "success",
            Event::Stale => "stale",
            Event::Recovered => "recovered",
        }
    }
}

/// Email channel.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailChannel {
    /// SMTP server name.
    pub smtp: String,
    /// Sender.
    pub from: Mailbox,
    /// Recipients.
    pub to: Vec<Mailbox>,
}

/// Webhook channel: an HTTP POST of a [`Notice`] as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookChannel {
    /// Where to POST.
    pub url: reqwest::Url,
    /// Plain headers.
    pub headers: Vec<(String, String)>,
    /// Secret headers.
    pub secret_headers: Vec<(String, Secret)>,
    /// Limit on the request.
    pub timeout: Duration,
}

/// A job's notification policy (its own `[jobs.x.notify]`, else the main file's `[notify]`).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertPolicy {
    /// Events that notify.
    pub on: Vec<Event>,
    /// Email, if configured.
    pub email: Option<EmailChannel>,
    /// Webhook, if configured.
    pub webhook: Option<WebhookChannel>,
    /// At most one failure notice per this interval.
    pub min_interval: Duration,
    /// A `stale` notice when the job has had no success for this long
    /// (`alert_if_no_success_within`), and a `recovered` one at its next success.
    pub stale_after: Option<Duration>,
}

/// Per-job memory between firings (lives in the job's slot, across reloads).
#[derive(Debug, Default)]
pub struct AlertState {
    inner: Mutex<StateInner>,
}

#[derive(Debug, Default)]
struct StateInner {
    last_ok: Option<bool>,
    last_failure_notice: Option<Instant>,
}

impl AlertState {
    /// Whether it holds nothing a fresh state would not: no failure waiting for its recovery
    /// notice and no failure notice limiting the next.
    pub fn remembers_nothing(&self) -> bool {
        self.inner
            .lock()
            .is_ok_and(|s| s.last_ok != Some(false) && s.last_failure_notice.is_none())
    }
}

/// The document a webhook receives (and the facts an email carries).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Notice {
    /// `failure`, `recovery` or `success`.
    pub event: Event,
    /// Job name.
    pub job: String,
    /// Run id of the last attempt.
    pub run_id: i64,
    /// Intended time (UTC, RFC 3339).
    pub scheduled_for: String,
    /// Final status.
    pub status: String,
    /// Attempts made.
    pub attempt: u32,
    /// Error of the last attempt.
    pub error: Option<String>,
    /// Tail of the output (at most 2 KiB).
    pub output_tail: Option<String>,
    /// Node that ran it.
    pub node: String,
    /// How to see the whole run.
    pub hint: String,
}

/// The end of a firing, as the notifier needs it.
#[derive(Debug, Clone)]
pub struct FiringEnd {
    /// Run id of the last attempt.
    pub run_id: i64,
    /// Intended time.
    pub scheduled_for: DateTime<Utc>,
    /// Final status.
    pub status: RunStatus,
    /// Attempts made.
    pub attempt: u32,
    /// Error of the last attempt.
    pub error: Option<String>,
    /// Output of the last attempt.
    pub output: Option<String>,
}

/// What a stale notice tells: the job's last success and run, and why it is stale.
#[derive(Debug, Clone, Default)]
pub struct StaleFacts {
    /// When it last succeeded (`scheduled_for` of the notice).
    pub last_success: Option<DateTime<Utc>>,
    /// Its newest run (`run_id` of the notice; 0 when it never ran).
    pub last_run_id: Option<i64>,
    /// Why it is stale (`error` of the notice).
    pub detail: String,
}

/// Sends notifications.
#[derive(Debug, Clone)]
pub struct Alerts {
    mailers: Mailers,
    http: HttpClients,
    recorder: Recorder,
    node: String,
    /// Hears of each success of a job that has a policy (the stale-job watch).
    successes: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

const OUTPUT_TAIL: usize = 2048;

impl Alerts {
    /// A notifier sending through these mailers and clients.
    pub fn new(mailers: Mailers, http: HttpClients, recorder: Recorder, node: String) -> Self {
        Self {
            mailers,
            http,
            recorder,
            node,
            successes: None,
        }
    }

    /// The same notifier, telling `successes` the name of each job that succeeds.
    #[must_use]
    pub fn with_successes(mut self, successes: tokio::sync::mpsc::UnboundedSender<String>) -> Self {
        self.successes = Some(successes);
        self
    }

    /// A `stale` or `recovered` notice for `job` (from the daemon's stale-job watch): the work
    /// that sends it, to be spawned.
    pub fn stale_notice(
        &self,
        job: &str,
        policy: &AlertPolicy,
        event: Event,
        facts: StaleFacts,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let notice = Notice {
            event,
            job: job.to_string(),
            run_id: facts.last_run_id.unwrap_or(0),
            scheduled_for: facts
                .last_success
                .map(crate::store::format_ts)
                .unwrap_or_default(),
            status: if event == Event::Stale {
                "stale"
            } else {
                "succeeded"
            }
            .to_string(),
            attempt: 0,
            error: (event == Event::Stale).then_some(facts.detail),
            output_tail: None,
            node: self.node.clone(),
            hint: format!("hourglass history --job {job}"),
        };
        let policy = policy.clone();
        let this = self.clone();
        async move { this.send(&policy, &notice).await }
    }

    /// Decides whether this firing's end notifies; if so, returns the sending work, to be
    /// spawned by the caller (so that sending never delays the job).
    pub fn after_firing(
        &self,
        job: &str,
        policy: &AlertPolicy,
        state: &AlertState,
        end: &FiringEnd,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        if end.status == RunStatus::Succeeded
            && let Some(tx) = &self.successes
        {
            let _ = tx.send(job.to_string());
        }
        let ok = match end.status {
            RunStatus::Succeeded => true,
            RunStatus::Failed | RunStatus::TimedOut => false,
            // Skipped, stopped by shutdown or replaced: says nothing about the job's health.
            _ => return None,
        };
        let event = {
            let Ok(mut s) = state.inner.lock() else {
                return None;
            };
            let prev = s.last_ok.replace(ok);
            let event = match (ok, prev) {
                (true, Some(false)) => Event::Recovery,
                (true, _) => Event::Success,
                (false, _) => Event::Failure,
            };
            if !policy.on.contains(&event) {
                if event == Event::Recovery {
                    s.last_failure_notice = None;
                }
                return None;
            }
            match event {
                Event::Failure => {
                    if let Some(t) = s.last_failure_notice
                        && t.elapsed() < policy.min_interval
                    {
                        tracing::info!(
                            job,
                            run_id = end.run_id,
                            "failure notice suppressed (min_interval)"
                        );
                        return None;
                    }
                    s.last_failure_notice = Some(Instant::now());
                }
                Event::Recovery => s.last_failure_notice = None,
                Event::Success | Event::Stale | Event::Recovered => {}
            }
            event
        };
        let output_tail = end.output.as_ref().map(|o| {
            let start = o.len().saturating_sub(OUTPUT_TAIL);
            let start = (start..o.len())
                .find(|i| o.is_char_boundary(*i))
                .unwrap_or(o.len());
            o[start..].to_string()
        });
        let notice = Notice {
            event,
            job: job.to_string(),
            run_id: end.run_id,
            scheduled_for: crate::store::format_ts(end.scheduled_for),
            status: end.status.as_str().to_string(),
            attempt: end.attempt,
            error: end.error.clone(),
            output_tail,
            node: self.node.clone(),
            hint: format!("hourglass show {}", end.run_id),
        };
        let policy = policy.clone();
        let this = self.clone();
        Some(async move { this.send(&policy, &notice).await })
    }

    async fn send(&self, policy: &AlertPolicy, notice: &Notice) {
        if let Some(email) = &policy.email {
            let result = self.send_email(email, notice).await;
            self.record(notice, "email", result);
        }
        if let Some(hook) = &policy.webhook {
            let result = self.send_webhook(hook, notice).await;
            self.record(notice, "webhook", result);
        }
    }

    fn record(&self, notice: &Notice, channel: &'static str, result: Result<(), String>) {
        match &result {
            Ok(()) => {
                tracing::info!(job = %notice.job, run_id = notice.run_id, channel, event = notice.event.as_str(), "notification sent")
            }
            Err(e) => {
                tracing::warn!(job = %notice.job, run_id = notice.run_id, channel, event = notice.event.as_str(), error = %e, "notification failed")
            }
        }
        self.recorder
            .record(Record::Notification(NotificationRecord {
                run_id: notice.run_id,
                job: notice.job.clone(),
                event: notice.event.as_str().into(),
                channel: channel.into(),
                sent_at: Utc::now(),
                error: result.err(),
            }));
    }

    async fn send_email(&self, ch: &EmailChannel, n: &Notice) -> Result<(), String> {
        let verb = match n.event {
            Event::Failure => "failed",
            Event::Recovery => "recovered",
            Event::Success => "succeeded",
            Event::Stale => "is stale (no success within its alert_if_no_success_within)",
            Event::Recovered => "succeeded again after being stale",
        };
        let subject = format!("[hourglass] {} {verb} on {}", n.job, n.node);
        let mut body = format!(
            "Job:           {}\nEvent:         {}\nStatus:        {}\nRun:           {} (attempt {})\nScheduled for: {}\nNode:          {}\n",
            n.job,
            n.event.as_str(),
            n.status,
            n.run_id,
            n.attempt,
            n.scheduled_for,
            n.node
        );
        if let Some(e) = &n.error {
            body.push_str(&format!("Error:         {e}\n"));
        }
        if let Some(o) = &n.output_tail {
            body.push_str(&format!("\nOutput (tail):\n{o}\n"));
        }
        body.push_str(&format!("\nSee the whole run: {}\n", n.hint));
        let mut b = Message::builder().from(ch.from.clone()).subject(subject);
        for to in &ch.to {
            b = b.to(to.clone());
        }
        let msg = b
            .body(body)
            .map_err(|e| format!("building the message: {e}"))?;
        self.mailers
            .send(&ch.smtp, msg)
            .await
            .map_err(|e| chain(&e))
    }

    async fn send_webhook(&self, ch: &WebhookChannel, n: &Notice) -> Result<(), String> {
        let mut req = self
            .http
            .get(false)
            .await?
            .post(ch.url.clone())
            .json(n)
            .timeout(ch.timeout);
        for (k, v) in &ch.headers {
            req = req.header(k, v);
        }
        for (k, v) in &ch.secret_headers {
            let mut value = reqwest::header::HeaderValue::from_str(v.expose())
                .map_err(|_| format!("header {k}: invalid value"))?;
            value.set_sensitive(true);
            req = req.header(k, value);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("POST {}: {}", redacted(&ch.url), chain(&e.without_url())))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("POST {}: HTTP status {status}", redacted(&ch.url)))
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotify {
    pub(crate) on: Option<Vec<Event>>,
    pub(crate) min_interval: Option<String>,
    pub(crate) alert_if_no_success_within: Option<String>,
    pub(crate) email: Option<RawNotifyEmail>,
    pub(crate) webhook: Option<RawWebhook>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotifyEmail {
    pub(crate) smtp: Option<String>,
    pub(crate) from: String,
    pub(crate) to: Vec<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub(crate) url: String,
    pub(crate) headers: Option<BTreeMap<String, String>>,
    pub(crate) secret_headers: Option<BTreeMap<String, RawSecret>>,
    pub(crate) timeout: Option<String>,
}

pub(crate) fn notify_policy(
    r: RawNotify,
    field: &str,
    servers: &BTreeMap<String, SmtpServer>,
    at: &mut Located<'_>,
) -> Option<AlertPolicy> {
    let email = r.email.and_then(|e| {
        let smtp = smtp_name(
            e.smtp.as_deref(),
            &format!("{field}.email.smtp"),
            servers,
            at,
        )?;
        let from = mailbox(&e.from, &format!("{field}.email.from"), at)?;
        let to = mailboxes(&e.to, &format!("{field}.email.to"), at);
        if to.is_empty() {
            at.push(
                Some(&format!("{field}.email.to")),
                "needs at least one recipient",
            );
        }
        Some(EmailChannel { smtp, from, to })
    });
    let webhook = r.webhook.and_then(|w| {
        let url = url(&w.url, &format!("{field}.webhook.url"), at)?;
        let (headers, secret_headers) =
            headers(w.headers, w.secret_headers, &format!("{field}.webhook"), at);
        Some(WebhookChannel {
            url,
            headers,
            secret_headers,
            timeout: at.duration(
                &format!("{field}.webhook.timeout"),
                w.timeout.as_deref(),
                Duration::from_secs(10),
            ),
        })
    });
    Some(AlertPolicy {
        on: r
            .on
            .unwrap_or_else(|| vec![Event::Failure, Event::Recovery]),
        email,
        webhook,
        min_interval: at.duration(
            &format!("{field}.min_interval"),
            r.min_interval.as_deref(),
            Duration::from_secs(3600),
        ),
        stale_after: r.alert_if_no_success_within.as_deref().map(|w| {
            at.duration(
                &format!("{field}.alert_if_no_success_within"),
                Some(w),
                Duration::ZERO,
            )
        }),
    })
}
