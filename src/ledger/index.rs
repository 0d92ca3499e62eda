//! The in-memory index: per shard and per scope, each counted subject's last year seen (and
//! seen as sensitive); per scope and per year, the counts; the monthly tallies; the scope
//! registry; and the sequence of changes. It implements the atomic conditional reserve; a
//! durable backend plugs in through the optional journal buffer that every change is encoded
//! into, in sequence order, while the locks that make it atomic are held.
//!
//! Locking: a reservation that changes state write-locks the shards of its subjects (in shard
//! order, so no deadlock), then the core mutex for the ceiling check, counts, tallies, sequence
//! number and journal append, then updates the tables and releases the shards. A request whose
//! subjects are all counted already takes only shard read locks, one at a time: no contention.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockWriteGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::api::{
    Class, LedgerError, MonthlyTally, Reservation, ReserveOutcome, Scope, ScopeCounts, ScopeId,
    ScopeOutcome, Subject,
};
use super::shard::ScopeCounters;
pub(crate) use super::shard::Shard;
use super::table::{year_byte, YearByte, Years};
use super::wal::{self, ScopeDelta};
use crate::model::{shanghai_date, Regime};

mod reserve;
use reserve::dedup;

/// Number of shards (selected by the first byte of the subject key).
pub(crate) const SHARDS: usize = 256;
/// Most scopes a ledger holds: a scope costs memory only once it counts someone (see
/// [`super::shard`]), so this bounds the registry, not the tables.
pub(crate) const MAX_SCOPES: usize = 1 << 20;
/// Most subjects in one reservation (so that one log frame stays well under its 64 MiB cap).
pub const MAX_SUBJECTS_PER_RESERVATION: usize = 1 << 20;
/// Most scopes in one reservation.
pub const MAX_SCOPES_PER_RESERVATION: usize = 1 << 10;

/// What a durable backend's writer thread takes from the index.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    /// Encoded frames not yet handed to the writer.
    pub buf: Vec<u8>,
    /// Sequence number of the last frame in `buf`.
    pub last_seq: u64,
    /// Set when the ledger shuts down.
    pub shutdown: bool,
    /// Set when a snapshot wants the writer to start a new segment.
    pub rotate: bool,
    /// Set by the writer while log writes fail (the error): changes that would add frames
    /// are refused, so nothing piles up in memory however long the disk stays full.
    pub refuse: Option<Arc<str>>,
}

/// A monthly tally's key: (scope id, year, month).
pub(crate) type TallyKey = (u32, i32, u8);
/// A monthly tally: (newly counted, newly counted as sensitive).
pub(crate) type Tally = (u64, u64);

/// State changed only under the core mutex.
#[derive(Debug, Default)]
pub(crate) struct Core {
    pub(crate) scopes: Vec<Scope>,
    by_scope: HashMap<Scope, ScopeId>,
    /// Per scope id, its counts: the list that [`Index::counters`] publishes.
    counters: Vec<Arc<ScopeCounters>>,
    /// (scope, year, month) → (new all, new sensitive).
    pub(crate) tallies: BTreeMap<TallyKey, Tally>,
    /// Last sequence number assigned.
    pub(crate) seq: u64,
    /// Present for durable backends.
    pub(crate) journal: Option<Journal>,
}

/// The sharded in-memory index.
#[derive(Debug)]
pub(crate) struct Index {
    shards: Box<[RwLock<Shard>]>,
    counters: ArcSwap<Vec<Arc<ScopeCounters>>>,
    core: Mutex<Core>,
    /// Last sequence number assigned, readable without the core mutex.
    pub(crate) appended: AtomicU64,
    /// Signalled when the journal has work (paired with the core mutex).
    pub(crate) journal_ready: Condvar,
}

/// The year, month and window start of a moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct When {
    pub year: i32,
    pub month: u8,
    pub cur: YearByte,
    pub start: YearByte,
}

impl When {
    pub(crate) fn new(regime: Regime, now: SystemTime) -> Self {
        let d = shanghai_date(now);
        let year = d.year();
        When {
            year,
            month: d.month() as u8,
            cur: year_byte(year),
            start: year_byte(regime.window_start_year(year)),
        }
    }
}

fn shard_of(key: &[u8; 16]) -> usize {
    key[0] as usize
}

/// The result of a synchronous reserve: the outcome and the sequence number that must be
/// durable before it may be acknowledged (0: nothing to wait for).
pub(crate) type Pending<T> = (T, u64);

impl Index {
    /// An empty index; `journaling` makes every change encode a log frame.
    pub(crate) fn new(journaling: bool) -> Self {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            counters: ArcSwap::from_pointee(Vec::new()),
            core: Mutex::new(Core {
                journal: journaling.then(Journal::default),
                ..Core::default()
            }),
            appended: AtomicU64::new(0),
            journal_ready: Condvar::new(),
        }
    }

    pub(crate) fn lock_core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write_shard(&self, i: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[i]
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn check_scopes(
        &self,
        scopes: &[ScopeId],
    ) -> Result<Arc<Vec<Arc<ScopeCounters>>>, LedgerError> {
        let counters = self.counters.load_full();
        match scopes.iter().find(|s| s.0 as usize >= counters.len()) {
            Some(s) => Err(LedgerError::UnknownScope(s.0)),
            None => Ok(counters),
        }
    }

    /// Registers scopes; returns their ids and the sequence to wait for.
    pub(crate) fn register(&self, scopes: &[Scope]) -> Result<Pending<Vec<ScopeId>>, LedgerError> {
        let mut core = self.lock_core();
        let mut ids = Vec::with_capacity(scopes.len());
        let mut wait = 0;
        let defined = core.scopes.len();
        for scope in scopes {
            if let Some(id) = core.by_scope.get(scope) {
                ids.push(*id);
                continue;
            }
            let name = scope.stored_name();
            if name.len() > u16::MAX as usize {
                return Err(LedgerError::Limit("scope name longer than 65535 bytes"));
            }
            if core.scopes.len() >= MAX_SCOPES {
                self.publish(&core, defined);
                return Err(LedgerError::Limit("too many scopes"));
            }
            if let Some(e) = core.journal.as_ref().and_then(|j| j.refuse.clone()) {
                self.publish(&core, defined);
                return Err(LedgerError::Storage(e.to_string()));
            }
            let id = core.scopes.len() as u32;
            self.define(&mut core, id, scope.clone());
            core.seq += 1;
            let seq = core.seq;
            if let Some(j) = core.journal.as_mut() {
                wal::encode_scope(&mut j.buf, seq, id, &name);
                j.last_seq = seq;
                wait = seq;
            }
            self.appended.store(seq, Ordering::Release);
            ids.push(ScopeId(id));
        }
        self.publish(&core, defined);
        drop(core);
        if wait != 0 {
            self.journal_ready.notify_all();
        }
        Ok((ids, wait))
    }

    /// Adds scope `id` to the registry (published by [`Index::publish`]).
    fn define(&self, core: &mut Core, id: u32, scope: Scope) {
        core.by_scope.insert(scope.clone(), ScopeId(id));
        core.scopes.push(scope);
        core.counters.push(Arc::new(ScopeCounters::new()));
    }

    /// Publishes the counters of the scopes defined since `defined` were (one copy of the list
    /// per registration, not per scope: registering 100,000 scopes stays linear).
    fn publish(&self, core: &Core, defined: usize) {
        if core.counters.len() != defined {
            self.counters.store(Arc::new(core.counters.clone()));
        }
    }

    /// Recovery: defines scope `id` (ids arrive densely, in order; repeats are ignored). The
    /// counters are published by [`Index::recount`], which recovery ends with.
    pub(crate) fn restore_scope(&self, id: u32, scope: Scope) -> Result<(), LedgerError> {
        let mut core = self.lock_core();
        match (id as usize).cmp(&core.scopes.len()) {
            std::cmp::Ordering::Less if core.scopes[id as usize] == scope => Ok(()),
            std::cmp::Ordering::Equal => {
                self.define(&mut core, id, scope);
                Ok(())
            }
            _ => Err(LedgerError::Corrupt(format!("scope id {id} out of order"))),
        }
    }

    /// Recovery: applies one reserve record (tables always, tallies when `tallies`).
    pub(crate) fn restore_reserve(
        &self,
        (year, month): (i32, u8),
        scopes: &[ScopeDelta],
        subjects: &[u8],
        tallies: bool,
    ) -> Result<(), LedgerError> {
        let cur = year_byte(year);
        let n = self.lock_core().scopes.len() as u32;
        if let Some(d) = scopes.iter().find(|d| d.id >= n) {
            return Err(LedgerError::Corrupt(format!(
                "record names unknown scope {}",
                d.id
            )));
        }
        // Overlap the cache misses of the frame (as in the reserve path).
        let mut sink = 0u8;
        for (key, _) in wal::subjects(subjects) {
            let shard = self.shards[shard_of(key)]
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            for d in scopes {
                sink ^= shard.touch(d.id as usize, key);
            }
        }
        std::hint::black_box(sink);
        // Frames list subjects sorted by key, so by shard: lock each shard once per run.
        let mut current: Option<(usize, RwLockWriteGuard<'_, Shard>)> = None;
        for (key, sensitive) in wal::subjects(subjects) {
            let i = shard_of(key);
            let shard = match &mut current {
                Some((c, g)) if *c == i => g,
                _ => &mut current.insert((i, self.write_shard(i))).1,
            };
            let y = Years {
                all: cur,
                sensitive: if sensitive { cur } else { 0 },
            };
            for d in scopes {
                shard.table_mut(d.id as usize).raise(key, y);
            }
        }
        if tallies {
            let mut core = self.lock_core();
            for d in scopes {
                let t = core.tallies.entry((d.id, year, month)).or_default();
                t.0 += u64::from(d.new_all);
                t.1 += u64::from(d.new_sensitive);
            }
        }
        Ok(())
    }

    /// Recovery: sets the last sequence number.
    pub(crate) fn restore_seq(&self, seq: u64) {
        let mut core = self.lock_core();
        core.seq = core.seq.max(seq);
        self.appended.store(core.seq, Ordering::Release);
    }

    /// Recomputes every per-year count from the tables (after recovery or pruning).
    pub(crate) fn recount(&self) {
        {
            let core = self.lock_core();
            self.publish(&core, self.counters.load().len());
        }
        let counters = self.counters.load_full();
        for c in counters.iter() {
            c.clear();
        }
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            for (scope, table) in shard.tables() {
                let Some(c) = counters.get(scope) else {
                    continue;
                };
                let mut all = [0u64; 256];
                let mut sens = [0u64; 256];
                for (_, y) in table.iter() {
                    all[y.all as usize] += 1;
                    sens[y.sensitive as usize] += 1;
                }
                for y in 1..=255u8 {
                    c.add(Class::All, y, all[y as usize]);
                    c.add(Class::Sensitive, y, sens[y as usize]);
                }
            }
        }
    }

    /// The atomic conditional reserve. Returns the outcome and the sequence number that must
    /// be durable before it is acknowledged.
    pub(crate) fn reserve(
        &self,
        req: &Reservation<'_>,
    ) -> Result<Pending<ReserveOutcome>, LedgerError> {
        if req.subjects.len() > MAX_SUBJECTS_PER_RESERVATION {
            return Err(LedgerError::Limit("too many subjects in one reservation"));
        }
        if req.scopes.len() > MAX_SCOPES_PER_RESERVATION {
            return Err(LedgerError::Limit("too many scopes in one reservation"));
        }
        if req.alternatives.len() > MAX_SCOPES_PER_RESERVATION {
            return Err(LedgerError::Limit(
                "too many alternatives in one reservation",
            ));
        }
        let counters = self.check_scopes(req.scopes)?;
        let known = |s: ScopeId| {
            if (s.0 as usize) < counters.len() {
                Ok(())
            } else {
                Err(LedgerError::UnknownScope(s.0))
            }
        };
        for c in req.ceilings {
            known(c.scope)?;
        }
        for a in req.alternatives {
            if let Some(s) = a.scope {
                known(s)?;
            }
            for c in a.ceilings {
                known(c.scope)?;
            }
        }
        let when = When::new(req.regime, req.now);
        // Fast path: every subject already counted this year in every scope, and in the scope
        // of an alternative (the first such one is chosen: it costs no volume).
        if let Some(wait) = self.all_current(req.subjects, req.scopes, when) {
            let extra = if req.alternatives.is_empty() {
                Some((None, 0))
            } else {
                req.alternatives.iter().find_map(|a| match a.scope {
                    None => Some((None, 0)),
                    Some(s) => self
                        .all_current(req.subjects, &[s], when)
                        .map(|w| (Some(s), w)),
                })
            };
            if let Some((extra, wait_extra)) = extra {
                let outcomes = req
                    .scopes
                    .iter()
                    .chain(extra.as_ref())
                    .map(|s| unchanged(*s, counters[s.0 as usize].window(when.start)))
                    .collect();
                return Ok((ReserveOutcome::Reserved(outcomes), wait.max(wait_extra)));
            }
        }
        self.reserve_slow(req, when, &counters)
    }

    /// Reads the home slot of every (subject, scope): independent loads whose cache misses
    /// the CPU overlaps, before the dependent probes (a safe stand-in for a prefetch).
    fn touch_all(&self, subjects: &[Subject], scopes: &[ScopeId]) {
        let mut sink = 0u8;
        for s in subjects {
            let shard = self.shards[shard_of(&s.key.0)]
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            for sc in scopes {
                sink ^= shard.touch(sc.0 as usize, &s.key.0);
            }
        }
        std::hint::black_box(sink);
    }

    /// Whether every subject is counted this year in every scope (sensitive ones as
    /// sensitive); if so, the sequence number that must be durable before that may be relied
    /// on (the latest commit that changed one of their shards).
    fn all_current(&self, subjects: &[Subject], scopes: &[ScopeId], when: When) -> Option<u64> {
        if subjects.len() > 1 {
            self.touch_all(subjects, scopes);
        }
        let mut wait = 0;
        for s in subjects {
            let shard = self.shards[shard_of(&s.key.0)]
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let current = scopes.iter().all(|sc| {
                let y = shard.get(sc.0 as usize, &s.key.0);
                y.all >= when.cur && (!s.sensitive || y.sensitive >= when.cur)
            });
            if !current {
                return None;
            }
            wait = wait.max(shard.changed_at);
        }
        Some(wait)
    }

    /// How many of `subjects` would be new in each scope; no locks beyond shard reads.
    pub(crate) fn probe(
        &self,
        subjects: &[Subject],
        scopes: &[ScopeId],
        regime: Regime,
        now: SystemTime,
    ) -> Result<Vec<ScopeOutcome>, LedgerError> {
        let counters = self.check_scopes(scopes)?;
        let when = When::new(regime, now);
        let subjects = dedup(subjects);
        let mut out: Vec<ScopeOutcome> = scopes
            .iter()
            .map(|s| unchanged(*s, counters[s.0 as usize].window(when.start)))
            .collect();
        for s in &subjects {
            let shard = self.shards[shard_of(&s.key.0)]
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            for o in out.iter_mut() {
                let y = shard.get(o.scope.0 as usize, &s.key.0);
                o.new_all += u64::from(y.all < when.start);
                o.new_sensitive += u64::from(s.sensitive && y.sensitive < when.start);
            }
        }
        for o in out.iter_mut() {
            o.all_after += o.new_all;
            o.sensitive_after += o.new_sensitive;
        }
        Ok(out)
    }

    /// The window counts of one scope.
    pub(crate) fn counts(
        &self,
        scope: ScopeId,
        regime: Regime,
        now: SystemTime,
    ) -> Result<ScopeCounts, LedgerError> {
        let counters = self.check_scopes(&[scope])?;
        Ok(counters[scope.0 as usize].window(When::new(regime, now).start))
    }

    /// Every monthly tally.
    pub(crate) fn monthly(&self) -> Vec<MonthlyTally> {
        let core = self.lock_core();
        core.tallies
            .iter()
            .filter_map(|(&(scope, year, month), &(new_all, new_sensitive))| {
                Some(MonthlyTally {
                    scope: core.scopes.get(scope as usize)?.clone(),
                    year,
                    month,
                    new_all,
                    new_sensitive,
                })
            })
            .collect()
    }

    /// Drops from `shard` every subject last counted before `min_all` (outside every window)
    /// and takes it out of the per-year counts, which concurrent reservations keep updating.
    pub(crate) fn prune_shard(&self, shard: &mut Shard, min_all: YearByte) {
        let counters = self.counters.load();
        for (scope, table) in shard.tables_mut() {
            let Some(c) = counters.get(scope) else {
                continue;
            };
            for (_, y) in table.iter().filter(|(_, y)| y.all < min_all) {
                c.drop_one(Class::All, y.all);
                if y.sensitive != 0 {
                    c.drop_one(Class::Sensitive, y.sensitive);
                }
            }
            table.prune(min_all);
        }
    }

    /// Visits every shard under its write lock (snapshots, pruning).
    pub(crate) fn for_each_shard<E>(
        &self,
        mut f: impl FnMut(usize, &mut Shard) -> Result<(), E>,
    ) -> Result<(), E> {
        for i in 0..SHARDS {
            let mut shard = self.write_shard(i);
            f(i, &mut shard)?;
        }
        Ok(())
    }

    /// Visits shard `i` under its write lock (journal re-assertion).
    pub(crate) fn for_shard<E>(
        &self,
        i: usize,
        f: impl FnOnce(&mut Shard) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut shard = self.write_shard(i);
        f(&mut shard)
    }

    /// Heap bytes held by the tables (memory probe).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.read().unwrap_or_else(PoisonError::into_inner);
                s.heap_bytes()
            })
            .sum::<usize>()
            + self
                .counters
                .load()
                .iter()
                .map(|c| std::mem::size_of::<ScopeCounters>() + c.heap_bytes())
                .sum::<usize>()
    }

    /// Number of (subject, scope) entries held.
    pub(crate) fn entries(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .tables()
                    .map(|(_, t)| t.len())
                    .sum::<usize>()
            })
            .sum()
    }
}

fn unchanged(scope: ScopeId, c: ScopeCounts) -> ScopeOutcome {
    ScopeOutcome {
        scope,
        new_all: 0,
        new_sensitive: 0,
        all_after: c.all,
        sensitive_after: c.sensitive,
    }
}
