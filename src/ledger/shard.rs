//! One shard's tables and one scope's per-year counts: the parts of the index whose size
//! grows with the number of scopes, kept so that a scope costs memory only once it counts
//! someone.
//!
//! A shard holds a table per scope: the first [`DENSE`] scope ids (the entity and the
//! destinations of a typical configuration) in a vector indexed by id, the rest in a map, so
//! that a configuration of 100,000 destinations does not give each of the 256 shards a
//! 100,000-slot vector the first time a high-numbered destination counts a subject. A scope's
//! per-year counts (two arrays of 256 counters, 4 KiB) are allocated on its first count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

use super::api::{Class, ScopeCounts};
use super::table::{Table, YearByte, Years};

/// Scope ids below this sit in a shard's vector; the others in its map.
pub(crate) const DENSE: usize = 1024;

/// One shard of the index: per scope, the table of its subjects that fall in this shard.
#[derive(Debug, Default)]
pub(crate) struct Shard {
    /// Tables of scope ids below [`DENSE`], indexed by id; missing tables are empty.
    dense: Vec<Table>,
    /// Tables of the other scope ids.
    sparse: HashMap<u32, Table>,
    /// The sequence number of the last journaled commit that changed a table of this shard
    /// (0: none since start). A reservation answered from the tables without a commit of its
    /// own must not be acknowledged before that commit is durable (its subjects may have been
    /// counted by it); waiting for this, rather than for every commit in flight, lets a
    /// request whose subjects were all counted earlier go on without waiting for the group
    /// commit of other requests' new subjects.
    pub(crate) changed_at: u64,
}

impl Shard {
    /// The table of `scope`, if it holds anyone.
    #[inline]
    pub(crate) fn table(&self, scope: usize) -> Option<&Table> {
        if scope < DENSE {
            self.dense.get(scope)
        } else {
            self.sparse.get(&(scope as u32))
        }
    }

    /// Reads the slot of `key` in `scope` to pull it into the cache (the value is ignored).
    #[inline]
    pub(crate) fn touch(&self, scope: usize, key: &[u8; 16]) -> u8 {
        self.table(scope).map_or(0, |t| t.touch(key))
    }

    /// The years `key` was last counted in `scope` (zeros when never).
    #[inline]
    pub(crate) fn get(&self, scope: usize, key: &[u8; 16]) -> Years {
        self.table(scope)
            .and_then(|t| t.get(key))
            .unwrap_or_default()
    }

    /// The table of `scope`, created empty when missing.
    pub(crate) fn table_mut(&mut self, scope: usize) -> &mut Table {
        if scope < DENSE {
            if self.dense.len() <= scope {
                self.dense.resize_with(scope + 1, Table::default);
            }
            &mut self.dense[scope]
        } else {
            self.sparse.entry(scope as u32).or_default()
        }
    }

    /// Every table with its scope id, in id order (snapshots come out the same every time).
    pub(crate) fn tables(&self) -> impl Iterator<Item = (usize, &Table)> {
        let mut sparse: Vec<(usize, &Table)> = self
            .sparse
            .iter()
            .map(|(id, t)| (*id as usize, t))
            .collect();
        sparse.sort_unstable_by_key(|(id, _)| *id);
        self.dense.iter().enumerate().chain(sparse)
    }

    /// Every table with its scope id, mutably, in id order.
    pub(crate) fn tables_mut(&mut self) -> impl Iterator<Item = (usize, &mut Table)> {
        let mut sparse: Vec<(usize, &mut Table)> = self
            .sparse
            .iter_mut()
            .map(|(id, t)| (*id as usize, t))
            .collect();
        sparse.sort_unstable_by_key(|(id, _)| *id);
        self.dense.iter_mut().enumerate().chain(sparse)
    }

    /// Heap bytes of the tables and of the containers that hold them (memory probe).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.tables().map(|(_, t)| t.heap_bytes()).sum::<usize>()
            + self.dense.capacity() * std::mem::size_of::<Table>()
            + self.sparse.capacity() * (std::mem::size_of::<(u32, Table)>() + 1)
    }
}

/// Per-year counts of one scope: `all[y]` subjects whose last year is `y`.
#[derive(Debug, Default)]
pub(crate) struct ScopeCounters {
    /// Allocated on the first count.
    years: OnceLock<Box<YearCounts>>,
    /// The latest year byte ever counted.
    top: AtomicU8,
}

/// The two per-year arrays of a scope that has counted someone.
#[derive(Debug)]
struct YearCounts {
    all: [AtomicU64; 256],
    sensitive: [AtomicU64; 256],
}

impl ScopeCounters {
    /// Counts that hold nothing and take no memory yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn years(&self) -> &YearCounts {
        self.years.get_or_init(|| {
            Box::new(YearCounts {
                all: std::array::from_fn(|_| AtomicU64::new(0)),
                sensitive: std::array::from_fn(|_| AtomicU64::new(0)),
            })
        })
    }

    /// The counts of the window that starts at year `start`.
    pub(crate) fn window(&self, start: YearByte) -> ScopeCounts {
        let Some(y) = self.years.get() else {
            return ScopeCounts::default();
        };
        // Years after the latest one ever counted hold nothing: sum only up to it.
        let top = usize::from(self.top.load(Ordering::Acquire));
        let sum = |a: &[AtomicU64; 256]| {
            a.get(start as usize..=top)
                .unwrap_or(&[])
                .iter()
                .map(|c| c.load(Ordering::Acquire))
                .sum()
        };
        ScopeCounts {
            all: sum(&y.all),
            sensitive: sum(&y.sensitive),
        }
    }

    /// Sets every count to zero (before a recount).
    pub(crate) fn clear(&self) {
        if let Some(y) = self.years.get() {
            for c in y.all.iter().chain(y.sensitive.iter()) {
                c.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Moves one subject of `class` from year `from` (0: not counted before) to year `to`.
    pub(crate) fn bump(&self, class: Class, from: YearByte, to: YearByte) {
        let y = self.years();
        let a = match class {
            Class::All => &y.all,
            Class::Sensitive => &y.sensitive,
        };
        if from != 0 {
            a[from as usize].fetch_sub(1, Ordering::AcqRel);
        }
        self.top.fetch_max(to, Ordering::AcqRel);
        a[to as usize].fetch_add(1, Ordering::AcqRel);
    }

    /// Takes one subject of `class` out of year `year` (pruning).
    pub(crate) fn drop_one(&self, class: Class, year: YearByte) {
        if let Some(y) = self.years.get() {
            let a = match class {
                Class::All => &y.all,
                Class::Sensitive => &y.sensitive,
            };
            a[year as usize].fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Adds `n` subjects of `class` to year `year` (recount).
    pub(crate) fn add(&self, class: Class, year: YearByte, n: u64) {
        if n == 0 {
            return;
        }
        let y = self.years();
        let a = match class {
            Class::All => &y.all,
            Class::Sensitive => &y.sensitive,
        };
        a[year as usize].fetch_add(n, Ordering::AcqRel);
        self.top.fetch_max(year, Ordering::AcqRel);
    }

    /// Heap bytes held (memory probe).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.years
            .get()
            .map_or(0, |_| std::mem::size_of::<YearCounts>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_sparse_tables_answer_alike() {
        let mut s = Shard::default();
        let key = [7u8; 16];
        for scope in [0, 3, DENSE - 1, DENSE, 99_999] {
            assert!(s.table(scope).is_none());
            s.table_mut(scope).raise(
                &key,
                Years {
                    all: 5,
                    sensitive: 0,
                },
            );
            assert_eq!(s.get(scope, &key).all, 5, "scope {scope}");
        }
        // The high ids did not grow the vector.
        assert_eq!(s.dense.len(), DENSE);
        let mut ids: Vec<usize> = s
            .tables()
            .filter(|(_, t)| t.len() > 0)
            .map(|(i, _)| i)
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![0, 3, DENSE - 1, DENSE, 99_999]);
        assert_eq!(s.tables_mut().count(), DENSE + 2);
    }

    #[test]
    fn a_scope_that_never_counted_takes_no_counts_memory() {
        let c = ScopeCounters::new();
        assert_eq!(c.heap_bytes(), 0);
        assert_eq!(c.window(1).all, 0);
        c.clear();
        c.drop_one(Class::All, 3);
        assert_eq!(c.heap_bytes(), 0);
        c.bump(Class::Sensitive, 0, 4);
        assert_eq!(c.window(1).sensitive, 1);
        assert_eq!(c.window(5).sensitive, 0);
        assert!(c.heap_bytes() > 0);
    }
}
