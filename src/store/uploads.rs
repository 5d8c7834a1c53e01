//! What upload jobs remember of the files they sent (size, modification time, when), so that
//! an unchanged file is not sent again.

use chrono::Utc;

use super::{Backend, Store, StoreError, Ts, UploadMark};

impl Store {
    /// The last upload of `mark`'s file (same job, destination and key), if any.
    pub async fn upload_mark(&self, mark: &UploadMark) -> Result<Option<UploadMark>, StoreError> {
        let row: Option<(i64, i64, Ts)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT size, mtime_ns, scheduled_for FROM uploads \
                 WHERE job = $1 AND destination = $2 AND key = $3",
            )
            .bind(&mark.job)
            .bind(&mark.destination)
            .bind(&mark.key)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.and_then(|(size, mtime_ns, at)| {
            Some(UploadMark {
                size: u64::try_from(size).ok()?,
                mtime_ns,
                scheduled_for: at.0,
                ..mark.clone()
            })
        }))
    }

    /// Remembers an upload.
    pub async fn set_upload_mark(&self, mark: &UploadMark) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO uploads (job, destination, key, size, mtime_ns, scheduled_for, \
                 uploaded_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (job, destination, key) DO UPDATE SET \
                 size = excluded.size, mtime_ns = excluded.mtime_ns, \
                 scheduled_for = excluded.scheduled_for, uploaded_at = excluded.uploaded_at",
            )
            .bind(&mark.job)
            .bind(&mark.destination)
            .bind(&mark.key)
            .bind(i64::try_from(mark.size).unwrap_or(i64::MAX))
            .bind(mark.mtime_ns)
            .bind(Ts(mark.scheduled_for))
            .bind(Ts(Utc::now()))
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
