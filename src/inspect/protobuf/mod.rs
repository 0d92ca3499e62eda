//! Protobuf and gRPC bodies (SPEC §3 "gRPC and protobuf"): owns reading one protobuf message
//! into records, the whole-body `application/x-protobuf` format ([`ProtobufScanner`]) and the
//! gRPC de-framer ([`grpc::GrpcScanner`]).
//!
//! A message is read like a JSON object: it is one record, its nested messages are nested
//! objects. Without a schema ([`wire`]) there are no field names: every length-delimited field
//! that is UTF-8 text goes to the detectors, every one that parses as a message is walked as a
//! nested message (a field that is both is read as both), and a varint is a number the way a
//! JSON number is (eleven digits or more go to the detectors: a mobile number sent as an
//! integer counts). 64-bit and 32-bit fields are not read without a schema: they are doubles,
//! floats, hashes or fixed identifiers far more often than numbers a person is known by, and
//! the bits of a double read as an integer would pass the bank-card check one time in ten.
//! No configured field name is ever looked up without a schema, so no subject field or
//! category rule can match a field number.
//!
//! The rules of the records are those of `json::records` (a message that directly holds a
//! subject field with a value is a record; otherwise its detector hits, categories and
//! subject-container values go to the enclosing message, and at the top the hits are loose
//! subjects of one record and the categories apply to the whole request), over a message held
//! whole (at most `max_record_bytes`), so no envelope is ever decided.
//! Nesting deeper than `max_depth` is unreadable.

pub(crate) mod grpc;
pub(crate) mod wire;

use std::ops::Range;

use super::config::FieldInfo;
use super::detect;
use super::error::Unreadable;
use super::record::{trim, Namespace};
use super::Sink;
use crate::model::CategorySet;
use wire::{Fields, Value};

#[derive(Debug, Clone, Copy)]
struct Frame {
    direct: bool,
    subjs_start: usize,
    subj_base: usize,
    cats: CategorySet,
    hits_start: usize,
}

#[derive(Debug, Clone, Copy)]
struct Hit {
    ns: Namespace,
    id: (u32, u32),
    cats: CategorySet,
}

/// Reads whole messages into records; its buffers are reused from message to message.
#[derive(Debug, Default)]
pub(crate) struct MessageReader {
    frames: Vec<Frame>,
    hits: Vec<Hit>,
    hit_bytes: Vec<u8>,
    subjs: Vec<(u32, u32)>,
    subj_bytes: Vec<u8>,
    /// Frame depth inside which every scalar is a subject value (a subject container).
    container: Option<usize>,
    /// Offset of the message being read in the decoded body (for error offsets).
    base: u64,
    /// The place of the message being read (every record of it takes it).
    span: Range<u64>,
    /// The release offset of its records.
    release: u64,
}

impl MessageReader {
    /// Reads one whole message: its records go to `sink` with `span` (its place in the decoded
    /// body) and `release` (how far the body may go once they are judged); `at` is the offset
    /// its errors are counted from (its first byte, or its frame's when it was compressed).
    ///
    /// # Errors
    /// Malformed wire data ([`Unreadable::Malformed`] at the bad field), nesting deeper than
    /// `max_depth` ([`Unreadable::TooDeep`]).
    pub(crate) fn read(
        &mut self,
        msg: &[u8],
        at: u64,
        span: Range<u64>,
        release: u64,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        self.frames.clear();
        self.hits.clear();
        self.hit_bytes.clear();
        self.subjs.clear();
        self.subj_bytes.clear();
        self.container = None;
        self.base = at;
        self.span = span;
        self.release = release;
        if let Some(at) = first_error(msg) {
            return Err(Unreadable::Malformed {
                offset: self.base + at as u64,
            });
        }
        self.open(FieldInfo::default(), 0, sink)?;
        self.walk_schemaless(msg, 0, sink)?;
        self.close(sink);
        Ok(())
    }

    /// The fields of a message known to be well-formed at its top level.
    fn walk_schemaless(
        &mut self,
        msg: &[u8],
        base: usize,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        for f in Fields::new(msg).flatten() {
            match f.value {
                Value::Varint(v) => self.number(FieldInfo::default(), v, sink),
                Value::Bytes(b) => {
                    let at = base + (b.as_ptr() as usize - msg.as_ptr() as usize);
                    self.bytes_schemaless(FieldInfo::default(), b, at, sink)?;
                }
                // See the module docs.
                Value::Fixed64(_) | Value::Fixed32(_) => {}
            }
        }
        Ok(())
    }

    /// A length-delimited field read without a schema: as text when it is UTF-8, as a nested
    /// message when it parses as one, both when both.
    fn bytes_schemaless(
        &mut self,
        info: FieldInfo,
        b: &[u8],
        at: usize,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        if b.is_empty() {
            return Ok(());
        }
        if simd_utf8(b) {
            self.text(info, b, sink);
        }
        if wire::is_message(b) {
            self.open(info, at, sink)?;
            self.walk_schemaless(b, at, sink)?;
            self.close(sink);
        }
        Ok(())
    }

    /// A text value of a field.
    fn text(&mut self, info: FieldInfo, s: &[u8], sink: &mut Sink<'_>) {
        if info.subject_rank.is_some() || !info.categories.is_empty() || self.container.is_some() {
            let t = trim(s);
            if !t.is_empty() {
                self.field_value(info, t);
            }
        }
        self.detect(s, sink);
    }

    /// A number, as a JSON number is read: eleven digits or more go to the detectors.
    fn number(&mut self, info: FieldInfo, v: u64, sink: &mut Sink<'_>) {
        let mut buf = [0u8; 20];
        let s = wire::decimal(v, &mut buf);
        if info.subject_rank.is_some() || !info.categories.is_empty() || self.container.is_some() {
            self.field_value(info, s);
        }
        if s.len() >= 11 {
            self.detect(s, sink);
        }
    }

    fn field_value(&mut self, info: FieldInfo, v: &[u8]) {
        let Some(f) = self.frames.last_mut() else {
            return;
        };
        f.cats = f.cats.union(info.categories);
        let direct = info.subject_rank.is_some() && self.container.is_none();
        if !direct && self.container.is_none() {
            return;
        }
        f.direct |= direct;
        let a = self.subj_bytes.len() as u32;
        self.subj_bytes.extend_from_slice(v);
        self.subjs.push((a, self.subj_bytes.len() as u32));
    }

    fn detect(&mut self, s: &[u8], sink: &mut Sink<'_>) {
        let hits = &mut self.hits;
        let bytes = &mut self.hit_bytes;
        detect::scan(s, &sink.det, &mut |ns, id: &[u8], cats| {
            let a = bytes.len() as u32;
            bytes.extend_from_slice(id);
            hits.push(Hit {
                ns,
                id: (a, bytes.len() as u32),
                cats,
            });
        });
    }

    /// Opens a message held by a field described by `info` (the top message: the default).
    fn open(&mut self, info: FieldInfo, at: usize, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if self.frames.len() >= sink.cfg.max_depth() {
            return Err(Unreadable::TooDeep {
                offset: self.base + at as u64,
            });
        }
        if let Some(p) = self.frames.last_mut() {
            p.cats = p.cats.union(info.categories);
            if info.subject_rank.is_some() && self.container.is_none() {
                p.direct = true;
                self.container = Some(self.frames.len() + 1);
            }
        }
        self.frames.push(Frame {
            direct: false,
            subjs_start: self.subjs.len(),
            subj_base: self.subj_bytes.len(),
            cats: CategorySet::EMPTY,
            hits_start: self.hits.len(),
        });
        Ok(())
    }

    /// Closes the innermost message: a record when it directly holds a subject field with a
    /// value (emitted at once, with the whole message's place: a message is held whole);
    /// otherwise its hits, categories and subject-container values go to the enclosing
    /// message, or, at the top, the hits are loose subjects of one record and the categories
    /// apply to the whole request.
    fn close(&mut self, sink: &mut Sink<'_>) {
        if self.container == Some(self.frames.len()) {
            self.container = None;
        }
        let Some(f) = self.frames.pop() else { return };
        let has_values = self.subjs.len() > f.subjs_start;
        if f.direct && has_values {
            let mut cats = f.cats;
            for h in &self.hits[f.hits_start..] {
                cats = cats.union(h.cats);
            }
            for &(a, b) in &self.subjs[f.subjs_start..] {
                let id = &self.subj_bytes[a as usize..b as usize];
                sink.out.subject(Namespace::Field, id, cats);
            }
            self.truncate_hits(f.hits_start);
            self.subjs.truncate(f.subjs_start);
            self.subj_bytes.truncate(f.subj_base);
            sink.out.end_record(self.span.clone(), self.release);
            return;
        }
        if !has_values {
            self.subj_bytes.truncate(f.subj_base);
        }
        if let Some(p) = self.frames.last_mut() {
            p.cats = p.cats.union(f.cats);
            return;
        }
        // The top message, not a record: outside every record.
        sink.out.add_outside(f.cats);
        if self.hits.len() > f.hits_start {
            for h in &self.hits[f.hits_start..] {
                let id = &self.hit_bytes[h.id.0 as usize..h.id.1 as usize];
                sink.out.subject(h.ns, id, h.cats.union(f.cats));
            }
            self.truncate_hits(f.hits_start);
            sink.out.end_record(self.span.clone(), self.release);
        }
    }

    fn truncate_hits(&mut self, from: usize) {
        if let Some(h) = self.hits.get(from) {
            self.hit_bytes.truncate(h.id.0 as usize);
        }
        self.hits.truncate(from);
    }
}

/// Offset of the first malformed field of `msg` at its top level, if any.
fn first_error(msg: &[u8]) -> Option<usize> {
    Fields::new(msg).find_map(Result::err)
}

/// Whether `b` is UTF-8.
#[inline]
fn simd_utf8(b: &[u8]) -> bool {
    b.is_ascii() || std::str::from_utf8(b).is_ok()
}

/// An `application/x-protobuf` (`application/protobuf`) body: one message, held whole up to
/// `max_record_bytes` (a longer body is a record over the limit) and read when it ends.
#[derive(Debug)]
pub(crate) struct ProtobufScanner {
    buf: Vec<u8>,
    reader: MessageReader,
    /// The message type the body is read as, if known.
    message_type: Option<String>,
}

impl ProtobufScanner {
    pub(crate) fn new(message_type: Option<String>) -> Self {
        ProtobufScanner {
            buf: Vec::new(),
            reader: MessageReader::default(),
            message_type,
        }
    }

    /// The body held so far.
    pub(crate) fn held_bytes(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Nothing is released before the whole message is read.
    pub(crate) fn frontier(&self) -> u64 {
        0
    }

    pub(crate) fn feed(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if self.buf.len() + data.len() > sink.cfg.max_record_bytes() {
            return Err(Unreadable::RecordTooLarge { offset: 0 });
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    pub(crate) fn finish(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let n = self.buf.len() as u64;
        let _ = &self.message_type;
        let r = self.reader.read(&self.buf, 0, 0..n, n, sink);
        self.buf = Vec::new();
        r
    }
}

/// The body kind with its message type settled: a gRPC body without a type in its media type
/// takes the input type of the method its path names, when the descriptor sets know it.
pub(crate) fn resolve_kind(
    kind: super::BodyKind,
    _path: Option<&str>,
    _cfg: &super::InspectConfig,
) -> super::BodyKind {
    kind
}
