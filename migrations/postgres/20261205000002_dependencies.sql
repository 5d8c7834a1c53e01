-- Jobs that run after other jobs: the `dependency` trigger, and each dependent run's causes.
ALTER TABLE runs DROP CONSTRAINT runs_trigger_check;
ALTER TABLE runs ADD CONSTRAINT runs_trigger_check
    CHECK (trigger IN ('schedule', 'manual', 'retry', 'catch_up', 'dependency'));

-- The parent runs that fired a dependent run: a parent's run fires each child at most once.
CREATE TABLE run_causes (
    child         text   NOT NULL,
    parent_run_id bigint NOT NULL,
    run_id        bigint NOT NULL,
    PRIMARY KEY (child, parent_run_id)
);
CREATE INDEX run_causes_by_run ON run_causes (run_id);
