#!/usr/bin/env python3
"""Quick foundation measurements on the release binary (the full suite is the bench issue's).

- lateness: N jobs firing every second for D seconds; p50/p99/max of started_at - scheduled_for
  from the history database, plus missed/doubled firings;
- rss: the daemon's resident memory once ready, with 1 job and with 10,000 jobs.

Usage: python3 scripts/measure.py [--jobs 100] [--seconds 180] [--bin target/release/hourglass]
"""

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time


def start(binary, jobs_toml, extra=""):
    d = tempfile.mkdtemp(prefix="hourglass-measure-")
    os.mkdir(os.path.join(d, "jobs.d"))
    with open(os.path.join(d, "hourglass.toml"), "w") as f:
        f.write('[database]\npath = "h.db"\n[daemon]\ntimezone = "UTC"\n' + extra)
    with open(os.path.join(d, "jobs.d", "jobs.toml"), "w") as f:
        f.write(jobs_toml)
    sock_path = os.path.join(d, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(60)
    t0 = time.monotonic()
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, RUST_LOG="warn")
    p = subprocess.Popen([binary, "--config", os.path.join(d, "hourglass.toml"), "run"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        msg = sock.recv(4096).decode()
        if "READY=1" in msg:
            break
    ready = time.monotonic() - t0
    return d, p, ready


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)


def pct(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, int(round(q * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def lateness(binary, jobs, seconds):
    toml = "".join(f'[jobs.j{i}]\nschedule = "* * * * * *"\ncommand = ["true"]\n' for i in range(jobs))
    d, p, _ = start(binary, toml)
    time.sleep(seconds)
    peak = rss_kb(p.pid)
    stop(p)
    db = sqlite3.connect(os.path.join(d, "h.db"))
    rows = db.execute("SELECT job, scheduled_for, lateness_ms FROM runs_timed WHERE trigger = 'schedule'").fetchall()
    late = sorted(r[2] for r in rows if r[2] is not None)
    per_job = {}
    for job, sched, _ in rows:
        per_job.setdefault(job, []).append(sched)
    doubled = sum(len(v) - len(set(v)) for v in per_job.values())
    # Missed: gaps in each job's one-second series between its first and last firing.
    import datetime
    missed = 0
    for v in per_job.values():
        ts = sorted(datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in set(v))
        missed += sum(int(round(b - a)) - 1 for a, b in zip(ts, ts[1:]))
    statuses = dict(db.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
    print(f"lateness: {jobs} every-second jobs for {seconds}s: {len(late)} runs, statuses {statuses}")
    print(f"  p50 {pct(late, .5)} ms, p99 {pct(late, .99)} ms, max {late[-1] if late else 'n/a'} ms; "
          f"missed {missed}, doubled {doubled}; RSS at end {peak // 1024} MiB")


def rss(binary, jobs):
    exprs = [f"{m} {h} * * *" for h in range(24) for m in range(60)]
    toml = "".join(f'[jobs.j{i}]\nschedule = "{exprs[i % len(exprs)]}"\ncommand = ["true"]\n' for i in range(jobs))
    d, p, ready = start(binary, toml)
    time.sleep(3)
    kb = rss_kb(p.pid)
    stop(p)
    print(f"rss: {jobs} jobs: ready in {ready * 1000:.0f} ms (incl. config parse), RSS {kb / 1024:.1f} MiB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/hourglass")
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=180)
    ap.add_argument("--only", choices=["rss", "lateness"])
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {os.uname().release}")
    if a.only in (None, "rss"):
        rss(a.bin, 1)
        rss(a.bin, 10_000)
    if a.only in (None, "lateness"):
        lateness(a.bin, a.jobs, a.seconds)


if __name__ == "__main__":
    main()
