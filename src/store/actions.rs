//! What operators do through the API, kept in the history database: paused jobs (which
//! survive restarts and reloads, and which every node sharing the database follows) and the
//! `events` log (trigger, pause, resume: what, which job, when, who).

use chrono::{DateTime, Utc};

use super::{Backend, Store, StoreError, format_ts, parse_ts};

/// A paused job: its firings are not run from `since` until it is resumed, or until `until`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pause {
    /// The job.
    pub job: String,
    /// When it was paused.
    pub since: DateTime<Utc>,
    /// When it resumes by itself, if given.
    pub until: Option<DateTime<Utc>>,
    /// Who paused it.
    pub actor: String,
}

impl Pause {
    /// Whether the pause holds at `now`.
    pub fn holds_at(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|until| until > now)
    }
}

/// One action done through the API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// When.
    pub at: DateTime<Utc>,
    /// `trigger`, `pause` or `resume`.
    pub action: String,
    /// The job it was about.
    pub job: Option<String>,
    /// Who: `uid:N` (the unix socket's peer), `token` or `loopback`.
    pub actor: String,
    /// The node that served it.
    pub node: String,
    /// What came of it, or its arguments (`until ...`).
    pub detail: Option<String>,
}

impl Store {
    /// Pauses a job (a pause already there is replaced).
    pub async fn pause(&self, pause: &Pause) -> Result<(), StoreError> {
        match &self.0 {
            Backend::Sqlite(s) => {
                sqlx::query(
                    "INSERT INTO pauses (job, since, until, actor) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (job) DO UPDATE SET since = ?2, until = ?3, actor = ?4",
                )
                .bind(&pause.job)
                .bind(format_ts(pause.since))
                .bind(pause.until.map(format_ts))
                .bind(&pause.actor)
                .execute(&s.pool)
                .await?;
            }
            Backend::Postgres(p) => {
                sqlx::query(
                    "INSERT INTO pauses (job, since, until, actor) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (job) DO UPDATE SET since = $2, until = $3, actor = $4",
                )
                .bind(&pause.job)
                .bind(pause.since)
                .bind(pause.until)
                .bind(&pause.actor)
                .execute(&p.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Resumes a job; whether it was paused (a pause whose `until` passed counts as none).
    pub async fn resume(&self, job: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        // The pause taken away, in one statement: `Some(until)` if there was one.
        let removed: Option<Option<String>> = match &self.0 {
            Backend::Sqlite(s) => {
                sqlx::query_scalar("DELETE FROM pauses WHERE job = ?1 RETURNING until")
                    .bind(job)
                    .fetch_optional(&s.pool)
                    .await?
            }
            Backend::Postgres(p) => {
                sqlx::query_scalar("DELETE FROM pauses WHERE job = $1 RETURNING hg_ts(until)")
                    .bind(job)
                    .fetch_optional(&p.pool)
                    .await?
            }
        };
        Ok(removed.is_some_and(|until| {
            until
                .as_deref()
                .and_then(parse_ts)
                .is_none_or(|until| until > now)
        }))
    }

    /// Every pause on record (those whose `until` passed included), by job name.
    pub async fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        let rows: Vec<(String, String, Option<String>, String)> = match &self.0 {
            Backend::Sqlite(s) => {
                sqlx::query_as("SELECT job, since, until, actor FROM pauses ORDER BY job")
                    .fetch_all(&s.pool)
                    .await?
            }
            Backend::Postgres(p) => {
                sqlx::query_as(
                    "SELECT job, hg_ts(since), hg_ts(until), actor FROM pauses ORDER BY job",
                )
                .fetch_all(&p.pool)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|(job, since, until, actor)| {
                Some(Pause {
                    job,
                    since: parse_ts(&since)?,
                    until: until.as_deref().and_then(parse_ts),
                    actor,
                })
            })
            .collect())
    }

    /// Appends to the events log.
    pub async fn record_event(&self, event: &Event) -> Result<(), StoreError> {
        match &self.0 {
            Backend::Sqlite(s) => {
                sqlx::query(
                    "INSERT INTO events (at, action, job, actor, node, detail) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .bind(format_ts(event.at))
                .bind(&event.action)
                .bind(event.job.as_deref())
                .bind(&event.actor)
                .bind(&event.node)
                .bind(event.detail.as_deref())
                .execute(&s.pool)
                .await?;
            }
            Backend::Postgres(p) => {
                sqlx::query(
                    "INSERT INTO events (at, action, job, actor, node, detail) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(event.at)
                .bind(&event.action)
                .bind(event.job.as_deref())
                .bind(&event.actor)
                .bind(&event.node)
                .bind(event.detail.as_deref())
                .execute(&p.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// The newest `limit` events, newest first; of one job when given.
    pub async fn events(&self, job: Option<&str>, limit: u32) -> Result<Vec<Event>, StoreError> {
        let rows = match &self.0 {
            Backend::Sqlite(s) => sqlx::query(
                "SELECT at, action, job, actor, node, detail FROM events \
                     WHERE (?1 IS NULL OR job = ?1) ORDER BY id DESC LIMIT ?2",
            )
            .bind(job)
            .bind(i64::from(limit))
            .fetch_all(&s.pool)
            .await?
            .iter()
            .map(event_row)
            .collect::<Result<Vec<_>, _>>()?,
            Backend::Postgres(p) => sqlx::query(
                "SELECT hg_ts(at), action, job, actor, node, detail FROM events \
                     WHERE ($1::text IS NULL OR job = $1) ORDER BY id DESC LIMIT $2",
            )
            .bind(job)
            .bind(i64::from(limit))
            .fetch_all(&p.pool)
            .await?
            .iter()
            .map(event_row)
            .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(rows)
    }
}

/// An event from a row whose first column is its time as text.
fn event_row<R>(row: &R) -> Result<Event, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let at: String = row.try_get(0)?;
    Ok(Event {
        at: parse_ts(&at).unwrap_or_default(),
        action: row.try_get(1)?,
        job: row.try_get(2)?,
        actor: row.try_get(3)?,
        node: row.try_get(4)?,
        detail: row.try_get(5)?,
    })
}
