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
//!     └──────────── store (SQLite, all SQL) ◄── recorder (batched writer) ◄─┘
//! ```
//!
//! - [`config`]: the only module that reads config files and the environment; parses everything
//!   into typed values once, with errors naming file, job and field ([`messages`]: serde's
//!   errors in the user's words).
//! - [`schedule`]: cron/interval/one-shot occurrences in a job's time zone, DST rules, jitter.
//! - [`job`]: validated job definitions and the kinds of work (one file per kind).
//! - [`scheduler`]: one timer over a heap of next firings, clock steps, reload as a diff;
//!   [`due`]: which of the occurrences due at once are late, caught up or missed.
//! - [`run_ids`]: run ids from memory, reserved durably in blocks ahead.
//! - [`runner`]: one firing end to end (overlap, limit, attempts, retries, records).
//! - [`clock`]: the scheduler's wall clock, testable with `tokio::time::pause()`.
//! - [`processes`]: the commands' processes: groups, the marker they carry, the daemon as
//!   their subreaper, sweeps for what outlives a run or a daemon.
//! - [`recorder`] and [`store`]: history off the firing path; all SQL in `store`; [`spill`]:
//!   the file that keeps run records while the database cannot take them.
//! - [`smtp`]: configured SMTP servers (lettre transports, send caps and timeouts);
//!   [`alert`]: failure/recovery alerts by email and webhook (the `notify` settings).
//! - [`daemon`]: lifecycle (start, reload, drain, stop); [`instance`]: one daemon per
//!   database; [`systemd`]: notify protocol;
//!   [`logging`]: tracing setup; [`cli`]: the command line.

pub mod alert;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod due;
pub mod http_client;
pub mod instance;
pub mod job;
pub mod logging;
pub mod messages;
pub mod problem;
pub mod processes;
pub mod recorder;
pub mod run_ids;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub mod secret;
pub mod smtp;
pub mod spill;
pub mod store;
pub mod systemd;
