//! What several nodes sharing the database do: claim firings (by the database's clock), take
//! over from dead nodes, take turns for the overlap policies, renew leases, compare job
//! definitions.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::PgStore;
use crate::store::{
    BeatAnswer, Claim, LostRun, NodeBeat, NodeHolder, NodeRow, StoreError, Ts, Waiting,
};

/// The heartbeat: the lease renewed (a dead holder's name taken, a live one's not), and what
/// the node follows read in the same statement (the other subqueries see the nodes as they
/// were before this beat, so this node is left out of them and counted by its parameters).
const HEARTBEAT: &str = "WITH beat AS (INSERT INTO nodes (name, version, config_digest, \
     started_at, heartbeat_at, lease_until, skew_ms, machine, process, tags) \
     VALUES ($1, $2, $3, now(), now(), now() + $4 * interval '1 millisecond', \
     round(extract(epoch FROM $5::timestamptz - now()) * 1000)::bigint, $7, $8, $10) \
     ON CONFLICT (name) DO UPDATE SET version = excluded.version, \
     config_digest = excluded.config_digest, heartbeat_at = excluded.heartbeat_at, \
     lease_until = excluded.lease_until, skew_ms = excluded.skew_ms, \
     machine = excluded.machine, process = excluded.process, tags = excluded.tags, \
     started_at = CASE WHEN $6 THEN excluded.started_at ELSE nodes.started_at END \
     WHERE nodes.lease_until < now() OR (nodes.machine = excluded.machine \
     AND nodes.process IN (excluded.process, $9)) \
     RETURNING skew_ms), \
     others AS (SELECT name, tags, config_digest FROM nodes \
     WHERE lease_until > now() AND name <> $1) \
     SELECT b.skew_ms, \
     ARRAY(SELECT name FROM others ORDER BY name), \
     ARRAY(SELECT array_to_string(tags, ',') FROM others ORDER BY name), \
     (SELECT count(DISTINCT d) FROM (SELECT config_digest FROM others UNION SELECT $3) AS c (d)), \
     EXISTS (SELECT 1 FROM nodes WHERE lease_until < now() AND name <> $1 \
     AND (reaped_at IS NULL OR reaped_at < lease_until)), \
     CASE WHEN $11 THEN EXISTS (SELECT 1 FROM trigger_requests WHERE claimed_at IS NULL) \
     ELSE false END, \
     CASE WHEN $11 THEN EXISTS (SELECT 1 FROM active_runs WHERE node = $1 \
     AND replace_requested) ELSE false END, \
     CASE WHEN $11 THEN (SELECT md5(coalesce(string_agg(job || ' ' || since::text || ' ' || \
     coalesce(until::text, '-'), ',' ORDER BY job), '')) FROM pauses) END \
     FROM beat b";

/// The statements of a database several nodes share, which only PostgreSQL is (see
/// [`Store::cluster`](crate::store::Store::cluster)): a daemon on SQLite has none and runs
/// every firing it has.
#[derive(Debug, Clone)]
pub struct Cluster(pub(in crate::store) PgStore);

impl Cluster {
    /// Claims `firings` (job, time, whether its turn is wanted too) for `node` in one
    /// statement, by the database's clock: a firing not due yet there (this node's clock is
    /// ahead) is not claimed. The turn of a won firing that wants one is taken in the same
    /// statement when no run of its job holds it.
    pub async fn claim_firings(
        &self,
        firings: &[(String, DateTime<Utc>, bool)],
        node: &str,
    ) -> Result<Vec<Claim>, StoreError> {
        let mut jobs = Vec::with_capacity(firings.len());
        let mut times = Vec::with_capacity(firings.len());
        let mut turns = Vec::with_capacity(firings.len());
        for (job, at, turn) in firings {
            jobs.push(job.as_str());
            times.push(*at);
            turns.push(*turn);
        }
        // A firing not yet due by the database's clock is not claimed but told how early it
        // is. Rows are inserted in one order on every node, so that two nodes' batches never
        // wait for each other's rows the other way round.
        let rows: Vec<(bool, f64, bool)> = sqlx::query_as(
            "WITH clock AS (SELECT now() AS db_now), \
             asked AS (SELECT a.job, a.scheduled_for, a.turn, a.n \
                       FROM unnest($1::text[], $2::timestamptz[], $4::bool[]) WITH ORDINALITY \
                       AS a (job, scheduled_for, turn, n)), \
             won AS (INSERT INTO claims (job, scheduled_for, node) \
                     SELECT a.job, a.scheduled_for, $3 FROM asked a, clock \
                     WHERE a.scheduled_for <= db_now + interval '2 milliseconds' \
                     ORDER BY a.job, a.scheduled_for \
                     ON CONFLICT DO NOTHING RETURNING job, scheduled_for), \
             turned AS (INSERT INTO active_runs (job, node, scheduled_for) \
                     SELECT w.job, $3, w.scheduled_for FROM won w JOIN asked a \
                     ON a.job = w.job AND a.scheduled_for = w.scheduled_for WHERE a.turn \
                     ORDER BY w.job, w.scheduled_for \
                     ON CONFLICT (job) DO NOTHING RETURNING job, scheduled_for) \
             SELECT EXISTS (SELECT 1 FROM won w \
                            WHERE w.job = a.job AND w.scheduled_for = a.scheduled_for), \
                    (extract(epoch FROM a.scheduled_for - db_now) * 1000)::float8, \
                    EXISTS (SELECT 1 FROM turned t \
                            WHERE t.job = a.job AND t.scheduled_for = a.scheduled_for) \
             FROM asked a, clock ORDER BY a.n",
        )
        .bind(&jobs)
        .bind(&times)
        .bind(node)
        .bind(&turns)
        .fetch_all(&self.0.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(won, early_ms, turn)| {
                if won {
                    Claim::Won { turn }
                } else if early_ms > 2.0 {
                    Claim::Early(Duration::from_secs_f64(early_ms / 1000.0))
                } else {
                    Claim::Lost
                }
            })
            .collect())
    }

    /// Takes over from dead nodes (lease run out, by the database's clock): their runs still
    /// `running` become `abandoned`, and the firings they claimed but never recorded get an
    /// `abandoned` row (ids from `ids`). The claims of both are marked reaped, so that a dead
    /// node that comes back writes nothing more for them. Returns what was lost.
    pub async fn reap_dead_nodes(
        &self,
        me: &str,
        ids: &(dyn Fn() -> i64 + Sync),
    ) -> Result<Vec<LostRun>, StoreError> {
        let mut tx = self.0.members.begin().await?;
        let mut lost: Vec<LostRun> = sqlx::query_as(
            "UPDATE runs SET status = 'abandoned', finished_at = now(), \
             error = 'node ' || runs.node || ' stopped answering (its lease ran out at ' || \
             hg_ts(n.lease_until) || '): this run may or may not have finished' \
             FROM nodes n WHERE n.name = runs.node AND n.lease_until < now() \
             AND runs.node <> $1 AND runs.status = 'running' \
             RETURNING runs.id, runs.job, runs.scheduled_for, runs.attempt, runs.node",
        )
        .bind(me)
        .fetch_all(&mut *tx)
        .await?;
        let unrecorded: Vec<(String, DateTime<Utc>, String)> = sqlx::query_as(
            "UPDATE claims c SET reaped_by = $1 FROM nodes n \
             WHERE n.name = c.node AND n.lease_until < now() AND c.node <> $1 \
             AND c.reaped_by IS NULL AND c.claimed_at > n.heartbeat_at - interval '1 minute' \
             AND c.claimed_at < now() - interval '2 seconds' \
             AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.job = c.job \
                             AND r.scheduled_for = c.scheduled_for) \
             RETURNING c.job, c.scheduled_for, c.node",
        )
        .bind(me)
        .fetch_all(&mut *tx)
        .await?;
        for (job, scheduled_for, node) in unrecorded {
            let id = ids();
            sqlx::query(
                "INSERT INTO runs (id, job, scheduled_for, finished_at, status, attempt, trigger, \
                 error, node) VALUES ($1, $2, $3, now(), 'abandoned', 1, 'schedule', \
                 'node ' || $4 || ' claimed this firing and stopped answering before recording its start', $4)",
            )
            .bind(id)
            .bind(&job)
            .bind(scheduled_for)
            .bind(&node)
            .execute(&mut *tx)
            .await?;
            lost.push(LostRun {
                id,
                job,
                scheduled_for,
                attempt: 1,
                node,
            });
        }
        sqlx::query(
            "DELETE FROM active_runs a USING nodes n WHERE n.name = a.node \
             AND n.lease_until < now() AND a.node <> $1",
        )
        .bind(me)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM group_runs g USING nodes n WHERE n.name = g.node \
             AND n.lease_until < now() AND g.node <> $1",
        )
        .bind(me)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE nodes SET reaped_at = now() WHERE lease_until < now() AND name <> $1 \
             AND (reaped_at IS NULL OR reaped_at < lease_until)",
        )
        .bind(me)
        .execute(&mut *tx)
        .await?;
        for run in &lost {
            sqlx::query("UPDATE claims SET reaped_by = $3 WHERE job = $1 AND scheduled_for = $2")
                .bind(&run.job)
                .bind(run.scheduled_for)
                .bind(me)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(lost)
    }

    /// Takes the firing of a lost run over (`on_node_loss = "retry"`): its claim becomes this
    /// node's, so that this node's next attempt is written.
    pub async fn take_over(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        me: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE claims SET node = $3, reaped_by = NULL WHERE job = $1 AND scheduled_for = $2",
        )
        .bind(job)
        .bind(scheduled_for)
        .bind(me)
        .execute(&self.0.pool)
        .await?;
        Ok(())
    }

    /// Takes the job's turn across nodes for the firing of `scheduled_for`: `None` when this
    /// node has it now, else who holds it (node, firing).
    pub async fn take_turn(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        me: &str,
        replace: bool,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        // One statement: either the row is inserted (this node has the turn), or the holder's
        // row comes back (marked for replacing when asked); `xmax = 0` tells which.
        let (node, held_for, inserted): (String, DateTime<Utc>, bool) = sqlx::query_as(
            "INSERT INTO active_runs (job, node, scheduled_for) VALUES ($1, $2, $3) \
             ON CONFLICT (job) DO UPDATE SET \
             replace_requested = active_runs.replace_requested OR $4 \
             RETURNING node, scheduled_for, xmax = 0",
        )
        .bind(job)
        .bind(me)
        .bind(scheduled_for)
        .bind(replace)
        .fetch_one(&self.0.pool)
        .await?;
        Ok((!inserted).then_some((node, held_for)))
    }

    /// Names `children` to every node (`look a b c`): they look at those they may run. In
    /// notifications of at most about 7,000 bytes each.
    pub async fn name_children(&self, children: &[String]) -> Result<(), StoreError> {
        let mut payload = String::from("look");
        for (i, child) in children.iter().enumerate() {
            payload.push(' ');
            payload.push_str(child);
            if payload.len() > 7_000 || i + 1 == children.len() {
                sqlx::query("SELECT pg_notify('hourglass', $1)")
                    .bind(&payload)
                    .execute(&self.0.pool)
                    .await?;
                payload = String::from("look");
            }
        }
        Ok(())
    }

    /// The jobs whose run on this node another node asked to replace.
    pub async fn replace_requests(&self, me: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT job FROM active_runs WHERE node = $1 AND replace_requested")
                .bind(me)
                .fetch_all(&self.0.pool)
                .await?,
        )
    }

    /// Replaces the digests of the job definitions node `me` has loaded.
    pub async fn set_node_jobs(
        &self,
        me: &str,
        jobs: &[(String, String)],
    ) -> Result<(), StoreError> {
        let (names, digests): (Vec<&str>, Vec<&str>) =
            jobs.iter().map(|(n, d)| (n.as_str(), d.as_str())).unzip();
        let mut tx = self.0.members.begin().await?;
        sqlx::query("DELETE FROM node_jobs WHERE node = $1")
            .bind(me)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO node_jobs (node, job, digest) \
             SELECT $1, job, digest FROM unnest($2::text[], $3::text[]) AS t (job, digest)",
        )
        .bind(me)
        .bind(names)
        .bind(digests)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The jobs whose definition differs between live nodes: each with `node=digest` pairs.
    pub async fn job_drift(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT j.job, array_agg(j.node || '=' || j.digest ORDER BY j.node) \
             FROM node_jobs j JOIN nodes n ON n.name = j.node AND n.lease_until > now() \
             WHERE (SELECT count(DISTINCT config_digest) FROM nodes WHERE lease_until > now()) > 1 \
             GROUP BY j.job HAVING count(DISTINCT j.digest) > 1 ORDER BY j.job",
        )
        .fetch_all(&self.0.members)
        .await?)
    }

    /// Ends this node's lease at a clean stop: it shows as stopped at once.
    pub async fn leave(&self, me: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET lease_until = now() WHERE name = $1")
            .bind(me)
            .execute(&self.0.members)
            .await?;
        Ok(())
    }

    /// Claims the one run `catch_up = "latest"` makes for firings missed while the database
    /// was out of reach: the firing of `scheduled_for`, unless a node already claimed such a
    /// run for this job since `since` (the nodes' lists of missed firings may end a firing
    /// apart; the job's advisory lock makes the check and the claim one step).
    pub async fn claim_latest(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        since: DateTime<Utc>,
        node: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.0.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('hourglass latest ' || $1))")
            .bind(job)
            .execute(&mut *tx)
            .await?;
        let won: Option<bool> = sqlx::query_scalar(
            "INSERT INTO claims (job, scheduled_for, node, latest_after_outage) \
             SELECT $1, $2, $3, true WHERE NOT EXISTS (SELECT 1 FROM claims \
             WHERE job = $1 AND latest_after_outage AND scheduled_for >= $4) \
             ON CONFLICT DO NOTHING RETURNING true",
        )
        .bind(job)
        .bind(scheduled_for)
        .bind(node)
        .bind(since)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(won.is_some())
    }

    /// Renews this node's lease and records its skew (its clock, read once a connection is
    /// in hand and sent with the statement, minus the database's), in one statement that also
    /// tells the other live nodes, whether a dead node's work waits to be taken over, and on
    /// a polling beat what is waiting. (Read before a connection came, after an outage, the
    /// clock would be behind by the wait.)
    pub async fn heartbeat(&self, beat: &NodeBeat<'_>) -> Result<BeatAnswer, StoreError> {
        let lease_ms = i64::try_from(beat.lease.as_millis()).unwrap_or(i64::MAX);
        let mut conn = self.0.members.acquire().await?;
        let local_now = Utc::now();
        let row = sqlx::query(HEARTBEAT)
            .bind(beat.node)
            .bind(beat.version)
            .bind(beat.config_digest)
            .bind(lease_ms)
            .bind(local_now)
            .bind(beat.first)
            .bind(beat.machine)
            .bind(beat.process)
            .bind(beat.replaces)
            .bind(beat.tags)
            .bind(beat.poll)
            .fetch_optional(&mut *conn)
            .await?;
        let row = row.ok_or_else(|| StoreError::NodeNameTaken {
            name: beat.node.to_string(),
            where_: "another daemon".to_string(),
        })?;
        let names: Vec<String> = row.try_get(1)?;
        let tags: Vec<String> = row.try_get(2)?;
        let split = |t: String| -> Vec<String> {
            t.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let pauses: Option<String> = row.try_get(7)?;
        Ok(BeatAnswer {
            skew_ms: row.try_get(0)?,
            others: names.into_iter().zip(tags.into_iter().map(split)).collect(),
            configs: row.try_get(3)?,
            dead_to_reap: row.try_get(4)?,
            waiting: pauses
                .map(|pauses| -> Result<Waiting, sqlx::Error> {
                    Ok(Waiting {
                        triggers: row.try_get(5)?,
                        replace: row.try_get(6)?,
                        pauses,
                    })
                })
                .transpose()?,
        })
    }

    /// Who holds node `name` now.
    pub async fn node_holder(&self, name: &str) -> Result<Option<NodeHolder>, StoreError> {
        let row =
            sqlx::query("SELECT machine, process, lease_until > now() FROM nodes WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.0.members)
                .await?;
        Ok(row.map(|r| NodeHolder {
            machine: r.get(0),
            process: r.get(1),
            alive: r.get(2),
        }))
    }

    /// Every node, with whether its lease still holds by the database's clock.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, version, config_digest, started_at, heartbeat_at, lease_until, skew_ms, \
             lease_until > now() FROM nodes ORDER BY name",
        )
        .fetch_all(&self.0.members)
        .await?;
        let node = |r: &sqlx::postgres::PgRow| -> Result<NodeRow, sqlx::Error> {
            Ok(NodeRow {
                name: r.try_get(0)?,
                version: r.try_get(1)?,
                config_digest: r.try_get(2)?,
                started_at: r.try_get::<Ts, _>(3)?.0,
                heartbeat_at: r.try_get::<Ts, _>(4)?.0,
                lease_until: r.try_get::<Ts, _>(5)?.0,
                skew_ms: r.try_get(6)?,
                alive: r.try_get(7)?,
            })
        };
        Ok(rows.iter().map(node).collect::<Result<_, _>>()?)
    }

    /// Deletes the claims of firings before `before`.
    pub async fn prune_claims(&self, before: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM claims WHERE scheduled_for < $1")
            .bind(before)
            .execute(&self.0.pool)
            .await?;
        Ok(())
    }
}
