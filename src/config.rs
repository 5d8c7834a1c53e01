//! Loading and validating configuration: the main file (`hourglass.toml`, through the `config`
//! crate: defaults < file < `HOURGLASS__SECTION__KEY` environment variables) and the job files
//! (`jobs.d/*.toml`). Everything is parsed once into typed values; every problem is reported
//! with the file, the job and the field. This is the only module that reads files or the
//! environment for configuration.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use std::sync::Arc;

use lettre::message::Mailbox;

use crate::job::command::{CommandJob, CommandLine, RunAs};
use crate::job::email::EmailJob;
use crate::job::http::HttpJob;
use crate::job::template::check_template;
use crate::job::upload::UploadJob;
use crate::job::{CatchUp, JobKind, JobSpec, Overlap, RetryPolicy};
use crate::notify::{EmailChannel, Event, NotifyPolicy, WebhookChannel};
use crate::schedule::{CronCache, Schedule, jitter_offset};
use crate::secret::Secret;
use crate::smtp::{SmtpServer, SmtpTls};

/// The documented example configuration, printed by `hourglass example-config`.
pub const EXAMPLE_MAIN: &str = include_str!("../config/hourglass.toml");
/// The documented example job file.
pub const EXAMPLE_JOBS: &str = include_str!("../config/jobs.d/examples.toml");

/// Default path of the main file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hourglass/hourglass.toml";

/// A configuration problem, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, as the user would write it (relative to the main file's folder when inside it).
    pub file: String,
    /// The job, when the problem is inside one.
    pub job: Option<String>,
    /// The field, when known.
    pub field: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
    /// A warning (the config is accepted) rather than an error.
    pub warning: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.warning {
            write!(f, "warning: ")?;
        }
        write!(f, "{}", self.file)?;
        if let Some(job) = &self.job {
            write!(f, ": job {job:?}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// One or more problems; all are reported at once.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The individual problems.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
        }
    }
}

/// Output format of the daemon's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One line per event, suited to journald.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Validated daemon settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The main file.
    pub config_path: PathBuf,
    /// Folder of job files.
    pub jobs_dir: PathBuf,
    /// SQLite history file.
    pub database: PathBuf,
    /// Runs older than this are deleted by the daemon (hourly); `None` keeps everything.
    pub retention: Option<Duration>,
    /// Default zone of jobs without `timezone`.
    pub timezone: Tz,
    /// Global limit on runs in progress.
    pub max_concurrent_runs: usize,
    /// How long SIGTERM waits for runs before stopping them.
    pub shutdown_grace: Duration,
    /// Name recorded in each run row.
    pub node: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`RUST_LOG` wins when set).
    pub log_level: String,
    /// Output kept per run unless a job says otherwise.
    pub output_limit: usize,
    /// SMTP servers by name.
    pub smtp: BTreeMap<String, SmtpServer>,
    /// Default notification policy of jobs without their own.
    pub notify: Option<Arc<NotifyPolicy>>,
}

/// A complete, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Daemon settings.
    pub settings: Settings,
    /// Jobs, sorted by name.
    pub jobs: Vec<JobSpec>,
    /// What `check` warns about and the daemon logs at load: accepted, but likely not meant.
    pub warnings: Vec<Problem>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawMain {
    daemon: RawDaemon,
    database: RawDatabase,
    log: RawLog,
    smtp: BTreeMap<String, RawSmtp>,
    notify: Option<RawNotify>,
}

/// A secret given by reference: an environment variable or a file, never inline.
#[derive(Debug, Clone)]
struct RawSecret {
    env: Option<String>,
    file: Option<String>,
}

/// What an inline secret gets told (the value itself is never echoed).
const SECRET_INLINE: &str =
    "write { env = \"VAR\" } or { file = \"/path\" }, not the secret itself";

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Reference {
            env: Option<String>,
            file: Option<String>,
        }
        struct SecretRef;
        impl<'de> serde::de::Visitor<'de> for SecretRef {
            type Value = RawSecret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SECRET_INLINE)
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<RawSecret, E> {
                Err(E::custom(SECRET_INLINE))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawSecret, A::Error> {
                let r = Reference::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawSecret {
                    env: r.env,
                    file: r.file,
                })
            }
        }
        d.deserialize_any(SecretRef)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    tls: Option<SmtpTls>,
    username: Option<String>,
    password: Option<RawSecret>,
    connect_timeout: Option<String>,
    send_timeout: Option<String>,
    ca_file: Option<String>,
    max_connections: Option<u32>,
    allow_plaintext_auth: Option<bool>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    on: Option<Vec<Event>>,
    min_interval: Option<String>,
    email: Option<RawNotifyEmail>,
    webhook: Option<RawWebhook>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawNotifyEmail {
    smtp: Option<String>,
    from: String,
    to: Vec<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    headers: Option<BTreeMap<String, String>>,
    secret_headers: Option<BTreeMap<String, RawSecret>>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    smtp: Option<String>,
    from: String,
    to: Vec<String>,
    cc: Option<Vec<String>>,
    bcc: Option<Vec<String>>,
    reply_to: Option<String>,
    subject: String,
    body: Option<String>,
    body_file: Option<String>,
    html: Option<String>,
    html_file: Option<String>,
    attachments: Option<Vec<String>>,
    max_attachments_size: Option<String>,
    env: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    method: Option<String>,
    url: String,
    headers: Option<BTreeMap<String, String>>,
    secret_headers: Option<BTreeMap<String, RawSecret>>,
    body: Option<String>,
    expect_status: Option<Vec<u16>>,
    follow_redirects: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawDaemon {
    jobs_dir: Option<String>,
    timezone: Option<String>,
    max_concurrent_runs: Option<usize>,
    shutdown_grace: Option<String>,
    node: Option<String>,
    output_limit: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawDatabase {
    path: Option<String>,
    retention: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    schedule: Option<String>,
    every: Option<String>,
    at: Option<String>,
    timezone: Option<String>,
    jitter: Option<String>,
    catch_up: Option<CatchUp>,
    catch_up_window: Option<String>,
    overlap: Option<Overlap>,
    timeout: Option<String>,
    kill_grace: Option<String>,
    retries: Option<u32>,
    retry_backoff: Option<String>,
    retry_backoff_max: Option<String>,
    output_limit: Option<String>,
    enabled: Option<bool>,
    #[allow(dead_code)]
    description: Option<String>,
    command: Option<CommandLine>,
    env: Option<BTreeMap<String, String>>,
    working_dir: Option<String>,
    user: Option<String>,
    umask: Option<String>,
    clean_env: Option<bool>,
    email: Option<RawEmail>,
    http: Option<RawHttp>,
    upload: Option<RawUpload>,
    notify: Option<RawNotify>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpload {
    source: String,
    destination: String,
    after: Option<String>,
    skip_unchanged: Option<bool>,
    part_size: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<RawSecret>,
    secret_access_key: Option<RawSecret>,
    key_file: Option<String>,
    known_hosts: Option<String>,
}

/// Collects problems while validating one file.
struct Located<'a> {
    file: &'a str,
    job: Option<&'a str>,
    problems: &'a mut Vec<Problem>,
    /// Whether secrets are read (the daemon) or left empty (CLI commands that never use them).
    secrets: bool,
}

impl Located<'_> {
    /// An error: the config is rejected.
    fn push(&mut self, field: Option<&str>, message: impl Into<String>) {
        self.note(field, message.into(), false);
    }

    /// A warning: accepted, but likely not meant.
    fn warn(&mut self, field: Option<&str>, message: impl Into<String>) {
        self.note(field, message.into(), true);
    }

    fn note(&mut self, field: Option<&str>, message: String, warning: bool) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            job: self.job.map(str::to_string),
            field: field.map(str::to_string),
            message,
            warning,
        });
    }

    /// Errors (not warnings) so far.
    fn errors(&self) -> usize {
        self.problems.iter().filter(|p| !p.warning).count()
    }

    fn duration(&mut self, field: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(v) => parse_duration(v).unwrap_or_else(|e| {
                self.push(Some(field), e);
                default
            }),
        }
    }

    fn size(&mut self, field: &str, value: Option<&str>, default: usize) -> usize {
        match value {
            None => default,
            Some(v) => parse_size(v).unwrap_or_else(|e| {
                self.push(Some(field), e);
                default
            }),
        }
    }
}

/// Parses `"30s"`, `"1h 30m"`, `"7d"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        let why = duration_problem(s.trim(), &e);
        format!(
            "{s:?} is not a duration ({why}); expected e.g. \"30s\", \"5m\", \"1h 30m\", \"7d\""
        )
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "{s:?} is longer than the longest duration allowed, \"3650d\" (10 years)"
        ));
    }
    Ok(d)
}

/// What is wrong with a duration, in words (humantime's own errors give byte offsets).
fn duration_problem(s: &str, e: &humantime::DurationError) -> String {
    use humantime::DurationError as E;
    let at = |pos: usize| s.get(pos..).and_then(|r| r.chars().next());
    match e {
        E::Empty => "it is empty".into(),
        E::NumberExpected(pos) if at(*pos) == Some('-') => "it cannot be negative".into(),
        E::NumberExpected(pos) => match at(*pos) {
            Some(c) => format!("a number must come before {c:?}"),
            None => "a number is missing".into(),
        },
        E::InvalidCharacter(pos) => match at(*pos) {
            Some(c) => format!("{c:?} does not belong in a duration"),
            None => "it ends too early".into(),
        },
        E::UnknownUnit { unit, .. } if unit.is_empty() => {
            "a unit is needed after the number: ms, s, m, h, d or w".into()
        }
        E::UnknownUnit { unit, .. } => {
            format!("{unit:?} is not a unit; use ms, s, m, h, d or w")
        }
        E::NumberOverflow => "the number is too large".into(),
    }
}

/// The longest duration any setting or command-line argument takes (10 years): every time
/// computed from one stays far inside what dates and timers can hold.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);
/// The largest size any setting takes (1 GiB).
pub const MAX_SIZE: usize = 1 << 30;
/// The most retries a job may have.
pub const MAX_RETRIES: u32 = 1000;
/// The highest `daemon.max_concurrent_runs`.
pub const MAX_CONCURRENT_RUNS: usize = 100_000;

/// Parses `"64KiB"`, `"1MiB"`, `"1000"` (bytes).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => 0,
    };
    match num.parse::<usize>() {
        Ok(n) if mult > 0 => n
            .checked_mul(mult)
            .filter(|&b| b <= MAX_SIZE)
            .ok_or_else(|| format!("{s:?} is larger than the largest size allowed, \"1GiB\"")),
        _ => Err(format!(
            "{s:?} is not a size; expected e.g. \"64KiB\", \"1MiB\" or a number of bytes"
        )),
    }
}

fn parse_tz(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("{name:?} is not an IANA time zone (e.g. \"Europe/Berlin\", \"UTC\")"))
}

/// The system's zone: `TZ` (`Area/City`, `:Area/City`, or a path into a zoneinfo folder),
/// else `/etc/localtime`, else UTC. A `TZ` that names no IANA zone is an error (the caller
/// warns and uses `/etc/localtime`).
fn system_tz(tz_var: Option<&str>) -> Result<Tz, String> {
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
fn local_tz() -> Tz {
    iana_time_zone::get_timezone()
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(Tz::UTC)
}

/// This machine's name (the default node name, and `{{ host }}` in templates).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// How a path is shown in messages: relative to `base` when inside it.
fn display_path(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Loads and validates the main file and every job file, reading every secret.
pub fn load(config_path: &Path) -> Result<Config, ConfigError> {
    load_with(config_path, true)
}

/// Parses in a thread of its own and returns a copy made on the caller's thread. Parsing
/// 100,000 jobs allocates ~250 MB of temporaries (the TOML tree) between the jobs' own small
/// allocations; freed, they would leave the daemon's heap fragmented for good (measured:
/// 146 MB RSS instead of 91 MB). In the parser's thread they live in an allocator arena of
/// their own, which the daemon hands back to the system after each load (`malloc_trim`).
fn load_with(config_path: &Path, secrets: bool) -> Result<Config, ConfigError> {
    let parsed = std::thread::scope(|s| {
        s.spawn(|| parse_config(config_path, secrets))
            .join()
            .unwrap_or_else(|_| {
                Err(ConfigError::Invalid(vec![Problem {
                    file: config_path.display().to_string(),
                    job: None,
                    field: None,
                    message:
                        "internal error: the configuration parser panicked (please report this)"
                            .into(),
                    warning: false,
                }]))
            })
    })?;
    Ok(Config {
        settings: parsed.settings.clone(),
        jobs: parsed.jobs.clone(),
        warnings: parsed.warnings.clone(),
    })
}

fn parse_config(config_path: &Path, secrets: bool) -> Result<Config, ConfigError> {
    let (config, mut problems) = parse_lenient(config_path, secrets)?;
    if problems.iter().all(|p| p.warning) {
        Ok(Config {
            warnings: problems,
            ..config
        })
    } else {
        // Errors first, then warnings.
        problems.sort_by_key(|p| p.warning);
        Err(ConfigError::Invalid(problems))
    }
}

/// Loads what can be loaded, without secrets: the settings and every job without a problem,
/// plus every problem (errors and warnings). For the CLI's reading commands, which must work
/// while a job file has a mistake. Fails only when there are no settings to use (the main
/// file is missing or a folder).
///
/// # Errors
/// The problems, when the main file cannot be read at all.
pub fn load_lenient(config_path: &Path) -> Result<(Config, Vec<Problem>), ConfigError> {
    parse_lenient(config_path, false)
}

fn parse_lenient(config_path: &Path, secrets: bool) -> Result<(Config, Vec<Problem>), ConfigError> {
    let mut problems = Vec::new();
    let base = config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let main_name = config_path.file_name().map_or_else(
        || config_path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let settings = load_settings(config_path, &base, &main_name, secrets, &mut problems);
    let Some(settings) = settings else {
        return Err(ConfigError::Invalid(problems));
    };
    let jobs = load_jobs(&settings, &base, secrets, &mut problems);
    Ok((
        Config {
            settings,
            jobs,
            warnings: Vec::new(),
        },
        problems,
    ))
}

fn load_settings(
    config_path: &Path,
    base: &Path,
    main_name: &str,
    secrets: bool,
    problems: &mut Vec<Problem>,
) -> Option<Settings> {
    let mut at = Located {
        file: main_name,
        job: None,
        problems,
        secrets,
    };
    if config_path.is_dir() {
        at.push(
            None,
            "is a folder; expected the main file (e.g. /etc/hourglass/hourglass.toml)",
        );
        return None;
    }
    if !config_path.is_file() {
        at.push(
            None,
            "file not found (write one, or print the example with `hourglass example-config`)",
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
    let tree: serde_json::Value = match built.and_then(config::Config::try_deserialize) {
        Ok(r) => r,
        Err(e) => {
            // Job files are still checked, against the default settings.
            at.push(None, e.to_string());
            serde_json::Value::Object(serde_json::Map::new())
        }
    };
    let raw = raw_main(tree, &mut at);
    if let Some(level) = raw.log.level.as_deref()
        && let Err(e) = check_log_level(level)
    {
        at.push(Some("log.level"), e);
    }
    let resolve = |p: &str| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { base.join(p) }
    };
    let jobs_dir = resolve(raw.daemon.jobs_dir.as_deref().unwrap_or("jobs.d"));
    let database = match raw.database.path.as_deref() {
        Some(p) => resolve(p),
        None => default_database(base),
    };
    let timezone = match raw.daemon.timezone.as_deref() {
        None => system_tz(std::env::var("TZ").ok().as_deref()).unwrap_or_else(|e| {
            at.warn(Some("daemon.timezone"), e);
            local_tz()
        }),
        Some(n) => parse_tz(n).unwrap_or_else(|e| {
            at.push(Some("daemon.timezone"), e);
            Tz::UTC
        }),
    };
    let retention = match raw.database.retention.as_deref() {
        None => Some(Duration::from_secs(90 * 86_400)),
        Some("forever") => None,
        Some(v) => Some(at.duration("database.retention", Some(v), Duration::ZERO)),
    };
    let max_concurrent_runs = raw.daemon.max_concurrent_runs.unwrap_or(256);
    if !(1..=MAX_CONCURRENT_RUNS).contains(&max_concurrent_runs) {
        at.push(
            Some("daemon.max_concurrent_runs"),
            format!("{max_concurrent_runs} is out of range; expected 1 to {MAX_CONCURRENT_RUNS}"),
        );
    }
    let settings = Settings {
        config_path: config_path.to_path_buf(),
        jobs_dir,
        database,
        retention,
        timezone,
        max_concurrent_runs,
        shutdown_grace: at.duration(
            "daemon.shutdown_grace",
            raw.daemon.shutdown_grace.as_deref(),
            Duration::from_secs(30),
        ),
        node: raw.daemon.node.unwrap_or_else(host_name),
        log_format: raw.log.format.unwrap_or_default(),
        log_level: raw.log.level.unwrap_or_else(|| "info".into()),
        output_limit: at.size(
            "daemon.output_limit",
            raw.daemon.output_limit.as_deref(),
            64 * 1024,
        ),
        smtp: BTreeMap::new(),
        notify: None,
    };
    let mut settings = settings;
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

/// Where the history is when `database.path` is not set: the same for the daemon and the CLI,
/// whoever runs them and from wherever. A main file under `/etc` is a system install, whose
/// history is in `/var/lib/hourglass` (the unit's `StateDirectory=`); any other main file keeps
/// it beside itself.
fn default_database(main_folder: &Path) -> PathBuf {
    if main_folder.starts_with("/etc") {
        PathBuf::from("/var/lib/hourglass/hourglass.db")
    } else {
        main_folder.join("hourglass.db")
    }
}

/// Checks a `log.level` filter: comma-separated directives, each a level or `target=level`.
fn check_log_level(filter: &str) -> Result<(), String> {
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
fn raw_main(tree: serde_json::Value, at: &mut Located<'_>) -> RawMain {
    let serde_json::Value::Object(mut top) = tree else {
        at.push(None, "expected tables such as [daemon] and [database]");
        return RawMain::default();
    };
    let mut raw = RawMain {
        daemon: section(&mut top, "daemon", at).unwrap_or_default(),
        database: section(&mut top, "database", at).unwrap_or_default(),
        log: section(&mut top, "log", at).unwrap_or_default(),
        smtp: BTreeMap::new(),
        notify: section(&mut top, "notify", at),
    };
    match top.remove("smtp") {
        None => {}
        Some(serde_json::Value::Object(servers)) => {
            for (name, value) in servers {
                let key = format!("smtp.{name}");
                let mut one = serde_json::Map::new();
                one.insert(key.clone(), value);
                if let Some(server) = section(&mut one, &key, at) {
                    raw.smtp.insert(name, server);
                }
            }
        }
        Some(_) => at.push(Some("smtp"), "expected tables [smtp.<name>]"),
    }
    for key in top.keys() {
        at.push(
            None,
            format!(
                "unknown table [{key}]; expected [daemon], [database], [log], [smtp.<name>] or [notify] (jobs go in the jobs folder)"
            ),
        );
    }
    raw
}

/// Reads `[key]` of the main file; a problem is reported with the key's path.
fn section<T: serde::de::DeserializeOwned>(
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
                crate::messages::humanize(e.into_inner().to_string().as_str()),
            );
            None
        }
    }
}

fn load_jobs(
    settings: &Settings,
    base: &Path,
    secrets: bool,
    problems: &mut Vec<Problem>,
) -> Vec<JobSpec> {
    let dir = &settings.jobs_dir;
    let mut files = job_files(dir, base, problems);
    files.sort();
    let mut cache = CronCache::default();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut jobs = Vec::new();
    for path in files {
        let file = display_path(&path, base);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(Problem {
                    file,
                    job: None,
                    field: None,
                    message: format!("cannot read: {e}"),
                    warning: false,
                });
                continue;
            }
        };
        let path: Arc<Path> = path.into();
        let ctx = FileContext {
            path: &path,
            file: &file,
            settings,
            secrets,
        };
        jobs.extend(parse_job_file(&text, &ctx, &mut seen, &mut cache, problems));
    }
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    jobs
}

/// The `*.toml` files of the jobs folder. A missing folder, and entries named `*.toml` that are
/// not readable files (a folder, a broken or looping symbolic link), are problems: they would
/// otherwise pass as "0 jobs".
fn job_files(dir: &Path, base: &Path, problems: &mut Vec<Problem>) -> Vec<PathBuf> {
    let problem = |path: &Path, message: String| Problem {
        file: display_path(path, base),
        job: None,
        field: None,
        message,
        warning: false,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            let message = match e.kind() {
                std::io::ErrorKind::NotFound => "the jobs folder does not exist; create it (jobs go in *.toml files there) or set daemon.jobs_dir".to_string(),
                std::io::ErrorKind::NotADirectory => "the jobs folder is not a folder; set daemon.jobs_dir to the folder of job files".to_string(),
                _ => format!("cannot read the jobs folder: {e}"),
            };
            problems.push(problem(dir, message));
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => files.push(path),
            Ok(m) if m.is_dir() => problems.push(problem(
                &path,
                "is a folder, not a job file (job files are *.toml files in the jobs folder)"
                    .into(),
            )),
            Ok(_) => problems.push(problem(&path, "is not a regular file".into())),
            Err(e) => {
                let message = match std::fs::read_link(&path) {
                    Ok(target) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                        format!("is a symbolic link in a loop (to {})", target.display())
                    }
                    Ok(target) => format!(
                        "is a broken symbolic link (to {}, which does not exist)",
                        target.display()
                    ),
                    Err(_) => format!("cannot be read: {e}"),
                };
                problems.push(problem(&path, message));
            }
        }
    }
    files
}

/// Where a job file is and what it inherits.
struct FileContext<'a> {
    path: &'a Arc<Path>,
    file: &'a str,
    settings: &'a Settings,
    secrets: bool,
}

/// Parses one job file; disabled jobs are left out. `seen` maps job names already defined
/// (valid or not) to their file, to report duplicates.
fn parse_job_file(
    text: &str,
    fc: &FileContext<'_>,
    seen: &mut HashMap<String, String>,
    cache: &mut CronCache,
    problems: &mut Vec<Problem>,
) -> Vec<JobSpec> {
    let FileContext {
        path,
        file,
        settings,
        secrets,
    } = *fc;
    // The parser's own tree (borrowing from `text`) is walked directly: converting it to a
    // `toml::Table` first cost a second copy of every value (13 % of loading 100,000 jobs).
    let file_problem = |message: String| Problem {
        file: file.to_string(),
        job: None,
        field: None,
        message,
        warning: false,
    };
    let root = match toml::de::DeTable::parse(text) {
        Ok(r) => r.into_inner(),
        Err(e) => {
            problems.push(file_problem(e.to_string().trim_end().to_string()));
            return Vec::new();
        }
    };
    let mut jobs = None;
    for (key, value) in root {
        if key.get_ref() == "jobs" {
            jobs = Some(value);
        } else {
            problems.push(file_problem(format!(
                "unknown key \"{}\": a job file holds only [jobs.<name>] tables",
                key.get_ref()
            )));
        }
    }
    let jobs = match jobs.map(toml::Spanned::into_inner) {
        None => return Vec::new(),
        Some(toml::de::DeValue::Table(t)) => t,
        Some(_) => {
            problems.push(file_problem(
                "`jobs` must be a table of jobs ([jobs.<name>])".into(),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (name, value) in jobs {
        let name = name.into_inner().into_owned();
        let mut at = Located {
            file,
            job: Some(&name),
            problems,
            secrets,
        };
        if let Some(first) = seen.get(&name) {
            at.push(
                None,
                format!("duplicate job name (already defined in {first})"),
            );
            continue;
        }
        seen.insert(name.clone(), file.to_string());
        if !valid_name(&name) {
            at.push(
                None,
                "job names start with a letter or digit and use letters, digits, '-', '_' and '.', up to 128 characters",
            );
            continue;
        }
        let de = toml::de::ValueDeserializer::from(value);
        let raw_job: RawJob = match serde_path_to_error::deserialize(de) {
            Ok(j) => j,
            Err(e) => {
                let field = e.path().to_string();
                let field = (field != ".").then_some(field);
                at.push(
                    field.as_deref(),
                    crate::messages::humanize(e.into_inner().message()),
                );
                continue;
            }
        };
        // Disabled jobs are validated and kept: they never fire on their schedule, but can be
        // triggered by hand.
        if let Some(spec) = validate_job(&name, raw_job, path, settings, cache, &mut at) {
            out.push(spec);
        }
    }
    out
}

fn valid_name(name: &str) -> bool {
    name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn validate_job(
    name: &str,
    raw: RawJob,
    path: &Arc<Path>,
    settings: &Settings,
    cache: &mut CronCache,
    at: &mut Located<'_>,
) -> Option<JobSpec> {
    let before = at.errors();
    let tz = match raw.timezone.as_deref() {
        None => settings.timezone,
        Some(n) => parse_tz(n).unwrap_or_else(|e| {
            at.push(Some("timezone"), e);
            Tz::UTC
        }),
    };
    let given = [
        raw.schedule.is_some(),
        raw.every.is_some(),
        raw.at.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let schedule = if given != 1 {
        at.push(
            None,
            "set exactly one of `schedule` (cron), `every` (interval) or `at` (one-shot time)",
        );
        None
    } else if let Some(expr) = &raw.schedule {
        match cache.parse(expr) {
            Ok(cron) => Some(Schedule::Cron {
                expr: expr.trim().to_string(),
                cron,
                tz,
            }),
            Err(e) => {
                at.push(Some("schedule"), format!("{expr:?}: {e}"));
                None
            }
        }
    } else if let Some(every) = &raw.every {
        match parse_duration(every) {
            Ok(d) if d >= Duration::from_secs(1) => Some(Schedule::Every(d)),
            Ok(_) => {
                at.push(Some("every"), format!("{every:?}: must be at least 1s"));
                None
            }
            Err(e) => {
                at.push(Some("every"), e);
                None
            }
        }
    } else if let Some(when) = &raw.at {
        match DateTime::parse_from_rfc3339(when.trim()) {
            Ok(t) => Some(Schedule::At(t.with_timezone(&Utc))),
            Err(e) => {
                at.push(
                    Some("at"),
                    format!("{when:?} is not an RFC 3339 time ({e}); expected e.g. \"2026-12-24T18:00:00+01:00\""),
                );
                None
            }
        }
    } else {
        None
    };
    let jitter = at.duration("jitter", raw.jitter.as_deref(), Duration::ZERO);
    let timeout = match raw.timeout.as_deref().map(parse_duration) {
        None => None,
        Some(Ok(d)) if d.is_zero() => {
            at.push(
                Some("timeout"),
                "a zero timeout would stop every run at once; leave timeout out for no limit",
            );
            None
        }
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            at.push(Some("timeout"), e);
            None
        }
    };
    if raw.retries.is_some_and(|r| r > MAX_RETRIES) {
        at.push(
            Some("retries"),
            format!("at most {MAX_RETRIES} retries are allowed"),
        );
    }
    let backoff = at.duration(
        "retry_backoff",
        raw.retry_backoff.as_deref(),
        Duration::from_secs(10),
    );
    let backoff_max = at.duration(
        "retry_backoff_max",
        raw.retry_backoff_max.as_deref(),
        Duration::from_secs(600),
    );
    let kinds = usize::from(raw.command.is_some())
        + usize::from(raw.email.is_some())
        + usize::from(raw.http.is_some())
        + usize::from(raw.upload.is_some());
    if kinds != 1 {
        at.push(
            None,
            if kinds == 0 {
                "no work to do: set `command` (a shell line, or a list for argv), or a `[jobs.<name>.email]`, `[jobs.<name>.http]` or `[jobs.<name>.upload]` table"
            } else {
                "set only one of `command`, `email`, `http` and `upload`"
            },
        );
    }
    if raw.command.is_none()
        && (raw.env.is_some()
            || raw.working_dir.is_some()
            || raw.user.is_some()
            || raw.umask.is_some()
            || raw.clean_env.is_some())
    {
        at.push(
            None,
            "`env`, `working_dir`, `user`, `umask` and `clean_env` apply to `command` jobs only",
        );
    }
    let kind = if let Some(line) = raw.command {
        check_command(&line, raw.env.as_ref(), at);
        let user = raw.user.as_deref().and_then(|u| match lookup_user(u) {
            Ok(r) => Some(r),
            Err(e) => {
                at.push(Some("user"), e);
                None
            }
        });
        let working_dir = raw.working_dir.map(PathBuf::from);
        if let Some(d) = &working_dir {
            check_working_dir(d, at);
        }
        let umask = raw.umask.as_deref().and_then(|m| match parse_umask(m) {
            Ok(m) => Some(m),
            Err(e) => {
                at.push(Some("umask"), e);
                None
            }
        });
        Some(JobKind::Command(CommandJob {
            line,
            env: raw.env.unwrap_or_default(),
            working_dir,
            user,
            umask,
            clean_env: raw.clean_env.unwrap_or(false),
        }))
    } else if let Some(e) = raw.email {
        email_job(e, settings, at).map(|j| JobKind::Email(Box::new(j)))
    } else if let Some(h) = raw.http {
        http_job(h, at).map(|j| JobKind::Http(Box::new(j)))
    } else if let Some(u) = raw.upload {
        upload_job(u, at).map(|j| JobKind::Upload(Box::new(j)))
    } else {
        None
    };
    let notify = match raw.notify {
        Some(n) => notify_policy(n, "notify", &settings.smtp, at).map(Arc::new),
        None => settings.notify.clone(),
    };
    let catch_up = raw.catch_up.unwrap_or(CatchUp::Skip);
    let catch_up_window = at.duration(
        "catch_up_window",
        raw.catch_up_window.as_deref(),
        Duration::from_secs(86_400),
    );
    if catch_up != CatchUp::Skip
        && raw.catch_up_window.is_some()
        && catch_up_window <= crate::schedule::LATE_GRACE.to_std().unwrap_or_default()
    {
        at.warn(
            Some("catch_up_window"),
            format!(
                "{:?} cannot catch anything: firings up to 60s late run anyway, older ones are outside the window; set it above 1m",
                raw.catch_up_window.as_deref().unwrap_or_default()
            ),
        );
    }
    let spec = JobSpec {
        name: name.to_string(),
        source: Arc::clone(path),
        schedule: schedule?,
        tz,
        jitter: jitter_offset(name, jitter),
        catch_up,
        catch_up_window,
        overlap: raw.overlap.unwrap_or(Overlap::Skip),
        timeout,
        kill_grace: at.duration(
            "kill_grace",
            raw.kill_grace.as_deref(),
            Duration::from_secs(10),
        ),
        retry: RetryPolicy {
            retries: raw.retries.unwrap_or(0),
            backoff,
            backoff_max: backoff_max.max(backoff),
        },
        output_limit: at.size(
            "output_limit",
            raw.output_limit.as_deref(),
            settings.output_limit,
        ),
        kind: kind?,
        notify,
        enabled: raw.enabled != Some(false),
    };
    (at.errors() == before).then_some(spec)
}

/// What no program can be given: an empty program, a NUL byte, a malformed variable name.
fn check_command(line: &CommandLine, env: Option<&BTreeMap<String, String>>, at: &mut Located<'_>) {
    const NUL: &str = "contains a NUL byte, which no program can be given";
    match line {
        CommandLine::Argv(a) if a.is_empty() => at.push(Some("command"), "the list is empty; expected the program and its arguments, e.g. [\"tar\", \"czf\", ...]"),
        CommandLine::Argv(a) if a[0].trim().is_empty() => {
            at.push(Some("command"), "the program (the list's first item) is empty");
        }
        CommandLine::Shell(s) if s.trim().is_empty() => {
            at.push(Some("command"), "the command line is empty");
        }
        _ => {}
    }
    let nul = match line {
        CommandLine::Shell(s) => s.contains('\0'),
        CommandLine::Argv(a) => a.iter().any(|x| x.contains('\0')),
    };
    if nul {
        at.push(Some("command"), NUL);
    }
    for (key, value) in env.into_iter().flatten() {
        let field = if key.is_empty() {
            "env".to_string()
        } else {
            format!("env.{key}")
        };
        if key.is_empty() || key.contains(['=', '\0']) {
            at.push(
                Some(&field),
                "a variable name must not be empty or contain '=' or a NUL byte",
            );
        } else if value.contains('\0') {
            at.push(Some(&field), NUL);
        }
    }
}

/// A umask written in octal, as for the shell's `umask`: "022", "0077".
fn parse_umask(text: &str) -> Result<u32, String> {
    let t = text.trim();
    match u32::from_str_radix(t, 8) {
        Ok(m) if m <= 0o777 && !t.is_empty() && t.len() <= 4 => Ok(m),
        _ => Err(format!(
            "{text:?} is not a umask; expected octal digits such as \"022\" or \"077\""
        )),
    }
}

/// `working_dir` must be absolute; one that does not exist (yet) is a warning: every run
/// fails until it does.
fn check_working_dir(dir: &Path, at: &mut Located<'_>) {
    let shown = dir.display().to_string();
    if !dir.is_absolute() {
        at.push(
            Some("working_dir"),
            format!("{shown:?} must be an absolute path"),
        );
    } else if dir.as_os_str().as_encoded_bytes().contains(&0) {
        at.push(Some("working_dir"), "contains a NUL byte");
    } else {
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                at.push(Some("working_dir"), format!("{shown:?} is not a folder"))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => at.warn(
                Some("working_dir"),
                format!("{shown:?} does not exist: every run fails until it does"),
            ),
            Err(e) => at.warn(
                Some("working_dir"),
                format!("{shown:?} cannot be checked: {e}"),
            ),
        }
    }
}

fn secret(raw: &RawSecret, field: &str, at: &mut Located<'_>) -> Option<Secret> {
    if let Some(var) = &raw.env {
        crate::secret::hide_env(var);
    }
    if !at.secrets && (raw.env.is_some() != raw.file.is_some()) {
        return Some(Secret::new(String::new()));
    }
    match (&raw.env, &raw.file) {
        (Some(var), None) => match std::env::var(var) {
            Ok(v) => Some(Secret::new(v)),
            Err(_) => {
                at.push(
                    Some(field),
                    format!("environment variable {var} is not set"),
                );
                None
            }
        },
        (None, Some(file)) => match std::fs::read_to_string(file) {
            Ok(v) => Some(Secret::new(v.trim_end_matches(['\n', '\r']).to_string())),
            Err(e) => {
                at.push(
                    Some(field),
                    format!("cannot read secret file {file:?}: {e}"),
                );
                None
            }
        },
        _ => {
            at.push(
                Some(field),
                "give exactly one of `env` (a variable name) or `file` (a path); secrets are never written inline",
            );
            None
        }
    }
}

fn mailbox(value: &str, field: &str, at: &mut Located<'_>) -> Option<Mailbox> {
    match value.parse::<Mailbox>() {
        Ok(m) => Some(m),
        Err(e) => {
            at.push(
                Some(field),
                format!(
                    "{value:?} is not an email address ({}); expected e.g. \"backup@example.com\" or \"Backup <backup@example.com>\"",
                    e.to_string().to_lowercase()
                ),
            );
            None
        }
    }
}

fn mailboxes(values: &[String], field: &str, at: &mut Located<'_>) -> Vec<Mailbox> {
    values
        .iter()
        .filter_map(|v| mailbox(v, field, at))
        .collect()
}

fn smtp_name(
    given: Option<&str>,
    field: &str,
    servers: &BTreeMap<String, SmtpServer>,
    at: &mut Located<'_>,
) -> Option<String> {
    match given {
        Some(n) if servers.contains_key(n) => Some(n.to_string()),
        Some(n) => {
            at.push(
                Some(field),
                format!("no [smtp.{n}] server in the main file"),
            );
            None
        }
        None if servers.len() == 1 => servers.keys().next().cloned(),
        None => {
            at.push(
                Some(field),
                if servers.is_empty() {
                    "no SMTP server is configured: add an [smtp.<name>] block to the main file"
                } else {
                    "several SMTP servers are configured: name one with `smtp = \"<name>\"`"
                },
            );
            None
        }
    }
}

fn smtp_server(name: &str, r: RawSmtp, base: &Path, at: &mut Located<'_>) -> Option<SmtpServer> {
    let f = |k: &str| format!("smtp.{name}.{k}");
    let tls = r.tls.unwrap_or(SmtpTls::Starttls);
    let password = r
        .password
        .as_ref()
        .and_then(|p| secret(p, &f("password"), at));
    if r.password.is_some() && r.username.is_none() {
        at.push(Some(&f("username")), "a password needs a username");
    }
    if tls == SmtpTls::None && r.password.is_some() && r.allow_plaintext_auth != Some(true) {
        at.push(
            Some(&f("tls")),
            "\"none\" would send the password in clear; use \"starttls\" or \"tls\", or set allow_plaintext_auth = true (a relay on loopback)",
        );
    }
    let ca_pem = r.ca_file.as_deref().and_then(|c| {
        let path = base.join(c);
        match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) => {
                at.push(
                    Some(&f("ca_file")),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    });
    Some(SmtpServer {
        name: name.to_string(),
        port: r.port.unwrap_or(match tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }),
        host: r.host,
        tls,
        username: r.username,
        password,
        connect_timeout: at.duration(
            &f("connect_timeout"),
            r.connect_timeout.as_deref(),
            Duration::from_secs(10),
        ),
        send_timeout: at.duration(
            &f("send_timeout"),
            r.send_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        ca_pem,
        max_connections: r.max_connections.unwrap_or(4),
    })
}

/// Plain headers and secret headers.
type Headers = (Vec<(String, String)>, Vec<(String, Secret)>);

fn headers(
    plain: Option<BTreeMap<String, String>>,
    secrets: Option<BTreeMap<String, RawSecret>>,
    field: &str,
    at: &mut Located<'_>,
) -> Headers {
    let plain: Vec<_> = plain.unwrap_or_default().into_iter().collect();
    let mut secret_list = Vec::new();
    for (k, v) in secrets.unwrap_or_default() {
        if let Some(s) = secret(&v, &format!("{field}.secret_headers.{k}"), at) {
            secret_list.push((k, s));
        }
    }
    for (k, _) in plain
        .iter()
        .map(|(k, v)| (k, v))
        .chain(secret_list.iter().map(|(k, _)| (k, k)))
    {
        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
            at.push(
                Some(&format!("{field}.headers")),
                format!(
                    "{k:?} is not a header name (letters, digits and '-', e.g. \"X-Request-Id\")"
                ),
            );
        }
    }
    (plain, secret_list)
}

fn url(value: &str, field: &str, at: &mut Located<'_>) -> Option<reqwest::Url> {
    match reqwest::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
        Ok(u) => {
            at.push(
                Some(field),
                format!("scheme {:?} is not http or https", u.scheme()),
            );
            None
        }
        Err(e) => {
            at.push(Some(field), format!("{value:?} is not a URL ({e})"));
            None
        }
    }
}

fn notify_policy(
    r: RawNotify,
    field: &str,
    servers: &BTreeMap<String, SmtpServer>,
    at: &mut Located<'_>,
) -> Option<NotifyPolicy> {
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
    Some(NotifyPolicy {
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
    })
}

fn template(
    inline: Option<String>,
    file: Option<String>,
    field: &str,
    base: &Path,
    at: &mut Located<'_>,
) -> Option<String> {
    let text = match (inline, file) {
        (Some(t), None) => t,
        (None, Some(f)) => {
            let path = base.join(&f);
            match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    at.push(
                        Some(&format!("{field}_file")),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        }
        (None, None) => return None,
        (Some(_), Some(_)) => {
            at.push(
                Some(field),
                format!("set `{field}` or `{field}_file`, not both"),
            );
            return None;
        }
    };
    if let Err(e) = check_template(&text) {
        at.push(Some(field), format!("template error: {e}"));
        return None;
    }
    Some(text)
}

fn email_job(r: RawEmail, settings: &Settings, at: &mut Located<'_>) -> Option<EmailJob> {
    let base = settings.jobs_dir.clone();
    let smtp = smtp_name(r.smtp.as_deref(), "email.smtp", &settings.smtp, at);
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
        if !at.secrets {
            // Like secrets, these come from the daemon's environment only.
            continue;
        }
        match std::env::var(&var) {
            Ok(v) => {
                env.insert(var, v);
            }
            Err(_) => at.push(
                Some("email.env"),
                format!("environment variable {var} is not set"),
            ),
        }
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

fn http_job(r: RawHttp, at: &mut Located<'_>) -> Option<HttpJob> {
    let method = match r
        .method
        .as_deref()
        .unwrap_or("GET")
        .to_ascii_uppercase()
        .parse::<reqwest::Method>()
    {
        Ok(m) => Some(m),
        Err(_) => {
            at.push(
                Some("http.method"),
                format!(
                    "{:?} is not an HTTP method (e.g. \"GET\", \"POST\", \"PUT\")",
                    r.method.as_deref().unwrap_or_default()
                ),
            );
            None
        }
    };
    let url = url(&r.url, "http.url", at);
    let (headers, secret_headers) = headers(r.headers, r.secret_headers, "http", at);
    for s in r.expect_status.iter().flatten() {
        if !(100..=599).contains(s) {
            at.push(
                Some("http.expect_status"),
                format!("{s} is not an HTTP status"),
            );
        }
    }
    Some(HttpJob {
        method: method?,
        url: url?,
        headers,
        secret_headers,
        body: r.body,
        expect_status: r.expect_status.unwrap_or_default(),
        follow_redirects: r.follow_redirects.unwrap_or(true),
    })
}

fn upload_job(r: RawUpload, at: &mut Located<'_>) -> Option<UploadJob> {
    use crate::job::upload::{After, Destination};
    if !Path::new(&r.source).is_absolute() {
        at.push(
            Some("upload.source"),
            format!("{:?} must be an absolute path or glob", r.source),
        );
    } else if let Err(e) = glob::Pattern::new(&r.source) {
        at.push(Some("upload.source"), format!("{:?}: {e}", r.source));
    }
    let after = match r.after.as_deref().unwrap_or("keep") {
        "keep" => Some(After::Keep),
        "delete" => Some(After::Delete),
        other => match other.strip_prefix("move:") {
            Some(dir) if Path::new(dir).is_absolute() => Some(After::Move(PathBuf::from(dir))),
            _ => {
                at.push(
                    Some("upload.after"),
                    format!(
                        "{other:?}: expected \"keep\", \"delete\" or \"move:<absolute folder>\""
                    ),
                );
                None
            }
        },
    };
    let d = r.destination.as_str();
    let destination = if let Some(rest) = d.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            at.push(
                Some("upload.destination"),
                format!("{d:?}: no bucket (expected s3://bucket/prefix/)"),
            );
        }
        if let Err(e) = check_template(prefix) {
            at.push(Some("upload.destination"), format!("template error: {e}"));
        }
        let key = r
            .access_key_id
            .as_ref()
            .and_then(|s| secret(s, "upload.access_key_id", at));
        let secret_key = r
            .secret_access_key
            .as_ref()
            .and_then(|s| secret(s, "upload.secret_access_key", at));
        if r.access_key_id.is_none() || r.secret_access_key.is_none() {
            at.push(
                Some("upload"),
                "S3 needs `access_key_id` and `secret_access_key` ({ env = \"VAR\" } or { file = \"/path\" })",
            );
        }
        if let Some(e) = &r.endpoint {
            url(e, "upload.endpoint", at);
        }
        match (key, secret_key) {
            (Some(access_key_id), Some(secret_access_key)) => Some(Destination::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                endpoint: r.endpoint.clone(),
                region: r.region.clone().unwrap_or_else(|| "us-east-1".into()),
                access_key_id,
                secret_access_key,
            }),
            _ => None,
        }
    } else if d.starts_with("sftp://") {
        sftp_destination(d, &r, at)
    } else {
        let folder = d.strip_prefix("file://").unwrap_or(d);
        if !Path::new(folder).is_absolute() {
            at.push(
                Some("upload.destination"),
                format!(
                    "{d:?}: expected s3://bucket/prefix/, file:///folder or an absolute folder"
                ),
            );
        }
        if let Err(e) = check_template(folder) {
            at.push(Some("upload.destination"), format!("template error: {e}"));
        }
        Some(Destination::Folder(folder.to_string()))
    };
    let part_size = at.size("upload.part_size", r.part_size.as_deref(), 8 << 20);
    if part_size < 5 << 20 {
        at.push(
            Some("upload.part_size"),
            "must be at least 5MiB (the S3 minimum part size)",
        );
    }
    Some(UploadJob {
        source: r.source,
        destination: destination?,
        after: after?,
        skip_unchanged: r.skip_unchanged.unwrap_or(false),
        part_size,
    })
}

fn sftp_destination(
    d: &str,
    r: &RawUpload,
    at: &mut Located<'_>,
) -> Option<crate::job::upload::Destination> {
    let parsed = match reqwest::Url::parse(d) {
        Ok(u) => u,
        Err(e) => {
            at.push(
                Some("upload.destination"),
                format!("{d:?} is not a URL ({e})"),
            );
            return None;
        }
    };
    let user = parsed.username().to_string();
    let host = parsed.host_str().unwrap_or_default().to_string();
    if user.is_empty() || host.is_empty() {
        at.push(
            Some("upload.destination"),
            format!("{d:?}: expected sftp://user@host:port/path"),
        );
    }
    if parsed.password().is_some() {
        at.push(
            Some("upload.destination"),
            "no password in the URL: SFTP uses `key_file`",
        );
    }
    let path = percent_decode(parsed.path());
    if let Err(e) = check_template(&path) {
        at.push(Some("upload.destination"), format!("template error: {e}"));
    }
    let mut file = |field: &str, v: &Option<String>, what: &str| match v {
        Some(p) if Path::new(p).is_absolute() => Some(PathBuf::from(p)),
        Some(p) => {
            at.push(Some(field), format!("{p:?} must be an absolute path"));
            None
        }
        None => {
            at.push(Some(field), format!("SFTP needs {what}"));
            None
        }
    };
    let key_file = file("upload.key_file", &r.key_file, "a private key file");
    let known_hosts = file(
        "upload.known_hosts",
        &r.known_hosts,
        "a known_hosts file with the server's pinned host key",
    );
    Some(crate::job::upload::Destination::Sftp {
        user,
        host,
        port: parsed.port().unwrap_or(22),
        path,
        key_file: key_file?,
        known_hosts: known_hosts?,
    })
}

/// Decodes %XX escapes (a URL path keeps `{{ }}` templates escaped).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn lookup_user(name: &str) -> Result<RunAs, String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(RunAs {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
        }),
        Ok(None) => Err(format!("no such user {name:?}")),
        Err(e) => Err(format!("cannot look up user {name:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(main: &str, jobs: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let main_path = dir.path().join("hourglass.toml");
        std::fs::write(&main_path, main).unwrap();
        std::fs::create_dir(dir.path().join("jobs.d")).unwrap();
        for (name, text) in jobs {
            std::fs::write(dir.path().join("jobs.d").join(name), text).unwrap();
        }
        (dir, main_path)
    }

    fn errors(main: &str, jobs: &[(&str, &str)]) -> Vec<String> {
        let (_d, p) = setup(main, jobs);
        load(&p)
            .unwrap_err()
            .problems()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn example_config_is_valid() {
        let (dir, p) = setup(EXAMPLE_MAIN, &[("examples.toml", EXAMPLE_JOBS)]);
        let cfg = load(&p).unwrap();
        assert!(cfg.jobs.len() >= 3);
        assert_eq!(cfg.settings.jobs_dir, dir.path().join("jobs.d"));
    }

    #[test]
    fn errors_name_file_job_and_field() {
        let e = errors(
            "",
            &[(
                "backup.toml",
                "[jobs.nightly-backup]\nschedule = \"61 3 * * *\"\ncommand = \"true\"\n",
            )],
        );
        assert_eq!(
            e,
            [
                r#"jobs.d/backup.toml: job "nightly-backup": schedule: "61 3 * * *": minute 61 is out of range 0-59"#
            ]
        );
    }

    #[test]
    fn a_job_file_holds_only_jobs_and_type_errors_are_one_line() {
        let e = errors(
            "",
            &[(
                "a.toml",
                "job = 1\n[jobs.a]\nevery = 5\ncommand = \"true\"\n",
            )],
        );
        assert_eq!(
            e,
            [
                r#"jobs.d/a.toml: unknown key "job": a job file holds only [jobs.<name>] tables"#,
                r#"jobs.d/a.toml: job "a": every: expected a string in quotes, found the number 5"#,
            ]
        );
        let e = errors("", &[("b.toml", "jobs = 3\n")]);
        assert_eq!(
            e,
            ["jobs.d/b.toml: `jobs` must be a table of jobs ([jobs.<name>])"]
        );
    }

    #[test]
    fn unknown_fields_and_bad_values_are_all_reported() {
        let e = errors(
            "",
            &[(
                "a.toml",
                "[jobs.a]\nshedule = \"* * * * *\"\ncommand = \"true\"\n\n[jobs.b]\nevery = \"soon\"\ncommand = \"true\"\n\n[jobs.c]\nevery = \"1m\"\ncommand = \"true\"\ntimezone = \"Mars/Olympus\"\novelap = 1\n\n[jobs.d]\nevery = \"1m\"\ncommand = \"true\"\noverlap = \"sometimes\"\n",
            )],
        );
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(
            e[0].starts_with(
                r#"jobs.d/a.toml: job "a": shedule: unknown key "shedule" (did you mean "schedule"?)"#
            ),
            "{}",
            e[0]
        );
        assert!(
            e[1].starts_with(r#"jobs.d/a.toml: job "b": every: "soon" is not a duration"#),
            "{}",
            e[1]
        );
        assert!(
            e[2].contains(r#"job "c": ovelap: unknown key "ovelap" (did you mean "overlap"?)"#),
            "{}",
            e[2]
        );
        assert!(
            e[3].contains(
                r#"job "d": overlap: "sometimes" is not one of "allow", "skip", "queue", "replace""#
            ),
            "{}",
            e[3]
        );
    }

    #[test]
    fn duplicate_names_across_files() {
        let job = "[jobs.same]\nevery = \"1m\"\ncommand = \"true\"\n";
        let e = errors("", &[("a.toml", job), ("b.toml", job)]);
        assert_eq!(
            e,
            [r#"jobs.d/b.toml: job "same": duplicate job name (already defined in jobs.d/a.toml)"#]
        );
    }

    #[test]
    fn schedule_kind_and_work_are_required() {
        let e = errors(
            "",
            &[(
                "a.toml",
                "[jobs.a]\ncommand = \"true\"\n[jobs.b]\nevery = \"1m\"\nat = \"2026-01-01T00:00:00Z\"\ncommand = \"true\"\n[jobs.c]\nevery = \"1m\"\n",
            )],
        );
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(e[0].contains("exactly one of"));
        assert!(e[1].contains("exactly one of"));
        assert!(e[2].contains("no work to do"));
    }

    #[test]
    fn main_file_errors_name_the_file() {
        let e = errors("[daemon]\nmax_concurent_runs = 3\n", &[]);
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("hourglass.toml: "), "{}", e[0]);
        assert!(e[0].contains("max_concurent_runs"), "{}", e[0]);
        let e = errors("[daemon]\ntimezone = \"Nowhere\"\n", &[]);
        assert_eq!(
            e,
            [
                r#"hourglass.toml: daemon.timezone: "Nowhere" is not an IANA time zone (e.g. "Europe/Berlin", "UTC")"#
            ]
        );
    }

    #[test]
    fn typed_values() {
        let (_d, p) = setup(
            "[daemon]\ntimezone = \"Europe/Berlin\"\n[database]\npath = \"/tmp/x.db\"\n",
            &[(
                "a.toml",
                "[jobs.a]\nschedule = \"0 3 * * *\"\ncommand = [\"echo\", \"hi\"]\njitter = \"30s\"\ntimeout = \"1m\"\nretries = 2\noverlap = \"queue\"\ncatch_up = \"latest\"\n[jobs.off]\nevery = \"1m\"\ncommand = \"true\"\nenabled = false\n",
            )],
        );
        let cfg = load(&p).unwrap();
        assert_eq!(cfg.settings.database, PathBuf::from("/tmp/x.db"));
        // The disabled job is kept (it can be triggered by hand), not scheduled.
        assert_eq!(cfg.jobs.len(), 2);
        assert!(!cfg.jobs[1].enabled);
        let j = &cfg.jobs[0];
        assert_eq!(j.tz, chrono_tz::Europe::Berlin);
        assert_eq!(j.timeout, Some(Duration::from_secs(60)));
        assert_eq!(j.overlap, Overlap::Queue);
        assert_eq!(j.catch_up, CatchUp::Latest);
        assert_eq!(j.retry.retries, 2);
        assert!(j.jitter < chrono::TimeDelta::seconds(30));
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("2 MiB"), Ok(2 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("30").is_err());
        // Every duration and size has a ceiling, so no time computed from one can overflow.
        assert_eq!(parse_duration("3650d"), Ok(MAX_DURATION));
        let e = parse_duration("99999999999d").unwrap_err();
        assert!(
            e.contains("longer than the longest duration allowed"),
            "{e}"
        );
        assert_eq!(parse_size("1024MiB"), Ok(MAX_SIZE));
        let e = parse_size("99999999999MiB").unwrap_err();
        assert!(e.contains("larger than the largest size allowed"), "{e}");
    }

    #[test]
    fn tz_is_honoured_in_each_form_before_localtime() {
        let ny: Tz = "America/New_York".parse().unwrap();
        assert_eq!(system_tz(Some("America/New_York")), Ok(ny));
        assert_eq!(system_tz(Some(":America/New_York")), Ok(ny));
        assert_eq!(
            system_tz(Some(":/usr/share/zoneinfo/America/New_York")),
            Ok(ny)
        );
        let e = system_tz(Some("Mars/Olympus")).unwrap_err();
        assert!(
            e.starts_with("TZ=\"Mars/Olympus\" is not an IANA time zone"),
            "{e}"
        );
        assert!(system_tz(Some("")).is_ok());
    }
}
