//! transfer-gate: an HTTP egress proxy that finds the data subjects whose personal information
//! leaves the country, counts them exactly in the legal window, and refuses (HTTP 451) transfers
//! that would cross a threshold the company holds no approval for.
//!
//! Module map, in the order a request meets them:
//! - [`config`]: raw file structs, validation with diagnostics, the validated [`config::Config`].
//! - [`proxy`]: listeners, destination classification, forwarding, CONNECT tunnels, upstream pool.
//! - [`inspect`]: the streaming inspection engine (records, subjects, categories, detectors).
//! - [`ledger`]: keyed hashing and the durable, atomic subject counts.
//! - [`respond`]: the one place that builds synthetic responses (451, 502, 503, 504, 413).
//! - [`metrics`]: the Prometheus families (names are part of the contract).
//! - [`admin`]: the admin listener (`/metrics`, `/healthz`, `/readyz`, `/v1/*`).
//! - [`report`], [`assess`]: the data-flow inventory and the filing/renewal planner, built by
//!   the CLI from the running gate's admin API.
//! - [`model`]: the shared vocabulary (categories, regimes, the Shanghai calendar).
//! - [`redact`]: client-chosen text made safe for the audit log and logs.
//! - [`shutdown`]: the drain signal every connection watches.
//! - [`data_dir`]: the lock that keeps a second gate off the same `gate.data_dir`.

pub mod admin;
pub mod admin_client;
pub mod app;
pub mod assess;
pub mod audit;
pub mod config;
pub mod data_dir;
pub mod icap;
pub mod inspect;
pub mod ledger;
pub mod listen;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod proxy;
pub mod redact;
pub mod report;
pub mod respond;
pub mod shutdown;
pub mod status;
pub mod tls;
