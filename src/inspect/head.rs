//! The request head (SPEC §3 "Where PI is looked for"): every label of the host and every path
//! segment (percent-decoded, `;` parameters included) with the detectors; the query as one
//! record (names as well as values); every header value except pure framing — subject headers
//! (each comma-separated element a subject), `Cookie` pairs and the query of URL-valued headers
//! read like form fields, category headers, and the detectors on everything else.

use super::detect::DetectCtx;
use super::form::{self, FormRecord};
use super::record::Records;
use super::{Findings, InspectConfig, Sink};

/// Headers that only frame the message (SPEC §3); every other header value is inspected.
/// `Host` is covered by [`inspect_url`].
pub const FRAMING_HEADERS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "keep-alive",
    "expect",
    "host",
];

fn run(
    cfg: &InspectConfig,
    transfer_date: time::Date,
    destination_sensitive: bool,
    body: impl FnOnce(&mut Sink<'_>),
) -> Findings {
    let mut out = Records::new(destination_sensitive);
    let mut watched = vec![false; cfg.watched_fields().len()];
    let mut sink = Sink {
        cfg,
        det: DetectCtx {
            detectors: cfg.detectors(),
            transfer_date,
            resident_id_sensitive: cfg.resident_id_sensitive(),
        },
        out: &mut out,
        watched: &mut watched,
    };
    body(&mut sink);
    let mut f = Findings::default();
    for r in out.iter() {
        for s in r.subjects() {
            f.add(s);
        }
    }
    f.add_outside(out.outside());
    f.watched_seen = cfg
        .watched_fields()
        .iter()
        .zip(&watched)
        .filter(|(_, s)| **s)
        .map(|(n, _)| n.clone())
        .collect();
    f
}

/// Inspects a URL query string (without `?`): one record; subject fields are parameter names
/// (bracket suffixes removed, every repeated value counted), and names as well as values go
/// through the detectors (`?<id>` alone too).
pub fn inspect_query(
    cfg: &InspectConfig,
    query: &str,
    transfer_date: time::Date,
    destination_sensitive: bool,
) -> Findings {
    run(cfg, transfer_date, destination_sensitive, |sink| {
        let mut rec = FormRecord::default();
        form::parse_pairs(query.as_bytes(), &mut rec, sink);
        rec.emit(sink, 0..0);
        sink.out.end_record(0..0, 0);
    })
}

/// Inspects the host and the path (without query) with the detectors: every host label, and
/// the percent-decoded path with its segment parameters. Hits are subjects of their own (they
/// are in no record).
pub fn inspect_url(
    cfg: &InspectConfig,
    host: &str,
    path: &str,
    transfer_date: time::Date,
    destination_sensitive: bool,
) -> Findings {
    run(cfg, transfer_date, destination_sensitive, |sink| {
        let mut rec = FormRecord::default();
        rec.detect(host.as_bytes(), sink);
        let mut decoded = Vec::new();
        percent_decode_path(path.as_bytes(), &mut decoded);
        rec.detect(&decoded, sink);
        rec.emit(sink, 0..0);
        sink.out.end_record(0..0, 0);
    })
}

/// Inspects free text (a WebSocket text message that is not JSON) with the detectors, as one
/// record without subject fields: each hit is a subject of its own (SPEC §3 "Records").
pub fn inspect_text(
    cfg: &InspectConfig,
    text: &str,
    transfer_date: time::Date,
    destination_sensitive: bool,
) -> Findings {
    run(cfg, transfer_date, destination_sensitive, |sink| {
        let mut rec = FormRecord::default();
        rec.detect(text.as_bytes(), sink);
        rec.emit(sink, 0..0);
        sink.out.end_record(0..0, 0);
    })
}

/// Inspects every header value except [`FRAMING_HEADERS`], as one record: a value of a header
/// in `inspection.subjects.headers` is a subject (each comma-separated element, each repeated
/// header line); a header whose name (without an `x-` prefix) is a category field adds its
/// category; `Cookie` pairs and the query of a URL-valued header are read like form fields;
/// every value goes through the detectors, percent-decoded when it holds escapes.
pub fn inspect_headers(
    cfg: &InspectConfig,
    headers: &http::HeaderMap,
    transfer_date: time::Date,
    destination_sensitive: bool,
) -> Findings {
    inspect_headers_except(cfg, headers, &[], transfer_date, destination_sensitive)
}

/// [`inspect_headers`] without the headers named in `skip` (lower case): headers the gate
/// itself set, such as the request id it created.
pub fn inspect_headers_except(
    cfg: &InspectConfig,
    headers: &http::HeaderMap,
    skip: &[&str],
    transfer_date: time::Date,
    destination_sensitive: bool,
) -> Findings {
    run(cfg, transfer_date, destination_sensitive, |sink| {
        let mut rec = FormRecord::default();
        let mut decoded = Vec::new();
        for (name, value) in headers {
            let n = name.as_str();
            if FRAMING_HEADERS.contains(&n) || skip.contains(&n) {
                continue;
            }
            let v = value.as_bytes();
            if cfg
                .headers()
                .iter()
                .any(|h| super::config::same_name(h.as_bytes(), n.as_bytes()))
            {
                for part in v.split(|c| *c == b',') {
                    rec.subject_value(part, sink);
                }
                continue;
            }
            let bare = n.strip_prefix("x-").unwrap_or(n);
            if let Some(info) = cfg.lookup(bare.as_bytes()) {
                if !super::record::trim(v).is_empty() {
                    rec.add_categories(info.categories);
                }
            }
            if n == "cookie" {
                form::parse_pairs(v, &mut rec, sink);
                continue;
            }
            let text: &[u8] = if memchr::memchr(b'%', v).is_some() {
                percent_decode_path(v, &mut decoded);
                &decoded
            } else {
                v
            };
            match memchr::memchr(b'?', v) {
                // A JSON document as the value (an event or context header).
                _ if rec.document(v, false, sink) => {}
                // A URL: the part before the query through the detectors, the query as fields.
                Some(q) => {
                    let before = memchr::memchr(b'?', text).unwrap_or(text.len());
                    rec.detect(&text[..before], sink);
                    form::parse_pairs(&v[q + 1..], &mut rec, sink);
                }
                None => rec.detect(text, sink),
            }
        }
        rec.emit(sink, 0..0);
        sink.out.end_record(0..0, 0);
    })
}

/// Percent-decodes a path or header value (`+` stays `+`).
pub(crate) fn percent_decode_path(s: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}
