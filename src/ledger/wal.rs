//! The record format shared by the write-ahead log segments: checksummed frames, each holding
//! one scope definition or one reservation's effect. Encoding appends to a buffer; decoding
//! reads a frame at a time and tells a clean end from a torn or corrupt tail.
//!
//! Frame: `len: u32 LE` (body length) · `crc32(body): u32 LE` · body.
//! Bodies (all integers little-endian):
//! - scope: `1u8 · seq u64 · id u32 · name_len u16 · name`
//! - reserve: `2u8 · seq u64 · year u16 · month u8 · n_scopes u16 · (id u32 · new_all u32 ·
//!   new_sensitive u32) × n_scopes · n_subjects u32 · (key [u8;16] · sensitive u8) × n_subjects`
//!
//! Replaying a reserve raises each listed subject's last year (and last sensitive year) to
//! `year` in every listed scope: idempotent, so a snapshot need not be an exact cut for tables.
//! The per-scope `new_*` numbers feed the monthly tallies, which are replayed exactly once.

/// Magic at the start of every log segment.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"TGLWAL01";
const KIND_SCOPE: u8 = 1;
const KIND_RESERVE: u8 = 2;
/// Largest frame body accepted on decode (a request of ~4 M subjects).
pub(crate) const MAX_BODY: usize = 64 << 20;

/// Per-scope numbers of a reserve record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScopeDelta {
    pub id: u32,
    pub new_all: u32,
    pub new_sensitive: u32,
}

/// A decoded record.
#[derive(Debug)]
pub(crate) enum Record<'a> {
    Scope {
        seq: u64,
        id: u32,
        name: &'a str,
    },
    Reserve {
        seq: u64,
        year: i32,
        month: u8,
        scopes: Vec<ScopeDelta>,
        subjects: &'a [u8],
    },
}

impl Record<'_> {
    pub(crate) fn seq(&self) -> u64 {
        match self {
            Record::Scope { seq, .. } | Record::Reserve { seq, .. } => *seq,
        }
    }
}

/// Iterates `(key, sensitive)` over the raw subject bytes of a reserve record.
pub(crate) fn subjects(raw: &[u8]) -> impl Iterator<Item = (&[u8; 16], bool)> {
    raw.chunks_exact(17)
        .filter_map(|c| Some((c[..16].try_into().ok()?, c[16] != 0)))
}

fn begin(buf: &mut Vec<u8>) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0u8; 8]);
    at
}

fn finish(buf: &mut [u8], at: usize) {
    let body_len = (buf.len() - at - 8) as u32;
    let crc = crc32fast::hash(&buf[at + 8..]);
    buf[at..at + 4].copy_from_slice(&body_len.to_le_bytes());
    buf[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a scope-definition frame.
pub(crate) fn encode_scope(buf: &mut Vec<u8>, seq: u64, id: u32, name: &str) {
    let at = begin(buf);
    buf.push(KIND_SCOPE);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
    buf.extend_from_slice(name.as_bytes());
    finish(buf, at);
}

/// Appends a reserve frame.
pub(crate) fn encode_reserve<'k>(
    buf: &mut Vec<u8>,
    seq: u64,
    (year, month): (i32, u8),
    scopes: &[ScopeDelta],
    subjects: impl ExactSizeIterator<Item = (&'k [u8; 16], bool)>,
) {
    let at = begin(buf);
    buf.reserve(32 + scopes.len() * 12 + subjects.len() * 17);
    buf.push(KIND_RESERVE);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&(year as u16).to_le_bytes());
    buf.push(month);
    buf.extend_from_slice(&(scopes.len() as u16).to_le_bytes());
    for d in scopes {
        buf.extend_from_slice(&d.id.to_le_bytes());
        buf.extend_from_slice(&d.new_all.to_le_bytes());
        buf.extend_from_slice(&d.new_sensitive.to_le_bytes());
    }
    buf.extend_from_slice(&(subjects.len() as u32).to_le_bytes());
    for (k, s) in subjects {
        buf.extend_from_slice(k);
        buf.push(u8::from(s));
    }
    finish(buf, at);
}

/// What [`decode`] found at a position.
#[derive(Debug)]
pub(crate) enum Decoded<'a> {
    /// A whole, valid frame and the position after it.
    Frame(Record<'a>, usize),
    /// Exactly at the end of the buffer.
    End,
    /// An incomplete or corrupt frame starts here.
    Bad,
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Decodes the frame at `pos` of `buf`.
pub(crate) fn decode(buf: &[u8], pos: usize) -> Decoded<'_> {
    let rest = &buf[pos.min(buf.len())..];
    if rest.is_empty() {
        return Decoded::End;
    }
    let mut c = Cursor(rest);
    let (Some(len), Some(crc)) = (c.u32(), c.u32()) else {
        return Decoded::Bad;
    };
    let len = len as usize;
    if len > MAX_BODY {
        return Decoded::Bad;
    }
    let Some(body) = c.take(len) else {
        return Decoded::Bad;
    };
    if crc32fast::hash(body) != crc {
        return Decoded::Bad;
    }
    match parse_body(body) {
        Some(r) => Decoded::Frame(r, pos + 8 + len),
        None => Decoded::Bad,
    }
}

fn parse_body(body: &[u8]) -> Option<Record<'_>> {
    let mut c = Cursor(body);
    let kind = c.u8()?;
    let seq = c.u64()?;
    let rec = match kind {
        KIND_SCOPE => {
            let id = c.u32()?;
            let n = c.u16()? as usize;
            let name = std::str::from_utf8(c.take(n)?).ok()?;
            Record::Scope { seq, id, name }
        }
        KIND_RESERVE => {
            let year = i32::from(c.u16()?);
            let month = c.u8()?;
            let n = c.u16()? as usize;
            let mut scopes = Vec::with_capacity(n);
            for _ in 0..n {
                scopes.push(ScopeDelta {
                    id: c.u32()?,
                    new_all: c.u32()?,
                    new_sensitive: c.u32()?,
                });
            }
            let m = c.u32()? as usize;
            let subjects = c.take(m.checked_mul(17)?)?;
            Record::Reserve {
                seq,
                year,
                month,
                scopes,
                subjects,
            }
        }
        _ => return None,
    };
    c.0.is_empty().then_some(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_torn_tails_are_bad() {
        let mut buf = Vec::new();
        encode_scope(&mut buf, 1, 0, "entity");
        let keys = [[1u8; 16], [2u8; 16]];
        let d = [ScopeDelta {
            id: 0,
            new_all: 2,
            new_sensitive: 1,
        }];
        encode_reserve(&mut buf, 2, (2026, 3), &d, keys.iter().zip([false, true]));
        let Decoded::Frame(
            Record::Scope {
                seq: 1,
                id: 0,
                name: "entity",
            },
            p,
        ) = decode(&buf, 0)
        else {
            panic!("scope frame")
        };
        let Decoded::Frame(
            Record::Reserve {
                seq,
                year,
                month,
                scopes,
                subjects: raw,
            },
            q,
        ) = decode(&buf, p)
        else {
            panic!("reserve frame")
        };
        assert_eq!((seq, year, month, scopes.as_slice()), (2, 2026, 3, &d[..]));
        assert_eq!(
            subjects(raw).collect::<Vec<_>>(),
            [(&keys[0], false), (&keys[1], true)]
        );
        assert!(matches!(decode(&buf, q), Decoded::End));
        for cut in p + 1..buf.len() {
            assert!(
                matches!(decode(&buf[..cut], p), Decoded::Bad),
                "cut at {cut}"
            );
        }
        let mut flipped = buf.clone();
        flipped[p + 20] ^= 1;
        assert!(matches!(decode(&flipped, p), Decoded::Bad));
    }
}
