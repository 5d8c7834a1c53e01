-- A node's `daemon.tags` (which firings it may run: `run_on`), and when its work was last
-- taken over after its lease ran out (a node dead and not taken over since is taken over
-- once, not at every heartbeat of the others).
ALTER TABLE nodes ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
ALTER TABLE nodes ADD COLUMN reaped_at timestamptz;

-- What the nodes tell each other without polling: a notification on channel `hourglass` when
-- pauses change, a manual trigger is requested, a run is asked to make way for a newer firing
-- (`replace <node>`), or a node joins, comes back or leaves (`nodes`). Sent at commit, by the
-- database, whoever made the change (a node, the CLI, psql).
CREATE FUNCTION hourglass_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_ARGV[0] = 'replace' THEN
        PERFORM pg_notify('hourglass', 'replace ' || NEW.node);
    ELSE
        PERFORM pg_notify('hourglass', TG_ARGV[0]);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER pauses_changed AFTER INSERT OR UPDATE OR DELETE ON pauses
    FOR EACH STATEMENT EXECUTE FUNCTION hourglass_notify('pauses');
CREATE TRIGGER trigger_requested AFTER INSERT ON trigger_requests
    FOR EACH STATEMENT EXECUTE FUNCTION hourglass_notify('triggers');
CREATE TRIGGER replace_requested AFTER INSERT OR UPDATE OF replace_requested ON active_runs
    FOR EACH ROW WHEN (NEW.replace_requested) EXECUTE FUNCTION hourglass_notify('replace');
CREATE TRIGGER node_joined AFTER INSERT ON nodes
    FOR EACH ROW EXECUTE FUNCTION hourglass_notify('nodes');
CREATE TRIGGER node_changed AFTER UPDATE ON nodes
    FOR EACH ROW WHEN (OLD.lease_until < now() OR NEW.lease_until <= now()
                       OR OLD.tags IS DISTINCT FROM NEW.tags)
    EXECUTE FUNCTION hourglass_notify('nodes');
