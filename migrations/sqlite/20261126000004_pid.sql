-- The process id of a command run's main process (also its process group id), so that a daemon
-- starting after a crash can find and stop what that run left behind.
ALTER TABLE runs ADD COLUMN pid INTEGER;
