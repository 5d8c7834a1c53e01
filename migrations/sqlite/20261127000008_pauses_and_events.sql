-- Paused jobs: their firings are not run (and not recorded one by one) from `since` until
-- resumed, or until `until` when given. Kept across restarts and reloads.
CREATE TABLE pauses (
    job   TEXT PRIMARY KEY,
    since TEXT NOT NULL,
    until TEXT,
    actor TEXT NOT NULL
);

-- What was done through the API: trigger, pause, resume; by whom (`uid:N` of the unix socket's
-- peer, `token`, or `loopback`).
CREATE TABLE events (
    id     INTEGER PRIMARY KEY,
    at     TEXT NOT NULL,
    action TEXT NOT NULL,
    job    TEXT,
    actor  TEXT NOT NULL,
    node   TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX events_by_job ON events (job, id);
