//! Table tests of the policy at every boundary of both regimes.

use super::*;
use crate::model::Category;
use time::macros::date;

const TODAY: time::Date = date!(2026 - 06 - 15);

pub(super) fn config(regime: &str, extra_entity: &str, approvals: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let gate = format!(
        r#"
[gate]
proxy_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[entity]
name = "Co"
regime = "{regime}"
{extra_entity}
[[destination]]
name = "eu"
recipient = "EU GmbH"
country = "DE"
hosts = ["api.eu.test"]
[[destination]]
name = "hr"
recipient = "HR Ltd"
country = "SG"
hosts = ["hr.test"]
{exempt}
"#,
        exempt = if regime == "cac-2024" {
            "exemption = \"hr_management\""
        } else {
            ""
        }
    );
    std::fs::write(dir.path().join("gate.toml"), gate).unwrap();
    std::fs::write(dir.path().join("approvals.toml"), approvals).unwrap();
    match crate::config::load(&dir.path().join("gate.toml")) {
        Ok((c, _)) => c,
        Err(d) => panic!("{d:?}"),
    }
}

pub(super) fn approval(id: &str, mechanism: &str, status: &str, cats: &str, extra: &str) -> String {
    format!(
        "[[approval]]\nid = \"{id}\"\nmechanism = \"{mechanism}\"\nstatus = \"{status}\"\ndestinations = [\"eu\"]\ncategories = [{cats}]\nvalid_from = \"2025-01-01\"\nvalid_until = \"2027-06-30\"\n{extra}\n"
    )
}

pub(super) fn pi(cats: &[Category]) -> Facts {
    Facts {
        has_pi: true,
        categories: cats.iter().copied().collect(),
        important_data: false,
    }
}

pub(super) fn counts(all: u64, sensitive: u64) -> Counts {
    Counts { all, sensitive }
}

pub(super) fn run(cfg: &Config, facts: Facts, after: Counts) -> Plan {
    decide(cfg, cfg.destination("eu").unwrap(), facts, after, TODAY)
}

pub(super) fn refused(p: &Plan) -> (&'static str, &'static str, Option<&'static str>) {
    match p {
        Plan::Refuse(r) => (
            r.reason.as_str(),
            r.required_mechanism.as_str(),
            r.threshold,
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The approvals a reservation may rely on, in the order the ledger tries them.
pub(super) fn approvals(p: &Plan) -> Vec<Option<usize>> {
    reserve(p).choices.iter().map(|c| c.approval).collect()
}

pub(super) fn reserve(p: &Plan) -> &Reserve {
    match p {
        Plan::Reserve(r) => r,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

#[test]
fn cac2024_without_approvals() {
    let cfg = config("cac-2024", "", "");
    let basic = pi(&[Category::Basic]);
    let r = run(&cfg, basic, counts(99_999, 0));
    assert_eq!(reserve(&r).required, Mechanism::None);
    assert!(reserve(&r).choices[0].ceilings.contains(&CeilingSpec {
        scope: CeilingScope::Entity,
        class: CountClass::All,
        max_after: 99_999
    }));
    assert_eq!(
        refused(&run(&cfg, basic, counts(100_000, 0))),
        (
            "approval_required",
            "standard_contract_or_certification",
            Some("subjects_100000")
        )
    );
    assert_eq!(
        refused(&run(&cfg, pi(&[Category::Health]), counts(5, 1))),
        (
            "approval_required",
            "standard_contract_or_certification",
            Some("any_sensitive")
        )
    );
    // Non-sensitive request, but the entity already has a sensitive subject in the window.
    assert_eq!(
        refused(&run(&cfg, basic, counts(5, 1))).0,
        "approval_required"
    );
    assert_eq!(
        run(&cfg, Facts::default(), counts(0, 0)),
        Plan::Pass(Reason::NoPi)
    );
}

#[test]
fn cac2024_with_a_standard_contract() {
    let cfg = config(
        "cac-2024",
        "",
        &approval(
            "SCC-1",
            "standard_contract",
            "active",
            "\"basic\", \"contact\", \"health\"",
            "max_subjects = 2000000",
        ),
    );
    let r = run(&cfg, pi(&[Category::Contact]), counts(999_999, 0));
    let res = reserve(&r);
    assert_eq!(res.choices[0].approval, Some(0));
    assert_eq!(res.required, Mechanism::StandardContractOrCertification);
    assert!(res.choices[0].ceilings.contains(&CeilingSpec {
        scope: CeilingScope::Entity,
        class: CountClass::All,
        max_after: 999_999
    }));
    assert!(res.choices[0].ceilings.contains(&CeilingSpec {
        scope: CeilingScope::Entity,
        class: CountClass::Sensitive,
        max_after: 9_999
    }));
    assert!(res.choices[0].ceilings.contains(&CeilingSpec {
        scope: CeilingScope::Approval(0),
        class: CountClass::All,
        max_after: 2_000_000
    }));
    assert_eq!(
        refused(&run(&cfg, pi(&[Category::Basic]), counts(1_000_000, 0))),
        (
            "approval_required",
            "security_assessment",
            Some("subjects_1000000")
        )
    );
    assert_eq!(
        reserve(&run(&cfg, pi(&[Category::Health]), counts(50, 9_999))).choices[0].approval,
        Some(0)
    );
    assert_eq!(
        refused(&run(&cfg, pi(&[Category::Health]), counts(50, 10_000))),
        (
            "approval_required",
            "security_assessment",
            Some("sensitive_subjects_10000")
        )
    );
    // A category the contract does not list.
    assert_eq!(
        refused(&run(&cfg, pi(&[Category::Financial]), counts(50, 1))).0,
        "category_not_approved"
    );
}

#[test]
fn cac2022_boundaries() {
    let cfg = config(
        "cac-2022",
        "",
        &approval("SCC-1", "standard_contract", "active", "\"basic\"", ""),
    );
    assert_eq!(
        reserve(&run(&cfg, pi(&[Category::Basic]), counts(99_999, 0))).choices[0].approval,
        Some(0)
    );
    // SPEC §11: entity at 99,990, 20 new subjects to eu → needs an assessment.
    assert_eq!(
        refused(&run(&cfg, pi(&[Category::Basic]), counts(100_010, 0))),
        (
            "approval_required",
            "security_assessment",
            Some("subjects_100000")
        )
    );
    assert_eq!(
        refused(&run(&cfg, pi(&[Category::Basic]), counts(10, 10_000))).2,
        Some("sensitive_subjects_10000")
    );
    let none = config("cac-2022", "", "");
    assert_eq!(
        refused(&run(&none, pi(&[Category::Basic]), counts(1, 0))),
        (
            "approval_required",
            "standard_contract_or_certification",
            None
        )
    );
    let big = config(
        "cac-2022",
        "pi_subjects_processed = 1000000",
        &approval("SCC-1", "standard_contract", "active", "\"basic\"", ""),
    );
    assert_eq!(
        refused(&run(&big, pi(&[Category::Basic]), counts(1, 0))),
        (
            "approval_required",
            "security_assessment",
            Some("pi_processed_1000000")
        )
    );
    let below = config(
        "cac-2022",
        "pi_subjects_processed = 999999",
        &approval("SCC-1", "standard_contract", "active", "\"basic\"", ""),
    );
    assert!(matches!(
        run(&below, pi(&[Category::Basic]), counts(1, 0)),
        Plan::Reserve(_)
    ));
}

#[test]
fn ciio_needs_an_assessment_for_any_pi() {
    let cfg = config(
        "cac-2024",
        "ciio = true",
        &approval("SCC-1", "standard_contract", "active", "\"basic\"", ""),
    );
    assert_eq!(
        refused(&run(&cfg, pi(&[Category::Basic]), counts(1, 0))),
        ("approval_required", "security_assessment", Some("ciio"))
    );
    let sa = config(
        "cac-2024",
        "ciio = true",
        &approval("SA-1", "security_assessment", "active", "\"basic\"", ""),
    );
    let r = run(&sa, pi(&[Category::Basic]), counts(1, 0));
    assert!(reserve(&r).choices[0].ceilings.is_empty());
}

#[test]
fn the_only_approval_names_its_state() {
    let base = |status: &str| {
        config(
            "cac-2024",
            "",
            &approval("A", "standard_contract", status, "\"basic\"", ""),
        )
    };
    let sens = pi(&[Category::Basic]);
    let over = counts(100_000, 0);
    assert_eq!(
        refused(&run(&base("pending"), sens, over)).0,
        "approval_pending"
    );
    assert_eq!(
        refused(&run(&base("revoked"), sens, over)).0,
        "approval_revoked"
    );
    assert_eq!(
        refused(&run(&base("rejected"), sens, over)).0,
        "approval_required"
    );
    // A pending application next to nothing else blocks; next to an active one it is ignored.
    let two = config(
        "cac-2024",
        "",
        &(approval("P", "security_assessment", "pending", "\"basic\"", "")
            + &approval("A", "standard_contract", "active", "\"basic\"", "")),
    );
    assert_eq!(approvals(&run(&two, sens, over)), [Some(1)]);
    // An active contract when an assessment is needed: approval_required, not expired.
    assert_eq!(
        refused(&run(&base("active"), sens, counts(1_000_000, 0))).0,
        "approval_required"
    );
}

#[test]
fn validity_dates_are_inclusive() {
    let mk = |from: &str, until: &str| {
        config("cac-2024", "", &format!("[[approval]]\nid = \"A\"\nmechanism = \"standard_contract\"\nstatus = \"active\"\ndestinations = [\"eu\"]\ncategories = [\"basic\"]\nvalid_from = \"{from}\"\nvalid_until = \"{until}\"\n"))
    };
    let f = pi(&[Category::Basic]);
    let over = counts(100_000, 0);
    assert!(
        matches!(
            run(&mk("2025-01-01", "2026-06-15"), f, over),
            Plan::Reserve(_)
        ),
        "the last valid day"
    );
    assert_eq!(
        refused(&run(&mk("2025-01-01", "2026-06-14"), f, over)).0,
        "approval_expired"
    );
    assert!(
        matches!(
            run(&mk("2026-06-15", "2027-01-01"), f, over),
            Plan::Reserve(_)
        ),
        "the first valid day"
    );
    assert_eq!(
        refused(&run(&mk("2026-06-16", "2027-01-01"), f, over)).0,
        "approval_required",
        "not yet valid"
    );
}

#[test]
fn volumes_become_ceilings() {
    let cfg = config(
        "cac-2024",
        "",
        &approval(
            "A",
            "standard_contract",
            "active",
            "\"basic\", \"health\"",
            "max_subjects = 500\nmax_sensitive_subjects = 5",
        ),
    );
    let facts = pi(&[Category::Health]);
    let res = reserve(&run(&cfg, facts, counts(10, 2))).clone();
    assert!(res.choices[0].ceilings.contains(&CeilingSpec {
        scope: CeilingScope::Approval(0),
        class: CountClass::Sensitive,
        max_after: 5
    }));
}

#[test]
fn exemptions_and_important_data() {
    let cfg = config("cac-2024", "", "");
    let hr = cfg.destination("hr").unwrap();
    let r = decide(
        &cfg,
        hr,
        pi(&[Category::Health]),
        counts(5_000_000, 50_000),
        TODAY,
    );
    assert!(reserve(&r).exempt);
    assert_eq!(reserve(&r).reason, Reason::Exempt);
    let important = Facts {
        has_pi: false,
        categories: CategorySet::EMPTY,
        important_data: true,
    };
    assert_eq!(
        refused(&run(&cfg, important, counts(0, 0))),
        (
            "important_data",
            "security_assessment",
            Some("important_data")
        )
    );
    let sa = config(
        "cac-2024",
        "",
        &approval("SA", "security_assessment", "active", "\"basic\"", ""),
    );
    assert_eq!(run(&sa, important, counts(0, 0)), Plan::Pass(Reason::NoPi));
    let with_pi = Facts {
        important_data: true,
        ..pi(&[Category::Basic])
    };
    assert_eq!(
        reserve(&run(&sa, with_pi, counts(1, 0))).required,
        Mechanism::SecurityAssessment
    );
}

#[test]
fn utilization_series_per_regime() {
    let u = utilization(Regime::Cac2024, 0, counts(50_000, 5_000));
    let names: Vec<_> = u.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(
        names,
        [
            "subjects_100000",
            "subjects_1000000",
            "sensitive_subjects_10000",
            "any_sensitive"
        ]
    );
    assert!((u[0].2 - 0.5).abs() < 1e-9);
    let u = utilization(Regime::Cac2022, 250_000, counts(0, 0));
    assert!(u
        .iter()
        .any(|(t, _, r)| *t == Threshold::PiProcessed1M && (*r - 0.25).abs() < 1e-9));
}
