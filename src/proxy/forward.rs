//! The request path for plain HTTP (absolute-form and origin-form, HTTP/1.1 and h2c):
//! route → classify → (inspection seam) → forward to the upstream → stream the response back.
//! Every synthetic answer comes from [`crate::respond`].

use super::body::{MeteredBody, Progress};
use super::budget::{Budget, Charge};
use super::classify::{classify, Class, DOMESTIC_LABEL, UNKNOWN_LABEL};
use super::enforce::{self, Outcome};
use super::gated::{Ctx, GatedBody, Shared, Summary};
use super::head::inspect_head;
use super::headers::{add_via, strip_hop_by_hop, wants_upgrade};
use super::sink::{SendCtx, Sink, Upstream};
use super::upstream::{is_connect_timeout, is_forbidden};
use super::{Gate, Route, Snapshot};
use crate::audit::AuditRecord;
use crate::inspect::{decoder_cost, Coding, Scanner};
use crate::model::shanghai_date;
use crate::policy;
use crate::policy::{Decision, Reason, Refusal};
use crate::respond::{self, Failure, GateBody, UpstreamFailure};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Where a plain-HTTP request is going.
pub(crate) struct Target {
    /// `http`, or `https` for an absolute-form `https://` URL.
    pub scheme: Scheme,
    /// The host, without port.
    pub host: String,
    /// Host and port.
    pub authority: Authority,
}

/// The client connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The gate's address the client connected to.
    pub local: SocketAddr,
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
    } else if req.method() == Method::CONNECT {
        super::connect::handle(&gate, &snap, conn, req, &request_id).await
    } else {
        route(&gate, &snap, conn, req, &request_id).await
    };
    gate.metrics
        .duration(decision.as_str())
        .observe(started.elapsed().as_secs_f64());
    Ok(resp)
}

/// Records a decision in `transfer_gate_decisions_total`.
pub(crate) fn count(gate: &Gate, destination: &str, reason: Reason) -> Decision {
    let decision = if reason.permits() {
        Decision::Allow
    } else {
        Decision::Block
    };
    gate.metrics
        .decisions
        .with_label_values(&[destination, decision.as_str(), reason.as_str()])
        .inc();
    decision
}

/// Refuses with the 451/503 JSON of SPEC §5 and counts the decision.
pub(crate) fn refuse(
    gate: &Gate,
    snap: &Snapshot,
    refusal: Refusal,
    request_id: &str,
) -> (Response<GateBody>, Decision) {
    let decision = count(gate, &refusal.destination, refusal.reason);
    tracing::info!(request_id, destination = %refusal.destination, reason = refusal.reason.as_str(), "transfer refused");
    (
        respond::blocked(&refusal, request_id, snap.blocked_by.as_ref()),
        decision,
    )
}

/// Whether the request already carries this gate's `Via` entry.
fn looped(h: &http::HeaderMap) -> bool {
    h.get_all(http::header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|e| e.trim() == super::headers::VIA))
}

/// Whether `auth` names the gate's own listener (an h2 `:authority` of a client that calls the
/// gate directly), in which case the `Host` header says where the request goes.
fn is_self(auth: &Authority, local: SocketAddr) -> bool {
    auth.port_u16() == Some(local.port())
        && auth
            .host()
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip == local.ip() || (ip.is_loopback() && local.ip().is_loopback()))
}

/// The target of a request: its absolute-form URL's authority (unless that names the gate's
/// own listener at `local`), else its `Host` header.
pub(crate) fn target<B>(req: &Request<B>, local: SocketAddr) -> Result<Target, &'static str> {
    let uri = req.uri();
    if let Some(auth) = uri.authority().filter(|a| !is_self(a, local)) {
        let scheme = match uri.scheme_str() {
            Some("http") | None => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            Some(_) => return Err("only http and https URLs can be proxied"),
        };
        return Ok(Target {
            scheme,
            host: auth.host().to_owned(),
            authority: auth.clone(),
        });
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or("the request names no host (absolute-form URL or Host header)")?;
    let authority: Authority = host.parse().map_err(|_| "the Host header is not a host")?;
    Ok(Target {
        scheme: Scheme::HTTP,
        host: authority.host().to_owned(),
        authority,
    })
}

async fn route(
    gate: &Arc<Gate>,
    snap: &Arc<Snapshot>,
    conn: Conn,
    req: Request<Incoming>,
    request_id: &str,
) -> (Response<GateBody>, Decision) {
    let origin_form = req.uri().authority().is_none_or(|a| is_self(a, conn.local));
    let target = match target(&req, conn.local) {
        Ok(t) => t,
        Err(msg) => {
            return (
                respond::failure(Failure::BadRequest(msg), request_id),
                Decision::Block,
            )
        }
    };
    match classify(&snap.config, &target.host) {
        Class::Unknown => {
            let rec = AuditRecord::new(request_id, conn.peer, UNKNOWN_LABEL, req.method().as_str(), req.uri().path());
            refuse_audited(gate, snap, Refusal::new(Reason::UnknownDestination, UNKNOWN_LABEL), request_id, rec, &Summary::default()).await
        }
        Class::Domestic if origin_form => (
            respond::failure(Failure::BadRequest("origin-form requests are routed only to registered destinations; send absolute-form requests through the proxy"), request_id),
            Decision::Block,
        ),
        Class::Domestic => {
            let rec = AuditRecord::new(request_id, conn.peer, DOMESTIC_LABEL, req.method().as_str(), req.uri().path());
            let (parts, body) = req.into_parts();
            match forward(gate, snap, &snap.domestic, DOMESTIC_LABEL, target.scheme, target.authority, parts, body, request_id, None).await {
                Ok(resp) => (resp, count(gate, DOMESTIC_LABEL, Reason::Domestic)),
                Err(Forbidden) => {
                    refuse_audited(gate, snap, Refusal::new(Reason::ForbiddenTarget, DOMESTIC_LABEL), request_id, rec, &Summary::default()).await
                }
            }
        }
        Class::Destination(i) => {
            serve_destination(gate, snap, i, conn, target.scheme, target.authority, req, request_id).await
        }
    }
}

/// Handles one request to the registered destination `dest_index` (of `snap`): the path every
/// request to a destination takes, from a plain-HTTP client ([`route`]) and for each inner
/// request of an intercepted `CONNECT` (`proxy::intercept`, scheme `https`, authority the
/// `CONNECT` target). Steps: refuse what cannot be inspected → inspect the head (query,
/// subject headers, important-data paths) → a body up to `atomic_body_bytes` is read whole and
/// judged with the head, all or nothing; a larger or open-ended body is judged record by record
/// while it streams ([`super::gated`]) → forward → audit and count the decision.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_destination(
    gate: &Arc<Gate>,
    snap: &Arc<Snapshot>,
    dest_index: usize,
    conn: Conn,
    scheme: Scheme,
    authority: Authority,
    req: Request<Incoming>,
    request_id: &str,
) -> (Response<GateBody>, Decision) {
    let host = authority.host().to_owned();
    let sink = Upstream { scheme, authority };
    serve_destination_with(gate, snap, dest_index, conn, &host, req, request_id, &sink).await
}

/// [`serve_destination`] for any request body, sending what the gate releases to `sink` (the
/// upstream for the proxy listener, the ICAP client for the ICAP listener). `host` is the host
/// the request is for (its labels are inspected).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_destination_with<B, S>(
    gate: &Arc<Gate>,
    snap: &Arc<Snapshot>,
    dest_index: usize,
    conn: Conn,
    host: &str,
    req: Request<B>,
    request_id: &str,
    sink: &S,
) -> (Response<GateBody>, Decision)
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<crate::respond::BoxError>,
    S: Sink,
{
    let i = dest_index;
    let dest = &snap.config.destinations[i];
    let mut audit = AuditRecord::new(
        request_id,
        conn.peer,
        &dest.name,
        req.method().as_str(),
        req.uri().path(),
    );
    audit.origin = sink.origin();
    if wants_upgrade(req.headers()) {
        return refuse_audited(
            gate,
            snap,
            Refusal::new(Reason::Uninspectable, dest.name.clone()),
            request_id,
            audit,
            &Summary::default(),
        )
        .await;
    }
    if let Some(len) = content_length(&req) {
        if len > snap.config.inspection.max_body_bytes {
            return (
                respond::failure(Failure::TooLarge, request_id),
                Decision::Block,
            );
        }
    }
    let now = gate.clock.now();
    let today = shanghai_date(now);
    let cfg = &snap.config;
    let unreadable = dest.unreadable.unwrap_or(cfg.inspection.unreadable);
    let enforce = policy::enforce(cfg);

    // The head: host, path, query, headers, important-data rules by path and query field.
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let head = inspect_head(gate, snap, dest, &host, &req, request_id, today);

    let (parts, body) = req.into_parts();
    let atomic_limit = cfg.inspection.atomic_body_bytes;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // The buffered-bytes budget (SPEC §9): a decoder's window is charged first, waiting for
    // room up to idle_seconds; a body read whole takes its length now or is gated record by
    // record instead; a gated body charges what it holds as it goes.
    let decode_cost = parts
        .headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Coding::parse(Some(v)).ok().flatten())
        .map_or(0, decoder_cost);
    let mut charge = Charge::default();
    if decode_cost > 0 {
        match tokio::time::timeout(cfg.timeouts.idle, gate.budget.grow(decode_cost)).await {
            Ok(Some(p)) => Budget::add(&mut charge, p),
            _ => return (respond::failure(Failure::Busy, request_id), Decision::Block),
        }
    }
    let atomic = body.is_end_stream()
        || declared.is_some_and(|n| n <= atomic_limit && gate.budget.try_grow(&mut charge, n));
    let mut scanner =
        Scanner::for_headers(snap.inspect.clone(), &parts.headers, today, dest.sensitive);

    if atomic {
        // Judged whole: nothing is forwarded until the decision.
        // Charged for its declared length (0 for an empty body): allocated once, at that size.
        let size = declared.unwrap_or(0).min(atomic_limit);
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
        let mut summary = Summary {
            important_rule: head.important_rule.clone(),
            ..Summary::default()
        };
        let mut batch = head.batch.clone();
        let mut outside = head.outside;
        if !bytes.is_empty() {
            match scanner.feed(&bytes).and_then(|()| scanner.finish()) {
                Ok(()) => {
                    for r in scanner.records().iter() {
                        batch.add_record(&gate.hasher, r);
                    }
                    outside = outside.union(scanner.outside_categories());
                    if summary.important_rule.is_none() {
                        summary.important_rule =
                            head.rule_for_fields(scanner.watched_fields_seen());
                    }
                    batch.important = summary.important_rule.is_some();
                }
                Err(e) if unreadable == crate::config::Unreadable::Allow => {
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
                    if enforce {
                        return refuse_audited(gate, snap, refusal, request_id, audit, &summary)
                            .await;
                    }
                    summary.refusal = Some(refusal);
                    summary.observed = true;
                }
            }
        }
        // Head and body are one request: categories outside every record apply to all.
        batch.apply_outside(outside);
        summary.note_batch(&batch);
        let verdict = enforce::judge(gate, snap, i, &batch, now).await;
        summary.absorb(&verdict);
        match verdict.outcome {
            Outcome::Block | Outcome::Unavailable => {
                let refusal = summary
                    .refusal
                    .clone()
                    .unwrap_or_else(|| Refusal::new(verdict.reason, dest.name.clone()));
                return refuse_audited(gate, snap, refusal, request_id, audit, &summary).await;
            }
            Outcome::Pass | Outcome::Allow | Outcome::WouldBlock => {}
        }
        audit.bytes = bytes.len() as u64;
        let body = respond::full(bytes);
        let cx = SendCtx {
            gate,
            snap,
            dest: i,
            request_id,
            gated: None,
        };
        let resp = match sink.send(cx, parts, body).await {
            Ok(r) => r,
            Err(Forbidden) => {
                let refusal = forbidden_summary(&mut summary, &dest.name);
                respond::blocked(&refusal, request_id, snap.blocked_by.as_ref())
            }
        };
        let decision = finish(gate, &dest.name, audit, snap, &summary).await;
        return (resp, decision);
    }

    // Streamed: judge the head first (the URL goes upstream before any body byte).
    let mut summary = Summary {
        important_rule: head.important_rule.clone(),
        ..Summary::default()
    };
    let mut head_batch = head.batch.clone();
    head_batch.apply_outside(head.outside);
    summary.note_batch(&head_batch);
    if !head_batch.is_empty() {
        let verdict = enforce::judge(gate, snap, i, &head_batch, now).await;
        summary.absorb(&verdict);
        if matches!(verdict.outcome, Outcome::Block | Outcome::Unavailable) {
            let refusal = summary
                .refusal
                .clone()
                .unwrap_or_else(|| Refusal::new(verdict.reason, dest.name.clone()));
            return refuse_audited(gate, snap, refusal, request_id, audit, &summary).await;
        }
    }
    let shared: Shared = Arc::new(std::sync::Mutex::new(summary));
    let ctx = Arc::new(Ctx {
        gate: gate.clone(),
        snap: snap.clone(),
        dest: i,
        head,
        unreadable,
        enforce,
    });
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let body = GatedBody::new(body, ctx, scanner, shared.clone(), done_tx, charge).boxed_unsync();
    let cx = SendCtx {
        gate,
        snap,
        dest: i,
        request_id,
        gated: Some(&shared),
    };
    let resp = match sink.send(cx, parts, body).await {
        Ok(r) => r,
        Err(Forbidden) => {
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            let refusal = forbidden_summary(&mut s, &dest.name);
            respond::blocked(&refusal, request_id, snap.blocked_by.as_ref())
        }
    };
    // The body may still be streaming: the audit line waits for its end.
    let refused_now = take_refusal(&shared);
    let (g, s, sh, name) = (
        gate.clone(),
        snap.clone(),
        shared.clone(),
        dest.name.clone(),
    );
    tokio::spawn(async move {
        let _ = done_rx.await;
        let summary = std::mem::take(&mut *sh.lock().unwrap_or_else(|p| p.into_inner()));
        audit.bytes = summary.released;
        finish(&g, &name, audit, &s, &summary).await;
    });
    // A body refused before the upstream's answer was passed on: the client gets the refusal.
    match refused_now {
        Some(r) => (
            respond::blocked(&r, request_id, snap.blocked_by.as_ref()),
            Decision::Block,
        ),
        None => (resp, Decision::Allow),
    }
}

/// Records in `s` that the destination's host resolved to a forbidden target (refused in
/// observe mode too: it is no policy decision) and returns the refusal.
fn forbidden_summary(s: &mut Summary, dest: &str) -> Refusal {
    let refusal = Refusal::new(Reason::ForbiddenTarget, dest);
    s.refusal = Some(refusal.clone());
    s.observed = false;
    refusal
}

/// Whether a gated body is waiting for (or failed for want of) room in the budget.
fn is_busy(shared: &Shared) -> bool {
    shared.lock().unwrap_or_else(|p| p.into_inner()).busy
}

/// The refusal recorded by a gated body that failed before the upstream answered.
fn take_refusal(shared: &Shared) -> Option<Refusal> {
    let s = shared.lock().unwrap_or_else(|p| p.into_inner());
    if s.observed {
        None
    } else {
        s.refusal.clone()
    }
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

/// Fills the counting fields of an audit line from the request's summary. The entity counts
/// after are the ledger's (SPEC §6): from the last reservation or refusal that read them, else
/// read now — a request that counted nothing into the entity leaves them as they are.
async fn fill_audit(gate: &Gate, snap: &Snapshot, audit: &mut AuditRecord, s: &Summary) {
    audit.new_subjects = s.new.all;
    audit.new_sensitive_subjects = s.new.sensitive;
    let entity = match s.entity_after {
        Some(c) => c,
        None => enforce::entity_now(gate, snap, gate.clock.now()).await,
    };
    audit.entity_subjects = entity.all;
    audit.entity_sensitive_subjects = entity.sensitive;
    audit.important_data_rule.clone_from(&s.important_rule);
    audit.categories = s.categories.iter().map(|c| c.as_str()).collect();
    audit.approval.clone_from(&s.approval);
    if let Some(m) = s.required {
        audit.required_mechanism = m;
    }
}

/// Records the final decision of a forwarded request: metric and audit line.
async fn finish(
    gate: &Gate,
    dest: &str,
    mut audit: AuditRecord,
    snap: &Snapshot,
    s: &Summary,
) -> Decision {
    fill_audit(gate, snap, &mut audit, s).await;
    let (decision, reason) = match (&s.refusal, s.observed) {
        (Some(r), true) => (Decision::WouldBlock, r.reason),
        (Some(r), false) => (Decision::Block, r.reason),
        (None, _) if s.reserved => (Decision::Allow, s.reason.unwrap_or(Reason::Allowed)),
        (None, _) => (Decision::Allow, Reason::NoPi),
    };
    if let Some(r) = &s.refusal {
        audit.threshold = r.threshold;
        audit.required_mechanism = r.required_mechanism;
    }
    audit.decision = decision;
    audit.reason = reason;
    gate.metrics
        .decisions
        .with_label_values(&[dest, decision.as_str(), reason.as_str()])
        .inc();
    gate.audit.record(audit).await;
    decision
}

/// Refuses with the 451/503 JSON, counts the decision and writes the audit line (with what
/// the request's `summary` holds so far).
pub(crate) async fn refuse_audited(
    gate: &Gate,
    snap: &Snapshot,
    refusal: Refusal,
    request_id: &str,
    mut audit: AuditRecord,
    summary: &Summary,
) -> (Response<GateBody>, Decision) {
    fill_audit(gate, snap, &mut audit, summary).await;
    audit.decision = Decision::Block;
    audit.reason = refusal.reason;
    audit.threshold = refusal.threshold;
    audit.required_mechanism = refusal.required_mechanism;
    gate.audit.record(audit).await;
    refuse(gate, snap, refusal, request_id)
}

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn forward<B>(
    gate: &Gate,
    snap: &Snapshot,
    route: &Route,
    label: &str,
    scheme: Scheme,
    authority: Authority,
    mut parts: http::request::Parts,
    body: B,
    request_id: &str,
    gated: Option<&Shared>,
) -> Result<Response<GateBody>, Forbidden>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<crate::respond::BoxError>,
{
    let t = snap.config.timeouts;
    let deadline = t.total.map(|d| tokio::time::Instant::now() + d);
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = match Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(pq)
        .build()
    {
        Ok(u) => u,
        Err(_) => {
            return Ok(respond::failure(
                Failure::BadRequest("the request URL cannot be forwarded"),
                request_id,
            ))
        }
    };
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(http::header::HOST);
    add_via(&mut parts.headers);

    let too_large = Arc::new(AtomicBool::new(false));
    let cap = Some((snap.config.inspection.max_body_bytes, too_large.clone()));
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
    let progress = Progress::new();
    let body = MeteredBody::new(body, route.bytes_up.clone(), t.idle, deadline, cap)
        .signal_end(sent_tx, progress.clone())
        .boxed_unsync();
    let upstream_req = Request::from_parts(parts, body);

    // The response-head timer starts once the request body has been sent in full: while it
    // flows, the body's idle timer (and the total deadline) guard the exchange, so a slow
    // upload is never cut for an upstream that cannot answer before the body ends.
    let head_timeout = |now: tokio::time::Instant| match deadline {
        Some(d) => t.response_header.min(d.saturating_duration_since(now)),
        None => t.response_header,
    };
    let request = route.client.request(upstream_req);
    tokio::pin!(request);
    let result = tokio::select! {
        r = &mut request => Ok(r),
        _ = sent_rx => {
            tokio::time::timeout(head_timeout(tokio::time::Instant::now()), &mut request)
                .await
                .map_err(|_| ())
        }
        // The upstream stopped reading the body (or the body stopped): idle_seconds.
        _ = progress.stalled(t.idle) => Err(()),
    };
    let resp = match result {
        Err(_) if gated.is_some_and(is_busy) => {
            return Ok(respond::failure(Failure::Busy, request_id))
        }
        Err(_) => {
            return Ok(upstream_error(
                gate,
                label,
                UpstreamFailure::Timeout,
                request_id,
            ))
        }
        Ok(Err(e)) => {
            if is_forbidden(&e) {
                tracing::info!(
                    request_id,
                    destination = label,
                    "target refused: forbidden_target"
                );
                return Err(Forbidden);
            }
            if too_large.load(Ordering::Acquire) {
                return Ok(respond::failure(Failure::TooLarge, request_id));
            }
            if let Some(r) = gated.and_then(take_refusal) {
                return Ok(respond::blocked(&r, request_id, snap.blocked_by.as_ref()));
            }
            if gated.is_some_and(is_busy) {
                return Ok(respond::failure(Failure::Busy, request_id));
            }
            let kind = if is_connect_timeout(&e) {
                UpstreamFailure::Timeout
            } else {
                UpstreamFailure::Unreachable
            };
            tracing::warn!(request_id, destination = label, error = %error_chain(&e), "upstream request failed");
            return Ok(upstream_error(gate, label, kind, request_id));
        }
        Ok(Ok(r)) => r,
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers);
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        parts.headers.insert(super::headers::REQUEST_ID, v);
    }
    let body =
        MeteredBody::new(body, route.bytes_down.clone(), t.idle, deadline, None).boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

/// The upstream's host resolved only to addresses the target rules refuse.
#[derive(Debug)]
pub struct Forbidden;

fn upstream_error(
    gate: &Gate,
    label: &str,
    kind: UpstreamFailure,
    request_id: &str,
) -> Response<GateBody> {
    let k = match kind {
        UpstreamFailure::Unreachable => "unreachable",
        UpstreamFailure::Timeout => "timeout",
    };
    gate.metrics
        .upstream_errors
        .with_label_values(&[label, k])
        .inc();
    respond::failure(Failure::Upstream(kind), request_id)
}

/// An error and its sources on one line (for logs; upstream errors carry no request data).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
