//! The jobs folder: its `*.toml` files, and what in it cannot be read as one.

use std::path::{Path, PathBuf};

use crate::problem::{Problem, display_path};

/// The `*.toml` files of the jobs folder. A missing folder, and entries named `*.toml` that are
/// not readable files (a folder, a broken or looping symbolic link), are problems: they would
/// otherwise pass as "0 jobs".
pub(crate) fn job_files(dir: &Path, base: &Path, problems: &mut Vec<Problem>) -> Vec<PathBuf> {
    let problem = |path: &Path, message: String| Problem {
        file: display_path(path, base),
        job: None,
        field: None,
        message,
        warning: false,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            let message = match e.kind() {
                std::io::ErrorKind::NotFound => "the jobs folder does not exist; create it (jobs go in *.toml files there) or set daemon.jobs_dir".to_string(),
                std::io::ErrorKind::NotADirectory => "the jobs folder is not a folder; set daemon.jobs_dir to the folder of job files".to_string(),
                _ => format!("cannot read the jobs folder: {e}"),
            };
            problems.push(problem(dir, message));
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => files.push(path),
            Ok(m) if m.is_dir() => problems.push(problem(
                &path,
                "is a folder, not a job file (job files are *.toml files in the jobs folder)"
                    .into(),
            )),
            Ok(_) => problems.push(problem(&path, "is not a regular file".into())),
            Err(e) => {
                let message = match std::fs::read_link(&path) {
                    Ok(target) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                        format!("is a symbolic link in a loop (to {})", target.display())
                    }
                    Ok(target) => format!(
                        "is a broken symbolic link (to {}, which does not exist)",
                        target.display()
                    ),
                    Err(_) => format!("cannot be read: {e}"),
                };
                problems.push(problem(&path, message));
            }
        }
    }
    files
}
