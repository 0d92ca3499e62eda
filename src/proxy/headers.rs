//! Header rules of a forwarding proxy (RFC 9110 §7.6): hop-by-hop headers removed in both
//! directions (including those named by `Connection`), `Via` appended, `X-Request-Id` passed
//! on or created.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::sync::atomic::{AtomicU64, Ordering};

/// The `Via` entry the gate appends.
pub const VIA: &str = "1.1 transfer-gate";

const HOPS: usize = 9;
/// The hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy `Keep-Alive` and
/// `Proxy-Connection`), as names: removing by a `&str` would parse the name on every call.
static HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers and those listed in `Connection`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in listed {
            h.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
}

/// Appends the gate's `Via` entry.
pub fn add_via(h: &mut HeaderMap) {
    h.append(header::VIA, HeaderValue::from_static(VIA));
}

/// Whether the request asks for a protocol upgrade (e.g. WebSocket).
pub fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        || h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// The name of the request id header.
pub const REQUEST_ID: &str = "x-request-id";
/// [`REQUEST_ID`] as a header name (looked up without parsing).
pub const REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID);

/// Creates request ids: a random per-process prefix and a counter (unique, no syscall per request).
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        let mut b = [0u8; 8];
        // Without OS randomness the prefix falls back to the clock: still unique per process.
        if getrandom::fill(&mut b).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            b = t.to_le_bytes();
        }
        RequestIds {
            prefix: u64::from_le_bytes(b),
            next: AtomicU64::new(1),
        }
    }
}

impl RequestIds {
    /// Whether `id` is one this gate created (its prefix and a counter value already issued):
    /// such a header carries no client data and is not inspected. A client-chosen value with
    /// the same prefix but a counter not yet issued is not ours.
    pub fn is_own(&self, id: &str) -> bool {
        id.len() == 32
            && u64::from_str_radix(&id[..16], 16).is_ok_and(|p| p == self.prefix)
            && u64::from_str_radix(&id[16..], 16)
                .is_ok_and(|n| n >= 1 && n < self.next.load(Ordering::Relaxed))
    }

    /// The client's id when it is a plain token free of identifiers
    /// ([`crate::redact::request_id_ok`]), else a new one written into `h` in its place (an
    /// id holding an identifier does not travel on either: SPEC §9).
    pub fn assign(&self, h: &mut HeaderMap) -> String {
        if let Some(v) = h.get(&REQUEST_ID_NAME).and_then(|v| v.to_str().ok()) {
            if crate::redact::request_id_ok(v) || self.is_own(v) {
                return v.to_owned();
            }
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 32];
        for (i, w) in [self.prefix, n].into_iter().enumerate() {
            for (j, b) in buf[i * 16..(i + 1) * 16].iter_mut().enumerate() {
                *b = b"0123456789abcdef"[(w >> (60 - 4 * j)) as usize & 0xf];
            }
        }
        if let Ok(v) = HeaderValue::from_bytes(&buf) {
            h.insert(REQUEST_ID_NAME, v);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-end-to-end", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-end-to-end"));
        // Every hop-by-hop name, in any case and repeated, and nothing else.
        let mut h = HeaderMap::new();
        for name in &HOP_BY_HOP {
            let upper = HeaderName::from_bytes(name.as_str().to_uppercase().as_bytes()).unwrap();
            h.append(upper.clone(), HeaderValue::from_static("a"));
            h.append(upper, HeaderValue::from_static("b"));
        }
        h.append("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-keep"]);
    }

    #[test]
    fn request_ids_are_kept_or_created() {
        let ids = RequestIds::default();
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ids.assign(&mut h), "abc-123");
        let mut h = HeaderMap::new();
        let a = ids.assign(&mut h);
        let b = ids.assign(&mut HeaderMap::new());
        assert_eq!(a.len(), 32);
        assert_eq!(a, format!("{:016x}{:016x}", ids.prefix, 1));
        assert_eq!(b, format!("{:016x}{:016x}", ids.prefix, 2));
        assert_ne!(a, b);
        assert_eq!(h[REQUEST_ID], a.as_str());
        assert!(ids.is_own(&a));
        assert!(!ids.is_own("abc-123"));
        assert!(!ids.is_own(&format!("{}4111111111111111", &a[..16])));
        // An id holding an identifier is replaced, in the header too.
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("11010519491231002X"));
        let c = ids.assign(&mut h);
        assert!(ids.is_own(&c));
        assert_eq!(h[REQUEST_ID], c.as_str());
    }

    #[test]
    fn upgrade_detection() {
        let mut h = HeaderMap::new();
        assert!(!wants_upgrade(&h));
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        assert!(wants_upgrade(&h));
    }
}
