//! The integration test binary: every suite is a module here, so the suite links once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

mod bodies;
mod check;
mod deploy;
mod enforce;
mod harness;
mod icap;
mod intercept;
mod ledger_crash;
mod proxy;
mod redis;
mod report;
