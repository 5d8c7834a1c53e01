//! The main file (`hourglass.toml`, through the `config` crate: defaults < file <
//! `HOURGLASS__SECTION__KEY` environment variables) into [`Settings`], section by section so
//! that every section's problems are listed, with the job files' ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use serde::Deserialize;

use super::api::{RawApi, api_settings};
use super::database::{DatabaseSettings, RawDatabase, database_settings};
use super::{LogFormat, Settings};
use crate::alert::{RawNotify, notify_policy};
use crate::job::template::host_name;
use crate::problem::{Findings, Located, MAX_CONCURRENT_RUNS, parse_tz};
use crate::smtp::{RawSmtp, smtp_server};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMain {
    pub(crate) daemon: RawDaemon,
    pub(crate) database: RawDatabase,
    pub(crate) api: RawApi,
    pub(crate) log: RawLog,
    pub(crate) smtp: BTreeMap<String, RawSmtp>,
    pub(crate) notify: Option<RawNotify>,
    pub(crate) groups: BTreeMap<String, super::groups::RawGroup>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDaemon {
    pub(crate) jobs_dir: Option<String>,
    pub(crate) timezone: Option<String>,
    pub(crate) max_concurrent_runs: Option<usize>,
    pub(crate) shutdown_grace: Option<String>,
    pub(crate) node: Option<String>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) output_limit: Option<String>,
    pub(crate) shell: Option<crate::job::shell::RawShell>,
    pub(crate) limits: Option<crate::job::command::limits::RawLimits>,
    pub(crate) nice: Option<i64>,
    pub(crate) io_class: Option<String>,
    pub(crate) io_level: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLog {
    pub(crate) format: Option<LogFormat>,
    pub(crate) level: Option<String>,
}

/// The system's zone: `TZ` (`Area/City`, `:Area/City`, or a path into a zoneinfo folder),
/// else `/etc/localtime`, else UTC. A `TZ` that names no IANA zone is an error (the caller
/// warns and uses `/etc/localtime`).
pub(crate) fn system_tz(tz_var: Option<&str>) -> Result<Tz, String> {
    if let Some(v) = tz_var.map(str::trim).filter(|v| !v.is_empty()) {
        let name = v.strip_prefix(':').unwrap_or(v);
        let name = name.rsplit_once("/zoneinfo/").map_or(name, |(_, n)| n);
        return name.parse::<Tz>().map_err(|_| {
            format!("TZ={v:?} is not an IANA time zone (e.g. \"Europe/Berlin\" or \":Europe/Berlin\"); using /etc/localtime; set daemon.timezone to choose")
        });
    }
    Ok(local_tz())
}

/// The zone of `/etc/localtime`, else UTC.
pub(crate) fn local_tz() -> Tz {
    iana_time_zone::get_timezone()
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(Tz::UTC)
}

/// The limits of command runs unless a job says otherwise (`[daemon] limits`, `nice`,
/// `io_class`, `io_level`).
fn daemon_limits(raw: &mut RawDaemon, at: &mut Located<'_>) -> crate::job::command::Limits {
    let settings = crate::job::command::limits::RawLimitSettings {
        limits: raw.limits.take(),
        nice: raw.nice,
        io_class: raw.io_class.take(),
        io_level: raw.io_level,
    };
    crate::job::command::limits::limits(&settings, "daemon.", at)
}

/// The jobs folder when `daemon.jobs_dir` is not set (beside the main file).
const DEFAULT_JOBS_DIR: &str = "jobs.d";
/// `database.retention` when not set: 90 days.
const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86_400);
/// `daemon.max_concurrent_runs` when not set.
const DEFAULT_MAX_CONCURRENT_RUNS: usize = 256;
/// `daemon.shutdown_grace` when not set.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// `daemon.output_limit` when not set: 64 KiB.
const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;

pub(crate) fn load_settings(
    config_path: &Path,
    base: &Path,
    main_name: &str,
    found: &mut Findings,
) -> Option<Settings> {
    let mut at = found.at(main_name, None);
    let mut raw = raw_main(main_tree(config_path, &mut at)?, &mut at);
    if let Some(level) = raw.log.level.as_deref()
        && let Err(e) = check_log_level(level)
    {
        at.push(Some("log.level"), e);
    }
    let resolve = |p: &str| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { base.join(p) }
    };
    let jobs_dir = resolve(raw.daemon.jobs_dir.as_deref().unwrap_or(DEFAULT_JOBS_DIR));
    let node = raw.daemon.node.clone().unwrap_or_else(host_name);
    let DatabaseSettings {
        database,
        lease,
        max_clock_skew,
        fallback_poll,
    } = database_settings(
        &raw.database,
        &resolve,
        &default_database(base),
        &node,
        &mut at,
    );
    let api = api_settings(&raw.api, &resolve, database.local_path(), &mut at);
    let timezone = daemon_zone(raw.daemon.timezone.as_deref(), &mut at);
    let retention = match raw.database.retention.as_deref() {
        None => Some(DEFAULT_RETENTION),
        Some("forever") => None,
        Some(v) => Some(at.duration("database.retention", Some(v), Duration::ZERO)),
    };
    let max_concurrent_runs = concurrent_runs(&raw.daemon, &mut at);
    let mut settings = Settings {
        config_path: config_path.to_path_buf(),
        jobs_dir,
        database,
        api,
        retention,
        timezone,
        max_concurrent_runs,
        shutdown_grace: at.duration(
            "daemon.shutdown_grace",
            raw.daemon.shutdown_grace.as_deref(),
            DEFAULT_SHUTDOWN_GRACE,
        ),
        node,
        tags: node_tags(raw.daemon.tags.take().unwrap_or_default(), &mut at),
        lease,
        max_clock_skew,
        fallback_poll,
        log_format: raw.log.format.unwrap_or_default(),
        log_level: raw.log.level.unwrap_or_else(|| "info".into()),
        output_limit: at.size(
            "daemon.output_limit",
            raw.daemon.output_limit.as_deref(),
            DEFAULT_OUTPUT_LIMIT,
        ),
        shell: raw
            .daemon
            .shell
            .as_ref()
            .map_or_else(Default::default, |s| {
                crate::job::shell::shell(s, "daemon.shell", &mut at)
            }),
        limits: daemon_limits(&mut raw.daemon, &mut at),
        smtp: BTreeMap::new(),
        notify: None,
        groups: BTreeMap::new(),
    };
    settings.groups = super::groups::groups(raw.groups, &mut at);
    for (name, r) in raw.smtp {
        if let Some(server) = smtp_server(&name, r, base, &mut at) {
            settings.smtp.insert(name, server);
        }
    }
    if let Some(n) = raw.notify {
        settings.notify = notify_policy(n, "notify", &settings.smtp, &mut at).map(Arc::new);
    }
    Some(settings)
}

/// The main file with the `HOURGLASS__` environment over it, as one tree; `None` when there
/// is no main file to read.
fn main_tree(config_path: &Path, at: &mut Located<'_>) -> Option<serde_json::Value> {
    if config_path.is_dir() {
        at.push(
            None,
            "is a folder; expected the main file (e.g. /etc/hourglass/hourglass.toml)",
        );
        return None;
    }
    if !config_path.is_file() {
        let looked = std::path::absolute(config_path).unwrap_or_else(|_| config_path.into());
        at.push(
            None,
            format!(
                "file not found: looked for {} (give another with --config or HOURGLASS_CONFIG; write one, or print the example with `hourglass example-config`)",
                looked.display()
            ),
        );
        return None;
    }
    let built = config::Config::builder()
        .add_source(config::File::from(config_path).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("HOURGLASS")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build();
    Some(match built.and_then(config::Config::try_deserialize) {
        Ok(r) => r,
        Err(e) => {
            // Job files are still checked, against the default settings.
            at.push(None, e.to_string());
            serde_json::Value::Object(serde_json::Map::new())
        }
    })
}

/// `daemon.timezone`, else `TZ`, else /etc/localtime.
fn daemon_zone(name: Option<&str>, at: &mut Located<'_>) -> Tz {
    match name {
        None => system_tz(std::env::var("TZ").ok().as_deref()).unwrap_or_else(|e| {
            at.warn(Some("daemon.timezone"), e);
            local_tz()
        }),
        Some(n) => parse_tz(n).unwrap_or_else(|e| {
            at.push(Some("daemon.timezone"), e);
            Tz::UTC
        }),
    }
}

/// `daemon.tags`: what `run_on` of a job may ask of this node.
fn node_tags(tags: Vec<String>, at: &mut Located<'_>) -> Vec<String> {
    for t in &tags {
        if !super::valid_tag(t) {
            at.push(
                Some("daemon.tags"),
                format!(
                    "{t:?} is not a node tag (letters, digits, '-', '_' and '.', e.g. \"gpu\")"
                ),
            );
        }
    }
    tags
}

/// Where the history is when `database.path` is not set: the same for the daemon and the CLI,
/// whoever runs them and from wherever. A main file under `/etc` is a system install, whose
/// history is in `/var/lib/hourglass` (the unit's `StateDirectory=`); any other main file keeps
/// it beside itself.
pub(crate) fn default_database(main_folder: &Path) -> PathBuf {
    if main_folder.starts_with("/etc") {
        PathBuf::from("/var/lib/hourglass/hourglass.db")
    } else {
        main_folder.join("hourglass.db")
    }
}

/// `daemon.max_concurrent_runs`, checked.
fn concurrent_runs(raw: &RawDaemon, at: &mut Located<'_>) -> usize {
    let n = raw
        .max_concurrent_runs
        .unwrap_or(DEFAULT_MAX_CONCURRENT_RUNS);
    if !(1..=MAX_CONCURRENT_RUNS).contains(&n) {
        at.push(
            Some("daemon.max_concurrent_runs"),
            format!("{n} is out of range; expected 1 to {MAX_CONCURRENT_RUNS}"),
        );
    }
    n
}

/// Checks a `log.level` filter: comma-separated directives, each a level or `target=level`.
pub(crate) fn check_log_level(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let level_ok = |l: &str| LEVELS.contains(&l.to_ascii_lowercase().as_str());
    let target_ok = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-'))
    };
    let ok = !filter.trim().is_empty()
        && filter.split(',').all(|d| match d.trim().split_once('=') {
            Some((target, level)) => target_ok(target) && level_ok(level),
            None => level_ok(d.trim()) || target_ok(d.trim()),
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{filter:?} is not a log filter; expected a level (error, warn, info, debug, trace, off) or directives like \"info,hourglass=debug\""
        ))
    }
}

/// The main file's sections, each read on its own so that a problem in one (reported) leaves
/// the others, and the job files, still checked.
pub(crate) fn raw_main(tree: serde_json::Value, at: &mut Located<'_>) -> RawMain {
    let serde_json::Value::Object(mut top) = tree else {
        at.push(None, "expected tables such as [daemon] and [database]");
        return RawMain::default();
    };
    let mut raw = RawMain {
        daemon: section(&mut top, "daemon", at).unwrap_or_default(),
        database: section(&mut top, "database", at).unwrap_or_default(),
        api: section(&mut top, "api", at).unwrap_or_default(),
        log: section(&mut top, "log", at).unwrap_or_default(),
        smtp: BTreeMap::new(),
        notify: section(&mut top, "notify", at),
        groups: BTreeMap::new(),
    };
    for (table, what) in [("smtp", "[smtp.<name>]"), ("groups", "[groups.<name>]")] {
        named_tables(&mut top, table, what, &mut raw, at);
    }
    for key in top.keys() {
        at.push(
            None,
            format!(
                "unknown table [{key}]; expected [daemon], [database], [api], [log], [smtp.<name>], [notify] or [groups.<name>] (jobs go in the jobs folder)"
            ),
        );
    }
    raw
}

/// Reads the `[table.<name>]` tables (`smtp`, `groups`) into `raw`, each on its own.
fn named_tables(
    top: &mut serde_json::Map<String, serde_json::Value>,
    table: &str,
    what: &str,
    raw: &mut RawMain,
    at: &mut Located<'_>,
) {
    match top.remove(table) {
        None => {}
        Some(serde_json::Value::Object(entries)) => {
            for (name, value) in entries {
                let key = format!("{table}.{name}");
                let mut one = serde_json::Map::new();
                one.insert(key.clone(), value);
                if table == "smtp" {
                    if let Some(server) = section(&mut one, &key, at) {
                        raw.smtp.insert(name, server);
                    }
                } else if let Some(group) = section(&mut one, &key, at) {
                    raw.groups.insert(name, group);
                }
            }
        }
        Some(_) => at.push(Some(table), format!("expected tables {what}")),
    }
}

/// Reads `[key]` of the main file; a problem is reported with the key's path.
pub(crate) fn section<T: serde::de::DeserializeOwned>(
    top: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
    at: &mut Located<'_>,
) -> Option<T> {
    let value = top.remove(key)?;
    match serde_path_to_error::deserialize(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let field = if inner == "." {
                key.to_string()
            } else {
                format!("{key}.{inner}")
            };
            at.push(
                Some(&field),
                crate::config::messages::humanize(e.into_inner().to_string().as_str()),
            );
            None
        }
    }
}
