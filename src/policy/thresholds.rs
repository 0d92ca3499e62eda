//! The thresholds of each regime (SPEC §5 "Required mechanism"): which mechanism a set of
//! entity counts requires, the ceilings a held mechanism allows, and each threshold's
//! utilisation for the metrics.

use super::{CountClass, Counts};
use crate::model::Regime;
use crate::policy::Mechanism;

/// A named threshold (SPEC §5 value set `threshold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Threshold {
    /// The entity is a critical information infrastructure operator.
    Ciio,
    /// Important data.
    ImportantData,
    /// cac-2022: PI of ≥ 1,000,000 people processed (declared).
    PiProcessed1M,
    /// ≥ 100,000 subjects in the window.
    Subjects100k,
    /// cac-2024: ≥ 1,000,000 subjects in the window.
    Subjects1M,
    /// ≥ 10,000 sensitive subjects in the window.
    Sensitive10k,
    /// cac-2024: any sensitive subject.
    AnySensitive,
}

impl Threshold {
    /// Every threshold.
    pub const ALL: [Threshold; 7] = [
        Threshold::Ciio,
        Threshold::ImportantData,
        Threshold::PiProcessed1M,
        Threshold::Subjects100k,
        Threshold::Subjects1M,
        Threshold::Sensitive10k,
        Threshold::AnySensitive,
    ];

    /// The exact string of the spec.
    pub const fn as_str(self) -> &'static str {
        match self {
            Threshold::Ciio => "ciio",
            Threshold::ImportantData => "important_data",
            Threshold::PiProcessed1M => "pi_processed_1000000",
            Threshold::Subjects100k => "subjects_100000",
            Threshold::Subjects1M => "subjects_1000000",
            Threshold::Sensitive10k => "sensitive_subjects_10000",
            Threshold::AnySensitive => "any_sensitive",
        }
    }
}

crate::model::serde_as_str!(Threshold);

/// The mechanism `after` (entity counts including the request) requires, and the threshold
/// that makes it so (the highest one crossed). With no PI at all, nothing is required.
pub fn required(
    regime: Regime,
    ciio: bool,
    pi_processed: u64,
    after: Counts,
    important: bool,
) -> (Mechanism, Option<Threshold>) {
    use Mechanism::*;
    if important {
        return (SecurityAssessment, Some(Threshold::ImportantData));
    }
    if after.all == 0 && after.sensitive == 0 {
        return (None, Option::None);
    }
    if ciio {
        return (SecurityAssessment, Some(Threshold::Ciio));
    }
    match regime {
        Regime::Cac2022 => {
            if pi_processed >= 1_000_000 {
                (SecurityAssessment, Some(Threshold::PiProcessed1M))
            } else if after.all >= 100_000 {
                (SecurityAssessment, Some(Threshold::Subjects100k))
            } else if after.sensitive >= 10_000 {
                (SecurityAssessment, Some(Threshold::Sensitive10k))
            } else {
                (StandardContractOrCertification, Option::None)
            }
        }
        Regime::Cac2024 => {
            if after.all >= 1_000_000 {
                (SecurityAssessment, Some(Threshold::Subjects1M))
            } else if after.sensitive >= 10_000 {
                (SecurityAssessment, Some(Threshold::Sensitive10k))
            } else if after.all >= 100_000 {
                (
                    StandardContractOrCertification,
                    Some(Threshold::Subjects100k),
                )
            } else if after.sensitive >= 1 {
                (
                    StandardContractOrCertification,
                    Some(Threshold::AnySensitive),
                )
            } else {
                (None, Option::None)
            }
        }
    }
}

/// The largest entity counts a held mechanism allows (the ceilings the ledger enforces).
/// `Mechanism::None` under cac-2022 allows no PI at all, which [`required`] already refuses.
pub fn entity_ceilings(regime: Regime, held: Mechanism) -> Vec<(CountClass, u64)> {
    match (regime, held) {
        (_, Mechanism::SecurityAssessment) => vec![],
        (Regime::Cac2024, Mechanism::None) => {
            vec![(CountClass::All, 99_999), (CountClass::Sensitive, 0)]
        }
        (Regime::Cac2024, Mechanism::StandardContractOrCertification) => {
            vec![(CountClass::All, 999_999), (CountClass::Sensitive, 9_999)]
        }
        (Regime::Cac2022, Mechanism::None) => {
            vec![(CountClass::All, 0), (CountClass::Sensitive, 0)]
        }
        (Regime::Cac2022, Mechanism::StandardContractOrCertification) => {
            vec![(CountClass::All, 99_999), (CountClass::Sensitive, 9_999)]
        }
    }
}

/// Each count threshold of the regime with its utilisation (count ÷ limit).
pub fn utilization(regime: Regime, pi_processed: u64, c: Counts) -> Vec<(Threshold, u64, f64)> {
    let r = |count: u64, limit: u64| count as f64 / limit as f64;
    match regime {
        Regime::Cac2022 => vec![
            (Threshold::Subjects100k, 100_000, r(c.all, 100_000)),
            (Threshold::Sensitive10k, 10_000, r(c.sensitive, 10_000)),
            (
                Threshold::PiProcessed1M,
                1_000_000,
                r(pi_processed, 1_000_000),
            ),
        ],
        Regime::Cac2024 => vec![
            (Threshold::Subjects100k, 100_000, r(c.all, 100_000)),
            (Threshold::Subjects1M, 1_000_000, r(c.all, 1_000_000)),
            (Threshold::Sensitive10k, 10_000, r(c.sensitive, 10_000)),
            (Threshold::AnySensitive, 1, r(c.sensitive, 1)),
        ],
    }
}
