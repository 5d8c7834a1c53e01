//! Limits on a command run's processes (`limits`, `nice`, `io_class`; the daemon's defaults
//! under `[daemon]`): resource limits (`setrlimit`), a nice value and an I/O class, applied in
//! the run's process before it executes the job by the daemon's own binary (`/proc/self/exe
//! __limits SPEC PROGRAM ARGS...`, which sets them and executes the program: no `pre_exec`
//! hook, which would force fork+exec); and what a run stopped by one is recorded as.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::time::Duration;

use serde::Deserialize;

use crate::problem::{Located, parse_duration};
use crate::store::bytes_in_words;

/// The argument that makes the daemon's binary the limits wrapper.
pub const WRAPPER_ARG: &str = "__limits";
/// The daemon's own binary, as its spawned children see it (works when it was replaced or
/// deleted since the daemon started, and for another user: no folder on its path is searched).
const WRAPPER: &str = "/proc/self/exe";

/// The most a size limit may be (1 PiB).
const MAX_LIMIT_SIZE: u64 = 1 << 50;
/// The least `memory` may be: below it not even a shell starts (the limit is on address space).
const MIN_MEMORY: u64 = 4 << 20;
/// The least `open_files` may be: standard input, output, error and a few more.
const MIN_OPEN_FILES: u64 = 8;
/// The most `open_files` may be (the kernel's default `nr_open`).
const MAX_OPEN_FILES: u64 = 1 << 20;
/// The most `processes` may be (the kernel's `pid_max` ceiling).
const MAX_PROCESSES: u64 = 1 << 22;

/// A job's limits (each unset one is not applied).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Address space of each process, bytes (`RLIMIT_AS`).
    pub memory: Option<u64>,
    /// CPU time of each process, whole seconds (`RLIMIT_CPU`: SIGXCPU, then SIGKILL a second
    /// later).
    pub cpu_time: Option<u64>,
    /// Open files per process (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// Processes of the job's user, all of them (`RLIMIT_NPROC`).
    pub processes: Option<u64>,
    /// Largest file a process may write, bytes (`RLIMIT_FSIZE`: SIGXFSZ).
    pub file_size: Option<u64>,
    /// Nice value, -20 (first) to 19 (last).
    pub nice: Option<i32>,
    /// I/O scheduling class.
    pub io: Option<IoClass>,
}

/// An I/O scheduling class (`ioprio_set`), as `ionice` sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    /// Only when no other process wants the disk.
    Idle,
    /// The normal class, at a level from 0 (first) to 7 (last).
    BestEffort(u8),
}

/// The level of `best-effort` when `io_level` is not given (the kernel's for nice 0).
const DEFAULT_IO_LEVEL: u8 = 4;

impl Limits {
    /// Whether none is set (the run takes the plain spawn path).
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// These limits, each unset one taken from `defaults`.
    pub fn or(self, defaults: &Limits) -> Limits {
        Limits {
            memory: self.memory.or(defaults.memory),
            cpu_time: self.cpu_time.or(defaults.cpu_time),
            open_files: self.open_files.or(defaults.open_files),
            processes: self.processes.or(defaults.processes),
            file_size: self.file_size.or(defaults.file_size),
            nice: self.nice.or(defaults.nice),
            io: self.io.or(defaults.io),
        }
    }

    /// The limits for display.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(m) = self.memory {
            out.push(format!("memory {}", bytes_in_words(m)));
        }
        if let Some(c) = self.cpu_time {
            out.push(format!("cpu_time {}", seconds_in_words(c)));
        }
        if let Some(n) = self.open_files {
            out.push(format!("open_files {n}"));
        }
        if let Some(n) = self.processes {
            out.push(format!("processes {n}"));
        }
        if let Some(s) = self.file_size {
            out.push(format!("file_size {}", bytes_in_words(s)));
        }
        if let Some(n) = self.nice {
            out.push(format!("nice {n}"));
        }
        match self.io {
            Some(IoClass::Idle) => out.push("io_class idle".into()),
            Some(IoClass::BestEffort(l)) => out.push(format!("io_class best-effort {l}")),
            None => {}
        }
        out
    }

    /// `argv` run under these limits: the daemon's binary sets them, then executes it.
    pub(super) fn wrap(&self, argv: Vec<OsString>) -> Vec<OsString> {
        if self.is_empty() {
            return argv;
        }
        let mut wrapped = vec![WRAPPER.into(), WRAPPER_ARG.into(), self.spec().into()];
        wrapped.extend(argv);
        wrapped
    }

    /// The limits as the wrapper reads them: `key=value` pairs joined by commas.
    fn spec(&self) -> String {
        let mut parts = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        };
        put("memory", self.memory.map(|v| v.to_string()));
        put("cpu", self.cpu_time.map(|v| v.to_string()));
        put("files", self.open_files.map(|v| v.to_string()));
        put("processes", self.processes.map(|v| v.to_string()));
        put("file_size", self.file_size.map(|v| v.to_string()));
        put("nice", self.nice.map(|v| v.to_string()));
        put(
            "io",
            self.io.map(|c| match c {
                IoClass::Idle => "idle".to_string(),
                IoClass::BestEffort(l) => format!("best-effort:{l}"),
            }),
        );
        parts.join(",")
    }

    /// Reads [`Limits::spec`] back.
    fn from_spec(spec: &str) -> Result<Limits, String> {
        let mut l = Limits::default();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("bad part {part:?}"))?;
            let num = || {
                v.parse::<u64>()
                    .map_err(|_| format!("bad number in {part:?}"))
            };
            match k {
                "memory" => l.memory = Some(num()?),
                "cpu" => l.cpu_time = Some(num()?),
                "files" => l.open_files = Some(num()?),
                "processes" => l.processes = Some(num()?),
                "file_size" => l.file_size = Some(num()?),
                "nice" => l.nice = Some(v.parse().map_err(|_| format!("bad nice {v:?}"))?),
                "io" => l.io = Some(io_class(v, None).map_err(|_| format!("bad io {v:?}"))?),
                _ => return Err(format!("unknown limit {k:?}")),
            }
        }
        Ok(l)
    }
}

/// The `limits` table of a job or of `[daemon]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    memory: Option<String>,
    cpu_time: Option<String>,
    open_files: Option<i64>,
    processes: Option<i64>,
    file_size: Option<String>,
}

/// The limit settings of a job or of `[daemon]`, as written.
#[derive(Debug, Default)]
pub(crate) struct RawLimitSettings {
    pub(crate) limits: Option<RawLimits>,
    pub(crate) nice: Option<i64>,
    pub(crate) io_class: Option<String>,
    pub(crate) io_level: Option<i64>,
}

/// Who a job's processes run as, for the limits that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunsAs {
    /// Root (the daemon is root and the job names no other user).
    Root,
    /// Another user.
    Unprivileged,
}

/// Validates limit settings (problems go to `at`, each on its field, named after `prefix`:
/// `""` in a job, `"daemon."` in the main file).
pub(crate) fn limits(raw: &RawLimitSettings, prefix: &str, at: &mut Located<'_>) -> Limits {
    let mut l = Limits::default();
    let field = |name: &str| format!("{prefix}{name}");
    if let Some(t) = &raw.limits {
        l.memory = size_limit(t.memory.as_deref(), &field("limits.memory"), MIN_MEMORY, at);
        l.file_size = size_limit(t.file_size.as_deref(), &field("limits.file_size"), 1, at);
        l.cpu_time = t.cpu_time.as_deref().and_then(|v| match cpu_seconds(v) {
            Ok(s) => Some(s),
            Err(e) => {
                at.push(Some(&field("limits.cpu_time")), e);
                None
            }
        });
        let files = field("limits.open_files");
        l.open_files = count(t.open_files, &files, MIN_OPEN_FILES, MAX_OPEN_FILES, at);
        l.processes = count(
            t.processes,
            &field("limits.processes"),
            1,
            MAX_PROCESSES,
            at,
        );
    }
    l.nice = raw.nice.and_then(|n| match i32::try_from(n) {
        Ok(n) if (-20..=19).contains(&n) => Some(n),
        _ => {
            at.push(
                Some(&field("nice")),
                format!("{n} is not a nice value; expected -20 (first) to 19 (last)"),
            );
            None
        }
    });
    l.io = io_settings(raw, prefix, at);
    l
}

/// What a job's limits (its own over the daemon's) cannot do for the user it runs as.
pub(crate) fn check_runs_as(l: &Limits, runs_as: RunsAs, at: &mut Located<'_>) {
    if l.processes.is_some() && runs_as == RunsAs::Root {
        at.push(
            Some("limits.processes"),
            "the kernel does not count processes for root: set `user` to run the job as another user (the limit counts every process of that user)",
        );
    }
    if let Some(n) = l.nice.filter(|n| *n < 0)
        && runs_as == RunsAs::Unprivileged
    {
        at.push(
            Some("nice"),
            format!(
                "{n} would put the job before others, which only root may ask; expected 0 to 19"
            ),
        );
    }
}

fn io_settings(raw: &RawLimitSettings, prefix: &str, at: &mut Located<'_>) -> Option<IoClass> {
    let Some(class) = raw.io_class.as_deref() else {
        if raw.io_level.is_some() {
            at.push(
                Some(&format!("{prefix}io_level")),
                "applies with io_class = \"best-effort\" only",
            );
        }
        return None;
    };
    match io_class(class, raw.io_level) {
        Ok(c) => Some(c),
        Err((field, e)) => {
            at.push(Some(&format!("{prefix}{field}")), e);
            None
        }
    }
}

/// `"idle"`, `"best-effort"` (at `level`, or `best-effort:N` as the wrapper writes it).
fn io_class(text: &str, level: Option<i64>) -> Result<IoClass, (&'static str, String)> {
    let (name, inline) = match text.split_once(':') {
        Some((n, l)) => (n, l.parse::<i64>().ok()),
        None => (text, None),
    };
    match name {
        "idle" if level.is_none() => Ok(IoClass::Idle),
        "idle" => Err((
            "io_level",
            "applies with io_class = \"best-effort\" only".into(),
        )),
        "best-effort" => match level.or(inline).map(u8::try_from) {
            None => Ok(IoClass::BestEffort(DEFAULT_IO_LEVEL)),
            Some(Ok(l)) if l <= 7 => Ok(IoClass::BestEffort(l)),
            _ => Err((
                "io_level",
                format!(
                    "{} is not a level; expected 0 (first) to 7 (last)",
                    level.unwrap_or(-1)
                ),
            )),
        },
        _ => Err((
            "io_class",
            format!("{text:?} is not an I/O class; expected \"idle\" or \"best-effort\""),
        )),
    }
}

fn size_limit(value: Option<&str>, field: &str, min: u64, at: &mut Located<'_>) -> Option<u64> {
    let v = value?;
    match crate::problem::parse_size_up_to(v, MAX_LIMIT_SIZE, "\"1PiB\"") {
        Ok(n) if n < min => {
            at.push(
                Some(field),
                format!(
                    "{v:?} is too small; expected at least {}",
                    bytes_in_words(min)
                ),
            );
            None
        }
        Ok(n) => Some(n),
        Err(e) => {
            at.push(Some(field), e);
            None
        }
    }
}

fn count(value: Option<i64>, field: &str, min: u64, max: u64, at: &mut Located<'_>) -> Option<u64> {
    let v = value?;
    match u64::try_from(v) {
        Ok(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            at.push(
                Some(field),
                format!("{v} is out of range; expected {min} to {max}"),
            );
            None
        }
    }
}

/// A CPU time limit in whole seconds (the kernel counts it so).
fn cpu_seconds(text: &str) -> Result<u64, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_secs(1) || d.subsec_nanos() != 0 {
        return Err(format!(
            "{text:?} is not whole seconds; the kernel limits CPU time in seconds, e.g. \"30s\" or \"10m\""
        ));
    }
    Ok(d.as_secs())
}

/// Whole seconds as a person says them: "10 min", "90 s", "1 h".
fn seconds_in_words(s: u64) -> String {
    match s {
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// How a run under `limits` that ended so is told: the limit it hit, in words, when its end
/// says so; `None` leaves the plain words. `killed_by_daemon`: the daemon itself sent the
/// signal (timeout, stop).
pub(super) fn stopped_by(
    limits: &Limits,
    signal: Option<nix::sys::signal::Signal>,
    output: Option<&str>,
    usage: &crate::store::Usage,
    killed_by_daemon: bool,
) -> Option<String> {
    use nix::sys::signal::Signal;
    let cpu_limit = limits.cpu_time;
    // At its limit, as the accounting tells it (which can be a few percent under the count the
    // kernel stops a process at).
    let used_cpu =
        |l: u64| usage.cpu_us() >= i64::try_from(l.saturating_mul(900_000)).unwrap_or(i64::MAX);
    match (signal, cpu_limit, limits.file_size, limits.memory) {
        // SIGKILL a second after an ignored SIGXCPU.
        (Some(s), Some(l), ..)
            if s == Signal::SIGXCPU
                || (s == Signal::SIGKILL && !killed_by_daemon && used_cpu(l)) =>
        {
            Some(format!(
                "used its {} of CPU time (limits.cpu_time)",
                seconds_in_words(l)
            ))
        }
        (Some(Signal::SIGXFSZ), _, Some(l), _) => Some(format!(
            "wrote past its file size limit of {} (limits.file_size)",
            bytes_in_words(l)
        )),
        (_, _, _, Some(l)) if output.is_some_and(allocation_failed) => Some(format!(
            "exceeded its memory limit of {} (limits.memory): an allocation failed",
            bytes_in_words(l)
        )),
        (Some(s @ (Signal::SIGABRT | Signal::SIGSEGV)), _, _, Some(l)) => Some(format!(
            "killed by signal {s}: probably it exceeded its memory limit of {} (limits.memory)",
            bytes_in_words(l)
        )),
        (Some(Signal::SIGKILL), ..) if !killed_by_daemon => Some(format!(
            "killed by SIGKILL: probably the kernel's out-of-memory killer (peak {})",
            usage.peak_in_words()
        )),
        _ => None,
    }
}

/// Whether a program's last output says an allocation failed (C, Python, Rust, C++, Java, Go,
/// the shell).
fn allocation_failed(output: &str) -> bool {
    const SIGNS: [&str; 7] = [
        "Cannot allocate memory",
        "MemoryError",
        "memory allocation of",
        "bad_alloc",
        "OutOfMemoryError",
        "out of memory",
        "Out of memory",
    ];
    let tail = output
        .get(output.len().saturating_sub(4096)..)
        .unwrap_or(output);
    SIGNS.iter().any(|s| tail.contains(s))
}

/// The wrapper: when the binary was started as `hourglass __limits SPEC PROGRAM ARGS...`, sets
/// the limits on itself and executes the program (returns only when that fails: exit 126, or
/// 127 for a program not found, as a shell does); `None` for any other command line.
pub fn wrapper_main() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != WRAPPER_ARG {
        return None;
    }
    let spec = args.next().unwrap_or_default();
    let argv: Vec<OsString> = args.collect();
    let fail = |what: String, code: u8| {
        eprintln!("hourglass: {what}");
        Some(ExitCode::from(code))
    };
    let limits = match Limits::from_spec(&spec.to_string_lossy()) {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot read the limits: {e}"), 126),
    };
    if let Err(e) = apply(&limits) {
        return fail(format!("cannot apply the job's limits: {e}"), 126);
    }
    let Some((program, rest)) = argv.split_first() else {
        return fail("no program to run".into(), 126);
    };
    let e = std::process::Command::new(program).args(rest).exec();
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    fail(
        format!("cannot start {:?}: {e}", program.to_string_lossy()),
        code,
    )
}

/// Sets `limits` on this process (inherited by what it executes and starts).
fn apply(limits: &Limits) -> Result<(), String> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let set = |what: &str, resource: Resource, soft: Option<u64>, hard: Option<u64>| {
        let Some(soft) = soft else { return Ok(()) };
        // A ceiling above the one the daemon already has (its unit's LimitNOFILE=, say) is
        // the daemon's: only a privileged process could raise it, and it would bound nothing.
        let most = getrlimit(resource).maximum.unwrap_or(u64::MAX);
        let hard = hard.unwrap_or(soft).min(most);
        let limit = Rlimit {
            current: Some(soft.min(hard)),
            maximum: Some(hard),
        };
        setrlimit(resource, limit).map_err(|e| format!("{what}: {e}"))
    };
    set("memory", Resource::As, limits.memory, None)?;
    // SIGXCPU at the limit, SIGKILL a second later for a process that ignores it.
    set(
        "cpu_time",
        Resource::Cpu,
        limits.cpu_time,
        limits.cpu_time.map(|s| s + 1),
    )?;
    set("open_files", Resource::Nofile, limits.open_files, None)?;
    set("processes", Resource::Nproc, limits.processes, None)?;
    set("file_size", Resource::Fsize, limits.file_size, None)?;
    if let Some(n) = limits.nice {
        rustix::process::setpriority_process(None, n).map_err(|e| format!("nice: {e}"))?;
    }
    if let Some(class) = limits.io {
        set_io_class(class).map_err(|e| format!("io_class: {e}"))?;
    }
    Ok(())
}

/// `ioprio_set(IOPRIO_WHO_PROCESS, 0, class << 13 | level)` (no wrapper in libc).
#[allow(unsafe_code)]
fn set_io_class(class: IoClass) -> std::io::Result<()> {
    const IOPRIO_WHO_PROCESS: nix::libc::c_long = 1;
    const CLASS_SHIFT: u32 = 13;
    let value: nix::libc::c_long = match class {
        IoClass::Idle => 3 << CLASS_SHIFT,
        IoClass::BestEffort(level) => (2 << CLASS_SHIFT) | nix::libc::c_long::from(level),
    };
    // SAFETY: `ioprio_set` takes three integers and touches no memory of ours.
    let r = unsafe { nix::libc::syscall(nix::libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_reads_back_as_written() {
        let l = Limits {
            memory: Some(100 << 20),
            cpu_time: Some(600),
            open_files: Some(4096),
            processes: Some(256),
            file_size: Some(10 << 30),
            nice: Some(-5),
            io: Some(IoClass::BestEffort(7)),
        };
        assert_eq!(Limits::from_spec(&l.spec()), Ok(l));
        let idle = Limits {
            io: Some(IoClass::Idle),
            ..Limits::default()
        };
        assert_eq!(Limits::from_spec(&idle.spec()), Ok(idle));
        assert!(Limits::from_spec("memory=x").is_err());
        assert!(Limits::default().wrap(vec!["true".into()]) == vec![OsString::from("true")]);
    }

    #[test]
    fn sizes_and_times_read_as_people_say_them() {
        assert_eq!(seconds_in_words(600), "10 min");
        assert_eq!(seconds_in_words(1), "1 s");
        assert_eq!(cpu_seconds("10m"), Ok(600));
        assert!(cpu_seconds("1500ms").is_err());
    }
}
