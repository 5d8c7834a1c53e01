-- Paused jobs: their firings are not run (and not recorded one by one) from `since` until
-- resumed, or until `until` when given. Kept across restarts and reloads; every node follows.
CREATE TABLE pauses (
    job   text PRIMARY KEY,
    since timestamptz NOT NULL,
    until timestamptz,
    actor text NOT NULL
);

-- What was done through the API: trigger, pause, resume; by whom (`uid:N` of the unix socket's
-- peer, `token`, or `loopback`) and on which node.
CREATE TABLE events (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL,
    action text NOT NULL,
    job    text,
    actor  text NOT NULL,
    node   text NOT NULL,
    detail text
);
CREATE INDEX events_by_job ON events (job, id);
