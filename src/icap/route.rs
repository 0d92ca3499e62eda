//! Where an encapsulated request goes — the proxy listener's classification, applied to the
//! request's URI and `Host`: an unknown host is refused `unknown_destination`, a domestic one
//! passes uninspected, a registered destination takes the gate's request path
//! ([`crate::proxy::destination::serve_with`]) with the ICAP client as its sink. A
//! `CONNECT` follows SPEC §2: a tunnel only to a domestic host or a destination declared
//! `tls = "tunnel"`; anything else overseas is refused `uninspectable` (the gate cannot see what
//! the ICAP client will send inside it).

use super::body::IcapBody;
use super::sink::IcapSink;
use crate::audit::AuditRecord;
use crate::config::TlsMode;
use crate::policy::{Decision, Reason, Refusal};
use crate::proxy::classify::target;
use crate::proxy::classify::{classify, Class, DOMESTIC_LABEL, UNKNOWN_LABEL};
use crate::proxy::context::RequestCx;
use crate::proxy::destination::serve_with;
use crate::proxy::gated::Summary;
use crate::proxy::identify::{must_refuse, unidentified};
use crate::proxy::outcome::{count, refuse_audited};
use crate::respond::{self, BoxError, Failure, GateBody};
use http::{Method, Request, Response};
use http_body_util::BodyExt;

/// The origin label of requests that come through the ICAP listener.
pub const ORIGIN: &str = "icap";

/// Routes one encapsulated request; the answer either went to the ICAP client through `sink`
/// already, or is the returned response (a refusal to encapsulate).
pub async fn route(
    cx: RequestCx<'_>,
    req: Request<IcapBody>,
    sink: &IcapSink,
) -> (Response<GateBody>, Decision) {
    let RequestCx {
        gate,
        snap,
        conn,
        request_id,
        ..
    } = cx;
    if must_refuse(snap, cx.identity) {
        return unidentified(cx, &req).await;
    }
    if req.method() == Method::CONNECT {
        return connect(cx, req, sink).await;
    }
    let target = match target(&req, conn.local) {
        Ok(t) => t,
        Err(msg) => {
            return (
                respond::failure(Failure::BadRequest(msg), request_id),
                Decision::Block,
            )
        }
    };
    let class = classify(&snap.config, &target.host);
    // SPEC §2: the ICAP client dials what the gate allows; never the gate itself, its ledger,
    // or a denied range (checked on every address the name resolves to here).
    if !matches!(class, Class::Unknown) {
        let port =
            target
                .authority
                .port_u16()
                .unwrap_or(if target.scheme == http::uri::Scheme::HTTPS {
                    443
                } else {
                    80
                });
        if snap.targets.any_forbidden(&target.host, port).await {
            let label = match class {
                Class::Destination(i) => snap.config.destinations[i].name.clone(),
                _ => DOMESTIC_LABEL.to_owned(),
            };
            let rec = cx.audit(&label, req.method().as_str(), req.uri().path());
            let refusal = Refusal::new(Reason::ForbiddenTarget, label);
            return refuse_audited(gate, snap, refusal, request_id, rec, &Summary::default()).await;
        }
    }
    match class {
        Class::Unknown => {
            let rec = cx.audit(UNKNOWN_LABEL, req.method().as_str(), req.uri().path());
            let refusal = Refusal::new(Reason::UnknownDestination, UNKNOWN_LABEL);
            refuse_audited(gate, snap, refusal, request_id, rec, &Summary::default()).await
        }
        Class::Domestic => {
            let decision = count(gate, DOMESTIC_LABEL, Reason::Domestic, cx.client_name());
            let body = req.into_body().map_err(BoxError::from).boxed_unsync();
            let up = &snap.domestic.bytes(&snap.clients, cx.identity)[0];
            (sink.pass(body, up).await, decision)
        }
        Class::Destination(i) => serve_with(cx, i, &target.host, req, sink).await,
    }
}

async fn connect(
    cx: RequestCx<'_>,
    req: Request<IcapBody>,
    sink: &IcapSink,
) -> (Response<GateBody>, Decision) {
    let (gate, snap, request_id) = (cx.gate, cx.snap, cx.request_id);
    let client = cx.client_name();
    let Some(auth) = req
        .uri()
        .authority()
        .cloned()
        .filter(|a| a.port_u16().is_some())
    else {
        return (
            respond::failure(Failure::BadRequest("CONNECT needs host:port"), request_id),
            Decision::Block,
        );
    };
    let mut rec = cx.audit(UNKNOWN_LABEL, "CONNECT", "");
    rec.path = crate::redact::authority(auth.as_str());
    let none = Summary::default();
    let refused = |rec: AuditRecord, reason: Reason, dest: &str| {
        refuse_audited(
            gate,
            snap,
            Refusal::new(reason, dest.to_owned()),
            request_id,
            rec,
            &none,
        )
    };
    let class = classify(&snap.config, auth.host());
    let port = auth.port_u16().unwrap_or(443);
    let forbidden = match class {
        Class::Unknown => false,
        // A domestic tunnel only to gate.tunnel_ports, decided before any lookup.
        Class::Domestic if !snap.targets.tunnel_port_allowed(port) => true,
        _ => snap.targets.any_forbidden(auth.host(), port).await,
    };
    if forbidden {
        let label = match class {
            Class::Destination(i) => snap.config.destinations[i].name.clone(),
            _ => DOMESTIC_LABEL.to_owned(),
        };
        rec.destination.clone_from(&label);
        return refused(rec, Reason::ForbiddenTarget, &label).await;
    }
    match class {
        Class::Unknown => refused(rec, Reason::UnknownDestination, UNKNOWN_LABEL).await,
        Class::Domestic => {
            let decision = count(gate, DOMESTIC_LABEL, Reason::Domestic, client);
            let body = req.into_body().map_err(BoxError::from).boxed_unsync();
            let up = &snap.domestic.bytes(&snap.clients, cx.identity)[0];
            (sink.pass(body, up).await, decision)
        }
        Class::Destination(i) => {
            let d = &snap.config.destinations[i];
            rec.destination = d.name.clone();
            if !snap.routes[i].allows(cx.identity) && !cx.observed() {
                return refused(rec, Reason::ClientNotAllowed, &d.name).await;
            }
            if d.tls != Some(TlsMode::Tunnel) {
                return refused(rec, Reason::Uninspectable, &d.name).await;
            }
            gate.metrics
                .tunnels
                .with_label_values(&[d.name.as_str()])
                .inc();
            let decision = count(gate, &d.name, Reason::Tunnel, client);
            rec.reason = Reason::Tunnel;
            gate.audit.record(rec).await;
            let body = req.into_body().map_err(BoxError::from).boxed_unsync();
            let up = &snap.routes[i].bytes(&snap.clients, cx.identity)[0];
            (sink.pass(body, up).await, decision)
        }
    }
}
