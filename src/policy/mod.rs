//! The policy: a pure function of the configuration, the date and the counts. Given what the
//! inspection found in a request and what the ledger says the counts would become, it decides
//! (SPEC §5, decision order 1–8) whether the transfer may go, under which approval, and with
//! which *ceilings* the ledger must reserve — so that concurrent requests can never together
//! cross a threshold the company holds no mechanism for, nor an approval's declared volume.
//!
//! No I/O, no clock, no ledger here: everything is an argument, and every boundary has a table
//! test in `tests.rs`.

mod thresholds;

#[cfg(test)]
mod tests;

use crate::config::{Approval, ApprovalMechanism, ApprovalStatus, Config, Destination, Mode};
use crate::model::{Category, CategorySet, Regime};
use crate::respond::{Mechanism, Reason, Refusal};
pub use thresholds::{entity_ceilings, required, utilization, Threshold};

/// Distinct-subject counts of one scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// All subjects.
    pub all: u64,
    /// Sensitive subjects.
    pub sensitive: u64,
}

impl Counts {
    /// Component-wise sum.
    #[must_use]
    pub const fn plus(self, o: Counts) -> Counts {
        Counts {
            all: self.all + o.all,
            sensitive: self.sensitive + o.sensitive,
        }
    }
}

/// The class a ceiling applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CountClass {
    /// All subjects.
    All,
    /// Sensitive subjects.
    Sensitive,
}

/// The scope a ceiling applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CeilingScope {
    /// The entity (all non-exempt overseas destinations together).
    Entity,
    /// An approval's shared volume, by index into `Config::approvals`.
    Approval(usize),
}

/// "After this reservation, the count of `scope`/`class` must be at most `max_after`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CeilingSpec {
    /// Which scope.
    pub scope: CeilingScope,
    /// Which class.
    pub class: CountClass,
    /// The largest count allowed after the reservation.
    pub max_after: u64,
}

/// What the inspection (and the request head) established about a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts {
    /// The request carries at least one data subject.
    pub has_pi: bool,
    /// The union of the categories of all its records (`basic` when nothing more specific).
    pub categories: CategorySet,
    /// An important-data rule matched (path or field).
    pub important_data: bool,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Refuse (or, in observe mode, forward and record `would_block`).
    Refuse(Refusal),
    /// Let through without counting (no PI).
    Pass(Reason),
    /// Reserve the request's subjects with these ceilings, then forward.
    Reserve(Reserve),
}

/// A reservation the proxy must make before forwarding.
#[derive(Debug, Clone, PartialEq)]
pub struct Reserve {
    /// `Allowed` or `Exempt`.
    pub reason: Reason,
    /// Counted in the exempt scope only (cac-2024 exemption).
    pub exempt: bool,
    /// The approval relied on, by index into `Config::approvals`.
    pub approval: Option<usize>,
    /// The mechanism the counts after this request require.
    pub required: Mechanism,
    /// Ceilings the ledger must hold atomically.
    pub ceilings: Vec<CeilingSpec>,
}

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

/// Decides a request to the overseas destination `dest` (steps 3–7 of SPEC §5; steps 1–2 are
/// the proxy's: unknown host and unreadable body are known before any count).
///
/// `entity_after` is the entity's count *with* this request's new subjects (from a ledger
/// probe). The returned ceilings make the ledger re-check the same limits atomically.
pub fn decide(
    cfg: &Config,
    dest: &Destination,
    facts: Facts,
    entity_after: Counts,
    today: time::Date,
) -> Plan {
    let e = &cfg.entity;
    let valid: Vec<usize> = approvals_for(cfg, &dest.name)
        .filter(|&i| in_force(&cfg.approvals[i], today))
        .collect();
    let best = |need: Mechanism| {
        valid
            .iter()
            .copied()
            .filter(move |&i| satisfies(cfg.approvals[i].mechanism) >= need)
    };

    // 3. Important data needs a security assessment, PI or not.
    if facts.important_data && best(Mechanism::SecurityAssessment).next().is_none() {
        return Plan::Refuse(refusal(
            Reason::ImportantData,
            dest,
            Mechanism::SecurityAssessment,
            Some(Threshold::ImportantData),
        ));
    }
    // 4. No PI, or an exempt destination.
    if !facts.has_pi {
        return Plan::Pass(Reason::NoPi);
    }
    if dest.exemption.is_some() && e.regime == Regime::Cac2024 {
        return Plan::Reserve(Reserve {
            reason: Reason::Exempt,
            exempt: true,
            approval: None,
            required: Mechanism::None,
            ceilings: Vec::new(),
        });
    }
    // 5. The mechanism the counts after this request require, held for this destination.
    let (need, threshold) = required(
        e.regime,
        e.ciio,
        e.pi_subjects_processed,
        entity_after,
        facts.important_data,
    );
    if need == Mechanism::None {
        return Plan::Reserve(Reserve {
            reason: Reason::Allowed,
            exempt: false,
            approval: None,
            required: need,
            ceilings: entity(entity_ceilings(e.regime, Mechanism::None)),
        });
    }
    let candidates: Vec<usize> = best(need).collect();
    if candidates.is_empty() {
        return Plan::Refuse(refusal(
            missing_reason(cfg, &dest.name, today, need),
            dest,
            need,
            threshold,
        ));
    }
    // 6. The request's categories covered by one of them.
    let Some(chosen) = candidates
        .iter()
        .copied()
        .find(|&i| covers(&cfg.approvals[i], facts.categories))
    else {
        return Plan::Refuse(refusal(Reason::CategoryNotApproved, dest, need, threshold));
    };
    // 7. Volume: enforced by the ledger as ceilings on the approval's shared scope.
    let a = &cfg.approvals[chosen];
    let mut ceilings = entity(entity_ceilings(e.regime, satisfies(a.mechanism)));
    if let Some(max) = a.max_subjects {
        ceilings.push(CeilingSpec {
            scope: CeilingScope::Approval(chosen),
            class: CountClass::All,
            max_after: max,
        });
    }
    if let Some(max) = a.max_sensitive_subjects {
        ceilings.push(CeilingSpec {
            scope: CeilingScope::Approval(chosen),
            class: CountClass::Sensitive,
            max_after: max,
        });
    }
    Plan::Reserve(Reserve {
        reason: Reason::Allowed,
        exempt: false,
        approval: Some(chosen),
        required: need,
        ceilings,
    })
}

fn entity(list: Vec<(CountClass, u64)>) -> Vec<CeilingSpec> {
    list.into_iter()
        .map(|(class, max_after)| CeilingSpec {
            scope: CeilingScope::Entity,
            class,
            max_after,
        })
        .collect()
}

/// The reason when no approval in force satisfies the need: the specific state of the only
/// approval there is, else `approval_required`.
fn missing_reason(cfg: &Config, dest: &str, today: time::Date, need: Mechanism) -> Reason {
    let named: Vec<usize> = approvals_for(cfg, dest).collect();
    let [only] = named.as_slice() else {
        return Reason::ApprovalRequired;
    };
    let a = &cfg.approvals[*only];
    match a.status {
        ApprovalStatus::Pending => Reason::ApprovalPending,
        ApprovalStatus::Revoked => Reason::ApprovalRevoked,
        ApprovalStatus::Rejected => Reason::ApprovalRequired,
        ApprovalStatus::Active if !in_dates(a, today) && satisfies(a.mechanism) >= need => {
            Reason::ApprovalExpired
        }
        ApprovalStatus::Active => Reason::ApprovalRequired,
    }
}

fn refusal(
    reason: Reason,
    dest: &Destination,
    need: Mechanism,
    threshold: Option<Threshold>,
) -> Refusal {
    Refusal {
        reason,
        destination: dest.name.clone(),
        required_mechanism: need,
        threshold: threshold.map(Threshold::as_str),
    }
}

/// Explains a ceiling the ledger refused: the counts it would have reached, and the refusal
/// the client gets. `entity_after` is the probe's view, corrected with the ledger's figures.
pub fn explain(
    cfg: &Config,
    dest: &Destination,
    facts: Facts,
    ceiling: CeilingSpec,
    would_be: u64,
    mut entity_after: Counts,
) -> Refusal {
    let e = &cfg.entity;
    match ceiling.scope {
        CeilingScope::Entity => {
            match ceiling.class {
                CountClass::All => entity_after.all = entity_after.all.max(would_be),
                CountClass::Sensitive => {
                    entity_after.sensitive = entity_after.sensitive.max(would_be)
                }
            }
            let (need, threshold) = required(
                e.regime,
                e.ciio,
                e.pi_subjects_processed,
                entity_after,
                facts.important_data,
            );
            refusal(Reason::ApprovalRequired, dest, need, threshold)
        }
        CeilingScope::Approval(_) => {
            let (need, _) = required(
                e.regime,
                e.ciio,
                e.pi_subjects_processed,
                entity_after,
                facts.important_data,
            );
            refusal(Reason::ApprovalVolumeExceeded, dest, need, None)
        }
    }
}

/// In observe mode a refusal is forwarded and recorded as `would_block`.
pub fn enforce(cfg: &Config) -> bool {
    cfg.gate.mode == Mode::Enforce
}
