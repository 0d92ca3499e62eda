//! ICAP responses as bytes: the `OPTIONS` answer, `100 Continue`, `204 No Content`, the
//! `200 OK` that carries the (unmodified) request back to the ICAP client, the `200 OK` that
//! carries an HTTP response for the client in place of forwarding (the gate's 451/403/503 JSON),
//! and ICAP-level errors.

use bytes::{BufMut, Bytes, BytesMut};
use http::Response;
use http_body_util::BodyExt;

/// The service's `ISTag` for a configuration (quoted, at most 32 characters): it changes
/// whenever a reload changes the configuration or the approvals, so ICAP clients drop what
/// they cached under the old one.
pub fn istag(config_sha256: &str) -> String {
    let n = config_sha256.len().min(24);
    format!("\"tg-{}\"", &config_sha256[..n])
}

/// What `OPTIONS` advertises.
pub struct Options<'a> {
    /// The current `ISTag`.
    pub istag: &'a str,
    /// `Max-Connections`.
    pub max_connections: usize,
    /// `Options-TTL` in seconds.
    pub ttl: u64,
    /// `Preview` bytes.
    pub preview: usize,
}

/// The `OPTIONS` response of the REQMOD service.
pub fn options(o: &Options<'_>) -> Bytes {
    Bytes::from(format!(
        "ICAP/1.0 200 OK\r\nMethods: REQMOD\r\nService: transfer-gate/{}\r\nISTag: {}\r\nMax-Connections: {}\r\nOptions-TTL: {}\r\nAllow: 204\r\nPreview: {}\r\nTransfer-Preview: *\r\nEncapsulated: null-body=0\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        o.istag,
        o.max_connections,
        o.ttl,
        o.preview,
    ))
}

/// `100 Continue`: send the rest of the body after the preview.
pub const CONTINUE: &[u8] = b"ICAP/1.0 100 Continue\r\n\r\n";

/// `204 No Content`: forward the request unmodified.
pub fn no_content(istag: &str) -> Bytes {
    Bytes::from(format!(
        "ICAP/1.0 204 No Content\r\nISTag: {istag}\r\nEncapsulated: null-body=0\r\n\r\n"
    ))
}

/// The head of a `200 OK` that returns the request `http_head` (raw bytes, ending with the
/// empty line) to the client; a chunked body follows when `body` is true.
pub fn request_head(istag: &str, http_head: &[u8], body: bool) -> Bytes {
    let entry = if body { "req-body" } else { "null-body" };
    let mut b = BytesMut::with_capacity(128 + http_head.len());
    b.put_slice(
        format!(
            "ICAP/1.0 200 OK\r\nISTag: {istag}\r\nEncapsulated: req-hdr=0, {entry}={}\r\n\r\n",
            http_head.len()
        )
        .as_bytes(),
    );
    b.put_slice(http_head);
    b.freeze()
}

/// One chunk of an ICAP body.
pub fn chunk(data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 20);
    b.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
    b.put_slice(data);
    b.put_slice(b"\r\n");
    b.freeze()
}

/// The last chunk of an ICAP body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Largest synthetic HTTP response body the gate encapsulates.
const MAX_SYNTHETIC: usize = 64 * 1024;

/// A `200 OK` carrying the HTTP response `resp` (one of the gate's own answers: 451, 403, 503,
/// 400, 413) for the ICAP client to return in place of forwarding the request.
pub async fn http_response(istag: &str, resp: Response<crate::respond::GateBody>) -> Bytes {
    let (parts, mut body) = resp.into_parts();
    let mut collected = BytesMut::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(d) = frame.into_data() {
            if collected.len() + d.len() > MAX_SYNTHETIC {
                break;
            }
            collected.put_slice(&d);
        }
    }
    let body = collected.freeze();
    let mut head = BytesMut::with_capacity(512);
    let reason = parts.status.canonical_reason().unwrap_or("");
    head.put_slice(format!("HTTP/1.1 {} {reason}\r\n", parts.status.as_u16()).as_bytes());
    for (name, value) in &parts.headers {
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            continue;
        }
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    head.put_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    let mut b = BytesMut::with_capacity(head.len() + body.len() + 128);
    b.put_slice(
        format!(
            "ICAP/1.0 200 OK\r\nISTag: {istag}\r\nEncapsulated: res-hdr=0, res-body={}\r\n\r\n",
            head.len()
        )
        .as_bytes(),
    );
    b.put_slice(&head);
    if !body.is_empty() {
        b.put_slice(&chunk(&body));
    }
    b.put_slice(LAST_CHUNK);
    b.freeze()
}

/// An ICAP-level error (400, 404, 405, 500, 503); the connection closes after it.
pub fn error(status: u16, istag: &str) -> Bytes {
    let reason = match status {
        400 => "Bad Request",
        404 => "ICAP Service Not Found",
        405 => "Method Not Allowed For Service",
        408 => "Request Timeout",
        503 => "Service Overloaded",
        _ => "Server Error",
    };
    Bytes::from(format!(
        "ICAP/1.0 {status} {reason}\r\nISTag: {istag}\r\nConnection: close\r\nEncapsulated: null-body=0\r\n\r\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istag_is_quoted_and_short() {
        let t = istag(&"ab".repeat(32));
        assert!(t.starts_with('"') && t.ends_with('"'));
        assert!(t.len() <= 34);
        assert_ne!(t, istag(&"cd".repeat(32)));
    }

    #[tokio::test]
    async fn encapsulated_response_offsets() {
        let resp = crate::respond::blocked(
            &crate::policy::Refusal::new(crate::policy::Reason::ApprovalRequired, "eu"),
            "rid-1",
            None,
        );
        let b = http_response("\"t\"", resp).await;
        let text = String::from_utf8(b.to_vec()).unwrap();
        let (icap, rest) = text.split_once("\r\n\r\n").unwrap();
        let off: usize = icap
            .split("res-body=")
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(rest[..off].starts_with("HTTP/1.1 451 "));
        assert!(rest[..off].ends_with("\r\n\r\n"));
        assert!(rest[..off].contains("x-transfer-gate-reason: approval_required"));
        assert!(rest[off..].ends_with("}\r\n0\r\n\r\n"));
    }
}
