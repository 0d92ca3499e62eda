//! transfer-gate: an HTTP egress proxy that finds the data subjects whose personal information
//! leaves the country, counts them exactly in the legal window, and refuses (HTTP 451) transfers
//! that would cross a threshold the company holds no approval for.
//!
//! Module map, in the order a request meets them (the phases: `docs/architecture.md`):
//! - [`app`]: start-up and wiring — load the configuration, open the ledger, bind the
//!   listeners, background tasks, signals, drain.
//! - [`reload`]: loading the configuration off the runtime and swapping it into a running
//!   gate (start-up, `SIGHUP`, `POST /v1/reload`).
//! - [`listen`]: the connection lifecycle shared by every listener (limit, deadlines, backoff).
//! - [`workers`]: one single-threaded runtime per core; each proxy connection lives on one.
//! - [`proxy`]: the proxy listener's request path — routing, target rules, head and body
//!   inspection, judging, sending, the outcome.
//! - [`identity`]: who is sending — the declared clients, a request's identity (client
//!   certificate, `Proxy-Authorization`, source address), the TLS proxy listener's TLS.
//! - [`icap`]: the ICAP REQMOD listener, onto the same request path.
//! - [`tls`]: the interception CA, minted leaves, upstream TLS.
//! - [`inspect`]: the streaming inspection engine (records, subjects, categories, detectors).
//! - [`policy`]: the pure decision (regimes, thresholds, approvals → choices with ceilings).
//! - [`ledger`]: keyed hashing and the durable, atomic subject counts (local or Redis).
//! - [`respond`]: the one place that builds synthetic responses (451, 403, 502, 503, 504, 413).
//! - [`audit`]: the audit log (one JSON line per decision) and its file.
//! - [`redact`]: client-chosen text made safe for the audit log and logs.
//! - [`metrics`]: the Prometheus families (names are part of the contract).
//! - [`admin`], [`status`]: the admin listener (`/metrics`, `/healthz`, `/readyz`, `/v1/*`)
//!   and the status document; [`admin_client`]: the CLI's client of it.
//! - [`report`], [`assess`]: the data-flow inventory and the filing/renewal planner, built by
//!   the CLI from the running gate's admin API.
//! - [`config`]: raw file structs, validation with diagnostics, the validated [`config::Config`].
//! - [`model`]: the shared vocabulary (categories, regimes, the Shanghai calendar).
//! - [`shutdown`]: the drain signal every connection watches.
//! - [`data_dir`]: the lock that keeps a second gate off the same `gate.data_dir`, and the
//!   `listen.json` of the addresses it bound.
//! - `testing` (hidden): test support shared by the unit tests, the integration harness and the
//!   benchmarks (polling, real Redis servers); not part of the gate.
//! - [`cli`]: the work behind each command of the `transfer-gate` binary (`main.rs` only
//!   parses the command line).

pub mod admin;
pub mod admin_client;
pub mod app;
pub mod assess;
pub mod audit;
pub mod cli;
pub mod config;
pub mod console;
pub mod data_dir;
pub mod icap;
pub mod identity;
pub mod inspect;
pub mod ledger;
pub mod listen;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod proxy;
pub mod redact;
pub mod reload;
pub mod report;
pub mod respond;
pub mod shutdown;
pub mod status;
#[doc(hidden)]
pub mod testing;
pub mod tls;
pub mod workers;
