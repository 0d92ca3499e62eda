//! `transfer-gate assess`: from the running gate's `/v1/status` and `/v1/history`, the
//! mechanism required now; per threshold the current count, the 30-day rate and the date it
//! will be crossed at that rate; when to start the application for the mechanism a crossing
//! requires (security assessment: from 18 to 6 months ahead; standard contract or
//! certification: from 6 months to 30 days ahead); and each approval's renewal (from 6 months
//! before expiry; a security assessment's 60-working-day deadline under `cac-2022`, its
//! 60-working-day extension window under `cac-2024`).
//!
//! This file is the model: the parts of the two documents the planner reads ([`Status`],
//! [`History`]) and the assessment it writes ([`Assessment`], `assess --json`). The planning
//! is a pure function of the two documents ([`compute`]), so the date arithmetic
//! ([`calendar`]) has unit tests; [`render`] turns an assessment into text for a person.

mod calendar;
mod compute;
mod render;

pub use calendar::{
    add_months, is_working_day, working_days_before, MonthDay, HOLIDAYS, RENEWAL_WORKING_DAYS,
};
pub use compute::{assess, crossing, rate, threshold_mechanism, Crossing, Rate, RateSource};
pub use render::render;

use crate::config::{ApprovalMechanism, ApprovalStatus};
use crate::model::Regime;
use crate::policy::{Mechanism, Threshold};
use serde::{Deserialize, Serialize};
use time::Date;

/// The parts of `/v1/status` the planner reads (other fields are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Status {
    /// The entity's name.
    pub entity: Option<String>,
    /// The regime (`cac-2024` when absent).
    pub regime: Option<Regime>,
    /// Today in Asia/Shanghai.
    #[serde(deserialize_with = "date::lenient")]
    pub today: Option<Date>,
    /// The mechanism the entity's counts require now.
    pub required_mechanism: Option<Mechanism>,
    /// The threshold that requires it.
    pub required_because: Option<Threshold>,
    /// The entity's counts in the window.
    pub entity_subjects: Option<SubjectCounts>,
    /// Each threshold of the regime with the entity's count.
    pub thresholds: Vec<ThresholdCount>,
    /// Each destination with its counts.
    pub destinations: Vec<DestinationCount>,
    /// The approval register with each approval's state.
    pub approvals: Vec<ApprovalEntry>,
}

/// Subjects counted, all and sensitive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubjectCounts {
    /// All subjects.
    pub all: u64,
    /// Sensitive subjects.
    pub sensitive: u64,
}

/// A threshold of `/v1/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct ThresholdCount {
    /// Which threshold.
    pub name: Threshold,
    /// The entity's count against it.
    #[serde(default)]
    pub count: u64,
    /// Its limit.
    #[serde(default = "one")]
    pub limit: u64,
}

fn one() -> u64 {
    1
}

/// A destination of `/v1/status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DestinationCount {
    /// Its name.
    pub name: String,
    /// Subjects it received in the window.
    pub subjects: u64,
    /// Its exemption, if any (exempt destinations need no mechanism under `cac-2024`).
    pub exemption: Option<String>,
}

/// An approval of `/v1/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct ApprovalEntry {
    /// Its id.
    #[serde(default)]
    pub id: String,
    /// Its mechanism.
    pub mechanism: ApprovalMechanism,
    /// Its status in the register.
    pub status: ApprovalStatus,
    /// Its state today.
    #[serde(default)]
    pub state: ApprovalState,
    /// The destinations it covers.
    #[serde(default)]
    pub destinations: Vec<String>,
    /// The categories it covers.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Its last valid day.
    #[serde(default, deserialize_with = "date::lenient")]
    pub valid_until: Option<Date>,
}

/// An approval's state today, as far as the planner cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Active and inside its dates.
    InForce,
    /// Active, its first day still to come.
    NotYetValid,
    /// Expired, pending, rejected or revoked.
    #[default]
    #[serde(other)]
    Other,
}

impl ApprovalState {
    /// Whether the approval holds (now, or from a date still to come).
    pub fn holds(self) -> bool {
        matches!(self, ApprovalState::InForce | ApprovalState::NotYetValid)
    }
}

/// The parts of `/v1/history` the planner reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct History {
    /// Today in Asia/Shanghai.
    #[serde(deserialize_with = "date::lenient")]
    pub today: Option<Date>,
    /// The entity's daily cumulative newly-counted subjects.
    pub days: Vec<DaySample>,
    /// The entity's monthly tallies of newly-counted subjects.
    pub entity_months: Vec<MonthTally>,
}

/// A daily sample: the cumulative count of new subjects at the end of `date`.
#[derive(Debug, Clone, Deserialize)]
pub struct DaySample {
    /// The day (a sample whose date does not parse is ignored).
    #[serde(default, deserialize_with = "date::lenient")]
    pub date: Option<Date>,
    /// All subjects.
    pub all: u64,
    /// Sensitive subjects.
    pub sensitive: u64,
}

/// New subjects of one month.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MonthTally {
    /// `YYYY-MM`.
    pub month: String,
    /// All subjects.
    pub subjects: u64,
    /// Sensitive subjects.
    pub sensitive_subjects: u64,
}

/// The assessment document (`assess --json`). Fields are declared in alphabetical order: the
/// JSON keys come out sorted, as they always have.
#[derive(Debug, Clone, Serialize)]
pub struct Assessment {
    /// Actions due now (the exit code is 1 when any).
    pub actions_due: usize,
    /// The entity's name.
    pub entity: Option<String>,
    /// The entity's counts in the window, as `/v1/status` gave them.
    pub entity_subjects: Option<SubjectCounts>,
    /// New subjects in the last 30 days.
    pub rate_30_days: Rate,
    /// The regime.
    pub regime: Regime,
    /// Each active approval with an expiry date: its renewal.
    pub renewals: Vec<Renewal>,
    /// The threshold that requires the mechanism now.
    pub required_because: Option<Threshold>,
    /// The mechanism the entity's counts require now.
    pub required_mechanism: Option<Mechanism>,
    /// The destinations without (or only applied for) the mechanism required now.
    pub required_now: Destinations,
    /// Each threshold: its crossing and the application it calls for.
    pub thresholds: Vec<ThresholdPlan>,
    /// Today.
    #[serde(serialize_with = "date::text")]
    pub today: Date,
}

/// Destinations that receive PI without a mechanism: none held nor applied for, or applied for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Destinations {
    /// Applied for (a pending approval), none held.
    pub destinations_pending: Vec<String>,
    /// Neither held nor applied for.
    pub destinations_without: Vec<String>,
}

/// One threshold: when it is crossed at the current rate, and the application it calls for.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdPlan {
    /// The application for the mechanism the crossing requires.
    pub application: Application,
    /// The entity's count.
    pub count: u64,
    /// When it is crossed.
    pub crossing: CrossingWhen,
    /// On which date (today when already crossed).
    #[serde(serialize_with = "date::opt_text")]
    pub crossing_date: Option<Date>,
    /// The limit.
    pub limit: u64,
    /// The mechanism the crossing requires.
    pub mechanism: Mechanism,
    /// Which threshold.
    pub name: Threshold,
    /// The rate it grows by in 30 days (none for the declared `pi_processed_1000000`).
    pub rate_30_days: Option<u64>,
}

/// When a threshold is crossed ([`Crossing`] without its date).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CrossingWhen {
    /// Already.
    Crossed,
    /// In the current counting window.
    ThisWindow,
    /// In the next counting window.
    NextWindow,
    /// Not at this rate.
    NotAtThisRate,
}

/// The application a crossing calls for.
#[derive(Debug, Clone, Serialize)]
pub struct Application {
    /// The destinations that hold no approval of the mechanism (pending ones apart).
    #[serde(flatten)]
    pub destinations: Destinations,
    /// The last day to start it.
    #[serde(serialize_with = "date::opt_text")]
    pub latest_start: Option<Date>,
    /// The first day to start it.
    #[serde(serialize_with = "date::opt_text")]
    pub opens: Option<Date>,
    /// Where it stands.
    pub state: ApplicationState,
}

/// Where an application stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationState {
    /// The threshold is not crossed at this rate.
    NotNeededAtThisRate,
    /// Every destination holds the mechanism.
    Held,
    /// Every destination without it has applied.
    Applied,
    /// Crossed, and a destination holds nothing.
    Overdue,
    /// The latest start has passed.
    Late,
    /// Inside the window to start.
    Open,
    /// Before the window to start.
    NotYet,
}

/// An approval's renewal.
#[derive(Debug, Clone, Serialize)]
pub struct Renewal {
    /// The last day to apply for the renewal.
    #[serde(serialize_with = "date::opt_text")]
    pub apply_by: Option<Date>,
    /// The approval's id.
    pub approval: String,
    /// Days from today to its last valid day.
    pub days_to_expiry: i64,
    /// The first day of a security assessment's extension window (`cac-2024`).
    #[serde(serialize_with = "date::opt_text")]
    pub extension_window_from: Option<Date>,
    /// Its mechanism.
    pub mechanism: ApprovalMechanism,
    /// The day to start preparing the renewal.
    #[serde(serialize_with = "date::text")]
    pub start_from: Date,
    /// Where it stands.
    pub state: RenewalState,
    /// The approval that takes over (active or pending), if any.
    pub successor: Option<String>,
    /// Its last valid day.
    #[serde(serialize_with = "date::text")]
    pub valid_until: Date,
}

/// Where a renewal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RenewalState {
    /// A successor is pending.
    RenewalApplied,
    /// A successor is active.
    Renewed,
    /// Past its last valid day.
    Expired,
    /// Inside a security assessment's extension window.
    ExtensionWindowOpen,
    /// Past the day to apply by.
    Late,
    /// Inside the window to prepare it.
    Open,
    /// Before that window.
    NotYet,
}

impl ApplicationState {
    /// Whether it is an action due now.
    pub fn is_due(self) -> bool {
        matches!(
            self,
            ApplicationState::Open | ApplicationState::Late | ApplicationState::Overdue
        )
    }
}

impl RenewalState {
    /// Whether it is an action due now.
    pub fn is_due(self) -> bool {
        matches!(
            self,
            RenewalState::Open
                | RenewalState::Late
                | RenewalState::Expired
                | RenewalState::ExtensionWindowOpen
        )
    }
}

/// Dates as `YYYY-MM-DD` in the documents.
mod date {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::Date;

    /// A date, `None` when absent, null or not a `YYYY-MM-DD` date.
    pub fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Date>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.and_then(|s| {
            Date::parse(
                &s,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .ok()
        }))
    }

    pub fn text<S: Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn opt_text<S: Serializer>(d: &Option<Date>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(d),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests;
