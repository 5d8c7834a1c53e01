//! Configuration problems and the field parsers every config section shares: a [`Problem`]
//! names the file, the job and the field; `Located` collects them while one file is
//! validated; durations, sizes, zones, URLs, mailboxes, headers and secret references are
//! parsed here, into typed values or a message in the user's words.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use chrono_tz::Tz;
use lettre::message::Mailbox;
use serde::Deserialize;

use crate::secret::{Secret, SecretSource};

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

/// A secret given by reference: an environment variable or a file, never inline.
#[derive(Debug, Clone)]
pub(crate) struct RawSecret {
    pub(crate) env: Option<String>,
    pub(crate) file: Option<String>,
}

/// What an inline secret gets told (the value itself is never echoed).
pub(crate) const SECRET_INLINE: &str =
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

/// What a secret's value must be beyond readable: why not, if it is not.
pub(crate) type ValueCheck = fn(&str) -> Result<(), String>;

/// What validating the config found: its problems, and the secret references to read.
#[derive(Default)]
pub(crate) struct Findings {
    pub(crate) problems: Vec<Problem>,
    references: Vec<SecretReference>,
}

/// A secret reference met while validating, read (or not) once validation is done.
struct SecretReference {
    /// How many problems came before it: a problem reading it goes there.
    position: usize,
    file: String,
    job: Option<String>,
    field: String,
    secret: Secret,
    /// What the value must be, beyond readable (a token's length): why not, if it is not.
    check: Option<ValueCheck>,
}

impl Findings {
    /// A collector for problems of `file` (and `job`).
    pub(crate) fn at<'a>(&'a mut self, file: &'a str, job: Option<&'a str>) -> Located<'a> {
        Located {
            file,
            job,
            problems: &mut self.problems,
            references: &mut self.references,
        }
    }

    /// Reads every secret referenced. A reference that cannot be read is a problem, listed
    /// where validation met the reference.
    pub(crate) fn read_secrets(&mut self) {
        for r in std::mem::take(&mut self.references).into_iter().rev() {
            let read = r.secret.read();
            let checked = read.and_then(|v| r.check.map_or(Ok(()), |check| check(v)));
            if let Err(message) = checked {
                self.problems.insert(
                    r.position,
                    Problem {
                        file: r.file,
                        job: r.job,
                        field: Some(r.field),
                        message,
                        warning: false,
                    },
                );
            }
        }
    }
}

/// Collects problems (and secret references) while validating one file.
pub(crate) struct Located<'a> {
    pub(crate) file: &'a str,
    pub(crate) job: Option<&'a str>,
    pub(crate) problems: &'a mut Vec<Problem>,
    references: &'a mut Vec<SecretReference>,
}

impl Located<'_> {
    /// An error: the config is rejected.
    pub(crate) fn push(&mut self, field: Option<&str>, message: impl Into<String>) {
        self.note(field, message.into(), false);
    }

    /// A warning: accepted, but likely not meant.
    pub(crate) fn warn(&mut self, field: Option<&str>, message: impl Into<String>) {
        self.note(field, message.into(), true);
    }

    pub(crate) fn note(&mut self, field: Option<&str>, message: String, warning: bool) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            job: self.job.map(str::to_string),
            field: field.map(str::to_string),
            message,
            warning,
        });
    }

    /// A secret to be read from `source` once validation is done (see
    /// [`Findings::read_secrets`]); until then it is empty.
    pub(crate) fn reference(&mut self, field: &str, source: SecretSource) -> Secret {
        self.reference_checked(field, source, None)
    }

    /// Like [`Located::reference`], with what the value must be once read.
    pub(crate) fn reference_checked(
        &mut self,
        field: &str,
        source: SecretSource,
        check: Option<ValueCheck>,
    ) -> Secret {
        let secret = Secret::unread(source);
        self.references.push(SecretReference {
            position: self.problems.len(),
            file: self.file.to_string(),
            job: self.job.map(str::to_string),
            field: field.to_string(),
            secret: secret.clone(),
            check,
        });
        secret
    }

    /// Errors (not warnings) so far.
    pub(crate) fn errors(&self) -> usize {
        self.problems.iter().filter(|p| !p.warning).count()
    }

    pub(crate) fn duration(
        &mut self,
        field: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(v) => parse_duration(v).unwrap_or_else(|e| {
                self.push(Some(field), e);
                default
            }),
        }
    }

    pub(crate) fn size(&mut self, field: &str, value: Option<&str>, default: usize) -> usize {
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
pub(crate) fn duration_problem(s: &str, e: &humantime::DurationError) -> String {
    use humantime::DurationError as E;
    let at = |pos: usize| s.get(pos..).and_then(|r| r.chars().next());
    match e {
        E::Empty => "it is empty".into(),
        E::NumberExpected(pos) if at(*pos) == Some('-') => "it cannot be negative".into(),
        E::NumberExpected(_) if !s.contains(|c: char| c.is_ascii_digit()) => {
            "it has no number".into()
        }
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
    let max = u64::try_from(MAX_SIZE).unwrap_or(u64::MAX);
    parse_size_up_to(s, max, "\"1GiB\"").map(|n| usize::try_from(n).unwrap_or(MAX_SIZE))
}

/// Parses a size (`"64KiB"`, `"10GiB"`, `"1000"` bytes) of at most `max` (`max_text` in words).
pub fn parse_size_up_to(s: &str, max: u64, max_text: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "pb" | "pib" => 1 << 50,
        _ => 0,
    };
    match num.parse::<u64>() {
        Ok(n) if mult > 0 => n
            .checked_mul(mult)
            .filter(|&b| b <= max)
            .ok_or_else(|| format!("{s:?} is larger than the largest size allowed, {max_text}")),
        _ => Err(format!(
            "{s:?} is not a size; expected e.g. \"64KiB\", \"1MiB\" or a number of bytes"
        )),
    }
}

pub(crate) fn parse_tz(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("{name:?} is not an IANA time zone (e.g. \"Europe/Berlin\", \"UTC\")"))
}

/// How a path is shown in messages: relative to `base` when inside it.
pub(crate) fn display_path(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The secret `raw` refers to, read later (see [`Located::reference`]); `None` when the
/// reference is not exactly one of `env` and `file`.
pub(crate) fn secret(raw: &RawSecret, field: &str, at: &mut Located<'_>) -> Option<Secret> {
    checked_secret(raw, field, None, at)
}

/// Like [`secret`], with what the value must be once read (see [`Located::reference_checked`]).
pub(crate) fn checked_secret(
    raw: &RawSecret,
    field: &str,
    check: Option<ValueCheck>,
    at: &mut Located<'_>,
) -> Option<Secret> {
    match (&raw.env, &raw.file) {
        (Some(var), None) => {
            crate::secret::hide_env(var);
            Some(at.reference_checked(field, SecretSource::Env(var.clone()), check))
        }
        (None, Some(file)) => {
            Some(at.reference_checked(field, SecretSource::File(file.clone()), check))
        }
        _ => {
            if let Some(var) = &raw.env {
                crate::secret::hide_env(var);
            }
            at.push(
                Some(field),
                "give exactly one of `env` (a variable name) or `file` (a path); secrets are never written inline",
            );
            None
        }
    }
}

pub(crate) fn mailbox(value: &str, field: &str, at: &mut Located<'_>) -> Option<Mailbox> {
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

pub(crate) fn mailboxes(values: &[String], field: &str, at: &mut Located<'_>) -> Vec<Mailbox> {
    values
        .iter()
        .filter_map(|v| mailbox(v, field, at))
        .collect()
}

/// Plain headers and secret headers.
pub(crate) type Headers = (Vec<(String, String)>, Vec<(String, Secret)>);

pub(crate) fn headers(
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
    for (k, v) in &plain {
        if reqwest::header::HeaderValue::from_bytes(v.as_bytes()).is_err() {
            at.push(
                Some(&format!("{field}.headers.{k}")),
                "a header value is one line of text: no line break (CR, LF) or other control character",
            );
        }
    }
    (plain, secret_list)
}

pub(crate) fn url(value: &str, field: &str, at: &mut Located<'_>) -> Option<reqwest::Url> {
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
