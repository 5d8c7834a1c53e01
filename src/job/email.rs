//! The `email` kind: a message rendered from templates with the run's context, with optional
//! HTML alternative and attachments (paths or globs, total size capped), sent through a
//! configured SMTP server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};

use super::{AttemptContext, Outcome, StopSignal, template};

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
    /// Environment values the templates may use (`env.NAME`), read at config load.
    pub env: BTreeMap<String, String>,
}

impl EmailJob {
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

    async fn message(&self, ctx: &AttemptContext<'_>) -> Result<(Message, String), Outcome> {
        let fail = |e: String| Outcome::failed(e, false);
        let values = template::values(ctx, &self.env);
        let subject = template::render(&self.subject, &values)
            .await
            .map_err(|e| fail(format!("subject: {e}")))?;
        let text = template::render(&self.body, &values)
            .await
            .map_err(|e| fail(format!("body: {e}")))?;
        let html = match &self.html {
            Some(h) => Some(
                template::render(h, &values)
                    .await
                    .map_err(|e| fail(format!("html: {e}")))?,
            ),
            None => None,
        };
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
                return Err(fail(format!(
                    "attachments exceed max_attachments_size ({} bytes) at {}",
                    self.max_attachments_size,
                    path.display()
                )));
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
        let host = crate::config::host_name();
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
        let (msg, message_id) = match self.message(ctx).await {
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
            },
            Err(e) => Outcome {
                retryable: e.is_transient(),
                details: Some(serde_json::json!({ "recipients": recipients })),
                ..Outcome::failed(e.to_string(), true)
            },
        }
    }
}
