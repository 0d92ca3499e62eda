//! The shared ledger on Redis (SPEC §4 `backend = "redis"`): several gate replicas
//! count into one Redis server or Redis Cluster, exactly.
//!
//! - One atomic server-side step per request that carries subjects not known locally: the Lua
//!   script `script.lua` (EVALSHA, EVAL on `NOSCRIPT`) checks the ceilings and counts the new
//!   subjects all-or-nothing: per-subject state per scope and year, per-year counters per
//!   scope and class, monthly tallies. Every key of the entity carries the hash tag
//!   `{tg:<entity slug>}`, so the script runs unchanged on Cluster (one slot per entity).
//! - A local cache of subjects already counted this year (per scope, bounded) answers requests
//!   whose subjects are all known without a round trip. That is safe because within a year a
//!   subject's state only grows; the cache is keyed by year, so the year turn and the
//!   sensitive upgrade miss it and go to Redis. Window counts used on that path are at most
//!   [`COUNTS_MAX_AGE`] old.
//! - Fail closed: every operation is bounded by `ledger.timeout_ms`; a timeout or an error is
//!   [`LedgerError::Unavailable`] (the proxy answers 503), [`Ledger::is_ready`] turns false, and
//!   a background check reconnects when Redis returns (no restart).
//! - The hash key must be the same on every replica: the namespace stores a fingerprint of it
//!   (a keyed hash of a constant) and a replica with another key refuses to use it.
//!
//! Scope ids are local to the process (registration does no I/O); Redis keys name scopes by
//! their stored names (`entity`, `destination:<name>`, …). See `docs/ledger.md`, section Redis.
//!
//! Where each concern lives: the key layout in `keys.rs`; the connection, its hash key check,
//! timeouts, health and the background check in `connection.rs` (the password and trust roots
//! in `connect.rs`); the Lua step and one call of it in `script.rs` + `script.lua`, its reply
//! decoded in `reply.rs`; the local subject cache in `cache.rs`; the replica's journal and
//! loss recovery in `journal.rs` and `loss.rs`; the report's shared activity in
//! `activity.rs`. This file: options, the scope registry, reserve/probe/counts over the cache,
//! and the [`Ledger`] impl.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use super::activity::StoredActivity;
use super::api::{
    Ceiling, Ledger, LedgerError, LedgerFuture, MonthlyTally, Refusal, Reservation, ReserveOutcome,
    Scope, ScopeCounts, ScopeId, ScopeOutcome, Subject,
};
use super::hash::SubjectHasher;
use super::index::{MAX_SCOPES_PER_RESERVATION, MAX_SUBJECTS_PER_RESERVATION};

mod activity;
mod cache;
mod connect;
mod connection;
mod journal;
mod keys;
mod loss;
mod reply;
mod script;

use crate::model::{shanghai_date, Regime};
use cache::SubjectCache;
pub use connect::{RedisAuth, RedisAuthError};
use connection::{health_loop, Conn};
use journal::Journal;
pub use journal::DIR_NAME as JOURNAL_DIR;
pub use keys::{key_fingerprint, namespace, year_expiry, Keys};
use loss::LossState;
use reply::{outcomes, parse_tallies, Reply};
use script::SentCeiling;
pub use script::SCRIPT;

/// How old the window counts may be that answer a request whose subjects are all known
/// locally (the counts only grow; a fresher value costs one round trip).
pub const COUNTS_MAX_AGE: Duration = Duration::from_secs(1);

/// Default number of (scope, subject) entries in the local cache (about 40 bytes each).
pub const DEFAULT_CACHE_ENTRIES: usize = 1 << 20;

/// Where the Redis ledger lives. `Debug` hides passwords.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server: `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS).
    Server(String),
    /// Redis Cluster seed nodes (URLs or `host:port`).
    Cluster(Vec<String>),
}

/// A URL with its `user:password@` part replaced by `***@`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisTarget::Server(u) => f.debug_tuple("Server").field(&redact(u)).finish(),
            RedisTarget::Cluster(n) => f
                .debug_tuple("Cluster")
                .field(&n.iter().map(|u| redact(u)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// How to open a [`RedisLedger`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The server or cluster.
    pub target: RedisTarget,
    /// Bound on every Redis operation (`ledger.timeout_ms`).
    pub timeout: Duration,
    /// The entity name (`entity.name`): its slug is the namespace's hash tag.
    pub entity: String,
    /// Size of the local cache of known subjects, in (scope, subject) entries.
    pub cache_entries: usize,
    /// The replica's durable journal directory (`<data_dir>/redis-journal`): every subject
    /// it reserved, re-asserted after Redis loses data. `None` only for tools that never
    /// reserve (`ledger import`): reservations are then refused.
    pub journal_dir: Option<PathBuf>,
}

/// Why a [`RedisLedger`] could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RedisOpenError {
    /// The URL or node list is invalid.
    #[error("invalid redis address: {0}")]
    Address(String),
    /// The namespace was created with another hash key: this replica would count the same
    /// people under other keys (double counting).
    #[error("the Redis ledger namespace {namespace} was created with another hash key; every replica must use the same ledger.hash_key_file")]
    KeyMismatch {
        /// The namespace (`tg:{slug}`).
        namespace: String,
    },
    /// The replica's journal cannot be opened.
    #[error("the Redis ledger journal cannot be opened: {0}")]
    Journal(LedgerError),
}

#[derive(Debug, Default)]
struct Registry {
    scopes: Vec<Scope>,
    names: Vec<String>,
    /// The journal's id of each scope (empty without a journal).
    journal: Vec<ScopeId>,
    by_scope: HashMap<Scope, ScopeId>,
}

/// The Redis ledger backend. Cheap to share (`Arc`); see the module documentation.
pub struct RedisLedger {
    target: RedisTarget,
    auth: RedisAuth,
    keys: Keys,
    timeout: Duration,
    fingerprint: String,
    script: redis::Script,
    registry: RwLock<Registry>,
    conn: Mutex<Option<Conn>>,
    connecting: tokio::sync::Mutex<()>,
    /// The namespace's key fingerprint has been checked against ours.
    verified: AtomicBool,
    /// The namespace belongs to another hash key: refuse everything.
    mismatch: AtomicBool,
    /// The last Redis operation succeeded.
    healthy: AtomicBool,
    cache: SubjectCache,
    /// (scope, window start year) → (counts, when read).
    counts: Mutex<HashMap<(u32, i32), (ScopeCounts, Instant)>>,
    /// The replica's durable journal (see [`RedisOptions::journal_dir`]).
    journal: Option<Journal>,
    /// Loss detection and re-assertion state.
    loss: LossState,
    /// This ledger, for the tasks it spawns.
    this: Weak<RedisLedger>,
}

impl std::fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLedger")
            .field("namespace", &self.keys.ns)
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// The year, month and window start of a moment (Asia/Shanghai).
#[derive(Debug, Clone, Copy)]
struct When {
    year: i32,
    month: u8,
    start: i32,
}

impl When {
    fn new(regime: Regime, now: SystemTime) -> Self {
        let d = shanghai_date(now);
        When {
            year: d.year(),
            month: d.month() as u8,
            start: regime.window_start_year(d.year()),
        }
    }
    fn cache_year(self) -> u16 {
        u16::try_from(self.year).unwrap_or(0)
    }
}

/// Sorts by key and merges duplicates (sensitive if any occurrence is).
fn dedup(subjects: &[Subject]) -> Vec<Subject> {
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

impl RedisLedger {
    /// Creates the ledger without any I/O (it connects on first use) and starts its
    /// background health check when called inside a tokio runtime.
    ///
    /// # Errors
    /// An invalid address.
    pub fn new(
        opts: RedisOptions,
        hasher: &SubjectHasher,
    ) -> Result<Arc<RedisLedger>, RedisOpenError> {
        Self::new_with_auth(opts, RedisAuth::none(), hasher)
    }

    /// [`RedisLedger::new`] with a password and trust roots ([`RedisAuth`]).
    ///
    /// # Errors
    /// An invalid address.
    pub fn new_with_auth(
        opts: RedisOptions,
        auth: RedisAuth,
        hasher: &SubjectHasher,
    ) -> Result<Arc<RedisLedger>, RedisOpenError> {
        match &opts.target {
            RedisTarget::Server(url) => {
                auth.server_client(url)
                    .map_err(|e| RedisOpenError::Address(e.to_string()))?;
            }
            RedisTarget::Cluster(nodes) => {
                auth.cluster_builder(nodes)
                    .build()
                    .map_err(|e| RedisOpenError::Address(e.to_string()))?;
            }
        }
        let keys = Keys::new(namespace(&opts.entity));
        let journal = match &opts.journal_dir {
            Some(dir) => Some(Journal::open(dir).map_err(RedisOpenError::Journal)?),
            None => None,
        };
        let l = Arc::new_cyclic(|this| RedisLedger {
            target: opts.target,
            auth,
            keys,
            timeout: opts.timeout,
            fingerprint: key_fingerprint(hasher),
            script: redis::Script::new(SCRIPT),
            registry: RwLock::new(Registry::default()),
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            verified: AtomicBool::new(false),
            mismatch: AtomicBool::new(false),
            healthy: AtomicBool::new(false),
            cache: SubjectCache::new(opts.cache_entries),
            counts: Mutex::new(HashMap::new()),
            journal,
            loss: LossState::default(),
            this: this.clone(),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(health_loop(Arc::downgrade(&l)));
        }
        Ok(l)
    }

    /// Opens the ledger: [`RedisLedger::new`], then connects and checks the hash key
    /// fingerprint when Redis answers within the timeout; when it does not, the ledger starts
    /// not ready and connects later.
    ///
    /// # Errors
    /// An invalid address, or a namespace created with another hash key.
    pub async fn open(
        opts: RedisOptions,
        hasher: &SubjectHasher,
    ) -> Result<Arc<RedisLedger>, RedisOpenError> {
        Self::open_with_auth(opts, RedisAuth::none(), hasher).await
    }

    /// [`RedisLedger::open`] with a password and trust roots ([`RedisAuth`]).
    ///
    /// # Errors
    /// An invalid address, or a namespace created with another hash key.
    pub async fn open_with_auth(
        opts: RedisOptions,
        auth: RedisAuth,
        hasher: &SubjectHasher,
    ) -> Result<Arc<RedisLedger>, RedisOpenError> {
        let l = Self::new_with_auth(opts, auth, hasher)?;
        match l.ping().await {
            Ok(()) => tracing::info!(namespace = %l.keys.ns, "redis ledger connected"),
            Err(e) => {
                tracing::warn!(namespace = %l.keys.ns, error = %e, "redis ledger not reachable yet; not ready until it is")
            }
        }
        if l.mismatch.load(Ordering::Acquire) {
            return Err(RedisOpenError::KeyMismatch {
                namespace: l.keys.ns.clone(),
            });
        }
        Ok(l)
    }

    /// The namespace (`tg:{slug}`).
    pub fn namespace(&self) -> &str {
        &self.keys.ns
    }

    /// The key names of the namespace.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn check_scopes(&self, scopes: &[ScopeId]) -> Result<Vec<String>, LedgerError> {
        let reg = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        scopes
            .iter()
            .map(|s| {
                reg.names
                    .get(s.0 as usize)
                    .cloned()
                    .ok_or(LedgerError::UnknownScope(s.0))
            })
            .collect()
    }

    fn journal_ids(&self, scopes: &[ScopeId]) -> Result<Vec<ScopeId>, LedgerError> {
        let reg = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        scopes
            .iter()
            .map(|s| {
                reg.journal
                    .get(s.0 as usize)
                    .copied()
                    .ok_or(LedgerError::UnknownScope(s.0))
            })
            .collect()
    }

    fn fresh_counts(&self, scopes: &[ScopeId], start: i32) -> Option<Vec<ScopeCounts>> {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        scopes
            .iter()
            .map(|s| {
                counts
                    .get(&(s.0, start))
                    .filter(|(_, at)| at.elapsed() < COUNTS_MAX_AGE)
                    .map(|(c, _)| *c)
            })
            .collect()
    }

    fn store_counts(&self, scope: ScopeId, start: i32, c: ScopeCounts) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let e = counts
            .entry((scope.0, start))
            .or_insert((c, Instant::now()));
        // Counts only grow within a window: never replace a newer, larger answer.
        e.0.all = e.0.all.max(c.all);
        e.0.sensitive = e.0.sensitive.max(c.sensitive);
        e.1 = Instant::now();
    }

    /// The fast path: every subject known locally as counted this year in every scope, and
    /// fresh counts. `None` when Redis must be asked.
    fn cached_outcomes(
        &self,
        subjects: &[Subject],
        scopes: &[ScopeId],
        when: When,
    ) -> Option<Vec<ScopeOutcome>> {
        if !self.healthy.load(Ordering::Acquire)
            || self.recovering()
            || !self.epoch_known()
            || !self.cache.all_current(subjects, scopes, when.cache_year())
        {
            return None;
        }
        let counts = self.fresh_counts(scopes, when.start)?;
        Some(
            scopes
                .iter()
                .zip(counts)
                .map(|(s, c)| ScopeOutcome {
                    scope: *s,
                    new_all: 0,
                    new_sensitive: 0,
                    all_after: c.all,
                    sensitive_after: c.sensitive,
                })
                .collect(),
        )
    }

    async fn reserve_inner(&self, req: Reservation<'_>) -> Result<ReserveOutcome, LedgerError> {
        if req.subjects.len() > MAX_SUBJECTS_PER_RESERVATION {
            return Err(LedgerError::Limit("too many subjects in one reservation"));
        }
        if req.scopes.len() > MAX_SCOPES_PER_RESERVATION
            || req.alternatives.len() > MAX_SCOPES_PER_RESERVATION
        {
            return Err(LedgerError::Limit("too many scopes in one reservation"));
        }
        self.check_scopes(req.scopes)?;
        let optional: Vec<ScopeId> = req.alternatives.iter().filter_map(|a| a.scope).collect();
        self.check_scopes(&optional)?;
        // Every ceiling with its owner: 0 common, k the k-th alternative.
        let all_ceilings: Vec<(usize, Ceiling)> = req
            .ceilings
            .iter()
            .map(|c| (0, *c))
            .chain(
                req.alternatives
                    .iter()
                    .enumerate()
                    .flat_map(|(k, a)| a.ceilings.iter().map(move |c| (k + 1, *c))),
            )
            .collect();
        let ceiling_scopes: Vec<ScopeId> = all_ceilings.iter().map(|(_, c)| c.scope).collect();
        self.check_scopes(&ceiling_scopes)?;
        let Some(journal) = &self.journal else {
            return Err(LedgerError::Unavailable(
                "redis ledger opened without a journal: it does not reserve".into(),
            ));
        };
        // Held until the subjects are journaled: a re-assertion waits for it.
        let Ok(_inflight) = self.loss.inflight.try_read() else {
            return Err(LedgerError::Unavailable(
                "redis ledger lost data: re-asserting this replica's journal before counting again"
                    .into(),
            ));
        };
        let when = When::new(req.regime, req.now);
        if let Some((scopes, o)) = self.cached_choice(&req, when) {
            let ids = self.journal_ids(&scopes)?;
            journal
                .record(req.subjects, &ids, req.regime, req.now)
                .await?;
            return Ok(ReserveOutcome::Reserved(o));
        }
        let subjects = dedup(req.subjects);
        let mut scopes = req.scopes.to_vec();
        scopes.extend_from_slice(&optional);
        scopes.sort_unstable();
        scopes.dedup();
        let names = self.check_scopes(&scopes)?;
        // Ceilings on scopes the request does not count into cannot be crossed by it.
        let sent: Vec<(SentCeiling, Ceiling)> = all_ceilings
            .iter()
            .filter_map(|(owner, c)| {
                scopes.binary_search(&c.scope).ok().map(|i| {
                    let s = SentCeiling {
                        owner: *owner,
                        scope: i,
                        class: c.class,
                        max_after: c.max_after,
                    };
                    (s, *c)
                })
            })
            .collect();
        let alternatives: Vec<Option<usize>> = req
            .alternatives
            .iter()
            .map(|a| a.scope.and_then(|s| scopes.binary_search(&s).ok()))
            .collect();
        let to_send: Vec<SentCeiling> = sent.iter().map(|(s, _)| *s).collect();
        match self
            .call(
                true,
                &subjects,
                (&scopes, &names),
                &to_send,
                &alternatives,
                when,
            )
            .await?
        {
            Reply::Refused(i, count_before, new) => {
                let ceiling = sent
                    .get(i)
                    .map(|(_, c)| *c)
                    .ok_or_else(|| LedgerError::Unavailable("redis: bad ceiling index".into()))?;
                Ok(ReserveOutcome::Refused(Refusal {
                    ceiling,
                    count_before,
                    new,
                }))
            }
            Reply::Done(states, per, chosen) => {
                let ids = self.journal_ids(&scopes)?;
                journal
                    .record_states(&subjects, &ids, &states, req.regime, req.now)
                    .await?;
                let extra = chosen
                    .and_then(|k| req.alternatives.get(k))
                    .and_then(|a| a.scope);
                let wanted: Vec<ScopeId> = req.scopes.iter().copied().chain(extra).collect();
                Ok(ReserveOutcome::Reserved(outcomes(&wanted, &scopes, &per)))
            }
        }
    }

    /// The fast path of a reservation: every subject known locally as counted this year in
    /// every common scope and, when there are alternatives, in the scope of one of them (the
    /// first such is chosen: it costs no volume).
    fn cached_choice(
        &self,
        req: &Reservation<'_>,
        when: When,
    ) -> Option<(Vec<ScopeId>, Vec<ScopeOutcome>)> {
        let extra = if req.alternatives.is_empty() {
            None
        } else {
            req.alternatives.iter().find_map(|a| match a.scope {
                None => Some(None),
                Some(s) => self
                    .cache
                    .all_current(req.subjects, &[s], when.cache_year())
                    .then_some(Some(s)),
            })?
        };
        let scopes: Vec<ScopeId> = req.scopes.iter().copied().chain(extra).collect();
        let o = self.cached_outcomes(req.subjects, &scopes, when)?;
        Some((scopes, o))
    }

    async fn probe_inner(
        &self,
        subjects: &[Subject],
        req_scopes: &[ScopeId],
        regime: Regime,
        now: SystemTime,
    ) -> Result<Vec<ScopeOutcome>, LedgerError> {
        self.check_scopes(req_scopes)?;
        let when = When::new(regime, now);
        if let Some(o) = self.cached_outcomes(subjects, req_scopes, when) {
            return Ok(o);
        }
        let subjects = dedup(subjects);
        let mut scopes = req_scopes.to_vec();
        scopes.sort_unstable();
        scopes.dedup();
        let names = self.check_scopes(&scopes)?;
        match self
            .call(false, &subjects, (&scopes, &names), &[], &[], when)
            .await?
        {
            Reply::Done(_, per, _) => Ok(outcomes(req_scopes, &scopes, &per)),
            Reply::Refused(..) => Err(LedgerError::Unavailable("redis: probe refused".into())),
        }
    }

    async fn counts_inner(
        &self,
        scope: ScopeId,
        regime: Regime,
        now: SystemTime,
    ) -> Result<ScopeCounts, LedgerError> {
        let name = self
            .check_scopes(&[scope])?
            .pop()
            .ok_or(LedgerError::UnknownScope(scope.0))?;
        let when = When::new(regime, now);
        // The read-only step with no subject: its loss check covers this path too.
        match self
            .call(false, &[], (&[scope], &[name]), &[], &[], when)
            .await?
        {
            Reply::Done(_, per, _) => {
                let p = per.first().copied().unwrap_or_default();
                Ok(ScopeCounts {
                    all: p[2],
                    sensitive: p[3],
                })
            }
            Reply::Refused(..) => Err(LedgerError::Unavailable("redis: probe refused".into())),
        }
    }

    async fn monthly_inner(&self) -> Result<Vec<MonthlyTally>, LedgerError> {
        let key = self.keys.monthly();
        let fields: HashMap<String, i64> = self
            .run(|mut c| async move {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(key);
                c.query(&cmd).await
            })
            .await?;
        Ok(parse_tallies(&fields))
    }

    /// Whether the namespace already holds counts (monthly tallies or entity counters).
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when Redis does not answer in time.
    pub async fn namespace_has_counts(&self) -> Result<bool, LedgerError> {
        let (m, n) = (
            self.keys.monthly(),
            self.keys.counters(&Scope::Entity.stored_name()),
        );
        let found: i64 = self
            .run(|mut c| async move {
                let mut cmd = redis::cmd("EXISTS");
                cmd.arg(m).arg(n);
                c.query(&cmd).await
            })
            .await?;
        Ok(found > 0)
    }

    /// Number of (scope, subject) entries in the local cache.
    pub fn cached_entries(&self) -> usize {
        self.cache.len()
    }
}

impl Ledger for RedisLedger {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn register_scopes<'a>(&'a self, scopes: &'a [Scope]) -> LedgerFuture<'a, Vec<ScopeId>> {
        Box::pin(async move {
            let journal_ids = match &self.journal {
                Some(j) => Some(j.register(scopes).await?),
                None => None,
            };
            let mut reg = self
                .registry
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let mut ids = Vec::with_capacity(scopes.len());
            for s in scopes {
                if let Some(id) = reg.by_scope.get(s) {
                    ids.push(*id);
                    continue;
                }
                let name = s.stored_name();
                if name.len() > 1024 {
                    return Err(LedgerError::Limit("scope name longer than 1024 bytes"));
                }
                if reg.scopes.len() >= 1 << 16 {
                    return Err(LedgerError::Limit("too many scopes"));
                }
                let id = ScopeId(reg.scopes.len() as u32);
                if let Some(j) = journal_ids.as_ref().and_then(|v| v.get(ids.len())) {
                    reg.journal.push(*j);
                }
                reg.scopes.push(s.clone());
                reg.names.push(name);
                reg.by_scope.insert(s.clone(), id);
                ids.push(id);
            }
            Ok(ids)
        })
    }

    fn reserve<'a>(&'a self, req: Reservation<'a>) -> LedgerFuture<'a, ReserveOutcome> {
        Box::pin(self.reserve_inner(req))
    }

    fn probe<'a>(
        &'a self,
        subjects: &'a [Subject],
        scopes: &'a [ScopeId],
        regime: Regime,
        now: SystemTime,
    ) -> LedgerFuture<'a, Vec<ScopeOutcome>> {
        Box::pin(self.probe_inner(subjects, scopes, regime, now))
    }

    fn counts(
        &self,
        scope: ScopeId,
        regime: Regime,
        now: SystemTime,
    ) -> LedgerFuture<'_, ScopeCounts> {
        Box::pin(self.counts_inner(scope, regime, now))
    }

    fn recent_counts(
        &self,
        scope: ScopeId,
        regime: Regime,
        now: SystemTime,
    ) -> LedgerFuture<'_, ScopeCounts> {
        Box::pin(async move {
            let start = When::new(regime, now).start;
            match self
                .fresh_counts(&[scope], start)
                .and_then(|c| c.first().copied())
            {
                Some(c) => Ok(c),
                None => self.counts_inner(scope, regime, now).await,
            }
        })
    }

    fn monthly(&self) -> LedgerFuture<'_, Vec<MonthlyTally>> {
        Box::pin(self.monthly_inner())
    }

    fn shares_activity(&self) -> bool {
        true
    }

    fn add_activity<'a>(&'a self, delta: &'a StoredActivity) -> LedgerFuture<'a, ()> {
        Box::pin(self.add_activity_inner(delta))
    }

    fn activity(&self) -> LedgerFuture<'_, StoredActivity> {
        Box::pin(self.activity_inner())
    }

    fn losses_detected(&self) -> u64 {
        RedisLedger::losses_detected(self)
    }

    fn reasserted_subjects(&self) -> u64 {
        RedisLedger::reasserted_subjects(self)
    }

    fn is_ready(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
            && self.verified.load(Ordering::Acquire)
            && !self.mismatch.load(Ordering::Acquire)
            && self.epoch_known()
            && !self.recovering()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod loss_tests;
