-- The run a manual trigger request started (or skipped), so that `hourglass trigger` can say
-- which run it is.
ALTER TABLE trigger_requests ADD COLUMN run_id INTEGER;
