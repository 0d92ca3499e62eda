//! Date arithmetic and the assessment's decisions.

use super::*;
use serde_json::{json, Value};
use time::macros::date;

#[test]
fn working_days_skip_weekends_and_holidays() {
    assert!(is_working_day(date!(2026 - 11 - 25))); // Wednesday
    assert!(!is_working_day(date!(2026 - 11 - 28))); // Saturday
    assert!(!is_working_day(date!(2026 - 10 - 1))); // National Day
    assert!(is_working_day(date!(2026 - 10 - 10))); // adjusted working Saturday
    assert!(!is_working_day(date!(2025 - 1 - 28))); // Spring Festival
    assert!(is_working_day(date!(2025 - 1 - 26))); // adjusted working Sunday
                                                   // Years without a table: Monday to Friday.
    assert!(is_working_day(date!(2030 - 1 - 1)));
    assert!(!is_working_day(date!(2030 - 1 - 5)));
}

#[test]
fn sixty_working_days_before_expiry() {
    // 2030 has no holiday table: 60 working days = 12 full weeks before a Monday.
    assert_eq!(
        working_days_before(date!(2030 - 6 - 3), 60),
        date!(2030 - 3 - 11)
    );
    assert_eq!(
        working_days_before(date!(2030 - 6 - 3), 1),
        date!(2030 - 5 - 31)
    );
    // Across National Day 2026 (Oct 1–7 off, Sep 20 and Oct 10 worked).
    // From 2026-10-12 (Mon) back: Oct 10 (Sat, worked), Oct 9, 8 → 3 working days.
    assert_eq!(
        working_days_before(date!(2026 - 10 - 12), 3),
        date!(2026 - 10 - 8)
    );
    assert_eq!(
        working_days_before(date!(2026 - 10 - 12), 4),
        date!(2026 - 9 - 30)
    );
}

#[test]
fn months_clamp_to_month_end() {
    assert_eq!(add_months(date!(2028 - 2 - 29), -6), date!(2027 - 8 - 29));
    assert_eq!(add_months(date!(2026 - 8 - 31), -6), date!(2026 - 2 - 28));
    assert_eq!(add_months(date!(2027 - 5 - 31), -18), date!(2025 - 11 - 30));
    assert_eq!(add_months(date!(2026 - 1 - 15), 12), date!(2027 - 1 - 15));
}

#[test]
fn crossing_dates() {
    let today = date!(2026 - 3 - 1);
    assert_eq!(
        crossing(Regime::Cac2024, 100_000, 100_000, 5, today),
        Crossing::Crossed
    );
    assert_eq!(
        crossing(Regime::Cac2024, 10, 100_000, 0, today),
        Crossing::NotAtThisRate
    );
    // 90,000 + 3,000 per 30 days: 10,000 more need 100 days.
    assert_eq!(
        crossing(Regime::Cac2024, 90_000, 100_000, 3_000, today),
        Crossing::On(date!(2026 - 6 - 9))
    );
    // Not before Dec 31 under cac-2024: the next window counts from zero.
    assert_eq!(
        crossing(
            Regime::Cac2024,
            10_000,
            100_000,
            9_000,
            date!(2026 - 11 - 1)
        ),
        // 100,000 at 300/day: 334 days from Jan 1 (day 1) → Nov 30.
        Crossing::NextWindow(date!(2027 - 11 - 30))
    );
    assert_eq!(
        crossing(
            Regime::Cac2024,
            10_000,
            1_000_000,
            9_000,
            date!(2026 - 11 - 1)
        ),
        Crossing::NotAtThisRate
    );
    // cac-2022 projects straight on (the window roll-over drop is ignored: earlier, safer).
    assert_eq!(
        crossing(
            Regime::Cac2022,
            10_000,
            100_000,
            9_000,
            date!(2026 - 11 - 1)
        ),
        Crossing::On(date!(2027 - 8 - 28))
    );
}

#[test]
fn rate_from_daily_samples_or_monthly_estimate() {
    let today = date!(2026 - 11 - 25);
    let h = json!({"days": [
        {"date": "2026-10-20", "all": 100, "sensitive": 1},
        {"date": "2026-10-26", "all": 400, "sensitive": 5},
        {"date": "2026-11-25", "all": 1_000, "sensitive": 9},
    ]});
    assert_eq!(
        rate(&history(h), today),
        Rate {
            all: 600,
            sensitive: 4,
            source: RateSource::Daily
        }
    );
    // No sample 30 days back: this month (25 days) + 5/31 of last month.
    let h = json!({"days": [{"date": "2026-11-20", "all": 5, "sensitive": 0}],
        "entity_months": [
            {"month": "2026-10", "subjects": 310, "sensitive_subjects": 31},
            {"month": "2026-11", "subjects": 250, "sensitive_subjects": 0}]});
    assert_eq!(
        rate(&history(h), today),
        Rate {
            all: 300,
            sensitive: 5,
            source: RateSource::MonthlyEstimate
        }
    );
}

fn history(v: Value) -> History {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("history: {e}"))
}

/// The typed assessment of two JSON documents, and its JSON.
fn run(status: &Value, h: &Value) -> (Assessment, Value) {
    let status: Status =
        serde_json::from_value(status.clone()).unwrap_or_else(|e| panic!("status: {e}"));
    let a = assess(&status, &history(h.clone()));
    let v = serde_json::to_value(&a).unwrap_or_else(|e| panic!("json: {e}"));
    (a, v)
}

fn status(approvals: Value, subjects: u64) -> Value {
    json!({
        "entity": "Test Co.", "regime": "cac-2024", "today": "2026-11-25",
        "required_mechanism": "none", "required_because": null,
        "entity_subjects": {"all": subjects, "sensitive": 0},
        "thresholds": [
            {"name": "subjects_100000", "limit": 100_000, "count": subjects},
            {"name": "subjects_1000000", "limit": 1_000_000, "count": subjects},
            {"name": "sensitive_subjects_10000", "limit": 10_000, "count": 0},
            {"name": "any_sensitive", "limit": 1, "count": 0}
        ],
        "destinations": [{"name": "eu", "subjects": subjects, "exemption": null}],
        "approvals": approvals,
    })
}

#[test]
fn nothing_due_far_from_thresholds_and_expiry() {
    let s = status(
        json!([{"id": "SC-1", "mechanism": "standard_contract", "status": "active", "state": "in_force",
                "destinations": ["eu"], "valid_until": "2029-01-01"}]),
        1_000,
    );
    let h = json!({"days": [{"date": "2026-10-01", "all": 0, "sensitive": 0},
                            {"date": "2026-11-25", "all": 1_000, "sensitive": 0}]});
    let (_, a) = run(&s, &h);
    assert_eq!(a["actions_due"], 0, "{a:#}");
    assert_eq!(a["renewals"][0]["state"], "not_yet");
    assert_eq!(a["renewals"][0]["start_from"], "2028-07-01");
}

#[test]
fn application_window_opens_18_months_before_an_assessment_crossing() {
    // 900,000 subjects, +30,000 per 30 days: 1,000,000 on day 100 → 2027-03-05, which is in
    // the next window under cac-2024… so use a count that crosses this year.
    let s = status(json!([]), 990_000);
    let h = json!({"days": [{"date": "2026-10-01", "all": 0, "sensitive": 0},
                            {"date": "2026-11-25", "all": 30_000, "sensitive": 0}]});
    let (_, a) = run(&s, &h);
    let t = &a["thresholds"][1];
    assert_eq!(t["name"], "subjects_1000000");
    assert_eq!(t["crossing_date"], "2026-12-05");
    assert_eq!(t["application"]["state"], "late");
    assert_eq!(t["application"]["opens"], "2025-06-05");
    assert_eq!(t["application"]["latest_start"], "2026-06-05");
    assert_eq!(a["thresholds"][0]["application"]["state"], "overdue");
    assert!(a["actions_due"].as_u64().unwrap() >= 2);
}

#[test]
fn renewal_windows() {
    let s = status(
        json!([
            {"id": "SA-1", "mechanism": "security_assessment", "status": "active", "state": "in_force",
             "destinations": ["eu"], "valid_until": "2027-03-01"},
            {"id": "SC-1", "mechanism": "standard_contract", "status": "active", "state": "in_force",
             "destinations": ["eu"], "valid_until": "2027-06-30"},
            {"id": "SC-2", "mechanism": "standard_contract", "status": "pending", "state": "pending",
             "destinations": ["eu"], "valid_until": "2029-12-31"}
        ]),
        10,
    );
    let (typed, a) = run(&s, &json!({}));
    let r = &a["renewals"];
    assert_eq!(r[0]["approval"], "SA-1");
    assert_eq!(r[0]["state"], "open");
    assert_eq!(r[0]["start_from"], "2026-09-01");
    // 60 working days before 2027-03-01 (2027 has no holiday table: Mon–Fri).
    assert_eq!(r[0]["extension_window_from"], "2026-12-07");
    assert_eq!(r[1]["approval"], "SC-1");
    assert_eq!(r[1]["state"], "renewal_applied");
    assert_eq!(a["actions_due"], 1, "{a:#}");
    let text = render(&typed);
    assert!(text.contains("ACTION: prepare the extension now"), "{text}");
}

/// `assess --json` and the text of a real gate's documents (the example configuration with
/// three subjects sent), as the untyped planner wrote them: the typed one writes the same bytes.
#[test]
fn documents_of_a_real_gate_give_the_same_bytes() {
    let s: Value = serde_json::from_str(include_str!("testdata/status.json")).unwrap();
    let h: Value = serde_json::from_str(include_str!("testdata/history.json")).unwrap();
    let (a, _) = run(&s, &h);
    let json = serde_json::to_string_pretty(&a).unwrap() + "\n";
    assert_eq!(json, include_str!("testdata/assessment.json"));
    assert_eq!(render(&a), include_str!("testdata/assessment.txt"));
}

/// The JSON keys come out sorted (the order of the untyped document), whatever is filled in.
#[test]
fn keys_are_sorted() {
    let s = status(
        json!([{"id": "SA-1", "mechanism": "security_assessment", "status": "active",
                "state": "in_force", "destinations": ["eu"], "valid_until": "2027-03-01"}]),
        990_000,
    );
    let (a, v) = run(&s, &json!({}));
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&v).unwrap()
    );
}

#[test]
fn an_exempt_destination_needs_nothing_under_cac_2024_only() {
    let mut s = status(json!([]), 200_000);
    s["destinations"][0]["exemption"] = json!("contract");
    s["required_mechanism"] = json!("standard_contract_or_certification");
    let (a, _) = run(&s, &json!({}));
    assert_eq!(a.required_now, Destinations::default());
    assert_eq!(a.thresholds[0].application.state, ApplicationState::Held);
    s["regime"] = json!("cac-2022");
    let (a, _) = run(&s, &json!({}));
    assert_eq!(a.required_now.destinations_without, ["eu"]);
    assert_eq!(
        a.actions_due,
        1 + 1,
        "required now, and subjects_100000 crossed"
    );
}

#[test]
fn a_pending_approval_counts_as_applied() {
    let s = status(
        json!([{"id": "SC-9", "mechanism": "certification", "status": "pending",
                "state": "pending", "destinations": ["eu"]}]),
        100_000,
    );
    let (a, _) = run(&s, &json!({}));
    let t = &a.thresholds[0];
    assert_eq!(t.name, Threshold::Subjects100k);
    assert_eq!(t.crossing, CrossingWhen::Crossed);
    assert_eq!(t.application.state, ApplicationState::Applied);
    assert_eq!(t.application.destinations.destinations_pending, ["eu"]);
    assert!(a.renewals.is_empty(), "only active approvals are renewed");
}

#[test]
fn a_security_assessment_renews_60_working_days_ahead_under_cac_2022() {
    let mut s = status(
        json!([{"id": "SA-1", "mechanism": "security_assessment", "status": "active",
                "state": "in_force", "destinations": ["eu"], "valid_until": "2027-01-10"}]),
        10,
    );
    s["regime"] = json!("cac-2022");
    let (a, _) = run(&s, &json!({}));
    let r = &a.renewals[0];
    assert_eq!(r.extension_window_from, None);
    assert_eq!(
        r.apply_by,
        Some(working_days_before(date!(2027 - 1 - 10), 60))
    );
    assert_eq!(r.state, RenewalState::Late);
    assert!(a.renewals.iter().all(|r| r.state.is_due()));
}

#[test]
fn a_document_with_an_unknown_mechanism_is_refused() {
    let s = status(
        json!([{"id": "X", "mechanism": "handshake", "status": "active", "destinations": ["eu"]}]),
        10,
    );
    assert!(serde_json::from_value::<Status>(s).is_err());
}
