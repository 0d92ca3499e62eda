//! The admin listener, separate from the proxy: `GET /metrics` (Prometheus text),
//! `GET /healthz` (process alive), `GET /readyz` (config loaded, ledger reachable).

use crate::proxy::Gate;
use crate::respond::{self, GateBody};
use crate::shutdown::DrainWatch;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves the admin endpoints until `drain` fires.
pub async fn serve(gate: Arc<Gate>, listener: TcpListener, mut drain: DrainWatch) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let gate = gate.clone();
                let svc = service_fn(move |req| handle(gate.clone(), peer, req));
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = drain.signaled() => break,
        }
    }
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

async fn handle(
    gate: Arc<Gate>,
    _peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<GateBody>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"));
    }
    Ok(match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/metrics" => {
            let mut r = Response::new(respond::full(gate.metrics.render()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    })
}
