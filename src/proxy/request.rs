//! The request phase of the proxy listeners: each request gets its id (`X-Request-Id`), is
//! checked for a forwarding loop (`Via`), loads the configuration snapshot once, is identified
//! (SPEC §5 step 0: a credential that does not verify, or an unidentified request under
//! `gate.unidentified = "refuse"`, is answered 407 here), and is dispatched — `CONNECT` to
//! [`super::connect`], everything else to [`super::route`]. The request's context through the
//! later phases is a [`RequestCx`] (`super::context`).

use super::context::{Conn, RequestCx};
use super::identify::{must_refuse, unidentified};
use super::Gate;
use crate::identity::ConnIdentity;
use crate::policy::Decision;
use crate::respond::{self, Failure, GateBody};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

/// Handles one request from a client of a proxy listener; `client` is what its connection
/// knows of the client (a verified certificate, or the identity of the `CONNECT` it is in).
pub async fn handle(
    gate: Arc<Gate>,
    conn: Conn,
    client: ConnIdentity,
    mut req: Request<Incoming>,
) -> Result<Response<GateBody>, Infallible> {
    let started = Instant::now();
    let request_id = gate.ids.assign(req.headers_mut());
    let snap = gate.snapshot();
    let call = super::grpc::Call::of(req.headers());
    let (resp, decision) = if looped(req.headers()) {
        (
            respond::failure(Failure::LoopDetected, &request_id),
            Decision::Block,
        )
    } else {
        let identified = snap.clients.identify(
            &client,
            req.headers().get(http::header::PROXY_AUTHORIZATION),
            conn.peer.ip(),
        );
        let cx = RequestCx {
            gate: &gate,
            snap: &snap,
            conn,
            identity: identified.unwrap_or_default(),
            origin: "proxy",
            request_id: &request_id,
        };
        if identified.is_err() || must_refuse(&snap, cx.identity) {
            unidentified(cx, &req).await
        } else if req.method() == Method::CONNECT {
            super::connect::handle(cx, req).await
        } else {
            super::route::route(cx, req).await
        }
    };
    // A gRPC call gets the gate's own answers in gRPC terms (SPEC §3).
    let resp = super::grpc::answer(call.as_ref(), resp);
    gate.metrics
        .observe_exchange(decision.as_str(), started.elapsed(), &resp);
    Ok(resp)
}

/// Whether the request already carries this gate's `Via` entry.
fn looped(h: &http::HeaderMap) -> bool {
    h.get_all(http::header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|e| e.trim() == super::headers::VIA))
}
