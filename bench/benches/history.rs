//! The history writer's throughput into a real SQLite file (WAL, synchronous=NORMAL), with
//! divan: `cargo bench -p bench`. Counted in runs (one start and one end record each).

// A harness, not the daemon: a broken set-up should stop it loudly.
#![allow(clippy::expect_used)]

use bench::history::{self, Shape};

fn main() {
    divan::main();
}

fn runtime() -> tokio::runtime::Runtime {
    bench::runtime().expect("runtime")
}

/// The daemon's path: records queued on the recorder, written by its batching writer; quick
/// runs (each end right after its start).
#[divan::bench(args = [1_000, 10_000, 100_000], sample_count = 5, sample_size = 1)]
fn recorder_quick_runs(bencher: divan::Bencher, runs: usize) {
    recorder(bencher, runs, Shape::Quick);
}

/// The same with long runs (every start, then every end).
#[divan::bench(args = [1_000, 10_000, 100_000], sample_count = 5, sample_size = 1)]
fn recorder_long_runs(bencher: divan::Bencher, runs: usize) {
    recorder(bencher, runs, Shape::Long);
}

fn recorder(bencher: divan::Bencher, runs: usize, shape: Shape) {
    let rt = runtime();
    bencher
        .counter(divan::counter::ItemsCount::new(runs))
        .with_inputs(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = rt.block_on(history::store_in(dir.path())).expect("store");
            (dir, store, history::records(runs, shape))
        })
        .bench_local_values(|(dir, store, records)| {
            rt.block_on(history::through_recorder(store, records));
            dir
        });
}

/// The store's writer alone, at several batch sizes (1 = a transaction per record).
#[divan::bench(args = [1, 64, 4096], sample_count = 5, sample_size = 1)]
fn write_batch(bencher: divan::Bencher, batch: usize) {
    let rt = runtime();
    let runs = if batch == 1 { 1_000 } else { 20_000 };
    bencher
        .counter(divan::counter::ItemsCount::new(runs))
        .with_inputs(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = rt.block_on(history::store_in(dir.path())).expect("store");
            (dir, store, history::records(runs, Shape::Long))
        })
        .bench_local_values(|(dir, store, records)| {
            rt.block_on(history::in_batches(&store, &records, batch))
                .expect("write");
            rt.block_on(store.close());
            dir
        });
}
