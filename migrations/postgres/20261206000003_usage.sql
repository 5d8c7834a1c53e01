-- What each command run cost, by the kernel's accounting (wait4's rusage): CPU time in
-- microseconds, the peak resident set in bytes, blocks (512 bytes) read and written, context
-- switches. NULL for runs of the kinds that run in the daemon (email, HTTP, upload), skipped
-- runs, and runs written before this migration.
ALTER TABLE runs ADD COLUMN cpu_user_us bigint;
ALTER TABLE runs ADD COLUMN cpu_system_us bigint;
ALTER TABLE runs ADD COLUMN peak_rss_bytes bigint;
ALTER TABLE runs ADD COLUMN blocks_read bigint;
ALTER TABLE runs ADD COLUMN blocks_written bigint;
ALTER TABLE runs ADD COLUMN voluntary_switches bigint;
ALTER TABLE runs ADD COLUMN involuntary_switches bigint;

-- PostgreSQL fixed the views' `runs.*` when they were made: made again to show the new columns.
DROP VIEW recent_failures;
DROP VIEW last_runs;
DROP VIEW runs_timed;

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
