//! The approvals file: `[[approval]]` tables (id, mechanism, status, destinations,
//! categories, limits, validity), checked against the gate config's destinations and regime.

use super::{array, display_name, read_table};
use crate::config::raw::RawApproval;
use crate::config::{Approval, ApprovalMechanism, ApprovalStatus, Destination, Diagnostics};
use crate::model::{Category, Regime};
use sha2::Sha256;
use std::collections::HashSet;
use std::path::Path;
use toml::{Table, Value};

/// Loads and validates the approvals file at `path` (its bytes go into `hasher`).
pub(super) fn load(
    path: &Path,
    dests: &[Destination],
    regime: Regime,
    d: &mut Diagnostics,
    hasher: &mut Sha256,
) -> Vec<Approval> {
    let file = display_name(path);
    let Some((t, source)) = read_table(path, &file, d, hasher) else {
        return Vec::new();
    };
    let gate_source = d.set_source(Some(source));
    let approvals = validate(&file, &t, dests, regime, d);
    d.set_source(gate_source);
    approvals
}

/// Validates the parsed approvals file.
fn validate(
    file: &str,
    t: &Table,
    dests: &[Destination],
    regime: Regime,
    d: &mut Diagnostics,
) -> Vec<Approval> {
    for key in t.keys() {
        if key != "approval" {
            d.error(
                file,
                key.as_str(),
                format!("unknown key `{key}`; the file holds `[[approval]]` tables"),
            );
        }
    }
    let raws: Vec<Option<RawApproval>> = array(t, "approval", file, d);
    let mut out: Vec<Approval> = Vec::new();
    let names: HashSet<&str> = dests.iter().map(|x| x.name.as_str()).collect();
    let mut ids: HashSet<String> = HashSet::new();
    for (i, raw) in raws.into_iter().enumerate() {
        let Some(r) = raw else { continue };
        let p = format!("approval[{i}]");
        if r.id.trim().is_empty() {
            d.error(file, format!("{p}.id"), "must not be empty");
        } else if !ids.insert(r.id.clone()) {
            d.error(
                file,
                format!("{p}.id"),
                format!("approval `{}` is defined twice", r.id),
            );
        }
        let mechanism = match r.mechanism.as_str() {
            "security_assessment" => ApprovalMechanism::SecurityAssessment,
            "standard_contract" => ApprovalMechanism::StandardContract,
            "certification" => ApprovalMechanism::Certification,
            o => {
                d.error(file, format!("{p}.mechanism"), format!("`{o}` is not one of: security_assessment, standard_contract, certification"));
                ApprovalMechanism::StandardContract
            }
        };
        let status = match r.status.as_str() {
            "active" => ApprovalStatus::Active,
            "pending" => ApprovalStatus::Pending,
            "rejected" => ApprovalStatus::Rejected,
            "revoked" => ApprovalStatus::Revoked,
            o => {
                d.error(
                    file,
                    format!("{p}.status"),
                    format!("`{o}` is not one of: active, pending, rejected, revoked"),
                );
                ApprovalStatus::Pending
            }
        };
        if r.destinations.is_empty() {
            d.error(
                file,
                format!("{p}.destinations"),
                "an approval names at least one destination",
            );
        }
        for (j, n) in r.destinations.iter().enumerate() {
            if !names.contains(n.as_str()) {
                d.error(
                    file,
                    format!("{p}.destinations[{j}]"),
                    format!("no destination is named `{n}` in the gate config"),
                );
            }
        }
        let mut categories = Vec::new();
        for (j, c) in r.categories.iter().enumerate() {
            match c.parse::<Category>() {
                Ok(c) => categories.push(c),
                Err(_) => d.error(
                    file,
                    format!("{p}.categories[{j}]"),
                    format!(
                        "`{c}` is not a category; use one of: {}",
                        Category::ALL.map(Category::as_str).join(", ")
                    ),
                ),
            }
        }
        let valid_from = r
            .valid_from
            .as_ref()
            .and_then(|v| date(v, file, &format!("{p}.valid_from"), d));
        let valid_until = r
            .valid_until
            .as_ref()
            .and_then(|v| date(v, file, &format!("{p}.valid_until"), d));
        if mechanism == ApprovalMechanism::SecurityAssessment && r.valid_until.is_none() {
            d.error(
                file,
                format!("{p}.valid_until"),
                "a security assessment has a validity end date; valid_until is required",
            );
        }
        if let (Some(f), Some(u)) = (valid_from, valid_until) {
            if u < f {
                d.error(file, format!("{p}.valid_until"), "is before valid_from");
            }
            if mechanism == ApprovalMechanism::SecurityAssessment {
                let years = match regime {
                    Regime::Cac2022 => 2,
                    Regime::Cac2024 => 3,
                };
                let limit = f.replace_year(f.year() + years).unwrap_or_else(|_| {
                    f.saturating_add(time::Duration::days(365 * i64::from(years)))
                });
                if u > limit {
                    d.warn(
                        file,
                        format!("{p}.valid_until"),
                        format!(
                            "longer than the {years} years a security assessment is valid under {}",
                            regime.as_str()
                        ),
                    );
                }
            }
        }
        if r.max_subjects == Some(0) {
            d.warn(
                file,
                format!("{p}.max_subjects"),
                "0 permits no transfer of PI",
            );
        }
        out.push(Approval {
            id: r.id,
            mechanism,
            status,
            destinations: r.destinations,
            categories,
            max_subjects: r.max_subjects,
            max_sensitive_subjects: r.max_sensitive_subjects,
            valid_from,
            valid_until,
            reference: r.reference,
        });
    }
    out
}

fn date(v: &Value, file: &str, path: &str, d: &mut Diagnostics) -> Option<time::Date> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Datetime(dt) => dt.to_string(),
        _ => {
            d.error(file, path, "must be a date (YYYY-MM-DD)");
            return None;
        }
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    match time::Date::parse(&s, fmt) {
        Ok(x) => Some(x),
        Err(_) => {
            d.error(file, path, format!("`{s}` is not a date (YYYY-MM-DD)"));
            None
        }
    }
}
