//! The planning itself, a pure function of the two documents: the 30-day rate, each
//! threshold's crossing date at that rate, the application window for the mechanism it
//! requires, which destinations lack that mechanism, and each approval's renewal.

use super::calendar::{add_months, working_days_before, RENEWAL_WORKING_DAYS};
use super::{
    ApplicationState, ApprovalEntry, Assessment, CrossingWhen, Destinations, History, Renewal,
    RenewalState, Status, ThresholdPlan,
};
use crate::config::ApprovalStatus;
use crate::model::Regime;
use crate::policy::{satisfies, Mechanism, Threshold};
use serde::Serialize;
use time::{Date, Duration, Month};

/// New entity subjects in the last 30 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rate {
    /// All subjects.
    pub all: u64,
    /// Sensitive subjects.
    pub sensitive: u64,
    /// Where the figures come from.
    pub source: RateSource,
}

/// Where a [`Rate`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateSource {
    /// The gate's daily samples cover 30 days.
    Daily,
    /// This month's tally plus a share of last month's.
    MonthlyEstimate,
}

/// The 30-day rate from `/v1/history`: the difference of the daily cumulative samples over 30
/// days when they reach back that far; otherwise this month's tally plus the matching share of
/// last month's (an estimate).
pub fn rate(history: &History, today: Date) -> Rate {
    let days: Vec<(Date, u64, u64)> = history
        .days
        .iter()
        .filter_map(|d| Some((d.date?, d.all, d.sensitive)))
        .collect();
    let cut = today - Duration::days(30);
    let base = days.iter().filter(|d| d.0 <= cut).max_by_key(|d| d.0);
    let last = days.iter().filter(|d| d.0 <= today).max_by_key(|d| d.0);
    if let (Some(b), Some(l)) = (base, last) {
        return Rate {
            all: l.1.saturating_sub(b.1),
            sensitive: l.2.saturating_sub(b.2),
            source: RateSource::Daily,
        };
    }
    let month_of = |d: Date| format!("{:04}-{:02}", d.year(), u8::from(d.month()));
    let tally = |m: &str| {
        history
            .entity_months
            .iter()
            .filter(|t| t.month == m)
            .fold((0u64, 0u64), |a, t| {
                (a.0 + t.subjects, a.1 + t.sensitive_subjects)
            })
    };
    let (mut all, mut sensitive) = tally(&month_of(today));
    let elapsed = u64::from(today.day());
    if elapsed < 30 {
        let prev_day = today.replace_day(1).ok().and_then(Date::previous_day);
        if let Some(p) = prev_day {
            let (pa, ps) = tally(&month_of(p));
            let len = u64::from(p.day());
            let share = (30 - elapsed).min(len);
            all += (pa * share).div_ceil(len);
            sensitive += (ps * share).div_ceil(len);
        }
    }
    Rate {
        all,
        sensitive,
        source: RateSource::MonthlyEstimate,
    }
}

/// When a threshold is crossed at a constant rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    /// Already at or over the limit.
    Crossed,
    /// In the current counting window, on this date.
    On(Date),
    /// Not in this window (cac-2024 counts restart on January 1), but in the next, on this date.
    NextWindow(Date),
    /// Not at this rate (no growth, or every window restarts before reaching it).
    NotAtThisRate,
}

impl Crossing {
    /// When, and on which date (today when already crossed).
    fn when(self, today: Date) -> (CrossingWhen, Option<Date>) {
        match self {
            Crossing::Crossed => (CrossingWhen::Crossed, Some(today)),
            Crossing::On(d) => (CrossingWhen::ThisWindow, Some(d)),
            Crossing::NextWindow(d) => (CrossingWhen::NextWindow, Some(d)),
            Crossing::NotAtThisRate => (CrossingWhen::NotAtThisRate, None),
        }
    }
}

/// The crossing date of `limit` from `count` growing by `per_30_days`. Under `cac-2024` the
/// count restarts at zero on January 1; under `cac-2022` the projection ignores the drop of
/// the oldest year at the roll-over (an earlier date: the safe side).
pub fn crossing(regime: Regime, count: u64, limit: u64, per_30_days: u64, today: Date) -> Crossing {
    if count >= limit {
        return Crossing::Crossed;
    }
    if per_30_days == 0 {
        return Crossing::NotAtThisRate;
    }
    let days_for = |need: u64| (need * 30).div_ceil(per_30_days);
    let days = days_for(limit - count);
    if days > 3650 {
        return Crossing::NotAtThisRate;
    }
    let on = today + Duration::days(days as i64);
    if regime != Regime::Cac2024 || on.year() == today.year() {
        return Crossing::On(on);
    }
    let Ok(jan1) = Date::from_calendar_date(today.year() + 1, Month::January, 1) else {
        return Crossing::NotAtThisRate;
    };
    // Counting from zero, the first new subject is counted on January 1 (day 1).
    let d = days_for(limit).max(1);
    let next = jan1 + Duration::days(d as i64 - 1);
    if next.year() == jan1.year() {
        Crossing::NextWindow(next)
    } else {
        Crossing::NotAtThisRate
    }
}

/// The mechanism a threshold of the regime requires.
pub fn threshold_mechanism(regime: Regime, threshold: Threshold) -> Mechanism {
    match (regime, threshold) {
        (Regime::Cac2024, Threshold::Subjects100k | Threshold::AnySensitive) => {
            Mechanism::StandardContractOrCertification
        }
        _ => Mechanism::SecurityAssessment,
    }
}

/// The rate a threshold grows by: none for the declared count of PI processed, the sensitive
/// subjects' for the sensitive thresholds, all subjects' for the others.
fn threshold_rate(threshold: Threshold, r: Rate) -> Option<u64> {
    match threshold {
        Threshold::PiProcessed1M => None,
        Threshold::Sensitive10k | Threshold::AnySensitive => Some(r.sensitive),
        Threshold::Ciio
        | Threshold::ImportantData
        | Threshold::Subjects100k
        | Threshold::Subjects1M => Some(r.all),
    }
}

/// Whether approval `a` is of at least mechanism `need`.
fn at_least(a: &ApprovalEntry, need: Mechanism) -> bool {
    satisfies(a.mechanism) >= need
}

/// The destinations that receive PI (non-exempt) and hold no approval of at least `mechanism`
/// valid on `on`, split into missing and applied-for with a pending approval.
fn missing(status: &Status, mechanism: Mechanism, on: Option<Date>) -> Destinations {
    let mut out = Destinations::default();
    for d in &status.destinations {
        if d.exemption.is_some() && status.regime == Some(Regime::Cac2024) {
            continue;
        }
        if d.subjects == 0 {
            continue;
        }
        let mut mine = status
            .approvals
            .iter()
            .filter(|a| at_least(a, mechanism) && a.destinations.contains(&d.name));
        let held = mine.clone().any(|a| {
            a.state.holds()
                && match (on, a.valid_until) {
                    (Some(on), Some(u)) => u >= on,
                    _ => true,
                }
        });
        if held {
            continue;
        }
        if mine.any(|a| a.status == ApprovalStatus::Pending) {
            out.destinations_pending.push(d.name.clone());
        } else {
            out.destinations_without.push(d.name.clone());
        }
    }
    out
}

/// The assessment of the two documents (`assess --json`).
pub fn assess(status: &Status, history: &History) -> Assessment {
    let today = status.today.or(history.today).unwrap_or(Date::MIN);
    let regime = status.regime.unwrap_or(Regime::Cac2024);
    let r = rate(history, today);
    let thresholds: Vec<ThresholdPlan> = status
        .thresholds
        .iter()
        .map(|t| {
            let per30 = threshold_rate(t.name, r);
            let c = crossing(regime, t.count, t.limit, per30.unwrap_or(0), today);
            let mechanism = threshold_mechanism(regime, t.name);
            let (crossing, date) = c.when(today);
            ThresholdPlan {
                application: application(status, mechanism, c, date, today),
                count: t.count,
                crossing,
                crossing_date: date,
                limit: t.limit,
                mechanism,
                name: t.name,
                rate_30_days: per30,
            }
        })
        .collect();
    let renewals: Vec<Renewal> = status
        .approvals
        .iter()
        .filter_map(|a| renewal(status, a, regime, today))
        .collect();
    let required_now = match status.required_mechanism {
        Some(Mechanism::None) | None => Destinations::default(),
        Some(m) => missing(status, m, Some(today)),
    };
    let actions_due = thresholds
        .iter()
        .filter(|t| t.application.state.is_due())
        .count()
        + renewals.iter().filter(|r| r.state.is_due()).count()
        + usize::from(!required_now.destinations_without.is_empty());
    Assessment {
        actions_due,
        entity: status.entity.clone(),
        entity_subjects: status.entity_subjects,
        rate_30_days: r,
        regime,
        renewals,
        required_because: status.required_because,
        required_mechanism: status.required_mechanism,
        required_now,
        thresholds,
        today,
    }
}

/// The application for `mechanism` that a crossing on `date` calls for.
fn application(
    status: &Status,
    mechanism: Mechanism,
    c: Crossing,
    date: Option<Date>,
    today: Date,
) -> super::Application {
    let destinations = missing(status, mechanism, date);
    let (opens, latest_start) = match (date, mechanism) {
        (Some(d), Mechanism::SecurityAssessment) => {
            (Some(add_months(d, -18)), Some(add_months(d, -6)))
        }
        (Some(d), _) => (Some(add_months(d, -6)), Some(d - Duration::days(30))),
        (None, _) => (None, None),
    };
    let (miss, pending) = (
        &destinations.destinations_without,
        &destinations.destinations_pending,
    );
    let state = if date.is_none() {
        ApplicationState::NotNeededAtThisRate
    } else if miss.is_empty() && pending.is_empty() {
        ApplicationState::Held
    } else if miss.is_empty() {
        ApplicationState::Applied
    } else if c == Crossing::Crossed {
        ApplicationState::Overdue
    } else if latest_start.is_some_and(|l| today > l) {
        ApplicationState::Late
    } else if opens.is_some_and(|o| today >= o) {
        ApplicationState::Open
    } else {
        ApplicationState::NotYet
    };
    super::Application {
        destinations,
        latest_start,
        opens,
        state,
    }
}

/// The renewal of an active approval with an expiry date (`None` for any other).
fn renewal(status: &Status, a: &ApprovalEntry, regime: Regime, today: Date) -> Option<Renewal> {
    let until = a.valid_until?;
    if a.status != ApprovalStatus::Active {
        return None;
    }
    let successor = status.approvals.iter().find(|b| {
        b.id != a.id
            && matches!(b.status, ApprovalStatus::Active | ApprovalStatus::Pending)
            && at_least(b, satisfies(a.mechanism))
            && a.destinations.iter().all(|d| b.destinations.contains(d))
            && a.categories.iter().all(|c| b.categories.contains(c))
            && b.valid_until.is_none_or(|bu| bu > until)
    });
    let start_from = add_months(until, -6);
    let wd = working_days_before(until, RENEWAL_WORKING_DAYS);
    let sa = satisfies(a.mechanism) == Mechanism::SecurityAssessment;
    let (extension_window_from, apply_by) = match (sa, regime) {
        (true, Regime::Cac2024) => (Some(wd), Some(until)),
        (true, _) => (None, Some(wd)),
        (false, _) => (None, Some(until)),
    };
    let state = if let Some(b) = successor {
        if b.status == ApprovalStatus::Pending {
            RenewalState::RenewalApplied
        } else {
            RenewalState::Renewed
        }
    } else if today > until {
        RenewalState::Expired
    } else if extension_window_from.is_some_and(|f| today >= f) {
        RenewalState::ExtensionWindowOpen
    } else if apply_by.is_some_and(|b| today > b) {
        RenewalState::Late
    } else if today >= start_from {
        RenewalState::Open
    } else {
        RenewalState::NotYet
    };
    Some(Renewal {
        apply_by,
        approval: a.id.clone(),
        days_to_expiry: (until - today).whole_days(),
        extension_window_from,
        mechanism: a.mechanism,
        start_from,
        state,
        successor: successor.map(|b| b.id.clone()),
        valid_until: until,
    })
}
