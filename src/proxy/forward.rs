//! The request path for plain HTTP (absolute-form and origin-form, HTTP/1.1 and h2c):
//! route → classify → (inspection seam) → forward to the upstream → stream the response back.
//! Every synthetic answer comes from [`crate::respond`].

use super::body::MeteredBody;
use super::classify::{classify, Class, DOMESTIC_LABEL, UNKNOWN_LABEL};
use super::headers::{add_via, strip_hop_by_hop, wants_upgrade};
use super::upstream::is_connect_timeout;
use super::{Gate, Route, Snapshot};
use crate::respond::{self, GateBody, Reason, Refusal, UpstreamFailure};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Where a plain-HTTP request is going.
struct Target {
    scheme: Scheme,
    host: String,
    authority: Authority,
}

/// The client connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The gate's address the client connected to.
    pub local: SocketAddr,
}

/// Handles one request from a client of the proxy listener.
pub async fn handle(
    gate: Arc<Gate>,
    conn: Conn,
    mut req: Request<Incoming>,
) -> Result<Response<GateBody>, Infallible> {
    let started = Instant::now();
    let request_id = gate.ids.assign(req.headers_mut());
    let snap = gate.snapshot();
    let (resp, decision) = if looped(req.headers()) {
        let msg = "the request already passed through this gate (Via); refusing a forwarding loop";
        (
            respond::error(
                http::StatusCode::LOOP_DETECTED,
                "loop_detected",
                msg,
                &request_id,
            ),
            "block",
        )
    } else if req.method() == Method::CONNECT {
        super::connect::handle(&gate, &snap, conn, req, &request_id).await
    } else {
        route(&gate, &snap, conn, req, &request_id).await
    };
    gate.metrics
        .duration(decision)
        .observe(started.elapsed().as_secs_f64());
    Ok(resp)
}

/// Records a decision in `transfer_gate_decisions_total`.
pub(super) fn count(gate: &Gate, destination: &str, reason: Reason) -> &'static str {
    let decision = if reason.permits() { "allow" } else { "block" };
    gate.metrics
        .decisions
        .with_label_values(&[destination, decision, reason.as_str()])
        .inc();
    decision
}

/// Refuses with the 451/503 JSON of SPEC §5 and counts the decision.
pub(super) fn refuse(
    gate: &Gate,
    snap: &Snapshot,
    refusal: Refusal,
    request_id: &str,
) -> (Response<GateBody>, &'static str) {
    let decision = count(gate, &refusal.destination, refusal.reason);
    tracing::info!(request_id, destination = %refusal.destination, reason = refusal.reason.as_str(), "transfer refused");
    (
        respond::blocked(&refusal, request_id, snap.blocked_by.as_ref()),
        decision,
    )
}

/// Whether the request already carries this gate's `Via` entry.
fn looped(h: &http::HeaderMap) -> bool {
    h.get_all(http::header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|e| e.trim() == super::headers::VIA))
}

/// Whether `auth` names the gate's own listener (an h2 `:authority` of a client that calls the
/// gate directly), in which case the `Host` header says where the request goes.
fn is_self(auth: &Authority, local: SocketAddr) -> bool {
    auth.port_u16() == Some(local.port())
        && auth
            .host()
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip == local.ip() || (ip.is_loopback() && local.ip().is_loopback()))
}

fn target(req: &Request<Incoming>, local: SocketAddr) -> Result<Target, &'static str> {
    let uri = req.uri();
    if let Some(auth) = uri.authority().filter(|a| !is_self(a, local)) {
        let scheme = match uri.scheme_str() {
            Some("http") | None => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            Some(_) => return Err("only http and https URLs can be proxied"),
        };
        return Ok(Target {
            scheme,
            host: auth.host().to_owned(),
            authority: auth.clone(),
        });
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or("the request names no host (absolute-form URL or Host header)")?;
    let authority: Authority = host.parse().map_err(|_| "the Host header is not a host")?;
    Ok(Target {
        scheme: Scheme::HTTP,
        host: authority.host().to_owned(),
        authority,
    })
}

async fn route(
    gate: &Gate,
    snap: &Snapshot,
    conn: Conn,
    req: Request<Incoming>,
    request_id: &str,
) -> (Response<GateBody>, &'static str) {
    let origin_form = req.uri().authority().is_none_or(|a| is_self(a, conn.local));
    let target = match target(&req, conn.local) {
        Ok(t) => t,
        Err(msg) => return (respond::bad_request(msg, request_id), "block"),
    };
    match classify(&snap.config, &target.host) {
        Class::Unknown => refuse(gate, snap, Refusal::new(Reason::UnknownDestination, UNKNOWN_LABEL), request_id),
        Class::Domestic if origin_form => (
            respond::bad_request(
                "origin-form requests are routed only to registered destinations; send absolute-form requests through the proxy",
                request_id,
            ),
            "block",
        ),
        Class::Domestic => {
            let decision = count(gate, DOMESTIC_LABEL, Reason::Domestic);
            let resp = forward(gate, snap, &snap.domestic, DOMESTIC_LABEL, target.scheme, target.authority, req, request_id).await;
            (resp, decision)
        }
        Class::Destination(i) => {
            serve_destination(gate, snap, i, conn, target.scheme, target.authority, req, request_id).await
        }
    }
}

/// Handles one request to the registered destination `dest_index` (of `snap`): the path every
/// request to a destination takes, from a plain-HTTP client ([`route`]) and for each inner
/// request of an intercepted `CONNECT` (`proxy::intercept`, scheme `https`, authority the
/// `CONNECT` target).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_destination(
    gate: &Gate,
    snap: &Snapshot,
    dest_index: usize,
    _conn: Conn,
    scheme: Scheme,
    authority: Authority,
    req: Request<Incoming>,
    request_id: &str,
) -> (Response<GateBody>, &'static str) {
    let i = dest_index;
    let dest = &snap.config.destinations[i];
    if wants_upgrade(req.headers()) {
        return refuse(
            gate,
            snap,
            Refusal::new(Reason::Uninspectable, dest.name.clone()),
            request_id,
        );
    }
    if let Some(len) = content_length(&req) {
        if len > snap.config.inspection.max_body_bytes {
            return (respond::too_large(request_id), "block");
        }
    }
    // Inspection seam: the streaming inspection engine and the policy decide here
    // (see MeteredBody); until they are wired in, traffic to a registered
    // destination is forwarded as allowed.
    let decision = count(gate, &dest.name, Reason::Allowed);
    let scheme = if dest.upstream_https {
        Scheme::HTTPS
    } else {
        scheme
    };
    let resp = forward(
        gate,
        snap,
        &snap.routes[i],
        &dest.name,
        scheme,
        authority,
        req,
        request_id,
    )
    .await;
    (resp, decision)
}

fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    gate: &Gate,
    snap: &Snapshot,
    route: &Route,
    label: &str,
    scheme: Scheme,
    authority: Authority,
    req: Request<Incoming>,
    request_id: &str,
) -> Response<GateBody> {
    let t = snap.config.timeouts;
    let deadline = t.total.map(|d| tokio::time::Instant::now() + d);
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = match Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(pq)
        .build()
    {
        Ok(u) => u,
        Err(_) => return respond::bad_request("the request URL cannot be forwarded", request_id),
    };
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(http::header::HOST);
    add_via(&mut parts.headers);

    let too_large = Arc::new(AtomicBool::new(false));
    let cap = Some((snap.config.inspection.max_body_bytes, too_large.clone()));
    let body = MeteredBody::new(body, route.bytes_up.clone(), t.idle, deadline, cap).boxed_unsync();
    let upstream_req = Request::from_parts(parts, body);

    let head_timeout = match deadline {
        Some(d) => t
            .response_header
            .min(d.saturating_duration_since(tokio::time::Instant::now())),
        None => t.response_header,
    };
    let result = tokio::time::timeout(head_timeout, route.client.request(upstream_req)).await;
    let resp = match result {
        Err(_) => return upstream_error(gate, label, UpstreamFailure::Timeout, request_id),
        Ok(Err(e)) => {
            if too_large.load(Ordering::Acquire) {
                return respond::too_large(request_id);
            }
            let kind = if is_connect_timeout(&e) {
                UpstreamFailure::Timeout
            } else {
                UpstreamFailure::Unreachable
            };
            tracing::warn!(request_id, destination = label, error = %error_chain(&e), "upstream request failed");
            return upstream_error(gate, label, kind, request_id);
        }
        Ok(Ok(r)) => r,
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers);
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        parts.headers.insert(super::headers::REQUEST_ID, v);
    }
    let body =
        MeteredBody::new(body, route.bytes_down.clone(), t.idle, deadline, None).boxed_unsync();
    Response::from_parts(parts, body)
}

fn upstream_error(
    gate: &Gate,
    label: &str,
    kind: UpstreamFailure,
    request_id: &str,
) -> Response<GateBody> {
    let k = match kind {
        UpstreamFailure::Unreachable => "unreachable",
        UpstreamFailure::Timeout => "timeout",
    };
    gate.metrics
        .upstream_errors
        .with_label_values(&[label, k])
        .inc();
    respond::upstream_failure(kind, request_id)
}

/// An error and its sources on one line (for logs; upstream errors carry no request data).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
