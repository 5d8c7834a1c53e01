//! What the bench binary and the `cargo bench` harness share: the history writer's workload.

pub mod history;
