//! The ICAP wire format (RFC 3507) as the gate reads it: the ICAP request head, the
//! `Encapsulated` header, the encapsulated HTTP request head and the chunked body with its
//! `ieof` extension. Every read is bounded: a line, a head, the number of headers and a chunk
//! size all have limits, and anything outside them is an error (the connection answers 400 and
//! closes), never an allocation the peer controls.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Longest line of an ICAP head, a chunk-size line or a trailer line.
pub const MAX_LINE: usize = 8 * 1024;
/// Largest ICAP head, and largest encapsulated HTTP head (the proxy listener's limit too).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one head (the proxy listener's limit too).
pub const MAX_HEADERS: usize = 128;
/// Largest piece of body handed on at once.
pub const MAX_FRAME: usize = 64 * 1024;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer closed the connection where a message could start (a clean end).
    #[error("connection closed")]
    Closed,
    /// The stream failed or ended inside a message.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The message breaks the protocol or a limit.
    #[error("bad message: {0}")]
    Bad(&'static str),
}

/// An ICAP request head.
#[derive(Debug)]
pub struct IcapHead {
    /// `OPTIONS`, `REQMOD`, `RESPMOD`, …
    pub method: String,
    /// The `icap://host[:port]/service` URI.
    pub uri: String,
    /// The ICAP headers.
    pub headers: HeaderMap,
}

impl IcapHead {
    /// The path of the service URI (`/reqmod`), without a query.
    pub fn service_path(&self) -> &str {
        let rest = self
            .uri
            .strip_prefix("icap://")
            .or_else(|| self.uri.strip_prefix("ICAP://"))
            .unwrap_or(&self.uri);
        let path = rest.find('/').map_or("/", |i| &rest[i..]);
        path.split('?').next().unwrap_or("/")
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the client accepts `204 No Content` outside a preview (`Allow: 204`).
    pub fn allows_204(&self) -> bool {
        self.headers
            .get_all("allow")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim() == "204"))
    }

    /// The `Preview` size, when the client sends a preview.
    pub fn preview(&self) -> Result<Option<u64>, WireError> {
        match self.header("preview") {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| WireError::Bad("Preview is not a number")),
        }
    }

    /// Whether the client asked to close the connection after this message.
    pub fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

/// The `Encapsulated` header of a REQMOD request: where the HTTP head ends, and whether a body
/// follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encapsulated {
    /// Length of the encapsulated HTTP request head (`req-hdr=0` to the next offset); 0 when
    /// there is none.
    pub head_len: usize,
    /// Whether a chunked `req-body` follows the head (else `null-body`).
    pub body: bool,
}

/// Parses a REQMOD `Encapsulated` value: `req-hdr=0, req-body=N` or `req-hdr=0, null-body=N`
/// (offsets increasing, the body entry last, each name once).
pub fn parse_encapsulated(v: &str) -> Result<Encapsulated, WireError> {
    let bad = WireError::Bad;
    let mut hdr: Option<usize> = None;
    let mut end: Option<(usize, bool)> = None;
    let mut last = 0usize;
    for (n, part) in v.split(',').enumerate() {
        if end.is_some() {
            return Err(bad("Encapsulated: the body entry must be last"));
        }
        let (name, off) = part
            .trim()
            .split_once('=')
            .ok_or(bad("Encapsulated: entry without an offset"))?;
        let off: usize = off
            .trim()
            .parse()
            .map_err(|_| bad("Encapsulated: offset is not a number"))?;
        if off < last || off > MAX_HEAD {
            return Err(bad("Encapsulated: offsets out of order or too large"));
        }
        last = off;
        match name.trim().to_ascii_lowercase().as_str() {
            "req-hdr" if n == 0 && off == 0 => hdr = Some(0),
            "req-body" => end = Some((off, true)),
            "null-body" => end = Some((off, false)),
            "res-hdr" | "res-body" => {
                return Err(bad("Encapsulated: a response in a REQMOD request"))
            }
            _ => return Err(bad("Encapsulated: unexpected entry")),
        }
    }
    let (off, body) = end.ok_or(bad("Encapsulated: no req-body or null-body entry"))?;
    Ok(Encapsulated {
        head_len: if hdr.is_some() { off } else { 0 },
        body,
    })
}

/// Reads one line ending in LF (CRLF or bare LF), without the line ending; bounded by
/// `MAX_LINE`. `Ok(None)` at a clean end of stream before any byte.
pub async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, WireError> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        match memchr::memchr(b'\n', buf) {
            Some(i) => {
                if line.len() + i > MAX_LINE {
                    return Err(WireError::Bad("line too long"));
                }
                line.extend_from_slice(&buf[..i]);
                r.consume(i + 1);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            None => {
                let n = buf.len();
                if line.len() + n > MAX_LINE {
                    return Err(WireError::Bad("line too long"));
                }
                line.extend_from_slice(buf);
                r.consume(n);
            }
        }
    }
}

/// Parses header lines (`name: value`) into a map; no obsolete line folding.
pub fn parse_headers<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Result<HeaderMap, WireError> {
    let mut map = HeaderMap::new();
    for (n, line) in lines.enumerate() {
        if n >= MAX_HEADERS {
            return Err(WireError::Bad("too many header fields"));
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(WireError::Bad("obsolete header line folding"));
        }
        let colon = memchr::memchr(b':', line).ok_or(WireError::Bad("header without a colon"))?;
        let name = HeaderName::from_bytes(&line[..colon])
            .map_err(|_| WireError::Bad("invalid header name"))?;
        let value = trim(&line[colon + 1..]);
        let value =
            HeaderValue::from_bytes(value).map_err(|_| WireError::Bad("invalid header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// Reads an ICAP request head (request line and headers up to the empty line).
/// `Err(Closed)` when the stream ends cleanly before a request starts.
pub async fn read_icap_head<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<IcapHead, WireError> {
    let first = loop {
        match read_line(r).await? {
            None => return Err(WireError::Closed),
            // Tolerate empty lines between messages (RFC 9112 §2.2).
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let text = std::str::from_utf8(&first).map_err(|_| WireError::Bad("request line"))?;
    let mut it = text.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(WireError::Bad("request line"));
    };
    if version != "ICAP/1.0" {
        return Err(WireError::Bad("not ICAP/1.0"));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(WireError::Bad("request method"));
    }
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut total = first.len();
    loop {
        let l = read_line(r)
            .await?
            .ok_or(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()))?;
        if l.is_empty() {
            break;
        }
        total += l.len() + 2;
        if total > MAX_HEAD {
            return Err(WireError::Bad("head too large"));
        }
        lines.push(l);
    }
    let headers = parse_headers(lines.iter().map(Vec::as_slice))?;
    Ok(IcapHead {
        method: method.to_owned(),
        uri: uri.to_owned(),
        headers,
    })
}

/// An encapsulated HTTP request head, parsed.
#[derive(Debug)]
pub struct HttpHead {
    /// The request method.
    pub method: http::Method,
    /// The request target (absolute-form, authority-form for `CONNECT`, or origin-form).
    pub uri: http::Uri,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: http::Version,
    /// The request headers.
    pub headers: HeaderMap,
}

/// Reads exactly `len` bytes of encapsulated HTTP head and parses them.
pub async fn read_http_head<R: AsyncBufRead + Unpin>(
    r: &mut R,
    len: usize,
) -> Result<(HttpHead, Bytes), WireError> {
    if len > MAX_HEAD {
        return Err(WireError::Bad("encapsulated head too large"));
    }
    let mut raw = vec![0u8; len];
    r.read_exact(&mut raw).await?;
    let head = parse_http_head(&raw)?;
    Ok((head, Bytes::from(raw)))
}

/// Parses an HTTP/1.x request head (request line, headers, the empty line).
pub fn parse_http_head(raw: &[u8]) -> Result<HttpHead, WireError> {
    let text = raw.strip_suffix(b"\r\n\r\n").ok_or(WireError::Bad(
        "encapsulated head does not end with an empty line",
    ))?;
    let mut lines = text
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next().ok_or(WireError::Bad("empty HTTP head"))?;
    let first = std::str::from_utf8(first).map_err(|_| WireError::Bad("HTTP request line"))?;
    let mut it = first.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(WireError::Bad("HTTP request line"));
    };
    let method =
        http::Method::from_bytes(method.as_bytes()).map_err(|_| WireError::Bad("HTTP method"))?;
    let uri: http::Uri = target
        .parse()
        .map_err(|_| WireError::Bad("HTTP request target"))?;
    let version = match version {
        "HTTP/1.1" => http::Version::HTTP_11,
        "HTTP/1.0" => http::Version::HTTP_10,
        _ => return Err(WireError::Bad("HTTP version")),
    };
    let headers = parse_headers(lines)?;
    Ok(HttpHead {
        method,
        uri,
        version,
        headers,
    })
}

/// One step of a chunked ICAP body.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Data (at most `MAX_FRAME` bytes; a long chunk comes in several pieces).
    Data(Bytes),
    /// The zero-length chunk: the end of the body (`ieof`: the preview held all of it), or the
    /// end of a preview after which more follows.
    End {
        /// The `ieof` extension was present.
        ieof: bool,
    },
}

/// Reads a chunked body piece by piece, keeping the position inside the current chunk.
#[derive(Debug, Default)]
pub struct ChunkReader {
    left: u64,
    in_chunk: bool,
}

impl ChunkReader {
    /// Reads the next piece of data, or the terminating chunk (with its trailer lines).
    pub async fn next<R: AsyncBufRead + Unpin>(&mut self, r: &mut R) -> Result<Chunk, WireError> {
        if self.in_chunk && self.left == 0 {
            let crlf = read_line(r)
                .await?
                .ok_or(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()))?;
            if !crlf.is_empty() {
                return Err(WireError::Bad("chunk data longer than its size"));
            }
            self.in_chunk = false;
        }
        if !self.in_chunk {
            let line = read_line(r)
                .await?
                .ok_or(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()))?;
            let (size, ext) = match memchr::memchr(b';', &line) {
                Some(i) => (&line[..i], Some(&line[i + 1..])),
                None => (&line[..], None),
            };
            let size = trim(size);
            if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
                return Err(WireError::Bad("chunk size"));
            }
            let n = u64::from_str_radix(std::str::from_utf8(size).unwrap_or("x"), 16)
                .map_err(|_| WireError::Bad("chunk size"))?;
            if n == 0 {
                let ieof = ext.is_some_and(|e| {
                    e.split(|b| *b == b';')
                        .any(|x| trim(x).eq_ignore_ascii_case(b"ieof"))
                });
                // Trailer lines (none expected from ICAP clients) up to the empty line.
                let mut total = 0usize;
                loop {
                    let l = read_line(r)
                        .await?
                        .ok_or(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()))?;
                    if l.is_empty() {
                        break;
                    }
                    total += l.len();
                    if total > MAX_HEAD {
                        return Err(WireError::Bad("trailers too large"));
                    }
                }
                return Ok(Chunk::End { ieof });
            }
            self.left = n;
            self.in_chunk = true;
        }
        let want = usize::try_from(self.left.min(MAX_FRAME as u64)).unwrap_or(MAX_FRAME);
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let n = want.min(buf.len());
        let mut out = BytesMut::with_capacity(n);
        out.extend_from_slice(&buf[..n]);
        r.consume(n);
        self.left -= n as u64;
        Ok(Chunk::Data(out.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encapsulated_values() {
        let e = parse_encapsulated("req-hdr=0, req-body=412").unwrap();
        assert_eq!(
            e,
            Encapsulated {
                head_len: 412,
                body: true
            }
        );
        let e = parse_encapsulated("req-hdr=0, null-body=90").unwrap();
        assert!(!e.body && e.head_len == 90);
        assert_eq!(parse_encapsulated("null-body=0").unwrap().head_len, 0);
        for bad in [
            "req-body=10, req-hdr=0",
            "req-hdr=5, req-body=10",
            "req-hdr=0",
            "req-hdr=0, req-body=x",
            "req-hdr=0, res-hdr=10, res-body=20",
            "req-hdr=0, req-body=99999999",
            "req-hdr=0, req-body=10, null-body=20",
        ] {
            assert!(parse_encapsulated(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn icap_head_and_http_head() {
        let msg = b"REQMOD icap://127.0.0.1:1344/reqmod ICAP/1.0\r\nHost: x\r\nAllow: 204\r\nPreview: 0\r\nEncapsulated: req-hdr=0, null-body=40\r\n\r\n";
        let mut r = &msg[..];
        let h = read_icap_head(&mut r).await.unwrap();
        assert_eq!(h.method, "REQMOD");
        assert_eq!(h.service_path(), "/reqmod");
        assert!(h.allows_204());
        assert_eq!(h.preview().unwrap(), Some(0));
        let raw = b"POST http://a.example/x?q=1 HTTP/1.1\r\nHost: a.example\r\nX-A: b\r\n\r\n";
        let hh = parse_http_head(raw).unwrap();
        assert_eq!(hh.method, http::Method::POST);
        assert_eq!(hh.uri.host(), Some("a.example"));
        assert_eq!(hh.headers["x-a"], "b");
        let c = parse_http_head(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n")
            .unwrap();
        assert_eq!(c.uri.authority().map(|a| a.as_str()), Some("a.example:443"));
        assert!(parse_http_head(b"GET / HTTP/1.1\r\n X: folded\r\n\r\n").is_err());
        assert!(parse_http_head(b"GET / HTTP/2\r\n\r\n").is_err());
        assert!(parse_http_head(b"GET / HTTP/1.1\r\n").is_err());
    }

    #[tokio::test]
    async fn chunks_with_preview_and_ieof() {
        let msg = b"5\r\nhello\r\n3;x=1\r\nabc\r\n0; ieof\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n";
        let mut r = &msg[..];
        let mut c = ChunkReader::default();
        assert_eq!(
            c.next(&mut r).await.unwrap(),
            Chunk::Data(Bytes::from_static(b"hello"))
        );
        assert_eq!(
            c.next(&mut r).await.unwrap(),
            Chunk::Data(Bytes::from_static(b"abc"))
        );
        assert_eq!(c.next(&mut r).await.unwrap(), Chunk::End { ieof: true });
        let mut c = ChunkReader::default();
        assert_eq!(
            c.next(&mut r).await.unwrap(),
            Chunk::Data(Bytes::from_static(b"0123456789"))
        );
        assert_eq!(c.next(&mut r).await.unwrap(), Chunk::End { ieof: false });
    }

    #[tokio::test]
    async fn bad_chunks_are_errors() {
        for msg in [
            &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
            b"zz\r\n",
            b"ffffffffffffffffff\r\n",
            b"5\r\nhel",
            b"",
        ] {
            let mut r = msg;
            let mut c = ChunkReader::default();
            let mut res = Ok(Chunk::End { ieof: false });
            for _ in 0..4 {
                res = c.next(&mut r).await;
                if !matches!(res, Ok(Chunk::Data(_))) {
                    break;
                }
            }
            assert!(res.is_err(), "{:?}", String::from_utf8_lossy(msg));
        }
    }

    #[tokio::test]
    async fn long_lines_and_many_headers_are_refused() {
        let long = vec![b'a'; MAX_LINE + 10];
        let mut r = &long[..];
        assert!(read_line(&mut r).await.is_err());
        let mut msg = b"OPTIONS icap://x/reqmod ICAP/1.0\r\n".to_vec();
        for i in 0..(MAX_HEADERS + 1) {
            msg.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        msg.extend_from_slice(b"\r\n");
        let mut r = &msg[..];
        assert!(read_icap_head(&mut r).await.is_err());
    }
}
