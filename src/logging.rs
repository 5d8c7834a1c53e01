//! Log output through tracing-subscriber: plain lines or JSON on stderr; under journald
//! (`JOURNAL_STREAM` set, plain format) straight to the journal with each event's fields as
//! journal fields (`JOB=`, `RUN_ID=`, `STATUS=`: `journalctl -u hourglass JOB=backup`). The
//! level comes from `RUST_LOG`, else from the config; whatever it says, the libraries whose
//! debug output carries credentials or describes the daemon's own log writes are held at
//! [`LIBRARY_CAPS`], and every line written to stderr has the secrets read so far (and their
//! base64) blanked out.

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
