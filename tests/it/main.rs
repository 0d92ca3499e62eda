//! The integration test binary: every suite is a module here, so the suite links once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

mod approvals;
mod audit_log;
mod bodies;
mod budget;
mod calendar;
mod check;
mod clients;
mod console;
mod dashboard;
mod deploy;
mod enforce;
mod grpc;
mod harness;
mod icap;
mod intercept;
mod ledger_crash;
mod lifecycle;
mod positions;
mod protobuf;
mod proxy;
mod readiness;
mod redis;
mod redis_auth;
mod redis_loss;
mod report;
mod security;
mod startup;
mod stream;
mod websocket;
mod xlsx;
mod xml;
