-- What upload jobs have uploaded: a file (key below the destination) with its size and mtime,
-- for `skip_unchanged` and for retries that upload only what is missing.
CREATE TABLE uploads (
    job           TEXT    NOT NULL,
    destination   TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    size          INTEGER NOT NULL,
    mtime_ns      INTEGER NOT NULL,
    scheduled_for TEXT    NOT NULL,
    uploaded_at   TEXT    NOT NULL,
    PRIMARY KEY (job, destination, key)
);
