//! The `command` kind: a program (argv) or a line for the job's shell, in its own process group, with
//! its output (stdout and stderr interleaved, as on a terminal) captured up to a cap, tail kept.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::Command;
use tokio::time::{Instant, sleep_until};

use super::output::LiveRun;
use super::shell::{self, RawShell, Shell};
use super::{AttemptContext, Outcome, StopSignal};
use crate::problem::Located;
use std::path::Path;

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
        out
    }
}

/// Environment variables of the daemon that children must not inherit.
const PRIVATE_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// `PATH` for jobs run as another user when the daemon has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A program and its arguments, run as they are.
fn argv_command<S: AsRef<std::ffi::OsStr>>(argv: &[S]) -> Command {
    let mut c = Command::new(argv.first().map_or_else(Default::default, AsRef::as_ref));
    c.args(argv.iter().skip(1));
    c
}

/// A program and its arguments, run by `/bin/sh` after it set the umask `mask`.
fn umask_command<S: AsRef<std::ffi::OsStr>>(mask: u32, argv: &[S]) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(format!("umask {mask:03o} && exec \"$0\" \"$@\""))
        .args(argv);
    c
}

/// How long output is still read after the main process exited (a background process may hold
/// the pipe open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

impl CommandJob {
    fn command(&self, ctx: &AttemptContext<'_>) -> Command {
        let mut cmd = match (&self.line, self.umask) {
            (CommandLine::Shell(line), None) => argv_command(&self.shell.argv(line)),
            (CommandLine::Argv(argv), None) => argv_command(argv),
            // The shell sets the umask: a `pre_exec` hook would force fork+exec (see below).
            (CommandLine::Shell(line), Some(mask)) if self.shell == Shell::Sh => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(format!("umask {mask:03o}\n{line}"));
                c
            }
            (CommandLine::Shell(line), Some(mask)) => umask_command(mask, &self.shell.argv(line)),
            (CommandLine::Argv(argv), Some(mask)) => umask_command(mask, argv),
        };
        if let Some(user) = &self.user {
            // Another user's job starts from a minimal environment, not the daemon's.
            minimal_env(&mut cmd);
            cmd.uid(user.uid).gid(user.gid);
            cmd.env("USER", &user.name)
                .env("LOGNAME", &user.name)
                .env("HOME", &user.home)
                .env("SHELL", "/bin/sh");
        } else if self.clean_env {
            minimal_env(&mut cmd);
            for key in ["HOME", "USER", "LOGNAME"] {
                if let Some(v) = std::env::var_os(key) {
                    cmd.env(key, v);
                }
            }
            cmd.env("SHELL", "/bin/sh");
        } else {
            for key in PRIVATE_ENV {
                cmd.env_remove(key);
            }
        }
        for key in crate::secret::hidden_env() {
            cmd.env_remove(key);
        }
        if let Some(id) = ctx.processes.marker() {
            cmd.env(crate::processes::DATABASE_ID_VAR, id);
        }
        cmd.env("HOURGLASS_JOB", &ctx.job.name)
            .env(crate::processes::RUN_ID_VAR, ctx.run_id.to_string())
            .env("HOURGLASS_TRIGGER", ctx.trigger.as_str())
            .env("HOURGLASS_ATTEMPT", ctx.attempt.to_string())
            .env(
                "HOURGLASS_SCHEDULED_FOR",
                crate::store::format_ts(ctx.scheduled_for),
            );
        cmd.envs(super::after::parent_env(ctx.parents));
        cmd.envs(&self.env);
        if let Some(dir) = &self.working_dir {
            cmd.current_dir(dir);
        }
        // No `pre_exec` hook: it would force fork+exec, whose cost grows with the daemon's
        // memory (measured: 10,000 spawns 4.4 s with posix_spawn, 9.1 s with fork, 90 s with
        // fork beside 200 MB of heap). Crash leftovers are stopped by the next start instead
        // ([`crate::processes::stop_orphans`]).
        cmd.stdin(Stdio::null()).process_group(0).kill_on_drop(true);
        cmd
    }

    /// Runs the command once; see [`super::JobKind::execute`].
    pub async fn execute(&self, ctx: &AttemptContext<'_>, stop: &StopSignal) -> Outcome {
        let (writer, mut reader) = match output_pipe() {
            Ok(p) => p,
            Err(e) => return Outcome::failed(format!("cannot create output pipe: {e}"), true),
        };
        let mut cmd = self.command(ctx);
        let (out, err) = writer;
        cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
        // Spawned right here: measured, moving fork/exec to `spawn_blocking` threads made a
        // burst of 100 spawns 1.5-2.5x slower (parallel forks contend on the address space).
        let run = crate::processes::Run {
            id: ctx.run_id,
            uid: self
                .user
                .as_ref()
                .map_or_else(|| nix::unistd::getuid().as_raw(), |u| u.uid),
        };
        let spawned = ctx
            .processes
            .spawn(run, || cmd.spawn(), tokio::process::Child::id);
        // Our copies of the pipe's write end must go, or the reader never sees the end.
        drop(cmd);
        let (mut child, leader) = match spawned {
            Ok(c) => c,
            Err(e) => return self.start_failed(&e),
        };
        ctx.started.mark_process(child.id());
        let pgid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .map(Pid::from_raw);

        let tail = ctx.services.live.open(ctx.run_id, ctx.job.output_limit);
        let mut buf = vec![0u8; 16 * 1024];
        let mut reading = true;
        let mut stopping = false;
        let mut killed = false;
        let mut kill_at = Instant::now();
        let status = loop {
            tokio::select! {
                r = reader.read(&mut buf), if reading => match r {
                    Ok(0) | Err(_) => reading = false,
                    Ok(n) => tail.push(&buf[..n]),
                },
                s = child.wait() => break s,
                () = stop.soft.cancelled(), if !stopping => {
                    stopping = true;
                    kill_at = Instant::now() + ctx.job.kill_grace;
                    signal_group(pgid, Signal::SIGTERM);
                }
                () = stop.hard.cancelled(), if !killed => {
                    killed = true;
                    signal_group(pgid, Signal::SIGKILL);
                }
                () = sleep_until(kill_at), if stopping && !killed => {
                    killed = true;
                    signal_group(pgid, Signal::SIGKILL);
                }
            }
        };
        // Whatever is left of the group (background children) goes with the main process;
        // they come back to the daemon (its subreaper) to be reaped by a sweep. Processes that
        // left the group are the periodic sweep's (see `crate::processes`).
        drop(leader);
        signal_group(pgid, Signal::SIGKILL);
        // A sweep after every run (folded into one for a burst): an idle daemon sweeps only
        // when asked.
        ctx.processes.sweep_soon();
        if reading {
            read_rest(&mut reader, &mut buf, &tail).await;
        }
        outcome(status, tail.finish())
    }

    /// The outcome of a program that could not start: retried unless it is missing or not
    /// executable.
    fn start_failed(&self, e: &std::io::Error) -> Outcome {
        let what = match &self.line {
            CommandLine::Shell(_) => "/bin/sh".to_string(),
            CommandLine::Argv(a) => a.first().cloned().unwrap_or_default(),
        };
        let retryable = e.kind() != std::io::ErrorKind::NotFound
            && e.kind() != std::io::ErrorKind::PermissionDenied;
        Outcome::failed(format!("cannot start {what:?}: {e}"), retryable)
    }
}

/// Clears the environment but for `PATH` (the daemon's, else a default), `LANG` and `TZ`.
fn minimal_env(cmd: &mut Command) {
    cmd.env_clear();
    for key in ["LANG", "TZ"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
    );
}

fn output_pipe() -> std::io::Result<((OwnedFd, OwnedFd), pipe::Receiver)> {
    let (tx, rx) = pipe::pipe()?;
    let out = tx.into_blocking_fd()?;
    let err = out.try_clone()?;
    Ok(((out, err), rx))
}

/// Reads what the run's processes still write after the main one exited, for at most
/// [`DRAIN_AFTER_EXIT`].
async fn read_rest(reader: &mut pipe::Receiver, buf: &mut [u8], tail: &LiveRun) {
    let drain_until = Instant::now() + DRAIN_AFTER_EXIT;
    loop {
        tokio::select! {
            r = reader.read(buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => tail.push(&buf[..n]),
            },
            () = sleep_until(drain_until) => return,
        }
    }
}

/// The outcome of a run from its main process's exit status.
fn outcome(status: std::io::Result<std::process::ExitStatus>, output: Option<String>) -> Outcome {
    match status {
        Ok(st) => {
            use std::os::unix::process::ExitStatusExt;
            let success = st.success();
            let error = if success {
                None
            } else if let Some(code) = st.code() {
                Some(format!("exited with status {code}"))
            } else if let Some(sig) = st.signal() {
                let name =
                    Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
                Some(format!("killed by signal {name}"))
            } else {
                Some(format!("ended with {st}"))
            };
            Outcome {
                success,
                exit_code: st.code(),
                error,
                output,
                retryable: true,
                details: None,
            }
        }
        Err(e) => Outcome {
            success: false,
            exit_code: None,
            error: Some(format!("waiting for the process failed: {e}")),
            output,
            retryable: true,
            details: None,
        },
    }
}

/// Signals a process group; whether any process was left in it.
fn signal_group(pgid: Option<Pid>, sig: Signal) -> bool {
    // ESRCH (group already gone) is the normal case after exit.
    pgid.is_some_and(|p| killpg(p, sig).is_ok())
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
}

/// Validates a command job's fields (problems go to `at`); a line runs under `default_shell`
/// unless the job names its own.
pub(crate) fn from_raw(raw: RawCommand, default_shell: &Shell, at: &mut Located<'_>) -> CommandJob {
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
    CommandJob {
        line: raw.line,
        env: raw.env.unwrap_or_default(),
        working_dir,
        user,
        umask,
        clean_env: raw.clean_env.unwrap_or(false),
        shell,
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
