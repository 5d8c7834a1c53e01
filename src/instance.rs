//! The single-instance guard: one daemon per history database. The daemon holds an exclusive
//! `flock` on `<database>-lock`, a file holding its pid; the kernel releases the lock when the
//! daemon dies, however it dies, so a `kill -9` leaves nothing that blocks the next start.
//! (Several daemons sharing one database is the PostgreSQL cluster's job.)

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
}

/// Takes the guard of the database at `database`, or says who holds it.
pub fn acquire(database: &Path) -> Result<InstanceLock, InstanceError> {
    let mut name = database.as_os_str().to_owned();
    name.push("-lock");
    let path = PathBuf::from(name);
    let io = |source| InstanceError::Io {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
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
    Ok(InstanceLock { _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.db");
        let first = acquire(&db).unwrap();
        let err = acquire(&db).unwrap_err();
        let me = std::process::id();
        assert!(
            matches!(err, InstanceError::Held { pid: Some(p), .. } if p == me),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("pid {me}")), "{err}");
        assert!(err.to_string().contains("h.db"), "{err}");
        drop(first);
        acquire(&db).unwrap();
    }
}
