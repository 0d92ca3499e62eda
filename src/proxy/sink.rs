//! The send phase: where the judged bytes of a request go. The seam between the gate's
//! request path ([`super::destination::serve_with`]: inspection, policy, reservation, audit,
//! metrics) and the party that receives what the gate releases: the proxy listener's sink is
//! the upstream ([`Upstream`], through [`forward`]); the ICAP listener's sink is the ICAP
//! client (`crate::icap`), which forwards the request itself. Domestic requests are forwarded
//! with [`forward`] too, uninspected.

use super::body::{MeteredBody, Progress, RequestProgress};
use super::gated::{is_busy, is_too_large, refusal_now, Shared};
use super::headers::{add_via, strip_hop_by_hop};
use super::{Gate, Route, Snapshot};
use crate::identity::Identity;
use crate::respond::{self, Failure, GateBody, UpstreamFailure};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One exchange with an upstream: the gate, the configuration, the pooled route and its metric
/// label (a destination's name or `domestic`), the request id, and the gated body's summary
/// when the body streams record by record.
#[derive(Clone, Copy)]
pub(crate) struct Exchange<'a> {
    pub gate: &'a Gate,
    pub snap: &'a Snapshot,
    pub route: &'a Route,
    pub label: &'a str,
    pub request_id: &'a str,
    pub identity: Identity,
    pub gated: Option<&'a Shared>,
}

/// What a sink learns about the request it receives.
#[derive(Clone, Copy)]
pub struct SendCtx<'a> {
    /// The gate.
    pub gate: &'a Gate,
    /// The snapshot the request started with.
    pub snap: &'a Snapshot,
    /// The destination index (into `snap.config.destinations`).
    pub dest: usize,
    /// The request id.
    pub request_id: &'a str,
    /// Who is sending (for the byte counters' `client` label).
    pub identity: Identity,
    /// The gated body's shared summary, when the body streams record by record (a refusal
    /// recorded there means the body failed on purpose).
    pub gated: Option<&'a Shared>,
}

/// The receiver of a judged request. The body releases only bytes whose records the gate has
/// durably reserved; a streamed body fails (an error frame) at the first refused record, and
/// the sink must then make sure the request never completes downstream.
pub trait Sink: Send + Sync {
    /// The audit record's `origin` (`proxy`, `icap`).
    fn origin(&self) -> &'static str;

    /// Sends the request; the answer is what the client of the gate's listener receives.
    ///
    /// # Errors
    /// [`Forbidden`] when the destination's host resolved only to addresses the target rules
    /// of SPEC §2 refuse (nothing was sent).
    fn send(
        &self,
        cx: SendCtx<'_>,
        parts: http::request::Parts,
        body: GateBody,
    ) -> impl Future<Output = Result<Response<GateBody>, Forbidden>> + Send;
}

/// The proxy listener's sink: the destination's upstream server.
pub struct Upstream {
    /// The scheme the client used (`https` inside an intercepted `CONNECT`).
    pub scheme: Scheme,
    /// The authority the request is for.
    pub authority: Authority,
}

impl Sink for Upstream {
    fn origin(&self) -> &'static str {
        "proxy"
    }

    async fn send(
        &self,
        cx: SendCtx<'_>,
        parts: http::request::Parts,
        body: GateBody,
    ) -> Result<Response<GateBody>, Forbidden> {
        let dest = &cx.snap.config.destinations[cx.dest];
        let scheme = if dest.upstream_https {
            Scheme::HTTPS
        } else {
            self.scheme.clone()
        };
        let x = Exchange {
            gate: cx.gate,
            snap: cx.snap,
            route: &cx.snap.routes[cx.dest],
            label: &dest.name,
            request_id: cx.request_id,
            identity: cx.identity,
            gated: cx.gated,
        };
        forward(x, scheme, self.authority.clone(), parts, body).await
    }
}

/// Sends a request to its upstream over `x.route`'s pooled client and streams the answer back;
/// `scheme` and `authority` name the upstream's URL.
///
/// # Errors
/// [`Forbidden`] when the host resolved only to addresses the target rules refuse.
pub(crate) async fn forward<B>(
    x: Exchange<'_>,
    scheme: Scheme,
    authority: Authority,
    mut parts: http::request::Parts,
    body: B,
) -> Result<Response<GateBody>, Forbidden>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<crate::respond::BoxError>,
{
    let Exchange {
        gate,
        snap,
        route,
        label,
        request_id,
        identity,
        gated,
    } = x;
    let t = snap.config.timeouts;
    let deadline = t.total.map(|d| tokio::time::Instant::now() + d);
    let https = scheme == Scheme::HTTPS;
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
    // `TE: trailers` says the client takes trailers (gRPC needs it, and an h2 upstream may
    // refuse a gRPC call without it): kept across the hop, any other TE value is not.
    let trailers = wants_trailers(&parts.headers);
    strip_hop_by_hop(&mut parts.headers);
    if trailers {
        parts
            .headers
            .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    }
    parts.headers.remove(http::header::HOST);
    add_via(&mut parts.headers);

    let too_large = Arc::new(AtomicBool::new(false));
    let cap = Some((snap.config.inspection.max_body_bytes, too_large.clone()));
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
    let progress = Progress::new();
    // The response's progress: the exchange is idle only when neither body moves.
    let answer = Progress::new();
    let [bytes_up, bytes_down] = route.bytes(&snap.clients, identity).clone();
    let body = MeteredBody::new(body, bytes_up, t.idle, deadline, cap)
        .signal_end(sent_tx, progress.clone())
        .idle_with(answer.clone())
        .boxed_unsync();
    let upstream_req = Request::from_parts(parts, body);

    // The response-head timer starts once the request body has been sent in full: while it
    // flows, the body's idle timer (and the total deadline) guard the exchange, so a slow
    // upload is never cut for an upstream that cannot answer before the body ends.
    let head_timeout = |now: tokio::time::Instant| match deadline {
        Some(d) => t.response_header.min(d.saturating_duration_since(now)),
        None => t.response_header,
    };
    let asked = std::time::Instant::now();
    let request = route.client_for(https).request(upstream_req);
    tokio::pin!(request);
    // The wait for the upstream's response head (`transfer_gate_added_seconds` leaves it out):
    // from the end of the request body, or from handing over the head when the response came
    // first.
    let mut waited_since = asked;
    /// Why the gate stopped waiting for the upstream's answer.
    enum Stop {
        /// No response head within `response_header_seconds` of the body's end.
        Head,
        /// The request body did not move for `idle_seconds`.
        Stalled,
    }
    let result = tokio::select! {
        r = &mut request => Ok(r),
        _ = sent_rx => {
            waited_since = std::time::Instant::now();
            tokio::time::timeout(head_timeout(tokio::time::Instant::now()), &mut request)
                .await
                .map_err(|_| Stop::Head)
        }
        // The body stopped for idle_seconds: its client sent nothing, or the upstream stopped
        // reading it.
        _ = progress.stalled(t.idle) => Err(Stop::Stalled),
    };
    if !matches!(result, Ok(Ok(_))) {
        // The gate answers the client itself: the request still on its way must not end.
        progress.abandon();
    }
    let resp = match result {
        Err(_) if gated.is_some_and(is_busy) => {
            return Ok(respond::failure(Failure::Busy, request_id))
        }
        // The client sent nothing for idle_seconds (SPEC §9 "slow client"): 408, no upstream
        // failure.
        Err(Stop::Stalled) if progress.client_stalled(t.idle) => {
            return Ok(respond::failure(Failure::ClientTimeout, request_id))
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
            if e.is_forbidden() {
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
            if gated.is_some_and(is_too_large) {
                return Ok(respond::failure(Failure::WorkbookTooLarge, request_id));
            }
            if let Some(r) = gated.and_then(refusal_now) {
                return Ok(respond::blocked(&r, request_id, snap.blocked_by.as_ref()));
            }
            if gated.is_some_and(is_busy) {
                return Ok(respond::failure(Failure::Busy, request_id));
            }
            // The request body's own idle timer (or the total deadline) may fail the request
            // before `progress.stalled` is seen — over h2 the error is then the stream reset
            // that hyper sends, not the body's — a timeout all the same, not an unreachable
            // upstream.
            let now = tokio::time::Instant::now();
            let overdue = deadline.is_some_and(|d| now >= d);
            if !overdue && progress.client_stalled(t.idle) {
                return Ok(respond::failure(Failure::ClientTimeout, request_id));
            }
            let timed_out = now >= progress.last() + t.idle || overdue;
            let kind = if e.is_connect_timeout() || timed_out {
                UpstreamFailure::Timeout
            } else {
                UpstreamFailure::Unreachable
            };
            tracing::warn!(request_id, destination = label, error = %error_chain(&e), "upstream request failed");
            return Ok(upstream_error(gate, label, kind, request_id));
        }
        Ok(Ok(r)) => r,
    };
    let wait = waited_since.elapsed();
    let (mut parts, body) = resp.into_parts();
    parts.extensions.insert(crate::metrics::UpstreamWait(wait));
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers);
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        parts.headers.insert(super::headers::REQUEST_ID_NAME, v);
    }
    let body = MeteredBody::new(body, bytes_down, t.idle, deadline, None)
        .track(answer)
        .idle_with(progress.clone())
        .boxed_unsync();
    parts.extensions.insert(RequestProgress {
        progress,
        idle: t.idle,
    });
    Ok(Response::from_parts(parts, body))
}

/// Whether a request's `TE` header lists `trailers`.
fn wants_trailers(h: &http::HeaderMap) -> bool {
    h.get_all(http::header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// The upstream's host resolved only to addresses the target rules refuse.
#[derive(Debug)]
pub struct Forbidden;

pub(crate) fn upstream_error(
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
