//! Log output through tracing-subscriber: plain lines or JSON on stderr; under journald
//! (`JOURNAL_STREAM` set, plain format) straight to the journal with each event's fields as
//! journal fields (`JOB=`, `RUN_ID=`, `STATUS=`: `journalctl -u hourglass JOB=backup`). The
//! level comes from `RUST_LOG`, else from the config.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// Installs the global subscriber; later calls are ignored.
pub fn init(format: LogFormat, level: &str) {
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(level))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
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
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Plain if journald => builder.with_ansi(false).without_time().try_init(),
        LogFormat::Plain => builder.with_ansi(false).try_init(),
    };
}
