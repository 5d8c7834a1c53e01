//! What the bench binary and the `cargo bench` harness share: the history writer's workload
//! and the runtime everything in the bench runs on.

pub mod history;

/// A 2-worker tokio runtime: what the daemon gets on this 2-core machine, for the bench's own
/// measurements (spawn floor, peer, history writer).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}
