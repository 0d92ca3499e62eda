//! The route phase: where a request goes — its target and the target's class
//! ([`super::classify`]: domestic, a registered destination, unknown) — and what each class
//! gets: a refusal, an uninspected forward, or the destination phase.

use super::classify::{classify, is_self, target, Class, DOMESTIC_LABEL, UNKNOWN_LABEL};
use super::context::RequestCx;
use super::destination::serve;
use super::gated::Summary;
use super::outcome::{count, refuse_audited};
use super::sink::{forward, Exchange, Forbidden};
use crate::policy::{Decision, Reason, Refusal};
use crate::respond::{self, Failure, GateBody};
use http::{Request, Response};
use hyper::body::Incoming;

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
        ..
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
            let rec = cx.audit(UNKNOWN_LABEL, req.method().as_str(), req.uri().path());
            refuse_audited(gate, snap, Refusal::new(Reason::UnknownDestination, UNKNOWN_LABEL), request_id, rec, &Summary::default()).await
        }
        Class::Domestic if origin_form => (
            respond::failure(Failure::BadRequest("origin-form requests are routed only to registered destinations; send absolute-form requests through the proxy"), request_id),
            Decision::Block,
        ),
        Class::Domestic => {
            let rec = cx.audit(DOMESTIC_LABEL, req.method().as_str(), req.uri().path());
            let (parts, body) = req.into_parts();
            let x = Exchange { gate, snap, route: &snap.domestic, label: DOMESTIC_LABEL, request_id, identity: cx.identity, gated: None };
            match forward(x, target.scheme, target.authority, parts, body).await {
                Ok(resp) => (resp, count(gate, DOMESTIC_LABEL, Reason::Domestic, cx.client_name())),
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
