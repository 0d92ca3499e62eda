//! The key layout of a Redis ledger namespace: the namespace of an entity (its hash tag keeps
//! every key of the entity in one Cluster slot), each key's name, the fingerprint of the hash
//! key stored in the namespace, and when a year's keys may expire.

use super::super::hash::SubjectHasher;
use std::time::{SystemTime, UNIX_EPOCH};

/// The Redis namespace (with its hash tag) of an entity: `tg:{<slug>}`, the slug being the
/// entity name lower-cased with every run of other characters than `a-z0-9` turned into `-`
/// (at most 64 characters).
pub fn namespace(entity: &str) -> String {
    let mut slug = String::new();
    for c in entity.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 64 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    format!("tg:{{{}}}", if slug.is_empty() { "entity" } else { slug })
}

/// The fingerprint of a hash key stored in the namespace: a keyed hash of a constant, which
/// tells keys apart without revealing them.
pub fn key_fingerprint(hasher: &SubjectHasher) -> String {
    hex(&hasher
        .hash("transfer-gate/redis-key-check", b"v1")
        .as_bytes()[..])
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The Redis key names of one namespace.
#[derive(Debug, Clone)]
pub struct Keys {
    pub(super) ns: String,
}

impl Keys {
    /// The keys of namespace `ns` (see [`namespace`]).
    pub fn new(ns: String) -> Self {
        Keys { ns }
    }
    /// `<ns>:meta`: hash key fingerprint, format version, the namespace generation `gen`
    /// (its marker) and the write counter `v`.
    pub fn meta(&self) -> String {
        format!("{}:meta", self.ns)
    }
    /// `<ns>:m`: monthly tallies.
    pub fn monthly(&self) -> String {
        format!("{}:m", self.ns)
    }
    /// `<ns>:a`: the report's activity statistics of every replica (see `redis/activity.rs`).
    pub fn activity(&self) -> String {
        format!("{}:a", self.ns)
    }
    /// `<ns>:y:<year>:<scope>`: subjects counted in `scope` in `year`.
    pub fn year(&self, scope: &str, year: i32) -> String {
        format!("{}:y:{year}:{scope}", self.ns)
    }
    /// `<ns>:n:<scope>`: per-year counters of `scope`.
    pub fn counters(&self, scope: &str) -> String {
        format!("{}:n:{scope}", self.ns)
    }
}

/// The moment at which the subjects of `year` can leave Redis: no window contains `year`
/// from January 1 of `year + 2` (Asia/Shanghai) on; 31 days of grace for clock skew, and never
/// earlier than a day from now.
pub fn year_expiry(year: i32) -> u64 {
    let at = time::Date::from_calendar_date(year + 2, time::Month::January, 1)
        .map(|d| {
            d.midnight()
                .assume_offset(time::macros::offset!(+8))
                .unix_timestamp()
        })
        .unwrap_or(i64::MAX / 2);
    let at = u64::try_from(at).unwrap_or(0) + 31 * 86_400;
    let floor = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 86_400;
    at.max(floor)
}
