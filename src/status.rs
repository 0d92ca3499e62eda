//! The status view (`GET /v1/status`, `transfer-gate status`): regime, window, entity counts,
//! the mechanism required now, each threshold with its limit and headroom, each destination's
//! counts, allowed clients and requests allowed and refused in the last hour and day, each
//! approval with its state, days to expiry and remaining volume, and each client with what it
//! sent where in the window.

use crate::config::{Approval, ApprovalStatus, UNIDENTIFIED};
use crate::ledger::activity::{MonthActivity, CLIENT_COUNTERS};
use crate::ledger::ScopeCounts;
use crate::model::shanghai_date;
use crate::policy::{self, Counts};
use crate::proxy::Gate;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

fn date(d: Option<time::Date>) -> Value {
    d.map(|d| Value::String(d.to_string()))
        .unwrap_or(Value::Null)
}

/// The `/v1/status` document.
pub async fn status(gate: &Gate) -> Value {
    let snap = gate.snapshot();
    let c = &snap.config;
    let now = gate.clock.now();
    let today = shanghai_date(now);
    let regime = c.entity.regime;
    let ledger = gate.ledger.as_ref();
    let mut ledger_ok = true;
    let mut get = async |sid| match ledger.counts(sid, regime, now).await {
        Ok(x) => x,
        Err(_) => {
            ledger_ok = false;
            ScopeCounts::default()
        }
    };
    let e = get(snap.scopes.entity).await;
    let entity = Counts {
        all: e.all,
        sensitive: e.sensitive,
    };
    let (need, threshold) = policy::required(
        regime,
        c.entity.ciio,
        c.entity.pi_subjects_processed,
        entity,
        false,
    );
    let thresholds: Vec<Value> = policy::utilization(regime, c.entity.pi_subjects_processed, entity)
        .into_iter()
        .map(|(t, limit, ratio)| {
            let count = (ratio * limit as f64).round() as u64;
            json!({"name": t.as_str(), "limit": limit, "count": count, "headroom": limit.saturating_sub(count), "utilization": ratio})
        })
        .collect();
    // Each destination's approvals, in register order, from one pass over the register (a
    // search of it per destination is quadratic: 1,000 × 1,000 took tens of milliseconds).
    let mut by_destination: HashMap<&str, Vec<&str>> = HashMap::new();
    for a in &c.approvals {
        for d in &a.destinations {
            let ids = by_destination.entry(d.as_str()).or_default();
            if ids.last() != Some(&a.id.as_str()) {
                ids.push(a.id.as_str());
            }
        }
    }
    let mut destinations = Vec::new();
    for (i, d) in c.destinations.iter().enumerate() {
        let x = get(snap.scopes.exempt[i].unwrap_or(snap.scopes.destination[i])).await;
        let approvals = by_destination.remove(d.name.as_str()).unwrap_or_default();
        let recent = gate.recent.get(&d.name, now);
        let tally =
            |t: crate::proxy::recent::Tally| json!({"allowed": t.allowed, "refused": t.refused});
        destinations.push(json!({
            "name": d.name, "recipient": d.recipient, "country": d.country,
            "exemption": d.exemption.map(|e| e.as_str()), "sensitive": d.sensitive,
            "subjects": x.all, "sensitive_subjects": x.sensitive, "approvals": approvals,
            // `null`: every client may send here.
            "clients": d.clients,
            "requests": {"last_hour": tally(recent.last_hour), "last_day": tally(recent.last_day)},
        }));
    }
    let mut approvals = Vec::new();
    for (i, a) in c.approvals.iter().enumerate() {
        let used = get(snap.scopes.approval[i]).await;
        approvals.push(approval(a, used, today));
    }
    let window_year = regime.window_start_year(today.year());
    let window_start = time::Date::from_calendar_date(window_year, time::Month::January, 1).ok();
    let clients = match gate.history.activity(gate.history_sources()).await {
        Ok(a) => {
            let since = format!("{window_year:04}-01");
            clients(c, a.months.range(since..).map(|(_, d)| d))
        }
        Err(e) => {
            tracing::warn!(error = %e, "client activity unavailable for /v1/status");
            clients(c, std::iter::empty())
        }
    };
    json!({
        "entity": c.entity.name,
        "regime": regime.as_str(),
        "mode": c.gate.mode.as_str(),
        "today": today.to_string(),
        "window_start": date(window_start),
        // `up`: reachable and writable (the gauge transfer_gate_ledger_up); when false, PI
        // transfers get 503 and the counts above may be stale or zero.
        "ledger": {"backend": ledger.backend(), "up": gate.ledger_up() && ledger_ok},
        "entity_subjects": {"all": entity.all, "sensitive": entity.sensitive},
        "required_mechanism": need.as_str(),
        "required_because": threshold.map(|t| t.as_str()),
        "thresholds": thresholds,
        "destinations": destinations,
        "approvals": approvals,
        "clients": clients,
    })
}

/// `clients`: per declared client (and `unidentified` when it sent anything), per destination
/// it sent to in `months` (the window's for `/v1/status`, the period's for the report), its
/// requests allowed and refused, bytes sent upstream and the subjects it was the first to send
/// there.
pub fn clients<'a>(
    c: &crate::config::Config,
    months: impl Iterator<Item = &'a BTreeMap<String, MonthActivity>>,
) -> Vec<Value> {
    // client → destination → counters, in CLIENT_COUNTERS order.
    let mut sums: BTreeMap<&str, BTreeMap<&str, [u64; 5]>> = BTreeMap::new();
    for dests in months {
        for (dest, a) in dests {
            for (key, n) in &a.clients {
                let Some((client, counter)) = key.rsplit_once(':') else {
                    continue;
                };
                let Some(k) = CLIENT_COUNTERS.iter().position(|x| *x == counter) else {
                    continue;
                };
                sums.entry(client)
                    .or_default()
                    .entry(dest.as_str())
                    .or_default()[k] += n;
            }
        }
    }
    let entry = |name: &str, owner: Option<&str>| {
        let dests: Vec<Value> = sums
            .get(name)
            .into_iter()
            .flatten()
            .map(|(dest, v)| {
                json!({
                    "destination": dest, "allowed": v[0], "refused": v[1], "bytes": v[2],
                    "new_subjects": v[3], "new_sensitive_subjects": v[4],
                })
            })
            .collect();
        json!({"name": name, "owner": owner, "destinations": dests})
    };
    let mut out: Vec<Value> = c
        .clients
        .iter()
        .map(|cl| entry(&cl.name, cl.owner.as_deref()))
        .collect();
    if sums.contains_key(UNIDENTIFIED) {
        out.push(entry(UNIDENTIFIED, None));
    }
    out
}

fn approval(a: &Approval, used: ScopeCounts, today: time::Date) -> Value {
    let in_force = policy::in_force(a, today);
    let state = match a.status {
        ApprovalStatus::Active if in_force => "in_force",
        ApprovalStatus::Active if a.valid_from.is_some_and(|f| today < f) => "not_yet_valid",
        ApprovalStatus::Active => "expired",
        s => s.as_str(),
    };
    let days = a.valid_until.map(|u| (u - today).whole_days());
    json!({
        "id": a.id, "mechanism": a.mechanism.as_str(), "status": a.status.as_str(), "state": state,
        "destinations": a.destinations,
        "categories": a.categories.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "valid_from": date(a.valid_from), "valid_until": date(a.valid_until), "days_to_expiry": days,
        "max_subjects": a.max_subjects, "max_sensitive_subjects": a.max_sensitive_subjects,
        "used_subjects": used.all, "used_sensitive_subjects": used.sensitive,
        "remaining_subjects": a.max_subjects.map(|m| m.saturating_sub(used.all)),
        "remaining_sensitive_subjects": a.max_sensitive_subjects.map(|m| m.saturating_sub(used.sensitive)),
        "reference": a.reference,
    })
}

/// Renders a `/v1/status` document as readable tables (for `transfer-gate status`).
pub fn render(s: &Value) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let v = |x: &Value| match x {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let _ = writeln!(
        o,
        "{} — regime {}, mode {}, ledger {} ({})",
        v(&s["entity"]),
        v(&s["regime"]),
        v(&s["mode"]),
        v(&s["ledger"]["backend"]),
        if s["ledger"]["up"] == true {
            "up"
        } else {
            "DOWN: transfers with personal information get 503, counts may be stale"
        }
    );
    let _ = writeln!(
        o,
        "window since {} (today {}): {} subjects, {} sensitive",
        v(&s["window_start"]),
        v(&s["today"]),
        v(&s["entity_subjects"]["all"]),
        v(&s["entity_subjects"]["sensitive"])
    );
    let _ = writeln!(
        o,
        "required mechanism now: {}{}\n",
        v(&s["required_mechanism"]),
        s["required_because"]
            .as_str()
            .map(|t| format!(" (threshold {t})"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "{:<28} {:>10} {:>10} {:>10} {:>11}",
        "THRESHOLD", "COUNT", "LIMIT", "HEADROOM", "USED"
    );
    for t in s["thresholds"].as_array().into_iter().flatten() {
        // A yes/no threshold (limit 1: any sensitive subject) is crossed or not; a percentage
        // or a headroom of it means nothing.
        let (headroom, used) = if t["limit"] == 1 {
            let crossed = t["count"].as_u64().unwrap_or(0) >= 1;
            (
                "-".to_owned(),
                if crossed { "crossed" } else { "not crossed" }.to_owned(),
            )
        } else {
            (
                v(&t["headroom"]),
                format!("{:.1}%", t["utilization"].as_f64().unwrap_or(0.0) * 100.0),
            )
        };
        let _ = writeln!(
            o,
            "{:<28} {:>10} {:>10} {:>10} {:>11}",
            v(&t["name"]),
            v(&t["count"]),
            v(&t["limit"]),
            headroom,
            used
        );
    }
    let _ = writeln!(
        o,
        "\n{:<20} {:<4} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}  APPROVALS",
        "DESTINATION",
        "CC",
        "SUBJECTS",
        "SENSITIVE",
        "1H ALLOW",
        "1H REFUS",
        "1D ALLOW",
        "1D REFUS"
    );
    for d in s["destinations"].as_array().into_iter().flatten() {
        let ap: Vec<String> = d["approvals"]
            .as_array()
            .into_iter()
            .flatten()
            .map(v)
            .collect();
        let ex = d["exemption"]
            .as_str()
            .map(|e| format!(" [exempt: {e}]"))
            .unwrap_or_default();
        let r = &d["requests"];
        let _ = writeln!(
            o,
            "{:<20} {:<4} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}  {}{}",
            v(&d["name"]),
            v(&d["country"]),
            v(&d["subjects"]),
            v(&d["sensitive_subjects"]),
            v(&r["last_hour"]["allowed"]),
            v(&r["last_hour"]["refused"]),
            v(&r["last_day"]["allowed"]),
            v(&r["last_day"]["refused"]),
            if ap.is_empty() {
                "-".into()
            } else {
                ap.join(", ")
            },
            ex
        );
    }
    let _ = writeln!(
        o,
        "\n{:<16} {:<20} {:<14} {:>11} {:>8} {:>12} {:>12}",
        "APPROVAL", "MECHANISM", "STATE", "VALID UNTIL", "DAYS", "REMAINING", "REM. SENS."
    );
    for a in s["approvals"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "{:<16} {:<20} {:<14} {:>11} {:>8} {:>12} {:>12}",
            v(&a["id"]),
            v(&a["mechanism"]),
            v(&a["state"]),
            v(&a["valid_until"]),
            v(&a["days_to_expiry"]),
            v(&a["remaining_subjects"]),
            v(&a["remaining_sensitive_subjects"])
        );
    }
    if s["clients"].as_array().is_some_and(|c| !c.is_empty()) {
        let _ = writeln!(
            o,
            "\n{:<20} {:<20} {:>9} {:>9} {:>12} {:>10} {:>10}  OWNER",
            "CLIENT", "DESTINATION", "ALLOWED", "REFUSED", "BYTES", "NEW SUBJ.", "NEW SENS."
        );
    }
    for c in s["clients"].as_array().into_iter().flatten() {
        let dests = c["destinations"]
            .as_array()
            .map_or(&[][..], |d| d.as_slice());
        if dests.is_empty() {
            let _ = writeln!(
                o,
                "{:<20} {:<20} {:>9} {:>9} {:>12} {:>10} {:>10}  {}",
                v(&c["name"]),
                "-",
                0,
                0,
                0,
                0,
                0,
                v(&c["owner"])
            );
        }
        for d in dests {
            let _ = writeln!(
                o,
                "{:<20} {:<20} {:>9} {:>9} {:>12} {:>10} {:>10}  {}",
                v(&c["name"]),
                v(&d["destination"]),
                v(&d["allowed"]),
                v(&d["refused"]),
                v(&d["bytes"]),
                v(&d["new_subjects"]),
                v(&d["new_sensitive_subjects"]),
                v(&c["owner"])
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::render;
    use serde_json::json;

    fn doc(sensitive: u64) -> serde_json::Value {
        json!({
            "entity": "E", "regime": "cac-2024", "mode": "enforce", "today": "2025-06-01",
            "window_start": "2025-01-01", "ledger": {"backend": "local", "up": true},
            "entity_subjects": {"all": 50_000, "sensitive": sensitive},
            "required_mechanism": "none", "required_because": null,
            "thresholds": [
                {"name": "subjects_100000", "limit": 100_000, "count": 50_000, "headroom": 50_000, "utilization": 0.5},
                {"name": "any_sensitive", "limit": 1, "count": sensitive, "headroom": 1u64.saturating_sub(sensitive), "utilization": sensitive as f64},
            ],
            "destinations": [{
                "name": "eu", "country": "DE", "subjects": 7, "sensitive_subjects": 0,
                "approvals": [], "clients": null,
                "requests": {"last_hour": {"allowed": 3, "refused": 2}, "last_day": {"allowed": 13, "refused": 12}},
            }],
            "approvals": [], "clients": [],
        })
    }

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start} in\n{text}"))
    }

    #[test]
    fn a_yes_no_threshold_is_crossed_or_not_never_a_percentage() {
        let crossed = render(&doc(30));
        let any = line(&crossed, "any_sensitive");
        assert!(
            any.ends_with(" crossed") && !any.contains("not crossed"),
            "{any}"
        );
        assert!(!any.contains('%'), "{any}");
        assert_eq!(
            any.split_whitespace().nth(3),
            Some("-"),
            "no headroom: {any}"
        );
        let not = render(&doc(0));
        let any = line(&not, "any_sensitive");
        assert!(any.ends_with("not crossed"), "{any}");
        // A count threshold keeps its percentage and headroom.
        let subjects = line(&not, "subjects_100000");
        assert!(subjects.ends_with("50.0%"), "{subjects}");
        assert_eq!(subjects.split_whitespace().nth(3), Some("50000"));
    }

    #[test]
    fn destinations_show_the_last_hour_and_day() {
        let text = render(&doc(0));
        assert!(text.contains("1H ALLOW"), "{text}");
        let eu: Vec<&str> = line(&text, "eu ").split_whitespace().collect();
        assert_eq!(
            eu[..8],
            ["eu", "DE", "7", "0", "3", "2", "13", "12"],
            "{eu:?}"
        );
    }
}
