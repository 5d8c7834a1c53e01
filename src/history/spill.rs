//! The spill file: run records the history database could not take, appended beside it
//! (`<database>-spill`, one JSON record a line, fsync'd, mode 0600), replayed into the
//! database when it takes writes again and at the next start, then removed.
//!
//! Every call here does blocking file I/O: the recorder runs them on a blocking thread.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::store::Record;

/// Errors of the spill file.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// Reading, writing or removing the file failed.
    #[error("spill file {path}: {source}")]
    Io {
        /// The spill file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The spill file of one database.
#[derive(Debug, Clone)]
pub struct Spill {
    path: PathBuf,
    /// Bytes at the start of the file already written to the database (a replay whose file
    /// could not be removed); the next replay starts after them.
    replayed: u64,
}

impl Spill {
    /// The spill file beside the database at `database`.
    pub fn beside(database: &Path) -> Self {
        let mut name = database.as_os_str().to_owned();
        name.push("-spill");
        Self {
            path: PathBuf::from(name),
            replayed: 0,
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: std::io::Error) -> SpillError {
        SpillError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Whether it holds records not yet replayed.
    pub fn has_records(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.len() > self.replayed)
    }

    /// Appends `records` and syncs them to disk. On failure the file is cut back to where it
    /// was, so a torn line never stands before later records.
    pub fn append(&mut self, records: &[Record]) -> Result<(), SpillError> {
        let mut text = Vec::new();
        for r in records {
            // A record is plain data: serializing it cannot fail.
            if serde_json::to_writer(&mut text, r).is_ok() {
                text.push(b'\n');
            }
        }
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| self.err(e))?;
        let before = file.seek(SeekFrom::End(0)).map_err(|e| self.err(e))?;
        let written = file.write_all(&text).and_then(|()| file.sync_data());
        if let Err(e) = written {
            let _ = file.set_len(before).and_then(|()| file.sync_data());
            return Err(self.err(e));
        }
        if before == 0 {
            sync_parent(&self.path);
        }
        Ok(())
    }

    /// Opens the records not yet replayed, oldest first.
    pub fn reader(&self) -> Result<SpillReader, SpillError> {
        let mut file = File::open(&self.path).map_err(|e| self.err(e))?;
        file.seek(SeekFrom::Start(self.replayed))
            .map_err(|e| self.err(e))?;
        Ok(SpillReader {
            lines: BufReader::new(file),
            offset: self.replayed,
            path: self.path.clone(),
            unreadable: 0,
        })
    }

    /// Forgets the records up to `reader`'s position (they are in the database): removes the
    /// file, or, when it cannot be removed, remembers where the next replay starts.
    pub fn replayed(&mut self, reader: &SpillReader) -> Result<(), SpillError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                sync_parent(&self.path);
                self.replayed = 0;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.replayed = 0;
                Ok(())
            }
            Err(e) => {
                self.replayed = reader.offset;
                Err(self.err(e))
            }
        }
    }

    /// The highest run id in the file (run ids must not be given again at the next start).
    pub fn max_run_id(&self) -> Result<Option<i64>, SpillError> {
        if !self.path.exists() {
            return Ok(None);
        }
        let mut reader = self.reader()?;
        let mut max = None;
        loop {
            let chunk = reader.next_chunk(4096)?;
            if chunk.is_empty() {
                return Ok(max);
            }
            max = chunk.iter().filter_map(Record::run_id).chain(max).max();
        }
    }
}

/// Reads a spill file in chunks.
#[derive(Debug)]
pub struct SpillReader {
    lines: BufReader<File>,
    offset: u64,
    path: PathBuf,
    /// Lines that were not a record (reported, skipped).
    pub unreadable: usize,
}

impl SpillReader {
    /// Up to `n` more records; empty at the end.
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<Record>, SpillError> {
        let mut out = Vec::new();
        let mut line = String::new();
        while out.len() < n {
            line.clear();
            let read = self
                .lines
                .read_line(&mut line)
                .map_err(|source| SpillError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if read == 0 {
                break;
            }
            self.offset += read as u64;
            match serde_json::from_str(line.trim_end()) {
                Ok(r) => out.push(r),
                Err(_) => self.unreadable += 1,
            }
        }
        Ok(out)
    }
}

/// Makes a file's creation or removal durable.
fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RunStart, Trigger, parse_ts};

    fn started(id: i64) -> Record {
        Record::Started(RunStart {
            id,
            job: "a".into(),
            scheduled_for: parse_ts("2026-01-01T00:00:00Z").unwrap(),
            started_at: None,
            attempt: 1,
            trigger: Trigger::Schedule,
            node: "n".into(),
            pid: Some(7),
        })
    }

    #[test]
    fn appends_read_back_in_order_and_replayed_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::beside(&dir.path().join("h.db"));
        assert_eq!(spill.path(), dir.path().join("h.db-spill"));
        assert!(!spill.has_records());
        assert_eq!(spill.max_run_id().unwrap(), None);
        spill.append(&[started(1), started(2)]).unwrap();
        spill.append(&[started(5)]).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(spill.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A torn last line (a crash mid-append) is skipped, not fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(spill.path())
            .unwrap()
            .write_all(b"{\"Started\":{\"id\":9")
            .unwrap();
        assert!(spill.has_records());
        assert_eq!(spill.max_run_id().unwrap(), Some(5));
        let mut reader = spill.reader().unwrap();
        let first = reader.next_chunk(2).unwrap();
        assert_eq!(first, [started(1), started(2)]);
        assert_eq!(reader.next_chunk(10).unwrap(), [started(5)]);
        assert_eq!(reader.unreadable, 1);
        spill.replayed(&reader).unwrap();
        assert!(!spill.path().exists());
        assert!(!spill.has_records());
    }
}
