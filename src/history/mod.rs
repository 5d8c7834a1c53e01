//! The run history on its way to the store, off the firing path: the records' writer
//! (`recorder`, batched, on a thread of its own), the file that keeps records while the
//! database cannot take them (`spill`), and run ids handed out from memory, reserved durably
//! in blocks ahead (`run_ids`); `health` (whether writes fail), `ended` (whose runs' last
//! words a batch wrote, for their children).

mod ended;
mod health;
pub mod recorder;
pub mod run_ids;
pub mod spill;
