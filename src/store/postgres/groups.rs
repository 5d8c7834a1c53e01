//! Mutual exclusion groups across the nodes of a shared database: a run of a group's jobs
//! takes one of the group's `max_running` slots (`group_runs`) in one statement, and gives it
//! back at its end; a dead node's slots are freed when it is taken over.

use chrono::{DateTime, Utc};

use super::cluster::Cluster;
use crate::store::StoreError;

/// A slot of a group held by a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHolder {
    /// The job whose run holds it.
    pub job: String,
    /// That run's firing.
    pub scheduled_for: DateTime<Utc>,
    /// The node it runs on.
    pub node: String,
}

impl Cluster {
    /// Takes a free slot of `group` (of `max_running`) for the run of `job`'s firing at
    /// `scheduled_for` on `node`; `None` when every slot is held.
    pub async fn take_group_slot(
        &self,
        group: &str,
        max_running: usize,
        node: &str,
        job: &str,
        scheduled_for: DateTime<Utc>,
    ) -> Result<Option<i32>, StoreError> {
        let max = i32::try_from(max_running).unwrap_or(i32::MAX);
        Ok(sqlx::query_scalar(
            "INSERT INTO group_runs (grp, slot, node, job, scheduled_for) \
             SELECT $1, s, $3, $4, $5 FROM generate_series(0, $2 - 1) s \
             WHERE NOT EXISTS (SELECT 1 FROM group_runs g WHERE g.grp = $1 AND g.slot = s) \
             AND (SELECT count(*) FROM group_runs g WHERE g.grp = $1) < $2 \
             ORDER BY s LIMIT 1 ON CONFLICT DO NOTHING RETURNING slot",
        )
        .bind(group)
        .bind(max)
        .bind(node)
        .bind(job)
        .bind(scheduled_for)
        .fetch_optional(&self.0.pool)
        .await?)
    }

    /// Gives back slot `slot` of `group` held by `node`.
    pub async fn give_group_slot(
        &self,
        group: &str,
        slot: i32,
        node: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM group_runs WHERE grp = $1 AND slot = $2 AND node = $3")
            .bind(group)
            .bind(slot)
            .bind(node)
            .execute(&self.0.pool)
            .await?;
        Ok(())
    }

    /// Who holds `group`'s slots now.
    pub async fn group_holders(&self, group: &str) -> Result<Vec<GroupHolder>, StoreError> {
        let rows: Vec<(String, DateTime<Utc>, String)> = sqlx::query_as(
            "SELECT job, scheduled_for, node FROM group_runs WHERE grp = $1 ORDER BY slot",
        )
        .bind(group)
        .fetch_all(&self.0.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(job, scheduled_for, node)| GroupHolder {
                job,
                scheduled_for,
                node,
            })
            .collect())
    }
}
