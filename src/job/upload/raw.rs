//! The `[jobs.<name>.upload]` table into an [`UploadJob`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::sftp::sftp_destination;
use super::{After, Destination, UploadJob};
use crate::job::template::check_template;
use crate::problem::{Located, RawSecret, secret, url};

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
    let destination = destination(&r, at);
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

/// `upload.destination`: S3, SFTP or a folder.
fn destination(r: &RawUpload, at: &mut Located<'_>) -> Option<Destination> {
    let d = r.destination.as_str();
    if let Some(rest) = d.strip_prefix("s3://") {
        s3_destination(d, rest, r, at)
    } else if d.starts_with("sftp://") {
        sftp_destination(d, r, at)
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
    }
}

/// `s3://bucket/prefix/` with its credentials (`rest` is what follows `s3://`).
fn s3_destination(d: &str, rest: &str, r: &RawUpload, at: &mut Located<'_>) -> Option<Destination> {
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
}
