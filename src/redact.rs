//! Client-chosen text made safe to rest (SPEC §9). What a client puts in a path, a `CONNECT`
//! authority, a TLS server name or an `X-Request-Id` reaches the audit log, the logs and
//! `/v1/decisions`; before it does, every part that could hold an identifier is replaced by
//! `*`, and an `X-Request-Id` that is not a plain token or holds an identifier is not kept at
//! all (the gate issues its own).
//!
//! "Could hold an identifier" is deliberately wider than what the detectors count: a part with
//! six or more digits, an `@`, a percent-escape, anything outside ASCII, or more than 64
//! bytes. Over-redacting a log costs a little readability; under-redacting puts PI at rest.

use crate::inspect::detect;

/// Whether a path segment or host label may carry an identifier.
fn suspicious(part: &str) -> bool {
    let digits = part.bytes().filter(u8::is_ascii_digit).count();
    digits >= 6
        || part.len() > 64
        || part
            .bytes()
            .any(|b| b == b'@' || b == b'%' || !b.is_ascii() || b.is_ascii_control())
}

/// The path without its query, each suspicious segment (split at `/` and `;`) replaced by `*`:
/// `/v1/users/13800138000/orders?x=1` → `/v1/users/*/orders`.
pub fn path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    let mut out = String::with_capacity(path.len());
    let mut start = 0;
    for (i, b) in path.bytes().enumerate() {
        if b == b'/' || b == b';' {
            push_part(&mut out, &path[start..i]);
            out.push(b as char);
            start = i + 1;
        }
    }
    push_part(&mut out, &path[start..]);
    out
}

fn push_part(out: &mut String, part: &str) {
    if suspicious(part) {
        out.push('*');
    } else {
        out.push_str(part);
    }
}

/// A host name with each suspicious label replaced by `*`
/// (`11010519491231002x.ingest.example.org` → `*.ingest.example.org`). IP literals are kept.
pub fn host(host: &str) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() && !host.is_empty() {
        return host.to_owned();
    }
    let mut out = String::with_capacity(host.len());
    for (i, label) in host.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_part(&mut out, label);
    }
    out
}

/// A `host:port` authority with its host redacted by [`host`]; a port that is not a number
/// is replaced too.
pub fn authority(authority: &str) -> String {
    let (h, port) = match authority.rfind(':') {
        // An IPv6 literal without a port has its colons inside brackets.
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let mut out = host(h);
    if let Some(p) = port {
        out.push(':');
        if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(p);
        } else {
            out.push('*');
        }
    }
    out
}

/// Whether a client's `X-Request-Id` may be kept: `[A-Za-z0-9._:-]{1,128}` and no identifier
/// the detectors would find in it (a phone written `138-0013-8000` is one).
pub fn request_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        && !detect::holds_identifier(id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_lose_identifier_like_segments() {
        assert_eq!(
            path("/v1/users/13800138000/orders?x=1"),
            "/v1/users/*/orders"
        );
        assert_eq!(path("/a/b%40c/d@e.com"), "/a/*/*");
        assert_eq!(path("/v1/events"), "/v1/events");
        assert_eq!(path("/v1/u;id=13800138000/x"), "/v1/u;*/x");
        assert_eq!(path(""), "");
    }

    #[test]
    fn hosts_and_authorities_lose_identifier_like_labels() {
        assert_eq!(
            authority("11010519491231002x.unknown.example.org:443"),
            "*.unknown.example.org:443"
        );
        assert_eq!(authority("a.b%40c.example:80"), "a.*.example:80");
        assert_eq!(authority("10.1.2.3:5432"), "10.1.2.3:5432");
        assert_eq!(authority("[2001:db8::1]:443"), "[2001:db8::1]:443");
        assert_eq!(authority("[2001:db8::1]"), "[2001:db8::1]");
        assert_eq!(authority("api.example.eu:13800138000"), "api.example.eu:*");
        assert_eq!(host("user-13800138000.example.eu"), "*.example.eu");
        assert_eq!(host("api.example.eu"), "api.example.eu");
    }

    #[test]
    fn request_ids_are_kept_only_when_plain_and_free_of_identifiers() {
        assert!(request_id_ok("abc-123"));
        assert!(request_id_ok("550e8400-e29b-41d4-a716-446655440000"));
        assert!(request_id_ok("req:1700000000123"));
        assert!(!request_id_ok(""));
        assert!(!request_id_ok(&"a".repeat(129)));
        assert!(!request_id_ok("a b"));
        assert!(!request_id_ok("a/b"));
        assert!(!request_id_ok("11010519491231002X"));
        assert!(!request_id_ok("req-138-0013-8000"));
        assert!(!request_id_ok("13800138000"));
    }
}
