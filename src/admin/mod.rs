//! The admin listener, separate from the proxy: `GET /metrics` (Prometheus text),
//! `GET /healthz` (process alive), `GET /readyz` (config loaded, listeners serving; not the
//! ledger, whose state is `transfer_gate_ledger_up` and `/v1/status`), and the
//! `/v1/*` API (`status`, `decisions`, `reload`, `report`, `history`) behind a bearer token
//! compared in constant time (or, for reads, a console session) — or, without a token file,
//! answering loopback clients only — and the console under `/ui/` ([`crate::console`]).
//! Every response carries the console's security headers.
//! `/v1/report` and `/v1/history` read the activity history ([`crate::report::history`]),
//! which the gate's periodic refresher keeps. `/v1/decisions/stream` is [`stream`].

pub mod stream;

use crate::console::session::Sessions;
use crate::proxy::Gate;
use crate::report::Month;
use crate::respond::{self, Failure, GateBody};
use crate::shutdown::DrainWatch;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Open admin connections at most (Prometheus, probes and operators need few).
const ADMIN_MAX_CONNECTIONS: usize = 256;

/// Serves the admin endpoints until `drain` fires, under the connection lifecycle of
/// [`crate::listen`] (header deadline from accept, idle deadline, a connection limit, accept
/// backoff).
pub async fn serve(gate: Arc<Gate>, listener: TcpListener, mut drain: DrainWatch) {
    let cfg = gate.snapshot().config.clone();
    let builder = crate::proxy::server_builder(&cfg, false);
    let sessions = Arc::new(Sessions::default());
    let acceptor = crate::listen::Acceptor::new(
        listener,
        crate::listen::Limits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            client_header: cfg.timeouts.client_header,
            idle: cfg.timeouts.idle,
        },
        "admin",
    );
    loop {
        tokio::select! {
            (io, peer) = acceptor.accept() => {
                let gate = gate.clone();
                let sessions = sessions.clone();
                let activity = io.activity();
                let svc = service_fn(move |req| {
                    let flight = activity.request();
                    let fut = handle(gate.clone(), sessions.clone(), peer, req);
                    async move { fut.await.map(|resp| flight.attach(resp)) }
                });
                let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = drain.signaled() => break,
        }
    }
    // Open decision streams end now, so that they never hold up the shutdown.
    gate.streams.close();
}

fn text(status: StatusCode, body: &'static str) -> Response<GateBody> {
    let mut r = Response::new(respond::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<GateBody> {
    // A final newline, so that the next shell prompt starts on its own line after curl.
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(respond::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Compares two secrets in time that depends only on their lengths' digests, not contents.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// Whether the caller may use `/v1/*`: the bearer token; or, for reads, a console session
/// (SPEC §6: the console's session authorizes its own reads, never `POST /v1/reload`);
/// without a token file, a loopback caller.
fn authorized(
    token: Option<&str>,
    sessions: &Sessions,
    peer: SocketAddr,
    req: &Request<Incoming>,
) -> bool {
    let Some(t) = token else {
        return peer.ip().is_loopback();
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| ct_eq(given.trim().as_bytes(), t.as_bytes()));
    bearer
        || (matches!(*req.method(), Method::GET | Method::HEAD)
            && matches!(
                crate::console::access(token, sessions, peer, req.headers()),
                crate::console::Access::Session(_)
            ))
}

async fn handle(
    gate: Arc<Gate>,
    sessions: Arc<Sessions>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<GateBody>, Infallible> {
    let mut resp = route(&gate, &sessions, peer, req).await;
    crate::console::secure(resp.headers_mut());
    Ok(resp)
}

async fn route(
    gate: &Gate,
    sessions: &Sessions,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<GateBody> {
    let path = req.uri().path().to_owned();
    if path.starts_with("/v1/") {
        let snap = gate.snapshot();
        if !authorized(snap.admin_token.as_deref(), sessions, peer, &req) {
            return respond::failure(Failure::Unauthorized, "");
        }
        return v1(gate, &path, req).await;
    }
    if path == "/ui" || path.starts_with("/ui/") {
        return crate::console::handle(gate, sessions, peer, req).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond::failure(Failure::MethodNotAllowed, "");
    }
    match path.as_str() {
        "/" => {
            let mut r = Response::new(respond::empty());
            *r.status_mut() = StatusCode::SEE_OTHER;
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        // The config is loaded and both listeners are bound before this listener serves. A
        // ledger outage does not make the gate unready: behind a Service that would take every
        // replica out at once, and PI-free and domestic egress with them.
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/metrics" => {
            gate.ledger_up();
            let held = i64::try_from(gate.budget.in_use()).unwrap_or(i64::MAX);
            gate.metrics.buffered_bytes.set(held);
            let mut r = Response::new(respond::full(gate.metrics.render()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => respond::failure(Failure::NotFound, ""),
    }
}

/// The decoded value of query parameter `name` in `query`, by the
/// `application/x-www-form-urlencoded` rules ([`form_decode`]).
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (form_decode(k) == name).then(|| form_decode(v))
    })
}

/// Decodes one name or value of a query or form: `+` is a space, `%XX` a byte (a malformed
/// escape stays as written); invalid UTF-8 is replaced.
pub(crate) fn form_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    crate::inspect::percent_decode(s.as_bytes(), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

async fn v1(gate: &Gate, path: &str, req: Request<Incoming>) -> Response<GateBody> {
    match (req.method(), path) {
        (&Method::GET, "/v1/report") => {
            let mut months = [None, None];
            for (slot, name) in months.iter_mut().zip(["from", "to"]) {
                if let Some(v) = query_param(req.uri().query(), name) {
                    match Month::parse(&v) {
                        Some(m) => *slot = Some(m),
                        None => {
                            let message = if name == "from" {
                                "`from` must be a month YYYY-MM"
                            } else {
                                "`to` must be a month YYYY-MM"
                            };
                            return respond::failure(Failure::BadRequest(message), "");
                        }
                    }
                }
            }
            let doc = crate::report::document(gate, &gate.history, months[0], months[1]).await;
            json(StatusCode::OK, &doc)
        }
        (&Method::GET, "/v1/history") => json(
            StatusCode::OK,
            &crate::report::history_document(gate, &gate.history).await,
        ),
        (&Method::GET, "/v1/status") => json(StatusCode::OK, &crate::status::status(gate).await),
        (&Method::GET, "/v1/decisions") => {
            let limit = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(100)
                .min(crate::audit::RECENT);
            let recent = gate.audit.recent(limit);
            json(StatusCode::OK, &serde_json::json!({ "decisions": recent }))
        }
        (&Method::GET, "/v1/decisions/stream") => stream::serve(gate, &req),
        (&Method::POST, "/v1/reload") => {
            let path = gate.snapshot().config.path.clone();
            match crate::reload::reload(gate, &path).await {
                Ok(warnings) => {
                    tracing::info!("configuration reloaded through /v1/reload");
                    let w: Vec<String> = warnings.iter().map(ToString::to_string).collect();
                    json(
                        StatusCode::OK,
                        &serde_json::json!({"reloaded": true, "warnings": w}),
                    )
                }
                Err(errors) => {
                    crate::reload::log_refused(&errors);
                    json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &serde_json::json!({"reloaded": false, "errors": errors}),
                    )
                }
            }
        }
        (
            _,
            "/v1/status"
            | "/v1/decisions"
            | "/v1/decisions/stream"
            | "/v1/reload"
            | "/v1/report"
            | "/v1/history",
        ) => respond::failure(Failure::MethodNotAllowed, ""),
        _ => respond::failure(Failure::NotFound, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::ct_eq;

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"secret-token-123", b"secret-token-123"));
        assert!(!ct_eq(b"secret-token-123", b"secret-token-124"));
        assert!(!ct_eq(b"short", b"secret-token-123"));
    }
}
