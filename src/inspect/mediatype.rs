//! Strict media type parsing (RFC 9110 §8.3.1 and §5.6): what decides how a body — or a
//! multipart part — is read. `type "/" subtype *( OWS ";" OWS [ name "=" value ] )` with
//! tokens, quoted strings with `\` escapes, case-insensitive type and parameter names.
//!
//! Anything a well-kept parser and a lenient one could read differently is refused here rather
//! than guessed: bytes outside the grammar, a repeated parameter, white space around `=`, an
//! unterminated quote. The caller turns a refusal into an *unreadable* body.

/// A parsed media type: lower-cased `type/subtype` and parameters (lower-cased names, values
/// unquoted and unescaped, names unique).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    essence: String,
    params: Vec<(String, Vec<u8>)>,
}

/// Why a media type was refused (the reason is for logs and tests; all mean *unreadable*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTypeError {
    /// Not `type/subtype`, or a byte outside the grammar.
    Syntax,
    /// The same parameter name twice.
    RepeatedParameter,
}

impl MediaType {
    /// Parses one header value (already one field line: the caller refuses repeated headers).
    ///
    /// # Errors
    /// The value does not follow RFC 9110, or repeats a parameter.
    pub fn parse(value: &[u8]) -> Result<MediaType, MediaTypeError> {
        let v = value.trim_ascii();
        let mut i = token_end(v, 0);
        if i == 0 || v.get(i) != Some(&b'/') {
            return Err(MediaTypeError::Syntax);
        }
        let slash = i;
        i = token_end(v, slash + 1);
        if i == slash + 1 {
            return Err(MediaTypeError::Syntax);
        }
        let essence = ascii_lower(&v[..i]);
        let params = parse_params(v, i)?;
        Ok(MediaType { essence, params })
    }

    /// `type/subtype`, lower case.
    pub fn essence(&self) -> &str {
        &self.essence
    }

    /// The value of parameter `name` (give it in lower case).
    pub fn param(&self, name: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Parses `*( OWS ";" OWS [ name "=" value ] )` from `i` to the end of `v` (the parameters
/// of a media type or a `Content-Disposition`): lower-cased names, unescaped values, each name
/// once.
///
/// # Errors
/// Bytes outside the grammar, or a repeated name.
pub fn parse_params(v: &[u8], mut i: usize) -> Result<Vec<(String, Vec<u8>)>, MediaTypeError> {
    let mut params: Vec<(String, Vec<u8>)> = Vec::new();
    loop {
        i = skip_ows(v, i);
        if i == v.len() {
            return Ok(params);
        }
        if v[i] != b';' {
            return Err(MediaTypeError::Syntax);
        }
        i = skip_ows(v, i + 1);
        if i == v.len() || v[i] == b';' {
            // An empty parameter (RFC 9110 allows `;;`).
            continue;
        }
        let name_end = token_end(v, i);
        if name_end == i || v.get(name_end) != Some(&b'=') {
            return Err(MediaTypeError::Syntax);
        }
        let name = ascii_lower(&v[i..name_end]);
        let (value, end) = param_value(v, name_end + 1)?;
        if params.iter().any(|(n, _)| *n == name) {
            return Err(MediaTypeError::RepeatedParameter);
        }
        params.push((name, value));
        i = end;
    }
}

/// Length of the token at the start of `v`.
pub fn token_len(v: &[u8]) -> usize {
    token_end(v, 0)
}

/// `tchar` of RFC 9110 §5.6.2.
pub(crate) fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn token_end(v: &[u8], mut i: usize) -> usize {
    while i < v.len() && is_tchar(v[i]) {
        i += 1;
    }
    i
}

fn skip_ows(v: &[u8], mut i: usize) -> usize {
    while i < v.len() && (v[i] == b' ' || v[i] == b'\t') {
        i += 1;
    }
    i
}

fn ascii_lower(b: &[u8]) -> String {
    // Tokens are ASCII by construction.
    b.iter()
        .map(|c| char::from(c.to_ascii_lowercase()))
        .collect()
}

/// A token or a quoted string starting at `i`: `(value, end)`.
fn param_value(v: &[u8], i: usize) -> Result<(Vec<u8>, usize), MediaTypeError> {
    if v.get(i) != Some(&b'"') {
        let end = token_end(v, i);
        if end == i {
            return Err(MediaTypeError::Syntax);
        }
        return Ok((v[i..end].to_vec(), end));
    }
    let mut out = Vec::new();
    let mut k = i + 1;
    while k < v.len() {
        match v[k] {
            b'"' => return Ok((out, k + 1)),
            b'\\' => {
                let c = *v.get(k + 1).ok_or(MediaTypeError::Syntax)?;
                if !(c == b'\t' || c == b' ' || c >= 0x21) || c == 0x7F {
                    return Err(MediaTypeError::Syntax);
                }
                out.push(c);
                k += 2;
            }
            c if c == b'\t' || c == b' ' || (c >= 0x21 && c != 0x7F) => {
                out.push(c);
                k += 1;
            }
            _ => return Err(MediaTypeError::Syntax),
        }
    }
    Err(MediaTypeError::Syntax)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<MediaType, MediaTypeError> {
        MediaType::parse(s.as_bytes())
    }

    #[test]
    fn parses_rfc_9110_examples() {
        for s in [
            "text/html;charset=utf-8",
            "text/html;charset=UTF-8",
            "Text/HTML;Charset=\"utf-8\"",
            "text/html; charset=\"utf-8\"",
        ] {
            let m = p(s).unwrap();
            assert_eq!(m.essence(), "text/html");
            assert!(
                m.param("charset").unwrap().eq_ignore_ascii_case(b"utf-8"),
                "{s}"
            );
        }
        let m = p("multipart/form-data; boundary=\"a\\\"b c\"; x=1;;").unwrap();
        assert_eq!(m.param("boundary").unwrap(), b"a\"b c");
        assert_eq!(m.param("x").unwrap(), b"1");
        assert_eq!(m.param("y"), None);
    }

    #[test]
    fn refuses_what_parsers_could_read_differently() {
        assert_eq!(
            p("multipart/form-data; boundary=AA; boundary=BB"),
            Err(MediaTypeError::RepeatedParameter)
        );
        assert_eq!(
            p("text/csv; Charset=utf-8; charset=gbk"),
            Err(MediaTypeError::RepeatedParameter)
        );
        for bad in [
            "",
            "json",
            "application/",
            "/json",
            "application/json, application/json",
            "application/json; charset = utf-8",
            "application/json; charset=\"utf-8",
            "application/json; charset",
            "application/json; =x",
            "multipart/form-data; boundary=a;b=",
            "text/csv; header=\"x\"y",
            "application/json\u{0}",
        ] {
            assert_eq!(p(bad), Err(MediaTypeError::Syntax), "{bad:?}");
        }
        // A quoted `;` is part of the value, not a separator.
        let m = p("multipart/form-data; boundary=\"AA;boundary=BB\"").unwrap();
        assert_eq!(m.param("boundary").unwrap(), b"AA;boundary=BB");
    }
}
