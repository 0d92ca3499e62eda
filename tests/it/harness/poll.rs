//! Waiting for something to become true: the library's polling helpers
//! (`src/testing/poll.rs`), shared with the unit tests and the benchmarks.

pub use transfer_gate::testing::poll::*;
