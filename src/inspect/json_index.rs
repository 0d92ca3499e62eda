//! Stage 1 of the JSON scanner (simdjson style): one SIMD pass over a window of the body,
//! 64 bytes at a time, that indexes where the tokens are, so that stage 2
//! ([`super::json::JsonScanner`]) walks token positions instead of dispatching on every byte.
//!
//! Per 64-byte block it builds bitmasks (16-byte `wide` lanes, SSE2 on every x86-64) of
//! quotes, backslashes, white space and the structural bytes `{}[]:,`; resolves escapes (a
//! quote after an odd run of backslashes is not a quote); marks the bytes inside strings with
//! a prefix XOR of the real quotes; and writes to [`JsonIndex::pos`] the position of every
//! structural byte outside strings, every real quote (opening and closing) and the first byte
//! of every other run of non-white-space bytes outside strings (numbers, literals, garbage).
//! Between an opening quote and the next index entry there is therefore nothing but the
//! string: that entry is its closing quote.
//!
//! It also keeps, per block, the masks stage 2 asks about per string: backslashes (does the
//! string need unescaping) and the detector prefilter (digits or a full-width lead byte `0xEF`,
//! and `@`), counted over a string's range with a popcount instead of a pass over its bytes.
//!
//! Chunk boundaries: the escape carry (is the next byte escaped) and the in-string carry
//! survive from one window to the next, so a body may be cut anywhere, inside a backslash run,
//! a `\uXXXX` or a string many blocks long. A run of other bytes is restarted at every window,
//! so the first byte of a window is always indexed when it is not white space, structural or
//! in a string; stage 2 skips the entries of a token it carried over.

use wide::u8x16;

/// Bytes indexed at once: positions fit in `u32` and the masks stay in L2.
pub(super) const WINDOW: usize = 64 * 1024;

/// The index of one window and the carries between windows.
#[derive(Debug, Default)]
pub(super) struct JsonIndex {
    /// Positions in the window: structural bytes outside strings, real quotes, and the first
    /// byte of every run of other non-white-space bytes outside strings.
    pub pos: Vec<u32>,
    /// Per block: backslashes (escaped or not).
    pub bslash: Vec<u64>,
    /// Per block: ASCII digits and `0xEF` (lead byte of full-width digits).
    pub digits: Vec<u64>,
    /// Per block: `@`.
    pub at: Vec<u64>,
    /// All ones when the last window ended inside a string.
    in_str: u64,
    /// 1 when the first byte of the next window is escaped by a backslash.
    escaped: u64,
}

/// The raw bitmasks of one block.
struct Masks {
    quote: u64,
    bslash: u64,
    ws: u64,
    op: u64,
    digits: u64,
    at: u64,
}

#[inline(always)]
fn lane(b: &[u8; 64], k: usize) -> u8x16 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[16 * k..16 * k + 16]);
    u8x16::new(a)
}

#[inline(always)]
fn bits(v: u8x16) -> u64 {
    u64::from(v.move_mask() as u16)
}

/// Classifies the 64 bytes of a block; `rs` is the record separator `0x1E` of json-seq when it
/// counts as white space, else a space again.
#[inline(always)]
fn classify(b: &[u8; 64], rs: u8) -> Masks {
    let mut m = Masks {
        quote: 0,
        bslash: 0,
        ws: 0,
        op: 0,
        digits: 0,
        at: 0,
    };
    for k in 0..4 {
        let v = lane(b, k);
        let sh = 16 * k;
        m.quote |= bits(v.cmp_eq(u8x16::splat(b'"'))) << sh;
        m.bslash |= bits(v.cmp_eq(u8x16::splat(b'\\'))) << sh;
        let ws = v.cmp_eq(u8x16::splat(b' '))
            | v.cmp_eq(u8x16::splat(b'\n'))
            | v.cmp_eq(u8x16::splat(b'\r'))
            | v.cmp_eq(u8x16::splat(b'\t'))
            | v.cmp_eq(u8x16::splat(rs));
        m.ws |= bits(ws) << sh;
        // `[`/`]` become `{`/`}` with the 0x20 bit set; `,` and `:` are compared as they are
        // (0x0C and 0x1A would alias them).
        let lower = v | u8x16::splat(0x20);
        let op = lower.cmp_eq(u8x16::splat(b'{'))
            | lower.cmp_eq(u8x16::splat(b'}'))
            | v.cmp_eq(u8x16::splat(b','))
            | v.cmp_eq(u8x16::splat(b':'));
        m.op |= bits(op) << sh;
        let d = v - u8x16::splat(b'0');
        let digit = d.min(u8x16::splat(9)).cmp_eq(d) | v.cmp_eq(u8x16::splat(0xEF));
        m.digits |= bits(digit) << sh;
        m.at |= bits(v.cmp_eq(u8x16::splat(b'@'))) << sh;
    }
    m
}

/// Every bit set from an odd-numbered set bit up to the next one (exclusive): the bytes inside
/// quote pairs, opening quote included.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

const EVEN: u64 = 0x5555_5555_5555_5555;

impl JsonIndex {
    /// Indexes `data` (at most [`WINDOW`] bytes), the window after the last one indexed;
    /// `seq` makes `0x1E` white space (json-seq).
    pub(super) fn index(&mut self, data: &[u8], seq: bool) {
        debug_assert!(data.len() <= WINDOW);
        let rs = if seq { 0x1E } else { b' ' };
        let blocks = data.len().div_ceil(64);
        self.pos.clear();
        self.pos.reserve(data.len() / 4 + 64);
        self.bslash.clear();
        self.digits.clear();
        self.at.clear();
        self.bslash.reserve(blocks);
        self.digits.reserve(blocks);
        self.at.reserve(blocks);
        let mut run = 0u64;
        let mut it = data.chunks_exact(64);
        let mut base = 0u32;
        for b in &mut it {
            if let Ok(b) = <&[u8; 64]>::try_from(b) {
                self.block(b, 64, base, rs, &mut run);
            }
            base += 64;
        }
        let rest = it.remainder();
        if !rest.is_empty() {
            // Padding with spaces adds no token; the carries are taken at the real end.
            let mut b = [b' '; 64];
            b[..rest.len()].copy_from_slice(rest);
            self.block(&b, rest.len(), base, rs, &mut run);
        }
    }

    #[inline(always)]
    fn block(&mut self, b: &[u8; 64], len: usize, base: u32, rs: u8, run: &mut u64) {
        let m = classify(b, rs);
        // Escapes (simdjson's branchless odd-backslash-run resolution): `escaped` marks the
        // byte after each escaping backslash.
        let bs = m.bslash & !self.escaped;
        let follows = (bs << 1) | self.escaped;
        let odd_starts = bs & !EVEN & !follows;
        let (even_seqs, overflow) = odd_starts.overflowing_add(bs);
        let escaped = (EVEN ^ (even_seqs << 1)) & follows;
        self.escaped = if len == 64 {
            u64::from(overflow)
        } else {
            (escaped >> len) & 1
        };
        let quote = m.quote & !escaped;
        let in_str = prefix_xor(quote) ^ self.in_str;
        self.in_str = ((in_str as i64) >> 63) as u64;
        let op = m.op & !in_str;
        let other = !(in_str | quote | m.ws | op);
        let starts = other & !((other << 1) | *run);
        *run = other >> 63;
        let mut tokens = op | quote | starts;
        while tokens != 0 {
            self.pos.push(base + tokens.trailing_zeros());
            tokens &= tokens - 1;
        }
        self.bslash.push(m.bslash);
        self.digits.push(m.digits);
        self.at.push(m.at);
    }
}

/// Set bits of the per-block `masks` in the byte range `a..b`.
#[inline]
pub(super) fn count(masks: &[u64], a: usize, b: usize) -> u32 {
    if a >= b {
        return 0;
    }
    let (wa, wb) = (a / 64, (b - 1) / 64);
    let lo = !0u64 << (a % 64);
    let hi = !0u64 >> (63 - (b - 1) % 64);
    if wa == wb {
        return masks.get(wa).map_or(0, |m| (m & lo & hi).count_ones());
    }
    let mut n = masks.get(wa).map_or(0, |m| (m & lo).count_ones());
    for m in masks.get(wa + 1..wb).unwrap_or_default() {
        n += m.count_ones();
    }
    n + masks.get(wb).map_or(0, |m| (m & hi).count_ones())
}

/// Whether any bit of the per-block `masks` is set in the byte range `a..b`.
#[inline]
pub(super) fn any(masks: &[u64], a: usize, b: usize) -> bool {
    if a >= b {
        return false;
    }
    let (wa, wb) = (a / 64, (b - 1) / 64);
    let lo = !0u64 << (a % 64);
    let hi = !0u64 >> (63 - (b - 1) % 64);
    if wa == wb {
        return masks.get(wa).is_some_and(|m| m & lo & hi != 0);
    }
    masks.get(wa).is_some_and(|m| m & lo != 0)
        || masks
            .get(wa + 1..wb)
            .unwrap_or_default()
            .iter()
            .any(|m| *m != 0)
        || masks.get(wb).is_some_and(|m| m & hi != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index by a byte-at-a-time reference: the same positions, whatever the windows.
    fn reference(data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let (mut in_str, mut esc, mut run) = (false, false, false);
        for (i, &c) in data.iter().enumerate() {
            if in_str {
                if esc {
                    esc = false;
                } else if c == b'\\' {
                    esc = true;
                } else if c == b'"' {
                    in_str = false;
                    out.push(i);
                }
                run = false;
                continue;
            }
            match c {
                b'"' => {
                    in_str = true;
                    out.push(i);
                    run = false;
                }
                b'{' | b'}' | b'[' | b']' | b':' | b',' => {
                    out.push(i);
                    run = false;
                }
                b' ' | b'\n' | b'\r' | b'\t' => run = false,
                _ => {
                    if !run {
                        out.push(i);
                    }
                    run = true;
                }
            }
        }
        out
    }

    fn indexed(data: &[u8], cuts: &[usize]) -> Vec<usize> {
        let mut ix = JsonIndex::default();
        let mut out = Vec::new();
        let mut at = 0;
        let mut bounds: Vec<usize> = cuts.iter().copied().filter(|c| *c < data.len()).collect();
        bounds.push(data.len());
        for end in bounds {
            if end < at {
                continue;
            }
            ix.index(&data[at..end], false);
            out.extend(ix.pos.iter().map(|p| at + *p as usize));
            at = end;
        }
        out
    }

    #[test]
    fn escapes_and_strings_across_blocks_and_windows() {
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        for n in 0..6 {
            for pad in 58..70 {
                let mut b = vec![b'['];
                b.extend(std::iter::repeat_n(b' ', pad));
                b.push(b'"');
                b.extend(std::iter::repeat_n(b'\\', n));
                b.extend_from_slice(br#"","x\u0041y",12,true]"#);
                bodies.push(b);
            }
        }
        let mut long = br#"{"k":""#.to_vec();
        long.extend(std::iter::repeat_n(b'a', 300));
        long.extend_from_slice(br#"\\\"\\","n":-1.5e3}"#);
        bodies.push(long);
        for b in &bodies {
            let want = reference(b);
            assert_eq!(indexed(b, &[]), want);
            for cut in 0..=b.len() {
                assert_eq!(indexed(b, &[cut]), filter_carry(b, &want, &[cut]));
            }
        }
    }

    /// The reference positions plus the first byte of a window inside a run of other bytes
    /// (runs restart at every window).
    fn filter_carry(data: &[u8], want: &[usize], cuts: &[usize]) -> Vec<usize> {
        let r = reference(data);
        let mut out: Vec<usize> = want.to_vec();
        for &c in cuts {
            if c == 0 || c >= data.len() || r.contains(&c) {
                continue;
            }
            // Inside a run of other bytes outside strings?
            let open = in_string_at(data, c);
            let ch = data[c];
            let other = !matches!(
                ch,
                b'"' | b'{' | b'}' | b'[' | b']' | b':' | b',' | b' ' | b'\n' | b'\r' | b'\t'
            );
            if !open && other {
                out.push(c);
            }
        }
        out.sort_unstable();
        out
    }

    fn in_string_at(data: &[u8], c: usize) -> bool {
        let (mut in_str, mut esc) = (false, false);
        for &x in &data[..c] {
            if in_str {
                if esc {
                    esc = false;
                } else if x == b'\\' {
                    esc = true;
                } else if x == b'"' {
                    in_str = false;
                }
            } else if x == b'"' {
                in_str = true;
            }
        }
        in_str
    }

    #[test]
    fn range_counts() {
        let masks = [u64::MAX, 0b1010, u64::MAX];
        assert_eq!(count(&masks, 0, 64), 64);
        assert_eq!(count(&masks, 60, 70), 4 + 2);
        assert_eq!(count(&masks, 64, 128), 2);
        assert_eq!(count(&masks, 3, 190), 61 + 2 + 62);
        assert!(any(&masks, 65, 66));
        assert!(!any(&masks, 66, 67));
        assert!(!any(&masks, 5, 5));
    }
}
