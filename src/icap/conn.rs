//! One ICAP connection: requests one after another (keep-alive), each within the SPEC §9
//! bounds — the head within `timeouts.client_header_seconds`, the next request within
//! `timeouts.idle_seconds`, body reads within the idle timeout, heads and lines bounded
//! ([`super::wire`]). `OPTIONS` is answered from the current configuration; `REQMOD` reads the
//! encapsulated HTTP head, starts the body pump and hands the request to [`super::route`].

use super::body::{pump, BodyState, IcapBody, Out, Reader, Writer, CHANNEL_FRAMES, MAX_PREVIEW};
use super::response::{self, istag, Options};
use super::route::route;
use super::sink::{Answer, Encapsulated, IcapSink};
use super::wire::{self, IcapHead, WireError};
use crate::proxy::context::{Conn, RequestCx};
use crate::proxy::Gate;
use crate::shutdown::DrainWatch;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The service path (`icap://host:port/reqmod`).
pub const SERVICE: &str = "/reqmod";
/// `Max-Connections` advertised and enforced.
pub const MAX_CONNECTIONS: usize = 1024;
/// `Preview` advertised.
pub const PREVIEW: usize = 4096;
/// `Options-TTL` advertised (seconds).
pub const OPTIONS_TTL: u64 = 60;

/// Serves one accepted ICAP connection until it closes, breaks, idles out or the gate drains.
pub async fn serve_connection(
    gate: Arc<Gate>,
    stream: TcpStream,
    peer: SocketAddr,
    drain: DrainWatch,
) {
    let local = stream.local_addr().unwrap_or(peer);
    let (rd, wr) = stream.into_split();
    let mut rd: Reader = BufReader::with_capacity(16 * 1024, rd);
    let out: Writer = Arc::new(tokio::sync::Mutex::new(Out {
        wr,
        responded: false,
    }));
    let mut first = true;
    loop {
        let snap = gate.snapshot();
        let t = snap.config.timeouts;
        let tag = istag(&snap.config.sha256);
        // The next request must start in time: the header timeout on a fresh connection, the
        // idle timeout between requests.
        let wait = if first { t.client_header } else { t.idle };
        match tokio::time::timeout(wait, rd.fill_buf()).await {
            Ok(Ok(b)) if !b.is_empty() => {}
            _ => return,
        }
        let head = match tokio::time::timeout(t.client_header, wire::read_icap_head(&mut rd)).await
        {
            Err(_) => return answer_error(&out, 408, &tag).await,
            Ok(Err(WireError::Bad(why))) => {
                tracing::debug!(%peer, why, "bad ICAP request");
                return answer_error(&out, 400, &tag).await;
            }
            Ok(Err(_)) => return,
            Ok(Ok(h)) => h,
        };
        first = false;
        if head.service_path() != SERVICE {
            return answer_error(&out, 404, &tag).await;
        }
        match head.method.as_str() {
            "OPTIONS" => {
                let msg = response::options(&Options {
                    istag: &tag,
                    max_connections: MAX_CONNECTIONS,
                    ttl: OPTIONS_TTL,
                    preview: PREVIEW,
                });
                let null_body = head
                    .header("encapsulated")
                    .is_none_or(|e| e.trim().eq_ignore_ascii_case("null-body=0"));
                if !write_all(&out, &msg, t.idle).await || !null_body || head.wants_close() {
                    return;
                }
            }
            "REQMOD" => match reqmod(&gate, head, rd, &out, peer, local, &tag).await {
                Some(r) if !drain.is_draining() => rd = r,
                _ => return,
            },
            _ => return answer_error(&out, 405, &tag).await,
        }
    }
}

async fn write_all(out: &Writer, bytes: &[u8], idle: std::time::Duration) -> bool {
    let mut o = out.lock().await;
    o.responded = true;
    matches!(
        tokio::time::timeout(idle, o.wr.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

async fn answer_error(out: &Writer, status: u16, tag: &str) {
    let mut o = out.lock().await;
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        o.wr.write_all(&response::error(status, tag)),
    )
    .await;
    let _ = o.wr.shutdown().await;
}

/// The reader of the connection while a request is served: kept here, or lent to the pump.
enum ReadSide {
    Here(Reader),
    Pumped(tokio::task::JoinHandle<Option<Reader>>),
}

/// Serves one REQMOD request; returns the reader when the connection can carry another.
async fn reqmod(
    gate: &Arc<Gate>,
    head: IcapHead,
    mut rd: Reader,
    out: &Writer,
    peer: SocketAddr,
    local: SocketAddr,
    tag: &str,
) -> Option<Reader> {
    let started = Instant::now();
    let snap = gate.snapshot();
    let t = snap.config.timeouts;
    out.lock().await.responded = false;
    let enc = match head.header("encapsulated").map(wire::parse_encapsulated) {
        Some(Ok(e)) if e.head_len > 0 => e,
        _ => {
            answer_error(out, 400, tag).await;
            return None;
        }
    };
    let preview = match head.preview() {
        Ok(p) if p.is_none_or(|n| n <= MAX_PREVIEW) => p,
        _ => {
            answer_error(out, 400, tag).await;
            return None;
        }
    };
    let (http_head, raw) =
        match tokio::time::timeout(t.client_header, wire::read_http_head(&mut rd, enc.head_len))
            .await
        {
            Ok(Ok(x)) => x,
            Ok(Err(WireError::Bad(why))) => {
                tracing::debug!(%peer, why, "bad encapsulated HTTP head");
                answer_error(out, 400, tag).await;
                return None;
            }
            _ => return None,
        };
    let state = Arc::new(BodyState::default());
    let (side, rx) = if enc.body {
        let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
        let h = tokio::spawn(pump(rd, preview, tx, out.clone(), state.clone(), t.idle));
        (ReadSide::Pumped(h), Some(rx))
    } else {
        (ReadSide::Here(rd), None)
    };
    let mut req = http::Request::new(IcapBody::new(rx, &state));
    *req.method_mut() = http_head.method;
    *req.uri_mut() = http_head.uri;
    *req.version_mut() = http_head.version;
    *req.headers_mut() = http_head.headers;
    let request_id = gate.ids.assign(req.headers_mut());
    // The client of the proxy in front (Squid's `icap_send_client_ip on`), else the proxy.
    let client = head
        .header("x-client-ip")
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .map_or(peer, |ip| SocketAddr::new(ip, 0));
    let encapsulated = Encapsulated {
        http_head: raw,
        had_body: enc.body,
        allow_204: head.allows_204(),
    };
    let sink = IcapSink::new(
        out.clone(),
        encapsulated,
        state.clone(),
        tag.to_owned(),
        t.idle,
        snap.config.inspection.max_body_bytes,
    );
    let conn = Conn {
        peer: client,
        local,
    };
    // Who is sending: Squid's `X-Client-Username` when it names a declared client, else its
    // `X-Client-IP` against the clients' networks (SPEC §2 "Behind Squid").
    let identity = snap.clients.identify_icap(
        head.header("x-client-username"),
        head.header("x-client-ip")
            .and_then(|v| v.trim().parse::<IpAddr>().ok()),
    );
    let cx = RequestCx {
        gate,
        snap: &snap,
        conn,
        identity,
        origin: super::route::ORIGIN,
        request_id: &request_id,
    };
    let call = crate::proxy::grpc::Call::of(req.headers());
    let (resp, decision) = route(cx, req, &sink).await;
    // A gRPC-Web call behind Squid gets the gate's answers in gRPC terms too (SPEC §3).
    let resp = crate::proxy::grpc::answer(call.as_ref(), resp);
    gate.metrics
        .observe_exchange(decision.as_str(), started.elapsed(), &resp);
    match sink.answer() {
        Answer::Aborted => {
            if let ReadSide::Pumped(h) = side {
                h.abort();
            }
            return None;
        }
        Answer::Complete => {}
        Answer::NotStarted => {
            let msg = response::http_response(tag, resp).await;
            if !write_all(out, &msg, t.idle).await {
                return None;
            }
        }
    }
    if head.wants_close() {
        return None;
    }
    match side {
        ReadSide::Here(rd) => Some(rd),
        ReadSide::Pumped(h) if state.ended.load(Ordering::Acquire) => h.await.ok().flatten(),
        ReadSide::Pumped(h) => {
            // The body was not read to its end (a refusal before it): close the connection.
            h.abort();
            None
        }
    }
}
