//! The request phase of the proxy listener: each request gets its id (`X-Request-Id`), is
//! checked for a forwarding loop (`Via`), loads the configuration snapshot once, and is
//! dispatched — `CONNECT` to [`super::connect`], everything else to [`super::route`]. The
//! request's context through the later phases is a [`RequestCx`].

use super::{Gate, Snapshot};
use crate::policy::Decision;
use crate::respond::{self, Failure, GateBody};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The client connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The gate's address the client connected to.
    pub local: SocketAddr,
}

/// One request's context through the phases: the gate, the configuration snapshot it started
/// with, the client connection and the request id.
#[derive(Clone, Copy)]
pub struct RequestCx<'a> {
    /// The gate.
    pub gate: &'a Arc<Gate>,
    /// The configuration the request started with (a reload does not change it mid-request).
    pub snap: &'a Arc<Snapshot>,
    /// The client connection.
    pub conn: Conn,
    /// The request id.
    pub request_id: &'a str,
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
        (
            respond::failure(Failure::LoopDetected, &request_id),
            Decision::Block,
        )
    } else {
        let cx = RequestCx {
            gate: &gate,
            snap: &snap,
            conn,
            request_id: &request_id,
        };
        if req.method() == Method::CONNECT {
            super::connect::handle(cx, req).await
        } else {
            super::route::route(cx, req).await
        }
    };
    gate.metrics
        .duration(decision.as_str())
        .observe(started.elapsed().as_secs_f64());
    Ok(resp)
}

/// Whether the request already carries this gate's `Via` entry.
fn looped(h: &http::HeaderMap) -> bool {
    h.get_all(http::header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|e| e.trim() == super::headers::VIA))
}
