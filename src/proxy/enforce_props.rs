//! Property test of the whole decision (policy + ledger + the proxy's enforcement step, with
//! the in-memory ledger): random approval sets — mechanisms, states, dates, volumes,
//! categories, destinations — and random request sequences get the same decisions whatever
//! the order of the approvals file, and no approval's volume is ever exceeded.

use super::enforce::{judge, Batch, Outcome};
use super::Gate;
use crate::ledger::{Ledger, MemoryLedger, Subject, SubjectHasher};
use crate::model::{Category, CategorySet};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 2026-06-15 12:00 in Asia/Shanghai.
fn today() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_781_496_000)
}

#[derive(Debug, Clone)]
struct Appr {
    mechanism: &'static str,
    status: &'static str,
    dates: (&'static str, &'static str),
    max_all: Option<u64>,
    max_sensitive: Option<u64>,
    contact: bool,
    health: bool,
    dests: &'static [&'static str],
}

impl Appr {
    fn toml(&self, id: usize) -> String {
        let mut cats = vec!["\"basic\""];
        if self.contact {
            cats.push("\"contact\"");
        }
        if self.health {
            cats.push("\"health\"");
        }
        let dests: Vec<String> = self.dests.iter().map(|d| format!("\"{d}\"")).collect();
        let mut s = format!(
            "[[approval]]\nid = \"A{id}\"\nmechanism = \"{}\"\nstatus = \"{}\"\ndestinations = [{}]\ncategories = [{}]\nvalid_from = \"{}\"\nvalid_until = \"{}\"\n",
            self.mechanism,
            self.status,
            dests.join(", "),
            cats.join(", "),
            self.dates.0,
            self.dates.1
        );
        if let Some(m) = self.max_all {
            s.push_str(&format!("max_subjects = {m}\n"));
        }
        if let Some(m) = self.max_sensitive {
            s.push_str(&format!("max_sensitive_subjects = {m}\n"));
        }
        s
    }
}

/// The destination lists an approval can name.
const DESTS: &[&[&str]] = &[&["eu"], &["us"], &["eu", "us"]];

fn appr() -> impl Strategy<Value = Appr> {
    (
        prop::sample::select(&["security_assessment", "standard_contract", "certification"][..]),
        prop::sample::select(
            &[
                "active", "active", "active", "pending", "revoked", "rejected",
            ][..],
        ),
        prop::sample::select(
            &[
                ("2025-01-01", "2027-06-30"),
                ("2025-01-01", "2027-06-30"),
                ("2024-01-01", "2026-06-14"),
                ("2026-06-16", "2028-01-01"),
                ("2026-06-15", "2026-06-15"),
            ][..],
        ),
        prop::option::of(1u64..8),
        prop::option::of(0u64..4),
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(DESTS),
    )
        .prop_map(
            |(mechanism, status, dates, max_all, max_sensitive, contact, health, dests)| Appr {
                mechanism,
                status,
                dates,
                max_all,
                max_sensitive,
                contact,
                health,
                dests,
            },
        )
}

/// One request: destination (0 eu, 1 us), subjects (id, sensitive), carries contact data.
type Req = (usize, Vec<(u8, bool)>, bool);

fn request() -> impl Strategy<Value = Req> {
    (
        0usize..2,
        prop::collection::vec((0u8..24, prop::bool::weighted(0.3)), 1..4),
        prop::bool::weighted(0.2),
    )
}

fn config(
    dir: &std::path::Path,
    regime: &str,
    ciio: bool,
    approvals: &str,
) -> crate::config::Config {
    let gate = format!(
        "[gate]\nproxy_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[entity]\nname = \"Co\"\nregime = \"{regime}\"\nciio = {ciio}\n[inspection.categories]\nhealth = [\"diagnosis\"]\ncontact = [\"phone\"]\n[[destination]]\nname = \"eu\"\nrecipient = \"EU GmbH\"\ncountry = \"DE\"\nhosts = [\"api.eu.test\"]\n[[destination]]\nname = \"us\"\nrecipient = \"US Inc\"\ncountry = \"US\"\nhosts = [\"api.us.test\"]\n"
    );
    std::fs::write(dir.join("gate.toml"), gate).unwrap();
    std::fs::write(dir.join("approvals.toml"), approvals).unwrap();
    match crate::config::load(&dir.join("gate.toml")) {
        Ok((c, _)) => c,
        Err(d) => panic!("{d:?}"),
    }
}

/// A decision as the audit line would show it.
type Decision = (Outcome, &'static str, Option<String>, &'static str);

/// Runs `reqs` through a fresh gate over `approvals`; checks every approval volume after each
/// request and returns the decisions.
async fn play(regime: &str, ciio: bool, approvals: &str, reqs: &[Req]) -> Vec<Decision> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), regime, ciio, approvals);
    let ledger = Arc::new(MemoryLedger::new());
    let metrics = crate::metrics::Metrics::register(&prometheus::Registry::new()).unwrap();
    let audit = crate::audit::Audit::start(Some(dir.path().join("audit.jsonl"))).unwrap();
    let hasher = SubjectHasher::from_key([7; 32]);
    let gate: Arc<Gate> = Gate::new(
        cfg,
        metrics,
        audit,
        ledger.clone(),
        hasher.clone(),
        Arc::new(crate::model::SystemClock),
    )
    .await
    .unwrap();
    let snap = gate.snapshot();
    let regime = snap.config.entity.regime;
    let mut out = Vec::new();
    for (dest, subjects, contact) in reqs {
        let mut batch = Batch::default();
        let mut cats = CategorySet::of(Category::Basic);
        for (id, sensitive) in subjects {
            batch.subjects.push(Subject {
                key: hasher.hash("user_id", &[*id]),
                sensitive: *sensitive,
            });
            if *sensitive {
                cats.insert(Category::Health);
            }
        }
        if *contact {
            cats.insert(Category::Contact);
        }
        batch.categories = cats;
        let v = judge(&gate, &snap, *dest, &batch, today(), false).await;
        out.push((
            v.outcome,
            v.reason.as_str(),
            v.approval.clone(),
            v.required.as_str(),
        ));
        for (i, a) in snap.config.approvals.iter().enumerate() {
            let c = ledger
                .counts(snap.scopes.approval[i], regime, today())
                .await
                .unwrap();
            assert!(
                a.max_subjects.is_none_or(|m| c.all <= m),
                "{} over its volume: {c:?}",
                a.id
            );
            assert!(
                a.max_sensitive_subjects.is_none_or(|m| c.sensitive <= m),
                "{} over its sensitive volume: {c:?}",
                a.id
            );
        }
    }
    out
}

proptest! {
    // 48 cases by default (each starts two gates); `PROPTEST_CASES=N` for a longer soak.
    #![proptest_config(ProptestConfig {
        cases: crate::testing::proptest_cases(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn decisions_do_not_depend_on_the_file_order_and_volumes_hold(
        regime in prop::sample::select(&["cac-2024", "cac-2022"][..]),
        ciio in prop::bool::weighted(0.2),
        approvals in prop::collection::vec(appr(), 1..6),
        order in any::<prop::sample::Index>(),
        reqs in prop::collection::vec(request(), 1..30),
    ) {
        let texts: Vec<String> = approvals.iter().enumerate().map(|(i, a)| a.toml(i)).collect();
        let forward = texts.concat();
        // Another order: rotated, then reversed.
        let mut other = texts.clone();
        other.rotate_left(order.index(texts.len()));
        other.reverse();
        let other = other.concat();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (a, b) = rt.block_on(async {
            (
                play(regime, ciio, &forward, &reqs).await,
                play(regime, ciio, &other, &reqs).await,
            )
        });
        prop_assert_eq!(a, b);
    }
}
