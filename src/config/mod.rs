//! Loading and validating configuration: the main file (`hourglass.toml`, through the `config`
//! crate: defaults < file < `HOURGLASS__SECTION__KEY` environment variables) and the job files
//! (`jobs.d/*.toml`). Everything is parsed once into typed values; every problem is reported
//! with the file, the job and the field. This is the only module that reads files or the
//! environment for configuration.

mod api;
mod database;
mod in_force;

pub use api::{ApiSettings, ConnectionLimits, MIN_TOKEN_BYTES};
pub use in_force::{ConfigInForce, InForce, Rejection};
mod groups;
mod job_file;
mod jobs_folder;
mod main_file;
pub mod messages;
mod table_keys;
mod tags;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use serde::Deserialize;

pub use crate::alert::AlertPolicies;
use crate::alert::AlertPolicy;
use crate::job::JobSpec;
use crate::problem::Findings;
use crate::smtp::SmtpServer;
pub use crate::store::Database;

pub use crate::job::template::host_name;
pub use crate::problem::{
    ConfigError, MAX_CONCURRENT_RUNS, MAX_DURATION, MAX_RETRIES, MAX_SIZE, Problem, parse_duration,
    parse_size,
};

use job_file::load_jobs;
pub(crate) use job_file::valid_name as valid_job_name;
use main_file::load_settings;

/// The documented example configuration, printed by `hourglass example-config`.
pub const EXAMPLE_MAIN: &str = include_str!("../../config/hourglass.toml");
/// The documented example job file.
pub const EXAMPLE_JOBS: &str = include_str!("../../config/jobs.d/examples.toml");

/// Default path of the main file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hourglass/hourglass.toml";

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
    /// Where the history is: a SQLite file, or a PostgreSQL database shared with other nodes.
    pub database: Database,
    /// Where the API listens.
    pub api: ApiSettings,
    /// How long a node's lease lasts (shared database): a node silent for longer is dead.
    pub lease: Duration,
    /// The clock skew against the database over which a node logs an ERROR.
    pub max_clock_skew: Duration,
    /// How often a node's heartbeat also looks for what a lost notification would have said
    /// (shared database).
    pub fallback_poll: Duration,
    /// Runs older than this are deleted by the daemon (hourly); `None` keeps everything.
    pub retention: Option<Duration>,
    /// Default zone of jobs without `timezone`.
    pub timezone: Tz,
    /// Global limit on runs in progress.
    pub max_concurrent_runs: usize,
    /// How long SIGTERM waits for runs before stopping them.
    pub shutdown_grace: Duration,
    /// Name recorded in each run row (and, on a shared database, this node's name).
    pub node: String,
    /// This node's tags (jobs with `run_on` run only on nodes that have its tags).
    pub tags: Vec<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`RUST_LOG` wins when set).
    pub log_level: String,
    /// Output kept per run unless a job says otherwise.
    pub output_limit: usize,
    /// The shell of command lines unless a job says otherwise.
    pub shell: crate::job::shell::Shell,
    /// Limits on command runs unless a job says otherwise (`[daemon] limits`, `nice`,
    /// `io_class`).
    pub limits: crate::job::command::Limits,
    /// SMTP servers by name.
    pub smtp: BTreeMap<String, SmtpServer>,
    /// Default notification policy of jobs without their own.
    pub notify: Option<Arc<AlertPolicy>>,
    /// Mutual exclusion groups by name (`[groups.<name>]`).
    pub groups: BTreeMap<String, groups::Group>,
}

/// A complete, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Daemon settings.
    pub settings: Settings,
    /// Jobs, sorted by name.
    pub jobs: Vec<JobSpec>,
    /// Their alert policies.
    pub alerts: AlertPolicies,
    /// What `check` warns about and the daemon logs at load: accepted, but likely not meant.
    pub warnings: Vec<Problem>,
}

/// The system's zone, as jobs without `timezone` get it when `daemon.timezone` is not set:
/// `TZ`, else `/etc/localtime`, else UTC.
pub fn default_zone() -> Tz {
    let tz = std::env::var("TZ").ok();
    main_file::system_tz(tz.as_deref()).unwrap_or_else(|_| main_file::local_tz())
}

/// Whether `tag` is a node tag: letters, digits, `-`, `_` and `.`.
pub(crate) fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Loads and validates the main file and every job file, reading every secret.
pub fn load(config_path: &Path) -> Result<Config, ConfigError> {
    load_with(config_path)
}

/// Parses in a thread of its own and returns a copy made on the caller's thread. Parsing
/// 100,000 jobs allocates ~250 MB of temporaries (the TOML tree) between the jobs' own small
/// allocations; freed, they would leave the daemon's heap fragmented for good (measured:
/// 146 MB RSS instead of 91 MB). In the parser's thread they live in an allocator arena of
/// their own, which the daemon hands back to the system after each load (`memory::release_freed`).
fn load_with(config_path: &Path) -> Result<Config, ConfigError> {
    let parsed = std::thread::scope(|s| {
        s.spawn(|| parse_config(config_path))
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
        alerts: parsed.alerts.clone(),
        warnings: parsed.warnings.clone(),
    })
}

fn parse_config(config_path: &Path) -> Result<Config, ConfigError> {
    let (config, mut found) = validate(config_path)?;
    found.read_secrets();
    let mut problems = found.problems;
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
    validate(config_path).map(|(config, found)| (config, found.problems))
}

/// Validates the main file and every job file; secrets are referenced, not read yet.
fn validate(config_path: &Path) -> Result<(Config, Findings), ConfigError> {
    let mut found = Findings::default();
    let base = config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let main_name = config_path.file_name().map_or_else(
        || config_path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let settings = load_settings(config_path, &base, &main_name, &mut found);
    let Some(settings) = settings else {
        return Err(ConfigError::Invalid(found.problems));
    };
    let (jobs, alerts) = load_jobs(&settings, &base, &mut found);
    Ok((
        Config {
            settings,
            jobs,
            alerts,
            warnings: Vec::new(),
        },
        found,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{CatchUp, Overlap};

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
    fn secrets_are_read_by_load_only_and_their_problems_keep_their_place() {
        let main = "[smtp.main]\nhost = \"localhost\"\nusername = \"u\"\ntls = \"none\"\n\
                    password = { env = \"HOURGLASS_TEST_UNSET_PASSWORD\" }\n";
        let (_d, p) = setup(main, &[]);
        assert_eq!(
            errors(main, &[]),
            [
                "hourglass.toml: smtp.main.password: environment variable HOURGLASS_TEST_UNSET_PASSWORD is not set",
                "hourglass.toml: smtp.main.tls: \"none\" would send the password in clear; use \"starttls\" or \"tls\", or set allow_plaintext_auth = true (a relay on loopback)",
            ]
        );
        let (lenient, problems) = load_lenient(&p).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field.as_deref(), Some("smtp.main.tls"));
        let password = lenient.settings.smtp["main"].password.as_ref().unwrap();
        assert_eq!(password.expose(), "");

        let (dir, p) = setup("", &[]);
        std::fs::write(dir.path().join("pw"), "hunter2\n").unwrap();
        let main = format!(
            "[smtp.main]\nhost = \"localhost\"\nusername = \"u\"\npassword = {{ file = \"{}\" }}\n",
            dir.path().join("pw").display()
        );
        std::fs::write(&p, main).unwrap();
        let cfg = load(&p).unwrap();
        let password = cfg.settings.smtp["main"].password.as_ref().unwrap();
        assert_eq!(password.expose(), "hunter2");
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
        assert_eq!(
            cfg.settings.database,
            Database::Sqlite(PathBuf::from("/tmp/x.db"))
        );
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
        use super::main_file::system_tz;
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
