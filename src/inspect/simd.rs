//! The run-time choice of stage 1's SIMD path ([`super::json_index`]) and the AVX2 and
//! AVX-512 paths themselves: the one module of the crate allowed `unsafe` (the crate denies it
//! everywhere else).
//!
//! Paths ([`Path`]): `scalar` (byte by byte, the reference), `portable` (16-byte `wide` lanes:
//! SSE2 on every x86-64, the fallback), `avx2` (32-byte lanes, `vpshufb` classification of
//! white space and structural bytes, `pclmulqdq` for the in-string prefix XOR, native
//! `popcnt`/`tzcnt` in the index writes; entered only when the CPU reports AVX2, BMI1, POPCNT
//! and PCLMULQDQ) and `avx512` (a block in one 64-byte register, every class a mask register
//! directly, and the positions of a block written by one `vpcompressb` instead of a `tzcnt`
//! per position; entered only when the CPU reports AVX-512 F, BW and VBMI2 — Ice Lake, Zen 4
//! and later — besides the AVX2 path's features). Every path is compiled into every x86-64
//! binary. The choice is made once per process (the widest path the CPU has, or the one
//! `TRANSFER_GATE_SIMD=scalar|portable|avx2|avx512` names when the CPU has it) and kept as a
//! plain function pointer: a window pays one indirect call, a block no test of CPU features.
//! Under `cargo test` every window is indexed by every path the CPU has and compared with
//! `scalar` (`JsonIndex::check_paths`).

#![allow(unsafe_code)]

use std::sync::OnceLock;

use super::json_index::{JsonIndex, Portable, Scalar};

/// Stage 1 over one window: `(index, data, rs)` with `rs` the json-seq record separator or a
/// space.
pub(super) type Kernel = fn(&mut JsonIndex, &[u8], u8);

/// The environment variable that forces a path (read once, at the first window indexed).
pub const SIMD_ENV: &str = "TRANSFER_GATE_SIMD";

/// A stage-1 implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Byte by byte: the reference the others are tested against (slow; for comparisons).
    Scalar,
    /// 16-byte `wide` lanes (SSE2 on x86-64): runs on every CPU.
    Portable,
    /// 32-byte AVX2 lanes (x86-64 with AVX2, BMI1, POPCNT, PCLMULQDQ).
    Avx2,
    /// One 64-byte AVX-512 register per block (x86-64 with AVX-512 F, BW and VBMI2, BMI1,
    /// POPCNT, PCLMULQDQ).
    Avx512,
}

impl Path {
    /// Every path, narrowest first.
    pub const ALL: [Path; 4] = [Path::Scalar, Path::Portable, Path::Avx2, Path::Avx512];

    /// The name `TRANSFER_GATE_SIMD` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Scalar => "scalar",
            Path::Portable => "portable",
            Path::Avx2 => "avx2",
            Path::Avx512 => "avx512",
        }
    }

    fn parse(s: &str) -> Option<Path> {
        Path::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        kernel_for(self).is_some()
    }
}

static CHOSEN: OnceLock<(Path, Kernel)> = OnceLock::new();

fn chosen() -> &'static (Path, Kernel) {
    CHOSEN.get_or_init(|| {
        // The widest path the CPU has: AVX2 runs half the stage-1 instructions of the
        // portable path, AVX-512 twice AVX2's bytes per CPU-second (BENCHMARKS.md,
        // inspection engine, "Stage 1 on AVX2" and "Stage 1 on AVX-512").
        let best = [Path::Avx512, Path::Avx2]
            .into_iter()
            .find(|p| p.supported())
            .unwrap_or(Path::Portable);
        let path = match std::env::var(SIMD_ENV) {
            Err(_) => best,
            Ok(v) => match Path::parse(&v) {
                Some(p) if p.supported() => p,
                Some(p) => {
                    tracing::warn!(
                        path = p.as_str(),
                        used = best.as_str(),
                        "{SIMD_ENV} names a path this CPU lacks"
                    );
                    best
                }
                None => {
                    tracing::warn!(
                        used = best.as_str(),
                        "{SIMD_ENV} is not one of scalar, portable, avx2, avx512"
                    );
                    best
                }
            },
        };
        (path, kernel_for(path).unwrap_or(portable))
    })
}

/// The path stage 1 runs on in this process (chosen at the first call).
pub fn selected() -> Path {
    chosen().0
}

/// The kernel of the chosen path.
#[inline]
pub(super) fn kernel() -> Kernel {
    chosen().1
}

/// The kernel of `path`, or `None` when this CPU (or target) lacks it.
pub(super) fn kernel_for(path: Path) -> Option<Kernel> {
    match path {
        Path::Scalar => Some(scalar),
        Path::Portable => Some(portable),
        Path::Avx2 => avx2::kernel(),
        Path::Avx512 => avx512::kernel(),
    }
}

fn scalar(ix: &mut JsonIndex, data: &[u8], rs: u8) {
    ix.run::<Scalar>(data, rs);
}

fn portable(ix: &mut JsonIndex, data: &[u8], rs: u8) {
    ix.run::<Portable>(data, rs);
}

/// The raw masks of one block by `path` (for the differential tests), `None` when this CPU
/// lacks it.
#[cfg(test)]
pub(super) fn masks(path: Path, b: &[u8; 64], rs: u8) -> Option<super::json_index::Masks> {
    use super::json_index::Classify;
    match path {
        Path::Scalar => Some(Scalar::classify(b, rs)),
        Path::Portable => Some(Portable::classify(b, rs)),
        Path::Avx2 => avx2::masks(b, rs),
        Path::Avx512 => avx512::masks(b, rs),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_and_si256, _mm256_broadcastsi128_si256, _mm256_cmpeq_epi8,
        _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256, _mm256_set1_epi8,
        _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_srli_epi16, _mm_clmulepi64_si128,
        _mm_cvtsi128_si64, _mm_set1_epi8, _mm_set_epi64x, _mm_setr_epi8,
    };

    use super::super::json_index::{Classify, JsonIndex, Masks};
    use super::Kernel;

    /// Whether the CPU has every feature [`index`] is compiled for.
    fn detected() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("bmi1")
            && is_x86_feature_detected!("popcnt")
            && is_x86_feature_detected!("pclmulqdq")
    }

    /// The AVX2 kernel, only when the CPU can run it: [`index`] relies on this being its one
    /// way out of this module.
    pub(super) fn kernel() -> Option<Kernel> {
        detected().then_some(index as Kernel)
    }

    /// The raw masks of one block, only when the CPU can compute them.
    #[cfg(test)]
    pub(super) fn masks(b: &[u8; 64], rs: u8) -> Option<Masks> {
        // SAFETY: called only after `detected()` confirmed AVX2 on this CPU.
        detected().then(|| unsafe { classify(b, rs) })
    }

    fn index(ix: &mut JsonIndex, data: &[u8], rs: u8) {
        // SAFETY: `index` leaves this module only through `kernel`, which hands it out only
        // when `detected()` found every feature `index_avx2` is compiled with.
        unsafe { index_avx2(ix, data, rs) }
    }

    /// The window loop compiled for AVX2 (the generic loop and [`Avx2`]'s methods are inlined
    /// here, so the index writes get `tzcnt`/`popcnt` too).
    #[target_feature(enable = "avx2,bmi1,popcnt,pclmulqdq")]
    fn index_avx2(ix: &mut JsonIndex, data: &[u8], rs: u8) {
        ix.run::<Avx2>(data, rs);
    }

    /// The AVX2 classifier; used only inside [`index_avx2`].
    struct Avx2;

    impl Classify for Avx2 {
        #[inline(always)]
        fn classify(b: &[u8; 64], rs: u8) -> Masks {
            // SAFETY: `Avx2` is private to this module and used only by `index_avx2`, which
            // runs only on CPUs with AVX2 (see `index`).
            unsafe { classify(b, rs) }
        }

        #[inline(always)]
        fn prefix_xor(x: u64) -> u64 {
            // SAFETY: as above; `index_avx2` runs only on CPUs with PCLMULQDQ.
            unsafe { prefix_xor(x) }
        }
    }

    /// The prefix XOR as a carry-less multiplication by all ones (simdjson).
    #[target_feature(enable = "pclmulqdq")]
    #[inline]
    pub(super) fn prefix_xor(x: u64) -> u64 {
        let v = _mm_clmulepi64_si128::<0>(_mm_set_epi64x(0, x as i64), _mm_set1_epi8(-1));
        _mm_cvtsi128_si64(v) as u64
    }

    /// The masks of a block, 32 bytes at a time. White space and structural bytes are found
    /// with one `vpshufb` each on the low nibble (the same tables in both 128-bit halves):
    /// - white space: the table holds, at the low nibble of each white-space byte, that byte
    ///   (space at 0, `\t` at 9, `\n` at 0xA, `\r` at 0xD, the record separator at 0xE when it
    ///   counts) and 0 elsewhere; a byte is white space when the table gives it back (`vpshufb`
    ///   gives 0 for bytes of 0x80 and above; 0 is no byte with a non-zero low nibble, and the
    ///   byte 0 gets a space);
    /// - structural: the table holds `:` `[` `,` `]` at 0xA..0xD and 0x80 elsewhere; a byte is
    ///   structural when the table gives it back, or gives it back with the 0x20 bit set (`[`
    ///   → `{`, `]` → `}`; `:` and `,` have that bit already); 0x80 or 0xA0 is never a byte
    ///   below 0x80, and bytes of 0x80 and above get 0 (or 0x20), never themselves.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn classify(b: &[u8; 64], rs: u8) -> Masks {
        // Two constant tables (json, json-seq), so that neither is built per block.
        let ws = |rs: i8| {
            _mm256_broadcastsi128_si256(_mm_setr_epi8(
                b' ' as i8,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                b'\t' as i8,
                b'\n' as i8,
                0,
                0,
                b'\r' as i8,
                rs,
                0,
            ))
        };
        let ws_table = if rs == b' ' { ws(0) } else { ws(0x1E) };
        let op_table = _mm256_broadcastsi128_si256(_mm_setr_epi8(
            -128, -128, -128, -128, -128, -128, -128, -128, -128, -128, b':' as i8, b'[' as i8,
            b',' as i8, b']' as i8, -128, -128,
        ));
        // SAFETY: both halves are 32 bytes of `b`, exactly the unaligned loads' width.
        let (lo, hi) = unsafe {
            (
                _mm256_loadu_si256(b.as_ptr().cast::<__m256i>()),
                _mm256_loadu_si256(b[32..].as_ptr().cast::<__m256i>()),
            )
        };
        let (l, h) = (half(lo, ws_table, op_table), half(hi, ws_table, op_table));
        let join = |i: usize| u64::from(l[i]) | (u64::from(h[i]) << 32);
        Masks {
            quote: join(0),
            bslash: join(1),
            ws: join(2),
            op: join(3),
            digits: join(4),
            at: join(5),
            high: join(6),
        }
    }

    /// The masks of 32 bytes, in the order of [`Masks`]' fields.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn half(v: __m256i, ws_table: __m256i, op_table: __m256i) -> [u32; 7] {
        let splat = |c: u8| _mm256_set1_epi8(c as i8);
        let bits = |x: __m256i| _mm256_movemask_epi8(x) as u32;
        let eq = |c: u8| bits(_mm256_cmpeq_epi8(v, splat(c)));
        let t = _mm256_shuffle_epi8(op_table, v);
        let op = _mm256_or_si256(
            _mm256_cmpeq_epi8(t, v),
            _mm256_cmpeq_epi8(_mm256_or_si256(t, splat(0x20)), v),
        );
        // Digits and 0xEF by two nibble lookups (bit 1: high nibble 3 and low nibble 0..9;
        // bit 2: 0xEF): written as compares, LLVM built this mask byte by byte.
        let hi_table = _mm256_broadcastsi128_si256(_mm_setr_epi8(
            0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0,
        ));
        let lo_table = _mm256_broadcastsi128_si256(_mm_setr_epi8(
            1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 2,
        ));
        let nibble = splat(0x0F);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
        let lo = _mm256_and_si256(v, nibble);
        let class = _mm256_and_si256(
            _mm256_shuffle_epi8(hi_table, hi),
            _mm256_shuffle_epi8(lo_table, lo),
        );
        let digit = !bits(_mm256_cmpeq_epi8(class, _mm256_setzero_si256()));
        [
            eq(b'"'),
            eq(b'\\'),
            bits(_mm256_cmpeq_epi8(_mm256_shuffle_epi8(ws_table, v), v)),
            bits(op),
            digit,
            eq(b'@'),
            bits(v),
        ]
    }
}

/// Targets other than x86-64: no AVX2 path.
#[cfg(not(target_arch = "x86_64"))]
mod avx2 {
    use super::Kernel;

    pub(super) fn kernel() -> Option<Kernel> {
        None
    }

    #[cfg(test)]
    pub(super) fn masks(_: &[u8; 64], _: u8) -> Option<super::super::json_index::Masks> {
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512i, _mm512_add_epi16, _mm512_and_si512, _mm512_broadcast_i32x4,
        _mm512_castsi512_si256, _mm512_cmpeq_epi8_mask, _mm512_cvtepu8_epi16,
        _mm512_extracti64x4_epi64, _mm512_loadu_si512, _mm512_maskz_compress_epi8,
        _mm512_movepi8_mask, _mm512_or_si512, _mm512_set1_epi16, _mm512_set1_epi8,
        _mm512_shuffle_epi8, _mm512_srli_epi16, _mm512_storeu_si512, _mm512_test_epi8_mask,
        _mm_setr_epi8,
    };

    use super::super::json_index::{Classify, JsonIndex, Masks};
    use super::Kernel;

    /// Whether the CPU has every feature [`index`] is compiled for.
    fn detected() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vbmi2")
            && is_x86_feature_detected!("bmi1")
            && is_x86_feature_detected!("popcnt")
            && is_x86_feature_detected!("pclmulqdq")
    }

    /// The AVX-512 kernel, only when the CPU can run it: [`index`] relies on this being its
    /// one way out of this module.
    pub(super) fn kernel() -> Option<Kernel> {
        detected().then_some(index as Kernel)
    }

    /// The raw masks of one block, only when the CPU can compute them.
    #[cfg(test)]
    pub(super) fn masks(b: &[u8; 64], rs: u8) -> Option<Masks> {
        // SAFETY: called only after `detected()` confirmed AVX-512 F and BW on this CPU.
        detected().then(|| unsafe { classify(b, rs) })
    }

    fn index(ix: &mut JsonIndex, data: &[u8], rs: u8) {
        // SAFETY: `index` leaves this module only through `kernel`, which hands it out only
        // when `detected()` found every feature `index_avx512` is compiled with.
        unsafe { index_avx512(ix, data, rs) }
    }

    /// The window loop compiled for AVX-512 (the generic loop and [`Avx512`]'s methods are
    /// inlined here).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,avx2,bmi1,popcnt,pclmulqdq")]
    fn index_avx512(ix: &mut JsonIndex, data: &[u8], rs: u8) {
        ix.run::<Avx512>(data, rs);
    }

    /// The AVX-512 classifier; used only inside [`index_avx512`].
    struct Avx512;

    impl Classify for Avx512 {
        #[inline(always)]
        fn classify(b: &[u8; 64], rs: u8) -> Masks {
            // SAFETY: `Avx512` is private to this module and used only by `index_avx512`,
            // which runs only on CPUs with AVX-512 F and BW (see `index`).
            unsafe { classify(b, rs) }
        }

        #[inline(always)]
        fn prefix_xor(x: u64) -> u64 {
            // SAFETY: as above; `index_avx512` runs only on CPUs with PCLMULQDQ.
            unsafe { super::avx2::prefix_xor(x) }
        }

        #[inline(always)]
        fn flatten(dst: &mut [u16; 64], tokens: u64, base: u16) {
            // SAFETY: as above; `index_avx512` runs only on CPUs with AVX-512 VBMI2.
            unsafe { flatten(dst, tokens, base) }
        }
    }

    /// Byte `i` is `i`: the positions a block's bits stand for.
    const POSITIONS: [u8; 64] = {
        let mut p = [0u8; 64];
        let mut i = 0;
        while i < 64 {
            p[i] = i as u8;
            i += 1;
        }
        p
    };

    /// The positions of the set bits of `tokens` in one `vpcompressb` (AVX-512 VBMI2), widened
    /// to 16 bits and offset by `base`: a fixed handful of instructions however many bits are
    /// set, where the scalar flattening pays a `tzcnt` and a `blsr` per bit. All 64 slots are
    /// written (the slots past the count get zeros plus `base`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
    #[inline]
    fn flatten(dst: &mut [u16; 64], tokens: u64, base: u16) {
        // SAFETY: `POSITIONS` is 64 bytes, the load's width.
        let all = unsafe { _mm512_loadu_si512(POSITIONS.as_ptr().cast::<__m512i>()) };
        let packed = _mm512_maskz_compress_epi8(tokens, all);
        let base = _mm512_set1_epi16(base as i16);
        let lo = _mm512_add_epi16(_mm512_cvtepu8_epi16(_mm512_castsi512_si256(packed)), base);
        let hi = _mm512_add_epi16(
            _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64::<1>(packed)),
            base,
        );
        // SAFETY: `dst` is 64 16-bit slots, 128 bytes: two 64-byte stores, at its start and
        // 32 slots (64 bytes) in.
        unsafe {
            _mm512_storeu_si512(dst.as_mut_ptr().cast::<__m512i>(), lo);
            _mm512_storeu_si512(dst[32..].as_mut_ptr().cast::<__m512i>(), hi);
        }
    }

    /// The masks of a block in one 64-byte register, each compare giving its 64-bit mask
    /// directly (no `vpmovmskb` and no joining of halves). The tables are the AVX2 path's
    /// (see `avx2::classify` for why each lookup finds exactly its bytes), repeated in the
    /// four 128-bit lanes.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    fn classify(b: &[u8; 64], rs: u8) -> Masks {
        let rs = if rs == b' ' { 0 } else { 0x1E };
        let ws_table = _mm512_broadcast_i32x4(_mm_setr_epi8(
            b' ' as i8,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            b'\t' as i8,
            b'\n' as i8,
            0,
            0,
            b'\r' as i8,
            rs,
            0,
        ));
        let op_table = _mm512_broadcast_i32x4(_mm_setr_epi8(
            -128, -128, -128, -128, -128, -128, -128, -128, -128, -128, b':' as i8, b'[' as i8,
            b',' as i8, b']' as i8, -128, -128,
        ));
        let hi_table = _mm512_broadcast_i32x4(_mm_setr_epi8(
            0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0,
        ));
        let lo_table = _mm512_broadcast_i32x4(_mm_setr_epi8(
            1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 2,
        ));
        // SAFETY: `b` is 64 bytes, exactly the unaligned load's width.
        let v = unsafe { _mm512_loadu_si512(b.as_ptr().cast::<__m512i>()) };
        let splat = |c: u8| _mm512_set1_epi8(c as i8);
        let eq = |x: __m512i, y: __m512i| _mm512_cmpeq_epi8_mask(x, y);
        let t = _mm512_shuffle_epi8(op_table, v);
        let nibble = splat(0x0F);
        let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble);
        let lo = _mm512_and_si512(v, nibble);
        let class = _mm512_and_si512(
            _mm512_shuffle_epi8(hi_table, hi),
            _mm512_shuffle_epi8(lo_table, lo),
        );
        Masks {
            quote: eq(v, splat(b'"')),
            bslash: eq(v, splat(b'\\')),
            ws: eq(_mm512_shuffle_epi8(ws_table, v), v),
            op: eq(t, v) | eq(_mm512_or_si512(t, splat(0x20)), v),
            digits: _mm512_test_epi8_mask(class, class),
            at: eq(v, splat(b'@')),
            high: _mm512_movepi8_mask(v),
        }
    }
}

/// Targets other than x86-64: no AVX-512 path.
#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    use super::Kernel;

    pub(super) fn kernel() -> Option<Kernel> {
        None
    }

    #[cfg(test)]
    pub(super) fn masks(_: &[u8; 64], _: u8) -> Option<super::super::json_index::Masks> {
        None
    }
}
