//! Unit tests of the ledger: the shared suite against the memory and local backends, then
//! the local backend's restart, torn-tail, compaction and bad-disk behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use super::suite::{self, at, plain, reserve, subj, Made};
use super::*;
use crate::model::Regime;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn suite_memory() {
    runtime().block_on(suite::run_all(&|| -> Made {
        (Arc::new(MemoryLedger::new()), Box::new(()))
    }));
}

#[test]
fn suite_local() {
    runtime().block_on(suite::run_all(&|| -> Made {
        let dir = tempfile::tempdir().unwrap();
        let l = LocalLedger::open(&dir.path().join("ledger"), LocalOptions::default()).unwrap();
        (Arc::new(l), Box::new(dir))
    }));
}
