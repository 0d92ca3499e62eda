//! gRPC calls on the request path (SPEC §3 "gRPC and protobuf"): which requests are gRPC or
//! gRPC-Web calls ([`Call`]), the gate's own answers in gRPC terms ([`answer`]: HTTP 200,
//! `grpc-status`, `grpc-message` = the reason code, trailers-only), the end of a call the gate
//! cuts after the upstream's answer started ([`TailBody`]: the status as trailers, or as a
//! gRPC-Web trailer frame), and the count of a call's messages for its audit line
//! ([`Counted`]). The messages themselves are de-framed and judged by the scanner
//! (`crate::inspect`), each before its bytes are released upstream ([`super::gated`]); this
//! module only frames what the gate says.

use super::body::RequestProgress;
use super::gated::{is_busy, refusal_now, Shared};
use crate::respond::{status_of, Answered, BoxError, GateBody};
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// The gRPC status codes the gate answers with.
pub mod code {
    /// `PERMISSION_DENIED`: a refusal (451, 403).
    pub const PERMISSION_DENIED: u8 = 7;
    /// `UNAUTHENTICATED`: 407.
    pub const UNAUTHENTICATED: u8 = 16;
    /// `UNAVAILABLE`: 503 (ledger, budget), 502, 421.
    pub const UNAVAILABLE: u8 = 14;
    /// `DEADLINE_EXCEEDED`: 504 and 408, an idle or overdue exchange.
    pub const DEADLINE_EXCEEDED: u8 = 4;
    /// `RESOURCE_EXHAUSTED`: 413.
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    /// `INTERNAL`: 400 (a request the gate cannot read as HTTP).
    pub const INTERNAL: u8 = 13;
}

/// How a call is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `application/grpc`, `application/grpc+…`: status in HTTP trailers.
    Grpc,
    /// `application/grpc-web`, `application/grpc-web+…`: status in a trailer frame (flag
    /// 0x80) at the end of the body, or in the headers when the answer is trailers-only.
    Web,
    /// `application/grpc-web-text` (base64 of the gRPC-Web body): answered trailers-only;
    /// its messages are not read (unreadable).
    WebText,
}

/// A gRPC or gRPC-Web call: its framing and the media type the gate answers it with.
#[derive(Debug, Clone)]
pub struct Call {
    /// How the call is framed.
    pub kind: Kind,
    content_type: HeaderValue,
}

impl Call {
    /// The call a request is, by its `Content-Type` (SPEC §3: `application/grpc*`).
    pub fn of(h: &HeaderMap) -> Option<Call> {
        const BASE: &str = "application/grpc";
        let v = h.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let essence = v.split(';').next().unwrap_or("").trim();
        // Most requests are no gRPC call: decided without allocating.
        if essence.len() < BASE.len() || !essence[..BASE.len()].eq_ignore_ascii_case(BASE) {
            return None;
        }
        let rest = &essence[BASE.len()..];
        let sub = |suffix: &str| {
            rest.len() >= suffix.len()
                && rest[..suffix.len()].eq_ignore_ascii_case(suffix)
                && (rest.len() == suffix.len() || rest[suffix.len()..].starts_with('+'))
        };
        let kind = if sub("-web-text") {
            Kind::WebText
        } else if sub("-web") {
            Kind::Web
        } else if sub("") {
            Kind::Grpc
        } else {
            return None;
        };
        let content_type = match kind {
            Kind::Grpc => HeaderValue::from_static("application/grpc"),
            Kind::Web | Kind::WebText => HeaderValue::from_str(&essence.to_ascii_lowercase())
                .unwrap_or(HeaderValue::from_static("application/grpc-web")),
        };
        Some(Call { kind, content_type })
    }
}

/// The gRPC status for an HTTP status the gate answers with (SPEC §3: 407 → 16, 503 → 14,
/// every other refusal → 7; the gate's other failures as gRPC maps HTTP statuses).
pub fn code_for(status: StatusCode) -> u8 {
    match status.as_u16() {
        407 => code::UNAUTHENTICATED,
        502 | 503 | 421 => code::UNAVAILABLE,
        504 | 408 => code::DEADLINE_EXCEEDED,
        413 => code::RESOURCE_EXHAUSTED,
        400 => code::INTERNAL,
        _ => code::PERMISSION_DENIED,
    }
}

/// A gate answer (a response marked [`Answered`]) to a gRPC call, in gRPC terms: HTTP 200 with
/// the call's media type, `grpc-status` and `grpc-message` (the reason code) in the headers
/// and no body — trailers-only, as nothing of the upstream's answer was sent. The gate's other
/// headers (`x-transfer-gate-reason`, `x-request-id`, `Link`, `Retry-After`) stay. Any other
/// response, or a request that is no gRPC call, is returned as it is.
pub fn answer(call: Option<&Call>, resp: Response<GateBody>) -> Response<GateBody> {
    let (Some(call), Some(&Answered(reason))) = (call, resp.extensions().get::<Answered>()) else {
        return resp;
    };
    let (mut parts, _json) = resp.into_parts();
    let status = code_for(parts.status);
    parts.status = StatusCode::OK;
    let h = &mut parts.headers;
    h.remove(header::CONTENT_LENGTH);
    h.insert(header::CONTENT_TYPE, call.content_type.clone());
    h.insert("grpc-status", status_value(status));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(reason)) {
        h.insert("grpc-message", v);
    }
    Response::from_parts(parts, crate::respond::empty())
}

fn status_value(code: u8) -> HeaderValue {
    HeaderValue::from_str(&code.to_string()).unwrap_or(HeaderValue::from_static("2"))
}

/// `grpc-message` encoding (the gRPC HTTP/2 protocol): bytes outside printable ASCII, and
/// `%`, percent-encoded.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The upstream's answer to a gRPC call whose request body the gate gates message by message:
/// passed on frame by frame (data and trailers alike), but when it fails — the gate refused a
/// message and reset the upstream's stream, or an exchange timer ran out — the call ends with
/// a gRPC status instead of a broken stream: HTTP trailers for gRPC, a trailer frame (flag
/// 0x80) for gRPC-Web.
pub struct TailBody {
    inner: GateBody,
    kind: Kind,
    shared: Option<Shared>,
    /// The request body's progress (from the upstream's response, when it went through the
    /// proxy's sink): whether the client stopped sending.
    progress: Option<RequestProgress>,
    done: bool,
}

impl TailBody {
    /// Wraps the upstream's response body of `call`; `shared` is the gated request body's
    /// summary (where a refusal is recorded).
    pub fn wrap(
        call: &Call,
        shared: Option<Shared>,
        resp: Response<GateBody>,
    ) -> Response<GateBody> {
        let kind = call.kind;
        let progress = resp.extensions().get::<RequestProgress>().cloned();
        resp.map(|inner| {
            TailBody {
                inner,
                kind,
                shared,
                progress,
                done: false,
            }
            .boxed_unsync()
        })
    }

    /// The status and message for the failure `e` of the upstream's body.
    fn status_for(&self, e: &BoxError) -> (u8, &'static str) {
        if let Some(r) = self.shared.as_ref().and_then(refusal_now) {
            return (code_for(status_of(r.reason)), r.reason.as_str());
        }
        if self.shared.as_ref().is_some_and(is_busy) {
            return (code::UNAVAILABLE, "gate_busy");
        }
        // The request body's idle timer cut the call because the client sent nothing (SPEC §9
        // "slow client"); the upstream's stream was reset for it.
        if self
            .progress
            .as_ref()
            .is_some_and(RequestProgress::client_stalled)
        {
            return (code_for(StatusCode::REQUEST_TIMEOUT), "client_timeout");
        }
        match e.downcast_ref::<super::body::BodyError>() {
            Some(super::body::BodyError::Idle | super::body::BodyError::Deadline) => {
                (code::DEADLINE_EXCEEDED, "upstream_timeout")
            }
            _ => (code::UNAVAILABLE, "upstream_unreachable"),
        }
    }
}

/// The trailer frame of a gRPC-Web body (flag 0x80, length, the trailers as HTTP/1 header
/// lines).
fn web_trailer_frame(status: u8, message: &str) -> Bytes {
    let block = format!(
        "grpc-status: {status}\r\ngrpc-message: {}\r\n",
        percent_encode(message)
    );
    let mut b = BytesMut::with_capacity(5 + block.len());
    b.put_u8(0x80);
    b.put_u32(u32::try_from(block.len()).unwrap_or(u32::MAX));
    b.put_slice(block.as_bytes());
    b.freeze()
}

impl Body for TailBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                let (status, message) = this.status_for(&e);
                tracing::info!(status, message, "gRPC call ended by the gate");
                let frame = match this.kind {
                    Kind::Grpc => {
                        let mut t = HeaderMap::new();
                        t.insert("grpc-status", status_value(status));
                        if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
                            t.insert("grpc-message", v);
                        }
                        Frame::trailers(t)
                    }
                    Kind::Web | Kind::WebText => Frame::data(web_trailer_frame(status, message)),
                };
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // A trailer frame may be added: no exact length.
        let mut h = SizeHint::new();
        h.set_lower(self.inner.size_hint().lower());
        h
    }
}

/// A request body passed through while its gRPC messages are counted (each one whose bytes
/// all arrived), for the call's audit line (`messages`).
pub struct Counted<B> {
    inner: B,
    counter: Option<FrameCounter>,
    count: Arc<AtomicU64>,
}

impl<B> Counted<B> {
    /// Counts the messages of `inner` into `count` when `on` (a gRPC or gRPC-Web call).
    pub fn new(inner: B, on: bool, count: Arc<AtomicU64>) -> Self {
        Counted {
            inner,
            counter: on.then(FrameCounter::default),
            count,
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(f))), Some(c)) = (&polled, this.counter.as_mut()) {
            if let Some(d) = f.data_ref() {
                let n = c.feed(d);
                if n > 0 {
                    this.count.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Walks gRPC length prefixes (1 flag byte, 4 bytes big-endian length) over a byte stream.
#[derive(Debug, Default, Clone)]
pub struct FrameCounter {
    head: [u8; 5],
    have: usize,
    left: u64,
    in_message: bool,
}

impl FrameCounter {
    /// Feeds the next bytes; how many messages completed in them.
    pub fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut done = 0;
        loop {
            if self.in_message {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.left -= n as u64;
                data = &data[n..];
                if self.left > 0 {
                    return done;
                }
                self.in_message = false;
                done += 1;
            }
            if data.is_empty() {
                return done;
            }
            let n = (5 - self.have).min(data.len());
            self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < 5 {
                return done;
            }
            self.have = 0;
            self.left = u64::from(u32::from_be_bytes([
                self.head[1],
                self.head[2],
                self.head[3],
                self.head[4],
            ]));
            self.in_message = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Reason, Refusal};

    fn ct(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn calls_by_media_type() {
        assert_eq!(Call::of(&ct("application/grpc")).unwrap().kind, Kind::Grpc);
        assert_eq!(
            Call::of(&ct("Application/GRPC+proto")).unwrap().kind,
            Kind::Grpc
        );
        assert_eq!(
            Call::of(&ct("application/grpc-web")).unwrap().kind,
            Kind::Web
        );
        let web = Call::of(&ct("application/grpc-web+proto; charset=x")).unwrap();
        assert_eq!(web.kind, Kind::Web);
        assert_eq!(web.content_type, "application/grpc-web+proto");
        assert_eq!(
            Call::of(&ct("application/grpc-web-text")).unwrap().kind,
            Kind::WebText
        );
        assert!(Call::of(&ct("application/grpcx")).is_none());
        assert!(Call::of(&ct("application/json")).is_none());
        assert!(Call::of(&HeaderMap::new()).is_none());
    }

    #[test]
    fn statuses_follow_the_spec() {
        assert_eq!(code_for(StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS), 7);
        assert_eq!(code_for(StatusCode::FORBIDDEN), 7);
        assert_eq!(code_for(StatusCode::PROXY_AUTHENTICATION_REQUIRED), 16);
        assert_eq!(code_for(StatusCode::SERVICE_UNAVAILABLE), 14);
        assert_eq!(code_for(StatusCode::GATEWAY_TIMEOUT), 4);
        assert_eq!(code_for(StatusCode::REQUEST_TIMEOUT), 4);
        assert_eq!(percent_encode("a_b c%\n"), "a_b c%25%0A");
    }

    #[tokio::test]
    async fn a_refusal_becomes_trailers_only() {
        let r = Refusal::new(Reason::ApprovalRequired, "eu");
        let resp = crate::respond::blocked(&r, "rid", None);
        let call = Call::of(&ct("application/grpc")).unwrap();
        let resp = answer(Some(&call), resp);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert_eq!(resp.headers()["grpc-status"], "7");
        assert_eq!(resp.headers()["grpc-message"], "approval_required");
        assert_eq!(
            resp.headers()["x-transfer-gate-reason"],
            "approval_required"
        );
        assert!(resp.body().is_end_stream());
        // No gRPC call: unchanged.
        let resp = answer(None, crate::respond::blocked(&r, "rid", None));
        assert_eq!(resp.status(), 451);
    }

    #[tokio::test]
    async fn a_cut_web_call_ends_with_a_trailer_frame() {
        let shared: Shared = Arc::default();
        shared.lock().unwrap().refusal = Some(Refusal::new(Reason::UnreadableBody, "eu"));
        let failing = http_body_util::StreamBody::new(futures_util::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"\x00\x00\x00\x00\x00"))),
            Err::<Frame<Bytes>, BoxError>("reset".into()),
        ]));
        let resp = Response::new(failing.boxed_unsync());
        let call = Call::of(&ct("application/grpc-web")).unwrap();
        let body = TailBody::wrap(&call, Some(shared.clone()), resp).into_body();
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..5], b"\x00\x00\x00\x00\x00");
        assert_eq!(out[5], 0x80);
        let text = std::str::from_utf8(&out[10..]).unwrap();
        assert_eq!(text, "grpc-status: 7\r\ngrpc-message: unreadable_body\r\n");
        // gRPC: trailers.
        let failing = http_body_util::StreamBody::new(futures_util::stream::iter(vec![Err::<
            Frame<Bytes>,
            BoxError,
        >(
            "reset".into(),
        )]));
        let call = Call::of(&ct("application/grpc")).unwrap();
        let body =
            TailBody::wrap(&call, Some(shared), Response::new(failing.boxed_unsync())).into_body();
        let c = body.collect().await.unwrap();
        let t = c.trailers().unwrap();
        assert_eq!(t["grpc-status"], "7");
        assert_eq!(t["grpc-message"], "unreadable_body");
    }

    #[test]
    fn frames_are_counted_over_any_split() {
        let mut body = Vec::new();
        for m in [&b""[..], b"abc", &[7u8; 300][..]] {
            body.push(0);
            body.extend_from_slice(&(m.len() as u32).to_be_bytes());
            body.extend_from_slice(m);
        }
        for split in 1..body.len() {
            let mut c = FrameCounter::default();
            let n: u64 = body.chunks(split).map(|ch| c.feed(ch)).sum();
            assert_eq!(n, 3, "split {split}");
        }
        // A message not finished is not counted.
        let mut c = FrameCounter::default();
        assert_eq!(c.feed(&body[..body.len() - 1]), 2);
    }
}
