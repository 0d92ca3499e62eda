//! The data-flow inventory (`GET /v1/report`, `transfer-gate report`): per destination and
//! Asia/Shanghai month, the subjects *newly counted* that month, sensitive subjects, the data
//! categories seen, the approvals and their state, and the refused transfers by reason; and
//! per internal system (client) what it sent to each destination in the period.
//!
//! - this file: the `/v1/report` document, built by the gate from the ledger's monthly tallies,
//!   the `/v1/status` view and the [`history`];
//! - [`history`]: the small activity history (daily entity samples, categories and refusals
//!   per month; the latter in the shared ledger with Redis, so every replica reports every
//!   replica's) that the gate keeps for `report` and `assess`;
//! - [`md`], [`json`], [`html`]: the renderers the CLI applies to the document (the HTML is one
//!   self-contained file with an SVG data-flow diagram).

pub mod history;
pub mod html;
pub mod json;
pub mod md;

use crate::ledger::Scope;
use crate::proxy::Gate;
use history::History;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// What the monthly subject figures mean (printed in every format).
pub const SUBJECTS_NOTE: &str = "Subjects per month are those newly counted that month: people \
whose PI was sent to the destination and who were not yet counted in the legal counting window. \
A person sent again in a later month of the same window is not counted again, so the months add up \
to the window count.";

/// Where the categories and refusals come from, with a backend that shares them (Redis).
const SHARED_NOTE: &str = "Categories and refusals are counted by every gate replica into the \
shared ledger (Redis) within a second; every replica reports the same figures.";

/// Where the categories and refusals come from, with the local backend.
const LOCAL_NOTE: &str = "Categories and refusals are counted by this gate process and kept in \
gate.data_dir/history.json.";

/// A calendar month `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    /// Year.
    pub year: i32,
    /// Month 1–12.
    pub month: u8,
}

impl Month {
    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Option<Month> {
        let (y, m) = s.trim().split_once('-')?;
        let (year, month) = (y.parse().ok()?, m.parse().ok()?);
        (y.len() == 4 && (1..=12).contains(&month)).then_some(Month { year, month })
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Builds the `/v1/report` document for the months `from..=to` (inclusive; either open).
pub async fn document(
    gate: &Gate,
    history: &History,
    from: Option<Month>,
    to: Option<Month>,
) -> Value {
    history.sample(gate.history_sources()).await;
    let (activity, activity_note) = match history.activity(gate.history_sources()).await {
        Ok(a) if gate.ledger.shares_activity() => (a, SHARED_NOTE.to_owned()),
        Ok(a) => (a, LOCAL_NOTE.to_owned()),
        Err(e) => (
            history::StoredActivity::default(),
            format!("Categories and refusals could not be read from the shared ledger: {e}"),
        ),
    };
    let mut status = crate::status::status(gate).await;
    let tallies = gate.ledger.monthly().await.unwrap_or_default();
    let inside = |m: Month| from.is_none_or(|f| f <= m) && to.is_none_or(|t| m <= t);
    // (scope, month) → (new, new sensitive)
    let mut by: BTreeMap<(Scope, Month), (u64, u64)> = BTreeMap::new();
    for t in &tallies {
        let m = Month {
            year: t.year,
            month: t.month,
        };
        if inside(m) {
            let e = by.entry((t.scope.clone(), m)).or_default();
            e.0 += t.new_all;
            e.1 += t.new_sensitive;
        }
    }
    let hist_months: Vec<(Month, &BTreeMap<String, history::MonthActivity>)> = activity
        .months
        .iter()
        .filter_map(|(k, v)| Some((Month::parse(k)?, v)))
        .filter(|(m, _)| inside(*m))
        .collect();
    let snap = gate.snapshot();
    // Each destination's monthly tallies, from one pass (not one pass per destination).
    let mut by_destination: std::collections::HashMap<&str, Vec<(Month, u64, u64)>> =
        std::collections::HashMap::new();
    for ((scope, m), (all, sens)) in &by {
        if let Scope::Destination(n) | Scope::Exempt(n) = scope {
            by_destination
                .entry(n.as_str())
                .or_default()
                .push((*m, *all, *sens));
        }
    }
    if let Some(dests) = status["destinations"].as_array_mut() {
        for (d, cfg) in dests.iter_mut().zip(snap.config.destinations.iter()) {
            let name = cfg.name.as_str();
            let mut months: BTreeMap<Month, Value> = BTreeMap::new();
            for (m, all, sens) in by_destination.get(name).into_iter().flatten() {
                let v = month_entry(&mut months, *m);
                add(&mut v["subjects"], *all);
                add(&mut v["sensitive_subjects"], *sens);
            }
            for (m, acts) in &hist_months {
                if let Some(a) = acts.get(name) {
                    let v = month_entry(&mut months, *m);
                    v["categories"] = json!(a.records.keys().collect::<Vec<_>>());
                    v["records"] = json!(a.records);
                    v["blocked"] = json!(a.blocked);
                    v["would_block"] = json!(a.would_block);
                }
            }
            d["tls"] = json!(cfg.tls.map(|t| match t {
                crate::config::TlsMode::Intercept => "intercept",
                crate::config::TlsMode::Tunnel => "tunnel",
            }));
            d["months"] = Value::Array(months.into_values().collect());
            // The last hour's and day's requests are a live view of this process (the console,
            // `/v1/status`), not part of an inventory for a filing.
            if let Some(o) = d.as_object_mut() {
                o.remove("requests");
            }
        }
    }
    let mut entity_months: BTreeMap<Month, (u64, u64)> = BTreeMap::new();
    for ((scope, m), (all, sens)) in &by {
        if *scope == Scope::Entity {
            let e = entity_months.entry(*m).or_default();
            e.0 += all;
            e.1 += sens;
        }
    }
    // Refusals for hosts that are no destination (`unknown`, and `domestic` never refuses).
    let mut unregistered: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (m, acts) in &hist_months {
        for (dest, a) in acts.iter() {
            if snap.config.destinations.iter().any(|d| &d.name == dest) {
                continue;
            }
            let e = unregistered.entry(m.to_string()).or_default();
            for (r, n) in a.blocked.iter().chain(a.would_block.iter()) {
                *e.entry(r.clone()).or_default() += n;
            }
        }
    }
    // Which internal systems sent what where in the period (SPEC §2 "Where it shows").
    status["clients"] = Value::Array(crate::status::clients(
        &snap.config,
        hist_months.iter().map(|(_, a)| *a),
    ));
    status["report"] = json!({
        "from": from.map(|m| m.to_string()),
        "to": to.map(|m| m.to_string()),
        "generated_at": crate::audit::rfc3339(gate.clock.now()),
        "subjects_note": SUBJECTS_NOTE,
        "activity_since": activity.since,
        "activity_note": activity_note,
    });
    status["entity_months"] = Value::Array(
        entity_months
            .into_iter()
            .map(|(m, (a, s))| json!({"month": m.to_string(), "subjects": a, "sensitive_subjects": s}))
            .collect(),
    );
    status["unregistered_blocked"] = Value::Array(
        unregistered
            .into_iter()
            .map(|(m, r)| json!({"month": m, "blocked": r}))
            .collect(),
    );
    status
}

fn month_entry(months: &mut BTreeMap<Month, Value>, m: Month) -> &mut Value {
    months.entry(m).or_insert_with(|| {
        json!({"month": m.to_string(), "subjects": 0, "sensitive_subjects": 0,
               "categories": [], "records": {}, "blocked": {}, "would_block": {}})
    })
}

fn add(v: &mut Value, n: u64) {
    *v = json!(v.as_u64().unwrap_or(0) + n);
}

/// The `/v1/history` document: the entity's daily cumulative newly-counted subjects and its
/// monthly tallies (for `assess`'s 30-day rate).
pub async fn history_document(gate: &Gate, history: &History) -> Value {
    history.sample(gate.history_sources()).await;
    let tallies = gate.ledger.monthly().await.unwrap_or_default();
    let months: Vec<Value> = tallies
        .iter()
        .filter(|t| t.scope == Scope::Entity)
        .map(|t| json!({"month": Month { year: t.year, month: t.month }.to_string(), "subjects": t.new_all, "sensitive_subjects": t.new_sensitive}))
        .collect();
    let days: Vec<Value> = history
        .data()
        .days
        .iter()
        .map(|(d, s)| json!({"date": d, "all": s.all, "sensitive": s.sensitive}))
        .collect();
    json!({
        "today": crate::model::shanghai_date(gate.clock.now()).to_string(),
        "days": days,
        "entity_months": months,
    })
}

/// Text of a JSON scalar for tables: strings bare, null as `-`.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `{"a": 1, "b": 2}` as `a 1, b 2` (or `-`).
pub(crate) fn counts(v: &Value) -> String {
    let parts: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, n)| format!("{k} {}", text(n)))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// `["a", "b"]` as `a, b` (or `-`).
pub(crate) fn list(v: &Value) -> String {
    let parts: Vec<String> = v.as_array().into_iter().flatten().map(text).collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::Month;

    #[test]
    fn months_parse() {
        assert_eq!(
            Month::parse("2026-03"),
            Some(Month {
                year: 2026,
                month: 3
            })
        );
        assert_eq!(Month::parse("2026-13"), None);
        assert_eq!(Month::parse("26-01"), None);
        assert_eq!(Month::parse("x"), None);
        assert_eq!(
            Month::parse("2026-03").map(|m| m.to_string()).as_deref(),
            Some("2026-03")
        );
    }
}
