//! Lexical helpers of the JSON scanner: number bytes and grammar, and the search for a
//! string's end.

#[inline]
pub(super) fn is_num_byte(c: u8) -> bool {
    matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
}

/// JSON number grammar: `-? (0 | [1-9][0-9]*) (\.[0-9]+)? ([eE][+-]?[0-9]+)?`.
pub(super) fn valid_number(s: &[u8]) -> bool {
    let mut i = 0;
    let n = s.len();
    if i < n && s[i] == b'-' {
        i += 1;
    }
    let int_start = i;
    while i < n && s[i].is_ascii_digit() {
        i += 1;
    }
    let int_len = i - int_start;
    if int_len == 0 || (int_len > 1 && s[int_start] == b'0') {
        return false;
    }
    if i < n && s[i] == b'.' {
        i += 1;
        let f = i;
        while i < n && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == f {
            return false;
        }
    }
    if i < n && (s[i] == b'e' || s[i] == b'E') {
        i += 1;
        if i < n && (s[i] == b'+' || s[i] == b'-') {
            i += 1;
        }
        let e = i;
        while i < n && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == e {
            return false;
        }
    }
    i == n
}

/// `memchr2(b'"', b'\\', hay)`, eight bytes at a time with word arithmetic over the first
/// 64 bytes (most JSON strings are short and the SIMD search only pays off on long ones).
#[inline]
pub(super) fn find_quote_or_backslash(hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const QUOTE: u64 = LO * b'"' as u64;
    const BSLASH: u64 = LO * b'\\' as u64;
    let mut k = 0;
    let lim = hay.len().min(64);
    while k + 8 <= lim {
        let mut w = [0u8; 8];
        w.copy_from_slice(&hay[k..k + 8]);
        let x = u64::from_le_bytes(w);
        let q = x ^ QUOTE;
        let b = x ^ BSLASH;
        // A zero byte in q or b marks a match; the lowest flagged byte is exact.
        let m = (q.wrapping_sub(LO) & !q & HI) | (b.wrapping_sub(LO) & !b & HI);
        if m != 0 {
            return Some(k + (m.trailing_zeros() / 8) as usize);
        }
        k += 8;
    }
    if lim < 64 {
        return hay[k..lim]
            .iter()
            .position(|c| *c == b'"' || *c == b'\\')
            .map(|p| p + k);
    }
    memchr::memchr2(b'"', b'\\', &hay[k..]).map(|p| p + k)
}
