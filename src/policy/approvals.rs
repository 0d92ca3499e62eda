//! The approvals side of the policy (SPEC §5 "Approvals"): which approvals are in force for a
//! destination, what their mechanism satisfies, which categories they cover, the fixed order
//! in which the gate prefers them, and the reason that names the real obstacle when none can
//! be relied on.

use crate::config::{Approval, ApprovalMechanism, ApprovalStatus, Config};
use crate::model::{Category, CategorySet};
use crate::policy::{Mechanism, Reason};

/// Whether an approval is in force on `today` (active and inside its dates).
pub fn in_force(a: &Approval, today: time::Date) -> bool {
    a.status == ApprovalStatus::Active && in_dates(a, today)
}

fn in_dates(a: &Approval, today: time::Date) -> bool {
    a.valid_from.is_none_or(|f| f <= today) && a.valid_until.is_none_or(|u| today <= u)
}

/// The mechanism level an approval's mechanism satisfies.
pub const fn satisfies(m: ApprovalMechanism) -> Mechanism {
    match m {
        ApprovalMechanism::SecurityAssessment => Mechanism::SecurityAssessment,
        ApprovalMechanism::StandardContract | ApprovalMechanism::Certification => {
            Mechanism::StandardContractOrCertification
        }
    }
}

/// Whether the approval covers every category in `cats` (`basic` is always covered).
pub fn covers(a: &Approval, cats: CategorySet) -> bool {
    cats.iter()
        .all(|c| c == Category::Basic || a.categories.contains(&c))
}

/// Indexes of the approvals that name `dest`.
pub fn approvals_for<'a>(cfg: &'a Config, dest: &'a str) -> impl Iterator<Item = usize> + 'a {
    cfg.approvals
        .iter()
        .enumerate()
        .filter(move |(_, a)| a.destinations.iter().any(|d| d == dest))
        .map(|(i, _)| i)
}

/// The order in which fitting approvals are tried (smallest first), independent of the file:
/// the weakest mechanism that suffices (an assessment's volume is kept for what needs one),
/// then the one that expires first (its volume would lapse unused), then the id.
pub fn preference(a: &Approval) -> (Mechanism, time::Date, &str) {
    (
        satisfies(a.mechanism),
        a.valid_until.unwrap_or(time::Date::MAX),
        a.id.as_str(),
    )
}

/// The reason when no approval in force for `dest` satisfies `need` (SPEC §5 "Reasons name the
/// real obstacle"). Only approvals whose mechanism would satisfy `need` can name their state:
/// `approval_pending`, `approval_revoked`, or `approval_expired` (active, past its last day)
/// when every such approval is in that one state; anything else — no such approval, one not
/// yet valid, a rejected one, a mix of states — is `approval_required`.
pub fn missing_reason(cfg: &Config, dest: &str, today: time::Date, need: Mechanism) -> Reason {
    let mut reason = None;
    for i in approvals_for(cfg, dest) {
        let a = &cfg.approvals[i];
        if satisfies(a.mechanism) < need {
            continue;
        }
        let r = match a.status {
            ApprovalStatus::Pending => Reason::ApprovalPending,
            ApprovalStatus::Revoked => Reason::ApprovalRevoked,
            ApprovalStatus::Active if a.valid_until.is_some_and(|u| u < today) => {
                Reason::ApprovalExpired
            }
            ApprovalStatus::Active | ApprovalStatus::Rejected => Reason::ApprovalRequired,
        };
        match reason {
            None => reason = Some(r),
            Some(x) if x == r => {}
            Some(_) => return Reason::ApprovalRequired,
        }
    }
    reason.unwrap_or(Reason::ApprovalRequired)
}
