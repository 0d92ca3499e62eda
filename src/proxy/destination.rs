//! The destination phase: the path every request to a registered destination takes, from the
//! proxy listener, from inside an intercepted `CONNECT` and from the ICAP listener —
//! refuse what cannot be inspected → inspect the head → charge the buffered-bytes budget →
//! read the body whole and judge it, or gate it record by record while it streams → send to
//! the sink → count and audit the outcome.

use super::budget::{Budget, Charge};
use super::context::RequestCx;
use super::enforce::{self, Batch, Outcome};
use super::gated::{self, refusal_now, Ctx, GatedBody, Shared, Summary};
use super::head::{inspect_head, Head};
use super::headers::wants_upgrade;
use super::outcome::{finish, refuse_audited};
use super::sink::{Forbidden, SendCtx, Sink, Upstream};
use super::{Gate, Snapshot};
use crate::audit::AuditRecord;
use crate::config::Unreadable;
use crate::inspect::{decoder_cost, Coding, Scanner, Unreadable as Unread, WholeBody};
use crate::model::shanghai_date;
use crate::policy::{Decision, Reason, Refusal};
use crate::respond::{self, Failure, GateBody};
use http::uri::{Authority, Scheme};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::SystemTime;

/// Handles one request to the registered destination `dest_index` (of `snap`): the path every
/// request to a destination takes, from a plain-HTTP client ([`super::route`]) and for each inner
/// request of an intercepted `CONNECT` (`proxy::intercept`, scheme `https`, authority the
/// `CONNECT` target). Steps: refuse what cannot be inspected → inspect the head (query,
/// subject headers, important-data paths) → a body up to `atomic_body_bytes` is read whole and
/// judged with the head, all or nothing; a larger or open-ended body is judged record by record
/// while it streams ([`super::gated`]) → forward → audit and count the decision.
pub(crate) async fn serve(
    cx: RequestCx<'_>,
    dest_index: usize,
    scheme: Scheme,
    authority: Authority,
    req: Request<Incoming>,
) -> (Response<GateBody>, Decision) {
    if cx.snap.config.destinations[dest_index].websocket && super::websocket::is_websocket(&req) {
        return super::websocket::serve(cx, dest_index, scheme, authority, req).await;
    }
    let host = authority.host().to_owned();
    let sink = Upstream { scheme, authority };
    serve_with(cx, dest_index, &host, req, &sink).await
}

/// [`serve`] for any request body, sending what the gate releases to `sink` (the upstream
/// for the proxy listener, the ICAP client for the ICAP listener). `host` is the host the
/// request is for (its labels are inspected). The steps, each a function below:
/// [`admit`] (allowlist, upgrade, declared size) → [`inspect_head`] → [`charge_decoder`]
/// (the budget) → [`serve_whole`] (a body up to `atomic_body_bytes`, judged all or nothing)
/// or [`serve_streamed`] (judged record by record while it streams) → [`finish`].
pub(crate) async fn serve_with<B, S>(
    cx: RequestCx<'_>,
    dest_index: usize,
    host: &str,
    req: Request<B>,
    sink: &S,
) -> (Response<GateBody>, Decision)
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<crate::respond::BoxError>,
    S: Sink,
{
    let (gate, snap, request_id) = (cx.gate, cx.snap, cx.request_id);
    let dest = &snap.config.destinations[dest_index];
    let mut audit = cx.audit(&dest.name, req.method().as_str(), req.uri().path());
    audit.origin = sink.origin();
    let mut summary = Summary::default();
    if let Err(answer) = admit_or_answer(cx, dest_index, &req, false, &mut summary, &audit).await {
        return answer;
    }
    let now = gate.clock.now();
    let today = shanghai_date(now);
    // The head: host, path, query, headers, important-data rules by path and query field.
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let head = inspect_head(gate, snap, dest, &host, &req, request_id, today);
    summary.important_rule.clone_from(&head.important_rule);

    let (parts, body) = req.into_parts();
    let call = super::grpc::Call::of(&parts.headers);
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // The path names a gRPC call's method (the message type with descriptor sets).
    let scanner = Scanner::for_request(
        snap.inspect.clone(),
        &parts.headers,
        Some(parts.uri.path()),
        today,
        dest.sensitive,
    );
    let whole = WholeRead::of(snap, &scanner, &parts.headers);
    if whole.too_large(declared) {
        return (
            respond::failure(Failure::WorkbookTooLarge, request_id),
            Decision::Block,
        );
    }
    let Some(mut charge) = charge_decoder(gate, snap, &parts.headers).await else {
        return (respond::failure(Failure::Busy, request_id), Decision::Block);
    };
    // A body read whole takes its length from the budget now (and a workbook its copy in the
    // scanner), or is gated record by record.
    let atomic_limit = whole.limit;
    let atomic = body.is_end_stream()
        || declared.is_some_and(|n| {
            n <= atomic_limit && gate.budget.try_grow(&mut charge, n + whole.copy(n))
        });
    let step = Step {
        cx,
        dest: dest_index,
        head,
        scanner,
        summary,
        audit,
        now,
        call,
        proxy: sink.origin() == "proxy",
    };
    if atomic {
        // Charged for its declared length (0 for an empty body): allocated once, at that size.
        let size = declared.unwrap_or(0).min(atomic_limit);
        serve_whole(step, parts, body, size, sink).await
    } else {
        serve_streamed(step, parts, body, charge, sink).await
    }
}

/// How a body is read whole: up to `atomic_body_bytes`, or — a declared xlsx workbook, which
/// the scanner holds whole anyway (SPEC §3 "spreadsheets") — up to `max_workbook_bytes`, with
/// the scanner's copy of the workbook charged to the budget beside the body.
struct WholeRead {
    /// The largest declared length read whole.
    limit: u64,
    /// What the scanner holds whole, if anything.
    kind: Option<WholeBody>,
    /// `max_workbook_bytes`.
    workbook: u64,
    /// The body has a `Content-Encoding` (the workbook's decoded size is not known up front).
    coded: bool,
}

impl WholeRead {
    fn of<C: std::borrow::Borrow<crate::inspect::InspectConfig>>(
        snap: &Snapshot,
        scanner: &Scanner<C>,
        headers: &http::HeaderMap,
    ) -> Self {
        let i = &snap.config.inspection;
        let kind = scanner.holds_whole();
        let limit = match kind {
            Some(WholeBody::Workbook) => i.atomic_body_bytes.max(i.max_workbook_bytes),
            // An octet-stream body is most often no workbook: one that is not fails at its
            // first bytes while it streams, so it is not held to find out.
            Some(WholeBody::Sniffed) | None => i.atomic_body_bytes,
        };
        WholeRead {
            limit,
            kind,
            workbook: i.max_workbook_bytes,
            coded: headers.contains_key(http::header::CONTENT_ENCODING),
        }
    }

    /// A declared workbook whose declared (unencoded) length is over `max_workbook_bytes`:
    /// 413 before anything is read.
    fn too_large(&self, declared: Option<u64>) -> bool {
        self.kind == Some(WholeBody::Workbook)
            && !self.coded
            && declared.is_some_and(|n| n > self.workbook)
    }

    /// Budget for the scanner's copy of a workbook body of `n` bytes read whole: `n`, or
    /// `max_workbook_bytes` when a content coding hides its decoded size.
    fn copy(&self, n: u64) -> u64 {
        match self.kind {
            Some(_) if self.coded => self.workbook,
            Some(_) => n,
            None => 0,
        }
    }
}

/// What a request carries from one step of [`serve_with`] to the next.
struct Step<'a> {
    cx: RequestCx<'a>,
    dest: usize,
    head: Head,
    scanner: Scanner<Arc<crate::inspect::InspectConfig>>,
    summary: Summary,
    audit: AuditRecord,
    now: SystemTime,
    /// The request is a gRPC call (`application/grpc*`): its messages are counted for the
    /// audit line, and the upstream's answer ends with a gRPC status if it is cut.
    call: Option<super::grpc::Call>,
    /// The sink is the upstream (the proxy listener), whose answer goes to the client as is.
    proxy: bool,
}

/// Why [`admit`] stops a request.
pub(super) enum Admit {
    /// A refusal with its audit line (403 `client_not_allowed`, 451 `uninspectable`).
    Refuse(Refusal),
    /// A synthetic failure (413).
    Fail(Failure<'static>),
}

/// [`admit`], with the answer to a request it stops: the refusal, audited, or the failure.
pub(super) async fn admit_or_answer<B>(
    cx: RequestCx<'_>,
    dest: usize,
    req: &Request<B>,
    websocket: bool,
    summary: &mut Summary,
    audit: &AuditRecord,
) -> Result<(), (Response<GateBody>, Decision)> {
    match admit(cx, dest, req, websocket, summary) {
        Ok(()) => Ok(()),
        Err(Admit::Refuse(refusal)) => Err(refuse_audited(
            cx.gate,
            cx.snap,
            refusal,
            cx.request_id,
            audit.clone(),
            summary,
        )
        .await),
        Err(Admit::Fail(f)) => Err((respond::failure(f, cx.request_id), Decision::Block)),
    }
}

/// SPEC §5 step 0 and what is refused before anything is read: a client outside the
/// destination's `clients` (recorded as `would_block` in `summary` when the request is
/// observed, which then goes on), an `Upgrade` the gate cannot inspect, a declared length over
/// `max_body_bytes`. `websocket`: the request is a WebSocket upgrade the destination allows
/// (`websocket = true`), served by [`super::websocket`].
pub(super) fn admit<B>(
    cx: RequestCx<'_>,
    dest: usize,
    req: &Request<B>,
    websocket: bool,
    summary: &mut Summary,
) -> Result<(), Admit> {
    let name = &cx.snap.config.destinations[dest].name;
    if !cx.snap.routes[dest].allows(cx.identity) {
        let refusal = Refusal::new(Reason::ClientNotAllowed, name.clone());
        if !cx.observed() {
            return Err(Admit::Refuse(refusal));
        }
        summary.refusal = Some(refusal);
        summary.observed = true;
    }
    if wants_upgrade(req.headers()) && !websocket {
        return Err(Admit::Refuse(Refusal::new(
            Reason::Uninspectable,
            name.clone(),
        )));
    }
    if content_length(req).is_some_and(|len| len > cx.snap.config.inspection.max_body_bytes) {
        return Err(Admit::Fail(Failure::TooLarge));
    }
    Ok(())
}

/// Charges a content coding's decoder window to the buffered-bytes budget (SPEC §9), waiting
/// for room up to `idle_seconds`; `None` when there was none (503 `gate_busy`).
async fn charge_decoder(gate: &Gate, snap: &Snapshot, headers: &http::HeaderMap) -> Option<Charge> {
    let decode_cost = headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Coding::parse(Some(v)).ok().flatten())
        .map_or(0, decoder_cost);
    let mut charge = Charge::default();
    if decode_cost > 0 {
        match tokio::time::timeout(snap.config.timeouts.idle, gate.budget.grow(decode_cost)).await {
            Ok(Some(p)) => Budget::add(&mut charge, p),
            _ => return None,
        }
    }
    Some(charge)
}

/// A body judged whole with the head: read (at most `size` bytes), inspected, judged, and
/// only then forwarded — nothing leaves before the decision.
async fn serve_whole<B, S>(
    step: Step<'_>,
    parts: http::request::Parts,
    body: B,
    size: u64,
    sink: &S,
) -> (Response<GateBody>, Decision)
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    S: Sink,
{
    let Step {
        cx,
        dest: i,
        head,
        mut scanner,
        mut summary,
        mut audit,
        now,
        call,
        proxy,
    } = step;
    let (gate, snap, request_id) = (cx.gate, cx.snap, cx.request_id);
    let cfg = &snap.config;
    let dest = &cfg.destinations[i];
    let bytes = match read_whole(body, size, cfg.timeouts.idle).await {
        Ok(b) => b,
        Err(ReadError::TooLarge) => {
            return (
                respond::failure(Failure::TooLarge, request_id),
                Decision::Block,
            )
        }
        Err(ReadError::Client) => {
            return (
                respond::failure(
                    Failure::BadRequest("the request body could not be read"),
                    request_id,
                ),
                Decision::Block,
            )
        }
    };
    let mut batch = head.batch.clone();
    let mut outside = head.outside;
    if !bytes.is_empty() {
        match scanner.feed(&bytes).and_then(|()| scanner.finish()) {
            // A workbook over max_workbook_bytes (as decoded): 413, like a body over
            // max_body_bytes, whatever `unreadable` says.
            Err(Unread::WorkbookTooLarge) => {
                return (
                    respond::failure(Failure::WorkbookTooLarge, request_id),
                    Decision::Block,
                )
            }
            Ok(()) => {
                for r in scanner.records().iter() {
                    batch.add_record(&gate.hasher, r);
                }
                outside = outside.union(scanner.outside_categories());
                if summary.important_rule.is_none() {
                    summary.important_rule = head.rule_for_fields(scanner.watched_fields_seen());
                }
                batch.important = summary.important_rule.is_some();
            }
            Err(e) if dest.unreadable.unwrap_or(cfg.inspection.unreadable) == Unreadable::Allow => {
                tracing::info!(
                    request_id,
                    kind = e.kind(),
                    "unreadable body allowed by configuration"
                );
                summary.unreadable_allowed = true;
            }
            Err(e) => {
                tracing::info!(request_id, kind = e.kind(), destination = %dest.name, "unreadable body");
                let refusal = Refusal::new(Reason::UnreadableBody, dest.name.clone());
                if !cx.observed() {
                    return refuse_audited(gate, snap, refusal, request_id, audit, &summary).await;
                }
                summary.refusal = Some(refusal);
                summary.observed = true;
            }
        }
    }
    // Head and body are one request: categories outside every record apply to all.
    batch.apply_outside(outside);
    summary.note_batch(&batch);
    if let Some(refusal) = judge_into(cx, i, &batch, now, &mut summary).await {
        return refuse_audited(gate, snap, refusal, request_id, audit, &summary).await;
    }
    audit.bytes = bytes.len() as u64;
    if call.is_some() {
        audit.messages = Some(super::grpc::FrameCounter::default().feed(&bytes));
    }
    let send_cx = SendCtx {
        gate,
        snap,
        dest: i,
        request_id,
        identity: cx.identity,
        gated: None,
    };
    let resp = send(sink, send_cx, parts, respond::full(bytes), || {
        forbidden_summary(&mut summary, &dest.name)
    })
    .await;
    let resp = match &call {
        Some(c) if proxy && resp.extensions().get::<respond::Answered>().is_none() => {
            super::grpc::TailBody::wrap(c, None, resp)
        }
        _ => resp,
    };
    let decision = finish(gate, &dest.name, audit, snap, &summary).await;
    (resp, decision)
}

/// A body gated record by record while it streams: the head is judged first (the URL goes
/// upstream before any body byte), then each record is judged before its bytes are
/// released ([`super::gated`]); the audit line waits for the body's end.
async fn serve_streamed<B, S>(
    step: Step<'_>,
    parts: http::request::Parts,
    body: B,
    charge: Charge,
    sink: &S,
) -> (Response<GateBody>, Decision)
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<crate::respond::BoxError>,
    S: Sink,
{
    let Step {
        cx,
        dest: i,
        head,
        scanner,
        mut summary,
        mut audit,
        now,
        call,
        proxy,
    } = step;
    let (gate, snap, request_id) = (cx.gate, cx.snap, cx.request_id);
    let dest = &snap.config.destinations[i];
    let mut head_batch = head.batch.clone();
    head_batch.apply_outside(head.outside);
    summary.note_batch(&head_batch);
    if !head_batch.is_empty() {
        if let Some(refusal) = judge_into(cx, i, &head_batch, now, &mut summary).await {
            return refuse_audited(gate, snap, refusal, request_id, audit, &summary).await;
        }
    }
    let shared: Shared = Arc::new(std::sync::Mutex::new(summary));
    let ctx = Arc::new(Ctx {
        gate: gate.clone(),
        snap: snap.clone(),
        dest: i,
        head,
        unreadable: dest.unreadable.unwrap_or(snap.config.inspection.unreadable),
        enforce: !cx.observed(),
        client_observed: snap.clients.observed(cx.identity),
    });
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let messages = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = super::grpc::Counted::new(body, call.is_some(), messages.clone());
    let body =
        GatedBody::new(counted, ctx, scanner, shared.clone(), done_tx, charge).boxed_unsync();
    let send_cx = SendCtx {
        gate,
        snap,
        dest: i,
        request_id,
        identity: cx.identity,
        gated: Some(&shared),
    };
    let resp = send(sink, send_cx, parts, body, || {
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        forbidden_summary(&mut s, &dest.name)
    })
    .await;
    // The body may still be streaming: the audit line waits for its end.
    let refused_now = refusal_now(&shared);
    let counting = call.is_some();
    let (g, s, sh, name) = (
        gate.clone(),
        snap.clone(),
        shared.clone(),
        dest.name.clone(),
    );
    tokio::spawn(async move {
        // The sender is dropped when the body ends, however it ends.
        let _ = done_rx.await;
        let summary = std::mem::take(&mut *sh.lock().unwrap_or_else(|p| p.into_inner()));
        audit.bytes = summary.released;
        if counting {
            audit.messages = Some(messages.load(std::sync::atomic::Ordering::Relaxed));
        }
        finish(&g, &name, audit, &s, &summary).await;
    });
    // A workbook over max_workbook_bytes failed the body: 413.
    if gated::is_too_large(&shared) {
        return (
            respond::failure(Failure::WorkbookTooLarge, request_id),
            Decision::Block,
        );
    }
    // A body refused before the upstream's answer was passed on: the client gets the refusal.
    match refused_now {
        Some(r) => (
            respond::blocked(&r, request_id, snap.blocked_by.as_ref()),
            Decision::Block,
        ),
        None => match &call {
            // The upstream's answer to a gRPC call: a message refused from here on cuts it
            // with a gRPC status rather than a broken stream.
            Some(c) if proxy && resp.extensions().get::<respond::Answered>().is_none() => (
                super::grpc::TailBody::wrap(c, Some(shared), resp),
                Decision::Allow,
            ),
            _ => (resp, Decision::Allow),
        },
    }
}

/// Judges `batch` (the whole request, or the head of a streamed one) into `summary`; the
/// refusal to send when the verdict refuses.
pub(super) async fn judge_into(
    cx: RequestCx<'_>,
    dest_index: usize,
    batch: &Batch,
    now: SystemTime,
    summary: &mut Summary,
) -> Option<Refusal> {
    let dest = &cx.snap.config.destinations[dest_index].name;
    let verdict = enforce::judge(cx.gate, cx.snap, dest_index, batch, now, cx.observed()).await;
    summary.absorb(&verdict);
    match verdict.outcome {
        // This verdict's own refusal: an earlier one recorded as observed (an observed
        // `client_not_allowed`) does not stand for a ledger outage now.
        Outcome::Block | Outcome::Unavailable => Some(
            verdict
                .refusal
                .clone()
                .unwrap_or_else(|| Refusal::new(verdict.reason, dest.as_str())),
        ),
        Outcome::Pass | Outcome::Allow | Outcome::WouldBlock => None,
    }
}

/// Sends the request to the sink; a target found forbidden there is refused with the refusal
/// `forbidden` records.
async fn send<S: Sink>(
    sink: &S,
    cx: SendCtx<'_>,
    parts: http::request::Parts,
    body: GateBody,
    forbidden: impl FnOnce() -> Refusal,
) -> Response<GateBody> {
    let (request_id, blocked_by) = (cx.request_id, cx.snap.blocked_by.as_ref());
    match sink.send(cx, parts, body).await {
        Ok(r) => r,
        Err(Forbidden) => respond::blocked(&forbidden(), request_id, blocked_by),
    }
}

/// Records in `s` that the destination's host resolved to a forbidden target (refused in
/// observe mode too: it is no policy decision) and returns the refusal.
pub(super) fn forbidden_summary(s: &mut Summary, dest: &str) -> Refusal {
    let refusal = Refusal::new(Reason::ForbiddenTarget, dest);
    s.refusal = Some(refusal.clone());
    s.observed = false;
    refusal
}

enum ReadError {
    TooLarge,
    Client,
}

/// Reads a body of at most `limit` bytes (its declared length: the buffer is allocated once),
/// with the idle timeout between frames.
async fn read_whole<B>(
    mut body: B,
    limit: u64,
    idle: std::time::Duration,
) -> Result<bytes::Bytes, ReadError>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    let mut buf = bytes::BytesMut::with_capacity(usize::try_from(limit).unwrap_or(0));
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(ReadError::Client),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(ReadError::Client),
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(d) = frame.into_data() {
            if (buf.len() + d.len()) as u64 > limit {
                return Err(ReadError::TooLarge);
            }
            buf.extend_from_slice(&d);
        }
    }
    Ok(buf.freeze())
}

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
