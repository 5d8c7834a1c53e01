-- What became of a manual trigger request, as soon as the daemon knows: 'started' (run_id is
-- the run), 'queued' (detail says behind what) or 'skipped' (run_id is the skipped row, detail
-- says why), so that `hourglass trigger` can say so.
ALTER TABLE trigger_requests ADD COLUMN outcome TEXT CHECK (outcome IN ('started', 'queued', 'skipped'));
ALTER TABLE trigger_requests ADD COLUMN detail TEXT;
