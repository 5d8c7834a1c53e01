-- Jobs that run after other jobs: the `dependency` trigger, and each dependent run's causes.
ALTER TABLE runs DROP CONSTRAINT runs_trigger_check;
ALTER TABLE runs ADD CONSTRAINT runs_trigger_check
    CHECK (trigger IN ('schedule', 'manual', 'retry', 'catch_up', 'dependency'));
-- True when a retry of the firing follows this attempt: it is not the firing's last word.
ALTER TABLE runs ADD COLUMN retried boolean NOT NULL DEFAULT false;
-- A parent's newest ended run (what its children look at).
CREATE INDEX runs_by_job_end ON runs (job, finished_at);

-- The parent runs that fired a dependent run: a parent's run fires each child at most once.
CREATE TABLE run_causes (
    child         text   NOT NULL,
    parent_run_id bigint NOT NULL,
    run_id        bigint NOT NULL,
    -- The node that claimed the dependent firing (a run id without a row is its to start).
    node          text   NOT NULL,
    PRIMARY KEY (child, parent_run_id)
);
CREATE INDEX run_causes_by_run ON run_causes (run_id);

-- Mutual exclusion groups across nodes: a row per run of a group's jobs in progress, in one
-- of the group's `max_running` slots; freed at the run's end, or when its node is taken over.
CREATE TABLE group_runs (
    grp           text        NOT NULL,
    slot          integer     NOT NULL,
    node          text        NOT NULL,
    job           text        NOT NULL,
    scheduled_for timestamptz NOT NULL,
    since         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (grp, slot)
);

-- A manual run asked to fire none of the jobs that run after it (`trigger --no-deps`).
ALTER TABLE trigger_requests ADD COLUMN no_deps boolean NOT NULL DEFAULT false;
