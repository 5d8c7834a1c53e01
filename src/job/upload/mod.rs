//! The `upload` kind: files from a path, a glob or a folder, streamed (multipart, bounded
//! memory) to S3-compatible object storage or a local folder through OpenDAL, each verified by
//! size after writing. Optionally skips files already uploaded unchanged (path + size + mtime,
//! remembered in the database); a retry uploads only what is missing; `after` keeps, deletes or
//! moves what was uploaded. SFTP in `sftp`; the `[jobs.<name>.upload]` table in `raw`.

use std::path::{Path, PathBuf};

use opendal::Operator;
use tokio::io::AsyncReadExt;

use super::{AttemptContext, Outcome, StopSignal};
use crate::secret::Secret;
use crate::store::UploadMark;

mod raw;
mod sftp;

pub(crate) use raw::{RawUpload, from_raw};
use sftp::sftp_upload_one;
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
pub(super) const READ_BLOCK: usize = 256 * 1024;

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

impl UploadJob {
    /// Its settings for display (the destination without credentials).
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let after = match &self.after {
            After::Keep => "keep".to_string(),
            After::Delete => "delete".to_string(),
            After::Move(to) => format!("move to {}", to.display()),
        };
        vec![
            ("source", self.source.clone()),
            ("destination", self.destination.describe()),
            ("after upload", after),
            (
                "skip unchanged",
                if self.skip_unchanged { "yes" } else { "no" }.to_string(),
            ),
        ]
    }
}

/// A file to upload and its key below the destination prefix.
#[derive(Debug)]
pub(super) struct SourceFile {
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
        // OpenDAL's HTTP transport (reqwest, built at its first request, after the daemon
        // installed its TLS crypto provider); installing it again does nothing.
        opendal_http_transport_reqwest::install_default();
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
                Operator::new(b)
            }
            Destination::Folder(_) | Destination::Sftp { .. } => {
                Operator::new(opendal::services::Fs::default().root(prefix))
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
        let prefix = match self.prefix(ctx, stop).await {
            Ok(p) => p,
            Err(o) => return o,
        };
        let target = match self.target(&prefix).await {
            Ok(t) => t,
            Err(o) => return o,
        };
        let files = match source_files(&self.source) {
            Ok(f) => f,
            Err(e) => return Outcome::failed(e, true),
        };
        let dest = format!("{}|{prefix}", self.destination.describe());
        let mut tally = Tally::default();
        for f in &files {
            self.upload_file(ctx, &target, &dest, f, stop, &mut tally)
                .await;
        }
        self.outcome(&prefix, files.is_empty(), tally)
    }

    /// The destination's prefix or path, its template rendered.
    async fn prefix(&self, ctx: &AttemptContext<'_>, stop: &StopSignal) -> Result<String, Outcome> {
        let template = match &self.destination {
            Destination::S3 { prefix, .. } => prefix,
            Destination::Folder(f) => f,
            Destination::Sftp { path, .. } => path,
        };
        let values = super::template::values(ctx, &Default::default());
        super::template::render(template, &values, stop)
            .await
            .map_err(|e| Outcome::failed(format!("destination: {e}"), false))
    }

    /// Where the files go: an SFTP session, or an OpenDAL operator.
    async fn target(&self, prefix: &str) -> Result<Target, Outcome> {
        match &self.destination {
            Destination::Sftp { .. } => match self.sftp_connect().await {
                Ok(sftp) => Ok(Target::Sftp(sftp, PathBuf::from(prefix))),
                Err(e) => Err(Outcome::failed(e, true)),
            },
            _ => self
                .operator(prefix)
                .map(Target::Dal)
                .map_err(|e| Outcome::failed(e, false)),
        }
    }

    /// Uploads one file unless its mark says it is there already; counts it in `tally`.
    async fn upload_file(
        &self,
        ctx: &AttemptContext<'_>,
        target: &Target,
        dest: &str,
        f: &SourceFile,
        stop: &StopSignal,
        tally: &mut Tally,
    ) {
        let mark = UploadMark {
            job: ctx.job.name.clone(),
            destination: dest.to_string(),
            key: f.rel.clone(),
            size: f.size,
            mtime_ns: f.mtime_ns,
            scheduled_for: ctx.scheduled_for,
        };
        let store = &ctx.services.store;
        match store.upload_mark(&mark).await {
            Ok(Some(prev))
                if prev.size == f.size
                    && prev.mtime_ns == f.mtime_ns
                    && (self.skip_unchanged || prev.scheduled_for == ctx.scheduled_for) =>
            {
                tally.skipped.push(f.rel.clone());
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(job = %ctx.job.name, error = %e, "cannot read upload marks")
            }
        }
        let result = match target {
            Target::Dal(op) => self.upload_one(op, f, stop).await,
            Target::Sftp(sftp, dir) => sftp_upload_one(sftp, dir, f, stop).await,
        };
        match result {
            Ok(()) => {
                if let Err(e) = store.set_upload_mark(&mark).await {
                    tracing::warn!(job = %ctx.job.name, error = %e, "cannot record an upload mark");
                }
                tally.bytes += f.size;
                tally.uploaded.push(f.rel.clone());
                if let Err(e) = self.after_upload(f) {
                    tally.failed.push(e);
                }
            }
            Err(e) => tally.failed.push(e),
        }
    }

    /// The run's outcome from what happened to each file.
    fn outcome(&self, prefix: &str, no_files: bool, tally: Tally) -> Outcome {
        let Tally {
            uploaded,
            skipped,
            failed,
            bytes,
        } = tally;
        let details = serde_json::json!({
            "destination": format!("{}", redact_dest(&self.destination, prefix)),
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
        if no_files {
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
            usage: None,
        }
    }
}

/// What happened to the files of one run.
#[derive(Debug, Default)]
struct Tally {
    uploaded: Vec<String>,
    skipped: Vec<String>,
    failed: Vec<String>,
    bytes: u64,
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

/// Where an upload's blocks go: an OpenDAL writer or an SFTP file. Errors are the cause
/// alone; [`copy_file`] names the file.
pub(super) trait BlockSink {
    fn put(&mut self, block: Vec<u8>) -> impl Future<Output = Result<(), String>> + Send;
}

impl BlockSink for opendal::Writer {
    async fn put(&mut self, block: Vec<u8>) -> Result<(), String> {
        self.write(block).await.map_err(|e| e.to_string())
    }
}

/// Copies `file` (the source `f`) into `sink` block by block, giving up at the soft stop;
/// returns the bytes sent. Memory stays at a block or two whatever the file's size.
pub(super) async fn copy_file(
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
