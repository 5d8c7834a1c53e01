//! The job files (`jobs.d/*.toml`): walking the folder, one table per job, unique names, the
//! fields every job has (schedule, policies), then one arm per kind of work, each kind
//! validating its own table.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::table_keys::TableKeys;
use super::{AlertPolicies, Settings};
use crate::alert::AlertPolicy;
use crate::alert::{RawNotify, notify_policy};
use crate::job::command::limits::RawLimitSettings;
use crate::job::command::{self, CommandLine, RawCommand};
use crate::job::email::{self, RawEmail};
use crate::job::http::{self, RawHttp};
use crate::job::upload::{self, RawUpload};
use crate::job::{CatchUp, JobKind, JobSpec, NodeLoss, Overlap, RetryPolicy};
use crate::problem::parse_duration;
use crate::problem::{Findings, Located, MAX_RETRIES, Problem, display_path, parse_tz};
use crate::schedule::{CronCache, Schedule, jitter_offset};
use chrono_tz::Tz;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJob {
    pub(crate) schedule: Option<String>,
    pub(crate) every: Option<String>,
    pub(crate) at: Option<String>,
    pub(crate) timezone: Option<String>,
    pub(crate) jitter: Option<String>,
    pub(crate) catch_up: Option<CatchUp>,
    pub(crate) catch_up_window: Option<String>,
    pub(crate) overlap: Option<Overlap>,
    pub(crate) timeout: Option<String>,
    pub(crate) kill_grace: Option<String>,
    pub(crate) retries: Option<u32>,
    pub(crate) retry_backoff: Option<String>,
    pub(crate) retry_backoff_max: Option<String>,
    pub(crate) output_limit: Option<String>,
    pub(crate) enabled: Option<bool>,
    pub(crate) on_node_loss: Option<NodeLoss>,
    pub(crate) run_on: Option<Vec<String>>,
    pub(crate) alert_if_no_success_within: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) command: Option<CommandLine>,
    pub(crate) env: Option<BTreeMap<String, String>>,
    pub(crate) working_dir: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) umask: Option<String>,
    pub(crate) clean_env: Option<bool>,
    pub(crate) shell: Option<crate::job::shell::RawShell>,
    pub(crate) limits: Option<crate::job::command::limits::RawLimits>,
    pub(crate) nice: Option<i64>,
    pub(crate) io_class: Option<String>,
    pub(crate) io_level: Option<i64>,
    pub(crate) email: Option<RawEmail>,
    pub(crate) http: Option<RawHttp>,
    pub(crate) upload: Option<RawUpload>,
    pub(crate) notify: Option<RawNotify>,
    pub(crate) after: Option<crate::job::after::RawAfter>,
    pub(crate) group: Option<String>,
}

/// The job's alert policy with its own `alert_if_no_success_within`, which needs a policy to
/// send through.
fn stale_after(
    within: Option<&str>,
    notify: Option<Arc<AlertPolicy>>,
    at: &mut Located<'_>,
) -> Option<Arc<AlertPolicy>> {
    let Some(within) = within else {
        return notify;
    };
    let after = at.duration("alert_if_no_success_within", Some(within), Duration::ZERO);
    let Some(policy) = notify else {
        at.push(
            Some("alert_if_no_success_within"),
            "has nowhere to send its alert; give the job [jobs.<name>.notify] with an email or webhook, or set [notify] in the main file",
        );
        return None;
    };
    let mut policy = (*policy).clone();
    policy.stale_after = Some(after);
    Some(Arc::new(policy))
}

pub(crate) fn load_jobs(
    settings: &Settings,
    base: &Path,
    found: &mut Findings,
) -> (Vec<JobSpec>, AlertPolicies) {
    let dir = &settings.jobs_dir;
    let mut files = super::jobs_folder::job_files(dir, base, &mut found.problems);
    files.sort();
    let mut cache = CronCache::default();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut jobs = Vec::new();
    for path in files {
        let file = display_path(&path, base);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                found.problems.push(Problem {
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
        };
        jobs.extend(parse_job_file(&text, &ctx, &mut seen, &mut cache, found));
    }
    jobs.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    crate::job::after::problems_of(jobs.iter().map(|(spec, _)| spec), base, &mut found.problems);
    let alerts = jobs
        .iter()
        .filter_map(|(spec, alert)| Some((spec.name.clone(), Arc::clone(alert.as_ref()?))))
        .collect();
    (jobs.into_iter().map(|(spec, _)| spec).collect(), alerts)
}

/// Where a job file is and what it inherits.
pub(crate) struct FileContext<'a> {
    pub(crate) path: &'a Arc<Path>,
    pub(crate) file: &'a str,
    pub(crate) settings: &'a Settings,
}

/// Parses one job file; disabled jobs are left out. `seen` maps job names already defined
/// (valid or not) to their file, to report duplicates.
/// The `[jobs.<name>]` tables of a job file; anything else in it is a problem.
fn job_tables<'a>(
    text: &'a str,
    file: &str,
    problems: &mut Vec<Problem>,
) -> Option<toml::de::DeTable<'a>> {
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
            return None;
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
    match jobs.map(toml::Spanned::into_inner) {
        None => None,
        Some(toml::de::DeValue::Table(t)) => Some(t),
        Some(_) => {
            problems.push(file_problem(
                "`jobs` must be a table of jobs ([jobs.<name>])".into(),
            ));
            None
        }
    }
}

pub(crate) fn parse_job_file(
    text: &str,
    fc: &FileContext<'_>,
    seen: &mut HashMap<String, String>,
    cache: &mut CronCache,
    found: &mut Findings,
) -> Vec<(JobSpec, Option<Arc<AlertPolicy>>)> {
    let FileContext {
        path,
        file,
        settings,
    } = *fc;
    let Some(jobs) = job_tables(text, file, &mut found.problems) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, value) in jobs {
        let name = name.into_inner().into_owned();
        let mut at = found.at(file, Some(&name));
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
        let mut value = value;
        if job_keys().drop_unknown(&mut value, &mut at) {
            // What follows from a misspelt key (`evry`: "set one of schedule, every or at")
            // would only repeat it.
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
                    crate::config::messages::humanize(e.into_inner().message()),
                );
                continue;
            }
        };
        // Disabled jobs are validated and kept: they never fire on their schedule, but can be
        // triggered by hand.
        if let Some(job) = validate_job(&name, raw_job, path, settings, cache, &mut at) {
            out.push(job);
        }
    }
    out
}

/// The keys a job's table takes, as serde lists them (read once).
fn job_keys() -> &'static TableKeys {
    static KEYS: std::sync::OnceLock<TableKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(TableKeys::of::<RawJob>)
}

pub(crate) fn valid_name(name: &str) -> bool {
    name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub(crate) fn validate_job(
    name: &str,
    mut raw: RawJob,
    path: &Arc<Path>,
    settings: &Settings,
    cache: &mut CronCache,
    at: &mut Located<'_>,
) -> Option<(JobSpec, Option<Arc<AlertPolicy>>)> {
    let before = at.errors();
    let tz = match raw.timezone.as_deref() {
        None => settings.timezone,
        Some(n) => parse_tz(n).unwrap_or_else(|e| {
            at.push(Some("timezone"), e);
            Tz::UTC
        }),
    };
    let schedule = schedule(&raw, tz, cache, at);
    let jitter = at.duration("jitter", raw.jitter.as_deref(), Duration::ZERO);
    let timeout = timeout(raw.timeout.as_deref(), at);
    let retry = retry_policy(&raw, at);
    let kind = kind(&mut raw, settings, at);
    let notify = match raw.notify.take() {
        Some(n) => notify_policy(n, "notify", &settings.smtp, at).map(Arc::new),
        None => settings.notify.clone(),
    };
    let notify = stale_after(raw.alert_if_no_success_within.as_deref(), notify, at);
    let catch_up = raw.catch_up.unwrap_or(CatchUp::Skip);
    let catch_up_window = catch_up_window(&raw, catch_up, at);
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
        retry,
        output_limit: at.size(
            "output_limit",
            raw.output_limit.as_deref(),
            settings.output_limit,
        ),
        kind: kind?,
        enabled: raw.enabled != Some(false),
        on_node_loss: raw.on_node_loss.unwrap_or_default(),
        run_on: super::tags::run_on(raw.run_on.take(), &settings.tags, at),
        description: raw.description.take(),
        tags: super::tags::job_tags(raw.tags.take(), at),
        after: raw
            .after
            .take()
            .and_then(|a| crate::job::after::after(a, at)),
        group: super::groups::job_group(raw.group.take(), &settings.groups, at),
    };
    (at.errors() == before).then_some((spec, notify))
}

/// The job's one schedule: `schedule` (cron), `every` or `at`.
fn schedule(raw: &RawJob, tz: Tz, cache: &mut CronCache, at: &mut Located<'_>) -> Option<Schedule> {
    let given = [
        raw.schedule.is_some(),
        raw.every.is_some(),
        raw.at.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given == 0 && raw.after.is_some() {
        // A job after other jobs needs no schedule of its own.
        Some(Schedule::Unscheduled)
    } else if given != 1 {
        at.push(
            None,
            "set exactly one of `schedule` (cron), `every` (interval) or `at` (one-shot time), \
             or `after` (run after other jobs)",
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
    } else {
        let when = raw.at.as_deref().unwrap_or_default();
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
    }
}

/// `timeout`: none, or a duration above zero.
fn timeout(value: Option<&str>, at: &mut Located<'_>) -> Option<Duration> {
    match value.map(parse_duration) {
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
    }
}

/// `retries`, `retry_backoff`, `retry_backoff_max`.
fn retry_policy(raw: &RawJob, at: &mut Located<'_>) -> RetryPolicy {
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
    RetryPolicy {
        retries: raw.retries.unwrap_or(0),
        backoff,
        backoff_max: backoff_max.max(backoff),
    }
}

/// Validates one kind of work's fields (in the kind's own module).
type KindArm<'s> = Box<dyn FnOnce(&mut Located<'_>) -> Option<JobKind> + 's>;

/// The job's one kind of work. One arm per kind: it takes the kind's fields out of the table
/// (`None` when the table does not name the kind) and validates them in the kind's own
/// module; the "exactly one kind" rule and its messages follow from the arms.
fn kind(raw: &mut RawJob, settings: &Settings, at: &mut Located<'_>) -> Option<JobKind> {
    let command_fields_alone = raw.command.is_none()
        && (raw.env.is_some()
            || raw.working_dir.is_some()
            || raw.user.is_some()
            || raw.umask.is_some()
            || raw.clean_env.is_some()
            || raw.shell.is_some()
            || raw.limits.is_some()
            || raw.nice.is_some()
            || raw.io_class.is_some()
            || raw.io_level.is_some());
    let defaults = command::CommandDefaults {
        shell: &settings.shell,
        limits: &settings.limits,
    };
    let arms = [
        ("command", command_arm(raw, defaults)),
        (
            "email",
            raw.email.take().map(|e| -> KindArm<'_> {
                Box::new(move |at| {
                    email::from_raw(e, &settings.jobs_dir, &settings.smtp, at)
                        .map(|j| JobKind::Email(Box::new(j)))
                })
            }),
        ),
        (
            "http",
            raw.http.take().map(|h| -> KindArm<'_> {
                Box::new(move |at| http::from_raw(h, at).map(|j| JobKind::Http(Box::new(j))))
            }),
        ),
        (
            "upload",
            raw.upload.take().map(|u| -> KindArm<'_> {
                Box::new(move |at| upload::from_raw(u, at).map(|j| JobKind::Upload(Box::new(j))))
            }),
        ),
    ];
    let names: Vec<&str> = arms.iter().map(|(name, _)| *name).collect();
    let mut given = arms.into_iter().filter_map(|(_, arm)| arm);
    let first = given.next();
    if first.is_none() || given.next().is_some() {
        at.push(None, kind_count_problem(&names, first.is_none()));
    }
    if command_fields_alone {
        at.push(
            None,
            "`env`, `working_dir`, `user`, `umask`, `clean_env`, `shell`, `limits`, `nice`, `io_class` and `io_level` apply to `command` jobs only (email, HTTP and upload jobs run inside the daemon)",
        );
    }
    first.and_then(|arm| arm(at))
}

/// The `command` kind's arm: its fields sit beside the common ones in the job's table.
fn command_arm<'s>(
    raw: &mut RawJob,
    defaults: command::CommandDefaults<'s>,
) -> Option<KindArm<'s>> {
    let line = raw.command.take()?;
    let fields = RawCommand {
        line,
        env: raw.env.take(),
        working_dir: raw.working_dir.take(),
        user: raw.user.take(),
        umask: raw.umask.take(),
        clean_env: raw.clean_env,
        shell: raw.shell.take(),
        limits: RawLimitSettings {
            limits: raw.limits.take(),
            nice: raw.nice,
            io_class: raw.io_class.take(),
            io_level: raw.io_level,
        },
    };
    Some(Box::new(move |at| {
        Some(JobKind::Command(Box::new(command::from_raw(
            fields, &defaults, at,
        ))))
    }))
}

/// What is wrong when a job names no kind of work (`none`) or several, listing the kinds
/// (`command` first, then the tables).
fn kind_count_problem(names: &[&str], none: bool) -> String {
    let tables: Vec<String> = names[1..]
        .iter()
        .map(|n| format!("`[jobs.<name>.{n}]`"))
        .collect();
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    if none {
        format!(
            "no work to do: set `command` (a shell line, or a list for argv), or a {} table",
            or_list(&tables, " or ")
        )
    } else {
        format!("set only one of {}", or_list(&quoted, " and "))
    }
}

/// `a, b and c` (with `last` between the last two).
fn or_list(items: &[String], last: &str) -> String {
    match items.split_last() {
        Some((tail, [])) => tail.clone(),
        Some((tail, head)) => format!("{}{last}{tail}", head.join(", ")),
        None => String::new(),
    }
}

/// `catch_up_window`, with a warning when it is too short to catch anything.
fn catch_up_window(raw: &RawJob, catch_up: CatchUp, at: &mut Located<'_>) -> Duration {
    let window = at.duration(
        "catch_up_window",
        raw.catch_up_window.as_deref(),
        Duration::from_secs(86_400),
    );
    if catch_up != CatchUp::Skip
        && raw.catch_up_window.is_some()
        && window <= crate::schedule::LATE_GRACE.to_std().unwrap_or_default()
    {
        at.warn(
            Some("catch_up_window"),
            format!(
                "{:?} cannot catch anything: firings up to 60s late run anyway, older ones are outside the window; set it above 1m",
                raw.catch_up_window.as_deref().unwrap_or_default()
            ),
        );
    }
    window
}
