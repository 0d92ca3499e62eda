//! The streaming inspection engine (SPEC §3): finds records, data subjects and PI
//! categories in a request's query, headers and body while it streams.
//!
//! Flow: the proxy builds one [`InspectConfig`] per configuration (lookup tables built once),
//! then per request a [`Scanner`] from the `Content-Type`, `Content-Encoding`, transfer date and
//! the destination's `sensitive` flag. It feeds body chunks; completed records appear in
//! [`Scanner::records`] as soon as they end, each with the offset of the *original* body up to
//! which bytes may be released once its subjects are reserved; [`Scanner::release_offset`]
//! tells how far the body may go when every record so far is judged (so bodies without PI are
//! never held). Failures are typed [`Unreadable`] outcomes (the proxy's 451
//! `unreadable_body`). [`inspect_url`] (host labels, path segments), [`inspect_query`] and
//! [`inspect_headers`] (every header value but framing) cover the request head;
//! [`inspect_bytes`] is the whole-buffer convenience. Categories found outside every record
//! ([`Scanner::outside_categories`], [`Findings::outside`]) apply to every subject of the
//! request, head and body together.
//!
//! Submodules: [`config`] (settings, lookups), [`mediatype`] (strict `Content-Type`),
//! `pipeline` (the decoding chain) with `decode` (content codings), [`charset`] and
//! [`transfer`] (multipart transfer encodings), whose release mapping is `checkpoints`; the
//! formats `json` (JSON, NDJSON; its stage 1, the SIMD index, is `json_index`, whose
//! run-time choice of SIMD path, the crate's one `unsafe` module, is `simd`; its lexical
//! helpers `json_lex`; documents inside values are `json::embedded`), `csv`, `form` (form
//! bodies and queries), `multipart`, `xml` (XML and SOAP on `quick-xml`; its charset stage
//! settles the declaration's `encoding` with the `Content-Type`), `xlsx` (spreadsheets, judged
//! whole; its sheet reader `xlsx::sheet`), `protobuf` (protobuf messages, schemaless by its
//! `wire` walker; gRPC de-framing in `protobuf::grpc`), `head` (URL and headers), `detect` (one file per
//! detector), [`record`] (outputs), [`error`].

pub mod charset;
mod checkpoints;
pub mod config;
mod csv;
mod decode;
pub mod detect;
pub mod error;
mod form;
pub(crate) use form::percent_decode;
mod head;
mod json;
mod json_index;
mod json_lex;
pub mod mediatype;
mod multipart;
mod pipeline;
mod protobuf;
pub mod record;
mod simd;
pub mod transfer;
mod xlsx;
mod xml;

#[cfg(test)]
mod tests;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;

pub use charset::Charset;
pub use config::{
    ConfigError, DecodeLimits, Detector, DetectorSet, InspectConfig, Limits,
    DEFAULT_MAX_WORKBOOK_BYTES,
};
pub use decode::{decoder_cost, Coding, MAX_BROTLI_WINDOW_BITS};
pub use detect::{resident_id_birth_date, resident_id_check_char, resident_id_valid};
pub use error::Unreadable;
pub use head::{
    inspect_headers, inspect_headers_except, inspect_query, inspect_text, inspect_url,
    FRAMING_HEADERS,
};
#[doc(hidden)]
pub use json_index::stage1_positions;
pub use protobuf::schema::{ProtobufSchemas, SchemaError, MAX_DESCRIPTOR_SET_BYTES};
pub use record::{Namespace, Record, RecordRef, Records, Subject, SubjectRef};
pub use simd::{selected as simd_path, Path as SimdPath, SIMD_ENV};

use crate::model::CategorySet;
use detect::DetectCtx;
use mediatype::MediaType;

/// Everything a format scanner writes to while it runs.
pub(crate) struct Sink<'a> {
    pub cfg: &'a InspectConfig,
    pub det: DetectCtx,
    pub out: &'a mut Records,
    pub watched: &'a mut [bool],
}

impl Sink<'_> {
    pub(crate) fn saw_watched(&mut self, w: u16) {
        if let Some(b) = self.watched.get_mut(w as usize) {
            *b = true;
        }
    }
}

/// The body formats the engine reads (from `Content-Type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json`, `*+json`.
    Json,
    /// `application/x-ndjson`, `application/jsonl`, `application/json-seq` (and aliases).
    JsonSeq,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `multipart/form-data` with its boundary.
    Multipart(Vec<u8>),
    /// `text/csv`; `header` is false for `header=absent` (no row gives field names).
    Csv {
        /// Whether the first row is a header row.
        header: bool,
    },
    /// `application/xml`, `text/xml`, `application/soap+xml`, `*/*+xml`.
    Xml {
        /// The `charset` the type names, if any: the XML declaration must agree with it.
        named: Option<Charset>,
    },
    /// An xlsx workbook, judged whole: its media type, a part named `*.xlsx`, or (`sniffed`)
    /// an `application/octet-stream` body or part, which is a workbook only when its content
    /// is a zip holding `xl/workbook.xml` (otherwise an unknown type, as before).
    Xlsx {
        /// The type did not say xlsx: only the content does.
        sniffed: bool,
    },
    /// `application/x-protobuf`, `application/protobuf`: the whole body is one protobuf
    /// message.
    Protobuf {
        /// The message type the media type names (its `proto` or `messageType` parameter).
        message_type: Option<String>,
    },
    /// `application/grpc`, `application/grpc+proto` and (`web`) `application/grpc-web`,
    /// `application/grpc-web+proto`: length-prefixed protobuf messages.
    Grpc {
        /// gRPC-Web (a trailer frame from the client is unreadable).
        web: bool,
        /// The type of the call's request messages, when known (the type's `proto` or
        /// `messageType` parameter; [`Scanner::for_request`] resolves the method path with
        /// the descriptor sets).
        message_type: Option<String>,
    },
}

/// The xlsx media type.
pub const XLSX_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// A body the scanner holds whole before anything of it may be released (see
/// [`Scanner::holds_whole`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WholeBody {
    /// A declared xlsx workbook: over `max_workbook_bytes` it is 413.
    Workbook,
    /// An `application/octet-stream` body, held to see whether it is a workbook.
    Sniffed,
}

/// How a body is read: its format and charset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyType {
    /// The format.
    pub kind: BodyKind,
    /// The charset of the text (UTF-8 unless the type says otherwise).
    pub charset: Charset,
}

/// Reads one `Content-Type` value (RFC 9110): the format and charset of the body.
///
/// # Errors
/// [`Unreadable::BadContentType`] when the value breaks the grammar, repeats a parameter, or
/// is a multipart type without a valid boundary; [`Unreadable::UnknownContentType`] for a
/// type the engine does not read; [`Unreadable::UnsupportedCharset`] for another charset.
pub fn body_type(value: &[u8]) -> Result<BodyType, Unreadable> {
    let mt = MediaType::parse(value).map_err(|_| Unreadable::BadContentType)?;
    let kind = match mt.essence() {
        "application/json" => BodyKind::Json,
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/jsonlines"
        | "application/json-seq" => BodyKind::JsonSeq,
        "application/x-www-form-urlencoded" => BodyKind::Form,
        "text/csv" => BodyKind::Csv {
            header: match mt
                .param("header")
                .map(<[u8]>::to_ascii_lowercase)
                .as_deref()
            {
                None | Some(b"present") => true,
                Some(b"absent") => false,
                Some(_) => return Err(Unreadable::BadContentType),
            },
        },
        "multipart/form-data" => {
            let b = mt.param("boundary").ok_or(Unreadable::BadContentType)?;
            if !valid_boundary(b) {
                return Err(Unreadable::BadContentType);
            }
            BodyKind::Multipart(b.to_vec())
        }
        XLSX_TYPE => BodyKind::Xlsx { sniffed: false },
        "application/x-protobuf" | "application/protobuf" => BodyKind::Protobuf {
            message_type: message_type_param(&mt)?,
        },
        "application/grpc" | "application/grpc+proto" => BodyKind::Grpc {
            web: false,
            message_type: message_type_param(&mt)?,
        },
        "application/grpc-web" | "application/grpc-web+proto" => BodyKind::Grpc {
            web: true,
            message_type: message_type_param(&mt)?,
        },
        "application/octet-stream" => BodyKind::Xlsx { sniffed: true },
        // gRPC with other message encodings (JSON, …) is framed binary: not read.
        e if e.starts_with("application/grpc") => return Err(Unreadable::UnknownContentType),
        e if e.starts_with("application/") && e.ends_with("+json") => BodyKind::Json,
        "application/xml" | "text/xml" => BodyKind::Xml { named: None },
        e if e.ends_with("+xml") => BodyKind::Xml { named: None },
        _ => return Err(Unreadable::UnknownContentType),
    };
    // A workbook or a protobuf message is binary: a charset parameter means nothing to it.
    if matches!(
        kind,
        BodyKind::Xlsx { .. } | BodyKind::Protobuf { .. } | BodyKind::Grpc { .. }
    ) {
        return Ok(BodyType {
            kind,
            charset: Charset::Utf8,
        });
    }
    let charset = match mt.param("charset") {
        None => Charset::Utf8,
        Some(l) => Charset::from_label(l).ok_or(Unreadable::UnsupportedCharset)?,
    };
    // A multipart body's parts carry their own charsets; a charset on the whole would be read
    // by some servers and ignored by others.
    if matches!(kind, BodyKind::Multipart(_)) && charset != Charset::Utf8 {
        return Err(Unreadable::UnsupportedCharset);
    }
    let kind = match kind {
        BodyKind::Xml { .. } => BodyKind::Xml {
            named: mt.param("charset").map(|_| charset),
        },
        k => k,
    };
    Ok(BodyType { kind, charset })
}

/// The message type a protobuf media type names: its `proto` or `messageType` parameter
/// (`application/x-protobuf; proto=pkg.Msg`), a fully qualified name without a leading dot.
///
/// # Errors
/// [`Unreadable::BadContentType`] when both are given, or the value is not a name.
fn message_type_param(mt: &MediaType) -> Result<Option<String>, Unreadable> {
    let v = match (mt.param("proto"), mt.param("messagetype")) {
        (None, None) => return Ok(None),
        (Some(v), None) | (None, Some(v)) => v,
        (Some(_), Some(_)) => return Err(Unreadable::BadContentType),
    };
    let v = v.strip_prefix(b".").unwrap_or(v);
    let name_ok = !v.is_empty()
        && v.split(|c| *c == b'.')
            .all(|p| !p.is_empty() && p.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_'));
    if !name_ok {
        return Err(Unreadable::BadContentType);
    }
    Ok(Some(String::from_utf8_lossy(v).into_owned()))
}

/// RFC 2046 §5.1.1: 1 to 70 of `bchars`, not ending in a space.
fn valid_boundary(b: &[u8]) -> bool {
    let bchar = |c: &u8| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(c);
    (1..=70).contains(&b.len()) && b.iter().all(bchar) && b.last() != Some(&b' ')
}

/// A body format scanner.
#[derive(Debug)]
pub(crate) enum Format {
    Json(json::JsonScanner),
    Csv(csv::CsvScanner),
    Form(form::FormScanner),
    Multipart(Box<multipart::MultipartScanner>),
    /// A multipart text field's value, collected whole.
    Text(multipart::TextValue),
    Xml(Box<xml::XmlScanner>),
    /// An xlsx workbook, held whole.
    Xlsx(xlsx::XlsxScanner),
    /// One protobuf message, held whole.
    Protobuf(protobuf::ProtobufScanner),
    /// gRPC frames.
    Grpc(Box<protobuf::grpc::GrpcScanner>),
}

impl Format {
    /// A format; `grpc_encoding` is the call's `grpc-encoding` (used by gRPC only), `ty` the
    /// message type protobuf and gRPC bodies are read as.
    pub(crate) fn with_protobuf(
        kind: &BodyKind,
        grpc_encoding: Result<Option<Coding>, Unreadable>,
        ty: Option<prost_reflect::MessageDescriptor>,
    ) -> Self {
        match kind {
            BodyKind::Protobuf { .. } => Format::Protobuf(protobuf::ProtobufScanner::new(ty)),
            BodyKind::Grpc { web, .. } => Format::Grpc(Box::new(protobuf::grpc::GrpcScanner::new(
                *web,
                grpc_encoding,
                ty,
            ))),
            BodyKind::Json => Format::Json(json::JsonScanner::new(false)),
            BodyKind::JsonSeq => Format::Json(json::JsonScanner::new(true)),
            BodyKind::Form => Format::Form(form::FormScanner::default()),
            BodyKind::Csv { header } => Format::Csv(csv::CsvScanner::new(*header)),
            BodyKind::Multipart(b) => {
                Format::Multipart(Box::new(multipart::MultipartScanner::new(b)))
            }
            BodyKind::Xml { named } => Format::Xml(Box::new(xml::XmlScanner::new(*named))),
            BodyKind::Xlsx { sniffed } => Format::Xlsx(xlsx::XlsxScanner::new(*sniffed)),
        }
    }

    /// Bytes the format holds inside the scanner (a workbook; a multipart body's current
    /// workbook part), beyond what the proxy holds of the body itself.
    pub(crate) fn held_bytes(&mut self) -> u64 {
        match self {
            Format::Xlsx(s) => s.held_bytes(),
            Format::Multipart(s) => s.held_bytes(),
            Format::Protobuf(s) => s.held_bytes(),
            Format::Grpc(s) => s.held_bytes(),
            _ => 0,
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        match self {
            Format::Json(s) => s.feed(data, sink),
            Format::Csv(s) => s.feed(data, sink),
            Format::Form(s) => s.feed(data, sink),
            Format::Multipart(s) => s.feed(data, sink),
            Format::Text(s) => s.feed(data, sink),
            Format::Xml(s) => s.feed(data, sink),
            Format::Xlsx(s) => s.feed(data, sink),
            Format::Protobuf(s) => s.feed(data, sink),
            Format::Grpc(s) => s.feed(data, sink),
        }
    }

    pub(crate) fn finish(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        match self {
            Format::Json(s) => s.finish(sink),
            Format::Csv(s) => s.finish(sink),
            Format::Form(s) => s.finish(sink),
            Format::Multipart(s) => s.finish(sink),
            Format::Text(s) => s.finish(),
            Format::Xml(s) => s.finish(sink),
            Format::Xlsx(s) => s.finish(sink),
            Format::Protobuf(s) => s.finish(sink),
            Format::Grpc(s) => s.finish(sink),
        }
    }

    pub(crate) fn frontier(&mut self) -> u64 {
        match self {
            Format::Json(s) => s.frontier(),
            Format::Csv(s) => s.frontier(),
            Format::Form(s) => s.frontier(),
            Format::Multipart(s) => s.frontier(),
            Format::Text(_) => 0,
            Format::Xml(s) => s.frontier(),
            Format::Xlsx(s) => s.frontier(),
            Format::Protobuf(s) => s.frontier(),
            Format::Grpc(s) => s.frontier(),
        }
    }
}

/// The decoding stages and format for a body or part: content coding, then charset.
pub(crate) fn pipeline(
    format: Format,
    charset: Charset,
    coding: Option<Coding>,
    limits: DecodeLimits,
    transfer: Option<transfer::TransferEncoding>,
) -> Result<pipeline::Pipeline, Unreadable> {
    let mut stages = Vec::new();
    if let Some(t) = transfer {
        stages.push(pipeline::Stage::Transfer(transfer::TransferDecoder::new(t)));
    }
    if let Some(c) = coding {
        stages.push(pipeline::Stage::Content(decode::Decoder::new(c, limits)?));
    }
    if let Format::Xml(x) = &format {
        // XML settles its charset with the declaration in the body.
        stages.push(pipeline::Stage::Xml(x.decoder()));
    } else if charset.needs_decoding() {
        stages.push(pipeline::Stage::Charset(charset::Transcoder::new(charset)));
    }
    Ok(pipeline::Pipeline::new(stages, format))
}

/// What a gRPC body needs beyond its type: the call's `grpc-encoding` and the method path.
struct Grpc<'a> {
    encoding: Result<Option<Coding>, Unreadable>,
    path: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Open,
    /// The type or encoding cannot be read: an error as soon as a body byte arrives.
    Deferred(Unreadable),
    Failed,
    Finished,
}

/// The per-request streaming scanner. Memory is bounded by `max_record_bytes` plus small
/// buffers, whatever the body size; results do not depend on how the body is chunked.
///
/// `C` is how the configuration is held: `Arc<InspectConfig>` (the default, for a body that
/// outlives the borrow, as in the proxy) or `&InspectConfig`. `Debug` shows the state and
/// counts, never body bytes.
pub struct Scanner<C: Borrow<InspectConfig> = Arc<InspectConfig>> {
    cfg: C,
    det: DetectCtx,
    pipe: Option<pipeline::Pipeline>,
    records: Records,
    watched: Vec<bool>,
    fed: u64,
    phase: Phase,
    whole: Option<WholeBody>,
}

impl<C: Borrow<InspectConfig>> std::fmt::Debug for Scanner<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("phase", &self.phase)
            .field("bytes_fed", &self.fed)
            .field("records", &self.records)
            .field("decoded", &self.pipe.as_ref().is_some_and(|p| p.decodes()))
            .finish_non_exhaustive()
    }
}

impl<C: Borrow<InspectConfig>> Scanner<C> {
    /// A scanner for one request body. `content_type` / `content_encoding` are the header
    /// values; `transfer_date` is today in Asia/Shanghai (for the minors rule);
    /// `destination_sensitive` marks every subject sensitive. An unreadable type or encoding is
    /// reported by the first [`Scanner::feed`] of a non-empty chunk (an empty body is fine).
    pub fn new(
        cfg: C,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        transfer_date: time::Date,
        destination_sensitive: bool,
    ) -> Self {
        let ct = content_type.map(str::as_bytes);
        Self::build(
            cfg,
            Ok(ct),
            Ok(content_encoding),
            Grpc {
                encoding: Ok(None),
                path: None,
            },
            transfer_date,
            destination_sensitive,
        )
    }

    /// A scanner for a request's body, from its headers: like [`Scanner::new`], and a body
    /// whose `Content-Type` or `Content-Encoding` field is sent more than once (readers
    /// disagree on which one counts) is unreadable. Same as [`Scanner::for_request`] without
    /// a path.
    pub fn for_headers(
        cfg: C,
        headers: &http::HeaderMap,
        transfer_date: time::Date,
        destination_sensitive: bool,
    ) -> Self {
        Self::for_request(cfg, headers, None, transfer_date, destination_sensitive)
    }

    /// A scanner for a request's body, from its headers and its URI path (`uri_path`, e.g.
    /// `/partner.v1.CustomerService/Upload`, without the query): like
    /// [`Scanner::for_headers`]; for a gRPC body the path names the method, whose input type
    /// the messages are read as when `inspection.protobuf_descriptor_sets` describe it, and
    /// the `grpc-encoding` header (sent at most once) says how compressed messages are
    /// decoded. The path is used for nothing else.
    pub fn for_request(
        cfg: C,
        headers: &http::HeaderMap,
        uri_path: Option<&str>,
        transfer_date: time::Date,
        destination_sensitive: bool,
    ) -> Self {
        let single = |name: &str| {
            let mut all = headers.get_all(name).iter();
            match (all.next(), all.next()) {
                (first, None) => Ok(first),
                _ => Err(()),
            }
        };
        let ct = single(http::header::CONTENT_TYPE.as_str())
            .map(|v| v.map(http::HeaderValue::as_bytes))
            .map_err(|()| Unreadable::BadContentType);
        let ce = single(http::header::CONTENT_ENCODING.as_str())
            .map_err(|()| Unreadable::UnknownEncoding)
            .and_then(|v| {
                v.map(|v| v.to_str().map_err(|_| Unreadable::UnknownEncoding))
                    .transpose()
            });
        let grpc_encoding = single("grpc-encoding")
            .map_err(|()| Unreadable::UnknownEncoding)
            .and_then(|v| {
                v.map(|v| v.to_str().map_err(|_| Unreadable::UnknownEncoding))
                    .transpose()
            })
            .and_then(protobuf::grpc::parse_encoding);
        let grpc = Grpc {
            encoding: grpc_encoding,
            path: uri_path,
        };
        Self::build(cfg, ct, ce, grpc, transfer_date, destination_sensitive)
    }

    fn build(
        cfg: C,
        content_type: Result<Option<&[u8]>, Unreadable>,
        content_encoding: Result<Option<&str>, Unreadable>,
        grpc: Grpc<'_>,
        transfer_date: time::Date,
        destination_sensitive: bool,
    ) -> Self {
        let c: &InspectConfig = cfg.borrow();
        let det = DetectCtx {
            detectors: c.detectors(),
            transfer_date,
            resident_id_sensitive: c.resident_id_sensitive(),
        };
        let watched = vec![false; c.watched_fields().len()];
        let limits = c.decode_limits();
        let mut whole = None;
        let pipe = content_type
            .and_then(|ct| body_type(ct.ok_or(Unreadable::UnknownContentType)?))
            .and_then(|bt| {
                whole = match bt.kind {
                    BodyKind::Xlsx { sniffed: false } => Some(WholeBody::Workbook),
                    BodyKind::Xlsx { sniffed: true } => Some(WholeBody::Sniffed),
                    _ => None,
                };
                let coding = Coding::parse(content_encoding?)?;
                let ty = protobuf::message_descriptor(&bt.kind, grpc.path, c);
                let format = Format::with_protobuf(&bt.kind, grpc.encoding, ty);
                pipeline(format, bt.charset, coding, limits, None)
            });
        let (pipe, phase) = match pipe {
            Ok(p) => (Some(p), Phase::Open),
            Err(e) => (None, Phase::Deferred(e)),
        };
        Scanner {
            cfg,
            det,
            pipe,
            records: Records::new(destination_sensitive),
            watched,
            fed: 0,
            phase,
            whole,
        }
    }

    /// Whether the body's type makes the scanner hold it whole (an xlsx workbook, or an
    /// `application/octet-stream` body sniffed for one): nothing is released before the end,
    /// so the proxy reads it whole when it can (SPEC §3 "spreadsheets").
    pub fn holds_whole(&self) -> Option<WholeBody> {
        match self.phase {
            Phase::Open => self.whole,
            _ => None,
        }
    }

    /// Bytes the scanner itself holds (a workbook, or a multipart body's workbook part, as
    /// decoded): charged to the buffered-bytes budget on top of the body bytes the proxy holds.
    pub fn buffered_bytes(&mut self) -> u64 {
        match (&self.phase, self.pipe.as_mut()) {
            (Phase::Open, Some(p)) => p.format_mut().held_bytes(),
            _ => 0,
        }
    }

    /// Scans the next chunk of the original (possibly encoded) body.
    ///
    /// # Errors
    /// The body is unreadable; the scanner is then closed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Unreadable> {
        match &self.phase {
            Phase::Open => {}
            Phase::Deferred(e) if !chunk.is_empty() => {
                let e = e.clone();
                self.phase = Phase::Failed;
                return Err(e);
            }
            Phase::Deferred(_) => return Ok(()),
            Phase::Failed | Phase::Finished => return Err(Unreadable::Closed),
        }
        let r = self.run(Some(chunk));
        self.fed += chunk.len() as u64;
        self.after_run(r)
    }

    /// Ends the body: completes the last record.
    ///
    /// # Errors
    /// The body is truncated or otherwise unreadable.
    pub fn finish(&mut self) -> Result<(), Unreadable> {
        match &self.phase {
            Phase::Open => {}
            Phase::Deferred(_) => {
                self.phase = Phase::Finished;
                return Ok(());
            }
            Phase::Failed | Phase::Finished => return Err(Unreadable::Closed),
        }
        let before = self.records.len();
        let r = self.run(None);
        let r = self.after_run(r);
        if r.is_ok() {
            self.phase = Phase::Finished;
            let end = self.fed;
            self.records.map_release(before, |_| end);
        }
        r
    }

    fn run(&mut self, chunk: Option<&[u8]>) -> Result<(), Unreadable> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(());
        };
        let mut sink = Sink {
            cfg: self.cfg.borrow(),
            det: self.det,
            out: &mut self.records,
            watched: &mut self.watched,
        };
        match chunk {
            Some(c) => pipe.feed(c, &mut sink),
            None => pipe.finish(&mut sink),
        }
    }

    fn after_run(&mut self, r: Result<(), Unreadable>) -> Result<(), Unreadable> {
        if let Err(e) = r {
            self.phase = Phase::Failed;
            return Err(e);
        }
        Ok(())
    }

    /// Records completed so far (since the last [`Scanner::clear_records`]).
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Forgets the completed records (after the proxy has reserved their subjects).
    pub fn clear_records(&mut self) {
        self.records.clear();
    }

    /// Takes the completed records as owned values.
    pub fn take_records(&mut self) -> Vec<Record> {
        let v = self.records.iter().map(|r| r.to_owned()).collect();
        self.records.clear();
        v
    }

    /// Offset of the original body up to which bytes may be forwarded once every record
    /// returned so far is judged: no byte of a later, unjudged record lies before it. After a
    /// successful [`Scanner::finish`] it is the whole body.
    pub fn release_offset(&mut self) -> u64 {
        match self.phase {
            Phase::Finished => return self.fed,
            Phase::Failed => return 0,
            Phase::Deferred(_) => return 0,
            Phase::Open => {}
        }
        match self.pipe.as_mut() {
            Some(p) => p.frontier(),
            None => 0,
        }
    }

    /// Original body bytes fed so far.
    pub fn bytes_fed(&self) -> u64 {
        self.fed
    }

    /// Categories of fields seen outside every record so far: they apply to every subject of
    /// the request (SPEC §3), including records completed before they were seen.
    pub fn outside_categories(&self) -> CategorySet {
        self.records.outside()
    }

    /// The watched field names (see [`InspectConfig::with_watched_fields`]) seen in the body
    /// so far, as configured.
    pub fn watched_fields_seen(&self) -> impl Iterator<Item = &str> + '_ {
        self.cfg
            .borrow()
            .watched_fields()
            .iter()
            .zip(&self.watched)
            .filter(|(_, seen)| **seen)
            .map(|(n, _)| n.as_str())
    }
}

/// The subjects of a request part (or a whole request), merged by identity. `Debug` shows
/// counts only.
#[derive(Default, Clone)]
pub struct Findings {
    /// Records in body order (empty for query and headers).
    pub records: Vec<Record>,
    merged: HashMap<(Namespace, Vec<u8>), (CategorySet, bool)>,
    /// Categories seen outside every record: applied to every subject.
    outside: CategorySet,
    /// Watched field names seen.
    pub watched_seen: Vec<String>,
}

impl std::fmt::Debug for Findings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Findings")
            .field("records", &self.records.len())
            .field("subjects", &self.subject_count())
            .field("sensitive", &self.sensitive_count())
            .field("categories", &self.categories())
            .field("outside", &self.outside)
            .field("watched_seen", &self.watched_seen)
            .finish()
    }
}

impl Findings {
    /// Merges one subject (categories and sensitivity are unioned).
    pub fn add(&mut self, s: SubjectRef<'_>) {
        let e = self
            .merged
            .entry((s.namespace, s.id.to_vec()))
            .or_insert((CategorySet::EMPTY, false));
        e.0 = e.0.union(s.categories);
        e.1 |= s.sensitive;
    }

    /// Adds categories seen outside every record (they apply to every subject).
    pub fn add_outside(&mut self, cats: CategorySet) {
        self.outside = self.outside.union(cats);
    }

    /// Categories seen outside every record.
    pub fn outside(&self) -> CategorySet {
        self.outside
    }

    fn resolve(&self, cats: CategorySet, sensitive: bool) -> (CategorySet, bool) {
        if self.merged.is_empty() {
            return (cats, sensitive);
        }
        (
            cats.union(self.outside),
            sensitive || self.outside.is_sensitive(),
        )
    }

    /// Merges another set of findings (of the same request).
    pub fn extend(&mut self, other: Findings) {
        self.outside = self.outside.union(other.outside);
        for ((ns, id), (cats, sens)) in other.merged {
            let e = self
                .merged
                .entry((ns, id))
                .or_insert((CategorySet::EMPTY, false));
            e.0 = e.0.union(cats);
            e.1 |= sens;
        }
        self.records.extend(other.records);
        for w in other.watched_seen {
            if !self.watched_seen.contains(&w) {
                self.watched_seen.push(w);
            }
        }
    }

    /// Unique subjects (with the outside categories applied), sorted by namespace and
    /// identifier.
    pub fn subjects(&self) -> Vec<Subject> {
        let mut v: Vec<Subject> = self
            .merged
            .iter()
            .map(|((ns, id), (cats, sens))| {
                let (categories, sensitive) = self.resolve(*cats, *sens);
                Subject {
                    namespace: *ns,
                    id: id.clone(),
                    categories,
                    sensitive,
                }
            })
            .collect();
        v.sort_by(|a, b| (a.namespace, &a.id).cmp(&(b.namespace, &b.id)));
        v
    }

    /// Number of unique subjects.
    pub fn subject_count(&self) -> usize {
        self.merged.len()
    }

    /// Number of unique sensitive subjects.
    pub fn sensitive_count(&self) -> usize {
        self.merged
            .values()
            .filter(|(c, s)| self.resolve(*c, *s).1)
            .count()
    }

    /// The union of every subject's categories.
    pub fn categories(&self) -> CategorySet {
        let all = self
            .merged
            .values()
            .fold(CategorySet::EMPTY, |a, (c, _)| a.union(*c));
        self.resolve(all, false).0
    }
}

/// Inspects a whole body at once (small bodies, tests).
///
/// # Errors
/// The body is unreadable.
pub fn inspect_bytes(
    cfg: &InspectConfig,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    transfer_date: time::Date,
    destination_sensitive: bool,
) -> Result<Findings, Unreadable> {
    let mut s = Scanner::new(
        cfg,
        content_type,
        content_encoding,
        transfer_date,
        destination_sensitive,
    );
    s.feed(body)?;
    s.finish()?;
    let mut f = Findings::default();
    for r in s.records().iter() {
        for sub in r.subjects() {
            f.add(sub);
        }
        f.records.push(r.to_owned());
    }
    f.outside = s.outside_categories();
    f.watched_seen = s.watched_fields_seen().map(str::to_owned).collect();
    Ok(f)
}
