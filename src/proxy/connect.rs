//! `CONNECT`: a plain tunnel to domestic hosts and to destinations declared `tls = "tunnel"`
//! (counted in `transfer_gate_tunnels_total`, and audited: one `transfer_gate::audit` log line
//! when the tunnel opens and one with its byte counts when it closes); TLS interception for
//! destinations with `tls = "intercept"` when the interception CA is configured
//! ([`super::intercept`]); everything else overseas is refused `uninspectable` or
//! `unknown_destination`. A tunnel's upstream is dialled before the client gets its `200`, so
//! an unreachable target is a 502, not a tunnel that dies at once. A target the rules of
//! [`super::target`] refuse (the gate itself, its ledger, a denied range, a domestic port
//! outside `gate.tunnel_ports`) gets 403 `forbidden_target` before anything is dialled, and a
//! client outside a destination's `clients` 403 `client_not_allowed`. The requests inside an
//! intercepted tunnel carry the `CONNECT`'s identity.

use super::classify::{classify, Class, DOMESTIC_LABEL, UNKNOWN_LABEL};
use super::context::RequestCx;
use super::intercept;
use super::outcome::{count, refuse};
use super::target::{dial, DialError};
use crate::config::TlsMode;
use crate::policy::{Decision, Reason, Refusal};
use crate::respond::{self, Failure, GateBody, UpstreamFailure};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpStream;

/// Handles a `CONNECT host:port` request.
pub async fn handle(
    cx: RequestCx<'_>,
    mut req: Request<Incoming>,
) -> (Response<GateBody>, Decision) {
    let RequestCx {
        gate,
        snap,
        conn,
        request_id,
        ..
    } = cx;
    let client = cx.client_name();
    let Some(auth) = req.uri().authority().cloned() else {
        return (
            respond::failure(Failure::BadRequest("CONNECT needs host:port"), request_id),
            Decision::Block,
        );
    };
    let Some(port) = auth.port_u16() else {
        return (
            respond::failure(Failure::BadRequest("CONNECT needs host:port"), request_id),
            Decision::Block,
        );
    };
    // The entity's counts for the audit line, as the ledger has them (a tunnel counts nothing).
    let entity = super::enforce::entity_now(gate, snap, gate.clock.now()).await;
    let audit = |dest: &str, decision: Decision, reason: Reason| {
        let mut rec = cx.audit(dest, "CONNECT", "");
        rec.path = crate::redact::authority(auth.as_str());
        rec.decision = decision;
        rec.reason = reason;
        rec.entity_subjects = entity.all;
        rec.entity_sensitive_subjects = entity.sensitive;
        gate.audit.record_now(rec);
    };
    // Where to dial: the client's host (checked by the target rules) or the operator's
    // `connect_to` (not checked).
    let (label, connect_to): (&str, Option<String>) = match classify(&snap.config, auth.host()) {
        Class::Unknown => {
            audit(UNKNOWN_LABEL, Decision::Block, Reason::UnknownDestination);
            return refuse(
                gate,
                snap,
                Refusal::new(Reason::UnknownDestination, UNKNOWN_LABEL),
                request_id,
                client,
            );
        }
        Class::Domestic => {
            if !snap.targets.tunnel_port_allowed(port) {
                return forbidden(cx, DOMESTIC_LABEL, &audit);
            }
            (DOMESTIC_LABEL, None)
        }
        Class::Destination(i) => {
            let d = &snap.config.destinations[i];
            if !snap.routes[i].allows(cx.identity) {
                if !cx.observed() {
                    audit(&d.name, Decision::Block, Reason::ClientNotAllowed);
                    let refusal = Refusal::new(Reason::ClientNotAllowed, d.name.clone());
                    return refuse(gate, snap, refusal, request_id, client);
                }
                // Observed: recorded as would_block, and the CONNECT goes on (its inner
                // requests are judged again).
                audit(&d.name, Decision::WouldBlock, Reason::ClientNotAllowed);
                gate.count_decision(
                    &d.name,
                    Decision::WouldBlock,
                    Reason::ClientNotAllowed,
                    client,
                );
            }
            match (d.tls, &snap.intercept) {
                (Some(TlsMode::Intercept), Some(icpt)) => {
                    return intercept::start(cx, icpt, &mut req, &d.name, auth);
                }
                (Some(TlsMode::Tunnel), _) => (d.name.as_str(), d.connect_to.clone()),
                _ => {
                    audit(&d.name, Decision::Block, Reason::Uninspectable);
                    return refuse(
                        gate,
                        snap,
                        Refusal::new(Reason::Uninspectable, d.name.clone()),
                        request_id,
                        client,
                    );
                }
            }
        }
    };
    let host = auth.host().trim_matches(['[', ']']).to_owned();
    let connect = async {
        match &connect_to {
            Some(addr) => TcpStream::connect(addr.as_str())
                .await
                .map_err(DialError::Io),
            None => dial(&host, port, Some(&snap.targets)).await,
        }
    };
    let upstream = match tokio::time::timeout(snap.config.timeouts.connect, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(DialError::Forbidden)) => {
            return forbidden(cx, label, &audit);
        }
        Ok(Err(DialError::Io(e))) => {
            tracing::warn!(request_id, destination = label, error = %e, "tunnel connect failed");
            return (
                respond::failure(Failure::Upstream(UpstreamFailure::Unreachable), request_id),
                Decision::Block,
            );
        }
        Err(_) => {
            return (
                respond::failure(Failure::Upstream(UpstreamFailure::Timeout), request_id),
                Decision::Block,
            )
        }
    };
    let reason = if label == DOMESTIC_LABEL {
        Reason::Domestic
    } else {
        Reason::Tunnel
    };
    let decision = count(gate, label, reason, client);
    gate.metrics.tunnels.with_label_values(&[label]).inc();
    let peer = conn.peer;
    let audited = reason == Reason::Tunnel;
    if audited {
        audit(label, decision, reason);
        tracing::info!(target: "transfer_gate::audit", request_id, client = %peer, destination = label, method = "CONNECT", decision = decision.as_str(), reason = reason.as_str(), "tunnel opened");
    }
    let destination = label.to_owned();
    let route = match classify(&snap.config, auth.host()) {
        Class::Destination(i) => &snap.routes[i],
        _ => &snap.domestic,
    };
    let [up, down] = route.bytes(&snap.clients, cx.identity).clone();
    let on_upgrade = hyper::upgrade::on(&mut req);
    if let Some(a) = req.extensions().get::<Arc<crate::listen::Activity>>() {
        // A tunnel: idle when no byte moves either way.
        a.upgraded(false);
    }
    let request_id = request_id.to_owned();
    tokio::spawn(async move {
        let mut upstream = upstream;
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    Ok((from_client, from_upstream)) => {
                        up.inc_by(from_client);
                        down.inc_by(from_upstream);
                        if audited {
                            tracing::info!(target: "transfer_gate::audit", request_id, client = %peer, destination, bytes_upstream = from_client, bytes_downstream = from_upstream, "tunnel closed");
                        }
                    }
                    Err(e) => {
                        tracing::debug!(request_id, %peer, error = %e, "tunnel closed with an error")
                    }
                }
            }
            Err(e) => tracing::debug!(request_id, %peer, error = %e, "CONNECT upgrade failed"),
        }
    });
    let mut resp = Response::new(respond::empty());
    *resp.status_mut() = StatusCode::OK;
    (resp, decision)
}

/// Refuses a forbidden target: 403 `forbidden_target`, an audit line and a decision sample.
fn forbidden(
    cx: RequestCx<'_>,
    label: &str,
    audit: &dyn Fn(&str, Decision, Reason),
) -> (Response<GateBody>, Decision) {
    audit(label, Decision::Block, Reason::ForbiddenTarget);
    refuse(
        cx.gate,
        cx.snap,
        Refusal::new(Reason::ForbiddenTarget, label),
        cx.request_id,
        cx.client_name(),
    )
}
