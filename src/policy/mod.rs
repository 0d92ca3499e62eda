//! The policy: a pure function of the configuration, the date and the counts. Given what the
//! inspection found in a request and what the ledger says the counts would become, it decides
//! (SPEC §5, decision order 1–8) whether the transfer may go, which approvals it may rely on
//! (every one that fits, in a fixed order of preference), and with which *ceilings* the
//! ledger must reserve under each — so that the ledger picks the approval with room in the
//! same atomic step as the reservation, and concurrent requests can never together cross a
//! threshold the company holds no mechanism for, nor an approval's declared volume.
//!
//! No I/O, no clock, no ledger here: everything is an argument, and every boundary has a table
//! test in `tests.rs`.

mod approvals;
mod thresholds;
mod vocab;

#[cfg(test)]
mod reason_table;
#[cfg(test)]
mod tests;

use crate::config::{Config, Destination, Mode};
use crate::model::{CategorySet, Regime};
pub use approvals::{approvals_for, covers, in_force, missing_reason, preference, satisfies};
pub use thresholds::{entity_ceilings, required, utilization, Threshold};
pub use vocab::{Decision, Mechanism, Reason, Refusal};

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
    /// Reserve the request's subjects under one of the choices, then forward.
    Reserve(Reserve),
}

/// A reservation the proxy must make before forwarding.
#[derive(Debug, Clone, PartialEq)]
pub struct Reserve {
    /// `Allowed` or `Exempt`.
    pub reason: Reason,
    /// Counted in the exempt scope only (cac-2024 exemption).
    pub exempt: bool,
    /// The mechanism the counts after this request require.
    pub required: Mechanism,
    /// The ways the request may be reserved, in order of preference; the ledger takes one
    /// whose ceilings hold (SPEC §5 "which approval a request relies on"). Empty for an exempt
    /// transfer, which is counted in its own scope without ceilings.
    pub choices: Vec<Choice>,
}

/// One way of reserving a request: relying on an approval (or on none, when nothing is
/// required), with the ceilings that hold under it.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The approval relied on (index into `Config::approvals`), counted into its volume.
    pub approval: Option<usize>,
    /// The entity ceilings of the mechanism held, and the approval's volume.
    pub ceilings: Vec<CeilingSpec>,
}

/// Decides a request to the overseas destination `dest` (steps 3–7 of SPEC §5; steps 1–2 are
/// the proxy's: unknown host and unreadable body are known before any count).
///
/// `entity_after` is the entity's count *with* this request's new subjects (from a ledger
/// probe). The returned choices make the ledger re-check the same limits atomically and pick
/// the approval with room; the order of the approvals file never matters.
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
    let held = |need: Mechanism| {
        valid
            .iter()
            .copied()
            .filter(move |&i| satisfies(cfg.approvals[i].mechanism) >= need)
    };

    // 3. Important data needs a security assessment, PI or not.
    if facts.important_data && held(Mechanism::SecurityAssessment).next().is_none() {
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
            required: Mechanism::None,
            choices: Vec::new(),
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
    let mut choices = Vec::new();
    if need == Mechanism::None {
        choices.push(Choice {
            approval: None,
            ceilings: entity(entity_ceilings(e.regime, Mechanism::None)),
        });
    } else if held(need).next().is_none() {
        return Plan::Refuse(refusal(
            missing_reason(cfg, &dest.name, today, need),
            dest,
            need,
            threshold,
        ));
    }
    // 6. The request's categories covered. With nothing required, an approval that covers
    //    them is a fallback for a race that raises the requirement before the reservation.
    let mut fitting: Vec<usize> = held(need)
        .filter(|&i| covers(&cfg.approvals[i], facts.categories))
        .collect();
    if choices.is_empty() && fitting.is_empty() {
        return Plan::Refuse(refusal(Reason::CategoryNotApproved, dest, need, threshold));
    }
    // 7. Volume: every fitting approval is a choice, with its volume as ceilings; the ledger
    //    takes one with room, in this order (never the file's).
    fitting.sort_by(|&a, &b| preference(&cfg.approvals[a]).cmp(&preference(&cfg.approvals[b])));
    for i in fitting {
        let a = &cfg.approvals[i];
        let mut ceilings = entity(entity_ceilings(e.regime, satisfies(a.mechanism)));
        for (class, max) in [
            (CountClass::All, a.max_subjects),
            (CountClass::Sensitive, a.max_sensitive_subjects),
        ] {
            if let Some(max_after) = max {
                ceilings.push(CeilingSpec {
                    scope: CeilingScope::Approval(i),
                    class,
                    max_after,
                });
            }
        }
        choices.push(Choice {
            approval: Some(i),
            ceilings,
        });
    }
    Plan::Reserve(Reserve {
        reason: Reason::Allowed,
        exempt: false,
        required: need,
        choices,
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

/// In observe mode a refusal is forwarded and recorded as `would_block`.
pub fn enforce(cfg: &Config) -> bool {
    cfg.gate.mode == Mode::Enforce
}
