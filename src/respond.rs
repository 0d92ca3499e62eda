//! The one place that builds synthetic responses: the 451 `transfer_blocked` JSON with its
//! `Link` header (SPEC §5, RFC 7725), 503 `ledger_unavailable`, 403 `forbidden_target`, 413,
//! 400, 502 and 504.
//!
//! Handlers return a [`Refusal`] or an [`UpstreamFailure`]; they never assemble error bodies
//! themselves. Reason codes are one enum whose strings feed the 451 body, the audit line and the
//! metric labels, so every label stays bounded by the code, never by request data.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use serde::Serialize;

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response the gate sends.
pub type GateBody = UnsyncBoxBody<Bytes, BoxError>;

/// Why a request was let through or refused (SPEC §5 "Value sets: reason").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The host is neither domestic nor a registered destination.
    UnknownDestination,
    /// The gate cannot see inside the traffic (CONNECT without interception, WebSocket).
    Uninspectable,
    /// The body could not be read.
    UnreadableBody,
    /// An important-data rule matched without a security assessment.
    ImportantData,
    /// No valid approval for the required mechanism.
    ApprovalRequired,
    /// The only approval is pending.
    ApprovalPending,
    /// The only approval has expired (or is not yet valid).
    ApprovalExpired,
    /// The only approval was revoked (or rejected).
    ApprovalRevoked,
    /// A category of the request is not covered by the approval.
    CategoryNotApproved,
    /// The approval's declared volume would be exceeded.
    ApprovalVolumeExceeded,
    /// The ledger could not durably count the request's subjects (503).
    LedgerUnavailable,
    /// Allowed and counted.
    Allowed,
    /// No PI found.
    NoPi,
    /// Domestic traffic: not a cross-border transfer.
    Domestic,
    /// Exempt destination (cac-2024).
    Exempt,
    /// Blind tunnel to a destination declared to receive no PI.
    Tunnel,
    /// The target is the gate itself, its ledger, a denied range or a closed tunnel port
    /// (SPEC §2 "The gate is never a way around itself"): 403.
    ForbiddenTarget,
}

impl Reason {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [Reason; 17] = [
        Reason::UnknownDestination,
        Reason::Uninspectable,
        Reason::UnreadableBody,
        Reason::ImportantData,
        Reason::ApprovalRequired,
        Reason::ApprovalPending,
        Reason::ApprovalExpired,
        Reason::ApprovalRevoked,
        Reason::CategoryNotApproved,
        Reason::ApprovalVolumeExceeded,
        Reason::LedgerUnavailable,
        Reason::Allowed,
        Reason::NoPi,
        Reason::Domestic,
        Reason::Exempt,
        Reason::Tunnel,
        Reason::ForbiddenTarget,
    ];

    /// The exact string of the spec.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownDestination => "unknown_destination",
            Reason::Uninspectable => "uninspectable",
            Reason::UnreadableBody => "unreadable_body",
            Reason::ImportantData => "important_data",
            Reason::ApprovalRequired => "approval_required",
            Reason::ApprovalPending => "approval_pending",
            Reason::ApprovalExpired => "approval_expired",
            Reason::ApprovalRevoked => "approval_revoked",
            Reason::CategoryNotApproved => "category_not_approved",
            Reason::ApprovalVolumeExceeded => "approval_volume_exceeded",
            Reason::LedgerUnavailable => "ledger_unavailable",
            Reason::Allowed => "allowed",
            Reason::NoPi => "no_pi",
            Reason::Domestic => "domestic",
            Reason::Exempt => "exempt",
            Reason::Tunnel => "tunnel",
            Reason::ForbiddenTarget => "forbidden_target",
        }
    }

    /// Whether this reason lets the traffic through.
    pub const fn permits(self) -> bool {
        matches!(
            self,
            Reason::Allowed | Reason::NoPi | Reason::Domestic | Reason::Exempt | Reason::Tunnel
        )
    }

    /// The HTTP status of a refusal with this reason.
    pub const fn status(self) -> StatusCode {
        match self {
            Reason::LedgerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Reason::ForbiddenTarget => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
        }
    }

    /// One human sentence for the response body; never contains request data.
    pub const fn message(self) -> &'static str {
        match self {
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
            Reason::ForbiddenTarget => "The gate does not connect to this target: its own listeners, its ledger, a denied address range, or a port closed to tunnels.",
        }
    }
}

/// The mechanism a transfer requires (SPEC §5 "required_mechanism").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    /// No mechanism needed.
    None,
    /// A filed standard contract or a certification.
    StandardContractOrCertification,
    /// A CAC security assessment.
    SecurityAssessment,
}

impl Mechanism {
    /// Every value, for metric series.
    pub const ALL: [Mechanism; 3] = [
        Mechanism::None,
        Mechanism::StandardContractOrCertification,
        Mechanism::SecurityAssessment,
    ];

    /// The exact string of the spec.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mechanism::None => "none",
            Mechanism::StandardContractOrCertification => "standard_contract_or_certification",
            Mechanism::SecurityAssessment => "security_assessment",
        }
    }
}

/// A refusal to be sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: Reason,
    /// The destination name, or the host's class (`unknown`, `domestic`).
    pub destination: String,
    /// The mechanism the transfer needed.
    pub required_mechanism: Mechanism,
    /// The crossed threshold's name, if any.
    pub threshold: Option<&'static str>,
}

impl Refusal {
    /// A refusal with no mechanism or threshold attached.
    pub fn new(reason: Reason, destination: impl Into<String>) -> Self {
        Refusal {
            reason,
            destination: destination.into(),
            required_mechanism: Mechanism::None,
            threshold: None,
        }
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
        message: refusal.reason.message(),
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = Response::new(full(json));
    *resp.status_mut() = refusal.reason.status();
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

/// A plain error response with a short JSON body: `{"error": code, "message": ..}`.
pub fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<GateBody> {
    let json = serde_json::json!({ "error": code, "message": message, "request_id": request_id });
    let mut resp = Response::new(full(json.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// 502 or 504 for an upstream failure.
pub fn upstream_failure(kind: UpstreamFailure, request_id: &str) -> Response<GateBody> {
    match kind {
        UpstreamFailure::Unreachable => error(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            "The upstream could not be reached or failed during the exchange.",
            request_id,
        ),
        UpstreamFailure::Timeout => error(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "The upstream did not answer in time.",
            request_id,
        ),
    }
}

/// 413 for a body over `inspection.max_body_bytes`.
pub fn too_large(request_id: &str) -> Response<GateBody> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "The request body is larger than the gate inspects (inspection.max_body_bytes).",
        request_id,
    )
}

/// 503 with `Retry-After: 1` when the process's buffered-bytes budget
/// (`inspection.max_buffered_bytes`) stayed spent for `timeouts.idle_seconds` while the request
/// waited for room, or a record could never fit it.
pub fn busy(request_id: &str) -> Response<GateBody> {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "gate_busy",
        "The gate holds as many request bytes as it may (inspection.max_buffered_bytes); retry shortly.",
        request_id,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// 400 for a request the gate cannot route.
pub fn bad_request(message: &str, request_id: &str) -> Response<GateBody> {
    error(StatusCode::BAD_REQUEST, "bad_request", message, request_id)
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
        assert_eq!(Reason::LedgerUnavailable.status(), 503);
        assert_eq!(Reason::Uninspectable.status(), 451);
        assert!(Reason::Tunnel.permits());
        assert!(!Reason::ApprovalPending.permits());
        assert_eq!(Reason::ForbiddenTarget.status(), 403);
        assert!(!Reason::ForbiddenTarget.permits());
    }
}
