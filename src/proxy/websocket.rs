//! WebSocket to a destination with `websocket = true` (SPEC §2, §3 "WebSocket"): the HTTP/1.1
//! upgrade forwarded (plain, or inside an intercepted `CONNECT`), the upstream's `101` passed
//! back, then every message the client sends held until it is judged — frames parsed with
//! `tungstenite`'s frame codec, unmasked, a fragmented message collected (control frames in
//! between forwarded as they come), a permessage-deflate message inflated for inspection (a
//! copy: the original compressed frames are what is forwarded), inspected as JSON or as text,
//! and reserved in the ledger like one NDJSON record — before its frames are forwarded.
//! A refused message is never forwarded: both sides get close 1008 with the reason code; a
//! message over `max_record_bytes` (inflated) gets 1009; a fragmented message not finished
//! within `idle_seconds` gets 1008. Server messages flow back uninspected. The connection is
//! one request: one audit line when it ends.
//!
//! h2 extended CONNECT (RFC 8441) is not offered: the gate's h2 server does not enable it, so
//! a WebSocket over h2 never reaches here.

use super::budget::{Budget, Charge};
use super::context::RequestCx;
use super::destination::{admit_or_answer, forbidden_summary, judge_into};
use super::enforce::{Batch, Outcome};
use super::gated::{judge_now, Ctx, Summary};
use super::head::inspect_head;
use super::headers::{add_via, strip_hop_by_hop, REQUEST_ID_NAME};
use super::outcome::{finish, refuse_audited};
use super::sink::upstream_error;
use crate::config::{Unreadable as UnreadablePolicy, WebSocketBinary};
use crate::inspect::{Findings, InspectConfig, Unreadable};
use crate::model::shanghai_date;
use crate::policy::{Decision, Reason, Refusal};
use crate::respond::{self, Failure, GateBody, UpstreamFailure};
use bytes::{Buf, Bytes, BytesMut};
use flate2::{Decompress, FlushDecompress};
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

/// Close code: policy violation (a refused message, a message never finished).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: message too big (over `max_record_bytes`, inflated).
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: protocol error (a frame the gate cannot accept).
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Close code: going away (no byte in either direction for `idle_seconds`).
pub const CLOSE_IDLE: u16 = 1001;
/// Close code: try again later (no room in the buffered-bytes budget).
pub const CLOSE_BUSY: u16 = 1013;

/// Whether `req` is an HTTP/1.1 WebSocket opening handshake (RFC 6455 §4.1): `GET` with
/// `Upgrade: websocket` and `Connection: upgrade`.
pub fn is_websocket<B>(req: &Request<B>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    req.version() == Version::HTTP_11
        && req.method() == http::Method::GET
        && has(header::UPGRADE, "websocket")
        && has(header::CONNECTION, "upgrade")
}

/// permessage-deflate as negotiated (RFC 7692): whether it is on, and whether the client
/// resets its compression context after each message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deflate {
    /// The extension was accepted by the server.
    pub on: bool,
    /// `client_no_context_takeover` was negotiated.
    pub no_context_takeover: bool,
}

impl Deflate {
    /// Reads the server's `Sec-WebSocket-Extensions` answer; `None` when it accepts an
    /// extension other than permessage-deflate (the gate could not read the frames).
    pub fn negotiated(headers: &http::HeaderMap) -> Option<Deflate> {
        let mut d = Deflate::default();
        for v in headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS) {
            let v = v.to_str().ok()?;
            for ext in v.split(',').filter(|e| !e.trim().is_empty()) {
                let mut params = ext.split(';').map(str::trim);
                if !params
                    .next()
                    .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
                    || d.on
                {
                    return None;
                }
                d.on = true;
                d.no_context_takeover = params.any(|p| {
                    p.split('=').next().is_some_and(|n| {
                        n.trim().eq_ignore_ascii_case("client_no_context_takeover")
                    })
                });
            }
        }
        Some(d)
    }
}

/// Keeps only permessage-deflate offers in the client's `Sec-WebSocket-Extensions` (another
/// extension could use the reserved bits in ways the gate cannot read).
fn filter_offers(headers: &mut http::HeaderMap) {
    let offers: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| {
            e.split(';')
                .next()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case("permessage-deflate"))
        })
        .map(str::to_owned)
        .collect();
    headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    if !offers.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&offers.join(", ")) {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
        }
    }
}

/// Serves one WebSocket opening handshake to destination `dest_index`: admitted and its head
/// judged like any request, forwarded with its upgrade headers; on the upstream's `101` both
/// connections are relayed by a task that judges every client message, and the audit line is
/// written when the connection ends.
pub(crate) async fn serve(
    cx: RequestCx<'_>,
    dest_index: usize,
    scheme: Scheme,
    authority: Authority,
    mut req: Request<Incoming>,
) -> (Response<GateBody>, Decision) {
    let (gate, snap, request_id) = (cx.gate, cx.snap, cx.request_id);
    let dest = &snap.config.destinations[dest_index];
    let mut audit = cx.audit(&dest.name, req.method().as_str(), req.uri().path());
    audit.origin = "proxy";
    let mut summary = Summary::default();
    if let Err(answer) = admit_or_answer(cx, dest_index, &req, true, &mut summary, &audit).await {
        return answer;
    }
    let now = gate.clock.now();
    let today = shanghai_date(now);
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    let head = inspect_head(gate, snap, dest, &host, &req, request_id, today);
    summary.important_rule.clone_from(&head.important_rule);
    let mut head_batch = head.batch.clone();
    head_batch.apply_outside(head.outside);
    summary.note_batch(&head_batch);
    if !head_batch.is_empty() {
        if let Some(refusal) = judge_into(cx, dest_index, &head_batch, now, &mut summary).await {
            return refuse_audited(gate, snap, refusal, request_id, audit, &summary).await;
        }
    }

    // The upstream request: the client's head with its upgrade headers put back.
    let scheme = if dest.upstream_https {
        Scheme::HTTPS
    } else {
        scheme
    };
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let Ok(uri) = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(pq)
        .build()
    else {
        let f = Failure::BadRequest("the request URL cannot be forwarded");
        return (respond::failure(f, request_id), Decision::Block);
    };
    let mut headers = req.headers().clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    filter_offers(&mut headers);
    add_via(&mut headers);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let mut up = Request::new(Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync());
    *up.method_mut() = http::Method::GET;
    *up.uri_mut() = uri;
    *up.version_mut() = Version::HTTP_11;
    *up.headers_mut() = headers;

    let client_side = hyper::upgrade::on(&mut req);
    let t = snap.config.timeouts;
    let route = &snap.routes[dest_index];
    let answer = tokio::time::timeout(t.response_header, route.client().request(up)).await;
    let mut resp = match answer {
        Err(_) => {
            let r = upstream_error(gate, &dest.name, UpstreamFailure::Timeout, request_id);
            return (r, Decision::Block);
        }
        Ok(Err(e)) if e.is_forbidden() => {
            let refusal = forbidden_summary(&mut summary, &dest.name);
            return refuse_audited(gate, snap, refusal, request_id, audit, &summary).await;
        }
        Ok(Err(e)) => {
            let kind = if e.is_connect_timeout() {
                UpstreamFailure::Timeout
            } else {
                UpstreamFailure::Unreachable
            };
            tracing::warn!(request_id, destination = %dest.name, error = %e, "WebSocket upgrade to the upstream failed");
            return (
                upstream_error(gate, &dest.name, kind, request_id),
                Decision::Block,
            );
        }
        Ok(Ok(r)) => r,
    };
    let deflate = Deflate::negotiated(resp.headers());
    let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upstream_side = hyper::upgrade::on(&mut resp);
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        parts.headers.insert(REQUEST_ID_NAME, v);
    }
    if !upgraded {
        // Not upgraded: the upstream's answer is passed back like any response.
        let decision = finish(gate, &dest.name, audit, snap, &summary).await;
        let body = body.map_err(Into::into).boxed_unsync();
        return (Response::from_parts(parts, body), decision);
    }
    let Some(deflate) = deflate else {
        // An extension the gate cannot read was accepted: nothing is relayed.
        tracing::info!(request_id, destination = %dest.name, "WebSocket extension other than permessage-deflate; refused");
        let refusal = Refusal::new(Reason::Uninspectable, dest.name.clone());
        return refuse_audited(gate, snap, refusal, request_id, audit, &summary).await;
    };
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    // The connection is in flight while the relay runs: the relay keeps its own idle time
    // (no byte in either direction for `idle_seconds`: close 1001), so that a message never
    // finished is closed with 1008 before the listener would cut the connection silently.
    let flight = req
        .extensions()
        .get::<Arc<crate::listen::Activity>>()
        .map(|a| a.request());

    let ctx = Arc::new(Ctx {
        gate: gate.clone(),
        snap: snap.clone(),
        dest: dest_index,
        unreadable: dest.unreadable.unwrap_or(snap.config.inspection.unreadable),
        enforce: !cx.observed(),
        client_observed: snap.clients.observed(cx.identity),
        head,
    });
    let relay = Relay {
        ctx,
        binary: dest.websocket_binary,
        deflate,
        today,
        idle: t.idle,
        max: usize::try_from(snap.config.inspection.max_record_bytes).unwrap_or(usize::MAX),
        sensitive: dest.sensitive,
        summary,
        messages: 0,
        last: Arc::new(LastIo::new()),
    };
    let (g, s, name, rid) = (
        gate.clone(),
        snap.clone(),
        dest.name.clone(),
        request_id.to_owned(),
    );
    tokio::spawn(async move {
        let both = tokio::time::timeout(t.idle, async {
            let c = client_side.await.ok()?;
            let u = upstream_side.await.ok()?;
            Some((c, u))
        })
        .await
        .ok()
        .flatten();
        let Some((c, u)) = both else {
            tracing::debug!(request_id = %rid, "WebSocket upgrade did not complete");
            return;
        };
        let (summary, messages) = relay.run(TokioIo::new(c), TokioIo::new(u)).await;
        drop(flight);
        let mut audit = audit;
        audit.bytes = summary.released;
        audit.messages = Some(messages);
        tracing::debug!(request_id = %rid, messages, "WebSocket connection ended");
        finish(&g, &name, audit, &s, &summary).await;
    });
    let empty = Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync();
    drop(body);
    (Response::from_parts(parts, empty), Decision::Allow)
}

/// How the client→server direction ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client closed its side (after a close frame, or at EOF).
    Client,
    /// The server went away.
    Server,
    /// The gate closes both sides with this code and reason.
    Close(u16, &'static str),
}

/// How long the gate reads (and drops) what a client still sends after the gate closed.
const LINGER: Duration = Duration::from_secs(5);

/// Reads and drops up to `limit` bytes until EOF.
async fn drain<R: AsyncRead + Unpin>(r: &mut R, limit: u64) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut left = limit;
    while left > 0 {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n as u64),
        }
    }
}

/// One relayed WebSocket connection.
struct Relay {
    ctx: Arc<Ctx>,
    binary: WebSocketBinary,
    deflate: Deflate,
    today: time::Date,
    idle: Duration,
    max: usize,
    sensitive: bool,
    summary: Summary,
    messages: u64,
    last: Arc<LastIo>,
}

/// When a byte last moved in either direction.
struct LastIo {
    base: Instant,
    millis: std::sync::atomic::AtomicU64,
}

impl LastIo {
    fn new() -> Self {
        LastIo {
            base: Instant::now(),
            millis: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn at(&self) -> Instant {
        self.base + Duration::from_millis(self.millis.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// A message being collected: its original frames (forwarded once it is judged) and its
/// unmasked payload.
struct Pending {
    frames: Vec<Bytes>,
    payload: BytesMut,
    text: bool,
    compressed: bool,
    deadline: Instant,
    charge: Charge,
    /// Bytes of `frames`.
    held: u64,
}

type Shared<W> = Arc<tokio::sync::Mutex<W>>;

impl Relay {
    /// Relays until either side ends; the summary of what was judged, and how many messages.
    async fn run<C, U>(mut self, client: C, upstream: U) -> (Summary, u64)
    where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut cr, cw) = tokio::io::split(client);
        let (ur, mut uw) = tokio::io::split(upstream);
        let cw: Shared<_> = Arc::new(tokio::sync::Mutex::new(cw));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut down = tokio::spawn(copy_frames(ur, cw.clone(), self.last.clone(), stopped));
        let end = tokio::select! {
            e = self.up(&mut cr, &mut uw) => e,
            _ = &mut down => End::Server,
        };
        match end {
            End::Close(code, reason) => {
                // Both sides closed by the gate. The server's direction stops, at a frame
                // boundary when it can (the writer lock), and hands back its reader: the
                // server's close frame is awaited on it (the closing handshake). Dropping a
                // socket with unread bytes would reset it, and the server would lose what it
                // had received but not yet read — messages already judged and counted.
                let _ = stop.send(());
                let (ur, boundary) = match (&mut down).await {
                    Ok((ur, boundary)) => (Some(ur), boundary),
                    Err(_) => (None, false),
                };
                let _ = uw.write_all(&close_frame(code, reason, true)).await;
                let _ = uw.flush().await;
                {
                    let mut w = cw.lock().await;
                    if boundary {
                        let _ = w.write_all(&close_frame(code, reason, false)).await;
                    }
                    let _ = w.shutdown().await;
                }
                // Both peers' remaining bytes are read and dropped until they close (bounded),
                // so that neither close frame is lost to a reset.
                let linger = self.idle.min(LINGER);
                let limit = self.max as u64 + 65536;
                let upstream_done = async {
                    if let Some(mut ur) = ur {
                        drain(&mut ur, limit).await;
                    }
                };
                let _ = tokio::time::timeout(
                    linger,
                    futures_util::future::join(upstream_done, drain(&mut cr, limit)),
                )
                .await;
                let _ = uw.shutdown().await;
            }
            End::Client => {
                let _ = uw.shutdown().await;
                let _ = tokio::time::timeout(self.idle, &mut down).await;
                down.abort();
            }
            End::Server => {
                let _ = cw.lock().await.shutdown().await;
            }
        }
        (self.summary, self.messages)
    }

    /// The client→server direction: frames read, messages judged before they go on.
    async fn up<R, W>(&mut self, cr: &mut R, uw: &mut W) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let mut pending: Option<Pending> = None;
        let mut inflater = Decompress::new(false);
        // The payload of one frame is read whole; a data frame is bounded by the message
        // limit (compressed data may exceed its inflated size by a little).
        let frame_limit = self.max.saturating_add(self.max / 64 + 1024);
        loop {
            let message = pending.as_ref().map(|p| p.deadline);
            let (hdr, hlen, len) = loop {
                let mut cur = std::io::Cursor::new(&buf[..]);
                match FrameHeader::parse(&mut cur) {
                    Ok(Some((h, len))) => break (h, cur.position() as usize, len),
                    Ok(None) => {}
                    Err(_) => return End::Close(CLOSE_PROTOCOL, "protocol_error"),
                }
                if let Some(end) = self.read(cr, &mut buf, message).await {
                    return end;
                }
            };
            let control = matches!(hdr.opcode, OpCode::Control(_));
            if hdr.mask.is_none()
                || hdr.rsv2
                || hdr.rsv3
                || (hdr.rsv1 && (!self.deflate.on || control))
                || (control && (len > 125 || !hdr.is_final))
            {
                return End::Close(CLOSE_PROTOCOL, "protocol_error");
            }
            let Ok(len) = usize::try_from(len) else {
                return End::Close(CLOSE_TOO_BIG, "message_too_big");
            };
            let held = pending.as_ref().map_or(0, |p| p.payload.len());
            if !control && held.saturating_add(len) > frame_limit {
                return End::Close(CLOSE_TOO_BIG, "message_too_big");
            }
            let total = hlen + len;
            if let Some(p) = pending.as_mut() {
                // The frame is held until its message is judged (its bytes and its unmasked
                // copy): charged before it is read.
                let want = 2 * (p.held + total as u64);
                if !charge(&self.ctx.gate.budget, &mut p.charge, want, self.idle).await {
                    return End::Close(CLOSE_BUSY, "gate_busy");
                }
            }
            buf.reserve(total.saturating_sub(buf.len()));
            while buf.len() < total {
                if let Some(end) = self.read(cr, &mut buf, message).await {
                    return end;
                }
            }
            let raw = buf.split_to(total).freeze();
            match hdr.opcode {
                OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                    return End::Close(CLOSE_PROTOCOL, "protocol_error");
                }
                OpCode::Control(c) => {
                    // Ping, pong and close go on as they come (at most 131 bytes each).
                    if uw.write_all(&raw).await.is_err() || uw.flush().await.is_err() {
                        return End::Server;
                    }
                    self.summary.released += raw.len() as u64;
                    if c == Control::Close {
                        return End::Client;
                    }
                }
                OpCode::Data(d) => {
                    let first = !matches!(d, Data::Continue);
                    if first == pending.is_some() {
                        return End::Close(CLOSE_PROTOCOL, "protocol_error");
                    }
                    let p = match pending.as_mut() {
                        Some(p) => p,
                        None => {
                            let mut held = Charge::default();
                            let want = 2 * total as u64;
                            if !charge(&self.ctx.gate.budget, &mut held, want, self.idle).await {
                                return End::Close(CLOSE_BUSY, "gate_busy");
                            }
                            pending.insert(Pending {
                                frames: Vec::new(),
                                payload: BytesMut::new(),
                                text: matches!(d, Data::Text),
                                compressed: hdr.rsv1,
                                deadline: Instant::now() + self.idle,
                                charge: held,
                                held: 0,
                            })
                        }
                    };
                    if !first && hdr.rsv1 {
                        return End::Close(CLOSE_PROTOCOL, "protocol_error");
                    }
                    let start = p.payload.len();
                    p.payload.extend_from_slice(&raw[hlen..]);
                    if let Some(mask) = hdr.mask {
                        unmask(&mut p.payload[start..], mask);
                    }
                    p.held += raw.len() as u64;
                    p.frames.push(raw);
                    if hdr.is_final {
                        let Some(p) = pending.take() else {
                            continue;
                        };
                        if let Some(end) = self.message(p, &mut inflater, uw).await {
                            return end;
                        }
                    }
                }
            }
        }
    }

    /// Reads more of the client's bytes: until `message` (the deadline of a message being
    /// collected: 1008), or until no byte moved either way for `idle_seconds` (1001).
    async fn read<R: AsyncRead + Unpin>(
        &self,
        cr: &mut R,
        buf: &mut BytesMut,
        message: Option<Instant>,
    ) -> Option<End> {
        loop {
            let idle = self.last.at() + self.idle;
            let deadline = message.map_or(idle, |m| m.min(idle));
            match read_more(cr, buf, Some(deadline)).await {
                Read::Data => {
                    self.last.touch();
                    return None;
                }
                Read::Eof => return Some(End::Client),
                Read::Timeout => {
                    let now = Instant::now();
                    let idle = self.last.at() + self.idle <= now;
                    // A message still open when either timer runs out was never finished
                    // (SPEC §9: 1008). Its first frame moved the connection's idle time, so
                    // the two deadlines are the same instant give or take the idle time's
                    // millisecond rounding: which fires first is no reason to say 1001.
                    if message.is_some_and(|m| m <= now || idle) {
                        return Some(End::Close(CLOSE_POLICY, "message_not_finished"));
                    }
                    if idle {
                        return Some(End::Close(CLOSE_IDLE, "idle"));
                    }
                }
            }
        }
    }

    /// Judges one complete message and forwards its frames when it passes; `Some` ends the
    /// connection.
    async fn message<W: AsyncWrite + Unpin>(
        &mut self,
        mut p: Pending,
        inflater: &mut Decompress,
        uw: &mut W,
    ) -> Option<End> {
        self.messages += 1;
        let plain = if p.compressed {
            let budget = &self.ctx.gate.budget;
            // The inflated copy is held too: charged up to the limit before inflating.
            let room = (self.max as u64).min(p.payload.len() as u64 * 64 + 1024);
            let want = p.charge.bytes() + room;
            if !charge(budget, &mut p.charge, want, self.idle).await {
                return Some(End::Close(CLOSE_BUSY, "gate_busy"));
            }
            let out = inflate(inflater, &p.payload, self.max);
            if self.deflate.no_context_takeover {
                inflater.reset(false);
            }
            match out {
                Inflated::Ok(v) => Bytes::from(v),
                Inflated::TooBig => return Some(End::Close(CLOSE_TOO_BIG, "message_too_big")),
                Inflated::Corrupt => return Some(End::Close(CLOSE_PROTOCOL, "protocol_error")),
            }
        } else {
            std::mem::take(&mut p.payload).freeze()
        };
        if plain.len() > self.max {
            return Some(End::Close(CLOSE_TOO_BIG, "message_too_big"));
        }
        let cfg: &InspectConfig = &self.ctx.snap.inspect;
        let found = judge_message(cfg, p.text, self.binary, &plain, self.today, self.sensitive);
        drop(plain);
        match found {
            Ok(f) => {
                let batch = self.batch(&f);
                self.summary.note_batch(&batch);
                if !batch.is_empty() {
                    let verdict = judge_now(&self.ctx, &batch).await;
                    self.summary.absorb(&verdict);
                    if matches!(verdict.outcome, Outcome::Block | Outcome::Unavailable) {
                        let reason = verdict
                            .refusal
                            .as_ref()
                            .map_or(verdict.reason, |r| r.reason);
                        return Some(End::Close(CLOSE_POLICY, reason.as_str()));
                    }
                }
            }
            Err(e) => {
                tracing::info!(kind = e.kind(), "WebSocket message is unreadable");
                if self.ctx.unreadable == UnreadablePolicy::Allow {
                    self.summary.unreadable_allowed = true;
                } else {
                    let name = &self.ctx.snap.config.destinations[self.ctx.dest].name;
                    let refusal = Refusal::new(Reason::UnreadableBody, name.clone());
                    if self.ctx.enforce {
                        self.summary.refusal = Some(refusal);
                        self.summary.observed = false;
                        return Some(End::Close(CLOSE_POLICY, Reason::UnreadableBody.as_str()));
                    }
                    if self.summary.refusal.is_none() {
                        self.summary.refusal = Some(refusal);
                        self.summary.observed = true;
                    }
                }
            }
        }
        for f in &p.frames {
            if uw.write_all(f).await.is_err() {
                return Some(End::Server);
            }
            self.summary.released += f.len() as u64;
        }
        if uw.flush().await.is_err() {
            return Some(End::Server);
        }
        None
    }

    /// The ledger batch of one message: its subjects, the head's outside categories and the
    /// message's own, and the important-data rule of the head or the message's fields.
    fn batch(&mut self, f: &Findings) -> Batch {
        let gate = &self.ctx.gate;
        let mut batch = Batch::default();
        for s in f.subjects() {
            batch.add_owned(&gate.hasher, &s);
        }
        batch.apply_outside(self.ctx.head.outside.union(f.outside()));
        if self.summary.important_rule.is_none() {
            self.summary.important_rule = self
                .ctx
                .head
                .rule_for_fields(f.watched_seen.iter().map(String::as_str));
        }
        batch.important = self.summary.important_rule.is_some();
        batch
    }
}

/// What a message carries (SPEC §3 "WebSocket"): a text message as JSON when it is JSON (a
/// record, or an array of records), otherwise as text for the detectors; a binary message is
/// one protobuf message read without a schema with `websocket_binary = "protobuf"`, otherwise
/// unreadable.
///
/// # Errors
/// The message is unreadable.
pub fn judge_message(
    cfg: &InspectConfig,
    text: bool,
    binary: WebSocketBinary,
    payload: &[u8],
    today: time::Date,
    sensitive: bool,
) -> Result<Findings, Unreadable> {
    if !text {
        return match binary {
            // One protobuf message, read without a schema (SPEC names no message type for a
            // WebSocket destination).
            WebSocketBinary::Protobuf => crate::inspect::inspect_bytes(
                cfg,
                Some("application/x-protobuf"),
                None,
                payload,
                today,
                sensitive,
            ),
            WebSocketBinary::Unreadable => Err(Unreadable::UnknownContentType),
        };
    }
    match crate::inspect::inspect_bytes(
        cfg,
        Some("application/json"),
        None,
        payload,
        today,
        sensitive,
    ) {
        Ok(f) => Ok(f),
        // Not JSON: text for the detectors.
        Err(Unreadable::Malformed { .. } | Unreadable::Truncated { .. }) => {
            match std::str::from_utf8(payload) {
                Ok(t) => Ok(crate::inspect::inspect_text(cfg, t, today, sensitive)),
                Err(e) => Err(Unreadable::InvalidUtf8 {
                    offset: e.valid_up_to() as u64,
                }),
            }
        }
        Err(e) => Err(e),
    }
}

/// What inflating a message gave.
pub enum Inflated {
    /// The message, inflated.
    Ok(Vec<u8>),
    /// Larger than the limit.
    TooBig,
    /// Not valid deflate data.
    Corrupt,
}

/// Inflates one permessage-deflate message (RFC 7692 §7.2.2: the payload plus `00 00 ff ff`)
/// with the connection's context, up to `max` bytes.
pub fn inflate(d: &mut Decompress, payload: &[u8], max: usize) -> Inflated {
    const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
    let mut out: Vec<u8> = Vec::with_capacity(payload.len().saturating_mul(4).min(max) + 64);
    for mut input in [payload, &TAIL[..]] {
        loop {
            if out.len() == out.capacity() {
                if out.len() > max {
                    return Inflated::TooBig;
                }
                out.reserve((out.len() + 1).min(max + 1 - out.len().min(max)).max(64));
            }
            let (in0, out0) = (d.total_in(), d.total_out());
            if d.decompress_vec(input, &mut out, FlushDecompress::Sync)
                .is_err()
            {
                return Inflated::Corrupt;
            }
            let used = usize::try_from(d.total_in() - in0).unwrap_or(usize::MAX);
            let made = d.total_out() - out0;
            input = &input[used.min(input.len())..];
            if out.len() > max {
                return Inflated::TooBig;
            }
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if used == 0 && made == 0 && out.len() < out.capacity() {
                // No progress with room to write: the data is truncated or corrupt.
                return Inflated::Corrupt;
            }
        }
    }
    Inflated::Ok(out)
}

/// Unmasks (or masks) a payload in place (RFC 6455 §5.3).
fn unmask(buf: &mut [u8], mask: [u8; 4]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// A close frame with `code` and `reason` (at most 123 bytes), masked when it goes to the
/// server.
pub fn close_frame(code: u16, reason: &str, masked: bool) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    let r = reason.as_bytes();
    payload.extend_from_slice(&r[..r.len().min(123)]);
    let mask = masked.then(|| {
        let mut m = [0u8; 4];
        let _ = getrandom::fill(&mut m);
        m
    });
    let header = FrameHeader {
        is_final: true,
        opcode: OpCode::Control(Control::Close),
        mask,
        ..FrameHeader::default()
    };
    let mut out = Vec::with_capacity(payload.len() + 8);
    let _ = Frame::from_payload(header, Bytes::from(payload)).format(&mut out);
    out
}

enum Read {
    Data,
    Eof,
    Timeout,
}

/// Reads more bytes into `buf`, until `deadline` if there is one.
async fn read_more<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    deadline: Option<Instant>,
) -> Read {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    let n = match deadline {
        Some(d) => match tokio::time::timeout_at(d, r.read_buf(buf)).await {
            Err(_) => return Read::Timeout,
            Ok(n) => n,
        },
        None => r.read_buf(buf).await,
    };
    match n {
        Ok(0) | Err(_) => Read::Eof,
        Ok(_) => Read::Data,
    }
}

/// Grows `c` to cover `want` bytes, waiting up to `wait` for room.
async fn charge(budget: &Budget, c: &mut Charge, want: u64, wait: Duration) -> bool {
    let have = c.bytes();
    if want <= have {
        return true;
    }
    let more = want - have;
    if budget.try_grow(c, more) {
        return true;
    }
    match tokio::time::timeout(wait, budget.grow(more)).await {
        Ok(Some(p)) => {
            Budget::add(c, p);
            true
        }
        _ => false,
    }
}

/// The server→client direction: frames copied whole, uninspected, so that the gate's own
/// close frame can only come between two frames. On `stop` it returns the reader and whether
/// it stopped between two frames (the gate may then write its close frame to the client).
async fn copy_frames<R, W>(
    mut ur: R,
    cw: Shared<W>,
    last: Arc<LastIo>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> (R, bool)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        let total = loop {
            let mut cur = std::io::Cursor::new(&buf[..]);
            match FrameHeader::parse(&mut cur) {
                Ok(Some((_, len))) => {
                    break (cur.position()).saturating_add(len);
                }
                Ok(None) => {}
                Err(_) => {
                    let _ = cw.lock().await.shutdown().await;
                    return (ur, false);
                }
            }
            let read = tokio::select! {
                r = read_more(&mut ur, &mut buf, None) => r,
                _ = &mut stop => return (ur, true),
            };
            if !matches!(read, Read::Data) {
                let _ = cw.lock().await.shutdown().await;
                return (ur, false);
            }
            last.touch();
        };
        let mut left = total;
        let mut w = cw.lock().await;
        while left > 0 {
            if buf.is_empty() {
                let read = tokio::select! {
                    r = read_more(&mut ur, &mut buf, None) => r,
                    _ = &mut stop => return (ur, false),
                };
                if !matches!(read, Read::Data) {
                    let _ = w.shutdown().await;
                    return (ur, false);
                }
                last.touch();
            }
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            if w.write_all(&buf[..n]).await.is_err() {
                return (ur, false);
            }
            buf.advance(n);
            left -= n as u64;
        }
        if w.flush().await.is_err() {
            return (ur, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deflate_negotiation_is_read() {
        let mut h = http::HeaderMap::new();
        assert_eq!(Deflate::negotiated(&h), Some(Deflate::default()));
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("permessage-deflate; client_no_context_takeover"),
        );
        assert_eq!(
            Deflate::negotiated(&h),
            Some(Deflate {
                on: true,
                no_context_takeover: true
            })
        );
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("x-webkit-deflate-frame"),
        );
        assert_eq!(Deflate::negotiated(&h), None);
    }

    #[test]
    fn inflate_keeps_context_and_bounds_size() {
        use flate2::{Compress, Compression, FlushCompress};
        let mut c = Compress::new(Compression::default(), false);
        let mut d = Decompress::new(false);
        for _ in 0..3 {
            let msg = br#"{"user_id":"u1","phone":"13800138000"}"#;
            let mut out = Vec::with_capacity(256);
            c.compress_vec(msg, &mut out, FlushCompress::Sync).unwrap();
            assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
            out.truncate(out.len() - 4);
            match inflate(&mut d, &out, 1024) {
                Inflated::Ok(v) => assert_eq!(v, msg),
                _ => panic!("inflate failed"),
            }
        }
        let mut out = Vec::with_capacity(4096);
        c.compress_vec(&[b'a'; 4000], &mut out, FlushCompress::Sync)
            .unwrap();
        out.truncate(out.len() - 4);
        assert!(matches!(inflate(&mut d, &out, 1000), Inflated::TooBig));
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        let f = close_frame(1008, "approval_volume_exceeded", false);
        assert_eq!(f[0], 0x88);
        assert_eq!(&f[2..4], &1008u16.to_be_bytes());
        assert_eq!(&f[4..], b"approval_volume_exceeded");
        let m = close_frame(1009, "message_too_big", true);
        assert_eq!(m[1] & 0x80, 0x80);
    }
}
