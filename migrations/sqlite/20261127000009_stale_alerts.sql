-- Stale-job alerts (`alert_if_no_success_within`): since when each watched job is watched (the
-- reference for a job that never succeeded), and since when it is stale (its `stale` alert
-- was sent; cleared, with a `recovered` alert, at its next success).
CREATE TABLE stale_watch (
    job           TEXT PRIMARY KEY,
    watched_since TEXT NOT NULL,
    stale_since   TEXT
);

-- Notifications may now be `stale` and `recovered` too (SQLite cannot change a CHECK in place:
-- the table is rebuilt with its rows).
CREATE TABLE notifications_new (
    id      INTEGER PRIMARY KEY,
    run_id  INTEGER NOT NULL,
    job     TEXT    NOT NULL,
    event   TEXT    NOT NULL CHECK (event IN ('failure', 'recovery', 'success', 'stale', 'recovered')),
    channel TEXT    NOT NULL CHECK (channel IN ('email', 'webhook')),
    sent_at TEXT    NOT NULL,
    error   TEXT
);
INSERT INTO notifications_new SELECT id, run_id, job, event, channel, sent_at, error FROM notifications;
DROP TABLE notifications;
ALTER TABLE notifications_new RENAME TO notifications;
CREATE INDEX notifications_by_run ON notifications (run_id);
