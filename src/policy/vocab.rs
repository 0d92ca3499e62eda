//! The domain vocabulary of a decision (SPEC §5 "Value sets"): why a request was let through or
//! refused ([`Reason`]), the mechanism a transfer requires ([`Mechanism`]), a refusal with its
//! details ([`Refusal`]) and the decision itself ([`Decision`]). Their strings are the spec's:
//! one source for the 451 body, the audit line and the metric labels, so every label stays
//! bounded by the code, never by request data. How they are rendered to HTTP is
//! `crate::respond`'s business.

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
    /// The request's client is not in the destination's `clients` allowlist: 403.
    ClientNotAllowed,
    /// The request's client could not be identified where it must be (a `Proxy-Authorization`
    /// that does not verify, or `gate.unidentified = "refuse"`): 407.
    ClientUnidentified,
}

impl Reason {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [Reason; 19] = [
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
        Reason::ClientNotAllowed,
        Reason::ClientUnidentified,
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
            Reason::ClientNotAllowed => "client_not_allowed",
            Reason::ClientUnidentified => "client_unidentified",
        }
    }

    /// Whether this reason lets the traffic through.
    pub const fn permits(self) -> bool {
        matches!(
            self,
            Reason::Allowed | Reason::NoPi | Reason::Domestic | Reason::Exempt | Reason::Tunnel
        )
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

/// What the gate did with a request (SPEC §5 "decision").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Forwarded.
    Allow,
    /// Refused.
    Block,
    /// Forwarded in observe mode, but enforcement would have refused it.
    WouldBlock,
}

impl Decision {
    /// Every value, for metric series.
    pub const ALL: [Decision; 3] = [Decision::Allow, Decision::Block, Decision::WouldBlock];

    /// The exact string of the spec.
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Block => "block",
            Decision::WouldBlock => "would_block",
        }
    }
}

crate::model::serde_as_str!(Reason, Mechanism, Decision);
