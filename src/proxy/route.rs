//! The route phase: where a request goes — its target (absolute-form URL, or `Host` for a
//! client that calls the gate directly) and the target's class (domestic, a registered
//! destination, unknown).

use super::classify::{classify, Class, DOMESTIC_LABEL, UNKNOWN_LABEL};
use super::destination::serve;
use super::gated::Summary;
use super::outcome::{count, refuse_audited};
use super::request::RequestCx;
use super::sink::{forward, Exchange, Forbidden};
use crate::audit::AuditRecord;
use crate::policy::{Decision, Reason, Refusal};
use crate::respond::{self, Failure, GateBody};
use http::uri::{Authority, Scheme};
use http::{Request, Response};
use hyper::body::Incoming;
use std::net::SocketAddr;

/// Where a plain-HTTP request is going.
pub(crate) struct Target {
    /// `http`, or `https` for an absolute-form `https://` URL.
    pub scheme: Scheme,
    /// The host, without port.
    pub host: String,
    /// Host and port.
    pub authority: Authority,
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

/// The target of a request: its absolute-form URL's authority (unless that names the gate's
/// own listener at `local`), else its `Host` header.
pub(crate) fn target<B>(req: &Request<B>, local: SocketAddr) -> Result<Target, &'static str> {
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

/// Routes a request that is not a `CONNECT`: unknown hosts are refused, domestic ones
/// forwarded uninspected (absolute-form only), registered destinations take
/// [`super::destination::serve`].
pub(crate) async fn route(
    cx: RequestCx<'_>,
    req: Request<Incoming>,
) -> (Response<GateBody>, Decision) {
    let RequestCx {
        gate,
        snap,
        conn,
        request_id,
    } = cx;
    let origin_form = req.uri().authority().is_none_or(|a| is_self(a, conn.local));
    let target = match target(&req, conn.local) {
        Ok(t) => t,
        Err(msg) => {
            return (
                respond::failure(Failure::BadRequest(msg), request_id),
                Decision::Block,
            )
        }
    };
    match classify(&snap.config, &target.host) {
        Class::Unknown => {
            let rec = AuditRecord::new(request_id, conn.peer, UNKNOWN_LABEL, req.method().as_str(), req.uri().path());
            refuse_audited(gate, snap, Refusal::new(Reason::UnknownDestination, UNKNOWN_LABEL), request_id, rec, &Summary::default()).await
        }
        Class::Domestic if origin_form => (
            respond::failure(Failure::BadRequest("origin-form requests are routed only to registered destinations; send absolute-form requests through the proxy"), request_id),
            Decision::Block,
        ),
        Class::Domestic => {
            let rec = AuditRecord::new(request_id, conn.peer, DOMESTIC_LABEL, req.method().as_str(), req.uri().path());
            let (parts, body) = req.into_parts();
            let x = Exchange { gate, snap, route: &snap.domestic, label: DOMESTIC_LABEL, request_id, gated: None };
            match forward(x, target.scheme, target.authority, parts, body).await {
                Ok(resp) => (resp, count(gate, DOMESTIC_LABEL, Reason::Domestic)),
                Err(Forbidden) => {
                    refuse_audited(gate, snap, Refusal::new(Reason::ForbiddenTarget, DOMESTIC_LABEL), request_id, rec, &Summary::default()).await
                }
            }
        }
        Class::Destination(i) => {
            serve(cx, i, target.scheme, target.authority, req).await
        }
    }
}
