//! The ICAP REQMOD service (RFC 3507) on `gate.icap_listen`: lets an existing proxy (Squid, a
//! secure web gateway) hand each request to the gate, which judges it on exactly its own path
//! — classification, inspection, policy, ledger reservation, audit (`origin` = `icap`) and
//! metrics — and answers `204`/the request (allowed, released record by record), or an
//! encapsulated 451/403/503 response (refused). Split by concern: [`wire`] (parsing, bounded),
//! [`body`] (the body pump and preview), [`sink`] (the ICAP client as the sink of the gate's
//! request path), [`route`] (classification), [`response`] (ICAP answers), [`conn`] (one
//! connection), and the accept loop here.

pub mod body;
pub mod conn;
pub mod response;
pub mod route;
pub mod sink;
pub mod wire;

use crate::proxy::Gate;
use crate::shutdown::DrainWatch;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Accepts ICAP connections on `listener` until `drain` fires, at most
/// [`conn::MAX_CONNECTIONS`] at once (beyond that a connection gets `503` and is closed), then
/// lets in-flight requests finish for up to `gate.drain_seconds`.
pub async fn serve(gate: Arc<Gate>, listener: TcpListener, mut drain: DrainWatch) {
    let slots = Arc::new(Semaphore::new(conn::MAX_CONNECTIONS));
    let mut last_warn: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (mut stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off, log at most once a second.
                        if last_warn.is_none_or(|t| t.elapsed().as_secs() >= 1) {
                            tracing::warn!(error = %e, "ICAP accept failed");
                            last_warn = Some(std::time::Instant::now());
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    let tag = response::istag(&gate.snapshot().config.sha256);
                    tokio::spawn(async move {
                        let msg = response::error(503, &tag);
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(5),
                            stream.write_all(&msg),
                        )
                        .await;
                    });
                    continue;
                };
                let (gate, w) = (gate.clone(), drain.clone());
                tokio::spawn(async move {
                    conn::serve_connection(gate, stream, peer, w).await;
                    drop(permit);
                });
            }
            _ = drain.signaled() => break,
        }
    }
    drop(listener);
    let wait = gate.snapshot().config.gate.drain;
    let all = u32::try_from(conn::MAX_CONNECTIONS).unwrap_or(u32::MAX);
    if tokio::time::timeout(wait, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("drain time over; closing remaining ICAP connections");
    }
}
