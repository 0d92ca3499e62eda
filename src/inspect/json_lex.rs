//! Lexical helpers of the JSON scanner: number bytes and grammar, and unescaping a string.

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

/// Unescapes the bytes of a complete string (between its quotes) into `out`.
///
/// # Errors
/// The index in `raw` of the byte that breaks the escape grammar (`raw.len()` when the string
/// ends inside an escape), or of a lone surrogate's last hex digit.
pub(super) fn unescape(raw: &[u8], out: &mut Vec<u8>) -> Result<(), usize> {
    let mut i = 0;
    let n = raw.len();
    while i < n {
        let Some(k) = memchr::memchr(b'\\', &raw[i..]) else {
            out.extend_from_slice(&raw[i..]);
            return Ok(());
        };
        out.extend_from_slice(&raw[i..i + k]);
        i += k + 1;
        let c = *raw.get(i).ok_or(n)?;
        i += 1;
        let b = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let (hi, at) = hex4(raw, i)?;
                i = at;
                let cp = if (0xD800..0xDC00).contains(&hi) {
                    // A high surrogate must be followed by `\u` and a low one.
                    if raw.get(i) != Some(&b'\\') {
                        return Err(i.min(n));
                    }
                    if raw.get(i + 1) != Some(&b'u') {
                        return Err((i + 1).min(n));
                    }
                    let (lo, at) = hex4(raw, i + 2)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err(at - 1);
                    }
                    i = at;
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else if (0xDC00..0xE000).contains(&hi) {
                    return Err(at - 1);
                } else {
                    hi
                };
                let ch = char::from_u32(cp).ok_or(i - 1)?;
                let mut b = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                continue;
            }
            _ => return Err(i - 1),
        };
        out.push(b);
    }
    Ok(())
}

/// Four hex digits at `raw[i..]`: the value and the index after them.
fn hex4(raw: &[u8], i: usize) -> Result<(u32, usize), usize> {
    let mut v = 0;
    for j in i..i + 4 {
        let d = raw
            .get(j)
            .and_then(|c| (*c as char).to_digit(16))
            .ok_or(j.min(raw.len()))?;
        v = v * 16 + d;
    }
    Ok((v, i + 4))
}
