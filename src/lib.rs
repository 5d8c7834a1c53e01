//! hourglass: a job scheduler daemon: exact, observable, impossible to wedge with one slow job.
//!
//! # Architecture
//!
//! ```text
//!   config ──► JobSpec (job/) ──► scheduler ──(one timer task, a heap)──► runner::fire
//!     ▲            │                 ▲   ▲                                  │ one task per firing:
//!     │         schedule             │   └── clock (wall time on tokio's    │ overlap, concurrency
//!   daemon ─────── reload ───────────┘       monotonic clock)               │ limit, timeout, retries
//!     │  (SIGHUP, file watch, triggers,                                     ▼
//!     │   retention, systemd notify)                           job::JobKind::execute (command, ...)
//!     │                                                                     │
//!     └──── store (SQLite or PostgreSQL, all SQL) ◄── recorder (batched) ◄─┘
//! ```
//!
//! Imports flow one way, from the bottom of this list up: a module uses only those below it
//! (`scripts/check-structure.sh` checks the rules CI can grep).
//!
//! - [`cli`]: the command line (with `next`, `nodes`, `status`, `pause`/`resume`, `stats`,
//!   `--follow`, completions and man pages; it talks to the daemon's API when one answers;
//!   `logging`: tracing setup, journald fields); [`daemon`]: lifecycle (start, serve, drain,
//!   finish; what dead runs left; background loops; the API on its parts) and what only the
//!   daemon uses: `instance` (one daemon per database), `node` (this daemon as one node of a
//!   shared PostgreSQL database: heartbeat and lease, clock skew, definition digests, taking
//!   over from dead nodes), `stale` (the stale-job watch), `systemd` (notify protocol),
//!   `memory` (the allocator, jemalloc, and handing freed memory back).
//! - [`dashboard`]: the web pages served beside the API (jobs, one job with plots, one run
//!   with live output, the dependency graph, nodes; sign-in and the actions behind
//!   `dashboard_actions`).
//! - [`api`]: the HTTP API (axum; unix socket, TCP with a bearer token): jobs, actions
//!   (trigger, pause, resume, written to the events log), runs and their live output (SSE),
//!   health, status, metrics.
//! - [`config`]: the only module that reads config files and the environment: the main file
//!   into `Settings`, the job files' common fields, then one arm per kind (each kind validates
//!   its own table in `job/<kind>`); `messages`: serde's errors in the user's words;
//!   `in_force`: which configuration a running daemon follows.
//! - [`scheduler`]: one timer over a heap of next firings, clock steps, reload as a diff; its
//!   `plan` starts what a wake runs and records what it misses; `dependents`: the jobs that
//!   run after others.
//! - [`runner`]: one firing end to end (overlap, limit, attempts, retries, records), built
//!   whole and owning its stop (`lifecycle`: the drain the daemon asks for): its `slot`
//!   (per-job state across reloads), `firing` (waits, attempts, ends), `cluster` (with a
//!   `store::Cluster`, the node that wins a firing's claim runs it, and a job's turn holds
//!   across nodes; `claim_batch` puts the claims asked meanwhile in one statement;
//!   `rendezvous`: which node a firing prefers, which claims it first; `dependents`: jobs
//!   that run after others, looked at and claimed; `group`: mutual exclusion groups).
//! - [`due`]: which of the occurrences due at once are late, caught up or missed.
//! - [`alert`]: failure/recovery (and stale/recovered) alerts by email and webhook (the
//!   `notify` settings), knowing jobs by name only.
//! - [`job`]: validated job definitions (`JobSpec`) and the kinds of work, one room each
//!   (`command/`: its fields, `run` (a run's process, output, stop and cost), `limits` (rlimits,
//!   nice and I/O class, set by the daemon's own binary before the job starts); `email`,
//!   `http`, `upload/`), each owning its table's validation and its execution; `attempt` (what an attempt knows and returns), `output`, `template`, `shell`
//!   (what runs a command line), `after` (a job's parents, the graph's checks, what fires a
//!   child), `graph` (the dependency graph in layers and as text).
//! - [`problem`]: problems located by file, job and field, and the shared field parsers
//!   (config and the job kinds both use them); [`smtp`]: configured SMTP servers.
//! - [`schedule`]: cron/interval/one-shot occurrences in a job's time zone, DST rules, jitter;
//!   [`clock`]: the scheduler's wall clock, testable with `tokio::time::pause()`.
//! - [`processes`]: the commands' processes (groups, the marker they carry, the daemon as
//!   their subreaper, sweeps; `wait`: reaping with what a process cost, by pidfd and `wait4`); [`http_client`]: the shared HTTP clients, crypto provider,
//!   error chains and redacted URLs.
//! - [`history`]: the run history off the firing path: `recorder` (the batched writer on a
//!   thread of its own; `health`: whether its writes fail; `ended`: whose runs a batch ended,
//!   for their children), `spill` (the file that keeps records while the database cannot take
//!   them), `run_ids` (ids from memory, reserved durably in blocks ahead); [`metrics`]:
//!   Prometheus metrics, counted as records are made.
//! - [`store`]: all SQL, behind one `Store` on SQLite or PostgreSQL: typed rows (`records`,
//!   `Ts` timestamps, statuses and triggers read as types), each statement written once for
//!   both backends where the SQL is the same (`actions`, `dashboard`: what the dashboard
//!   reads, `stats`, `stale_watch`, `triggers`, `uploads`, `runs`, `upkeep`; `usage`: what a
//!   run cost, and its figures in words), per backend only
//!   where it differs (`sqlite`, `postgres`: the writer's batches, keyset order, run-id
//!   blocks); `Cluster` holds the statements only a shared PostgreSQL database has (claims,
//!   turns, leases, nodes); [`secret`]: secret
//!   values (referenced while the config is validated, read afterwards by `load` only; the
//!   store reads its password).

pub mod alert;
pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod due;
pub mod history;
pub mod http_client;
pub mod job;
pub mod metrics;
pub mod problem;
pub mod processes;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub mod secret;
pub mod smtp;
pub mod store;
