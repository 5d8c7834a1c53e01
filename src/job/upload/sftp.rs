//! Uploads over SFTP (openssh's `sftp` subsystem, through the system's `ssh`): the session,
//! one file streamed in blocks, and the `sftp://user@host:port/path/` destination.

use std::path::{Path, PathBuf};

use super::super::StopSignal;
use super::RawUpload;
use super::{BlockSink, Destination, SourceFile, UploadJob, copy_file};
use crate::job::template::check_template;
use crate::problem::Located;

impl UploadJob {
    pub(super) async fn sftp_connect(&self) -> Result<openssh_sftp_client::Sftp, String> {
        let Destination::Sftp {
            user,
            host,
            port,
            key_file,
            known_hosts,
            ..
        } = &self.destination
        else {
            return Err("not an SFTP destination".into());
        };
        // ssh's control socket in the daemon's helper folder: the process sweeps spare what
        // runs with that path in its command line.
        let helpers = crate::processes::helper_dir();
        {
            use std::os::unix::fs::DirBuilderExt as _;
            let made = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&helpers);
            if let Err(e) = made {
                return Err(format!("cannot create {}: {e}", helpers.display()));
            }
        }
        let mut b = openssh::SessionBuilder::default();
        b.user(user.clone())
            .port(*port)
            .keyfile(key_file)
            .known_hosts_check(openssh::KnownHosts::Strict)
            .user_known_hosts_file(known_hosts)
            .connect_timeout(std::time::Duration::from_secs(15))
            .control_directory(&helpers);
        let session = b.connect(host).await.map_err(|e| {
            format!(
                "sftp://{user}@{host}:{port}: {}",
                crate::http_client::chain(&e)
            )
        })?;
        openssh_sftp_client::Sftp::from_session(session, Default::default())
            .await
            .map_err(|e| {
                format!(
                    "sftp://{user}@{host}:{port}: {}",
                    crate::http_client::chain(&e)
                )
            })
    }
}

impl BlockSink for openssh_sftp_client::file::File {
    async fn put(&mut self, block: Vec<u8>) -> Result<(), String> {
        self.write_all(&block)
            .await
            .map_err(|e| crate::http_client::chain(&e))
    }
}

pub(super) async fn sftp_upload_one(
    sftp: &openssh_sftp_client::Sftp,
    dir: &Path,
    f: &SourceFile,
    stop: &StopSignal,
) -> Result<(), String> {
    let remote = dir.join(&f.rel);
    let err =
        |e: openssh_sftp_client::Error| format!("{}: {}", f.rel, crate::http_client::chain(&e));
    // mkdir -p of the parents (errors for folders that exist are expected).
    let mut fs = sftp.fs();
    let mut cur = PathBuf::new();
    if let Some(parent) = remote.parent() {
        for c in parent.components() {
            cur.push(c);
            let _ = fs.create_dir(&cur).await;
        }
    }
    let mut file = tokio::fs::File::open(&f.path)
        .await
        .map_err(|e| format!("{}: {e}", f.path.display()))?;
    let mut out = sftp.create(&remote).await.map_err(err)?;
    let sent = copy_file(&mut file, f, &mut out, stop).await?;
    out.close().await.map_err(err)?;
    let stored = fs.metadata(&remote).await.map_err(err)?.len().unwrap_or(0);
    if stored != sent || sent != f.size {
        return Err(format!(
            "{}: size check failed: local {} bytes, sent {sent}, stored {stored}",
            f.rel, f.size
        ));
    }
    Ok(())
}

pub(crate) fn sftp_destination(
    d: &str,
    r: &RawUpload,
    at: &mut Located<'_>,
) -> Option<crate::job::upload::Destination> {
    let parsed = match reqwest::Url::parse(d) {
        Ok(u) => u,
        Err(e) => {
            at.push(
                Some("upload.destination"),
                format!("{d:?} is not a URL ({e})"),
            );
            return None;
        }
    };
    let user = parsed.username().to_string();
    let host = parsed.host_str().unwrap_or_default().to_string();
    if user.is_empty() || host.is_empty() {
        at.push(
            Some("upload.destination"),
            format!("{d:?}: expected sftp://user@host:port/path"),
        );
    }
    if parsed.password().is_some() {
        at.push(
            Some("upload.destination"),
            "no password in the URL: SFTP uses `key_file`",
        );
    }
    let path = percent_decode(parsed.path());
    if let Err(e) = check_template(&path) {
        at.push(Some("upload.destination"), format!("template error: {e}"));
    }
    let mut file = |field: &str, v: &Option<String>, what: &str| match v {
        Some(p) if Path::new(p).is_absolute() => Some(PathBuf::from(p)),
        Some(p) => {
            at.push(Some(field), format!("{p:?} must be an absolute path"));
            None
        }
        None => {
            at.push(Some(field), format!("SFTP needs {what}"));
            None
        }
    };
    let key_file = file("upload.key_file", &r.key_file, "a private key file");
    let known_hosts = file(
        "upload.known_hosts",
        &r.known_hosts,
        "a known_hosts file with the server's pinned host key",
    );
    Some(crate::job::upload::Destination::Sftp {
        user,
        host,
        port: parsed.port().unwrap_or(22),
        path,
        key_file: key_file?,
        known_hosts: known_hosts?,
    })
}

/// Decodes %XX escapes (a URL path keeps `{{ }}` templates escaped).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
