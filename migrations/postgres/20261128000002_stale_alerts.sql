-- Stale-job alerts (`alert_if_no_success_within`): since when each watched job is watched (the
-- reference for a job that never succeeded), and since when it is stale (its `stale` alert
-- was sent, by the one node whose update set it; cleared, with a `recovered` alert, at its
-- next success).
CREATE TABLE stale_watch (
    job           text PRIMARY KEY,
    watched_since timestamptz NOT NULL,
    stale_since   timestamptz
);

ALTER TABLE notifications DROP CONSTRAINT notifications_event_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_event_check
    CHECK (event IN ('failure', 'recovery', 'success', 'stale', 'recovered'));
