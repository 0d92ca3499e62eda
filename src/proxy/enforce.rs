//! Enforcement: turns what the inspection found into a decision and a durable reservation.
//! For each batch of subjects (a whole atomic body, or the records a streamed chunk
//! completed) it probes the ledger for the entity's counts with the batch added, asks the pure
//! [`policy`] what to do, and reserves with the policy's ceilings — one atomic step, so that
//! concurrent requests can never together cross a limit. It also keeps the count gauges current.

use super::{Gate, Snapshot};
use crate::config::Config;
use crate::inspect::{RecordRef, SubjectRef};
use crate::ledger::{
    Ceiling, Class, LedgerError, Reservation, ReserveOutcome, Scope, ScopeId, ScopeOutcome,
    Subject, SubjectHasher,
};
use crate::model::{shanghai_date, Category, CategorySet};
use crate::policy::{self, CeilingScope, CeilingSpec, CountClass, Counts, Facts, Plan};
use crate::respond::{Mechanism, Reason, Refusal};
use std::time::{Instant, SystemTime};

/// The ledger scope ids of a configuration, registered when it loads.
#[derive(Debug, Clone)]
pub struct Scopes {
    /// All overseas destinations together.
    pub entity: ScopeId,
    /// Per destination (config order).
    pub destination: Vec<ScopeId>,
    /// Per destination with an exemption.
    pub exempt: Vec<Option<ScopeId>>,
    /// Per approval (config order).
    pub approval: Vec<ScopeId>,
    /// Per destination: the scopes a reservation counts into — entity, destination, and every
    /// approval naming the destination (shared volumes); for an exempt destination its exempt
    /// scope and its destination scope, never the entity.
    pub counted: Vec<Vec<ScopeId>>,
}

impl Scopes {
    /// The scope list to register for `cfg`, and a builder that turns the ids into [`Scopes`].
    pub fn wanted(cfg: &Config) -> Vec<Scope> {
        let mut v = vec![Scope::Entity];
        v.extend(
            cfg.destinations
                .iter()
                .map(|d| Scope::Destination(d.name.clone())),
        );
        v.extend(
            cfg.destinations
                .iter()
                .filter(|d| d.exemption.is_some())
                .map(|d| Scope::Exempt(d.name.clone())),
        );
        v.extend(cfg.approvals.iter().map(|a| Scope::Approval(a.id.clone())));
        v
    }

    /// Builds the table from the ids returned for [`Scopes::wanted`], in the same order.
    pub fn from_ids(cfg: &Config, ids: &[ScopeId]) -> Option<Scopes> {
        let mut it = ids.iter().copied();
        let entity = it.next()?;
        let destination: Vec<ScopeId> = cfg
            .destinations
            .iter()
            .map(|_| it.next())
            .collect::<Option<_>>()?;
        let mut exempt = Vec::with_capacity(cfg.destinations.len());
        for d in &cfg.destinations {
            exempt.push(if d.exemption.is_some() {
                Some(it.next()?)
            } else {
                None
            });
        }
        let approval: Vec<ScopeId> = cfg
            .approvals
            .iter()
            .map(|_| it.next())
            .collect::<Option<_>>()?;
        let counted = cfg
            .destinations
            .iter()
            .enumerate()
            .map(|(i, d)| match exempt[i] {
                Some(ex) => vec![ex, destination[i]],
                None => {
                    let mut s = vec![entity, destination[i]];
                    s.extend(policy::approvals_for(cfg, &d.name).map(|a| approval[a]));
                    s
                }
            })
            .collect();
        Some(Scopes {
            entity,
            destination,
            exempt,
            approval,
            counted,
        })
    }
}

/// What one batch of a request carries.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// Hashed subjects (duplicates allowed; the ledger counts each once).
    pub subjects: Vec<Subject>,
    /// Union of the subjects' categories.
    pub categories: CategorySet,
    /// An important-data rule matched.
    pub important: bool,
    /// Records per category (for `transfer_gate_records_total`), in [`Category::ALL`] order.
    pub records: [u64; 9],
}

impl Batch {
    /// Adds one subject found by the inspection.
    pub fn add_subject(&mut self, hasher: &SubjectHasher, s: SubjectRef<'_>) {
        self.subjects.push(Subject {
            key: hasher.hash(s.namespace.as_str(), s.id),
            sensitive: s.sensitive,
        });
        self.categories = self.categories.union(if s.categories.is_empty() {
            CategorySet::of(Category::Basic)
        } else {
            s.categories
        });
    }

    /// Adds an owned subject (from the query or the headers).
    pub fn add_owned(&mut self, hasher: &SubjectHasher, s: &crate::inspect::Subject) {
        self.subjects.push(Subject {
            key: hasher.hash(s.namespace.as_str(), &s.id),
            sensitive: s.sensitive,
        });
        self.categories = self.categories.union(if s.categories.is_empty() {
            CategorySet::of(Category::Basic)
        } else {
            s.categories
        });
    }

    /// Adds every subject of a record and counts the record.
    pub fn add_record(&mut self, hasher: &SubjectHasher, r: RecordRef<'_>) {
        let mut cats = CategorySet::EMPTY;
        let mut any = false;
        for s in r.subjects() {
            any = true;
            cats = cats.union(s.categories);
            self.add_subject(hasher, s);
        }
        if any {
            if cats.is_empty() {
                cats.insert(Category::Basic);
            }
            for c in cats.iter() {
                self.records[c as usize] += 1;
            }
        }
    }

    /// Applies categories found outside every record of the request (SPEC §3: they belong
    /// to every subject of the request) to the batch's subjects.
    pub fn apply_outside(&mut self, outside: CategorySet) {
        if self.subjects.is_empty() || outside.is_empty() {
            return;
        }
        self.categories = self.categories.union(outside);
        if outside.is_sensitive() {
            for s in &mut self.subjects {
                s.sensitive = true;
            }
        }
    }

    /// Whether there is nothing to judge.
    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty() && !self.important
    }

    /// Empties the batch, keeping its allocation.
    pub fn clear(&mut self) {
        self.subjects.clear();
        self.categories = CategorySet::EMPTY;
        self.important = false;
        self.records = [0; 9];
    }
}

/// What happened to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No PI: nothing counted.
    Pass,
    /// Reserved and allowed.
    Allow,
    /// Refused; nothing counted.
    Block,
    /// Observe mode: would have been refused; counted and forwarded.
    WouldBlock,
    /// The ledger failed: 503, nothing forwarded.
    Unavailable,
}

/// The decision on one batch, with what the audit line needs.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The outcome.
    pub outcome: Outcome,
    /// The reason code.
    pub reason: Reason,
    /// The refusal, for `Block` and `WouldBlock`.
    pub refusal: Option<Refusal>,
    /// The approval relied on (index into `Config::approvals`).
    pub approval: Option<usize>,
    /// The mechanism the counts require.
    pub required: Mechanism,
    /// Newly counted subjects (entity scope, or the exempt scope).
    pub new: Counts,
    /// Entity counts after the batch.
    pub entity_after: Counts,
}

impl Verdict {
    fn simple(outcome: Outcome, reason: Reason) -> Self {
        Verdict {
            outcome,
            reason,
            refusal: None,
            approval: None,
            required: Mechanism::None,
            new: Counts::default(),
            entity_after: Counts::default(),
        }
    }
}

fn class(c: CountClass) -> Class {
    match c {
        CountClass::All => Class::All,
        CountClass::Sensitive => Class::Sensitive,
    }
}

fn counts(o: &ScopeOutcome) -> Counts {
    Counts {
        all: o.all_after,
        sensitive: o.sensitive_after,
    }
}

/// Judges and (when allowed) durably reserves one batch of a request to destination `dest`.
pub async fn judge(
    gate: &Gate,
    snap: &Snapshot,
    dest: usize,
    batch: &Batch,
    now: SystemTime,
) -> Verdict {
    let cfg = &snap.config;
    let d = &cfg.destinations[dest];
    let facts = Facts {
        has_pi: !batch.subjects.is_empty(),
        categories: batch.categories,
        important_data: batch.important,
    };
    let today = shanghai_date(now);
    let regime = cfg.entity.regime;
    let entity = [snap.scopes.entity];
    let backend = gate.ledger.backend();
    // A race can move the entity past a ceiling between the probe and the reservation; the
    // policy is then asked again with the new counts (which may call for another approval).
    for _attempt in 0..3 {
        let entity_after = if facts.has_pi {
            match gate
                .ledger
                .probe(&batch.subjects, &entity, regime, now)
                .await
            {
                Ok(o) => o.first().map(counts).unwrap_or_default(),
                Err(e) => return unavailable(gate, backend, &e),
            }
        } else {
            Counts::default()
        };
        let plan = policy::decide(cfg, d, facts, entity_after, today);
        let (reserve, refusal) = match plan {
            Plan::Pass(reason) => return Verdict::simple(Outcome::Pass, reason),
            Plan::Reserve(r) => (r, None),
            Plan::Refuse(refusal) => {
                if policy::enforce(cfg) || !facts.has_pi {
                    let mut v = Verdict::simple(
                        if policy::enforce(cfg) {
                            Outcome::Block
                        } else {
                            Outcome::WouldBlock
                        },
                        refusal.reason,
                    );
                    v.required = refusal.required_mechanism;
                    v.entity_after = entity_after;
                    v.refusal = Some(refusal);
                    return v;
                }
                // Observe mode: forwarded, so counted, without ceilings.
                let r = policy::Reserve {
                    reason: refusal.reason,
                    exempt: false,
                    approval: None,
                    required: refusal.required_mechanism,
                    ceilings: vec![],
                };
                (r, Some(refusal))
            }
        };
        let scopes: &[ScopeId] = &snap.scopes.counted[dest];
        let ceilings: Vec<Ceiling> = if policy::enforce(cfg) {
            reserve
                .ceilings
                .iter()
                .map(|c| Ceiling {
                    scope: match c.scope {
                        CeilingScope::Entity => snap.scopes.entity,
                        CeilingScope::Approval(i) => snap.scopes.approval[i],
                    },
                    class: class(c.class),
                    max_after: c.max_after,
                })
                .collect()
        } else {
            Vec::new()
        };
        let started = Instant::now();
        let res = gate
            .ledger
            .reserve(Reservation {
                subjects: &batch.subjects,
                scopes,
                ceilings: &ceilings,
                regime,
                now,
            })
            .await;
        gate.metrics
            .ledger_commit
            .with_label_values(&[backend])
            .observe(started.elapsed().as_secs_f64());
        match res {
            Err(e) => return unavailable(gate, backend, &e),
            Ok(ReserveOutcome::Reserved(outcomes)) => {
                publish(snap, scopes, &outcomes);
                let first = outcomes.first();
                let mut v = Verdict::simple(Outcome::Allow, reserve.reason);
                v.approval = reserve.approval;
                v.required = reserve.required;
                v.new = first
                    .map(|o| Counts {
                        all: o.new_all,
                        sensitive: o.new_sensitive,
                    })
                    .unwrap_or_default();
                v.entity_after = if reserve.exempt {
                    entity_after
                } else {
                    first.map(counts).unwrap_or(entity_after)
                };
                if let Some(refusal) = refusal {
                    v.outcome = Outcome::WouldBlock;
                    v.reason = refusal.reason;
                    v.refusal = Some(refusal);
                }
                snap.routes[dest].count_records(&batch.records);
                return v;
            }
            Ok(ReserveOutcome::Refused(r)) => {
                let spec = reserve
                    .ceilings
                    .iter()
                    .copied()
                    .find(|c| {
                        class(c.class) == r.ceiling.class
                            && match c.scope {
                                CeilingScope::Entity => r.ceiling.scope == snap.scopes.entity,
                                CeilingScope::Approval(i) => {
                                    r.ceiling.scope == snap.scopes.approval[i]
                                }
                            }
                    })
                    .unwrap_or(CeilingSpec {
                        scope: CeilingScope::Entity,
                        class: CountClass::All,
                        max_after: r.ceiling.max_after,
                    });
                let lost_race =
                    spec.scope == CeilingScope::Entity && reserve.required == Mechanism::None;
                if lost_race && policy::approvals_for(cfg, &d.name).next().is_some() {
                    continue;
                }
                let refusal =
                    policy::explain(cfg, d, facts, spec, r.count_before + r.new, entity_after);
                let mut v = Verdict::simple(Outcome::Block, refusal.reason);
                v.required = refusal.required_mechanism;
                v.entity_after = entity_after;
                v.refusal = Some(refusal);
                return v;
            }
        }
    }
    // Three lost races in a row: refuse rather than loop (the client may retry).
    let refusal = Refusal {
        reason: Reason::ApprovalRequired,
        destination: d.name.clone(),
        required_mechanism: Mechanism::StandardContractOrCertification,
        threshold: None,
    };
    let mut v = Verdict::simple(Outcome::Block, refusal.reason);
    v.refusal = Some(refusal);
    v
}

fn unavailable(gate: &Gate, backend: &'static str, e: &LedgerError) -> Verdict {
    gate.metrics
        .ledger_errors
        .with_label_values(&[backend])
        .inc();
    tracing::error!(error = %e, "ledger reservation failed; refusing with 503");
    let mut v = Verdict::simple(Outcome::Unavailable, Reason::LedgerUnavailable);
    v.refusal = None;
    v
}

/// Updates the count gauges from a reservation's outcomes (cheap: no ledger call).
fn publish(snap: &Snapshot, scopes: &[ScopeId], outcomes: &[ScopeOutcome]) {
    for (sid, o) in scopes.iter().zip(outcomes) {
        if o.new_all > 0 || o.new_sensitive > 0 {
            snap.gauges.advance(*sid, counts(o));
        }
    }
}
