//! What the bench runs and measures: the hourglass daemon on a generated config (started on
//! its release binary, read back from its history database) and the tokio-cron-scheduler peer
//! in a process of its own.

use super::*;

/// A running daemon on a generated config.
pub(crate) struct Daemon {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) dir: PathBuf,
    pub(crate) child: Child,
    pub(crate) bin: PathBuf,
    pub(crate) notify: harness::Notifications,
    pub(crate) ready_after: Duration,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("dir", &self.dir).finish()
    }
}

/// Every run in `database`, newest first.
pub(crate) fn read_history(database: &Database) -> Result<Vec<RunRow>> {
    read_history_filtered(
        database,
        &HistoryFilter {
            limit: u32::MAX,
            ..Default::default()
        },
    )
}

/// The rows of `database` that `filter` picks.
pub(crate) fn read_history_filtered(
    database: &Database,
    filter: &HistoryFilter,
) -> Result<Vec<RunRow>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rows = rt.block_on(async {
        let store = Store::connect(database).await?;
        let rows = store.history(filter).await;
        store.close().await;
        rows
    })?;
    Ok(rows)
}

/// A running peer process (see [`peer`]).
pub(crate) struct Peer {
    pub(crate) child: Child,
    pub(crate) lines: mpsc::Receiver<String>,
    pub(crate) ready_after: Duration,
}

impl Daemon {
    pub(crate) fn start(bin: &Path, main_extra: &str, jobs: &str) -> Result<Self> {
        Self::start_seeded(bin, main_extra, jobs, "")
    }

    /// Like [`Daemon::start`], on a history database made beforehand and given `seed` (SQL,
    /// run by `sqlite3`) when it is not empty.
    pub(crate) fn start_seeded(
        bin: &Path,
        main_extra: &str,
        jobs: &str,
        seed: &str,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_path_buf();
        let config = harness::write_config(
            &path,
            &format!(
                "[database]\npath = \"history.db\"\n[daemon]\ntimezone = \"UTC\"\n{main_extra}\n"
            ),
            jobs,
        )?;
        if !seed.is_empty() {
            let db = path.join("history.db");
            tokio::runtime::Runtime::new()?.block_on(async {
                Store::open(&db).await?.close().await;
                anyhow::Ok(())
            })?;
            let st = Command::new("sqlite3").arg(&db).arg(seed).status()?;
            if !st.success() {
                bail!("sqlite3 could not seed the history: {st}");
            }
        }
        let mut notify = harness::Notifications::bind(path.join("notify.sock"))?;
        let mut cmd = harness::run_command(&[bin.as_os_str()], &config, &notify);
        cmd.env("RUST_LOG", "warn").stderr(Stdio::null());
        let (child, ready_after) =
            harness::start_ready(&mut cmd, &mut notify, Duration::from_secs(120))
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self {
            _dir: dir,
            dir: path,
            child,
            bin: bin.to_path_buf(),
            notify,
            ready_after,
        })
    }

    /// Forgets sd_notify messages already sent.
    pub(crate) fn drain_notes(&mut self) {
        self.notify.forget();
    }

    /// Waits for a line of the daemon's sd_notify messages.
    pub(crate) fn wait_note(&mut self, line: &str) -> Result<()> {
        let child = &mut self.child;
        self.notify
            .wait(line, Duration::from_secs(120), || {
                matches!(child.try_wait(), Ok(None))
            })
            .map_err(anyhow::Error::msg)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn runs(&self) -> Result<Vec<RunRow>> {
        read_history(&Database::Sqlite(self.dir.join("history.db")))
    }

    pub(crate) fn trigger(&self, job: &str) -> Result<()> {
        let st = Command::new(&self.bin)
            .arg("--config")
            .arg(self.dir.join("hourglass.toml"))
            .args(["trigger", job])
            .stdout(Stdio::null())
            .status();
        match st {
            Ok(s) if s.success() => Ok(()),
            _ => bail!("trigger {job} failed"),
        }
    }

    pub(crate) fn stop(mut self) -> Result<()> {
        proc::signal(self.pid(), "TERM")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("daemon did not stop");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Peer {
    pub(crate) fn start(me: &Path, args: &[String]) -> Result<Self> {
        let started = Instant::now();
        let mut child = Command::new(me)
            .arg("peer")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the peer")?;
        let stdout = child.stdout.take().context("peer stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(300))
            .context("waiting for the peer's READY")?;
        if !first.starts_with("READY") {
            bail!("peer said {first:?}");
        }
        Ok(Self {
            child,
            lines,
            ready_after: started.elapsed(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the peer to end; its firings.
    pub(crate) fn finish(mut self) -> Result<Vec<Fire>> {
        let mut fires = Vec::new();
        for line in self.lines.iter() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let ["F", job, intended, started] = f[..] {
                fires.push(Fire {
                    job: format!("j{job}"),
                    intended: intended.parse()?,
                    started: started.parse()?,
                });
            }
        }
        self.child.wait()?;
        Ok(fires)
    }
}
