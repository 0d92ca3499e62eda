//! The compact open-addressing table that holds, for one scope and one shard, each counted
//! subject's last year seen and last year seen as sensitive: 18 bytes a slot, no per-entry
//! allocation, grown by 1.25× so that the load stays between 0.64 and 0.8 (at most 56.3 bytes a
//! subject counted in two scopes, 52.9 at 10 M).
//!
//! The growth factor trades memory for insert time, not lookup time: a smaller factor keeps the
//! load (so the bytes per subject) higher right after a growth, at the price of rehashing each
//! entry more often (1 / (factor − 1) times over a table's life: 4 at 1.25, 2.5 at 1.4). A rehash
//! is a sequential pass (slots are ordered by home, and a key's home is monotone in its hash at any
//! capacity, so the new table is written in the old one's order), so it is cheap. Lookups depend on
//! the maximum load (0.8, Robin Hood probing), which this does not change; the mean load rises from
//! about 0.68 to 0.72. Tables grow one at a time, under their shard's write lock, so the transient
//! of a growth (the old slots and the new ones) is that of one table (1/512 of the index at two
//! scopes), never of the whole index.
//!
//! The shards' tables of a scope fill at the same pace (keys are uniform), so with one growth
//! sequence they would all grow within a few thousand subjects of each other: a wave in which
//! the allocator holds the old tables (freed, not yet returned to the OS) and the new ones, and
//! after which every table is at the bottom of its load range. So each table draws a phase once,
//! when it first reaches `PHASE_AT` slots (and when restored from a snapshot): that growth is
//! stretched by a factor in [1, 1.25) drawn from the key being inserted. The tables then grow at
//! points spread evenly over a factor of 1.25 of subjects, one after another, and the index as a
//! whole sits at the mean load (about 0.72, 50 bytes a subject at two scopes) at any size.

/// A year as stored: `year - 2000`, 1..=255; 0 marks an empty slot (or "never sensitive").
pub(crate) type YearByte = u8;

/// Encodes a calendar year into a [`YearByte`] (clamped to 2001..=2255).
pub(crate) fn year_byte(year: i32) -> YearByte {
    (year - 2000).clamp(1, 255) as u8
}

/// Decodes a [`YearByte`] (0 stays 0: never).
#[cfg(test)]
pub(crate) fn year_of(b: YearByte) -> i32 {
    if b == 0 {
        0
    } else {
        2000 + i32::from(b)
    }
}

const SLOT: usize = 18;
type Slot = [u8; SLOT];
const MAX_LOAD_NUM: usize = 4;
const MAX_LOAD_DEN: usize = 5;
/// Growth factor (see the module docs for the trade-off): 5/4.
const GROW_NUM: usize = 5;
const GROW_DEN: usize = 4;
/// Capacity at which a table draws its growth phase (see the module docs).
const PHASE_AT: usize = 1 << 10;

/// `n` stretched by a factor in [1, 1.25) drawn from `draw` (a key byte: uniform).
fn stretch(n: usize, draw: u8) -> usize {
    n + n * usize::from(draw % 32) / 128
}

/// Per-subject state in one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Years {
    /// Last year the subject was counted (0: never).
    pub all: YearByte,
    /// Last year the subject was counted as sensitive (0: never).
    pub sensitive: YearByte,
}

/// An open-addressing (linear probing) map from 16-byte subject keys to [`Years`].
#[derive(Debug, Default)]
pub(crate) struct Table {
    slots: Vec<Slot>,
    len: usize,
}

/// The key as two words (the second one places it).
#[inline]
fn halves(b: &[u8]) -> (u64, u64) {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..16]);
    (u64::from_le_bytes(lo), u64::from_le_bytes(hi))
}

#[inline]
fn home_of(h: u64, cap: usize) -> usize {
    // Keys are keyed-hash outputs, uniformly distributed: map to [0, cap) by multiply-high.
    ((u128::from(h) * cap as u128) >> 64) as usize
}

#[inline]
fn home(key: &[u8; 16], cap: usize) -> usize {
    home_of(halves(key).1, cap)
}

impl Table {
    /// A table sized to hold `n` entries without growing.
    pub(crate) fn with_capacity(n: usize) -> Self {
        let cap = if n == 0 {
            0
        } else {
            (n * MAX_LOAD_DEN).div_ceil(MAX_LOAD_NUM) + 1
        };
        Table {
            slots: vec![[0u8; SLOT]; cap],
            len: 0,
        }
    }

    /// A table for `n` entries restored from a snapshot, once it is large enough to matter: at
    /// a load drawn from (0.58, 0.72] by `draw` (a byte of one of its keys), so that restored
    /// tables do not all grow at once (see the module docs), and so that the log replayed after
    /// the snapshot (at most 10 % more subjects at 10 M) rehashes none of them. Smaller tables
    /// get load 0.64.
    pub(crate) fn restored(n: usize, draw: u8) -> Self {
        if n * MAX_LOAD_DEN / MAX_LOAD_NUM >= PHASE_AT {
            Self::with_capacity(stretch(n + n / 9, draw))
        } else {
            Self::with_capacity(n + n / 4)
        }
    }

    /// Number of subjects held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of heap held by the slots.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * SLOT
    }

    /// Robin Hood lookup: within a run, entries are ordered by home slot, so a search stops
    /// at the first entry that lives closer to its home than the key would (an absent key
    /// costs about as little as a present one, even at 0.8 load).
    fn find(&self, key: &[u8; 16]) -> Result<usize, usize> {
        let cap = self.slots.len();
        let (k0, k1) = halves(key);
        let mut i = home(key, cap);
        let mut d = 0usize;
        loop {
            let slot = &self.slots[i];
            if slot[16] == 0 {
                return Err(i);
            }
            let (s0, s1) = halves(slot);
            if s0 == k0 && s1 == k1 {
                return Ok(i);
            }
            let sh = home_of(s1, cap);
            let sd = if i >= sh { i - sh } else { i + cap - sh };
            if sd < d {
                return Err(i);
            }
            i += 1;
            d += 1;
            if i == cap {
                i = 0;
            }
        }
    }

    /// Puts a new entry at `i` (from [`Table::find`]), shifting the rest of the run one slot
    /// on (which keeps the run ordered by home slot).
    fn insert_at(&mut self, mut i: usize, mut entry: Slot) {
        let cap = self.slots.len();
        loop {
            let slot = &mut self.slots[i];
            let was_empty = slot[16] == 0;
            std::mem::swap(slot, &mut entry);
            if was_empty {
                break;
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
        self.len += 1;
    }

    /// Reads the home slot of `key` and nothing else: a pass of these independent loads over a
    /// batch lets the CPU overlap the cache misses (a safe stand-in for a prefetch).
    #[inline]
    pub(crate) fn touch(&self, key: &[u8; 16]) -> u8 {
        match self.slots.get(home(key, self.slots.len())) {
            Some(s) => s[16],
            None => 0,
        }
    }

    /// The state of `key`, if counted.
    #[inline]
    pub(crate) fn get(&self, key: &[u8; 16]) -> Option<Years> {
        if self.slots.is_empty() {
            return None;
        }
        match self.find(key) {
            Ok(i) => Some(Years {
                all: self.slots[i][16],
                sensitive: self.slots[i][17],
            }),
            Err(_) => None,
        }
    }

    /// Raises the state of `key` to at least `y` (field by field).
    pub(crate) fn raise(&mut self, key: &[u8; 16], y: Years) {
        if y.all == 0 {
            return;
        }
        if (self.len + 1) * MAX_LOAD_DEN > self.slots.len() * MAX_LOAD_NUM {
            self.grow(key);
        }
        match self.find(key) {
            Ok(i) => {
                let s = &mut self.slots[i];
                s[16] = s[16].max(y.all);
                s[17] = s[17].max(y.sensitive);
            }
            Err(i) => {
                let mut e = [0u8; SLOT];
                e[..16].copy_from_slice(key);
                e[16] = y.all;
                e[17] = y.sensitive;
                self.insert_at(i, e);
            }
        }
    }

    /// Grows before `key` is inserted (it draws the table's phase, see the module docs).
    fn grow(&mut self, key: &[u8; 16]) {
        let cap = self.slots.len();
        let mut new_cap = (cap * GROW_NUM / GROW_DEN).max(16);
        if cap < PHASE_AT && new_cap >= PHASE_AT {
            // Byte 0 selects the shard (the same for every key here): byte 1 is uniform.
            new_cap = stretch(new_cap, key[1]);
        }
        self.rebuild(new_cap, 0);
    }

    fn rebuild(&mut self, cap: usize, min_all: YearByte) {
        let old = std::mem::replace(&mut self.slots, vec![[0u8; SLOT]; cap]);
        self.len = 0;
        for s in old.iter().filter(|s| s[16] != 0 && s[16] >= min_all) {
            if let Err(i) = self.find(s[..16].try_into().unwrap_or(&[0; 16])) {
                self.insert_at(i, *s);
            }
        }
    }

    /// Drops every subject last counted before `min_all` (outside every window); returns how
    /// many were dropped.
    pub(crate) fn prune(&mut self, min_all: YearByte) -> usize {
        let stale = self.iter().filter(|(_, y)| y.all < min_all).count();
        if stale > 0 {
            let before = self.len;
            let keep = before - stale;
            let cap = if keep == 0 {
                0
            } else {
                (keep * MAX_LOAD_DEN).div_ceil(MAX_LOAD_NUM) + 1
            };
            self.rebuild(cap, min_all);
        }
        stale
    }

    /// Every (key, state) held, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], Years)> + '_ {
        self.slots.iter().filter(|s| s[16] != 0).map(|s| {
            (
                &s[..16],
                Years {
                    all: s[16],
                    sensitive: s[17],
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> [u8; 16] {
        *blake3::hash(&i.to_le_bytes())
            .as_bytes()
            .first_chunk::<16>()
            .unwrap()
    }

    #[test]
    fn insert_get_raise_prune() {
        let mut t = Table::default();
        for i in 0..10_000 {
            t.raise(
                &key(i),
                Years {
                    all: year_byte(2025),
                    sensitive: 0,
                },
            );
        }
        assert_eq!(t.len(), 10_000);
        for i in 0..10_000 {
            assert_eq!(t.get(&key(i)).unwrap().all, 25);
        }
        assert!(t.get(&key(10_001)).is_none());
        t.raise(
            &key(5),
            Years {
                all: 26,
                sensitive: 26,
            },
        );
        t.raise(
            &key(5),
            Years {
                all: 25,
                sensitive: 0,
            },
        );
        assert_eq!(
            t.get(&key(5)),
            Some(Years {
                all: 26,
                sensitive: 26
            })
        );
        assert_eq!(t.prune(26), 9_999);
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.get(&key(5)),
            Some(Years {
                all: 26,
                sensitive: 26
            })
        );
        assert!(t.get(&key(6)).is_none());
        assert_eq!(year_of(year_byte(2026)), 2026);
    }

    #[test]
    fn tables_filled_at_one_pace_grow_at_spread_points() {
        // 64 tables fed the same number of keys, as the shards of one scope are.
        let y = Years {
            all: 25,
            sensitive: 0,
        };
        let mut tables: Vec<Table> = (0..64).map(|_| Table::default()).collect();
        let mut distinct_caps = Vec::new();
        for round in 0..20_000u64 {
            for (t, table) in tables.iter_mut().enumerate() {
                table.raise(&key(round * 64 + t as u64), y);
            }
            if round % 1_000 == 999 {
                let mut caps: Vec<usize> = tables.iter().map(|t| t.slots.len()).collect();
                caps.sort_unstable();
                caps.dedup();
                distinct_caps.push(caps.len());
            }
        }
        // Past the phase draw, the tables' capacities differ (one sequence would give 1 or 2).
        assert!(
            distinct_caps[2..].iter().all(|&n| n >= 16),
            "{distinct_caps:?}"
        );
        for t in &tables {
            assert_eq!(t.len(), 20_000);
            let load = t.len() as f64 / t.slots.len() as f64;
            assert!((0.64..=0.8).contains(&load), "load {load}");
        }
        // Restored tables: loads spread over (0.58, 0.72]; small ones at 0.64.
        let loads: Vec<f64> = (0..=255u8)
            .map(|b| 50_000.0 / Table::restored(50_000, b).slots.len() as f64)
            .collect();
        assert!(loads.iter().all(|l| (0.57..=0.72).contains(l)), "{loads:?}");
        assert!(loads.iter().any(|l| *l < 0.6) && loads.iter().any(|l| *l > 0.71));
        let small = Table::restored(100, 0);
        assert!((0.63..=0.65).contains(&(100.0 / small.slots.len() as f64)));
    }

    #[test]
    fn matches_a_hash_map_at_every_size() {
        // Small tables wrap around often; keys with equal high words collide on purpose.
        let mut x = 0x1234_5678_9abc_def1u64;
        for round in 0..50u64 {
            let mut t = Table::default();
            let mut m = std::collections::HashMap::new();
            for _ in 0..(round * 37 % 900 + 1) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let mut k = [0u8; 16];
                k[..8].copy_from_slice(&(x % 64).to_le_bytes());
                k[8..].copy_from_slice(&(x.rotate_left(17) | ((x % 3) << 62)).to_le_bytes());
                let y = Years {
                    all: (x % 7 + 1) as u8,
                    sensitive: (x % 3) as u8,
                };
                t.raise(&k, y);
                let e = m.entry(k).or_insert(Years::default());
                e.all = e.all.max(y.all);
                e.sensitive = e.sensitive.max(y.sensitive);
            }
            assert_eq!(t.len(), m.len());
            for (k, y) in &m {
                assert_eq!(t.get(k), Some(*y));
            }
            let mut probe = [0xFFu8; 16];
            probe[0] = round as u8;
            assert_eq!(t.get(&probe), None);
            let dropped = t.prune(4);
            assert_eq!(dropped, m.values().filter(|y| y.all < 4).count());
            for (k, y) in &m {
                assert_eq!(t.get(k), (y.all >= 4).then_some(*y));
            }
        }
    }
}
