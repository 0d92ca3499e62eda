//! The replica's durable journal of the Redis ledger: every (scope, subject) this replica
//! reserved or forwarded in the window, with its last year and last sensitive year — the local
//! ledger's own log, snapshot and recovery (`LocalLedger`), in `<data_dir>/redis-journal/`.
//!
//! A reservation is in the journal (fsynced, group-committed) before its data goes upstream, so
//! the union of the replicas' journals holds every subject Redis ever acknowledged and that
//! was forwarded. After Redis loses data, each replica re-asserts its journal (see `loss.rs`).
//! The journal is compacted (snapshot, subjects outside every window pruned) when it opens,
//! at every turn of the year and whenever its log grows past the snapshot size.
//! It also keeps the epoch (namespace generation and server run id) this replica last
//! asserted into, in `redis-epoch`, so that a restarted replica knows whether Redis changed
//! while it was away.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::ledger::api::{Ledger, LedgerError, Reservation, Scope, ScopeId, Subject};
use crate::ledger::index::SHARDS;
use crate::ledger::local::{LocalLedger, LocalOptions};
use crate::model::{shanghai_date, Regime};

/// Name of the journal's directory inside `gate.data_dir`.
pub const DIR_NAME: &str = "redis-journal";

const EPOCH_FILE: &str = "redis-epoch";

/// What this replica last asserted into: the namespace generation and the server's run id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Epoch {
    /// `gen` of the namespace's meta hash (new after every loss of the namespace).
    pub gen: String,
    /// `run_id` of the Redis server (or Cluster node) holding the namespace.
    pub run_id: String,
}

/// One journal entry: (scope stored name index, subject key, last year, last sensitive year,
/// 0 = never).
pub(crate) type Entry = (u32, [u8; 16], i32, i32);

/// The durable per-replica journal.
#[derive(Debug)]
pub(crate) struct Journal {
    ledger: LocalLedger,
    dir: PathBuf,
    /// The Shanghai year of the last compaction (a new year compacts again).
    compacted: AtomicI32,
    /// Serialises writers of the epoch file (they share its temporary name).
    epoch_lock: Mutex<()>,
}

fn year_of(b: u8) -> i32 {
    if b == 0 {
        0
    } else {
        2000 + i32::from(b)
    }
}

fn storage(what: &str, e: std::io::Error) -> LedgerError {
    LedgerError::Storage(format!("{what}: {e}"))
}

impl Journal {
    /// Opens (creating) the journal in `dir`, recovering it like the local ledger.
    pub(crate) fn open(dir: &Path) -> Result<Journal, LedgerError> {
        let ledger = LocalLedger::open(dir, LocalOptions::default())?;
        Ok(Journal {
            ledger,
            dir: dir.to_path_buf(),
            compacted: AtomicI32::new(0),
            epoch_lock: Mutex::new(()),
        })
    }

    /// Registers scopes (idempotent, durable); the ids are the journal's own.
    pub(crate) async fn register(&self, scopes: &[Scope]) -> Result<Vec<ScopeId>, LedgerError> {
        self.ledger.register_scopes(scopes).await
    }

    /// Records `subjects` as counted in every scope of `scopes` (journal ids) at `now`, and
    /// returns once that is on disk. Subjects already journaled this year cost no write.
    pub(crate) async fn record(
        &self,
        subjects: &[Subject],
        scopes: &[ScopeId],
        regime: Regime,
        now: SystemTime,
    ) -> Result<(), LedgerError> {
        if subjects.is_empty() || scopes.is_empty() {
            return Ok(());
        }
        self.ledger
            .reserve(Reservation {
                subjects,
                scopes,
                ceilings: &[],
                alternatives: &[],
                regime,
                now,
            })
            .await
            .map(|_| ())
    }

    /// Records what a script reply says is counted this year: per scope (journal ids, in the
    /// order of `states`' columns) the subjects whose state is `1` or `2` (sensitive).
    pub(crate) async fn record_states(
        &self,
        subjects: &[Subject],
        scopes: &[ScopeId],
        states: &[u8],
        regime: Regime,
        now: SystemTime,
    ) -> Result<(), LedgerError> {
        let ns = scopes.len();
        // Scopes whose column is identical are recorded together (usually all of them).
        let column = |i: usize| -> Vec<u8> {
            (0..subjects.len())
                .map(|j| states.get(j * ns + i).copied().unwrap_or(b'0'))
                .collect()
        };
        let mut groups: Vec<(Vec<u8>, Vec<ScopeId>)> = Vec::new();
        for (i, sc) in scopes.iter().enumerate() {
            let col = column(i);
            match groups.iter_mut().find(|(c, _)| *c == col) {
                Some((_, v)) => v.push(*sc),
                None => groups.push((col, vec![*sc])),
            }
        }
        for (col, group) in groups {
            let subs: Vec<Subject> = subjects
                .iter()
                .zip(&col)
                .filter(|(_, st)| **st == b'1' || **st == b'2')
                .map(|(s, st)| Subject {
                    key: s.key,
                    sensitive: *st == b'2',
                })
                .collect();
            self.record(&subs, &group, regime, now).await?;
        }
        Ok(())
    }

    /// The stored names of the journal's scopes, by journal scope id.
    pub(crate) fn scope_names(&self) -> Vec<String> {
        self.ledger
            .index()
            .lock_core()
            .scopes
            .iter()
            .map(Scope::stored_name)
            .collect()
    }

    /// Every entry of shard `shard` (0..[`Journal::SHARDS`]) last counted in `min_year` or
    /// later.
    pub(crate) fn entries(&self, shard: usize, min_year: i32) -> Vec<Entry> {
        let mut out = Vec::new();
        let _ = self.ledger.index().for_shard(shard, |s| -> Result<(), ()> {
            for (scope, table) in s.tables() {
                for (key, y) in table.iter() {
                    let all = year_of(y.all);
                    let Ok(key) = <[u8; 16]>::try_from(key) else {
                        continue;
                    };
                    if all >= min_year {
                        out.push((scope as u32, key, all, year_of(y.sensitive)));
                    }
                }
            }
            Ok(())
        });
        out
    }

    /// Number of index shards (for [`Journal::entries`]).
    pub(crate) const SHARDS: usize = SHARDS;

    /// Number of (scope, subject) entries held.
    pub(crate) fn len(&self) -> usize {
        self.ledger.entries()
    }

    /// Heap bytes of the journal's in-memory index.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.ledger.heap_bytes()
    }

    /// Whether a compaction is due: never done since open, or the year turned.
    pub(crate) fn compaction_due(&self, now: SystemTime) -> bool {
        self.compacted.load(Ordering::Acquire) < shanghai_date(now).year()
    }

    /// Snapshot and prune (blocking: call off the async workers).
    pub(crate) fn compact(&self, now: SystemTime) -> Result<(), LedgerError> {
        self.ledger.compact(now)?;
        self.compacted
            .store(shanghai_date(now).year(), Ordering::Release);
        Ok(())
    }

    /// The epoch stored by [`Journal::store_epoch`], if any.
    pub(crate) fn load_epoch(&self) -> Option<Epoch> {
        let text = fs::read_to_string(self.dir.join(EPOCH_FILE)).ok()?;
        let mut lines = text.lines();
        let gen = lines.next()?.to_owned();
        let run_id = lines.next()?.to_owned();
        Some(Epoch { gen, run_id })
    }

    /// Stores the epoch durably (written aside, fsynced, renamed, directory fsynced).
    pub(crate) fn store_epoch(&self, e: &Epoch) -> Result<(), LedgerError> {
        let _one = self
            .epoch_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let tmp = self.dir.join(format!("{EPOCH_FILE}.tmp"));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| storage("write redis epoch", e))?;
        writeln!(f, "{}\n{}", e.gen, e.run_id).map_err(|e| storage("write redis epoch", e))?;
        f.sync_all().map_err(|e| storage("fsync redis epoch", e))?;
        fs::rename(&tmp, self.dir.join(EPOCH_FILE)).map_err(|e| storage("rename epoch", e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| storage("fsync journal dir", e))
    }
}
