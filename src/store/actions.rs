//! What operators do through the API, kept in the history database: paused jobs (which
//! survive restarts and reloads, and which every node sharing the database follows) and the
//! `events` log (trigger, pause, resume: what, which job, when, who).

use chrono::{DateTime, Utc};

use super::{Backend, Store, StoreError, Ts};

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
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO pauses (job, since, until, actor) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (job) DO UPDATE SET since = $2, until = $3, actor = $4",
            )
            .bind(&pause.job)
            .bind(Ts(pause.since))
            .bind(pause.until.map(Ts))
            .bind(&pause.actor)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Resumes a job; whether it was paused (a pause whose `until` passed counts as none).
    pub async fn resume(&self, job: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        // The pause taken away, in one statement: `Some(until)` if there was one.
        let removed: Option<Option<Ts>> = on_pool!(self, pool => {
            sqlx::query_scalar("DELETE FROM pauses WHERE job = $1 RETURNING until")
                .bind(job)
                .fetch_optional(pool)
                .await?
        });
        Ok(removed.is_some_and(|until| until.is_none_or(|until| until.0 > now)))
    }

    /// Every pause on record (those whose `until` passed included), by job name.
    pub async fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        let rows: Vec<(String, Ts, Option<Ts>, String)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT job, since, until, actor FROM pauses ORDER BY job")
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(job, since, until, actor)| Pause {
                job,
                since: since.0,
                until: until.map(|t| t.0),
                actor,
            })
            .collect())
    }

    /// Appends to the events log.
    pub async fn record_event(&self, event: &Event) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO events (at, action, job, actor, node, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(Ts(event.at))
            .bind(&event.action)
            .bind(event.job.as_deref())
            .bind(&event.actor)
            .bind(&event.node)
            .bind(event.detail.as_deref())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The newest `limit` events, newest first; of one job when given.
    pub async fn events(&self, job: Option<&str>, limit: u32) -> Result<Vec<Event>, StoreError> {
        type EventRow = (Ts, String, Option<String>, String, String, Option<String>);
        let rows: Vec<EventRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT at, action, job, actor, node, detail FROM events \
                 WHERE (CAST($1 AS TEXT) IS NULL OR job = $1) ORDER BY id DESC LIMIT $2",
            )
            .bind(job)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(at, action, job, actor, node, detail)| Event {
                at: at.0,
                action,
                job,
                actor,
                node,
                detail,
            })
            .collect())
    }
}
