//! Log output through tracing-subscriber: plain lines or JSON on stderr; under journald
//! (`JOURNAL_STREAM` set, plain format) straight to the journal with each event's fields as
//! journal fields (`JOB=`, `RUN_ID=`, `STATUS=`: `journalctl -u hourglass JOB=backup`). The
//! level comes from `RUST_LOG`, else from the config; whatever it says, the libraries whose
//! debug output carries credentials or describes the daemon's own log writes are held at
//! [`LIBRARY_CAPS`], and every line written to stderr has the secrets read so far (and their
//! base64) blanked out; under journald an event holding one is left out.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// Levels libraries are held at whatever the filter says: the S3 signer prints credentials
/// at debug; the HTTP, TLS and SSH stacks print headers and keys' material at trace; the file
/// watcher and the I/O driver log every event, the daemon's own log writes included (a log
/// in the config folder would feed itself).
pub const LIBRARY_CAPS: &[&str] = &[
    "reqsign=warn",
    "reqsign_core=warn",
    "reqsign_aws_v4=warn",
    "opendal=info",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
    "reqwest=info",
    "rustls=info",
    "openssh=info",
    "openssh_sftp_client=info",
    "lettre=info",
    "notify=warn",
    "inotify=warn",
    "mio=info",
];

/// The filter: `RUST_LOG`, else `level`, then [`LIBRARY_CAPS`].
fn filter(level: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    for cap in LIBRARY_CAPS {
        if let Ok(d) = cap.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// Writes each log line to stderr with the secrets blanked out ([`crate::secret::redact`]).
#[derive(Debug, Clone, Copy)]
struct Redacted;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Redacted {
    type Writer = Redacted;

    fn make_writer(&'a self) -> Self::Writer {
        Redacted
    }
}

impl std::io::Write for Redacted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        match crate::secret::redact(&text) {
            Some(clean) => std::io::stderr().write_all(clean.as_bytes())?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Under journald, where lines are not written through [`Redacted`]: an event whose fields
/// hold a secret read so far is left out whole (its fields are sent to the journal as they
/// are, so it cannot be blanked).
#[derive(Debug, Clone, Copy)]
struct NoSecrets;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for NoSecrets {
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        crate::secret::redact(&fields.0).is_none()
    }
}

/// An event's fields as text.
struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push(' ');
        self.0.push_str(field.name());
        self.0.push('=');
        self.0.push_str(value);
    }
}

/// Installs the global subscriber; later calls are ignored.
pub fn init(format: LogFormat, level: &str) {
    let filter = || filter(level);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    if journald && format == LogFormat::Plain {
        // Fields keep their names, upper-cased (`job` → `JOB=`), without tracing-journald's
        // default `F_` prefix.
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_field_prefix(None)
                .with_syslog_identifier("hourglass".into());
            if tracing_subscriber::registry()
                .with(filter())
                .with(NoSecrets)
                .with(layer)
                .try_init()
                .is_ok()
            {
                return;
            }
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(Redacted)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Plain if journald => builder.with_ansi(false).without_time().try_init(),
        LogFormat::Plain => builder.with_ansi(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Counts the events that reach it.
    struct Count(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn under_journald_an_event_holding_a_secret_is_left_out() {
        let secret = crate::secret::Secret::new("journald-secret-value-42".into());
        let seen = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(NoSecrets)
            .with(Count(Arc::clone(&seen)));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(job = "a", "an ordinary line");
            tracing::debug!(credential = %secret.expose(), "a library's debug line");
            tracing::debug!(header = ?format!("Basic {}", "am91cm5hbGQtc2VjcmV0LXZhbHVlLTQy"), "its base64");
            tracing::info!("a message with journald-secret-value-42 inside");
        });
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_line_written_to_stderr_has_its_secrets_blanked() {
        let _secret = crate::secret::Secret::new("stderr-secret-value-43".into());
        let line = "INFO x token=stderr-secret-value-43 b64=c3RkZXJyLXNlY3JldC12YWx1ZS00Mw==\n";
        let clean = crate::secret::redact(line).unwrap();
        assert_eq!(clean, "INFO x token=[REDACTED] b64=[REDACTED]\n");
        assert!(crate::secret::redact("INFO nothing secret here\n").is_none());
    }
}
