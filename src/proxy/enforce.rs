//! Enforcement: turns what the inspection found into a decision and a durable reservation.
//! For each batch of subjects (a whole atomic body, or the records a streamed chunk
//! completed) it probes the ledger for the entity's counts with the batch added, asks the pure
//! [`policy`] what to do, and reserves with the policy's ceilings — one atomic step, so that
//! concurrent requests can never together cross a limit. It also keeps the count gauges current.

use super::{Gate, Snapshot};
use crate::config::Config;
use crate::inspect::{RecordRef, SubjectRef};
use crate::ledger::{
    Alternative, Ceiling, Class, LedgerError, Reservation, ReserveOutcome, Scope, ScopeId,
    ScopeOutcome, Subject, SubjectHasher,
};
use crate::model::{shanghai_date, Category, CategorySet};
use crate::policy::{self, CeilingScope, CeilingSpec, CountClass, Counts, Facts, Plan};
use crate::policy::{Mechanism, Reason, Refusal};
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
    /// Per destination: the scopes every reservation counts into — entity and destination;
    /// for an exempt destination its exempt scope and its destination scope, never the
    /// entity. The approval relied on (chosen by the ledger) is counted into as well.
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
            .map(|(i, _)| match exempt[i] {
                Some(ex) => vec![ex, destination[i]],
                None => vec![entity, destination[i]],
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
    /// The id of the approval relied on.
    pub approval: Option<String>,
    /// The mechanism the counts require.
    pub required: Mechanism,
    /// Newly counted subjects (entity scope, or the exempt scope).
    pub new: Counts,
    /// Newly counted subjects at the destination (its own scope): what the sending client
    /// is attributed.
    pub new_here: Counts,
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
            new_here: Counts::default(),
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
///
/// The ledger chooses the approval relied on among the policy's choices in the same atomic
/// step as the reservation. In observe mode the same decision is made; a refusal is recorded
/// as `would_block` and the batch is then counted without ceilings, since it is forwarded.
/// `observe`: `gate.mode` or the request's client says observe.
pub async fn judge(
    gate: &Gate,
    snap: &Snapshot,
    dest: usize,
    batch: &Batch,
    now: SystemTime,
    observe: bool,
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
    let mut need = Mechanism::StandardContractOrCertification;
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
        let reserve = match policy::decide(cfg, d, facts, entity_after, today) {
            Plan::Pass(reason) => return Verdict::simple(Outcome::Pass, reason),
            Plan::Reserve(r) => r,
            Plan::Refuse(refusal) => {
                return refuse(gate, snap, dest, batch, now, refusal, observe).await
            }
        };
        need = reserve.required;
        let ceiling = |c: &CeilingSpec| Ceiling {
            scope: match c.scope {
                CeilingScope::Entity => snap.scopes.entity,
                CeilingScope::Approval(i) => snap.scopes.approval[i],
            },
            class: class(c.class),
            max_after: c.max_after,
        };
        let ceilings: Vec<Vec<Ceiling>> = reserve
            .choices
            .iter()
            .map(|c| c.ceilings.iter().map(ceiling).collect())
            .collect();
        let alternatives: Vec<Alternative<'_>> = reserve
            .choices
            .iter()
            .zip(&ceilings)
            .map(|(c, ceilings)| Alternative {
                scope: c.approval.map(|i| snap.scopes.approval[i]),
                ceilings,
            })
            .collect();
        let req = Reservation {
            subjects: &batch.subjects,
            scopes: &snap.scopes.counted[dest],
            ceilings: &[],
            alternatives: &alternatives,
            regime,
            now,
        };
        match reserve_timed(gate, req).await {
            Err(e) => return unavailable(gate, backend, &e),
            Ok(ReserveOutcome::Reserved(outcomes)) => {
                let approval = req
                    .chosen(&outcomes)
                    .and_then(|k| reserve.choices.get(k))
                    .and_then(|c| c.approval)
                    .and_then(|i| cfg.approvals.get(i))
                    .map(|a| a.id.clone());
                gate.count_records(snap, dest, &batch.records);
                let mut v = reserved(snap, req.scopes, &outcomes, reserve.exempt);
                v.reason = reserve.reason;
                v.approval = approval;
                v.required = reserve.required;
                if reserve.exempt {
                    v.entity_after = entity_now(gate, snap, now).await;
                }
                return v;
            }
            Ok(ReserveOutcome::Refused(r)) => {
                if r.ceiling.scope == snap.scopes.entity {
                    // The entity moved past what the choices allow: decide again.
                    continue;
                }
                let refusal = Refusal {
                    reason: Reason::ApprovalVolumeExceeded,
                    destination: d.name.clone(),
                    required_mechanism: reserve.required,
                    threshold: None,
                };
                return refuse(gate, snap, dest, batch, now, refusal, observe).await;
            }
        }
    }
    // Three lost races in a row: refuse rather than loop (the client may retry).
    let refusal = Refusal {
        reason: Reason::ApprovalRequired,
        destination: d.name.clone(),
        required_mechanism: need,
        threshold: None,
    };
    refuse(gate, snap, dest, batch, now, refusal, observe).await
}

/// One reservation, timed into `transfer_gate_ledger_commit_seconds`.
async fn reserve_timed(gate: &Gate, req: Reservation<'_>) -> Result<ReserveOutcome, LedgerError> {
    let started = Instant::now();
    let res = gate.ledger.reserve(req).await;
    gate.metrics
        .ledger_commit
        .with_label_values(&[gate.ledger.backend()])
        .observe(started.elapsed().as_secs_f64());
    res
}

/// The verdict of a batch the ledger counted: gauges, new subjects and the entity's counts
/// after (from the ledger's outcome). The caller counts the batch's records.
fn reserved(
    snap: &Snapshot,
    scopes: &[ScopeId],
    outcomes: &[ScopeOutcome],
    exempt: bool,
) -> Verdict {
    let mut counted = scopes.to_vec();
    counted.extend(outcomes.get(scopes.len()).map(|o| o.scope));
    publish(snap, &counted, outcomes);
    let first = outcomes.first();
    let mut v = Verdict::simple(Outcome::Allow, Reason::Allowed);
    v.new = first
        .map(|o| Counts {
            all: o.new_all,
            sensitive: o.new_sensitive,
        })
        .unwrap_or_default();
    // `counted` is [entity or exempt scope, destination scope, approval?].
    v.new_here = outcomes
        .get(1)
        .map(|o| Counts {
            all: o.new_all,
            sensitive: o.new_sensitive,
        })
        .unwrap_or_default();
    if !exempt {
        v.entity_after = first.map(counts).unwrap_or_default();
    }
    v
}

/// A refused batch: in enforce mode nothing is counted and the entity's counts are read back
/// from the ledger; in observe mode the batch is forwarded, so it is counted without ceilings
/// and recorded as `would_block`.
async fn refuse(
    gate: &Gate,
    snap: &Snapshot,
    dest: usize,
    batch: &Batch,
    now: SystemTime,
    refusal: Refusal,
    observe: bool,
) -> Verdict {
    let mut v = if observe && !batch.subjects.is_empty() {
        let req = Reservation {
            subjects: &batch.subjects,
            scopes: &snap.scopes.counted[dest],
            ceilings: &[],
            alternatives: &[],
            regime: snap.config.entity.regime,
            now,
        };
        match reserve_timed(gate, req).await {
            Err(e) => return unavailable(gate, gate.ledger.backend(), &e),
            Ok(ReserveOutcome::Reserved(outcomes)) => {
                let exempt = snap.scopes.exempt[dest].is_some();
                gate.count_records(snap, dest, &batch.records);
                let mut v = reserved(snap, req.scopes, &outcomes, exempt);
                if exempt {
                    v.entity_after = entity_now(gate, snap, now).await;
                }
                v
            }
            // Without ceilings a reservation cannot be refused.
            Ok(ReserveOutcome::Refused(_)) => Verdict::simple(Outcome::Block, refusal.reason),
        }
    } else {
        let mut v = Verdict::simple(Outcome::Block, refusal.reason);
        v.entity_after = entity_now(gate, snap, now).await;
        v
    };
    if observe && v.outcome != Outcome::Unavailable {
        v.outcome = Outcome::WouldBlock;
    }
    v.reason = refusal.reason;
    v.required = refusal.required_mechanism;
    v.refusal = Some(refusal);
    v
}

/// A refusal decided without the ledger (nothing counted, whatever the mode): `block`, or
/// `would_block` in observe mode, with the entity's counts as they are.
pub async fn refuse_uncounted(
    gate: &Gate,
    snap: &Snapshot,
    refusal: Refusal,
    now: SystemTime,
    observe: bool,
) -> Verdict {
    let outcome = if observe {
        Outcome::WouldBlock
    } else {
        Outcome::Block
    };
    let mut v = Verdict::simple(outcome, refusal.reason);
    v.entity_after = entity_now(gate, snap, now).await;
    v.required = refusal.required_mechanism;
    v.refusal = Some(refusal);
    v
}

/// The entity's window counts as the ledger has them now (the audit's "entity counts after"
/// for a decision that counted nothing into the entity). Zero when the ledger cannot say.
pub async fn entity_now(gate: &Gate, snap: &Snapshot, now: SystemTime) -> Counts {
    match gate
        .ledger
        .recent_counts(snap.scopes.entity, snap.config.entity.regime, now)
        .await
    {
        Ok(c) => Counts {
            all: c.all,
            sensitive: c.sensitive,
        },
        Err(e) => {
            tracing::warn!(error = %e, "ledger counts unavailable for the audit line");
            Counts::default()
        }
    }
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
