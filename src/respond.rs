//! Rendering only: turns a decision's [`Refusal`] into the 451/403/407/503 `transfer_blocked` JSON
//! with its `Link` header (SPEC §5, RFC 7725) — [`blocked`] — and every other synthetic answer
//! of the proxy and admin listeners (502, 504, 408, 413, 503 `gate_busy` and `too_many_streams`,
//! 400, 421, 508, 401, 404, 405) from one enum, [`Failure`] — [`failure`]. The vocabulary itself (`Reason`,
//! `Mechanism`, `Refusal`, `Decision`) lives in `crate::policy`; callers never assemble an
//! error response themselves.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use serde::Serialize;

use crate::policy::{Reason, Refusal};

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response the gate sends.
pub type GateBody = UnsyncBoxBody<Bytes, BoxError>;

/// The HTTP status of a refusal with this reason.
pub const fn status_of(reason: Reason) -> StatusCode {
    match reason {
        Reason::LedgerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        Reason::ForbiddenTarget | Reason::ClientNotAllowed => StatusCode::FORBIDDEN,
        Reason::ClientUnidentified => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        _ => StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
    }
}

/// One human sentence for the response body; never contains request data.
pub const fn message_of(reason: Reason) -> &'static str {
    match reason {
        Reason::UnknownDestination => "The destination host is not registered for cross-border transfers; ask the security team to register it.",
        Reason::Uninspectable => "The gate cannot inspect this traffic to an overseas host, so it may not leave the country.",
        Reason::UnreadableBody => "The request body could not be inspected for personal information, so it may not leave the country.",
        Reason::ImportantData => "The request matches an important-data rule and no security assessment covers this destination.",
        Reason::ApprovalRequired => "This transfer needs a cross-border mechanism that the company does not hold for this destination.",
        Reason::ApprovalPending => "The approval this transfer needs is still pending; transfers must wait until it is granted.",
        Reason::ApprovalExpired => "The approval this transfer relies on is not in its validity period.",
        Reason::ApprovalRevoked => "The approval this transfer relies on has been revoked or rejected.",
        Reason::CategoryNotApproved => "The request carries a category of personal information that the approval does not cover.",
        Reason::ApprovalVolumeExceeded => "The transfer would exceed the number of data subjects the approval was granted for.",
        Reason::LedgerUnavailable => "The gate cannot durably count the data subjects of this transfer right now; retry later.",
        Reason::Allowed => "Allowed.",
        Reason::NoPi => "No personal information found.",
        Reason::Domestic => "Domestic traffic.",
        Reason::Exempt => "Exempt transfer.",
        Reason::Tunnel => "Tunnel to a destination that receives no personal information.",
        Reason::ClientNotAllowed => "This service is not among the clients allowed to send to this destination; ask the security team to add it.",
        Reason::ClientUnidentified => "The gate could not identify the sending service: present its client certificate or a valid proxy token.",
        Reason::ForbiddenTarget => "The gate does not connect to this target: its own listeners, its ledger, a denied address range, or a port closed to tunnels.",
    }
}

#[derive(Serialize)]
struct BlockedBody<'a> {
    error: &'static str,
    reason: &'static str,
    destination: &'a str,
    required_mechanism: &'static str,
    threshold: Option<&'static str>,
    request_id: &'a str,
    message: &'static str,
}

/// Marks a response the gate answered itself (not the upstream's), with its code: the
/// refusal's reason (`approval_required`, …) or the failure's code (`upstream_timeout`, …).
/// A gRPC call gets such an answer in gRPC terms (`crate::proxy::grpc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered(pub &'static str);

/// The response header that repeats the reason, for clients that hide CONNECT bodies.
pub const REASON_HEADER: &str = "x-transfer-gate-reason";

/// Builds the 451 (or 503) `transfer_blocked` response of SPEC §5.
pub fn blocked(
    refusal: &Refusal,
    request_id: &str,
    blocked_by: Option<&HeaderValue>,
) -> Response<GateBody> {
    let body = BlockedBody {
        error: "transfer_blocked",
        reason: refusal.reason.as_str(),
        destination: &refusal.destination,
        required_mechanism: refusal.required_mechanism.as_str(),
        threshold: refusal.threshold,
        request_id,
        message: message_of(refusal.reason),
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = Response::new(full(json));
    *resp.status_mut() = status_of(refusal.reason);
    resp.extensions_mut()
        .insert(Answered(refusal.reason.as_str()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        REASON_HEADER,
        HeaderValue::from_static(refusal.reason.as_str()),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    if let Some(link) = blocked_by {
        h.insert(header::LINK, link.clone());
    }
    if refusal.reason == Reason::LedgerUnavailable {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    if refusal.reason == Reason::ClientUnidentified {
        h.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"transfer-gate\""),
        );
    }
    resp
}

/// Renders `gate.blocked_by_url` as the RFC 7725 `Link` header value.
pub fn blocked_by_link(url: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("<{url}>; rel=\"blocked-by\"")).ok()
}

/// Which side of the proxy failed, so the status code follows mechanically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The upstream could not be reached or broke the exchange: 502.
    Unreachable,
    /// The upstream did not answer in time: 504.
    Timeout,
}

/// Every synthetic answer that is not a transfer refusal (those are [`blocked`]), for the proxy
/// listeners and the admin listener alike: each kind has one status, one code and one message
/// here, and callers never assemble an error response themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure<'a> {
    /// The upstream failed: 502 or 504.
    Upstream(UpstreamFailure),
    /// The client stopped sending its request body for `timeouts.idle_seconds` (SPEC §9 "slow
    /// client"): 408 `client_timeout`.
    ClientTimeout,
    /// A body over `inspection.max_body_bytes`: 413.
    TooLarge,
    /// An xlsx workbook over `inspection.max_workbook_bytes` (it is judged whole): 413.
    WorkbookTooLarge,
    /// The buffered-bytes budget (`inspection.max_buffered_bytes`) stayed spent for
    /// `timeouts.idle_seconds` while the request waited for room, or a record could never fit
    /// it: 503 with `Retry-After: 1`.
    Busy,
    /// A request the gate cannot route or read: 400 with this message (never request data).
    BadRequest(&'a str),
    /// The request already passed through this gate (`Via`): 508.
    LoopDetected,
    /// A request on an intercepted connection that the connection cannot serve: 421 with this
    /// message.
    Misdirected(&'a str),
    /// An admin `/v1/*` request without the right bearer token: 401.
    Unauthorized,
    /// An admin path that does not exist: 404 (plain text).
    NotFound,
    /// An admin path with a method it does not take: 405 (plain text).
    MethodNotAllowed,
    /// As many `/v1/decisions/stream` responses are open as the gate allows: 503 with
    /// `Retry-After: 5`.
    TooManyStreams,
}

impl<'a> Failure<'a> {
    fn parts(self) -> (StatusCode, &'static str) {
        match self {
            Failure::Upstream(UpstreamFailure::Unreachable) => {
                (StatusCode::BAD_GATEWAY, "upstream_unreachable")
            }
            Failure::Upstream(UpstreamFailure::Timeout) => {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
            }
            Failure::ClientTimeout => (StatusCode::REQUEST_TIMEOUT, "client_timeout"),
            Failure::TooLarge | Failure::WorkbookTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
            }
            Failure::Busy => (StatusCode::SERVICE_UNAVAILABLE, "gate_busy"),
            Failure::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Failure::LoopDetected => (StatusCode::LOOP_DETECTED, "loop_detected"),
            Failure::Misdirected(_) => (StatusCode::MISDIRECTED_REQUEST, "misdirected_request"),
            Failure::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Failure::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Failure::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Failure::TooManyStreams => (StatusCode::SERVICE_UNAVAILABLE, "too_many_streams"),
        }
    }

    fn message(self) -> &'a str {
        match self {
            Failure::BadRequest(m) | Failure::Misdirected(m) => m,
            Failure::Upstream(UpstreamFailure::Unreachable) => {
                "The upstream could not be reached or failed during the exchange."
            }
            Failure::Upstream(UpstreamFailure::Timeout) => "The upstream did not answer in time.",
            Failure::ClientTimeout => {
                "The request body stopped arriving for longer than timeouts.idle_seconds."
            }
            Failure::TooLarge => {
                "The request body is larger than the gate inspects (inspection.max_body_bytes)."
            }
            Failure::WorkbookTooLarge => {
                "The workbook is larger than the gate judges whole (inspection.max_workbook_bytes)."
            }
            Failure::Busy => "The gate holds as many request bytes as it may (inspection.max_buffered_bytes); retry shortly.",
            Failure::LoopDetected => {
                "the request already passed through this gate (Via); refusing a forwarding loop"
            }
            Failure::Unauthorized => {
                "send Authorization: Bearer <token from gate.admin_token_file>"
            }
            Failure::NotFound => "not found\n",
            Failure::MethodNotAllowed => "method not allowed\n",
            Failure::TooManyStreams => {
                "As many decision streams are open as the gate allows; retry shortly."
            }
        }
    }
}

/// Renders a [`Failure`]: a short JSON body `{"error": code, "message": .., "request_id": ..}`
/// (or plain text for the admin listener's 404 and 405), with the request id echoed when there
/// is one.
pub fn failure(f: Failure<'_>, request_id: &str) -> Response<GateBody> {
    let (status, code) = f.parts();
    let message = f.message();
    let mut resp = match f {
        Failure::NotFound | Failure::MethodNotAllowed => {
            let mut r = Response::new(full(Bytes::copy_from_slice(message.as_bytes())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        _ => {
            let mut json = serde_json::json!({ "error": code, "message": message });
            if !request_id.is_empty() {
                json["request_id"] = serde_json::Value::from(request_id);
            }
            let mut r = Response::new(full(json.to_string()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
    };
    *resp.status_mut() = status;
    resp.extensions_mut().insert(Answered(code));
    let h = resp.headers_mut();
    if !request_id.is_empty() {
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-request-id", v);
        }
    }
    match f {
        Failure::Busy => {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        Failure::TooManyStreams => {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        Failure::Unauthorized => {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        _ => {}
    }
    resp
}

/// A complete in-memory body.
pub fn full(data: impl Into<Bytes>) -> GateBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> GateBody {
    full(Bytes::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Mechanism;

    #[tokio::test]
    async fn blocked_response_matches_spec() {
        let link = blocked_by_link("https://compliance.example.cn/transfer-gate");
        let mut r = Refusal::new(Reason::ApprovalRequired, "eu");
        r.required_mechanism = Mechanism::SecurityAssessment;
        r.threshold = Some("subjects_100000");
        let resp = blocked(&r, "req-1", link.as_ref());
        assert_eq!(resp.status(), 451);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(
            resp.headers()["link"],
            "<https://compliance.example.cn/transfer-gate>; rel=\"blocked-by\""
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "transfer_blocked");
        assert_eq!(v["reason"], "approval_required");
        assert_eq!(v["destination"], "eu");
        assert_eq!(v["required_mechanism"], "security_assessment");
        assert_eq!(v["threshold"], "subjects_100000");
        assert_eq!(v["request_id"], "req-1");
        assert!(v["message"].as_str().unwrap().ends_with('.'));
    }

    #[test]
    fn ledger_unavailable_is_503() {
        assert_eq!(status_of(Reason::LedgerUnavailable), 503);
        assert_eq!(status_of(Reason::Uninspectable), 451);
        assert!(Reason::Tunnel.permits());
        assert!(!Reason::ApprovalPending.permits());
        assert_eq!(status_of(Reason::ForbiddenTarget), 403);
        assert!(!Reason::ForbiddenTarget.permits());
    }
}
