//! Running a command once: its process (in a group of its own, under its limits), its output
//! read as it comes, its stop (SIGTERM, then SIGKILL after the grace), its end reaped with what
//! it cost, and what is left of its group reaped for the run.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::time::{Instant, sleep, sleep_until};

use super::super::output::LiveRun;
use super::super::shell::Shell;
use super::super::{AttemptContext, Outcome, StopSignal};
use super::{CommandJob, CommandLine};
use crate::processes::wait::{reap_group, wait_exit};
use crate::store::Usage;

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
fn argv_of<S: AsRef<std::ffi::OsStr>>(argv: &[S]) -> Vec<OsString> {
    argv.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// A program and its arguments, run by `/bin/sh` after it set the umask `mask`.
fn umask_argv<S: AsRef<std::ffi::OsStr>>(mask: u32, argv: &[S]) -> Vec<OsString> {
    let mut v = argv_of(&[
        "/bin/sh".to_string(),
        "-c".into(),
        format!("umask {mask:03o} && exec \"$0\" \"$@\""),
    ]);
    v.extend(argv_of(argv));
    v
}

/// How long output is still read after the main process exited (a background process may hold
/// the pipe open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

impl CommandJob {
    /// The program and its arguments: the job's, under its umask, under its limits.
    fn argv(&self) -> Vec<OsString> {
        let argv = match (&self.line, self.umask) {
            (CommandLine::Shell(line), None) => argv_of(&self.shell.argv(line)),
            (CommandLine::Argv(argv), None) => argv_of(argv),
            // The shell sets the umask: a `pre_exec` hook would force fork+exec (see below).
            (CommandLine::Shell(line), Some(mask)) if self.shell == Shell::Sh => argv_of(&[
                "/bin/sh".to_string(),
                "-c".into(),
                format!("umask {mask:03o}\n{line}"),
            ]),
            (CommandLine::Shell(line), Some(mask)) => umask_argv(mask, &self.shell.argv(line)),
            (CommandLine::Argv(argv), Some(mask)) => umask_argv(mask, argv),
        };
        self.limits.wrap(argv)
    }

    fn command(&self, ctx: &AttemptContext<'_>) -> Command {
        let argv = self.argv();
        let mut cmd = Command::new(argv.first().map_or_else(OsString::new, Clone::clone));
        cmd.args(argv.iter().skip(1));
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
        cmd.envs(super::super::after::parent_env(ctx.parents));
        cmd.envs(&self.env);
        if let Some(dir) = &self.working_dir {
            cmd.current_dir(dir);
        }
        // No `pre_exec` hook: it would force fork+exec, whose cost grows with the daemon's
        // memory (measured: 10,000 spawns 4.4 s with posix_spawn, 9.1 s with fork, 90 s with
        // fork beside 200 MB of heap); limits are set by a wrapper instead. Crash leftovers are
        // stopped by the next start ([`crate::processes::stop_orphans`]); a run dropped before
        // its end kills its group ([`GroupGuard`]).
        cmd.stdin(Stdio::null()).process_group(0);
        cmd
    }

    /// Runs the command once; see [`super::super::JobKind::execute`].
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
        let spawned = ctx.processes.spawn(run, || cmd.spawn(), |c| Some(c.id()));
        // Our copies of the pipe's write end must go, or the reader never sees the end.
        drop(cmd);
        let (child, leader) = match spawned {
            Ok(c) => c,
            Err(e) => return self.start_failed(&e),
        };
        ctx.started.mark_process(Some(child.id()));
        // The program's peak counts the daemon's own at the spawn: only a larger one is its.
        let spawner_peak = crate::processes::wait::own_peak_rss();
        let Some(pid) = i32::try_from(child.id()).ok().map(Pid::from_raw) else {
            return Outcome::failed("the process id is out of range", true);
        };
        let group = GroupGuard(Some(pid));
        let tail = ctx.services.live.open(ctx.run_id, ctx.job.output_limit);
        let mut buf = vec![0u8; 16 * 1024];
        let mut watched = Watched {
            reader: &mut reader,
            buf: &mut buf,
            tail: &tail,
            reading: true,
            stopped: false,
        };
        let status = watched.watch(pid, ctx, stop, group).await;
        let Watched {
            reading, stopped, ..
        } = watched;
        let drain_until = Instant::now() + DRAIN_AFTER_EXIT;
        let (left, ()) = tokio::join!(reap_left(pid, drain_until), async {
            if reading {
                read_rest(&mut reader, &mut buf, &tail, drain_until).await;
            }
        });
        let swept = leader.map(crate::processes::Leader::finish);
        // A sweep after every run (folded into one for a burst): an idle daemon sweeps only
        // when asked.
        ctx.processes.sweep_soon();
        let status = status.map(|(st, mut usage)| {
            usage.add(&left);
            usage.add(&swept.unwrap_or_default());
            usage.peak_rss_bytes = usage
                .peak_rss_bytes
                .filter(|p| spawner_peak.is_none_or(|s| *p > s));
            (st, usage)
        });
        self.outcome(status, tail.finish(), stopped)
    }

    /// The outcome of a run from its main process's exit status (what stopped it in words
    /// when it was a limit; `stopped`: the daemon stopped it).
    fn outcome(
        &self,
        status: std::io::Result<(std::process::ExitStatus, Usage)>,
        output: Option<String>,
        stopped: bool,
    ) -> Outcome {
        use std::os::unix::process::ExitStatusExt;
        let (st, usage) = match status {
            Ok(s) => s,
            Err(e) => {
                return Outcome {
                    output,
                    ..Outcome::failed(format!("waiting for the process failed: {e}"), true)
                };
            }
        };
        let signal = st.signal().and_then(|s| Signal::try_from(s).ok());
        // A shell tells a command killed by signal N as its own exit status 128 + N.
        let shell_told = match (&self.line, st.code()) {
            (CommandLine::Shell(_), Some(code)) if code > 128 => Signal::try_from(code - 128).ok(),
            _ => None,
        };
        let error = (!st.success()).then(|| {
            let plain = match (st.code(), signal) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                (None, None) => format!("ended with {st}"),
            };
            let killed_by = signal.or(shell_told);
            match super::limits::stopped_by(
                &self.limits,
                killed_by,
                output.as_deref(),
                &usage,
                stopped,
            ) {
                Some(words) => format!("{words}; {plain}"),
                None => plain,
            }
        });
        Outcome {
            success: st.success(),
            exit_code: st.code(),
            error,
            output,
            retryable: true,
            details: None,
            usage: Some(usage),
        }
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

/// Reads what the run's processes still write after the main one exited, until `drain_until`.
async fn read_rest(
    reader: &mut pipe::Receiver,
    buf: &mut [u8],
    tail: &LiveRun,
    drain_until: Instant,
) {
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

/// Signals a process group (ESRCH, the group already gone, is the normal case after exit).
fn signal_group(pgid: Pid, sig: Signal) {
    let _ = killpg(pgid, sig);
}

/// Kills a run's process group when dropped before its main process was reaped (the run was
/// dropped): nothing it started outlives it.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            signal_group(pgid, Signal::SIGKILL);
        }
    }
}

/// A running command as its watch sees it: its output, and whether the daemon stopped it.
struct Watched<'a> {
    reader: &'a mut pipe::Receiver,
    buf: &'a mut [u8],
    tail: &'a LiveRun,
    /// The output pipe is still open.
    reading: bool,
    /// The daemon asked it to stop (timeout, shutdown, replaced).
    stopped: bool,
}

impl Watched<'_> {
    /// Reads the output and passes on the stop signals until the main process exits; then
    /// kills what is left of its group (before reaping it: the group id still names it) and
    /// reaps it with what it cost.
    async fn watch(
        &mut self,
        pid: Pid,
        ctx: &AttemptContext<'_>,
        stop: &StopSignal,
        mut group: GroupGuard,
    ) -> std::io::Result<(std::process::ExitStatus, Usage)> {
        let exited = wait_exit(pid, || {
            group.0 = None;
            signal_group(pid, Signal::SIGKILL);
        });
        tokio::pin!(exited);
        let mut killed = false;
        let mut kill_at = Instant::now();
        loop {
            tokio::select! {
                r = self.reader.read(self.buf), if self.reading => match r {
                    Ok(0) | Err(_) => self.reading = false,
                    Ok(n) => self.tail.push(&self.buf[..n]),
                },
                s = &mut exited => return s,
                () = stop.soft.cancelled(), if !self.stopped => {
                    self.stopped = true;
                    kill_at = Instant::now() + ctx.job.kill_grace;
                    signal_group(pid, Signal::SIGTERM);
                }
                () = stop.hard.cancelled(), if !killed => {
                    killed = true;
                    self.stopped = true;
                    signal_group(pid, Signal::SIGKILL);
                }
                () = sleep_until(kill_at), if self.stopped && !killed => {
                    killed = true;
                    signal_group(pid, Signal::SIGKILL);
                }
            }
        }
    }
}

/// Reaps what is left of the run's group (killed) until none is left or `until`: what it cost.
async fn reap_left(pgid: Pid, until: Instant) -> Usage {
    let mut usage = Usage::default();
    loop {
        let r = reap_group(pgid);
        usage.add(&r.usage);
        if !r.alive || Instant::now() >= until {
            return usage;
        }
        sleep(Duration::from_millis(1)).await;
    }
}
