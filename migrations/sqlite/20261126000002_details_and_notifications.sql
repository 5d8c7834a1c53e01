-- Kind-specific facts of a run (JSON text): an email's message id and recipient count, an HTTP
-- job's status, an upload's files and bytes.
ALTER TABLE runs ADD COLUMN details TEXT;

-- Every notification attempt (failure / recovery / success, by email or webhook), sent or not.
CREATE TABLE notifications (
    id      INTEGER PRIMARY KEY,
    run_id  INTEGER NOT NULL,
    job     TEXT    NOT NULL,
    event   TEXT    NOT NULL CHECK (event IN ('failure', 'recovery', 'success')),
    channel TEXT    NOT NULL CHECK (channel IN ('email', 'webhook')),
    sent_at TEXT    NOT NULL,
    error   TEXT
);
CREATE INDEX notifications_by_run ON notifications (run_id);
