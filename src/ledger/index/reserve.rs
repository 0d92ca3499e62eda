//! The slow path of the atomic conditional reserve: a request with at least one subject not
//! yet counted this year in one of its scopes. In steps: lock the batch's shards and read what
//! would be new ([`Batch::lock`]); under the core mutex check the ceilings and choose an
//! alternative; count, tally and journal the change; raise the tables; report per scope.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLockWriteGuard};

use super::{shard_of, Core, Index, Pending, When};
use crate::ledger::api::{
    Alternative, Ceiling, Class, LedgerError, Refusal, Reservation, ReserveOutcome, ScopeCounts,
    ScopeId, ScopeOutcome, Subject,
};
use crate::ledger::shard::{ScopeCounters, Shard};
use crate::ledger::table::Years;
use crate::ledger::wal::{self, ScopeDelta};

/// A reservation's subjects with their shards write-locked, and what each scope would gain.
struct Batch<'a> {
    /// Sorted by key, duplicates merged.
    subjects: Vec<Subject>,
    /// Every scope the request may count into (the common ones and each alternative's),
    /// sorted.
    scopes: Vec<ScopeId>,
    /// The write-locked shards, in ascending order.
    guards: Vec<(usize, RwLockWriteGuard<'a, Shard>)>,
    /// Previous state of every (subject, scope): `prev[i * scopes.len() + k]`.
    prev: Vec<Years>,
    /// Per scope, subjects new in the window, and new as sensitive.
    new_all: Vec<u64>,
    new_sens: Vec<u64>,
}

impl Index {
    /// The reserve when the fast path could not answer: see the module documentation.
    pub(super) fn reserve_slow(
        &self,
        req: &Reservation<'_>,
        when: When,
        counters: &[Arc<ScopeCounters>],
    ) -> Result<Pending<ReserveOutcome>, LedgerError> {
        let mut b = Batch::lock(self, req, when);
        let mut core = self.lock_core();
        let before: Vec<ScopeCounts> = b
            .scopes
            .iter()
            .map(|s| counters[s.0 as usize].window(when.start))
            .collect();
        let extra = {
            let check = |c: &Ceiling| b.over(c, &before);
            if let Some(r) = req.ceilings.iter().find_map(check) {
                return Ok((ReserveOutcome::Refused(r), 0));
            }
            if let Some(e) = core.journal.as_ref().and_then(|j| j.refuse.clone()) {
                // The log cannot be written: refuse before counting (nothing forwarded,
                // nothing kept in memory waiting for the disk).
                return Err(LedgerError::Storage(e.to_string()));
            }
            match choose(req.alternatives, &check, |s| b.nothing_new(s)) {
                Ok(extra) => extra,
                Err(r) => return Ok((ReserveOutcome::Refused(r), 0)),
            }
        };
        // The scopes counted into: the common ones and the chosen alternative's.
        let commit: Vec<usize> = (0..b.scopes.len())
            .filter(|&k| req.scopes.contains(&b.scopes[k]) || extra == Some(b.scopes[k]))
            .collect();
        let changed = b.changed(&commit, when);
        b.count(&commit, &changed, counters, when);
        b.tally(&mut core, &commit, when);
        core.seq += 1;
        let seq = core.seq;
        let wait = b.journal(&mut core, seq, &commit, &changed, when);
        self.appended.store(seq, Ordering::Release);
        drop(core);
        if wait != 0 {
            self.journal_ready.notify_all();
        }
        b.raise(&commit, &changed, wait, when);
        let outcome = b.outcome(req.scopes, extra, &before);
        Ok((ReserveOutcome::Reserved(outcome), wait))
    }
}

impl<'a> Batch<'a> {
    /// Write-locks the shards of the request's subjects (in ascending order: subjects are
    /// sorted by key, so by shard) and reads each (subject, scope)'s previous state.
    fn lock(index: &'a Index, req: &Reservation<'_>, when: When) -> Self {
        let subjects = dedup(req.subjects);
        let mut scopes: Vec<ScopeId> = req.scopes.to_vec();
        scopes.extend(req.alternatives.iter().filter_map(|a| a.scope));
        scopes.sort_unstable();
        scopes.dedup();
        let ns = scopes.len();
        // Bring the batch's table lines into cache under read locks first, so that the cache
        // misses overlap and are not paid while holding the write locks.
        index.touch_all(&subjects, &scopes);
        let mut guards: Vec<(usize, RwLockWriteGuard<'a, Shard>)> = Vec::new();
        for s in &subjects {
            let i = shard_of(&s.key.0);
            if guards.last().map(|g| g.0) != Some(i) {
                guards.push((i, index.write_shard(i)));
            }
        }
        let mut prev = Vec::with_capacity(subjects.len() * ns);
        let mut new_all = vec![0u64; ns];
        let mut new_sens = vec![0u64; ns];
        let mut g = 0;
        for s in &subjects {
            while guards[g].0 != shard_of(&s.key.0) {
                g += 1;
            }
            for (k, sc) in scopes.iter().enumerate() {
                let y = guards[g].1.get(sc.0 as usize, &s.key.0);
                new_all[k] += u64::from(y.all < when.start);
                new_sens[k] += u64::from(s.sensitive && y.sensitive < when.start);
                prev.push(y);
            }
        }
        Batch {
            subjects,
            scopes,
            guards,
            prev,
            new_all,
            new_sens,
        }
    }

    fn prev(&self, i: usize, k: usize) -> Years {
        self.prev[i * self.scopes.len() + k]
    }

    /// The refusal if counting the batch would take `c`'s scope over its ceiling.
    fn over(&self, c: &Ceiling, before: &[ScopeCounts]) -> Option<Refusal> {
        let k = self.scopes.binary_search(&c.scope).ok()?;
        let new = match c.class {
            Class::All => self.new_all[k],
            Class::Sensitive => self.new_sens[k],
        };
        let count_before = before[k].get(c.class);
        (new > 0 && count_before + new > c.max_after).then_some(Refusal {
            ceiling: *c,
            count_before,
            new,
        })
    }

    /// Whether nothing of the batch is new in `scope` (an alternative that costs no volume).
    fn nothing_new(&self, scope: ScopeId) -> bool {
        self.scopes
            .binary_search(&scope)
            .is_ok_and(|k| self.new_all[k] + self.new_sens[k] == 0)
    }

    /// Per subject, whether its year (or sensitive year) moves in one of the `commit` scopes.
    fn changed(&self, commit: &[usize], when: When) -> Vec<bool> {
        self.subjects
            .iter()
            .enumerate()
            .map(|(i, s)| {
                commit.iter().any(|&k| {
                    let y = self.prev(i, k);
                    y.all < when.cur || (s.sensitive && y.sensitive < when.cur)
                })
            })
            .collect()
    }

    /// Moves each changed subject's count from its previous year to this one.
    fn count(
        &self,
        commit: &[usize],
        changed: &[bool],
        counters: &[Arc<ScopeCounters>],
        when: When,
    ) {
        for (i, s) in self.subjects.iter().enumerate() {
            if !changed[i] {
                continue;
            }
            for &k in commit {
                let y = self.prev(i, k);
                let c = &counters[self.scopes[k].0 as usize];
                if y.all < when.cur {
                    c.bump(Class::All, y.all, when.cur);
                }
                if s.sensitive && y.sensitive < when.cur {
                    c.bump(Class::Sensitive, y.sensitive, when.cur);
                }
            }
        }
    }

    /// Adds the new subjects to this month's tallies.
    fn tally(&self, core: &mut Core, commit: &[usize], when: When) {
        for &k in commit {
            if self.new_all[k] + self.new_sens[k] > 0 {
                let t = core
                    .tallies
                    .entry((self.scopes[k].0, when.year, when.month))
                    .or_default();
                t.0 += self.new_all[k];
                t.1 += self.new_sens[k];
            }
        }
    }

    /// Encodes the change as log frame `seq` when the backend is durable; returns the
    /// sequence number to wait for (0: none).
    fn journal(
        &self,
        core: &mut Core,
        seq: u64,
        commit: &[usize],
        changed: &[bool],
        when: When,
    ) -> u64 {
        let Some(j) = core.journal.as_mut() else {
            return 0;
        };
        let deltas: Vec<ScopeDelta> = commit
            .iter()
            .map(|&k| ScopeDelta {
                id: self.scopes[k].0,
                new_all: self.new_all[k] as u32,
                new_sensitive: self.new_sens[k] as u32,
            })
            .collect();
        let n_changed = changed.iter().filter(|c| **c).count();
        let keys = self
            .subjects
            .iter()
            .zip(changed)
            .filter(|(_, c)| **c)
            .map(|(s, _)| (&s.key.0, s.sensitive));
        wal::encode_reserve(
            &mut j.buf,
            seq,
            (when.year, when.month),
            &deltas,
            ExactLen(keys, n_changed),
        );
        j.last_seq = seq;
        seq
    }

    /// Raises each changed subject's years in the tables (and marks its shard as changed by
    /// `wait`), then releases the shards.
    fn raise(&mut self, commit: &[usize], changed: &[bool], wait: u64, when: When) {
        let mut g = 0;
        for (i, s) in self.subjects.iter().enumerate() {
            if !changed[i] {
                continue;
            }
            while self.guards[g].0 != shard_of(&s.key.0) {
                g += 1;
            }
            if wait != 0 {
                self.guards[g].1.changed_at = wait;
            }
            let y = Years {
                all: when.cur,
                sensitive: if s.sensitive { when.cur } else { 0 },
            };
            for &k in commit {
                self.guards[g]
                    .1
                    .table_mut(self.scopes[k].0 as usize)
                    .raise(&s.key.0, y);
            }
        }
        self.guards.clear();
    }

    /// The outcome per scope of the request, then the chosen alternative's.
    fn outcome(
        &self,
        scopes: &[ScopeId],
        extra: Option<ScopeId>,
        before: &[ScopeCounts],
    ) -> Vec<ScopeOutcome> {
        scopes
            .iter()
            .chain(extra.as_ref())
            .map(|sc| {
                let k = self.scopes.binary_search(sc).unwrap_or(0);
                ScopeOutcome {
                    scope: *sc,
                    new_all: self.new_all[k],
                    new_sensitive: self.new_sens[k],
                    all_after: before[k].all + self.new_all[k],
                    sensitive_after: before[k].sensitive + self.new_sens[k],
                }
            })
            .collect()
    }
}

/// Chooses among `alts` (SPEC §5 "which approval a request relies on", made atomic): the
/// first whose ceilings hold and under which nothing is new (`free`), else the first whose
/// ceilings hold. Returns the chosen alternative's extra scope (`Ok(None)`: none, or no
/// alternatives at all), or the refusal to report: the first on an alternative's own scope
/// (its volume), else the first.
fn choose(
    alts: &[Alternative<'_>],
    check: &dyn Fn(&Ceiling) -> Option<Refusal>,
    free: impl Fn(ScopeId) -> bool,
) -> Result<Option<ScopeId>, Refusal> {
    let mut first_fit = None;
    // The refusal to report, and whether it is on the alternative's own scope.
    let mut report: Option<(Refusal, bool)> = None;
    for a in alts {
        match a.ceilings.iter().find_map(check) {
            None if a.scope.is_none_or(&free) => return Ok(a.scope),
            None => {
                first_fit.get_or_insert(a.scope);
            }
            Some(r) => {
                let own = a.scope == Some(r.ceiling.scope);
                if report.is_none_or(|(_, o)| own && !o) {
                    report = Some((r, own));
                }
            }
        }
    }
    match (first_fit, report) {
        (Some(scope), _) => Ok(scope),
        (None, Some((r, _))) => Err(r),
        (None, None) => Ok(None),
    }
}

/// Sorts by key and merges duplicates (sensitive if any occurrence is).
pub(super) fn dedup(subjects: &[Subject]) -> Vec<Subject> {
    let mut v = subjects.to_vec();
    v.sort_unstable_by_key(|s| s.key);
    v.dedup_by(|b, a| {
        if a.key == b.key {
            a.sensitive |= b.sensitive;
            true
        } else {
            false
        }
    });
    v
}

/// An iterator with a known length (the filtered subjects of a record).
struct ExactLen<I>(I, usize);

impl<I: Iterator> Iterator for ExactLen<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        let x = self.0.next();
        if x.is_some() {
            self.1 = self.1.saturating_sub(1);
        }
        x
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.1, Some(self.1))
    }
}

impl<I: Iterator> ExactSizeIterator for ExactLen<I> {}
