//! The single-instance guard: one daemon per history database, taken before the database is
//! opened (two daemons started at once on a new file: one migrates, the other is refused).
//! The daemon holds an exclusive `flock` on `<database>-lock`, a file holding its pid, and on
//! a SQLite database file itself (another path to the same file, a hard link or another
//! mount, names another `-lock` file but not another file); the kernel releases both when
//! the daemon dies, however it dies, so a `kill -9` leaves nothing that blocks the next
//! start. (Several daemons sharing one database is the PostgreSQL cluster's job.)

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Why the guard could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Another daemon holds it.
    #[error(
        "another hourglass daemon ({}) is already running on the history database {}; stop it first, or give this one another database.path",
        .pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}")),
        .database.display()
    )]
    Held {
        /// The database.
        database: PathBuf,
        /// The other daemon's pid, as it wrote it.
        pid: Option<u32>,
    },
    /// Another daemon holds the database file through another path to it.
    #[error(
        "another hourglass daemon ({}) is already running on the history database {} through another path to the same file (a hard link or another mount); stop it first, or give this one another database.path",
        .pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}")),
        .database.display()
    )]
    HeldThroughAnotherPath {
        /// The database.
        database: PathBuf,
        /// The other daemon, as `/proc/locks` tells it.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot take the single-instance lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Held while the daemon runs; dropping it releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    _lock: Flock<File>,
    /// The SQLite file's own lock. Its descriptor stays open as long as the daemon's
    /// connections: closing a descriptor of a file drops the process's POSIX locks on it,
    /// SQLite's included.
    _file: Option<Flock<File>>,
}

/// Takes the guard of the database at `database` (`is_file`: a SQLite file, locked itself
/// too; it is created, mode 0600, if missing), or says who holds it.
pub fn acquire(database: &Path, is_file: bool) -> Result<InstanceLock, InstanceError> {
    if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| InstanceError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let lock = lock_named(database)?;
    let file = if is_file {
        Some(lock_file_itself(database)?)
    } else {
        None
    };
    Ok(InstanceLock {
        _lock: lock,
        _file: file,
    })
}

/// The lock on `<database>-lock`, with this daemon's pid written in it.
fn lock_named(database: &Path) -> Result<Flock<File>, InstanceError> {
    let mut name = database.as_os_str().to_owned();
    name.push("-lock");
    let path = PathBuf::from(name);
    let io = |source| InstanceError::Io {
        path: path.clone(),
        source,
    };
    let file = open_private(&path).map_err(io)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(InstanceError::Held {
                database: database.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        Err((_, e)) => return Err(io(e.into())),
    };
    lock.set_len(0).map_err(io)?;
    lock.rewind().map_err(io)?;
    writeln!(lock, "{}", std::process::id()).map_err(io)?;
    Ok(lock)
}

/// Opens `path` to read and write, creating it (mode 0600) if missing, never truncating it.
fn open_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// The lock on the database file itself (`flock`, which SQLite's POSIX locks do not see).
fn lock_file_itself(database: &Path) -> Result<Flock<File>, InstanceError> {
    let io = |source| InstanceError::Io {
        path: database.to_path_buf(),
        source,
    };
    let file = open_private(database).map_err(io)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => Err(InstanceError::HeldThroughAnotherPath {
            database: database.to_path_buf(),
            pid: flock_holder(&file),
        }),
        Err((_, e)) => Err(io(e.into())),
    }
}

/// The process holding a write `flock` on `file`, from `/proc/locks` (lines such as
/// `1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF`, the last field of the device triple
/// the inode).
fn flock_holder(file: &File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let inode = file.metadata().ok()?.ino().to_string();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (kind, mode, pid, device) = (
            fields.get(1)?,
            fields.get(3)?,
            fields.get(4)?,
            fields.get(5)?,
        );
        (*kind == "FLOCK" && *mode == "WRITE" && device.rsplit(':').next() == Some(inode.as_str()))
            .then(|| pid.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.db");
        let first = acquire(&db, true).unwrap();
        let err = acquire(&db, true).unwrap_err();
        let me = std::process::id();
        assert!(
            matches!(err, InstanceError::Held { pid: Some(p), .. } if p == me),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("pid {me}")), "{err}");
        assert!(err.to_string().contains("h.db"), "{err}");
        drop(first);
        acquire(&db, true).unwrap();
    }

    /// A hard link to a held database file is refused, naming the holder.
    #[test]
    fn another_path_to_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.db");
        let _first = acquire(&db, true).unwrap();
        let link = dir.path().join("link.db");
        std::fs::hard_link(&db, &link).unwrap();
        let err = acquire(&link, true).unwrap_err();
        let me = std::process::id();
        assert!(
            matches!(err, InstanceError::HeldThroughAnotherPath { pid: Some(p), .. } if p == me),
            "{err}"
        );
        assert!(err.to_string().contains("link.db"), "{err}");
    }
}
