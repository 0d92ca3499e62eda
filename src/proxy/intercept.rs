//! TLS interception of `CONNECT host:port` to a destination with `tls = "intercept"`.
//!
//! The client gets `200` at once; on the upgraded connection the gate reads the ClientHello,
//! refuses a missing SNI or one that is not the `CONNECT` host (a TLS alert, nothing
//! forwarded), and otherwise completes the handshake with a leaf minted for that name by the
//! interception CA ([`crate::tls::mint`]), offering ALPN `h2` and `http/1.1`. Each inner request
//! then takes exactly the path of a plain request to that destination
//! ([`destination::serve`]: the same checks, counting, metrics — and inspection, policy
//! and audit when they are wired in there), with scheme `https` and the `CONNECT` target as
//! authority, so the gate opens its own verified TLS connection upstream with the destination's
//! pooled client (`connect_to` honoured).
//!
//! A client that does not trust the CA (or pins certificates) fails its handshake: the gate logs
//! a TLS client error with the SNI, at most one line per second, and counts it in
//! `transfer_gate_tls_client_errors_total{destination}`.

use super::classify::{classify, Class};
use super::context::{Conn, RequestCx};
use super::destination;
use super::identify::{must_refuse, unidentified};
use super::outcome::refuse;
use super::{BuildError, Gate, Snapshot};
use crate::config::{TlsMode, TlsSettings};
use crate::identity::{Carried, ConnIdentity};
use crate::listen::{Activity, Connections, LogLimiter};
use crate::policy::{Decision, Reason, Refusal};
use crate::respond::{self, Failure, GateBody};
use crate::tls::ca::InterceptCa;
use crate::tls::mint::{refusing_config, server_config, Minter};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_rustls::LazyConfigAcceptor;

/// The interception state of one configuration snapshot: the leaf minter and the rustls server
/// configs (shared by every intercepted connection, so session resumption works across them).
pub struct Interceptor {
    minter: Arc<Minter>,
    accept: Arc<ServerConfig>,
    refuse: Arc<ServerConfig>,
    client_errors: LogLimiter,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor").finish_non_exhaustive()
    }
}

impl Interceptor {
    /// Loads the interception CA of `tls`; `None` when no CA is configured or neither of its
    /// files exists yet (then `CONNECT` to intercept destinations stays refused
    /// `uninspectable`).
    ///
    /// # Errors
    /// When the CA cannot be loaded (unreadable, key readable by group or others, cert and key
    /// not matching) or the TLS provider fails.
    pub fn load(tls: &TlsSettings) -> Result<Option<Arc<Interceptor>>, BuildError> {
        let (Some(cert), Some(key)) = (&tls.ca_cert, &tls.ca_key) else {
            return Ok(None);
        };
        let Some(ca) = InterceptCa::load_if_present(cert, key)? else {
            tracing::warn!(ca_cert = %cert.display(), "the interception CA does not exist yet (transfer-gate ca init); CONNECT to intercept destinations is refused");
            return Ok(None);
        };
        let minter = Arc::new(Minter::new(ca));
        Ok(Some(Arc::new(Interceptor {
            accept: server_config(minter.clone())?,
            refuse: refusing_config()?,
            minter,
            client_errors: LogLimiter::new(Duration::from_secs(1)),
        })))
    }

    /// The leaf minter (its cache size is observable).
    pub fn minter(&self) -> &Minter {
        &self.minter
    }
}

/// Answers an intercepted `CONNECT` with `200` and serves the upgraded connection in a task.
/// Its inner requests carry the identity `cx` has.
pub(super) fn start(
    cx: RequestCx<'_>,
    icpt: &Arc<Interceptor>,
    req: &mut Request<Incoming>,
    destination: &str,
    authority: Authority,
) -> (Response<GateBody>, Decision) {
    let (gate, conn, request_id) = (cx.gate, cx.conn, cx.request_id);
    let carried = Carried {
        name: cx.snap.clients.name_arc(cx.identity),
        by: cx.identity.by,
    };
    // `host:443` → `host`, as an absolute-form `https://host/` URL would name it (the upstream
    // sees the same `Host` / `:authority` either way).
    let authority = match authority.port_u16() {
        Some(443) => authority.host().parse().unwrap_or(authority),
        _ => authority,
    };
    // The TLS handshake and the first inner request head are due within client_header.
    let activity = req.extensions().get::<Arc<Activity>>().cloned();
    let connections = req.extensions().get::<Arc<Connections>>().cloned();
    let on_upgrade = hyper::upgrade::on(req);
    if let Some(a) = &activity {
        a.upgraded(true);
    }
    let (gate, icpt, destination) = (gate.clone(), icpt.clone(), destination.to_owned());
    tracing::debug!(request_id, destination, "intercepting CONNECT");
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let session = Session {
                    conn,
                    client: ConnIdentity {
                        carried: Some(Arc::new(carried)),
                        ..ConnIdentity::default()
                    },
                    destination,
                    authority,
                    activity,
                    connections,
                };
                serve(gate, icpt, TokioIo::new(upgraded), session).await
            }
            Err(e) => tracing::debug!(peer = %conn.peer, error = %e, "CONNECT upgrade failed"),
        }
    });
    let mut resp = Response::new(respond::empty());
    *resp.status_mut() = StatusCode::OK;
    (resp, Decision::Allow)
}

/// The TLS handshake and the inner HTTP connection.
/// One intercepted `CONNECT`: its client, destination and authority, its connection's
/// lifecycle, and the listener's connections (whose drain it joins).
struct Session {
    conn: Conn,
    client: ConnIdentity,
    destination: String,
    authority: Authority,
    activity: Option<Arc<Activity>>,
    connections: Option<Arc<Connections>>,
}

async fn serve<IO>(gate: Arc<Gate>, icpt: Arc<Interceptor>, io: IO, session: Session)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Session {
        conn,
        client,
        destination,
        authority,
        activity,
        connections,
    } = session;
    let host: Arc<str> = Arc::from(authority.host().trim_end_matches('.').to_ascii_lowercase());
    let handshake_timeout = gate.snapshot().config.timeouts.client_header;
    let failed = |sni: Option<&str>, what: &str, error: &dyn std::fmt::Display| {
        gate.metrics
            .tls_client_errors
            .with_label_values(&[destination.as_str()])
            .inc();
        if let Some(suppressed) = icpt.client_errors.admit() {
            let connect_host = crate::redact::host(&host);
            let sni = sni.map_or_else(|| "-".to_owned(), crate::redact::host);
            tracing::warn!(client = %conn.peer, destination, connect_host, sni, suppressed, error = %error, "TLS client error: {what}; nothing forwarded");
        }
    };
    let lazy = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout(handshake_timeout, lazy).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return failed(None, "no TLS ClientHello", &e),
        Err(_) => return failed(None, "no TLS ClientHello in time", &"timeout"),
    };
    let sni = start
        .client_hello()
        .server_name()
        .map(|s| s.trim_end_matches('.').to_ascii_lowercase());
    let refused = match sni.as_deref() {
        None => Some("the client sent no SNI"),
        Some(s) if s != &*host => Some("the SNI is not the CONNECT host"),
        Some(_) => None,
    };
    let sni = sni.map(|mut s| {
        s.truncate(253);
        s
    });
    if let Some(why) = refused {
        failed(sni.as_deref(), "handshake refused", &why);
        // Finish with an alert, so the client reports a handshake failure rather than a reset.
        let _ =
            tokio::time::timeout(handshake_timeout, start.into_stream(icpt.refuse.clone())).await;
        return;
    }
    let tls = match tokio::time::timeout(handshake_timeout, start.into_stream(icpt.accept.clone()))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return failed(
                sni.as_deref(),
                "handshake failed (does the client trust the gate's CA?)",
                &e,
            )
        }
        Err(_) => return failed(sni.as_deref(), "handshake timed out", &"timeout"),
    };
    let builder = super::server_builder(&gate.snapshot().config, true);
    let svc = {
        let gate = gate.clone();
        service_fn(move |req| {
            if let Some(a) = &activity {
                a.inner_request();
            }
            inner(
                gate.clone(),
                conn,
                client.clone(),
                host.clone(),
                authority.clone(),
                req,
            )
        })
    };
    // Watched by the listener's drain: on SIGTERM in-flight requests finish, then the
    // connection closes; once draining, no new intercepted session starts.
    let Some(watcher) = connections.as_deref().and_then(Connections::watcher) else {
        return;
    };
    let conn_future = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
    if let Err(e) = watcher.watch(conn_future, |c| c.graceful_shutdown()).await {
        tracing::debug!(client = %conn.peer, destination, error = %e, "intercepted connection ended with an error");
    }
}

/// One request inside an intercepted connection.
async fn inner(
    gate: Arc<Gate>,
    conn: Conn,
    client: ConnIdentity,
    host: Arc<str>,
    authority: Authority,
    mut req: Request<Incoming>,
) -> Result<Response<GateBody>, Infallible> {
    let started = Instant::now();
    let request_id = gate.ids.assign(req.headers_mut());
    let snap = gate.snapshot();
    let call = super::grpc::Call::of(req.headers());
    // The CONNECT's identity, resolved against the configuration in force now.
    let identity = snap
        .clients
        .identify(&client, None, conn.peer.ip())
        .unwrap_or_default();
    let cx = RequestCx {
        gate: &gate,
        snap: &snap,
        conn,
        identity,
        origin: "proxy",
        request_id: &request_id,
    };
    let (resp, decision) = match still_intercepted(&snap, &host) {
        Some(_) if must_refuse(&snap, identity) => unidentified(cx, &req).await,
        Some(i) if req.method() == Method::CONNECT => {
            let name = snap.config.destinations[i].name.clone();
            let refusal = Refusal::new(Reason::Uninspectable, name);
            refuse(&gate, &snap, refusal, &request_id, cx.client_name())
        }
        Some(_) if !names_host(&req, &host) => (
            respond::failure(
                Failure::Misdirected("This connection was opened for another host; send the request through a CONNECT to its own host."),
                &request_id,
            ),
            Decision::Block,
        ),
        Some(i) => destination::serve(cx, i, Scheme::HTTPS, authority, req).await,
        // The configuration changed under the open connection: the client must reconnect and
        // get what a CONNECT to this host gets now.
        None => (
            respond::failure(
                Failure::Misdirected(
                    "The gate's configuration for this host changed; open a new connection.",
                ),
                &request_id,
            ),
            Decision::Block,
        ),
    };
    // A gRPC call gets the gate's own answers in gRPC terms (SPEC §3).
    let resp = super::grpc::answer(call.as_ref(), resp);
    gate.metrics
        .observe_exchange(decision.as_str(), started.elapsed(), &resp);
    Ok(resp)
}

/// The destination index of `host` if it is still an intercepted destination in `snap`.
fn still_intercepted(snap: &Snapshot, host: &str) -> Option<usize> {
    match classify(&snap.config, host) {
        Class::Destination(i)
            if snap.config.destinations[i].tls == Some(TlsMode::Intercept)
                && snap.intercept.is_some() =>
        {
            Some(i)
        }
        _ => None,
    }
}

/// Whether the inner request names the `CONNECT` host (or no host at all).
fn names_host(req: &Request<Incoming>, host: &str) -> bool {
    let same = |h: &str| h.trim_end_matches('.').eq_ignore_ascii_case(host);
    if let Some(h) = req.uri().host() {
        return same(h);
    }
    match req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
    {
        Some(v) => v.parse::<Authority>().is_ok_and(|a| same(a.host())),
        None => true,
    }
}
