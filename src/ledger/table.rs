//! The compact open-addressing table that holds, for one scope and one shard, each counted
//! subject's last year seen and last year seen as sensitive: 18 bytes a slot, no per-entry
//! allocation, grown by 1.4× so that the load stays between 0.57 and 0.8 (≤ 64 bytes a subject
//! counted in two scopes).

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

#[inline]
fn home(key: &[u8; 16], cap: usize) -> usize {
    let mut h = [0u8; 8];
    h.copy_from_slice(&key[8..16]);
    // Keys are keyed-hash outputs, uniformly distributed: map to [0, cap) by multiply-high.
    ((u128::from(u64::from_le_bytes(h)) * cap as u128) >> 64) as usize
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

    /// Number of subjects held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of heap held by the slots.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * SLOT
    }

    fn find(&self, key: &[u8; 16]) -> Result<usize, usize> {
        let cap = self.slots.len();
        let mut i = home(key, cap);
        loop {
            let slot = &self.slots[i];
            if slot[16] == 0 {
                return Err(i);
            }
            if slot[..16] == key[..] {
                return Ok(i);
            }
            i += 1;
            if i == cap {
                i = 0;
            }
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
            self.grow();
        }
        match self.find(key) {
            Ok(i) => {
                let s = &mut self.slots[i];
                s[16] = s[16].max(y.all);
                s[17] = s[17].max(y.sensitive);
            }
            Err(i) => {
                let s = &mut self.slots[i];
                s[..16].copy_from_slice(key);
                s[16] = y.all;
                s[17] = y.sensitive;
                self.len += 1;
            }
        }
    }

    fn grow(&mut self) {
        let new_cap = (self.slots.len() * 7 / 5).max(16);
        self.rebuild(new_cap, 0);
    }

    fn rebuild(&mut self, cap: usize, min_all: YearByte) {
        let old = std::mem::replace(&mut self.slots, vec![[0u8; SLOT]; cap]);
        self.len = 0;
        for s in old.iter().filter(|s| s[16] != 0 && s[16] >= min_all) {
            if let Err(i) = self.find(s[..16].try_into().unwrap_or(&[0; 16])) {
                self.slots[i] = *s;
                self.len += 1;
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
}
