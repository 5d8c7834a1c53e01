-- What each command run cost, by the kernel's accounting (wait4's rusage): CPU time in
-- microseconds, the peak resident set in bytes, blocks (512 bytes) read and written, context
-- switches. NULL for runs of the kinds that run in the daemon (email, HTTP, upload), skipped
-- runs, and runs written before this migration. The views select `runs.*` and show them too.
ALTER TABLE runs ADD COLUMN cpu_user_us INTEGER;
ALTER TABLE runs ADD COLUMN cpu_system_us INTEGER;
ALTER TABLE runs ADD COLUMN peak_rss_bytes INTEGER;
ALTER TABLE runs ADD COLUMN blocks_read INTEGER;
ALTER TABLE runs ADD COLUMN blocks_written INTEGER;
ALTER TABLE runs ADD COLUMN voluntary_switches INTEGER;
ALTER TABLE runs ADD COLUMN involuntary_switches INTEGER;
