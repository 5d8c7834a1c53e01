-- Jobs that run after other jobs: the `dependency` trigger, and each dependent run's causes.
-- SQLite cannot change a CHECK constraint in place: the runs table is rebuilt (its views
-- dropped first and made again as they were, its indexes made again).

DROP VIEW job_summary;
DROP VIEW recent_failures;
DROP VIEW last_runs;
DROP VIEW runs_timed;

CREATE TABLE runs_new (
    id            INTEGER PRIMARY KEY,
    job           TEXT    NOT NULL,
    scheduled_for TEXT    NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    status        TEXT    NOT NULL CHECK (status IN
                    ('running', 'succeeded', 'failed', 'timed_out', 'skipped',
                     'abandoned', 'interrupted', 'cancelled')),
    attempt       INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    trigger       TEXT    NOT NULL CHECK (trigger IN
                    ('schedule', 'manual', 'retry', 'catch_up', 'dependency')),
    exit_code     INTEGER,
    error         TEXT,
    output        TEXT,
    node          TEXT    NOT NULL,
    details       TEXT,
    pid           INTEGER,
    -- 1 when a retry of the firing follows this attempt: it is not the firing's last word.
    retried       INTEGER NOT NULL DEFAULT 0
);
INSERT INTO runs_new (id, job, scheduled_for, started_at, finished_at, status, attempt, trigger,
                      exit_code, error, output, node, details, pid)
SELECT id, job, scheduled_for, started_at, finished_at, status, attempt, trigger,
       exit_code, error, output, node, details, pid FROM runs;
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;

CREATE INDEX runs_by_job ON runs (job, id);
CREATE INDEX runs_by_scheduled ON runs (scheduled_for);
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';
CREATE INDEX runs_by_job_time ON runs (job, scheduled_for, status);
-- A parent's newest ended run (what its children look at).
CREATE INDEX runs_by_job_end ON runs (job, finished_at);

-- Every run with its lateness and duration in milliseconds.
CREATE VIEW runs_timed AS
SELECT runs.*,
       CAST(round((julianday(started_at) - julianday(scheduled_for)) * 86400000) AS INTEGER) AS lateness_ms,
       CAST(round((julianday(finished_at) - julianday(started_at)) * 86400000) AS INTEGER) AS duration_ms
FROM runs;

-- The most recent run of each job.
CREATE VIEW last_runs AS
SELECT * FROM runs_timed
WHERE id IN (SELECT max(id) FROM runs GROUP BY job);

-- Runs that did not succeed in the last 24 hours.
CREATE VIEW recent_failures AS
SELECT * FROM runs_timed
WHERE status IN ('failed', 'timed_out', 'abandoned', 'interrupted')
  AND scheduled_for >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day')
ORDER BY id DESC;

-- Per job: how many runs, how many failed, and the last status.
CREATE VIEW job_summary AS
SELECT job,
       count(*)                                                         AS runs,
       sum(status = 'succeeded')                                        AS succeeded,
       sum(status IN ('failed', 'timed_out', 'abandoned', 'interrupted')) AS failed,
       sum(status = 'skipped')                                          AS skipped,
       max(started_at)                                                  AS last_started_at,
       (SELECT status FROM runs r2 WHERE r2.job = runs.job ORDER BY id DESC LIMIT 1) AS last_status
FROM runs GROUP BY job;

-- The parent runs that fired a dependent run: a parent's run fires each child at most once.
CREATE TABLE run_causes (
    child         TEXT    NOT NULL,
    parent_run_id INTEGER NOT NULL,
    run_id        INTEGER NOT NULL,
    -- The node that claimed the dependent firing (a run id without a row is its to start).
    node          TEXT    NOT NULL,
    PRIMARY KEY (child, parent_run_id)
);
CREATE INDEX run_causes_by_run ON run_causes (run_id);

-- A manual run asked to fire none of the jobs that run after it (`trigger --no-deps`).
ALTER TABLE trigger_requests ADD COLUMN no_deps INTEGER NOT NULL DEFAULT 0;
