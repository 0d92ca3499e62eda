//! The outcome phase: a decision counted in `transfer_gate_decisions_total` (and a refusal in
//! the report's activity, [`Gate::count_decision`]), written to the audit log, and — for a
//! refusal — rendered by [`crate::respond`].

use super::enforce;
use super::gated::Summary;
use super::{Gate, Snapshot};
use crate::audit::AuditRecord;
use crate::policy::{Decision, Reason, Refusal};
use crate::respond::{self, GateBody};
use http::Response;

/// Records a decision of `client` (a name or `unidentified`) in
/// `transfer_gate_decisions_total` (and a refusal in the report's activity).
pub(crate) fn count(gate: &Gate, destination: &str, reason: Reason, client: &str) -> Decision {
    let decision = if reason.permits() {
        Decision::Allow
    } else {
        Decision::Block
    };
    gate.count_decision(destination, decision, reason, client);
    decision
}

/// Refuses with the 451/403/407/503 JSON of SPEC §5 and counts the decision of `client`.
pub(crate) fn refuse(
    gate: &Gate,
    snap: &Snapshot,
    refusal: Refusal,
    request_id: &str,
    client: &str,
) -> (Response<GateBody>, Decision) {
    let decision = count(gate, &refusal.destination, refusal.reason, client);
    tracing::info!(request_id, destination = %refusal.destination, reason = refusal.reason.as_str(), "transfer refused");
    (
        respond::blocked(&refusal, request_id, snap.blocked_by.as_ref()),
        decision,
    )
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
    let client = audit.client_name.clone();
    gate.audit.record(audit).await;
    let client = client.as_deref().unwrap_or(crate::config::UNIDENTIFIED);
    refuse(gate, snap, refusal, request_id, client)
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
pub(crate) async fn finish(
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
    gate.count_decision(dest, decision, reason, audit.client_name());
    // What the client sent and newly counted there (its requests are counted above).
    let sent = crate::ledger::activity::ClientDelta {
        bytes: audit.bytes,
        new_subjects: s.new_here.all,
        new_sensitive_subjects: s.new_here.sensitive,
        ..Default::default()
    };
    gate.report_activity
        .client(gate.clock.now(), dest, audit.client_name(), sent);
    gate.audit.record(audit).await;
    decision
}
