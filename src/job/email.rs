//! The `email` kind: a message rendered from templates with the run's context, with optional
//! HTML alternative and attachments (paths or globs, total size capped), sent through a
//! configured SMTP server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};

use super::template::template;
use super::{AttemptContext, Outcome, StopSignal, template};
use crate::problem::{Located, mailbox, mailboxes};
use crate::secret::{Secret, SecretSource};
use crate::smtp::{SmtpServer, smtp_name};
use serde::Deserialize;
use std::path::Path;

/// A validated email job.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailJob {
    /// SMTP server name.
    pub smtp: String,
    /// Sender.
    pub from: Mailbox,
    /// Recipients.
    pub to: Vec<Mailbox>,
    /// Copy recipients.
    pub cc: Vec<Mailbox>,
    /// Hidden recipients.
    pub bcc: Vec<Mailbox>,
    /// Reply address.
    pub reply_to: Option<Mailbox>,
    /// Subject template.
    pub subject: String,
    /// Plain-text body template.
    pub body: String,
    /// HTML body template (sent as an alternative).
    pub html: Option<String>,
    /// Attachment paths or globs.
    pub attachments: Vec<String>,
    /// Cap on the attachments' total size.
    pub max_attachments_size: u64,
    /// Environment values the templates may use (`env.NAME`), read at config load (like
    /// secrets, from the daemon's environment only, and never shown).
    pub env: BTreeMap<String, Secret>,
}

impl EmailJob {
    /// Its settings for display (template values by name only).
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let list = |m: &[Mailbox]| {
            m.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = vec![
            ("SMTP server", self.smtp.clone()),
            ("from", self.from.to_string()),
            ("to", list(&self.to)),
            ("subject", self.subject.clone()),
        ];
        if !self.cc.is_empty() {
            out.push(("cc", list(&self.cc)));
        }
        if !self.bcc.is_empty() {
            out.push(("bcc", list(&self.bcc)));
        }
        if !self.attachments.is_empty() {
            out.push(("attachments", self.attachments.join(", ")));
        }
        if !self.env.is_empty() {
            let names: Vec<&str> = self.env.keys().map(String::as_str).collect();
            out.push(("template values (names)", names.join(", ")));
        }
        out
    }

    /// Files the attachment patterns match now, sorted, each once.
    fn attachment_files(&self) -> Result<Vec<PathBuf>, String> {
        let mut files = Vec::new();
        for pattern in &self.attachments {
            let matches =
                glob::glob(pattern).map_err(|e| format!("attachment {pattern:?}: {e}"))?;
            let before = files.len();
            for m in matches {
                let p = m.map_err(|e| format!("attachment {pattern:?}: {e}"))?;
                if p.is_file() {
                    files.push(p);
                }
            }
            if files.len() == before {
                return Err(format!("attachment {pattern:?} matches no file"));
            }
        }
        files.sort();
        files.dedup();
        Ok(files)
    }

    /// The attachments, read (at most `max_attachments_size` bytes in all).
    async fn attachments(&self) -> Result<Vec<SinglePart>, Outcome> {
        let mut attachments = Vec::new();
        let mut total: u64 = 0;
        for path in self
            .attachment_files()
            .map_err(|e| Outcome::failed(e, true))?
        {
            let bytes = tokio::fs::read(&path).await.map_err(|e| {
                Outcome::failed(format!("attachment {}: {e}", path.display()), true)
            })?;
            total += bytes.len() as u64;
            if total > self.max_attachments_size {
                return Err(Outcome::failed(
                    format!(
                        "attachments exceed max_attachments_size ({} bytes) at {}",
                        self.max_attachments_size,
                        path.display()
                    ),
                    false,
                ));
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            attachments.push(Attachment::new(name).body(
                bytes,
                ContentType::parse("application/octet-stream").unwrap_or(ContentType::TEXT_PLAIN),
            ));
        }
        Ok(attachments)
    }

    async fn message(
        &self,
        ctx: &AttemptContext<'_>,
        stop: &StopSignal,
    ) -> Result<(Message, String), Outcome> {
        let fail = |e: String| Outcome::failed(e, false);
        let values = template::values(ctx, &self.env);
        let subject = template::render(&self.subject, &values, stop)
            .await
            .map_err(|e| fail(format!("subject: {e}")))?;
        let text = template::render(&self.body, &values, stop)
            .await
            .map_err(|e| fail(format!("body: {e}")))?;
        let html = match &self.html {
            Some(h) => Some(
                template::render(h, &values, stop)
                    .await
                    .map_err(|e| fail(format!("html: {e}")))?,
            ),
            None => None,
        };
        let attachments = self.attachments().await?;
        let host = super::template::host_name();
        let message_id = format!(
            "<hourglass.{}.{}.{:016x}@{host}>",
            ctx.job.name,
            ctx.run_id,
            rand::random::<u64>()
        );
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(message_id.clone()))
            .user_agent("hourglass".into());
        for m in &self.to {
            b = b.to(m.clone());
        }
        for m in &self.cc {
            b = b.cc(m.clone());
        }
        for m in &self.bcc {
            b = b.bcc(m.clone());
        }
        if let Some(r) = &self.reply_to {
            b = b.reply_to(r.clone());
        }
        let body = match html {
            Some(h) => MultiPart::alternative_plain_html(text, h),
            None => MultiPart::mixed().singlepart(SinglePart::plain(text)),
        };
        let body = if attachments.is_empty() {
            body
        } else {
            let mut mixed = MultiPart::mixed().multipart(body);
            for a in attachments {
                mixed = mixed.singlepart(a);
            }
            mixed
        };
        let msg = b
            .multipart(body)
            .map_err(|e| fail(format!("building the message: {e}")))?;
        Ok((msg, message_id))
    }

    /// Sends the message once; see [`super::JobKind::execute`].
    pub async fn execute(&self, ctx: &AttemptContext<'_>, stop: &StopSignal) -> Outcome {
        ctx.started.mark();
        // Let the other firings due now start before this one's network work (connect, TLS)
        // takes the thread: in a burst, every due job is dispatched first.
        tokio::task::yield_now().await;
        let (msg, message_id) = match self.message(ctx, stop).await {
            Ok(m) => m,
            Err(o) => return o,
        };
        let recipients = self.to.len() + self.cc.len() + self.bcc.len();
        let sent = tokio::select! {
            r = ctx.services.mailers.send(&self.smtp, msg) => r,
            () = stop.soft.cancelled() => return Outcome::failed("sending stopped", true),
        };
        match sent {
            Ok(()) => Outcome {
                success: true,
                exit_code: None,
                error: None,
                output: None,
                retryable: false,
                details: Some(serde_json::json!({
                    "message_id": message_id,
                    "recipients": recipients,
                })),
                usage: None,
            },
            Err(e) => Outcome {
                retryable: e.is_transient(),
                details: Some(serde_json::json!({ "recipients": recipients })),
                ..Outcome::failed(e.to_string(), true)
            },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEmail {
    pub(crate) smtp: Option<String>,
    pub(crate) from: String,
    pub(crate) to: Vec<String>,
    pub(crate) cc: Option<Vec<String>>,
    pub(crate) bcc: Option<Vec<String>>,
    pub(crate) reply_to: Option<String>,
    pub(crate) subject: String,
    pub(crate) body: Option<String>,
    pub(crate) body_file: Option<String>,
    pub(crate) html: Option<String>,
    pub(crate) html_file: Option<String>,
    pub(crate) attachments: Option<Vec<String>>,
    pub(crate) max_attachments_size: Option<String>,
    pub(crate) env: Option<Vec<String>>,
}

pub(crate) fn from_raw(
    r: RawEmail,
    jobs_dir: &std::path::Path,
    servers: &BTreeMap<String, SmtpServer>,
    at: &mut Located<'_>,
) -> Option<EmailJob> {
    let base = jobs_dir.to_path_buf();
    let smtp = smtp_name(r.smtp.as_deref(), "email.smtp", servers, at);
    let from = mailbox(&r.from, "email.from", at);
    let to = mailboxes(&r.to, "email.to", at);
    if r.to.is_empty() {
        at.push(Some("email.to"), "needs at least one recipient");
    }
    let cc = mailboxes(r.cc.as_deref().unwrap_or_default(), "email.cc", at);
    let bcc = mailboxes(r.bcc.as_deref().unwrap_or_default(), "email.bcc", at);
    let reply_to = r
        .reply_to
        .as_deref()
        .and_then(|v| mailbox(v, "email.reply_to", at));
    let subject = template(Some(r.subject), None, "email.subject", &base, at);
    let body = template(r.body, r.body_file, "email.body", &base, at);
    if body.is_none()
        && !at.problems.iter().any(|p| {
            p.field
                .as_deref()
                .is_some_and(|f| f.starts_with("email.body"))
        })
    {
        at.push(Some("email.body"), "set `body` or `body_file`");
    }
    let html = template(r.html, r.html_file, "email.html", &base, at);
    let mut env = BTreeMap::new();
    for var in r.env.unwrap_or_default() {
        let value = at.reference("email.env", SecretSource::Env(var.clone()));
        env.insert(var, value);
    }
    let attachments: Vec<String> = r
        .attachments
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            let p = Path::new(&a);
            if p.is_absolute() {
                a
            } else {
                base.join(p).to_string_lossy().into_owned()
            }
        })
        .collect();
    for a in &attachments {
        if let Err(e) = glob::Pattern::new(a) {
            at.push(Some("email.attachments"), format!("{a:?}: {e}"));
        }
    }
    let max_attachments_size = at.size(
        "email.max_attachments_size",
        r.max_attachments_size.as_deref(),
        25 << 20,
    ) as u64;
    Some(EmailJob {
        smtp: smtp?,
        from: from?,
        to,
        cc,
        bcc,
        reply_to,
        subject: subject?,
        body: body?,
        html,
        attachments,
        max_attachments_size,
        env,
    })
}
