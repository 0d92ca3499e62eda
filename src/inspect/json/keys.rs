//! A memo of field-name lookups for the JSON scanners: a body of records repeats the same few
//! keys thousands of times, and the bodies of one service repeat the same keys request after
//! request; a key of at most 16 bytes is recognised again by two word compares instead of the
//! canonical-form hash of [`InspectConfig::lookup`] (one pass over its bytes).
//!
//! Exact by construction: the lookup is a pure function of the configuration's lookup table
//! and the name's bytes, an entry holds the name's exact bytes (its length and two words that
//! together cover every byte), and a table is filled for one [`InspectConfig::generation`]
//! (emptied when used with another). A key may sit in one of two entries picked by its hash,
//! and a key that finds both taken moves one occupant to its other entry when that is free
//! (cuckoo style, one step): direct-mapped, two of the 16 keys of the benchmark's records
//! shared an entry and missed on every record. The number of entries is fixed, so bodies of
//! ever-new keys only cost two compares and an overwrite per key.
//!
//! Tables are kept per thread when their scanner ends and handed to the next scanner on that
//! worker, so a request of a few dozen keys finds the keys of the requests before it (a table
//! made per request would be filled and thrown away). A scanner that finds no spare table
//! looks its first keys up directly and makes one only after [`WARM_UP`] keys, so that the
//! small scanners of documents inside values never pay for one.

use std::cell::RefCell;

use crate::inspect::config::{FieldInfo, InspectConfig};

/// Entries of a table (a power of two).
const SLOTS: usize = 64;

/// Longest key memoised (two eight-byte words).
const MAX_KEY: usize = 16;

/// Keys looked up directly before a scanner that found no spare table makes one.
const WARM_UP: u32 = 32;

/// Tables kept per thread (one per scanner alive at once on a worker; 2 KiB each).
const SPARE_TABLES: usize = 64;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// The key's length; 0 marks a free entry (the empty key is never memoised).
    len: u8,
    a: u64,
    b: u64,
    info: Option<FieldInfo>,
}

/// The entries, and the configuration generation they were computed with.
#[derive(Debug)]
struct Table {
    generation: u64,
    entries: Box<[Entry; SLOTS]>,
}

thread_local! {
    static SPARE: RefCell<Vec<Table>> = const { RefCell::new(Vec::new()) };
}

/// The memo of one scanner (see the module documentation).
#[derive(Debug, Default)]
pub(super) struct KeyMemo {
    table: Option<Table>,
    /// Keys looked up before the scanner had a table.
    calls: u32,
    /// Which of the two entries a key replaces when both are taken (alternates).
    flip: bool,
}

impl Drop for KeyMemo {
    fn drop(&mut self) {
        let Some(table) = self.table.take() else {
            return;
        };
        // During thread teardown the pool may be gone: the table is then simply freed.
        let _ = SPARE.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                if p.len() < SPARE_TABLES {
                    p.push(table);
                }
            }
        });
    }
}

impl KeyMemo {
    /// `cfg.lookup(name)`, from the memo when `name` was looked up before.
    #[inline]
    pub(super) fn lookup(&mut self, cfg: &InspectConfig, name: &[u8]) -> Option<FieldInfo> {
        let Some((a, b)) = words(name) else {
            return cfg.lookup(name);
        };
        let generation = cfg.generation();
        let entries = match &mut self.table {
            Some(t) if t.generation == generation => &mut t.entries,
            _ => match self.acquire(generation) {
                Some(entries) => entries,
                None => return cfg.lookup(name),
            },
        };
        let len = name.len() as u8;
        let (s1, s2) = slots(len, a, b);
        let holds = |e: &Entry| e.len == len && e.a == a && e.b == b;
        for s in [s1, s2] {
            if let Some(e) = entries.get(s) {
                if holds(e) {
                    return e.info;
                }
            }
        }
        self.miss(
            cfg,
            name,
            Entry {
                len,
                a,
                b,
                info: None,
            },
            s1,
            s2,
        )
    }

    /// A table for `generation`: the scanner's own (emptied if it was filled for another
    /// configuration), a spare of this thread, or a new one once the warm-up is over; `None`
    /// during the warm-up.
    #[cold]
    #[inline(never)]
    fn acquire(&mut self, generation: u64) -> Option<&mut Box<[Entry; SLOTS]>> {
        if self.table.is_none() {
            self.table = SPARE
                .try_with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.pop()))
                .ok()
                .flatten();
        }
        if self.table.is_none() {
            if self.calls < WARM_UP {
                self.calls += 1;
                return None;
            }
            self.table = Some(Table {
                generation,
                entries: Box::new([Entry::default(); SLOTS]),
            });
        }
        let table = self.table.as_mut()?;
        if table.generation != generation {
            *table.entries = [Entry::default(); SLOTS];
            table.generation = generation;
        }
        Some(&mut table.entries)
    }

    /// A key not in the memo: looked up and stored (out of line: after the first record,
    /// rare).
    #[cold]
    #[inline(never)]
    fn miss(
        &mut self,
        cfg: &InspectConfig,
        name: &[u8],
        mut entry: Entry,
        s1: usize,
        s2: usize,
    ) -> Option<FieldInfo> {
        entry.info = cfg.lookup(name);
        let flip = &mut self.flip;
        if let Some(t) = self.table.as_mut() {
            let at = place(&mut t.entries, flip, s1, s2);
            if let Some(e) = t.entries.get_mut(at) {
                *e = entry;
            }
        }
        entry.info
    }
}

/// The entry of `entries` a new key with entries `s1` and `s2` goes to: a free one, or one
/// whose occupant moved to its other entry (free), or else each in turn (`flip` alternates).
fn place(entries: &mut [Entry; SLOTS], flip: &mut bool, s1: usize, s2: usize) -> usize {
    let free = |e: &[Entry; SLOTS], s: usize| e.get(s).is_some_and(|e| e.len == 0);
    for s in [s1, s2] {
        if free(entries, s) {
            return s;
        }
    }
    for s in [s1, s2] {
        let Some(&o) = entries.get(s) else {
            continue;
        };
        let (o1, o2) = slots(o.len, o.a, o.b);
        let alt = if o1 == s { o2 } else { o1 };
        if free(entries, alt) {
            if let Some(e) = entries.get_mut(alt) {
                *e = o;
            }
            return s;
        }
    }
    *flip = !*flip;
    if *flip {
        s1
    } else {
        s2
    }
}

/// The two entries of a key (distinct), from one multiplicative hash of its length and words.
#[inline]
fn slots(len: u8, a: u64, b: u64) -> (usize, usize) {
    let h = (a ^ b.rotate_left(31) ^ u64::from(len)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let s1 = (h >> 58) as usize;
    let mut s2 = (h >> 52) as usize & (SLOTS - 1);
    if s2 == s1 {
        s2 ^= 1;
    }
    (s1, s2)
}

/// Two words that, with the length, hold every byte of a name of 1 to [`MAX_KEY`] bytes
/// (overlapping loads: the first and the last eight, or four, bytes; or the first, middle and
/// last byte of a name of at most three); `None` for other lengths.
#[inline]
fn words(s: &[u8]) -> Option<(u64, u64)> {
    let n = s.len();
    let w64 = |i: usize| {
        s.get(i..i + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map_or(0, u64::from_le_bytes)
    };
    let w32 = |i: usize| {
        s.get(i..i + 4)
            .and_then(|w| <[u8; 4]>::try_from(w).ok())
            .map_or(0, u32::from_le_bytes)
    };
    match n {
        8..=MAX_KEY => Some((w64(0), w64(n - 8))),
        4..=7 => Some((u64::from(w32(0)) | (u64::from(w32(n - 4)) << 32), 0)),
        1..=3 => Some((
            u64::from(s[0]) | (u64::from(s[n / 2]) << 8) | (u64::from(s[n - 1]) << 16),
            0,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Category;
    use proptest::prelude::*;

    #[test]
    fn words_tell_every_short_name_apart() {
        // Every name of 1–16 bytes over two letters: distinct names, distinct (len, words).
        let mut seen = std::collections::HashSet::new();
        for n in 1..=MAX_KEY {
            for bits in 0..(1u32 << n).min(1 << 12) {
                let name: Vec<u8> = (0..n)
                    .map(|i| if bits >> i & 1 == 1 { b'a' } else { b'b' })
                    .collect();
                assert!(seen.insert((n, words(&name))), "{name:?}");
            }
        }
        assert_eq!(words(b""), None);
        assert_eq!(words(&[b'a'; MAX_KEY + 1]), None);
    }

    /// A table goes back to the thread's spares when its scanner ends; the next scanner on
    /// the thread takes it at once, and under a configuration whose lookup answers
    /// differently (a clone rebuilt with one more watched field: any address of the old one
    /// may be reused) it answers from the new configuration, not from the old entries.
    #[test]
    fn a_spare_table_is_reused_and_never_answers_for_another_configuration() {
        let old = InspectConfig::for_tests(&["user_id"], &[], &[]);
        let mut memo = KeyMemo::default();
        for _ in 0..=WARM_UP + 1 {
            assert_eq!(memo.lookup(&old, b"member_no"), None);
        }
        assert!(memo.table.is_some(), "a table after the warm-up");
        drop(memo);
        let new = old.clone().with_watched_fields(&["member_no"]).unwrap();
        assert!(new.lookup(b"member_no").is_some());
        let mut memo = KeyMemo::default();
        assert_eq!(memo.lookup(&new, b"member_no"), new.lookup(b"member_no"));
        assert!(
            memo.table.is_some(),
            "the spare table, taken at the first key"
        );
        assert_eq!(memo.lookup(&new, b"member_no"), new.lookup(b"member_no"));
        // And back: the same table, refilled for the old configuration.
        assert_eq!(memo.lookup(&old, b"member_no"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// A stream of keys (few distinct ones, so that they repeat and collide in the memo;
        /// spellings of configured names among them) gets from the memo what the
        /// configuration's lookup says, key by key.
        #[test]
        fn memo_answers_what_the_lookup_answers(
            keys in prop::collection::vec(
                prop_oneof![
                    prop::sample::select(vec![
                        "uid", "UID", "u_id", "user_id", "userId", "user-id[]", "x", "", "id",
                        "gps", "g.p.s", "diagnosis", "Diagnosis_", "customer_id",
                        "customer_id_", "customerid1", "data[uid]", "0123456789abcdef",
                        "0123456789abcdeF", "0123456789abcdefg",
                    ]).prop_map(|s| s.as_bytes().to_vec()),
                    prop::collection::vec(prop::sample::select(b"aAbiu_d.".to_vec()), 0..18),
                ],
                0..300,
            )
        ) {
            let cfg = InspectConfig::for_tests(
                &["user_id", "uid"],
                &[],
                &[("gps", Category::Location), ("diagnosis", Category::Health)],
            );
            let other = InspectConfig::for_tests(&["customer_id"], &[], &[]);
            let mut memo = KeyMemo::default();
            for (i, k) in keys.iter().enumerate() {
                // A change of configuration half-way must not be answered from the old one.
                let c = if i < 150 { &cfg } else { &other };
                prop_assert_eq!(memo.lookup(c, k), c.lookup(k), "{:?}", k);
            }
        }
    }
}
