//! Every end-to-end test, in one binary: the real `hourglass` binary on real components
//! (SQLite files, SMTP, S3-compatible storage, sshd, libfaketime) through the harness.
// A test binary: its helpers are `pub` for the test modules, and tests may unwrap and panic.
#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod browser;
mod harness;
mod http;
mod servers;

mod api;
mod bad_configs;
mod cli;
mod cluster;
mod cluster_notify;
mod cluster_scale;
mod daemon;
mod dashboard;
mod dashboard_actions;
mod dashboard_nodes;
mod dependencies;
mod dependencies_cluster;
mod dependencies_shown;
mod edges;
mod email;
mod faults;
mod follow;
mod groups;
mod hostile;
mod limits;
mod next;
mod node_names;
mod outages;
mod processes;
mod properties;
mod readme;
mod reload;
mod stale;
mod stops;
mod upload;
mod usage;
