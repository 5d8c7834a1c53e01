//! The `command` kind: a program (argv) or a line for the job's shell, in its own process group, with
//! its output (stdout and stderr interleaved, as on a terminal) captured up to a cap, tail kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::shell::{self, RawShell, Shell};
use crate::problem::Located;

pub mod limits;
mod run;

pub use limits::Limits;

/// How the program is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// Run by the job's shell (`/bin/sh -c` unless it says otherwise).
    Shell(String),
    /// Executed directly, no shell.
    Argv(Vec<String>),
}

impl<'de> serde::Deserialize<'de> for CommandLine {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expecting = "a shell line (\"tar czf ...\") or a list of the program and its \
                         arguments ([\"tar\", \"czf\", ...])";
        Ok(match shell::string_or_list(d, expecting)? {
            Ok(line) => CommandLine::Shell(line),
            Err(argv) => CommandLine::Argv(argv),
        })
    }
}

/// A user to run as (only when the daemon is root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
}

/// A validated command job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandJob {
    /// What to run.
    pub line: CommandLine,
    /// Extra environment variables (on top of the daemon's).
    pub env: BTreeMap<String, String>,
    /// Working directory; the daemon's when unset.
    pub working_dir: Option<PathBuf>,
    /// Run as this user.
    pub user: Option<RunAs>,
    /// The umask the command starts with; the daemon's (022) when unset.
    pub umask: Option<u32>,
    /// Start from a minimal environment (as `user =` jobs do) instead of the daemon's.
    pub clean_env: bool,
    /// What runs a command line.
    pub shell: Shell,
    /// Limits on its processes (the daemon's defaults, each overridden by the job's own).
    pub limits: Limits,
}

impl CommandJob {
    /// Its settings for display; environment variables by name only.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![match &self.line {
            CommandLine::Shell(line) => ("shell line", line.clone()),
            CommandLine::Argv(argv) => ("program and arguments", format!("{argv:?}")),
        }];
        if !self.env.is_empty() {
            let names: Vec<&str> = self.env.keys().map(String::as_str).collect();
            out.push(("environment (names)", names.join(", ")));
        }
        if let Some(dir) = &self.working_dir {
            out.push(("working folder", dir.display().to_string()));
        }
        if let Some(user) = &self.user {
            out.push(("user", user.name.clone()));
        }
        if let Some(umask) = self.umask {
            out.push(("umask", format!("{umask:03o}")));
        }
        if self.clean_env {
            out.push(("clean environment", "yes".to_string()));
        }
        if matches!(self.line, CommandLine::Shell(_)) && self.shell != Shell::Sh {
            out.push(("shell", self.shell.describe()));
        }
        if !self.limits.is_empty() {
            out.push(("limits", self.limits.describe().join(", ")));
        }
        out
    }
}

/// The fields of a `command` job (they sit beside the common fields in the job's table).
#[derive(Debug)]
pub(crate) struct RawCommand {
    pub(crate) line: CommandLine,
    pub(crate) env: Option<BTreeMap<String, String>>,
    pub(crate) working_dir: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) umask: Option<String>,
    pub(crate) clean_env: Option<bool>,
    pub(crate) shell: Option<RawShell>,
    pub(crate) limits: limits::RawLimitSettings,
}

/// What a command job takes from the daemon's settings unless it says otherwise.
#[derive(Debug)]
pub(crate) struct CommandDefaults<'a> {
    /// The shell of command lines.
    pub(crate) shell: &'a Shell,
    /// The limits.
    pub(crate) limits: &'a Limits,
}

/// Validates a command job's fields (problems go to `at`); a line runs under the daemon's
/// shell and limits unless the job names its own.
pub(crate) fn from_raw(
    raw: RawCommand,
    defaults: &CommandDefaults<'_>,
    at: &mut Located<'_>,
) -> CommandJob {
    let default_shell = defaults.shell;
    check_command(&raw.line, raw.env.as_ref(), at);
    let shell = line_shell(&raw.line, raw.shell.as_ref(), default_shell, at);
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
    let runs_as = match &user {
        Some(u) if u.uid != 0 => limits::RunsAs::Unprivileged,
        Some(_) => limits::RunsAs::Root,
        None if nix::unistd::geteuid().is_root() => limits::RunsAs::Root,
        None => limits::RunsAs::Unprivileged,
    };
    let merged = limits::limits(&raw.limits, "", at).or(defaults.limits);
    limits::check_runs_as(&merged, runs_as, at);
    CommandJob {
        line: raw.line,
        env: raw.env.unwrap_or_default(),
        working_dir,
        user,
        umask,
        clean_env: raw.clean_env.unwrap_or(false),
        shell,
        limits: merged,
    }
}

/// The shell of a command line: the job's own, else the daemon's. A list (run without a
/// shell) takes none; a pipeline whose failure `/bin/sh` would hide is warned of.
fn line_shell(
    line: &CommandLine,
    own: Option<&RawShell>,
    default: &Shell,
    at: &mut Located<'_>,
) -> Shell {
    let shell = own.map_or_else(|| default.clone(), |s| shell::shell(s, "shell", at));
    match line {
        CommandLine::Argv(_) if own.is_some() => at.push(
            Some("shell"),
            "applies to a command line (a string); a list is run as it is, without a shell",
        ),
        CommandLine::Shell(l) if shell == Shell::Sh => {
            if let Some(first) = shell::hidden_failure(l) {
                at.warn(
                    Some("command"),
                    format!("under /bin/sh a pipeline succeeds when its last command does: the run is recorded `succeeded` even when `{first}` fails; set shell = \"bash\" (bash -o pipefail -c) to fail it when any part fails"),
                );
            }
        }
        _ => {}
    }
    shell
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
