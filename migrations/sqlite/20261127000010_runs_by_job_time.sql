-- A job's runs by firing time, with their status: the dashboard's success rate over seven
-- days and a firing's attempts are read from this index alone.
CREATE INDEX runs_by_job_time ON runs (job, scheduled_for, status);
