-- Run history, per-job state and manual trigger requests.
-- Timestamps are UTC text in RFC 3339 with milliseconds ('2026-11-26T04:43:00.123Z'), which
-- sqlite3's date functions understand and which sort correctly as text.

CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    job           TEXT    NOT NULL,
    scheduled_for TEXT    NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    status        TEXT    NOT NULL CHECK (status IN
                    ('running', 'succeeded', 'failed', 'timed_out', 'skipped',
                     'abandoned', 'interrupted', 'cancelled')),
    attempt       INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    trigger       TEXT    NOT NULL CHECK (trigger IN ('schedule', 'manual', 'retry', 'catch_up')),
    exit_code     INTEGER,
    error         TEXT,
    output        TEXT,
    node          TEXT    NOT NULL
);

CREATE INDEX runs_by_job ON runs (job, id);
CREATE INDEX runs_by_scheduled ON runs (scheduled_for);
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';

-- The last firing of each job, so a restart can catch up on what it missed.
CREATE TABLE job_state (
    job            TEXT PRIMARY KEY,
    last_fired_for TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

-- `hourglass trigger JOB` writes here; the daemon claims rows within a second.
CREATE TABLE trigger_requests (
    id           INTEGER PRIMARY KEY,
    job          TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    claimed_at   TEXT,
    claimed_by   TEXT
);
CREATE INDEX trigger_requests_pending ON trigger_requests (id) WHERE claimed_at IS NULL;

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
