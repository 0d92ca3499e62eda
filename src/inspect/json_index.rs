//! Stage 1 of the JSON scanner (simdjson style): one SIMD pass over a window of the body,
//! 64 bytes at a time, that indexes where the tokens are, so that stage 2
//! ([`super::json::JsonScanner`]) walks token positions instead of dispatching on every byte.
//!
//! Per 64-byte block it builds bitmasks of quotes, backslashes, white space and the structural bytes `{}[]:,`; resolves escapes (a
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
//! Four classifiers build the same masks: [`Scalar`] (byte by byte, the reference), [`Portable`]
//! (16-byte `wide` lanes: SSE2 on every x86-64, NEON or plain code elsewhere) and, on x86-64
//! CPUs that have them, AVX2 and AVX-512 in [`super::simd`], the one module allowed `unsafe`
//! (AVX-512 also writes a block's positions with one compress, [`Classify::flatten`]). Which one runs is
//! chosen once per process ([`super::simd::kernel`]); the window loop ([`JsonIndex::run`]) is
//! generic over the classifier, so each path is compiled whole, with no test of CPU features
//! per block. Under `cfg(test)` every window is indexed by every path the CPU supports and the
//! positions, per-block masks and carries are checked equal to the scalar reference's.
//!
//! Chunk boundaries: the escape carry (is the next byte escaped) and the in-string carry
//! survive from one window to the next, so a body may be cut anywhere, inside a backslash run,
//! a `\uXXXX` or a string many blocks long. A run of other bytes is restarted at every window,
//! so the first byte of a window is always indexed when it is not white space, structural or
//! in a string; stage 2 skips the entries of a token it carried over.

use wide::u8x16;

/// Bytes indexed at once: positions fit in `u16`, and the index (at most two bytes per byte
/// of the window, far less in practice) stays small per request and in L1/L2.
pub(super) const WINDOW: usize = 16 * 1024;

/// What stage 2 asks stage 1 about a string, per 64-byte block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct BlockBits {
    /// Backslashes (escaped or not).
    bslash: u64,
    /// ASCII digits and `0xEF` (lead byte of full-width digits).
    digits: u64,
    /// `@`.
    at: u64,
    /// Bytes of 0x80 and above (not ASCII).
    high: u64,
}

/// Stage 1's facts about the bytes of a string (between its quotes).
#[derive(Debug, Clone, Copy)]
pub(super) struct StringBits {
    /// It holds a backslash (so it must be unescaped).
    pub escapes: bool,
    /// ASCII digits plus `0xEF` bytes (the detector prefilter's digit count).
    pub digits: usize,
    /// It holds an `@`.
    pub at: bool,
    /// It holds a byte that is not ASCII (so its UTF-8 must be checked).
    pub high: bool,
}

/// The index of one window and the carries between windows.
#[derive(Debug, Default, Clone)]
pub(super) struct JsonIndex {
    /// Positions in the window (the first `len`; the rest is scratch space for the
    /// unconditional writes of stage 1): structural bytes outside strings, real quotes, and
    /// the first byte of every run of other non-white-space bytes outside strings.
    pos: Vec<u16>,
    len: usize,
    blocks: Vec<BlockBits>,
    /// All ones when the last window ended inside a string.
    in_str: u64,
    /// 1 when the first byte of the next window is escaped by a backslash.
    escaped: u64,
}

/// The raw bitmasks of one block (bit `i` is byte `i`), as every classifier builds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Masks {
    /// `"`.
    pub quote: u64,
    /// `\\`.
    pub bslash: u64,
    /// Space, `\n`, `\r`, `\t`, and the record separator `0x1E` in json-seq.
    pub ws: u64,
    /// `{}[]:,`.
    pub op: u64,
    /// ASCII digits and `0xEF`.
    pub digits: u64,
    /// `@`.
    pub at: u64,
    /// Bytes of 0x80 and above.
    pub high: u64,
}

/// A way to build the [`Masks`] of a 64-byte block; `rs` is the record separator `0x1E` of
/// json-seq when it counts as white space, else a space again.
pub(super) trait Classify {
    /// The masks of the 64 bytes of `b`.
    fn classify(b: &[u8; 64], rs: u8) -> Masks;

    /// Every bit set from an odd-numbered set bit up to the next one (exclusive): the bytes
    /// inside quote pairs, opening quote included.
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

    /// Writes `base` plus the position of each set bit of `tokens` into `dst`, in order; the
    /// slots past the count may hold anything.
    #[inline(always)]
    fn flatten(dst: &mut [u16; 64], tokens: u64, base: u16) {
        flatten_bits(dst, tokens, base);
    }
}

/// The byte-at-a-time classifier: the reference the SIMD paths are tested against.
pub(super) struct Scalar;

impl Classify for Scalar {
    fn classify(b: &[u8; 64], rs: u8) -> Masks {
        let mut m = Masks::default();
        for (i, &c) in b.iter().enumerate() {
            let bit = 1u64 << i;
            let set = |mask: &mut u64, yes: bool| {
                if yes {
                    *mask |= bit;
                }
            };
            set(&mut m.quote, c == b'"');
            set(&mut m.bslash, c == b'\\');
            set(
                &mut m.ws,
                matches!(c, b' ' | b'\n' | b'\r' | b'\t') || c == rs,
            );
            set(
                &mut m.op,
                matches!(c, b'{' | b'}' | b'[' | b']' | b':' | b','),
            );
            set(&mut m.digits, c.is_ascii_digit() || c == 0xEF);
            set(&mut m.at, c == b'@');
            set(&mut m.high, c >= 0x80);
        }
        m
    }
}

/// The 16-byte `wide` classifier: SSE2 on every x86-64 (the fallback there), the portable path
/// on other targets.
pub(super) struct Portable;

impl Classify for Portable {
    #[inline(always)]
    fn classify(b: &[u8; 64], rs: u8) -> Masks {
        classify(b, rs)
    }
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
        high: 0,
    };
    for k in 0..4 {
        let v = lane(b, k);
        let sh = 16 * k;
        m.quote |= bits(v.cmp_eq(u8x16::splat(b'"'))) << sh;
        m.bslash |= bits(v.cmp_eq(u8x16::splat(b'\\'))) << sh;
        // White space is at most 0x20; the exact test runs only for lanes holding a byte
        // below the space (line breaks, tabs, or bytes that are no white space at all).
        let space = v.cmp_eq(u8x16::splat(b' '));
        let low = v.min(u8x16::splat(b' ')).cmp_eq(v);
        let ws = if (low ^ space).any() {
            space
                | v.cmp_eq(u8x16::splat(b'\n'))
                | v.cmp_eq(u8x16::splat(b'\r'))
                | v.cmp_eq(u8x16::splat(b'\t'))
                | v.cmp_eq(u8x16::splat(rs))
        } else {
            space
        };
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
        m.high |= bits(v) << sh;
    }
    m
}

const EVEN: u64 = 0x5555_5555_5555_5555;

/// Stage 1 alone over `data`, window after window, on the path chosen for this process: the
/// number of positions indexed. For the benchmark of stage 1 by itself
/// (`INSPECT_ONCE=stage1` in `benches/inspect.rs`); the scanner never runs stage 1 without
/// stage 2.
#[doc(hidden)]
pub fn stage1_positions(data: &[u8]) -> usize {
    let mut ix = JsonIndex::default();
    data.chunks(WINDOW)
        .map(|w| {
            ix.index(w, false);
            ix.pos().len()
        })
        .sum()
}

impl JsonIndex {
    /// Indexes `data` (at most [`WINDOW`] bytes), the window after the last one indexed;
    /// `seq` makes `0x1E` white space (json-seq).
    pub(super) fn index(&mut self, data: &[u8], seq: bool) {
        debug_assert!(data.len() <= WINDOW);
        let rs = if seq { 0x1E } else { b' ' };
        #[cfg(test)]
        self.check_paths(data, rs);
        (super::simd::kernel())(self, data, rs);
    }

    /// Indexes `data` with the classifier `C`: the whole window loop, inlined into each path's
    /// entry point so that it is compiled with that path's instructions.
    #[inline(always)]
    pub(super) fn run<C: Classify>(&mut self, data: &[u8], rs: u8) {
        self.len = 0;
        self.blocks.clear();
        self.blocks.reserve(data.len().div_ceil(64));
        let mut run = 0u64;
        let mut it = data.chunks_exact(64);
        let mut base = 0u16;
        for b in &mut it {
            if let Ok(b) = <&[u8; 64]>::try_from(b) {
                self.block::<C>(b, 64, base, rs, &mut run);
            }
            base += 64;
        }
        let rest = it.remainder();
        if !rest.is_empty() {
            // Padding with spaces adds no token; the carries are taken at the real end.
            let mut b = [b' '; 64];
            b[..rest.len()].copy_from_slice(rest);
            self.block::<C>(&b, rest.len(), base, rs, &mut run);
        }
    }

    /// Under test, before every window: every path the CPU supports indexes `data` from the
    /// same carries as the scalar reference, and the raw masks of every block, the positions,
    /// the kept per-block masks and the carries must all be the reference's.
    #[cfg(test)]
    #[allow(clippy::panic)]
    fn check_paths(&self, data: &[u8], rs: u8) {
        use super::simd::{kernel_for, masks, Path};
        let mut want = self.clone();
        want.run::<Scalar>(data, rs);
        for path in Path::ALL {
            let Some(kernel) = kernel_for(path) else {
                continue;
            };
            for (k, b) in data.chunks(64).enumerate() {
                let mut block = [b' '; 64];
                block[..b.len()].copy_from_slice(b);
                assert_eq!(
                    masks(path, &block, rs),
                    masks(Path::Scalar, &block, rs),
                    "{path:?}: raw masks of block {k}"
                );
            }
            let mut got = self.clone();
            kernel(&mut got, data, rs);
            assert_eq!(got.pos(), want.pos(), "{path:?}: positions");
            assert_eq!(got.blocks, want.blocks, "{path:?}: per-block masks");
            assert_eq!(
                (got.in_str, got.escaped),
                (want.in_str, want.escaped),
                "{path:?}: carries"
            );
        }
    }

    /// The positions indexed in the window.
    #[inline]
    pub(super) fn pos(&self) -> &[u16] {
        self.pos.get(..self.len).unwrap_or_default()
    }

    /// What the bytes `a..b` of the window hold (see [`StringBits`]). Digits are counted only
    /// in strings of at least `min_digits` bytes (a popcount is not free on baseline x86-64).
    #[inline]
    pub(super) fn string_bits(&self, a: usize, b: usize, min_digits: usize) -> StringBits {
        let mut r = StringBits {
            escapes: false,
            digits: 0,
            at: false,
            high: false,
        };
        if a >= b {
            return r;
        }
        let (wa, wb) = (a / 64, (b - 1) / 64);
        let lo = !0u64 << (a % 64);
        let hi = !0u64 >> (63 - (b - 1) % 64);
        let count = b - a >= min_digits;
        if wa == wb {
            // Most strings lie in one block.
            if let Some(m) = self.blocks.get(wa) {
                let keep = lo & hi;
                r.escapes = m.bslash & keep != 0;
                r.at = m.at & keep != 0;
                r.high = m.high & keep != 0;
                if count {
                    r.digits = (m.digits & keep).count_ones() as usize;
                }
            }
            return r;
        }
        let Some(blocks) = self.blocks.get(wa..=wb) else {
            return r;
        };
        let last = blocks.len() - 1;
        for (j, m) in blocks.iter().enumerate() {
            let mut keep = !0u64;
            if j == 0 {
                keep &= lo;
            }
            if j == last {
                keep &= hi;
            }
            r.escapes |= m.bslash & keep != 0;
            r.at |= m.at & keep != 0;
            r.high |= m.high & keep != 0;
            if count {
                r.digits += (m.digits & keep).count_ones() as usize;
            }
        }
        r
    }

    #[inline(always)]
    fn block<C: Classify>(&mut self, b: &[u8; 64], len: usize, base: u16, rs: u8, run: &mut u64) {
        let m = C::classify(b, rs);
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
        let in_str = C::prefix_xor(quote) ^ self.in_str;
        self.in_str = ((in_str as i64) >> 63) as u64;
        let op = m.op & !in_str;
        let other = !(in_str | quote | m.ws | op);
        let starts = other & !((other << 1) | *run);
        *run = other >> 63;
        self.write::<C>(op | quote | starts, base);
        self.blocks.push(BlockBits {
            bslash: m.bslash,
            digits: m.digits,
            at: m.at,
            high: m.high,
        });
    }

    /// Appends the positions of the set bits of `tokens` (the classifier's
    /// [`Classify::flatten`] writes them into the 64 slots after the last one).
    #[inline(always)]
    fn write<C: Classify>(&mut self, tokens: u64, base: u16) {
        let w = self.len;
        if self.pos.len() < w + 64 {
            self.pos.resize(w + 64 + self.pos.len() / 2, 0);
        }
        let Some(dst) = self
            .pos
            .get_mut(w..w + 64)
            .and_then(|d| <&mut [u16; 64]>::try_from(d).ok())
        else {
            return;
        };
        C::flatten(dst, tokens, base);
        self.len = w + tokens.count_ones() as usize;
    }
}

/// Writes `base` plus the position of each set bit of `tokens` into `dst` in order, eight at a
/// time without a branch per bit (simdjson's flattening); the slots past the count hold
/// anything (they are overwritten by the next block).
#[inline(always)]
fn flatten_bits(dst: &mut [u16; 64], mut tokens: u64, base: u16) {
    let cnt = tokens.count_ones() as usize;
    for d in &mut dst[..8] {
        *d = base + tokens.trailing_zeros() as u16;
        tokens &= tokens.wrapping_sub(1);
    }
    if cnt > 8 {
        for d in &mut dst[8..16] {
            *d = base + tokens.trailing_zeros() as u16;
            tokens &= tokens.wrapping_sub(1);
        }
        if cnt > 16 {
            for d in &mut dst[16..cnt] {
                *d = base + tokens.trailing_zeros() as u16;
                tokens &= tokens.wrapping_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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
            let mut off = at;
            for w in data[at..end].chunks(WINDOW) {
                ix.index(w, false);
                out.extend(ix.pos().iter().map(|p| off + *p as usize));
                off += w.len();
            }
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

    /// Every byte value at every position of a block, in json and json-seq mode: each path's
    /// raw masks are the scalar reference's (`index` checks them, see `check_paths`).
    #[test]
    fn every_byte_value_classified_alike_by_every_path() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for shift in 0..64 {
            let data: Vec<u8> = all.iter().cycle().skip(shift).take(512).copied().collect();
            for seq in [false, true] {
                JsonIndex::default().index(&data, seq);
            }
        }
    }

    /// The differential test runs the SIMD paths this CPU has; a detection that failed would
    /// leave AVX2 or AVX-512 untested on a machine that has them.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn simd_paths_are_tested_where_the_cpu_has_them() {
        use super::super::simd::Path;
        assert_eq!(
            Path::Avx2.supported(),
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("pclmulqdq")
        );
        assert!(Path::Portable.supported() && Path::Scalar.supported());
        assert_eq!(
            Path::Avx512.supported(),
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vbmi2")
                && is_x86_feature_detected!("pclmulqdq")
        );
    }

    /// Bytes that matter to stage 1 (and their aliases under the tricks of the SIMD
    /// classifiers: `0x0C`/`0x1A` for `,`/`:`, `0x1B`/`0x3B` for `[`/`{`, `0x80`/`0xA0`).
    fn nasty_bytes() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            4 => prop::sample::select(b"\"\\{}[]:, \t\n\r@0918aZu".to_vec()),
            1 => prop::sample::select(vec![0x1E, 0xEF, 0x0C, 0x1A, 0x1B, 0x3B, 0x7B, 0x5C, 0x80, 0xA0, 0xAC, 0xBA, 0xDB, 0xFF, 0x00, 0x2F, 0x3A, 0x39, 0x40]),
            1 => any::<u8>(),
        ];
        prop::collection::vec(byte, 0..400)
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: crate::testing::proptest_cases(200),
            ..ProptestConfig::default()
        })]

        /// Every path against the scalar reference (masks, positions, carries: `check_paths`
        /// inside `index`) on arbitrary bytes, whole and cut at every position, json and
        /// json-seq. (The byte-at-a-time `reference` is not the oracle here: on bytes that
        /// are no JSON, e.g. a backslash outside strings, stage 1 escapes as simdjson does.)
        #[test]
        fn every_path_agrees_at_every_cut(data in nasty_bytes(), seq in any::<bool>()) {
            let mut ix = JsonIndex::default();
            ix.index(&data, seq);
            for cut in 0..=data.len() {
                let mut ix = JsonIndex::default();
                ix.index(&data[..cut], seq);
                ix.index(&data[cut..], seq);
            }
        }
    }

    #[test]
    fn string_bits_over_blocks() {
        let mut ix = JsonIndex::default();
        let mut data = vec![b'x'; 200];
        data[3] = b'\\';
        data[70] = b'7';
        data[71] = 0xEF;
        data[130] = b'@';
        data[190] = b'1';
        ix.index(&data, false);
        let b = ix.string_bits(0, 200, 0);
        assert!(b.escapes && b.at && b.high);
        assert_eq!(b.digits, 3);
        let b = ix.string_bits(4, 130, 0);
        assert!(!b.escapes && !b.at);
        assert_eq!(b.digits, 2);
        let b = ix.string_bits(71, 72, 0);
        assert_eq!(b.digits, 1);
        assert!(ix.string_bits(70, 71, 0).digits == 1 && !ix.string_bits(70, 71, 0).high);
        let b = ix.string_bits(5, 5, 0);
        assert_eq!(b.digits, 0);
    }
}
