//! `transfer-gate assess`: from the running gate's `/v1/status` and `/v1/history`, the
//! mechanism required now; per threshold the current count, the 30-day rate and the date it
//! will be crossed at that rate; when to start the application for the mechanism a crossing
//! requires (security assessment: from 18 to 6 months ahead; standard contract or
//! certification: from 6 months to 30 days ahead); and each approval's renewal (from 6 months
//! before expiry; a security assessment's 60-working-day deadline under `cac-2022`, its
//! 60-working-day extension window under `cac-2024`).
//!
//! Everything here is a pure function of the two documents, so the date arithmetic has unit
//! tests. Working days are Monday–Friday without the official holidays, with the adjusted
//! working weekend days, of the years in [`HOLIDAYS`] (Mon–Fri only for other years).

use serde_json::{json, Value};
use time::{Date, Duration, Month, Weekday};

/// Month and day.
pub type MonthDay = (u8, u8);

/// Whole-day and adjusted-working-day lists of the PRC public-holiday schedules (State Council
/// General Office notices): (year, days off, weekend days that are working days).
pub const HOLIDAYS: &[(i32, &[MonthDay], &[MonthDay])] = &[
    (
        2025,
        &[
            (1, 1),
            (1, 28),
            (1, 29),
            (1, 30),
            (1, 31),
            (2, 1),
            (2, 2),
            (2, 3),
            (2, 4),
            (4, 4),
            (4, 5),
            (4, 6),
            (5, 1),
            (5, 2),
            (5, 3),
            (5, 4),
            (5, 5),
            (5, 31),
            (6, 1),
            (6, 2),
            (10, 1),
            (10, 2),
            (10, 3),
            (10, 4),
            (10, 5),
            (10, 6),
            (10, 7),
            (10, 8),
        ],
        &[(1, 26), (2, 8), (4, 27), (9, 28), (10, 11)],
    ),
    (
        2026,
        &[
            (1, 1),
            (1, 2),
            (1, 3),
            (2, 15),
            (2, 16),
            (2, 17),
            (2, 18),
            (2, 19),
            (2, 20),
            (2, 21),
            (2, 22),
            (2, 23),
            (4, 4),
            (4, 5),
            (4, 6),
            (5, 1),
            (5, 2),
            (5, 3),
            (5, 4),
            (5, 5),
            (6, 19),
            (6, 20),
            (6, 21),
            (9, 25),
            (9, 26),
            (9, 27),
            (10, 1),
            (10, 2),
            (10, 3),
            (10, 4),
            (10, 5),
            (10, 6),
            (10, 7),
        ],
        &[(1, 4), (2, 14), (2, 28), (5, 9), (9, 20), (10, 10)],
    ),
];

/// How many working days before expiry a security assessment's renewal or extension counts.
pub const RENEWAL_WORKING_DAYS: u32 = 60;

/// Whether `d` is a working day in mainland China.
pub fn is_working_day(d: Date) -> bool {
    let md = (u8::from(d.month()), d.day());
    if let Some((_, off, on)) = HOLIDAYS.iter().find(|(y, _, _)| *y == d.year()) {
        if off.contains(&md) {
            return false;
        }
        if on.contains(&md) {
            return true;
        }
    }
    !matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday)
}

/// The first day of the `n` working days that end the day before `end`: counting backwards
/// from `end − 1`, the `n`-th working day. "Within the 60 working days before expiry" is the
/// range from this date to `end`.
pub fn working_days_before(end: Date, n: u32) -> Date {
    let mut d = end;
    let mut left = n;
    while left > 0 {
        match d.previous_day() {
            Some(p) => d = p,
            None => return d,
        }
        if is_working_day(d) {
            left -= 1;
        }
    }
    d
}

/// `d` shifted by `months` calendar months, the day clamped to the month's length.
pub fn add_months(d: Date, months: i32) -> Date {
    let total = d.year() * 12 + i32::from(u8::from(d.month())) - 1 + months;
    let (y, m) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u8);
    let month = Month::try_from(m).unwrap_or(Month::January);
    let day = d.day().min(month.length(y));
    Date::from_calendar_date(y, month, day).unwrap_or(d)
}

fn parse_date(v: &Value) -> Option<Date> {
    let s = v.as_str()?;
    Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()
}

/// New entity subjects in the last 30 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// All subjects.
    pub all: u64,
    /// Sensitive subjects.
    pub sensitive: u64,
    /// `daily` (the gate's daily samples cover 30 days) or `monthly_estimate`.
    pub source: &'static str,
}

/// The 30-day rate from `/v1/history`: the difference of the daily cumulative samples over 30
/// days when they reach back that far; otherwise this month's tally plus the matching share of
/// last month's (an estimate).
pub fn rate(history: &Value, today: Date) -> Rate {
    let days: Vec<(Date, u64, u64)> = history["days"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            Some((
                parse_date(&d["date"])?,
                d["all"].as_u64()?,
                d["sensitive"].as_u64()?,
            ))
        })
        .collect();
    let cut = today - Duration::days(30);
    let base = days.iter().filter(|d| d.0 <= cut).max_by_key(|d| d.0);
    let last = days.iter().filter(|d| d.0 <= today).max_by_key(|d| d.0);
    if let (Some(b), Some(l)) = (base, last) {
        return Rate {
            all: l.1.saturating_sub(b.1),
            sensitive: l.2.saturating_sub(b.2),
            source: "daily",
        };
    }
    let month_of = |d: Date| format!("{:04}-{:02}", d.year(), u8::from(d.month()));
    let tally = |m: &str| {
        history["entity_months"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["month"] == m)
            .fold((0u64, 0u64), |a, t| {
                (
                    a.0 + t["subjects"].as_u64().unwrap_or(0),
                    a.1 + t["sensitive_subjects"].as_u64().unwrap_or(0),
                )
            })
    };
    let this = tally(&month_of(today));
    let elapsed = u64::from(today.day());
    let (mut all, mut sensitive) = this;
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
        source: "monthly_estimate",
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

/// The crossing date of `limit` from `count` growing by `per_30_days`. Under `cac-2024` the
/// count restarts at zero on January 1; under `cac-2022` the projection ignores the drop of
/// the oldest year at the roll-over (an earlier date: the safe side).
pub fn crossing(regime: &str, count: u64, limit: u64, per_30_days: u64, today: Date) -> Crossing {
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
    if regime != "cac-2024" || on.year() == today.year() {
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
pub fn threshold_mechanism(regime: &str, threshold: &str) -> &'static str {
    match (regime, threshold) {
        ("cac-2024", "subjects_100000" | "any_sensitive") => "standard_contract_or_certification",
        _ => "security_assessment",
    }
}

fn level(mechanism: &str) -> u8 {
    match mechanism {
        "security_assessment" => 2,
        "standard_contract" | "certification" | "standard_contract_or_certification" => 1,
        _ => 0,
    }
}

/// An action's state; `due` ones make the exit code 1.
fn due(state: &str) -> bool {
    matches!(
        state,
        "open" | "late" | "overdue" | "expired" | "extension_window_open"
    )
}

/// The destinations that receive PI (non-exempt) and hold no approval of at least `mechanism`
/// valid on `on`, split into (missing, applied-for with a pending approval).
fn missing(status: &Value, mechanism: &str, on: Option<Date>) -> (Vec<String>, Vec<String>) {
    let approvals: Vec<&Value> = status["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let (mut miss, mut pending) = (Vec::new(), Vec::new());
    for d in status["destinations"].as_array().into_iter().flatten() {
        if !d["exemption"].is_null() && status["regime"] == "cac-2024" {
            continue;
        }
        if d["subjects"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        let name = d["name"].as_str().unwrap_or_default();
        let mine = |a: &&&Value| {
            level(a["mechanism"].as_str().unwrap_or_default()) >= level(mechanism)
                && a["destinations"]
                    .as_array()
                    .is_some_and(|ds| ds.iter().any(|x| x == name))
        };
        let held = approvals.iter().filter(mine).any(|a| {
            matches!(a["state"].as_str(), Some("in_force" | "not_yet_valid"))
                && match (on, parse_date(&a["valid_until"])) {
                    (Some(on), Some(u)) => u >= on,
                    _ => true,
                }
        });
        if held {
            continue;
        }
        if approvals
            .iter()
            .filter(mine)
            .any(|a| a["status"] == "pending")
        {
            pending.push(name.to_owned());
        } else {
            miss.push(name.to_owned());
        }
    }
    (miss, pending)
}

/// The assessment document (`assess --json`).
pub fn assess(status: &Value, history: &Value) -> Value {
    let today = parse_date(&status["today"])
        .or_else(|| parse_date(&history["today"]))
        .unwrap_or(Date::MIN);
    let regime = status["regime"].as_str().unwrap_or("cac-2024");
    let r = rate(history, today);
    let mut actions_due = 0usize;
    let mut thresholds = Vec::new();
    for t in status["thresholds"].as_array().into_iter().flatten() {
        let name = t["name"].as_str().unwrap_or_default();
        let (count, limit) = (
            t["count"].as_u64().unwrap_or(0),
            t["limit"].as_u64().unwrap_or(1),
        );
        let (per30, measured) = if name == "pi_processed_1000000" {
            (0, false)
        } else if name.contains("sensitive") {
            (r.sensitive, true)
        } else {
            (r.all, true)
        };
        let c = crossing(regime, count, limit, per30, today);
        let mechanism = threshold_mechanism(regime, name);
        let (date, when) = match c {
            Crossing::Crossed => (Some(today), "crossed"),
            Crossing::On(d) => (Some(d), "this_window"),
            Crossing::NextWindow(d) => (Some(d), "next_window"),
            Crossing::NotAtThisRate => (None, "not_at_this_rate"),
        };
        let (miss, pending) = missing(status, mechanism, date);
        let (opens, latest) = match (date, mechanism) {
            (Some(d), "security_assessment") => (Some(add_months(d, -18)), Some(add_months(d, -6))),
            (Some(d), _) => (Some(add_months(d, -6)), Some(d - Duration::days(30))),
            (None, _) => (None, None),
        };
        let state = if date.is_none() {
            "not_needed_at_this_rate"
        } else if miss.is_empty() && pending.is_empty() {
            "held"
        } else if miss.is_empty() {
            "applied"
        } else if c == Crossing::Crossed {
            "overdue"
        } else if latest.is_some_and(|l| today > l) {
            "late"
        } else if opens.is_some_and(|o| today >= o) {
            "open"
        } else {
            "not_yet"
        };
        actions_due += usize::from(due(state));
        thresholds.push(json!({
            "name": name, "count": count, "limit": limit,
            "rate_30_days": if measured { json!(per30) } else { Value::Null },
            "crossing": when, "crossing_date": date.map(|d| d.to_string()),
            "mechanism": mechanism,
            "application": {
                "state": state,
                "opens": opens.map(|d| d.to_string()),
                "latest_start": latest.map(|d| d.to_string()),
                "destinations_without": miss, "destinations_pending": pending,
            },
        }));
    }
    let mut renewals = Vec::new();
    let approvals: Vec<&Value> = status["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for a in &approvals {
        let (Some(until), Some(status_s)) = (parse_date(&a["valid_until"]), a["status"].as_str())
        else {
            continue;
        };
        if status_s != "active" {
            continue;
        }
        let mech = a["mechanism"].as_str().unwrap_or_default();
        let dests: Vec<&Value> = a["destinations"].as_array().into_iter().flatten().collect();
        let successor = approvals.iter().find(|b| {
            b["id"] != a["id"]
                && matches!(b["status"].as_str(), Some("active" | "pending"))
                && level(b["mechanism"].as_str().unwrap_or_default()) >= level(mech)
                && dests.iter().all(|d| {
                    b["destinations"]
                        .as_array()
                        .is_some_and(|bd| bd.contains(d))
                })
                && a["categories"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|c| b["categories"].as_array().is_some_and(|bc| bc.contains(c)))
                && parse_date(&b["valid_until"]).is_none_or(|bu| bu > until)
        });
        let plan_from = add_months(until, -6);
        let wd = working_days_before(until, RENEWAL_WORKING_DAYS);
        let sa = mech == "security_assessment";
        let (extension_from, apply_by) = match (sa, regime) {
            (true, "cac-2024") => (Some(wd), Some(until)),
            (true, _) => (None, Some(wd)),
            (false, _) => (None, Some(until)),
        };
        let state = if let Some(b) = successor {
            if b["status"] == "pending" {
                "renewal_applied"
            } else {
                "renewed"
            }
        } else if today > until {
            "expired"
        } else if extension_from.is_some_and(|f| today >= f) {
            "extension_window_open"
        } else if apply_by.is_some_and(|b| today > b) {
            "late"
        } else if today >= plan_from {
            "open"
        } else {
            "not_yet"
        };
        actions_due += usize::from(due(state));
        renewals.push(json!({
            "approval": a["id"], "mechanism": mech, "valid_until": until.to_string(),
            "days_to_expiry": (until - today).whole_days(),
            "state": state, "start_from": plan_from.to_string(),
            "extension_window_from": extension_from.map(|d| d.to_string()),
            "apply_by": apply_by.map(|d| d.to_string()),
            "successor": successor.map(|b| b["id"].clone()),
        }));
    }
    let (now_missing, now_pending) = match status["required_mechanism"].as_str() {
        Some("none") | None => (vec![], vec![]),
        Some(m) => missing(status, m, Some(today)),
    };
    actions_due += usize::from(!now_missing.is_empty());
    json!({
        "entity": status["entity"], "regime": regime, "today": today.to_string(),
        "required_mechanism": status["required_mechanism"],
        "required_because": status["required_because"],
        "required_now": {"destinations_without": now_missing, "destinations_pending": now_pending},
        "entity_subjects": status["entity_subjects"],
        "rate_30_days": {"all": r.all, "sensitive": r.sensitive, "source": r.source},
        "thresholds": thresholds,
        "renewals": renewals,
        "actions_due": actions_due,
    })
}

/// The assessment as text for a person.
pub fn render(a: &Value) -> String {
    use crate::report::{list, text};
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} — regime {}, today {}",
        text(&a["entity"]),
        text(&a["regime"]),
        text(&a["today"])
    );
    let _ = writeln!(
        o,
        "mechanism required now: {}{}",
        text(&a["required_mechanism"]),
        a["required_because"]
            .as_str()
            .map(|t| format!(" (threshold {t})"))
            .unwrap_or_default()
    );
    let rn = &a["required_now"];
    if rn["destinations_without"]
        .as_array()
        .is_some_and(|v| !v.is_empty())
    {
        let _ = writeln!(
            o,
            "  ACTION: destinations receiving PI without it: {}",
            list(&rn["destinations_without"])
        );
    }
    let rate = &a["rate_30_days"];
    let _ = writeln!(
        o,
        "new subjects in the last 30 days: {} ({} sensitive){}\n",
        text(&rate["all"]),
        text(&rate["sensitive"]),
        if rate["source"] == "daily" {
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
    for t in a["thresholds"].as_array().into_iter().flatten() {
        let when = match t["crossing"].as_str() {
            Some("crossed") => "already".to_owned(),
            Some("this_window") => text(&t["crossing_date"]),
            Some("next_window") => format!("{} (next window)", text(&t["crossing_date"])),
            _ => "not at this rate".to_owned(),
        };
        let ap = &t["application"];
        let what = match ap["state"].as_str().unwrap_or_default() {
            "held" => "held by every destination".to_owned(),
            "applied" => format!("pending for {}", list(&ap["destinations_pending"])),
            "not_needed_at_this_rate" => "-".to_owned(),
            "not_yet" => format!(
                "start between {} and {}",
                text(&ap["opens"]),
                text(&ap["latest_start"])
            ),
            "open" => format!(
                "ACTION: start now (by {}) for {}",
                text(&ap["latest_start"]),
                list(&ap["destinations_without"])
            ),
            "late" => format!(
                "ACTION: late (should have started by {}) for {}",
                text(&ap["latest_start"]),
                list(&ap["destinations_without"])
            ),
            _ => format!(
                "ACTION: crossed without it for {}",
                list(&ap["destinations_without"])
            ),
        };
        let _ = writeln!(
            o,
            "{:<26} {:>9} {:>9} {:>9}  {:<24} {:<36} {}",
            text(&t["name"]),
            text(&t["count"]),
            text(&t["limit"]),
            text(&t["rate_30_days"]),
            when,
            text(&t["mechanism"]),
            what
        );
    }
    let renewals = a["renewals"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if !renewals.is_empty() {
        let _ = writeln!(
            o,
            "\n{:<16} {:<20} {:>11} {:>6}  RENEWAL",
            "APPROVAL", "MECHANISM", "VALID UNTIL", "DAYS"
        );
    }
    for r in renewals {
        let what = match r["state"].as_str().unwrap_or_default() {
            "renewed" => format!("renewed by {}", text(&r["successor"])),
            "renewal_applied" => format!("renewal pending ({})", text(&r["successor"])),
            "expired" => "ACTION: expired — renew, or remove it from approvals.toml".to_owned(),
            "extension_window_open" => format!(
                "ACTION: extension window open since {} — apply before {}",
                text(&r["extension_window_from"]),
                text(&r["valid_until"])
            ),
            "late" => format!(
                "ACTION: late — re-application was due by {}",
                text(&r["apply_by"])
            ),
            "open" => match r["extension_window_from"].as_str() {
                Some(f) => format!(
                    "ACTION: prepare the extension now; apply between {f} and {}",
                    text(&r["valid_until"])
                ),
                None => format!("ACTION: renew now; by {}", text(&r["apply_by"])),
            },
            _ => match r["extension_window_from"].as_str() {
                Some(f) => format!(
                    "start from {}; extension window {f} to {}",
                    text(&r["start_from"]),
                    text(&r["valid_until"])
                ),
                None => format!(
                    "start from {}; apply by {}",
                    text(&r["start_from"]),
                    text(&r["apply_by"])
                ),
            },
        };
        let _ = writeln!(
            o,
            "{:<16} {:<20} {:>11} {:>6}  {}",
            text(&r["approval"]),
            text(&r["mechanism"]),
            text(&r["valid_until"]),
            text(&r["days_to_expiry"]),
            what
        );
    }
    let n = a["actions_due"].as_u64().unwrap_or(0);
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

#[cfg(test)]
mod tests;
