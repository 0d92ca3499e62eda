//! The atomic step's Lua script and its invocation: the keys and arguments one call sends
//! (subjects, scopes, ceilings, alternatives, the loss-detection epoch), and what a reply
//! updates locally (the subject cache, the fresh window counts). Decoding the reply is
//! `reply.rs`.

use super::keys::year_expiry;
use super::loss::parse_seen;
use super::reply::{parse_reply, Reply};
use super::{RedisLedger, When};
use crate::ledger::api::{Class, LedgerError, ScopeCounts, ScopeId, Subject};

/// The Lua script of the atomic step (see the file for its keys, arguments and reply).
pub const SCRIPT: &str = include_str!("script.lua");

/// A ceiling as the script receives it: its owner (0: every alternative, k: the k-th), the
/// index of its scope in the sorted scope list, its class and its limit.
#[derive(Debug, Clone, Copy)]
pub(super) struct SentCeiling {
    pub(super) owner: usize,
    pub(super) scope: usize,
    pub(super) class: Class,
    pub(super) max_after: u64,
}

impl RedisLedger {
    /// One script call (`reserve` or probe) over deduplicated subjects and scopes, with the
    /// ceilings (owner: 0 common, k the k-th alternative; index into `scopes`) and the
    /// alternatives (index into `scopes` of each one's extra scope).
    pub(super) async fn call(
        &self,
        reserve: bool,
        subjects: &[Subject],
        (scopes, names): (&[ScopeId], &[String]),
        ceilings: &[SentCeiling],
        alternatives: &[Option<usize>],
        when: When,
    ) -> Result<Reply, LedgerError> {
        let (epoch, v_seen) = self.expected().await?;
        let mut inv = self.script.prepare_invoke();
        inv.key(self.keys.monthly());
        for name in names {
            inv.key(self.keys.year(name, when.year));
            inv.key(self.keys.year(name, when.year - 1));
            inv.key(self.keys.counters(name));
        }
        inv.key(self.keys.meta());
        let mut blob = Vec::with_capacity(16 * subjects.len());
        let mut flags = Vec::with_capacity(subjects.len());
        for s in subjects {
            blob.extend_from_slice(&s.key.0);
            flags.push(if s.sensitive { b'1' } else { b'0' });
        }
        inv.arg(if reserve { "r" } else { "p" })
            .arg(when.year)
            .arg(when.start)
            .arg(when.month)
            .arg(year_expiry(when.year))
            .arg(names.len())
            .arg(blob)
            .arg(flags)
            .arg(ceilings.len());
        for c in ceilings {
            inv.arg(c.owner)
                .arg(c.scope + 1)
                .arg(match c.class {
                    Class::All => "a",
                    Class::Sensitive => "s",
                })
                .arg(c.max_after);
        }
        inv.arg(alternatives.len());
        for a in alternatives {
            inv.arg(a.map_or(0, |i| i + 1));
        }
        for name in names {
            inv.arg(name);
        }
        inv.arg(&epoch.gen).arg(&epoch.run_id).arg(v_seen);
        let v = self.run(|mut c| async move { c.eval(&inv).await }).await?;
        if let Some(seen) = parse_seen(&v, 2) {
            self.on_refused_epoch(&seen, &epoch);
            return Err(LedgerError::Unavailable(
                "redis ledger lost data: re-asserting this replica's journal before counting again"
                    .into(),
            ));
        }
        let reply = parse_reply(v, names.len())?;
        if let Reply::Done(states, per, _) = &reply {
            let year = when.cache_year();
            for (j, s) in subjects.iter().enumerate() {
                for (i, sc) in scopes.iter().enumerate() {
                    match states.get(j * scopes.len() + i) {
                        Some(b'1') => self.cache.raise(*sc, &s.key.0, year, 0),
                        Some(b'2') => self.cache.raise(*sc, &s.key.0, year, year),
                        _ => {}
                    }
                }
            }
            for (sc, p) in scopes.iter().zip(per) {
                let after = if reserve {
                    ScopeCounts {
                        all: p[2] + p[0],
                        sensitive: p[3] + p[1],
                    }
                } else {
                    ScopeCounts {
                        all: p[2],
                        sensitive: p[3],
                    }
                };
                self.store_counts(*sc, when.start, after);
            }
        }
        Ok(reply)
    }
}
