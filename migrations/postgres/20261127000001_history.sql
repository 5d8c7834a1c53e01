-- The history database on PostgreSQL: the same tables and views as on SQLite
-- (migrations/sqlite), with timestamps as timestamptz, plus what several daemons sharing the
-- database need: the nodes, and the claims that make each firing run on exactly one of them.

-- Timestamps as the CLI shows them (and as SQLite stores them): UTC, milliseconds.
CREATE FUNCTION hg_ts(t timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;

CREATE TABLE runs (
    id            bigint      PRIMARY KEY,
    job           text        NOT NULL,
    scheduled_for timestamptz NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz,
    status        text        NOT NULL CHECK (status IN
                    ('running', 'succeeded', 'failed', 'timed_out', 'skipped',
                     'abandoned', 'interrupted', 'cancelled')),
    attempt       bigint      NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    trigger       text        NOT NULL CHECK (trigger IN ('schedule', 'manual', 'retry', 'catch_up')),
    exit_code     bigint,
    error         text,
    output        text,
    node          text        NOT NULL,
    details       text,
    pid           bigint
);
CREATE INDEX runs_by_job ON runs (job, scheduled_for, id);
CREATE INDEX runs_by_scheduled ON runs (scheduled_for, id);
CREATE INDEX runs_running ON runs (node) WHERE status = 'running';

-- The last firing of each job, so a restart can catch up on what it missed.
CREATE TABLE job_state (
    job            text        PRIMARY KEY,
    last_fired_for timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

-- `hourglass trigger JOB` writes here; one node claims each request.
CREATE TABLE trigger_requests (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job          text        NOT NULL,
    requested_at timestamptz NOT NULL,
    claimed_at   timestamptz,
    claimed_by   text,
    run_id       bigint,
    outcome      text CHECK (outcome IN ('started', 'queued', 'skipped')),
    detail       text
);
CREATE INDEX trigger_requests_pending ON trigger_requests (id) WHERE claimed_at IS NULL;

CREATE TABLE notifications (
    id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id  bigint      NOT NULL,
    job     text        NOT NULL,
    event   text        NOT NULL CHECK (event IN ('failure', 'recovery', 'success')),
    channel text        NOT NULL CHECK (channel IN ('email', 'webhook')),
    sent_at timestamptz NOT NULL,
    error   text
);
CREATE INDEX notifications_by_run ON notifications (run_id);

CREATE TABLE uploads (
    job           text        NOT NULL,
    destination   text        NOT NULL,
    key           text        NOT NULL,
    size          bigint      NOT NULL,
    mtime_ns      bigint      NOT NULL,
    scheduled_for timestamptz NOT NULL,
    uploaded_at   timestamptz NOT NULL,
    PRIMARY KEY (job, destination, key)
);

-- database_id: this database's own id (every job carries it in HOURGLASS_DATABASE_ID).
-- run_ids_reserved_through: run ids are handed to the nodes in blocks; the last id given out.
CREATE TABLE daemon_state (
    only_row                 integer PRIMARY KEY CHECK (only_row = 1),
    database_id              text    NOT NULL,
    run_ids_reserved_through bigint  NOT NULL
);
INSERT INTO daemon_state (only_row, database_id, run_ids_reserved_through)
VALUES (1, md5(random()::text || clock_timestamp()::text), 0);

-- The daemons sharing this database. Times are the database's clock: a node whose lease has
-- passed is dead. skew_ms is the node's clock minus the database's, as it last measured.
CREATE TABLE nodes (
    name          text        PRIMARY KEY,
    version       text        NOT NULL,
    config_digest text        NOT NULL,
    started_at    timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL,
    lease_until   timestamptz NOT NULL,
    skew_ms       bigint      NOT NULL DEFAULT 0,
    -- The machine the node runs on: another machine cannot take a live node's name.
    machine       text        NOT NULL DEFAULT ''
);

-- The digest of each job definition each node has loaded: a job whose digest differs between
-- live nodes is logged (each firing runs with the definition of the node that claims it).
CREATE TABLE node_jobs (
    node   text NOT NULL,
    job    text NOT NULL,
    digest text NOT NULL,
    PRIMARY KEY (node, job)
);
CREATE INDEX node_jobs_by_job ON node_jobs (job);

-- One row per firing of a job, taken by the node that runs it before anything runs: the
-- primary key makes every other node's claim of the same firing a no-op. reaped_by: the node
-- that found the claimer dead; the claimer writes nothing more for the firing.
CREATE TABLE claims (
    job           text        NOT NULL,
    scheduled_for timestamptz NOT NULL,
    node          text        NOT NULL,
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    reaped_by     text,
    -- The one run catch_up = "latest" makes after the shared database was out of reach.
    latest_after_outage boolean NOT NULL DEFAULT false,
    PRIMARY KEY (job, scheduled_for)
);
CREATE INDEX claims_by_node ON claims (node, claimed_at);
CREATE INDEX claims_by_time ON claims (scheduled_for);

-- The run of a job in progress on some node, for the overlap policies across nodes (`skip`,
-- `queue` and `replace` hold cluster-wide): one row per job at most. replace_requested: a
-- node holding a newer firing under `overlap = "replace"` asks the holder to stop.
CREATE TABLE active_runs (
    job               text        PRIMARY KEY,
    node              text        NOT NULL,
    scheduled_for     timestamptz NOT NULL,
    since             timestamptz NOT NULL DEFAULT now(),
    replace_requested boolean     NOT NULL DEFAULT false
);
CREATE INDEX active_runs_by_node ON active_runs (node);

-- Every run with its lateness and duration in milliseconds.
CREATE VIEW runs_timed AS
SELECT runs.*,
       round(extract(epoch FROM started_at - scheduled_for) * 1000)::bigint AS lateness_ms,
       round(extract(epoch FROM finished_at - started_at) * 1000)::bigint   AS duration_ms
FROM runs;

-- The most recent run of each job.
CREATE VIEW last_runs AS
SELECT DISTINCT ON (job) * FROM runs_timed ORDER BY job, scheduled_for DESC, id DESC;

-- Runs that did not succeed in the last 24 hours.
CREATE VIEW recent_failures AS
SELECT * FROM runs_timed
WHERE status IN ('failed', 'timed_out', 'abandoned', 'interrupted')
  AND scheduled_for >= now() - interval '1 day'
ORDER BY scheduled_for DESC, id DESC;

-- Per job: how many runs, how many failed, and the last status.
CREATE VIEW job_summary AS
SELECT job,
       count(*)                                                                       AS runs,
       count(*) FILTER (WHERE status = 'succeeded')                                   AS succeeded,
       count(*) FILTER (WHERE status IN ('failed', 'timed_out', 'abandoned', 'interrupted')) AS failed,
       count(*) FILTER (WHERE status = 'skipped')                                     AS skipped,
       max(started_at)                                                                AS last_started_at,
       (SELECT status FROM runs r2 WHERE r2.job = runs.job
        ORDER BY scheduled_for DESC, id DESC LIMIT 1)                                 AS last_status
FROM runs GROUP BY job;
