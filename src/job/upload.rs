//! The `upload` kind: files from a path, a glob or a folder, streamed (multipart, bounded
//! memory) to S3-compatible object storage or a local folder through OpenDAL, each verified by
//! size after writing. Optionally skips files already uploaded unchanged (path + size + mtime,
//! remembered in the database); a retry uploads only what is missing; `after` keeps, deletes or
//! moves what was uploaded.

use std::path::{Path, PathBuf};

use opendal::Operator;
use tokio::io::AsyncReadExt;

use super::template::check_template;
use super::{AttemptContext, Outcome, StopSignal};
use crate::problem::url;
use crate::problem::{Located, RawSecret, secret};
use crate::secret::Secret;
use crate::store::UploadMark;
use serde::Deserialize;

/// Where files go.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    /// S3-compatible storage.
    S3 {
        /// Bucket.
        bucket: String,
        /// Key prefix template (may use the run's context, e.g. `{{ date }}`).
        prefix: String,
        /// Endpoint URL (for non-AWS servers).
        endpoint: Option<String>,
        /// Region.
        region: String,
        /// Access key id.
        access_key_id: Secret,
        /// Secret access key.
        secret_access_key: Secret,
    },
    /// A local folder (template).
    Folder(String),
    /// An SFTP server (OpenSSH's `ssh` client underneath, key login, pinned host key).
    Sftp {
        /// Login.
        user: String,
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Remote folder (template).
        path: String,
        /// Private key file.
        key_file: PathBuf,
        /// known_hosts file holding the server's pinned key.
        known_hosts: PathBuf,
    },
}

impl Destination {
    /// A display form without secrets.
    pub fn describe(&self) -> String {
        match self {
            Destination::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
            Destination::Folder(f) => f.clone(),
            Destination::Sftp {
                user,
                host,
                port,
                path,
                ..
            } => format!(
                "sftp://{user}@{host}:{port}/{}",
                path.trim_start_matches('/')
            ),
        }
    }
}

/// Bytes read from a source file at a time (the writer gathers them into parts).
const READ_BLOCK: usize = 256 * 1024;

/// What happens to a source file once it is uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Leave it.
    Keep,
    /// Delete it.
    Delete,
    /// Move it into this folder.
    Move(PathBuf),
}

/// A validated upload job.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadJob {
    /// A path, a glob or a folder.
    pub source: String,
    /// Where to.
    pub destination: Destination,
    /// After a successful upload.
    pub after: After,
    /// Skip files uploaded before with the same size and mtime.
    pub skip_unchanged: bool,
    /// Multipart chunk size (memory per upload is about chunk × 2).
    pub part_size: usize,
}

/// A file to upload and its key below the destination prefix.
#[derive(Debug)]
struct SourceFile {
    path: PathBuf,
    rel: String,
    size: u64,
    mtime_ns: i64,
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

/// Files the source names now: a folder (recursively), a glob, or one path.
fn source_files(source: &str) -> Result<Vec<SourceFile>, String> {
    let p = Path::new(source);
    let mut out = Vec::new();
    if p.is_dir() {
        let mut stack = vec![p.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let rd = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for entry in rd.filter_map(Result::ok) {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(meta) = std::fs::metadata(&path)
                    && meta.is_file()
                {
                    let rel = path
                        .strip_prefix(p)
                        .unwrap_or(&path)
                        .to_string_lossy()
                        .into_owned();
                    out.push(SourceFile {
                        size: meta.len(),
                        mtime_ns: mtime_ns(&meta),
                        path,
                        rel,
                    });
                }
            }
        }
    } else {
        let matches = glob::glob(source).map_err(|e| format!("source {source:?}: {e}"))?;
        for m in matches {
            let path = m.map_err(|e| format!("source {source:?}: {e}"))?;
            if let Ok(meta) = std::fs::metadata(&path)
                && meta.is_file()
            {
                let rel = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push(SourceFile {
                    size: meta.len(),
                    mtime_ns: mtime_ns(&meta),
                    path,
                    rel,
                });
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

impl UploadJob {
    fn operator(&self, prefix: &str) -> Result<Operator, String> {
        let op = match &self.destination {
            Destination::S3 {
                bucket,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                ..
            } => {
                let mut b = opendal::services::S3::default()
                    .bucket(bucket)
                    .region(region)
                    .root(&format!("/{prefix}"))
                    .access_key_id(access_key_id.expose())
                    .secret_access_key(secret_access_key.expose())
                    .disable_config_load();
                if let Some(e) = endpoint {
                    b = b.endpoint(e);
                }
                Operator::new(b).map(|o| o.finish())
            }
            Destination::Folder(_) | Destination::Sftp { .. } => {
                Operator::new(opendal::services::Fs::default().root(prefix)).map(|o| o.finish())
            }
        };
        op.map_err(|e| format!("destination {}: {e}", self.destination.describe()))
    }

    async fn upload_one(
        &self,
        op: &Operator,
        f: &SourceFile,
        stop: &StopSignal,
    ) -> Result<(), String> {
        let mut file = tokio::fs::File::open(&f.path)
            .await
            .map_err(|e| format!("{}: {e}", f.path.display()))?;
        let mut writer = op
            .writer_with(&f.rel)
            .chunk(self.part_size)
            .concurrent(2)
            .await
            .map_err(|e| format!("{}: {e}", f.rel))?;
        let sent = match copy_file(&mut file, f, &mut writer, stop).await {
            Ok(sent) => sent,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        writer
            .close()
            .await
            .map_err(|e| format!("{}: {e}", f.rel))?;
        let meta = op
            .stat(&f.rel)
            .await
            .map_err(|e| format!("{}: verifying: {e}", f.rel))?;
        if meta.content_length() != sent || sent != f.size {
            return Err(format!(
                "{}: size check failed: local {} bytes, read {sent}, stored {}",
                f.rel,
                f.size,
                meta.content_length()
            ));
        }
        Ok(())
    }

    fn after_upload(&self, f: &SourceFile) -> Result<(), String> {
        match &self.after {
            After::Keep => Ok(()),
            After::Delete => std::fs::remove_file(&f.path)
                .map_err(|e| format!("deleting {}: {e}", f.path.display())),
            After::Move(dir) => {
                let target = dir.join(&f.rel);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("{}: {e}", parent.display()))?;
                }
                std::fs::rename(&f.path, &target).map_err(|e| {
                    format!("moving {} to {}: {e}", f.path.display(), target.display())
                })
            }
        }
    }

    /// Uploads once; see [`super::JobKind::execute`].
    pub async fn execute(&self, ctx: &AttemptContext<'_>, stop: &StopSignal) -> Outcome {
        ctx.started.mark();
        let template = match &self.destination {
            Destination::S3 { prefix, .. } => prefix,
            Destination::Folder(f) => f,
            Destination::Sftp { path, .. } => path,
        };
        let values = super::template::values(ctx, &Default::default());
        let prefix = match super::template::render(template, &values).await {
            Ok(p) => p,
            Err(e) => return Outcome::failed(format!("destination: {e}"), false),
        };
        let target = match &self.destination {
            Destination::Sftp { .. } => match self.sftp_connect().await {
                Ok(sftp) => Target::Sftp(sftp, PathBuf::from(&prefix)),
                Err(e) => return Outcome::failed(e, true),
            },
            _ => match self.operator(&prefix) {
                Ok(op) => Target::Dal(op),
                Err(e) => return Outcome::failed(e, false),
            },
        };
        let files = match source_files(&self.source) {
            Ok(f) => f,
            Err(e) => return Outcome::failed(e, true),
        };
        let dest = format!("{}|{prefix}", self.destination.describe());
        let store = ctx.services.store.as_ref();
        let (mut uploaded, mut skipped, mut bytes) = (Vec::new(), Vec::new(), 0u64);
        let mut failed = Vec::new();
        for f in &files {
            let mark = UploadMark {
                job: ctx.job.name.clone(),
                destination: dest.clone(),
                key: f.rel.clone(),
                size: f.size,
                mtime_ns: f.mtime_ns,
                scheduled_for: ctx.scheduled_for,
            };
            if let Some(store) = store {
                match store.upload_mark(&mark).await {
                    Ok(Some(prev))
                        if prev.size == f.size
                            && prev.mtime_ns == f.mtime_ns
                            && (self.skip_unchanged || prev.scheduled_for == ctx.scheduled_for) =>
                    {
                        skipped.push(f.rel.clone());
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(job = %ctx.job.name, error = %e, "cannot read upload marks")
                    }
                }
            }
            let result = match &target {
                Target::Dal(op) => self.upload_one(op, f, stop).await,
                Target::Sftp(sftp, dir) => sftp_upload_one(sftp, dir, f, stop).await,
            };
            match result {
                Ok(()) => {
                    if let Some(store) = store
                        && let Err(e) = store.set_upload_mark(&mark).await
                    {
                        tracing::warn!(job = %ctx.job.name, error = %e, "cannot record an upload mark");
                    }
                    bytes += f.size;
                    uploaded.push(f.rel.clone());
                    if let Err(e) = self.after_upload(f) {
                        failed.push(e);
                    }
                }
                Err(e) => failed.push(e),
            }
        }
        let details = serde_json::json!({
            "destination": format!("{}", redact_dest(&self.destination, &prefix)),
            "files_uploaded": uploaded.len(),
            "bytes_uploaded": bytes,
            "files_skipped": skipped.len(),
            "files_failed": failed.len(),
            "uploaded": uploaded,
        });
        let summary = format!(
            "{} uploaded ({bytes} bytes), {} skipped, {} failed",
            uploaded.len(),
            skipped.len(),
            failed.len()
        );
        if files.is_empty() {
            return Outcome {
                details: Some(details),
                ..Outcome::failed(format!("source {:?} matches no file", self.source), true)
            };
        }
        Outcome {
            success: failed.is_empty(),
            exit_code: None,
            error: (!failed.is_empty()).then(|| format!("{summary}: {}", failed.join("; "))),
            output: Some(summary),
            retryable: true,
            details: Some(details),
        }
    }
}

fn redact_dest(d: &Destination, prefix: &str) -> String {
    match d {
        Destination::S3 { bucket, .. } => format!("s3://{bucket}/{prefix}"),
        Destination::Folder(_) => prefix.to_string(),
        Destination::Sftp {
            user, host, port, ..
        } => format!(
            "sftp://{user}@{host}:{port}/{}",
            prefix.trim_start_matches('/')
        ),
    }
}

/// Where this attempt writes.
enum Target {
    Dal(Operator),
    Sftp(openssh_sftp_client::Sftp, PathBuf),
}

impl UploadJob {
    async fn sftp_connect(&self) -> Result<openssh_sftp_client::Sftp, String> {
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
        let mut b = openssh::SessionBuilder::default();
        b.user(user.clone())
            .port(*port)
            .keyfile(key_file)
            .known_hosts_check(openssh::KnownHosts::Strict)
            .user_known_hosts_file(known_hosts)
            .connect_timeout(std::time::Duration::from_secs(15))
            .control_directory(std::env::temp_dir());
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

/// Where an upload's blocks go: an OpenDAL writer or an SFTP file. Errors are the cause
/// alone; [`copy_file`] names the file.
trait BlockSink {
    fn put(&mut self, block: Vec<u8>) -> impl Future<Output = Result<(), String>> + Send;
}

impl BlockSink for opendal::Writer {
    async fn put(&mut self, block: Vec<u8>) -> Result<(), String> {
        self.write(block).await.map_err(|e| e.to_string())
    }
}

impl BlockSink for openssh_sftp_client::file::File {
    async fn put(&mut self, block: Vec<u8>) -> Result<(), String> {
        self.write_all(&block)
            .await
            .map_err(|e| crate::http_client::chain(&e))
    }
}

/// Copies `file` (the source `f`) into `sink` block by block, giving up at the soft stop;
/// returns the bytes sent. Memory stays at a block or two whatever the file's size.
async fn copy_file(
    file: &mut tokio::fs::File,
    f: &SourceFile,
    sink: &mut impl BlockSink,
    stop: &StopSignal,
) -> Result<u64, String> {
    let mut sent = 0u64;
    loop {
        if stop.soft.is_cancelled() {
            return Err(format!("{}: stopped", f.rel));
        }
        let mut block = vec![0u8; READ_BLOCK];
        let n = file
            .read(&mut block)
            .await
            .map_err(|e| format!("{}: {e}", f.path.display()))?;
        if n == 0 {
            return Ok(sent);
        }
        block.truncate(n);
        sent += n as u64;
        sink.put(block)
            .await
            .map_err(|e| format!("{}: {e}", f.rel))?;
    }
}

async fn sftp_upload_one(
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpload {
    pub(crate) source: String,
    pub(crate) destination: String,
    pub(crate) after: Option<String>,
    pub(crate) skip_unchanged: Option<bool>,
    pub(crate) part_size: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) access_key_id: Option<RawSecret>,
    pub(crate) secret_access_key: Option<RawSecret>,
    pub(crate) key_file: Option<String>,
    pub(crate) known_hosts: Option<String>,
}

pub(crate) fn from_raw(r: RawUpload, at: &mut Located<'_>) -> Option<UploadJob> {
    use crate::job::upload::{After, Destination};
    if !Path::new(&r.source).is_absolute() {
        at.push(
            Some("upload.source"),
            format!("{:?} must be an absolute path or glob", r.source),
        );
    } else if let Err(e) = glob::Pattern::new(&r.source) {
        at.push(Some("upload.source"), format!("{:?}: {e}", r.source));
    }
    let after = match r.after.as_deref().unwrap_or("keep") {
        "keep" => Some(After::Keep),
        "delete" => Some(After::Delete),
        other => match other.strip_prefix("move:") {
            Some(dir) if Path::new(dir).is_absolute() => Some(After::Move(PathBuf::from(dir))),
            _ => {
                at.push(
                    Some("upload.after"),
                    format!(
                        "{other:?}: expected \"keep\", \"delete\" or \"move:<absolute folder>\""
                    ),
                );
                None
            }
        },
    };
    let d = r.destination.as_str();
    let destination = if let Some(rest) = d.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            at.push(
                Some("upload.destination"),
                format!("{d:?}: no bucket (expected s3://bucket/prefix/)"),
            );
        }
        if let Err(e) = check_template(prefix) {
            at.push(Some("upload.destination"), format!("template error: {e}"));
        }
        let key = r
            .access_key_id
            .as_ref()
            .and_then(|s| secret(s, "upload.access_key_id", at));
        let secret_key = r
            .secret_access_key
            .as_ref()
            .and_then(|s| secret(s, "upload.secret_access_key", at));
        if r.access_key_id.is_none() || r.secret_access_key.is_none() {
            at.push(
                Some("upload"),
                "S3 needs `access_key_id` and `secret_access_key` ({ env = \"VAR\" } or { file = \"/path\" })",
            );
        }
        if let Some(e) = &r.endpoint {
            url(e, "upload.endpoint", at);
        }
        match (key, secret_key) {
            (Some(access_key_id), Some(secret_access_key)) => Some(Destination::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                endpoint: r.endpoint.clone(),
                region: r.region.clone().unwrap_or_else(|| "us-east-1".into()),
                access_key_id,
                secret_access_key,
            }),
            _ => None,
        }
    } else if d.starts_with("sftp://") {
        sftp_destination(d, &r, at)
    } else {
        let folder = d.strip_prefix("file://").unwrap_or(d);
        if !Path::new(folder).is_absolute() {
            at.push(
                Some("upload.destination"),
                format!(
                    "{d:?}: expected s3://bucket/prefix/, file:///folder or an absolute folder"
                ),
            );
        }
        if let Err(e) = check_template(folder) {
            at.push(Some("upload.destination"), format!("template error: {e}"));
        }
        Some(Destination::Folder(folder.to_string()))
    };
    let part_size = at.size("upload.part_size", r.part_size.as_deref(), 8 << 20);
    if part_size < 5 << 20 {
        at.push(
            Some("upload.part_size"),
            "must be at least 5MiB (the S3 minimum part size)",
        );
    }
    Some(UploadJob {
        source: r.source,
        destination: destination?,
        after: after?,
        skip_unchanged: r.skip_unchanged.unwrap_or(false),
        part_size,
    })
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
