//! The proxy listener and the request path every listener shares, as named phases over one
//! per-request context ([`context::RequestCx`]):
//!
//! state ([`Gate`], [`Snapshot`], [`Route`]: here) → listen ([`serve`], `crate::listen`) →
//! [`request`] (id, loop check, dispatch) → [`route`] (target and [`classify`]) or
//! [`connect`] (tunnels, [`intercept`]) → [`destination`] ([`head`] → [`budget`] → body whole
//! or [`gated`] → [`enforce`]) → [`sink`] (send: [`upstream`], [`body`]) → [`outcome`] (count,
//! audit, refuse). Each module imports only the phases after it. [`target`] holds the target
//! rules, [`headers`] the header rewriting, [`gauges`] the count gauges.

pub mod body;
pub mod budget;
pub mod classify;
pub mod connect;
pub mod context;
pub mod destination;
pub mod enforce;
#[cfg(test)]
mod enforce_props;
pub mod gated;
pub mod gauges;
pub mod grpc;
pub mod head;
pub mod headers;
pub mod identify;
pub mod intercept;
pub mod outcome;
pub mod pool;
pub mod recent;
pub mod request;
pub mod route;
pub mod sink;
pub mod target;
pub mod upstream;
pub mod websocket;

use crate::config::Config;
use crate::identity::{ConnIdentity, Identity};
use crate::metrics::Metrics;
use crate::policy::{Decision, Reason};
use crate::respond::{blocked_by_link, BoxError};
use crate::shutdown::DrainWatch;
use crate::tls::client::{client_config, root_store, TlsConfigError};
use arc_swap::ArcSwap;
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pool::Pool;
use prometheus::IntCounter;
use std::sync::Arc;
use tokio::net::TcpListener;
use upstream::UpstreamConnector;

/// What the request path needs per destination, resolved when the config loads.
pub struct Route {
    /// Pooled clients honouring the destination's `connect_to` and TLS settings: one per
    /// worker ([`crate::workers`]), so that a request and its upstream connection run on the
    /// same thread, and a last one for requests outside the workers (ICAP, tests). Each is
    /// made on first use, so that a configuration of 100,000 destinations does not build
    /// 300,000 clients at load when few of them will ever be used.
    clients: Box<[std::sync::OnceLock<Pool>]>,
    /// With `upstream_http2 = true`: the same, speaking HTTP/2 with prior knowledge (h2c), for
    /// plain-HTTP upstream connections only (TLS ones negotiate by ALPN in [`Route::clients`]).
    h2c: Option<Box<[std::sync::OnceLock<Pool>]>>,
    /// What the clients are made from.
    connector: UpstreamConnector,
    /// The clients' idle timeout for pooled connections.
    idle: std::time::Duration,
    /// The most idle pooled connections a client keeps (`gate.max_connections`).
    max_idle: usize,
    /// The metric label: the destination's name, or `domestic`.
    label: Arc<str>,
    /// `transfer_gate_bytes_total{destination, direction, client}` (upstream, downstream) per
    /// client index, the last for `unidentified`; each pair made when first used.
    bytes: Box<[std::sync::OnceLock<[IntCounter; 2]>]>,
    bytes_family: prometheus::IntCounterVec,
    /// `transfer_gate_records_total{destination, category}`, in `Category::ALL` order; each
    /// made when first counted (SPEC §6: a labelled counter's series appears when first used).
    records: Box<[std::sync::OnceLock<IntCounter>]>,
    records_family: prometheus::IntCounterVec,
    /// Per client index, whether it may send here (`clients`); `None`: every client may.
    allowed: Option<Box<[bool]>>,
}

impl Route {
    /// The connection pool of the calling thread's worker.
    pub fn client(&self) -> &Pool {
        let last = self.clients.len() - 1;
        let i = crate::workers::current().map_or(last, |w| w.min(last));
        self.clients[i]
            .get_or_init(|| Pool::new(self.connector.clone(), self.idle, self.max_idle, false))
    }

    /// The connection pool for a request to a `https` (TLS, ALPN) or plain upstream: plain
    /// ones speak h2c when the destination sets `upstream_http2 = true`.
    pub fn client_for(&self, https: bool) -> &Pool {
        match &self.h2c {
            Some(h2c) if !https => {
                let last = h2c.len() - 1;
                let i = crate::workers::current().map_or(last, |w| w.min(last));
                h2c[i].get_or_init(|| {
                    Pool::new(self.connector.clone(), self.idle, self.max_idle, true)
                })
            }
            _ => self.client(),
        }
    }

    /// The byte counters (upstream, downstream) of `id`'s client on this route.
    pub fn bytes(&self, clients: &crate::identity::Clients, id: Identity) -> &[IntCounter; 2] {
        let last = self.bytes.len() - 1;
        let i = id.client.map_or(last, |c| usize::from(c).min(last));
        self.bytes[i].get_or_init(|| {
            let client = clients.name(id);
            [
                self.bytes_family
                    .with_label_values(&[&self.label, "upstream", client]),
                self.bytes_family
                    .with_label_values(&[&self.label, "downstream", client]),
            ]
        })
    }

    /// Whether `id`'s client may send to this destination (its `clients` allowlist).
    pub fn allows(&self, id: Identity) -> bool {
        match &self.allowed {
            None => true,
            Some(list) => id
                .client
                .and_then(|c| list.get(usize::from(c)))
                .copied()
                .unwrap_or(false),
        }
    }

    /// Adds per-category record counts (in `Category::ALL` order).
    pub fn count_records(&self, per_category: &[u64; 9]) {
        let cats = crate::model::Category::ALL.iter();
        for ((c, n), cat) in self.records.iter().zip(per_category).zip(cats) {
            if *n > 0 {
                c.get_or_init(|| {
                    self.records_family
                        .with_label_values(&[&self.label, cat.as_str()])
                })
                .inc_by(*n);
            }
        }
    }
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
    /// Ledger scope ids of this configuration.
    pub scopes: enforce::Scopes,
    /// Count gauges of this configuration.
    pub gauges: gauges::Gauges,
    /// The inspection engine's settings.
    pub inspect: Arc<crate::inspect::InspectConfig>,
    /// TLS interception (CA, leaf minting), when `tls.ca_cert` and `tls.ca_key` are set.
    pub intercept: Option<Arc<intercept::Interceptor>>,
    /// What a client-chosen target may not be (SPEC §2).
    pub targets: Arc<target::TargetRules>,
    /// The declared clients, compiled for identification.
    pub clients: crate::identity::Clients,
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
    /// The ledger refused the configuration's scopes.
    #[error("ledger: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    /// The inspection settings.
    #[error("inspection: {0}")]
    Inspect(#[from] crate::inspect::ConfigError),
}

/// Builds the inspection engine's settings from the validated configuration.
///
/// # Errors
/// A field name the engine cannot hold.
pub fn inspect_config(
    cfg: &Config,
) -> Result<crate::inspect::InspectConfig, crate::inspect::ConfigError> {
    use crate::inspect::{DecodeLimits, Detector, DetectorSet, InspectConfig};
    let i = &cfg.inspection;
    let mut detectors = DetectorSet::NONE;
    for d in &i.detectors {
        if let Some(d) = Detector::parse(d) {
            detectors.insert(d);
        }
    }
    let categories: Vec<(String, crate::model::Category)> = i.categories.clone();
    let limits = DecodeLimits {
        max_decoded_bytes: i.max_decoded_bytes,
        max_ratio: u32::try_from(i.max_decompression_ratio).unwrap_or(u32::MAX),
        ..DecodeLimits::default()
    };
    let watched: Vec<String> = cfg
        .important_data
        .iter()
        .flat_map(|r| r.fields.iter().cloned())
        .collect();
    InspectConfig::new(
        &i.fields,
        detectors,
        &i.headers,
        &categories,
        crate::inspect::Limits {
            max_depth: i.max_depth as usize,
            max_record_bytes: usize::try_from(i.max_record_bytes).unwrap_or(usize::MAX),
            decode: limits,
        },
        i.resident_id_sensitive,
    )?
    .with_max_workbook_bytes(i.max_workbook_bytes)
    .with_protobuf_schemas(i.protobuf_schemas.clone())
    .with_watched_fields(&watched)
}

impl Snapshot {
    /// Builds clients and metric handles for `config`.
    ///
    /// # Errors
    /// When the upstream CA file or the interception CA cannot be loaded.
    pub async fn build(
        config: Config,
        metrics: &Metrics,
        ledger: &dyn crate::ledger::Ledger,
        own: Arc<target::OwnEndpoints>,
    ) -> Result<Snapshot, BuildError> {
        let roots = Arc::new(root_store(config.tls.upstream_ca_file.as_deref())?);
        let verified = client_config(roots.clone(), true)?;
        let t = config.timeouts;
        let targets = Arc::new(target::TargetRules::new(own, &config.gate));
        let pools = crate::workers::count() + 1;
        let client_count = config.clients.len();
        let allowlist = |names: &Option<Vec<String>>| {
            names.as_ref().map(|names| {
                config
                    .clients
                    .iter()
                    .map(|c| names.contains(&c.name))
                    .collect::<Box<[bool]>>()
            })
        };
        let route = |name: &str,
                     connect_to: Option<&str>,
                     tls: Arc<rustls::ClientConfig>,
                     allowed: Option<Box<[bool]>>,
                     h2c: bool| Route {
            clients: (0..pools).map(|_| std::sync::OnceLock::new()).collect(),
            h2c: h2c.then(|| (0..pools).map(|_| std::sync::OnceLock::new()).collect()),
            connector: UpstreamConnector::new(connect_to, targets.clone(), tls, t.connect),
            idle: t.idle,
            max_idle: config.gate.max_connections.max(256),
            label: Arc::from(name),
            bytes: (0..=client_count)
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            bytes_family: metrics.bytes.clone(),
            allowed,
            records: crate::model::Category::ALL
                .iter()
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            records_family: metrics.records.clone(),
        };
        let mut routes = Vec::with_capacity(config.destinations.len());
        for d in &config.destinations {
            let tls = if d.tls_verify {
                verified.clone()
            } else {
                client_config(roots.clone(), false)?
            };
            routes.push(route(
                &d.name,
                d.connect_to.as_deref(),
                tls,
                allowlist(&d.clients),
                d.upstream_http2,
            ));
        }
        let domestic = route(classify::DOMESTIC_LABEL, None, verified, None, false);
        let clients = crate::identity::Clients::new(&config.clients);
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
            Some(p) => {
                let t = std::fs::read_to_string(p)
                    .map_err(|e| BuildError::Token(format!("{}: {e}", p.display())))?
                    .trim()
                    .to_owned();
                // An empty token would let anyone in with an empty one.
                if t.is_empty() {
                    return Err(BuildError::Token(format!(
                        "{}: the file is empty",
                        p.display()
                    )));
                }
                Some(t)
            }
            None => None,
        };
        let inspect = Arc::new(inspect_config(&config)?);
        let wanted = enforce::Scopes::wanted(&config);
        let ids = ledger.register_scopes(&wanted).await?;
        let scopes = enforce::Scopes::from_ids(&config, &ids).ok_or(
            crate::ledger::LedgerError::Limit("scope registration returned too few ids"),
        )?;
        let gauges = gauges::Gauges::build(metrics, &config, &scopes);
        Ok(Snapshot {
            config: Arc::new(config),
            routes,
            domestic,
            blocked_by,
            admin_token,
            scopes,
            gauges,
            inspect,
            intercept,
            targets,
            clients,
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
    /// The subject ledger.
    pub ledger: Arc<dyn crate::ledger::Ledger>,
    /// Keyed hashing of identifiers.
    pub hasher: crate::ledger::SubjectHasher,
    /// The clock (injectable for tests).
    pub clock: Arc<dyn crate::model::Clock>,
    /// The gate's own endpoints (listeners, ledger servers) that no client-chosen target may
    /// be; a new listener registers here with [`target::OwnEndpoints::add_listener`].
    pub own: Arc<target::OwnEndpoints>,
    /// The process-wide budget of buffered request bytes (`inspection.max_buffered_bytes`).
    pub budget: budget::Budget,
    /// The report's activity (records per category, refusals per reason) counted at the
    /// decision sites and not yet flushed into [`Gate::history`]'s store.
    pub report_activity: crate::ledger::activity::ActivityRecorder,
    /// The activity history behind `/v1/report` and `/v1/history`.
    pub history: crate::report::history::History,
    /// Requests allowed and refused per destination in the last hour and day (`/v1/status`).
    pub recent: recent::RecentRequests,
    /// The open `/v1/decisions/stream` responses: their limit, and the signal that ends them
    /// when the admin listener drains.
    pub streams: crate::admin::stream::Streams,
}

impl Gate {
    /// A gate over `config`.
    ///
    /// # Errors
    /// See [`Snapshot::build`].
    pub async fn new(
        config: Config,
        metrics: Metrics,
        audit: crate::audit::Audit,
        ledger: Arc<dyn crate::ledger::Ledger>,
        hasher: crate::ledger::SubjectHasher,
        clock: Arc<dyn crate::model::Clock>,
    ) -> Result<Arc<Gate>, BuildError> {
        let own = Arc::new(target::OwnEndpoints::new(&config.ledger.backend));
        let history = crate::report::history::History::open(&config.gate.data_dir);
        own.refresh_ledger().await;
        let snap = Snapshot::build(config, &metrics, ledger.as_ref(), own.clone()).await?;
        snap.gauges.refresh(ledger.as_ref(), clock.now()).await;
        metrics.ledger_errors.with_label_values(&[ledger.backend()]);
        metrics.ledger_losses.with_label_values(&[ledger.backend()]);
        metrics
            .ledger_reasserted
            .with_label_values(&[ledger.backend()]);
        metrics
            .ledger_up
            .with_label_values(&[ledger.backend()])
            .set(i64::from(ledger.is_ready()));
        let budget = budget::Budget::new(snap.config.inspection.max_buffered_bytes);
        let gate = Gate {
            budget,
            snapshot: ArcSwap::from_pointee(snap),
            metrics,
            ids: headers::RequestIds::default(),
            audit,
            ledger,
            hasher,
            clock,
            own,
            report_activity: crate::ledger::activity::ActivityRecorder::new(),
            history,
            recent: recent::RecentRequests::new(),
            streams: crate::admin::stream::Streams::new(),
        };
        gate.publish_config_info();
        Ok(Arc::new(gate))
    }

    /// Counts one decision on a transfer to `destination` from `client` (a client's name or
    /// `unidentified`): `transfer_gate_decisions_total`, the client's requests allowed or
    /// refused there, the destination's requests in the last hour and day ([`recent`]) and,
    /// for refusals, the report's activity.
    pub fn count_decision(
        &self,
        destination: &str,
        decision: Decision,
        reason: Reason,
        client: &str,
    ) {
        self.metrics
            .decisions
            .with_label_values(&[destination, decision.as_str(), reason.as_str(), client])
            .inc();
        let counted = crate::ledger::activity::ClientDelta {
            allowed: u64::from(decision != Decision::Block),
            refused: u64::from(decision == Decision::Block),
            ..Default::default()
        };
        let now = self.clock.now();
        self.recent
            .count(destination, decision == Decision::Block, now);
        self.report_activity
            .client(now, destination, client, counted);
        if decision != Decision::Allow {
            self.report_activity
                .decision(now, destination, decision.as_str(), reason.as_str());
        }
    }

    /// Counts the records forwarded to destination `dest` (index in the configuration) per
    /// category (in `Category::ALL` order): `transfer_gate_records_total` and the report's
    /// activity.
    pub fn count_records(&self, snap: &Snapshot, dest: usize, per_category: &[u64; 9]) {
        if let (Some(route), Some(d)) = (snap.routes.get(dest), snap.config.destinations.get(dest))
        {
            route.count_records(per_category);
            self.report_activity
                .records(self.clock.now(), &d.name, per_category);
        }
    }

    /// Whether the ledger can make reservations durable now (reachable and writable), so that
    /// PI-carrying transfers can be counted; published as `transfer_gate_ledger_up{backend}`.
    /// Readiness (`/readyz`) does not depend on it: PI-free and domestic traffic go on.
    pub fn ledger_up(&self) -> bool {
        let ok = self.ledger.is_ready();
        self.metrics
            .ledger_up
            .with_label_values(&[self.ledger.backend()])
            .set(i64::from(ok));
        ok
    }

    /// Publishes the ledger's loss counters (`transfer_gate_ledger_losses_total`,
    /// `…_reasserted_subjects_total`). Called by the one periodic refresher only.
    pub fn publish_ledger_counters(&self) {
        let b = self.ledger.backend();
        for (c, v) in [
            (&self.metrics.ledger_losses, self.ledger.losses_detected()),
            (
                &self.metrics.ledger_reasserted,
                self.ledger.reasserted_subjects(),
            ),
        ] {
            let c = c.with_label_values(&[b]);
            if v > c.get() {
                c.inc_by(v - c.get());
            }
        }
    }

    /// What the activity history reads and moves ([`crate::report::history::History`]).
    pub fn history_sources(&self) -> crate::report::history::Sources<'_> {
        crate::report::history::Sources {
            recorder: &self.report_activity,
            ledger: self.ledger.as_ref(),
            now: self.clock.now(),
        }
    }

    /// The current snapshot (one atomic load).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the configuration. In-flight requests finish on the snapshot they started with.
    ///
    /// # Errors
    /// See [`Snapshot::build`]; on error nothing changes.
    pub async fn reload(&self, config: Config) -> Result<(), BuildError> {
        let snap = Snapshot::build(
            config,
            &self.metrics,
            self.ledger.as_ref(),
            self.own.clone(),
        )
        .await?;
        snap.gauges
            .refresh(self.ledger.as_ref(), self.clock.now())
            .await;
        self.budget
            .resize(snap.config.inspection.max_buffered_bytes);
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
/// connections finish for up to `gate.drain_seconds`. Each accepted connection is handed to
/// one of `workers` and served there to its end. It lives under the lifecycle of
/// [`crate::listen`]: the connection limit, the header deadline from accept (which covers a
/// TLS handshake too), the idle deadline, and accept backoff when descriptors run out. With
/// `tls` this is the TLS proxy listener: each connection's TLS handshake comes first, and a
/// client certificate that verifies identifies every request on it.
pub async fn serve(
    gate: Arc<Gate>,
    listener: TcpListener,
    tls: Option<Arc<crate::identity::tls::ProxyTlsConfig>>,
    workers: Arc<crate::workers::Workers>,
    mut drain: DrainWatch,
) {
    let connections = Arc::new(crate::listen::Connections::default());
    let cfg = gate.snapshot().config.clone();
    let servers = Arc::new(Servers::new(&cfg));
    let name = if tls.is_some() { "proxy_tls" } else { "proxy" };
    let acceptor = crate::listen::Acceptor::new(
        listener,
        crate::listen::Limits {
            max_connections: cfg.gate.max_connections,
            client_header: cfg.timeouts.client_header,
            idle: cfg.timeouts.idle,
        },
        name,
    );
    loop {
        tokio::select! {
            accepted = acceptor.accept_detached() => {
                let Some(watcher) = connections.watcher() else { break };
                let conn = Connection {
                    gate: gate.clone(),
                    connections: connections.clone(),
                    servers: servers.clone(),
                    watcher,
                };
                let tls = tls.clone();
                workers.spawn(async move {
                    let peer = accepted.peer;
                    let Ok(io) = accepted.into_io() else { return };
                    let local = io.local_addr().unwrap_or(peer);
                    let activity = io.activity();
                    let addr = context::Conn { peer, local };
                    match tls {
                        None => conn.serve_plain(io, activity, addr).await,
                        // Boxed: a TLS session's state would otherwise size the task of every
                        // plain connection too.
                        Some(tls) => Box::pin(conn.serve_tls(io, activity, addr, tls)).await,
                    }
                });
            }
            _ = drain.signaled() => break,
        }
    }
    drop(acceptor);
    let wait = gate.snapshot().config.gate.drain;
    tracing::info!(
        listener = name,
        in_flight = connections.count(),
        drain_seconds = wait.as_secs(),
        "draining proxy connections"
    );
    if tokio::time::timeout(wait, connections.drain())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "drain time over; closing remaining connections"
        );
    }
}

/// One accepted proxy connection and what serving it needs.
struct Connection {
    gate: Arc<Gate>,
    connections: Arc<crate::listen::Connections>,
    servers: Arc<Servers>,
    watcher: crate::listen::Watcher,
}

impl Connection {
    /// Serves a plain (not TLS) connection: HTTP/1.1 or h2c by its first bytes, peeked so
    /// that the server chosen reads them itself (see [`crate::listen::GuardedIo::first_bytes`]);
    /// first bytes too few to tell go to the auto-detecting server.
    async fn serve_plain(
        mut self,
        mut io: crate::listen::GuardedIo,
        activity: Arc<crate::listen::Activity>,
        addr: context::Conn,
    ) {
        let peer = addr.peer;
        let first = tokio::select! {
            biased;
            first = io.first_bytes() => first,
            () = self.watcher.draining() => return,
        };
        let first = match first {
            Ok(first) => first,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "client connection ended before its first bytes");
                return;
            }
        };
        let client = ConnIdentity::default();
        let servers = self.servers.clone();
        let watcher = self.watcher;
        let svc = service(self.gate, self.connections, activity, addr, client);
        let io = TokioIo::new(io);
        let ended = match first {
            crate::listen::FirstBytes::Http1 => {
                let conn = servers.http1.serve_connection(io, svc).with_upgrades();
                watcher
                    .watch(conn, |c| c.graceful_shutdown())
                    .await
                    .map_err(BoxError::from)
            }
            // Boxed: h2 and undecided connections are rare on an egress proxy, and their
            // larger state would otherwise size every connection's task.
            crate::listen::FirstBytes::H2 => {
                let conn = servers.http2.serve_connection(io, svc);
                Box::pin(watcher.watch(conn, |c| c.graceful_shutdown()))
                    .await
                    .map_err(BoxError::from)
            }
            crate::listen::FirstBytes::Unsure => {
                let conn = servers.auto.serve_connection_with_upgrades(io, svc);
                Box::pin(watcher.watch(conn, |c| c.graceful_shutdown())).await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%peer, error = %e, "client connection ended with an error");
        }
    }

    /// Serves a connection of the TLS proxy listener: the TLS handshake (given up when the
    /// drain begins), then HTTP/1.1 or h2 by ALPN; a client certificate that verifies
    /// identifies every request on it.
    async fn serve_tls(
        mut self,
        io: crate::listen::GuardedIo,
        activity: Arc<crate::listen::Activity>,
        addr: context::Conn,
        tls: Arc<crate::identity::tls::ProxyTlsConfig>,
    ) {
        let peer = addr.peer;
        let accept = tokio_rustls::TlsAcceptor::from(tls.server.clone()).accept(io);
        let handshake = tokio::select! {
            biased;
            handshake = accept => handshake,
            () = self.watcher.draining() => return,
        };
        let stream = match handshake {
            Ok(s) => s,
            Err(e) => {
                let reason = crate::identity::tls::handshake_error_reason(&e);
                self.gate
                    .metrics
                    .proxy_tls_handshake_errors
                    .with_label_values(&[reason])
                    .inc();
                tracing::debug!(%peer, reason, error = %e, "TLS proxy handshake failed");
                return;
            }
        };
        let session = stream.get_ref().1;
        activity.set_h2(session.alpn_protocol() == Some(b"h2"));
        // Under `optional`, a chain from another CA passed the handshake and is verified here:
        // only one that verifies identifies the client.
        let certificate = tls
            .client_ca
            .as_ref()
            .and_then(|ca| session.peer_certificates().and_then(|c| ca.verify(c)))
            .map(Arc::new);
        let client = ConnIdentity {
            certificate,
            ..ConnIdentity::default()
        };
        self.serve(stream, activity, addr, client).await;
    }

    /// Serves HTTP/1.1 or h2 on `io` (a TLS session) to its end; every request carries
    /// `client`.
    async fn serve<IO>(
        self,
        io: IO,
        activity: Arc<crate::listen::Activity>,
        addr: context::Conn,
        client: ConnIdentity,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            gate,
            connections,
            servers,
            watcher,
        } = self;
        let peer = addr.peer;
        let svc = service(gate, connections, activity, addr, client);
        let conn = servers
            .auto
            .serve_connection_with_upgrades(TokioIo::new(io), svc);
        if let Err(e) = watcher.watch(conn, |c| c.graceful_shutdown()).await {
            tracing::debug!(%peer, error = %e, "client connection ended with an error");
        }
    }
}

/// The service of one client connection: every request is handled by [`request::handle`]
/// with the connection's address and identity, and counts as in flight on the connection
/// until its response has been sent.
fn service(
    gate: Arc<Gate>,
    connections: Arc<crate::listen::Connections>,
    activity: Arc<crate::listen::Activity>,
    addr: context::Conn,
    client: ConnIdentity,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<crate::respond::GateBody>,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<
        Output = Result<http::Response<crate::respond::GateBody>, std::convert::Infallible>,
    > + Send
                 + 'static,
> + Clone
       + Send
       + 'static {
    service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let flight = activity.request();
        req.extensions_mut().insert(activity.clone());
        req.extensions_mut().insert(connections.clone());
        // Boxed where it is made: the handler's state machine is several KiB, and hyper
        // moves the future it is given into its dispatcher.
        let fut = Box::pin(request::handle(gate.clone(), addr, client.clone(), req));
        async move { fut.await.map(|resp| flight.attach(resp)) }
    })
}

/// Applies the HTTP/1.1 server settings to `$b` (hyper's builder, or the auto server's part
/// for HTTP/1.1; they have the same setters): hyper's limits give 400 on malformed requests
/// and 431 on oversized heads. On a listener's own connections (`$inner` false) the header
/// and idle deadlines are kept by [`crate::listen`]; `inner` connections (inside an
/// intercepted `CONNECT`) also get hyper's header timer, so each later head is due within
/// `timeouts.client_header_seconds` too.
macro_rules! http1_settings {
    ($b:expr, $cfg:expr, $inner:expr) => {{
        let b = $b;
        b.timer(TokioTimer::new())
            .max_buf_size(64 * 1024)
            .max_headers(128)
            .keep_alive(true);
        if $inner {
            b.header_read_timeout($cfg.timeouts.client_header);
        } else {
            b.header_read_timeout(None);
        }
    }};
}

/// Applies the h2 server settings to `$b` (hyper's builder, or the auto server's part for h2).
macro_rules! http2_settings {
    ($b:expr) => {{
        $b.timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_STREAMS)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_send_buf_size(H2_STREAM_WINDOW as usize)
            .max_header_list_size(64 * 1024)
            .max_pending_accept_reset_streams(64)
            .max_local_error_reset_streams(256)
            .keep_alive_interval(std::time::Duration::from_secs(30));
    }};
}

/// The servers of a proxy listener's connections: HTTP/1.1 and h2c for the connections whose
/// first bytes told which, the auto-detecting server for TLS sessions and the rest; all with
/// the settings of [`server_builder`].
pub(crate) struct Servers {
    auto: auto::Builder<TokioExecutor>,
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Servers {
    fn new(cfg: &Config) -> Servers {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1_settings!(&mut http1, cfg, false);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2_settings!(&mut http2);
        Servers {
            auto: server_builder(cfg, false),
            http1,
            http2,
        }
    }
}

/// The HTTP/1.1 + h2c (prior knowledge) auto-detecting server with the settings of
/// [`http1_settings`] and [`http2_settings`].
pub(crate) fn server_builder(cfg: &Config, inner: bool) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    http1_settings!(&mut b.http1(), cfg, inner);
    http2_settings!(b.http2());
    b
}

/// Concurrent h2 streams per client connection.
pub const H2_MAX_STREAMS: u32 = 128;
/// The h2 receive window per stream: how much a client may send ahead of the gate reading it.
pub const H2_STREAM_WINDOW: u32 = 256 * 1024;
/// The h2 receive window per connection, shared by its streams.
pub const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;
