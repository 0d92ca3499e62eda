//! The ledger's contract: scopes, classes, reservations and their outcomes, the typed errors,
//! and the object-safe [`Ledger`] trait that every backend (local, and later Redis)
//! implements. The policy decides *what* to reserve; a backend makes it exact and durable. A
//! shared backend also keeps the report's activity statistics for every replica
//! ([`Ledger::shares_activity`]).

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use super::activity::StoredActivity;
use super::hash::SubjectKey;
use crate::model::Regime;

/// A counting scope: the set of destinations whose subjects are counted together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The entity: every overseas destination together (non-exempt transfers).
    Entity,
    /// One destination, by its configured name.
    Destination(String),
    /// The exempt transfers of one exemption, by its configured name.
    Exempt(String),
    /// The shared volume of one approval (all of its destinations), by approval id.
    Approval(String),
}

impl Scope {
    /// The stable name under which the scope is stored (`entity`, `destination:<name>`, …).
    pub fn stored_name(&self) -> String {
        match self {
            Scope::Entity => "entity".to_owned(),
            Scope::Destination(n) => format!("destination:{n}"),
            Scope::Exempt(n) => format!("exempt:{n}"),
            Scope::Approval(n) => format!("approval:{n}"),
        }
    }

    /// Parses [`Scope::stored_name`].
    pub fn from_stored_name(s: &str) -> Option<Scope> {
        if s == "entity" {
            return Some(Scope::Entity);
        }
        let (kind, name) = s.split_once(':')?;
        let name = name.to_owned();
        match kind {
            "destination" => Some(Scope::Destination(name)),
            "exempt" => Some(Scope::Exempt(name)),
            "approval" => Some(Scope::Approval(name)),
            _ => None,
        }
    }
}

/// A registered scope: a small dense id, resolved once when the configuration loads
/// ([`Ledger::register_scopes`]) so that the hot path passes integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeId(pub u32);

/// The two classes that are counted in every scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Every subject whose PI was sent.
    All,
    /// Subjects whose sensitive PI was sent.
    Sensitive,
}

impl Class {
    /// The exact metric / report string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Class::All => "all",
            Class::Sensitive => "sensitive",
        }
    }
}

/// One subject carried by a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject {
    /// The keyed hash of the subject's identifier.
    pub key: SubjectKey,
    /// Whether sensitive PI of this subject is in the request.
    pub sensitive: bool,
}

/// A limit the reservation must respect: the window count of `class` in `scope`, after the
/// request's new subjects are added, must be at most `max_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceiling {
    /// The scope whose count is limited.
    pub scope: ScopeId,
    /// The class whose count is limited.
    pub class: Class,
    /// The largest count allowed after the reservation.
    pub max_after: u64,
}

/// One way of making a reservation: also count the subjects into `scope` (an approval's
/// shared volume, when the request relies on that approval), and hold `ceilings`.
#[derive(Debug, Clone, Copy)]
pub struct Alternative<'a> {
    /// The extra scope counted into when this alternative is chosen (`None`: no extra scope).
    pub scope: Option<ScopeId>,
    /// Limits that hold for this alternative only (on a common scope or on `scope`).
    pub ceilings: &'a [Ceiling],
}

/// One conditional reservation: count `subjects` into every scope of `scopes` (and into the
/// scope of the alternative chosen), unless a ceiling would be crossed.
///
/// With `alternatives`, the ledger chooses in the same atomic step as the insertion: the first
/// alternative, in the given order, under which every subject is already counted (it costs no
/// volume) and whose ceilings hold; else the first whose ceilings hold; else nothing is counted.
#[derive(Debug, Clone, Copy)]
pub struct Reservation<'a> {
    /// The request's subjects (duplicates are allowed and counted once).
    pub subjects: &'a [Subject],
    /// The scopes the subjects are counted into.
    pub scopes: &'a [ScopeId],
    /// The limits common to every alternative; all are checked together with the insertion,
    /// atomically.
    pub ceilings: &'a [Ceiling],
    /// The ways the reservation may be made, in order of preference; empty: one way,
    /// `scopes` and `ceilings` alone. Their scopes must be distinct and not in `scopes`.
    pub alternatives: &'a [Alternative<'a>],
    /// The regime, which fixes the counting window.
    pub regime: Regime,
    /// The moment of the request (its Asia/Shanghai date picks the year and month).
    pub now: SystemTime,
}

/// The effect of a reservation (or of a probe) in one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeOutcome {
    /// The scope.
    pub scope: ScopeId,
    /// Subjects not yet counted in the window of this scope.
    pub new_all: u64,
    /// Subjects sent as sensitive and not yet counted as sensitive in the window.
    pub new_sensitive: u64,
    /// The window count of class `all` after the reservation (for a probe: if reserved).
    pub all_after: u64,
    /// The window count of class `sensitive` after the reservation (for a probe: if reserved).
    pub sensitive_after: u64,
}

/// Which ceiling a refused reservation would have crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The ceiling.
    pub ceiling: Ceiling,
    /// The window count before the request.
    pub count_before: u64,
    /// The number of the request's subjects that are new for this scope and class.
    pub new: u64,
}

/// The answer to [`Ledger::reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Every new subject is counted, durably, in every named scope: one outcome per scope of
    /// `scopes` (same order), then one for the chosen alternative's scope when it has one
    /// (see [`Reservation::chosen`]).
    Reserved(Vec<ScopeOutcome>),
    /// Nothing was counted: this ceiling would have been crossed. When every alternative was
    /// refused, the first refusal on an alternative's own scope (its volume) is reported, else
    /// the first refusal.
    Refused(Refusal),
}

impl Reservation<'_> {
    /// Which alternative a [`ReserveOutcome::Reserved`] of this reservation was made under:
    /// the one whose scope follows the outcomes of `scopes`, or the first without a scope.
    /// `None` when the reservation has no alternatives.
    pub fn chosen(&self, outcomes: &[ScopeOutcome]) -> Option<usize> {
        match outcomes.get(self.scopes.len()) {
            Some(extra) => self
                .alternatives
                .iter()
                .position(|a| a.scope == Some(extra.scope)),
            None => self.alternatives.iter().position(|a| a.scope.is_none()),
        }
    }
}

/// The window counts of one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScopeCounts {
    /// Distinct subjects in the window.
    pub all: u64,
    /// Distinct subjects sent as sensitive in the window.
    pub sensitive: u64,
}

impl ScopeCounts {
    /// The count of one class.
    pub const fn get(&self, class: Class) -> u64 {
        match class {
            Class::All => self.all,
            Class::Sensitive => self.sensitive,
        }
    }
}

/// Newly counted subjects of one scope in one Asia/Shanghai calendar month (for `report`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthlyTally {
    /// The scope.
    pub scope: Scope,
    /// Calendar year (Asia/Shanghai).
    pub year: i32,
    /// Calendar month, 1–12.
    pub month: u8,
    /// Subjects newly counted in that month.
    pub new_all: u64,
    /// Subjects newly counted as sensitive in that month.
    pub new_sensitive: u64,
}

/// Why the ledger could not answer. The proxy turns every variant into 503
/// `ledger_unavailable`, except programming errors ([`LedgerError::UnknownScope`]).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A reservation could not be made durable (disk full, read-only, permission denied…).
    /// Nothing was acknowledged; the subjects may stay counted in memory (over-counting).
    #[error("ledger storage failed: {0}")]
    Storage(String),
    /// The backend is not reachable or has been shut down.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// The stored data is corrupt beyond the torn tail that recovery repairs.
    #[error("ledger data corrupt: {0}")]
    Corrupt(String),
    /// A scope id that was never registered with this ledger.
    #[error("unknown scope id {0}")]
    UnknownScope(u32),
    /// A scope, its name or a request is beyond what the ledger can store.
    #[error("ledger limit exceeded: {0}")]
    Limit(&'static str),
}

impl LedgerError {
    /// Whether the backend failed (storage, reachability, corruption): the proxy answers 503
    /// `ledger_unavailable`. The other variants are the caller's mistakes.
    pub const fn is_backend_failure(&self) -> bool {
        matches!(
            self,
            LedgerError::Storage(_) | LedgerError::Unavailable(_) | LedgerError::Corrupt(_)
        )
    }
}

/// A boxed future, so that [`Ledger`] stays object-safe (`Arc<dyn Ledger>`) and a networked
/// backend can do real async I/O.
pub type LedgerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LedgerError>> + Send + 'a>>;

/// A subject ledger backend.
pub trait Ledger: Send + Sync + std::fmt::Debug {
    /// The backend's name for metrics (`local`, `memory`, `redis`).
    fn backend(&self) -> &'static str;

    /// Registers scopes (idempotent) and returns their ids, in order. Called when the
    /// configuration loads or reloads; ids stay valid for the life of the ledger.
    fn register_scopes<'a>(&'a self, scopes: &'a [Scope]) -> LedgerFuture<'a, Vec<ScopeId>>;

    /// Atomically checks the ceilings and counts the request's new subjects in every scope,
    /// durably before returning; or counts nothing and says which ceiling would be crossed.
    ///
    /// # Errors
    /// [`LedgerError::Storage`] / [`LedgerError::Unavailable`] when the reservation cannot be
    /// made durable: the caller must not forward the data.
    fn reserve<'a>(&'a self, req: Reservation<'a>) -> LedgerFuture<'a, ReserveOutcome>;

    /// How many of `subjects` would be new in each scope, without reserving anything.
    fn probe<'a>(
        &'a self,
        subjects: &'a [Subject],
        scopes: &'a [ScopeId],
        regime: Regime,
        now: SystemTime,
    ) -> LedgerFuture<'a, Vec<ScopeOutcome>>;

    /// The window counts of one scope (status, metrics).
    fn counts(
        &self,
        scope: ScopeId,
        regime: Regime,
        now: SystemTime,
    ) -> LedgerFuture<'_, ScopeCounts>;

    /// The window counts of one scope, possibly as cached by the backend for up to a second
    /// (audit lines of decisions that counted nothing). By default [`Ledger::counts`].
    fn recent_counts(
        &self,
        scope: ScopeId,
        regime: Regime,
        now: SystemTime,
    ) -> LedgerFuture<'_, ScopeCounts> {
        self.counts(scope, regime, now)
    }

    /// Every monthly tally kept so far (for the `report` command).
    fn monthly(&self) -> LedgerFuture<'_, Vec<MonthlyTally>>;

    /// Whether the backend keeps the report's activity statistics (records per category and
    /// refusals per reason, per month and destination) for every process that shares it. When
    /// false, each gate process keeps its own (`gate.data_dir/history.json`) and
    /// [`Ledger::add_activity`] / [`Ledger::activity`] are not called.
    fn shares_activity(&self) -> bool {
        false
    }

    /// Adds activity counts (a delta: what this process counted since its last flush, and the
    /// earliest date it kept activity from, which lowers the store's `since`).
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when the store cannot be reached; the caller keeps the
    /// delta and sends it again. A backend without a shared store always fails.
    fn add_activity<'a>(&'a self, delta: &'a StoredActivity) -> LedgerFuture<'a, ()> {
        let _ = delta;
        Box::pin(async {
            Err(LedgerError::Unavailable(
                "this backend keeps no activity".into(),
            ))
        })
    }

    /// Every month's activity as added by every process sharing the backend.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when the store cannot be reached (or the backend keeps no
    /// activity).
    fn activity(&self) -> LedgerFuture<'_, StoredActivity> {
        Box::pin(async {
            Err(LedgerError::Unavailable(
                "this backend keeps no activity".into(),
            ))
        })
    }

    /// Whether the backend can currently make reservations durable (for `/readyz`): false
    /// while writes are failing.
    fn is_ready(&self) -> bool {
        true
    }

    /// Losses of the backend's data detected so far (a shared backend that restarted empty,
    /// was flushed or failed over); 0 for backends that cannot lose acknowledged data.
    fn losses_detected(&self) -> u64 {
        0
    }

    /// (scope, subject) entries re-asserted into the backend after losses.
    fn reasserted_subjects(&self) -> u64 {
        0
    }
}
