//! The processes of command runs: their process groups (so that every exit path can kill what
//! is left), the marker each carries in its environment, the daemon as their child subreaper,
//! and the sweeps that end what outlived its run (`setsid`, a double fork) or its daemon
//! (`kill -9`).
//!
//! Every command gets `HOURGLASS_DATABASE_ID` (the history database's own id) and
//! `HOURGLASS_RUN_ID`. The daemon is a child subreaper: a process that leaves its run's group
//! and loses its parent is re-parented to the daemon instead of init, where the sweep finds it;
//! once its run has ended, it is killed. At start, every process carrying the database's id
//! was left by a daemon that died without stopping its runs: it is killed, and its run id
//! reported so that the run gets a row.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock, RwLock};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::store::Usage;

pub mod wait;

/// The variable naming the history database a job's daemon writes to.
pub const DATABASE_ID_VAR: &str = "HOURGLASS_DATABASE_ID";
/// The variable naming a job's run.
pub const RUN_ID_VAR: &str = "HOURGLASS_RUN_ID";

/// The runs with a process going, and what the daemon reaped for them.
#[derive(Debug, Default)]
struct Runs {
    /// Each running command's main process (which leads its process group) → its run.
    leaders: HashMap<Pid, Run>,
    /// What the processes a sweep reaped for a run still going cost, by run id (taken by
    /// [`Leader::finish`]).
    reaped: HashMap<i64, Usage>,
    /// Processes re-parented to the daemon that carry the id of a run still going, by pid: a
    /// zombie's environment can no longer be read when it is reaped.
    escaped: HashMap<Pid, i64>,
}

/// The command processes of one daemon.
#[derive(Debug, Default)]
pub struct Processes {
    /// The runs with a process going.
    runs: Mutex<Runs>,
    /// Held for reading from a spawn until its leader is registered; for writing while a sweep
    /// acts, so that it never takes a leader not yet registered for an escaped process.
    spawning: RwLock<()>,
    /// The history database's id, which every job carries in [`DATABASE_ID_VAR`].
    marker: OnceLock<String>,
    /// Told when a run ended with processes left in its group, so that a sweep comes soon.
    ended: tokio::sync::Notify,
}

/// A running command's run id and the user it runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The run id.
    pub id: i64,
    /// The user id its processes run as.
    pub uid: u32,
}

/// Entries a table of runs keeps room for once it is empty.
const KEPT_CAPACITY: usize = 64;

/// A registered leader; dropping it forgets the leader and asks for a sweep.
#[derive(Debug)]
pub struct Leader<'a> {
    processes: &'a Processes,
    pid: Pid,
}

impl Leader<'_> {
    /// Forgets the leader (as dropping it does) and returns what the processes a sweep reaped
    /// for its run cost (they had left the run's group, or their parent died).
    pub fn finish(self) -> Usage {
        self.forget()
    }

    fn forget(&self) -> Usage {
        let Ok(mut runs) = self.processes.runs.lock() else {
            return Usage::default();
        };
        let Some(run) = runs.leaders.remove(&self.pid) else {
            return Usage::default();
        };
        let mut usage = runs.reaped.remove(&run.id).unwrap_or_default();
        // Processes of the run a sweep saw alive after they left its group: reaped now if
        // they have exited since (those still alive are killed by the next sweep).
        runs.escaped.retain(|pid, id| {
            if *id != run.id {
                return true;
            }
            if let Some(u) = wait::reap(*pid) {
                usage.add(&u);
            }
            false
        });
        if runs.leaders.is_empty() {
            // A burst's thousands of runs leave no table behind.
            runs.leaders.shrink_to(KEPT_CAPACITY);
            runs.reaped.shrink_to(KEPT_CAPACITY);
        }
        usage
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.forget();
    }
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Processes killed (their run had ended, or the daemon is stopping).
    pub killed: usize,
    /// Exited re-parented processes reaped.
    pub reaped: usize,
    /// Re-parented processes still alive after the sweep (their run goes on).
    pub left: usize,
}

/// A process of a dead daemon's run, found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// Its pid (killed).
    pub pid: u32,
    /// `HOURGLASS_RUN_ID`, when it still had it.
    pub run_id: Option<i64>,
    /// `HOURGLASS_JOB`.
    pub job: Option<String>,
    /// `HOURGLASS_SCHEDULED_FOR`.
    pub scheduled_for: Option<String>,
    /// `HOURGLASS_ATTEMPT`.
    pub attempt: Option<u32>,
    /// `HOURGLASS_TRIGGER`.
    pub trigger: Option<String>,
}

impl Processes {
    /// Makes this daemon the child subreaper of its runs' processes. Call once, at start.
    ///
    /// # Errors
    /// When the kernel refuses (not Linux).
    pub fn become_subreaper() -> nix::Result<()> {
        nix::sys::prctl::set_child_subreaper(true)
    }

    /// Sets the history database's id, which every job started afterwards carries.
    pub fn set_marker(&self, database_id: &str) {
        let _ = self.marker.set(database_id.to_string());
    }

    /// The history database's id, once set.
    pub fn marker(&self) -> Option<&str> {
        self.marker.get().map(String::as_str)
    }

    /// Spawns with `spawn` and registers the leader it returns (its pid) for `run`; a sweep
    /// waits for both to be done.
    pub fn spawn<T>(
        &self,
        run: Run,
        spawn: impl FnOnce() -> std::io::Result<T>,
        pid_of: impl Fn(&T) -> Option<u32>,
    ) -> std::io::Result<(T, Option<Leader<'_>>)> {
        let _guard = self.spawning.read();
        let spawned = spawn()?;
        let leader = pid_of(&spawned)
            .and_then(|p| i32::try_from(p).ok())
            .map(|p| {
                let pid = Pid::from_raw(p);
                if let Ok(mut runs) = self.runs.lock() {
                    runs.leaders.insert(pid, run);
                }
                Leader {
                    processes: self,
                    pid,
                }
            });
        Ok((spawned, leader))
    }

    /// Sends `sig` to every running command's process group; returns how many there were.
    pub fn signal_all(&self, sig: Signal) -> usize {
        let groups: Vec<Pid> = match self.runs.lock() {
            Ok(runs) => runs.leaders.keys().copied().collect(),
            Err(_) => Vec::new(),
        };
        for p in &groups {
            let _ = killpg(*p, sig);
        }
        groups.len()
    }

    /// Whether runs with a process are going.
    pub fn has_runs(&self) -> bool {
        self.runs
            .lock()
            .map_or(true, |runs| !runs.leaders.is_empty())
    }

    /// Asks for a sweep soon: a run ended; what it left behind in its group comes back to the
    /// daemon as it kills them, and processes that left the group come back as their parents
    /// die. (Sweeps also come every few seconds while runs go.)
    pub fn sweep_soon(&self) {
        self.ended.notify_one();
    }

    /// Waits until a sweep is asked for.
    pub async fn sweep_asked(&self) {
        self.ended.notified().await;
    }

    /// Reaps the daemon's exited re-parented children (what they cost goes to their run while
    /// it goes on) and kills those whose run has ended (all of them when `stopping`). A process
    /// whose run id cannot be read (another user's, without `CAP_SYS_PTRACE`, or one that
    /// cleared its environment) is killed once no run of its user is going on. Reads `/proc`:
    /// call it on a blocking thread.
    pub fn sweep(&self, stopping: bool) -> Swept {
        let me = nix::unistd::getpid();
        // Read without the lock (it can take milliseconds), act under it after a fresh look:
        // a process seen here may have been a leader whose spawn was not yet registered.
        let candidates: Vec<Pid> = {
            let leaders = self.leaders();
            children_of(me)
                .into_iter()
                .filter(|p| !leaders.contains_key(p))
                .collect()
        };
        let mut swept = Swept::default();
        if candidates.is_empty() {
            return swept;
        }
        let _guard = self.spawning.write();
        let leaders = self.leaders();
        let live_runs: HashSet<i64> = leaders.values().map(|r| r.id).collect();
        let live_users: HashSet<u32> = leaders.values().map(|r| r.uid).collect();
        let my_group = nix::unistd::getpgrp();
        for pid in candidates {
            if leaders.contains_key(&pid) {
                continue;
            }
            let Some(stat) = Stat::read(pid) else {
                continue;
            };
            if stat.ppid != me {
                continue;
            }
            if stat.state == 'Z' {
                if let Some(usage) = wait::reap(pid) {
                    swept.reaped += 1;
                    self.count_for_run(pid, stat.pgrp, &usage);
                }
                continue;
            }
            let run = environ(pid).and_then(|env| var(&env, RUN_ID_VAR)?.parse::<i64>().ok());
            let over = match run {
                Some(id) => !live_runs.contains(&id),
                // The daemon's own helpers (SFTP's ssh) carry no run id: spared.
                None => {
                    !is_helper(pid) && uid_of(pid).is_some_and(|uid| !live_users.contains(&uid))
                }
            };
            if stopping || over {
                let _ = kill(pid, Signal::SIGKILL);
                if stat.pgrp != my_group && !leaders.contains_key(&stat.pgrp) {
                    let _ = killpg(stat.pgrp, Signal::SIGKILL);
                }
                swept.killed += 1;
            } else {
                swept.left += 1;
                if let (Some(id), Ok(mut runs)) = (run, self.runs.lock()) {
                    runs.escaped.insert(pid, id);
                }
            }
        }
        if let Ok(mut runs) = self.runs.lock() {
            runs.escaped.retain(|_, id| live_runs.contains(id));
        }
        swept
    }

    /// The leaders now, by pid.
    fn leaders(&self) -> HashMap<Pid, Run> {
        self.runs
            .lock()
            .map(|runs| runs.leaders.clone())
            .unwrap_or_default()
    }

    /// Adds what a reaped process cost to its run, if that run is still going: the run of its
    /// process group's leader, else the one it carried when a sweep saw it alive.
    fn count_for_run(&self, pid: Pid, group: Pid, usage: &Usage) {
        let Ok(mut runs) = self.runs.lock() else {
            return;
        };
        let escaped = runs.escaped.remove(&pid);
        let run = runs.leaders.get(&group).map(|r| r.id).or(escaped);
        if let Some(id) = run
            && runs.leaders.values().any(|r| r.id == id)
        {
            runs.reaped.entry(id).or_default().add(usage);
        }
    }
}

/// Kills every process carrying `database_id` in its environment (but this process and its
/// ancestors): what the runs of a daemon on the same database left when it died. Their
/// process groups go too. Reads all of `/proc`: call it on a blocking thread.
pub fn stop_orphans(database_id: &str) -> Vec<Orphan> {
    let me = nix::unistd::getpid();
    let mut spared: HashSet<Pid> = HashSet::new();
    let mut p = me;
    while p.as_raw() > 1 && spared.insert(p) {
        match Stat::read(p) {
            Some(s) => p = s.ppid,
            None => break,
        }
    }
    let my_group = nix::unistd::getpgrp();
    let mut found = Vec::new();
    for pid in all_pids() {
        if spared.contains(&pid) {
            continue;
        }
        let Some(env) = environ(pid) else {
            continue;
        };
        if var(&env, DATABASE_ID_VAR) != Some(database_id) {
            continue;
        }
        // Its group is read before the kill: once killed and reaped, /proc forgets it.
        let group = Stat::read(pid).map(|s| s.pgrp);
        let _ = kill(pid, Signal::SIGKILL);
        if let Some(group) = group
            && group != my_group
            && !spared.contains(&group)
        {
            let _ = killpg(group, Signal::SIGKILL);
        }
        found.push(Orphan {
            pid: pid.as_raw().unsigned_abs(),
            run_id: var(&env, RUN_ID_VAR).and_then(|v| v.parse().ok()),
            job: var(&env, "HOURGLASS_JOB").map(str::to_string),
            scheduled_for: var(&env, "HOURGLASS_SCHEDULED_FOR").map(str::to_string),
            attempt: var(&env, "HOURGLASS_ATTEMPT").and_then(|v| v.parse().ok()),
            trigger: var(&env, "HOURGLASS_TRIGGER").map(str::to_string),
        });
    }
    found
}

/// The fields of `/proc/<pid>/stat` a sweep (and a node's identity) needs.
#[derive(Debug, Clone, Copy)]
struct Stat {
    state: char,
    ppid: Pid,
    pgrp: Pid,
    /// When the process started, in clock ticks since boot.
    start: u64,
}

impl Stat {
    fn read(pid: Pid) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After "(comm)", which may hold spaces and parentheses: state, ppid, pgrp, ...; the
        // start time is the 20th field after it (the line's 22nd).
        let mut fields = text.rsplit_once(')')?.1.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = Pid::from_raw(fields.next()?.parse().ok()?);
        let pgrp = Pid::from_raw(fields.next()?.parse().ok()?);
        let start = fields.nth(16)?.parse().ok()?;
        Some(Self {
            state,
            ppid,
            pgrp,
            start,
        })
    }
}

/// When process `pid` started (clock ticks since boot), while it runs (not a zombie): with
/// the pid, it names one process for good (a later process given the same pid starts later).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = Stat::read(Pid::from_raw(i32::try_from(pid).ok()?))?;
    (stat.state != 'Z' && stat.state != 'X').then_some(stat.start)
}

fn all_pids() -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .map(Pid::from_raw)
        .collect()
}

/// The children of `parent`: from `/proc/<pid>/task/*/children` where the kernel has it,
/// else from every process's parent.
fn children_of(parent: Pid) -> Vec<Pid> {
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) {
        let mut found = Vec::new();
        let mut supported = false;
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                supported = true;
                found.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .map(Pid::from_raw),
                );
            }
        }
        if supported {
            return found;
        }
    }
    all_pids()
        .into_iter()
        .filter(|p| Stat::read(*p).is_some_and(|s| s.ppid == parent))
        .collect()
}

/// The folder of the daemon's own helper processes (SFTP's ssh keeps its control socket
/// there): its path is in their command lines, which is how a sweep knows to spare them.
pub fn helper_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("hourglass-helpers-{}", std::process::id()))
}

/// Whether `pid` is one of the daemon's own helpers (see [`helper_dir`]).
fn is_helper(pid: Pid) -> bool {
    let dir = helper_dir();
    let needle = dir.as_os_str().as_encoded_bytes();
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle))
}

/// The real user id of a process, from `/proc/<pid>/status` (readable without privileges).
fn uid_of(pid: Pid) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn environ(pid: Pid) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

/// The value of `name` in a NUL-separated environment block.
fn var<'a>(env: &'a [u8], name: &str) -> Option<&'a str> {
    env.split(|b| *b == 0).find_map(|entry| {
        let value = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        std::str::from_utf8(value).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_finds_the_exact_name() {
        let env = b"HOURGLASS_RUN_ID_X=1\0HOURGLASS_RUN_ID=42\0A=b";
        assert_eq!(var(env, RUN_ID_VAR), Some("42"));
        assert_eq!(var(env, "A"), Some("b"));
        assert_eq!(var(env, "B"), None);
    }

    #[test]
    fn orphans_carrying_the_database_id_are_killed_and_others_spared() {
        use std::os::unix::process::CommandExt;
        let marker = format!("test-{}", std::process::id());
        let mut ours = std::process::Command::new("sleep")
            .arg("30")
            .env(DATABASE_ID_VAR, &marker)
            .env(RUN_ID_VAR, "7")
            .env("HOURGLASS_JOB", "backup")
            .process_group(0)
            .spawn()
            .unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .env(DATABASE_ID_VAR, "another-database")
            .process_group(0)
            .spawn()
            .unwrap();
        // `spawn` returns once the child's exec has let go of this process's memory, but the
        // kernel sets the new program's environment in place a moment later (until then
        // `/proc/<pid>/environ` reads empty): both are looked at once their environment shows.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for child in [&ours, &other] {
            let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
            while environ(pid).is_none_or(|env| var(&env, DATABASE_ID_VAR).is_none()) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no environment for {pid}"
                );
                std::thread::yield_now();
            }
        }
        let found = stop_orphans(&marker);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, ours.id());
        assert_eq!(found[0].run_id, Some(7));
        assert_eq!(found[0].job.as_deref(), Some("backup"));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(ours.wait().unwrap().signal(), Some(9));
        assert!(other.try_wait().unwrap().is_none());
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
