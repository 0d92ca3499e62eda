//! The proxy: the shared [`Gate`] state (an atomically swapped [`Snapshot`] of the validated
//! config with its per-destination upstream clients and metric handles), the accept loop with
//! graceful drain ([`serve`]), and the request path:
//! [`classify`] → [`forward`] (or [`connect`] for `CONNECT`, and [`intercept`] for the inner
//! requests of an intercepted `CONNECT`) → [`upstream`].

pub mod body;
pub mod classify;
pub mod connect;
pub mod forward;
pub mod headers;
pub mod intercept;
pub mod upstream;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::respond::blocked_by_link;
use crate::shutdown::DrainWatch;
use crate::tls::client::{client_config, root_store, TlsConfigError};
use arc_swap::ArcSwap;
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::IntCounter;
use std::sync::Arc;
use tokio::net::TcpListener;
use upstream::{client, UpstreamClient, UpstreamConnector};

/// What the request path needs per destination, resolved when the config loads.
pub struct Route {
    /// Pooled client honouring the destination's `connect_to` and TLS settings.
    pub client: UpstreamClient,
    /// `transfer_gate_bytes_total{destination, direction="upstream"}`
    pub bytes_up: IntCounter,
    /// `transfer_gate_bytes_total{destination, direction="downstream"}`
    pub bytes_down: IntCounter,
}

/// One consistent view of the configuration and everything derived from it.
pub struct Snapshot {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Per destination, in `config.destinations` order.
    pub routes: Vec<Route>,
    /// Client for domestic plain-HTTP traffic.
    pub domestic: Route,
    /// The 451 `Link` header, when `gate.blocked_by_url` is set.
    pub blocked_by: Option<HeaderValue>,
    /// The admin bearer token, when `gate.admin_token_file` is set.
    pub admin_token: Option<String>,
    /// TLS interception (CA, leaf minting), when `tls.ca_cert` and `tls.ca_key` are set.
    pub intercept: Option<Arc<intercept::Interceptor>>,
}

/// Why a snapshot could not be built from a validated config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Upstream TLS roots.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// The admin token file could not be read.
    #[error("admin token file {0}")]
    Token(String),
    /// The interception CA (`tls.ca_cert`, `tls.ca_key`).
    #[error("interception CA: {0}")]
    Ca(#[from] crate::tls::ca::CaError),
}

impl Snapshot {
    /// Builds clients and metric handles for `config`.
    ///
    /// # Errors
    /// When the upstream CA file or the interception CA cannot be loaded.
    pub fn build(config: Config, metrics: &Metrics) -> Result<Snapshot, BuildError> {
        let roots = Arc::new(root_store(config.tls.upstream_ca_file.as_deref())?);
        let verified = client_config(roots.clone(), true)?;
        let t = config.timeouts;
        let route = |name: &str, connect_to: Option<&str>, tls: Arc<rustls::ClientConfig>| Route {
            client: client(UpstreamConnector::new(connect_to, tls, t.connect), t.idle),
            bytes_up: metrics.bytes.with_label_values(&[name, "upstream"]),
            bytes_down: metrics.bytes.with_label_values(&[name, "downstream"]),
        };
        let mut routes = Vec::with_capacity(config.destinations.len());
        for d in &config.destinations {
            let tls = if d.tls_verify {
                verified.clone()
            } else {
                client_config(roots.clone(), false)?
            };
            routes.push(route(&d.name, d.connect_to.as_deref(), tls));
        }
        let domestic = route(classify::DOMESTIC_LABEL, None, verified);
        // Series that exist before their first event, so dashboards and alerts see zeros.
        metrics
            .tunnels
            .with_label_values(&[classify::DOMESTIC_LABEL]);
        for d in config
            .destinations
            .iter()
            .filter(|d| d.tls == Some(crate::config::TlsMode::Tunnel))
        {
            metrics.tunnels.with_label_values(&[d.name.as_str()]);
        }
        let intercept = intercept::Interceptor::load(&config.tls)?;
        if intercept.is_some() {
            for d in config
                .destinations
                .iter()
                .filter(|d| d.tls == Some(crate::config::TlsMode::Intercept))
            {
                metrics
                    .tls_client_errors
                    .with_label_values(&[d.name.as_str()]);
            }
        }
        let blocked_by = config
            .gate
            .blocked_by_url
            .as_deref()
            .and_then(blocked_by_link);
        let admin_token = match &config.gate.admin_token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| BuildError::Token(format!("{}: {e}", p.display())))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        Ok(Snapshot {
            config: Arc::new(config),
            routes,
            domestic,
            blocked_by,
            admin_token,
            intercept,
        })
    }
}

/// The shared state of a running gate.
pub struct Gate {
    snapshot: ArcSwap<Snapshot>,
    /// The Prometheus families.
    pub metrics: Metrics,
    /// Request id source.
    pub ids: headers::RequestIds,
    /// The audit trail.
    pub audit: crate::audit::Audit,
    /// Intercepted connections: their HTTP runs inside an upgraded `CONNECT`, outside the
    /// listener's drain, so they are watched here; `None` once the drain has started.
    pub(crate) intercepted: std::sync::Mutex<Option<GracefulShutdown>>,
}

impl Gate {
    /// A gate over `config`.
    ///
    /// # Errors
    /// See [`Snapshot::build`].
    pub fn new(
        config: Config,
        metrics: Metrics,
        audit: crate::audit::Audit,
    ) -> Result<Arc<Gate>, BuildError> {
        let snap = Snapshot::build(config, &metrics)?;
        let gate = Gate {
            snapshot: ArcSwap::from_pointee(snap),
            metrics,
            ids: headers::RequestIds::default(),
            audit,
            intercepted: std::sync::Mutex::new(Some(GracefulShutdown::new())),
        };
        gate.publish_config_info();
        Ok(Arc::new(gate))
    }

    /// The current snapshot (one atomic load).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the configuration. In-flight requests finish on the snapshot they started with.
    ///
    /// # Errors
    /// See [`Snapshot::build`]; on error nothing changes.
    pub fn reload(&self, config: Config) -> Result<(), BuildError> {
        let snap = Snapshot::build(config, &self.metrics)?;
        self.snapshot.store(Arc::new(snap));
        self.publish_config_info();
        Ok(())
    }

    fn publish_config_info(&self) {
        let snap = self.snapshot();
        let c = &snap.config;
        self.metrics.config_info.reset();
        self.metrics
            .config_info
            .with_label_values(&[
                c.sha256.as_str(),
                c.entity.regime.as_str(),
                c.gate.mode.as_str(),
            ])
            .set(1);
    }
}

/// Accepts proxy connections on `listener` until `drain` fires, then lets in-flight
/// connections finish for up to `gate.drain_seconds`.
pub async fn serve(gate: Arc<Gate>, listener: TcpListener, mut drain: DrainWatch) {
    let graceful = GracefulShutdown::new();
    let builder = server_builder(&gate.snapshot().config);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(peer);
                let gate = gate.clone();
                let svc = service_fn(move |req| forward::handle(gate.clone(), forward::Conn { peer, local }, req));
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "client connection ended with an error");
                    }
                });
            }
            _ = drain.signaled() => break,
        }
    }
    drop(listener);
    let wait = gate.snapshot().config.gate.drain;
    let intercepted = gate
        .intercepted
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    tracing::info!(
        in_flight = graceful.count() + intercepted.as_ref().map_or(0, GracefulShutdown::count),
        drain_seconds = wait.as_secs(),
        "draining proxy connections"
    );
    let all = async {
        tokio::join!(graceful.shutdown(), async {
            if let Some(g) = intercepted {
                g.shutdown().await;
            }
        })
    };
    if tokio::time::timeout(wait, all).await.is_err() {
        tracing::warn!("drain time over; closing remaining connections");
    }
}

/// The HTTP/1.1 + h2c (prior knowledge) server settings: hyper's limits give 400 on malformed
/// requests, 431 on oversized heads, and close slow clients after `timeouts.client_header_seconds`.
pub(crate) fn server_builder(cfg: &Config) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.timeouts.client_header)
        .max_buf_size(64 * 1024)
        .max_headers(128)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(std::time::Duration::from_secs(30));
    b
}
