//! The CLI's client for a running gate's admin API (`status`, `report`, `assess`): reads
//! `gate.admin_listen` and the bearer token from the same config file the gate runs with. When
//! `admin_listen` has port 0 (the kernel picked it), the address comes from the gate's
//! `<data_dir>/listen.json`.

use crate::config::Config;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Why the admin API could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// No connection, or a transport error.
    #[error("cannot reach the gate's admin API at {addr}: {reason} (is the gate running?)")]
    Unreachable {
        /// The admin address.
        addr: String,
        /// The cause.
        reason: String,
    },
    /// The API answered with an error status.
    #[error("the admin API answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The response body.
        body: String,
    },
    /// The answer was not JSON.
    #[error("the admin API answered something that is not JSON: {0}")]
    Json(String),
    /// The token file could not be read.
    #[error("cannot read the admin token file: {0}")]
    Token(String),
}

/// `GET path` on the admin listener of `cfg`, as JSON.
///
/// # Errors
/// See [`AdminClientError`].
pub async fn get_json(cfg: &Config, path: &str) -> Result<serde_json::Value, AdminClientError> {
    let mut addr = cfg.gate.admin_listen;
    if addr.port() == 0 {
        addr = crate::data_dir::read_listening(&cfg.gate.data_dir)
            .map_err(|e| AdminClientError::Unreachable {
                addr: addr.to_string(),
                reason: format!(
                    "gate.admin_listen has port 0 and {} cannot be read: {e}",
                    cfg.gate
                        .data_dir
                        .join(crate::data_dir::LISTEN_FILE)
                        .display()
                ),
            })?
            .admin;
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let unreachable = |reason: String| AdminClientError::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    if let Some(p) = &cfg.gate.admin_token_file {
        let t = std::fs::read_to_string(p)
            .map_err(|e| AdminClientError::Token(format!("{}: {e}", p.display())))?;
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {}", t.trim()));
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable(e.to_string()))?;
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(AdminClientError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| AdminClientError::Json(e.to_string()))
}
