//! The subject ledger: keyed hashing and exact, atomic, durable counting of distinct
//! data subjects in the legal window (SPEC §4).
//!
//! - [`hash`]: identifiers → 128-bit [`SubjectKey`]s under a secret key file.
//! - [`activity`]: the report's activity statistics (records per category, refusals per
//!   reason) counted in process and kept by a shared backend for every replica.
//! - [`api`]: scopes, classes, reservations, outcomes, errors and the [`Ledger`] trait.
//! - `table` / `index`: the compact sharded in-memory index and the atomic conditional reserve.
//! - `wal` / `snapshot` / [`local`]: the durable local backend (group-committed log, snapshots,
//!   recovery).
//! - [`redis`]: the shared backend of several replicas (one Lua step per request with new
//!   subjects, a local cache of known subjects).
//! - [`MemoryLedger`]: the same index without durability (tests, benchmarks, probes).
//!
//! The policy registers its scopes when the configuration loads, then calls
//! [`Ledger::reserve`] once per request that carries PI to an overseas destination, with the
//! ceilings computed from the approvals the company holds. See `docs/ledger.md`.

pub mod activity;
pub mod api;
pub mod hash;
mod index;
pub mod local;
pub mod migrate;
pub mod redis;
mod shard;
mod snapshot;
#[cfg(test)]
pub(crate) mod suite;
mod table;
#[cfg(test)]
mod tests;
mod wal;

use std::time::SystemTime;

pub use api::{
    Alternative, Ceiling, Class, Ledger, LedgerError, LedgerFuture, MonthlyTally, Refusal,
    Reservation, ReserveOutcome, Scope, ScopeCounts, ScopeId, ScopeOutcome, Subject,
};
pub use hash::{HashKeyError, SubjectHasher, SubjectKey, HASH_KEY_LEN};
pub use index::{MAX_SCOPES_PER_RESERVATION, MAX_SUBJECTS_PER_RESERVATION};
pub use local::{LocalLedger, LocalOptions, RecoveryReport};
pub use redis::{
    RedisAuth, RedisAuthError, RedisLedger, RedisOpenError, RedisOptions, RedisTarget,
};

use crate::model::Regime;
use index::Index;

/// The in-memory ledger: the same index and atomic reserve as [`LocalLedger`], without a log.
/// Nothing survives a restart; for tests, benchmarks and the memory probe.
#[derive(Debug)]
pub struct MemoryLedger {
    index: Index,
}

impl Default for MemoryLedger {
    fn default() -> Self {
        MemoryLedger {
            index: Index::new(false),
        }
    }
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Synchronous [`Ledger::register_scopes`] (never waits).
    ///
    /// # Errors
    /// [`LedgerError::Limit`] for too many scopes or too long a name.
    pub fn register_now(&self, scopes: &[Scope]) -> Result<Vec<ScopeId>, LedgerError> {
        Ok(self.index.register(scopes)?.0)
    }

    /// Synchronous [`Ledger::reserve`] (never waits).
    ///
    /// # Errors
    /// [`LedgerError::UnknownScope`] for an unregistered scope id.
    pub fn reserve_now(&self, req: &Reservation<'_>) -> Result<ReserveOutcome, LedgerError> {
        Ok(self.index.reserve(req)?.0)
    }

    /// Number of (subject, scope) entries held.
    pub fn entries(&self) -> usize {
        self.index.entries()
    }

    /// Heap bytes held by the index (tables and counters).
    pub fn heap_bytes(&self) -> usize {
        self.index.heap_bytes()
    }
}

impl Ledger for MemoryLedger {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn register_scopes<'a>(&'a self, scopes: &'a [Scope]) -> LedgerFuture<'a, Vec<ScopeId>> {
        Box::pin(async move { self.register_now(scopes) })
    }

    fn reserve<'a>(&'a self, req: Reservation<'a>) -> LedgerFuture<'a, ReserveOutcome> {
        Box::pin(async move { self.reserve_now(&req) })
    }

    fn probe<'a>(
        &'a self,
        subjects: &'a [Subject],
        scopes: &'a [ScopeId],
        regime: Regime,
        now: SystemTime,
    ) -> LedgerFuture<'a, Vec<ScopeOutcome>> {
        Box::pin(async move { self.index.probe(subjects, scopes, regime, now) })
    }

    fn counts(
        &self,
        scope: ScopeId,
        regime: Regime,
        now: SystemTime,
    ) -> LedgerFuture<'_, ScopeCounts> {
        Box::pin(async move { self.index.counts(scope, regime, now) })
    }

    fn monthly(&self) -> LedgerFuture<'_, Vec<MonthlyTally>> {
        Box::pin(async move { Ok(self.index.monthly()) })
    }
}
