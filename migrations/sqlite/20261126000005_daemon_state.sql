-- What a daemon must know of the one before it, in one row:
-- - database_id: this database's own id. Every job carries it (HOURGLASS_DATABASE_ID), so that
--   a daemon starting after a kill -9 finds and stops what the dead daemon's runs left, and
--   gives them rows.
-- - run_ids_reserved_through: run ids up to here may already be in a job's environment
--   although their rows were never written (the daemon hands out ids from memory and reserves
--   them here in blocks ahead); the next daemon starts above it, so an id is never reused.
CREATE TABLE daemon_state (
    only_row                 INTEGER PRIMARY KEY CHECK (only_row = 1),
    database_id              TEXT    NOT NULL,
    run_ids_reserved_through INTEGER NOT NULL
);
INSERT INTO daemon_state (only_row, database_id, run_ids_reserved_through)
SELECT 1, lower(hex(randomblob(16))), coalesce(max(id), 0) FROM runs;
