//! Table tests of SPEC §5 "Reasons name the real obstacle", over every combination of the
//! mechanism required × the approval's state × the approval's mechanism, and of the order in
//! which several fitting approvals are offered to the ledger.

use super::tests::{approvals, config, counts, pi, run};
use super::*;
use crate::model::Category;

/// The states an approval can be in on `TODAY` (2026-06-15), with its dates.
const STATES: [(&str, &str, &str, &str); 6] = [
    ("in force", "active", "2025-01-01", "2027-06-30"),
    ("expired", "active", "2024-01-01", "2026-06-14"),
    ("not yet valid", "active", "2026-06-16", "2028-01-01"),
    ("pending", "pending", "2025-01-01", "2027-06-30"),
    ("rejected", "rejected", "2025-01-01", "2027-06-30"),
    ("revoked", "revoked", "2025-01-01", "2027-06-30"),
];

const MECHANISMS: [&str; 3] = ["security_assessment", "standard_contract", "certification"];

fn one(mechanism: &str, status: &str, from: &str, until: &str) -> String {
    format!("[[approval]]\nid = \"A\"\nmechanism = \"{mechanism}\"\nstatus = \"{status}\"\ndestinations = [\"eu\"]\ncategories = [\"basic\", \"health\"]\nvalid_from = \"{from}\"\nvalid_until = \"{until}\"\n")
}

#[test]
fn every_required_mechanism_state_and_approval_mechanism() {
    // (required, entity keys, request categories, counts after)
    let required = [
        ("none", "", Category::Basic, counts(1, 0)),
        (
            "standard_contract_or_certification",
            "",
            Category::Health,
            counts(5, 1),
        ),
        (
            "security_assessment",
            "ciio = true",
            Category::Basic,
            counts(1, 0),
        ),
    ];
    let mut rows = 0;
    for (need, entity, cat, after) in required {
        for (state, status, from, until) in STATES {
            for mech in MECHANISMS {
                let cfg = config("cac-2024", entity, &one(mech, status, from, until));
                let plan = run(&cfg, pi(&[cat]), after);
                let strong_enough = need != "security_assessment" || mech == "security_assessment";
                // What SPEC §5 says, case by case.
                let want: Option<&str> = match (need, strong_enough, state) {
                    ("none", _, _) => None,
                    (_, true, "in force") => None,
                    (_, true, "expired") => Some("approval_expired"),
                    (_, true, "pending") => Some("approval_pending"),
                    (_, true, "revoked") => Some("approval_revoked"),
                    (_, true, "not yet valid" | "rejected") => Some("approval_required"),
                    (_, false, _) => Some("approval_required"),
                    _ => unreachable!(),
                };
                let case = format!("required {need}, approval {mech} {state}");
                match (want, &plan) {
                    (None, Plan::Reserve(r)) => {
                        let relied: Vec<Option<usize>> =
                            r.choices.iter().map(|c| c.approval).collect();
                        let expect = match (need, state) {
                            ("none", "in force") => vec![None, Some(0)],
                            ("none", _) => vec![None],
                            _ => vec![Some(0)],
                        };
                        assert_eq!(relied, expect, "{case}");
                    }
                    (Some(reason), Plan::Refuse(r)) => {
                        assert_eq!(r.reason.as_str(), reason, "{case}");
                        assert_eq!(r.required_mechanism.as_str(), need, "{case}");
                    }
                    _ => panic!("{case}: expected {want:?}, got {plan:?}"),
                }
                rows += 1;
            }
        }
    }
    assert_eq!(rows, 3 * 6 * 3);
}

#[test]
fn the_obstacle_is_named_among_several_approvals() {
    let sa = |status: &str, until: &str| {
        one("security_assessment", status, "2025-01-01", until).replace("\"A\"", "\"SA\"")
    };
    let scc = |status: &str| one("standard_contract", status, "2025-01-01", "2027-06-30");
    let ciio = |approvals: &str| config("cac-2024", "ciio = true", approvals);
    let basic = pi(&[Category::Basic]);
    let reason = |cfg: &Config| match run(cfg, basic, counts(1, 0)) {
        Plan::Refuse(r) => r.reason.as_str(),
        other => panic!("expected a refusal, got {other:?}"),
    };
    // A revoked or pending contract cannot satisfy an assessment requirement; the expired
    // assessment next to it is the real obstacle.
    assert_eq!(
        reason(&ciio(&(scc("revoked") + &sa("active", "2026-06-01")))),
        "approval_expired"
    );
    assert_eq!(
        reason(&ciio(&(sa("pending", "2027-06-30") + &scc("active")))),
        "approval_pending"
    );
    assert_eq!(reason(&ciio(&scc("pending"))), "approval_required");
    // Two assessments in different states: no single state to name.
    let two =
        sa("pending", "2027-06-30") + &sa("revoked", "2027-06-30").replace("\"SA\"", "\"SA-2\"");
    assert_eq!(reason(&ciio(&two)), "approval_required");
}

#[test]
fn fitting_approvals_are_offered_in_an_order_the_file_does_not_change() {
    let a = |id: &str, mech: &str, until: &str, extra: &str| {
        format!("[[approval]]\nid = \"{id}\"\nmechanism = \"{mech}\"\nstatus = \"active\"\ndestinations = [\"eu\"]\ncategories = [\"basic\", \"health\"]\nvalid_from = \"2025-01-01\"\nvalid_until = \"{until}\"\n{extra}\n")
    };
    let list = [
        a(
            "SMALL",
            "standard_contract",
            "2027-06-30",
            "max_subjects = 5",
        ),
        a(
            "BIG",
            "standard_contract",
            "2027-06-30",
            "max_subjects = 100",
        ),
        a("SOON", "certification", "2026-12-31", ""),
        a("SA", "security_assessment", "2026-07-01", ""),
        a("NARROW", "standard_contract", "2027-06-30", "")
            .replace("\"basic\", \"health\"", "\"basic\""),
    ];
    let ids = |cfg: &Config, plan: &Plan| -> Vec<String> {
        match plan {
            Plan::Reserve(r) => r
                .choices
                .iter()
                .map(|c| {
                    c.approval
                        .map_or("-".into(), |i| cfg.approvals[i].id.clone())
                })
                .collect(),
            other => panic!("expected a reservation, got {other:?}"),
        }
    };
    let health = pi(&[Category::Health]);
    let want = ["SOON", "BIG", "SMALL", "SA"];
    let forward = config("cac-2024", "", &list.concat());
    let mut reversed = list.clone();
    reversed.reverse();
    let backward = config("cac-2024", "", &reversed.concat());
    for cfg in [&forward, &backward] {
        let plan = run(cfg, health, counts(5, 1));
        assert_eq!(
            ids(cfg, &plan),
            want,
            "weakest mechanism, soonest expiry, then id"
        );
        // Each carries its own volume and the entity ceilings of its mechanism.
        let Plan::Reserve(r) = &plan else {
            unreachable!()
        };
        let small = r
            .choices
            .iter()
            .find(|c| c.approval.is_some_and(|i| cfg.approvals[i].id == "SMALL"))
            .unwrap();
        assert!(small
            .ceilings
            .iter()
            .any(|c| matches!(c.scope, CeilingScope::Approval(_)) && c.max_after == 5));
        assert!(small
            .ceilings
            .iter()
            .any(|c| c.scope == CeilingScope::Entity && c.max_after == 9_999));
    }
    // Nothing required: the way without an approval comes first, the fitting ones after it.
    let basic = pi(&[Category::Basic]);
    assert_eq!(
        ids(&forward, &run(&forward, basic, counts(5, 0))),
        ["-", "SOON", "BIG", "NARROW", "SMALL", "SA"]
    );
    assert_eq!(approvals(&run(&backward, basic, counts(5, 0)))[0], None);
}
