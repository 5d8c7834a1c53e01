//! Waiting for a command's processes with what they cost: a pidfd says when the main process
//! exited, then `wait4` reaps it with its `rusage` (the kernel's accounting of the process and
//! of the descendants it waited for); what its group leaves behind is reaped the same way.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::libc;
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::store::Usage;

/// Waits until the daemon's child `pid` exits and reaps it: its exit status and what it (with
/// the descendants it waited for) cost. `before_reap` is called once it has exited, while its
/// pid (and process group id) still names it. Needs Linux 5.3 (pidfd).
///
/// # Errors
/// When no pidfd can be had for it (not the daemon's child, an old kernel) or the wait fails.
pub async fn wait_exit(pid: Pid, before_reap: impl FnOnce()) -> io::Result<(ExitStatus, Usage)> {
    let raw = rustix::process::Pid::from_raw(pid.as_raw())
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let exited = match rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()) {
        // Readable once the process has exited (a zombie, for `wait4` to reap).
        Ok(pidfd) => readiness(pidfd)?,
        // No pidfd (a kernel before 5.3, no descriptor left): it is looked at instead.
        Err(_) => return poll_exit(pid, before_reap).await,
    };
    let _ = exited.readable().await?;
    before_reap();
    loop {
        if let Some(exit) = wait4(pid.as_raw(), libc::WNOHANG)? {
            return Ok(exit);
        }
        exited.readable().await?.clear_ready();
    }
}

/// [`wait_exit`] without a pidfd: whether it has exited is asked (without reaping it) every
/// 5 ms at first, then less often, up to every 250 ms.
async fn poll_exit(pid: Pid, before_reap: impl FnOnce()) -> io::Result<(ExitStatus, Usage)> {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let mut every = std::time::Duration::from_millis(5);
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    while waitid(Id::Pid(pid), flags).map_err(io::Error::from)? == WaitStatus::StillAlive {
        tokio::time::sleep(every).await;
        every = (every * 2).min(std::time::Duration::from_millis(250));
    }
    before_reap();
    wait4(pid.as_raw(), 0)?.ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))
}

/// The pidfd registered with the runtime, to be told when it is readable.
#[allow(unsafe_code)]
fn readiness(pidfd: std::os::fd::OwnedFd) -> io::Result<AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: the `AsyncFd` owns the descriptor: it stays open, naming the same pidfd, until
    // the `AsyncFd` is dropped.
    unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }.map_err(io::Error::from)
}

/// What reaping a process group's exited members found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupReaped {
    /// What the reaped members cost.
    pub usage: Usage,
    /// How many were reaped.
    pub reaped: usize,
    /// Whether members that are the daemon's children are still alive (not yet exited).
    pub alive: bool,
}

/// Reaps, without waiting, the daemon's exited children in process group `pgid` (the members a
/// run's main process left behind, re-parented to the daemon as its subreaper).
pub fn reap_group(pgid: Pid) -> GroupReaped {
    let mut found = GroupReaped::default();
    loop {
        match wait4(-pgid.as_raw(), libc::WNOHANG) {
            Ok(Some((_, usage))) => {
                found.usage.add(&usage);
                found.reaped += 1;
            }
            Ok(None) => {
                found.alive = true;
                return found;
            }
            // ECHILD: no child of the daemon is left in the group.
            Err(_) => return found,
        }
    }
}

/// Reaps the daemon's exited child `pid`, if it has exited: what it cost.
pub(super) fn reap(pid: Pid) -> Option<Usage> {
    wait4(pid.as_raw(), libc::WNOHANG)
        .ok()
        .flatten()
        .map(|(_, usage)| usage)
}

/// `wait4(2)`: `None` when `WNOHANG` found no exited child; retried on `EINTR`.
#[allow(unsafe_code)]
fn wait4(pid: i32, options: libc::c_int) -> io::Result<Option<(ExitStatus, Usage)>> {
    loop {
        let mut status: libc::c_int = 0;
        let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `wait4` writes an int and a `rusage` through pointers to locals that outlive
        // the call; a zeroed `rusage` (integers only) is a valid value whatever it writes.
        let (got, ru) = unsafe {
            let got = libc::wait4(pid, &raw mut status, options, ru.as_mut_ptr());
            (got, ru.assume_init())
        };
        if got > 0 {
            return Ok(Some((ExitStatus::from_raw(status), usage_of(&ru))));
        }
        if got == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The largest resident set this process's memory has had (`VmHWM`), bytes: what the kernel
/// counts in the peak of every program it spawns. Cheaply when it can be: `getrusage`'s peak is
/// the larger of it and the peak the daemon's own start inherited from whatever spawned it
/// (fixed for the daemon's life), so once above that it is `VmHWM` itself; until then
/// `/proc/self/status` is read (measured: 1.4 µs against 32 µs).
pub fn own_peak_rss() -> Option<i64> {
    static INHERITED: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let rusage_peak = || {
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
            .ok()
            .map(|u| u.max_rss().saturating_mul(1024))
    };
    let inherited = *INHERITED.get_or_init(|| {
        // Read together: a getrusage peak above VmHWM is the inherited one.
        match (rusage_peak(), high_water_mark()) {
            (Some(g), Some(h)) if g > h => g,
            _ => 0,
        }
    });
    match rusage_peak() {
        Some(g) if g > inherited => Some(g),
        _ => high_water_mark(),
    }
}

/// `VmHWM` of `/proc/self/status`, bytes.
fn high_water_mark() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib.saturating_mul(1024))
}

/// The kernel's `rusage` as the history keeps it (`ru_maxrss` is in KiB on Linux).
fn usage_of(ru: &libc::rusage) -> Usage {
    let micros = |t: libc::timeval| t.tv_sec.saturating_mul(1_000_000).saturating_add(t.tv_usec);
    Usage {
        cpu_user_us: micros(ru.ru_utime),
        cpu_system_us: micros(ru.ru_stime),
        peak_rss_bytes: Some(ru.ru_maxrss.saturating_mul(1024)),
        blocks_read: ru.ru_inblock,
        blocks_written: ru.ru_oublock,
        voluntary_switches: ru.ru_nvcsw,
        involuntary_switches: ru.ru_nivcsw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_is_reaped_with_its_cpu_time_and_peak_memory() {
        // A shell that burns CPU in a child it waits for: the child's cost is in the shell's.
        let script =
            "python3 -c 'b = bytearray(64 << 20)\nfor i in range(3_000_000): pass' && exit 3";
        #[allow(clippy::zombie_processes, reason = "reaped by `wait_exit`")]
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        let (status, usage) = wait_exit(pid, || ()).await.unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(usage.peak_rss_bytes >= Some(64 << 20), "{usage:?}");
        assert!(usage.cpu_us() > 10_000, "{usage:?}");
        // Reaped: a second wait finds no such child.
        assert!(wait_exit(pid, || ()).await.is_err());
    }

    #[tokio::test]
    async fn without_a_pidfd_the_exit_is_looked_at_and_reaped_the_same() {
        #[allow(clippy::zombie_processes, reason = "reaped by `poll_exit`")]
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 0.1; exit 4"])
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        let mut told = false;
        let (status, usage) = poll_exit(pid, || told = true).await.unwrap();
        assert!(told);
        assert_eq!(status.code(), Some(4));
        assert!(usage.voluntary_switches > 0, "{usage:?}");
    }

    #[test]
    fn the_own_peak_is_the_memory_s_high_water_mark() {
        // Whichever way it was read, it is the mark of its moment (the mark only grows).
        let before = high_water_mark().unwrap();
        let peak = own_peak_rss().unwrap();
        let after = high_water_mark().unwrap();
        assert!(before <= peak && peak <= after, "{before} {peak} {after}");
    }

    #[test]
    fn a_group_s_exited_members_are_reaped_and_its_live_ones_reported() {
        use std::os::unix::process::CommandExt;
        #[allow(clippy::zombie_processes, reason = "reaped by `reap_group`")]
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 0"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut found = GroupReaped::default();
        while found.reaped == 0 && std::time::Instant::now() < deadline {
            found = reap_group(pid);
            std::thread::yield_now();
        }
        assert_eq!(found.reaped, 1);
        assert_eq!(reap_group(pid), GroupReaped::default());
    }
}
