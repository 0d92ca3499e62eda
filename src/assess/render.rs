//! The assessment as text for a person (`transfer-gate assess` without `--json`): the
//! mechanism required now, one line per threshold, one line per renewal, and what is due.

use super::{ApplicationState, Assessment, CrossingWhen, RateSource, RenewalState};
use std::fmt::{Display, Write};

/// A value, or `-` when there is none.
fn or_dash<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Names joined with `, `, or `-` when there are none.
fn list(names: &[String]) -> String {
    if names.is_empty() {
        "-".into()
    } else {
        names.join(", ")
    }
}

/// The assessment as text for a person.
pub fn render(a: &Assessment) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} — regime {}, today {}",
        or_dash(a.entity.as_deref()),
        a.regime.as_str(),
        a.today
    );
    let _ = writeln!(
        o,
        "mechanism required now: {}{}",
        or_dash(a.required_mechanism.map(|m| m.as_str())),
        a.required_because
            .map(|t| format!(" (threshold {})", t.as_str()))
            .unwrap_or_default()
    );
    if !a.required_now.destinations_without.is_empty() {
        let _ = writeln!(
            o,
            "  ACTION: destinations receiving PI without it: {}",
            list(&a.required_now.destinations_without)
        );
    }
    let rate = &a.rate_30_days;
    let _ = writeln!(
        o,
        "new subjects in the last 30 days: {} ({} sensitive){}\n",
        rate.all,
        rate.sensitive,
        if rate.source == RateSource::Daily {
            ""
        } else {
            " — estimated from the monthly tallies (the gate's daily samples do not reach back 30 days yet)"
        }
    );
    let _ = writeln!(
        o,
        "{:<26} {:>9} {:>9} {:>9}  {:<24} {:<36} APPLICATION",
        "THRESHOLD", "COUNT", "LIMIT", "30 DAYS", "CROSSED", "MECHANISM"
    );
    for t in &a.thresholds {
        let when = match t.crossing {
            CrossingWhen::Crossed => "already".to_owned(),
            CrossingWhen::ThisWindow => or_dash(t.crossing_date),
            CrossingWhen::NextWindow => format!("{} (next window)", or_dash(t.crossing_date)),
            CrossingWhen::NotAtThisRate => "not at this rate".to_owned(),
        };
        let ap = &t.application;
        let without = || list(&ap.destinations.destinations_without);
        let what = match ap.state {
            ApplicationState::Held => "held by every destination".to_owned(),
            ApplicationState::Applied => format!(
                "pending for {}",
                list(&ap.destinations.destinations_pending)
            ),
            ApplicationState::NotNeededAtThisRate => "-".to_owned(),
            ApplicationState::NotYet => format!(
                "start between {} and {}",
                or_dash(ap.opens),
                or_dash(ap.latest_start)
            ),
            ApplicationState::Open => format!(
                "ACTION: start now (by {}) for {}",
                or_dash(ap.latest_start),
                without()
            ),
            ApplicationState::Late => format!(
                "ACTION: late (should have started by {}) for {}",
                or_dash(ap.latest_start),
                without()
            ),
            ApplicationState::Overdue => {
                format!("ACTION: crossed without it for {}", without())
            }
        };
        let _ = writeln!(
            o,
            "{:<26} {:>9} {:>9} {:>9}  {:<24} {:<36} {}",
            t.name.as_str(),
            t.count,
            t.limit,
            or_dash(t.rate_30_days),
            when,
            t.mechanism.as_str(),
            what
        );
    }
    if !a.renewals.is_empty() {
        let _ = writeln!(
            o,
            "\n{:<16} {:<20} {:>11} {:>6}  RENEWAL",
            "APPROVAL", "MECHANISM", "VALID UNTIL", "DAYS"
        );
    }
    for r in &a.renewals {
        let successor = || or_dash(r.successor.as_deref());
        let what = match r.state {
            RenewalState::Renewed => format!("renewed by {}", successor()),
            RenewalState::RenewalApplied => format!("renewal pending ({})", successor()),
            RenewalState::Expired => {
                "ACTION: expired — renew, or remove it from approvals.toml".to_owned()
            }
            RenewalState::ExtensionWindowOpen => format!(
                "ACTION: extension window open since {} — apply before {}",
                or_dash(r.extension_window_from),
                r.valid_until
            ),
            RenewalState::Late => format!(
                "ACTION: late — re-application was due by {}",
                or_dash(r.apply_by)
            ),
            RenewalState::Open => match r.extension_window_from {
                Some(f) => format!(
                    "ACTION: prepare the extension now; apply between {f} and {}",
                    r.valid_until
                ),
                None => format!("ACTION: renew now; by {}", or_dash(r.apply_by)),
            },
            RenewalState::NotYet => match r.extension_window_from {
                Some(f) => format!(
                    "start from {}; extension window {f} to {}",
                    r.start_from, r.valid_until
                ),
                None => format!(
                    "start from {}; apply by {}",
                    r.start_from,
                    or_dash(r.apply_by)
                ),
            },
        };
        let _ = writeln!(
            o,
            "{:<16} {:<20} {:>11} {:>6}  {}",
            r.approval,
            r.mechanism.as_str(),
            r.valid_until.to_string(),
            r.days_to_expiry,
            what
        );
    }
    let n = a.actions_due;
    let _ = writeln!(
        o,
        "\n{}",
        if n == 0 {
            "nothing due".to_owned()
        } else {
            format!("{n} action(s) due")
        }
    );
    o
}
