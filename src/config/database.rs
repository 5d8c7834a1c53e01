//! The `[database]` section: a SQLite file (the default) or a PostgreSQL URL that several
//! daemons share, with its password reference, TLS options, lease and clock-skew bound.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::problem::{Located, RawSecret, secret};
use crate::store::{Database, PostgresTarget};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDatabase {
    pub(crate) path: Option<String>,
    pub(crate) retention: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) password: Option<RawSecret>,
    pub(crate) tls: Option<String>,
    pub(crate) ca_file: Option<String>,
    pub(crate) lease: Option<String>,
    pub(crate) max_clock_skew: Option<String>,
    pub(crate) fallback_poll: Option<String>,
}

/// How long a node's lease lasts when `database.lease` is not set.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The shortest lease: a node renews it every sixth of it, and must not be declared dead by a
/// slow query.
const MIN_LEASE: Duration = Duration::from_secs(3);
/// `database.fallback_poll` when not set: how long a lost notification (or a pooler that
/// drops them) delays a pause, a manual trigger or a replace request made on another node.
const DEFAULT_FALLBACK_POLL: Duration = Duration::from_secs(30);
/// `database.max_clock_skew` when not set.
const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(1);
/// The `sslmode` values PostgreSQL knows.
const TLS_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// What the `[database]` section says, beside the retention.
pub(crate) struct DatabaseSettings {
    pub(crate) database: Database,
    pub(crate) lease: Duration,
    pub(crate) max_clock_skew: Duration,
    pub(crate) fallback_poll: Duration,
}

/// Validates the section. `default_path` is the SQLite file when `path` is not set; a
/// PostgreSQL node keeps its own files (spill file, instance lock) in its folder.
pub(crate) fn database_settings(
    raw: &RawDatabase,
    resolve: &dyn Fn(&str) -> PathBuf,
    default_path: &Path,
    node: &str,
    at: &mut Located<'_>,
) -> DatabaseSettings {
    let lease = at.duration("database.lease", raw.lease.as_deref(), DEFAULT_LEASE);
    if lease < MIN_LEASE {
        at.push(
            Some("database.lease"),
            format!(
                "{:?} is too short; expected at least \"3s\"",
                raw.lease.as_deref().unwrap_or_default()
            ),
        );
    }
    let max_clock_skew = at.duration(
        "database.max_clock_skew",
        raw.max_clock_skew.as_deref(),
        DEFAULT_MAX_SKEW,
    );
    let fallback_poll = at.duration(
        "database.fallback_poll",
        raw.fallback_poll.as_deref(),
        DEFAULT_FALLBACK_POLL,
    );
    let database = match &raw.url {
        None => {
            for (field, set) in [
                ("database.fallback_poll", raw.fallback_poll.is_some()),
                ("database.password", raw.password.is_some()),
                ("database.tls", raw.tls.is_some()),
                ("database.ca_file", raw.ca_file.is_some()),
            ] {
                if set {
                    at.push(Some(field), "only used with `url` (a PostgreSQL database)");
                }
            }
            let path = raw
                .path
                .as_deref()
                .map_or_else(|| default_path.to_path_buf(), resolve);
            if path.is_dir() {
                at.push(
                    Some("database.path"),
                    format!(
                        "{} is a folder; expected the path of the SQLite file, e.g. \"{}\"",
                        path.display(),
                        path.join("hourglass.db").display()
                    ),
                );
            }
            Database::Sqlite(path)
        }
        Some(url) => Database::Postgres(postgres_target(raw, url, resolve, default_path, node, at)),
    };
    DatabaseSettings {
        database,
        lease,
        max_clock_skew,
        fallback_poll,
    }
}

fn postgres_target(
    raw: &RawDatabase,
    url: &str,
    resolve: &dyn Fn(&str) -> PathBuf,
    default_path: &Path,
    node: &str,
    at: &mut Located<'_>,
) -> PostgresTarget {
    if raw.path.is_some() {
        at.push(
            Some("database.path"),
            "`path` is a SQLite file, `url` a PostgreSQL database: give one of them",
        );
    }
    check_url(url, at);
    // libpq's own variable: like a secret reference's, no job sees it.
    crate::secret::hide_env("PGPASSWORD");
    if let Some(mode) = &raw.tls
        && !TLS_MODES.contains(&mode.as_str())
    {
        at.push(
            Some("database.tls"),
            format!(
                "{mode:?} is not a TLS mode; expected one of {}",
                TLS_MODES.join(", ")
            ),
        );
    }
    let local_name = format!("hourglass-{}", file_safe(node));
    PostgresTarget {
        url: url.to_string(),
        password: raw
            .password
            .as_ref()
            .and_then(|p| secret(p, "database.password", at)),
        tls: raw.tls.clone(),
        ca_file: raw.ca_file.as_deref().map(resolve),
        local: default_path.with_file_name(local_name),
    }
}

/// A PostgreSQL URL, without a password in it.
fn check_url(url: &str, at: &mut Located<'_>) {
    const EXAMPLE: &str = "expected e.g. \"postgres://hourglass@db.example.com/hourglass\"";
    match reqwest::Url::parse(url) {
        Ok(u) if !matches!(u.scheme(), "postgres" | "postgresql") => at.push(
            Some("database.url"),
            format!("{url:?} is not a PostgreSQL URL; {EXAMPLE}"),
        ),
        Ok(u) if u.password().is_some() => at.push(
            Some("database.url"),
            "the URL holds a password, which would be in the config file and in every log that shows the URL; \
             give `password = { env = \"VAR\" }` or `{ file = \"/path\" }`, or use PGPASSWORD or ~/.pgpass",
        ),
        Ok(_) => {}
        Err(e) => at.push(
            Some("database.url"),
            format!("{url:?} is not a URL ({e}); {EXAMPLE}"),
        ),
    }
}

/// `node` as part of a file name.
fn file_safe(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
