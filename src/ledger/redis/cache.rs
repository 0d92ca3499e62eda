//! The bounded local cache of the Redis ledger: per (scope, subject) the latest year Redis
//! confirmed, for `all` and `sensitive`. A hit answers a request without a round trip.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::ledger::api::{ScopeId, Subject};

const CACHE_SHARDS: usize = 64;

/// The bounded local cache: per (scope, subject) the latest year known to Redis for class
/// `all` and for class `sensitive` (0 = not known). Only lower bounds are stored, so a hit is
/// always true of Redis; a full shard is simply cleared (it is only a cache).
/// One shard of the cache: (scope id, subject key) → (last year, last sensitive year).
type CacheShard = Mutex<HashMap<(u32, [u8; 16]), (u16, u16)>>;

pub(super) struct SubjectCache {
    shards: Box<[CacheShard]>,
    per_shard: usize,
}

impl SubjectCache {
    pub(super) fn new(entries: usize) -> Self {
        SubjectCache {
            shards: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            per_shard: (entries / CACHE_SHARDS).max(1),
        }
    }

    fn shard(&self, key: &[u8; 16]) -> &CacheShard {
        &self.shards[usize::from(key[1]) % CACHE_SHARDS]
    }

    /// Whether every subject is known as counted in `year` in every scope (and as sensitive
    /// when sent as sensitive).
    pub(super) fn all_current(&self, subjects: &[Subject], scopes: &[ScopeId], year: u16) -> bool {
        subjects.iter().all(|s| {
            let shard = self
                .shard(&s.key.0)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            scopes.iter().all(|sc| {
                shard
                    .get(&(sc.0, s.key.0))
                    .is_some_and(|&(all, sens)| all >= year && (!s.sensitive || sens >= year))
            })
        })
    }

    pub(super) fn raise(&self, scope: ScopeId, key: &[u8; 16], all: u16, sens: u16) {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard && !shard.contains_key(&(scope.0, *key)) {
            shard.clear();
        }
        let e = shard.entry((scope.0, *key)).or_insert((0, 0));
        e.0 = e.0.max(all);
        e.1 = e.1.max(sens);
    }

    /// Forgets everything (after a loss: entries may name subjects Redis no longer holds).
    pub(super) fn clear(&self) {
        for s in self.shards.iter() {
            s.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }

    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

impl std::fmt::Debug for SubjectCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SubjectCache {{ entries: {} }}", self.len())
    }
}
